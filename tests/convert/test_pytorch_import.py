"""PyTorch checkpoints in: `onnxlam import-pth`, and checkpoints wherever a model is expected.

The reference is spandrel's own model call (`ImageModelDescriptor.__call__`: size-requirement
padding, the network, clamp, crop) run by the independent PyTorch LAM of tests/torch_reference.py;
the checkpoints are small seeded HAT and SwinIR networks built from spandrel's own architecture
classes and saved as .pth and .safetensors. The LR size (14×18) is below HAT's and SwinIR's minimum
side of 16 and not a multiple of their window sizes (4 and 8), so both spandrel's padding and the
networks' own internal padding are exercised.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests import torch_reference as ref
from tests.clitools import run_cli

import onnxlam
from onnxlam.convert._torchvision import import_spandrel
from onnxlam.convert import pytorch as pt
from onnxlam.core.errors import InputError

pytestmark = pytest.mark.integration

SCALE = 2
LR_H, LR_W = 14, 18                 # not multiples of the windows (4, 8); below the minimum 16
WINDOW, SIZE, FOLD = (12, 8), 12, 8


def _hat():
    from spandrel.architectures.HAT import HAT

    torch.manual_seed(0)
    return HAT(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, compress_ratio=3,
               squeeze_factor=4, mlp_ratio=2.0, upscale=SCALE, num_feat=16)


def _swinir():
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(1)
    net = SwinIR(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2.0,
                 upscale=SCALE, upsampler="pixelshuffledirect")  # the lightweight-SR tail: few weights
    with torch.no_grad():  # a gentler tail keeps the output inside (0, 1), where spandrel's clamp is inert
        net.upsample[0].weight.mul_(0.2)
    return net


BUILDERS = {"hat": _hat, "swinir": _swinir}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """{(name, suffix): path}: each seeded network saved as a .pth and as a .safetensors state dict."""
    from safetensors.torch import save_file

    import_spandrel()
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for name, build in BUILDERS.items():
        state = {k: v.contiguous() for k, v in build().state_dict().items()}
        torch.save(state, root / f"{name}.pth")
        save_file(state, str(root / f"{name}.safetensors"))
        paths[name, ".pth"] = root / f"{name}.pth"
        paths[name, ".safetensors"] = root / f"{name}.safetensors"
    return paths


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """Each checkpoint's ONNX export (by the code under test), made once for the module's tests."""
    root, done = tmp_path_factory.mktemp("exports"), {}

    def get(name, suffix):
        if (name, suffix) not in done:
            done[name, suffix] = pt.export_checkpoint(checkpoints[name, suffix], root / f"{name}{suffix}.onnx")
        return done[name, suffix]

    return get


@pytest.fixture(scope="module")
def hr(chelsea) -> np.ndarray:
    """An HR crop of the photograph that gives an LR input of LR_H × LR_W at ×2 (one row/column cut)."""
    return np.ascontiguousarray(chelsea[100:100 + SCALE * LR_H + 1, 150:150 + SCALE * LR_W + 1])


class SpandrelCall(torch.nn.Module):
    """spandrel's own descriptor call (the body of `ImageModelDescriptor.__call__`, without the
    `torch.inference_mode` it is decorated with, which would stop autograd), recording the network's
    raw output range so a test can check that the call's clamp to [0, 1] is the identity on every
    input it sees (then its gradient is the network's: the exported graph has no clamp, by design)."""

    def __init__(self, desc):
        super().__init__()
        self.desc = desc
        self.raw = []
        desc.model.register_forward_hook(lambda m, i, o: self.raw.append((float(o.detach().min()), float(o.detach().max()))))

    def forward(self, x):
        return type(self.desc).__call__.__wrapped__(self.desc, x)


def _descriptor(path):
    spandrel = import_spandrel()
    desc = spandrel.ModelLoader(device="cpu").load_from_file(path)
    desc.model.eval()
    return desc


# ------------------------------------------------------------------------------------ the round trip
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("name", ["hat", pytest.param("swinir", marks=pytest.mark.slow)])
def test_checkpoint_round_trip_equals_lam_of_spandrels_call(name, suffix, checkpoints, exports, hr):
    ckpt = checkpoints[name, suffix]
    result = exports(name, suffix)
    assert result.checkpoint.architecture == {"hat": "HAT", "swinir": "SwinIR"}[name]
    assert result.checkpoint.scale == SCALE and result.checkpoint.size_requirements.minimum == 16

    got = onnxlam.analyze(result.output, hr, WINDOW, SIZE, fold=FOLD, device="cpu")
    assert got.lr_size == (LR_H, LR_W)

    call = SpandrelCall(_descriptor(ckpt))
    lr = ref.prepare_lr(hr, SCALE)
    assert lr.shape[1:] == (LR_H, LR_W)
    want = ref.reference_lam(call, lr, *WINDOW, size=SIZE, fold=FOLD)
    lo, hi = min(r[0] for r in call.raw), max(r[1] for r in call.raw)
    assert 0 < lo and hi < 1, "spandrel's clamp acted: the reference would not be the network's gradient"

    dm = float(np.abs(got.attribution - want["M"]).max())
    ddi = abs(got.di - want["di"])
    print(f"\nround trip {name}{suffix} ({result.exporter}, dynamic={result.dynamic}): "
          f"max|ΔM| {dm:.2e}, |ΔDI| {ddi:.2e} (DI {got.di:.4f})")
    assert dm <= 1e-4 and ddi <= 0.01
    assert got.nan_gradients == 0


def test_exported_graph_is_spandrels_call_without_clamp(checkpoints, exports):
    """At sizes below the minimum, odd, and square/non-square, the ONNX file reproduces spandrel's call."""
    result = exports("hat", ".pth")
    assert result.dynamic, result.rejected
    desc = _descriptor(checkpoints["hat", ".pth"])
    session = ort.InferenceSession(result.output, providers=["CPUExecutionProvider"])
    for h, w in ((14, 18), (5, 23), (16, 16), (1, 3)):
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            want = desc(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == (1, 3, SCALE * h, SCALE * w)
        np.testing.assert_allclose(np.clip(got, 0, 1), want, atol=2e-5)


def test_padding_is_spandrels_pad_tensor():
    """The gather that replaces reflect + replicate padding equals spandrel's pad_tensor, with the
    reflect limit crossed (side 2 padded to 16, side 1 replicated), and the crop restores the size."""
    import_spandrel()
    from spandrel.__helpers.size_req import SizeRequirements, pad_tensor

    seen = []

    class Descriptor:  # what _call_module reads of an ImageModelDescriptor
        model = torch.nn.Identity()
        scale = 1

        def __init__(self, req):
            self.size_requirements = req

        @staticmethod
        def _call_fn(model, x):
            seen.append(x)
            return model(x)

    for req in (SizeRequirements(minimum=16), SizeRequirements(multiple_of=8, square=True),
                SizeRequirements(minimum=4, multiple_of=3)):
        call = pt._call_module(Descriptor(req))
        for h, w in ((2, 1), (7, 13), (16, 16)):
            x = torch.rand(1, 3, h, w)
            seen.clear()
            assert torch.equal(call(x), x)
            assert torch.equal(seen[0], pad_tensor(x, req)[1]), (req, h, w)


# ------------------------------------------------------------------------------------ the command line
def test_import_pth_cli_writes_metadata(checkpoints, tmp_path):
    ckpt = checkpoints["swinir", ".safetensors"]
    out = tmp_path / "swinir.onnx"
    r = run_cli("import-pth", ckpt, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)  # stdout holds the JSON only (the dynamo exporter's chatter goes to stderr)
    assert data["dynamic"] is True and data["checkpoint"]["architecture"] == "SwinIR"
    assert f"wrote {out}" in " ".join(r.stderr.split())
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    import hashlib

    assert meta["onnxlam.source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta["onnxlam.architecture"] == "SwinIR" and meta["onnxlam.scale"] == "2"
    assert json.loads(meta["onnxlam.size_requirements"]) == {"minimum": 16, "multiple_of": 1, "square": False}
    assert meta["onnxlam.value_range"] == "1" and meta["onnxlam.channel_order"] == "rgb"
    assert meta["onnxlam.source"] == f"pytorch:{ckpt.name}" and meta["onnxlam.dynamic"] == "true"
    assert json.loads(meta["onnxlam.padding"])["clamp"] is None
    assert int(meta["onnxlam.params"]) == sum(p.numel() for p in _swinir().parameters())


@pytest.mark.slow  # the fixed-size export itself is covered fast by test_fixed_size_only_models_…
def test_import_pth_fixed_size(checkpoints, tmp_path):
    r = run_cli("import-pth", checkpoints["hat", ".pth"], "-o", tmp_path / "f.onnx", "--size", LR_H, LR_W)
    assert r.returncode == 0, r.stderr
    model = onnx.load(str(tmp_path / "f.onnx"))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, LR_H, LR_W]
    assert {p.key: p.value for p in model.metadata_props}["onnxlam.input_size"] == f"{LR_H} {LR_W}"


def test_lam_takes_a_checkpoint_and_reuses_the_cached_export(checkpoints, hr, tmp_path):
    from PIL import Image

    image = tmp_path / "hr.png"
    Image.fromarray(hr).save(image)
    cache = {"ONNXLAM_CACHE": str(tmp_path / "cache")}
    ckpt = checkpoints["hat", ".pth"]
    args = ("lam", ckpt, image, "--window", *WINDOW, "--size", SIZE, "--fold", FOLD, "--device", "cpu", "--json")
    first = run_cli(*args, "--out", tmp_path / "a", env_extra=cache)
    assert first.returncode == 0, first.stderr
    assert "exported" in first.stderr
    cached = list((tmp_path / "cache" / "checkpoints").glob("*.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = run_cli(*args, "--out", tmp_path / "b", env_extra=cache)
    assert second.returncode == 0, second.stderr
    assert "exported" not in second.stderr and cached[0].stat().st_mtime_ns == stamp
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["di"] == b["di"] and a["scale"] == SCALE
    want = ref.reference_lam(SpandrelCall(_descriptor(ckpt)), ref.prepare_lr(hr, SCALE), *WINDOW, size=SIZE,
                             fold=FOLD)
    assert abs(a["di"] - want["di"]) <= 0.01
    np.testing.assert_allclose(np.load(tmp_path / "a" / "attribution.npy"), want["M"], atol=1e-4)


def test_check_gate_takes_a_checkpoint(checkpoints, hr, tmp_path):
    """`onnxlam check CKPT IMAGE`: the gate resolves the checkpoint like `lam` (one shared resolver)."""
    from PIL import Image

    image = tmp_path / "hr.png"
    Image.fromarray(hr).save(image)
    ckpt = checkpoints["hat", ".safetensors"]
    r = run_cli("check", ckpt, image, "--window", *WINDOW, "--size", SIZE, "--fold", FOLD, "--device", "cpu",
                "--min-di", 1, "--json", env_extra={"ONNXLAM_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    verdict = json.loads(r.stdout)
    want = ref.reference_lam(SpandrelCall(_descriptor(ckpt)), ref.prepare_lr(hr, SCALE), *WINDOW, size=SIZE,
                             fold=FOLD)
    assert verdict["passed"] and abs(verdict["checks"][0]["di"] - want["di"]) <= 0.01


def test_inspect_checkpoint(checkpoints, tmp_path):
    r = run_cli("inspect", checkpoints["hat", ".pth"], "--json", env_extra={"ONNXLAM_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["architecture"] == "HAT" and data["scale"] == SCALE and data["purpose"] == "SR"
    assert data["size_requirements"] == {"minimum": 16, "multiple_of": 1, "square": False}
    assert data["parameters"] == sum(p.numel() for p in _hat().parameters())
    assert data["onnx"] and Path(data["onnx"]).is_file()
    text = run_cli("inspect", checkpoints["hat", ".pth"], env_extra={"ONNXLAM_CACHE": str(tmp_path)})
    assert text.returncode == 0 and "HAT" in text.stdout and "minimum 16" in text.stdout


def _one_error(r, *words):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert lines and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    text = " ".join(r.stderr.split())
    for w in words:
        assert w in text, text


def test_bad_checkpoints_are_one_error_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    _one_error(run_cli("import-pth", junk, "-o", tmp_path / "x.onnx"), "not a PyTorch checkpoint")
    unknown = tmp_path / "unknown.pth"
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3), "decoder.bias": torch.zeros(3)}, unknown)
    _one_error(run_cli("import-pth", unknown, "-o", tmp_path / "x.onnx"), "does not recognise the architecture")
    _one_error(run_cli("lam", tmp_path / "missing.safetensors", tmp_path / "img.png", "--window", 0, 0),
               "checkpoint not found")
    _one_error(run_cli("inspect", tmp_path / "missing.ckpt"), "checkpoint not found")
    assert not (tmp_path / "x.onnx").exists()


BLOCK_TORCH = """
import sys

class NoTorch:  # an install without the torch extra: importing torch or spandrel fails
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "spandrel", "spandrel_extra_arches"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTorch())
from onnxlam.cli.app import main
sys.argv = ["onnxlam"] + sys.argv[1:]
main()
"""


def test_missing_torch_extra_names_the_install_command(tmp_path):
    import subprocess

    from tests.clitools import REPO

    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    for args in (["import-pth", ckpt, "-o", tmp_path / "o.onnx"], ["inspect", ckpt]):
        r = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *map(str, args)], capture_output=True, text=True,
                           cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        _one_error(r, 'pip install "onnxlam[torch]"')
        assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1, r.stderr


def test_fixed_size_only_models_export_at_the_images_size(checkpoints, hr, tmp_path, monkeypatch):
    """When no dynamic export reproduces the model, the resolver exports at the image's LR size and
    caches that export by size; the dynamic attempt is not repeated."""
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path))
    real = pt.export_checkpoint
    calls = []

    def no_dynamic(path, output, *, size=None, exporters=pt.EXPORTERS):
        calls.append(size)
        if size is None:
            raise pt.FixedSizeOnly("the trace baked its size")
        return real(path, output, size=size, exporters=exporters)

    monkeypatch.setattr(pt, "export_checkpoint", no_dynamic)
    ckpt = checkpoints["hat", ".pth"]
    with pytest.raises(InputError, match="fixed input size only"):
        pt.resolve_checkpoint(ckpt)
    image = tmp_path / "hr.png"
    from PIL import Image

    Image.fromarray(hr).save(image)
    path = pt.resolve_checkpoint(ckpt, image=image)
    assert path.name.endswith(f"-{LR_H}x{LR_W}.onnx")
    assert pt.resolve_checkpoint(ckpt, image=image) == path
    assert calls == [None, (LR_H, LR_W)]
    got = onnxlam.analyze(path, hr, WINDOW, SIZE, fold=FOLD, device="cpu")
    want = ref.reference_lam(SpandrelCall(_descriptor(ckpt)), ref.prepare_lr(hr, SCALE), *WINDOW, size=SIZE,
                             fold=FOLD)
    assert float(np.abs(got.attribution - want["M"]).max()) <= 1e-4


def test_when_both_exporters_fail_the_error_names_the_op(checkpoints, tmp_path, monkeypatch):
    """A network calling an op neither exporter converts (an eigen-decomposition): the error names it,
    for each exporter, from the exporters' own messages."""

    class Eig(torch.nn.Module):
        def forward(self, x):
            return x + torch.linalg.eigvals(x[0, 0, :4, :4]).real.sum()

    monkeypatch.setattr(pt, "_call_module", lambda desc: Eig())
    with pytest.raises(pt.ExportError) as caught:
        pt.export_checkpoint(checkpoints["hat", ".pth"], tmp_path / "x.onnx")
    message = str(caught.value)
    assert "neither PyTorch exporter could export it" in message
    assert "torchscript stopped at aten::linalg_eigvals" in message
    assert "dynamo stopped at aten.linalg_eig" in message
    assert not (tmp_path / "x.onnx").exists()


def test_a_local_network_with_size_requirements_is_analysed_whole(hr, tmp_path, monkeypatch):
    """A plain CNN (reach 3 LR px) that spandrel would pad to a multiple of 8: a receptive-field crop
    near the bottom-right border would be padded by a different amount than the image (7 rows for a
    9-row crop, 2 for the 14-row image), so the importer's graph is analysed whole, and the map of a
    border window equals LAM of spandrel's padding (its own pad_tensor) around the network."""
    import_spandrel()
    from spandrel.__helpers.size_req import SizeRequirements, pad_tensor

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 3 * SCALE * SCALE, 3, padding=1), torch.nn.PixelShuffle(SCALE)).eval()
    req = SizeRequirements(multiple_of=8)

    class Descriptor:
        model, scale, size_requirements = net, SCALE, req

        @staticmethod
        def _call_fn(model, x):
            return model(x)

    info = pt.CheckpointInfo(str(tmp_path / "cnn.pth"), "0" * 64, "CNN", "CNN", "SR", SCALE, 3, 3,
                             pt.SizeRequirements(0, 8, False), "supported", (), 0)
    monkeypatch.setattr(pt, "load_checkpoint", lambda path: (Descriptor(), info))
    result = pt.export_checkpoint(tmp_path / "cnn.pth", tmp_path / "cnn.onnx")
    analyzer = onnxlam.Analyzer(result.output, device="cpu")
    assert analyzer.receptive_field.global_ and "size requirements" in analyzer.receptive_field.reason
    window = (SCALE * LR_W - SIZE - 1, SCALE * LR_H - SIZE - 1)  # the bottom-right corner of the map
    got = analyzer.run(hr, window, SIZE, fold=FOLD)
    assert got.crop is None

    class Reference(torch.nn.Module):
        def forward(self, x):
            h, w = x.shape[2:]
            return net(pad_tensor(x, req)[1])[..., : SCALE * h, : SCALE * w]

    want = ref.reference_lam(Reference(), ref.prepare_lr(hr, SCALE), *window, size=SIZE, fold=FOLD)
    assert float(np.abs(got.attribution - want["M"]).max()) <= 1e-4
    assert abs(got.di - want["di"]) <= 0.01
