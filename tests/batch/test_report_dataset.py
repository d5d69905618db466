"""`onnxlam report`'s dataset level: the SR output's PSNR/SSIM per model and image, hard windows, the
per-model DI with its bootstrap interval, Spearman's ρ between DI and PSNR and finding.png."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests.clitools import run_cli
from tests.onnx_models import tiny_sr
from onnxlam.batch.report import ConfigValues, WindowSpec, run_report

pytestmark = pytest.mark.integration
SCALE = 2


@pytest.fixture(scope="module")
def inputs(inputs):
    """The shared folder with a third model: a rank correlation across models needs three."""
    onnx.save(tiny_sr(SCALE, seed=9), inputs / "c.onnx")
    return inputs


def _models(inputs: Path) -> tuple[str, ...]:
    return tuple(str(inputs / f"{m}.onnx") for m in "abc")


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory):
    """3 models × 2 images × 2 fixed windows, fold 3."""
    out = tmp_path_factory.mktemp("dataset") / "rep"
    values = ConfigValues(models=_models(inputs), images=(str(inputs / "images"),),
                          windows=(WindowSpec(8, 8), WindowSpec(30, 20, 12)), out=out, fold=3)
    run_report(values.resolve())
    return out


def _y(rgb8: np.ndarray) -> np.ndarray:
    """BT.601 Y on 0..255 of an 8-bit H×W×3 picture (the SR papers' test_y_channel)."""
    a = rgb8.astype(np.float64) / 255.0
    return 16.0 + 65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]


def _expected_quality(sr_png: Path, image: Path, crop: int) -> tuple[float, float]:
    sr = np.asarray(Image.open(sr_png).convert("RGB"))
    hr = np.asarray(Image.open(image).convert("RGB"))[:sr.shape[0], :sr.shape[1]]
    ys, yh = _y(sr)[crop:-crop, crop:-crop], _y(hr)[crop:-crop, crop:-crop]
    psnr = peak_signal_noise_ratio(yh, ys, data_range=255)
    ssim = structural_similarity(yh, ys, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return psnr, ssim


def test_rows_carry_the_sr_outputs_psnr_and_ssim(report):
    rows = list(csv.DictReader((report / "results.csv").open()))
    cases = json.loads((report / "results.json").read_text())["cases"]
    assert len(rows) == len(cases) == 12
    for row, case in zip(rows, cases):
        psnr, ssim = _expected_quality(report / row["folder"] / "sr.png", Path(row["image"]), SCALE)
        assert float(row["psnr_y"]) == pytest.approx(psnr, abs=1e-3)
        assert float(row["ssim_y"]) == pytest.approx(ssim, abs=1e-4)
        assert case["psnr_y"] == pytest.approx(psnr, abs=1e-3) and case["ssim_y"] == pytest.approx(ssim, abs=1e-4)
    by_model_image = {}
    for case in cases:  # one SR output per model and image: every window of it shows the same numbers
        by_model_image.setdefault((case["model"], case["image"]), set()).add(case["psnr_y"])
    assert all(len(v) == 1 for v in by_model_image.values()) and len(by_model_image) == 6


def test_lr_inputs_leave_quality_empty_and_say_why(inputs, tmp_path):
    out = tmp_path / "lr"
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", inputs / "images" / "one.png", "--lr",
                "--window", "8", "8", "--fold", "3", "--out", out)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows and all(row["psnr_y"] == "" and row["ssim_y"] == "" for row in rows)
    data = json.loads((out / "results.json").read_text())
    assert all(c["psnr_y"] is None and c["ssim_y"] is None for c in data["cases"])
    assert "no HR image" in (out / "index.html").read_text()


