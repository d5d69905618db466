"""Windows worth interpreting: the "hard", textured places of an HR image, not its flat ones.

The score of a window is the LAM detector D (spec §2; Gu & Dong, CVPR 2021) applied to the HR image
`y` itself (C×H×W, values in [0, 1]):

    dh = (y[:, :-1, :] − y[:, 1:, :])²      dw = (y[:, :, :-1] − y[:, :, 1:])²
    g  = sqrt(dh[:, :, :-1] + dw[:, :-1, :])                         C×(H−1)×(W−1)
    D  = Σ_c Σ_{rows y..y+s−1, cols x..x+s−1} g

A window of side s at column x, row y covers the cells g[:, y:y+s, x:x+s] of the (H−1)×(W−1) map, the
cells `graph.detector.window_mask` marks, so it must end one pixel short of the right and bottom
edges: 0 ≤ x ≤ W−1−s, 0 ≤ y ≤ H−1−s. Every window returned here is thus valid for a LAM run on an
SR output of the HR image's size (the HR image cropped to a multiple of the scale).

Candidates lie on a grid of stride s//2 (x = 0, s//2, 2·(s//2), … ≤ W−1−s, likewise y). Greedy
non-maximum suppression then takes the highest-scoring candidate, drops every candidate sharing at
least one pixel with it (|Δx| < s and |Δy| < s), and repeats; equal scores go in (y, x) order.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from onnxlam.core.errors import InputError
from onnxlam.lam.image import read_image, to_unit
from onnxlam.lam.result import Window


@dataclass(frozen=True)
class ScoredWindow:
    """A window (top-left column `x`, row `y`, side `size`) and its detector score D on the HR image."""

    x: int
    y: int
    size: int
    score: float

    @property
    def window(self) -> Window:
        return Window(self.x, self.y, self.size)

    def to_json(self) -> dict:
        return {"x": self.x, "y": self.y, "size": self.size, "score": self.score}


def _image(hr: np.ndarray) -> np.ndarray:
    a = np.asarray(hr)
    if a.ndim != 3 or a.shape[1] < 2 or a.shape[2] < 2:
        raise InputError(f"the HR image must be C×H×W with H, W ≥ 2; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("the HR image holds NaN or inf")
    return a


def detector_map(hr: np.ndarray) -> np.ndarray:
    """Σ_c g: the (H−1)×(W−1) gradient-magnitude map (float64) of a C×H×W image (see the module)."""
    image = _image(hr)
    total = np.zeros((image.shape[1] - 1, image.shape[2] - 1))
    # One channel at a time, in place: a 2040×1356 photograph makes 22 MB temporaries per channel in
    # float64, and fresh memory is slow to touch the first time.
    for channel in image:
        y = channel.astype(np.float64, copy=False)
        g = np.subtract(y[:-1, :-1], y[1:, :-1])
        g *= g
        dw = np.subtract(y[:-1, :-1], y[:-1, 1:])
        dw *= dw
        g += dw
        total += np.sqrt(g, out=g)
    return total


def window_cells(height: int, width: int, x: int, y: int, size: int) -> tuple[slice, slice]:
    """The (rows, cols) of the (H−1)×(W−1) map that the window covers; InputError if it does not fit."""
    if size < 1 or x < 0 or y < 0 or x + size > width - 1 or y + size > height - 1:
        raise InputError(f"window {size}×{size} at x={x}, y={y} does not fit the (H−1)×(W−1) map of a "
                         f"{width}×{height} image; choose 0 ≤ x ≤ {width - 1 - size}, 0 ≤ y ≤ {height - 1 - size}")
    return slice(y, y + size), slice(x, x + size)


def window_scores(hr: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """D of every candidate window: (xs, ys, scores), scores[i, j] for the window at (xs[j], ys[i]).

    Each score is a direct sum over the window's cells, not a summed-area-table difference: the cost
    is about four sums per pixel either way (windows overlap twice per axis), and a direct sum is 0
    exactly on a flat window and equal on equal windows, so ties stay ties.
    """
    if size < 2:
        raise InputError(f"hard windows need a size of at least 2 (the grid's stride is size // 2); got {size}")
    g = detector_map(hr)
    rows, cols = g.shape
    if size > rows or size > cols:
        raise InputError(f"no {size}×{size} window fits a {cols + 1}×{rows + 1} image (a window ends one pixel "
                         f"short of the right and bottom edges); use a size of at most {min(rows, cols)}")
    stride = size // 2
    xs = np.arange(0, cols - size + 1, stride)
    ys = np.arange(0, rows - size + 1, stride)
    views = sliding_window_view(g, (size, size))[::stride, ::stride]
    return xs, ys, views.sum(axis=(2, 3))


def hard_windows(hr: np.ndarray, size: int, k: int) -> list[ScoredWindow]:
    """Up to `k` non-overlapping windows of side `size` with the highest D, best first (see the module).

    Fewer than `k` come back when no more fit without overlapping those already taken.
    """
    if k < 1:
        raise InputError(f"ask for at least 1 hard window; got {k}")
    xs, ys, scores = window_scores(hr, size)
    flat = scores.ravel()
    iy, ix = np.divmod(np.arange(flat.size), xs.size)
    order = np.lexsort((ix, iy, -flat))  # score descending, then row, then column
    # Candidates sit on a grid of stride s//2; those within `reach` grid steps of a taken one overlap it.
    stride = size // 2
    reach = (size - 1) // stride
    dropped = np.zeros(scores.shape, bool)
    taken: list[ScoredWindow] = []
    for i in order:
        r, c = iy[i], ix[i]
        if dropped[r, c]:
            continue
        taken.append(ScoredWindow(int(xs[c]), int(ys[r]), size, float(flat[i])))
        if len(taken) == k:
            break
        dropped[max(r - reach, 0):r + reach + 1, max(c - reach, 0):c + reach + 1] = True
    return taken


@functools.lru_cache(maxsize=256)
def _cached(image: str, stamp: tuple, size: int, k: int, align: int) -> tuple[ScoredWindow, ...]:
    hr = to_unit(read_image(image))
    h, w = hr.shape[1] - hr.shape[1] % align, hr.shape[2] - hr.shape[2] % align
    return tuple(hard_windows(hr[:, :h, :w], size, k))


def image_windows(image: str, size: int, k: int, align: int = 1) -> tuple[ScoredWindow, ...]:
    """The `k` hard windows of side `size` of `image` (cropped to a multiple of `align`), best first;
    computed once per file version (the cache is keyed by its modification time and size)."""
    st = Path(image).stat()
    return _cached(str(image), (st.st_mtime_ns, st.st_size), size, k, align)


HARD = re.compile(r"hard:([0-9]+)")
NEEDS_HR = "--windows hard:K chooses windows on the HR image: drop --lr and give the HR image"


def parse_hard(spec: str) -> int:
    """K of the `--windows` option text `hard:K` (K ≥ 1); InputError otherwise."""
    match = HARD.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if match is None or int(match.group(1)) < 1:
        raise InputError(f"--windows {spec!r} is not of the form hard:K with K ≥ 1 windows (e.g. hard:8)")
    return int(match.group(1))
