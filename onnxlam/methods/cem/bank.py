"""The patch bank CEM's interventions draw from, and the seeded draws of one run (§2 of docs/CEM-SPEC.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from onnxlam.core.errors import InputError
from onnxlam.methods.cem.effects import as_uint8
from onnxlam.methods.cem.result import Draw

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def bundled_photos() -> list[Path]:
    """The photographs bundled with onnxlam (the default patch bank's source)."""
    return sorted((Path(__file__).resolve().parents[2] / "data").glob("*.png"))


def load_bank_images(folder: str | Path | None, channels: int) -> tuple[list[np.ndarray], str]:
    """The images patches are cut from: every image file in `folder` (sorted by name), else the bundled photos."""
    from onnxlam.lam import image as images

    if folder is None:
        files, source = bundled_photos(), "bundled"
    else:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"--patches {folder}: not a folder; give a folder of images to cut patches from")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        source = str(folder)
        if not files:
            raise InputError(f"--patches {folder}: no images (PNG, JPEG, BMP, TIFF, WebP) in the folder")
    return [as_uint8(images.match_channels(images.read_image(f), channels)) for f in files], source


def cut_bank(sources: Sequence[np.ndarray], size: int, block: int, seed: int) -> np.ndarray:
    """`size` block×block patches at seeded uniform positions: image index, then top, then left, from
    RandomState([seed, 1]) (a stream apart from the draws'). Returns size×block×block×C uint8."""
    usable = [s for s in sources if s.shape[0] >= block and s.shape[1] >= block]
    if not usable:
        raise InputError(f"no patch-bank image is at least {block}×{block} pixels")
    rng = np.random.RandomState([seed, 1])
    which = rng.randint(len(usable), size=size)
    u = rng.random_sample((size, 2))
    bank = np.empty((size, block, block, usable[0].shape[2]), np.uint8)
    for n, (k, (a, b)) in enumerate(zip(which, u)):
        img = usable[k]
        top, left = int(a * (img.shape[0] - block + 1)), int(b * (img.shape[1] - block + 1))
        bank[n] = img[top:top + block, left:left + block]
    return bank


class SeededDraws:
    """The draws of one run from RandomState(seed): the DN input noise first (the public code's
    `np.random.seed(0)`, so seed 0 gives its degraded input), then per intervention, in the order the
    passes ask (coarse: blocks row-major, k inner; then fine likewise), a bank index and for DN the
    patch's noise N(0, σ/255)^(b×b×C)."""

    def __init__(self, bank: np.ndarray, seed: int, sigma: float | None, side: int):
        self.bank, self.sigma, self.side = bank, sigma, side
        self.rng = np.random.RandomState(seed)
        self.indices: list[int] = []

    def input_noise(self, shape: tuple) -> np.ndarray:
        return self.rng.normal(0, self.sigma / 255, shape)

    def __call__(self, phase: str, i: int, j: int, k: int) -> Draw:
        index = int(self.rng.randint(len(self.bank)))
        self.indices.append(index)
        noise = None
        if self.sigma is not None:
            noise = self.rng.normal(0, self.sigma / 255, (self.side, self.side, self.bank.shape[3]))
        return Draw(self.bank[index], noise)
