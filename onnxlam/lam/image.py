"""Reading images and preparing the LR input (spec §1).

Images travel as arrays H×W×C (uint8, uint16, or float32 already in [0, 1]; C = 1 or 3) until they
are prepared for a model, and as float32 C×h×w in [0, 1] after that.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from onnxlam.core.errors import InputError

LUMA_BT601 = np.array([0.299, 0.587, 0.114])


def read_image(path: str | Path) -> np.ndarray:
    """An image file as H×W×C (C = 1 or 3), uint8 or uint16; alpha is dropped, palettes expanded."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return _pixels(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}; use PNG, JPEG, BMP, TIFF or WebP") from None


def _pixels(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im, dtype=np.uint16)[..., None]
    if im.mode in ("I", "F"):
        # 32-bit integer or float greyscale: TIFFs from scientific pipelines; treated as 16-bit data.
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F" and a.max() <= 1.0:
            a = a * 65535.0
        return np.clip(np.rint(a), 0, 65535).astype(np.uint16)[..., None]
    if im.mode in ("1", "L", "LA", "P;L"):
        return np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def from_array(image: np.ndarray) -> np.ndarray:
    """A user's numpy image (H×W or H×W×C; uint8, uint16 or float in [0, 1]) in read_image's form."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise InputError(f"an image array must be H×W, H×W×1, H×W×3 or H×W×4; got shape {a.shape}")
    a = a[..., :3] if a.shape[2] == 4 else a
    if a.dtype in (np.uint8, np.uint16):
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InputError("the image array holds NaN or inf")
        return a.astype(np.float32)
    raise InputError(f"unsupported image array dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grey expanded to RGB for 3-channel models; RGB to BT.601 luma for 1-channel models."""
    have = image.shape[2]
    if have == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    if image.dtype == np.uint8:
        # Pillow's "L" conversion is BT.601 luma, rounded: the uint8 pipeline stays uint8.
        return np.asarray(Image.fromarray(image).convert("L"))[..., None]
    luma = np.asarray(image, dtype=np.float64) @ LUMA_BT601
    if image.dtype == np.uint16:
        return np.clip(np.rint(luma), 0, 65535).astype(np.uint16)[..., None]
    return luma.astype(np.float32)[..., None]


def _full_scale(image: np.ndarray) -> float:
    return {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)


def to_unit(image: np.ndarray) -> np.ndarray:
    """H×W×C integer image → float32 C×H×W in [0, 1]."""
    return (np.asarray(image, dtype=np.float32) / np.float32(_full_scale(image))).transpose(2, 0, 1).copy()


def prepare_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """Spec §1: crop to a multiple of `scale` from the top-left, bicubic ×1/scale (Pillow), to [0, 1].

    uint8 images go through Pillow's uint8 bicubic exactly as the authors' demo; uint16 and float
    images are resized per channel in Pillow's float mode so no precision is lost. At scale 1
    (denoising, deblurring) the image is used as is.
    """
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    if h < scale or w < scale:
        raise InputError(f"the HR image ({hr.shape[1]}×{hr.shape[0]}) is smaller than the scale {scale}")
    hr = hr[:h, :w]
    if scale == 1:  # a restoration (×1) model: the image is its input as is, no resampling
        return np.clip(to_unit(hr), 0.0, 1.0).astype(np.float32)
    size = (w // scale, h // scale)
    if hr.dtype == np.uint8:
        im = Image.fromarray(hr[..., 0] if hr.shape[2] == 1 else hr)
        lr = np.asarray(im.resize(size, Image.BICUBIC), dtype=np.float32)
        lr = lr[..., None] if lr.ndim == 2 else lr
        return (lr / np.float32(255.0)).transpose(2, 0, 1).copy()
    planes = [np.asarray(Image.fromarray(hr[..., c].astype(np.float32)).resize(size, Image.BICUBIC))
              for c in range(hr.shape[2])]
    return np.clip(np.stack(planes) / np.float32(_full_scale(hr)), 0.0, 1.0).astype(np.float32)


def bundled_photo(name: str = "chelsea") -> Path:
    """One of the photographs shipped in onnxlam/data (chelsea, astronaut, …)."""
    return Path(__file__).resolve().parents[1] / "data" / f"{name}.png"
