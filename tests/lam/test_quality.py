"""PSNR and SSIM on Y (onnxlam.lam.quality) against scikit-image, a PyTorch transcription of BasicSR's
formulas written here, and hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from onnxlam.core.errors import InputError
from onnxlam.lam import quality as q


# --------------------------------------------------------------------------- references
def basicsr_8bit(image: np.ndarray) -> np.ndarray:
    """tensor2img: the float32 tensor clamped to [0, 1], ×255 and rounded (NumPy: half to even)."""
    t = torch.from_numpy(np.asarray(image, np.float32)).clamp(0, 1)
    return (t.numpy() * 255.0).round()


def basicsr_y(image: np.ndarray) -> torch.Tensor:
    """to_y_channel on the 8-bit image in BGR order, HWC, on 0..255, in float64 (BasicSR: float32)."""
    bgr = torch.from_numpy(basicsr_8bit(image)[::-1].copy()).permute(1, 2, 0).double()
    ycbcr = (bgr / 255.0) @ torch.tensor([24.966, 128.553, 65.481], dtype=torch.float64) + 16.0
    return ycbcr / 255.0 * 255.0


def basicsr_psnr(y1: torch.Tensor, y2: torch.Tensor) -> float:
    mse = torch.mean((y1 - y2) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 * 255.0 / mse)


def basicsr_ssim(y1: torch.Tensor, y2: torch.Tensor) -> float:
    """`_ssim` with cv2.filter2D(...)[5:-5, 5:-5] written as a 'valid' conv2d of the 11×11 Gaussian."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    i = torch.arange(11, dtype=torch.float64) - 5
    k = torch.exp(-i * i / (2 * 1.5**2))
    k = k / k.sum()
    window = torch.outer(k, k)[None, None]

    def filt(a):
        return F.conv2d(a[None, None], window)[0, 0]   # padding 0: the window inside the image only

    mu1, mu2 = filt(y1), filt(y2)
    s1 = filt(y1 * y1) - mu1**2
    s2 = filt(y2 * y2) - mu2**2
    s12 = filt(y1 * y2) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return ssim_map.mean().item()


@pytest.fixture(scope="module")
def pair(chelsea):
    """An HR crop (3×48×64, 8-bit values /255) and an 'SR output': HR plus noise, partly out of [0, 1]."""
    hr = np.moveaxis(chelsea[100:148, 150:214], 2, 0).astype(np.float32) / 255.0
    rng = np.random.default_rng(3)
    sr = (hr + rng.normal(0, 0.03, hr.shape)).astype(np.float32)
    sr[:, 0, :5] = 1.2
    sr[:, 1, :5] = -0.1
    return sr, hr


def crop(a, c):
    return a[c:-c, c:-c] if c else a


# --------------------------------------------------------------------------- independent references
@pytest.mark.parametrize("border", [0, 2, 4])
def test_psnr_matches_basicsr_transcription_and_skimage(pair, border):
    sr, hr = pair
    ys, yh = crop(basicsr_y(sr), border), crop(basicsr_y(hr), border)
    got = q.psnr_y(sr, hr, border)
    assert got == pytest.approx(basicsr_psnr(ys, yh), abs=1e-9)
    assert got == pytest.approx(peak_signal_noise_ratio(yh.numpy(), ys.numpy(), data_range=255), abs=1e-9)
    assert 20 < got < 40


@pytest.mark.parametrize("border", [0, 3])
def test_ssim_matches_basicsr_transcription_and_skimage(pair, border):
    """skimage filters with reflect borders but averages only S[5:-5, 5:-5], where the window lies
    inside the image: its mean is BasicSR's 'valid' mean, so they agree to rounding (1e-10)."""
    sr, hr = pair
    ys, yh = crop(basicsr_y(sr), border), crop(basicsr_y(hr), border)
    got = q.ssim_y(sr, hr, border)
    assert got == pytest.approx(basicsr_ssim(ys, yh), abs=1e-10)
    sk = structural_similarity(ys.numpy(), yh.numpy(), gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=255)
    assert got == pytest.approx(sk, abs=1e-10)
    assert 0.3 < got < 1


def test_quality_is_psnr_and_ssim_with_the_scale_as_crop(pair):
    sr, hr = pair
    result = q.quality(sr, hr, 4)
    assert result == q.Quality(q.psnr_y(sr, hr, 4), q.ssim_y(sr, hr, 4))
    assert result.to_json() == {"psnr": result.psnr, "ssim": result.ssim}


