"""`onnxlam report`: cases, resumption after a kill, failure isolation, TOML configs, the HTML page."""
from __future__ import annotations

import csv
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from tests.onnx_models import tiny_sr
from onnxlam.engine.model import Model
from onnxlam.methods.lam import run as lam_run
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.engine.planner import Plan
from onnxlam.core.errors import InputError
from onnxlam.batch.report import (CSV_COLUMNS, ConfigValues, ReportListener, WindowSpec, exclusive, load_config,
                            read_windows_file, run_report)

from tests.clitools import PHOTO, REPO, run_cli

pytestmark = pytest.mark.integration
EVIL = "<img src=x onerror=alert(1)>&.png"



@pytest.fixture(scope="module")
def inputs(inputs):
    """tests/batch/conftest.py's folder, and a file in images/ that is not an image."""
    (inputs / "images" / "notes.txt").write_text("not an image")
    return inputs


def _config(inputs: Path, out: Path, **options) -> ConfigValues:
    return ConfigValues(models=(str(inputs / "a.onnx"), str(inputs / "b.onnx")), images=(str(inputs / "images"),),
                        windows=(WindowSpec(8, 8), WindowSpec(30, 20, 12)), out=out, fold=4, **options)


def test_report_writes_every_case_and_the_aggregates(inputs, tmp_path):
    out = tmp_path / "rep"
    report = run_report(_config(inputs, out).resolve())
    assert len(report.rows) == 2 * 2 * 2 and report.failed == 0 and report.computed == 8 and report.reused == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 8
    assert {r["status"] for r in rows} == {"ok"}
    assert {(r["x"], r["y"], r["size"]) for r in rows} == {("8", "8", "16"), ("30", "20", "12")}
    for r in rows:
        folder = out / r["folder"]
        result = json.loads((folder / "result.json").read_text())
        assert float(r["di"]) == pytest.approx(result["di"], rel=1e-5)
        assert int(r["pixels_90"]) == result["range"]["pixels_90"]  # range statistics in the CSV
        assert (folder / "panel.png").is_file() and result["fold"] == 4
    data = json.loads((out / "results.json").read_text())
    assert data["run"] == {"cases": 8, "computed": 8, "reused": 0, "failed": 0, "pending": 0}
    assert [s["cases"] for s in data["summary"]] == [4, 4]
    case = data["cases"][0]
    assert {"pixels_50", "pixels_90", "pixels_99", "radius_90", "di", "gini"} <= set(case)
    assert case["fold"] == 4 and case["path"] == "blur" and case["status"] == "ok"
    page = (out / "index.html").read_text()
    assert page.count("<svg") == 2 and page.count("<tr class=\"ok\">") == 8


def test_programs_are_built_once_per_model_and_shape(inputs, tmp_path, monkeypatch):
    built = []
    original = Model.build

    def counting(self, batch, h, w, *rest, **kwargs):
        if kwargs.get("verify", True):  # not the unverified programs that measure memory
            built.append((self.model_path, h, w))
        return original(self, batch, h, w, *rest, **kwargs)

    monkeypatch.setattr(Model, "build", counting)
    Image.open(PHOTO).crop((0, 0, 80, 48)).save(tmp_path / "other_size.png")
    config = _config(inputs, tmp_path / "rep", crop=False)
    config = replace(config, images=config.images + (str(tmp_path / "other_size.png"),))
    report = run_report(config.resolve())
    assert report.failed == 0 and len(report.rows) == 12
    assert sorted(built) == sorted({(m, h, w) for m in (str(inputs / "a.onnx"), str(inputs / "b.onnx"))
                                    for h, w in ((32, 32), (24, 40))})
    # With crops (the default) a local network's programs are per crop shape, still each built once.
    built.clear()
    report = run_report(replace(config, crop=None, out=tmp_path / "cropped").resolve())
    assert report.failed == 0 and len(built) == len(set(built)) < 12


