"""Faults a user meets, each a clean outcome: one line on stderr, the documented exit code, no
traceback, nothing half-written. Broken models (a weight deleted from the file, a weight of the
wrong size) are named as such; an output folder that cannot be made or written is refused before
anything is computed; a full disk is said in one line, leaves no partial folder, and a report
records the case as failed and resumes it later."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxlam.core.errors import InputError
from onnxlam.graph.model import fix_input_shape, load_model
from onnxlam.graph.validity import undefined_inputs, weight_mismatches
from tests.clitools import REPO, run_cli
from tests.onnx_models import tiny_sr


def _saved(model: onnx.ModelProto, path):
    onnx.save(model, path)
    return path


def missing_weight(path):
    m = tiny_sr(2)
    del m.graph.initializer[[t.name for t in m.graph.initializer].index("w1")]
    return _saved(m, path)


def wrong_size_weight(path):
    m = tiny_sr(2)
    i = [t.name for t in m.graph.initializer].index("w1")
    m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.zeros((8, 4, 3, 3), np.float32), "w1"))
    return _saved(m, path)


def one_error_line(r, code: int, *needles: str) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in lines[0], r.stderr
    return lines[0]


def lam_args(model, image, out):
    return ("lam", model, image, "--window", 8, 8, "--fold", 3, "--out", out)


def report_args(model, image, out):
    return ("report", "--model", model, "--image", image, "--window", 8, 8, "--fold", 3, "--out", out)


# --- broken models ------------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("broken, needles", [
    (missing_weight, ("is not a valid model", "'w1'", "no initializer")),
    (wrong_size_weight, ("is not a valid model", "'w1'", "8×4×3×3", "4 input channels", "has 3")),
])
@pytest.mark.parametrize("command", ["lam", "cem", "erf"])
def test_a_broken_model_is_named_as_such(inputs, tmp_path, broken, needles, command):
    model = broken(tmp_path / "broken.onnx")
    image, out = inputs / "images" / "one.png", tmp_path / "out"
    args = {"lam": lam_args(model, image, out),
            "cem": ("cem", model, image, "--window", 8, 8, "--size", 16, "--out", out),
            "erf": ("erf", model, image, "--out", out)}[command]
    one_error_line(run_cli(*args), 2, *needles)
    assert not out.exists()


@pytest.mark.integration
def test_a_report_records_a_broken_model_in_its_own_words(inputs, tmp_path):
    model = missing_weight(tmp_path / "broken.onnx")
    out = tmp_path / "rep"
    r = run_cli(*report_args(model, inputs / "images" / "one.png", out), "--json")
    assert r.returncode in (1, 2) and "unexpected" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert "is not a valid model" in r.stderr + r.stdout


def test_the_graph_checks_name_each_fault_and_pass_every_correct_model():
    """Each check on a graph with one fault, and on correct graphs: the tiny SR networks and every
    network of the bundled collection (a false alarm would reject a correct model)."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)

    def graph(nodes, inits):
        return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                 opset_imports=[helper.make_opsetid("", 17)])

    w = lambda name, *shape: numpy_helper.from_array(np.ones(shape, np.float32), name)  # noqa: E731
    faults = {
        "bias": graph([helper.make_node("Conv", ["x", "w", "b"], ["y"])], [w("w", 4, 3, 1, 1), w("b", 5)]),
        "grouped": graph([helper.make_node("Conv", ["x", "w"], ["y"], group=3)], [w("w", 6, 2, 1, 1)]),
        "matmul": graph([helper.make_node("MatMul", ["x", "m"], ["y"])], [w("m", 7, 2)]),
        "broadcast": graph([helper.make_node("Add", ["x", "a"], ["y"])], [w("a", 1, 3, 5, 1)]),
        "batchnorm": graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
                           [w("s", 4), w("b", 3), w("m", 3), w("v", 3)]),
        "transpose": graph([helper.make_node("ConvTranspose", ["x", "w"], ["y"])], [w("w", 2, 4, 2, 2)]),
    }
    for name, model in faults.items():
        found = weight_mismatches(model)
        assert len(found) == 1, (name, found)
    assert "holds 5 values for 4 output channels" in weight_mismatches(faults["bias"])[0]
    assert "takes 6 input channels, but its input has 3" in weight_mismatches(faults["grouped"])[0]
    good = [tiny_sr(2), tiny_sr(4, features=16, bgr=True), tiny_sr(3, value_range=255.0)]
    good += [load_model(p) for p in sorted((REPO / "exported_models").glob("*.onnx"))]
    for model in good:
        assert undefined_inputs(model) == []
        fixed = fix_input_shape(model, (1, 3, 20, 20)) if len(model.graph.input) == 1 else model
        assert weight_mismatches(fixed) == [], model.graph.name
    loop_body = helper.make_graph([helper.make_node("Add", ["outer", "outer"], ["z"])], "body", [],
                                  [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None)])
    nested = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["outer"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=loop_body, else_branch=loop_body)], "g",
        [x, helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])], [y]))
    assert undefined_inputs(nested) == []  # a subgraph reads the outer graph's tensors
    nested.graph.node.pop(0)
    assert len(undefined_inputs(nested)) == 1 and "Add node reads 'outer'" in undefined_inputs(nested)[0]


