"""The sanity check (model-parameter randomisation, Adebayo et al. 2018): its statistics against scipy and
skimage, the cascading randomisation, the statistics recomputed from the saved stage maps, the control
that must fail, the command line against the Python API, the report, and one-line errors."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from scipy import ndimage
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

import onnxlam
from onnxlam.core.errors import InputError, NumericalError
from onnxlam.lam.result import Window
from onnxlam.methods.sanity import randomise, statistics
from onnxlam.methods.sanity.run import stage_model
from tests.clitools import PHOTO, REPO, run_cli
from tests.onnx_models import tiny_sr

TIMED = ("seconds",)
WINDOW = ("--window", 4, 4, "--size", 24)  # on small.png (LR 16×16) the maps fill the image


def no_skip_sr(seed: int = 0) -> onnx.ModelProto:
    """`tiny_sr(2)` without its nearest-neighbour skip: conv → ReLU → conv → DepthToSpace, every path weighted."""
    model = tiny_sr(2, seed=seed)
    nodes = [n for n in model.graph.node if n.op_type != "Resize"]
    for n in nodes:
        if n.op_type == "Add":
            n.CopyFrom(helper.make_node("Identity", ["ps"], ["sr_unit"]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def weightless_sr() -> onnx.ModelProto:
    """Nearest-neighbour ×2: a network without any weight-bearing layer."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph([helper.make_node("Resize", ["image", "", "scales"], ["sr"], mode="nearest")],
                              "nearest",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "h", "w"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H", "W"])], [scales])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def layered_graph() -> onnx.ModelProto:
    """Conv(W1, B1) → Gemm(W2, C) → MatMul(·, W3) → MatMuls of activations and of integers → Conv(W1 again)."""
    rng = np.random.default_rng(3)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
            (("W1", (3, 3, 1, 1)), ("B1", (3,)), ("W2", (4, 4)), ("C", (4,)), ("W3", (4, 4)))]
    init.append(numpy_helper.from_array(np.ones((2, 2), np.int64), "I64"))
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="first"),
             helper.make_node("Gemm", ["g_in", "W2", "C"], ["g"], name="gemm"),
             helper.make_node("MatMul", ["g", "W3"], ["m"], name="matmul"),
             helper.make_node("MatMul", ["m", "m"], ["mm"], name="activations"),
             helper.make_node("MatMul", ["I64", "I64"], ["ints"], name="integers"),
             helper.make_node("Conv", ["c1", "W1"], ["c2"], name="again")]
    graph = helper.make_graph(nodes, "layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("c2", TensorProto.FLOAT, None)], init)
    return helper.make_model(graph)


@pytest.fixture(scope="module")
def inputs(inputs):
    """conftest's folder and noskip.onnx, flat.onnx (no weights), small.png (32×32: LR 16×16), tiny.png (8×8)."""
    onnx.save(no_skip_sr(), inputs / "noskip.onnx")
    onnx.save(weightless_sr(), inputs / "flat.onnx")
    photo = Image.open(PHOTO)
    photo.crop((60, 60, 92, 92)).save(inputs / "small.png")
    photo.crop((60, 60, 68, 68)).save(inputs / "tiny.png")
    return inputs


def _comparable(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in TIMED}


# --------------------------------------------------------------------------------------- statistics
def maps(kind: str, seed: int = 0, shape=(16, 20)):
    """Two maps of `kind`: random, tied (quantised), sparse (mostly zero), anti-correlated, blobs (float64)."""
    rng = np.random.default_rng(seed)
    a, b = rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32)
    if kind == "ties":
        a, b = np.round(a * 4) / 4, np.round((a + 0.3 * b) * 3) / 3
    elif kind == "sparse":
        a, b = a * (a > 0.8), (a + 0.2 * b) * (b > 0.6)
    elif kind == "anti":
        b = (1 - a + 0.05 * b).astype(np.float32)
    elif kind == "blobs":
        rows, cols = np.indices(shape)
        a = np.exp(-((rows - 5.0) ** 2 + (cols - 8.0) ** 2) / 10.0)
        b = np.exp(-((rows - 7.0) ** 2 + (cols - 9.0) ** 2) / 14.0) + 0.01 * rng.random(shape)
    return a, b


