"""DI over a grid of windows: where in an image a network draws on long-range information.

Windows of side `size` every `stride` SR pixels. For a local network, windows whose dependence
boxes are disjoint share one reverse pass (`methods/lam/sharing.py`: one pass per colour and step,
each map cut exactly from it), and up to eight seeds share each forward pass; `sweep.json` records
the colouring. Global networks keep one seed per window, eight neighbours sharing a forward pass.

With `hard=K` the windows are the image's K hardest (`lam/hard_windows.py`) instead of a grid: DI
where the paper says to interpret, each window painted over its own square.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from onnxlam.render import pictures
from onnxlam.lam.hard_windows import NEEDS_HR, hard_windows, image_windows
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.methods.lam.sharing import Sharing, plan_sharing
from onnxlam.lam.options import LamOptions
from onnxlam.lam.result import Window
from onnxlam.core.errors import InputError


@dataclass(frozen=True)
class Sweep:
    """DI of windows of side `size`: a grid (ny×nx, top-left corners `xs` × `ys`, every `stride` SR
    pixels) or, with `hard`, the image's hardest windows (`xs`, `ys` and `di` one entry per window)."""

    xs: np.ndarray
    ys: np.ndarray
    size: int
    stride: int
    scale: int
    di: np.ndarray
    sr_image: np.ndarray  # float32 C×H×W
    sharing: Sharing | None = None  # how the windows shared reverse passes (None: not recorded)
    hard: bool = False

    def cells(self) -> list[tuple[int, int, int, int, float]]:
        """(top, left, bottom, right, DI) of what each window paints: a grid window its stride cell
        around its centre, a hard window its own square."""
        if self.hard:
            return [(int(y), int(x), int(y) + self.size, int(x) + self.size, float(d))
                    for x, y, d in zip(self.xs, self.ys, self.di)]
        H, W = self.sr_image.shape[1:]
        half, out = self.stride / 2, []
        for j, wy in enumerate(self.ys):
            for i, wx in enumerate(self.xs):
                cy, cx = wy + self.size / 2, wx + self.size / 2
                out.append((int(max(0, cy - half)), int(max(0, cx - half)), int(min(H, cy + half)),
                            int(min(W, cx + half)), float(self.di[j, i])))
        return out

    def to_json(self) -> dict:
        wins = ([(x, y) for x, y in zip(self.xs, self.ys)] if self.hard
                else [(x, y) for y in self.ys for x in self.xs])
        return {"kind": "hard" if self.hard else "grid", "xs": self.xs.tolist(), "ys": self.ys.tolist(),
                "size": self.size, "stride": self.stride if not self.hard else None, "scale": self.scale,
                "di": self.di.tolist(),
                "windows": [{"x": int(x), "y": int(y), "size": self.size, "di": float(d)}
                            for (x, y), d in zip(wins, self.di.ravel())],
                "di_mean": float(self.di.mean()), "di_max": float(self.di.max()), "di_min": float(self.di.min()),
                "sharing": None if self.sharing is None else self.sharing.to_json()}


