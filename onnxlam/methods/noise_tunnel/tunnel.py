"""The noise tunnel over LAM: LAM of noisy copies of the input, combined (SmoothGrad, SmoothGrad², VarGrad).

Sources: D. Smilkov, N. Thorat, B. Kim, F. Viégas and M. Wattenberg, "SmoothGrad: removing noise by
adding noise", 2017 (arXiv:1706.03825; SmoothGrad); J. Adebayo, J. Gilmer, I. Goodfellow and B. Kim,
"Local Explanation Methods for Deep Neural Networks Lack Sensitivity to Parameter Values", ICLR
workshop 2018 (arXiv:1810.03307; VarGrad) and J. Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018 (arXiv:1810.03292), the papers Captum cites; SmoothGrad² is the squared variant of
S. Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural Networks", NeurIPS 2019.
The combination rules are those of Captum's `NoiseTunnel` (captum/attr/_core/noise_tunnel.py).

For the LR input x (C×h×w in [0, 1], prepared as for LAM, spec §1), S samples of Gaussian noise
ε_i ~ N(0, σ²) per value (σ = `stdev` in [0, 1] units, drawn by `numpy.random.default_rng(seed)`;
the noisy copies are not clipped to [0, 1], as Captum does not clip), and A_i the LAM attribution
(spec §4, C×h×w, signed) of x + ε_i:

    smoothgrad     Ā = (1/S) Σ_i A_i
    smoothgrad_sq  Ā = (1/S) Σ_i A_i²
    vargrad        Ā = (1/S) Σ_i A_i² − ((1/S) Σ_i A_i)²        (the population variance, as Captum)

elementwise, in float64. After that Ā is treated as LAM treats A (spec §4–5): the map is
M = |Σ_c Ā| / (max |Σ_c Ā| + 1e-5), and Gini and DI are those of M.

The baseline. Captum's NoiseTunnel perturbs the input of the whole attribution method, so each
sample's LAM path runs from the blurred *noisy* input to the noisy input (its baseline is
K(σ_blur) ⊛ (x + ε_i)), not from the blurred clean input. Each sample's completeness check
(Σ A_i ≈ D(F(x + ε_i)) − D(F(K ⊛ (x + ε_i)))) holds, and the result records the mean of both sides.

Every sample runs through LAM's `run_windows` (its `lr_input`), so all samples share one gradient
program per input shape (the model keeps them), the receptive-field crop and the memory plan.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from onnxlam.core.errors import InputError, NumericalError
from onnxlam.engine.model import Model
from onnxlam.graph.detector import window_mask
from onnxlam.lam.metrics import abs_normalise, diffusion_index, gini, range_statistics
from onnxlam.lam.options import LamOptions
from onnxlam.lam.result import Completeness, Window
from onnxlam.methods.base import part_progress, windows_of
from onnxlam.methods.lam.result import LamResult
from onnxlam.methods.lam.run import run_windows
from onnxlam.methods.noise_tunnel.options import KINDS, SAMPLES, SEED, STDEV  # noqa: F401 (their home is options)



@dataclass(frozen=True)
class NoiseTunnel:
    """How to smooth: the combination `kind`, `samples` noisy copies, noise `stdev` ([0, 1] units), `seed`."""

    kind: str
    samples: int = SAMPLES
    stdev: float = STDEV
    seed: int = SEED

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown noise tunnel {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.samples < 1:
            raise InputError(f"--samples must be at least 1; got {self.samples}")
        if not self.stdev >= 0 or not np.isfinite(self.stdev):
            raise InputError(f"--stdev must be a finite number ≥ 0; got {self.stdev}")

    def to_json(self) -> dict:
        return {**asdict(self), "noise": "Gaussian, [0, 1] units, numpy default_rng(seed), not clipped",
                "baseline": "each sample's path starts at its own blurred noisy input"}


@dataclass(frozen=True)
class TunnelRecord:
    """A `TunnelResult`'s `noise_tunnel`: the tunnel and each noisy copy's own DI."""

    tunnel: NoiseTunnel
    sample_di: tuple[float, ...]

    @property
    def kind(self) -> str:
        return self.tunnel.kind

    @property
    def samples(self) -> int:
        return self.tunnel.samples

    def to_json(self) -> dict:
        return {**self.tunnel.to_json(), "sample_di": list(self.sample_di),
                "completeness": "the mean of the samples' own checks"}


@dataclass(frozen=True)
class TunnelResult(LamResult):
    """LAM of the combined noisy copies: M and Ā of the combination, its DI and Gini, and the record
    of the tunnel (`noise_tunnel` in result.json); the method's name is the combination's."""

    noise_tunnel: TunnelRecord | None = field(default=None, metadata={"optional": True})

    @property
    def method_name(self) -> str:
        return self.noise_tunnel.kind

    def panel_label(self) -> str:
        return f"LAM, {self.noise_tunnel.kind} x{self.noise_tunnel.samples}"


def noise(shape: Sequence[int], tunnel: NoiseTunnel) -> np.ndarray:
    """The noise of every sample, float32 S×C×h×w: `default_rng(seed).normal(0, stdev, (S, C, h, w))`."""
    rng = np.random.default_rng(tunnel.seed)
    return rng.normal(0.0, tunnel.stdev, (tunnel.samples,) + tuple(shape)).astype(np.float32)


def combine(attributions: np.ndarray, kind: str) -> np.ndarray:
    """Ā of the samples' attributions (S×C×h×w) by `kind` (see the module docstring), float64 C×h×w."""
    a = np.asarray(attributions, np.float64)
    if kind == "smoothgrad":
        return a.mean(axis=0)
    if kind == "smoothgrad_sq":
        return (a * a).mean(axis=0)
    if kind == "vargrad":
        return (a * a).mean(axis=0) - a.mean(axis=0) ** 2
    raise InputError(f"unknown noise tunnel {kind!r}; choose one of {', '.join(KINDS)}")


