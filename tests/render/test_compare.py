"""Comparison figure and attribution difference: the pure picture functions and the commands."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from tests.onnx_models import tiny_sr
from onnxlam.render import pictures
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.render.figures import (COLUMNS, comparison_figure, difference_picture, kde_difference, row_pictures)
from onnxlam.core.errors import InputError

from tests.clitools import PHOTO, run_cli

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare_inputs")
    onnx.save(tiny_sr(2), d / "a.onnx")
    onnx.save(tiny_sr(2, seed=4), d / "b.onnx")
    onnx.save(tiny_sr(3, seed=1), d / "x3.onnx")
    Image.open(PHOTO).crop((40, 40, 112, 112)).save(d / "hr.png")  # 72×72: a multiple of 2 and 3
    return d


@pytest.fixture(scope="module")
def results(inputs):
    return [Analyzer(inputs / name).run(inputs / "hr.png", (20, 24), fold=4) for name in ("a.onnx", "b.onnx")]


def test_row_pictures_are_the_papers_columns(results):
    r = results[0]
    row = row_pictures(r)
    assert len(row) == len(COLUMNS) == 5
    assert all(p.shape == (72, 72, 3) and p.dtype == np.uint8 for p in row)
    np.testing.assert_array_equal(row[1], pictures.lam_picture(r.attribution, 2))
    sr = np.clip(r.sr_image.transpose(1, 2, 0), 0, 1)
    crop = pictures.crop_window(pictures.to_uint8(sr), 20, 24, 16, zoom=72)
    np.testing.assert_array_equal(row[4], crop)


def test_comparison_figure_has_one_row_per_model(results):
    figure = comparison_figure(results, ["model A", "model B"])
    assert figure.dtype == np.uint8 and figure.ndim == 3
    h, w = figure.shape[:2]
    assert w > 5 * 72 and 2 * 72 < h < 2 * 72 + 80
    # Each row's LAM picture is pasted unchanged somewhere in the figure, the rows one above the other.
    for row, result in enumerate(results):
        lam = pictures.lam_picture(result.attribution, 2)
        hits = [(y, x) for y in range(h - 71) for x in range(w - 71)
                if figure[y, x, 0] == lam[0, 0, 0] and np.array_equal(figure[y:y + 72, x:x + 72], lam)]
        assert hits, f"row {row}: LAM picture not found"
    with pytest.raises(ValueError):
        comparison_figure(results, ["only one name"])


def test_kde_difference_is_antisymmetric_and_zero_for_the_same_map(results):
    a, b = results
    d = kde_difference(a, b)
    assert d.shape == a.attribution.shape and np.abs(d).max() <= 1.0
    np.testing.assert_allclose(kde_difference(b, a), -d)
    np.testing.assert_array_equal(kde_difference(a, a), 0)
    white = difference_picture(kde_difference(a, a), 2)
    assert white.shape == (72, 72, 3) and (white == pictures.seismic(np.array([0.5]))[0]).all()
    picture = difference_picture(d, 2)
    assert picture.shape == (72, 72, 3)
    # Red where A is denser than B, blue where B is.
    y, x = np.unravel_index(np.argmax(d), d.shape)
    red = picture[2 * y, 2 * x]
    assert red[0] > red[2]
    y, x = np.unravel_index(np.argmin(d), d.shape)
    blue = picture[2 * y, 2 * x]
    assert blue[2] > blue[0]


def test_difference_needs_the_same_scale(inputs, results):
    x3 = Analyzer(inputs / "x3.onnx").run(inputs / "hr.png", (20, 24), fold=3)
    with pytest.raises(InputError, match="different scales"):
        kde_difference(results[0], x3)


def test_compare_command_writes_one_png(inputs, tmp_path):
    out = tmp_path / "figure.png"
    r = run_cli("compare", inputs / "a.onnx", inputs / "b.onnx", inputs / "x3.onnx", inputs / "hr.png",
                "--window", 20, 24, "--fold", 3, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [m["name"] for m in data["models"]] == ["a", "b", "x3"] and [m["scale"] for m in data["models"]] == [2, 2, 3]
    assert all("pixels_90" in m["range"] for m in data["models"])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.height > 3 * 72
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]  # no temporary left behind
    r = run_cli("compare", inputs / "a.onnx", inputs / "hr.png", "--window", 20, 24, "--fold", 3, "-o", out,
                "--name", "one", "--name", "two")
    assert r.returncode == 2 and "--name" in r.stderr
    r = run_cli("compare", inputs / "a.onnx", inputs / "hr.png", "--window", 20, 24, "-o", tmp_path / "f.txt")
    assert r.returncode == 2 and "picture file" in r.stderr


def test_diff_command(inputs, tmp_path):
    out = tmp_path / "d.png"
    r = run_cli("diff", inputs / "a.onnx", inputs / "b.onnx", inputs / "hr.png", "--window", 20, 24,
                "--fold", 3, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "red: A higher" in r.stdout
    with Image.open(out) as im:
        assert im.size[0] > 4 * 72 and im.size[1] > 4 * 72  # 72×72 enlarged ×4, the colour bar, captions
    r = run_cli("diff", inputs / "a.onnx", inputs / "x3.onnx", inputs / "hr.png", "--window", 20, 24,
                "--fold", 3, "-o", tmp_path / "e.png")
    assert r.returncode == 2 and "different scales" in r.stderr
    assert not (tmp_path / "e.png").exists()


def test_max_memory_reaches_every_model(inputs, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from onnxlam.cli import app

    limits, original = [], Analyzer.run_windows
    monkeypatch.setattr(Analyzer, "run_windows", lambda self, *a, **k: limits.append(self.max_memory) or
                        original(self, *a, **k))
    common = [str(inputs / "hr.png"), "--window", "20", "24", "--fold", "2"]
    r = CliRunner().invoke(app, ["compare", str(inputs / "a.onnx"), str(inputs / "b.onnx"), *common,
                                 "--max-memory", "2G", "-o", str(tmp_path / "c.png")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["diff", str(inputs / "a.onnx"), str(inputs / "b.onnx"), *common,
                                 "--max-memory", "3000000000", "-o", str(tmp_path / "d.png")])
    assert r.exit_code == 0, r.output
    assert limits == [2 << 30] * 2 + [3_000_000_000] * 2


@pytest.mark.parametrize("command", ["compare", "diff"])
def test_bad_max_memory_is_a_usage_error(command, inputs, tmp_path):
    r = run_cli(command, inputs / "a.onnx", inputs / "b.onnx", inputs / "hr.png", "--window", 20, 24,
                "--max-memory", "24Q", "-o", tmp_path / "x.png")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "--max-memory" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_difference_figure_lays_the_difference_over_the_image(results):
    from onnxlam.render.figures import difference_figure

    a, b = results
    d = kde_difference(a, b)
    figure = difference_figure(d, a, ["a", "b"])
    zoom = -(-256 // 72)  # enlarged so that the captions fit
    over = figure[:72 * zoom:zoom, :72 * zoom:zoom].astype(int)
    sr = pictures.rgb(a.sr_image).astype(int)
    colour = difference_picture(d, 2).astype(int)
    peak = np.abs(d).max()
    # where the densities differ most, the signed colour; where they agree, the SR image itself (the
    # window's outline aside)
    outline = pictures.draw_window(np.full((72, 72, 3), 255, np.uint8), 20, 24, 16, colour=(0, 0, 0))[..., 0] == 0
    up = np.kron(d, np.ones((2, 2)))
    free = ~outline
    y, x = np.unravel_index(np.argmax(np.where(free, up, -np.inf)), up.shape)
    redness = lambda p: p[0] - p[2]  # noqa: E731
    assert colour[y, x][0] > 200 and redness(over[y, x]) > redness(sr[y, x]) + 30
    y, x = np.unravel_index(np.argmin(np.where(free, up, np.inf)), up.shape)
    assert redness(over[y, x]) < redness(sr[y, x]) - 30
    from scipy.ndimage import maximum_filter

    calm = free & (maximum_filter(np.abs(up), size=5) < 1e-5 * peak)  # its neighbourhood agrees too
    assert calm.any()
    for y, x in zip(*np.nonzero(calm)):
        assert np.abs(over[y, x] - sr[y, x]).max() <= 3
    # the window outlined in black, and the colour bar (red at the top, blue at the bottom) beside
    assert (over[24, 20:37] == 0).all()
    bar = figure[:72 * zoom, 72 * zoom + 4:72 * zoom + 4 + 14]
    assert bar[0, 5, 0] > 100 and bar[0, 5, 2] < 50 and bar[-1, 5, 2] > 60 and bar[-1, 5, 0] < 50
    assert figure.shape[0] > 72 * zoom  # the captions under the row
