"""The model-parameter randomisation test (MPRT) on a loaded model: image and windows in, one
`SanityResult` per window out.

Sources: J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt and B. Kim, "Sanity Checks for
Saliency Maps", NeurIPS 2018 (arXiv:1810.03292), its cascading randomisation; Quantus' `MPRT`
(Hedström et al., JMLR 2023) is the same test. An explanation that explains the network must
change when the network's weights are destroyed; one that does not (an edge detector) passes for a
plausible map while saying nothing about the model.

Stage 0 is the trained model; stage k ≥ 1 re-draws the weights of the last k weight-bearing layers
(`randomise.py`: which layers, the order, the seeded draws). At every stage the attribution
(`--attribution`: LAM, or LAM through the noise tunnel, with LAM's options) of every window is
computed on that stage's network, and so is the control explainer's map (`statistics.edge_control`,
which reads no network: its maps cannot change). Each stage's map is compared with stage 0's
(`statistics.py`: Spearman, SSIM, over the whole map and outside the window's LR footprint), and the
map is taken to be independent of the weights from the first stage whose whole-map Spearman
correlation falls below THRESHOLD (`statistics.independence_stage`).

What the whole-map correlation cannot see: a local network's map is zero outside its receptive
field at every stage, and on an image much larger than the receptive field those tied zeros hold the
rank correlation near 1 whatever the weights (waifu2x on a 32×32 LR crop: ρ ≈ 0.98 with every layer
re-drawn). Run the test on a crop about the receptive field's size, or read the SSIM beside it.

Each stage's network is an `engine.model.Model` of its own (opened from memory, with the trained
model's options), built when its stage comes and dropped after it, with its own sha256
(`randomise.stage_sha256`). Its gradient programs are built in memory only, never written to the
program cache: a network drawn for one test is not worth a program per stage on disk (a few MB each
for SPAN, two per stage with the memory probe), and the trained model's own programs stay cached.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from onnxlam.core.errors import InputError
from onnxlam.engine.model import Model
from onnxlam.lam.metrics import diffusion_index
from onnxlam.lam.result import Window
from onnxlam.methods.base import Progress, Provenance, image_name, part_progress, windows_of
from onnxlam.methods.lam.run import run_windows
from onnxlam.methods.noise_tunnel.tunnel import NoiseTunnel, noise_tunnel
from onnxlam.methods.sanity import randomise, statistics
from onnxlam.methods.sanity.options import ALL, SanityOptions
from onnxlam.methods.sanity.result import Curve, SanityResult, Similarity, Stage

THRESHOLD = 0.5  # Spearman ρ below which a stage's map no longer follows stage 0's
CONTROL = "edges"


def stage_count(stages, layers: int) -> int:
    """The randomised stages asked for (`--stages`): all layers, or K, checked against the layers."""
    if stages == ALL:
        return layers
    if not 1 <= int(stages) <= layers:
        raise InputError(f"--stages {stages}: the model has {layers} weight-bearing layer"
                         f"{'s' if layers != 1 else ''}; choose 1 … {layers} or all")
    return int(stages)


def stage_model(model: Model, weights: dict[str, np.ndarray], seed: int, stage: int) -> Model:
    """Stage `stage`'s network: `model` with `weights` in place of its own, its own sha256, its options."""
    proto = randomise.with_weights(model.source, weights)
    info = dataclasses.replace(model.info, sha256=randomise.stage_sha256(model.info.sha256, seed, stage),
                               path=f"{model.model_path} (sanity stage {stage})")
    return Model((proto, info), device=model.device, value_range=model.value_range,
                 bgr=model.channel_order == "bgr", batch_size=model.batch_size, cache=False,
                 check_ops=False, max_memory=model.max_memory)


def explain(model: Model, image, wins: list[Window], options: SanityOptions, progress: Progress | None) -> list:
    """The attribution's results (LAM's, or the noise tunnel's) of the windows on one stage's network."""
    lam = options.lam()
    if options.attribution == "lam":
        return run_windows(model, image, wins, lam, progress=progress)
    tunnel = NoiseTunnel(options.attribution, options.samples, float(options.stdev), options.seed)
    return noise_tunnel(model, image, wins, tunnel, progress=progress, options=lam)