KINDS = ("random", "ties", "sparse", "anti", "blobs")


@pytest.mark.parametrize("kind", KINDS)
def test_spearman_equals_scipy(kind):
    a, b = maps(kind)
    assert statistics.spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
    outside = statistics.footprint(Window(6, 4, 10), 2, a.shape).outside(a.shape)
    assert statistics.spearman(a[outside], b[outside]) == pytest.approx(
        spearmanr(a[outside], b[outside]).statistic, abs=1e-12)
    assert statistics.spearman(a, a) == pytest.approx(1.0, abs=1e-12)


def test_spearman_is_undefined_for_a_constant_map_and_refuses_nan():
    a, _ = maps("random")
    assert statistics.spearman(a, np.zeros_like(a)) is None
    assert statistics.spearman(a.ravel()[:1], a.ravel()[1:2]) is None
    with pytest.raises(NumericalError, match="NaN or inf"):
        statistics.spearman(a, np.where(a > 0.5, np.nan, a))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(16, 20), (7, 9)])
def test_ssim_equals_skimage(kind, shape):
    a, b = maps(kind, shape=shape)
    assert statistics.ssim(a, b) == pytest.approx(structural_similarity(a, b, data_range=1), rel=1e-6, abs=1e-9)
    _, full = structural_similarity(a, b, data_range=1, full=True)
    np.testing.assert_allclose(statistics.ssim_map(a, b), full, rtol=1e-5, atol=1e-7)
    outside = statistics.footprint(Window(6, 2, 8), 2, shape).outside(shape)
    assert statistics.ssim_outside(a, b, outside) == pytest.approx(float(full[outside].mean(dtype=np.float64)),
                                                                   rel=1e-6, abs=1e-9)
    assert statistics.ssim(a, a) == pytest.approx(1.0, abs=1e-6)


def test_ssim_needs_its_window_and_outside_can_be_empty():
    a, b = maps("random", shape=(9, 9))
    assert statistics.ssim_outside(a, b, np.zeros(a.shape, bool)) is None
    with pytest.raises(InputError, match="the LR image is 6×9: SSIM's 7×7 window"):
        statistics.ssim(a[:, :6], b[:, :6])


def test_the_footprint_is_the_lr_pixels_under_the_window():
    assert statistics.footprint(Window(24, 24, 16), 2, (32, 32)) == statistics.Footprint(12, 12, 20, 20)
    # columns 5…8 and rows 3…6 (SR) lie over LR columns 1…2 and rows 0…1 at ×4
    assert statistics.footprint(Window(5, 3, 4), 4, (10, 10)) == statistics.Footprint(0, 1, 2, 3)
    assert statistics.footprint(Window(60, 60, 16), 4, (18, 18)) == statistics.Footprint(15, 15, 18, 18)
    mask = statistics.Footprint(1, 2, 3, 5).outside((4, 6))
    assert (~mask).sum() == 6 and not mask[1:3, 2:5].any()


def test_the_control_is_the_sobel_magnitude_of_the_luma():
    rng = np.random.default_rng(1)
    lr = rng.random((3, 12, 10)).astype(np.float32)
    luma = 0.299 * lr[0].astype(np.float64) + 0.587 * lr[1] + 0.114 * lr[2]
    g = np.hypot(ndimage.sobel(luma, 0), ndimage.sobel(luma, 1))
    np.testing.assert_allclose(statistics.edge_control(lr), g / (g.max() + 1e-5), rtol=1e-5, atol=1e-6)
    assert statistics.edge_control(lr[:1]).shape == (12, 10)


def test_the_independence_stage():
    assert statistics.independence_stage([1.0, 0.9, 0.49, 0.2], 0.5) == 2
    assert statistics.independence_stage([1.0, 0.9, None], 0.5) == 2
    assert statistics.independence_stage([0.1, 0.9, 0.8], 0.5) is None  # stage 0 is never a candidate


# ------------------------------------------------------------------------------------ randomisation
def test_weight_layers_in_reverse_topological_order():
    layers = randomise.weight_layers(layered_graph())
    # biases (B1, C), MatMuls of activations or of integers are no layers; W1, read twice, is one, at its last reader
    assert [(l.initializer, l.node, l.op) for l in layers] == [
        ("W1", "again", "Conv"), ("W3", "matmul", "MatMul"), ("W2", "gemm", "Gemm")]


