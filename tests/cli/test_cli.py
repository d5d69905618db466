"""The command line and the engine's contract: outputs, JSON, programs, caches, conventions, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

import onnxlam
from tests.onnx_models import tiny_sr

from tests.clitools import PHOTO, REPO, run_cli

pytestmark = pytest.mark.integration
FAST = ["--fold", "6"]



@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    paths = {}
    for name, model in {"x2": tiny_sr(2), "x3gray": tiny_sr(3, channels=1, seed=1),
                        "bgr255": tiny_sr(2, value_range=255.0, bgr=True)}.items():
        paths[name] = d / f"{name}.onnx"
        onnx.save(model, paths[name])
    return paths


@pytest.fixture(scope="module")
def hr_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "hr.png"
    Image.open(PHOTO).crop((40, 40, 105, 103)).save(path)  # 65×63: not a multiple of the scale
    return path


def test_lam_writes_every_output(models, hr_image, tmp_path):
    out = tmp_path / "out"
    r = run_cli("lam", models["x2"], hr_image, "--window", 20, 24, "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    names = {p.name for p in out.iterdir()}
    assert names == {"attribution.npy", "gradient.npy", "result.json", "sr.png", "window.png", "lam.png",
                     "lam_blend.png", "kde_blend.png", "panel.png"}
    res = json.loads((out / "result.json").read_text())
    for key in ("di", "gini", "window", "scale", "lr_size", "path", "sigma", "fold", "kernel_size", "model",
                "model_sha256", "image", "provider", "seconds", "completeness", "nan_gradients"):
        assert key in res
    assert res["scale"] == 2 and res["lr_size"] == [31, 32]  # 65×63 cropped to 64×62, halved
    assert res["window"] == {"x": 20, "y": 24, "size": 16}
    M, A = np.load(out / "attribution.npy"), np.load(out / "gradient.npy")
    assert M.shape == (31, 32) and M.dtype == np.float32 and A.shape == (3, 31, 32)
    assert abs(res["di"] - (1 - res["gini"]) * 100) < 1e-9
    assert Image.open(out / "lam.png").size == (64, 62)
    assert res["model_sha256"] == __import__("hashlib").sha256(models["x2"].read_bytes()).hexdigest()


def test_json_is_alone_on_stdout_and_matches_file(models, hr_image, tmp_path):
    r = run_cli("lam", models["x2"], hr_image, "--window", 3, 5, "--out", tmp_path / "o", "--json", *FAST)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads((tmp_path / "o" / "result.json").read_text())


def test_default_out_dir(models, hr_image, tmp_path):
    """Default options: lam-MODEL-IMAGE-X-Y; other options add a tag of them, so that runs with
    different options (a noise tunnel, another --fold or --size) never replace each other's folder,
    while a rerun with the same options writes the same one."""
    r = run_cli("lam", models["x2"], hr_image, "--window", 3, 5, "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "lam-x2-hr-3-5" / "result.json").exists()
    for flags in (FAST, ["--fold", "7"], ["--size", "8", *FAST], ["--noise-tunnel", "smoothgrad", "--samples", "2",
                                                                   *FAST]):
        r = run_cli("lam", models["x2"], hr_image, "--window", 3, 5, *flags, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    folders = sorted(p.name for p in tmp_path.iterdir() if (p / "result.json").exists())
    assert len(folders) == 5, folders
    assert [f for f in folders if f.startswith("smoothgrad-x2-hr-3-5-")], folders
    r = run_cli("lam", models["x2"], hr_image, "--window", 3, 5, *FAST, cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if (p / "result.json").exists()) == folders


def test_runs_with_torch_unimportable(models, hr_image, tmp_path):
    blocker = tmp_path / "block"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    r = run_cli("lam", models["x2"], hr_image, "--window", 3, 5, "--out", tmp_path / "o", *FAST,
                env_extra={"PYTHONPATH": f"{REPO}{os.pathsep}{blocker}"})
    assert r.returncode == 0, r.stderr
    check = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, "PYTHONPATH": str(blocker)},
                           capture_output=True)
    assert check.returncode != 0


def test_value_range_and_channel_order_from_metadata(models, hr_image):
    plain = onnxlam.analyze(models["x2"], hr_image, window=(10, 12), fold=6)
    converted = onnxlam.analyze(models["bgr255"], hr_image, window=(10, 12), fold=6)
    assert converted.value_range == 255 and converted.channel_order == "bgr"
    np.testing.assert_allclose(converted.attribution, plain.attribution, atol=1e-5)
    np.testing.assert_allclose(converted.gradient, plain.gradient, rtol=1e-4, atol=1e-6)
    assert abs(converted.di - plain.di) < 1e-3
    # Overriding the metadata with the wrong convention changes the answer.
    wrong = onnxlam.analyze(models["bgr255"], hr_image, window=(10, 12), fold=6, value_range=1, bgr=False)
    assert np.abs(wrong.gradient - plain.gradient).max() > 1e-3


def test_gray_model_gets_luma_and_rgb_model_gets_gray_expanded(models, tmp_path):
    rgb = np.asarray(Image.open(PHOTO))[:48, :48]
    res = onnxlam.analyze(models["x3gray"], rgb, window=(4, 4), lr=True, fold=4)
    luma = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
    np.testing.assert_allclose(res.lr_image[0], luma)
    gray_file = tmp_path / "gray.png"
    Image.fromarray(rgb[..., 0]).save(gray_file)
    res = onnxlam.analyze(models["x2"], gray_file, window=(4, 4), lr=True, fold=4)
    assert res.lr_image.shape == (3, 48, 48)
    np.testing.assert_array_equal(res.lr_image[0], res.lr_image[2])


def test_sixteen_bit_and_alpha_images(models, tmp_path):
    a16 = (np.random.default_rng(0).random((20, 22)) * 65535).astype(np.uint16)
    p16 = tmp_path / "g16.png"
    Image.fromarray(a16).save(p16)
    res = onnxlam.analyze(models["x2"], p16, window=(2, 2), lr=True, fold=3)
    np.testing.assert_allclose(res.lr_image[1], a16 / 65535.0, atol=1e-7)
    rgba = np.dstack([np.asarray(Image.open(PHOTO))[:20, :20], np.full((20, 20), 7, np.uint8)])
    pa = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(pa)
    res = onnxlam.analyze(models["x2"], pa, window=(2, 2), lr=True, fold=3)
    np.testing.assert_allclose(res.lr_image, rgba[..., :3].transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_float16_and_external_data_models(tmp_path, hr_image):
    base = tiny_sr(2, seed=3)
    half = onnx.ModelProto()
    half.CopyFrom(base)
    from onnx import numpy_helper
    for t in half.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    # The float32 twin with the same (rounded) weights: a float16 model analysed in float32 equals it.
    rounded = onnx.ModelProto()
    rounded.CopyFrom(base)
    for t in rounded.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            v = numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(v, t.name))
    half_nodes = [helper.make_node("Cast", ["image"], ["image16"], to=TensorProto.FLOAT16)]
    half.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    half.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    del half_nodes  # the whole graph is float16 already: inputs, weights and outputs
    onnx.save(half, tmp_path / "half.onnx")
    onnx.save(rounded, tmp_path / "rounded.onnx")
    onnx.save(base, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    a = onnxlam.analyze(tmp_path / "half.onnx", hr_image, window=(8, 8), fold=5)
    b = onnxlam.analyze(tmp_path / "rounded.onnx", hr_image, window=(8, 8), fold=5)
    np.testing.assert_allclose(a.attribution, b.attribution, atol=1e-5)
    ext = onnxlam.analyze(tmp_path / "ext.onnx", hr_image, window=(8, 8), fold=5)
    direct = onnxlam.analyze(_saved(base, tmp_path / "direct.onnx"), hr_image, window=(8, 8), fold=5)
    np.testing.assert_array_equal(ext.attribution, direct.attribution)


def _saved(model, path):
    onnx.save(model, path)
    return path


def test_export_and_program_round_trip(models, hr_image, tmp_path):
    prog = tmp_path / "prog.onnx"
    r = run_cli("export", models["x2"], "--size", 31, 32, "--batch", 3, "-o", prog)
    assert r.returncode == 0, r.stderr
    meta = {p.key: p.value for p in onnx.load(prog).metadata_props}
    assert meta["onnxlam.input_shape"] == "3,3,31,32" and meta["onnxlam.scale"] == "2"
    assert meta["onnxlam.source_sha256"] == __import__("hashlib").sha256(models["x2"].read_bytes()).hexdigest()
    assert float(meta["onnxlam.fd_relative_error"]) < 1e-2
    with_prog = onnxlam.analyze(models["x2"], hr_image, window=(9, 7), fold=7, program=prog)
    without = onnxlam.analyze(models["x2"], hr_image, window=(9, 7), fold=7, batch_size=2)
    assert with_prog.batch_size == 3
    assert any("--program: the whole image at the exported program's own batch" in w for w in with_prog.warnings)
    assert not any("--program" in w for w in without.warnings)
    np.testing.assert_allclose(with_prog.attribution, without.attribution, atol=1e-6)
    # A program of another model, or another size, is refused.
    r = run_cli("lam", models["bgr255"], hr_image, "--window", 3, 3, "--program", prog, "--out", tmp_path / "x")
    assert r.returncode == 2 and "another model" in r.stderr
    r = run_cli("lam", models["x2"], PHOTO, "--window", 3, 3, "--program", prog, "--out", tmp_path / "y")
    assert r.returncode == 2 and "--size" in r.stderr


def test_corrupt_cache_entry_is_rebuilt(models, hr_image, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "cache"))
    first = onnxlam.analyze(models["x2"], hr_image, window=(5, 5), fold=4, batch_size=2)
    # the batch-2 program, and the batch-1 program of the same size its gradient check was run on
    entries = sorted((tmp_path / "cache" / "programs").glob("*.onnx"))
    assert [e.name.split("-")[1] for e in entries] == ["b1", "b2"]
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:-100] + b"\0" * 100)
    again = onnxlam.analyze(models["x2"], hr_image, window=(5, 5), fold=4, batch_size=2)
    np.testing.assert_array_equal(first.attribution, again.attribution)
    for entry in entries:
        record = json.loads(entry.with_suffix(".json").read_text())
        assert __import__("hashlib").sha256(entry.read_bytes()).hexdigest() == record["sha256"]


def test_batching_does_not_change_the_answer(models, hr_image):
    one = onnxlam.analyze(models["x2"], hr_image, window=(11, 13), fold=7, batch_size=1)
    four = onnxlam.analyze(models["x2"], hr_image, window=(11, 13), fold=7, batch_size=4)
    np.testing.assert_allclose(one.attribution, four.attribution, atol=1e-6)
    assert one.batch_size == 1 and four.batch_size == 4


def test_inspect(models):
    r = run_cli("inspect", models["x2"], "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["scale"] == 2 and info["dynamic"] == ["batch", "height", "width"]
    assert info["ops"]["Conv"] == 2 and info["ops_without_gradient"] == []
    assert info["parameters"] == 8 * 3 * 9 + 8 + 12 * 8 * 9 + 4 + 1 + 1 + 3
    r = run_cli("inspect", models["x2"])
    assert r.returncode == 0 and "DepthToSpace" in r.stdout


# --- bad input: exit 2, one line on stderr starting with "error:", nothing written -----------------

def _two_inputs(tmp_path):
    m = tiny_sr(2)
    m.graph.input.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, [1]))
    return _saved(m, tmp_path / "two.onnx")


def _custom_op(tmp_path):
    m = tiny_sr(2, extra_nodes=[helper.make_node("Sharpen", ["sr_unit"], ["sharp"], domain="com.example",
                                                 name="my_sharpen")], extra_opsets=[("com.example", 1)])
    return _saved(m, tmp_path / "custom.onnx")


def _no_rule(tmp_path):
    rois = onnx.numpy_helper.from_array(np.array([[0, 0, 0, 4, 4]], np.float32), "rois")
    m = tiny_sr(2)
    m.graph.initializer.append(rois)
    node = helper.make_node("MaxRoiPool", ["sr_unit", "rois"], ["pooled"], pooled_shape=[2, 2], name="roi")
    m.graph.node.insert(len(m.graph.node) - 2, node)
    return _saved(m, tmp_path / "noroi.onnx")


@pytest.mark.parametrize("case, needle", [
    ("missing model", "nope.onnx"),
    ("corrupt model", "cannot read"),
    ("two inputs", "2 inputs"),
    ("custom op", "com.example.Sharpen"),
    ("window outside", "outside"),
    ("negative window", "outside"),
    ("fold 0", "--fold"),
    ("negative sigma", "--sigma"),
    ("unreadable image", "cannot read image"),
    ("missing image", "image not found"),
    ("out is a file", "is a file"),
    ("unknown path", "unknown path"),
    ("bad value range", "--value-range"),
])
def test_bad_input(case, needle, models, hr_image, tmp_path):
    model, image, extra = models["x2"], hr_image, []
    window = ["--window", 3, 3]
    if case == "missing model":
        model = tmp_path / "nope.onnx"
    elif case == "corrupt model":
        model = tmp_path / "bad.onnx"
        model.write_bytes(b"\x08\x07garbage" * 10)
    elif case == "two inputs":
        model = _two_inputs(tmp_path)
    elif case == "custom op":
        model = _custom_op(tmp_path)
    elif case == "window outside":
        window = ["--window", 60, 3]
    elif case == "negative window":
        window = ["--window", -1, 3]
    elif case == "fold 0":
        extra = ["--fold", 0]
    elif case == "negative sigma":
        extra = ["--sigma", -0.5]
    elif case == "unreadable image":
        image = tmp_path / "bad.png"
        image.write_bytes(b"not a png")
    elif case == "missing image":
        image = tmp_path / "none.png"
    elif case == "out is a file":
        (tmp_path / "out").write_text("x")
    elif case == "unknown path":
        extra = ["--path", "zigzag"]
    elif case == "bad value range":
        extra = ["--value-range", 7]
    out = tmp_path / "out"
    r = run_cli("lam", model, image, *window, "--out", out, "--fold", 3, *extra)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    if case != "out is a file":
        assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))


def test_op_without_gradient_rule_is_named(tmp_path, hr_image):
    r = run_cli("lam", _no_rule(tmp_path), hr_image, "--window", 3, 3, "--fold", 3, "--out", tmp_path / "o")
    assert r.returncode == 2 and "MaxRoiPool" in r.stderr and "'roi'" in r.stderr, r.stderr


def test_debug_shows_traceback(models, hr_image, tmp_path):
    r = run_cli("lam", models["x2"], hr_image, "--window", 500, 3, "--out", tmp_path / "o", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_nan_output_is_an_error_not_a_map(tmp_path, hr_image):
    m = tiny_sr(2, extra_nodes=[helper.make_node("Log", ["sr_unit"], ["logged"])])  # log of negatives
    path = _saved(m, tmp_path / "nan.onnx")
    r = run_cli("lam", path, hr_image, "--window", 3, 3, "--fold", 3, "--out", tmp_path / "o")
    assert r.returncode == 1 and "NaN" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_cuda_without_gpu_is_a_clear_error(models, hr_image, tmp_path):
    from onnxlam.engine.runtime import cuda_available
    if cuda_available():
        pytest.skip("this machine has a usable GPU; the error path needs one without")
    r = run_cli("lam", models["x2"], hr_image, "--window", 3, 3, "--device", "cuda", "--out", tmp_path / "o")
    assert r.returncode == 2 and "no usable GPU" in r.stderr


def test_fixed_size_model_rejects_other_sizes(tmp_path, hr_image):
    m = tiny_sr(2)
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_value = 1
    inp = m.graph.input[0].type.tensor_type.shape.dim
    inp[2].dim_value, inp[3].dim_value = 20, 20
    path = _saved(m, tmp_path / "fixed.onnx")
    r = run_cli("lam", path, hr_image, "--window", 3, 3, "--fold", 3, "--out", tmp_path / "o")
    assert r.returncode == 2 and "20×20 only" in r.stderr, r.stderr
    ok = onnxlam.analyze(path, np.asarray(Image.open(PHOTO))[:40, :40], window=(3, 3), fold=3)
    assert ok.lr_size == (20, 20)


def test_several_windows_share_a_forward_and_get_a_folder_each(models, hr_image, tmp_path):
    out = tmp_path / "multi"
    r = run_cli("lam", models["x2"], hr_image, "--window", 3, 5, "--window", 30, 20, "--window", 40, 2,
                "--size", 8, "--out", out, "--json", *FAST)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [d["window"] for d in data] == [{"x": 3, "y": 5, "size": 8}, {"x": 30, "y": 20, "size": 8},
                                           {"x": 40, "y": 2, "size": 8}]
    for d in data:
        w = d["window"]
        folder = out / f"window-{w['x']}-{w['y']}-8"
        single = onnxlam.analyze(models["x2"], hr_image, window=(w["x"], w["y"]), size=8, fold=6)
        np.testing.assert_allclose(np.load(folder / "attribution.npy"), single.attribution, atol=1e-6)
        assert abs(json.loads((folder / "result.json").read_text())["di"] - single.di) < 1e-4
