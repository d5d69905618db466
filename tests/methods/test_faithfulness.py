"""The faithfulness check (deletion/insertion curves, the random control, Captum's infidelity and
sensitivity-max) against a closed form on a linear network, against an implementation of its contract
written here (its own order, masks, blur, forward passes and detector), against captum.metrics, on a
bundled pretrained network, and through the command line, the report and the Python API."""
from __future__ import annotations

import json
import statistics

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxlam
from onnxlam.lam.paths import make_path
from onnxlam.methods.faithfulness import curves as cv
from onnxlam.methods.faithfulness.run import blur_baseline
from tests import torch_reference as ref
from tests.clitools import PHOTO, REPO, run_cli

FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
CHELSEA = np.asarray(Image.open(PHOTO).convert("RGB"))


# --------------------------------------------------------------------------------- pure functions
def test_order_counts_area_and_spread():
    M = np.array([[0.5, 0.9, 0.5], [0.1, 0.9, 0.0]], np.float32)
    assert cv.order_of(M).tolist() == [1, 4, 0, 2, 3, 5]  # descending, ties by flat index
    assert cv.pixel_counts((0.0, 0.5, 0.7, 1.0), 5) == (0, 2, 4, 5)  # 2.5 → 2 and 3.5 → 4: half to even
    assert cv.auc((0.0, 0.5, 1.0), (1.0, 0.5, 0.0)) == pytest.approx(0.5)
    blurred = cv.blurred_set(np.array([4, 0, 1, 2, 3, 5]), 2, True, (2, 3))
    assert blurred.tolist() == [[True, False, False], [False, True, False]]
    assert (cv.blurred_set(np.array([4, 0, 1, 2, 3, 5]), 2, False, (2, 3)) == ~blurred).all()
    mean, std = cv.spread([1.0, 2.0, 4.0])
    assert (mean, std) == (pytest.approx(7 / 3), pytest.approx(statistics.stdev([1.0, 2.0, 4.0])))
    assert cv.spread([1.0]) == (1.0, None) and cv.z_score(0.0, 1.0, None) is None
    assert cv.z_score(0.0, 1.0, 0.5) == -2.0 and cv.z_score(0.0, 1.0, 0.5, lower_is_better=True) == 2.0
    x = np.random.default_rng(0).random((3, 12, 10)).astype(np.float32)
    assert np.array_equal(blur_baseline(x, 1.2, 9), make_path(x, "blur", 1.2, 3, 9).baseline)  # the blur path's start


