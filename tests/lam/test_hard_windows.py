"""Hard windows (onnxlam.lam.hard_windows) against a brute-force reference written here: the detector
transcribed in PyTorch on each window, greedy suppression by sorting on (−score, y, x)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from onnxlam.core.errors import InputError
from onnxlam.graph.detector import window_mask
from onnxlam.lam import hard_windows as hw
from onnxlam.lam.result import Window


def torch_detector(image: np.ndarray, x: int, y: int, size: int) -> float:
    """Spec §2 with N = 1, in float64: D = Σ_c Σ_window sqrt(dh[..., :-1] + dw[..., :-1, :])."""
    t = torch.from_numpy(np.asarray(image, np.float64))[None]
    dh = (t[:, :, :-1, :] - t[:, :, 1:, :]) ** 2
    dw = (t[:, :, :, :-1] - t[:, :, :, 1:]) ** 2
    g = torch.sqrt(dh[:, :, :, :-1] + dw[:, :, :-1, :])
    return g[:, :, y:y + size, x:x + size].sum().item()


def brute_force(image: np.ndarray, size: int, k: int) -> list[tuple[int, int, float]]:
    _, height, width = image.shape
    step = size // 2
    candidates = [(x, y, torch_detector(image, x, y, size))
                  for y in range(0, height - 1 - size + 1, step) for x in range(0, width - 1 - size + 1, step)]
    candidates.sort(key=lambda c: (-c[2], c[1], c[0]))
    taken = []
    for x, y, score in candidates:
        if all(abs(x - tx) >= size or abs(y - ty) >= size for tx, ty, _ in taken):
            taken.append((x, y, score))
        if len(taken) == k:
            break
    return taken


def as_tuples(windows):
    return [(w.x, w.y, w.score) for w in windows]


def assert_same(got, expected):
    assert [(x, y) for x, y, _ in got] == [(x, y) for x, y, _ in expected]
    assert [s for *_, s in got] == pytest.approx([s for *_, s in expected], rel=1e-12)


# --------------------------------------------------------------------------- against the reference
@pytest.mark.parametrize("shape, size, k", [((3, 40, 52), 8, 6), ((3, 33, 47), 7, 20), ((1, 30, 30), 2, 50),
                                             ((3, 64, 48), 16, 3)])
def test_random_images_match_brute_force(shape, size, k):
    image = np.random.default_rng(sum(shape) + size).random(shape).astype(np.float32)
    assert_same(as_tuples(hw.hard_windows(image, size, k)), brute_force(image, size, k))


def test_photograph_matches_brute_force(chelsea):
    image = np.moveaxis(chelsea[40:140, 100:220], 2, 0).astype(np.float32) / 255.0
    got = hw.hard_windows(image, 16, 10)
    assert_same(as_tuples(got), brute_force(image, 16, 10))
    assert got[0].score >= got[-1].score > 0


def test_windows_land_on_bright_edges():
    """Flat black with two bright squares: the best windows hold the squares' edges."""
    image = np.zeros((3, 96, 96), np.float32)
    image[:, 20:28, 60:68] = 1.0
    image[:, 70:74, 10:14] = 0.6
    got = hw.hard_windows(image, 16, 2)
    assert_same(as_tuples(got), brute_force(image, 16, 2))
    first, second = got
    assert (first.x, first.y) == (56, 16) and (second.x, second.y) == (0, 64)   # (y, x) order among ties
    assert first.score > second.score > 0
    for w, (top, left, side) in zip(got, [(20, 60, 8), (70, 10, 4)]):
        assert w.x <= left and left + side <= w.x + w.size and w.y <= top and top + side <= w.y + w.size


# --------------------------------------------------------------------------- ties and overlap
def test_flat_image_ties_go_in_row_then_column_order():
    """Every window scores 0 on a flat image: taken greedily from the top-left, one size apart."""
    got = hw.hard_windows(np.full((3, 41, 41), 0.5, np.float32), 8, 100)
    assert all(w.score == 0.0 for w in got)
    assert [(w.x, w.y) for w in got] == [(x, y) for y in range(0, 33, 8) for x in range(0, 33, 8)]
    assert_same(as_tuples(got), brute_force(np.full((3, 41, 41), 0.5), 8, 100))


def test_window_sharing_one_pixel_row_is_dropped_adjacent_kept():
    """size 4, stride 2, texture in image rows 2..6 (map rows 1..5). The window at y=2 (map rows 2..5)
    wins; y=0 (rows 0..3) and y=4 (rows 4..7) share rows with it and are dropped; y=6 (rows 6..9) is
    adjacent, sharing none, and is kept."""
    rng = np.random.default_rng(0)
    image = np.zeros((1, 13, 5), np.float32)
    image[0, 2:7, :] = rng.random((5, 5))
    got = hw.hard_windows(image, 4, 10)
    ys = [w.y for w in got]
    assert ys[0] == 2 and 4 not in ys and 0 not in ys and 6 in ys
    assert_same(as_tuples(got), brute_force(image, 4, 10))


