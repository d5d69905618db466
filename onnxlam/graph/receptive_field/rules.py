"""One rule per ONNX operator: how it moves the dependence intervals of its inputs to its outputs.

`RULES` maps an op type to its rule `f(analysis, node, index, input_states)`, which returns the output
state (or a list, one per output) and raises `Unsupported` when the op cannot be analysed here (the
driver then marks the output global, with the reason). Ops without a rule are global too. Registered
with `@rule("OpType", ...)`, as onnx-ad's `rules.py` registers gradients.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from onnxlam.graph.receptive_field.intervals import (
    BIG, COLS, ROWS, BrokenGrid, GlobalDependence, Grid, LocalDependence, Unsupported, combine_grid,
    compress_axis, hull_ranges, is_interior_shift, merge_states, node_attrs, reduce_axes,
    reflect_index, reindex, reshape_dependence, reshape_groups, resize_taps, scatter_hull,
    stride_grid, window_hull, wraps_around,
)

from typing import Callable

RULES: dict[str, Callable] = {}


def rule(*op_types: str):
    """Register the decorated function as the rule of `op_types`."""
    def register(fn: Callable) -> Callable:
        for op in op_types:
            RULES[op] = fn
        return fn
    return register


UNARY = {
    "Identity", "Cast", "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Gelu", "Mish", "Exp", "Log", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Erf", "Sin", "Cos", "Tan", "Asin", "Acos",
    "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "IsNaN", "IsInf", "Shrink", "Neg", "Abs",
    "Not", "BitwiseNot", "Swish",
}


ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Mod", "And", "Or", "Xor",
    "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "BitShift", "BitwiseAnd",
    "BitwiseOr", "BitwiseXor", "PRelu", "Where", "Clip",
}


SHAPE_ONLY = {"Shape", "Size", "EyeLike", "RandomNormalLike", "RandomUniformLike"}


REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


POOL = {"MaxPool", "AveragePool", "LpPool"}


GLOBAL_POOL = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}


@rule(*UNARY)
# -- elementwise ------------------------------------------------------------------------------
def _unary(an, node, idx, ins):
    return ins[0]


@rule(*ELEMENTWISE)
def _elementwise(an, node, idx, ins):
    out = node.output[0]
    return _union(an, node, idx, _operands(an, node.input, ins), an.shape(out), out)


def _operands(an, names, states):
    return [(an.shape(n), s) for n, s in zip(names, states) if s is not None]


def _union(an, node, idx, operands, out_shape, out_name):
    rank = len(out_shape)
    lo = [None, None]
    hi = [None, None]
    grid = [None] * rank
    live = [(shp, st) for shp, st in operands if st is not None]
    derived = [False] * rank          # fallback for is_imgsized: an operand's axis is
    for shp, st in live:              # image-derived or its dependence varies along it
        k = rank - len(shp)
        for d in range(k, rank):
            derived[d] |= st.grid[d - k] is not None or any(
                a.shape[d - k] > 1 for a in st.lo)
    for shp, st in live:
        k = rank - len(shp)
        for d in range(rank):
            own = shp[d - k] if d >= k else 1
            if own == 1 and out_shape[d] > 1 and an.is_imgsized(out_name, d, derived[d]):
                return GlobalDependence(f"{an.label(node, idx)} broadcasts an operand of size 1 "
                                        f"across an image axis (axis {d})", idx)
    for shp, st in live:
        k = rank - len(shp)
        for ax in (ROWS, COLS):
            a = st.lo[ax].reshape((1,) * k + st.lo[ax].shape)
            b = st.hi[ax].reshape((1,) * k + st.hi[ax].shape)
            lo[ax] = a if lo[ax] is None else np.minimum(lo[ax], a)
            hi[ax] = b if hi[ax] is None else np.maximum(hi[ax], b)
        g = [None] * k + list(st.grid)
        grid = [combine_grid(x, y) for x, y in zip(grid, g)]
    return LocalDependence(lo, hi, grid)


@rule("Dropout")
def op_dropout(an, node, idx, ins):
    return [ins[0]] * len(node.output)


@rule("CastLike")
def op_cast_like(an, node, idx, ins):
    return ins[0]


@rule("Expand")
def op_expand(an, node, idx, ins):
    out = node.output[0]
    return _union(an, node, idx, _operands(an, node.input[:1], ins[:1]), an.shape(out), out)


@rule("BatchNormalization")
def op_batch_normalization(an, node, idx, ins):
    if any(s is not None for s in ins[1:5]):
        raise Unsupported("its statistics depend on the input")
    if node_attrs(node).get("training_mode", 0):
        return _normalize(an, node, idx, ins[0], node.input[0],
                               [0] + list(range(2, len(an.shape(node.input[0])))))
    return [ins[0]] + [None] * (len(node.output) - 1)


@rule("DequantizeLinear", "QuantizeLinear")
def op_dequantize_linear(an, node, idx, ins):
    if any(s is not None for s in ins[1:]):
        raise Unsupported("its scale depends on the input")
    return ins[0]


@rule("Transpose")
# -- re-indexing ------------------------------------------------------------------------------
def op_transpose(an, node, idx, ins):
    st = ins[0]
    perm = node_attrs(node).get("perm", list(range(st.rank))[::-1])
    return LocalDependence([a.transpose(perm) for a in st.lo], [a.transpose(perm) for a in st.hi],
                           [st.grid[p] for p in perm])


def _reshape(an, st: LocalDependence, in_shape, out_shape, in_name: str | None = None,
             out_name: str | None = None) -> LocalDependence:
    """Arrays reshaped exactly. Grids: an image axis split into (outer, inner…) keeps its
    grid on the outer axis, sampled every prod(inner) (a window partition, a space-to-depth);
    an image axis merged with inner non-image axes (the reverse) gets it back, finer. Anything
    else that splits or merges an image axis is not a grid (period unknown)."""
    ia = [d for d in range(len(in_shape)) if in_shape[d] != 1]
    oa = [d for d in range(len(out_shape)) if out_shape[d] != 1]
    grid = [None] * len(out_shape)
    for gi, go in reshape_groups(in_shape, out_shape, ia, oa):
        if len(gi) == 1 and len(go) == 1:
            grid[go[0]] = st.grid[gi[0]]
            continue
        if all(st.grid[d] is None for d in gi):
            continue
        g = st.grid[gi[0]]
        if (len(gi) == 1 and isinstance(g, Grid)
                and not any(an.is_imgsized(out_name, d, True) for d in go[1:])):
            grid[go[0]] = stride_grid(g, math.prod(out_shape[d] for d in go[1:]))
        elif (len(go) == 1 and isinstance(g, Grid)
              and all(st.grid[d] is None for d in gi[1:])
              and not any(an.is_imgsized(in_name, d, True) for d in gi[1:])):
            grid[go[0]] = Grid(g.lr, g.f * math.prod(in_shape[d] for d in gi[1:]), g.period)
        else:
            for d in go:
                grid[d] = BrokenGrid("a reshape splits or merges an image axis")
    return LocalDependence([reshape_dependence(a, in_shape, out_shape) for a in st.lo],
                           [reshape_dependence(a, in_shape, out_shape) for a in st.hi], grid)


@rule("Reshape")
def op_reshape(an, node, idx, ins):
    if len(ins) > 1 and ins[1] is not None:
        raise Unsupported("its target shape depends on the input's values")
    return _reshape(an, ins[0], an.shape(node.input[0]), an.shape(node.output[0]),
                         node.input[0], node.output[0])


@rule("Flatten", "Unsqueeze", "Squeeze")
def op_flatten(an, node, idx, ins):
    return _reshape(an, ins[0], an.shape(node.input[0]), an.shape(node.output[0]),
                         node.input[0], node.output[0])


@rule("Slice")
def op_slice(an, node, idx, ins):
    if any(s is not None for s in ins[1:]):
        raise Unsupported("its bounds depend on the input's values")
    st = ins[0]
    in_shape = an.shape(node.input[0])
    out_name = node.output[0]
    if an.opset < 10:
        a = node_attrs(node)
        starts, ends = a["starts"], a["ends"]
        axes = a.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = an.const(node.input[1], "starts").tolist()
        ends = an.const(node.input[2], "ends").tolist()
        axes = an.const_or_none(node, 3, "axes")
        axes = list(range(len(starts))) if axes is None else axes.tolist()
        steps = an.const_or_none(node, 4, "steps")
        steps = [1] * len(starts) if steps is None else steps.tolist()
    lo, hi, grid = list(st.lo), list(st.hi), list(st.grid)
    for s0, e0, ax, step in zip(starts, ends, axes, steps):
        ax = ax % len(in_shape)
        n = in_shape[ax]
        src = np.arange(n)[slice(int(s0), int(e0), int(step))]
        if len(src) == n and step == 1:
            continue
        lo = [reindex(a, ax, src, True) for a in lo]
        hi = [reindex(a, ax, src, False) for a in hi]
        if not an.is_imgsized(out_name, ax, st):
            grid[ax] = None
        elif step < 0:
            raise Unsupported("it reverses an image axis")
        elif step > 1:
            grid[ax] = stride_grid(grid[ax], int(step))
    return LocalDependence(lo, hi, grid)


@rule("Gather")
def op_gather(an, node, idx, ins):
    if ins[1] is not None:
        raise Unsupported("its indices depend on the input's values")
    st = ins[0]
    in_shape = an.shape(node.input[0])
    ax = node_attrs(node).get("axis", 0) % len(in_shape)
    ind = np.asarray(an.const(node.input[1], "indices")).astype(np.int64)
    n = in_shape[ax]
    ind = np.where(ind < 0, ind + n, ind)
    flat = ind.reshape(-1)

    def take(a, lo):
        if a.shape[ax] == 1:
            b = a
        else:
            b = np.take(a, flat, axis=ax)
        new = a.shape[:ax] + (b.shape[ax] if a.shape[ax] > 1 else 1,) + a.shape[ax + 1:]
        b = b.reshape(new)
        shp = b.shape[:ax] + (ind.shape if a.shape[ax] > 1 else (1,) * ind.ndim) + b.shape[ax + 1:]
        return b.reshape(shp)

    grid = list(st.grid[:ax])
    g = st.grid[ax]
    if ind.ndim == 1:
        out_name = node.output[0]
        if g is None or not an.is_imgsized(out_name, ax, st):
            grid.append(None)
        elif is_interior_shift(flat, n):
            grid.append(g)
        else:
            grid.append(BrokenGrid("a Gather re-orders an image axis"))
    else:
        grid += [None if g is None else BrokenGrid("a Gather re-shapes an image axis")] * ind.ndim
    grid += list(st.grid[ax + 1:])
    return LocalDependence([take(a, True) for a in st.lo], [take(a, False) for a in st.hi], grid)


@rule("Concat")
def op_concat(an, node, idx, ins):
    out_shape = an.shape(node.output[0])
    rank = len(out_shape)
    ax = node_attrs(node)["axis"] % rank
    live = [s for s in ins if s is not None]
    sizes = [an.shape(name)[ax] for name in node.input]

    def cat(axl: int, lo: bool) -> np.ndarray:
        arrs = [(s.lo if lo else s.hi)[axl] for s in live]
        common = [max(a.shape[d] for a in arrs) if d != ax else 1 for d in range(rank)]
        if all(a.shape[ax] == 1 for a in arrs) and all(s is not None for s in ins) and all(
                np.array_equal(np.broadcast_to(a, common), np.broadcast_to(arrs[0], common))
                for a in arrs):
            return np.broadcast_to(arrs[0], common).copy()     # the same everywhere
        pieces = []
        for s, n in zip(ins, sizes):
            tgt = list(common)
            tgt[ax] = n
            if s is None:
                pieces.append(np.full(tgt, BIG if lo else -BIG, np.int64))
            else:
                pieces.append(np.broadcast_to((s.lo if lo else s.hi)[axl], tgt))
        return compress_axis(np.concatenate(pieces, axis=ax), ax)

    grid = [None] * rank
    for s in live:
        grid = [combine_grid(x, y) for x, y in zip(grid, s.grid)]
    lo = [cat(a, True) for a in (ROWS, COLS)]
    hi = [cat(a, False) for a in (ROWS, COLS)]
    if an.is_imgsized(node.output[0], ax, live[0]):
        for axl in (ROWS, COLS):
            if wraps_around(lo[axl], ax, an.lr_size[axl]):
                raise Unsupported("it joins the far side of the image to this side along "
                                  f"axis {ax} (a roll or circular padding)")
    else:
        grid[ax] = None
    return LocalDependence(lo, hi, grid)


@rule("Split")
def op_split(an, node, idx, ins):
    st = ins[0]
    in_shape = an.shape(node.input[0])
    ax = node_attrs(node).get("axis", 0) % len(in_shape)
    outs, start = [], 0
    for name in node.output:
        n = an.shape(name)[ax]
        src = np.arange(start, start + n)
        start += n
        lo = [reindex(a, ax, src, True) for a in st.lo]
        hi = [reindex(a, ax, src, False) for a in st.hi]
        grid = list(st.grid)
        if not an.is_imgsized(name, ax, st):
            grid[ax] = None
        outs.append(LocalDependence(lo, hi, grid))
    return outs


@rule("Tile")
def op_tile(an, node, idx, ins):
    if ins[1] is not None:
        raise Unsupported("its repeats depend on the input's values")
    st = ins[0]
    in_shape, out_shape = an.shape(node.input[0]), an.shape(node.output[0])
    lo, hi = list(st.lo), list(st.hi)
    for d, (a, b) in enumerate(zip(in_shape, out_shape)):
        if b == a:
            continue
        if st.grid[d] is not None and a > 1:
            raise Unsupported("it repeats the image along an image axis")
        reps = [1] * len(in_shape)
        reps[d] = b // a
        lo = [np.tile(x, reps) if x.shape[d] > 1 else x for x in lo]
        hi = [np.tile(x, reps) if x.shape[d] > 1 else x for x in hi]
    return LocalDependence(lo, hi, st.grid)


@rule("Pad")
def op_pad(an, node, idx, ins):
    if any(s is not None for s in ins[1:]):
        raise Unsupported("its pads depend on the input's values")
    st = ins[0]
    a = node_attrs(node)
    mode = a.get("mode", "constant")
    in_shape = an.shape(node.input[0])
    rank = len(in_shape)
    if an.opset < 11:
        pads = list(a["pads"])
        axes = list(range(rank))
    else:
        pads = an.const(node.input[1], "pads").tolist()
        axes = an.const_or_none(node, 3, "axes")
        axes = list(range(rank)) if axes is None else [x % rank for x in axes.tolist()]
    k = len(axes)
    lo, hi = list(st.lo), list(st.hi)
    for ax, pb, pe in zip(axes, pads[:k], pads[k:]):
        if pb == 0 and pe == 0:
            continue
        n = in_shape[ax]
        src = np.arange(n + pb + pe) - pb
        inside = (src >= 0) & (src < n)
        if mode == "constant":
            src = np.where(inside, src, -1)
        elif mode == "edge":
            src = np.clip(src, 0, n - 1)
        elif mode == "reflect":
            src = reflect_index(src, n)
        elif mode == "wrap":
            if st.grid[ax] is not None:
                raise Unsupported("mode=wrap copies the opposite border of the image")
            src = np.mod(src, n)
        else:
            raise Unsupported(f"unknown mode {mode!r}")
        lo = [reindex(x, ax, src, True) for x in lo]
        hi = [reindex(x, ax, src, False) for x in hi]
    return LocalDependence(lo, hi, st.grid)


@rule("DepthToSpace")
def op_depth_to_space(an, node, idx, ins):
    st = ins[0]
    b = node_attrs(node)["blocksize"]
    mode = node_attrs(node).get("mode", "DCR")
    n, c, h, w = an.shape(node.input[0])
    c2 = c // (b * b)
    if mode == "DCR":
        mid, perm = (n, b, b, c2, h, w), (0, 3, 4, 1, 5, 2)
    else:
        mid, perm = (n, c2, b, b, h, w), (0, 1, 4, 2, 5, 3)
    out = _chain(an, st, (n, c, h, w), mid, perm, (n, c2, h * b, w * b))
    return _upgrid(out, st, b)


@rule("SpaceToDepth")
def op_space_to_depth(an, node, idx, ins):
    st = ins[0]
    b = node_attrs(node)["blocksize"]
    n, c, h, w = an.shape(node.input[0])
    out = _chain(an, st, (n, c, h, w), (n, c, h // b, b, w // b, b), (0, 3, 5, 1, 2, 4),
                      (n, c * b * b, h // b, w // b))
    out.grid = [st.grid[0], None, stride_grid(st.grid[2], b), stride_grid(st.grid[3], b)]
    return out


def _chain(an, st, in_shape, mid, perm, out_shape) -> LocalDependence:
    x = _reshape(an, st, in_shape, mid)
    x = LocalDependence([a.transpose(perm) for a in x.lo], [a.transpose(perm) for a in x.hi],
                        [x.grid[p] for p in perm])
    return _reshape(an, x, tuple(mid[p] for p in perm), out_shape)


def _upgrid(out: LocalDependence, st: LocalDependence, b: int) -> LocalDependence:
    def up(g):
        return Grid(g.lr, g.f * b, g.period) if isinstance(g, Grid) else g
    out.grid = [st.grid[0], None, up(st.grid[2]), up(st.grid[3])]
    return out


# -- windows ----------------------------------------------------------------------------------
def _channel_hull(an, node, idx, st, name, groups: int, out_channels: int) -> LocalDependence:
    if an.is_imgsized(name, 1, st) and an.shape(name)[1] > 1:
        raise Unsupported("it contracts over an image axis (axis 1)")
    c = an.shape(name)[1]

    def hull(a, lo):
        if a.shape[1] == 1:
            return a
        if groups == 1:
            return reduce_axes(a, (1,), lo)
        g = a.reshape(a.shape[:1] + (groups, c // groups) + a.shape[2:])
        g = (g.min if lo else g.max)(axis=2)
        return np.repeat(g, out_channels // groups, axis=1)

    grid = list(st.grid)
    grid[1] = None
    return st.map(hull, grid)


def _spatial_pads(an, a: dict, in_sp, out_sp, kernel, strides, dils) -> list[int]:
    auto = a.get("auto_pad", "NOTSET")
    nd = len(in_sp)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for n, m, k, s, d in zip(in_sp, out_sp, kernel, strides, dils):
            total = max(0, (m - 1) * s + (k - 1) * d + 1 - n)
            pads.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        return pads
    if auto == "VALID":
        return [0] * nd
    return list(a.get("pads", [0] * (2 * nd)))[:nd]


def _windowed(an, st: LocalDependence, in_shape, out_shape, kernel, strides, dils,
              pads) -> LocalDependence:
    lo, hi, grid = list(st.lo), list(st.hi), list(st.grid)
    for i, (k, s, d, p) in enumerate(zip(kernel, strides, dils, pads)):
        ax = 2 + i
        n, m = in_shape[ax], out_shape[ax]
        lo = [window_hull(x, ax, n, m, s, p, k, d, True) for x in lo]
        hi = [window_hull(x, ax, n, m, s, p, k, d, False) for x in hi]
        if s > 1:
            grid[ax] = stride_grid(grid[ax], s)
    return LocalDependence(lo, hi, grid)


@rule("Conv")
def op_conv(an, node, idx, ins):
    if any(s is not None for s in ins[1:]):
        raise Unsupported("its weights depend on the input")
    a = node_attrs(node)
    in_shape, out_shape = an.shape(node.input[0]), an.shape(node.output[0])
    wshape = an.shape(node.input[1])
    nd = len(in_shape) - 2
    kernel = list(a.get("kernel_shape", wshape[2:]))
    strides = list(a.get("strides", [1] * nd))
    dils = list(a.get("dilations", [1] * nd))
    pads = _spatial_pads(an, a, in_shape[2:], out_shape[2:], kernel, strides, dils)
    st = _channel_hull(an, node, idx, ins[0], node.input[0], a.get("group", 1), out_shape[1])
    return _windowed(an, st, in_shape, out_shape, kernel, strides, dils, pads)


@rule(*POOL)
def _pool(an, node, idx, ins):
    a = node_attrs(node)
    in_shape, out_shape = an.shape(node.input[0]), an.shape(node.output[0])
    nd = len(in_shape) - 2
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * nd))
    dils = list(a.get("dilations", [1] * nd))
    pads = _spatial_pads(an, a, in_shape[2:], out_shape[2:], kernel, strides, dils)
    out = _windowed(an, ins[0], in_shape, out_shape, kernel, strides, dils, pads)
    return [out] * len(node.output)


@rule("ConvTranspose")
def op_conv_transpose(an, node, idx, ins):
    if any(s is not None for s in ins[1:]):
        raise Unsupported("its weights depend on the input")
    a = node_attrs(node)
    in_shape, out_shape = an.shape(node.input[0]), an.shape(node.output[0])
    wshape = an.shape(node.input[1])
    nd = len(in_shape) - 2
    kernel = list(a.get("kernel_shape", wshape[2:]))
    strides = list(a.get("strides", [1] * nd))
    dils = list(a.get("dilations", [1] * nd))
    outpad = list(a.get("output_padding", [0] * nd))
    auto = a.get("auto_pad", "NOTSET")
    st = _channel_hull(an, node, idx, ins[0], node.input[0], a.get("group", 1), out_shape[1])
    lo, hi, grid = list(st.lo), list(st.hi), list(st.grid)
    for i in range(nd):
        ax = 2 + i
        n, m, k, s, d = in_shape[ax], out_shape[ax], kernel[i], strides[i], dils[i]
        if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
            total = s * (n - 1) + outpad[i] + (k - 1) * d + 1 - m
            # the spec and runtimes have disagreed on which side gets the odd pixel: take both
            cands = sorted({total // 2, total - total // 2})
        elif auto == "VALID":
            cands = [0]
        else:
            cands = [list(a.get("pads", [0] * 2 * nd))[i]]
        nlo = [None, None]
        nhi = [None, None]
        for p in cands:
            for axl in (ROWS, COLS):
                x = scatter_hull(lo[axl], ax, n, m, s, p, k, d, True)
                y = scatter_hull(hi[axl], ax, n, m, s, p, k, d, False)
                nlo[axl] = x if nlo[axl] is None else np.minimum(nlo[axl], x)
                nhi[axl] = y if nhi[axl] is None else np.maximum(nhi[axl], y)
        lo, hi = nlo, nhi
        g = grid[ax]
        grid[ax] = Grid(g.lr, g.f * s, g.period) if isinstance(g, Grid) else g
    return LocalDependence(lo, hi, grid)


@rule("Resize", "Upsample")
# -- resizing ---------------------------------------------------------------------------------
def op_resize(an, node, idx, ins):
    if any(s is not None for s in ins[1:]):
        raise Unsupported("its scales or sizes depend on the input's values")
    a = node_attrs(node)
    st = ins[0]
    in_shape, out_shape = an.shape(node.input[0]), an.shape(node.output[0])
    rank = len(in_shape)
    mode = a.get("mode", "nearest")
    if node.op_type == "Upsample" or an.opset < 11:
        ctm = "asymmetric"
        nearest = "floor" if node.op_type == "Upsample" else "floor|round_prefer_floor"
        roi = None
        if "scales" in a:
            scales = list(a["scales"])
        else:
            scales = an.const(node.input[1], "scales").tolist()
        sizes = None
        axes = list(range(rank))
    else:
        ctm = a.get("coordinate_transformation_mode", "half_pixel")
        nearest = a.get("nearest_mode", "round_prefer_floor")
        roi = an.const_or_none(node, 1, "roi")
        scales = an.const_or_none(node, 2, "scales")
        sizes = an.const_or_none(node, 3, "sizes")
        scales = None if scales is None or scales.size == 0 else scales.tolist()
        sizes = None if sizes is None or sizes.size == 0 else sizes.tolist()
        axes = a.get("axes")
        axes = list(range(rank)) if axes is None else [x % rank for x in axes]
    antialias = bool(a.get("antialias", 0))
    policy = a.get("keep_aspect_ratio_policy", "stretch")
    common = None
    if sizes is not None and policy != "stretch":
        ratios = [Fraction(int(sz), in_shape[ax]) for sz, ax in zip(sizes, axes)]
        common = min(ratios) if policy == "not_larger" else max(ratios)
    lo, hi, grid = list(st.lo), list(st.hi), list(st.grid)
    for k, ax in enumerate(axes):
        n, m = in_shape[ax], out_shape[ax]
        if scales is not None:
            scale = Fraction(float(np.float32(scales[k])))
        elif common is not None:
            scale = common
        else:
            scale = Fraction(m, n)
        if n == m and scale == 1 and ctm != "tf_crop_and_resize":
            continue
        r0, r1 = (0.0, 1.0) if roi is None or roi.size == 0 else (
            float(roi.reshape(-1)[k]), float(roi.reshape(-1)[len(axes) + k]))
        first, last = resize_taps(n, m, scale, mode, ctm, nearest, antialias, r0, r1)
        lo = [hull_ranges(x, ax, n, first, last, True) for x in lo]
        hi = [hull_ranges(x, ax, n, first, last, False) for x in hi]
        g = grid[ax]
        if isinstance(g, Grid):
            if ctm in ("half_pixel", "asymmetric", "pytorch_half_pixel",
                       "tf_half_pixel_for_nn") or (ctm == "half_pixel_symmetric"
                                                   and Fraction(m) == scale * n):
                r = scale.limit_denominator(1000)
                grid[ax] = stride_grid(g, r.denominator, Fraction(r.numerator))
            else:
                grid[ax] = BrokenGrid(f"Resize coordinate_transformation_mode={ctm} "
                                      f"is not shift-equivariant")
    return LocalDependence(lo, hi, grid)


# -- contractions and normalisations ----------------------------------------------------------
def _normalize(an, node, idx, st: LocalDependence, name: str, axes) -> LocalDependence:
    shp = an.shape(name)
    for ax in axes:
        if shp[ax] > 1 and an.is_imgsized(name, ax, st):
            raise Unsupported(f"it normalises over an image axis (axis {ax})")
    return st.map(lambda a, lo: reduce_axes(a, axes, lo))


@rule("Softmax", "Hardmax", "LogSoftmax")
def op_softmax(an, node, idx, ins):
    rank = len(an.shape(node.input[0]))
    default = -1 if an.opset >= 13 else 1
    ax = node_attrs(node).get("axis", default) % rank
    axes = [ax] if an.opset >= 13 else list(range(ax, rank))
    return _normalize(an, node, idx, ins[0], node.input[0], axes)


@rule("LpNormalization")
def op_lp_normalization(an, node, idx, ins):
    rank = len(an.shape(node.input[0]))
    return _normalize(an, node, idx, ins[0], node.input[0],
                           [node_attrs(node).get("axis", -1) % rank])


@rule("LRN")
def op_lrn(an, node, idx, ins):
    return _normalize(an, node, idx, ins[0], node.input[0], [1])


@rule("MeanVarianceNormalization")
def op_mean_variance_normalization(an, node, idx, ins):
    rank = len(an.shape(node.input[0]))
    axes = [x % rank for x in node_attrs(node).get("axes", [0, 2, 3])]
    return _normalize(an, node, idx, ins[0], node.input[0], axes)


@rule("InstanceNormalization")
def op_instance_normalization(an, node, idx, ins):
    if any(s is not None for s in ins[1:]):
        raise Unsupported("its scale depends on the input")
    rank = len(an.shape(node.input[0]))
    return _normalize(an, node, idx, ins[0], node.input[0], list(range(2, rank)))


@rule("GroupNormalization")
def op_group_normalization(an, node, idx, ins):
    if any(s is not None for s in ins[1:]):
        raise Unsupported("its scale depends on the input")
    rank = len(an.shape(node.input[0]))
    return _normalize(an, node, idx, ins[0], node.input[0], list(range(1, rank)))


@rule("LayerNormalization")
def op_layer_normalization(an, node, idx, ins):
    rank = len(an.shape(node.input[0]))
    ax = node_attrs(node).get("axis", -1) % rank
    out = _normalize(an, node, idx, ins[0], node.input[0], list(range(ax, rank)))
    if any(s is not None for s in ins[1:]):
        shp = an.shape(node.input[0])
        out = _union(an, node, idx, [(shp, out)] + _operands(an, node.input[1:], ins[1:]),
                          shp, node.output[0])
    return [out] * len(node.output)


@rule("CumSum")
def op_cum_sum(an, node, idx, ins):
    if ins[1] is not None:
        raise Unsupported("its axis depends on the input's values")
    rank = len(an.shape(node.input[0]))
    ax = int(an.const(node.input[1], "axis").reshape(-1)[0]) % rank
    return _normalize(an, node, idx, ins[0], node.input[0], [ax])


@rule("TopK")
def op_topk(an, node, idx, ins):
    rank = len(an.shape(node.input[0]))
    ax = node_attrs(node).get("axis", -1) % rank
    out = _normalize(an, node, idx, ins[0], node.input[0], [ax])
    return [out] * len(node.output)


@rule(*REDUCE, "ArgMax", "ArgMin")
def _reduce_op(an, node, idx, ins):
    st = ins[0]
    name = node.input[0]
    shp = an.shape(name)
    rank = len(shp)
    a = node_attrs(node)
    keep = a.get("keepdims", 1)
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [a.get("axis", 0) % rank]
    else:
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            if ins[1] is not None:
                raise Unsupported("its axes depend on the input's values")
            axes = an.const(node.input[1], "axes").tolist()
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return st
            axes = list(range(rank))
        axes = [x % rank for x in axes]
    for ax in axes:
        if shp[ax] > 1 and an.is_imgsized(name, ax, st):
            raise Unsupported(f"it reduces over an image axis (axis {ax})")
    out = st.map(lambda arr, lo: reduce_axes(arr, axes, lo))
    if not keep:
        kept = [d for d in range(rank) if d not in axes]
        out = LocalDependence([x.reshape([x.shape[d] for d in kept]) for x in out.lo],
                              [x.reshape([x.shape[d] for d in kept]) for x in out.hi],
                              [out.grid[d] for d in kept])
    else:
        out.grid = [None if d in axes else g for d, g in enumerate(out.grid)]
    return out


@rule(*GLOBAL_POOL)
def _global_pool(an, node, idx, ins):
    st = ins[0]
    name = node.input[0]
    shp = an.shape(name)
    axes = list(range(2, len(shp)))
    for ax in axes:
        if shp[ax] > 1 and an.is_imgsized(name, ax, st):
            raise Unsupported(f"it pools over an image axis (axis {ax})")
    out = st.map(lambda arr, lo: reduce_axes(arr, axes, lo))
    out.grid = [None if d in axes else g for d, g in enumerate(out.grid)]
    return out


def _contract(an, node, idx, st, name, axis) -> LocalDependence | None:
    """An operand's arrays with `axis` contracted (hull), or None for a constant operand."""
    if st is None:
        return None
    if an.shape(name)[axis] > 1 and an.is_imgsized(name, axis, st):
        raise Unsupported(f"it contracts over an image axis (axis {axis} of {name!r})")
    out = st.map(lambda a, lo: reduce_axes(a, (axis,), lo))
    out.grid = [None if d == axis else g for d, g in enumerate(out.grid)]
    return out


