"""The faithfulness check on a loaded model: image and windows in, one `FaithfulnessResult` per window.

1. The map: the chosen registered method's `attribute` (LAM, or a noise tunnel's) on all windows at
   once; its results' `attribution` (M, h×w) is what is tested.
2. Per window, the scene: the LR region the network runs on (the exact receptive-field crop of a
   local network, as LAM's, else the whole image) and the LR box D can depend on (`dependence_box`;
   the whole image for a global network). Pixels outside that box cannot change D, so two images
   equal inside it have the same score: each distinct one is evaluated once. Only exact crops are
   taken: `--context` shapes the map's computation, never the curves'.
3. The curves (`curves.py`): every image of the map's and the random orders' deletion and insertion
   curves, through the network's own forward session in batches sized from the measured memory of
   one forward pass (as CEM's interventions are), D computed in float64 from the SR output.
4. Captum's infidelity and sensitivity-max of the gradient ∇_x D(F(x)): forward passes of the
   perturbed inputs, and the window's gradient program (the one LAM uses for the region) at the
   input and the perturbed inputs, batched as the memory plan allows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from onnxlam.core.errors import InputError, NumericalError
from onnxlam.engine.cropping import Crop, choose_crop
from onnxlam.engine.model import Model
from onnxlam.graph.detector import check_window, window_mask
from onnxlam.graph.model import INPUT, OUTPUT
from onnxlam.graph.receptive_field.crop import dependence_box
from onnxlam.lam.options import option_names
from onnxlam.lam.paths import correlate, gaussian_kernel
from onnxlam.lam.result import Window
from onnxlam.methods import registry
from onnxlam.methods.base import Progress, Provenance, image_name, part_progress
from onnxlam.methods.faithfulness import curves as cv
from onnxlam.methods.faithfulness.options import FaithfulnessOptions
from onnxlam.methods.faithfulness.result import (Curve, FaithfulnessResult, Infidelity, RandomControl, Reach,
                                                 Sensitivity)



def blur_baseline(x: np.ndarray, sigma: float, kernel_size: int) -> np.ndarray:
    """x̃ = K(σ) ⊛ x (float32), the point the blur path starts from (`lam.paths.blur_path`'s baseline)."""
    return correlate(x, gaussian_kernel(sigma, kernel_size)).astype(np.float32)


@dataclass
class Scene:
    """What every image of one window's curves shares (LR boxes are (top, left, bottom, right), exclusive)."""

    x: np.ndarray                 # C×h×w, the LR input
    baseline: np.ndarray          # x̃, C×h×w
    window: Window
    scale: int
    region: tuple[int, int, int, int]   # where the network runs
    key_box: tuple[int, int, int, int]  # what D can depend on (inside the region)
    local_box: tuple[int, int, int, int] | None  # the same, None for a global network
    crop: Crop | None
    hr_window: np.ndarray | None  # the HR pixels under the window, C×d×d (None with --lr)

    def cut(self, images: np.ndarray) -> np.ndarray:
        """LR images (…×C×h×w, float32) or pixel sets (h×w, bool) cut to the region."""
        t, l, b, r = self.region
        return np.ascontiguousarray(images[..., t:b, l:r])

    @property
    def corner(self) -> tuple[int, int]:
        """The window's top-left (x, y) on the region's SR grid."""
        return self.window.x - self.region[1] * self.scale, self.window.y - self.region[0] * self.scale


def scene_of(model: Model, x: np.ndarray, hr: np.ndarray | None, baseline: np.ndarray, window: Window,
             crop: bool) -> Scene:
    """The window's scene: its checked position, the exact receptive-field crop and the dependence box."""
    s, (h, w) = model.scale, x.shape[1:]
    check_window(h * s, w * s, window.x, window.y, window.size)
    rf = model.receptive_field
    region = None
    if crop and not model.info.fixed_size:
        region = choose_crop(rf, [(window.x, window.y, window.size)], s, (h, w))
    local = None if rf.global_ or rf.reach is None else dependence_box(rf, (window.x, window.y, window.size), s,
                                                                       (h, w))
    box = (region.top, region.left, region.bottom, region.right) if region is not None else (0, 0, h, w)
    hr_window = None
    if hr is not None:
        hr_window = np.asarray(hr[:, window.y:window.y + window.size, window.x:window.x + window.size], np.float32)
    return Scene(x, baseline, window, s, box, local or (0, 0, h, w), local, region, hr_window)


@dataclass
class Evaluator:
    """The network's forward passes on one scene's region: D of the window (and the window's PSNR) for
    images given by the LR pixels that take the baseline's values, each distinct image once."""

    model: Model
    scene: Scene
    batch: int = 1
    memo: dict = field(default_factory=dict)  # the key box's blurred pixels -> (D, PSNR)

    def start(self) -> float:
        """D(F(x)) at batch 1, measuring what one forward pass needs, which sizes the batch."""
        m = self.model
        if m.info.fixed_batch not in (None, 1):
            raise InputError(f"{m.model_path} fixes its batch at {m.info.fixed_batch}; the faithfulness check "
                             "needs a batch of 1 or a dynamic batch")
        session = m.plain_session()
        first = self.scene.cut(self.scene.x[None])
        sr, sized = m.planner.forward_batch(lambda: self.run_session(session, first), first.size, m.batch_size)
        self.batch = sized.batch
        blurred = np.zeros(self.scene.x.shape[1:], bool)
        self.memo[self.key(blurred)] = self.measure(sr)[0]
        return self.memo[self.key(blurred)][0]

    def run_session(self, session, images: np.ndarray) -> np.ndarray:
        try:
            y = session.session.run([OUTPUT], {INPUT: images})[0]
        except Exception as exc:
            n, _, hh, ww = images.shape
            raise self.model.failure(exc, images.shape, f"the model failed on {n} input(s) of {ww}×{hh}") from None
        if not np.all(np.isfinite(y)):
            raise NumericalError(f"{self.model.model_path}: the model's output holds NaN or inf on an image of "
                                 "the faithfulness curves")
        return y

    def forward(self, images: np.ndarray) -> np.ndarray:
        """F of region-sized images (N×C×hr×wr), `batch` at a time (one at a time where the file
        assumes a batch of 1)."""
        session = self.model.plain_session()
        out, n = [], 0
        while n < len(images):
            part = images[n:n + self.batch]
            try:
                out.append(self.run_session(session, part))
            except InputError:
                if self.batch == 1 or self.model.batch_size is not None:
                    raise
                self.batch = 1
                continue
            n += len(part)
        return np.concatenate(out)

    def measure(self, sr: np.ndarray) -> list[tuple[float, float | None]]:
        """(D, PSNR) of each SR output of the region."""
        x, y = self.scene.corner
        d = self.scene.window.size
        scores = cv.detector(sr, x, y, d)
        psnr = ([None] * len(sr) if self.scene.hr_window is None else
                cv.window_psnr(sr[:, :, y:y + d, x:x + d], self.scene.hr_window))
        return [(float(a), b) for a, b in zip(scores, psnr)]

    def key(self, blurred: np.ndarray) -> bytes:
        t, l, b, r = self.scene.key_box
        return np.packbits(blurred[t:b, l:r]).tobytes()

    def scores(self, sets: Sequence[np.ndarray]) -> list[tuple[float, float | None]]:
        """(D, PSNR) of x with each set's pixels (h×w bool) taken from the baseline."""
        todo = {}
        for blurred in sets:
            k = self.key(blurred)
            if k not in self.memo and k not in todo:
                todo[k] = blurred
        keys = list(todo)
        x, baseline = self.scene.cut(self.scene.x), self.scene.cut(self.scene.baseline)
        step = max(self.batch * 4, 16)  # images are built a chunk at a time, never all at once
        for n in range(0, len(keys), step):
            chunk = keys[n:n + step]
            images = np.stack([cv.mixed(x, baseline, self.scene.cut(todo[k])) for k in chunk])
            self.memo.update(zip(chunk, self.measure(self.forward(images))))
        return [self.memo[self.key(blurred)] for blurred in sets]


def attribution_maps(model: Model, image, wins: list[Window], options: FaithfulnessOptions,
                     progress: Progress | None) -> list:
    """The chosen method's results for the windows (their `attribution` is the map tested)."""
    m = registry.method(options.attribution)
    values = {n: getattr(options, n) for n in option_names(cls=m.Options)}
    return m.attribute(model, image, wins, m.Options(**values).validate(), progress=progress)


def order_curves(evaluator: Evaluator, order: np.ndarray, counts: Sequence[int], d0: float):
    """The deletion and insertion (D, PSNR) lists of one order, and their normalised scores."""
    shape = evaluator.scene.x.shape[1:]
    out = []
    for deletion in (True, False):
        sets = [cv.blurred_set(order, n, deletion, shape) for n in counts]
        scored = evaluator.scores(sets)
        out.append(([s for s, _ in scored], [p for _, p in scored], [s / d0 for s, _ in scored]))
    return out


def curves_of(evaluator: Evaluator, order: np.ndarray, options: FaithfulnessOptions, d0: float, lr: bool):
    """The map's deletion and insertion `Curve`s and the `RandomControl` of the options' random orders."""
    fractions = options.fractions
    h, w = evaluator.scene.x.shape[1:]
    counts = cv.pixel_counts(fractions, h * w)
    made = []
    for raw, psnr, normalised in order_curves(evaluator, order, counts, d0):
        made.append(Curve(tuple(raw), tuple(normalised), cv.auc(fractions, normalised),
                          None if lr else tuple(psnr)))
    deletion, insertion = made
    aucs: tuple[list, list] = ([], [])
    normals: tuple[list, list] = ([], [])
    for random_order in cv.random_orders(h * w, options.random, options.seed):
        for i, (_, _, normalised) in enumerate(order_curves(evaluator, random_order, counts, d0)):
            aucs[i].append(cv.auc(fractions, normalised))
            normals[i].append(tuple(normalised))
    (dm, ds), (im, is_) = cv.spread(aucs[0]), cv.spread(aucs[1])
    control = RandomControl(options.random, options.seed, tuple(aucs[0]), tuple(aucs[1]), dm, ds, im, is_,
                            cv.z_score(deletion.auc, dm, ds, lower_is_better=True), cv.z_score(insertion.auc, im, is_),
                            tuple(normals[0]), tuple(normals[1]))
    return deletion, insertion, control, counts


def gradients(model: Model, scene: Scene, points: np.ndarray) -> np.ndarray:
    """∇_x D(F(p)) (float64 N×C×hr×wr) of the window for region-sized points (N×C×hr×wr), through the
    gradient program of the region (batched as the memory plan allows, the last batch padded)."""
    hr, wr = points.shape[-2:]
    s, (x, y), d = scene.scale, scene.corner, scene.window.size
    mask = window_mask(hr * s, wr * s, x, y, d)[None]
    prog = model.program(hr, wr, len(points), 1)
    try:
        return run_program(prog, points, mask, model.device)
    except NumericalError:
        raise
    except Exception:
        # a batched program is confirmed on its first batch; one that fails there runs one at a time
        if prog.pending is None or not model.may_fall_back(prog.batch):
            raise
        return run_program(model.one_at_a_time((prog.batch, hr, wr, 1)), points, mask, model.device)


def run_program(prog, points: np.ndarray, mask: np.ndarray, device: str) -> np.ndarray:
    b, n = prog.batch, len(points)
    out = np.zeros(points.shape, np.float64)
    for start in range(0, n, b):
        used = min(b, n - start)
        xb = points[start:start + used]
        masks = np.broadcast_to(mask, (used,) + mask.shape)
        if used < b:  # padded with copies whose window masks are empty
            xb = np.concatenate([xb, np.repeat(xb[-1:], b - used, axis=0)])
            masks = np.concatenate([masks, np.zeros((b - used,) + mask.shape, np.float32)])
        _, gradient = prog.objective_and_gradient(xb, masks, device)
        if start == 0:
            prog.confirm(xb, masks, gradient, device, used)
        g = gradient[:used, 0]
        if not np.all(np.isfinite(g)):
            raise NumericalError("the gradient of the window's detector holds NaN or inf; the model's "
                                 "derivatives overflow on this input")
        out[start:start + used] = g
    return out


def captum_metrics(model: Model, evaluator: Evaluator, d0: float, seed: int) -> tuple[Infidelity, Sensitivity]:
    """Infidelity and sensitivity-max of the gradient (see `curves.py`), on the scene's region."""
    scene = evaluator.scene
    shape = scene.x.shape
    noise = cv.infidelity_noise(shape, seed)
    moved = evaluator.forward(scene.cut((scene.x[None] - noise).astype(np.float32)))
    perturbed = [s for s, _ in evaluator.measure(moved)]
    shifts = cv.sensitivity_noise(shape, seed)
    points = scene.cut(np.concatenate([scene.x[None], scene.x[None] + shifts]))
    g = gradients(model, scene, points)
    infidelity = cv.infidelity(g[0], scene.cut(noise), d0, np.asarray(perturbed))
    sensitivity = cv.sensitivity_max(g[0], g[1:])
    return (Infidelity(infidelity, len(noise), cv.INFIDELITY_STDEV, seed),
            Sensitivity(sensitivity, len(shifts), cv.SENSITIVITY_RADIUS, seed))


def window_result(model: Model, x: np.ndarray, hr: np.ndarray | None, baseline: np.ndarray, window: Window,
                  tested, options: FaithfulnessOptions, provenance: Provenance) -> FaithfulnessResult:
    """One window's curves, random control, reach and Captum metrics for the map of `tested` (a result)."""
    M = np.asarray(tested.attribution, np.float32)
    h, w = x.shape[1:]
    if M.shape != (h, w):
        raise InputError(f"the {options.attribution} map is {M.shape[1]}×{M.shape[0]}, the LR input {w}×{h}")
    scene = scene_of(model, x, hr, baseline, window, options.crop)
    evaluator = Evaluator(model, scene)
    d0 = evaluator.start()
    if not d0 > 0:
        raise NumericalError(f"D(F(x)) of the window at x={window.x}, y={window.y} is {d0:g}: the SR output is "
                             "flat there, so the curves cannot be divided by it; choose another window")
    order = cv.order_of(M)
    deletion, insertion, control, counts = curves_of(evaluator, order, options, d0, options.lr)
    db = evaluator.scores([np.ones((h, w), bool)])[0][0]
    values = deletion.detector + insertion.detector + control.deletion_auc + control.insertion_auc + (db,)
    if not cv.finite(values):
        raise NumericalError("a score of the faithfulness curves is NaN or inf")
    local = scene.local_box
    first = None if local is None else cv.first_outside(order, local, w)
    inside = h * w if local is None else (local[2] - local[0]) * (local[3] - local[1])
    reach = Reach(local, 1.0 - inside / (h * w), None if first is None else first / (h * w))
    forwards = len(evaluator.memo)
    infidelity, sensitivity = captum_metrics(model, evaluator, d0, options.seed)
    return FaithfulnessResult(
        attribution=M, window=window, scale=scene.scale, lr_size=(h, w), map_method=options.attribution,
        map_di=float(tested.di), fractions=tuple(options.fractions), pixels=counts, sigma=float(options.sigma),
        kernel_size=int(options.kernel_size), detector_input=d0, detector_baseline=float(db), deletion=deletion,
        insertion=insertion, random=control, reach=reach, infidelity=infidelity, sensitivity=sensitivity,
        forwards=forwards, batch_size=evaluator.batch, provenance=provenance, crop=scene.crop,
        warnings=tuple(getattr(tested, "warnings", ())), lr_image=x)


def faithfulness(model: Model, image: str | Path | np.ndarray, windows: Sequence[Window],
                 options: FaithfulnessOptions, progress: Progress | None = None) -> list[FaithfulnessResult]:
    """The faithfulness check of each window's map on `image` (see the module docstring)."""
    start = time.perf_counter()
    options = options.validate()
    model.check_ops()
    wins = list(windows)
    if not wins:
        raise InputError("no window given; pass --window X Y")
    maps = attribution_maps(model, image, wins, options, part_progress(progress, 0, 2))
    x, hr = model.prepare(image, options.lr)
    baseline = blur_baseline(x, options.sigma, options.kernel_size)
    provenance = Provenance(model.model_path, model.info.sha256, image_name(image),
                            model.plain_session().provider, 0.0, options)
    results = []
    for i, (window, tested) in enumerate(zip(wins, maps)):
        results.append(window_result(model, x, hr, baseline, window, tested, options, provenance))
        if progress is not None:
            part_progress(progress, 1, 2)(i + 1, len(wins))
    seconds = time.perf_counter() - start
    return [replace(r, provenance=replace(provenance, seconds=seconds)) for r in results]