def _brute_force_hard(image: Path, size: int, k: int) -> list[tuple[int, int, float]]:
    """The K hardest windows by the definition: every candidate of the stride-size//2 grid inside the
    image, its LAM detector sum on the HR image, greedy non-overlapping picks, ties by (y, x)."""
    hr = np.asarray(Image.open(image).convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255.0
    _, height, width = hr.shape
    dh = (hr[:, :-1, :] - hr[:, 1:, :]) ** 2
    dw = (hr[:, :, :-1] - hr[:, :, 1:]) ** 2
    g = np.sqrt(dh[:, :, :-1] + dw[:, :-1, :])
    step = size // 2
    candidates = []
    for y in range(0, height - size, step):  # y ≤ H − 1 − size
        for x in range(0, width - size, step):
            total = 0.0
            for c in range(g.shape[0]):
                for row in range(y, y + size):
                    total += float(np.sum(g[c, row, x:x + size]))
            candidates.append((-total, y, x))
    taken = []
    for neg, y, x in sorted(candidates):
        if all(abs(x - tx) >= size or abs(y - ty) >= size for tx, ty, _ in taken):
            taken.append((x, y, -neg))
        if len(taken) == k:
            break
    return taken


def test_hard_windows_replace_the_fixed_ones(inputs, tmp_path):
    out = tmp_path / "hard"
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", inputs / "images", "--windows", "hard:3",
                "--size", "12", "--fold", "3", "--out", out)
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "results.json").read_text())
    chosen = data["hard_windows"]
    assert chosen["k"] == 3 and chosen["size"] == 12
    images = sorted(str(p) for p in (inputs / "images").iterdir() if p.suffix == ".png")
    assert sorted(chosen["images"]) == images
    for image in images:
        expected = _brute_force_hard(Path(image), 12, 3)
        got = chosen["images"][image]
        assert [(w["x"], w["y"], w["size"]) for w in got] == [(x, y, 12) for x, y, _ in expected]
        assert [w["score"] for w in got] == pytest.approx([s for _, _, s in expected], rel=1e-6)  # float32 image
        cases = [(c["window"]["x"], c["window"]["y"], c["window"]["size"]) for c in data["cases"]
                 if c["image"] == image]
        assert sorted(cases) == sorted((x, y, 12) for x, y, _ in expected)
    assert all(c["status"] == "ok" for c in data["cases"])


def test_hard_windows_from_toml_and_not_beside_fixed_ones(inputs, tmp_path):
    from onnxlam.batch.report import load_config
    from onnxlam.core.errors import InputError

    path = tmp_path / "config.toml"
    path.write_text('models = ["a.onnx"]\nimages = ["one.png"]\nwindows = "hard:2"\n')
    assert load_config(path).hard == 2 and load_config(path).windows is None
    fixed = ConfigValues(models=("a.onnx",), images=("one.png",), windows=(WindowSpec(8, 8),))
    assert fixed.overridden_by(load_config(path)).resolve().hard == 2  # hard:K replaces the windows
    with pytest.raises(InputError, match="not both"):
        ConfigValues(models=("a.onnx",), images=("one.png",), windows=(WindowSpec(8, 8),), hard=2).resolve()


def _bootstrap_mean(values: list[float], groups: list[str], n: int, seed: int) -> tuple[float, float, float]:
    """The documented contract, as a plain loop: draw len(labels) of the sorted labels with
    replacement, average every value of the drawn labels; the 2.5 and 97.5 percentiles."""
    rng = np.random.default_rng(seed)
    labels = sorted(set(groups))
    estimates = []
    for _ in range(n):
        drawn = rng.integers(0, len(labels), size=len(labels))
        picked = [v for i in drawn for v, g in zip(values, groups) if g == labels[i]]
        estimates.append(sum(picked) / len(picked))
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(np.mean(values)), float(low), float(high)


def _bootstrap_spearman(di: np.ndarray, psnr: np.ndarray, n: int, seed: int) -> tuple[float, float, float]:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(n):
        cols = rng.integers(0, di.shape[1], size=di.shape[1])
        rho = spearmanr(di[:, cols].mean(axis=1), psnr[:, cols].mean(axis=1)).statistic
        if not np.isnan(rho):
            estimates.append(rho)
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(spearmanr(di.mean(axis=1), psnr.mean(axis=1)).statistic), float(low), float(high)


