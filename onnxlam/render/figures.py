"""Figures that compare models: the paper's comparison figure and the difference of two attributions.

Pure functions: LAM results in (anything with a LAM result's arrays and window: `MapResult`), uint8
H×W×3 pictures out (see `pictures` for the conventions).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from onnxlam.render import pictures
from onnxlam.lam.result import Window
from onnxlam.core.errors import InputError

class MapResult(Protocol):
    """What the figures read of a LAM result (`methods.lam.result.LamResult`)."""

    attribution: np.ndarray
    lr_image: np.ndarray
    sr_image: np.ndarray
    hr_image: np.ndarray | None
    scale: int
    window: Window
    di: float
    model: str


COLUMNS = ("HR + window", "LAM", "LAM blend", "KDE blend", "SR window")
_WHITE = (255, 255, 255)
_GAP = 6
_LABEL_WIDTH = 170


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def row_pictures(result: MapResult) -> list[np.ndarray]:
    """The five pictures of one figure row: HR (or SR, with --lr) with the window, LAM, LAM blend,
    KDE blend, and the SR output's window enlarged (nearest neighbour) to the row's height."""
    s, w = result.scale, result.window
    sr = pictures.rgb(result.sr_image)
    reference = pictures.rgb(result.hr_image) if result.hr_image is not None else sr
    lr_up = pictures.upscale_bicubic(pictures.rgb(result.lr_image), s)
    lam = pictures.lam_picture(result.attribution, s)
    return [pictures.draw_window(reference, w.x, w.y, w.size), lam, pictures.blend(lam, lr_up),
            pictures.blend(pictures.kde_picture(result.attribution, s), lr_up),
            pictures.crop_window(sr, w.x, w.y, w.size, zoom=reference.shape[0])]


def comparison_figure(results: Sequence[MapResult], names: Sequence[str] | None = None) -> np.ndarray:
    """The paper's comparison figure: one row per result, columns as `COLUMNS`, a header naming the
    columns and, left of each row, the model's name and its DI. White background, uint8 H×W×3."""
    if not results:
        raise ValueError("comparison_figure needs at least one result")
    names = [r.model for r in results] if names is None else list(names)
    if len(names) != len(results):
        raise ValueError(f"{len(names)} names for {len(results)} results")
    rows = [row_pictures(r) for r in results]
    widths = [max(row[i].shape[1] for row in rows) for i in range(len(COLUMNS))]
    heights = [max(p.shape[0] for p in row) for row in rows]
    name_font, di_font = _font(14), _font(18)
    header = 26
    width = _LABEL_WIDTH + sum(widths) + _GAP * len(widths)
    height = header + sum(heights) + _GAP * len(rows)
    canvas = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    left = _LABEL_WIDTH
    font = _fitting_font(draw, COLUMNS, [w - 2 for w in widths])
    for title, w in zip(COLUMNS, widths):
        tw = draw.textlength(title, font=font)
        draw.text((left + (w - tw) / 2, 5), title, fill=(0, 0, 0), font=font)
        left += w + _GAP
    top = header
    for result, name, row, h in zip(results, names, rows, heights):
        _draw_label(draw, name, result, top, h, name_font, di_font)
        left = _LABEL_WIDTH
        for picture, w in zip(row, widths):
            canvas.paste(Image.fromarray(picture), (left + (w - picture.shape[1]) // 2, top))
            left += w + _GAP
        top += h + _GAP
    return np.asarray(canvas, dtype=np.uint8).copy()


def _fitting_font(draw: ImageDraw.ImageDraw, texts: Sequence[str], widths: Sequence[float]):
    """The largest font from 15 px down to 8 px in which every text fits its width (narrow columns)."""
    for size in range(15, 7, -1):
        font = _font(size)
        if all(draw.textlength(t, font=font) <= w for t, w in zip(texts, widths)):
            return font
    return font


def _draw_label(draw: ImageDraw.ImageDraw, name: str, result: MapResult, top: int, height: int,
                name_font, di_font) -> None:
    """Model name (wrapped to the label column) and DI, centred vertically on the row."""
    lines = _wrap(draw, name, name_font, _LABEL_WIDTH - 12)[:4]
    di = f"DI {result.di:.2f}"
    line_h = 18
    block = line_h * len(lines) + 26
    y = top + max(0, (height - block) // 2)
    for line in lines:
        draw.text((6, y), line, fill=(0, 0, 0), font=name_font)
        y += line_h
    draw.text((6, y + 4), di, fill=(176, 0, 32), font=di_font)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """`text` broken into lines no wider than `width` pixels (at any character: names have no spaces)."""
    lines, current = [], ""
    for ch in text:
        if current and draw.textlength(current + ch, font=font) > width:
            lines.append(current)
            current = ch
        else:
            current += ch
    return lines + ([current] if current else [])


def kde_difference(a: MapResult, b: MapResult) -> np.ndarray:
    """KDE density of A's map minus KDE density of B's (each divided by its max): h×w in [−1, 1].

    Positive where A draws more on the pixels than B. Both must come from the same LR image size
    and scale (InputError otherwise).
    """
    if a.scale != b.scale:
        raise InputError(f"the models have different scales (×{a.scale} and ×{b.scale}); "
                         "their attributions live on different LR images and cannot be subtracted")
    if a.attribution.shape != b.attribution.shape:
        raise InputError(f"the attribution maps differ in size ({a.attribution.shape} and {b.attribution.shape})")
    return pictures.kde_density(a.attribution) - pictures.kde_density(b.attribution)


def difference_picture(difference: np.ndarray, scale: int) -> np.ndarray:
    """`seismic(0.5 + 0.5·d/max|d|)` upscaled ×scale bicubically: red where A's density is higher,
    blue where B's is, white where they agree. An all-zero difference is white."""
    d = np.asarray(difference, dtype=np.float64)
    peak = float(np.abs(d).max()) if d.size else 0.0
    values = 0.5 + 0.5 * d / peak if peak > 0 else np.full(d.shape, 0.5)
    coloured = pictures.seismic(values)
    h, w = coloured.shape[:2]
    resized = Image.fromarray(coloured).resize((w * scale, h * scale), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8).copy()


def difference_figure(difference: np.ndarray, a: MapResult, names: Sequence[str]) -> np.ndarray:
    """diff.png: `difference_picture` laid over A's SR image with the window outlined, each pixel's
    colour weighted by sqrt(|d|/max|d|) (where the models agree the image shows through), beside a colour
    bar from −max|d| (blue: B draws more) through 0 to +max|d| (red: A draws more), labelled."""
    if len(names) != 2:
        raise ValueError("difference_figure needs the names of A and B")
    d = np.asarray(difference, dtype=np.float64)
    s, w = a.scale, a.window
    colour = difference_picture(d, s)
    peak = float(np.abs(d).max()) if d.size else 0.0
    H, W = colour.shape[:2]
    weight = np.sqrt(np.abs(d) / peak) if peak > 0 else np.zeros_like(d)  # sqrt: half-strong differences show
    weight = np.asarray(Image.fromarray(weight.astype(np.float32)).resize((W, H), Image.Resampling.BILINEAR))
    weight = np.clip(weight, 0.0, 1.0)[..., None]
    sr = pictures.rgb(a.sr_image)[:H, :W]
    over = np.clip(np.rint(sr * (1.0 - weight) + colour * weight), 0, 255).astype(np.uint8)
    over, _ = pictures.enlarge(pictures.draw_window(over, w.x, w.y, w.size, colour=(0, 0, 0)))
    t = np.linspace(1.0, 0.0, over.shape[0])
    bar = pictures.colour_bar(pictures.seismic(t), [(1.0, f"+{peak:.3f} A"), (0.5, "0"), (0.0, f"-{peak:.3f} B")])
    return pictures.panel([over, bar], [f"KDE of {names[0]} minus KDE of {names[1]}", "A - B"])