def sanity_test(model: Model, image: str | Path | np.ndarray, windows: Sequence[Window | tuple[int, int]],
                options: SanityOptions, progress: Progress | None = None) -> list[SanityResult]:
    """The MPRT of each window of `image` on `model` (see the module docstring)."""
    start = time.perf_counter()
    options = options.validate()
    wins = windows_of(windows, options.size)
    model.check_ops()
    layers = randomise.weight_layers(model.source)
    if not layers:
        raise InputError(f"{model.model_path} has no weight-bearing layer ({', '.join(randomise.WEIGHT_OPS)} with "
                         "an initializer as its weight): there is nothing to randomise")
    count = stage_count(options.stages, len(layers))
    lr, _ = model.prepare(image, options.lr)
    statistics.check_size(lr.shape[1:])  # before any stage runs, not after all of them
    stage_weights = itertools.chain([{}], randomise.stage_weights(model.source, layers[:count], options.seed))
    maps, controls, firsts = [], [], []
    for k, weights in enumerate(stage_weights):
        stage = model if k == 0 else stage_model(model, weights, options.seed, k)
        results = explain(stage, image, wins, options, part_progress(progress, k, count + 1))
        maps.append(np.stack([r.attribution for r in results]))
        controls.append(statistics.edge_control(results[0].lr_image))
        firsts.append(results[0])
        del stage  # its sessions and programs go before the next stage's are made
    provenance = Provenance(model.model_path, model.info.sha256, image_name(image), firsts[0].provider,
                            time.perf_counter() - start, options)
    notes = tuple(dict.fromkeys(n for r in firsts for n in getattr(r, "warnings", ())))
    stack, control = np.stack(maps), np.stack(controls)
    return [window_result(w, stack[:, i], control, firsts[0], layers, options, provenance, notes)
            for i, w in enumerate(wins)]


def curve(explainer: str, maps: np.ndarray, layers, outside: np.ndarray) -> Curve:
    """An explainer's stages from its maps (S×h×w, stage 0 first): DI, Spearman and SSIM with stage 0."""
    first = maps[0]
    if np.all(first == first.flat[0]):
        what = "the control's map (the image has no edges)" if explainer == CONTROL else "the trained model's map"
        raise InputError(f"{what} is the same at every pixel, so there is no ranking to compare; "
                         "choose another window or image")
    stages = []
    for k, m in enumerate(maps):
        stages.append(Stage(
            stage=k, layer=None if k == 0 else layers[k - 1].initializer, di=diffusion_index(m),
            spearman=Similarity(statistics.spearman(first, m), statistics.spearman(first[outside], m[outside])),
            ssim=Similarity(statistics.ssim(first, m), statistics.ssim_outside(first, m, outside))))
    at = statistics.independence_stage([s.spearman.whole for s in stages], THRESHOLD)
    return Curve(explainer, tuple(stages), at)


def window_result(window: Window, maps: np.ndarray, control: np.ndarray, first, layers, options: SanityOptions,
                  provenance: Provenance, notes: tuple[str, ...]) -> SanityResult:
    """One window's result from its stage maps (S×h×w) and the control's."""
    lr_size = tuple(int(v) for v in maps.shape[1:])
    box = statistics.footprint(window, first.scale, lr_size)
    outside = box.outside(lr_size)
    return SanityResult(
        window=window, scale=first.scale, lr_size=lr_size, footprint=box, attribution=options.attribution,
        seed=int(options.seed), threshold=THRESHOLD, layers=tuple(layers),
        method_curve=curve(options.attribution, maps, layers, outside),
        control=curve(CONTROL, control, layers, outside), maps=maps.astype(np.float32),
        control_maps=control.astype(np.float32), lr_image=first.lr_image, provenance=provenance, warnings=notes)