def test_the_batch_is_planned_per_shape_not_pinned(inputs, tmp_path, monkeypatch):
    # The model plans each input shape's batch from measured memory; a report that pinned the first
    # shape's batch (Model.batch_size) would skip that planning for a later, larger image.
    original_plan, original_build, built = Model.plan, Model.build, []

    def plan(self, fold, h, w, windows=1):
        if self.batch_size is not None:  # a batch was given: the model's own rule
            return original_plan(self, fold, h, w, windows)
        return Plan(1 if (h, w) == (32, 32) else 2)

    def build(self, batch, h, w, *rest, **kwargs):
        built.append((batch, h, w))
        return original_build(self, batch, h, w, *rest, **kwargs)

    monkeypatch.setattr(Model, "plan", plan)
    monkeypatch.setattr(Model, "build", build)
    Image.open(PHOTO).crop((0, 0, 80, 48)).save(tmp_path / "other_size.png")
    config = ConfigValues(models=(str(inputs / "a.onnx"),),
                          images=(str(inputs / "images" / "one.png"), str(tmp_path / "other_size.png")),
                          windows=(WindowSpec(8, 8), WindowSpec(20, 12)), out=tmp_path / "r", fold=4, crop=False)
    assert run_report(config.resolve()).failed == 0
    assert sorted(set(built)) == [(1, 32, 32), (2, 24, 40)]


class _Events(ReportListener):
    def __init__(self):
        self.events = []

    def group_started(self, cases, index, count):
        self.events.append(("group", len(cases), index, count))

    def case_started(self, case, index, count):
        self.events.append(("case", case.x, index, count))

    def case_finished(self, row):
        self.events.append(("finished", row.case.x, row.status))


def _spy_run_windows(monkeypatch) -> list:
    """Record every call of LAM's stages (`methods.lam.run.run_windows`; the report's LAM cases and
    `Analyzer.run` go through it): image, windows."""
    calls, original = [], lam_run.run_windows

    def spy(model, image, windows, *args, **kwargs):
        calls.append((Path(image).name, [(w.x, w.y, w.size) for w in windows]))
        return original(model, image, windows, *args, **kwargs)

    monkeypatch.setattr(lam_run, "run_windows", spy)
    return calls


def test_windows_of_one_image_are_computed_together(inputs, tmp_path, monkeypatch):
    calls = _spy_run_windows(monkeypatch)
    windows = ((8, 8, 16), (30, 20, 12), (40, 36, 20))  # sizes differ: each window keeps its own
    out = tmp_path / "rep"
    config = ConfigValues(models=(str(inputs / "a.onnx"),), images=(str(inputs / "images"),),
                          windows=tuple(WindowSpec(*w) for w in windows), out=out, fold=4)
    events = _Events()
    report = run_report(config.resolve(), events)
    assert report.failed == 0 and report.computed == 6
    assert calls == [("one.png", list(windows)), ("two.png", list(windows))]  # one call per image
    assert [e for e in events.events if e[0] == "group"] == [("group", 3, 1, 6), ("group", 3, 4, 6)]
    assert [e[0] for e in events.events].count("finished") == 6
    # The same maps as each window analysed alone.
    calls.clear()
    alone = Analyzer(inputs / "a.onnx")
    for row in report.rows:
        c = row.case
        expected = alone.run(c.image, (c.x, c.y), c.size, fold=4)
        np.testing.assert_allclose(np.load(out / row.folder / "attribution.npy"), expected.attribution,
                                   rtol=0, atol=1e-6)
        data = json.loads((out / row.folder / "result.json").read_text())
        assert data["window"] == {"x": c.x, "y": c.y, "size": c.size}
        assert data["group"]["windows"] == 3 and data["seconds"] == pytest.approx(data["group"]["seconds"] / 3,
                                                                                  abs=1e-3)
    assert len(calls) == 6 and all(len(w) == 1 for _, w in calls)
    # Resumed: only the pending cases of an image are computed, still in one call.
    calls.clear()
    for row in report.rows[:2]:
        shutil.rmtree(out / row.folder)
    again = run_report(config.resolve())
    assert again.computed == 2 and again.reused == 4
    assert calls == [("one.png", list(windows[:2]))]
    calls.clear()
    assert run_report(config.resolve()).reused == 6 and calls == []


