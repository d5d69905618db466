"""Unit tests of onnxlam's pure functions against /work/shared/LAM-SPEC.md, each checked with an
independent computation (hand-worked values, SciPy / Pillow, a from-scratch re-implementation, or
the PyTorch reference in torch_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from tests import architectures as arch
from tests import torch_reference as ref

import onnxlam  # a broken import must fail the suite, not skip it
from onnxlam.engine import program  # noqa: E402
from onnxlam.graph import detector  # noqa: E402
from onnxlam.lam import image  # noqa: E402
from onnxlam.lam import metrics  # noqa: E402
from onnxlam.lam import paths  # noqa: E402


def spec_kernel(sigma: float, ax) -> np.ndarray:
    ax = np.asarray(ax, np.float64)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    k = np.exp(-(xx**2 + yy**2) / (2.0 * (sigma + 1e-5) ** 2))
    return k / k.sum()


@pytest.fixture(scope="module")
def lr_image(chelsea) -> np.ndarray:
    """A 3 x 16 x 16 float32 LR image in [0, 1] (a crop of chelsea.png)."""
    return np.ascontiguousarray(np.moveaxis(chelsea[90:106, 120:136], 2, 0).astype(np.float32) / 255.0)


# --------------------------------------------------------------------------- §3 kernel
def test_kernel_odd_axis_is_minus4_to_4():
    """l = 9: ax = arange(-9//2 + 1, 9//2 + 1) = -4..4 (floor division: -9//2 = -5)."""
    assert list(ref.kernel_axis(9)) == [-4, -3, -2, -1, 0, 1, 2, 3, 4]
    for sigma in (0.5, 1.2, 3.0):
        k = paths.gaussian_kernel(sigma, 9)
        assert k.shape == (9, 9) and k.dtype == np.float64
        np.testing.assert_allclose(k, spec_kernel(sigma, range(-4, 5)), rtol=1e-12, atol=0)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.unravel_index(np.argmax(k), k.shape) == (4, 4)
        np.testing.assert_allclose(k, k[::-1, ::-1], rtol=1e-12)


def test_kernel_even_axis_follows_floor_division():
    """l = 8: ax = arange(-8//2 + 1, 8//2 + 1) = arange(-3, 5) = -3..4 (asymmetric, peak at index 3):
    onnxlam's kernel against the spec's formula on that axis."""
    assert list(ref.kernel_axis(8)) == [-3, -2, -1, 0, 1, 2, 3, 4]
    for sigma in (0.5, 1.2, 3.0):
        k = paths.gaussian_kernel(sigma, 8)
        assert k.shape == (8, 8)
        np.testing.assert_allclose(k, spec_kernel(sigma, range(-3, 5)), rtol=1e-12, atol=0)
        assert np.unravel_index(np.argmax(k), k.shape) == (3, 3)
        assert k[0, 0] > k[-1, -1]  # ax -3 is nearer the centre than ax +4


@pytest.mark.parametrize("size", [3, 4, 5, 8, 9, 11])
@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.2, 2.5])
def test_kernel_matches_reference(size, sigma):
    np.testing.assert_allclose(paths.gaussian_kernel(sigma, size), ref.gaussian_kernel(sigma, size).numpy(), rtol=1e-12)


def test_kernel_sigma_zero_is_a_delta():
    """σ = 0 (the last path step) gives a delta at ax = 0: the last path image is the input itself."""
    for size, centre in ((9, 4), (5, 2), (8, 3)):
        k = paths.gaussian_kernel(0.0, size)
        expected = np.zeros((size, size))
        expected[centre, centre] = 1.0
        np.testing.assert_array_equal(k, expected)


