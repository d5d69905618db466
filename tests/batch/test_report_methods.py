"""`onnxlam report --method`: CEM, the noise tunnel and the ERF as report methods.

Each non-LAM case is compared with its method's own API called directly (the methods' own tests
compare those APIs with independent PyTorch references), plus checks that do not go through the
method's code: CEM's block counts against the grid computed here, the noise tunnel's map against the
mean of LAM over noisy inputs drawn here, the ERF's peak against a finite difference of the model
itself. Also: LAM cases unchanged by --method, resumption per
(method, case), the gate leaving other methods' cases out, a local Dask cluster equal to the serial
run, and bad method names as usage errors.
"""
from __future__ import annotations

import csv
import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.clitools import run_cli

pytestmark = pytest.mark.integration

FOLD = 4
CEM = dict(block=8, draws=2, refine=3, tol=0.01, seed=0, bank_size=50)
TUNNEL = dict(samples=2, stdev=0.1, seed=3)
WINDOWS = ((8, 8, 16), (30, 20, 12))  # the second with a size of its own
METHOD_FLAGS = ("--method", "lam,cem", "--method", "smoothgrad", "--fold", FOLD, "--device", "cpu",
                "--samples", TUNNEL["samples"], "--stdev", TUNNEL["stdev"], "--seed", TUNNEL["seed"],
                "--cem-draws", CEM["draws"], "--cem-refine", CEM["refine"], "--cem-bank-size", CEM["bank_size"])


def _windows_file(inputs: Path) -> Path:
    path = inputs / "windows.csv"
    path.write_text("x,y,size\n8,8\n30,20,12\n")
    return path


def _args(inputs: Path, out: Path, *flags) -> list:
    return ["report", "--model", inputs / "a.onnx", "--image", inputs / "images", "--windows-file",
            _windows_file(inputs), "--out", out, *flags]


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory):
    """lam + cem + smoothgrad over 1 model × 2 images × 2 windows: 12 cases."""
    out = tmp_path_factory.mktemp("methods") / "rep"
    r = run_cli(*_args(inputs, out, *METHOD_FLAGS), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"] == {"cases": 12, "computed": 12, "reused": 0, "failed": 0, "pending": 0}
    return out


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "results.csv").open()))


def test_rows_carry_their_method_and_only_its_columns(report, inputs):
    rows = _rows(report)
    images = [str(inputs / "images" / n) for n in ("one.png", "two.png")]
    expected = {(i, x, y, s, m) for i in images for x, y, s in WINDOWS for m in ("lam", "cem", "smoothgrad")}
    assert {(r["image"], int(r["x"]), int(r["y"]), int(r["size"]), r["method"]) for r in rows} == expected
    for r in rows:
        assert r["status"] == "ok", r
        has_di = r["method"] != "cem"
        assert (r["di"] != "") == has_di and (r["pixels_90"] != "") == has_di
        assert all((r[k] != "") == (not has_di) for k in ("positive", "negative", "neutral", "effect_range",
                                                           "reference_psnr"))
        assert (r["path"], r["fold"]) == (("blur", str(FOLD)) if has_di else ("", ""))  # CEM has no LAM path
        slug = Path(r["folder"]).name
        assert (f"-{r['method']}-" in slug) == (r["method"] != "lam")
    data = json.loads((report / "results.json").read_text())
    assert data["methods"] == ["lam", "cem", "smoothgrad"]
    assert {(s["method"], s["cases"]) for s in data["summary"]} == {("lam", 4), ("cem", 4), ("smoothgrad", 4)}
    cem_summary = next(s for s in data["summary"] if s["method"] == "cem")
    assert cem_summary["di_mean"] is None and cem_summary["effect_range_mean"] > 0
    for case in data["cases"]:
        assert (case["positive"] is None) == (case["method"] != "cem")
        assert (case["di"] is None) == (case["method"] == "cem")
    page = (report / "index.html").read_text()
    for r in rows:  # every case's picture (CEM's panel: the image with its ROI and the effect map)
        assert f'src="{r["folder"]}/panel.png"' in page
    # 4 cases and the summary row each
    assert page.count("<td>cem</td>") == 5 and page.count("<td>smoothgrad</td>") == 5
    assert page.count("<svg") == 2  # DI plots for lam and smoothgrad; CEM has no DI


