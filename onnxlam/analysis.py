"""The LAM pipeline end to end: model and image in, a typed `LamResult` out.

`Analyzer` holds one model (loaded, inspected and normalised once) and the programs built for it,
so reports and notebooks analysing many images and windows pay for each program once. `analyze`
is the one-call form.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import image as images
from .detector import MASK, append_detector, window_mask
from .errors import InputError, NumericalError
from .integration import integrate
from .metrics import abs_normalise, diffusion_index, gini, range_statistics
from .model import INPUT, OUTPUT, fix_input_shape, normalise, open_model, output_dims, require_standard_ops
from .paths import PATHS, make_path
from . import memory
from .cache import ProgramCache, RecordCache
from .cropping import Crop, choose_crop, crop_masks, crop_steps, memory_crop, uncrop, windows_box
from .gradcheck import FD_TOLERANCE
from .program import FORMAT, GradientProgram, build_program, check_size, infer_scale, load_program
from .receptive_field import ReceptiveField, receptive_field
from .runtime import Session, create_session, resolve_device

MAX_AUTO_BATCH = {"cpu": 10, "cuda": 25}  # beyond these a batch gains nothing measurable (BENCHMARKS.md)
CROP_STEP = 16  # memory crops' sides are multiples of this (and of the model's period): a few MB more or
               # less free memory must not change the crop, and so the map, from one run to the next
MAX_WINDOWS = 8  # windows sharing one forward pass; more are processed in groups of this size


@dataclass(frozen=True)
class Window:
    """The analysed window: top-left column `x`, row `y`, side `size`, in SR-output pixels."""

    x: int
    y: int
    size: int = 16


@dataclass(frozen=True)
class Completeness:
    """Σ A against D(F(x)) − D(F(baseline)): equal up to the Riemann-sum error of the path."""

    attribution_sum: float
    objective_delta: float


@dataclass(frozen=True)
class LamResult:
    """Everything one LAM analysis produced; `to_json()` is what `result.json` holds."""

    attribution: np.ndarray       # M, float32 h×w, abs-normalised
    gradient: np.ndarray          # A, float32 C×h×w, signed
    di: float
    gini: float
    window: Window
    scale: int
    lr_size: tuple[int, int]
    path: str
    sigma: float
    fold: int
    kernel_size: int
    completeness: Completeness
    nan_gradients: int
    lr_image: np.ndarray          # float32 C×h×w in [0, 1], RGB: what the model saw
    sr_image: np.ndarray          # float32 C×H×W, as the model returned it (in [0, 1] convention)
    hr_image: np.ndarray | None   # float32 C×H×W, the HR image cropped to s·h×s·w (None with lr=True)
    model: str
    model_sha256: str
    image: str
    provider: str
    seconds: float
    batch_size: int
    value_range: float
    channel_order: str
    range: dict = field(default_factory=dict)  # metrics.range_statistics of M
    warnings: list = field(default_factory=list)  # what the user must know (an approximate memory crop)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = {
            "di": self.di, "gini": self.gini,
            "window": {"x": self.window.x, "y": self.window.y, "size": self.window.size},
            "scale": self.scale, "lr_size": list(self.lr_size),
            "sr_size": [int(self.sr_image.shape[1]), int(self.sr_image.shape[2])],
            "path": self.path, "sigma": self.sigma, "fold": self.fold, "kernel_size": self.kernel_size,
            "model": self.model, "model_sha256": self.model_sha256, "image": self.image,
            "provider": self.provider, "seconds": round(self.seconds, 4), "batch_size": self.batch_size,
            "value_range": self.value_range, "channel_order": self.channel_order,
            "completeness": {"attribution_sum": self.completeness.attribution_sum,
                             "objective_delta": self.completeness.objective_delta},
            "nan_gradients": self.nan_gradients,
            "range": self.range,
            "warnings": list(self.warnings),
        }
        data.update(self.extra)
        return data


@dataclass(frozen=True)
class Plan:
    """How the programs of one input size run: `batch` images per step (0: not even one fits) and the
    peak predicted from the measured footprint (None where nothing was measured)."""

    batch: int
    predicted_peak: int | None = None
    footprint: memory.Footprint | None = None
    base: int = 0  # what was in use when the plan was made


class Analyzer:
    """One model, ready to analyse images: `Analyzer("model.onnx").run("photo.png", window=(x, y))`."""

    def __init__(self, model: str | Path, *, device: str = "auto", value_range: float | None = None,
                 bgr: bool | None = None, batch_size: int | None = None, cache: bool = True,
                 check_ops: bool = True, max_memory: int | str | None = None,
                 inputs: dict[str, float] | None = None):
        self.model_path = str(model)
        # extra inputs (a noise level, a quality factor) fixed to constants: a one-input network from here on
        self.inputs = dict(inputs or {})
        self.source, self.info = open_model(model, self.inputs)
        if check_ops:  # `inspect` describes such models instead
            require_standard_ops(self.source, self.model_path)
        if value_range is not None and value_range not in (1.0, 255.0):
            raise InputError(f"--value-range must be 1 or 255; got {value_range:g}")
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {batch_size}")
        self.value_range = self.info.value_range if value_range is None else float(value_range)
        self.channel_order = self.info.channel_order if bgr is None else ("bgr" if bgr else "rgb")
        self.device = device
        self.batch_size = batch_size
        self.max_memory = None if max_memory is None else memory.parse_size(max_memory)
        self.cache = cache
        self.normalised = normalise(self.source, self.info, self.value_range, self.channel_order == "bgr")
        self._forward: Session | None = None
        self._programs: dict[tuple, GradientProgram] = {}
        self._scale: int | None = None
        self._rf: ReceptiveField | None = None
        self._plans: dict[tuple, Plan] = {}
        self._footprints: dict[tuple, memory.Footprint | None] = {}
        self._budget: tuple[int, int] | None = None  # (limit, what was in use before onnxlam's sessions)
        self._size_hint: tuple[int, int] | None = None  # an LR image's (h, w), for the scale's probe

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

    # --- memory --------------------------------------------------------------------------------
    @property
    def run_device(self) -> str:
        """"cuda" or "cpu": where this Analyzer's sessions run."""
        return resolve_device(self.device)

    def budget(self) -> int:
        """The memory limit in bytes: `max_memory`, else a safe fraction of what is free (decided once).

        On the CPU it bounds this process's resident set; on CUDA, the device memory onnxlam's sessions hold.
        """
        if self._budget is None:
            device = self.run_device
            origin = 0 if device == "cpu" else (memory.in_use(device) or 0)
            self._budget = (self.max_memory or memory.default_budget(device), origin)
        return self._budget[0]

    def _in_use(self) -> int | None:
        self.budget()
        now = memory.in_use(self.run_device)
        return None if now is None else now - self._budget[1]

    def footprint(self, h: int, w: int, windows: int) -> memory.Footprint | None:
        """The measured memory of this model's batch-1 programs (see `memory.py`), probed once and cached.

        Images up to CHECK_SIDE a side are probed at their own size; larger ones at the check size
        (`program.check_size`, at most CHECK_SIDE a side) and half of it (and in between for global
        networks) and extrapolated. None when the probes fail.
        """
        check = check_size(self.info, h, w)  # the size new programs are checked at: probed last
        if self.info.fixed_size or check == (h, w):
            sizes = [check]
        else:
            steps = [2, 4 / 3, 1] if self.receptive_field.global_ else [2, 1]
            sizes = [(max(1, int(check[0] / f)), max(1, int(check[1] / f))) for f in steps]
        key = (tuple(sizes), windows)
        if key not in self._footprints:
            import onnxruntime

            from ._version import __version__

            device = self.run_device
            slug = (f"{self.info.sha256[:32]}-k{windows}-{device}-{'_'.join(f'{a}x{b}' for a, b in sizes)}"
                    f"-r{self.value_range:g}-{self.channel_order}-ort{onnxruntime.__version__}"
                    f"-t{os.environ.get('ONNXLAM_THREADS', os.cpu_count())}-v{__version__}-f{FORMAT}-m2")
            store = RecordCache("footprints") if self.cache else None
            record = store.load(slug) if store else None
            footprint = None
            if record is not None:
                footprint = memory.Footprint.from_json(record)
            else:
                try:
                    probes = tuple(self._probe(a, b, windows, device, check=(a, b) == check) for a, b in sizes)
                    footprint = memory.Footprint(probes, quadratic=len(probes) > 2)
                    if store:
                        store.save(slug, footprint.to_json())
                except Exception:  # the model refuses the probe sizes, or memory is not measurable here
                    footprint = None
            self._footprints[key] = footprint
        return self._footprints[key]

    def _probe(self, h: int, w: int, windows: int, device: str, check: bool) -> memory.Probe:
        """One memory probe of the batch-1 program of h×w. The program probed at the check size is the
        one new programs are checked against (`program._verify`): the probe checks it too, and it goes
        to the program cache checked, so the check is not run a second time."""
        program = self._build(1, h, w, windows, verify=False)
        probe = memory.probe(program, device, check=check)
        if self.cache and program.fd_error is not None and program.fd_error <= FD_TOLERANCE:
            ProgramCache().save(program)
        return probe

    def _extra(self, batch: int, h: int, w: int, windows: int) -> int:
        """Host bytes of one step's outputs as `integrate` handles them (float32 in, float64 sum)."""
        return batch * windows * self.info.channels * h * w * 16 if self.run_device == "cpu" else 0

    def plan(self, fold: int, h: int, w: int, windows: int = 1) -> Plan:
        """The batch for programs of LR size h×w: the largest whose measured footprint fits the budget.

        Decided once per shape (free memory moving must not rebuild programs). Batch 0 means that not
        even one step fits: the caller crops (see `run_windows`).
        """
        if self.info.fixed_batch not in (None, 1):
            return Plan(self.info.fixed_batch)
        if self.batch_size is not None:
            return Plan(min(self.batch_size, fold))
        cap = min(MAX_AUTO_BATCH[self.run_device], fold)
        key = (h, w, windows, cap)
        if key not in self._plans:
            base = self._in_use()  # before probing: what probing leaves behind is free for reuse
            footprint = self.footprint(h, w, windows)
            if footprint is None or base is None:
                self._plans[key] = Plan(1)  # nothing measurable: one step at a time is the safe choice
            else:
                def need(b: int) -> int:  # a step of b images, or the check of a new program if more
                    run = self._extra(b, h, w, windows) + footprint.peak(b, h * w)
                    return int(base + memory.margin(max(run, footprint.check)))

                batch = max((b for b in range(1, cap + 1) if need(b) <= self.budget()), default=0)
                self._plans[key] = Plan(batch, need(max(batch, 1)), footprint, base)
        return self._plans[key]

    def _memory_crop(self, plan: Plan, region: Crop | None, wins: list[Window], lr_size: tuple[int, int],
                     windows: int) -> tuple[Crop, str]:
        """The largest crop around `wins` whose one step fits the budget, and the warning that says so."""
        h, w = lr_size
        inside = (region.top, region.left, region.bottom, region.right) if region else (0, 0, h, w)
        limit = memory.format_size(self.budget())
        need = memory.format_size(plan.predicted_peak or 0)
        size = f"{inside[3] - inside[1]}×{inside[2] - inside[0]}"
        if self.info.fixed_size:
            raise InputError(f"one path step of {self.model_path} needs about {need}, over the memory limit "
                             f"{limit}, and its input size is fixed, so it cannot be cropped: raise --max-memory")
        s = self.scale
        boxes = [(win.x, win.y, win.size) for win in wins]
        available = memory.room(self.budget() - plan.base) - self._extra(1, h, w, windows)
        rf = self.receptive_field
        period = rf.period if rf.period is not None else (1, 1)
        if plan.footprint.check > available:
            raise InputError(f"checking a new gradient program of {self.model_path} needs about "
                             f"{memory.format_size(memory.margin(plan.footprint.check) + plan.base)}, over "
                             f"the memory limit {limit}: raise --max-memory")
        wt, wl, wb, wr = windows_box(boxes, s, lr_size)
        box = memory_crop(inside, (wt, wl, wb, wr), plan.footprint.max_pixels(available), period, CROP_STEP)
        if box is None:
            raise InputError(f"one path step on the LR {size} input needs about {need}, and the memory limit "
                             f"{limit} does not hold even the windows' own pixels: raise --max-memory "
                             "(or analyse fewer windows at once)")
        cone = choose_crop(rf, boxes, s, lr_size, worth_it=1.0) if rf.local else None
        exact = cone is not None and box[0] <= cone.top and box[1] <= cone.left and box[2] >= cone.bottom \
            and box[3] >= cone.right
        margins = [wt - box[0] if box[0] > 0 else None, box[2] - wb if box[2] < h else None,
                   wl - box[1] if box[1] > 0 else None, box[3] - wr if box[3] < w else None]
        context = min((m for m in margins if m is not None), default=None)
        crop = Crop(*box, exact=exact, context=context, reason="memory")
        reach = "" if rf.global_ or rf.reach is None else f"; its receptive field reaches {max(rf.reach)} LR px"
        how = "exact: the box covers the receptive field" if exact else \
            f"approximate: {context} LR px of context around the windows{reach}"
        note = (f"one path step on the LR {size} input needs about {need}, over the memory limit {limit}: "
                f"analysing LR rows {box[0]}–{box[2] - 1}, cols {box[1]}–{box[3] - 1} only ({how})")
        return crop, note

    def program(self, h: int, w: int, fold: int, windows: int = 1, batch: int | None = None) -> GradientProgram:
        """The gradient program for LR size h×w and `windows` windows, batched as the model and memory allow."""
        batch = batch or max(1, self.plan(fold, h, w, windows).batch)
        key = (batch, h, w, windows)
        if key not in self._programs:
            try:
                self._programs[key] = self._build(batch, h, w, windows)
            except InputError:
                if batch == 1 or self.batch_size is not None or self.info.fixed_batch not in (None, 1):
                    raise
                # The file fixes (or silently assumes) a batch of 1: run the steps one at a time.
                self._programs[key] = self._programs.get((1, h, w, windows)) or self._build(1, h, w, windows)
        return self._programs[key]

    def _build(self, batch: int, h: int, w: int, windows: int, verify: bool = True) -> GradientProgram:
        return build_program((self.source, self.info), batch, h, w, self.value_range,
                             self.channel_order == "bgr", cache=self.cache and verify, device=self.device,
                             windows=windows, verify=verify)

    @property
    def receptive_field(self) -> ReceptiveField:
        """The model's static receptive field (computed once; see `receptive_field.py`)."""
        if self._rf is None:
            try:
                self._rf = receptive_field(self.normalised, INPUT, output_name=OUTPUT,
                                           size=self.info.fixed_size)
            except Exception as exc:  # an analysis failure must not stop LAM: treat as global
                self._rf = ReceptiveField(True, None, f"receptive-field analysis failed: {exc}")
        return self._rf

    # --- the analysis -------------------------------------------------------------------------
    def prepare(self, image: str | Path | np.ndarray, lr: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The LR input and the cropped HR image (float32 C×h×w in [0, 1]; HR None with `lr`), spec §1."""
        pixels = images.read_image(image) if isinstance(image, (str, Path)) else images.from_array(image)
        pixels = images.match_channels(pixels, self.info.channels)
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

    def run(self, image: str | Path | np.ndarray, window: tuple[int, int] | Window, size: int = 16, *,
            lr: bool = False, path: str = "blur", sigma: float = 1.2, fold: int = 50, kernel_size: int = 9,
            program: str | Path | GradientProgram | None = None,
            progress: Callable[[int, int], None] | None = None, crop: bool = True,
            context: int | None = None) -> LamResult:
        """LAM of the window at `window` = (x, y) (SR pixels, top-left) of side `size` on `image`."""
        return self.run_windows(image, [window], size, lr=lr, path=path, sigma=sigma, fold=fold,
                                kernel_size=kernel_size, program=program, progress=progress, crop=crop,
                                context=context)[0]

    def run_windows(self, image: str | Path | np.ndarray, windows: Sequence[tuple[int, int] | Window],
                    size: int = 16, *, lr: bool = False, path: str = "blur", sigma: float = 1.2, fold: int = 50,
                    kernel_size: int = 9, program: str | Path | GradientProgram | None = None,
                    progress: Callable[[int, int], None] | None = None, crop: bool = True,
                    context: int | None = None) -> list[LamResult]:
        """LAM of several windows of one image; up to MAX_WINDOWS of them share each forward pass.

        With `crop` (default) a local network runs only on the LR crop its windows depend on, which
        gives the same maps exactly; `context` forces a crop margin (approximate for global networks).
        """
        start = time.perf_counter()
        self.budget()  # fixes the limit and, on CUDA, what was in use before this Analyzer's sessions
        wins = [w if isinstance(w, Window) else Window(int(w[0]), int(w[1]), int(size)) for w in windows]
        if not wins:
            raise InputError("no window given; pass --window X Y")
        _check_parameters(path, sigma, fold, kernel_size)
        x, hr = self.prepare(image, lr)
        c, h, w = x.shape
        s = self.scale
        H, W = h * s, w * s
        masks = np.stack([window_mask(H, W, win.x, win.y, win.size) for win in wins])
        sr, objective_input = self.forward(x, masks)
        if not np.all(np.isfinite(sr)):
            raise NumericalError(f"{self.model_path}: the model's output holds NaN or inf for this image")
        steps = make_path(x, path, sigma, fold, kernel_size)
        _, objective_baseline = self.forward(steps.baseline, masks)
        if context is not None and context < 0:
            raise InputError(f"--context must be ≥ 0; got {context}")
        k = min(len(wins), MAX_WINDOWS) if program is None else self._program_for(program, h, w, fold, 1).windows
        attribution = np.zeros((len(wins), c, h, w), np.float32)
        nan_gradients = np.zeros(len(wins), np.int64)
        regions: list = []
        notes: list[list[str]] = []  # per window: what its group's run must say
        usage: list[dict] = []
        groups = [list(range(i, min(i + k, len(wins)))) for i in range(0, len(wins), k)]
        for g, members in enumerate(groups):  # windows in the order given: neighbours share a crop
            group_wins = [wins[i] for i in members]
            region = None
            if program is None and not self.info.fixed_size and (crop or context is not None):
                region = choose_crop(self.receptive_field, [(win.x, win.y, win.size) for win in group_wins],
                                     s, (h, w), context)
            hp, wp = region.size if region is not None else (h, w)
            plan = self.plan(fold, hp, wp, k) if program is None else Plan(0)
            group_notes = []
            if plan.footprint is not None and plan.batch == 0:  # not even one step fits: crop to what does
                region, note = self._memory_crop(plan, region, group_wins, (h, w), k)
                group_notes.append(note)
                hp, wp = region.size
                plan = self.plan(fold, hp, wp, k)
            group_steps = crop_steps(steps, region) if region is not None else steps
            group_masks = np.zeros((k,) + masks.shape[1:], np.float32)  # unused slots stay empty
            group_masks[:len(members)] = masks[members]
            if region is not None:
                group_masks = crop_masks(group_masks, region, s)
            done = (lambda d, n, g=g: progress(g * n + d, n * len(groups))) if progress else None
            with memory.PeakMeter(self.run_device) as meter:
                prog = self._program_for(program, hp, wp, fold, k, max(plan.batch, 1))
                result = integrate(prog, group_steps, group_masks, self.device, done)
            part = result.attribution[:len(members)]
            attribution[members] = uncrop(part, region, (h, w)) if region is not None else part
            nan_gradients[members] = result.nan_gradients[:len(members)]
            regions += [region] * len(members)
            usage += [self._usage(plan, meter, prog)] * len(members)
            notes += [group_notes] * len(members)
        seconds = time.perf_counter() - start
        provider = prog.session(self.device).provider
        rf = self._rf.to_json() if self._rf is not None else None
        results = []
        for i, win in enumerate(wins):
            M = abs_normalise(attribution[i])
            if not np.all(np.isfinite(M)):
                raise NumericalError("the attribution map is not finite")
            results.append(LamResult(
                attribution=M, gradient=attribution[i], di=diffusion_index(M), gini=gini(M), window=win,
                scale=s, lr_size=(h, w), path=path, sigma=float(sigma), fold=int(fold),
                kernel_size=int(kernel_size),
                completeness=Completeness(float(attribution[i].astype(np.float64).sum()),
                                          float(objective_input[i] - objective_baseline[i])),
                nan_gradients=int(nan_gradients[i]), lr_image=x, sr_image=sr, hr_image=hr, model=self.model_path,
                model_sha256=self.info.sha256, image=str(image) if isinstance(image, (str, Path)) else "<array>",
                provider=provider, seconds=seconds, batch_size=prog.batch, value_range=self.value_range,
                channel_order=self.channel_order, range=range_statistics(M, window_centre_lr(win, s)),
                warnings=list(notes[i]),
                extra={"receptive_field": rf, "crop": regions[i].to_json() if regions[i] is not None else None,
                       "memory": usage[i], **({"inputs": dict(self.inputs)} if self.inputs else {})}))
        return results

    def _usage(self, plan: Plan, meter: memory.PeakMeter, prog: GradientProgram) -> dict:
        """result.json's "memory": the limit, what the footprint predicted and what the run measured."""
        measured = meter.peak
        if measured is not None:
            measured -= self._budget[1]  # what was in use before this Analyzer (0 on the CPU)
        return {"device": self.run_device, "counts": "resident set of the process" if self.run_device == "cpu"
                else "device memory held by onnxlam's sessions",
                "limit": self.budget() if plan.footprint is not None else self.max_memory,
                "baseline": plan.base if plan.footprint is not None else None,
                "predicted_peak": plan.predicted_peak if plan.batch == prog.batch else None,
                "measured_peak": measured,
                "probes": plan.footprint.to_json()["probes"] if plan.footprint is not None else None}

    def _program_for(self, program, h: int, w: int, fold: int, windows: int,
                     batch: int | None = None) -> GradientProgram:
        if program is None:
            return self.program(h, w, fold, windows, batch)
        prog = program if isinstance(program, GradientProgram) else load_program(program)
        k = prog.key
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


def window_centre_lr(window: Window, scale: int) -> tuple[float, float]:
    """The window's centre (x, y) in LR pixel coordinates (pixel centres at integers)."""
    return ((window.x + window.size / 2) / scale - 0.5, (window.y + window.size / 2) / scale - 0.5)


def _check_parameters(path: str, sigma: float, fold: int, kernel_size: int) -> None:
    if path not in PATHS:
        raise InputError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
    if fold < 1:
        raise InputError(f"--fold must be at least 1; got {fold}")
    if not sigma >= 0:
        raise InputError(f"--sigma must be ≥ 0; got {sigma}")
    if kernel_size < 1:
        raise InputError(f"--kernel-size must be at least 1; got {kernel_size}")


def analyze(model: str | Path, image: str | Path | np.ndarray, window: tuple[int, int], size: int = 16, *,
            lr: bool = False, path: str = "blur", sigma: float = 1.2, fold: int = 50, kernel_size: int = 9,
            batch_size: int | None = None, device: str = "auto", value_range: float | None = None,
            bgr: bool | None = None, program: str | Path | None = None,
            progress: Callable[[int, int], None] | None = None, crop: bool = True,
            context: int | None = None, inputs: dict[str, float] | None = None) -> LamResult:
    """Local attribution map of `model` for the window at `window` = (x, y) of side `size` on `image`.

    See `Analyzer.run`; this builds an Analyzer for a single call. `inputs` fixes a model's extra
    inputs ({name: value}, broadcast to the input's shape; see `model.bind_inputs`).
    """
    analyzer = Analyzer(model, device=device, value_range=value_range, bgr=bgr, batch_size=batch_size,
                        inputs=inputs)
    return analyzer.run_windows(image, [window], size, lr=lr, path=path, sigma=sigma, fold=fold,
                                kernel_size=kernel_size, program=program, progress=progress, crop=crop,
                                context=context)[0]
