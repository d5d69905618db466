"""Six faults that real architectures triggered in onnxlam, each reproduced by a tiny PyTorch net.

Each net has the one pattern of the architecture it stands for, exported with the exporter(s) that
produced the fault; the gradient program built from it must equal torch autograd of the same module
(relative error ≤ 1e-4) and pass the program check; where the fault is still reachable (a monkeypatch
restoring the old behaviour), the test shows that the net really reproduces it.

1. SAFMN: a MaxPool of kernel 8 with near-ties failed the node-local check of a correct program
   (`gradcheck.order_preserving_tangents`); a wrong MaxPool rule must still be rejected.
2. PLKSR / Uformer (dynamo): `x[:, :k] = conv(x[:, :k])` becomes Transpose + ScatterND; a speed
   rewrite named a Constant `val_shape` that onnx-ad had already defined (`rewrite.FreshNames`).
3. Real-CUGAN: a negative Pad (crop) (`rewrite.negative_pad_as_slice`).
4. CRAFT: `torch.flip` and strided slices (`rewrite.slice_steps_as_gather`).
5. MIRNet2: AveragePool with ceil_mode=1 (`rewrite.average_pool_ceil_mode`).
6. FFTformer (dynamo): `torch.fft.irfft2`, an inverse onesided DFT (`rewrite.onesided_inverse_dft_as_full`).

Found by the developers' own table (docs/architectures.md), after the six above:

7. FDAT: a channel gate's Sigmoid sees values of ~1e-5; the node-local difference of a step of ~|z|
   is float32 rounding, and a correct program failed the check (`gradcheck.floored_tangents`).
8. HVI-CIDNet (TorchScript): `hue[mask] = f(y)[mask]` is NonZero/GatherND/ScatterND with a
   data-dependent length onnx-ad cannot differentiate (`rewrite.masked_assignment_as_where`).
9. Flow warping (BasicVSR-style video SR, `F.grid_sample`): onnx-ad lowers GridSample correctly, with
   Floor and Clip nodes whose node-local differences stepped across their jumps and kinks, and the
   correct program failed the check (`gradcheck.in_cell_tangents`).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ad
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from tests import architectures as arch
from tests import torch_reference as ref
from onnxlam.engine import gradcheck
from onnxlam.graph import rewrite
from onnxlam.core.errors import NumericalError
from onnxlam.engine.program import build_program
from onnxlam.engine.runtime import serialise

pytestmark = pytest.mark.integration

LR = 16
TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- the tiny nets
class TiesPool(nn.Module):
    """SAFMN's `adaptive_max_pool2d(x, (h // 8, w // 8))` at 16×16: MaxPool kernel 8 over values that
    lie within a few per cent of each other (1 + 0.05·conv), so near-ties abound. (`max_pool2d` with
    kernel 8: the TorchScript exporter refuses adaptive pooling at dynamic sizes; the ONNX is the same.)"""

    scale = 1

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.o = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        f = 1.0 + 0.05 * self.c(x)
        p = F.max_pool2d(f, 8)
        return x + self.o(f * F.interpolate(p, size=x.shape[-2:], mode="nearest"))


class SliceAssign(nn.Module):
    """PLKSR's partial large-kernel conv in eval mode: `x[:, :idx] = conv(x[:, :idx])` (dynamo: a
    Transpose moving the unit batch axis, ScatterND, Transpose back), ×2 by PixelShuffle."""

    scale = 2

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.p = nn.Conv2d(2, 2, 5, padding=2)
        self.o = nn.Conv2d(8, 12, 3, padding=1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        f = self.c(x)
        g = f.clone()  # (PLKSR writes into f itself; autograd needs f's slice for p's backward)
        g[:, :2] = self.p(f[:, :2])
        return self.up(self.o(F.gelu(g)))


class NegativePad(nn.Module):
    """Real-CUGAN's crops: reflect-pad, convolve, then `F.pad(x, (-a, -b, -c, -d))`, mixed with a
    positive pad on one side (a crop and a pad in one Pad node)."""

    scale = 1

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.c(F.pad(x, (4, 4, 4, 4), mode="reflect"))
        y = F.pad(y, (-4, -4, -4, -4))
        return y + F.pad(x, (-2, 2, -3, 3))


class Flip(nn.Module):
    """CRAFT's mirror padding by `torch.flip` (Slice, step −1) plus a stride-2 slice (step 2)."""

    scale = 1

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        mirrored = torch.cat([torch.flip(x[:, :, :, :3], dims=[3]), x, torch.flip(x[:, :, :, -3:], dims=[3])], 3)
        y = self.c(mirrored)[:, :, :, 3:-3]
        return y + torch.flip(x, dims=[2]) + x[:, :, ::2].repeat_interleave(2, 2)