def test_dataset_level_equals_a_recomputation(report, inputs):
    data = json.loads((report / "results.json").read_text())
    level = data["dataset"]
    n, seed = level["resamples"], level["seed"]
    cases = [c for c in data["cases"] if c["status"] == "ok"]
    models = list(dict.fromkeys(c["model"] for c in cases))
    images = sorted({c["image"] for c in cases})
    assert [m["name"] for m in level["models"]] == models == list(_models(inputs))
    for m in level["models"]:
        mine = [c for c in cases if c["model"] == m["name"]]
        mean, low, high = _bootstrap_mean([c["di"] for c in mine], [c["image"] for c in mine], n, seed)
        assert m["di"]["mean"] == pytest.approx(mean, rel=1e-12)
        assert (m["di"]["low"], m["di"]["high"]) == pytest.approx((low, high), rel=1e-12)
        per_image = {c["image"]: c for c in mine}
        assert m["psnr"] == pytest.approx(np.mean([per_image[i]["psnr_y"] for i in images]), rel=1e-12)
        assert m["ssim"] == pytest.approx(np.mean([per_image[i]["ssim_y"] for i in images]), rel=1e-12)
        assert m["windows"] == len(mine) and m["images"] == len(images)
    di = np.array([[np.mean([c["di"] for c in cases if c["model"] == m and c["image"] == i]) for i in images]
                   for m in models])
    psnr = np.array([[next(c["psnr_y"] for c in cases if c["model"] == m and c["image"] == i) for i in images]
                     for m in models])
    rho, low, high = _bootstrap_spearman(di, psnr, n, seed)
    got = level["spearman_di_psnr"]
    assert got["mean"] == pytest.approx(rho, abs=1e-12) and level["spearman_reason"] is None
    assert (got["low"], got["high"]) == pytest.approx((low, high), abs=1e-12)


def test_no_rank_correlation_below_three_models(inputs, tmp_path):
    out = tmp_path / "two"
    values = ConfigValues(models=_models(inputs)[:2], images=(str(inputs / "images" / "one.png"),),
                          windows=(WindowSpec(8, 8),), out=out, fold=3)
    run_report(values.resolve())
    level = json.loads((out / "results.json").read_text())["dataset"]
    assert level["spearman_di_psnr"] is None and "at least 3" in level["spearman_reason"]
    assert len(level["models"]) == 2 and all(m["psnr"] is not None for m in level["models"])


def test_finding_png_and_the_page_show_the_dataset_level(report):
    from onnxlam.render.scatter import Axes, Point

    level = json.loads((report / "results.json").read_text())["dataset"]
    picture = np.asarray(Image.open(report / "finding.png").convert("RGB"))
    assert picture.shape == (440, 640, 3)
    points = [Point(m["psnr"], m["di"]["mean"], m["di"]["low"], m["di"]["high"], m["name"]) for m in level["models"]]
    axes = Axes.fit(points, 640, 440)
    for p in points:  # each model's dot sits where its PSNR and mean DI put it
        x, y = axes.pixel(p.x, p.y)
        assert tuple(picture[y, x]) == (192, 57, 43)
    page = (report / "index.html").read_text()
    assert 'src="finding.png"' in page and page.count("<tr><td class=\"name\"") == 3
    for m in level["models"]:
        assert f"{m['di']['mean']:.2f} [{m['di']['low']:.2f}, {m['di']['high']:.2f}]" in page
        assert f"{m['psnr']:.2f}" in page
    assert "Spearman" in page


def test_scatter_draws_bars_and_an_empty_message():
    from onnxlam.render.scatter import Axes, Point, scatter

    points = [Point(30.0, 5.0, 4.0, 6.0, "a"), Point(32.0, 7.0, 6.5, 8.0, "b")]
    picture = scatter(points, "t", "x", "y")
    axes = Axes.fit(points, 640, 440)
    x, top = axes.pixel(30.0, 6.0)
    _, bottom = axes.pixel(30.0, 4.0)
    middle = (top + bottom) // 2 + 6  # on the bar, clear of the dot
    assert tuple(picture[middle, x]) == (74, 120, 181)
    assert scatter([], "t", "x", "y", empty="nothing").shape == (440, 640, 3)


