"""Running the model for CEM: the reference pass, the coarse and fine passes of interventions in
batches sized from measured memory, and the assembled `CemResult` (§1–§5 of docs/CEM-SPEC.md)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from onnxlam.core.errors import InputError, NumericalError
from onnxlam.engine.cropping import Crop, choose_crop
from onnxlam.engine.model import Model
from onnxlam.lam.options import ModelOptions, option_names
from onnxlam.methods.base import Provenance, image_name
from onnxlam.methods.cem.bank import SeededDraws, cut_bank, load_bank_images
from onnxlam.methods.cem.effects import (as_uint8, block_means, causal_effect, degrade_dn, grid_shape,
                                         intervention_content, paste, refinement_set, roi_mask,
                                         roi_psnr, summarise, touches)
from onnxlam.methods.cem.options import CemOptions
from onnxlam.methods.cem.result import BankInfo, CemMemory, CemParams, CemResult, DrawFn, Roi

D = ModelOptions()                   # the defaults of the model options below
RUN_OPTIONS = option_names("run", cls=CemOptions)  # what CemRunner.run takes as keywords
MODEL_OPTIONS = tuple(n for n in option_names("model", cls=CemOptions) if n != "inputs")  # CemRunner's


class CemRunner:
    """One model, ready for causal effect maps: `CemRunner("model.onnx").run("photo.png", (x, y))`.

    `model` is a path or an already loaded `engine.model.Model` (used as is: its scale, receptive
    field and memory budget are shared with the other methods). CEM needs no gradient program, so
    ops without a gradient rule are fine."""

    def __init__(self, model: str | Path | Model, *, device: str = D.device,
                 max_memory: int | str | None = D.max_memory, batch_size: int | None = D.batch_size,
                 value_range: float | None = D.value_range, bgr: bool | None = D.bgr):
        if isinstance(model, Model):
            self.model = model
            batch_size = model.batch_size if batch_size is None else batch_size
        else:
            self.model = Model(model, device=device, value_range=value_range, bgr=bgr, cache=False,
                               check_ops=False, max_memory=max_memory, batch_size=batch_size)
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {batch_size}")
        self.model_path = self.model.model_path
        self.batch_size = batch_size
        self._batch: int | None = None
        self._memory: CemMemory | None = None
        self._warnings: list[str] = []

    @property
    def scale(self) -> int:
        return self.model.scale

    def session(self):
        return self.model.plain_session()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        from onnxlam.graph.model import INPUT, OUTPUT

        try:
            y = self.session().session.run([OUTPUT], {INPUT: batch})[0]
        except Exception as exc:
            raise self.model.failure(exc, batch.shape, f"the model failed on a {batch.shape[0]}×{batch.shape[3]}×"
                                                       f"{batch.shape[2]} input") from None
        if not np.all(np.isfinite(y)):
            raise NumericalError(f"{self.model_path}: the model's output holds NaN or inf")
        return y

    def reference(self, x: np.ndarray) -> np.ndarray:
        """F(x) at batch 1, measuring what one forward pass needs, which sizes the batch: the growth of
        the resident set (CUDA: device memory in use) during the run, plus the batch's input copies. The
        interventions run on the ROI's crop, no larger than x, so this bounds their need per image."""
        from onnxlam.engine import memory

        a = self.model
        if a.info.fixed_batch not in (None, 1):
            raise InputError(f"{self.model_path} fixes its batch at {a.info.fixed_batch}; CEM needs a batch of 1 "
                             "or a dynamic batch")
        device = a.run_device
        self.session()
        y, sized = a.planner.forward_batch(lambda: self._forward(to_model(x[None])), x.size, self.batch_size)
        self._batch, per_image, in_use = sized.batch, sized.per_image, sized.in_use
        self._warnings = []
        if per_image is not None and in_use is not None and self._batch == 1 and self.batch_size is None \
                and in_use + memory.margin(per_image) > a.budget():
            self._warnings.append(f"one forward pass needs about {memory.format_size(per_image)}, over what the "
                                  f"memory limit {memory.format_size(a.budget())} leaves: interventions run one "
                                  "at a time")
        self._memory = CemMemory(device, a.budget(), per_image, in_use)
        return y

    def evaluate(self, scene: "Scene", contents: list[tuple[int, int, np.ndarray]],
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
        """P(F(x with block (i, j) := content)) for each (i, j, content), in batches, on the scene's crop."""
        t, l, b, r = scene.box
        x = scene.x[t:b, l:r]
        out = np.empty(len(contents))
        n = 0
        while n < len(contents):
            part = contents[n:n + self._batch]
            batch = to_model(np.stack([paste(x, c, i * scene.side - t, j * scene.side - l) for i, j, c in part]))
            try:
                y = self._forward(batch)
            except InputError:
                if self._batch == 1 or self.batch_size is not None:
                    raise
                self._batch = 1  # the file assumes a batch of 1 somewhere: run one at a time
                continue
            out[n:n + len(part)] = roi_psnr(y, scene.truth_window, *scene.roi_at)
            n += len(part)
            if progress:
                progress(len(part))
        return out

    def _pass(self, scene: "Scene", blocks, count: int, phase: str, draw: DrawFn, tick) -> np.ndarray:
        """Every intervention of one pass (blocks × count draws, drawn in order), evaluated in batches.

        Draws are taken a chunk at a time (the sequence depends neither on the batch size nor on the
        crop) so that the pasted copies never all sit in memory. A block outside the crop cannot reach
        the ROI: its interventions leave the ROI's output untouched, so their PSNR is O, with no run.
        """
        jobs = [(i, j, k) for i, j in blocks for k in range(count)]
        out = np.full(len(jobs), scene.reference)
        step = max(self._batch * 8, 64)
        for n in range(0, len(jobs), step):
            part = [(m, i, j, draw(phase, i, j, k)) for m, (i, j, k) in enumerate(jobs[n:n + step], n)]
            live = [(m, i, j, d) for m, i, j, d in part if touches(i, j, scene.side, scene.box)]
            if live:
                contents = [(i, j, intervention_content(d, scene.side)) for _, i, j, d in live]
                out[[m for m, *_ in live]] = self.evaluate(scene, contents, tick)
            tick(len(part) - len(live), ran=False)
        return out

    def run(self, image: str | Path | np.ndarray, roi: tuple[int, int] | Roi, options: CemOptions | None = None, *,
            draw: DrawFn | None = None, progress: Callable[[int, int], None] | None = None, **keywords) -> CemResult:
        """The causal effect map of the ROI at `roi` = (x, y) (output pixels, top-left) of side
        `options.size` (a `Roi` gives its own).

        `keywords` are CemOptions' run options (size, block, draws, …) overriding `options` (None:
        left as `options` has it); the model options are the runner's, recorded in the result's
        provenance. `draw` supplies the interventions' patches (and DN noise) instead of the seeded
        bank: called as draw(pass, row, col, k) in the order of §3; the DN input noise always comes
        from RandomState(seed). With `options.crop` a local network runs only on the LR crop the ROI
        depends on (see `cropping.choose_crop`): the same PSNRs to the bit, and blocks outside it need
        no run at all.
        """
        start = time.perf_counter()
        o = self._options(options, keywords)
        r = roi if isinstance(roi, Roi) else Roi(int(roi[0]), int(roi[1]), int(o.size))
        task = self._task(o, r)
        x, truth = self._inputs(image, task, o)
        H, W = truth.shape[:2]
        if r.x < 0 or r.y < 0 or r.x + r.size > W or r.y + r.size > H:
            raise InputError(f"the ROI ({r.x}, {r.y}) of side {r.size} is not inside the {W}×{H} output; "
                             f"choose X ≤ {W - r.size} and Y ≤ {H - r.size}")
        side = o.block // self.scale
        bank_info = None
        if draw is None:
            draw, bank_info = self._draws(o, task, truth, side)
        scene = self._scene(x, truth, r, side, o.crop)
        coarse, fine, refined, runs = self._passes(scene, o, draw, progress)
        mu = block_means(coarse, fine, refined)
        mask = roi_mask(coarse.shape[:2], r, self.scale, side)
        ce = causal_effect(scene.reference, mu, o.tol)
        return CemResult(
            effect=np.where(mask, np.nan, ce), psnr_coarse=coarse, psnr_fine=fine, refined=refined, roi_mask=mask,
            reference_psnr=scene.reference, summary=summarise(ce, mask), roi=r,
            params=CemParams(task, o.block, o.draws, o.refine, float(o.tol), int(o.seed), float(o.noise), bank_info),
            scale=self.scale, block_input=side, input_image=x, truth=truth,
            provenance=Provenance(self.model_path, self.model.info.sha256, image_name(image), self.session().provider,
                                  time.perf_counter() - start, o),
            batch_size=self._batch, forward_passes=1 + runs, memory=self._memory, warnings=tuple(self._warnings),
            crop=scene.region)

    def _options(self, options: CemOptions | None, keywords: dict) -> CemOptions:
        """`options` with `keywords` applied and the runner's model options, checked; InputError naming
        an unknown keyword, a model option given as one, or extra model inputs (CEM takes none)."""
        unknown = sorted(set(keywords) - set(option_names(cls=CemOptions)))
        if unknown:
            raise InputError(f"cem takes no option {', '.join(map(repr, unknown))}; its options are "
                             f"{', '.join(RUN_OPTIONS)}")
        of_model = [n for n in keywords if n not in RUN_OPTIONS]
        if of_model:
            raise InputError(f"{', '.join(map(repr, of_model))}: options of the model, given to CemRunner(...) "
                             "(or causal_effect_map), not to run")
        values = {k: (str(v) if isinstance(v, Path) else v) for k, v in keywords.items() if v is not None}
        o = replace(options or CemOptions(), **values)
        if o.inputs:
            raise InputError("cem does not take --input values (extra model inputs); run it without --input")
        given = self.model.given
        return replace(o, device=given["device"], value_range=given["value_range"], bgr=given["bgr"],
                       max_memory=given["max_memory"], batch_size=self.batch_size).validate()

    def _task(self, o: CemOptions, r: Roi) -> str:
        """sr or dn, from --task and the scale; InputError where they or the block do not fit the model."""
        s = self.scale
        task = ("sr" if s > 1 else "dn") if o.task == "auto" else o.task
        if (task == "sr") != (s > 1):
            raise InputError(f"--task {task} needs a {'super-resolution (scale > 1)' if task == 'sr' else '×1'} "
                             f"model; {self.model_path} has scale {s}")
        if o.block < s:
            raise InputError(f"--block {o.block} is smaller than the scale {s}: a block must hold at least one "
                             "input pixel (block // scale ≥ 1)")
        if r.size < 1:
            raise InputError(f"--size must be at least 1; got {r.size}")
        return task

    def _inputs(self, image, task: str, o: CemOptions) -> tuple[np.ndarray, np.ndarray]:
        """x (what the model sees, uint8 h×w×C) and the ground truth I (uint8 H×W×C), §1."""
        from onnxlam.lam import image as images

        a, s = self.model, self.scale
        pixels = images.read_image(image) if isinstance(image, (str, Path)) else images.from_array(image)
        pixels = as_uint8(images.match_channels(pixels, a.info.channels))
        if task == "sr":
            lr, _ = a.prepare(pixels)
            x = np.rint(lr.transpose(1, 2, 0) * 255).astype(np.uint8)  # Pillow's uint8 bicubic, back to uint8
            return x, pixels[:x.shape[0] * s, :x.shape[1] * s]
        a.prepare(pixels, lr=True)  # the size check of fixed-size models
        return degrade_dn(pixels, o.seed, o.noise), pixels

    def _draws(self, o: CemOptions, task: str, truth: np.ndarray, side: int):
        """The seeded draws from the patch bank (cut from --patches or the bundled photos), and the bank's facts."""
        sources, source = load_bank_images(o.patches, truth.shape[2])
        bank = cut_bank(sources, o.bank_size, o.block, o.seed)
        draw = SeededDraws(bank, o.seed, o.noise if task == "dn" else None, side)
        if task == "dn":
            draw.input_noise(truth.shape)  # the same normals degrade_dn used: the stream continues after them
        return draw, BankInfo(source, o.bank_size, o.seed, len(sources))

    def _scene(self, x: np.ndarray, truth: np.ndarray, r: Roi, side: int, crop: bool = True) -> "Scene":
        """The reference pass O and what every intervention shares (the ROI's crop, where local)."""
        H, W = truth.shape[:2]
        y = self.reference(x)
        if y.shape[2:] != (H, W):
            raise InputError(f"{self.model_path}: the output is {y.shape[3]}×{y.shape[2]}, the ground truth "
                             f"{W}×{H}")
        truth_window = truth[r.y:r.y + r.size, r.x:r.x + r.size]
        reference = float(roi_psnr(y, truth_window, r.x, r.y)[0])
        if not math.isfinite(reference):
            raise NumericalError("the ROI's PSNR is infinite: the output equals the ground truth there, so "
                                 "its causal effects are undefined; choose another ROI")
        s, region = self.scale, None
        if crop and not self.model.info.fixed_size:  # a local network: the ROI's cone only (exact)
            region = choose_crop(self.model.receptive_field, [(r.x, r.y, r.size)], s, x.shape[:2], worth_it=1.0)
        box = (region.top, region.left, region.bottom, region.right) if region else (0, 0) + x.shape[:2]
        return Scene(x, truth_window, (r.x - box[1] * s, r.y - box[0] * s), box, side, reference, region)

    def _passes(self, scene: "Scene", o: CemOptions, draw: DrawFn, progress):
        """The coarse pass over every block, then the fine pass over the refined ones (§3): their PSNRs,
        the refined blocks and how many interventions ran."""
        grid = grid_shape(scene.x.shape[:2], scene.side)
        total, done, runs = [grid[0] * grid[1] * o.draws], [0], [0]

        def tick(k: int, ran: bool = True) -> None:
            done[0] += k
            runs[0] += k if ran else 0
            if progress:
                progress(done[0], total[0])

        blocks = [(i, j) for i in range(grid[0]) for j in range(grid[1])]
        coarse = self._pass(scene, blocks, o.draws, "coarse", draw, tick).reshape(grid + (o.draws,))
        refined = refinement_set(scene.reference, coarse, o.tol) if o.refine else np.zeros(grid, bool)
        chosen = [(i, j) for i, j in blocks if refined[i, j]]
        total[0] += len(chosen) * o.refine
        fine = np.full(grid + (o.refine,), np.nan)
        if chosen:
            values = self._pass(scene, chosen, o.refine, "fine", draw, tick).reshape(len(chosen), o.refine)
            for (i, j), v in zip(chosen, values):
                fine[i, j] = v
        for name, values in (("coarse", coarse), ("fine", fine[refined])):
            if np.isinf(values).any():
                raise NumericalError(f"{int(np.isinf(values).sum())} {name} interventions give an infinite ROI PSNR "
                                     "(an exact reconstruction): the mean effect is undefined; choose another ROI")
        return coarse, fine, refined, runs[0]


@dataclass(frozen=True)
class Scene:
    """What every intervention of a run shares: the input, the ROI's truth, where the ROI lies in the
    crop's output (column, row), the crop (LR top, left, bottom, right), b, O, and the crop itself."""

    x: np.ndarray
    truth_window: np.ndarray
    roi_at: tuple[int, int]
    box: tuple[int, int, int, int]
    side: int
    reference: float
    region: Crop | None = None  # the crop the interventions run on; None: the whole input


def to_model(batch_hwc: np.ndarray) -> np.ndarray:
    """N×h×w×C uint8 → the model's N×C×h×w float32 in [0, 1] (x/255, §1)."""
    return np.ascontiguousarray(batch_hwc.transpose(0, 3, 1, 2), np.float32) / np.float32(255)


def causal_effect_map(model: str | Path | Model, image: str | Path | np.ndarray, roi: tuple[int, int] | Roi,
                      size: int | None = None, **keywords) -> CemResult:
    """The causal effect map of `model` for the ROI at `roi` on `image`: `keywords` naming model options
    (device, max_memory, batch_size, value_range, bgr) go to `CemRunner`, the others (CemOptions' run
    options, `draw`, `progress`) to `CemRunner.run`."""
    runner = CemRunner(model, **{k: keywords.pop(k) for k in list(keywords) if k in MODEL_OPTIONS})
    return runner.run(image, roi, size=size, **keywords)