class CeilPool(nn.Module):
    """MIRNet2's `avg_pool2d(..., ceil_mode=True)` (its down-sampling), with padding or not and
    either count_include_pad: at 16×16, kernel 3 stride 2 overhangs the input; kernel 2 stride 2 not."""

    scale = 1

    def __init__(self, kernel=3, stride=2, padding=0, count_include_pad=False):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)
        self.args = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=True,
                         count_include_pad=count_include_pad)

    def forward(self, x):
        p = F.avg_pool2d(self.c(x), **self.args)
        return x + F.interpolate(p, size=x.shape[-2:], mode="nearest")


class InverseRealFFT(nn.Module):
    """FFTformer's frequency-domain filter: rfft2, a learnt complex weight, irfft2 at the input size."""

    scale = 1

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 1)
        self.w = nn.Parameter(torch.randn(3, LR, LR // 2 + 1, 2) * 0.5)

    def forward(self, x):
        f = torch.fft.rfft2(self.c(x))
        f = f * torch.view_as_complex(self.w)
        return x + torch.fft.irfft2(f, s=x.shape[-2:])


class TinyGate(nn.Module):
    """FDAT's channel gate: global average pool, a 1×1 conv of small weights, a Sigmoid of inputs
    ~1e-5 (FDAT's: 1.7e-6 … 1.8e-5), gating the features."""

    scale = 1

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.g = nn.Conv2d(8, 8, 1)
        self.o = nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():
            self.g.weight.mul_(1e-4)
            self.g.bias.zero_()

    def forward(self, x):
        f = self.c(x)
        return x + self.o(f * torch.sigmoid(self.g(F.adaptive_avg_pool2d(f, 1))))


class MaskedAssign(nn.Module):
    """HVI-CIDNet's hue: boolean-mask assignments `hue[m] = f(y)[m]`, one of them through `% 6`
    (Floor), and a scalar one (`hue[m] = 0`)."""

    scale = 1

    def __init__(self):
        super().__init__()
        self.o = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        eps = 1e-8
        value, low = x.max(1)[0], x.min(1)[0]
        hue = torch.zeros_like(value)
        hue[x[:, 2] == value] = 4.0 + ((x[:, 0] - x[:, 1]) / (value - low + eps))[x[:, 2] == value]
        hue[x[:, 1] == value] = 2.0 + ((x[:, 2] - x[:, 0]) / (value - low + eps))[x[:, 1] == value]
        hue[x[:, 0] == value] = (0.0 + ((x[:, 1] - x[:, 2]) / (value - low + eps))[x[:, 0] == value]) % 6
        hue[low == value] = 0.0
        return x + self.o(torch.cat([x, hue[:, None] / 6.0], 1))


class Warp(nn.Module):
    """BasicVSR's flow warping: `grid_sample` (bilinear) of the image by a flow a conv predicts."""

    scale = 1

    def __init__(self, padding_mode="border", align_corners=True):
        super().__init__()
        self.f = nn.Conv2d(3, 2, 3, padding=1)
        self.o = nn.Conv2d(3, 3, 3, padding=1)
        self.padding_mode, self.align_corners = padding_mode, align_corners

    def forward(self, x):
        h, w = x.shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        grid = torch.stack([xs, ys], -1)[None] + 0.3 * torch.tanh(self.f(x)).permute(0, 2, 3, 1)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode,
                               align_corners=self.align_corners)
        return x + self.o(warped)


def _seeded(cls, *args, **kwargs) -> nn.Module:
    torch.manual_seed(3)
    return cls(*args, **kwargs).eval().requires_grad_(False)  # autograd of the input only (in-place ops)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`exported(cls, exporter, *args)` → (the seeded module, its ONNX export), each exported once."""
    cache = {}

    def get(cls, exporter, *args):
        key = (cls.__name__, exporter) + args
        if key not in cache:
            module = _seeded(cls, *args)
            folder = tmp_path_factory.mktemp(cls.__name__)
            cache[key] = module, arch.export_onnx(module, folder / f"model-{exporter}.onnx", exporter, LR)
        return cache[key]
    return get


def _matches_autograd(path, module, batch=1) -> float:
    """Build (and check) the program; its objective and gradient against torch autograd of `module`."""
    prog = build_program(path, batch, LR, LR, cache=False)
    assert prog.fd_error is not None and prog.fd_error <= gradcheck.FD_TOLERANCE
    H = W = LR * module.scale
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 0.9, (batch, 3, LR, LR)).astype(np.float32)
    mask = np.stack([ref.window_mask(H, W, 2 + 3 * b, 4, 9) for b in range(batch)])[:, None]
    obj, grad = prog.objective_and_gradient(x, mask, "cpu")
    obj_ref, grad_ref = ref.objective_and_gradient(module, x, mask)
    np.testing.assert_allclose(obj[:, 0], obj_ref, rtol=1e-5)
    worst = max(float(np.abs(grad[b, 0] - grad_ref[b]).max() / np.abs(grad_ref[b]).max()) for b in range(batch))
    print(f"\n{path.name}: gradient rel. err {worst:.2e}, check {prog.fd_error:.2e}")
    assert worst <= TOLERANCE
    return worst


