"""Graph rewrites that keep a model's values: to make it differentiable by onnx-ad, and to speed up
the gradient programs it emits.

One registry, one small function per op type. Each works on a shape-inferred model with static
shapes (the gradient program's), and returns replacement nodes or None to keep the node.

- `Pad` in reflect, edge or wrap mode: onnx-ad differentiates constant-mode Pad only (the other
  modes copy values, so their adjoint must accumulate onto the copied pixels). With static shapes
  such a Pad is a `Gather` per padded axis with constant indices, and `Gather`'s adjoint
  accumulates duplicates correctly. Reflect padding is common in SR exports (SwinIR's
  `check_image_size`, Real-CUGAN, tiling programs).
- `Pad` with negative pads (a crop: Real-CUGAN's `F.pad(x, (-20, …))`): onnx-ad's Pad rule
  assumes pads ≥ 0 (its adjoint then fails in an Expand); a non-negative Pad and a Slice.
- `Slice` with a step other than 1 (`torch.flip`, `x[..., ::2]`: CRAFT): onnx-ad differentiates
  unit steps only; with constant bounds it is a `Gather` of constant indices per such axis.
- `AveragePool` with `ceil_mode=1` (MIRNet2): onnx-ad refuses it in reverse mode. At a fixed
  shape it is the same pool without ceil_mode where no window overhangs the (padded) input;
  where one does, an explicit zero Pad, a floor-mode pool that counts the padding, and a constant
  map correcting each window's divisor to ONNX's (`ceil_pool_divisor`).
- `DFT` inverse and onesided (`torch.fft.irfft2`, dynamo export: FFTformer): onnx-ad has no
  reverse rule; it is the full inverse DFT of the Hermitian spectrum the half determines,
  X[k] = conj(X[N−k]), rebuilt by a Gather of the mirrored bins and a conjugation.
- A boolean-mask assignment `x[m] = f(y[m])` (TorchScript: NonZero, GatherND, ScatterND, a Slice to
  the data-dependent count: HVI-CIDNet's colour transform): onnx-ad needs constant Slice bounds; with
  f elementwise it is `Where(m, f(y), x)` (`masked_assignment_as_where`, a pattern over several nodes).
- `ScatterND` with reduction "add" in a gradient program (`scatter_add_as_matmul`): onnxruntime's
  CPU kernel races between threads on repeated indices; a one-hot MatMul gives the same sums.
- The adjoint of a CRD DepthToSpace (PyTorch's PixelShuffle) in a gradient program
  (`crd_inverse_as_space_to_depth`): SpaceToDepth and a Transpose of whole planes, 2.3× faster.
Every new value is named by `FreshNames` (a name no value of the graph has): onnx-ad's own nodes
and earlier rewrites use the obvious names (`Shape(out) → out_shape`), and an ONNX graph with one
name defined twice is invalid.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxlam.graph.model import constant_values, fresh_name, opset_version, static_shapes

NUMPY_PAD_MODE = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


class FreshNames:
    """Names no value of a graph (or of its subgraphs) has yet: `fresh("x_shape")` is "x_shape" when
    that is free, else "x_shape_1", "x_shape_2", …; each name handed out is taken."""

    def __init__(self, model: onnx.ModelProto):
        self.taken: set[str] = set()
        self._collect(model.graph)

    def _collect(self, graph: onnx.GraphProto) -> None:
        self.taken.update(v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info))
        self.taken.update(t.name for t in graph.initializer)
        self.taken.update(t.values.name for t in graph.sparse_initializer)
        for node in graph.node:
            self.taken.update(node.output)
            self.taken.update(node.input)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self._collect(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        self._collect(g)

    def __call__(self, base: str) -> str:
        return fresh_name(base, self.taken)


def _constant_node(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))


def pad_indices(length: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every output position along one axis (negative pads crop)."""
    idx = np.pad(np.arange(length), (max(before, 0), max(after, 0)), mode=NUMPY_PAD_MODE[mode])
    start = -before if before < 0 else 0
    stop = len(idx) + after if after < 0 else len(idx)
    return idx[start:stop]


def rewrite_pad(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int, fresh: FreshNames) -> list | None:
    mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "constant":
        return negative_pad_as_slice(node, constants, shapes, opset, fresh)
    if mode not in NUMPY_PAD_MODE:
        return None
    shape = shapes.get(node.input[0])
    if opset < 11:
        pads = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "pads")
    elif node.input[1] in constants:
        pads = constants[node.input[1]].tolist()
    else:
        return None  # computed pads: leave it, onnx-ad then names the op
    if shape is None or any(d is None for d in shape):
        return None
    rank = len(shape)
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        axes = [a % rank for a in constants[node.input[3]].tolist()]
    half = len(pads) // 2
    nodes, current = [], node.input[0]
    for i, axis in enumerate(axes):
        before, after = int(pads[i]), int(pads[i + half])
        if before == 0 and after == 0:
            continue
        index_name = fresh(f"{node.output[0]}_pad_index_{axis}")
        out_name = fresh(f"{node.output[0]}_pad_axis_{axis}")
        idx = pad_indices(shape[axis], before, after, mode).astype(np.int64)
        nodes.append(_constant_node(index_name, idx))
        nodes.append(helper.make_node("Gather", [current, index_name], [out_name], axis=axis))
        current = out_name
    nodes.append(helper.make_node("Identity", [current], [node.output[0]]))
    return nodes


