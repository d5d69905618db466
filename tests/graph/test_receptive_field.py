"""Static receptive field (onnxlam.graph.receptive_field) against empirical dependence.

References are independent of the analysis: for each small seeded PyTorch model, the exact set of
LR pixels an SR pixel depends on is the support of the float64 autograd gradient of that pixel
(summed over channels) with random weights and inputs (LeakyReLU/Tanh, so no accidental zeros).
The static per-position spans must equal it at every SR row and column (sound and tight), the
reach must equal its maximum, and running the exported model (onnxruntime, float32) on
`crop_box`'s crop must reproduce the full-image SR pixels of the window.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

from onnxlam.graph.receptive_field import (ReceptiveField, analyse_file, crop_box, dependence_box, prepare,
                                     receptive_field)
from onnxlam.engine.runtime import serialise  # lowers the IR version to what onnxruntime loads

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "exported_models" / "animevideov3-x4.onnx"
LR = (24, 20)           # LR height, width for the empirical checks (not square on purpose)
LR4 = (14, 12)          # the same for ×4 models (their SR-resolution convolutions cost 4× more)
torch.set_num_threads(2)


# ------------------------------------------------------------------------------------ test models
def _act():
    return nn.LeakyReLU(0.2)


class Seq(nn.Module):
    """A named sequence of layers; `scale` is the SR factor."""

    def __init__(self, scale, *layers):
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class Interp(nn.Module):
    def __init__(self, factor, mode):
        super().__init__()
        self.factor, self.mode = factor, mode

    def forward(self, x):
        kw = {} if self.mode == "nearest" else {"align_corners": False}
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode, **kw)


class Pad(nn.Module):
    def __init__(self, pads, mode):
        super().__init__()
        self.pads, self.mode = pads, mode

    def forward(self, x):
        return F.pad(x, self.pads, mode=self.mode)


class Residual(nn.Module):
    """SRVGG-like: conv body + PixelShuffle, plus the nearest-upsampled input."""

    scale = 2

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 12, 3, padding=1)
        self.act = _act()

    def forward(self, x):
        f = self.act(self.c1(x))
        f = f + self.act(self.c2(f))           # residual add
        y = F.pixel_shuffle(self.c3(f), 2)
        return y + F.interpolate(x, scale_factor=2, mode="nearest")


class ChannelAttention(nn.Module):
    scale = 2

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), _act(),
                                nn.Conv2d(4, 8, 1), nn.Sigmoid())
        self.c2 = nn.Conv2d(8, 12, 3, padding=1)

    def forward(self, x):
        f = self.c1(x)
        return F.pixel_shuffle(self.c2(f * self.fc(f)), 2)


class NonLocal(nn.Module):
    scale = 2

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.theta, self.phi, self.g = (nn.Conv2d(8, 4, 1) for _ in range(3))
        self.out = nn.Conv2d(4, 8, 1)
        self.c2 = nn.Conv2d(8, 12, 3, padding=1)

    def forward(self, x):
        f = self.c1(x)
        b, c, h, w = f.shape
        t = self.theta(f).flatten(2).transpose(1, 2)            # b, hw, 4
        p = self.phi(f).flatten(2)                              # b, 4, hw
        a = torch.softmax(t @ p, dim=-1)                        # b, hw, hw
        y = (a @ self.g(f).flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, 4, h, w)
        return F.pixel_shuffle(self.c2(f + self.out(y)), 2)


def _conv(cin, cout, k=3, **kw):
    kw.setdefault("padding", (k - 1) // 2 * kw.get("dilation", 1))
    return nn.Conv2d(cin, cout, k, **kw)


# name: (builder, expected static reach (top, bottom, left, right) or None for global,
#        expected period, whether the interior reach equals the reach)
LOCAL = {
    "convs": (lambda: Seq(2, _conv(3, 8), _act(), _conv(8, 8), _act(), _conv(8, 12),
                          nn.PixelShuffle(2)), (3, 3, 3, 3), (1, 1)),
    "dilated": (lambda: Seq(2, _conv(3, 8, dilation=2), nn.Tanh(), _conv(8, 8, dilation=3),
                            _act(), _conv(8, 12, 5), nn.PixelShuffle(2)), (7, 7, 7, 7), (1, 1)),
    # stride 2 then ×4: the floor of the stride makes the reach asymmetric and the period 2
    "strided": (lambda: Seq(2, _conv(3, 8, stride=2), _act(), _conv(8, 8), _act(),
                            _conv(8, 48), nn.PixelShuffle(4)), (6, 5, 6, 5), (2, 2)),
    "convtranspose": (lambda: Seq(2, _conv(3, 8), _act(), nn.ConvTranspose2d(8, 8, 4, 2, 1),
                                  _act(), _conv(8, 3)), (2, 2, 2, 2), (1, 1)),
    "nearest2": (lambda: Seq(2, _conv(3, 8), _act(), Interp(2, "nearest"), _conv(8, 3)),
                 (2, 2, 2, 2), (1, 1)),
    "nearest4": (lambda: Seq(4, _conv(3, 8), _act(), Interp(4, "nearest"), _conv(8, 8), _act(),
                             _conv(8, 3)), (2, 2, 2, 2), (1, 1)),
    "bilinear2": (lambda: Seq(2, _conv(3, 8), _act(), Interp(2, "bilinear"), _conv(8, 3)),
                  (2, 2, 2, 2), (1, 1)),
    "bicubic4": (lambda: Seq(4, _conv(3, 8), _act(), Interp(4, "bicubic"), _conv(8, 3)),
                 (3, 3, 3, 3), (1, 1)),
    # ×3: the sampling points of every third SR row fall on LR pixels, where a linear/cubic
    # tap has weight exactly 0; the analysis counts every tap, so those spans are one wider
    "bilinear3": (lambda: Seq(3, _conv(3, 8), _act(), Interp(3, "bilinear"), _conv(8, 3)),
                  (2, 2, 2, 2), (1, 1)),
    "bicubic3": (lambda: Seq(3, _conv(3, 8), _act(), Interp(3, "bicubic"), _conv(8, 3)),
                 (3, 3, 3, 3), (1, 1)),
    # PixelUnshuffle (exported as Reshape/Transpose/Reshape) then ×4: period 2
    "unshuffle": (lambda: Seq(2, nn.PixelUnshuffle(2), _conv(12, 8), _act(), _conv(8, 48),
                              nn.PixelShuffle(4)), (5, 5, 5, 5), (2, 2)),
    "reflect": (lambda: Seq(2, Pad((2, 2, 2, 2), "reflect"), _conv(3, 8, padding=0), _act(),
                            _conv(8, 12, padding=0), nn.PixelShuffle(2)), (2, 2, 2, 2), (1, 1)),
    # reflect only above/left then a valid 3×3: interior pixels reach 2 up and 0 down, but row 0
    # reads rows 2, 1 (reflected) and 0, so the sound reach is 2 on every side
    "reflect_oneside": (lambda: Seq(2, Pad((2, 0, 2, 0), "reflect"), _conv(3, 12, padding=0),
                                    nn.PixelShuffle(2)), (2, 2, 2, 2), (1, 1)),
    # a border pixel's hull can miss row 0 while it reads a reflection (row 1 reads padded −3):
    # crops must follow the reach, not the hull
    "reflect_dilated": (lambda: Seq(2, Pad((4, 4, 4, 4), "reflect"),
                                    _conv(3, 12, padding=0, dilation=4), nn.PixelShuffle(2)),
                        (4, 4, 4, 4), (1, 1)),
    "replicate": (lambda: Seq(2, Pad((3, 3, 3, 3), "replicate"), _conv(3, 8, padding=0), _act(),
                              _conv(8, 8, padding=0), _act(), _conv(8, 12, padding=0),
                              nn.PixelShuffle(2)), (3, 3, 3, 3), (1, 1)),
    "residual": (Residual, (3, 3, 3, 3), (1, 1)),
}
INTERIOR_LESS = {"reflect_oneside"}   # interior reach is smaller than the border-inclusive reach
WIDER_SPANS = {"bilinear3", "bicubic3"}   # sound, some per-position spans one pixel wider
GLOBAL = {
    "channel_attention": (ChannelAttention, "GlobalAveragePool"),
    "nonlocal": (NonLocal, "Softmax"),
    "instancenorm": (lambda: Seq(2, _conv(3, 8), nn.InstanceNorm2d(8), _conv(8, 12),
                                 nn.PixelShuffle(2)), "InstanceNormalization"),
    "circular": (lambda: Seq(2, Pad((1, 1, 1, 1), "circular"), _conv(3, 12, padding=0),
                             nn.PixelShuffle(2)), "Concat"),
}


def _build(name):
    torch.manual_seed(sum(map(ord, name)))
    builder = LOCAL[name][0] if name in LOCAL else GLOBAL[name][0]
    net = builder().eval()
    for p in net.parameters():     # no weight that is exactly zero
        p.data += torch.sign(p.data) * 0.01
    return net


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("rf_models")
    cache = {}

    def get(name):
        if name not in cache:
            net = _build(name)
            path = root / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(net, (torch.rand(1, 3, 16, 16),), str(path), dynamo=False,
                                  opset_version=17, input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": {2: "h", 3: "w"},
                                                "output": {2: "H", 3: "W"}})
            cache[name] = (net, path)
        return cache[name]
    return get


# --------------------------------------------------------------------------- empirical dependence
def _support(grad: torch.Tensor):
    nz = (grad != 0).any(dim=0)
    rows = torch.nonzero(nz.any(dim=1)).flatten()
    cols = torch.nonzero(nz.any(dim=0)).flatten()
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))


def _empirical(net, positions, lr=LR, seed=0):
    """Row and column support of d(Σ_c SR[c, Y, X]) / d LR for each (Y, X), float64 autograd."""
    net64 = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(positions), 3, *lr, generator=g, dtype=torch.float64, requires_grad=True)
    y = net64(x)
    b = torch.arange(len(positions))
    ys = torch.tensor([p[0] for p in positions])
    xs = torch.tensor([p[1] for p in positions])
    (grad,) = torch.autograd.grad(y[b, :, ys, xs].sum(), x)
    return [_support(grad[i]) for i in range(len(positions))]


def _positions(H, W):
    """Every SR row (paired with a scattered column) and every SR column (with a scattered row)."""
    rows = [(Y, (7 * Y + 3) % W) for Y in range(H)]
    cols = [((5 * X + 1) % H, X) for X in range(W)]
    return rows, cols


def _check_against_empirical(net, rf, scale, lr=LR, exact=True):
    H, W = lr[0] * scale, lr[1] * scale
    rows, cols = _positions(H, W)
    emp = _empirical(net, rows + cols, lr)
    emp_rows = [e[0] for e in emp[:H]]
    emp_cols = [e[1] for e in emp[H:]]
    assert rf.size == lr
    assert len(rf.row_span) == H and len(rf.col_span) == W
    for spans, emp in ((rf.row_span, emp_rows), (rf.col_span, emp_cols)):
        for i, ((lo, hi), (elo, ehi)) in enumerate(zip(spans, emp)):
            assert lo <= elo and ehi <= hi, (i, (lo, hi), (elo, ehi))   # sound everywhere
            if exact:                                                   # and tight, borders too
                assert (lo, hi) == (elo, ehi), (i, (lo, hi), (elo, ehi))
    top = max(Y // scale - lo for Y, (lo, hi) in enumerate(emp_rows))
    bottom = max(hi - Y // scale for Y, (lo, hi) in enumerate(emp_rows))
    left = max(X // scale - lo for X, (lo, hi) in enumerate(emp_cols))
    right = max(hi - X // scale for X, (lo, hi) in enumerate(emp_cols))
    assert rf.reach == (top, bottom, left, right)
    # interior rows: cones away from both borders
    inner = [(Y // scale - lo, hi - Y // scale) for Y, (lo, hi) in enumerate(emp_rows)
             if lo > 0 and hi < lr[0] - 1]
    return (top, bottom, left, right), (max(t for t, _ in inner), max(b for _, b in inner))


def _through_json(rf: ReceptiveField) -> ReceptiveField:
    return ReceptiveField.from_record(json.loads(json.dumps(rf.to_record())))


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(LOCAL))
def test_local_models_match_autograd(name, exported):
    net, path = exported(name)
    lr = LR if net.scale < 4 else LR4
    rf = analyse_file(path, *lr)
    _, expected, period = LOCAL[name]
    assert not rf.global_, rf.reason
    assert rf.confirmed and rf.sizes == (lr, (2 * lr[0], 2 * lr[1]))
    assert rf.reach == expected, (rf.reach, expected)
    assert rf.period == period
    assert rf.scale == (net.scale, net.scale)
    assert rf.radius == (max(expected[:2]), max(expected[2:]))
    reach, interior = _check_against_empirical(net, rf, net.scale, lr, name not in WIDER_SPANS)
    if name in INTERIOR_LESS:
        assert interior[1] < reach[1]
    else:
        assert interior == (reach[0], reach[1]), interior
    js = rf.to_json()
    assert js["global"] is False and js["reach"]["top"] == expected[0]
    assert _through_json(rf) == rf  # the cached record holds every field exactly


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(GLOBAL))
def test_global_models(name, exported):
    net, path = exported(name)
    rf = analyse_file(path, 16, 16)
    assert rf.global_ and rf.reach is None and rf.radius is None
    assert GLOBAL[name][1] in rf.reason, rf.reason
    assert rf.to_json()["global"] is True
    assert _through_json(rf) == rf
    # empirically global too: a corner SR pixel depends on the opposite corner
    ((r0, r1), (c0, c1)), = _empirical(net, [(0, 0)], (16, 16))
    assert (r1, c1) == (15, 15)
    assert crop_box(rf, (3, 3, 4), 2, (16, 16)) == (0, 0, 16, 16)


def _ort(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _windows(H, W, size):
    """Centre, corners, edges, and windows a few LR pixels in from the top/left border."""
    return [(W // 2 - 3, H // 2 + 1, size), (0, 0, size), (W - 1 - size, H - 1 - size, size),
            (W // 2, 0, size), (0, H // 3, size), (W - 1 - size, 5, size), (2, 2, size),
            (11, 10, size), (W // 3, H - size - 9, size)]


def _crop_error(sess, x, box, window, scale, full):
    top, left, bottom, right = box
    y = sess.run(None, {"input": np.ascontiguousarray(x[:, :, top:bottom, left:right])})[0]
    wx, wy, size = window
    need = np.s_[:, :, wy:wy + size + 1, wx:wx + size + 1]
    sub = y[:, :, wy - top * scale:wy - top * scale + size + 1,
            wx - left * scale:wx - left * scale + size + 1]
    assert sub.shape == full[need].shape
    return float(np.abs(sub - full[need]).max())


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(LOCAL))
def test_crop_reproduces_full_image(name, exported):
    net, path = exported(name)
    rf = analyse_file(path, *LR)
    h, w = 40, 36
    s = net.scale
    x = np.random.default_rng(1).random((1, 3, h, w), dtype=np.float32)
    sess = _ort(path)
    full = sess.run(None, {"input": x})[0]
    for window in _windows(h * s, w * s, 4):
        box = crop_box(rf, window, s, (h, w))
        assert box[0] % rf.period[0] == 0 and box[1] % rf.period[1] == 0
        assert (box[2] - box[0]) * (box[3] - box[1]) < h * w or window[1] < 2
        err = _crop_error(sess, x, box, window, s, full)
        assert err <= 5e-6, (window, box, err)    # exact (0.0) but for ×3 resize rounding


@pytest.mark.integration
@pytest.mark.parametrize("name", ["convs", "dilated", "bicubic4", "reflect", "residual"])
def test_crop_one_pixel_short_differs(name, exported):
    """The reach is needed: a crop one LR pixel short on any inner side changes the window."""
    net, path = exported(name)
    s = net.scale
    rf = analyse_file(path, *(LR if s < 4 else LR4))
    h, w = 40, 36
    x = np.random.default_rng(2).random((1, 3, h, w), dtype=np.float32)
    sess = _ort(path)
    full = sess.run(None, {"input": x})[0]
    window = (w * s // 2 - 3, h * s // 2 - 2, 4)
    top, left, bottom, right = crop_box(rf, window, s, (h, w))
    assert top > 0 and left > 0 and bottom < h and right < w
    assert _crop_error(sess, x, (top, left, bottom, right), window, s, full) <= 5e-6
    for short in ((top + 1, left, bottom, right), (top, left + 1, bottom, right),
                  (top, left, bottom - 1, right), (top, left, bottom, right - 1)):
        assert _crop_error(sess, x, short, window, s, full) > 1e-4


@pytest.mark.integration
def test_reflect_crop_needs_the_reach_not_the_hull(exported):
    """Reflect pad 4 then a 3×3 conv of dilation 4: SR rows 2, 3 (LR row 1) read rows 1, 5 and
    the reflection of padded row −3 (row 3), so their hull is rows 1..5. A crop starting at row 1
    reflects its own rows (row 5 instead of 3) and is wrong; the reach-based box starts at row 0."""
    net, path = exported("reflect_dilated")
    h, w = 40, 36
    rf = analyse_file(path, h, w)
    assert rf.row_span[2] == rf.row_span[3] == (1, 5)
    sess = _ort(path)
    x = np.random.default_rng(5).random((1, 3, h, w), dtype=np.float32)
    full = sess.run(None, {"input": x})[0]
    window = (40, 2, 1)
    box = crop_box(rf, window, 2, (h, w))
    assert box[0] == 0
    assert _crop_error(sess, x, box, window, 2, full) <= 5e-6
    assert _crop_error(sess, x, (1,) + box[1:], window, 2, full) > 1e-3


def _detector(y, window):
    """LAM detector: Σ over the window of sqrt(dh² + dw²) summed over channels (float64)."""
    wx, wy, size = window
    dh = (y[:, :, :-1, :] - y[:, :, 1:, :]) ** 2
    dw = (y[:, :, :, :-1] - y[:, :, :, 1:]) ** 2
    g = torch.sqrt(dh[:, :, :, :-1] + dw[:, :, :-1, :])
    return g[:, :, wy:wy + size, wx:wx + size].sum()


@pytest.mark.integration
@pytest.mark.parametrize("name", ["convs", "strided", "bicubic4", "reflect", "residual"])
def test_detector_gradient_vanishes_outside_the_cone(name, exported):
    net, path = exported(name)
    s = net.scale
    lr = LR if s < 4 else LR4
    rf = analyse_file(path, *lr)
    net64 = copy.deepcopy(net).double()
    x = torch.rand(1, 3, *lr, dtype=torch.float64, generator=torch.Generator().manual_seed(3),
                   requires_grad=True)
    y = net64(x)
    for window in _windows(lr[0] * s, lr[1] * s, 3):
        (grad,) = torch.autograd.grad(_detector(y, window), x, retain_graph=True)
        top, left, bottom, right = dependence_box(rf, window, s, lr)
        outside = grad[0].abs().sum(dim=0).clone()
        outside[top:bottom, left:right] = 0
        assert float(outside.abs().max()) == 0.0          # exactly: LAM on the crop is exact
        (r0, r1), (c0, c1) = _support(grad[0])     # and tight: the per-phase reach
        assert (r0, c0, r1 + 1, c1 + 1) == (top, left, bottom, right)


def test_crop_box_arithmetic():
    from onnxlam.graph.receptive_field import ReceptiveField
    from fractions import Fraction as Fr

    rf = ReceptiveField(False, (3, 2, 1, 4), "", (Fr(4), Fr(4)), (1, 1))
    # SR rows 40..48 → LR anchors 10..12; cols 8..16 → 2..4
    assert dependence_box(rf, (8, 40, 8), 4, (50, 60)) == (7, 1, 15, 9)
    assert crop_box(rf, (8, 40, 8), 4, (50, 60)) == (7, 1, 15, 9)
    assert crop_box(rf, (8, 40, 8), 4, (50, 60), margin=2) == (5, 0, 17, 11)
    assert crop_box(rf, (0, 0, 4), 4, (50, 60)) == (0, 0, 4, 6)       # clipped at the border
    rf2 = ReceptiveField(False, (3, 2, 1, 4), "", (Fr(4), Fr(4)), (4, 2))
    top, left, bottom, right = crop_box(rf2, (8, 40, 8), 4, (50, 60))
    assert (top, left) == (4, 0) and (bottom - top) % 4 == 0 and (right - left) % 2 == 0
    assert bottom >= 15 and right >= 9
    glob = ReceptiveField(True, None, "GlobalAveragePool (node 'x')")
    assert crop_box(glob, (8, 40, 8), 4, (50, 60)) == (0, 0, 50, 60)
    with pytest.raises(ValueError):
        crop_box(rf, (8, 40, 8), 2, (50, 60))


def _graph(nodes, inits=(), out_shape=("N", 3, "H", "W")):
    from onnx import TensorProto, helper
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                          list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


def _footprint(model: onnx.ModelProto, size, r, c, scale=1):
    """LR anchors of the SR pixels that change when LR pixel (r, c) changes (onnxruntime)."""
    sess = ort.InferenceSession(serialise(model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).random((1, 3, *size), dtype=np.float32)
    y0 = sess.run(None, {"x": x})[0]
    x[0, :, r, c] += 0.5
    changed = (sess.run(None, {"x": x})[0] != y0).any(axis=(0, 1))
    rows, cols = np.nonzero(changed.any(axis=1))[0] // scale, np.nonzero(changed.any(axis=0))[0] // scale
    return rows.max() - r, r - rows.min(), cols.max() - c, c - cols.min()   # top, bottom, left, right


def test_handmade_graphs():
    from onnx import helper
    w = numpy_helper.from_array(np.full((3, 3, 3, 3), 0.1, np.float32), "w")
    pads = numpy_helper.from_array(np.array([0, 0, 2, 1, 0, 0, 2, 1], np.int64), "pads")
    # wrap padding: the top row reads the bottom rows
    m = _graph([helper.make_node("Pad", ["x", "pads"], ["p"], mode="wrap"),
                helper.make_node("Conv", ["p", "w"], ["y"])], [w, pads])
    rf = receptive_field(m)
    assert rf.global_ and "Pad" in rf.reason and "wrap" in rf.reason
    # edge padding then a valid conv: local, reach 2 rows / 1 col
    m = _graph([helper.make_node("Pad", ["x", "pads"], ["p"], mode="edge"),
                helper.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[5, 3]),
                helper.make_node("Relu", ["c"], ["y"])],
               [numpy_helper.from_array(np.full((3, 3, 5, 3), 0.1, np.float32), "w"), pads])
    rf = receptive_field(m)
    assert rf.reach == (2, 2, 1, 1) and rf.period == (1, 1)
    assert _footprint(m, (16, 16), 8, 7) == rf.reach
    # SAME_UPPER stride-2 conv then DepthToSpace ×2: even n pads 0 before, 1 after
    m = _graph([helper.make_node("Conv", ["x", "w12"], ["c"], kernel_shape=[3, 3], strides=[2, 2],
                                 auto_pad="SAME_UPPER"),
                helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="CRD")],
               [numpy_helper.from_array(np.ones((12, 3, 3, 3), np.float32), "w12")])
    rf = receptive_field(m, size=(16, 16))
    assert rf.reach == (1, 2, 1, 2) and rf.period == (2, 2)
    # conv output j reads rows 2j..2j+2; SR rows 2j, 2j+1 show it
    assert _footprint(m, (16, 16), 9, 9) == (0, 1, 0, 1)    # odd LR pixel 9: j = 4 (SR 8, 9)
    assert _footprint(m, (16, 16), 8, 8) == (1, 2, 1, 2)    # even LR pixel 8: j = 3, 4 (SR 6..9)
    assert rf.row_span[:4] == ((0, 2), (0, 2), (2, 4), (2, 4))
    # an operator from another domain: global, named
    m = _graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                helper.make_node("Mystery", ["c"], ["y"], domain="com.example")], [w])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    rf = receptive_field(m)
    assert rf.global_ and "Mystery" in rf.reason
    # align_corners resizing: local but not shift-equivariant, so crops are the whole image
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    m = _graph([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                                 coordinate_transformation_mode="align_corners")], [scales])
    rf = receptive_field(m, size=(16, 16))
    assert not rf.global_ and rf.period is None and "align_corners" in rf.period_reason
    assert crop_box(rf, (4, 4, 2), 2, (16, 16)) == (0, 0, 16, 16)


# ------------------------------------------------------------------------------ the bundled model
def _torch_run(model: onnx.ModelProto, x: torch.Tensor) -> torch.Tensor:
    """A float64 PyTorch interpreter for the ops of the prepared SRVGG graph (autograd-able)."""
    env = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    env[model.graph.input[0].name] = x
    for node in model.graph.node:
        a = {t.name: onnx.helper.get_attribute_value(t) for t in node.attribute}
        i = [env[n] if n else None for n in node.input]
        f = [t.double() if t is not None and t.is_floating_point() else t for t in i]
        op = node.op_type
        if op == "Constant":
            v = torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
        elif op == "Gather":
            idx = i[1].long()
            v = torch.index_select(f[0], a.get("axis", 0), idx.reshape(-1))
        elif op in ("Conv", "ConvTranspose"):
            p = list(a.get("pads", [0, 0, 0, 0]))
            assert p[:2] == p[2:]
            kw = dict(stride=tuple(a.get("strides", [1, 1])), padding=tuple(p[:2]),
                      dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1))
            if op == "Conv":
                v = F.conv2d(f[0], f[1], f[2] if len(f) > 2 else None, **kw)
            else:
                v = F.conv_transpose2d(f[0], f[1], f[2] if len(f) > 2 else None,
                                       output_padding=tuple(a.get("output_padding", [0, 0])), **kw)
        elif op == "PRelu":
            v = torch.where(f[0] >= 0, f[0], f[0] * f[1])
        elif op == "DepthToSpace":
            assert a.get("mode", b"DCR") == b"CRD"
            v = F.pixel_shuffle(f[0], a["blocksize"])
        elif op == "Add":
            v = f[0] + f[1]
        elif op == "Identity":
            v = i[0]
        elif op == "Slice":
            starts, ends = i[1].tolist(), i[2].tolist()
            axes = i[3].tolist() if len(i) > 3 else list(range(len(starts)))
            sl = [slice(None)] * i[0].ndim
            for s0, e0, ax in zip(starts, ends, axes):
                sl[ax] = slice(s0, e0)
            v = i[0][tuple(sl)]
        else:
            raise AssertionError(f"interpreter lacks {op}")
        env[node.output[0]] = v
    return env[model.graph.output[0].name]


@pytest.mark.integration
@pytest.mark.skipif(not REAL.exists(), reason="bundled model missing")
def test_bundled_animevideov3():
    size = (40, 40)
    rf = analyse_file(REAL, *size)
    assert not rf.global_ and rf.confirmed
    # head conv + 16 body convs + tail conv, all 3×3: reach 18; the reflect pad (10) and the
    # crop (40 SR = 10 LR) only fold border cones inwards; the nearest residual adds nothing
    assert rf.reach == (18, 18, 18, 18) and rf.period == (1, 1)
    assert rf.scale == (4, 4)
    prepared = prepare(onnx.load(str(REAL)), *size)
    x = torch.rand(1, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    # the interpreter agrees with onnxruntime on the original file
    y_ort = _ort(REAL).run(None, {"input": x.float().numpy()})[0]
    with torch.no_grad():
        y = _torch_run(prepared, x)
    assert np.abs(y.numpy() - y_ort).max() < 1e-4
    positions = [(0, 0), (81, 78), (159, 2)]      # corner, centre (cone inside), bottom edge
    xs = x.repeat(len(positions), 1, 1, 1).requires_grad_()
    y = _torch_run(prepared, xs)
    obj = sum(y[b, :, Y, X].sum() for b, (Y, X) in enumerate(positions))
    (grad,) = torch.autograd.grad(obj, xs)
    for b, (Y, X) in enumerate(positions):
        rows, cols = _support(grad[b])
        assert rows == rf.row_span[Y] and cols == rf.col_span[X], (Y, X, rows, cols)
    assert _support(grad[1]) == ((20 - 18, 20 + 18), (19 - 18, 19 + 18))
    # crops through onnxruntime: window at the centre and at a corner
    sess = _ort(REAL)
    xf = x.float().numpy()
    for window in ((70, 74, 8), (0, 0, 8), (151, 20, 8)):
        box = crop_box(rf, window, 4, size)
        assert _crop_error(sess, xf, box, window, 4, y_ort) <= 1e-5, (window, box)


BUNDLED = {  # name: (scale, static reach or None for global, the reason's operator)
    "animevideov3-x4": (4, (18, 18, 18, 18), None),
    "span-x4": (4, (21, 21, 21, 21), None),
    "waifu2x-upconv7-photo-x2": (2, (7, 7, 7, 7), None),
    "realcugan-se-x2": (2, None, "GlobalAveragePool"),   # squeeze-and-excitation blocks
}


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_models_against_a_pixel_perturbation(name):
    """onnxruntime on the original file: changing one interior LR pixel changes exactly the SR
    pixels whose cone holds it (bit-exact comparison: untouched outputs are recomputed from
    identical inputs), so the footprint gives the reach from the other side."""
    path = ROOT / "exported_models" / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path.name} missing")
    s, expected, op = BUNDLED[name]
    size = 48
    rf = analyse_file(path, size, size)
    sess = _ort(path)
    x = np.random.default_rng(6).random((1, 3, size, size), dtype=np.float32)
    y0 = sess.run(None, {"input": x})[0]
    r, c = 24, 22
    x[0, :, r, c] += 0.5
    changed = (sess.run(None, {"input": x})[0] != y0).any(axis=(0, 1))
    rows, cols = np.nonzero(changed.any(axis=1))[0] // s, np.nonzero(changed.any(axis=0))[0] // s
    if expected is None:
        assert rf.global_ and op in rf.reason, rf.reason
        assert changed.all()
        return
    assert not rf.global_ and rf.reach == expected
    # SR pixel Y depends on LR row r iff ⌊Y/s⌋ − top ≤ r ≤ ⌊Y/s⌋ + bottom
    assert (rows.max() - r, r - rows.min(), cols.max() - c, c - cols.min()) == expected


@pytest.mark.integration
def test_a_second_model_reads_the_cached_field(exported, monkeypatch):
    """The analysis runs once per model: a later Model (a warm run) reads the record it left."""
    import onnxlam.engine.model as model_module
    from onnxlam.engine.model import Model

    _, path = exported("residual")
    first = Model(path, device="cpu").receptive_field
    monkeypatch.setattr(model_module, "receptive_field", lambda *a, **k: pytest.fail("analysed again"))
    assert Model(path, device="cpu").receptive_field == first
    assert not first.global_ and first.row_span
