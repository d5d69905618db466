"""`onnxlam check`: DI bounds, the baseline gate both ways, gradient verification, exit codes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from tests.onnx_models import tiny_sr
from onnxlam.batch import gate
from onnxlam.batch.report import ConfigValues, LamOptions, WindowSpec, run_report

from tests.clitools import run_cli

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def inputs(inputs):
    """tests/batch/conftest.py's folder, other.onnx (seed 9) and the two images beside the models."""
    onnx.save(tiny_sr(2, seed=9), inputs / "other.onnx")
    for name in ("one.png", "two.png"):
        shutil.copy(inputs / "images" / name, inputs / name)
    return inputs


def _di(model: Path, image: Path, x: int, y: int) -> float:
    import onnxlam

    return onnxlam.analyze(model, image, window=(x, y), fold=4).di


def test_bounds_pass_and_fail(inputs):
    di = _di(inputs / "a.onnx", inputs / "one.png", 8, 8)
    common = [inputs / "a.onnx", inputs / "one.png", "--window", 8, 8, "--fold", 4]
    r = run_cli("check", *common, "--min-di", di - 1, "--max-di", di + 1)
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout
    r = run_cli("check", *common, "--window", 20, 12, "--min-di", di + 0.5)
    assert r.returncode == 1, r.stderr
    assert "Violations" in r.stdout and "below-min" in r.stdout and "FAIL" in r.stdout
    r = run_cli("check", *common, "--max-di", di - 0.5, "--json")
    assert r.returncode == 1
    verdict = json.loads(r.stdout)
    assert verdict["passed"] is False and [v["kind"] for v in verdict["violations"]] == ["above-max"]
    assert verdict["checks"][0]["di"] == pytest.approx(di, abs=1e-6)


