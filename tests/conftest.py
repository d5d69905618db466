"""Shared fixtures: seeded PyTorch models, their ONNX exports (cached per session), sample images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from tests import architectures
from tests.clitools import PHOTO
from tests.onnx_models import tiny_sr

DATA = Path(__file__).resolve().parents[1] / "onnxlam" / "data"


class ModelZoo:
    """Builds each architecture once and exports it on first use, per exporter."""

    def __init__(self, root: Path):
        self.root = root
        self._torch: dict = {}
        self._onnx: dict = {}

    def torch(self, name: str):
        if name not in self._torch:
            self._torch[name] = architectures.build(name)
        return self._torch[name]

    def onnx(self, name: str, exporter: str) -> Path:
        key = (name, exporter)
        if key not in self._onnx:
            d = self.root / f"{name}-{exporter}"
            d.mkdir(parents=True, exist_ok=True)
            self._onnx[key] = architectures.export_onnx(self.torch(name), d / "model.onnx", exporter)
        return self._onnx[key]


@pytest.fixture(scope="session", autouse=True)
def _private_program_cache(tmp_path_factory):
    """Gradient programs go to a fresh cache per test session: no stale programs from other runs
    or other engine versions, and the user's cache is left alone."""
    old = os.environ.get("ONNXLAM_CACHE")
    os.environ["ONNXLAM_CACHE"] = str(tmp_path_factory.mktemp("onnxlam_cache"))
    yield
    if old is None:
        os.environ.pop("ONNXLAM_CACHE", None)
    else:
        os.environ["ONNXLAM_CACHE"] = old


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> ModelZoo:
    return ModelZoo(tmp_path_factory.mktemp("onnx_models"))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """The bundled astronaut photograph, uint8 H x W x 3."""
    return np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    return np.asarray(Image.open(DATA / "chelsea.png").convert("RGB"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder per test module with tiny networks and photograph crops: a.onnx and b.onnx
    (`tiny_sr(2)`, seeds 0 and 5), images/one.png and images/two.png (64×64). Modules that need more
    override it (`def inputs(inputs)`) and add to this folder."""
    d = tmp_path_factory.mktemp("inputs")
    onnx.save(tiny_sr(2), d / "a.onnx")
    onnx.save(tiny_sr(2, seed=5), d / "b.onnx")
    images = d / "images"
    images.mkdir()
    photo = Image.open(PHOTO)
    photo.crop((40, 40, 104, 104)).save(images / "one.png")  # 64×64
    photo.crop((120, 30, 184, 94)).save(images / "two.png")
    return d