def test_basicsr_float32_y_moves_psnr_by_under_1e_4_db(pair):
    """BasicSR keeps Y in float32; onnxlam in float64. The difference is far below a table's 0.01 dB."""
    sr, hr = pair

    def y32(image):
        bgr = basicsr_8bit(image)[::-1].transpose(1, 2, 0).astype(np.float32) / 255.0
        return ((np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0) / 255.0).astype(np.float32) * np.float32(255)

    mse = np.mean((y32(sr).astype(np.float64) - y32(hr)) ** 2)
    assert q.psnr_y(sr, hr, 0) == pytest.approx(10 * np.log10(255.0**2 / mse), abs=1e-4)


# --------------------------------------------------------------------------- known values
def test_identical_images_give_infinite_psnr_and_ssim_one(pair):
    _, hr = pair
    assert q.psnr_y(hr, hr.copy(), 2) == float("inf")
    assert q.ssim_y(hr, hr.copy(), 2) == pytest.approx(1.0, abs=1e-12)
    assert q.quality(hr, hr, 2).to_json()["psnr"] is None   # JSON has no infinity


def test_one_gray_level_offset_on_y_is_20_log10_255():
    y = np.random.default_rng(0).uniform(16, 200, (20, 20)).round()
    assert q.psnr_255(y, y + 1) == pytest.approx(20 * math.log10(255), rel=1e-15)


def test_one_gray_level_on_every_channel_moves_y_by_219_over_255():
    """ΔY = (65.481 + 128.553 + 24.966) / 255 = 219/255 per gray level of R, G and B together."""
    hr = np.full((3, 16, 16), 100 / 255, np.float32)
    sr = np.full((3, 16, 16), 101 / 255, np.float32)
    assert q.psnr_y(sr, hr, 0) == pytest.approx(20 * math.log10(255 * 255 / 219), rel=1e-12)
    assert q.rgb_to_y(np.zeros((3, 1, 1)))[0, 0] == 16.0
    assert q.rgb_to_y(np.ones((3, 1, 1)))[0, 0] == pytest.approx(235.0, abs=1e-12)


def test_grey_image_is_its_own_y():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (1, 20, 20)) / 255.0
    sr = rng.integers(0, 256, (1, 20, 20)) / 255.0
    assert q.psnr_y(sr, hr, 1) == pytest.approx(
        peak_signal_noise_ratio(hr[0, 1:-1, 1:-1] * 255, sr[0, 1:-1, 1:-1] * 255, data_range=255), abs=1e-9)


# --------------------------------------------------------------------------- crop and rounding
def test_crop_ignores_differences_in_the_border():
    hr = np.full((3, 20, 20), 0.5, np.float32)
    sr = hr.copy()
    sr[:, :3, :] = 0.0
    sr[:, :, -3:] = 1.0
    assert q.psnr_y(sr, hr, 3) == float("inf")
    assert math.isfinite(q.psnr_y(sr, hr, 2))


def test_rounding_to_8_bits():
    levels = np.arange(256) / 255.0
    assert np.array_equal(q.to_8bit(levels - 0.49 / 255), np.clip(np.arange(256), 0, 255))
    assert np.array_equal(q.to_8bit(levels[:-1] + 0.49 / 255), np.arange(255))
    assert np.array_equal(q.to_8bit(levels[:-1] + 0.51 / 255), np.arange(1, 256))
    assert np.array_equal(q.to_8bit(np.array([-0.3, 1.7])), [0, 255])
    assert q.to_8bit(levels).dtype == np.uint8


def test_exact_halves_round_to_even():
    """Where x·255 is exactly k + ½ in float32, NumPy's round (BasicSR's) goes to the even neighbour."""
    candidates = np.float32((np.arange(255) + 0.5) / 255)
    halves = candidates[candidates * np.float32(255) == np.arange(255) + 0.5]
    assert halves.size > 20
    expected = [int(k) + (int(k) % 2) for k in np.floor(halves.astype(np.float64) * 255 + 1e-9)]
    assert q.to_8bit(halves).tolist() == expected


def test_sub_half_level_noise_leaves_psnr_infinite(pair):
    _, hr = pair
    assert q.psnr_y(hr + np.float32(0.45 / 255), hr, 0) == float("inf")
    assert math.isfinite(q.psnr_y(hr + np.float32(0.55 / 255), hr, 0))


# --------------------------------------------------------------------------- errors
def test_shape_mismatch_is_one_line_naming_both_shapes():
    with pytest.raises(InputError) as err:
        q.quality(np.zeros((3, 64, 64)), np.zeros((3, 65, 64)), 4)
    text = str(err.value)
    assert "\n" not in text and "(3, 64, 64)" in text and "(3, 65, 64)" in text and "multiple of the scale" in text


def test_too_small_for_ssim_or_crop():
    with pytest.raises(InputError, match="at least 11"):
        q.ssim_y(np.zeros((3, 14, 14)), np.zeros((3, 14, 14)), 2)
    with pytest.raises(InputError, match="crop"):
        q.psnr_y(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)), 4)