def test_lam_takes_hard_windows_too(inputs, tmp_path):
    image = inputs / "images" / "one.png"
    out = tmp_path / "lam-hard"
    r = run_cli("lam", inputs / "a.onnx", image, "--windows", "hard:2", "--size", "12", "--fold", "2",
                "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    expected = [(x, y) for x, y, _ in _brute_force_hard(image, 12, 2)]
    got = [(d["window"]["x"], d["window"]["y"]) for d in json.loads(r.stdout)]
    assert got == expected  # best first
    assert sorted(p.name for p in out.iterdir()) == sorted(f"window-{x}-{y}-12" for x, y in expected)
    both = run_cli("lam", inputs / "a.onnx", image, "--windows", "hard:2", "--window", 0, 0, "--out", tmp_path / "x")
    assert both.returncode == 2 and "not both" in both.stderr and not (tmp_path / "x").exists()
    lr = run_cli("lam", inputs / "a.onnx", image, "--windows", "hard:2", "--lr", "--out", tmp_path / "y")
    assert lr.returncode == 2 and "drop --lr" in lr.stderr and not (tmp_path / "y").exists()


def test_the_command_prints_the_dataset_level(report, inputs, tmp_path):
    """What `report` prints at the end is the dataset level of results.json: per model the DI interval,
    PSNR and SSIM, then Spearman's ρ with its interval (the README's finding table is this output)."""
    (tmp_path / "windows.csv").write_text("8,8\n30,20,12\n")
    args = [a for m in _models(inputs) for a in ("--model", m)]
    done = run_cli("report", *args, "--image", inputs / "images", "--windows-file", tmp_path / "windows.csv",
                   "--fold", "3", "--out", report, env_extra={"COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    level = json.loads((report / "results.json").read_text())["dataset"]
    lines = done.stdout.splitlines()
    for m in level["models"]:
        row = next(line for line in lines if Path(m["name"]).name in line and "[" in line)
        assert f"{m['di']['mean']:.2f} [{m['di']['low']:.2f}, {m['di']['high']:.2f}]" in row
        assert f"{m['psnr']:.2f}" in row and f"{m['ssim']:.4f}" in row
    rho = level["spearman_di_psnr"]
    assert f"{rho['mean']:.2f} [{rho['low']:.2f}, {rho['high']:.2f}]" in next(
        line for line in lines if line.startswith("Spearman"))


def test_labels_of_close_points_do_not_overlap():
    """Two models at almost the same place (the slim and medium ESRGAN at 28.4 dB): each label gets a box
    of its own, inside the picture, clear of every dot."""
    from PIL import Image as PILImage, ImageDraw, ImageFont

    from onnxlam.render.scatter import Axes, Point, _label_box, _overlaps, scatter

    points = [Point(28.37, 0.58, 0.51, 0.64, "esrgan-slim-x4"), Point(28.46, 0.64, 0.58, 0.70, "esrgan-medium-x4"),
              Point(28.40, 0.60, 0.5, 0.7, "third-model-x4")]
    picture = scatter(points, "t", "x", "y")
    assert picture.shape == (440, 640, 3)
    axes = Axes.fit(points, 640, 440)
    dots = [axes.pixel(p.x, p.y) for p in points]
    taken = [(x - 4, y - 4, x + 5, y + 5) for x, y in dots]
    draw, font = ImageDraw.Draw(PILImage.new("RGB", (1, 1))), ImageFont.load_default()
    for p, (x, y) in zip(points, dots):
        left, top, right, bottom = draw.textbbox((0, 0), p.label, font=font)
        box = _label_box(x, y, right - left, bottom - top, taken, 640, 440)
        assert not any(_overlaps(box, t) for t in taken)
        assert 0 <= box[0] and box[2] <= 640 and abs(box[1] - y) < 80  # near its dot
        taken.append(box)
