"""The effective receptive field (ERF) of an SR network: which input pixels an output pixel really uses.

Source: W. Luo, Y. Li, R. Urtasun and R. Zemel, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016; the ERF plots of MambaIR (Guo et al., ECCV 2024) and
RepLKNet (Ding et al., CVPR 2022) are made this way.

For an output window P (SR pixels; one pixel by default) the objective is the sum of its intensities,
the LAM detector replaced by `D(y) = Σ_{c, (r, q) ∈ P} y_c[r, q]` (`detector.INTENSITY`). On each
image x_n (C×h×w in [0, 1], prepared as for LAM, spec §1):

    g_n[i, j] = Σ_c |∂D(F(x_n)) / ∂x_n[c, i, j]|                      h×w
    ERF       = (1/N) Σ_n  g_n / Σ_{i,j} g_n[i, j]                      h×w, sums to 1

Normalising each image's map to unit mass before averaging (the papers average the raw maps) is
onnxlam's choice: every image weighs the same however strong its gradient, and the average is a
distribution, so "the radius holding 90 % of the mass" means the same for one image as for many. A
non-finite gradient, or an image whose gradient is zero everywhere (its map has no mass to
normalise), is an error, never averaged in.

The mass radii are `metrics.mass_radius` around the window's centre in LR coordinates (50/90/99 %),
and the pixel counts `metrics.mass_count`; they sit next to the static receptive field
(`Analyzer.receptive_field`), the reach the graph allows: LAM's paper finding 3 ("the theoretical
receptive field is far larger than the range that contributes") as numbers. For a local network the
window's static box is the LR pixels under it widened by the reach (top, bottom, left, right; per
output phase where the analysis knows it, else the maximum over phases), and its radius is measured
as the mass radii are: the distance from the window's centre to the box's farthest pixel (the
radius holding all of a map that is 1 on the box).

The gradient comes from a gradient program with the intensity detector, built, cached and
gradient-checked by `program.build_program` like LAM's; images run one at a time at batch 1.
"""
from __future__ import annotations

import time
from fractions import Fraction
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from onnxlam.render import pictures
from onnxlam.engine.analyzer import Analyzer
from onnxlam.lam.result import Window
from onnxlam.graph.detector import INTENSITY
from onnxlam.core.errors import InputError, NumericalError
from onnxlam.lam.metrics import mass_count, mass_radius
from onnxlam.engine.program import GradientProgram, build_program
from onnxlam.graph.receptive_field import ReceptiveField
from onnxlam.graph.receptive_field.crop import _cone  # the cone of SR rows/cols a..b, per-phase reach

FRACTIONS = (0.5, 0.9, 0.99)
DECADES = 4  # the picture's log scale spans this many powers of ten below the ERF's maximum


@dataclass(frozen=True)
class ErfResult:
    """The ERF of one output window over some images; `to_json()` is what `result.json` holds."""

    erf: np.ndarray               # float64 h×w, sums to 1 (see the module docstring)
    window: Window                # SR pixels: top-left (x, y) and side
    scale: int
    lr_size: tuple[int, int]
    images: list[str]
    gradient_mass: list[float]    # Σ g_n per image, before normalisation
    radii: dict                   # "50", "90", "99": LR pixels around the window's centre
    pixels: dict                  # "50", "90", "99": how many LR pixels hold that share of the mass
    receptive_field: dict         # Analyzer.receptive_field.to_json(): the static one
    static_box: tuple[int, int, int, int] | None  # LR (top, left, bottom, right), exclusive; None: global
    static_radius: float | None   # the box's radius around the centre, as the mass radii are measured
    model: str
    model_sha256: str
    provider: str
    seconds: float
    fd_error: float | None = None  # the gradient check of the program (gradcheck.py)
    lr_image: np.ndarray | None = field(default=None, repr=False)  # the first image's LR input, for pictures

    @property
    def centre(self) -> tuple[float, float]:
        """The window's centre (x, y) in LR pixel coordinates."""
        return self.window.centre_lr(self.scale)

    def to_json(self) -> dict:
        return {"method": "erf", "window": {"x": self.window.x, "y": self.window.y, "size": self.window.size},
                "centre_lr": list(self.centre), "scale": self.scale, "lr_size": list(self.lr_size),
                "images": list(self.images), "gradient_mass": list(self.gradient_mass),
                "normalisation": "each image's map scaled to unit mass before averaging",
                "radii": dict(self.radii), "pixels": dict(self.pixels),
                "static_receptive_field": self.receptive_field,
                "static_box": None if self.static_box is None else list(self.static_box),
                "static_pixels": (None if self.static_box is None else
                                  (self.static_box[2] - self.static_box[0]) * (self.static_box[3] - self.static_box[1])),
                "static_radius": self.static_radius,
                "radius_99_to_static": (None if not self.static_radius else self.radii["99"] / self.static_radius),
                "model": self.model, "model_sha256": self.model_sha256, "provider": self.provider,
                "seconds": round(self.seconds, 4), "fd_error": self.fd_error}