def _pads_and_axes(node: onnx.NodeProto, constants: dict, rank: int, opset: int):
    """A Pad's (before, after) per axis of a rank-`rank` input, or None where the pads are computed."""
    if opset < 11:
        pads = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "pads"), None)
    else:
        pads = constants[node.input[1]].tolist() if node.input[1] in constants else None
    if pads is None:
        return None
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        if node.input[3] not in constants:
            return None
        axes = [a % rank for a in constants[node.input[3]].tolist()]
    half = len(pads) // 2
    both = [(0, 0)] * rank
    for i, axis in enumerate(axes):
        both[axis] = (int(pads[i]), int(pads[i + half]))
    return both


def negative_pad_as_slice(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                          fresh: FreshNames) -> list | None:
    """A constant-mode Pad with negative pads (a crop) as a Pad of the non-negative part and a Slice.

    ONNX defines a negative pad as removing that many elements; onnx-ad's Pad rule assumes pads ≥ 0
    (its reverse rule slices the adjoint with the negated pads, and the Expand after it fails).
    """
    shape = shapes.get(node.input[0])
    if opset < 11 or not shape or any(d is None for d in shape):
        return None
    both = _pads_and_axes(node, constants, len(shape), opset)
    if both is None or all(b >= 0 and a >= 0 for b, a in both):
        return None
    nodes, current = [], node.input[0]
    if any(b > 0 or a > 0 for b, a in both):
        grow = np.array([max(b, 0) for b, _ in both] + [max(a, 0) for _, a in both], np.int64)
        pads_name, current = fresh(f"{node.output[0]}_grow_pads"), fresh(f"{node.output[0]}_grown")
        value = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
        nodes += [_constant_node(pads_name, grow),
                  helper.make_node("Pad", [node.input[0], pads_name] + value, [current], mode="constant")]
    axes = [i for i, (b, a) in enumerate(both) if b < 0 or a < 0]
    grown = [d + max(b, 0) + max(a, 0) for d, (b, a) in zip(shape, both)]
    starts = np.array([max(-both[i][0], 0) for i in axes], np.int64)
    ends = np.array([grown[i] - max(-both[i][1], 0) for i in axes], np.int64)
    names = [fresh(f"{node.output[0]}_crop_{what}") for what in ("starts", "ends", "axes")]
    nodes += [_constant_node(names[0], starts), _constant_node(names[1], ends),
              _constant_node(names[2], np.array(axes, np.int64)),
              helper.make_node("Slice", [current] + names, [node.output[0]])]
    return nodes


def slice_steps_as_gather(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                          fresh: FreshNames) -> list | None:
    """A Slice with constant bounds and some step ≠ 1 as a unit-step Slice (the other axes) and one
    Gather of constant indices per axis with a step ≠ 1 (`torch.flip` is starts −1, step −1).

    The indices are NumPy's for `arange(d)[start:end:step]`: ONNX clamps starts and ends as Python
    slices do (negative values count from the end; INT64_MIN/MAX mean "to the border").
    """
    shape = shapes.get(node.input[0])
    if opset < 10 or not shape or any(d is None for d in shape):
        return None
    operands = list(node.input[1:]) + [""] * (4 - len(node.input[1:]))
    if not all(o in constants for o in operands[:2]) or any(o and o not in constants for o in operands[2:]):
        return None
    rank = len(shape)
    starts, ends = constants[operands[0]].tolist(), constants[operands[1]].tolist()
    axes = [a % rank for a in constants[operands[2]].tolist()] if operands[2] else list(range(len(starts)))
    steps = constants[operands[3]].tolist() if operands[3] else [1] * len(starts)
    if all(st == 1 for st in steps):
        return None
    nodes, current = [], node.input[0]
    unit = [i for i, st in enumerate(steps) if st == 1]
    if unit:
        names = [fresh(f"{node.output[0]}_unit_{what}") for what in ("starts", "ends", "axes")]
        current = fresh(f"{node.output[0]}_unit")
        nodes += [_constant_node(names[0], np.array([starts[i] for i in unit], np.int64)),
                  _constant_node(names[1], np.array([ends[i] for i in unit], np.int64)),
                  _constant_node(names[2], np.array([axes[i] for i in unit], np.int64)),
                  helper.make_node("Slice", [node.input[0]] + names, [current])]
    for i, st in enumerate(steps):
        if st == 1:
            continue
        idx = np.arange(shape[axes[i]], dtype=np.int64)[slice(starts[i], ends[i], st)]
        index_name, out = fresh(f"{node.output[0]}_step_index_{axes[i]}"), fresh(f"{node.output[0]}_step_{axes[i]}")
        nodes += [_constant_node(index_name, idx),
                  helper.make_node("Gather", [current, index_name], [out], axis=axes[i])]
        current = out
    nodes.append(helper.make_node("Identity", [current], [node.output[0]]))
    return nodes


