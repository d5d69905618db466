"""Path functions (spec §3): the images between a baseline and the input that LAM integrates along.

Every path gives `fold` images `x_k` and their derivatives `dλ_k`, ordered from the baseline end
towards the input, so that `(1/n) Σ_k ∇F(x_k) ⊙ dλ_k` is a Riemann sum of the path integral and the
last image is the input itself. Filtering is done in float64 and stored as float32, as specified.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATHS = ("blur", "linear", "gaussian-linear")
LARGE = 256 * 256  # LR pixels above which `correlate` leaves the work to SciPy


@dataclass(frozen=True)
class PathSteps:
    """Path images `x_k` and derivatives `dλ_k` (float32, n×C×h×w), and the baseline (C×h×w)."""

    images: np.ndarray
    derivatives: np.ndarray
    baseline: np.ndarray

    @property
    def fold(self) -> int:
        return self.images.shape[0]


def gaussian_kernel(sigma: float, size: int) -> np.ndarray:
    """K(σ) of spec §3: `exp(-(xx² + yy²) / (2 (σ + 1e-5)²))` on the axis `-l//2+1 … l//2`, summing to 1.

    The axis uses Python's floor division, so an even size is asymmetric (l = 8: −3…4).
    """
    ax = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    kernel = np.exp(-(xx**2 + yy**2) / (2.0 * (sigma + 1e-5) ** 2))
    return kernel / kernel.sum()


def correlate(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per-channel 2-D correlation of `x` (C×h×w) with reflect-101 borders (`d c b | a b c d | c b a`).

    SciPy's `ndimage.correlate(mode="mirror")` (reflect-101), computed in float64, with an even kernel
    anchored at `size // 2`, as SciPy and OpenCV's `filter2D` (the demo's filter) do. Done here in
    numpy, one shifted slice per tap: importing `scipy.ndimage` costs more (0.5–1 s) than the whole
    path at LR 48. Large images (over LARGE pixels, where SciPy's loop is faster than the import)
    and images narrower than the kernel's half-width (SciPy's mirror folds repeatedly there) go
    to SciPy; both give the same bits (tested).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    x64 = np.asarray(x, dtype=np.float64)
    kh, kw = kernel.shape
    top, left = kh // 2, kw // 2
    if min(x64.shape[-2:]) <= max(top, kh - 1 - top, left, kw - 1 - left) or x64[0].size > LARGE:
        from scipy import ndimage

        return np.stack([ndimage.correlate(c, kernel, mode="mirror") for c in x64])
    h, w = x64.shape[-2:]
    padded = np.pad(x64, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left)), mode="reflect")
    out = np.zeros_like(x64)
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j] != 0.0:
                out += kernel[i, j] * padded[:, i:i + h, j:j + w]
    return out


def blur_path(x: np.ndarray, sigma: float = 1.2, fold: int = 50, kernel_size: int = 9) -> PathSteps:
    """The LAM path: progressive Gaussian blur from `K(σ) ⊛ x` to `x`.

    `σ_k = linspace(σ, 0, n+1)[k]`, `x_k = K(σ_{k+1}) ⊛ x`, `dλ_k = n (K(σ_{k+1}) − K(σ_k)) ⊛ x`.
    """
    sigmas = np.linspace(sigma, 0.0, fold + 1)
    kernels = [gaussian_kernel(s, kernel_size) for s in sigmas]
    images = np.stack([correlate(x, kernels[k + 1]) for k in range(fold)])
    derivatives = np.stack(
        [correlate(x, (kernels[k + 1] - kernels[k]) * fold) for k in range(fold)]
    )
    baseline = correlate(x, kernels[0])
    return PathSteps(images.astype(np.float32), derivatives.astype(np.float32),
                     baseline.astype(np.float32))


def linear_path(x: np.ndarray, baseline: np.ndarray | None = None, fold: int = 50) -> PathSteps:
    """Straight line from `baseline` (default 0) to `x`: `x_k = b + t_k (x − b)`, `t = linspace(0, 1, n)`.

    `dλ_k = x − b` for every step (the demo's convention, not `(x − b)/n` per step: the 1/n is in §4).
    """
    x64 = np.asarray(x, dtype=np.float64)
    b = np.zeros_like(x64) if baseline is None else np.asarray(baseline, dtype=np.float64)
    t = np.linspace(0.0, 1.0, fold).reshape(-1, 1, 1, 1)
    images = b[None] + t * (x64 - b)[None]
    derivatives = np.broadcast_to((x64 - b)[None], images.shape)
    return PathSteps(images.astype(np.float32), derivatives.astype(np.float32), b.astype(np.float32))


def make_path(x: np.ndarray, kind: str = "blur", sigma: float = 1.2, fold: int = 50,
              kernel_size: int = 9) -> PathSteps:
    """The path of `kind` (`blur`, `linear` or `gaussian-linear`) for the LR image `x` (C×h×w)."""
    if kind == "blur":
        return blur_path(x, sigma, fold, kernel_size)
    if kind == "linear":
        return linear_path(x, None, fold)
    if kind == "gaussian-linear":
        return linear_path(x, correlate(x, gaussian_kernel(sigma, kernel_size)), fold)
    raise ValueError(f"unknown path {kind!r}; choose one of {', '.join(PATHS)}")