def test_baseline_gate_passes_unchanged_and_fails_on_drift_or_breakage(inputs, tmp_path):
    model = tmp_path / "net.onnx"
    shutil.copy(inputs / "a.onnx", model)
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("one.png", "two.png"):
        shutil.copy(inputs / name, images / name)
    out = tmp_path / "baseline"
    report = run_report(ConfigValues(models=(str(model),), images=(str(images),),
                                     windows=(WindowSpec(8, 8), WindowSpec(30, 20, 12)), out=out, fold=4,
                                     sigma=1.0).resolve())
    assert report.failed == 0
    baseline = out / "results.json"
    # Unchanged network: the same DIs, pass, with the baseline's own parameters (sigma 1, size 12).
    r = run_cli("check", "--baseline", baseline, "--tolerance", 1e-3, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["passed"] and len(verdict["checks"]) == 4
    assert all(abs(c["drift"]) < 1e-6 for c in verdict["checks"])
    assert {c["window"]["size"] for c in verdict["checks"]} == {16, 12}
    # A re-exported network that behaves differently: DI drift beyond the tolerance fails.
    shutil.copy(inputs / "other.onnx", model)
    r = run_cli("check", "--baseline", baseline, "--tolerance", 0.01)
    assert r.returncode == 1, r.stderr
    assert "drift" in r.stdout and "FAIL" in r.stdout
    # ... and passes with a tolerance wide enough for the change.
    drifts = [abs(c.drift) for c in gate.check_cases(gate.load_baseline(baseline)).checks]
    r = run_cli("check", "--baseline", baseline, "--tolerance", max(drifts) + 0.01)
    assert r.returncode == 0, r.stdout
    # A case that no longer runs fails the gate (exit 1, not a usage error).
    (images / "two.png").unlink()
    r = run_cli("check", "--baseline", baseline, "--tolerance", 100, "--json")
    assert r.returncode == 1
    verdict = json.loads(r.stdout)
    errors = [v for v in verdict["violations"] if v["kind"] == "error"]
    assert len(errors) == 2 and all("image not found" in v["detail"] for v in errors)


def test_a_baseline_of_relative_paths_is_checked_from_any_folder(inputs, tmp_path):
    """A report run on relative paths, its baseline then checked from another folder: the paths are
    found from the folder the report ran in (results.json records it relative to itself)."""
    work = tmp_path / "project"
    (work / "imgs").mkdir(parents=True)
    shutil.copy(inputs / "a.onnx", work / "net.onnx")
    shutil.copy(inputs / "one.png", work / "imgs" / "one.png")
    r = run_cli("report", "--model", "net.onnx", "--image", "imgs/one.png", "--window", 8, 8, "--fold", 3,
                "--out", "reports/base", cwd=work)
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("check", "--baseline", work / "reports" / "base" / "results.json", "--tolerance", 1e-3, "--json",
                cwd=elsewhere)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["passed"]


def test_baseline_skips_cases_that_failed_there(inputs, tmp_path):
    out = tmp_path / "baseline"
    run_report(ConfigValues(models=(str(inputs / "a.onnx"),), images=(str(inputs / "one.png"),),
                            windows=(WindowSpec(8, 8), WindowSpec(900, 900)), out=out, fold=3).resolve())
    cases = gate.load_baseline(out / "results.json")
    assert [(c.x, c.options.fold) for c in cases] == [(8, 3)]


def test_verify_gradients(inputs, monkeypatch):
    case = gate.GateCase(str(inputs / "a.onnx"), str(inputs / "one.png"), 8, 8, 16, LamOptions(fold=4))
    result = gate.check_cases([case, gate.GateCase(**{**case.__dict__, "x": 12})], verify_gradients=True)
    assert result.passed and len(result.gradients) == 1  # one check per model and LR shape
    g = result.gradients[0]
    assert (g.height, g.width) == (32, 32) and g.fd_error < 1e-2
    # A program that disagrees with finite differences fails the gate.
    monkeypatch.setattr("onnxlam.engine.program.check_finite_differences", lambda program, device="auto", seed=0: 0.3)
    result = gate.check_cases([case], verify_gradients=True)
    assert not result.passed and [v.kind for v in result.violations] == ["gradient"]
    assert "3.00e-01" in result.violations[0].detail


def test_verify_gradients_on_the_command_line(inputs):
    r = run_cli("check", inputs / "a.onnx", inputs / "one.png", "--window", 8, 8, "--fold", 3,
                "--verify-gradients", "--json")
    assert r.returncode == 0, r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["gradients"][0]["passed"] and verdict["gradients"][0]["fd_error"] < 1e-2


@pytest.mark.parametrize("args, needle", [
    ([], "--baseline"),
    (["MODEL"], "--baseline"),
    (["MODEL", "IMAGE"], "--window"),
    (["MODEL", "IMAGE", "--window", 1, 1, "--baseline", "B"], "not both"),
    (["MODEL", "IMAGE", "--window", 1, 1, "--min-di", 5, "--max-di", 2], "--min-di"),
    (["MODEL", "IMAGE", "--window", 1, 1, "--fold", 0], "--fold"),
    (["--baseline", "missing.json"], "cannot read the baseline"),
    (["--baseline", "NOTJSON"], "not JSON"),
    (["--baseline", "NOTREPORT"], "not a report"),
    (["--baseline", "B", "--tolerance", -1], "--tolerance"),
    (["MODEL", "IMAGE", "--window", 1, 1, "--max-memory", "lots"], "--max-memory: cannot read 'lots'"),
    (["--baseline", "B", "--max-memory", "-1G"], "--max-memory"),
])
def test_usage_errors_exit_2(args, needle, inputs, tmp_path):
    (tmp_path / "notjson.json").write_text("{")
    (tmp_path / "notreport.json").write_text('{"x": 1}')
    out = tmp_path / "b"
    run_report(ConfigValues(models=(str(inputs / "a.onnx"),), images=(str(inputs / "one.png"),),
                            windows=(WindowSpec(8, 8),), out=out, fold=2).resolve())
    names = {"MODEL": inputs / "a.onnx", "IMAGE": inputs / "one.png", "B": out / "results.json",
             "NOTJSON": tmp_path / "notjson.json", "NOTREPORT": tmp_path / "notreport.json"}
    r = run_cli("check", *[names.get(a, a) if isinstance(a, str) else a for a in args], cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr and r.stderr.startswith("error:"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_max_memory_reaches_every_analyzer(inputs, monkeypatch):
    from typer.testing import CliRunner

    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.cli import app
    from onnxlam.core.errors import InputError

    limits, original = [], Analyzer.run_windows
    monkeypatch.setattr(Analyzer, "run_windows", lambda self, *a, **k: limits.append(self.max_memory) or
                        original(self, *a, **k))
    case = gate.GateCase(str(inputs / "a.onnx"), str(inputs / "one.png"), 8, 8, 16, LamOptions(fold=2))
    other = gate.GateCase(**{**case.__dict__, "model": str(inputs / "other.onnx")})
    assert gate.check_cases([case, other], max_memory="3G").passed
    assert limits == [3 << 30, 3 << 30]
    with pytest.raises(InputError, match="--max-memory"):  # refused before any case runs
        gate.check_cases([case], max_memory="lots")
    assert len(limits) == 2
    r = CliRunner().invoke(app, ["check", str(inputs / "a.onnx"), str(inputs / "one.png"), "--window", "8", "8",
                                 "--fold", "2", "--max-memory", "1536M", "--json"])
    assert r.exit_code == 0, r.output
    assert limits[2:] == [1536 << 20]


@pytest.mark.parametrize("flags, passes", [
    (("--min-deletion-z", -1e9), True), (("--min-deletion-z", 1e9), False),
    (("--max-sanity-spearman", 1.01), True), (("--max-sanity-spearman", -1.01), False),
])
def test_the_gate_holds_the_map_tests(inputs, flags, passes):
    """`--min-deletion-z` runs `faithfulness` per case and `--max-sanity-spearman` runs `sanity`; the
    case's value is in the verdict, and a bound it misses is a violation."""
    from PIL import Image

    from tests.clitools import PHOTO

    image = inputs / "cat64.png"
    if not image.exists():
        Image.open(PHOTO).convert("RGB").crop((60, 60, 124, 124)).save(image)
    r = run_cli("check", inputs / "a.onnx", image, "--window", 24, 24, "--fold", 3, *flags, "--json")
    assert r.returncode == (0 if passes else 1), r.stderr
    verdict = json.loads(r.stdout)
    key = "faithfulness.deletion_z" if flags[0] == "--min-deletion-z" else "sanity.final_spearman"
    value = verdict["checks"][0]["values"][key]
    assert isinstance(value, float)
    assert [v["kind"] for v in verdict["violations"]] == ([] if passes else ["bound"])
