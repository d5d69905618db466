"""Tests of onnxlam.render.pictures against independent references.

The references are the authors' demo functions (``vis_saliency``, ``vis_saliency_kde``) written
out here with matplotlib, SciPy and Pillow, and SciPy's ``gaussian_kde`` itself. matplotlib is a
test-only dependency (the ``test`` extra); the module under test must not import it.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from onnxlam.render import pictures

matplotlib = pytest.importorskip("matplotlib")

RNG_SEED = 20210619  # any fixed seed: the maps only need to be varied, not special


def _cmap_seismic():
    return matplotlib.colormaps["seismic"]


# ---------------------------------------------------------------- references (the demo's code)


def demo_kde(m: np.ndarray) -> np.ndarray:
    """The density of the demo's ``vis_saliency_kde``, with SciPy's direct O(N²) evaluation."""
    h, w = m.shape
    datapoint_y, datapoint_x = np.mgrid[0:h:1, 0:w:1]
    pixels = np.vstack([datapoint_x.ravel(), datapoint_y.ravel()])
    kernel = stats.gaussian_kde(pixels, weights=m.reshape(-1) + 1e-8)
    z = np.reshape(kernel(pixels).T, m.shape)
    return z / z.max()


def demo_vis_saliency(m: np.ndarray, zoomin: int) -> np.ndarray:
    map_color = (255 * _cmap_seismic()(m * 0.5 + 0.5)).astype(np.uint8)
    img = Image.fromarray(map_color)
    s1, s2 = img.size
    img = img.resize((s1 * zoomin, s2 * zoomin), Image.NEAREST)
    return np.asarray(img.convert("RGB"))


def demo_vis_saliency_kde(m: np.ndarray, zoomin: int) -> np.ndarray:
    z = demo_kde(m)
    map_color = (255 * _cmap_seismic()(z * 0.5 + 0.5)).astype(np.uint8)  # RGBA, alpha 255
    img = Image.fromarray(map_color)
    s1, s2 = img.size
    return np.asarray(img.resize((s1 * zoomin, s2 * zoomin), Image.BICUBIC))[..., :3]


def random_map(shape: tuple[int, int], seed: int = RNG_SEED) -> np.ndarray:
    """A LAM-like map: mostly small values, a few large ones, max below 1."""
    rng = np.random.default_rng(seed)
    m = rng.random(shape) ** 4
    return m / (m.max() + 1e-5)


def hot_map(shape: tuple[int, int], row: int, col: int, noise: float) -> np.ndarray:
    m = np.random.default_rng(RNG_SEED).random(shape) * noise
    m[row, col] = 1.0
    return m


# ---------------------------------------------------------------- seismic


def _sweep() -> np.ndarray:
    dense = np.linspace(-0.25, 1.25, 60001)
    boundaries = np.arange(-2, 259) / 256.0  # LUT bin edges, and each one's float neighbours
    special = [0.0, 1.0, 0.5, 0.25, 0.75, -1e-300, 1 + 1e-15, np.nan, np.inf, -np.inf, 1e300, -1e300]
    return np.concatenate(
        [dense, boundaries, np.nextafter(boundaries, -np.inf), np.nextafter(boundaries, np.inf), special]
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_seismic_equals_matplotlib(dtype):
    with np.errstate(over="ignore"):  # ±1e300 become ±inf in float32, which is fine
        v = _sweep().astype(dtype)
    expected = (255 * _cmap_seismic()(v)).astype(np.uint8)[..., :3]
    got = pictures.seismic(v)
    assert got.dtype == np.uint8 and got.shape == v.shape + (3,)
    np.testing.assert_array_equal(got, expected)


def test_seismic_keeps_array_shape_and_anchor_colours():
    v = np.array([[0.0, 0.5], [1.0, np.nan]])
    got = pictures.seismic(v)
    assert got.shape == (2, 2, 3)
    np.testing.assert_array_equal(got[0, 0], (0, 0, 76))  # 0.3 · 255 truncated
    np.testing.assert_array_equal(got[0, 1], (255, 253, 253))
    np.testing.assert_array_equal(got[1, 0], (127, 0, 0))
    np.testing.assert_array_equal(got[1, 1], (0, 0, 0))  # matplotlib's "bad" colour


def test_module_does_not_import_matplotlib():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(pictures))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "matplotlib" not in imported
    assert imported <= {"__future__", "functools", "collections", "io", "numpy", "PIL", "scipy"}


# ---------------------------------------------------------------- LAM picture


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1, 3, 4])
def test_lam_picture_equals_demo(dtype, scale):
    m = random_map((11, 14)).astype(dtype)
    m[0, 0], m[0, 1] = 0.0, 0.99999  # both ends of the abs-normalised range
    got = pictures.lam_picture(m, scale)
    assert got.shape == (11 * scale, 14 * scale, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, demo_vis_saliency(m, scale))


def test_lam_picture_colours_a_float32_map_in_float32():
    # Just below t = 2k/256 − 1, float32 arithmetic rounds M·0.5 + 0.5 up onto the LUT bin edge
    # k/256 while float64 stays below it: the demo (a float32 map) lands in the upper bin.
    t = (2 * np.arange(193, 256) / 256 - 1).astype(np.float32)
    m = np.nextafter(t, np.float32(0)).reshape(7, 9)
    np.testing.assert_array_equal(pictures.lam_picture(m, 1), demo_vis_saliency(m, 1))


def test_lam_picture_rejects_bad_input():
    with pytest.raises(ValueError):
        pictures.lam_picture(np.zeros((3, 3)), 0)
    with pytest.raises(ValueError):
        pictures.lam_picture(np.zeros((3, 3, 3)), 2)
    with pytest.raises(ValueError):
        pictures.lam_picture(np.full((3, 3), np.nan), 2)


# ---------------------------------------------------------------- KDE density

KDE_CASES = {
    "random 7x9": random_map((7, 9)),
    "random 16x16": random_map((16, 16), seed=1),
    "random 33x20": random_map((33, 20), seed=2),
    "uniform 12x17": np.random.default_rng(3).random((12, 17)),
    "hot + noise 40x40": hot_map((40, 40), 5, 31, noise=1e-3),
    "hot, no noise 24x30": hot_map((24, 30), 20, 3, noise=0.0),
    "all zero 10x13": np.zeros((10, 13)),
    # weight on a line: a nearly singular, strongly correlated (x, y) covariance
    "diagonal 30x30": np.eye(30),
    "two adjacent hot pixels 20x20": np.pad(np.ones((1, 2)), ((7, 12), (3, 15))),
    "float32 map 21x18": random_map((21, 18), seed=4).astype(np.float32),
}


@pytest.mark.parametrize("name", list(KDE_CASES))
def test_kde_density_equals_scipy(name):
    m = KDE_CASES[name]
    got = pictures.kde_density(m)
    expected = demo_kde(m)
    assert got.shape == m.shape and got.dtype == np.float64
    assert got.max() == 1.0
    # FFT rounding is absolute (~1e-16 of the max); relative agreement holds wherever the
    # density is not vanishingly small compared with its max.
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-13)


def test_kde_density_64x64_relative():
    m = random_map((64, 64), seed=5)
    expected = demo_kde(m)
    np.testing.assert_allclose(pictures.kde_density(m), expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("shape", [(1, 9), (6, 1)])
def test_kde_density_single_line_is_the_1d_limit(shape):
    # SciPy cannot do these (singular covariance). The documented fallback equals a 1-D KDE
    # along the line with SciPy's weighted covariance and Scott's factor taken with d = 2.
    m = random_map(shape, seed=6)
    weights = m.ravel() + 1e-8
    w = weights / weights.sum()
    n_eff = 1.0 / np.sum(w**2)
    coords = np.arange(m.size, dtype=np.float64)
    kde_1d = stats.gaussian_kde(coords, weights=weights, bw_method=lambda kde: n_eff ** (-1 / 6))
    z = kde_1d(coords)
    np.testing.assert_allclose(pictures.kde_density(m).ravel(), z / z.max(), rtol=1e-9)


def test_kde_density_single_pixel():
    np.testing.assert_array_equal(pictures.kde_density(np.array([[0.3]])), [[1.0]])


@pytest.mark.parametrize("bad", [np.full((4, 4), -0.1), np.full((4, 4), np.nan), np.zeros(5)])
def test_kde_density_rejects_bad_maps(bad):
    with pytest.raises(ValueError):
        pictures.kde_density(bad)


def test_kde_density_at_256_is_one_fft_convolution(monkeypatch):
    """At 256×256 the density is one FFT convolution of the weight image (O(N log N); 0.14 s here),
    not SciPy's O(N²) pairwise sum (4·10⁹ kernel evaluations). Checked by what it calls, not by a
    timed assertion: the suite's timings move with the machine."""
    calls = []
    convolve = pictures._convolve_same
    monkeypatch.setattr(pictures, "_convolve_same", lambda *a, **k: calls.append(a[0].shape) or convolve(*a, **k))
    m = random_map((256, 256), seed=7)
    z = pictures.kde_density(m)
    assert z.shape == (256, 256) and np.isfinite(z).all() and z.max() == 1.0
    assert calls == [(256, 256)]