def _rejected_without(path, monkeypatch, ops: tuple, **old) -> None:
    """The net reproduces its fault: with the check's tangents as they were (`old`: gradcheck's op
    sets emptied), the node-local check rejects the correct program, worst at one of `ops`."""
    prog = build_program(path, 1, LR, LR, cache=False, verify=False)
    for name, value in old.items():
        monkeypatch.setattr(gradcheck, name, value)
    error, worst = gradcheck.check_local_derivatives(prog, "cpu", report=True)
    print(f"\n{path.name}: node-local error with the old tangents {error:.2e} ({worst[0][1]})")
    assert error > gradcheck.LOCAL_TOLERANCE and worst[0][1].split()[0] in ops


# ----------------------------------------------------------------------------- 1. SAFMN
@pytest.mark.parametrize("exporter", arch.EXPORTERS)
def test_maxpool_with_near_ties_passes_the_check(exported, exporter, monkeypatch):
    module, path = exported(TiesPool, exporter)
    _matches_autograd(path, module)
    _rejected_without(path, monkeypatch, ("MaxPool",), SELECTING=set())  # per-element tangents cross ties


def _argmin_indices(ctx, node):
    """A planted bug for both modes at once: the window's minimum instead of its maximum."""
    extra = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "storage_order"}
    negated = ctx.b.op("Neg", [node.input[0]])
    _, indices = ctx.b.op("MaxPool", [negated], outputs=2, stem="argmin", **extra)
    return indices


def _scaled_forward(ctx, node, tangents):
    right = _REAL_MAXPOOL_FORWARD(ctx, node, tangents)
    return [ctx.b.op("Mul", [right[0], ctx.constant(1.05, ctx.dtype(node.input[0]))])] + right[1:]


_REAL_MAXPOOL_FORWARD = onnx_ad.rules.FORWARD["MaxPool"]


