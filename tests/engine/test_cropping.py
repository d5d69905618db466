"""Exact receptive-field cropping: cropped and uncropped LAM agree to float32 precision on local
networks (several architectures, both exporters, windows in the middle and at the borders); global
networks run uncropped unless --context forces a (reported) approximation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests import architectures as arch
import onnxlam
from tests.onnx_models import tiny_sr

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HR = REPO / "onnxlam" / "data" / "astronaut.png"
LR = arch.LR_SIZE


def _compare(model_path, image, window, size, lr, fold=6, expect_crop=True):
    analyzer = onnxlam.Analyzer(model_path)
    cropped = analyzer.run(image, window, size, lr=lr, fold=fold)
    whole = analyzer.run(image, window, size, lr=lr, fold=fold, crop=False)
    crop = cropped.to_json()["crop"]
    if expect_crop:
        assert crop is not None and crop["exact"], crop
        t, l, b, r = crop["box"]
        assert (b - t) * (r - l) < cropped.lr_size[0] * cropped.lr_size[1]
    np.testing.assert_allclose(cropped.attribution, whole.attribution, atol=2e-6, rtol=0)
    scale = float(np.abs(whole.gradient).max())
    np.testing.assert_allclose(cropped.gradient, whole.gradient, atol=1e-5 * scale, rtol=0)
    assert abs(cropped.di - whole.di) < 1e-3
    assert cropped.completeness.attribution_sum == pytest.approx(whole.completeness.attribution_sum,
                                                                  rel=1e-5, abs=1e-6 * scale)
    return cropped


@pytest.mark.parametrize("window", [(30, 34), (0, 0), (100, 102)])
def test_tiny_cnn_crop_is_exact(tmp_path, window):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_sr(2, seed=5), path)
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(HR))[:240, :240]
    _compare(path, image, window, 16, lr=False)


@pytest.mark.parametrize("name", [pytest.param("edsr", marks=pytest.mark.slow),  # fsrcnn fast: the suite's time
                                  pytest.param("rrdb", marks=pytest.mark.slow), "fsrcnn"])
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_reference_architectures_crop_exact(zoo, astronaut, name, exporter):
    """Local architectures of the parity suite on a larger LR image than their export size."""
    path = zoo.onnx(name, exporter)
    s = arch.scale_of(name)
    if exporter == "dynamo":  # fixed 16×16 input: cropping is not possible, and must not be tried
        lr = (astronaut[:LR * s:s, :LR * s:s]).copy()
        res = onnxlam.Analyzer(path).run(lr, (2, 2), 8, lr=True, fold=4)
        assert res.to_json()["crop"] is None
        return
    lr = np.ascontiguousarray(astronaut[100:100 + 48, 120:120 + 48])
    H = 48 * s
    for window in [(4, 6), (H // 2, H // 2 - 5), (H - 18, H - 17)]:
        _compare(path, lr, window, 8, lr=True, fold=4)


def test_global_network_runs_uncropped_unless_context(zoo, astronaut):
    path = zoo.onnx("rcan", "torchscript")
    lr = np.ascontiguousarray(astronaut[100:148, 120:168])
    analyzer = onnxlam.Analyzer(path)
    assert analyzer.receptive_field.global_
    whole = analyzer.run(lr, (40, 40), 8, lr=True, fold=4)
    assert whole.to_json()["crop"] is None
    approx = analyzer.run(lr, (40, 40), 8, lr=True, fold=4, context=6)
    crop = approx.to_json()["crop"]
    assert crop["exact"] is False and crop["context"] == 6
    t, l, b, r = crop["box"]
    assert np.all(approx.attribution[:t] == 0) and np.all(approx.attribution[:, r:] == 0)


def test_bundled_model_crop_is_exact_and_reported():
    res = _compare(REPO / "exported_models" / "animevideov3-x4.onnx", HR, (120, 72), 16, lr=False, fold=3)
    rf = res.to_json()["receptive_field"]
    assert rf["global"] is False and rf["reach"] == {"top": 18, "bottom": 18, "left": 18, "right": 18}


def test_cli_context_and_no_crop(tmp_path):
    from PIL import Image

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    model = REPO / "exported_models" / "span-x4.onnx"
    hr = tmp_path / "hr.png"  # 160×160 (LR 40×40): the uncropped run stays small
    Image.open(HR).crop((0, 0, 160, 160)).save(hr)
    cmd = [sys.executable, "-m", "onnxlam", "lam", str(model), str(hr), "--window", "20", "20", "--fold", "3",
           "--json"]
    a = subprocess.run(cmd + ["--out", str(tmp_path / "a")], capture_output=True, text=True, env=env)
    b = subprocess.run(cmd + ["--no-crop", "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["crop"]["exact"] is True and jb["crop"] is None
    assert abs(ja["di"] - jb["di"]) < 1e-4
    bad = subprocess.run(cmd + ["--context", "-1", "--out", str(tmp_path / "c")], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "--context" in bad.stderr