def test_a_group_that_fails_is_run_one_case_at_a_time(inputs, tmp_path, monkeypatch):
    calls = _spy_run_windows(monkeypatch)
    config = ConfigValues(models=(str(inputs / "a.onnx"),), images=(str(inputs / "images" / "one.png"),),
                          windows=(WindowSpec(8, 8), WindowSpec(500, 500), WindowSpec(20, 12)),
                          out=tmp_path / "rep", fold=3)
    events = _Events()
    report = run_report(config.resolve(), events)
    assert [w for _, w in calls] == [[(8, 8, 16), (500, 500, 16), (20, 12, 16)],
                                     [(8, 8, 16)], [(500, 500, 16)], [(20, 12, 16)]]
    assert [r.status for r in report.rows] == ["ok", "failed", "ok"] and report.computed == 2
    assert "outside" in report.rows[1].message
    assert events.events == [("group", 3, 1, 3), ("case", 8, 1, 3), ("finished", 8, "ok"),
                             ("case", 500, 2, 3), ("finished", 500, "failed"),
                             ("case", 20, 3, 3), ("finished", 20, "ok")]
    data = json.loads((tmp_path / "rep" / report.rows[0].folder / "result.json").read_text())
    assert data["group"]["windows"] == 1  # computed alone: its seconds are its own


def test_failing_case_is_recorded_and_the_others_go_on(inputs, tmp_path):
    out = tmp_path / "rep"
    r = run_cli("report", "--model", inputs / "a.onnx", "--model", tmp_path / "broken.onnx", "--image",
                inputs / "images" / "one.png", "--window", 8, 8, "--window", 500, 500, "--fold", 3, "--out", out)
    assert r.returncode == 2 and "broken.onnx" in r.stderr  # a missing model is bad usage: nothing runs
    assert not (out / "cases").exists()
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a model" * 4)
    r = run_cli("report", "--model", inputs / "a.onnx", "--model", tmp_path / "broken.onnx", "--image",
                inputs / "images" / "one.png", "--window", 8, 8, "--window", 500, 500, "--fold", 3, "--out", out)
    assert r.returncode == 1, r.stderr
    rows = {(Path(r["model"]).name, r["x"]): r for r in csv.DictReader((out / "results.csv").open())}
    assert rows[("a.onnx", "8")]["status"] == "ok"
    assert rows[("a.onnx", "500")]["status"] == "failed" and "outside" in rows[("a.onnx", "500")]["message"]
    assert all(rows[("broken.onnx", x)]["status"] == "failed" for x in ("8", "500"))
    assert "cannot read" in rows[("broken.onnx", "8")]["message"]
    assert "Failed cases" in r.stdout and "1 computed" in r.stdout
    error = json.loads((out / rows[("a.onnx", "500")]["folder"] / "error.json").read_text())
    assert error["status"] == "failed" and "outside" in error["message"]
    # The failed cases are retried on the next run, the finished one is not.
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", inputs / "images" / "one.png",
                "--window", 8, 8, "--window", 500, 500, "--fold", 3, "--out", out, "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["run"] == {"cases": 2, "computed": 0, "reused": 1, "failed": 1, "pending": 0}


def _case_folders(out: Path) -> list[Path]:
    cases = out / "cases"
    return sorted(p for p in cases.iterdir() if not p.name.startswith(".")) if cases.is_dir() else []