def _pool_attributes(node: onnx.NodeProto, spatial: int) -> dict:
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    return {"kernel": list(a["kernel_shape"]), "strides": list(a.get("strides", [1] * spatial)),
            "pads": list(a.get("pads", [0] * (2 * spatial))), "dilations": list(a.get("dilations", [1] * spatial)),
            "auto_pad": a.get("auto_pad", b"NOTSET"), "ceil_mode": int(a.get("ceil_mode", 0)),
            "count_include_pad": int(a.get("count_include_pad", 0))}


def ceil_pool_divisor(size: int, out: int, kernel: int, stride: int, before: int, after: int,
                      count_include_pad: bool) -> np.ndarray:
    """The divisor of each of the `out` windows of an AveragePool along one axis (ONNX, ceil_mode=1).

    Window o covers [o·stride − before, o·stride − before + kernel). With count_include_pad the
    divisor is the part of it inside the padded extent [−before, size + after): what overhangs the
    padding is not counted. Without, it is the part inside the input [0, size). (onnxruntime's
    pool kernels and PyTorch's `avg_pool2d(ceil_mode=True)` agree; tests check both.)
    """
    start = np.arange(out) * stride - before
    stop = start + kernel
    if count_include_pad:
        return np.minimum(stop, size + after) - np.maximum(start, -before)
    return np.minimum(stop, size) - np.maximum(start, 0)


