"""The sanity test's numbers: pure functions, arrays in, numbers and arrays out.

Every map is an h×w array (an abs-normalised attribution map, values in [0, 1]).

- `spearman(a, b)`: Spearman's rank correlation of the maps' pixels, the Pearson correlation of
  their ranks (ties averaged: `scipy.stats.rankdata`), computed as `scipy.stats.spearmanr` computes
  it (`np.corrcoef` of the ranks). It is undefined (None) when either map is constant or fewer than
  two pixels are compared; `spearmanr` says NaN there.
- `ssim_map(a, b)`: the structural similarity map of `skimage.metrics.structural_similarity(a, b,
  data_range=1, full=True)` with its defaults: a 7×7 uniform window (`scipy.ndimage.uniform_filter`,
  reflected at the border), K1 = 0.01, K2 = 0.03, the sample covariance (×49/48), in float32 for
  float32 (or float16) maps and float64 otherwise, as skimage chooses.
- `ssim(a, b)`: skimage's mean SSIM: the mean (in float64) of the map over the pixels at least 3 from
  the border (skimage crops the half-window before averaging).
- `ssim_outside(a, b, outside)`: the mean (in float64) of the same SSIM map, the one skimage returns
  with `full=True`, over every pixel outside the window's footprint (`outside` true), the border
  pixels included (the map is defined there, its window reflected); None when no pixel is outside.
- `footprint(window, scale, lr_size)`: the LR pixels under the window, the LR pixels whose s×s SR
  block holds at least one of the window's SR pixels: columns x//s … (x+size−1)//s and rows
  y//s … (y+size−1)//s, both ends included, clipped to the image (`Footprint`, ends exclusive).
- `edge_control(lr)`: the model-independent control explainer, the Sobel gradient magnitude of the
  LR input's luma (BT.601 weights for RGB, the channel mean otherwise; `scipy.ndimage.sobel`,
  reflected at the border), abs-normalised as LAM's maps are (`lam.metrics.abs_normalise`).
- `independence_stage(correlations, threshold)`: the first stage k ≥ 1 whose whole-map Spearman
  correlation with stage 0 falls below `threshold` (a map that has become constant, whose
  correlation is undefined, counts as below it), or None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from onnxlam.core.errors import InputError, NumericalError
from onnxlam.lam.metrics import abs_normalise
from onnxlam.lam.result import Window

WIN_SIZE = 7       # skimage's default window (no Gaussian weights)
K1, K2 = 0.01, 0.03
DATA_RANGE = 1.0   # the maps lie in [0, 1]
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


@dataclass(frozen=True)
class Footprint:
    """The window's LR pixels: rows top … bottom−1, columns left … right−1."""

    top: int
    left: int
    bottom: int
    right: int

    def outside(self, lr_size: tuple[int, int]) -> np.ndarray:
        """The h×w mask, true outside the footprint."""
        mask = np.ones(lr_size, bool)
        mask[self.top:self.bottom, self.left:self.right] = False
        return mask


def footprint(window: Window, scale: int, lr_size: tuple[int, int]) -> Footprint:
    """The LR pixels under `window` (see the module docstring), clipped to the h×w image."""
    h, w = lr_size
    s = int(scale)
    top, left = window.y // s, window.x // s
    bottom, right = (window.y + window.size - 1) // s + 1, (window.x + window.size - 1) // s + 1
    return Footprint(min(max(top, 0), h), min(max(left, 0), w), min(max(bottom, 0), h), min(max(right, 0), w))


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if not np.all(np.isfinite(a)):
        raise NumericalError(f"{what} holds {int(np.sum(~np.isfinite(a)))} NaN or inf values")
    return a


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation of two maps' pixels (equal to `scipy.stats.spearmanr`'s); None where
    either is constant or fewer than two pixels are given."""
    x = _finite(a, "a map").ravel()
    y = _finite(b, "a map").ravel()
    if x.size != y.size:
        raise ValueError(f"maps of {x.size} and {y.size} pixels")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    ranks = np.vstack([rankdata(x), rankdata(y)])
    return float(np.corrcoef(ranks)[0, 1])


def check_size(lr_size: tuple[int, int], win_size: int = WIN_SIZE) -> None:
    """InputError for maps smaller than SSIM's window (skimage refuses them too)."""
    h, w = lr_size
    if min(h, w) < win_size:
        raise InputError(f"the LR image is {w}×{h}: SSIM's {win_size}×{win_size} window needs at least "
                         f"{win_size}×{win_size} LR pixels; use a larger image")


def _float_type(a: np.ndarray, b: np.ndarray):
    """skimage's float type of the computation: float32 for float16/float32 maps, else float64."""
    small = (np.float16, np.float32)
    return np.float32 if a.dtype in small and b.dtype in small else np.float64


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE, win_size: int = WIN_SIZE) -> np.ndarray:
    """The SSIM map S of two h×w maps (skimage's `full=True` map, see the module docstring)."""
    a, b = _finite(a, "a map"), _finite(b, "a map")
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"SSIM compares two maps of one h×w shape; got {a.shape} and {b.shape}")
    check_size(a.shape, win_size)
    kind = _float_type(a, b)
    x, y = a.astype(kind, copy=False), b.astype(kind, copy=False)

    def mean(z):
        return ndimage.uniform_filter(z, size=win_size)

    cov_norm = win_size ** 2 / (win_size ** 2 - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))


def interior(shape: tuple[int, int], win_size: int = WIN_SIZE) -> np.ndarray:
    """The mask of the pixels skimage averages: at least (win_size − 1)/2 from every border."""
    pad = (win_size - 1) // 2
    mask = np.zeros(shape, bool)
    mask[pad:shape[0] - pad, pad:shape[1] - pad] = True
    return mask


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """skimage's `structural_similarity(a, b, data_range=1)`: the SSIM map's mean over the interior."""
    s = ssim_map(a, b)
    return float(s[interior(s.shape)].mean(dtype=np.float64))


def ssim_outside(a: np.ndarray, b: np.ndarray, outside: np.ndarray) -> float | None:
    """The SSIM map's mean over the pixels where `outside` is true (border included); None for none."""
    s = ssim_map(a, b)
    chosen = np.asarray(outside, bool)
    return float(s[chosen].mean(dtype=np.float64)) if chosen.any() else None


def edge_control(lr: np.ndarray) -> np.ndarray:
    """The control explainer's map of an LR input (C×h×w in [0, 1]): the abs-normalised Sobel gradient
    magnitude of its luma (float32 h×w). It reads no model, so no weight can change it."""
    x = np.asarray(_finite(lr, "the LR input"), np.float64)
    luma = np.tensordot(LUMA, x, axes=1) if x.shape[0] == 3 else x.mean(axis=0)
    magnitude = np.hypot(ndimage.sobel(luma, axis=0), ndimage.sobel(luma, axis=1))
    return abs_normalise(magnitude[None])


def independence_stage(correlations: Sequence[float | None], threshold: float) -> int | None:
    """The first stage k ≥ 1 whose correlation (stage k's entry) is below `threshold` or undefined; None."""
    for k, rho in enumerate(correlations):
        if k >= 1 and (rho is None or rho < threshold):
            return k
    return None