def grid(height: int, width: int, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (xs, ys) of windows every `stride` pixels inside the (H−1)×(W−1) map."""
    if stride < 1:
        raise InputError(f"--stride must be at least 1; got {stride}")
    if size < 1 or size > min(height, width) - 1:
        raise InputError(f"--size {size} does not fit the {width}×{height} SR output")
    return np.arange(0, width - size, stride), np.arange(0, height - size, stride)


def sweep_windows(analyzer: Analyzer, image, stride: int | None, size: int = 16, lr: bool = False,
                  hard: int | None = None) -> tuple[np.ndarray, np.ndarray, list[Window]]:
    """The grid's corners (xs, ys) and its windows, row by row (the order the sweep computes them in);
    with `hard`, the image's `hard` hardest windows instead (xs, ys: one per window, best first)."""
    x, hr = analyzer.prepare(image, lr)
    H, W = x.shape[1] * analyzer.scale, x.shape[2] * analyzer.scale
    if hard is not None:
        if lr:
            raise InputError(NEEDS_HR)
        found = (image_windows(str(image), size, hard, analyzer.scale) if isinstance(image, (str, Path))
                 else hard_windows(hr, size, hard))
        return (np.array([w.x for w in found]), np.array([w.y for w in found]),
                [Window(w.x, w.y, size) for w in found])
    if stride is None:
        raise InputError("give --stride N for a grid of windows, or --windows hard:K")
    xs, ys = grid(H, W, size, stride)
    return xs, ys, [Window(int(wx), int(wy), size) for wy in ys for wx in xs]


def make_sweep(xs: np.ndarray, ys: np.ndarray, di: np.ndarray, size: int, stride: int | None, scale: int,
               sr_image: np.ndarray, sharing: Sharing | None, hard: bool) -> Sweep:
    """A Sweep from the windows' DI in `sweep_windows` order."""
    di = np.asarray(di, np.float64)
    return Sweep(xs, ys, size, stride or 0, scale, di if hard else di.reshape(len(ys), len(xs)), sr_image,
                 sharing, hard)


def run_sweep(analyzer: Analyzer, image, stride: int | None, size: int = 16,
              progress: Callable[[int, int], None] | None = None, hard: int | None = None, **options) -> Sweep:
    """DI for every window of the grid, or of the `hard` hardest windows (options as for
    `Analyzer.run_windows`)."""
    xs, ys, windows = sweep_windows(analyzer, image, stride, size, options.get("lr", False), hard)
    results = analyzer.run_windows(image, windows, size, progress=progress, **options)
    given = {k: v for k, v in options.items() if k in LamOptions.__dataclass_fields__}
    sharing = plan_sharing(analyzer, windows, analyzer.lam_options(size=size, **given).validate(),
                           results[0].lr_size, fixed_program=options.get("program") is not None)
    return make_sweep(xs, ys, [r.di for r in results], size, stride, analyzer.scale, results[0].sr_image, sharing,
                      hard is not None)


def heat_map(sweep: Sweep, background: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """Each window's DI in viridis (lowest dark purple, highest yellow) over what it paints
    (`Sweep.cells`), blended onto the image; the part no window paints hatched."""
    H, W = background.shape[:2]
    values = np.full((H, W), np.nan)
    low, high = float(sweep.di.min()), float(sweep.di.max())
    span = high - low or 1.0
    for top, left, bottom, right, di in sweep.cells():
        values[top:bottom, left:right] = (di - low) / span
    covered = ~np.isnan(values)
    coloured = pictures.blend(pictures.viridis(np.where(covered, values, 0.0)), background, alpha)
    return pictures.hatch(np.where(covered[..., None], coloured, background), ~covered)


TICKS = 5  # DI labels on the colour bar: the lowest, the highest and evenly between


def colour_bar(sweep: Sweep, height: int) -> np.ndarray:
    """The heat map's scale: viridis(t), t from 1 (top: the highest DI) to 0 (bottom: the lowest),
    labelled with the DI values `heat_map` paints at those colours (before the blend)."""
    low, high = float(sweep.di.min()), float(sweep.di.max())
    t = np.linspace(1.0, 0.0, height)
    ticks = [(f, f"{low + f * (high - low):.2f}") for f in np.linspace(0.0, 1.0, TICKS if high > low else 1)]
    return pictures.colour_bar(pictures.viridis(t), ticks)


def sweep_picture(sweep: Sweep) -> np.ndarray:
    """The SR image, the DI heat map over it and the colour bar in DI values, side by side and labelled."""
    sr = np.clip(sweep.sr_image, 0, 1).transpose(1, 2, 0)
    sr = pictures.to_uint8(np.repeat(sr, 3, axis=2) if sr.shape[2] == 1 else sr)
    title = (f"DI, {len(sweep.di)} hardest {sweep.size}px windows" if sweep.hard
             else f"DI, {sweep.size}px windows every {sweep.stride}px")
    return pictures.panel([sr, heat_map(sweep, sr), colour_bar(sweep, sr.shape[0])],
                          ["SR", f"{title} (hatched: no window)", "DI"])


def write_sweep(sweep: Sweep, out: Path) -> None:
    """`sweep.npy`, `sweep.json` and `sweep.png` (`sweep_picture`) into folder `out`."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "sweep.npy", sweep.di.astype(np.float32))
    (out / "sweep.json").write_text(json.dumps(sweep.to_json(), indent=2) + "\n")
    pictures.save(str(out / "sweep.png"), sweep_picture(sweep))