def average_pool_ceil_mode(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                           fresh: FreshNames) -> list | None:
    """An AveragePool with ceil_mode=1 at a fixed shape, as pools onnx-ad differentiates.

    Where no window overhangs the padded input, ceil_mode changes nothing: the same pool without
    it. Where the last windows overhang, Pad(x) with zeros (the declared pads, plus the overhang at
    the end), a floor-mode pool dividing by the kernel size, times a constant map kernel/divisor,
    the divisor being ONNX's per window (`ceil_pool_divisor`, separable over the axes).
    """
    shape, out_shape = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not shape or not out_shape or None in shape or None in out_shape:
        return None
    spatial = len(shape) - 2
    a = _pool_attributes(node, spatial)
    if not a["ceil_mode"] or a["auto_pad"] not in (b"NOTSET", "NOTSET") or any(d != 1 for d in a["dilations"]):
        return None
    kernel, strides, pads = a["kernel"], a["strides"], a["pads"]
    out = list(out_shape[2:])
    floor = [(shape[2 + i] + pads[i] + pads[i + spatial] - kernel[i]) // strides[i] + 1 for i in range(spatial)]
    overhang = [(out[i] - 1) * strides[i] + kernel[i] - (shape[2 + i] + pads[i] + pads[i + spatial])
                for i in range(spatial)]
    keep = {x.name: helper.get_attribute_value(x) for x in node.attribute if x.name != "ceil_mode"}
    if out == floor:
        return [helper.make_node("AveragePool", list(node.input), list(node.output), **keep)]
    extra = [max(o, 0) for o in overhang]
    grow = np.array([0, 0] + pads[:spatial] + [0, 0] + [pads[spatial + i] + extra[i] for i in range(spatial)],
                    np.int64)
    divisor = np.ones([1, 1] + out, np.float64)
    for i in range(spatial):
        d = ceil_pool_divisor(shape[2 + i], out[i], kernel[i], strides[i], pads[i], pads[i + spatial],
                              bool(a["count_include_pad"]))
        divisor = divisor * d.reshape([1, 1] + [-1 if j == i else 1 for j in range(spatial)])
    ratio = (float(np.prod(kernel)) / divisor).astype(np.float32)
    pads_name, padded = fresh(f"{node.output[0]}_ceil_pads"), fresh(f"{node.output[0]}_ceil_padded")
    pooled, ratio_name = fresh(f"{node.output[0]}_ceil_pooled"), fresh(f"{node.output[0]}_ceil_divisor")
    return [_constant_node(pads_name, grow),
            helper.make_node("Pad", [node.input[0], pads_name], [padded], mode="constant"),
            helper.make_node("AveragePool", [padded], [pooled], kernel_shape=kernel, strides=strides,
                             count_include_pad=1),
            _constant_node(ratio_name, ratio),
            helper.make_node("Mul", [pooled, ratio_name], list(node.output))]


def onesided_inverse_dft_as_full(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                                 fresh: FreshNames) -> list | None:
    """An inverse onesided DFT (C2R: `irfft`) of length N as the full inverse DFT of the Hermitian
    spectrum it stands for: bins m..N−1 (m = ⌊N/2⌋+1 given) are X[k] = conj(X[N−k]).

    N is the constant `dft_length`, or the output's length along the axis. The full transform's
    real part is the C2R one (the imaginary parts of bins 0 and N/2, which a C2R transform drops,
    go to the imaginary part alone), and its imaginary part is zero for a Hermitian spectrum.
    """
    attrs = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    if not (attrs.get("inverse", 0) and attrs.get("onesided", 0)):
        return None
    shape, out_shape = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not shape or not out_shape or None in shape or None in out_shape or shape[-1] != 2:
        return None
    rank = len(shape)
    if opset >= 20:
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in constants:
                return None
            axis = int(np.asarray(constants[node.input[2]]).reshape(-1)[0]) % rank
        else:
            axis = rank - 2
    else:
        axis = int(attrs.get("axis", 1)) % rank
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in constants:
            return None
        n = int(np.asarray(constants[node.input[1]]).reshape(-1)[0])
    else:
        n = out_shape[axis]
    m = shape[axis]
    if n // 2 + 1 != m or out_shape[axis] != n:
        return None
    mirror = np.arange(m, n, dtype=np.int64)
    index = fresh(f"{node.output[0]}_hermitian_index")
    mirrored, conj = fresh(f"{node.output[0]}_hermitian_mirror"), fresh(f"{node.output[0]}_hermitian_conj")
    sign, full = fresh(f"{node.output[0]}_hermitian_sign"), fresh(f"{node.output[0]}_hermitian_full")
    nodes = [_constant_node(index, (n - mirror).astype(np.int64)),
             helper.make_node("Gather", [node.input[0], index], [mirrored], axis=axis),
             _constant_node(sign, np.array([1.0, -1.0], np.float32)),
             helper.make_node("Mul", [mirrored, sign], [conj]),
             helper.make_node("Concat", [node.input[0], conj], [full], axis=axis)]
    keep = {k: v for k, v in attrs.items() if k not in ("onesided",)}
    operands = [full, ""] + list(node.input[2:3])
    while operands and not operands[-1]:
        operands.pop()
    complex_out = fresh(f"{node.output[0]}_hermitian_idft")
    nodes.append(helper.make_node("DFT", operands, [complex_out], **keep))
    # ONNX's C2R output is real (a trailing axis of 1): the full transform's real part
    split = [fresh(f"{node.output[0]}_real_{what}") for what in ("starts", "ends", "axes")]
    nodes += [_constant_node(split[0], np.array([0], np.int64)), _constant_node(split[1], np.array([1], np.int64)),
              _constant_node(split[2], np.array([rank - 1], np.int64)),
              helper.make_node("Slice", [complex_out] + split, list(node.output))]
    return nodes


# --- masked assignment: `x[mask] = f(y[mask])` ---------------------------------------------------
# Elementwise ops a masked vector may pass through on its way from GatherND to ScatterND. Each is
# finite wherever its operands are, so computing it on every element (not only the masked ones)
# cannot put a NaN into the gradient through the Where (0·inf); Div only by a non-zero constant.
MASKED_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Neg", "Identity", "Floor", "Ceil", "Round"}
DENSE = "\0dense"  # the key of a chain value's dense form (no ONNX name holds a NUL)


class _Graph:
    """Producers, constants and static shapes of one graph (for pattern matching)."""

    def __init__(self, model: onnx.ModelProto):
        self.producer = {o: n for n in model.graph.node for o in n.output if o}
        self.constants, self.shapes = constant_values(model), static_shapes(model)

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx") else None

    def mask_of(self, indices: str) -> str | None:
        """The mask m (`root`) of `Transpose(NonZero(m), perm=[1, 0])`."""
        t = self.made_by(indices, "Transpose")
        if t is None or list(next((helper.get_attribute_value(a) for a in t.attribute if a.name == "perm"),
                                  [1, 0])) != [1, 0]:
            return None
        nz = self.made_by(t.input[0], "NonZero")
        return None if nz is None else self.root(nz.input[0])

    def root(self, mask: str) -> str:
        """`mask` itself, or m where it is an `Expand` of m to m's own shape (the same elements)."""
        e = self.made_by(mask, "Expand")
        return e.input[0] if e is not None and self.shapes.get(e.input[0]) == self.shapes.get(mask) is not None \
            else mask

    def count_of(self, name: str) -> str | None:
        """The mask whose element count `name` is: `Unsqueeze(Gather(Shape(indices), 0))` (or without
        the Unsqueeze), `indices` a `Transpose(NonZero(m))`."""
        u = self.made_by(name, "Unsqueeze")
        g = self.made_by(u.input[0] if u is not None else name, "Gather")
        if g is None or g.input[1] not in self.constants or int(np.asarray(self.constants[g.input[1]]).reshape(-1)[0]):
            return None
        shape = self.made_by(g.input[0], "Shape")
        return self.mask_of(shape.input[0]) if shape is not None and len(shape.attribute) == 0 else None


def _dense_chain(graph: _Graph, name: str, mask: str, chain: list) -> str | None:
    """The dense form (mask's shape) of the masked vector `name`, appending the elementwise nodes that
    compute it to `chain` as (node, dense operands); None where `name` is not such a vector."""
    node = graph.producer.get(name)
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "GatherND":
        batch_dims = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "batch_dims"), 0)
        if batch_dims or graph.mask_of(node.input[1]) != mask:
            return None
        if graph.shapes.get(node.input[0]) != graph.shapes.get(mask):
            return None
        return node.input[0]
    if op == "Reshape":  # to [-1]: a 1-D vector stays itself
        target = graph.constants.get(node.input[1])
        if target is None or np.asarray(target).reshape(-1).tolist() != [-1]:
            return None
        return _dense_chain(graph, node.input[0], mask, chain)
    if op == "Slice":  # [0 : the mask's count] along axis 0, step 1: all of it
        operands = list(node.input[1:]) + [""] * (4 - len(node.input[1:]))
        starts = graph.constants.get(operands[0])
        if starts is None or np.asarray(starts).reshape(-1).tolist() != [0]:
            return None
        if operands[2] and np.asarray(graph.constants.get(operands[2], [1])).reshape(-1).tolist() != [0]:
            return None
        if operands[3] and np.asarray(graph.constants.get(operands[3], [0])).reshape(-1).tolist() != [1]:
            return None
        if graph.count_of(operands[1]) != mask:
            return None
        return _dense_chain(graph, node.input[0], mask, chain)
    if op not in MASKED_ELEMENTWISE:
        return None
    dense = []
    for i, operand in enumerate(node.input):
        if operand in graph.constants and np.asarray(graph.constants[operand]).size == 1:
            if op == "Div" and i == 1 and not np.all(np.asarray(graph.constants[operand]) != 0):
                return None
            dense.append(operand)
            continue
        if op == "Div" and i == 1:
            return None  # a computed divisor may be zero where the mask is off
        d = _dense_chain(graph, operand, mask, chain)
        if d is None:
            return None
        dense.append(d)
    chain.append((node, dense))
    return node.output[0] + DENSE


