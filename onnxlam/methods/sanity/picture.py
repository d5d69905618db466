"""sanity.png: the curves of the test (Spearman ρ and SSIM with stage 0, per stage, for the attribution
and the control) over a strip of the stage maps. Pure functions: a result in, a uint8 H×W×3 picture
out (`render.pictures`' conventions), drawn with Pillow."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from onnxlam.methods.sanity.result import Curve, SanityResult
from onnxlam.render import pictures

WIDTH, HEIGHT = 440, 250
LEFT, RIGHT, TOP, BOTTOM = 40, 14, 14, 30   # the plot's margins inside the chart
SPEARMAN, SSIM, GREY = (200, 30, 30), (30, 70, 200), (140, 140, 140)
MAPS = 6            # stage maps shown at most (stage 0, the last and evenly between)
THUMB = 96          # a map's side in the strip, about (whole multiples of its LR size)
_WHITE = (255, 255, 255)


def _dashed(draw: ImageDraw.ImageDraw, p, q, colour, width: int, dash: float = 5.0) -> None:
    """A dashed line from p to q (dashes and gaps of `dash` pixels)."""
    length = float(np.hypot(q[0] - p[0], q[1] - p[1]))
    steps = max(1, int(length // dash))
    for i in range(0, steps, 2):
        a, b = i / steps, min(i + 1, steps) / steps
        draw.line([(p[0] + a * (q[0] - p[0]), p[1] + a * (q[1] - p[1])),
                   (p[0] + b * (q[0] - p[0]), p[1] + b * (q[1] - p[1]))], fill=colour, width=width)


def _polyline(draw, points: Sequence[tuple[float, float] | None], colour, dashed: bool) -> None:
    """Segments between consecutive defined points (an undefined value breaks the line), and dots."""
    for p, q in zip(points, points[1:]):
        if p is not None and q is not None:
            if dashed:
                _dashed(draw, p, q, colour, 1)
            else:
                draw.line([p, q], fill=colour, width=2)
    for p in points:
        if p is not None:
            r = 1.5 if dashed else 2.5
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=colour)


def chart(result: SanityResult) -> np.ndarray:
    """The curves: ρ (red) and SSIM (blue) vs stage, solid for the attribution, dashed for the control,
    with the threshold (grey, dashed) and the stage where the map became independent (grey, solid)."""
    image = Image.new("RGB", (WIDTH, HEIGHT), _WHITE)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    last = max(len(result.stages) - 1, 1)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP

    def at(stage: int, value: float | None):
        return None if value is None else (x0 + (x1 - x0) * stage / last, y0 + (y1 - y0) * (value + 1.0) / 2.0)

    for v in (-1.0, -0.5, 0.0, 0.5, 1.0):
        y = at(0, v)[1]
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((4, y - 6), f"{v:.1f}", fill=(0, 0, 0), font=font)
    every = max(1, int(np.ceil((last + 1) / 12)))
    for k in range(0, last + 1, every):
        x = at(k, 0.0)[0]
        draw.line([(x, y0), (x, y0 + 3)], fill=(0, 0, 0))
        draw.text((x - 3, y0 + 5), str(k), fill=(0, 0, 0), font=font)
    draw.text((x1 - 110, y0 + 16), "stage (layers re-drawn)", fill=(0, 0, 0), font=font)
    draw.rectangle([x0, y1, x1, y0], outline=(0, 0, 0))
    _dashed(draw, at(0, result.threshold), at(last, result.threshold), GREY, 1)
    if result.independent_at is not None:
        draw.line([at(result.independent_at, -1.0), at(result.independent_at, 1.0)], fill=GREY, width=1)
    for curve, dashed in ((result.control, True), (result.method_curve, False)):
        _polyline(draw, [at(s.stage, s.spearman.whole) for s in curve.stages], SPEARMAN, dashed)
        _polyline(draw, [at(s.stage, s.ssim.whole) for s in curve.stages], SSIM, dashed)
    return np.asarray(image, np.uint8).copy()


def legend(result: SanityResult) -> np.ndarray:
    """The key of the chart and the verdicts, one line each."""
    lines = [(SPEARMAN, False, f"Spearman rho, {result.attribution}"), (SSIM, False, f"SSIM, {result.attribution}"),
             (SPEARMAN, True, "Spearman rho, control (edges)"), (SSIM, True, "SSIM, control (edges)"),
             (GREY, True, f"threshold {result.threshold:g}"),
             (None, False, f"{result.attribution}: {_verdict(result.method_curve)}"),
             (None, False, f"control: {_verdict(result.control)}")]
    image = Image.new("RGB", (WIDTH, 14 * len(lines) + 6), _WHITE)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for i, (colour, dashed, text) in enumerate(lines):
        y = 6 + 14 * i + 5
        if colour is not None:
            if dashed:
                _dashed(draw, (LEFT, y), (LEFT + 24, y), colour, 1)
            else:
                draw.line([(LEFT, y), (LEFT + 24, y)], fill=colour, width=2)
        draw.text((LEFT + 32, y - 6), text, fill=(0, 0, 0), font=font)
    return np.asarray(image, np.uint8).copy()


def _verdict(curve: Curve) -> str:
    if curve.passed:
        return f"passes: independent of the weights from stage {curve.independent_at}"
    return "fails: its map does not follow the weights"


def shown_stages(count: int, independent_at: int | None = None, at_most: int = MAPS) -> list[int]:
    """The stages whose maps the strip shows: all of them, or stage 0, the last, evenly between and
    the stage where the map became independent of the weights."""
    if count <= at_most:
        return list(range(count))
    chosen = {int(round(v)) for v in np.linspace(0, count - 1, at_most)}
    return sorted(chosen | ({independent_at} if independent_at is not None else set()))


def strip(result: SanityResult) -> np.ndarray:
    """The shown stages' maps (`lam_picture`, ×zoom) with their ρ, and the control's map (the same at
    every stage)."""
    h, w = result.lr_size
    zoom = max(1, THUMB // max(h, w))
    parts, labels = [], []
    for k in shown_stages(len(result.stages), result.independent_at):
        parts.append(pictures.lam_picture(result.maps[k], zoom))
        rho = result.stages[k].spearman.whole
        labels.append(f"stage {k}" + ("" if k == 0 else f"  rho {'-' if rho is None else f'{rho:.2f}'}"))
    parts.append(pictures.lam_picture(result.control_maps[0], zoom))
    labels.append("control")
    return pictures.panel(parts, labels)


def stacked(parts: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """Pictures one above the other on white, left-aligned."""
    width = max(p.shape[1] for p in parts)
    rows = []
    for i, p in enumerate(parts):
        padded = np.full((p.shape[0], width, 3), 255, np.uint8)
        padded[:, :p.shape[1]] = p
        rows.append(padded)
        if i < len(parts) - 1:
            rows.append(np.full((gap, width, 3), 255, np.uint8))
    return np.concatenate(rows)


def sanity_picture(result: SanityResult) -> np.ndarray:
    """sanity.png: the chart, its legend and the strip of stage maps."""
    return stacked([chart(result), legend(result), strip(result)])
