"""Image quality as the SR literature's tables compute it: PSNR and SSIM on the Y channel.

The convention is BasicSR's (`basicsr/metrics/psnr_ssim.py`: `calculate_psnr` / `calculate_ssim` with
`test_y_channel=True`, `crop_border=scale`), which most SR papers' tables follow:

- both images are rounded to 8 bits as `tensor2img` does: clip to [0, 1], `× 255` and `round()` in
  float32 (NumPy rounds half to even, so 0.5 → 0 and 1.5 → 2);
- `crop` pixels are cut from every border;
- Y of BT.601 on the 0..255 scale, in [16, 235]: `Y = 16 + 65.481 R + 128.553 G + 24.966 B` with
  R, G, B in [0, 1] (BasicSR's `bgr2ycbcr(y_only=True)` on its BGR order, times 255). A 1-channel
  image is its own Y (BasicSR leaves it as is). BasicSR stores Y in float32; here it is float64,
  which moves PSNR by well under 1e-4 dB;
- PSNR = 10 log10(255² / MSE), `inf` when the images are equal;
- SSIM (Wang et al. 2004) with an 11×11 Gaussian window of σ = 1.5, C1 = (0.01·255)², C2 = (0.03·255)²,
  in float64, averaged over the 'valid' positions (the window inside the image). BasicSR filters with
  `cv2.filter2D` and keeps `[5:-5, 5:-5]`, so its border mode never reaches the mean; the valid
  correlation is computed directly here, without OpenCV.

Images are onnxlam's prepared form: float C×H×W (C = 1 or 3) with values in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from onnxlam.core.errors import InputError

Y_OFFSET = 16.0
Y_RGB = np.array([65.481, 128.553, 24.966])  # BT.601 Y from R, G, B in [0, 1], on the 0..255 scale
PEAK = 255.0
WINDOW = 11
SIGMA = 1.5
C1 = (0.01 * PEAK) ** 2
C2 = (0.03 * PEAK) ** 2


@dataclass(frozen=True)
class Quality:
    """PSNR (dB; inf for identical images) and SSIM of an SR output against its HR image, on Y."""

    psnr: float
    ssim: float

    def to_json(self) -> dict:
        """The fields as JSON numbers; an infinite PSNR becomes null (JSON has no infinity)."""
        return {"psnr": self.psnr if math.isfinite(self.psnr) else None, "ssim": self.ssim}


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Y (H×W, float64, in [16, 235] for inputs in [0, 1]) of an RGB image 3×H×W in [0, 1]."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != 3:
        raise InputError(f"rgb_to_y needs an RGB image 3×H×W; got shape {a.shape}")
    # Element by element, not a BLAS dot: a dot's rounding may depend on memory alignment, and equal
    # images must give equal Y (PSNR inf), not a difference of 1e-14.
    return Y_OFFSET + Y_RGB[0] * a[0] + Y_RGB[1] * a[1] + Y_RGB[2] * a[2]


def to_8bit(image: np.ndarray) -> np.ndarray:
    """uint8 of a float image in [0, 1], as BasicSR's tensor2img: clip, ×255 in float32, round half to even.

    uint8 input is returned unchanged.
    """
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"to_8bit needs a float image in [0, 1] or uint8; got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise InputError("the image holds NaN or inf; an SR output must be finite to be measured")
    # float32 throughout, like tensor2img's `.float()` tensor, so that ties round as BasicSR's do.
    scaled = np.clip(a.astype(np.float32), 0.0, 1.0) * np.float32(PEAK)
    return np.round(scaled).astype(np.uint8)


def y_channel(image: np.ndarray) -> np.ndarray:
    """Y on 0..255 (float64 H×W) of a C×H×W image (C = 1 or 3) after rounding it to 8 bits."""
    a = to_8bit(image)
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise InputError(f"an image must be C×H×W with C = 1 or 3; got shape {a.shape}")
    if a.shape[0] == 1:
        return a[0].astype(np.float64)
    return rgb_to_y(a.astype(np.float64) / PEAK)


def psnr_255(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two same-shape arrays on the 0..255 scale: 10 log10(255² / MSE); inf if equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(PEAK * PEAK / mse))


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """The 1-D Gaussian of cv2.getGaussianKernel(size, sigma): exp(−(i − (size−1)/2)² / 2σ²), sum 1."""
    i = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(i * i) / (2.0 * sigma * sigma))
    return k / k.sum()


def _valid_filter(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlation with the separable window kernel ⊗ kernel, only where the window fits inside."""
    rows = sliding_window_view(a, kernel.size, axis=0) @ kernel
    return sliding_window_view(rows, kernel.size, axis=1) @ kernel


def ssim_255(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two same-shape 2-D arrays on the 0..255 scale, as BasicSR's `_ssim` (see the module)."""
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise InputError(f"SSIM needs two 2-D arrays of one shape; got {x.shape} and {y.shape}")
    if min(x.shape) < WINDOW:
        raise InputError(f"SSIM needs an image of at least {WINDOW}×{WINDOW} after the border crop; "
                         f"got {x.shape[1]}×{x.shape[0]}")
    k = gaussian_window()
    mu_x, mu_y = _valid_filter(x, k), _valid_filter(y, k)
    var_x = _valid_filter(x * x, k) - mu_x * mu_x
    var_y = _valid_filter(y * y, k) - mu_y * mu_y
    cov = _valid_filter(x * y, k) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x * mu_x + mu_y * mu_y + C1) * (var_x + var_y + C2))
    return float(ssim_map.mean())


def _pair(sr: np.ndarray, hr: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """The cropped Y channels of the SR output and the HR image, both rounded to 8 bits."""
    sr_shape, hr_shape = np.shape(sr), np.shape(hr)
    if sr_shape != hr_shape:
        raise InputError(f"the SR output {sr_shape} and the HR image {hr_shape} differ in shape: the SR output "
                         f"must equal the HR image's size (crop the HR image to a multiple of the scale)")
    if crop < 0 or 2 * crop >= min(sr_shape[-2:]):
        raise InputError(f"a border crop of {crop} leaves nothing of a {sr_shape[-1]}×{sr_shape[-2]} image; "
                         f"use 0 ≤ crop < {(min(sr_shape[-2:]) + 1) // 2}")
    ys, yh = y_channel(sr), y_channel(hr)
    if crop:
        ys, yh = ys[crop:-crop, crop:-crop], yh[crop:-crop, crop:-crop]
    return ys, yh


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """PSNR (dB, inf when equal) on Y of the 8-bit SR output against the HR image, `crop` px cut per border."""
    return psnr_255(*_pair(sr, hr, crop))


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """SSIM on Y of the 8-bit SR output against the HR image, `crop` pixels cut from each border."""
    return ssim_255(*_pair(sr, hr, crop))


def quality(sr: np.ndarray, hr: np.ndarray, scale: int) -> Quality:
    """PSNR and SSIM on Y with the border crop equal to the scale, as SR papers report them."""
    ys, yh = _pair(sr, hr, scale)
    return Quality(psnr_255(ys, yh), ssim_255(ys, yh))