def masked_assignment_as_where(model: onnx.ModelProto) -> onnx.ModelProto:
    """`x[m] = f(y[m])` as `Where(m, f(y), x)`: TorchScript's export of a boolean-mask assignment
    (HVI-CIDNet's colour transform: `hue[img[:, 2] == value] = 4 + (…)[img[:, 2] == value]`).

    The export is ScatterND(x, Transpose(NonZero(m)), Slice(Reshape(f(GatherND(y, Transpose(NonZero(m)))),
    [-1]), 0, count)): its values have a data-dependent length, which onnx-ad cannot differentiate
    (the Slice's end is computed). NonZero lists m's true elements in row-major order, GatherND reads
    them from y and ScatterND writes them back to the same places of x, so with f elementwise
    (`MASKED_ELEMENTWISE`, each operand a masked vector of the same m or a scalar constant) and y, m
    and x of one shape, it is f applied to all of y, selected by m: exactly the same values.
    """
    graph = _Graph(model)
    fresh = FreshNames(model)
    replace: dict[int, list] = {}
    for node in model.graph.node:
        if node.op_type != "ScatterND" or node.domain not in ("", "ai.onnx"):
            continue
        if any(a.name == "reduction" and helper.get_attribute_value(a) not in (b"none", "none")
               for a in node.attribute):
            continue
        data, indices, updates = node.input[:3]
        mask = graph.mask_of(indices)
        if mask is None or graph.shapes.get(mask) != graph.shapes.get(data) or graph.shapes.get(data) is None:
            continue
        chain: list = []
        dense = _dense_chain(graph, updates, mask, chain)
        if dense is None:
            continue
        names, nodes = {}, []
        for old, operands in chain:
            out = names[old.output[0] + DENSE] = fresh(f"{old.output[0]}_dense")
            c = onnx.NodeProto()
            c.CopyFrom(old)
            del c.input[:]
            c.input.extend(names.get(o, o) for o in operands)
            c.output[0] = out
            nodes.append(c)
        selector = fresh(f"{node.output[0]}_mask")
        nodes += [helper.make_node("Cast", [mask], [selector], to=onnx.TensorProto.BOOL),
                  helper.make_node("Where", [selector, names.get(dense, dense), data], list(node.output))]
        replace[id(node)] = nodes
    if not replace:
        return model
    kept = []
    for node in model.graph.node:
        kept.extend(replace.get(id(node), [node]))
    return prune(_with_nodes(model, kept))  # the NonZero index chains, unused now
REWRITES: dict[str, Callable] = {"Pad": rewrite_pad, "Slice": slice_steps_as_gather,
                                 "AveragePool": average_pool_ceil_mode, "DFT": onesided_inverse_dft_as_full}