# --------------------------------------------------------------------------------- a linear network
def linear_sr(seed: int = 0) -> onnx.ModelProto:
    """One 3×3 convolution (no bias) and a ×2 depth-to-space: a linear F. The two column phases of each
    output row phase share their weights, so y[r, 2j] = y[r, 2j + 1] for every input: at an even
    column dw = 0, and D of a one-pixel window at an even (column, row) is Σ_c |ℓ_c · patch| with ℓ_c
    the difference of the row phases' weights, positive here (and so linear near any positive image)."""
    rng = np.random.default_rng(seed)
    w = np.zeros((12, 3, 3, 3), np.float32)
    for c in range(3):  # DepthToSpace CRD: output channel c, phase (a, b) reads input channel 4c + 2a + b
        w[4 * c] = w[4 * c + 1] = rng.uniform(0.02, 0.12, (3, 3, 3))
        w[4 * c + 2] = w[4 * c + 3] = rng.normal(0.0, 0.01, (3, 3, 3))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("DepthToSpace", ["c"], ["sr"], blocksize=2, mode="CRD")], "linear_sr",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "h", "w"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def linear_forward(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """F(x) from the weights, in float64: Σ_{c,i,j} w[o, c, i, j] x[c, r + i − 1, q + j − 1] (zero padding),
    then depth-to-space (CRD)."""
    c, h, wd = x.shape
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1)))
    conv = np.zeros((w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            conv += np.einsum("oc,chw->ohw", w[:, :, i, j].astype(np.float64), padded[:, i:i + h, j:j + wd])
    return conv.reshape(c, 2, 2, h, wd).transpose(0, 3, 1, 4, 2).reshape(c, 2 * h, 2 * wd)


def spec_detector(y: np.ndarray, x: int, y0: int, size: int) -> float:
    """LAM-SPEC §2 on one C×H×W output, float64."""
    dh = (y[:, :-1, :] - y[:, 1:, :]) ** 2
    dw = (y[:, :, :-1] - y[:, :, 1:]) ** 2
    g = np.sqrt(dh[:, :, :-1] + dw[:, :-1, :])
    return float(g[:, y0:y0 + size, x:x + size].sum())


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    path = tmp_path_factory.mktemp("linear") / "linear.onnx"
    model = linear_sr()
    onnx.save(model, path)
    return path, numpy_helper.to_array(model.graph.initializer[0])


@pytest.mark.integration
def test_linear_network_curves_equal_the_closed_form(linear):
    path, w = linear
    hr = np.ascontiguousarray(CHELSEA[100:148, 150:198])
    r = onnxlam.attribute(str(path), hr, method="faithfulness", window=(10, 12), size=8, path="linear", fold=8,
                          random=2, seed=1, device="cpu")
    x = r.lr_image
    baseline = ref.correlate(x, ref.gaussian_kernel(1.2, 9)).numpy().astype(np.float32)
    order = sorted(range(x[0].size), key=lambda i: (-float(r.attribution.flat[i]), i))
    truth = hr.transpose(2, 0, 1).astype(np.float64)[:, 12:20, 10:18] / 255.0
    d0 = spec_detector(linear_forward(w, x), 10, 12, 8)
    for curve, deletion in ((r.deletion, True), (r.insertion, False)):
        detector, psnr = [], []
        for f in FRACTIONS:
            taken = np.zeros(x[0].size, bool)
            taken[order[:int(round(f * x[0].size))]] = True
            taken = taken.reshape(x[0].shape)
            blurred = taken if deletion else ~taken
            y = linear_forward(w, np.where(blurred[None], baseline, x))
            detector.append(spec_detector(y, 10, 12, 8))
            psnr.append(10 * np.log10(1 / np.mean((np.clip(y[:, 12:20, 10:18], 0, 1) - truth) ** 2)))
        assert curve.detector == pytest.approx(detector, rel=1e-5)
        assert curve.normalised == pytest.approx(np.array(detector) / d0, rel=1e-5)
        assert curve.psnr == pytest.approx(psnr, abs=1e-4)
    assert r.detector_input == pytest.approx(d0, rel=1e-6)

    # one pixel at an even column and row: D = Σ_c |ℓ_c · patch|, linear near x, so the gradient
    # explains every perturbation exactly (infidelity 0) and does not change under them (sensitivity 0)
    one = onnxlam.attribute(str(path), hr, method="faithfulness", window=(10, 12), size=1, path="linear", fold=4,
                            random=0, fractions="0,1", device="cpu")
    assert one.infidelity.value <= 1e-10
    assert one.sensitivity.value <= 1e-5
    assert one.random.deletion_auc == () and one.random.deletion_z is None


# --------------------------------------------------------------------------------- the contract, written here
def contract(model_path, hr: np.ndarray, M: np.ndarray, window, size: int, *, random: int, seed: int,
             sigma: float = 1.2, kernel: int = 9, scale: int = 2) -> dict:
    """Deletion and insertion curves, areas, random control and PSNR as the method's contract states
    them, on the model file run directly by onnxruntime (one image at a time)."""
    import onnxruntime as ort
    import torch

    proto = onnx.load(str(model_path))
    proto.ir_version = min(proto.ir_version, 8)  # onnx.helper writes a newer IR than onnxruntime reads
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = ref.prepare_lr(hr, scale)
    baseline = ref.correlate(x, ref.gaussian_kernel(sigma, kernel)).numpy().astype(np.float32)
    c, h, w = x.shape
    wx, wy = window
    truth = hr.transpose(2, 0, 1).astype(np.float64)[:, wy:wy + size, wx:wx + size] / 255.0

    def score(image):
        y = session.run(None, {session.get_inputs()[0].name: image[None].astype(np.float32)})[0]
        window_pixels = np.clip(y[0, :, wy:wy + size, wx:wx + size].astype(np.float64), 0, 1)
        psnr = 10 * np.log10(1 / np.mean((window_pixels - truth) ** 2))
        return float(ref.detector(torch.from_numpy(y), wx, wy, size)[0]), psnr

    d0 = score(x)[0]

    def curves(order):
        out = {}
        for name in ("deletion", "insertion"):
            values, psnrs = [], []
            for f in FRACTIONS:
                image = (x if name == "deletion" else baseline).copy()
                source = baseline if name == "deletion" else x
                for i in order[:int(round(f * h * w))]:
                    image[:, i // w, i % w] = source[:, i // w, i % w]
                d, p = score(image)
                values.append(d / d0)
                psnrs.append(p)
            area = sum((b - a) * (u + v) / 2 for a, b, u, v in zip(FRACTIONS, FRACTIONS[1:], values, values[1:]))
            out[name] = {"normalised": values, "auc": area, "psnr": psnrs}
        return out

    mine = curves(sorted(range(h * w), key=lambda i: (-float(M.flat[i]), i)))
    rng = np.random.default_rng(seed)
    randoms = [curves(list(rng.permutation(h * w))) for _ in range(random)]
    for name in ("deletion", "insertion"):
        aucs = [r[name]["auc"] for r in randoms]
        mine[name]["random"] = aucs
        sign = -1 if name == "deletion" else 1  # positive: better than random (a smaller deletion area)
        mine[name]["z"] = sign * (mine[name]["auc"] - statistics.mean(aucs)) / statistics.stdev(aucs)
    mine["d0"] = d0
    return mine


@pytest.mark.integration
def test_curves_follow_the_contract(inputs):
    model, image = inputs / "a.onnx", inputs / "images" / "one.png"
    hr = np.asarray(Image.open(image).convert("RGB"))
    r = onnxlam.attribute(str(model), str(image), method="faithfulness", window=(20, 22), fold=6, random=3, seed=7,
                          batch_size=3, device="cpu")
    want = contract(model, hr, r.attribution, (20, 22), 16, random=3, seed=7)
    assert r.detector_input == pytest.approx(want["d0"], rel=1e-5)
    for name, mine in (("deletion", r.deletion), ("insertion", r.insertion)):
        assert mine.normalised == pytest.approx(want[name]["normalised"], abs=1e-4)
        assert mine.auc == pytest.approx(want[name]["auc"], abs=1e-4)
        assert mine.psnr == pytest.approx(want[name]["psnr"], abs=1e-4)
        assert getattr(r.random, f"{name}_auc") == pytest.approx(want[name]["random"], abs=1e-4)
        assert getattr(r.random, f"{name}_z") == pytest.approx(want[name]["z"], rel=1e-3, abs=1e-3)
    # equal images (inside the window's receptive field) run once, several to a batch
    assert r.batch_size == 3 and r.forwards < 2 * 4 * (len(FRACTIONS) - 1)
    assert r.reach.box is not None and 0 < r.reach.outside < 1
    assert r.fractions == FRACTIONS and r.pixels == cv.pixel_counts(FRACTIONS, 32 * 32)


# --------------------------------------------------------------------------------- captum.metrics
@pytest.mark.integration
def test_infidelity_and_sensitivity_match_captum(tmp_path):
    import onnxruntime as ort
    import torch
    from captum.metrics import infidelity, sensitivity_max

    from tests.architectures import export_onnx

    class Net(torch.nn.Module):
        """conv → ReLU → conv → pixel shuffle, plus the input upsampled nearest."""

        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 12, 3, padding=1), torch.nn.PixelShuffle(2))

        def forward(self, x):
            return self.body(x) + torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    torch.manual_seed(0)
    net = Net().eval()
    path = export_onnx(net, tmp_path / "net.onnx", "torchscript", lr_size=16)
    hr = np.ascontiguousarray(CHELSEA[60:108, 80:128])
    (wx, wy), size, seed = (12, 14), 10, 3
    r = onnxlam.attribute(str(path), hr, method="faithfulness", window=(wx, wy), size=size, fold=2, random=0,
                          fractions="0,1", seed=seed, device="cpu")
    x = torch.from_numpy(r.lr_image)[None]
    # the documented perturbations, drawn here again
    noise = torch.from_numpy(np.random.default_rng(seed + 1).normal(0, 0.003, (10,) + r.lr_image.shape)
                             .astype(np.float32))
    shifts = torch.from_numpy(np.random.default_rng(seed + 2).uniform(-0.02, 0.02, (10,) + r.lr_image.shape)
                              .astype(np.float32))

    def forward(inp, model=net):
        return ref.detector(model(inp.to(next(model.parameters()).dtype)), wx, wy, size)

    def explanation(inp, model=net):
        inp = (inp[0] if isinstance(inp, tuple) else inp).detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(forward(inp, model).sum(), inp)
        return (g.to(torch.float32),)

    gradient = explanation(x)[0]
    perturb = lambda inp: (noise, inp - noise)  # noqa: E731  (Captum's perturb_func: perturbation, input)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def ort_forward(inp):
        y = session.run(None, {session.get_inputs()[0].name: inp.numpy().astype(np.float32)})[0]
        return ref.detector(torch.from_numpy(y), wx, wy, size)

    # the same forward passes (the exported file through onnxruntime): the formula to float precision
    same = float(infidelity(ort_forward, perturb, x, gradient, n_perturb_samples=10))
    assert r.infidelity.value == pytest.approx(same, rel=1e-5)
    # the PyTorch network in float64: its residual is second order in the noise, so the float32
    # forward passes' rounding shows at about 2e-5 of it
    exact = float(infidelity(lambda inp: forward(inp.double(), net.double()), perturb, x.double(), gradient.double(),
                             n_perturb_samples=10))
    net.float()
    assert r.infidelity.value == pytest.approx(exact, rel=1e-4)
    sens = float(sensitivity_max(explanation, x, perturb_func=lambda inp, radius: (inp[0] if isinstance(inp, tuple)
                                                                                    else inp) + shifts,
                                 perturb_radius=0.02, n_perturb_samples=10))
    assert r.sensitivity.value == pytest.approx(sens, rel=1e-5)
    assert r.infidelity.samples == r.sensitivity.samples == 10 and r.sensitivity.radius == 0.02


# --------------------------------------------------------------------------------- a pretrained network
@pytest.mark.integration
def test_lam_order_deletes_faster_than_random_on_a_pretrained_network():
    """waifu2x UpConv7 ×2 on a 48×48 crop of the bundled photograph, default settings (LAM at fold 50,
    five random orders): deleting by the LAM map lowers D far faster than deleting at random."""
    hr = np.ascontiguousarray(CHELSEA[100:148, 150:198])
    r = onnxlam.attribute(str(REPO / "exported_models" / "waifu2x-upconv7-photo-x2.onnx"), hr,
                          method="faithfulness", window=(16, 16), device="cpu")
    rc = r.random
    assert rc.orders == 5 and len(rc.deletion_auc) == 5
    assert rc.deletion_z > 3, (r.deletion.auc, rc.deletion_auc)
    assert r.deletion.auc < min(rc.deletion_auc)
    # LAM's map is 0 outside the window's receptive field: its order takes those pixels last
    assert r.reach.map_first_outside == pytest.approx(1 - r.reach.outside)


# --------------------------------------------------------------------------------- command line, report, API
@pytest.mark.integration
@pytest.mark.parametrize("flags, message", [
    (("--fractions", "0,1.5"), "--fractions must lie in [0, 1]"),
    (("--fractions", "0.5,0.2"), "--fractions must be strictly increasing"),
    (("--fractions", "a,b"), "--fractions must be numbers"),
    (("--random", "-1"), "--random must be ≥ 0"),
    (("--attribution", "cem"), "--attribution 'cem': choose one of lam, smoothgrad"),
    (("--window", "200", "0"), "lies outside"),
])
def test_bad_input_is_one_line(inputs, tmp_path, flags, message):
    window = () if "--window" in flags else ("--window", 8, 8)
    r = run_cli("faithfulness", inputs / "a.onnx", inputs / "images" / "one.png", *window, *flags, "--fold", 2,
                "--device", "cpu", "--out", tmp_path / "out")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_command_line_json_equals_the_api(inputs, tmp_path):
    model, image = str(inputs / "a.onnx"), str(inputs / "images" / "two.png")
    out = tmp_path / "cli"
    r = run_cli("faithfulness", model, image, "--window", 8, 10, "--size", 12, "--fold", 4, "--random", 2,
                "--fractions", "0,0.1,0.5,1", "--batch-size", 4, "--device", "cpu", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    result = onnxlam.attribute(model, image, method="faithfulness", window=(8, 10), size=12, fold=4, random=2,
                               fractions=[0, 0.1, 0.5, 1], batch_size=4, device="cpu")
    strip = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
    assert strip(result.to_json()) == strip(cli)
    assert cli["method"] == "faithfulness" and cli["fractions"] == [0.0, 0.1, 0.5, 1.0]
    assert set(cli["deletion"]) >= {"detector", "normalised", "auc", "psnr"}
    assert set(cli["random"]) >= {"deletion_auc", "insertion_auc", "deletion_z", "insertion_z"}
    assert {"model", "model_sha256", "image", "provider", "seconds", "onnxlam", "options"} <= set(cli)
    assert sorted(p.name for p in out.iterdir()) == ["attribution.npy", "faithfulness.png", "result.json"]
    np.testing.assert_array_equal(np.load(out / "attribution.npy"), result.attribution)
    assert result._repr_png_().startswith(b"\x89PNG") and "faithfulness" in result._repr_html_()


@pytest.mark.integration
def test_report_runs_lam_and_faithfulness(inputs, tmp_path):
    out = tmp_path / "report"
    args = ("report", "--model", inputs / "a.onnx", "--image", inputs / "images" / "one.png", "--window", 20, 20,
            "--window", 30, 12, "--method", "lam,faithfulness", "--fold", 3, "--faithfulness-random", 2,
            "--faithfulness-fractions", "0,0.2,1", "--device", "cpu", "--out", out)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "results.json").read_text())["cases"]
    mine = [row for row in rows if row["method"] == "faithfulness"]
    assert len(mine) == 2 and all(row["status"] == "ok" for row in rows)
    for row in mine:
        data = json.loads((out / row["folder"] / "result.json").read_text())
        assert row["deletion_auc"] == pytest.approx(data["deletion"]["auc"])
        assert row["infidelity"] == pytest.approx(data["infidelity"]["value"])
        assert data["fractions"] == [0.0, 0.2, 1.0] and data["random"]["orders"] == 2
        assert (out / row["folder"] / "faithfulness.png").is_file()
    assert "faithfulness.png" in (out / "index.html").read_text()
    again = run_cli(*args)
    assert again.returncode == 0 and "4 reused" in again.stdout + again.stderr
