"""Models with a second input (a noise-level map, a quality factor) analysed with the input held fixed.

`--input NAME=VALUE` (`Analyzer(inputs=...)`) bakes every named input into the graph as a constant
broadcast to its shape (a map follows the image's H×W); the LAM of the bound model must equal the
independent PyTorch LAM of the module called with that constant, for both exporters.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests import architectures as arch
from tests import torch_reference as ref
from tests.clitools import run_cli

import onnxlam
from onnxlam.core.errors import InputError
from onnxlam.graph.model import bind_inputs, load_model, parse_inputs

pytestmark = pytest.mark.integration

LR = 16


class NoiseMapNet(nn.Module):
    """DRUNet / FFDNet-like ×1 denoiser: the image concatenated with a noise-level map N×1×H×W."""

    def __init__(self, nf: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(4, nf, 3, padding=1)
        self.c2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.c3 = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x, noise_level):
        f = F.relu(self.c1(torch.cat([x, noise_level], dim=1)))
        return x - self.c3(F.relu(self.c2(f)))


class QualityNet(nn.Module):
    """FBCNN-like ×2 network modulated by a per-image quality factor N×1 (a scale and shift per channel)."""

    def __init__(self, nf: int = 8):
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.embed = nn.Linear(1, 2 * nf)
        self.body = nn.Conv2d(nf, nf, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(nf, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x, qf):
        gamma, beta = self.embed(qf)[:, :, None, None].chunk(2, dim=1)
        f = F.relu(self.head(x))
        return self.up(f + torch.tanh(self.body(f) * (1 + gamma) + beta))


class Held(nn.Module):
    """The reference's module: `net` with its second input held at `value` (shape from the image)."""

    def __init__(self, net, value: float, map_input: bool):
        super().__init__()
        self.net, self.value, self.map_input = net, value, map_input

    def forward(self, x):
        shape = (x.shape[0], 1, x.shape[2], x.shape[3]) if self.map_input else (x.shape[0], 1)
        return self.net(x, torch.full(shape, self.value, dtype=x.dtype))


def _build(cls, seed: int):
    torch.manual_seed(seed)
    net = cls().eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.05)
    return net


def _export(net, path, exporter: str, second: str, map_input: bool):
    x = torch.rand(1, 3, LR, LR, generator=torch.Generator().manual_seed(0))
    extra = torch.full((1, 1, LR, LR) if map_input else (1, 1), 0.2)
    if exporter == "torchscript":
        dims = {0: "batch", 2: "h", 3: "w"}
        torch.onnx.export(net, (x, extra), str(path), dynamo=False, input_names=["input", second],
                          output_names=["output"], opset_version=17,
                          dynamic_axes={"input": dims, second: dims if map_input else {0: "batch"},
                                        "output": {0: "batch", 2: "H", 3: "W"}})
    else:
        torch.onnx.export(net, (x, extra), str(path), dynamo=True, input_names=["input", second])
    return path


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("extra_inputs")
    out = {"noise": _build(NoiseMapNet, 3), "qf": _build(QualityNet, 4)}
    files = {}
    for exporter in arch.EXPORTERS:
        files[("noise", exporter)] = _export(out["noise"], root / f"noise-{exporter}.onnx", exporter,
                                             "noise_level", True)
    files[("qf", "torchscript")] = _export(out["qf"], root / "qf-torchscript.onnx", "torchscript", "qf", False)
    return out, files


def _lr(seed=0):
    from PIL import Image
    from pathlib import Path

    img = np.asarray(Image.open(Path(onnxlam.__file__).parent / "data" / "astronaut.png").convert("RGB"))
    r, c = 60 + seed, 100
    return np.ascontiguousarray(img[r: r + LR, c: c + LR]).astype(np.float32) / 255.0  # H×W×C


@pytest.mark.parametrize("kind,exporter,value", [("noise", "torchscript", 0.1), ("noise", "dynamo", 0.3),
                                                 ("qf", "torchscript", 0.7)])
def test_held_input_matches_reference(nets, kind, exporter, value):
    models, files = nets
    net, path = models[kind], files[(kind, exporter)]
    second = "noise_level" if kind == "noise" else "qf"
    s = 1 if kind == "noise" else 2
    x, y, size = (4, 4, 8) if s == 1 else (8, 10, 16)
    lr = _lr()
    res = onnxlam.analyze(path, lr, window=(x, y), size=size, lr=True, fold=8, inputs={second: value})
    r = ref.reference_lam(Held(net, value, kind == "noise"), np.moveaxis(lr, 2, 0), x, y, size, "blur", 1.2, 8, 9)
    assert res.scale == s
    np.testing.assert_allclose(res.sr_image, r["sr"], rtol=0, atol=1e-5)
    assert float(np.abs(res.attribution - r["M"]).max()) <= 1e-4
    assert abs(res.di - r["di"]) <= 0.01
    assert res.to_json()["inputs"] == {second: value}
    # the value is used: another one gives another output (the nets are not constant in it)
    other = onnxlam.analyze(path, lr, window=(x, y), size=size, lr=True, fold=2, inputs={second: value + 0.5})
    assert float(np.abs(other.sr_image - res.sr_image).max()) > 1e-4