def intensity_mask(height: int, width: int, window: Window) -> np.ndarray:
    """The H×W mask of the window (1 inside), checked to lie inside the SR output."""
    x, y, n = window.x, window.y, window.size
    if n < 1:
        raise InputError(f"--size must be at least 1; got {n}")
    if x < 0 or y < 0 or x + n > width or y + n > height:
        raise InputError(f"the {n}×{n} window at x={x}, y={y} lies outside the {width}×{height} SR output; "
                         f"choose 0 ≤ x ≤ {width - n}, 0 ≤ y ≤ {height - n}")
    mask = np.zeros((height, width), np.float32)
    mask[y:y + n, x:x + n] = 1.0
    return mask


def static_box(rf: ReceptiveField, window: Window, scale: int,
               lr_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The LR box (top, left, bottom, right; bottom/right exclusive) the window's SR pixels can depend
    on: the LR pixels under them widened by the static reach (per output phase where the analysis
    knows it), clipped to the image; None for a global network. Unlike `receptive_field.dependence_box`
    it leaves out the LAM detector's neighbour pixels, which the intensity sum does not read."""
    if rf.global_ or rf.reach is None:
        return None
    h, w = lr_size
    t, b, l, r = rf.reach
    s = Fraction(scale)
    top, bottom = _cone(window.y, window.y + window.size - 1, s, t, b, rf.row_phase_reach)
    left, right = _cone(window.x, window.x + window.size - 1, s, l, r, rf.col_phase_reach)
    return max(0, top), max(0, left), min(h, bottom + 1), min(w, right + 1)


def gradient_map(program: GradientProgram, x: np.ndarray, mask: np.ndarray, device: str = "auto") -> np.ndarray:
    """g = Σ_c |∂D/∂x| (float64 h×w) for one LR image x (C×h×w) and the window's H×W mask."""
    _, gradient = program.objective_and_gradient(x[None], mask[None, None], device)
    g = gradient[0, 0].astype(np.float64)
    if not np.all(np.isfinite(g)):
        raise NumericalError(f"the gradient holds {int(np.sum(~np.isfinite(g)))} NaN or inf values; "
                             "the model's derivatives overflow on this image")
    return np.abs(g).sum(axis=0)


def combine(maps: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """(1/N) Σ_n g_n / Σ g_n: each map normalised to unit mass, then averaged (float64)."""
    total = np.zeros_like(np.asarray(maps[0], np.float64))
    for g, name in zip(maps, names):
        mass = float(np.sum(g))
        if not mass > 0:
            raise NumericalError(f"{name}: the window's gradient is zero everywhere, so its map has no mass "
                                 "to normalise; choose another pixel or image")
        total += np.asarray(g, np.float64) / mass
    return total / len(maps)


def effective_receptive_field(analyzer: Analyzer, images: Sequence[str | Path | np.ndarray],
                              pixel: tuple[int, int] | None = None, size: int = 1, *, lr: bool = False,
                              progress: Callable[[int, int], None] | None = None) -> ErfResult:
    """The ERF of the `size`×`size` output window at `pixel` = (x, y) (SR pixels, top-left; default:
    the centre of the output), averaged over `images` (HR images, or LR inputs with `lr`)."""
    start = time.perf_counter()
    if not images:
        raise InputError("no image given; pass one or more images")
    if size < 1:
        raise InputError(f"--size must be at least 1; got {size}")
    names = [str(im) if isinstance(im, (str, Path)) else f"<array {i}>" for i, im in enumerate(images)]
    first, _ = analyzer.prepare(images[0], lr)
    c, h, w = first.shape
    s = analyzer.scale
    H, W = h * s, w * s
    if pixel is None:
        pixel = ((W - size) // 2, (H - size) // 2)
    window = Window(int(pixel[0]), int(pixel[1]), int(size))
    mask = intensity_mask(H, W, window)
    program = build_program((analyzer.source, analyzer.info), 1, h, w, analyzer.value_range,
                            analyzer.channel_order == "bgr", cache=analyzer.cache, device=analyzer.device,
                            detector=INTENSITY)
    maps = []
    for i, image in enumerate(images):
        x = first if i == 0 else analyzer.prepare(image, lr)[0]
        if x.shape != first.shape:
            raise InputError(f"{names[i]} gives an LR input of {x.shape[2]}×{x.shape[1]}, {names[0]} one of "
                             f"{w}×{h}: the ERF averages maps of one size, so crop the images to one size")
        maps.append(gradient_map(program, x, mask, analyzer.device))
        if progress is not None:
            progress(i + 1, len(images))
    erf = combine(maps, names)
    centre = window.centre_lr(s)
    rf = analyzer.receptive_field
    box = static_box(rf, window, s, (h, w))
    if box is not None:
        inside = np.zeros((h, w))
        inside[box[0]:box[2], box[1]:box[3]] = 1.0
    return ErfResult(
        erf=erf, window=window, scale=s, lr_size=(h, w), images=names,
        gradient_mass=[float(g.sum()) for g in maps],
        radii={f"{round(f * 100)}": mass_radius(erf, centre, f) for f in FRACTIONS},
        pixels={f"{round(f * 100)}": mass_count(erf, f) for f in FRACTIONS},
        receptive_field=rf.to_json(), static_box=box,
        static_radius=None if box is None else mass_radius(inside, centre, 1.0),
        model=analyzer.model_path, model_sha256=analyzer.info.sha256,
        provider=program.session(analyzer.device).provider, seconds=time.perf_counter() - start,
        fd_error=program.fd_error, lr_image=first)


# ----------------------------------------------------------------------------------- pictures
def log_scaled(erf: np.ndarray, decades: int = DECADES) -> np.ndarray:
    """t = clip(1 + log10(ERF / max ERF) / decades, 0, 1): 1 at the maximum, 0 `decades` powers of ten below."""
    a = np.asarray(erf, np.float64)
    top = float(a.max())
    if not top > 0:
        return np.zeros_like(a)
    with np.errstate(divide="ignore"):
        return np.clip(1.0 + np.log10(a / top) / decades, 0.0, 1.0)


def erf_picture(result: ErfResult, decades: int = DECADES) -> np.ndarray:
    """The first image (LR, bicubic ×s) with the window, the log-scaled ERF (seismic's white-to-red
    half, ×s nearest neighbour) and a colour bar labelled in ERF values (mass per LR pixel)."""
    s = result.scale
    heat = pictures.lam_picture(log_scaled(result.erf, decades), s)
    parts, labels = [], []
    if result.lr_image is not None:
        lr = np.clip(result.lr_image, 0, 1).transpose(1, 2, 0)
        lr = np.repeat(lr, 3, axis=2) if lr.shape[2] == 1 else lr
        up = pictures.upscale_bicubic(lr.astype(np.float32), s)
        w = result.window
        parts.append(pictures.draw_window(up, w.x, w.y, max(w.size, 2)))
        labels.append("input + pixel")
    parts.append(heat)
    labels.append(f"ERF (log)  r90 {result.radii['90']:.1f} px")
    t = np.linspace(1.0, 0.0, heat.shape[0])
    top = float(result.erf.max())
    ticks = [(1.0 - k / decades, f"{top * 10.0 ** -k:.1e}") for k in range(decades + 1)]
    parts.append(pictures.colour_bar(pictures.seismic(0.5 + 0.5 * t), ticks))
    labels.append("ERF")
    return pictures.panel(parts, labels)


def write_erf(result: ErfResult, out: str | Path, about: dict | None = None) -> Path:
    """`erf.npy` (float32 h×w), `result.json` and `erf.png` into folder `out`, all or nothing.

    `about`: further top-level keys of result.json (a report's "case" and "group"); they may not
    replace the result's own keys."""
    from onnxlam.core.files import atomic_dir
    from onnxlam.render.outputs import check_out_dir, write_result_json

    check_out_dir(Path(out))
    with atomic_dir(out) as tmp:
        np.save(tmp / "erf.npy", result.erf.astype(np.float32))
        write_result_json(tmp / "result.json", result.to_json(), about)
        pictures.save(str(tmp / "erf.png"), erf_picture(result))
    return Path(out)
