"""sweep.png: the SR image, the DI heat map beside it, and a colour bar labelled in DI values."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import onnx
import pytest
from PIL import Image

from tests.clitools import run_cli
from tests.onnx_models import tiny_sr
from onnxlam.batch.sweep import Sweep, write_sweep

pytestmark = pytest.mark.integration

GAP = 4  # pictures.panel's default gap between the images


def seismic(values):
    """matplotlib's seismic, as the demo colours maps."""
    return (255 * matplotlib.colormaps["seismic"](values)).astype(np.uint8)[..., :3]


def synthetic(H=64, W=96, stride=16, size=8):
    rng = np.random.default_rng(0)
    xs, ys = np.arange(0, W - size, stride), np.arange(0, H - size, stride)
    di = rng.uniform(3.0, 30.0, (len(ys), len(xs)))
    return Sweep(xs, ys, size, stride, 2, di, rng.uniform(0, 1, (3, H, W)).astype(np.float32))


def test_sweep_picture_has_image_heat_map_and_colour_bar(tmp_path):
    sweep = synthetic()
    H, W = sweep.sr_image.shape[1:]
    write_sweep(sweep, tmp_path)
    png = np.asarray(Image.open(tmp_path / "sweep.png").convert("RGB"))
    # the image on the left, as is (rounded to uint8)
    sr = np.clip(np.rint(sweep.sr_image.transpose(1, 2, 0).astype(np.float64) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(png[:H, :W], sr)
    assert np.all(png[:H, W:W + GAP] == 255)
    # the heat map beside it: the highest-DI window's cell is redder than the lowest's
    heat = png[:H, W + GAP:2 * W + GAP].astype(int)
    (jh, ih), (jl, il) = (np.unravel_index(f(sweep.di), sweep.di.shape) for f in (np.argmax, np.argmin))
    centre = lambda j, i: heat[int(sweep.ys[j] + sweep.size / 2), int(sweep.xs[i] + sweep.size / 2)]  # noqa: E731
    hot, cold = centre(jh, ih), centre(jl, il)
    assert hot[0] - hot[1:].mean() > cold[0] - cold[1:].mean() + 40
    # the colour bar: seismic from the lowest DI (bottom, white) to the highest (top, dark red)
    bar = png[:H, 2 * W + 2 * GAP:]
    assert bar.shape[1] > 30  # bar and labels
    expected = seismic(0.5 + 0.5 * np.linspace(1.0, 0.0, H))
    for column in (0, 7, 13):
        np.testing.assert_array_equal(bar[:, column], expected)
    assert tuple(bar[0, 5]) == (127, 0, 0) and bar[-1, 5].min() >= 250
    # five tick marks (black, right of the bar) at the lowest, highest and three DI values between
    ticks = np.flatnonzero(np.all(bar[:, 15] == 0, axis=1))
    assert len(ticks) == 5 and ticks[0] == 0 and ticks[-1] == H - 1
    labels = bar[:, 20:]
    assert (labels.min(axis=2) < 100).sum() > 50  # the DI labels' text
    # the labels strip under the row
    assert png.shape[0] > H and png.shape[1] == 2 * W + 2 * GAP + bar.shape[1]


def test_constant_di_gets_one_label(tmp_path):
    sweep = synthetic()
    flat = Sweep(sweep.xs, sweep.ys, sweep.size, sweep.stride, 2, np.full_like(sweep.di, 7.5), sweep.sr_image)
    write_sweep(flat, tmp_path)
    png = np.asarray(Image.open(tmp_path / "sweep.png").convert("RGB"))
    H, W = sweep.sr_image.shape[1:]
    bar = png[:H, 2 * W + 2 * GAP:]
    assert len(np.flatnonzero(np.all(bar[:, 15] == 0, axis=1))) == 1


def test_cli_sweep_writes_the_picture(tmp_path):
    onnx.save(tiny_sr(2), tmp_path / "m.onnx")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    out = tmp_path / "sweep"
    done = run_cli("sweep", tmp_path / "m.onnx", tmp_path / "i.png", "--stride", "16", "--size", "8", "--fold", "2",
                   "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    png = np.asarray(Image.open(out / "sweep.png").convert("RGB"))
    assert png.shape[1] > 2 * 48 + 30 and png.shape[0] > 48
    assert len(data["di"]) == 3 and len(data["di"][0]) == 3
