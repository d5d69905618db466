"""LAM's folder: the arrays, result.json and the pictures of spec §6, all or nothing.

Everything is written into a temporary sibling folder that is renamed into place at the end, so an
interrupted run never leaves a half-written output folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxlam.core.files import write_result_dir
from onnxlam.methods.lam.result import LamResult
from onnxlam.render import pictures

PICTURES = ("sr.png", "window.png", "lam.png", "lam_blend.png", "kde_blend.png", "panel.png")
FILES = ("attribution.npy", "gradient.npy", "result.json") + PICTURES


def render(result: LamResult) -> dict[str, np.ndarray]:
    """The pictures of spec §6 for `result`, by file name."""
    s, win = result.scale, result.window
    sr = pictures.rgb(result.sr_image)
    reference = pictures.rgb(result.hr_image) if result.hr_image is not None else sr
    lr_up = pictures.upscale_bicubic(pictures.rgb(result.lr_image), s)
    lam = pictures.lam_picture(result.attribution, s)
    lam_blend = pictures.blend(lam, lr_up)
    kde_blend = pictures.blend(pictures.kde_picture(result.attribution, s), lr_up)
    window = pictures.draw_window(reference, win.x, win.y, win.size)
    row = [window, lam, lam_blend, kde_blend, sr]
    labels = ["HR + window" if result.hr_image is not None else "SR + window", result.panel_label(),
              "LAM blend", f"KDE blend  DI {result.di:.2f}", "SR"]
    return {"sr.png": sr, "window.png": window, "lam.png": lam, "lam_blend.png": lam_blend,
            "kde_blend.png": kde_blend, "panel.png": pictures.panel(row, labels)}


def write_result(result: LamResult, out: str | Path, about: dict | None = None) -> Path:
    """Write `attribution.npy`, `gradient.npy`, `result.json` and the pictures into folder `out`, all
    or nothing. `about`: further top-level keys of result.json (a report's "case" and "group"); they
    may not replace the result's own keys."""
    return write_result_dir(out, result.to_json(), about,
                            arrays={"attribution.npy": result.attribution.astype(np.float32),
                                    "gradient.npy": result.gradient.astype(np.float32)},
                            pictures=render(result))
