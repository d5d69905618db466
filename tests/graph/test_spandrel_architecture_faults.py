"""The six architectures behind test_architecture_faults.py, as small seeded spandrel instances: `onnxlam.analyze`
against the independent PyTorch LAM of tests/torch_reference.py (max|ΔM| ≤ 1e-4, |ΔDI| ≤ 0.01).

Slow (each case exports a real architecture and runs two LAMs: 10 s to a few minutes on two cores);
the fast tests of the same faults are the tiny reproducers in test_architecture_faults.py.
Where the TorchScript exporter refuses dynamic axes (SAFMN's adaptive pooling) or they do not hold
(Uformer), the model is exported by it at a static size.
"""
from __future__ import annotations

import copy
import types
import warnings

import numpy as np
import pytest
import torch

from tests import architectures as arch
from tests import torch_reference as ref

pytestmark = pytest.mark.slow


def _spandrel():
    from onnxlam.convert._torchvision import import_spandrel

    return import_spandrel()


def _safmn():
    from spandrel.architectures.SAFMN import SAFMN
    return SAFMN(dim=16, n_blocks=2, upscaling_factor=2)


def _plksr():
    from spandrel.architectures.PLKSR import PLKSR
    return PLKSR(dim=8, n_blocks=2, kernel_size=7, upscaling_factor=2)


class _ImageOnly(torch.nn.Module):
    """The model called on the image alone (Real-CUGAN's `alpha` at its default): the TorchScript
    exporter would otherwise make alpha a second input (the case of tests/graph/test_extra_inputs.py)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def _realcugan():
    from spandrel.architectures.RealCUGAN import UpCunet2x
    return _ImageOnly(UpCunet2x(in_channels=3, out_channels=3))


def _craft():
    from spandrel.architectures.CRAFT import CRAFT
    return CRAFT(window_size=8, embed_dim=32, depths=[1], num_heads=[4], split_size_0=2, split_size_1=8, upscale=2)


def _mirnet2():
    from spandrel_extra_arches.architectures.MIRNet2 import MIRNet2
    return MIRNet2(n_feat=16, chan_factor=1.5, n_MRB=1)


def _fftformer():
    from spandrel.architectures.FFTformer import FFTformer
    return FFTformer(dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1, ffn_expansion_factor=2)


def _uformer():
    from spandrel.architectures.Uformer import Uformer
    return Uformer(img_size=128, embed_dim=8, depths=[1] * 9, num_heads=[1] * 9, win_size=4)


# name: (builder, scale, LR size: spandrel's size requirements), the fault in brackets
ARCHITECTURES = {
    "SAFMN": (_safmn, 2, 32),          # MaxPool kernel 8 with near-ties (1)
    "PLKSR": (_plksr, 2, 16),          # x[:, :k] = conv(…): Transpose + ScatterND, names (2)
    "Uformer": (_uformer, 1, 128),     # names (2)
    "RealCUGAN": (_realcugan, 2, 32),  # negative Pad (3)
    "CRAFT": (_craft, 2, 20),          # torch.flip mirror padding to a multiple of the window (4)
    "MIRNet2": (_mirnet2, 1, 20),      # AvgPool2d(ceil_mode=True) (5)
    "FFTformer": (_fftformer, 1, 32),  # irfft2 (6, dynamo)
}
CASES = [pytest.param(name, exporter, id=f"{name}-{exporter}") for name in ARCHITECTURES
         for exporter in arch.EXPORTERS if not (name == "FFTformer" and exporter == "torchscript")]


def _reference_module(name, model):
    """The module the reference differentiates: the model itself, except PLKSR, whose eval forward
    writes `x[:, :k]` in place (autograd refuses it); its training forward is the same function by
    split and concatenation."""
    if name != "PLKSR":
        return model

    def split_forward(self, x):
        x1, x2 = torch.split(x, [self.idx, x.size(1) - self.idx], dim=1)
        x1 = self.conv(x1) + x1 if self.with_idt else self.conv(x1)
        return torch.cat([x1, x2], dim=1)

    reference = copy.deepcopy(model)
    for mod in reference.modules():
        if type(mod).__name__ == "PLKConv2d":
            mod.forward = types.MethodType(split_forward, mod)
    return reference


# exported by TorchScript at a static size: their dynamic-axes export runs at the traced size only
# (Uformer's img_size is baked into its attention masks), which onnxlam's probes at other sizes reject
STATIC = {"Uformer"}


def _export(model, path, exporter, lr, static=False):
    try:
        if not static:
            return arch.export_onnx(model, path, exporter, lr)
    except Exception:
        if exporter != "torchscript":
            raise
    with warnings.catch_warnings():  # dynamic axes refused: the same exporter at a static size
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 3, lr, lr),), str(path), dynamo=False, opset_version=17)
    return path


@pytest.mark.parametrize("name, exporter", CASES)
def test_architecture_lam_equals_reference(tmp_path, astronaut, name, exporter):
    import onnxlam

    _spandrel()
    build, s, lr = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = build().eval().requires_grad_(False)
    path = _export(model, tmp_path / f"{name}.onnx", exporter, lr, static=name in STATIC and exporter == "torchscript")
    hr = np.ascontiguousarray(astronaut[40:40 + lr * s, 90:90 + lr * s])
    size, fold = 8, 4
    x = y = lr * s // 2 - 4
    res = onnxlam.analyze(path, hr, window=(x, y), size=size, path="blur", sigma=1.2, kernel_size=9, fold=fold)
    r = ref.reference_lam(_reference_module(name, model), ref.prepare_lr(hr, s), x, y, size, "blur", 1.2, fold, 9)
    dM = float(np.abs(np.asarray(res.attribution, np.float64) - r["M"]).max())
    dDI = abs(res.di - r["di"])
    print(f"\n{name}-{exporter} (LR {lr}, ×{s}): max|dM| {dM:.2e}, |dDI| {dDI:.2e} (DI {r['di']:.3f})")
    assert res.nan_gradients == 0
    assert dM <= 1e-4 and dDI <= 0.01