# --- output folders -----------------------------------------------------------------------------

def _no_computing(monkeypatch):
    from onnxlam.engine import model as engine_model

    def refuse(*a, **k):
        raise AssertionError("a model was opened before --out was checked")

    monkeypatch.setattr(engine_model.Model, "__init__", refuse)


@pytest.mark.parametrize("command", ["lam", "report", "cem"])
def test_out_under_a_file_is_refused_before_computing(inputs, tmp_path, monkeypatch, command):
    _no_computing(monkeypatch)
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub"
    model, image = inputs / "a.onnx", inputs / "images" / "one.png"
    args = {"lam": lam_args(model, image, out), "report": report_args(model, image, out),
            "cem": ("cem", model, image, "--window", 8, 8, "--size", 16, "--out", out)}[command]
    one_error_line(run_cli(*args), 2, "is a file", "file")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("command", ["lam", "report"])
def test_an_unwritable_out_is_refused_before_computing(inputs, tmp_path, monkeypatch, command):
    _no_computing(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: the kernel's refusal, as a user would get it
        from onnxlam.core import files

        real = files.tempfile.mkdtemp

        def mkdtemp(*a, dir=None, **k):
            if dir is not None and str(dir).startswith(str(ro)):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(files.tempfile, "mkdtemp", mkdtemp)
    try:
        model, image = inputs / "a.onnx", inputs / "images" / "one.png"
        for out in (ro / "out", ro / "deeper" / "out"):
            args = lam_args(model, image, out) if command == "lam" else report_args(model, image, out)
            one_error_line(run_cli(*args), 2, "cannot write in", str(ro), "Permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_out_checks_create_nothing(tmp_path):
    from onnxlam.core.files import check_out_dir

    check_out_dir(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="is a file"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(InputError, match="so no folder can be made under it"):
        check_out_dir(tmp_path / "f" / "x" / "y")


# --- a full disk --------------------------------------------------------------------------------

def _disk_full_on_npy(monkeypatch):
    real = np.save

    def save(file, *a, **k):
        if str(file).endswith("gradient.npy"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real(file, *a, **k)

    monkeypatch.setattr(np, "save", save)


@pytest.mark.integration
def test_a_full_disk_is_one_line_and_leaves_no_folder(inputs, tmp_path, monkeypatch):
    _disk_full_on_npy(monkeypatch)
    out = tmp_path / "deep" / "out"
    line = one_error_line(run_cli(*lam_args(inputs / "a.onnx", inputs / "images" / "one.png", out)), 1,
                          "no space left on the device", "gradient.npy")
    assert "free some space" in line
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the parents it made


@pytest.mark.integration
def test_a_report_on_a_full_disk_records_the_case_and_resumes_it(inputs, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    args = report_args(inputs / "a.onnx", inputs / "images" / "one.png", out)
    with monkeypatch.context() as patch:
        _disk_full_on_npy(patch)
        r = run_cli(*args, "--json")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    row = json.loads((out / "results.json").read_text())["cases"][0]
    assert row["status"] == "failed" and row["message"].startswith("no space left on the device"), row
    r = run_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"]["computed"] == 1
