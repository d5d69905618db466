"""CEM's numpy layer, pure functions: the metric, the patches, the coarse-to-fine statistics, the
summary and the batch size (§1–§5 of docs/CEM-SPEC.md)."""
from __future__ import annotations

import numpy as np

from onnxlam.methods.cem.result import Draw, Roi, Summary


def quantise(y: np.ndarray) -> np.ndarray:
    """Q(y) = uint8(round(clip(y, 0, 1)·255)) in y's float type, round half to even, as the code's
    `tensor2img` on float32 outputs (§1). Any layout; NaN is the caller's to reject."""
    y = np.asarray(y)
    return np.rint(np.clip(y, 0, 1) * y.dtype.type(255)).astype(np.uint8)


def psnr(output: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PSNR in dB of uint8 images against `truth` (§1): float64 MSE over every value, inf where MSE = 0.

    `output`: ...×H×W×C uint8 (leading batch dims allowed); `truth`: H×W×C uint8.
    """
    d = output.astype(np.float64) - truth.astype(np.float64)
    mse = (d * d).reshape(d.shape[: d.ndim - 3] + (-1,)).mean(axis=-1)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(255.0 / np.sqrt(mse))


def roi_psnr(outputs: np.ndarray, truth_window: np.ndarray, x: int, y: int) -> np.ndarray:
    """P(y) for a batch of model outputs N×C×H×W (float): their R×R window at column x, row y against
    the ground truth's ROI pixels I[h:h+R, w:w+R] (`truth_window`, R×R×C uint8)."""
    r = truth_window.shape[0]
    window = outputs[:, :, y:y + r, x:x + r].transpose(0, 2, 3, 1)
    return psnr(quantise(window), truth_window)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """cv2's `interpolateCubic` (A = −0.75) at fractional offsets t: 4 weights per t."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=-1)


def _cubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out×n_in matrix of cv2.resize INTER_CUBIC along one axis: half-pixel centres, edge pixels repeated."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src).astype(int)
    weights = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in))
    for k in range(4):
        np.add.at(m, (np.arange(n_out), np.clip(base - 1 + k, 0, n_in - 1)), weights[:, k])
    return m


def resize_cubic(patch: np.ndarray, side: int) -> np.ndarray:
    """A uint8 p×p×C patch resized to side×side as cv2.resize(…, INTER_CUBIC) does (§2, SR).

    In float64 with round half up (cv2 rounds its fixed-point sum that way); for the integer factors
    of the defaults (8 → 2, 8 → 4) the weights are dyadic, so this is cv2's result exactly.
    """
    p = np.asarray(patch)
    if p.shape[0] == side and p.shape[1] == side:
        return p.copy()
    rows, cols = _cubic_matrix(p.shape[0], side), _cubic_matrix(p.shape[1], side)
    v = np.einsum("ij,jkc,lk->ilc", rows, p.astype(np.float64), cols)
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)


def add_noise(pixels: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """uint8(clip(p/255 + n, 0, 1)·255), truncating, as the DN code degrades images and patches (§1, §2)."""
    return (np.clip(pixels / 255.0 + noise, 0, 1) * 255).astype(np.uint8)


def intervention_content(draw: Draw, side: int) -> np.ndarray:
    """What one intervention pastes into x: the bank patch resized to b×b, then noised for DN (§2)."""
    content = resize_cubic(draw.patch, side)
    return content if draw.noise is None else add_noise(content, draw.noise)


def paste(x: np.ndarray, content: np.ndarray, top: int, left: int) -> np.ndarray:
    """A copy of x (h×w×C uint8) with `content` placed with its top-left at (top, left); what falls
    outside x is cut off (the last row/column of blocks may be partial, a crop may cut a block)."""
    out = x.copy()
    h, w = content.shape[:2]
    t, l = max(top, 0), max(left, 0)
    b, r = min(top + h, x.shape[0]), min(left + w, x.shape[1])
    if b > t and r > l:
        out[t:b, l:r] = content[t - top:b - top, l - left:r - left]
    return out


def touches(i: int, j: int, side: int, box: tuple[int, int, int, int]) -> bool:
    """Whether input block (i, j) overlaps the LR box (top, left, bottom, right; bottom/right exclusive)."""
    return i * side < box[2] and (i + 1) * side > box[0] and j * side < box[3] and (j + 1) * side > box[1]


def grid_shape(lr_size: tuple[int, int], side: int) -> tuple[int, int]:
    """ceil(h/b) × ceil(w/b) (the code's n×n for square inputs, §1)."""
    return -(-lr_size[0] // side), -(-lr_size[1] // side)


def roi_mask(grid: tuple[int, int], roi: Roi, scale: int, side: int) -> np.ndarray:
    """The ROI's own blocks as the public code counts them (§4, `h//8 … (h+R)//8 − 1` with s·b = 8):
    rows h // (s·b) … (h+R) // (s·b) − 1, columns likewise. An ROI off the block grid owns only the
    blocks it starts in up to the last one its far edge passes whole; a block it covers in part keeps
    its effect, as in the figures of the paper's code."""
    px = scale * side
    mask = np.zeros(grid, bool)
    mask[roi.y // px:(roi.y + roi.size) // px, roi.x // px:(roi.x + roi.size) // px] = True
    return mask


def refinement_set(reference: float, coarse: np.ndarray, tol: float) -> np.ndarray:
    """Blocks to refine: max_k |O − C_ijk| ≥ tol (§3.2); `coarse` is n_h×n_w×Nc."""
    return np.max(np.abs(reference - coarse), axis=-1) >= tol


def block_means(coarse: np.ndarray, fine: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """μ: the fine draws' mean where refined, else the coarse draws' (never pooled, §3.3)."""
    mu = coarse.mean(axis=-1)
    if refined.any():
        mu[refined] = fine[refined].mean(axis=-1)
    return mu


def causal_effect(reference: float, mu: np.ndarray, tol: float) -> np.ndarray:
    """CE = O − μ, zeroed where |CE| < tol (§4)."""
    ce = reference - mu
    return np.where(np.abs(ce) < tol, 0.0, ce)


def summarise(ce: np.ndarray, roi: np.ndarray) -> Summary:
    """§5, with onnxlam's deviation: the ROI blocks are counted apart, not as positive.

    Min, max and the first argmin/argmax (row, col, row-major) are over the map with ROI blocks
    set to 0, as the code computes them.
    """
    outside = ce[~roi]
    zeroed = np.where(roi, 0.0, ce)
    amin, amax = np.unravel_index(np.argmin(zeroed), ce.shape), np.unravel_index(np.argmax(zeroed), ce.shape)
    return Summary(positive=int((outside > 0).sum()), negative=int((outside < 0).sum()),
                   neutral=int((outside == 0).sum()), roi_blocks=int(roi.sum()),
                   minimum=float(zeroed.min()), maximum=float(zeroed.max()),
                   argmin=(int(amin[0]), int(amin[1])), argmax=(int(amax[0]), int(amax[1])))


def degrade_dn(truth: np.ndarray, seed: int, sigma: float) -> np.ndarray:
    """The DN input (§1): uint8(clip(I/255 + N(0, σ/255), 0, 1)·255) with RandomState(seed)'s first normals."""
    return add_noise(truth, np.random.RandomState(seed).normal(0, sigma / 255, truth.shape))


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """read_image's H×W×C (uint8, uint16 or float in [0, 1]) as uint8: CEM's metric is 8-bit (§1)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return np.rint(pixels / 257.0).astype(np.uint8)
    return np.rint(np.clip(pixels, 0, 1) * 255.0).astype(np.uint8)