def make_differentiable(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every registered op rewritten where its rule applies (a shape-inferred, static model)."""
    rewritten = _apply(masked_assignment_as_where(model), REWRITES)
    if rewritten is model:
        return model
    return onnx.shape_inference.infer_shapes(rewritten, strict_mode=True, data_prop=True)


# --- speed: rewrites of the emitted gradient program ---------------------------------------------

def conv_transpose_as_conv(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                           fresh: FreshNames) -> list | None:
    """A stride-1 ConvTranspose with a constant weight as the Conv it equals (flipped, transposed weight).

    onnxruntime's CPU ConvTranspose is markedly slower than its Conv at equal FLOPs; the adjoint of
    every convolution is such a ConvTranspose.
    """
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if len(node.input) > 2 and node.input[2]:
        return None
    weight = constants.get(node.input[1])
    if weight is None or weight.ndim != 4:
        return None
    kh, kw = weight.shape[2:]
    strides = attrs.get("strides", [1, 1])
    if list(strides) != [1, 1] or any(attrs.get("output_padding", [0, 0])):
        return None
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    dil = attrs.get("dilations", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])
    new_pads = [dil[0] * (kh - 1) - pads[0], dil[1] * (kw - 1) - pads[1],
                dil[0] * (kh - 1) - pads[2], dil[1] * (kw - 1) - pads[3]]
    if min(new_pads) < 0:
        return None
    group = attrs.get("group", 1)
    cin, cout_g = weight.shape[:2]
    w = weight.reshape(group, cin // group, cout_g, kh, kw).transpose(0, 2, 1, 3, 4)
    w = np.ascontiguousarray(w.reshape(group * cout_g, cin // group, kh, kw)[:, :, ::-1, ::-1])
    name = fresh(f"{node.output[0]}_as_conv_weight")
    return [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(w.astype(weight.dtype))),
            helper.make_node("Conv", [node.input[0], name], list(node.output), dilations=list(dil),
                             group=group, pads=new_pads, strides=[1, 1], kernel_shape=[kh, kw])]


def transpose_of_unit_axes(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                           fresh: FreshNames) -> list | None:
    """A Transpose that only moves axes of size 1 is a Reshape (free): the seed axis when K = 1."""
    shape = shapes.get(node.input[0])
    if not shape or any(d is None for d in shape):
        return None
    perm = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"),
                list(reversed(range(len(shape)))))
    if [a for a in perm if shape[a] != 1] != [a for a in range(len(shape)) if shape[a] != 1]:
        return None
    name = fresh(f"{node.output[0]}_shape")
    target = np.array([shape[a] for a in perm], np.int64)
    return [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(target)),
            helper.make_node("Reshape", [node.input[0], name], list(node.output))]


def crd_inverse_as_space_to_depth(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                                  fresh: FreshNames) -> list | None:
    """The 6-D Transpose undoing a CRD DepthToSpace as SpaceToDepth and a move of whole planes.

    PyTorch exports PixelShuffle as DepthToSpace in CRD mode, whose adjoint onnx-ad writes as
    [N, C, H, b, W, b] → [N, C, b, b, H, W] (perm 0 1 3 5 2 4). onnxruntime's CPU Transpose moves
    that element by element (130 ms at 10×64×192×192 here, against 28 ms for SpaceToDepth).
    SpaceToDepth gives the same values with the channels ordered (by, bx, c) instead of (c, by, bx);
    moving the C axis past the b·b axis copies contiguous H·W planes.
    """
    shape = shapes.get(node.input[0])
    perm = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"), None)
    if perm is None or list(perm) != [0, 1, 3, 5, 2, 4] or not shape or any(d is None for d in shape):
        return None
    n, c, h, b, w, b2 = shape
    if b != b2 or b < 2:
        return None
    out = node.output[0]
    image, planes, moved = fresh(f"{out}_image"), fresh(f"{out}_planes"), fresh(f"{out}_moved")
    image_shape, planes_shape, out_shape = fresh(f"{out}_image_shape"), fresh(f"{out}_planes_shape"), fresh(f"{out}_shape")
    depth, grouped = fresh(f"{out}_depth"), fresh(f"{out}_grouped")
    return [_constant_node(image_shape, np.array([n, c, h * b, w * b], np.int64)),
            _constant_node(planes_shape, np.array([n, b * b, c, h * w], np.int64)),
            _constant_node(out_shape, np.array([n, c, b, b, h, w], np.int64)),
            helper.make_node("Reshape", [node.input[0], image_shape], [image]),
            helper.make_node("SpaceToDepth", [image], [depth], blocksize=b),
            helper.make_node("Reshape", [depth, planes_shape], [grouped]),
            helper.make_node("Transpose", [grouped], [moved], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [moved, out_shape], [out])]


def _first(*rules: Callable) -> Callable:
    """A rule trying `rules` in order: the first replacement wins (several rewrites of one op type)."""
    def rule(node, constants, shapes, opset, fresh):
        for r in rules:
            replacement = r(node, constants, shapes, opset, fresh)
            if replacement is not None:
                return replacement
        return None
    return rule


def expand_to_own_shape(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                        fresh: FreshNames) -> list | None:
    """An Expand whose output has its input's shape is a copy: onnx-ad emits one per broadcast adjoint
    even where nothing broadcasts (two per residual scaling in EDSR), each a full pass over memory."""
    before, after = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not before or before != after or any(d is None for d in before):
        return None
    return [helper.make_node("Identity", [node.input[0]], list(node.output))]


SCATTER_MATRIX_LIMIT = 1 << 24  # entries of the one-hot matrix (64 MiB in float32); larger stay ScatterND


def scatter_add_as_matmul(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int,
                          fresh: FreshNames) -> list | None:
    """A ScatterND with reduction "add" along the leading axis as a MatMul with a one-hot matrix.

    out = data + P·U, where P (n×M) = OneHot(indices, n) along axis 0 and U is the updates as M
    rows. This is the adjoint onnx-ad emits for every Gather (reflect and edge pads are Gathers with
    repeated indices). onnxruntime's CPU ScatterND splits the updates between threads, and threads
    adding into the same row race: with repeated indices its sums change from run to run and are
    wrong (tests/graph/test_runtime_faults.py keeps a reproducer). A GEMM sums each output row in
    one thread, so the result is the same on every run.
    """
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("reduction", b"none") not in (b"add", "add"):
        return None
    data, indices, updates = node.input
    d, i = shapes.get(data), shapes.get(indices)
    if not d or not i or any(x is None for x in d + i) or i[-1] != 1:
        return None
    n, m, rest = d[0], int(np.prod(i[:-1], dtype=np.int64)), int(np.prod(d[1:], dtype=np.int64))
    if n * m > SCATTER_MATRIX_LIMIT:
        return None
    out = node.output[0]
    flat, rows, shape = fresh(f"{out}_flat"), fresh(f"{out}_rows"), fresh(f"{out}_data_shape")
    depth, values, like = fresh(f"{out}_depth"), fresh(f"{out}_onehot_values"), fresh(f"{out}_values")
    index_vector, onehot, update_rows = fresh(f"{out}_indices"), fresh(f"{out}_onehot"), fresh(f"{out}_update_rows")
    summed, reshaped = fresh(f"{out}_summed"), fresh(f"{out}_scattered")
    return [_constant_node(flat, np.array([-1], np.int64)),
            _constant_node(rows, np.array([m, rest], np.int64)),
            _constant_node(shape, np.array(d, np.int64)),
            _constant_node(depth, np.array([n], np.int64)),
            _constant_node(values, np.array([0.0, 1.0], np.float32)),
            helper.make_node("CastLike", [values, updates], [like]),
            helper.make_node("Reshape", [indices, flat], [index_vector]),
            helper.make_node("OneHot", [index_vector, depth, like], [onehot], axis=0),
            helper.make_node("Reshape", [updates, rows], [update_rows]),
            helper.make_node("MatMul", [onehot, update_rows], [summed]),
            helper.make_node("Reshape", [summed, shape], [reshaped]),
            helper.make_node("Add", [data, reshaped], [out])]


# Rewrites of the gradient program: faster kernels, and runtime kernels that give the same value on
# every run (a program whose gradients change between runs is no reference).
SPEEDUPS: dict[str, Callable] = {"ConvTranspose": conv_transpose_as_conv,
                                 "Transpose": _first(transpose_of_unit_axes, crd_inverse_as_space_to_depth),
                                 "Expand": expand_to_own_shape, "ScatterND": scatter_add_as_matmul}


ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Sum", "Neg", "Where", "Relu", "Identity", "Greater", "Less",
               "GreaterOrEqual", "LessOrEqual", "Equal", "Cast", "Abs", "Sign", "Max", "Min", "Sqrt", "Exp",
               "Reciprocal", "Not", "And", "Or", "LeakyRelu", "Sigmoid", "Tanh", "Erf"}


def drop_seed_axis(model: onnx.ModelProto) -> onnx.ModelProto:
    """Elementwise work of a one-window program done on 4-D tensors instead of 5-D ones.

    onnx-ad keeps adjoints with a trailing seed axis (N, C, H, W, 1), reshaped to 4-D around every
    Conv and back; 5-D elementwise ops stop onnxruntime's blocked (NCHWc) layout at each of them, so
    every Conv reorders its input and output (8% of the EDSR program). Here an elementwise node whose
    operands are all 4-D values with a unit axis appended (or one-element constants) runs on the 4-D
    values, and an Unsqueeze gives the 5-D name to whatever still needs it; `prune` drops the rest.
    """
    shapes, constants = static_shapes(model), constant_values(model)
    opset = opset_version(model)
    if opset < 13:
        return model
    low: dict[str, str] = {}  # 5-D name -> a 4-D name holding the same values
    origin: dict[str, str] = {}  # a reshaped value -> the value it was reshaped from

    def trailing_unit(name):
        shape = shapes.get(name)
        return shape and len(shape) == 5 and shape[-1] == 1 and None not in shape

    def scalar(name):
        shape = shapes.get(name)
        if name in constants:
            return constants[name].size == 1 and constants[name].ndim <= 4
        return shape is not None and None not in shape and int(np.prod(shape)) == 1 and len(shape) <= 4

    nodes, changed = [], False
    fresh = FreshNames(model)
    axis_name = fresh("onnxlam_seed_axis")
    for node in model.graph.node:
        out = node.output[0] if node.output else ""
        standard = node.domain in ("", "ai.onnx")
        if standard and node.op_type in ("Unsqueeze", "Reshape", "Identity", "Squeeze", "Flatten"):
            # reshapes keep the order of the elements: follow them back to where the values were made
            origin[out] = origin.get(node.input[0], low.get(node.input[0], node.input[0]))
            if trailing_unit(out) and shapes.get(origin[out]) == shapes[out][:-1]:
                low[out] = origin[out]
            elif trailing_unit(out) and shapes.get(node.input[0]) and None not in shapes[node.input[0]]:
                # a reshape to N×C×H×W×1 of another layout: its 4-D version is one (free) Reshape away
                lowered, target = fresh(f"{out}_4d"), fresh(f"{out}_4d_shape")
                nodes.append(helper.make_node("Constant", [], [target], value=numpy_helper.from_array(
                    np.array(shapes[out][:-1], np.int64))))
                nodes.append(helper.make_node("Reshape", [node.input[0], target], [lowered]))
                low[out] = lowered
        if node.op_type in ("Unsqueeze", "Identity", "Squeeze", "Flatten"):
            pass
        elif standard and node.op_type == "Reshape" and node.input[0] in low and node.input[0] != low[node.input[0]]:
            node = helper.make_node("Reshape", [low[node.input[0]], node.input[1]], list(node.output),
                                    name=node.name)
            changed = True
        elif standard and node.op_type in ("Pad", "Expand") and trailing_unit(out) and node.input[0] in low \
                and node.input[1] in constants and _unit_tail(node.op_type, constants[node.input[1]]):
            # a Pad or Expand that leaves the seed axis alone: the same on the 4-D value
            target = constants[node.input[1]]
            target = np.concatenate([target[:4], target[5:9]]) if node.op_type == "Pad" else target[:4]
            lowered, argument = fresh(f"{out}_4d"), fresh(f"{out}_4d_{node.op_type.lower()}")
            nodes.append(helper.make_node("Constant", [], [argument], value=numpy_helper.from_array(target)))
            nodes.append(helper.make_node(node.op_type, [low[node.input[0]], argument] + list(node.input[2:]),
                                          [lowered]))
            nodes[-1].attribute.extend(node.attribute)
            node = helper.make_node("Unsqueeze", [lowered, axis_name], [out])
            low[out] = lowered
            changed = True
        elif standard and node.op_type in ELEMENTWISE and len(node.output) == 1 and trailing_unit(out) \
                and any(i in low for i in node.input) \
                and all(i in low or i == "" or scalar(i) for i in node.input):
            lowered = fresh(f"{out}_4d")
            nodes.append(helper.make_node(node.op_type, [low.get(i, i) for i in node.input], [lowered],
                                          name=f"{node.name}_4d" if node.name else "", domain=node.domain))
            nodes[-1].attribute.extend(node.attribute)
            node = helper.make_node("Unsqueeze", [lowered, axis_name], [out])
            low[out] = lowered
            changed = True
        nodes.append(node)
    if not changed:
        return model
    return _with_nodes(model, [helper.make_node("Constant", [], [axis_name],
                                                value=numpy_helper.from_array(np.array([4], np.int64)))] + nodes)


def _unit_tail(op: str, argument: np.ndarray) -> bool:
    """Whether a 5-D Pad's pads (or an Expand's shape) leave the trailing unit axis as it is."""
    if op == "Pad":
        return argument.shape == (10,) and argument[4] == 0 and argument[9] == 0
    return argument.shape == (5,) and argument[4] == 1


def prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without the nodes no graph output depends on (onnx-ad's adjoints of constants, say)."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed.update(node.input)
            for attr in node.attribute:  # values a subgraph (If/Loop/Scan body) reads from outside
                if attr.type == onnx.AttributeProto.GRAPH:
                    needed.update(_outer_names(attr.g))
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        needed.update(_outer_names(g))
    if len(keep) == len(model.graph.node):
        return model
    return _with_nodes(model, list(reversed(keep)))


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names.update(_outer_names(attr.g))
    return names


def _apply(model: onnx.ModelProto, rules: dict[str, Callable]) -> onnx.ModelProto:
    constants, shapes = constant_values(model), static_shapes(model)
    opset = opset_version(model)
    fresh = FreshNames(model)
    nodes, changed = [], False
    for node in model.graph.node:
        rule = rules.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        replacement = rule(node, constants, shapes, opset, fresh) if rule else None
        if replacement is None:
            nodes.append(node)
        else:
            nodes.extend(replacement)
            changed = True
    if not changed:
        return model
    return _with_nodes(model, nodes)


def _with_nodes(model: onnx.ModelProto, nodes: list) -> onnx.ModelProto:
    """A copy of `model` whose graph holds `nodes` instead of its own."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def speed_up(program: onnx.ModelProto) -> onnx.ModelProto:
    """The gradient program with the SPEEDUPS rewrites applied (same values, faster kernels)."""
    inferred = onnx.shape_inference.infer_shapes(program, strict_mode=False, data_prop=True)
    return prune(drop_seed_axis(_apply(inferred, SPEEDUPS)))