def test_resumes_after_a_kill(tmp_path):
    # The windows of an image are computed together, the images one after the other, and slowly enough
    # (seconds) that the run is still busy on the second image when the first image's cases are written.
    onnx.save(tiny_sr(2, features=32, seed=2), tmp_path / "m.onnx")
    images = tmp_path / "hr"
    images.mkdir()
    Image.open(PHOTO).crop((0, 0, 128, 128)).save(images / "a.png")
    Image.open(PHOTO).crop((100, 60, 228, 188)).save(images / "b.png")
    out = tmp_path / "rep"
    windows = [arg for i in range(6) for arg in ("--window", 4 + 16 * i, 40)]
    args = ["report", "--model", tmp_path / "m.onnx", "--image", images, *windows, "--fold", 20, "--out", out]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "onnxlam", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any((f / "result.json").is_file() for f in _case_folders(out)):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed; make the cases slower"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    finished = {f.name: (f / "result.json").stat().st_mtime_ns for f in _case_folders(out)}
    assert 1 <= len(finished) < 12
    for name in finished:  # every visible case folder is complete: nothing half-written
        data = json.loads((out / "cases" / name / "result.json").read_text())
        assert data["case"]["fold"] == 20 and (out / "cases" / name / "panel.png").is_file()
    json.loads((out / "results.json").read_text())  # the aggregate is whole too

    r = run_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)["run"]
    assert run["reused"] == len(finished) and run["computed"] == 12 - len(finished) and run["pending"] == 0
    for name, mtime in finished.items():  # skipped, not rewritten
        assert (out / "cases" / name / "result.json").stat().st_mtime_ns == mtime
    assert len(_case_folders(out)) == 12
    leftovers = [p.name for p in list(out.iterdir()) + list((out / "cases").iterdir()) if p.name.startswith(".")]
    assert leftovers == []
    # Same command again: everything is reused.
    r = run_cli(*args, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["run"]["reused"] == 12


def test_changed_parameters_or_inputs_are_recomputed(inputs, tmp_path):
    out = tmp_path / "rep"
    first = run_report(_config(inputs, out).resolve())
    assert first.computed == 8
    again = run_report(_config(inputs, out).resolve())
    assert again.computed == 0 and again.reused == 8
    other_sigma = run_report(_config(inputs, out, sigma=2.0).resolve())
    assert other_sigma.computed == 8 and other_sigma.reused == 0
    assert run_report(_config(inputs, out, sigma=2.0, crop=False).resolve()).computed == 0  # exact either way
    with_context = run_report(_config(inputs, out, sigma=2.0, context=3).resolve())
    assert with_context.computed == 8
    assert json.loads((out / "results.json").read_text())["options"]["context"] == 3
    image = tmp_path / "img.png"
    Image.open(PHOTO).crop((0, 0, 64, 64)).save(image)
    config = ConfigValues(models=(str(inputs / "a.onnx"),), images=(str(image),), windows=(WindowSpec(8, 8),),
                          out=out, fold=4)
    assert run_report(config.resolve()).computed == 1
    Image.open(PHOTO).crop((10, 0, 74, 64)).save(image)  # same name, other pixels
    assert run_report(config.resolve()).computed == 1


def test_a_second_run_into_the_same_folder_is_refused(inputs, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    with exclusive(out):
        with pytest.raises(InputError, match="another onnxlam report"):
            run_report(_config(inputs, out).resolve())


def test_toml_config_and_flags_overriding_it(inputs, tmp_path):
    (tmp_path / "windows.csv").write_text("x,y,size\n# a comment\n8,8\n20,10,12\n")
    config = tmp_path / "report.toml"
    config.write_text(f'models = ["{inputs / "a.onnx"}"]\nimages = ["{inputs / "images" / "one.png"}"]\n'
                      'windows_file = "windows.csv"\nwindows = [[2, 3]]\nout = "from-toml"\nfold = 3\n'
                      'sigma = 1\npath = "blur"\nmax_memory = "3G"\n')
    values = load_config(config)
    assert values.windows_file == tmp_path / "windows.csv" and values.out == tmp_path / "from-toml"
    assert values.max_memory == "3G"
    r = run_cli("report", config, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "from-toml" / "results.json").read_text())
    assert data["options"]["fold"] == 3 and data["options"]["sigma"] == 1.0
    assert data["options"]["max_memory"] == "3G"
    first = json.loads((tmp_path / "from-toml" / data["cases"][0]["folder"] / "result.json").read_text())
    assert first["memory"]["limit"] == 3 << 30
    assert [(c["window"]["x"], c["window"]["size"]) for c in data["cases"]] == [(2, 16), (8, 16), (20, 12)]
    # Flags override the file: windows, fold and the output folder.
    r = run_cli("report", config, "--window", 4, 4, "--fold", 2, "--out", tmp_path / "flags")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "flags" / "results.json").read_text())
    assert data["options"]["fold"] == 2 and [c["window"]["x"] for c in data["cases"]] == [4]