def _wrong_reverse(ctx, node, grads):
    return [ctx.b.op("Mul", [onnx_ad.rules._max_pool_reverse(ctx, node, grads)[0],
                             ctx.constant(0.9, ctx.dtype(node.input[0]))])]


@pytest.mark.parametrize("plant", ["argmin-both-modes", "forward-x1.05", "reverse-x0.9"])
def test_a_wrong_maxpool_rule_is_still_rejected(exported, monkeypatch, plant):
    """The tie-proof tangents do not blind the check: wrong MaxPool rules still fail it."""
    _, path = exported(TiesPool, "torchscript")
    if plant == "argmin-both-modes":  # consistent in J and Jᵀ: only the node-local check can see it
        monkeypatch.setattr(onnx_ad.rules, "_max_pool_indices", _argmin_indices)
        prog = build_program(path, 1, LR, LR, cache=False, verify=False)
        assert gradcheck.check_forward_reverse(prog, "cpu") < gradcheck.FR_TOLERANCE
        local = gradcheck.check_local_derivatives(prog, "cpu")
        print(f"\n{plant}: node-local error {local:.2e}")
        assert local > 10 * gradcheck.LOCAL_TOLERANCE
    elif plant == "forward-x1.05":
        monkeypatch.setitem(onnx_ad.rules.FORWARD, "MaxPool", _scaled_forward)
        prog = build_program(path, 1, LR, LR, cache=False, verify=False)
        local = gradcheck.check_local_derivatives(prog, "cpu")
        print(f"\n{plant}: node-local error {local:.2e}")
        assert local > 3 * gradcheck.LOCAL_TOLERANCE
    else:
        monkeypatch.setitem(onnx_ad.rules.REVERSE, "MaxPool", _wrong_reverse)
    with pytest.raises(NumericalError, match="fails its check"):
        build_program(path, 1, LR, LR, cache=False)