# --------------------------------------------------------------------------- §3 correlation
def _reflect101(i: int, n: int) -> int:
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def _naive_correlate(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Loop implementation: out[c,i,j] = sum_ab k[a,b] x[c, r(i+a-l//2), r(j+b-l//2)], r = reflect-101."""
    C, h, w = x.shape
    l = k.shape[0]
    out = np.zeros(x.shape, np.float64)
    for c in range(C):
        for i in range(h):
            for j in range(w):
                s = 0.0
                for a in range(l):
                    for b in range(l):
                        s += k[a, b] * x[c, _reflect101(i + a - l // 2, h), _reflect101(j + b - l // 2, w)]
                out[c, i, j] = s
    return out


def test_correlate_reflect101_on_a_ramp():
    """Hand-worked 1-D ramp 0 1 2 3 4 along the columns; reflect-101 reads `2 1 | 0 1 2 3 4 | 3 2`."""
    x = np.tile(np.arange(5.0), (5, 1))[None]  # 1 x 5 x 5, every row is the ramp
    k3 = np.zeros((3, 3))
    k3[1, 0] = 1.0  # out[i, j] = x[i, j-1]
    np.testing.assert_array_equal(paths.correlate(x, k3)[0, 0], [1, 0, 1, 2, 3])
    k3 = np.zeros((3, 3))
    k3[1, 2] = 1.0  # out[i, j] = x[i, j+1]
    np.testing.assert_array_equal(paths.correlate(x, k3)[0, 0], [1, 2, 3, 4, 3])
    k5 = np.zeros((5, 5))
    k5[2, 0] = 1.0  # x[i, j-2]
    np.testing.assert_array_equal(paths.correlate(x, k5)[0, 0], [2, 1, 0, 1, 2])
    k5 = np.zeros((5, 5))
    k5[2, 4] = 1.0  # x[i, j+2]
    np.testing.assert_array_equal(paths.correlate(x, k5)[0, 0], [2, 3, 4, 3, 2])
    # the same along the rows (transposed image, transposed kernel)
    xt = np.ascontiguousarray(x.transpose(0, 2, 1))
    k5t = np.zeros((5, 5))
    k5t[0, 2] = 1.0  # x[i-2, j]
    np.testing.assert_array_equal(paths.correlate(xt, k5t)[0, :, 0], [2, 1, 0, 1, 2])
    # a 3-tap average at the border: (x[1] + x[0] + x[1]) / 3 at j = 0, (x[3] + x[4] + x[3]) / 3 at j = 4
    avg = np.zeros((3, 3))
    avg[1, :] = 1.0 / 3.0
    np.testing.assert_allclose(paths.correlate(x, avg)[0, 0], [2 / 3, 1, 2, 3, 10 / 3], rtol=1e-12)


@pytest.mark.parametrize("size", [3, 5, 9])
def test_correlate_matches_scipy_mirror_and_naive(size):
    rng = np.random.default_rng(size)
    x = rng.random((3, 11, 13)).astype(np.float32)
    k = rng.normal(size=(size, size))  # not symmetric: tells correlation from convolution
    out = paths.correlate(x, k)
    assert out.shape == x.shape and out.dtype == np.float64
    scipy_out = np.stack([ndimage.correlate(c.astype(np.float64), k, mode="mirror") for c in x])
    np.testing.assert_allclose(out, scipy_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, _naive_correlate(x.astype(np.float64), k), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, ref.correlate(x, k).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("h,w", [(48, 48), (11, 13), (5, 5), (4, 9), (2, 3), (1, 1), (300, 230)])
@pytest.mark.parametrize("size", [8, 9])
def test_correlate_gives_scipys_bits_at_every_size(h, w, size):
    """The numpy loop (small images), SciPy (large ones, and those under the kernel's half-width, where
    the mirror folds more than once): the same bits as `ndimage.correlate(mode="mirror")` either way,
    an even kernel (the asymmetric axis of spec §3) included."""
    rng = np.random.default_rng(h * w + size)
    x = rng.random((3, h, w))
    for k in (paths.gaussian_kernel(1.2, size), rng.normal(size=(size, size - 2))):
        scipy_out = np.stack([ndimage.correlate(c, k, mode="mirror") for c in x])
        np.testing.assert_array_equal(paths.correlate(x, k), scipy_out)


# --------------------------------------------------------------------------- §3 paths
def _tv(a: np.ndarray) -> float:
    a = a.astype(np.float64)
    return float(np.abs(np.diff(a, axis=-1)).sum() + np.abs(np.diff(a, axis=-2)).sum())


def test_blur_path_sigma_schedule_direction(lr_image):
    x = lr_image
    n = 10
    ps = paths.make_path(x, "blur", sigma=1.2, fold=n, kernel_size=9)
    assert ps.images.shape == ps.derivatives.shape == (n,) + x.shape
    assert ps.images.dtype == ps.derivatives.dtype == ps.baseline.dtype == np.float32
    # last image: sigma_n = 0, the input itself, exactly
    np.testing.assert_array_equal(ps.images[-1], x)
    # first image: sigma_1 = linspace(1.2, 0, n + 1)[1] = 1.08, the most blurred of the path
    sigma1 = 1.2 - 1.2 / n
    np.testing.assert_allclose(ps.images[0], _naive_correlate(x.astype(np.float64), spec_kernel(sigma1, range(-4, 5))), atol=1e-6)
    np.testing.assert_allclose(ps.baseline, _naive_correlate(x.astype(np.float64), spec_kernel(1.2, range(-4, 5))), atol=1e-6)
    tvs = [_tv(ps.baseline)] + [_tv(im) for im in ps.images]
    # less blur at every step (sigma <= 0.12 is a numerical delta, hence <= rather than <)
    assert all(a <= b + 1e-9 for a, b in zip(tvs, tvs[1:])), f"blur must decrease along the path: {tvs}"
    assert tvs[0] < tvs[1] < tvs[n // 2] < tvs[-1]


@pytest.mark.parametrize("kernel_size", [5, 9])
def test_blur_path_matches_reference(lr_image, kernel_size):
    ps = paths.make_path(lr_image, "blur", sigma=1.2, fold=12, kernel_size=kernel_size)
    images, derivs, baseline = ref.make_path(lr_image, "blur", 1.2, 12, kernel_size)
    np.testing.assert_allclose(ps.images, images, atol=1e-6)
    np.testing.assert_allclose(ps.derivatives, derivs, atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(ps.baseline, baseline, atol=1e-6)


@pytest.mark.parametrize("fold", [5, 50])
def test_blur_path_derivative_is_the_step(lr_image, fold):
    """dλ_k / n == x_k - x_{k-1}, with x_{-1} the baseline K(σ) ⊛ x (spec §4)."""
    ps = paths.make_path(lr_image, "blur", sigma=1.2, fold=fold, kernel_size=9)
    prev = np.concatenate([ps.baseline[None], ps.images[:-1]]).astype(np.float64)
    np.testing.assert_allclose(ps.derivatives.astype(np.float64) / fold, ps.images - prev, atol=1e-6)
    # the steps add up to x - baseline
    np.testing.assert_allclose(ps.derivatives.astype(np.float64).sum(0) / fold, lr_image - ps.baseline, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "gaussian-linear"])
def test_linear_paths(lr_image, kind):
    x = lr_image
    n = 7
    ps = paths.make_path(x, kind, sigma=1.2, fold=n, kernel_size=9)
    if kind == "linear":
        np.testing.assert_array_equal(ps.baseline, np.zeros_like(x))
    else:
        np.testing.assert_allclose(ps.baseline, _naive_correlate(x.astype(np.float64), spec_kernel(1.2, range(-4, 5))), atol=1e-6)
    b = ps.baseline.astype(np.float64)
    assert ps.images.shape == ps.derivatives.shape == (n,) + x.shape
    for k in range(n):  # t = linspace(0, 1, n): the first image is the baseline, the last the input
        np.testing.assert_allclose(ps.images[k], b + k / (n - 1) * (x - b), atol=1e-6)
        np.testing.assert_allclose(ps.derivatives[k], x - b, atol=1e-6)
    np.testing.assert_allclose(ps.images[-1], x, atol=1e-7)
    images, derivs, baseline = ref.make_path(x, kind, 1.2, n, 9)
    np.testing.assert_allclose(ps.images, images, atol=1e-6)
    np.testing.assert_allclose(ps.derivatives, derivs, atol=1e-6)


# --------------------------------------------------------------------------- §5 Gini / DI
def numpy_gini(values) -> float:
    a = np.array(values, np.float64).flatten()
    if a.min() < 0:
        a = a - a.min()
    a = np.sort(a + 1e-7)
    n = a.size
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * a) / (n * a.sum()))


def test_gini_all_equal():
    for v in (0.0, 0.3, 1.0):
        M = np.full((8, 8), v, np.float32)
        assert metrics.gini(M) == pytest.approx(0.0, abs=1e-9)
        assert metrics.diffusion_index(M) == pytest.approx(100.0, abs=1e-7)


@pytest.mark.parametrize("N", [2, 10, 256])
def test_gini_one_hot(N):
    a = np.zeros(N, np.float64)
    a[N // 3] = 1.0
    assert metrics.gini(a) == pytest.approx((N - 1) / N, rel=1e-4)
    assert metrics.gini(a) == pytest.approx(numpy_gini(a), rel=1e-9)


def test_gini_hand_computed():
    # [1, 2, 3, 4]: sum_i (2i - 5) a_i = -3 - 2 + 3 + 12 = 10; N sum a = 40  ->  G = 0.25
    assert metrics.gini(np.array([3.0, 1.0, 4.0, 2.0])) == pytest.approx(0.25, abs=1e-6)
    # [5, 6, 7, 8] (min >= 0: not shifted): -15 - 6 + 7 + 24 = 10; 4 * 26 = 104
    assert metrics.gini(np.array([5.0, 6.0, 7.0, 8.0])) == pytest.approx(10 / 104, abs=1e-6)
    # 2-D input is flattened
    assert metrics.gini(np.array([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(0.25, abs=1e-6)


def test_gini_negative_values_are_shifted_by_the_min():
    # [-1, 0, 1, 2] -> [0, 1, 2, 3]: -0 - 1 + 2 + 9 = 10; 4 * 6 = 24
    v = np.array([2.0, -1.0, 1.0, 0.0])
    keep = v.copy()
    assert metrics.gini(v) == pytest.approx(10 / 24, abs=1e-6)
    np.testing.assert_array_equal(v, keep)  # the caller's array is not modified
    assert metrics.gini(np.array([-5.0, -5.0, -5.0])) == pytest.approx(0.0, abs=1e-9)


def test_gini_and_di_on_random_maps():
    rng = np.random.default_rng(3)
    for shape in ((16, 16), (24, 13)):
        M = rng.random(shape).astype(np.float32) ** 4
        keep = M.copy()
        g = metrics.gini(M)
        assert g == pytest.approx(numpy_gini(M), abs=1e-6)
        assert g == pytest.approx(ref.gini(M), abs=1e-6)
        assert metrics.diffusion_index(M) == pytest.approx((1.0 - g) * 100.0, abs=1e-9)
        assert metrics.diffusion_index(M) == pytest.approx((1.0 - numpy_gini(M)) * 100.0, abs=1e-4)
        np.testing.assert_array_equal(M, keep)


def test_abs_normalise():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(3, 9, 7)).astype(np.float32)
    s = np.abs(A.astype(np.float64).sum(0))
    M = metrics.abs_normalise(A)
    assert M.shape == (9, 7)
    np.testing.assert_allclose(M, s / (s.max() + 1e-5), rtol=1e-6, atol=1e-7)
    assert M.max() < 1.0
    np.testing.assert_allclose(metrics.abs_normalise(np.zeros((3, 4, 4))), 0.0)


# --------------------------------------------------------------------------- §2 detector
def test_window_mask():
    m = detector.window_mask(32, 40, 5, 7, 16)
    assert m.shape == (31, 39) and m.dtype == np.float32
    expected = np.zeros((31, 39), np.float32)
    expected[7:23, 5:21] = 1.0  # rows y .. y+d-1, columns x .. x+d-1
    np.testing.assert_array_equal(m, expected)


@pytest.fixture(scope="module")
def nearest_model(tmp_path_factory):
    model = arch.NearestUp().eval()
    path = arch.export_onnx(model, tmp_path_factory.mktemp("nearest") / "nearest.onnx", "torchscript", lr_size=12)
    return model, path


@pytest.mark.integration
def test_detector_zero_gradient_on_constant_image(nearest_model):
    model, path = nearest_model
    x = np.full((1, 3, 12, 12), 0.4, np.float32)
    mask = detector.window_mask(24, 24, 2, 3, 16)[None, None]
    prog = program.build_program(path, batch=1, height=12, width=12)
    obj, grad = prog.objective_and_gradient(x, mask)
    obj, grad = np.asarray(obj)[:, 0], np.asarray(grad)[:, 0]
    assert np.isfinite(grad).all(), "NaN / inf where dh + dw == 0"
    assert np.all(grad == 0.0)
    assert float(np.asarray(obj)[0]) == 0.0


@pytest.mark.integration
def test_detector_zero_gradient_where_dh_dw_vanish(nearest_model, lr_image):
    """Nearest x2: dh + dw == 0 exactly at every even (row, col); those terms contribute 0, the rest
    must equal autograd of the reference detector (which uses the same convention)."""
    model, path = nearest_model
    x = np.ascontiguousarray(lr_image[:, :12, :12][None])
    x[:, :, :, :6] = 0.25  # left half constant: more exact zeros
    mask = detector.window_mask(24, 24, 0, 0, 23)[None, None]
    prog = program.build_program(path, batch=1, height=12, width=12)
    obj, grad = prog.objective_and_gradient(x, mask)
    obj, grad = np.asarray(obj)[:, 0], np.asarray(grad)[:, 0]
    assert np.isfinite(grad).all()
    obj_ref, grad_ref = ref.objective_and_gradient(model, x, mask)
    np.testing.assert_allclose(np.asarray(obj), obj_ref, rtol=1e-5)
    assert np.abs(grad - grad_ref).max() <= 1e-4 * np.abs(grad_ref).max()


@pytest.mark.integration
def test_analyze_constant_image_has_no_nan(nearest_model):
    _, path = nearest_model
    img = np.full((12, 12, 3), 128, np.uint8)
    res = onnxlam.analyze(path, img, window=(4, 4), size=8, lr=True, fold=4)
    assert res.nan_gradients == 0
    assert np.isfinite(res.gradient).all() and np.all(res.gradient == 0)
    assert np.all(res.attribution == 0)
    assert res.di == pytest.approx(100.0, abs=1e-6)


# --------------------------------------------------------------------------- §4 completeness
@pytest.fixture(scope="module")
def smooth_model(tmp_path_factory):
    torch.manual_seed(0)
    model = arch.SmoothNet().eval()
    path = arch.export_onnx(model, tmp_path_factory.mktemp("smooth") / "smooth.onnx", "torchscript", lr_size=12)
    return model, path


@pytest.mark.integration
@pytest.mark.parametrize("kind,fold", [("blur", 400), ("linear", 400), ("gaussian-linear", 100)])
def test_completeness(smooth_model, chelsea, kind, fold):
    """Σ A ≈ D(F(x)) − D(F(baseline)) for a smooth model and a large fold. The reference's Riemann
    error at these folds is 4e-4 (blur), 6e-4 (linear), 5e-6 (gaussian-linear) of the difference."""
    model, path = smooth_model
    hr = np.ascontiguousarray(chelsea[100:124, 100:124])
    lr = ref.prepare_lr(hr, 2)
    wx, wy, d = 4, 5, 12
    res = onnxlam.analyze(path, hr, window=(wx, wy), size=d, lr=False, path=kind, fold=fold)
    baseline = ref.make_path(lr, kind, 1.2, 2, 9)[2]
    delta = ref.forward_objective(model, lr, wx, wy, d) - ref.forward_objective(model, baseline, wx, wy, d)
    c = res.completeness
    assert c.objective_delta == pytest.approx(delta, rel=1e-4)
    assert c.attribution_sum == pytest.approx(float(np.asarray(res.gradient, np.float64).sum()), rel=1e-4, abs=1e-6)
    assert c.attribution_sum == pytest.approx(c.objective_delta, rel=2e-3), (c.attribution_sum, c.objective_delta)


# --------------------------------------------------------------------------- §1 HR -> LR
def _bicubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(
        x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0, np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0)
    )


def _pillow_coeffs(in_size: int, out_size: int):
    """Pillow's bicubic (a = -0.5) antialiasing weights, in its 22-bit fixed point (Resample.c)."""
    scale = in_size / out_size
    fscale = max(scale, 1.0)
    support = 2.0 * fscale
    rows = []
    for o in range(out_size):
        centre = (o + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        idx = np.arange(lo, hi)
        w = _bicubic((idx - centre + 0.5) / fscale)
        w = w / w.sum()
        rows.append((idx, np.trunc(w * (1 << 22) + np.where(w < 0, -0.5, 0.5)).astype(np.int64)))
    return rows


def _pillow_pass(a: np.ndarray, rows, axis: int) -> np.ndarray:
    a = np.moveaxis(a.astype(np.int64), axis, 0)
    out = np.empty((len(rows),) + a.shape[1:], np.int64)
    for o, (idx, w) in enumerate(rows):
        out[o] = np.clip(((1 << 21) + np.tensordot(w, a[idx], axes=(0, 0))) >> 22, 0, 255)
    return np.moveaxis(out, 0, axis)


def hand_prepare_lr(hr: np.ndarray, s: int) -> np.ndarray:
    """Spec §1 by hand: top-left crop to a multiple of s, bicubic (horizontal then vertical pass,
    8-bit rounding between, as Pillow does), / 255, C x h x w."""
    H, W = hr.shape[:2]
    crop = hr[: H - H % s, : W - W % s]
    t = _pillow_pass(crop, _pillow_coeffs(crop.shape[1], crop.shape[1] // s), 1)
    lr = _pillow_pass(t, _pillow_coeffs(crop.shape[0], crop.shape[0] // s), 0)
    return np.moveaxis(lr.astype(np.float32) / 255.0, 2, 0)


@pytest.mark.parametrize("H,W,s", [(35, 37, 4), (33, 34, 2), (50, 49, 3), (32, 32, 2)])
def test_prepare_lr_matches_hand_computation(astronaut, H, W, s):
    hr = np.ascontiguousarray(astronaut[60 : 60 + H, 70 : 70 + W])
    lr = image.prepare_lr(hr, s)
    assert lr.dtype == np.float32
    assert lr.shape == (3, H // s, W // s)
    np.testing.assert_array_equal(lr, hand_prepare_lr(hr, s))
    np.testing.assert_array_equal(lr, ref.prepare_lr(hr, s))
    # crop from the top-left: the rows / columns beyond the last multiple of s do not matter ...
    hr2 = hr.copy()
    hr2[H - H % s :, :] = 255 - hr2[H - H % s :, :]
    hr2[:, W - W % s :] = 0
    np.testing.assert_array_equal(image.prepare_lr(hr2, s), lr)
    # ... and the first ones do
    hr3 = hr.copy()
    hr3[0, 0] = 255 - hr3[0, 0]
    assert not np.array_equal(image.prepare_lr(hr3, s), lr)


def test_prepare_lr_channels_and_range():
    hr = np.zeros((20, 22, 3), np.uint8)
    hr[..., 0] = 255  # pure red
    hr[..., 2] = 51  # blue 0.2
    lr = image.prepare_lr(hr, 2)
    assert lr.shape == (3, 10, 11)
    np.testing.assert_array_equal(lr[0], 1.0)
    np.testing.assert_array_equal(lr[1], 0.0)
    np.testing.assert_allclose(lr[2], 0.2, rtol=0, atol=1e-7)
