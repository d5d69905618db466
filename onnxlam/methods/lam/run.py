"""LAM's stages on a loaded model: image and windows in, one `LamResult` per window out.

`run_windows` goes through the stages in order:

1. `prepare_inputs`: the LR input (spec §1), F(x) and the objective at the input and at the path's
   baseline;
2. `sharing.plan_sharing`: for a local network, windows with disjoint dependence boxes share one
   reverse pass (one seed: the sum of their detectors), when that saves work; then per group of up
   to MAX_WINDOWS seeds, `plan_group`: the crop (receptive field, then memory: see
   `engine/planner.py`) and the program's batch;
3. `integrate_group`: the path steps through the gradient program (`lam/integration.py`), uncropped
   (a shared seed's map cut into its windows' boxes);
4. `window_results`: the metrics of each window's map (`lam/metrics.py`) as `LamResult`s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from onnxlam.core.errors import InputError, NumericalError
from onnxlam.engine import memory
from onnxlam.engine.cropping import Crop, choose_crop, crop_masks, crop_steps, uncrop
from onnxlam.engine.model import Model
from onnxlam.engine.planner import Plan
from onnxlam.graph.detector import window_mask
from onnxlam.lam.integration import integrate
from onnxlam.lam.metrics import abs_normalise, diffusion_index, gini, range_statistics
from onnxlam.lam.options import LamOptions
from onnxlam.lam.paths import PathSteps, make_path
from onnxlam.lam.result import Completeness, Window
from onnxlam.methods.base import Provenance, image_name, part_progress
from onnxlam.methods.lam.result import LamResult
from onnxlam.methods.lam.sharing import MAX_WINDOWS, class_masks, cut, plan_sharing



@dataclass(frozen=True)
class Inputs:
    """Stage 1 of a run: what every window group of one image shares."""

    lr: np.ndarray               # C×h×w, what the model sees
    hr: np.ndarray | None        # the HR image cropped to s·h×s·w (None with lr=True)
    masks: np.ndarray            # K×(H−1)×(W−1) window masks
    sr: np.ndarray               # F(x)
    objective_input: np.ndarray  # D(F(x)) per window
    objective_baseline: np.ndarray
    steps: PathSteps


@dataclass(frozen=True)
class Group:
    """Stage 2: one group of windows, the LR crop it runs on (None: the whole image) and its plan."""

    members: list[int]
    crop: Crop | None
    plan: Plan
    notes: tuple[str, ...] = ()


@dataclass
class Integrated:
    """Stage 3's output for every window: the maps, NaN counts, groups, memory and the program's facts."""

    attribution: np.ndarray
    nan_gradients: np.ndarray
    groups: list[Group]
    usage: list
    provider: str = ""
    batch: int = 1


def run_windows(model: Model, image: str | Path | np.ndarray, windows: Sequence[Window], options: LamOptions,
                program=None, progress: Callable[[int, int], None] | None = None,
                lr_input: np.ndarray | None = None, share: bool = True) -> list[LamResult]:
    """LAM of several windows of one image; up to MAX_WINDOWS seeds share each forward pass.

    With `options.crop` (default) a local network runs only on the LR crop its windows depend on,
    which gives the same maps exactly; `options.context` forces a crop margin (approximate for
    global networks). `program`: a program from `onnxlam export` (a file, or loaded). `lr_input`
    (C×h×w, the shape `image` gives) is analysed instead of the image's own LR input, path and
    baseline included (the noise tunnel's noisy copies); `image` still gives the HR image.
    `share=False` gives every window its own seed even where windows could share one (`sharing.py`).
    """
    start = time.perf_counter()
    options = options.validate()
    model.check_ops()
    model.budget()  # fixes the limit and, on CUDA, what was in use before this model's sessions
    wins = list(windows)
    if not wins:
        raise InputError("no window given; pass --window X Y")
    inputs = prepare_inputs(model, image, wins, options, lr_input)
    c, h, w = inputs.lr.shape
    sharing = plan_sharing(model, wins if share else wins[:1], options, (h, w), fixed_program=program is not None)
    seeds = sharing.classes if sharing.used else [[i] for i in range(len(wins))]
    k = min(len(seeds), MAX_WINDOWS) if program is None else model.program_for(program, h, w, options.fold,
                                                                                1).windows
    done = Integrated(np.zeros((len(wins), c, h, w), np.float32), np.zeros(len(wins), np.int64), [], [])
    masks = class_masks(inputs.masks, seeds) if sharing.used else inputs.masks
    batches = [list(range(i, min(i + k, len(seeds)))) for i in range(0, len(seeds), k)]
    for g, members in enumerate(batches):  # windows in the order given: neighbours share a crop
        windows_in = [j for m in members for j in seeds[m]]
        group = plan_group(model, windows_in, [wins[j] for j in windows_in], options, k, (h, w),
                           fixed_program=program is not None)
        tick = part_progress(progress, g, len(batches))
        part, nans, prog, used = integrate_group(model, group, masks[members], inputs, k, program,
                                                 options.fold, tick)
        for m, seed_map, seed_nans in zip(members, part, nans):
            for j in seeds[m]:  # a shared seed's NaNs cannot be told apart: each window gets them all
                done.attribution[j] = cut(seed_map, sharing.boxes[j]) if sharing.used else seed_map
                done.nan_gradients[j] = seed_nans
        done.groups.append(group)
        done.usage += [used] * len(windows_in)
        done.provider, done.batch = prog.session(model.device).provider, prog.batch
    return window_results(model, image, wins, inputs, options, done, time.perf_counter() - start)


def prepare_inputs(model: Model, image, wins: list[Window], options: LamOptions,
                   lr_input: np.ndarray | None = None) -> Inputs:
    """Stage 1: LR input, masks, F(x), and the objective at the input and at the path's baseline."""
    x, hr = model.prepare(image, options.lr)
    if lr_input is not None:
        x = given_lr(lr_input, x.shape)
    s = model.scale
    H, W = x.shape[1] * s, x.shape[2] * s
    masks = np.stack([window_mask(H, W, win.x, win.y, win.size) for win in wins])
    sr, objective_input = model.forward(x, masks)
    if not np.all(np.isfinite(sr)):
        raise NumericalError(f"{model.model_path}: the model's output holds NaN or inf for this image")
    steps = make_path(x, options.path, options.sigma, options.fold, options.kernel_size)
    _, objective_baseline = model.forward(steps.baseline, masks)
    return Inputs(x, hr, masks, sr, objective_input, objective_baseline, steps)


PROGRAM_NOTE = ("--program: the whole image at the exported program's own batch (its shape and batch were fixed "
                "by `onnxlam export`), so no receptive-field crop and no memory-sized batch; export with --batch B "
                "for larger batches, or run without --program to let onnxlam crop and batch")


def plan_group(model: Model, members: list[int], group_wins: list[Window], options: LamOptions, k: int,
               lr_size: tuple[int, int], fixed_program: bool) -> Group:
    """Stage 2: the crop of windows `members` (exact receptive field or --context, then memory) and its plan."""
    region = None
    if not fixed_program and not model.info.fixed_size and (options.crop or options.context is not None):
        region = choose_crop(model.receptive_field, [(win.x, win.y, win.size) for win in group_wins],
                             model.scale, lr_size, options.context)
    if fixed_program:  # its shape and batch were fixed when it was exported: no crop, its own batch
        return Group(members, region, Plan(0), (PROGRAM_NOTE,))
    hp, wp = region.size if region is not None else lr_size
    plan = model.plan(options.fold, hp, wp, k)
    if plan.footprint is not None and plan.batch == 0:  # not even one step fits: crop to what does
        region, note = model.planner.crop_to_fit(plan, region, group_wins, lr_size, k)
        return Group(members, region, model.plan(options.fold, *region.size, k), (note,))
    return Group(members, region, plan)


def integrate_group(model: Model, group: Group, seed_masks: np.ndarray, inputs: Inputs, k: int, program,
                    fold: int, done):
    """Stage 3: the path through the group's program for its seeds' masks; maps uncropped to the whole image."""
    region, seeds = group.crop, len(seed_masks)
    steps = crop_steps(inputs.steps, region) if region is not None else inputs.steps
    masks = np.zeros((k,) + inputs.masks.shape[1:], np.float32)  # unused slots stay empty
    masks[:seeds] = seed_masks
    if region is not None:
        masks = crop_masks(masks, region, model.scale)
    hp, wp = steps.images.shape[-2:]
    with memory.PeakMeter(model.run_device) as meter:
        prog = model.program_for(program, hp, wp, fold, k, max(group.plan.batch, 1))
        try:
            result = integrate(prog, steps, masks, model.device, done)
        except Exception:
            # A batched program is confirmed on its first batch (`GradientProgram.confirm`): one that
            # fails there (a batch baked into the file's reshapes, say) runs one step at a time.
            if prog.pending is None or program is not None or not model.may_fall_back(prog.batch):
                raise
            prog = model.one_at_a_time((prog.batch, hp, wp, k))
            result = integrate(prog, steps, masks, model.device, done)
    part = result.attribution[:seeds]
    if region is not None:
        part = uncrop(part, region, inputs.lr.shape[1:])
    return part, result.nan_gradients[:seeds], prog, model.planner.usage(group.plan, meter, prog.batch)


def window_results(model: Model, image, wins: list[Window], inputs: Inputs, options: LamOptions,
                   done: Integrated, seconds: float) -> list[LamResult]:
    """Stage 4: each window's abs-normalised map, DI, Gini, completeness and range statistics."""
    s = model.scale
    crop_of = {i: g.crop for g in done.groups for i in g.members}
    notes_of = {i: g.notes for g in done.groups for i in g.members}
    provenance = Provenance(model.model_path, model.info.sha256, image_name(image), done.provider, seconds, options)
    results = []
    for i, win in enumerate(wins):
        A = done.attribution[i]
        M = abs_normalise(A)
        if not np.all(np.isfinite(M)):
            raise NumericalError("the attribution map is not finite")
        results.append(LamResult(
            attribution=M, gradient=A, di=diffusion_index(M), gini=gini(M), window=win,
            scale=s, lr_size=tuple(inputs.lr.shape[1:]), path=options.path, sigma=float(options.sigma),
            fold=int(options.fold), kernel_size=int(options.kernel_size),
            completeness=Completeness(float(A.astype(np.float64).sum()),
                                      float(inputs.objective_input[i] - inputs.objective_baseline[i])),
            nan_gradients=int(done.nan_gradients[i]), lr_image=inputs.lr, sr_image=inputs.sr, hr_image=inputs.hr,
            provenance=provenance, batch_size=done.batch, value_range=model.value_range,
            channel_order=model.channel_order, range=range_statistics(M, win.centre_lr(s)),
            warnings=notes_of[i], receptive_field=model.receptive_field_if_known, crop=crop_of[i],
            memory=done.usage[i], inputs=dict(model.inputs) or None))
    return results


def given_lr(lr_input: np.ndarray, shape: tuple) -> np.ndarray:
    """`run_windows`'s `lr_input` as float32 C×h×w, checked against the image's own LR shape."""
    x = np.asarray(lr_input, np.float32)
    if x.shape != tuple(shape):
        raise InputError(f"the given LR input is {'×'.join(map(str, x.shape))}; the image gives "
                         f"{'×'.join(map(str, shape))}")
    if not np.all(np.isfinite(x)):
        raise InputError("the given LR input holds NaN or inf")
    return np.ascontiguousarray(x)