def noise_tunnel(model: Model, image: str | Path | np.ndarray, windows: Sequence[tuple[int, int] | Window],
                 tunnel: NoiseTunnel, size: int = 16, *, lr: bool = False, noises: np.ndarray | None = None,
                 progress: Callable[[int, int], None] | None = None, program=None,
                 options: LamOptions | None = None, **run_options) -> list[TunnelResult]:
    """Noise-tunnel LAM of each window of `image`: `options` (LamOptions), or LAM's run options as
    keywords (`run_options`: path, sigma, fold, …).

    `noises` (S×C×h×w, S = tunnel.samples) replaces the seeded noise: the same arrays give the same
    maps. Each result's `attribution` and `gradient` are M and Ā of the combined map, its DI and Gini
    are M's; `noise_tunnel` records the parameters and the samples' own DIs.
    """
    start = time.perf_counter()
    if options is None:
        options = dataclasses.replace(LamOptions(), size=size, lr=lr, **run_options)
    wins = windows_of(windows, options.size)
    x, _ = model.prepare(image, options.lr)
    noises = _checked_noise(noise(x.shape, tunnel) if noises is None else noises, tunnel, x.shape)
    samples: list[list[LamResult]] = []
    for i in range(tunnel.samples):
        done = part_progress(progress, i, tunnel.samples)
        samples.append(run_windows(model, image, wins, options, program=program, progress=done,
                                   lr_input=x + noises[i]))
    s = model.scale
    H, W = x.shape[1] * s, x.shape[2] * s
    sr, _ = model.forward(x, np.stack([window_mask(H, W, w.x, w.y, w.size) for w in wins]))
    seconds = time.perf_counter() - start
    return [_combined([sample[k] for sample in samples], tunnel, x, sr, seconds) for k in range(len(wins))]


def _checked_noise(noises: np.ndarray, tunnel: NoiseTunnel, shape: tuple) -> np.ndarray:
    noises = np.asarray(noises, np.float32)
    if noises.shape != (tunnel.samples,) + shape:
        raise InputError(f"the noise is {'×'.join(map(str, noises.shape))}; {tunnel.samples} samples of the "
                         f"{'×'.join(map(str, shape))} input need {tunnel.samples}×{'×'.join(map(str, shape))}")
    return noises


def _combined(own: list[LamResult], tunnel: NoiseTunnel, x: np.ndarray, sr: np.ndarray,
              seconds: float) -> TunnelResult:
    """One window's result from its samples' results (`own`)."""
    combined = combine(np.stack([r.gradient for r in own]), tunnel.kind)
    M = abs_normalise(combined)
    if not np.all(np.isfinite(M)):
        raise NumericalError("the combined noise-tunnel map is not finite")
    first = own[0]
    values = {f.name: getattr(first, f.name) for f in fields(first)}
    values.update(
        attribution=M, gradient=combined.astype(np.float32), di=diffusion_index(M), gini=gini(M),
        completeness=Completeness(float(np.mean([r.completeness.attribution_sum for r in own])),
                                  float(np.mean([r.completeness.objective_delta for r in own]))),
        nan_gradients=int(sum(r.nan_gradients for r in own)), lr_image=x, sr_image=sr,
        provenance=dataclasses.replace(first.provenance, seconds=seconds),
        range=range_statistics(M, first.window.centre_lr(first.scale)),
        warnings=tuple(dict.fromkeys(n for r in own for n in r.warnings)),
        noise_tunnel=TunnelRecord(tunnel, tuple(r.di for r in own)))
    return TunnelResult(**values)
