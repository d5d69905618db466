"""CEM's picture (§6 of docs/CEM-SPEC.md) and its folder, written all or nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from onnxlam.core.files import write_result_dir
from onnxlam.methods.cem.result import CemResult, Roi
from onnxlam.render import pictures

PICTURE_BOUND = {"sr": 2.5, "dn": 1.0}  # B of §6, dB
GAMMA = 1.2                               # §6: V = sign(M)·|M|^(1/1.2) / B^(1/1.2)


def cem_picture(ce: np.ndarray, roi_blocks: np.ndarray, roi: Roi, scale: int, side: int,
                lr: np.ndarray, size: tuple[int, int], bound: float) -> np.ndarray:
    """The paper's picture (§6) as uint8 H×W×3.

    M = clip(CE, −B, B), ROI blocks := B; V = sign(M)·|M|^(1/1.2) / B^(1/1.2); seismic(V/2 + 1/2)
    per block, nearest ×(s·b); the ROI's pixels pure green; uint8(0.9·map + 0.1·x resized to I's
    size with Pillow's default filter); a 2-px green box on the ROI (the code draws it at s·(w, h)).
    """
    m = np.clip(np.where(roi_blocks, bound, np.nan_to_num(ce)), -bound, bound)
    v = np.sign(m) * np.abs(m) ** (1 / GAMMA) / bound ** (1 / GAMMA)
    colours = pictures.seismic(v / 2 + 0.5)
    px = scale * side
    h, w = size
    picture = np.repeat(np.repeat(colours, px, axis=0), px, axis=1)[:h, :w].copy()
    picture[roi.y:roi.y + roi.size, roi.x:roi.x + roi.size] = (0, 255, 0)
    rgb = lr if lr.shape[2] == 3 else np.repeat(lr, 3, axis=2)
    background = np.asarray(Image.fromarray(rgb).resize((w, h)), np.float64)
    blended = (0.9 * picture + 0.1 * background).astype(np.uint8)
    return pictures.draw_window(blended, roi.x, roi.y, roi.size, colour=(0, 255, 0), width=2)


def result_picture(result: CemResult) -> np.ndarray:
    """The §6 picture of a result (uint8 H×W×3)."""
    return cem_picture(result.effect, result.roi_mask, result.roi, result.scale, result.block_input,
                       result.input_image, result.truth.shape[:2], PICTURE_BOUND[result.params.task])


def render(result: CemResult) -> dict[str, np.ndarray]:
    """`cem.png` (§6) and `panel.png`: the ground truth with the ROI box beside the map, both enlarged
    enlarged alike (`pictures.enlarge`), captions wrapped to their picture."""
    picture = result_picture(result)
    truth = result.truth if result.truth.shape[2] == 3 else np.repeat(result.truth, 3, axis=2)
    big_truth, zoom = pictures.enlarge(truth)
    big_picture, _ = pictures.enlarge(picture)  # the same shape as the truth: the same factor
    r = result.roi
    boxed = pictures.draw_window(big_truth, r.x * zoom, r.y * zoom, r.size * zoom, colour=(0, 255, 0),
                                 width=2 * zoom)
    s = result.summary
    labels = [f"image, ROI {r.size}x{r.size} at ({r.x}, {r.y})",
              f"CEM: +{s.positive} / -{s.negative} / 0 {s.neutral} blocks, range {s.effect_range:.2f} dB"]
    return {"cem.png": picture, "panel.png": pictures.panel([boxed, big_picture], labels)}


def write_result(result: CemResult, out: str | Path, about: dict | None = None) -> Path:
    """`effect.npy`, `psnr_coarse.npy`, `psnr_fine.npy`, `refined.npy`, `result.json`, `cem.png`,
    `panel.png` into folder `out`, all or nothing.

    `about`: further top-level keys of result.json (a report's "case" and "group"); they may not
    replace the result's own keys."""
    arrays = {f"{name}.npy": getattr(result, name) for name in ("effect", "psnr_coarse", "psnr_fine", "refined")}
    return write_result_dir(out, result.to_json(), about, arrays=arrays, pictures=render(result))