@pytest.mark.parametrize("text, needle", [
    ('models = ["a.onnx"]\nfolds = 3\n', "unknown key folds"),
    ('models = ["a.onnx"\n', "not valid TOML"),
    ('windows = [[1]]\n', "`windows` must be"),
    ('fold = "three"\n', "`fold` has the wrong type"),
    ('max_memory = [24]\n', "`max_memory` has the wrong type"),
])
def test_bad_toml_is_a_usage_error(text, needle, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    r = run_cli("report", config)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_windows_file_and_usage_errors(inputs, tmp_path):
    wf = tmp_path / "w.csv"
    wf.write_text("10, 12\n\n3,4,8\n")
    assert read_windows_file(wf) == [WindowSpec(10, 12), WindowSpec(3, 4, 8)]
    wf.write_text("10,12\nten,4\n")
    with pytest.raises(InputError, match=r"w.csv:2"):
        read_windows_file(wf)
    image = inputs / "images" / "one.png"
    for args, needle in [
        (["--image", image, "--window", 1, 1], "no model"),
        (["--model", inputs / "a.onnx", "--window", 1, 1], "no image"),
        (["--model", inputs / "a.onnx", "--image", image], "no window"),
        (["--model", inputs / "a.onnx", "--image", tmp_path / "none.png", "--window", 1, 1], "image not found"),
        (["--model", inputs / "a.onnx", "--image", image, "--window", 1, 1, "--fold", 0], "--fold"),
        (["--model", inputs / "a.onnx", "--image", image, "--windows-file", wf], "w.csv:2"),
        (["--model", inputs / "a.onnx", "--image", tmp_path, "--window", 1, 1], "holds no image"),
        (["--model", inputs / "a.onnx", "--image", image, "--window", 1, 1, "--max-memory", "lots"],
         "--max-memory: cannot read 'lots'"),
        (["--model", inputs / "a.onnx", "--image", image, "--window", 1, 1, "--max-memory", "0"],
         "--max-memory must be positive"),
    ]:
        r = run_cli("report", *args, "--out", tmp_path / "never")
        assert r.returncode == 2 and r.stderr.startswith("error:") and needle in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "never").exists()


