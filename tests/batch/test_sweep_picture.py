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


def viridis(values):
    """matplotlib's viridis, the perceptual colour map the heat map uses."""
    return (255 * np.asarray(matplotlib.colormaps["viridis"](np.asarray(values, np.float64)))).astype(np.uint8)[..., :3]


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
    # the heat map beside it: at each window's centre, viridis of its DI (lowest 0, highest 1) blended
    # 65:35 with the image
    heat = png[:H, W + GAP:2 * W + GAP].astype(int)
    low, high = sweep.di.min(), sweep.di.max()
    for j, wy in enumerate(sweep.ys):
        for i, wx in enumerate(sweep.xs):
            r, c = int(wy + sweep.size / 2), int(wx + sweep.size / 2)
            expected = viridis((sweep.di[j, i] - low) / (high - low)) * 0.65 + sr[r, c] * 0.35
            assert np.abs(heat[r, c] - expected).max() <= 1
    # the lowest DI is dark (viridis' purple), not the white of the gaps between pictures
    assert viridis(0.0).max() < 90
    # what no window's cell covers (the last rows and columns: centres stop short of the border) is
    # hatched: greyed, with dark diagonal lines; covered pixels never are
    covered = np.zeros((H, W), bool)
    for wy in sweep.ys:
        for wx in sweep.xs:
            cy, cx = wy + sweep.size / 2, wx + sweep.size / 2
            covered[int(max(0, cy - 8)):int(cy + 8), int(max(0, cx - 8)):int(cx + 8)] = True
    assert (~covered).sum() > 0
    rows, cols = np.indices((H, W))
    lines = ~covered & ((rows + cols) % 6 == 0)
    assert np.all(heat[lines] == 60)
    grey = ~covered & ~lines
    np.testing.assert_allclose(heat[grey], 0.35 * sr[grey] + 0.65 * 200, atol=1)
    # the colour bar: viridis from the lowest DI (bottom) to the highest (top)
    bar = png[:H, 2 * W + 2 * GAP:]
    assert bar.shape[1] > 30  # bar and labels
    expected = viridis(np.linspace(1.0, 0.0, H))
    for column in (0, 7, 13):
        np.testing.assert_array_equal(bar[:, column], expected)
    # five tick marks (black, right of the bar) at the lowest, highest and three DI values between
    ticks = np.flatnonzero(np.all(bar[:, 15] == 0, axis=1))
    assert len(ticks) == 5 and ticks[0] == 0 and ticks[-1] == H - 1
    labels = bar[:, 20:]
    assert (labels.min(axis=2) < 100).sum() > 50  # the DI labels' text
    # the labels strip under the row
    assert png.shape[0] > H and png.shape[1] == 2 * W + 2 * GAP + bar.shape[1]


def test_hard_window_sweep_paints_each_window_and_hatches_the_rest(tmp_path):
    sweep = synthetic()
    H, W = sweep.sr_image.shape[1:]
    hard = Sweep(np.array([8, 50]), np.array([4, 30]), 16, 0, 2, np.array([5.0, 9.0]), sweep.sr_image, hard=True)
    write_sweep(hard, tmp_path)
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["kind"] == "hard" and data["windows"] == [{"x": 8, "y": 4, "size": 16, "di": 5.0},
                                                          {"x": 50, "y": 30, "size": 16, "di": 9.0}]
    png = np.asarray(Image.open(tmp_path / "sweep.png").convert("RGB"))
    sr = np.clip(np.rint(sweep.sr_image.transpose(1, 2, 0).astype(np.float64) * 255), 0, 255).astype(np.uint8)
    heat = png[:H, W + GAP:2 * W + GAP].astype(int)
    for (x, y), v in (((8, 4), 0.0), ((50, 30), 1.0)):
        patch = heat[y:y + 16, x:x + 16]
        np.testing.assert_allclose(patch, viridis(v) * 0.65 + sr[y:y + 16, x:x + 16] * 0.35, atol=1)
    outside = np.ones((H, W), bool)
    outside[4:20, 8:24] = outside[30:46, 50:66] = False
    rows, cols = np.indices((H, W))
    assert np.all(heat[outside & ((rows + cols) % 6 == 0)] == 60)


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


def test_cli_sweep_of_the_hard_windows_equals_lam_of_them(tmp_path):
    """`sweep --windows hard:K` takes the windows `lam --windows hard:K` takes, and gives each the DI of
    its own `lam` run."""
    onnx.save(tiny_sr(2), tmp_path / "m.onnx")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    done = run_cli("sweep", tmp_path / "m.onnx", tmp_path / "i.png", "--windows", "hard:3", "--size", "8",
                   "--fold", "2", "--out", tmp_path / "sweep", "--json")
    assert done.returncode == 0, done.stderr
    swept = json.loads(done.stdout)
    assert swept["kind"] == "hard" and len(swept["windows"]) == 3
    lam = run_cli("lam", tmp_path / "m.onnx", tmp_path / "i.png", "--windows", "hard:3", "--size", "8", "--fold", "2",
                  "--out", tmp_path / "lam", "--json")
    assert lam.returncode == 0, lam.stderr
    ran = json.loads(lam.stdout)
    ran = ran if isinstance(ran, list) else ran["windows"]
    got = [(w["x"], w["y"], w["di"]) for w in swept["windows"]]
    want = [(r["window"]["x"], r["window"]["y"], r["di"]) for r in ran]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=1e-9)


def test_cli_sweep_needs_a_stride_or_hard_windows(tmp_path):
    onnx.save(tiny_sr(2), tmp_path / "m.onnx")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(tmp_path / "i.png")
    for extra in ([], ["--stride", "16", "--windows", "hard:2"]):
        done = run_cli("sweep", tmp_path / "m.onnx", tmp_path / "i.png", *extra, "--out", tmp_path / "s")
        assert done.returncode != 0 and "--stride N" in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "s").exists()
