"""DI over a grid of windows: where in an image a network draws on long-range information.

Windows of side `size` every `stride` SR pixels. For a local network, windows whose dependence
boxes are disjoint share one reverse pass (`methods/lam/sharing.py`: one pass per colour and step,
each map cut exactly from it), and up to eight seeds share each forward pass; `sweep.json` records
the colouring. Global networks keep one seed per window, eight neighbours sharing a forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from onnxlam.render import pictures
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.methods.lam.sharing import Sharing, plan_sharing
from onnxlam.lam.options import LamOptions
from onnxlam.lam.result import Window
from onnxlam.core.errors import InputError


@dataclass(frozen=True)
class Sweep:
    """DI (ny×nx) of the windows with top-left corners `xs` × `ys` (SR pixels)."""

    xs: np.ndarray
    ys: np.ndarray
    size: int
    stride: int
    scale: int
    di: np.ndarray
    sr_image: np.ndarray  # float32 C×H×W
    sharing: Sharing | None = None  # how the windows shared reverse passes (None: not recorded)

    def to_json(self) -> dict:
        return {"xs": self.xs.tolist(), "ys": self.ys.tolist(), "size": self.size, "stride": self.stride,
                "scale": self.scale, "di": self.di.tolist(),
                "di_mean": float(self.di.mean()), "di_max": float(self.di.max()), "di_min": float(self.di.min()),
                "sharing": None if self.sharing is None else self.sharing.to_json()}


def grid(height: int, width: int, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (xs, ys) of windows every `stride` pixels inside the (H−1)×(W−1) map."""
    if stride < 1:
        raise InputError(f"--stride must be at least 1; got {stride}")
    if size < 1 or size > min(height, width) - 1:
        raise InputError(f"--size {size} does not fit the {width}×{height} SR output")
    return np.arange(0, width - size, stride), np.arange(0, height - size, stride)


def sweep_windows(analyzer: Analyzer, image, stride: int, size: int = 16,
                  lr: bool = False) -> tuple[np.ndarray, np.ndarray, list[Window]]:
    """The grid's corners (xs, ys) and its windows, row by row (the order the sweep computes them in)."""
    x, _ = analyzer.prepare(image, lr)
    H, W = x.shape[1] * analyzer.scale, x.shape[2] * analyzer.scale
    xs, ys = grid(H, W, size, stride)
    return xs, ys, [Window(int(wx), int(wy), size) for wy in ys for wx in xs]


def run_sweep(analyzer: Analyzer, image, stride: int, size: int = 16,
              progress: Callable[[int, int], None] | None = None, **options) -> Sweep:
    """DI for every window of the grid (options as for `Analyzer.run_windows`)."""
    xs, ys, windows = sweep_windows(analyzer, image, stride, size, options.get("lr", False))
    results = analyzer.run_windows(image, windows, size, progress=progress, **options)
    di = np.array([r.di for r in results]).reshape(len(ys), len(xs))
    given = {k: v for k, v in options.items() if k in LamOptions.__dataclass_fields__}
    sharing = plan_sharing(analyzer, windows, analyzer.lam_options(size=size, **given).validate(),
                           results[0].lr_size, fixed_program=options.get("program") is not None)
    return Sweep(xs, ys, size, stride, analyzer.scale, di, results[0].sr_image, sharing)


def heat_map(sweep: Sweep, background: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Each window's DI painted over its stride cell (seismic: lowest DI white, highest dark red), blended."""
    H, W = background.shape[:2]
    values = np.zeros((H, W), np.float64)
    low = float(sweep.di.min())
    span = float(sweep.di.max()) - low or 1.0
    half = sweep.stride / 2
    for j, wy in enumerate(sweep.ys):
        for i, wx in enumerate(sweep.xs):
            cy, cx = wy + sweep.size / 2, wx + sweep.size / 2
            r0, r1 = int(max(0, cy - half)), int(min(H, cy + half))
            c0, c1 = int(max(0, cx - half)), int(min(W, cx + half))
            values[r0:r1, c0:c1] = (sweep.di[j, i] - low) / span
    return pictures.blend(pictures.seismic(0.5 + 0.5 * values), background, alpha)


TICKS = 5  # DI labels on the colour bar: the lowest, the highest and evenly between


def colour_bar(sweep: Sweep, height: int) -> np.ndarray:
    """The heat map's scale: seismic(0.5 + 0.5·t), t from 1 (top: the highest DI) to 0 (bottom: the
    lowest), labelled with the DI values `heat_map` paints at those colours (before the blend)."""
    low, high = float(sweep.di.min()), float(sweep.di.max())
    t = np.linspace(1.0, 0.0, height)
    ticks = [(f, f"{low + f * (high - low):.2f}") for f in np.linspace(0.0, 1.0, TICKS if high > low else 1)]
    return pictures.colour_bar(pictures.seismic(0.5 + 0.5 * t), ticks)


def sweep_picture(sweep: Sweep) -> np.ndarray:
    """The SR image, the DI heat map over it and the colour bar in DI values, side by side and labelled."""
    sr = np.clip(sweep.sr_image, 0, 1).transpose(1, 2, 0)
    sr = pictures.to_uint8(np.repeat(sr, 3, axis=2) if sr.shape[2] == 1 else sr)
    return pictures.panel([sr, heat_map(sweep, sr), colour_bar(sweep, sr.shape[0])],
                          ["SR", f"DI of {sweep.size}x{sweep.size} windows every {sweep.stride} px", "DI"])


def write_sweep(sweep: Sweep, out: Path) -> None:
    """`sweep.npy`, `sweep.json` and `sweep.png` (`sweep_picture`) into folder `out`."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "sweep.npy", sweep.di.astype(np.float32))
    (out / "sweep.json").write_text(json.dumps(sweep.to_json(), indent=2) + "\n")
    pictures.save(str(out / "sweep.png"), sweep_picture(sweep))