def test_max_memory_reaches_every_case(inputs, tmp_path):
    out = tmp_path / "rep"
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", inputs / "images", "--window", 8, 8,
                "--window", 20, 12, "--fold", 2, "--max-memory", "2.5G", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["options"]["max_memory"] == "2.5G" and len(data["cases"]) == 4
    for case in data["cases"]:
        assert json.loads((out / case["folder"] / "result.json").read_text())["memory"]["limit"] == int(2.5 * (1 << 30))
    # A resource limit, not a parameter of the map: another limit reuses the cases.
    r = run_cli("report", "--model", inputs / "a.onnx", "--image", inputs / "images", "--window", 8, 8,
                "--window", 20, 12, "--fold", 2, "--max-memory", "3G", "--out", out, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["run"]["reused"] == 4


def test_html_is_self_contained_and_escapes_file_names(inputs, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.open(PHOTO).crop((40, 40, 104, 104)).save(images / EVIL, format="PNG")
    model = tmp_path / 'net "q" <b>.onnx'
    model.write_bytes((inputs / "a.onnx").read_bytes())
    out = tmp_path / "rep&<out>"
    r = run_cli("report", "--model", model, "--image", images, "--window", 8, 8, "--window", 900, 900,
                "--fold", 3, "--out", out)
    assert r.returncode == 1, r.stderr  # the second window fails, with the file name in its label
    page = (out / "index.html").read_text()
    assert "<img src=x" not in page and "onerror=alert(1)>" not in page and "<b>" not in page
    assert html.escape(EVIL) in page and html.escape('net "q" <b>') in page
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;.png" in page
    # Self-contained: no URL with a scheme, one inline script, every image relative and present.
    assert "://" not in page and page.count("<script") == 1 and "<link" not in page
    import re
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 2 and srcs[0] == "finding.png"  # the dataset figure, then the one case's panel
    from urllib.parse import unquote
    assert all((out / unquote(html.unescape(src))).is_file() for src in srcs)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {Path(r["image"]).name for r in rows} == {EVIL}


def test_leftovers_of_a_killed_run_are_removed_and_nothing_else(inputs, tmp_path):
    out = tmp_path / "rep"
    (out / "cases" / ".a-1-2-16-x.k3j.tmp").mkdir(parents=True)
    (out / "cases" / ".a-1-2-16-x.old-99").mkdir()
    (out / ".results.json.k3j.tmp").write_text("{")
    (out / ".mine.tmp").write_text("the user's")
    (out / "notes.txt").write_text("the user's")
    run_report(ConfigValues(models=(str(inputs / "a.onnx"),), images=(str(inputs / "images" / "one.png"),),
                            windows=(WindowSpec(8, 8),), out=out, fold=2).resolve())
    assert sorted(p.name for p in out.iterdir()) == [".mine.tmp", "cases", "finding.png", "index.html",
                                                     "notes.txt", "results.csv", "results.json"]
    assert [p.name for p in (out / "cases").iterdir() if p.name.startswith(".")] == []


def test_repeated_window_parses_without_the_command_line_rewrite(inputs, tmp_path):
    # `cli.main` rewrites repeated --window into --more-window; `app` called directly must cope alone.
    from typer.testing import CliRunner

    from onnxlam.cli import app

    r = CliRunner().invoke(app, ["report", "--model", str(inputs / "a.onnx"), "--image",
                                 str(inputs / "images" / "one.png"), "--window", "8", "8", "--window", "20", "12",
                                 "--more-window", "4,4", "--fold", "2", "--out", str(tmp_path / "r"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [(c["window"]["x"], c["window"]["y"]) for c in data["cases"]] == [(8, 8), (20, 12), (4, 4)]


def test_an_ok_case_carries_its_warnings_into_the_table():
    """A case cut to fit --max-memory is ok, and its row says so (results.csv and index.html show it)."""
    from onnxlam.batch.report import Case
    from onnxlam.batch.report.store import row_from_result

    note = "one path step on the LR 512×512 input needs about 38 GiB, over the memory limit 16 GiB: analysing …"
    case = Case("m.onnx", "i.png", 1, 2, 16)
    row = row_from_result(case, "f", {"di": 1.0, "gini": 0.5, "warnings": [note]}, reused=False)
    assert row.status == "ok" and row.message == note
    assert row_from_result(case, "f", {"di": 1.0, "gini": 0.5}, reused=True).message == ""


def test_aggregate_rewrites_are_bounded(monkeypatch):
    """`AggregateWriter`: at most every 2 s, and at most a tenth of the time once a rewrite is slow
    (a clock and a rewrite cost driven here)."""
    from onnxlam.batch.report import aggregates as store

    clock = [0.0]
    rewrites = []

    def slow_rewrite(report):
        rewrites.append(clock[0])
        clock[0] += cost[0]
    monkeypatch.setattr(store.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(store, "write_aggregates", slow_rewrite)
    cost = [0.01]
    writer = store.AggregateWriter()
    for _ in range(100):  # a case every 0.5 s, cheap rewrites: one every 2 s
        clock[0] += 0.5
        writer.maybe(None)
    assert 20 <= len(rewrites) <= 25 and min(b - a for a, b in zip(rewrites, rewrites[1:])) > 2.0
    rewrites.clear()
    cost[0] = 1.0
    for _ in range(200):  # rewrites of 1 s: no more than a tenth of the time
        clock[0] += 0.5
        writer.maybe(None)
    spent = len(rewrites) * cost[0]
    assert spent <= 0.1 * clock[0] and len(rewrites) >= 5
    writer.now(None)
    assert len(rewrites) * cost[0] == spent + 1.0  # the final one always


def test_a_resumed_report_shows_when_it_was_first_started(inputs, tmp_path):
    from onnxlam.batch.report import ConfigValues, WindowSpec, run_report

    out = tmp_path / "rep"
    config = ConfigValues(models=(str(inputs / "a.onnx"),), images=(str(inputs / "images" / "one.png"),),
                          windows=(WindowSpec(8, 8),), out=out, fold=2).resolve()
    run_report(config)
    data = json.loads((out / "results.json").read_text())
    assert data["first_started"] == data["started"]
    data["first_started"] = data["started"] = "2026-01-02T03:04:05+00:00"  # as if run long ago
    (out / "results.json").write_text(json.dumps(data))
    again = run_report(config)
    data = json.loads((out / "results.json").read_text())
    assert data["first_started"] == "2026-01-02T03:04:05+00:00" and data["started"] == again.started
    page = (out / "index.html").read_text()
    assert "first started 2026-01-02T03:04:05+00:00 · this run " + again.started in page