def test_odd_size_overlap_by_one_pixel():
    """size 5, stride 2: windows at x=0 and x=4 share column 4 (dropped); x=0 and x=6 do not (kept)."""
    image = np.zeros((1, 7, 13), np.float32)
    image[0, :, 0] = 1.0                              # only the left edge is textured
    got = hw.hard_windows(image, 5, 10)
    xs = [w.x for w in got]
    assert xs[0] == 0 and 2 not in xs and 4 not in xs and 6 in xs
    assert_same(as_tuples(got), brute_force(image, 5, 10))


def test_fewer_than_k_when_the_image_cannot_hold_k():
    """A 17×17 image has a 16×16 map: at most four 8×8 windows fit without sharing a pixel."""
    flat = hw.hard_windows(np.zeros((3, 17, 17)), 8, 50)
    assert [(w.x, w.y) for w in flat] == [(0, 0), (8, 0), (0, 8), (8, 8)]
    image = np.random.default_rng(1).random((3, 17, 17))
    got = hw.hard_windows(image, 8, 50)
    assert 1 <= len(got) <= 4
    assert_same(as_tuples(got), brute_force(image, 8, 50))


# --------------------------------------------------------------------------- the cell convention
@pytest.mark.parametrize("height, width, x, y, size", [(20, 30, 0, 0, 5), (20, 30, 24, 14, 5), (17, 17, 3, 8, 8),
                                                        (9, 40, 30, 0, 8), (33, 21, 0, 16, 16)])
def test_window_cells_equal_graph_window_mask(height, width, x, y, size):
    mask = np.zeros((height - 1, width - 1), np.float32)
    mask[hw.window_cells(height, width, x, y, size)] = 1.0
    assert np.array_equal(mask, window_mask(height, width, x, y, size))


def test_window_cells_refuse_windows_window_mask_refuses():
    for args in [(20, 30, 25, 0, 5), (20, 30, 0, 15, 5), (20, 30, -1, 0, 5)]:
        with pytest.raises(InputError):
            window_mask(*args)
        with pytest.raises(InputError):
            hw.window_cells(*args)


def test_every_hard_window_is_a_valid_lam_window():
    image = np.random.default_rng(2).random((3, 50, 70))
    for w in hw.hard_windows(image, 12, 100):
        window_mask(50, 70, w.x, w.y, w.size)            # raises if outside
        assert w.window == Window(w.x, w.y, 12)


def test_window_scores_equal_masked_detector_map():
    image = np.random.default_rng(3).random((3, 30, 26))
    g = hw.detector_map(image)
    xs, ys, scores = hw.window_scores(image, 6)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert scores[i, j] == pytest.approx(float((g * window_mask(30, 26, x, y, 6)).sum()), rel=1e-12)


def test_large_image_is_fast():
    image = np.random.default_rng(4).random((3, 1356, 2040)).astype(np.float32)
    hw.hard_windows(image[:, :64, :64], 16, 8)
    seconds = []
    for _ in range(2):   # the better of two, so that a busy machine does not fail it
        start = time.perf_counter()
        got = hw.hard_windows(image, 16, 8)
        seconds.append(time.perf_counter() - start)
    assert min(seconds) < 1.0 and len(got) == 8


# --------------------------------------------------------------------------- options and errors
def test_parse_hard():
    assert hw.parse_hard("hard:8") == 8
    assert hw.parse_hard(" hard:1 ") == 1
    for bad in ["hard:0", "hard:", "hard:-2", "hard:2.5", "soft:3", "hard 3", "8", ""]:
        with pytest.raises(InputError) as err:
            hw.parse_hard(bad)
        assert "--windows" in str(err.value) and "hard:K" in str(err.value) and "\n" not in str(err.value)


def test_bad_sizes_and_counts():
    image = np.zeros((3, 20, 20))
    with pytest.raises(InputError, match="at least 2"):
        hw.hard_windows(image, 1, 3)
    with pytest.raises(InputError, match="at most 19"):
        hw.hard_windows(image, 20, 3)
    with pytest.raises(InputError):
        hw.hard_windows(image, 8, 0)
    with pytest.raises(InputError):
        hw.hard_windows(np.zeros((20, 20)), 8, 1)


def test_to_json():
    w = hw.ScoredWindow(4, 8, 16, 2.5)
    assert w.to_json() == {"x": 4, "y": 8, "size": 16, "score": 2.5}