def redrawn(model: onnx.ModelProto, seed: int, stage: int) -> tuple[dict[str, np.ndarray], str]:
    """Stage `stage`'s initializers by name, as the network `run.stage_model` builds holds them, and its sha256."""
    from onnxlam.engine.model import Model

    trained = Model((model, onnx_info(model)), device="cpu", check_ops=False)
    layers = randomise.weight_layers(model)
    weights = {} if stage == 0 else list(randomise.stage_weights(model, layers, seed))[stage - 1]
    net = stage_model(trained, weights, seed, stage) if stage else trained
    return {t.name: numpy_helper.to_array(t) for t in net.source.graph.initializer}, net.info.sha256


def onnx_info(model: onnx.ModelProto):
    from onnxlam.graph.model import inspect_model

    return inspect_model(model, "deep.onnx", "0" * 64)


def deep_sr() -> onnx.ModelProto:
    """Three 16-channel convolutions (sizeable tensors, for the draws' moments)."""
    rng = np.random.default_rng(2)
    shapes = {"wa": (16, 3, 3, 3), "wb": (16, 16, 3, 3), "wc": (12, 16, 3, 3)}
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.2 + 0.05 * i).astype(np.float32), n)
            for i, (n, s) in enumerate(shapes.items())]
    init.append(numpy_helper.from_array(np.full(16, 0.1, np.float32), "ba"))
    nodes = [helper.make_node("Conv", ["image", "wa", "ba"], ["a"], pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Conv", ["ra", "wb"], ["b"], pads=[1] * 4),
             helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Conv", ["rb", "wc"], ["c"], pads=[1] * 4),
             helper.make_node("DepthToSpace", ["c"], ["sr"], blocksize=2, mode="CRD")]
    graph = helper.make_graph(nodes, "deep",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "h", "w"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H", "W"])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_stage_k_redraws_exactly_the_last_k_layers():
    model = deep_sr()
    trained, _ = redrawn(model, 0, 0)
    order = [l.initializer for l in randomise.weight_layers(model)]
    assert order == ["wc", "wb", "wa"]
    shas = set()
    for k in range(4):
        stage, sha = redrawn(model, 7, k)
        shas.add(sha)
        changed = {n for n in trained if not np.array_equal(trained[n], stage[n])}
        assert changed == set(order[:k]), k  # the bias ba and the earlier layers stay
        for name in changed:
            w, d = trained[name].astype(np.float64), stage[name].astype(np.float64)
            assert stage[name].dtype == trained[name].dtype and stage[name].shape == trained[name].shape
            assert abs(d.mean() - w.mean()) < 5 * w.std() / np.sqrt(w.size)
            assert d.std() == pytest.approx(w.std(), rel=0.1)
    assert len(shas) == 4  # every stage is another network for the program cache


def test_the_draws_are_seeded_and_cascading():
    model = deep_sr()
    layers = randomise.weight_layers(model)
    a = list(randomise.stage_weights(model, layers, 5))
    b = list(randomise.stage_weights(model, layers, 5))
    c = list(randomise.stage_weights(model, layers, 6))
    for k in range(len(layers)):
        assert all(np.array_equal(a[k][n], b[k][n]) for n in a[k])
        assert all(np.array_equal(a[k][n], a[-1][n]) for n in a[k])  # stage k keeps the draws before it
        assert not np.array_equal(a[k][layers[k].initializer], c[k][layers[k].initializer])
    shas = {randomise.stage_sha256("ab", 5, 2), randomise.stage_sha256("ab", 6, 2), randomise.stage_sha256("ab", 5, 1)}
    assert len(shas) == 3


# ------------------------------------------------------------------------------------- on networks
def gini_di(m: np.ndarray) -> float:
    a = np.sort(m.astype(np.float64).ravel() + 1e-7)
    n = a.size
    return (1 - float(np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * a.sum()))) * 100


def recomputed(out, data: dict, name: str, curve: list) -> None:
    """The stage statistics of `curve` recomputed with scipy and skimage from `stage-K/<name>.npy`."""
    f, (x, y, size), s = data["footprint"], (data["window"][k] for k in ("x", "y", "size")), data["scale"]
    assert (f["top"], f["left"], f["bottom"], f["right"]) == (y // s, x // s, (y + size - 1) // s + 1,
                                                              (x + size - 1) // s + 1)
    first = np.load(out / "stage-0" / f"{name}.npy")
    outside = np.ones(first.shape, bool)
    outside[f["top"]:f["bottom"], f["left"]:f["right"]] = False
    for stage in curve:
        m = np.load(out / f"stage-{stage['stage']}" / f"{name}.npy")
        assert m.dtype == np.float32 and m.shape == tuple(data["lr_size"])
        assert stage["di"] == pytest.approx(gini_di(m), rel=1e-9)
        assert stage["spearman"]["whole"] == pytest.approx(spearmanr(first.ravel(), m.ravel()).statistic, abs=1e-12)
        assert stage["spearman"]["outside"] == pytest.approx(spearmanr(first[outside], m[outside]).statistic,
                                                             abs=1e-12)
        whole, full = structural_similarity(first, m, data_range=1, full=True)
        assert stage["ssim"]["whole"] == pytest.approx(whole, rel=1e-6, abs=1e-9)
        assert stage["ssim"]["outside"] == pytest.approx(float(full[outside].mean(dtype=np.float64)),
                                                         rel=1e-6, abs=1e-9)


@pytest.mark.integration
def test_the_command_line_equals_the_api_and_the_saved_maps(inputs, tmp_path):
    model, image, out = str(inputs / "noskip.onnx"), str(inputs / "small.png"), tmp_path / "cli"
    r = run_cli("sanity", model, image, *WINDOW, "--fold", 3, "--device", "cpu", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    result = onnxlam.attribute(model, image, method="sanity", window=(4, 4), size=24, fold=3, device="cpu")
    assert _comparable(result.to_json()) == _comparable(cli)  # the same seed: the same JSON
    assert _comparable(json.loads((out / "result.json").read_text())) == _comparable(cli)
    assert cli["method"] == "sanity" and cli["seed"] == 0 and cli["attribution"] == "lam"
    assert [s["layer"] for s in cli["stages"]] == [None, "w2", "w1"] and cli["randomised_layers"] == 2
    for key in ("model", "model_sha256", "image", "provider", "seconds", "onnxlam", "options"):
        assert key in cli
    recomputed(out, cli, "attribution", cli["stages"])
    recomputed(out, cli, "control", cli["control"]["stages"])
    # the control reads no network: it fails the test; LAM's maps follow the weights
    assert all(s["spearman"]["whole"] == pytest.approx(1.0, abs=1e-12) for s in cli["control"]["stages"])
    assert cli["control"]["independent_at"] is None and cli["control"]["passed"] is False
    final = cli["stages"][-1]
    assert final["spearman"]["whole"] < 0.9 and final["ssim"]["whole"] < 0.6
    assert not np.array_equal(np.load(out / "stage-0" / "attribution.npy"),
                              np.load(out / "stage-1" / "attribution.npy"))
    picture = np.asarray(Image.open(out / "sanity.png").convert("RGB"))
    png = np.asarray(Image.open(io.BytesIO(result._repr_png_())).convert("RGB"))
    np.testing.assert_array_equal(png, picture)
    assert "control (edges)" in result._repr_html_()


@pytest.mark.integration
def test_another_seed_draws_other_networks(inputs):
    model = onnxlam.Model(str(inputs / "noskip.onnx"), device="cpu")
    a = onnxlam.attribute(model, str(inputs / "small.png"), method="sanity", window=(4, 4), size=24, fold=3)
    b = onnxlam.attribute(model, str(inputs / "small.png"), method="sanity", window=(4, 4), size=24, fold=3,
                          seed=1, stages=1)
    np.testing.assert_array_equal(a.maps[0], b.maps[0])  # the trained model's map
    assert not np.array_equal(a.maps[1], b.maps[1]) and len(b.stages) == 2
    assert b.to_json()["options"]["stages"] == 1 and b.seed == 1


@pytest.mark.integration
def test_the_noise_tunnel_attributions(inputs):
    r = onnxlam.attribute(str(inputs / "noskip.onnx"), str(inputs / "small.png"), method="sanity", window=(4, 4),
                          size=24, fold=2, device="cpu", attribution="smoothgrad", samples=2, stages="1")
    data = r.to_json()
    assert data["attribution"] == "smoothgrad" and data["stages"][1]["layer"] == "w2"
    assert data["options"]["stages"] == 1 and data["control"]["passed"] is False


@pytest.mark.integration
def test_the_report_runs_it(inputs, tmp_path):
    rep = tmp_path / "rep"
    r = run_cli("report", "--model", inputs / "noskip.onnx", "--image", inputs / "small.png", "--window", 4, 4,
                "--size", 24, "--method", "lam,sanity", "--sanity-stages", 1, "--fold", 2, "--device", "cpu",
                "--out", rep)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((rep / "results.csv").open()))
    sanity = [row for row in rows if row["method"] == "sanity"]
    assert len(rows) == 2 and len(sanity) == 1 and sanity[0]["status"] == "ok"
    data = json.loads((rep / sanity[0]["folder"] / "result.json").read_text())
    assert float(sanity[0]["final_spearman"]) == pytest.approx(data["stages"][-1]["spearman"]["whole"], rel=1e-5)
    assert float(sanity[0]["control_final_spearman"]) == pytest.approx(1.0)
    assert sanity[0]["mprt_stage"] == ("" if data["independent_at"] is None else str(data["independent_at"]))
    assert data["case"]["method"]["stages"] == 1
    page = (rep / "index.html").read_text()
    assert f'src="{sanity[0]["folder"]}/sanity.png"' in page and "control final ρ" in page


@pytest.mark.integration
def test_on_a_bundled_network_the_control_fails(tmp_path):
    """SPAN ×4 (the smallest bundled network) on a 64×64 crop of the photograph (LR 16×16), two stages."""
    image = tmp_path / "crop.png"
    Image.open(PHOTO).crop((100, 60, 164, 124)).save(image)
    r = onnxlam.attribute(str(REPO / "exported_models" / "span-x4.onnx"), str(image), method="sanity",
                          window=(24, 24), fold=2, device="cpu", stages=2)
    assert [s.spearman.whole for s in r.control.stages] == pytest.approx([1.0] * 3, abs=1e-12)
    assert not r.control.passed
    assert r.stages[1].spearman.whole < 0.9  # the network's map does follow its last layer's weights


@pytest.mark.integration
@pytest.mark.parametrize("model, image, args, message", [
    ("noskip.onnx", "small.png", ("--stages", 0), "--stages must be all or a whole number ≥ 1; got 0"),
    ("noskip.onnx", "small.png", ("--stages", "some"), "--stages must be all or a whole number ≥ 1; got 'some'"),
    ("noskip.onnx", "small.png", ("--stages", 3), "--stages 3: the model has 2 weight-bearing layers; choose 1 … 2"),
    ("noskip.onnx", "small.png", ("--attribution", "gradcam"), "--attribution must be one of lam, smoothgrad"),
    ("noskip.onnx", "small.png", ("--seed", -1), "--seed must be ≥ 0; got -1"),
    ("flat.onnx", "small.png", (), "has no weight-bearing layer"),
    ("noskip.onnx", "tiny.png", ("--size", 2), "the LR image is 4×4: SSIM's 7×7 window"),
])
def test_bad_input_is_one_line(inputs, tmp_path, model, image, args, message):
    out = tmp_path / "bad"
    r = run_cli("sanity", inputs / model, inputs / image, "--window", 0, 0, "--device", "cpu", "--out", out, *args)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.integration
def test_the_stage_networks_leave_the_program_cache_alone(inputs, tmp_path, monkeypatch):
    """The randomised networks' programs are built in memory: the cache ends up holding exactly what LAM
    on the trained model caches."""
    image, model = str(inputs / "small.png"), str(inputs / "noskip.onnx")
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "sanity"))
    onnxlam.attribute(model, image, method="sanity", window=(4, 4), size=24, fold=3, device="cpu", seed=11)
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "lam"))
    onnxlam.attribute(model, image, method="lam", window=(4, 4), size=24, fold=3, device="cpu")
    cached = [sorted(p.name for p in (tmp_path / kind / "programs").iterdir()) for kind in ("sanity", "lam")]
    assert cached[0] == cached[1] and cached[0]