@rule("MatMul")
def op_mat_mul(an, node, idx, ins):
    sa, sb = an.shape(node.input[0]), an.shape(node.input[1])
    a = _contract(an, node, idx, ins[0], node.input[0], len(sa) - 1)
    b = _contract(an, node, idx, ins[1], node.input[1], max(len(sb) - 2, 0))
    parts = []
    for x, vec in ((a, len(sa) == 1), (b, len(sb) == 1)):
        if x is None:
            continue
        if vec:      # a vector operand: (1,) after contraction → a 1×1 matrix
            x = LocalDependence([v.reshape(1, 1) for v in x.lo], [v.reshape(1, 1) for v in x.hi],
                                [None, None])
        parts.append(x)
    rank = max(p.rank for p in parts) if parts else 0
    parts = [LocalDependence([v.reshape((1,) * (rank - p.rank) + v.shape) for v in p.lo],
                             [v.reshape((1,) * (rank - p.rank) + v.shape) for v in p.hi],
                             [None] * (rank - p.rank) + p.grid) for p in parts]
    out = merge_states(parts)
    drop = ([rank - 2] if len(sa) == 1 else []) + ([rank - 1] if len(sb) == 1 else [])
    if drop:
        keep = [d for d in range(rank) if d not in drop]
        out = LocalDependence([v.reshape([v.shape[d] for d in keep]) for v in out.lo],
                              [v.reshape([v.shape[d] for d in keep]) for v in out.hi],
                              [out.grid[d] for d in keep])
    return out


