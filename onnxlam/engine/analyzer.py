"""The LAM pipeline end to end: model and image in, a typed `LamResult` out.

`Analyzer` holds one model (loaded, inspected and normalised once) and the programs built for it,
so reports and notebooks analysing many images and windows pay for each program once. `analyze`
is the one-call form. One run of `run_windows` goes through the stages in order:

1. `_inputs`: the LR input (spec §1), F(x) and the objective at the input and at the path's baseline;
2. per group of up to MAX_WINDOWS windows, `_group`: the crop (receptive field, then memory: see
   `planner.py`) and the program's batch;
3. `_integrate`: the path steps through the gradient program (`lam/integration.py`), uncropped;
4. `_results`: the metrics of each window's map (`lam/metrics.py`) as `LamResult`s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from onnxlam.engine import memory
from onnxlam.engine.cache import ProgramCache
from onnxlam.engine.cropping import Crop, choose_crop, crop_masks, crop_steps, uncrop
from onnxlam.engine.planner import Plan, Planner
from onnxlam.engine import program as programs
from onnxlam.engine.program import GradientProgram, build_program, infer_scale, load_program, program_key
from onnxlam.engine.runtime import Session, create_session, resolve_device
from onnxlam.core.errors import InputError, NumericalError
from onnxlam.graph.detector import MASK, append_detector, window_mask
from onnxlam.graph.model import (INPUT, OUTPUT, fix_input_shape, normalise, open_model, output_dims,
                                 require_standard_ops, size_dependent_padding)
from onnxlam.graph.receptive_field import ReceptiveField, receptive_field
from onnxlam.lam import image as images
from onnxlam.lam.integration import integrate
from onnxlam.lam.metrics import abs_normalise, diffusion_index, gini, range_statistics
from onnxlam.lam.options import LamOptions
from onnxlam.lam.paths import PathSteps, make_path
from onnxlam.lam.result import Completeness, LamResult, Window

MAX_WINDOWS = 8  # windows sharing one forward pass; more are processed in groups of this size
D = LamOptions()  # the defaults of the keyword arguments below


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


class Analyzer:
    """One model, ready to analyse images: `Analyzer("model.onnx").run("photo.png", window=(x, y))`."""

    def __init__(self, model: str | Path | tuple, *, device: str = D.device, value_range: float | None = D.value_range,
                 bgr: bool | None = D.bgr, batch_size: int | None = D.batch_size, cache: bool = True,
                 check_ops: bool = True, max_memory: int | str | None = D.max_memory,
                 inputs: dict[str, float] | tuple | None = None):
        LamOptions(device=device, value_range=value_range, batch_size=batch_size, max_memory=max_memory).validate()
        self.model_path = str(model)
        # extra inputs (a noise level, a quality factor) fixed to constants: a one-input network from here on
        self.inputs = dict(inputs or {})
        if isinstance(model, tuple):  # an in-memory (ModelProto, ModelInfo): a video model adapted to one image
            self.source, self.info = model
            self.model_path = self.info.path
        else:
            self.source, self.info = open_model(model, self.inputs)
        if check_ops:  # `inspect` describes such models instead
            require_standard_ops(self.source, self.model_path)
        self.value_range = self.info.value_range if value_range is None else float(value_range)
        self.channel_order = self.info.channel_order if bgr is None else ("bgr" if bgr else "rgb")
        self.device = device
        self.batch_size = batch_size
        self.max_memory = None if max_memory is None else memory.parse_size(max_memory)
        self.cache = cache
        self.normalised = normalise(self.source, self.info, self.value_range, self.channel_order == "bgr")
        self._forward: Session | None = None
        self._programs: dict[tuple, GradientProgram] = {}
        self._prebuilt: dict[tuple, onnx.ModelProto] = {}  # gradient graphs built ahead (see `prebuild`)
        self._scale: int | None = None
        self._rf: ReceptiveField | None = None
        self._size_hint: tuple[int, int] | None = None  # an LR image's (h, w), for the scale's probe
        self.planner = Planner(self, self.run_device)

    # --- model facts --------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        """The integer scale, from shape inference at the file's size (else the LR image's, else 32×32),
        else a test run."""
        if self._scale is None:
            # An LR image's own size before 32×32: a TorchScript export with dynamic axes may still
            # bake its traced size into shape arithmetic (DITN's), and work at that size only.
            h, w = self.info.fixed_size or self._size_hint or (32, 32)
            fixed = fix_input_shape(self.normalised, (self.info.fixed_batch or 1, self.info.channels, h, w))
            dims = output_dims(fixed)
            if not (dims and all(isinstance(d, int) and d > 0 for d in dims[2:])):
                probe = create_session(self.normalised, "cpu")
                x = np.zeros((self.info.fixed_batch or 1, self.info.channels, h, w), np.float32)
                try:
                    dims = probe.session.run([OUTPUT], {INPUT: x})[0].shape
                except Exception as exc:
                    raise InputError(f"{self.model_path}: the model fails on a {w}×{h} test input, so its "
                                     f"scale is unknown ({str(exc).splitlines()[0][:200]})") from None
            self._scale = infer_scale(h, w, dims[2], dims[3])
        return self._scale

    def forward(self, lr: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F(x) (C×H×W) and D(F(x)) per window ([K]) for one LR image (C×h×w) and masks (K×(H−1)×(W−1))."""
        if self._forward is None:
            # no arena: run twice per image, its memory goes back for the gradient program
            self._forward = create_session(append_detector(self.normalised), self.device, arena=False)
        c, h, w = lr.shape
        try:
            sr, objective = self._forward.run({INPUT: lr[None].astype(np.float32),
                                               MASK: np.ascontiguousarray(masks[None], np.float32)})
        except Exception as exc:
            raise InputError(f"{self.model_path}: the model failed on a {w}×{h} input: "
                             f"{str(exc).splitlines()[0][:300]}") from None
        return sr[0], objective[0].astype(np.float64)

    @property
    def run_device(self) -> str:
        """"cuda" or "cpu": where this Analyzer's sessions run."""
        return resolve_device(self.device)

    def budget(self) -> int:
        """The memory limit in bytes (see `Planner.budget`)."""
        return self.planner.budget()

    def plan(self, fold: int, h: int, w: int, windows: int = 1) -> Plan:
        """The batch for programs of LR size h×w (see `Planner.plan`)."""
        return self.planner.plan(fold, h, w, windows)

    def program(self, h: int, w: int, fold: int, windows: int = 1, batch: int | None = None) -> GradientProgram:
        """The gradient program for LR size h×w and `windows` windows, batched as the model and memory allow."""
        batch = batch or max(1, self.plan(fold, h, w, windows).batch)
        key = (batch, h, w, windows)
        if key not in self._programs:
            try:
                self._programs[key] = self.build(batch, h, w, windows)
            except InputError:
                if not self._may_fall_back(batch):
                    raise
                self._programs[key] = self._one_at_a_time(key)
        return self._programs[key]

    def _may_fall_back(self, batch: int) -> bool:
        return batch > 1 and self.batch_size is None and self.info.fixed_batch in (None, 1)

    def _one_at_a_time(self, key: tuple) -> GradientProgram:
        """The batch-1 program that replaces the batched one of `key`: the file fixes (or silently
        assumes) a batch of 1, or its batched program failed its confirmation."""
        _, h, w, windows = key
        single = self._programs.get((1, h, w, windows)) or self.build(1, h, w, windows)
        self._programs[key] = single
        return single

    def build(self, batch: int, h: int, w: int, windows: int, verify: bool = True) -> GradientProgram:
        return build_program((self.source, self.info), batch, h, w, self.value_range,
                             self.channel_order == "bgr", cache=self.cache and verify, device=self.device,
                             windows=windows, verify=verify, confirm_on_use=True,
                             graph=self._prebuilt.pop((batch, h, w, windows), None))

    def prebuild(self, batch: int, h: int, w: int, windows: int) -> None:
        """Differentiate for a program that is likely needed next, without checking it (`build` checks it
        when it is asked for; a guess that is not asked for only cost the time it filled)."""
        if batch <= 1 or (batch, h, w, windows) in self._prebuilt:
            return
        key = program_key(self.info, batch, h, w, self.value_range, self.channel_order == "bgr", windows)
        if self.cache and ProgramCache().has(key):
            return
        try:
            self._prebuilt[(batch, h, w, windows)] = programs.gradient_graph(self.source, self.info, key)
        except Exception:  # `build` reports it, if the program is asked for
            pass

    def forget_prebuilt(self, unless: tuple) -> None:
        self._prebuilt = {k: v for k, v in self._prebuilt.items() if k == unless}

    @property
    def receptive_field(self) -> ReceptiveField:
        """The model's static receptive field (computed once; see `graph/receptive_field/`).

        A model whose baked padding depends on the input size (a checkpoint's size requirements, see
        `convert.pytorch`) is global: its reach at a border changes with the image's size, which the
        analysis at two sizes cannot see."""
        if self._rf is None:
            padded = size_dependent_padding(self.source)
            if padded:
                self._rf = ReceptiveField(True, None, padded)
        if self._rf is None:
            try:
                self._rf = receptive_field(self.normalised, INPUT, output_name=OUTPUT,
                                           size=self.info.fixed_size)
            except Exception as exc:  # an analysis failure must not stop LAM: treat as global
                self._rf = ReceptiveField(True, None, f"receptive-field analysis failed: {exc}")
        return self._rf

    # --- the analysis -------------------------------------------------------------------------
    def prepare(self, image: str | Path | np.ndarray, lr: bool = False,
                channels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The LR input and the cropped HR image (float32 C×h×w in [0, 1]; HR None with `lr`), spec §1.

        `channels`: the image's channels where the model's input has others (one frame of a video)."""
        pixels = images.read_image(image) if isinstance(image, (str, Path)) else images.from_array(image)
        pixels = images.match_channels(pixels, channels or self.info.channels)
        if lr and self._scale is None:
            self._size_hint = (int(pixels.shape[0]), int(pixels.shape[1]))
        x = images.to_unit(pixels) if lr else images.prepare_lr(pixels, self.scale)
        hr = None if lr else images.to_unit(pixels)[:, :x.shape[1] * self.scale, :x.shape[2] * self.scale]
        fixed = self.info.fixed_size
        if fixed and tuple(x.shape[1:]) != fixed:
            need = f"{fixed[1]}×{fixed[0]}" if lr else f"{fixed[1] * self.scale}×{fixed[0] * self.scale}"
            raise InputError(f"{self.model_path} takes LR input {fixed[1]}×{fixed[0]} only (fixed in the file); "
                             f"the image gives {x.shape[2]}×{x.shape[1]}: crop it to {need}, "
                             "or export the model with dynamic height and width")
        return x, hr

    def run(self, image: str | Path | np.ndarray, window: tuple[int, int] | Window, size: int = D.size, *,
            lr: bool = D.lr, path: str = D.path, sigma: float = D.sigma, fold: int = D.fold,
            kernel_size: int = D.kernel_size, program: str | Path | GradientProgram | None = None,
            progress: Callable[[int, int], None] | None = None, crop: bool = D.crop,
            context: int | None = D.context, lr_input: np.ndarray | None = None) -> LamResult:
        """LAM of the window at `window` = (x, y) (SR pixels, top-left) of side `size` on `image`."""
        return self.run_windows(image, [window], size, lr=lr, path=path, sigma=sigma, fold=fold,
                                kernel_size=kernel_size, program=program, progress=progress, crop=crop,
                                context=context, lr_input=lr_input)[0]

    def run_windows(self, image: str | Path | np.ndarray, windows: Sequence[tuple[int, int] | Window],
                    size: int = D.size, *, lr: bool = D.lr, path: str = D.path, sigma: float = D.sigma,
                    fold: int = D.fold, kernel_size: int = D.kernel_size,
                    program: str | Path | GradientProgram | None = None,
                    progress: Callable[[int, int], None] | None = None, crop: bool = D.crop,
                    context: int | None = D.context, lr_input: np.ndarray | None = None) -> list[LamResult]:
        """LAM of several windows of one image; up to MAX_WINDOWS of them share each forward pass.

        With `crop` (default) a local network runs only on the LR crop its windows depend on, which
        gives the same maps exactly; `context` forces a crop margin (approximate for global networks).
        `lr_input` (C×h×w, the shape `image` gives) is analysed instead of the image's own LR input,
        path and baseline included (the noise tunnel's noisy copies); `image` still gives the HR image.
        """
        start = time.perf_counter()
        options = LamOptions(size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                             crop=crop, context=context).validate()
        self.budget()  # fixes the limit and, on CUDA, what was in use before this Analyzer's sessions
        wins = [w if isinstance(w, Window) else Window(int(w[0]), int(w[1]), int(size)) for w in windows]
        if not wins:
            raise InputError("no window given; pass --window X Y")
        inputs = self._inputs(image, wins, options, lr_input)
        k = min(len(wins), MAX_WINDOWS) if program is None else self._program_for(program, *inputs.lr.shape[1:],
                                                                                   fold, 1).windows
        c, h, w = inputs.lr.shape
        attribution = np.zeros((len(wins), c, h, w), np.float32)
        nan_gradients = np.zeros(len(wins), np.int64)
        groups: list[Group] = []
        usage: list[memory.MemoryUsage] = []
        batches = [list(range(i, min(i + k, len(wins)))) for i in range(0, len(wins), k)]
        for g, members in enumerate(batches):  # windows in the order given: neighbours share a crop
            group = self._group(members, wins, options, k, (h, w), fixed_program=program is not None)
            done = (lambda d, n, g=g: progress(g * n + d, n * len(batches))) if progress else None
            part, nans, prog, used = self._integrate(group, inputs, k, program, fold, done)
            attribution[members] = part
            nan_gradients[members] = nans
            groups.append(group)
            usage += [used] * len(members)
        provider = prog.session(self.device).provider
        return self._results(image, wins, inputs, options, attribution, nan_gradients, groups, usage, provider,
                             prog.batch, time.perf_counter() - start)

    def _inputs(self, image, wins: list[Window], options: LamOptions, lr_input: np.ndarray | None = None) -> Inputs:
        """Stage 1: LR input, masks, F(x), and the objective at the input and at the path's baseline."""
        x, hr = self.prepare(image, options.lr)
        if lr_input is not None:
            x = _given_lr(lr_input, x.shape)
        s = self.scale
        H, W = x.shape[1] * s, x.shape[2] * s
        masks = np.stack([window_mask(H, W, win.x, win.y, win.size) for win in wins])
        sr, objective_input = self.forward(x, masks)
        if not np.all(np.isfinite(sr)):
            raise NumericalError(f"{self.model_path}: the model's output holds NaN or inf for this image")
        steps = make_path(x, options.path, options.sigma, options.fold, options.kernel_size)
        _, objective_baseline = self.forward(steps.baseline, masks)
        return Inputs(x, hr, masks, sr, objective_input, objective_baseline, steps)

    def _group(self, members: list[int], wins: list[Window], options: LamOptions, k: int,
               lr_size: tuple[int, int], fixed_program: bool) -> Group:
        """Stage 2: the group's crop (exact receptive field or --context, then memory) and its plan."""
        group_wins = [wins[i] for i in members]
        region = None
        if not fixed_program and not self.info.fixed_size and (options.crop or options.context is not None):
            region = choose_crop(self.receptive_field, [(win.x, win.y, win.size) for win in group_wins],
                                 self.scale, lr_size, options.context)
        if fixed_program:
            return Group(members, region, Plan(0))
        hp, wp = region.size if region is not None else lr_size
        plan = self.plan(options.fold, hp, wp, k)
        if plan.footprint is not None and plan.batch == 0:  # not even one step fits: crop to what does
            region, note = self.planner.crop_to_fit(plan, region, group_wins, lr_size, k)
            return Group(members, region, self.plan(options.fold, *region.size, k), (note,))
        return Group(members, region, plan)

    def _integrate(self, group: Group, inputs: Inputs, k: int, program, fold: int, done):
        """Stage 3: the path through the group's program; the group's maps uncropped to the whole image."""
        region, members = group.crop, group.members
        steps = crop_steps(inputs.steps, region) if region is not None else inputs.steps
        masks = np.zeros((k,) + inputs.masks.shape[1:], np.float32)  # unused slots stay empty
        masks[:len(members)] = inputs.masks[members]
        if region is not None:
            masks = crop_masks(masks, region, self.scale)
        hp, wp = steps.images.shape[-2:]
        with memory.PeakMeter(self.run_device) as meter:
            prog = self._program_for(program, hp, wp, fold, k, max(group.plan.batch, 1))
            try:
                result = integrate(prog, steps, masks, self.device, done)
            except Exception:
                # A batched program is confirmed on its first batch (`GradientProgram.confirm`): one that
                # fails there (a batch baked into the file's reshapes, say) runs one step at a time.
                if prog.pending is None or program is not None or not self._may_fall_back(prog.batch):
                    raise
                prog = self._one_at_a_time((prog.batch, hp, wp, k))
                result = integrate(prog, steps, masks, self.device, done)
        part = result.attribution[:len(members)]
        if region is not None:
            part = uncrop(part, region, inputs.lr.shape[1:])
        return part, result.nan_gradients[:len(members)], prog, self.planner.usage(group.plan, meter, prog.batch)

    def _results(self, image, wins: list[Window], inputs: Inputs, options: LamOptions, attribution: np.ndarray,
                 nan_gradients: np.ndarray, groups: list[Group], usage: list, provider: str, batch: int,
                 seconds: float) -> list[LamResult]:
        """Stage 4: each window's abs-normalised map, DI, Gini, completeness and range statistics."""
        s = self.scale
        crop_of = {i: g.crop for g in groups for i in g.members}
        notes_of = {i: g.notes for g in groups for i in g.members}
        results = []
        for i, win in enumerate(wins):
            M = abs_normalise(attribution[i])
            if not np.all(np.isfinite(M)):
                raise NumericalError("the attribution map is not finite")
            results.append(LamResult(
                attribution=M, gradient=attribution[i], di=diffusion_index(M), gini=gini(M), window=win,
                scale=s, lr_size=tuple(inputs.lr.shape[1:]), path=options.path, sigma=float(options.sigma),
                fold=int(options.fold), kernel_size=int(options.kernel_size),
                completeness=Completeness(float(attribution[i].astype(np.float64).sum()),
                                          float(inputs.objective_input[i] - inputs.objective_baseline[i])),
                nan_gradients=int(nan_gradients[i]), lr_image=inputs.lr, sr_image=inputs.sr, hr_image=inputs.hr,
                model=self.model_path, model_sha256=self.info.sha256,
                image=str(image) if isinstance(image, (str, Path)) else "<array>", provider=provider,
                seconds=seconds, batch_size=batch, value_range=self.value_range, channel_order=self.channel_order,
                range=range_statistics(M, win.centre_lr(s)), warnings=notes_of[i], receptive_field=self._rf,
                crop=crop_of[i], memory=usage[i], inputs=dict(self.inputs) or None))
        return results

    def _program_for(self, program, h: int, w: int, fold: int, windows: int,
                     batch: int | None = None) -> GradientProgram:
        if program is None:
            return self.program(h, w, fold, windows, batch)
        prog = program if isinstance(program, GradientProgram) else load_program(program)
        k = prog.key
        if k.detector != "lam":
            raise InputError(f"the program's objective is the {k.detector!r} detector, not LAM's; "
                             "export one with `onnxlam export`")
        if k.source_sha256 != self.info.sha256:
            raise InputError(f"the program was built from another model (sha256 {k.source_sha256[:12]}…, "
                             f"this one is {self.info.sha256[:12]}…); export it again from this model")
        if (k.channels, k.height, k.width) != (self.info.channels, h, w):
            raise InputError(f"the program is for LR input {k.width}×{k.height}, the image gives {w}×{h}; "
                             f"export a program with --size {h} {w}")
        if (k.value_range, k.channel_order) != (self.value_range, self.channel_order):
            raise InputError(f"the program was exported for value range {k.value_range:g} / {k.channel_order}, "
                             f"this run uses {self.value_range:g} / {self.channel_order}")
        return prog


def _given_lr(lr_input: np.ndarray, shape: tuple) -> np.ndarray:
    """`run_windows`'s `lr_input` as float32 C×h×w, checked against the image's own LR shape."""
    x = np.asarray(lr_input, np.float32)
    if x.shape != tuple(shape):
        raise InputError(f"the given LR input is {'×'.join(map(str, x.shape))}; the image gives "
                         f"{'×'.join(map(str, shape))}")
    if not np.all(np.isfinite(x)):
        raise InputError("the given LR input holds NaN or inf")
    return np.ascontiguousarray(x)


def analyze(model: str | Path, image: str | Path | np.ndarray, window: tuple[int, int], size: int = D.size, *,
            lr: bool = D.lr, path: str = D.path, sigma: float = D.sigma, fold: int = D.fold,
            kernel_size: int = D.kernel_size, batch_size: int | None = D.batch_size, device: str = D.device,
            value_range: float | None = D.value_range, bgr: bool | None = D.bgr, program: str | Path | None = None,
            progress: Callable[[int, int], None] | None = None, crop: bool = D.crop,
            context: int | None = D.context, max_memory: int | str | None = D.max_memory,
            inputs: dict[str, float] | None = None) -> LamResult:
    """Local attribution map of `model` for the window at `window` = (x, y) of side `size` on `image`.

    See `Analyzer.run`; this builds an Analyzer for a single call. `inputs` fixes a model's extra
    inputs ({name: value}, broadcast to the input's shape; see `graph.model.bind_inputs`).
    """
    analyzer = Analyzer(model, device=device, value_range=value_range, bgr=bgr, batch_size=batch_size,
                        max_memory=max_memory, inputs=inputs)
    return analyzer.run(image, window, size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                        program=program, progress=progress, crop=crop, context=context)
