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
(`Model.receptive_field`), the reach the graph allows: LAM's paper finding 3 ("the theoretical
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
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np

from onnxlam.core.errors import InputError, NumericalError
from onnxlam.core.files import write_result_dir
from onnxlam.engine.model import Model
from onnxlam.engine.program import GradientProgram, build_program
from onnxlam.graph.detector import INTENSITY
from onnxlam.graph.receptive_field import ReceptiveField
from onnxlam.graph.receptive_field.crop import cone  # the cone of SR rows/cols a..b, per-phase reach
from onnxlam.lam.metrics import mass_count, mass_radius
from onnxlam.lam.result import Window
from onnxlam.methods.base import Provenance, Result
from onnxlam.methods.erf.options import ErfOptions
from onnxlam.render import pictures

FRACTIONS = (0.5, 0.9, 0.99)
KEYS = ("50", "90", "99")  # the fractions as result.json names them
DECADES = 4  # the picture's log scale spans this many powers of ten below the ERF's maximum


class _ByFraction:
    """A figure at each mass fraction; `figures["90"]` reads one by its result.json key."""

    def __getitem__(self, key: str):
        return getattr(self, f"at_{key}")

    def to_json(self) -> dict:
        return {k: self[k] for k in KEYS}


@dataclass(frozen=True)
class MassRadii(_ByFraction):
    """LR pixels around the window's centre whose disc holds 50, 90 and 99 % of the ERF's mass."""

    at_50: float
    at_90: float
    at_99: float


@dataclass(frozen=True)
class MassPixels(_ByFraction):
    """How many LR pixels, largest first, hold 50, 90 and 99 % of the ERF's mass."""

    at_50: int
    at_90: int
    at_99: int


@dataclass(frozen=True)
class ErfResult(Result):
    """The ERF of one output window over some images; `to_json()` is what `result.json` holds."""

    method: ClassVar[str] = "erf"

    erf: np.ndarray = field(metadata={"array": True})  # float64 h×w, sums to 1 (see the module docstring)
    window: Window                # SR pixels: top-left (x, y) and side
    scale: int
    lr_size: tuple[int, int]
    images: tuple[str, ...]
    gradient_mass: tuple[float, ...]  # Σ g_n per image, before normalisation
    radii: MassRadii
    pixels: MassPixels
    receptive_field: ReceptiveField   # the static one (`Model.receptive_field`)
    static_box: tuple[int, int, int, int] | None  # LR (top, left, bottom, right), exclusive; None: global
    static_radius: float | None   # the box's radius around the centre, as the mass radii are measured
    provenance: Provenance
    fd_error: float | None = None  # the gradient check of the program (gradcheck.py)
    lr_image: np.ndarray | None = field(default=None, repr=False, metadata={"array": True})  # the first LR input

    @property
    def centre(self) -> tuple[float, float]:
        """The window's centre (x, y) in LR pixel coordinates."""
        return self.window.centre_lr(self.scale)

    @property
    def static_pixels(self) -> int | None:
        """The LR pixels of the static box; None for a global network."""
        if self.static_box is None:
            return None
        top, left, bottom, right = self.static_box
        return (bottom - top) * (right - left)

    def to_json(self) -> dict:
        data = super().to_json()
        data["static_receptive_field"] = data.pop("receptive_field")
        return data

    def json_extras(self) -> dict:
        return {"method": self.method, "centre_lr": list(self.centre),
                "normalisation": "each image's map scaled to unit mass before averaging",
                "static_pixels": self.static_pixels,
                "radius_99_to_static": (None if not self.static_radius else
                                        self.radii["99"] / self.static_radius)}


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
    top, bottom = cone(window.y, window.y + window.size - 1, s, t, b, rf.row_phase_reach)
    left, right = cone(window.x, window.x + window.size - 1, s, l, r, rf.col_phase_reach)
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


def effective_receptive_field(model: Model, images: Sequence[str | Path | np.ndarray],
                              pixel: tuple[int, int] | None = None, size: int = 1, *, lr: bool = False,
                              progress: Callable[[int, int], None] | None = None) -> ErfResult:
    """The ERF of the `size`×`size` output window at `pixel` = (x, y) (SR pixels, top-left; default:
    the centre of the output), averaged over `images` (HR images, or LR inputs with `lr`), on `model`
    (any loaded `engine.model.Model`)."""
    start = time.perf_counter()
    if not images:
        raise InputError("no image given; pass one or more images")
    if size < 1:
        raise InputError(f"--size must be at least 1; got {size}")
    model.check_ops()
    names = [str(im) if isinstance(im, (str, Path)) else f"<array {i}>" for i, im in enumerate(images)]
    first, _ = model.prepare(images[0], lr)
    _, h, w = first.shape
    s = model.scale
    if pixel is None:
        pixel = ((w * s - size) // 2, (h * s - size) // 2)
    window = Window(int(pixel[0]), int(pixel[1]), int(size))
    mask = intensity_mask(h * s, w * s, window)
    program = build_program((model.source, model.info), 1, h, w, model.value_range, model.channel_order == "bgr",
                            cache=model.cache, device=model.device, detector=INTENSITY)
    maps = []
    for i, image in enumerate(images):
        x = first if i == 0 else model.prepare(image, lr)[0]
        if x.shape != first.shape:
            raise InputError(f"{names[i]} gives an LR input of {x.shape[2]}×{x.shape[1]}, {names[0]} one of "
                             f"{w}×{h}: the ERF averages maps of one size, so crop the images to one size")
        maps.append(gradient_map(program, x, mask, model.device))
        if progress is not None:
            progress(i + 1, len(images))
    erf = combine(maps, names)
    provenance = Provenance(model.model_path, model.info.sha256, ", ".join(names),
                            program.session(model.device).provider, time.perf_counter() - start,
                            erf_options(model, size, lr))
    return erf_result(erf, window, model, first, maps, names, provenance, program.fd_error)


def erf_options(model: Model, size: int, lr: bool) -> ErfOptions:
    """The ErfOptions of a run: `model`'s options as given, the window's side and `lr`."""
    given = {k: v for k, v in model.given.items() if k != "inputs"}
    return ErfOptions(inputs=tuple(sorted(model.inputs.items())), size=int(size), lr=bool(lr), **given)


def erf_result(erf: np.ndarray, window: Window, model: Model, first: np.ndarray, maps: list[np.ndarray],
               names: list[str], provenance: Provenance, fd_error: float | None) -> ErfResult:
    """The ERF's figures: its mass radii and counts next to the static receptive field's box and radius."""
    s, (h, w) = model.scale, first.shape[1:]
    centre = window.centre_lr(s)
    rf = model.receptive_field
    box = static_box(rf, window, s, (h, w))
    static_radius = None
    if box is not None:
        inside = np.zeros((h, w))
        inside[box[0]:box[2], box[1]:box[3]] = 1.0
        static_radius = mass_radius(inside, centre, 1.0)
    return ErfResult(
        erf=erf, window=window, scale=s, lr_size=(h, w), images=tuple(names),
        gradient_mass=tuple(float(g.sum()) for g in maps),
        radii=MassRadii(*(mass_radius(erf, centre, f) for f in FRACTIONS)),
        pixels=MassPixels(*(mass_count(erf, f) for f in FRACTIONS)),
        receptive_field=rf, static_box=box, static_radius=static_radius, provenance=provenance,
        fd_error=fd_error, lr_image=first)


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
    return write_result_dir(out, result.to_json(), about, arrays={"erf.npy": result.erf.astype(np.float32)},
                            pictures={"erf.png": erf_picture(result)})