# ----------------------------------------------------------------------------- 2. PLKSR / Uformer
def test_slice_assignment_program_has_no_duplicate_names(exported, monkeypatch):
    module, path = exported(SliceAssign, "dynamo")
    assert {"ScatterND", "Transpose"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    _matches_autograd(path, module)
    # the net reproduces the fault: naming new values without checking gives onnx-ad's `…_shape` twice
    monkeypatch.setattr(rewrite.FreshNames, "__call__", lambda self, base: base)
    with pytest.raises(Exception, match="Duplicate definition"):
        build_program(path, 1, LR, LR, cache=False)


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    session = ort.InferenceSession(serialise(model), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_every_rewrite_draws_fresh_names():
    """A graph already holding every name each rewrite would take first: the rewritten graph is
    still valid (single assignment) and keeps its values."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 6])
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),          # unit-axes transpose
        helper.make_node("Shape", ["t"], ["t_shape"]),                            # onnx-ad's name for it
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),          # a crop and a pad
        helper.make_node("Slice", ["x", "s0", "s1", "s2", "s3"], ["s"]),          # a flip
        helper.make_node("Identity", ["x"], ["p_crop_starts"]),
        helper.make_node("Identity", ["x"], ["p_grow_pads"]),
        helper.make_node("Identity", ["x"], ["s_step_index_3"]),
        helper.make_node("Identity", ["x"], ["s_step_3"]),
    ]
    init = [numpy_helper.from_array(np.array([0, 0, 0, -2, 0, 0, 0, 1], np.int64), "pads"),
            numpy_helper.from_array(np.array([-1], np.int64), "s0"),
            numpy_helper.from_array(np.array([-(2 ** 63)], np.int64), "s1"),
            numpy_helper.from_array(np.array([3], np.int64), "s2"),
            numpy_helper.from_array(np.array([-1], np.int64), "s3")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
               for n in ("t", "p", "s", "p_crop_starts", "p_grow_pads", "s_step_index_3", "s_step_3")]
    outputs.append(helper.make_tensor_value_info("t_shape", TensorProto.INT64, None))
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outputs, init),
                              opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    rewritten = rewrite._apply(rewrite._apply(model, rewrite.REWRITES), rewrite.SPEEDUPS)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Transpose" not in ops and ops.count("Gather") == 1 and ops.count("Slice") == 1
    onnx.checker.check_model(rewritten, full_check=True)  # SSA: every name defined once
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 1, 6)).astype(np.float32)}
    for a, b in zip(_run(model, feeds), _run(rewritten, feeds)):
        np.testing.assert_array_equal(a, b)
    names = rewrite.FreshNames(model)
    assert names("t_shape") == "t_shape_1" and names("t_shape") == "t_shape_2" and names("free") == "free"


# ----------------------------------------------------------------------------- 3. Real-CUGAN
@pytest.mark.parametrize("exporter", arch.EXPORTERS)
def test_negative_pad(exported, exporter):
    module, path = exported(NegativePad, exporter)
    assert any(n.op_type == "Pad" for n in onnx.load(str(path)).graph.node)
    _matches_autograd(path, module, batch=2 if exporter == "torchscript" else 1)


# ----------------------------------------------------------------------------- 4. CRAFT
@pytest.mark.parametrize("exporter", arch.EXPORTERS)
def test_flip_and_strided_slices(exported, exporter):
    module, path = exported(Flip, exporter)
    _matches_autograd(path, module)


def test_slice_steps_as_gather_is_numpy_slicing():
    """Every clamp case of ONNX Slice (negative, out-of-range and INT64 bounds, steps ±1, ±2, −3)
    against onnxruntime's own Slice."""
    big = 2 ** 63 - 1
    cases = [(-1, -big - 1, -1), (5, 0, -2), (0, big, 2), (-2, -9, -3), (20, -20, -1), (1, 4, 3), (7, 2, -1)]
    x = np.arange(2 * 7, dtype=np.float32).reshape(2, 7)
    for start, end, step in cases:
        ins = [numpy_helper.from_array(np.array([v], np.int64), n)
               for v, n in ((start, "st"), (end, "en"), (1, "ax"), (step, "sp"))]
        g = helper.make_graph([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], ins)
        m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
        r = rewrite.make_differentiable(m)
        assert "Slice" not in [n.op_type for n in r.graph.node]
        np.testing.assert_array_equal(_run(r, {"x": x})[0], _run(m, {"x": x})[0], err_msg=str((start, end, step)))


# ----------------------------------------------------------------------------- 5. MIRNet2
POOLS = [pytest.param("torchscript", 3, 2, 0, False, id="k3s2-overhang-exclude-pad-torchscript"),
         pytest.param("torchscript", 3, 2, 1, True, id="k3s2p1-overhang-include-pad-torchscript"),
         pytest.param("torchscript", 3, 2, 1, False, id="k3s2p1-overhang-exclude-pad-torchscript"),
         pytest.param("torchscript", 2, 2, 0, False, id="k2s2-no-overhang-torchscript"),
         pytest.param("dynamo", 3, 2, 1, True, id="k3s2p1-overhang-include-pad-dynamo"),
         pytest.param("dynamo", 2, 2, 0, False, id="k2s2-no-overhang-dynamo")]


@pytest.mark.parametrize("exporter, kernel, stride, padding, include", POOLS)
def test_average_pool_ceil_mode(exported, exporter, kernel, stride, padding, include):
    module, path = exported(CeilPool, exporter, kernel, stride, padding, include)
    pools = [n for n in onnx.load(str(path)).graph.node if n.op_type == "AveragePool"]
    assert pools and all(any(a.name == "ceil_mode" and a.i == 1 for a in n.attribute) for n in pools)
    _matches_autograd(path, module)


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("size, kernel, stride, pads", [(16, 3, 2, [0, 0]), (16, 3, 2, [1, 1]), (15, 4, 3, [1, 2]),
                                                        (9, 5, 4, [2, 0]), (7, 2, 2, [0, 1]), (16, 2, 2, [0, 0])])
def test_ceil_pool_rewrite_equals_onnxruntime(size, kernel, stride, pads, include):
    """The rewrite against onnxruntime's own ceil-mode AveragePool (ONNX's definition as run)."""
    attrs = dict(kernel_shape=[kernel, kernel + 1], strides=[stride, stride], pads=[pads[0], 0, pads[1], 1],
                 ceil_mode=1, count_include_pad=include)
    g = helper.make_graph([helper.make_node("AveragePool", ["x"], ["y"], **attrs)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, size, size + 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    r = rewrite.make_differentiable(m)
    assert not any(a.name == "ceil_mode" and a.i for n in r.graph.node for a in n.attribute)
    x = np.random.default_rng(1).uniform(0.5, 1.5, (1, 2, size, size + 1)).astype(np.float32)
    want, got = _run(m, {"x": x})[0], _run(r, {"x": x})[0]
    assert want.shape == got.shape
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ----------------------------------------------------------------------------- 6. FFTformer
def test_inverse_real_fft(exported):
    module, path = exported(InverseRealFFT, "dynamo")  # the TorchScript exporter has no rfft2
    dfts = [n for n in onnx.load(str(path)).graph.node if n.op_type == "DFT"]
    assert any(any(a.name == "inverse" and a.i for a in n.attribute)
               and any(a.name == "onesided" and a.i for a in n.attribute) for n in dfts)
    _matches_autograd(path, module)


@pytest.mark.parametrize("n", [16, 15, 2, 1])
@pytest.mark.parametrize("axis_as_input", [True, False])
def test_onesided_inverse_dft_rewrite_equals_onnxruntime(n, axis_as_input):
    """The full-spectrum rewrite against onnxruntime's C2R DFT, on a spectrum that is not Hermitian
    (bins 0 and N/2 with imaginary parts: C2R drops them) along a middle axis."""
    m = n // 2 + 1
    opset = 20 if axis_as_input else 17
    init = [numpy_helper.from_array(np.array(n, np.int64), "len")]
    if axis_as_input:
        init.append(numpy_helper.from_array(np.array(1, np.int64), "axis"))
        node = helper.make_node("DFT", ["x", "len", "axis"], ["y"], inverse=1, onesided=1)
    else:
        node = helper.make_node("DFT", ["x", "len"], ["y"], inverse=1, onesided=1, axis=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, m, 3, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    model = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]),
                                              data_prop=True)
    r = rewrite.make_differentiable(model)
    assert not any(a.name == "onesided" and a.i for nd in r.graph.node for a in nd.attribute)
    x = np.random.default_rng(2).standard_normal((2, m, 3, 2)).astype(np.float32)
    want, got = _run(model, {"x": x})[0], _run(r, {"x": x})[0]
    assert got.shape == want.shape == (2, n, 3, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    spectrum = torch.complex(torch.from_numpy(x[..., 0]), torch.from_numpy(x[..., 1]))
    np.testing.assert_allclose(got[..., 0], torch.fft.irfft(spectrum, n=n, dim=1).numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- 7. FDAT
def _wrong_sigmoid(ctx, node, x, y, dtype):
    """onnx-ad's Sigmoid derivative ×1.05, in both modes (one table): only the local check can see it."""
    return ctx.b.op("Mul", [_REAL_SIGMOID(ctx, node, x, y, dtype), ctx.constant(1.05, dtype)])


_REAL_SIGMOID = onnx_ad.rules.DERIVATIVE["Sigmoid"]


@pytest.mark.parametrize("exporter", arch.EXPORTERS)
def test_sigmoid_of_tiny_values_passes_the_check(exported, exporter, monkeypatch):
    module, path = exported(TinyGate, exporter)
    _matches_autograd(path, module)
    _rejected_without(path, monkeypatch, ("Sigmoid",), SMOOTH=set())  # a step of ~|z|: float32 rounding


def test_a_wrong_sigmoid_rule_at_tiny_values_is_still_rejected(exported, monkeypatch):
    _, path = exported(TinyGate, "torchscript")
    monkeypatch.setitem(onnx_ad.rules.DERIVATIVE, "Sigmoid", _wrong_sigmoid)
    prog = build_program(path, 1, LR, LR, cache=False, verify=False)
    assert gradcheck.check_forward_reverse(prog, "cpu") < gradcheck.FR_TOLERANCE  # consistent: invisible there
    local = gradcheck.check_local_derivatives(prog, "cpu")
    print(f"\nSigmoid ×1.05: node-local error {local:.2e}")
    assert local > 3 * gradcheck.LOCAL_TOLERANCE
    with pytest.raises(NumericalError, match="fails its check"):
        build_program(path, 1, LR, LR, cache=False)


# ----------------------------------------------------------------------------- 8. HVI-CIDNet
def test_masked_assignment(exported):
    module, path = exported(MaskedAssign, "torchscript")
    assert {"NonZero", "GatherND", "ScatterND"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    _matches_autograd(path, module)


def test_masked_assignment_rewrite_keeps_values_and_refuses_unsafe_chains():
    """`x[m] = f(y[m])` built by hand: with f = y·2 + 1 the rewrite gives Where and the same values
    as onnxruntime's NonZero graph on inputs with ties; with f = Sqrt (NaN where the mask is off,
    0·NaN in the Where's gradient) it is left alone."""
    def graph(op):
        s = [3, 4, 5]
        nodes = [helper.make_node("Equal", ["y", "x"], ["m"]),
                 helper.make_node("NonZero", ["m"], ["nz"]),
                 helper.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]),
                 helper.make_node("GatherND", ["y", "idx"], ["g"])]
        nodes += ([helper.make_node("Mul", ["g", "two"], ["g2"]), helper.make_node("Add", ["g2", "one"], ["u"])]
                  if op == "affine" else [helper.make_node("Sqrt", ["g"], ["u"])])
        nodes.append(helper.make_node("ScatterND", ["x", "idx", "u"], ["out"]))
        init = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                numpy_helper.from_array(np.array(1.0, np.float32), "one")]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n in "xy"],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, s)], init)
        return onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))

    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, (3, 4, 5)).astype(np.float32)
    y = np.where(rng.uniform(size=x.shape) < 0.5, x, rng.integers(0, 3, x.shape)).astype(np.float32)
    model = graph("affine")
    rewritten = rewrite.masked_assignment_as_where(model)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Where" in ops and not {"NonZero", "GatherND", "ScatterND"} & set(ops)
    onnx.checker.check_model(rewritten, full_check=True)
    np.testing.assert_array_equal(_run(rewritten, {"x": x, "y": y})[0], _run(model, {"x": x, "y": y})[0])
    unsafe = graph("sqrt")
    assert rewrite.masked_assignment_as_where(unsafe) is unsafe


