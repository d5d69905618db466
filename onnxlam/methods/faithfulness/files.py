"""The faithfulness check's folder and picture: `attribution.npy`, `result.json` and `faithfulness.png`
(the input with the window, the map, and the deletion and insertion curves: the map's in red, the
random orders' range as a grey band with their mean in grey), all or nothing."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from onnxlam.core.files import write_result_dir
from onnxlam.methods.faithfulness.result import FaithfulnessResult
from onnxlam.render import pictures

FILES = ("attribution.npy", "result.json", "faithfulness.png")
MAP = (214, 39, 40)        # the map's curve
BAND = (215, 215, 215)     # the random orders' range
MEAN = (120, 120, 120)     # their mean
AXES = (0, 0, 0)


def chart(fractions: Sequence[float], curve: Sequence[float], randoms: np.ndarray, title: str = "",
          height: int = 180) -> np.ndarray:
    """A plot (uint8 H×W×3) of normalised D over the fractions: `curve` as a red line over the band
    between the random curves' minimum and maximum (`randoms`, R×F; none for R = 0) and their mean,
    the value axis spanning the values shown (1, where D(F(x)) is, always among them), `title` on top."""
    width = int(height * 5 / 3)
    left, right, top, bottom = 34, 10, 20, 18
    values = np.concatenate([[1.0], np.asarray(curve, np.float64).ravel(), np.asarray(randoms, np.float64).ravel()])
    low, high = float(values.min()), float(values.max())
    pad = max(high - low, 1e-3) * 0.05
    low, high = low - pad, high + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()

    def at(f: float, v: float) -> tuple[float, float]:
        return (left + f * (width - left - right), height - bottom - (v - low) / (high - low) * (height - top - bottom))

    if len(randoms):
        least, most = np.min(randoms, axis=0), np.max(randoms, axis=0)
        band = [at(f, v) for f, v in zip(fractions, most)] + [at(f, v) for f, v in zip(fractions[::-1], least[::-1])]
        draw.polygon(band, fill=BAND)
        draw.line([at(f, v) for f, v in zip(fractions, np.mean(randoms, axis=0))], fill=MEAN, width=1)
    draw.line([at(f, v) for f, v in zip(fractions, curve)], fill=MAP, width=2)
    x0, y0 = at(0.0, low)
    x1, y1 = at(1.0, high)
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill=AXES, width=1)
    shown: list[float] = []
    for v in (1.0, low + pad, high - pad):  # 1 first: the others only where they do not crowd it
        _, y = at(0.0, v)
        if any(abs(y - other) < 14 for other in shown):
            continue
        shown.append(y)
        draw.line([(x0 - 3, y), (x0, y)], fill=AXES)
        draw.text((1, y - 5), f"{v:.2f}", fill=AXES, font=font)
    for f in (0.0, 0.5, 1.0):
        x, _ = at(f, low)
        draw.line([(x, y0), (x, y0 + 3)], fill=AXES)
        draw.text((min(x - 6, width - 18), y0 + 4), f"{f:g}", fill=AXES, font=font)
    draw.text((left, 4), title, fill=AXES, font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def label(name: str, auc: float, mean: float | None, std: float | None, z: float | None) -> str:
    text = f"{name} AUC {auc:.3f}"
    if mean is not None:
        text += f", random {mean:.3f}" + (f"±{std:.3f}" if std is not None else "")
    if z is not None:
        text += f", z {z:+.1f}"
    return text


def render(result: FaithfulnessResult) -> np.ndarray:
    """The input (LR, bicubic ×s) with the window, the map, and the two curves' charts, in one row."""
    s, w = result.scale, result.window
    heat = pictures.lam_picture(result.attribution, s)
    parts, labels = [], []
    if result.lr_image is not None:
        up = pictures.upscale_bicubic(pictures.rgb(result.lr_image), s)
        parts.append(pictures.draw_window(up, w.x, w.y, w.size))
        labels.append("input")
    parts.append(heat)
    labels.append(result.map_method)
    height = int(min(max(heat.shape[0], 160), 360))
    rc, fractions = result.random, result.fractions
    for name, curve, randoms, mean, std, z in (
            ("deletion", result.deletion, rc.deletion_normalised, rc.deletion_mean, rc.deletion_std, rc.deletion_z),
            ("insertion", result.insertion, rc.insertion_normalised, rc.insertion_mean, rc.insertion_std,
             rc.insertion_z)):
        randoms = np.asarray(randoms, np.float64).reshape(-1, len(fractions))
        parts.append(chart(fractions, curve.normalised, randoms, label(name, curve.auc, mean, std, z), height))
        labels.append(f"{name}: D / D(x) over the fraction")
    return pictures.panel(parts, labels)


def write_result(result: FaithfulnessResult, out: str | Path, about: dict | None = None) -> Path:
    """`attribution.npy` (float32 h×w), `result.json` and `faithfulness.png` into folder `out`, all or nothing.

    `about`: further top-level keys of result.json (a report's "case" and "group"); they may not
    replace the result's own keys."""
    return write_result_dir(out, result.to_json(), about,
                            arrays={"attribution.npy": np.asarray(result.attribution, np.float32)},
                            pictures={"faithfulness.png": render(result)})
