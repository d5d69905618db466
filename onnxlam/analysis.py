"""The LAM pipeline end to end: model and image in, a typed `LamResult` out.

`Analyzer` holds one model (loaded, inspected and normalised once) and the programs built for it,
so reports and notebooks analysing many images and windows pay for each program once. `analyze`
is the one-call form.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from . import image as images
from .detector import MASK, append_detector, window_mask
from .errors import InputError, NumericalError
from .integration import integrate
from .metrics import abs_normalise, diffusion_index, gini, range_statistics
from .model import INPUT, OUTPUT, fix_input_shape, normalise, open_model, output_dims, require_standard_ops
from .paths import PATHS, make_path
from .cropping import choose_crop, crop_masks, crop_steps, uncrop
from .program import GradientProgram, build_program, infer_scale, load_program
from .receptive_field import ReceptiveField, receptive_field
from .runtime import Session, create_session

MAX_AUTO_BATCH = 10  # beyond this a CPU gains nothing measurable and memory grows linearly
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
        }
        data.update(self.extra)
        return data


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def _activation_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every intermediate value of a shape-inferred batch-1 model."""
    total = 0
    for v in model.graph.value_info:
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            total += int(np.prod(dims)) * 4
    return total


class Analyzer:
    """One model, ready to analyse images: `Analyzer("model.onnx").run("photo.png", window=(x, y))`."""

    def __init__(self, model: str | Path, *, device: str = "auto", value_range: float | None = None,
                 bgr: bool | None = None, batch_size: int | None = None, cache: bool = True,
                 check_ops: bool = True):
        self.model_path = str(model)
        self.source, self.info = open_model(model)
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
        self.cache = cache
        self.normalised = normalise(self.source, self.info, self.value_range, self.channel_order == "bgr")
        self._forward: Session | None = None
        self._programs: dict[tuple, GradientProgram] = {}
        self._scale: int | None = None
        self._rf: ReceptiveField | None = None
        self._batches: dict[tuple, int] = {}

    # --- model facts --------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        """The integer scale, from shape inference at the file's size (or 32×32), else a test run."""
        if self._scale is None:
            h, w = self.info.fixed_size or (32, 32)
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
            self._forward = create_session(append_detector(self.normalised), self.device)
        c, h, w = lr.shape
        try:
            sr, objective = self._forward.run({INPUT: lr[None].astype(np.float32),
                                               MASK: np.ascontiguousarray(masks[None], np.float32)})
        except Exception as exc:
            raise InputError(f"{self.model_path}: the model failed on a {w}×{h} input: "
                             f"{str(exc).splitlines()[0][:300]}") from None
        return sr[0], objective[0].astype(np.float64)

    def _auto_batch(self, fold: int, h: int, w: int, windows: int) -> int:
        if self.info.fixed_batch not in (None, 1):
            return self.info.fixed_batch
        if self.batch_size is not None:
            return min(self.batch_size, fold)
        key = (h, w, windows)
        if key not in self._batches:  # decided once per shape, so free memory moving doesn't rebuild
            fixed = fix_input_shape(self.normalised, (1, self.info.channels, h, w))
            # activations kept for the reverse pass, their adjoints (one per window) and temporaries
            per_element = (3 + windows) * _activation_bytes(fixed) + 1
            budget = int(0.4 * _available_memory())
            self._batches[key] = int(max(1, min(MAX_AUTO_BATCH, budget // per_element)))
        return min(self._batches[key], fold)

    def program(self, h: int, w: int, fold: int, windows: int = 1) -> GradientProgram:
        """The gradient program for LR size h×w and `windows` windows, batched as the model and memory allow."""
        batch = self._auto_batch(fold, h, w, windows)
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

    def _build(self, batch: int, h: int, w: int, windows: int) -> GradientProgram:
        return build_program((self.source, self.info), batch, h, w, self.value_range,
                             self.channel_order == "bgr", cache=self.cache, device=self.device, windows=windows)

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
        groups = [list(range(i, min(i + k, len(wins)))) for i in range(0, len(wins), k)]
        for g, members in enumerate(groups):  # windows in the order given: neighbours share a crop
            region = None
            if program is None and not self.info.fixed_size and (crop or context is not None):
                region = choose_crop(self.receptive_field, [(wins[i].x, wins[i].y, wins[i].size) for i in members],
                                     s, (h, w), context)
            group_steps = crop_steps(steps, region) if region is not None else steps
            group_masks = np.zeros((k,) + masks.shape[1:], np.float32)  # unused slots stay empty
            group_masks[:len(members)] = masks[members]
            if region is not None:
                group_masks = crop_masks(group_masks, region, s)
            hp, wp = region.size if region is not None else (h, w)
            prog = self._program_for(program, hp, wp, fold, k)
            done = (lambda d, n, g=g: progress(g * n + d, n * len(groups))) if progress else None
            result = integrate(prog, group_steps, group_masks, self.device, done)
            part = result.attribution[:len(members)]
            attribution[members] = uncrop(part, region, (h, w)) if region is not None else part
            nan_gradients[members] = result.nan_gradients[:len(members)]
            regions += [region] * len(members)
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
                extra={"receptive_field": rf, "crop": regions[i].to_json() if regions[i] is not None else None}))
        return results

    def _program_for(self, program, h: int, w: int, fold: int, windows: int) -> GradientProgram:
        if program is None:
            return self.program(h, w, fold, windows)
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
            context: int | None = None) -> LamResult:
    """Local attribution map of `model` for the window at `window` = (x, y) of side `size` on `image`.

    See `Analyzer.run`; this builds an Analyzer for a single call.
    """
    analyzer = Analyzer(model, device=device, value_range=value_range, bgr=bgr, batch_size=batch_size)
    return analyzer.run_windows(image, [window], size, lr=lr, path=path, sigma=sigma, fold=fold,
                                kernel_size=kernel_size, program=program, progress=progress, crop=crop,
                                context=context)[0]