# ----------------------------------------------------------------------------- 9. GridSample
@pytest.mark.parametrize("exporter, padding, align", [("torchscript", "border", True), ("torchscript", "zeros", False),
                                                      ("dynamo", "zeros", True)])
def test_grid_sample_passes_the_check(exported, exporter, padding, align, monkeypatch):
    module, path = exported(Warp, exporter, padding, align)
    assert "GridSample" in {n.op_type for n in onnx.load(str(path)).graph.node}
    _matches_autograd(path, module)
    _rejected_without(path, monkeypatch, ("Floor", "Clip"), PIECEWISE_CONSTANT={}, CLAMPING=set())


@pytest.mark.parametrize("op_type", ["Floor", "Clip"])
def test_a_wrong_floor_or_clip_rule_is_still_rejected(exported, monkeypatch, op_type):
    """In-cell tangents do not blind the check: Floor or Clip passing the tangent through is caught."""
    _, path = exported(Warp, "torchscript", "border", True)
    prog = build_program(path, 1, LR, LR, cache=False, verify=False)
    monkeypatch.setitem(onnx_ad.rules.FORWARD, op_type, lambda ctx, node, tangents: tangents[0])
    local = gradcheck.check_local_derivatives(prog, "cpu")
    print(f"\n{op_type} passing its tangent: node-local error {local:.2e}")
    assert local > gradcheck.LOCAL_TOLERANCE  # Clip: seen 2.0e-2 (few coordinates are clamped); Floor 1.0


