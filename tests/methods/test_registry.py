"""The method registry: a method registered from outside the package (tests/methods/toy_method.py)
appears in the Python API, its own command `onnxlam toy`, `onnxlam report --method` (its options with
its prefix, its column in results.csv/json and index.html, its picture) with no other file edited;
its value is checked against the mean computed here. Duplicate names are refused."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxlam.core.errors import InputError
from tests.clitools import REPO
from tests.methods import toy_method

pytestmark = pytest.mark.integration

PLUGIN_CLI = ("import sys; from tests.methods import toy_method; toy_method.register(); "
              "from onnxlam.cli import main; sys.argv[0] = 'onnxlam'; main()")


def _cli(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PLUGIN_CLI, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _expected(image: Path, x: int, y: int, size: int, gain: float, scale: int = 2) -> float:
    """The toy's value computed here: the bicubic ×1/scale LR input (spec §1, Pillow), its window's mean."""
    from onnxlam.lam.image import prepare_lr, read_image

    lr = prepare_lr(read_image(image), scale)
    return gain * float(lr[:, y // scale:(y + size) // scale, x // scale:(x + size) // scale].mean())


@pytest.fixture
def toy():
    from onnxlam.methods import registry

    toy_method.register()
    yield toy_method.TOY
    registry.unregister("toy")


def test_the_python_api_runs_a_registered_method(inputs, toy, tmp_path):
    import onnxlam

    image = inputs / "images" / "one.png"
    assert "toy" in onnxlam.method_names()
    r = onnxlam.attribute(str(inputs / "a.onnx"), str(image), method="toy", window=(8, 8), gain=3)
    assert r.value == pytest.approx(_expected(image, 8, 8, 16, 3.0), rel=1e-6)
    assert r.to_json()["value"] == r.value and r.to_json()["options"]["gain"] == 3.0
    assert r._repr_png_().startswith(b"\x89PNG\r\n\x1a\n") and "Toy mean" in r._repr_html_()
    r.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["panel.png", "result.json"]
    several = onnxlam.attribute(onnxlam.Model(str(inputs / "a.onnx")), str(image), method="toy",
                                window=[(8, 8), (20, 12)], size=8)
    assert [round(s.value, 9) for s in several] == [round(_expected(image, x, y, 8, 2.0), 9)
                                                   for x, y in ((8, 8), (20, 12))]
    with pytest.raises(InputError, match="toy takes no option 'fold'"):
        onnxlam.attribute(str(inputs / "a.onnx"), str(image), method="toy", window=(8, 8), fold=4)
    with pytest.raises(InputError, match="--gain must be at least 0"):
        onnxlam.attribute(str(inputs / "a.onnx"), str(image), method="toy", window=(8, 8), gain=-1)


def test_a_name_is_registered_once(toy):
    from onnxlam.methods import registry

    with pytest.raises(ValueError, match="registered already"):
        registry.register(toy)
    with pytest.raises(InputError, match="unknown method 'nope'; choose one of lam, cem"):
        registry.method("nope")


def test_the_command_line_and_the_report_run_a_registered_method(inputs, tmp_path):
    image = inputs / "images" / "one.png"
    help = _cli("toy", "--help")
    assert help.returncode == 0 and "--gain" in help.stdout and "--window" in help.stdout, help.stderr
    out = tmp_path / "toy"
    r = _cli("toy", inputs / "a.onnx", image, "--window", 8, 8, "--gain", 3, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["value"] == pytest.approx(_expected(image, 8, 8, 16, 3.0), rel=1e-6)
    assert json.loads((out / "result.json").read_text()) == json.loads(r.stdout)
    bad = _cli("toy", inputs / "a.onnx", image, "--window", 8, 8, "--gain", -2, "--out", tmp_path / "never")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "--gain must be at least 0" in bad.stderr
    rep = tmp_path / "rep"
    r = _cli("report", "--model", inputs / "a.onnx", "--image", image, "--window", 8, 8, "--window", 20, 12,
             "--method", "lam,toy", "--toy-gain", 4, "--fold", 2, "--device", "cpu", "--out", rep)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((rep / "results.csv").open()))
    toys = [row for row in rows if row["method"] == "toy"]
    assert len(rows) == 4 and len(toys) == 2 and "value" in rows[0]
    for row in toys:
        assert float(row["value"]) == pytest.approx(_expected(image, int(row["x"]), int(row["y"]), 16, 4.0),
                                                    rel=1e-5)
        assert row["di"] == "" and row["path"] == ""  # the toy has no DI and no LAM path
        assert sorted(p.name for p in (rep / row["folder"]).iterdir()) == ["panel.png", "result.json"]
    lam = [row for row in rows if row["method"] == "lam"]
    assert all(row["value"] == "" and row["di"] != "" for row in lam)
    data = json.loads((rep / "results.json").read_text())
    summary = next(s for s in data["summary"] if s["method"] == "toy")
    assert summary["value_mean"] == pytest.approx(np.mean([float(row["value"]) for row in toys]), rel=1e-5)
    assert data["method_options"] == {"toy_gain": 4}
    page = (rep / "index.html").read_text()
    assert "toy value" in page and page.count("<td>toy</td>") == 3  # two cases and the summary row
    assert all(f'src="{row["folder"]}/panel.png"' in page for row in toys)
    again = _cli("report", "--model", inputs / "a.onnx", "--image", image, "--window", 8, 8, "--window", 20, 12,
                 "--method", "lam,toy", "--toy-gain", 4, "--fold", 2, "--device", "cpu", "--out", rep, "--json")
    assert json.loads(again.stdout)["run"]["reused"] == 4  # resumed per (method, case)
    other = _cli("report", "--model", inputs / "a.onnx", "--image", image, "--window", 8, 8, "--method", "lam",
                 "--toy-gain", 4, "--out", tmp_path / "never")
    assert other.returncode == 2 and "--toy-gain belongs to --method toy" in other.stderr
