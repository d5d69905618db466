"""A labelled scatter plot with vertical interval bars, drawn with Pillow into an RGB array: one point per
model, y its mean DI with the interval as a bar, x its PSNR, as the LAM paper's DI-against-PSNR figure.
No plotting library: the project's pictures are Pillow's (`pictures.py`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (0, 0, 0), (110, 110, 110), (225, 225, 225)
POINT = (192, 57, 43)
BAR = (74, 120, 181)
MARGIN = (64, 16, 36, 44)  # left, right, top, bottom: room for the ticks, labels and title


@dataclass(frozen=True)
class Point:
    """One point: (x, y), its y interval [low, high] (drawn as a bar) and its label."""

    x: float
    y: float
    low: float
    high: float
    label: str


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 × 10^k) giving about `ticks` ticks over `span`."""
    raw = max(span, 1e-12) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    pad = (hi - lo) * 0.08
    step = nice_step(hi - lo + 2 * pad)
    low = math.floor((lo - pad) / step) * step
    # values that are never negative (DI, PSNR) keep an axis that starts at 0, not below it
    return (0.0 if lo >= 0 > low else low), math.ceil((hi + pad) / step) * step


@dataclass(frozen=True)
class Axes:
    """The plot's data ranges and the canvas; `pixel` maps data to canvas coordinates (y up)."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width: int
    height: int

    @classmethod
    def fit(cls, points: Sequence[Point], width: int, height: int) -> Axes:
        xs = [p.x for p in points] or [0.0]
        ys = [v for p in points for v in (p.y, p.low, p.high) if math.isfinite(v)] or [0.0]
        return cls(_range(xs), _range(ys), width, height)

    def pixel(self, x: float, y: float) -> tuple[int, int]:
        left, right, top, bottom = MARGIN
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        px = left + (x - x0) / (x1 - x0) * (self.width - left - right - 1)
        py = top + (y1 - y) / (y1 - y0) * (self.height - top - bottom - 1)
        return int(round(px)), int(round(py))


def _ticks(lo: float, hi: float) -> list[float]:
    step = nice_step(hi - lo)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def _frame(draw: ImageDraw.ImageDraw, axes: Axes, font, x_label: str, y_label: str) -> None:
    """Grid, ticks and axis labels."""
    (x0, x1), (y0, y1) = axes.x_range, axes.y_range
    left, top = axes.pixel(x0, y1)
    right, bottom = axes.pixel(x1, y0)
    for t in _ticks(x0, x1):
        px, _ = axes.pixel(t, y0)
        draw.line([(px, top), (px, bottom)], fill=LIGHT)
        text = f"{t:g}"
        draw.text((px - draw.textlength(text, font=font) / 2, bottom + 4), text, fill=GREY, font=font)
    for t in _ticks(y0, y1):
        _, py = axes.pixel(x0, t)
        draw.line([(left, py), (right, py)], fill=LIGHT)
        text = f"{t:g}"
        draw.text((left - 6 - draw.textlength(text, font=font), py - 6), text, fill=GREY, font=font)
    draw.rectangle([left, top, right, bottom], outline=GREY)
    draw.text(((left + right - draw.textlength(x_label, font=font)) / 2, bottom + 20), x_label, fill=BLACK,
              font=font)
    draw.text((4, top - 14), y_label, fill=BLACK, font=font)


def scatter(points: Sequence[Point], title: str, x_label: str, y_label: str, width: int = 640,
            height: int = 440, empty: str = "nothing to plot") -> np.ndarray:
    """The points as an H×W×3 uint8 picture: each a dot at (x, y) with a vertical bar from `low` to
    `high` (capped; left out where not finite) and its label to the right; `title` on top; `empty`
    in the middle when there is no point."""
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    axes = Axes.fit(points, width, height)
    _frame(draw, axes, font, x_label, y_label)
    draw.text(((width - draw.textlength(title, font=font)) / 2, 6), title, fill=BLACK, font=font)
    if not points:
        draw.text(((width - draw.textlength(empty, font=font)) / 2, height / 2), empty, fill=GREY, font=font)
    for p in points:
        if math.isfinite(p.low) and math.isfinite(p.high):
            px, top = axes.pixel(p.x, p.high)
            _, bottom = axes.pixel(p.x, p.low)
            draw.line([(px, top), (px, bottom)], fill=BAR, width=2)
            for row in (top, bottom):
                draw.line([(px - 4, row), (px + 4, row)], fill=BAR, width=2)
    dots = [axes.pixel(p.x, p.y) for p in points]
    for px, py in dots:  # dots over every bar
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=POINT, outline=BLACK)
    taken = [(px - 4, py - 4, px + 5, py + 5) for px, py in dots]
    for p, (px, py) in zip(points, dots):  # labels where they overlap no other label and no dot
        left, top, right, bottom = draw.textbbox((0, 0), p.label, font=font)
        w, h = right - left, bottom - top
        box = _label_box(px, py, w, h, taken, width, height)
        taken.append(box)
        draw.text((box[0] - left, box[1] - top), p.label, fill=BLACK, font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_box(px: int, py: int, w: int, h: int, taken: list[tuple], width: int, height: int) -> tuple:
    """(left, top, right, bottom) of a label for the dot at (px, py): right of it and above first, then
    below, left, and further up or down, the first place that overlaps nothing taken and stays inside."""
    for dy in (-h - 2, 3, -2 * h - 4, h + 5, -3 * h - 6, 2 * h + 7, -4 * h - 8, 3 * h + 9):
        for x0 in (px + 8, px - 8 - w):
            box = (x0, py + dy, x0 + w, py + dy + h)
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
            if inside and not any(_overlaps(box, t) for t in taken):
                return box
    return (px + 8, py - h - 2, px + 8 + w, py - 2)