def test_cem_cases_equal_the_cem_api(report, inputs):
    from onnxlam.methods.cem.runner import causal_effect_map

    cem_rows = [r for r in _rows(report) if r["method"] == "cem"]
    assert len(cem_rows) == 4
    for r in cem_rows:
        folder = report / r["folder"]
        x, y, size = int(r["x"]), int(r["y"]), int(r["size"])
        direct = causal_effect_map(inputs / "a.onnx", r["image"], (x, y), size, device="cpu", **CEM)
        np.testing.assert_array_equal(np.load(folder / "effect.npy"), direct.effect)  # NaN on ROI blocks alike
        np.testing.assert_array_equal(np.load(folder / "psnr_coarse.npy"), direct.psnr_coarse)
        assert float(r["reference_psnr"]) == pytest.approx(direct.reference_psnr, rel=1e-6)
        s = direct.summary
        assert (int(r["positive"]), int(r["negative"]), int(r["neutral"])) == (s.positive, s.negative, s.neutral)
        assert float(r["effect_range"]) == pytest.approx(s.effect_range, rel=1e-5)
        saved = json.loads((folder / "result.json").read_text())
        assert saved["case"]["method"] == {"name": "cem", **CEM, "patches": None, "task": "auto", "noise": 50.0}
        assert saved["parameters"]["draws"] == CEM["draws"] and saved["roi"] == {"x": x, "y": y, "size": size}
        # Independent of cem.py: a 64×64 image at ×2 is 32×32 LR, blocks of 8 // 2 = 4 LR px: an 8×8 grid,
        # and the ROI owns the 8-SR-pixel blocks of rows y//8 … (y+size)//8 − 1, columns likewise (the
        # public code's convention: a block the ROI covers in part keeps its effect).
        effect = np.load(folder / "effect.npy")
        roi_rows = range(y // 8, (y + size) // 8)
        roi_cols = range(x // 8, (x + size) // 8)
        assert effect.shape == (8, 8)
        assert {tuple(ij) for ij in np.argwhere(np.isnan(effect))} == {(i, j) for i in roi_rows for j in roi_cols}
        assert int(r["positive"]) + int(r["negative"]) + int(r["neutral"]) + len(roi_rows) * len(roi_cols) == 64
        outside = effect[~np.isnan(effect)]
        assert (int(r["positive"]), int(r["negative"])) == (int((outside > 0).sum()), int((outside < 0).sum()))
        assert {p.name for p in folder.iterdir()} == {"effect.npy", "psnr_coarse.npy", "psnr_fine.npy",
                                                       "refined.npy", "result.json", "cem.png", "panel.png"}


def test_noise_tunnel_cases_equal_the_api_and_the_mean_of_noisy_lam(report, inputs):
    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.lam.result import Window
    from onnxlam.methods.noise_tunnel.tunnel import NoiseTunnel, noise_tunnel

    analyzer = Analyzer(inputs / "a.onnx", device="cpu")
    rows = [r for r in _rows(report) if r["method"] == "smoothgrad"]
    for image in sorted({r["image"] for r in rows}):
        mine = sorted((r for r in rows if r["image"] == image), key=lambda r: int(r["x"]))
        windows = [Window(int(r["x"]), int(r["y"]), int(r["size"])) for r in mine]
        # the API, as the report calls it: the windows of one image together
        direct = noise_tunnel(analyzer, image, windows, NoiseTunnel("smoothgrad", **TUNNEL), fold=FOLD)
        # independent of noise_tunnel.py: the documented noise stream, LAM of each noisy input, the mean
        x, _ = analyzer.prepare(image)
        noises = np.random.default_rng(TUNNEL["seed"]).normal(0.0, TUNNEL["stdev"], (TUNNEL["samples"],) + x.shape)
        noisy = [analyzer.run_windows(image, windows, fold=FOLD, lr_input=(x + n.astype(np.float32)))
                 for n in noises]
        for k, (r, d) in enumerate(zip(mine, direct)):
            folder = report / r["folder"]
            np.testing.assert_allclose(np.load(folder / "attribution.npy"), d.attribution, rtol=1e-6, atol=1e-9)
            assert float(r["di"]) == pytest.approx(d.di, rel=1e-5)
            mean = np.mean([np.asarray(s[k].gradient, np.float64) for s in noisy], axis=0)
            np.testing.assert_allclose(np.load(folder / "gradient.npy"), mean, rtol=1e-5, atol=1e-8)
            saved = json.loads((folder / "result.json").read_text())
            assert saved["noise_tunnel"]["kind"] == "smoothgrad" and saved["noise_tunnel"]["samples"] == 2


def test_lam_cases_are_those_of_a_plain_report(report, inputs, tmp_path):
    """--method leaves LAM's cases as they were: same folders (slugs), same maps; the gate reads only them."""
    from onnxlam.batch.gate import load_baseline

    plain = tmp_path / "plain"
    r = run_cli(*_args(inputs, plain, "--fold", FOLD, "--device", "cpu"), "--json")
    assert r.returncode == 0, r.stderr
    lam = {row["folder"]: row for row in _rows(report) if row["method"] == "lam"}
    assert {row["folder"] for row in _rows(plain)} == set(lam) and len(lam) == 4
    for row in _rows(plain):
        assert row["method"] == "lam" and float(row["di"]) == pytest.approx(float(lam[row["folder"]]["di"]), rel=1e-6)
        a, b = (json.loads((d / row["folder"] / "result.json").read_text())["case"] for d in (plain, report))
        assert a == b and "method" not in a  # a LAM fingerprint is what it was before methods existed
    assert len(load_baseline(report / "results.json")) == 4  # the gate's baseline: the LAM cases only


def test_rerun_computes_nothing_and_a_changed_method_option_only_its_cases(report, inputs, tmp_path):
    out = tmp_path / "rep"
    shutil.copytree(report, out)
    times = {p.name: (p / "result.json").stat().st_mtime_ns for p in (out / "cases").iterdir()}
    r = run_cli(*_args(inputs, out, *METHOD_FLAGS), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"] == {"cases": 12, "computed": 0, "reused": 12, "failed": 0, "pending": 0}
    assert {p.name: (p / "result.json").stat().st_mtime_ns for p in (out / "cases").iterdir()} == times
    r = run_cli(*_args(inputs, out, *METHOD_FLAGS, "--cem-seed", 7), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"]["computed"] == 4  # the CEM cases; LAM and the noise tunnel reused
    changed = {p.name for p in (out / "cases").iterdir() if (p / "result.json").stat().st_mtime_ns != times[p.name]}
    assert len(changed) == 4 and all("-cem-" in name for name in changed)
    # a LAM path option: LAM's and the noise tunnel's cases are recomputed, CEM's (no path) are not
    flags = list(METHOD_FLAGS)
    flags[flags.index("--fold") + 1] = FOLD - 1
    r = run_cli(*_args(inputs, out, *flags, "--cem-seed", 7), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"]["computed"] == 8 and json.loads(r.stdout)["run"]["reused"] == 4


def test_a_failing_case_of_a_method_is_recorded_and_the_others_go_on(inputs, tmp_path):
    out = tmp_path / "rep"
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", inputs / "images" / "one.png", "--window", 8, 8,
                "--window", 60, 60, "--method", "lam,cem", "--fold", 2, "--cem-draws", 1, "--cem-refine", 0,
                "--cem-bank-size", 10, "--device", "cpu", "--out", out, "--json")
    assert r.returncode == 1, r.stderr  # a failed case
    rows = {(row["x"], row["method"]): row for row in _rows(out)}
    assert {k: row["status"] for k, row in rows.items()} == {("8", "lam"): "ok", ("8", "cem"): "ok",
                                                              ("60", "lam"): "failed", ("60", "cem"): "failed"}
    failed = rows[("60", "cem")]
    assert "ROI (60, 60) of side 16 is not inside the 64×64 output" in failed["message"]
    error = json.loads((out / failed["folder"] / "error.json").read_text())
    assert error["method"] == "cem" and error["status"] == "failed" and error["case"]["method"]["name"] == "cem"
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", inputs / "images" / "one.png", "--window", 8, 8,
                "--window", 60, 60, "--method", "lam,cem", "--fold", 2, "--cem-draws", 1, "--cem-refine", 0,
                "--cem-bank-size", 10, "--device", "cpu", "--out", out, "--json")
    run = json.loads(r.stdout)["run"]  # the failed cases are retried, the others reused
    assert (run["reused"], run["failed"]) == (2, 2)


def test_cem_on_a_local_cluster_equals_the_serial_run(report, inputs, tmp_path):
    import distributed  # noqa: F401  (the cluster extra, part of the test extra, as in test_cluster.py)
    out = tmp_path / "cluster"
    r = run_cli(*_args(inputs, out, *METHOD_FLAGS), "--cluster", "local:2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"]["computed"] == 12
    serial, cluster = _rows(report), _rows(out)
    assert [r["folder"] for r in serial] == [r["folder"] for r in cluster]
    for a, b in zip(serial, cluster):
        for k in a:
            if k in ("di", "gini", "radius_90"):
                assert (a[k] == b[k] == "") or float(b[k]) == pytest.approx(float(a[k]), rel=1e-5), k
            elif k != "seconds":
                assert a[k] == b[k], (a["folder"], k)
        if a["method"] == "cem":
            for array in ("effect.npy", "psnr_coarse.npy", "psnr_fine.npy", "refined.npy"):
                np.testing.assert_array_equal(np.load(out / b["folder"] / array), np.load(report / a["folder"] / array))
        else:
            np.testing.assert_allclose(np.load(out / b["folder"] / "attribution.npy"),
                                       np.load(report / a["folder"] / "attribution.npy"), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("flags, needle", [
    (("--method", "lam,bogus"), "unknown method 'bogus'; choose one or more of lam, cem, smoothgrad"),
    (("--method", "cem", "--lr"), "--lr does not apply"),
    (("--method", "cem", "--cem-refine", "-1"), "--cem-refine must be ≥ 0"),
    (("--method", "smoothgrad", "--samples", "0"), "--samples must be at least 1"),
    (("--method", "lam,smoothgrad", "--cem-block", "4"), "--cem-block belongs to --method cem"),
    (("--method", "cem", "--stdev", "0.2"), "--stdev belongs to --method smoothgrad or smoothgrad_sq or vargrad"),
])
def test_bad_method_is_a_usage_error(inputs, tmp_path, flags, needle):
    out = tmp_path / "never"
    r = run_cli(*_args(inputs, out, *flags))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error:") and needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_toml_methods_and_method_options(inputs, tmp_path):
    from onnxlam.batch.report import load_config

    config = tmp_path / "report.toml"
    config.write_text('models = ["a.onnx"]\nimages = ["one.png"]\nwindows = [[8, 8]]\nmethod = "cem, vargrad"\n'
                      'cem_block = 4\nsamples = 3\ncem_patches = "bank"\n')
    (tmp_path / "bank").mkdir()
    resolved = load_config(config).resolve()
    assert resolved.methods == ("cem", "vargrad")
    assert resolved.options_of("cem").block == 4 and resolved.options_of("vargrad").samples == 3
    assert resolved.options_of("cem").patches == str(tmp_path / "bank")
    config.write_text('models = ["a.onnx"]\nimages = ["one.png"]\nwindows = [[8, 8]]\nmethods = ["lam", "nope"]\n')
    r = run_cli("report", config)
    assert r.returncode == 2 and "unknown method 'nope'" in r.stderr


def test_report_options_are_the_methods_own_declarations():
    """The report's options of the methods come from the methods' Options: each key's default, help and
    check are the method's own, with the method's flag prefix (CEM's --cem-…; the noise tunnel's none);
    the methods' APIs take their defaults from the same Options."""
    from onnxlam.batch.report.config import method_keys
    from onnxlam.methods import registry
    from onnxlam.methods.cem.runner import CemRunner

    keys = method_keys()
    for key, k in keys.items():
        for name in k.methods:
            m = registry.method(name)
            # the declared default, as the Options hold it (faithfulness parses its fractions' text)
            assert getattr(m.Options(), k.name) == getattr(m.Options(**{k.name: k.field.default}), k.name)
            assert key == (f"{m.prefix}_{k.name}" if m.prefix else k.name)
            assert k.flag == (f"--{m.prefix}-" + k.field.metadata["flag"][2:] if m.prefix else k.field.metadata["flag"])
    assert {"samples", "stdev", "seed", "cem_block", "cem_draws", "cem_patches", "cem_size"} <= set(keys)
    assert keys["samples"].methods == ("smoothgrad", "smoothgrad_sq", "vargrad")
    run = inspect.signature(CemRunner.run).parameters  # no option default written again in the runner
    assert not {"block", "draws", "refine", "tol", "seed", "bank_size"} & set(run)


def test_the_other_noise_tunnels_equal_their_api(inputs, tmp_path):
    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.methods.noise_tunnel.tunnel import NoiseTunnel, noise_tunnel

    out, image = tmp_path / "rep", inputs / "images" / "two.png"
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", image, "--window", 30, 20, "--fold", 2,
                "--method", "smoothgrad_sq,vargrad", "--samples", 2, "--stdev", 0.05, "--device", "cpu", "--out", out)
    assert r.returncode == 0, r.stderr
    analyzer = Analyzer(inputs / "a.onnx", device="cpu")
    rows = _rows(out)
    assert [row["method"] for row in rows] == ["smoothgrad_sq", "vargrad"]
    for row in rows:
        direct, = noise_tunnel(analyzer, str(image), [(30, 20)], NoiseTunnel(row["method"], 2, 0.05, 0), 16, fold=2)
        np.testing.assert_allclose(np.load(out / row["folder"] / "gradient.npy"), direct.gradient, rtol=1e-6,
                                   atol=1e-12)
        assert float(row["di"]) == pytest.approx(direct.di, rel=1e-5)
    a, b = (np.load(out / row["folder"] / "gradient.npy") for row in rows)
    assert (a >= 0).all() and (b >= 0).all() and (b <= a + 1e-12).all()  # E[A²] ≥ E[A²] − E[A]² ≥ 0


def test_page_shows_cem_columns_only_where_cem_ran(report, inputs, tmp_path):
    page = (report / "index.html").read_text()
    assert "CEM range dB" in page and ">CEM +<" in page
    row = next(r for r in _rows(report) if r["method"] == "cem")
    cells = "".join(f'<td class=n data-v="{row[k]}">{row[k]}</td>' for k in ("positive", "negative", "neutral"))
    assert cells in page  # the case's counts, in their columns
    plain = tmp_path / "plain"
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", inputs / "images" / "one.png", "--window", 8, 8,
                "--fold", 2, "--device", "cpu", "--out", plain)
    assert r.returncode == 0, r.stderr
    page = (plain / "index.html").read_text()
    assert "CEM" not in page and "<td>lam</td>" in page


def test_erf_cases_equal_the_api_and_a_finite_difference(inputs, tmp_path):
    """`--method erf`: per (model, image, window) the ERF of the window on that one image, the folder
    `onnxlam erf` writes, its mass counts and 90% radius in LAM's columns; DI empty. The peak pixel's
    value is checked against central differences of the model's own window sum (onnxruntime, no
    gradient program); a rerun, or another --fold, recomputes nothing."""
    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.engine.runtime import create_session
    from onnxlam.lam.image import prepare_lr, read_image
    from onnxlam.methods.erf.field import effective_receptive_field

    out = tmp_path / "erf"
    r = run_cli(*_args(inputs, out, "--method", "erf", "--device", "cpu"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"]["computed"] == 4
    analyzer = Analyzer(inputs / "a.onnx", device="cpu", cache=False)
    session = create_session(onnx.load(str(inputs / "a.onnx")), "cpu").session  # the file as is
    name = session.get_inputs()[0].name
    for row in _rows(out):
        assert row["method"] == "erf" and row["status"] == "ok" and row["di"] == "" and row["fold"] == ""
        folder = out / row["folder"]
        assert sorted(p.name for p in folder.iterdir()) == ["erf.npy", "erf.png", "result.json"]
        data = json.loads((folder / "result.json").read_text())
        assert data["case"]["method"] == {"name": "erf"}
        x, y, size = int(row["x"]), int(row["y"]), int(row["size"])
        direct = effective_receptive_field(analyzer, [row["image"]], (x, y), size)
        erf = np.load(folder / "erf.npy")
        np.testing.assert_array_equal(erf, direct.erf.astype(np.float32))
        assert abs(float(erf.sum()) - 1.0) < 1e-5
        assert int(row["pixels_90"]) == direct.pixels["90"] and float(row["radius_90"]) == pytest.approx(
            direct.radii["90"], abs=1e-6)
        # independent: Σ_c |∂S/∂x_c| at the peak, S the window's intensity sum, by central differences
        lr = prepare_lr(read_image(row["image"]), 2).astype(np.float64)
        r0, c0 = np.unravel_index(int(np.argmax(erf)), erf.shape)

        def window_sum(z):
            sr = session.run(None, {name: z[None].astype(np.float32)})[0][0].astype(np.float64)
            return sr[:, y:y + size, x:x + size].sum()
        g = []
        for ch in range(3):
            e = np.zeros_like(lr)
            e[ch, r0, c0] = 1e-2
            g.append((window_sum(lr + e) - window_sum(lr - e)) / 2e-2)
        assert np.abs(g).sum() == pytest.approx(float(erf[r0, c0]) * float(np.sum(direct.gradient_mass)),
                                               rel=2e-2)
    page = (out / "index.html").read_text()
    assert "erf.png" in page
    again = run_cli(*_args(inputs, out, "--method", "erf", "--device", "cpu", "--fold", 7), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["run"]["computed"] == 0, again.stderr
    # and on a local Dask cluster: the same folders and maps
    import distributed  # noqa: F401  (the cluster extra, part of the test extra)
    cluster = tmp_path / "erf-cluster"
    c = run_cli(*_args(inputs, cluster, "--method", "erf", "--device", "cpu"), "--cluster", "local:2", "--json")
    assert c.returncode == 0 and json.loads(c.stdout)["run"]["computed"] == 4, c.stderr
    for a, b in zip(_rows(out), _rows(cluster)):
        assert a["folder"] == b["folder"] and a["pixels_90"] == b["pixels_90"]
        np.testing.assert_array_equal(np.load(cluster / b["folder"] / "erf.npy"), np.load(out / a["folder"] / "erf.npy"))