# ---------------------------------------------------------------- KDE picture


@pytest.mark.parametrize(
    ("name", "scale"), [("random 16x16", 4), ("random 33x20", 2), ("hot + noise 40x40", 3), ("diagonal 30x30", 4)]
)
def test_kde_picture_equals_demo(name, scale):
    m = KDE_CASES[name]
    got = pictures.kde_picture(m, scale)
    expected = demo_vis_saliency_kde(m, scale)
    assert got.shape == expected.shape == (m.shape[0] * scale, m.shape[1] * scale, 3)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()} grey levels"


# ---------------------------------------------------------------- images


def test_to_uint8_rounds_and_clips():
    x = np.array([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 100.4 / 255, 1.0, 2.0])
    np.testing.assert_array_equal(pictures.to_uint8(x), [0, 0, 0, 2, 100, 255, 255])
    u = np.array([[1, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(pictures.to_uint8(u), u)
    with pytest.raises(ValueError):
        pictures.to_uint8(np.array([np.nan]))


def test_upscale_bicubic_is_pillow_bicubic_of_the_rounded_image():
    lr = np.random.default_rng(8).random((9, 7, 3)).astype(np.float32)
    got = pictures.upscale_bicubic(lr, 4)
    as_bytes = np.clip(np.round(lr.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    expected = np.asarray(Image.fromarray(as_bytes).resize((28, 36), Image.BICUBIC))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(pictures.upscale_bicubic(as_bytes, 4), expected)


def test_blend_mixes_and_rounds():
    pic = np.array([[[0, 255, 10]]], dtype=np.uint8)
    bg = np.array([[[1, 0, 20]]], dtype=np.uint8)
    # 0.5 -> 0 and 127.5 -> 128: NumPy's round half to even
    np.testing.assert_array_equal(pictures.blend(pic, bg), [[[0, 128, 15]]])
    np.testing.assert_array_equal(pictures.blend(pic, bg, alpha=0.0), pic)
    np.testing.assert_array_equal(pictures.blend(pic, bg, alpha=1.0), bg)
    np.testing.assert_array_equal(pictures.blend(pic, bg, alpha=0.25), [[[0, 191, 12]]])
    with pytest.raises(ValueError):
        pictures.blend(pic, np.zeros((1, 2, 3), np.uint8))


def _outline_mask(shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int, width: int) -> np.ndarray:
    """Pixels of an axis-aligned box [x0, x1]×[y0, y1] (inclusive) within ``width`` of its edge."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    inside = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
    ring = (cols < x0 + width) | (cols > x1 - width) | (rows < y0 + width) | (rows > y1 - width)
    return inside & ring


def _red(image: np.ndarray) -> np.ndarray:
    return (image == np.array([255, 0, 0], dtype=np.uint8)).all(axis=-1)


@pytest.mark.parametrize("width", [1, 2, 3])
def test_draw_window_draws_the_square_border(width):
    image = np.full((48, 64, 3), 128, dtype=np.uint8)
    before = image.copy()
    got = pictures.draw_window(image, 10, 5, 16, width=width)
    np.testing.assert_array_equal(image, before)  # input left alone
    mask = _outline_mask((48, 64), 10, 5, 26, 21, width)
    np.testing.assert_array_equal(_red(got), mask)
    np.testing.assert_array_equal(got[~mask], before[~mask])


def test_draw_window_clips_to_the_image_and_keeps_every_side():
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    got = pictures.draw_window(image, 16, 16, 16, width=1)  # box corner (32, 32) is outside
    np.testing.assert_array_equal(_red(got), _outline_mask((32, 32), 16, 16, 31, 31, 1))


def test_draw_window_default_width_grows_with_the_image():
    small = pictures.draw_window(np.zeros((64, 64, 3), np.uint8), 8, 8, 16)
    large = pictures.draw_window(np.zeros((512, 512, 3), np.uint8), 64, 64, 128)
    assert _red(small)[8, 8:25].all() and _red(small).sum() < _red(large).sum()
    assert _red(large)[64:68, 100].all()  # at least 4 px thick at 512 px
    with pytest.raises(ValueError):
        pictures.draw_window(np.zeros((16, 16, 3), np.uint8), 20, 0, 4)


def test_crop_window_crops_and_zooms_with_nearest_neighbour():
    image = np.random.default_rng(9).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    crop = pictures.crop_window(image, 12, 7, 8)
    np.testing.assert_array_equal(crop, image[7:15, 12:20])
    zoomed = pictures.crop_window(image, 12, 7, 8, zoom=40)
    np.testing.assert_array_equal(zoomed, np.repeat(np.repeat(crop, 5, axis=0), 5, axis=1))
    with pytest.raises(ValueError):
        pictures.crop_window(image, 45, 0, 8)


def test_panel_lays_images_out_in_a_row():
    a = np.zeros((10, 5, 3), np.uint8)
    b = np.full((20, 7, 3), 50, np.uint8)
    got = pictures.panel([a, b], gap=4)
    assert got.shape == (20, 16, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[:10, :5], a)
    assert (got[10:, :5] == 255).all()  # shorter image padded with white below
    assert (got[:, 5:9] == 255).all()  # the gap
    np.testing.assert_array_equal(got[:, 9:], b)


def test_panel_labels_go_in_a_strip_underneath():
    images = [np.full((30, 40, 3), 90, np.uint8), np.full((30, 40, 3), 90, np.uint8)]
    got = pictures.panel(images, labels=["LAM", "KDE"], gap=2)
    assert got.shape[0] > 30 and got.shape[1] == 82
    np.testing.assert_array_equal(got[:30, :40], images[0])
    strip = got[30:]
    assert (strip[:, :40] < 128).any() and (strip[:, 42:] < 128).any()  # dark text under each
    with pytest.raises(ValueError):
        pictures.panel(images, labels=["only one"])


def test_save_writes_a_png(tmp_path):
    image = np.random.default_rng(10).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = tmp_path / "picture.png"
    pictures.save(str(path), image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