# ----------------------------------------------------------------------------- whole LAM maps
LAM_CASES = [pytest.param(TiesPool, "torchscript", id="safmn-maxpool-torchscript"),
             pytest.param(NegativePad, "torchscript", id="realcugan-negative-pad-torchscript"),
             pytest.param(Flip, "dynamo", id="craft-flip-dynamo"),
             pytest.param(InverseRealFFT, "dynamo", id="fftformer-irfft2-dynamo"),
             pytest.param(MaskedAssign, "torchscript", id="hvicidnet-masked-assignment-torchscript"),
             pytest.param(Warp, "torchscript", id="basicvsr-grid-sample-torchscript")]


@pytest.mark.parametrize("cls, exporter", LAM_CASES)
def test_lam_equals_the_torch_reference(exported, astronaut, cls, exporter):
    """`onnxlam.analyze` (receptive field, crop, program, path integral) against the independent
    PyTorch LAM of tests/torch_reference.py: M to 1e-4, DI to 0.01."""
    import onnxlam

    module, path = exported(cls, exporter)
    s = module.scale
    hr = np.ascontiguousarray(astronaut[60:60 + LR * s, 100:100 + LR * s])
    x, y, size, fold = 4, 5, 8, 6
    res = onnxlam.analyze(path, hr, window=(x, y), size=size, path="blur", sigma=1.2, kernel_size=9, fold=fold)
    r = ref.reference_lam(module, ref.prepare_lr(hr, s), x, y, size, "blur", 1.2, fold, 9)
    dM = float(np.abs(np.asarray(res.attribution, np.float64) - r["M"]).max())
    dDI = abs(res.di - r["di"])
    print(f"\n{cls.__name__}-{exporter}: max|dM| {dM:.2e}, |dDI| {dDI:.2e} (DI {r['di']:.3f})")
    assert res.nan_gradients == 0
    assert dM <= 1e-4 and dDI <= 0.01


