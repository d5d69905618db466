"""The dependence algebra: per-tensor intervals of LR rows and columns, and how ops move them.

A tensor's state is `LocalDependence` (for each element, the LR rows lo..hi and cols lo..hi it
depends on, as broadcastable arrays, and the grid of each axis: a `Grid` mapping it to LR pixels, or
`BrokenGrid` where its samples are not a shift-equivariant grid) or `GlobalDependence` (depends on
the whole image, with the reason). The functions here are the array operations the op rules
(`rules.py`) are made of.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx
from onnx import helper



BIG = 1 << 40          # "depends on nothing" is the empty interval [BIG, −BIG]


ROWS, COLS = 0, 1


LR_AXIS_NAMES = ("rows", "cols")




class GlobalDependence:
    """Depends on the whole image. `order` (node index) keeps the earliest culprit."""

    __slots__ = ("reason", "order")

    def __init__(self, reason: str, order: int):
        self.reason, self.order = reason, order


class BrokenGrid:
    """An image-derived axis whose samples are not a shift-equivariant grid."""

    __slots__ = ("why",)

    def __init__(self, why: str):
        self.why = why


@dataclass(frozen=True)
class Grid:
    lr: int           # ROWS or COLS
    f: Fraction       # samples per LR pixel
    period: int       # LR shift that maps the grid onto itself (f·period is an integer)


class LocalDependence:
    """lo/hi: per LR axis an int64 array of the tensor's rank, each dim 1 or the tensor's dim."""

    __slots__ = ("lo", "hi", "grid")

    def __init__(self, lo, hi, grid):
        self.lo, self.hi, self.grid = list(lo), list(hi), list(grid)

    @property
    def rank(self) -> int:
        return len(self.grid)

    def map(self, fn, grid=None) -> "LocalDependence":
        return LocalDependence([fn(a, True) for a in self.lo], [fn(a, False) for a in self.hi],
                               self.grid if grid is None else grid)


class Unsupported(Exception):
    pass


def combine_grid(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, BrokenGrid):
        return a
    if isinstance(b, BrokenGrid):
        return b
    if a.lr != b.lr or a.f != b.f:
        return BrokenGrid("operands sampled on different grids are combined")
    return Grid(a.lr, a.f, math.lcm(a.period, b.period))


def stride_grid(g, s: int, up: Fraction = Fraction(1)):
    """Grid after sampling every s-th sample (then up-sampling by `up`)."""
    if not isinstance(g, Grid):
        return g
    m = g.f * g.period                # samples per period: an integer
    k = s // math.gcd(int(m), s) if m.denominator == 1 else s * m.denominator
    return Grid(g.lr, g.f / s * up, g.period * k)


def reduce_axes(arr: np.ndarray, axes, lo: bool) -> np.ndarray:
    axes = tuple(a for a in axes if arr.shape[a] > 1)
    if not axes:
        return arr
    return (arr.min if lo else arr.max)(axis=axes, keepdims=True)


def reindex(arr: np.ndarray, axis: int, src: np.ndarray, lo: bool) -> np.ndarray:
    """arr re-indexed along `axis` by `src` (1-D, −1 = reads nothing)."""
    valid = src >= 0
    if arr.shape[axis] == 1:
        if valid.all():
            return arr
        out = np.repeat(arr, len(src), axis=axis)
    else:
        out = np.take(arr, np.where(valid, src, 0), axis=axis)
    if not valid.all():
        idx = [slice(None)] * out.ndim
        idx[axis] = ~valid
        out[tuple(idx)] = BIG if lo else -BIG
    return out


def window_hull(arr: np.ndarray, axis: int, n_in: int, n_out: int, stride: int, pad: int,
                kernel: int, dil: int, lo: bool) -> np.ndarray:
    """Hull over the convolution window: out j reads in j·stride − pad + k·dil (k < kernel)."""
    j = np.arange(n_out)
    reads = [j * stride - pad + k * dil for k in range(kernel)]
    if arr.shape[axis] == 1:
        return _uniform(arr, axis, np.any([(i >= 0) & (i < n_in) for i in reads], axis=0), lo)
    fill, red = (BIG, np.minimum) if lo else (-BIG, np.maximum)
    a = np.moveaxis(arr, axis, 0)
    out = np.full((n_out,) + a.shape[1:], fill, np.int64)
    for i in reads:
        ok = (i >= 0) & (i < n_in)
        out[ok] = red(out[ok], a[i[ok]])
    return np.moveaxis(out, 0, axis)


def _uniform(arr: np.ndarray, axis: int, reads: np.ndarray, lo: bool) -> np.ndarray:
    """An operator over an axis along which `arr` does not vary: output j keeps the value if it
    reads anything (`reads[j]`), else depends on nothing."""
    if reads.all():
        return arr
    out = np.repeat(arr, len(reads), axis=axis)
    idx = [slice(None)] * out.ndim
    idx[axis] = ~reads
    out[tuple(idx)] = BIG if lo else -BIG
    return out


def scatter_hull(arr: np.ndarray, axis: int, n_in: int, n_out: int, stride: int, pad: int,
                 kernel: int, dil: int, lo: bool) -> np.ndarray:
    """Hull for a transposed convolution: in i writes out i·stride − pad + k·dil."""
    i = np.arange(n_in)
    if arr.shape[axis] == 1:
        written = np.zeros(n_out, bool)
        for k in range(kernel):
            j = i * stride - pad + k * dil
            written[j[(j >= 0) & (j < n_out)]] = True
        return _uniform(arr, axis, written, lo)
    fill, red = (BIG, np.minimum) if lo else (-BIG, np.maximum)
    a = np.moveaxis(arr, axis, 0)
    out = np.full((n_out,) + a.shape[1:], fill, np.int64)
    for k in range(kernel):
        j = i * stride - pad + k * dil
        ok = (j >= 0) & (j < n_out)
        out[j[ok]] = red(out[j[ok]], a[i[ok]])
    return np.moveaxis(out, 0, axis)


def hull_ranges(arr: np.ndarray, axis: int, n_in: int, first: np.ndarray, last: np.ndarray,
                lo: bool) -> np.ndarray:
    """Hull over in[first[j] .. last[j]] for each out j (empty where first > last)."""
    if arr.shape[axis] == 1:
        return _uniform(arr, axis, first <= last, lo)
    fill, red = (BIG, np.minimum) if lo else (-BIG, np.maximum)
    a = np.moveaxis(arr, axis, 0)
    out = np.full((len(first),) + a.shape[1:], fill, np.int64)
    width = int((last - first).max()) + 1 if len(first) else 0
    for t in range(max(width, 0)):
        i = first + t
        ok = i <= last
        out[ok] = red(out[ok], a[i[ok]])
    return np.moveaxis(out, 0, axis)


def reshape_dependence(arr: np.ndarray, in_shape, out_shape) -> np.ndarray:
    """Reshape a dependence array, materialising only the dim groups along which it varies."""
    ia = [d for d in range(len(in_shape)) if in_shape[d] != 1]
    oa = [d for d in range(len(out_shape)) if out_shape[d] != 1]
    groups = reshape_groups(in_shape, out_shape, ia, oa)
    a = arr.reshape([arr.shape[d] for d in ia])
    full_in, dims = [], []
    for gi, go in groups:
        if all(arr.shape[d] == 1 for d in gi):
            full_in += [1] * len(gi)
            dims += [1] * len(go)
        else:
            full_in += [in_shape[d] for d in gi]
            dims += [out_shape[d] for d in go]
    a = np.broadcast_to(a, full_in).reshape(dims)
    final = [1] * len(out_shape)
    for k, d in enumerate(oa):
        final[d] = dims[k]
    return np.ascontiguousarray(a.reshape(final))


def reshape_groups(in_shape, out_shape, ia, oa):
    groups, i, j = [], 0, 0
    while i < len(ia):
        if j >= len(oa):
            raise Unsupported("reshape sizes do not match")
        gi, go = [ia[i]], [oa[j]]
        pi, po = in_shape[ia[i]], out_shape[oa[j]]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po:
                if i >= len(ia):
                    raise Unsupported("reshape sizes do not match")
                gi.append(ia[i])
                pi *= in_shape[ia[i]]
                i += 1
            else:
                if j >= len(oa):
                    raise Unsupported("reshape sizes do not match")
                go.append(oa[j])
                po *= out_shape[oa[j]]
                j += 1
        groups.append((gi, go))
    if j != len(oa):
        raise Unsupported("reshape sizes do not match")
    return groups


def node_attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def merge_states(parts: list) -> LocalDependence | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    lo = [parts[0].lo[a] for a in (ROWS, COLS)]
    hi = [parts[0].hi[a] for a in (ROWS, COLS)]
    grid = list(parts[0].grid)
    for p in parts[1:]:
        lo = [np.minimum(x, y) for x, y in zip(lo, p.lo)]
        hi = [np.maximum(x, y) for x, y in zip(hi, p.hi)]
        grid = [combine_grid(x, y) for x, y in zip(grid, p.grid)]
    return LocalDependence(lo, hi, grid)


def compress_axis(arr: np.ndarray, ax: int) -> np.ndarray:
    if arr.shape[ax] > 1 and (arr == arr.take([0], axis=ax)).all():
        return np.ascontiguousarray(arr.take([0], axis=ax))
    return arr


def wraps_around(lo: np.ndarray, ax: int, n: int) -> bool:
    """Whether neighbours along `ax` depend on pixels more than half the image apart (a wrap)."""
    if lo.shape[ax] < 2:
        return False
    a, b = lo.take(range(lo.shape[ax] - 1), axis=ax), lo.take(range(1, lo.shape[ax]), axis=ax)
    real = (a < BIG) & (b < BIG)
    return bool((np.abs(a - b)[real] > n // 2).any()) if n > 2 else False


def reflect_index(src: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros_like(src)
    period = 2 * (n - 1)
    s = np.mod(src, period)
    return np.where(s >= n, period - s, s)


def is_interior_shift(idx: np.ndarray, n: int) -> bool:
    """Whether the index map is a plain shift over at least half the input (pads at its ends)."""
    if len(idx) < 2:
        return False
    steps = np.diff(idx) == 1
    best = run = 0
    for s in steps:
        run = run + 1 if s else 0
        best = max(best, run)
    return best + 1 >= max(2, (n + 1) // 2)


_EPS = 1e-5


def resize_taps(n: int, m: int, scale: Fraction, mode: str, ctm: str, nearest: str,
                antialias: bool, r0: float, r1: float):
    """First and last input index read by each of the m outputs (inclusive, clipped to [0, n))."""
    first = np.empty(m, np.int64)
    last = np.empty(m, np.int64)
    for j in range(m):
        if ctm == "half_pixel":
            x = (Fraction(2 * j + 1, 2)) / scale - Fraction(1, 2)
        elif ctm == "pytorch_half_pixel":
            x = (Fraction(2 * j + 1, 2)) / scale - Fraction(1, 2) if m > 1 else Fraction(0)
        elif ctm == "half_pixel_symmetric":
            adj = Fraction(m) / (scale * n)
            offset = Fraction(n, 2) * (1 - adj)
            x = offset + Fraction(2 * j + 1, 2) / scale - Fraction(1, 2)
        elif ctm == "align_corners":
            x = Fraction(0) if m == 1 else Fraction(j * (n - 1), m - 1)
        elif ctm == "asymmetric":
            x = Fraction(j) / scale
        elif ctm == "tf_half_pixel_for_nn":
            x = Fraction(2 * j + 1, 2) / scale
        elif ctm == "tf_crop_and_resize":
            a, b = Fraction(r0), Fraction(r1)
            x = (a * (n - 1) + j * (b - a) * (n - 1) / (m - 1)) if m > 1 else (a + b) / 2 * (n - 1)
        else:
            raise Unsupported(f"unknown coordinate_transformation_mode {ctm!r}")
        if mode == "nearest":
            cands = set()
            for rule in nearest.split("|"):
                cands |= _nearest(x, rule)
            lo_i, hi_i = min(cands), max(cands)
        else:
            support = 1 if mode == "linear" else 2
            if antialias and scale < 1:
                s = support / scale
                lo_i, hi_i = math.floor(x - s), math.ceil(x + s)
            else:
                fl = math.floor(x)
                lo_i, hi_i = (fl, fl + 1) if mode == "linear" else (fl - 1, fl + 2)
        first[j] = min(max(lo_i, 0), n - 1)
        last[j] = min(max(hi_i, 0), n - 1)
    return first, last


def _nearest(x: Fraction, rule: str) -> set:
    """Indices a nearest rule may pick at x; both neighbours when x is within float error of a tie."""
    def pick(v: Fraction) -> int:
        if rule == "floor":
            return math.floor(v)
        if rule == "ceil":
            return math.ceil(v)
        if rule == "round_prefer_ceil":
            return math.floor(v + Fraction(1, 2))
        if rule == "round_prefer_floor":
            return math.ceil(v - Fraction(1, 2))
        raise Unsupported(f"unknown nearest_mode {rule!r}")
    return {pick(x), pick(x - Fraction(_EPS)), pick(x + Fraction(_EPS))} if _near_boundary(
        x, rule) else {pick(x)}


def _near_boundary(x: Fraction, rule: str) -> bool:
    frac = x - math.floor(x)
    boundary = Fraction(0) if rule in ("floor", "ceil") else Fraction(1, 2)
    d = abs(frac - boundary)
    d = min(d, 1 - d) if boundary == 0 else d
    return 0 < d < _EPS