def test_bound_graph_has_one_input_and_a_map_of_the_image_size(nets):
    _, files = nets
    bound = bind_inputs(load_model(files[("noise", "torchscript")]), {"noise_level": 0.25})
    assert [v.name for v in bound.graph.input if v.name not in {t.name for t in bound.graph.initializer}] == ["input"]
    import onnxruntime as ort

    sess = ort.InferenceSession(bound.SerializeToString(), providers=["CPUExecutionProvider"])
    for h, w in ((16, 16), (12, 20)):  # the map follows the image's size
        x = np.random.default_rng(0).random((2, 3, h, w), dtype=np.float32)
        with torch.no_grad():
            want = nets[0]["noise"](torch.from_numpy(x), torch.full((2, 1, h, w), 0.25)).numpy()
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], want, rtol=0, atol=1e-5)


def test_missing_value_is_one_clear_error(nets):
    _, files = nets
    with pytest.raises(InputError) as e:
        onnxlam.Analyzer(files[("noise", "torchscript")])
    msg = str(e.value)
    assert "2 inputs" in msg and "input" in msg and "noise_level" in msg and "--input NAME=VALUE" in msg
    with pytest.raises(InputError, match="no input of that name.*noise_level"):
        onnxlam.Analyzer(files[("noise", "torchscript")], inputs={"sigma": 0.1})
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_inputs(["noise_level"])
    assert parse_inputs(["a=1", "b=0.5"]) == {"a": 1.0, "b": 0.5}


def test_cli_lam_and_compare_take_input(nets, tmp_path):
    _, files = nets
    model = files[("noise", "torchscript")]
    from PIL import Image

    img = tmp_path / "lr.png"
    Image.fromarray(np.round(_lr() * 255).astype(np.uint8)).save(img)
    api = onnxlam.analyze(model, str(img), window=(4, 4), size=8, lr=True, fold=4, inputs={"noise_level": 0.1})

    missing = run_cli("lam", model, img, "--lr", "--window", 4, 4, "--size", 8, "--fold", 4,
                      "--out", tmp_path / "x")
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.count("error:") == 1 and "--input" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "x").exists()

    lam = run_cli("lam", model, img, "--lr", "--window", 4, 4, "--size", 8, "--fold", 4, "--json",
                  "--input", "noise_level=0.1", "--out", tmp_path / "lam")
    assert lam.returncode == 0, lam.stderr
    assert json.loads(lam.stdout)["di"] == pytest.approx(api.di, abs=1e-6)

    cmp = run_cli("compare", model, img, "--lr", "--window", 4, 4, "--size", 8, "--fold", 4, "--json",
                  "--input", "noise_level=0.1", "-o", tmp_path / "c.png")
    assert cmp.returncode == 0, cmp.stderr
    assert json.loads(cmp.stdout)["models"][0]["di"] == pytest.approx(api.di, abs=1e-6)


def test_report_toml_inputs_and_check(nets, tmp_path):
    """`inputs = {...}` in a report's TOML, recorded in results.json and replayed by `check --baseline`."""
    from PIL import Image

    from onnxlam.batch.gate import check_cases, load_baseline
    from onnxlam.batch.report import load_config, run_report

    _, files = nets
    model = files[("noise", "torchscript")]
    img = tmp_path / "lr.png"
    Image.fromarray(np.round(_lr() * 255).astype(np.uint8)).save(img)
    api = onnxlam.analyze(model, str(img), window=(4, 4), size=8, lr=True, fold=4, inputs={"noise_level": 0.1})
    config = tmp_path / "report.toml"
    config.write_text(f'models = ["{model}"]\nimages = ["{img}"]\nwindows = [[4, 4, 8]]\nlr = true\nfold = 4\n'
                      f'out = "{tmp_path / "rep"}"\ninputs = {{noise_level = 0.1}}\n')
    report = run_report(load_config(config).resolve(), resolve_model=str)
    assert report.failed == 0
    data = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert data["options"]["inputs"] == {"noise_level": 0.1}
    assert data["cases"][0]["di"] == pytest.approx(api.di, abs=1e-6)
    # the gate replays the case with the same held input (without it the model would not even load)
    result = check_cases(load_baseline(tmp_path / "rep" / "results.json"), tolerance=1e-6, resolve_model=str)
    assert result.passed, result.to_json()
    bad = tmp_path / "bad.toml"
    bad.write_text('models = ["m.onnx"]\ninputs = {noise_level = "high"}\n')
    with pytest.raises(InputError, match="inputs"):
        load_config(bad)