@pytest.mark.parametrize("cls, exporter, local", [(TiesPool, "torchscript", True), (NegativePad, "torchscript", True),
                                                  (Flip, "torchscript", False), (CeilPool, "torchscript", True),
                                                  (InverseRealFFT, "dynamo", False)])
def test_receptive_field_of_the_reproducers(exported, cls, exporter, local):
    """The static receptive-field analysis runs on every reproducer, before and after the rewrites:
    what it cannot analyse (a DFT, a flip of a whole image axis) makes the model global, never an error."""
    from onnxlam.graph.model import INPUT, open_model, normalise, fix_input_shape
    from onnxlam.graph.receptive_field import receptive_field

    _, path = exported(cls, exporter)
    source, info = open_model(path)
    normalised = normalise(source, info)
    rf = receptive_field(normalised, INPUT, size=(LR, LR))
    assert rf.local == local, rf.to_json()
    fixed = onnx.shape_inference.infer_shapes(fix_input_shape(normalised, (1, 3, LR, LR)), strict_mode=True,
                                              data_prop=True)
    rewritten = rewrite.make_differentiable(fixed)
    # its constants (indices, divisor maps) are for LR × LR, so at 2·LR the analysis cannot follow
    # them: it must say global then (no crop: safe), never raise, and never report another reach
    after = receptive_field(rewritten, INPUT, size=(LR, LR))
    assert after.global_ or after.reach == rf.reach, (rf.to_json(), after.to_json())
