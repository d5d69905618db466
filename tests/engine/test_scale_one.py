"""×1 restoration models (denoising, deblurring): the image is the model's input as is.

At scale 1 spec §1's crop and bicubic ×1/s do nothing, and onnxlam must not resample: the LR input
is the given image exactly, with or without `--lr`, and the map equals the independent PyTorch LAM.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from tests import architectures as arch
from tests import torch_reference as ref
from tests.clitools import run_cli

import onnxlam

pytestmark = pytest.mark.integration

SIDE = 24


class DnCNNLike(nn.Module):
    """DnCNN (Zhang et al., TIP 2017) in miniature: conv-ReLU, conv-BN-ReLU ×2, conv; residual x − n."""

    scale = 1

    def __init__(self, nf: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, nf, 3, padding=1), nn.ReLU(),
            nn.Conv2d(nf, nf, 3, padding=1), nn.BatchNorm2d(nf), nn.ReLU(),
            nn.Conv2d(nf, nf, 3, padding=1), nn.BatchNorm2d(nf), nn.ReLU(),
            nn.Conv2d(nf, 3, 3, padding=1))

    def forward(self, x):
        return x - self.body(x)


@pytest.fixture(scope="module")
def dncnn(tmp_path_factory):
    torch.manual_seed(11)
    net = DnCNNLike()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    net.eval()
    root = tmp_path_factory.mktemp("dncnn")
    return net, {e: arch.export_onnx(net, root / f"dncnn-{e}.onnx", e, lr_size=SIDE) for e in arch.EXPORTERS}


def _noisy(astronaut) -> np.ndarray:
    crop = astronaut[120: 120 + SIDE, 90: 90 + SIDE].astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 12, crop.shape)
    return np.clip(np.round(crop + noise), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("exporter", arch.EXPORTERS)
def test_scale_one_uses_the_image_as_is_and_matches_the_reference(dncnn, astronaut, exporter):
    net, files = dncnn
    image = _noisy(astronaut)
    x = np.ascontiguousarray(np.moveaxis(image, 2, 0)).astype(np.float32) / 255.0
    wx, wy, size = 6, 5, 12
    res = onnxlam.analyze(files[exporter], image, window=(wx, wy), size=size, fold=8)  # an "HR" image, no --lr
    assert res.scale == 1 and tuple(res.lr_size) == (SIDE, SIDE)
    np.testing.assert_array_equal(res.lr_image, x)  # no downsampling, no resampling
    np.testing.assert_array_equal(res.hr_image, x)
    r = ref.reference_lam(net, x, wx, wy, size, "blur", 1.2, 8, 9)
    np.testing.assert_allclose(res.sr_image, r["sr"], rtol=0, atol=1e-5)
    assert float(np.abs(res.attribution - r["M"]).max()) <= 1e-4
    assert abs(res.di - r["di"]) <= 0.01
    # --lr gives the same analysis at scale 1
    same = onnxlam.analyze(files[exporter], image, window=(wx, wy), size=size, fold=8, lr=True)
    np.testing.assert_array_equal(same.attribution, res.attribution)


def test_scale_one_on_the_command_line(dncnn, astronaut, tmp_path):
    from PIL import Image

    _, files = dncnn
    image = tmp_path / "noisy.png"
    Image.fromarray(_noisy(astronaut)).save(image)
    r = run_cli("lam", files["torchscript"], image, "--window", 6, 5, "--size", 12, "--fold", 4, "--json",
                "--out", tmp_path / "lam")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["scale"] == 1 and data["lr_size"] == [SIDE, SIDE] and data["sr_size"] == [SIDE, SIDE]