@rule("Gemm")
def op_gemm(an, node, idx, ins):
    at = node_attrs(node)
    ta, tb = at.get("transA", 0), at.get("transB", 0)
    a = _contract(an, node, idx, ins[0], node.input[0], 0 if ta else 1)
    b = _contract(an, node, idx, ins[1], node.input[1], 1 if tb else 0)
    parts = []
    for x, t in ((a, ta), (b, tb)):
        if x is not None:
            parts.append(LocalDependence([v.T for v in x.lo], [v.T for v in x.hi], x.grid[::-1])
                         if t else x)
    if len(ins) > 2 and ins[2] is not None:
        out = node.output[0]
        parts.append(_union(an, node, idx, _operands(an, node.input[2:3], ins[2:3]),
                                 an.shape(out), out))
        if isinstance(parts[-1], GlobalDependence):
            return parts[-1]
    return merge_states(parts)


@rule("Einsum")
def op_einsum(an, node, idx, ins):
    eq = node_attrs(node)["equation"].replace(" ", "")
    if "..." in eq or "->" not in eq:
        raise Unsupported("only explicit equations without ellipsis are analysed")
    lhs, out_letters = eq.split("->")
    parts = []
    for term, name, st in zip(lhs.split(","), node.input, ins):
        if st is None:
            continue
        if len(set(term)) != len(term):
            raise Unsupported("repeated subscripts are not analysed")
        contracted = [i for i, ch in enumerate(term) if ch not in out_letters]
        x = st
        for ax in contracted:
            x = _contract(an, node, idx, x, name, ax)
        kept = [i for i, ch in enumerate(term) if ch in out_letters]
        lo, hi = [], []
        for v in x.lo + x.hi:
            v = v.reshape([v.shape[i] for i in kept])
            order = [term[i] for i in kept]
            full = []
            for ch in out_letters:
                full.append(order.index(ch) if ch in order else None)
            present = [p for p in full if p is not None]
            v = v.transpose(present) if present else v
            shp, it = [], iter(v.shape)
            for p in full:
                shp.append(next(it) if p is not None else 1)
            (lo if len(lo) < 2 else hi).append(v.reshape(shp))
        grid = [x.grid[kept[[term[i] for i in kept].index(ch)]]
                if ch in [term[i] for i in kept] else None for ch in out_letters]
        parts.append(LocalDependence(lo, hi, grid))
    return merge_states(parts)
