"""Graph rewrites that keep a model's values: to make it differentiable by onnx-ad, and to speed up
the gradient programs it emits.

One registry, one small function per op type. Each works on a shape-inferred model with static
shapes (the gradient program's), and returns replacement nodes or None to keep the node.

- `Pad` in reflect, edge or wrap mode: onnx-ad differentiates constant-mode Pad only (the other
  modes copy values, so their adjoint must accumulate onto the copied pixels). With static shapes
  such a Pad is a `Gather` per padded axis with constant indices, and `Gather`'s adjoint
  accumulates duplicates correctly. Reflect padding is common in SR exports (SwinIR's
  `check_image_size`, Real-CUGAN, tiling programs).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

NUMPY_PAD_MODE = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    shapes = {}
    for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
        shapes[v.name] = dims
    return shapes


def pad_indices(length: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every output position along one axis (negative pads crop)."""
    idx = np.pad(np.arange(length), (max(before, 0), max(after, 0)), mode=NUMPY_PAD_MODE[mode])
    start = -before if before < 0 else 0
    stop = len(idx) + after if after < 0 else len(idx)
    return idx[start:stop]


def rewrite_pad(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int) -> list | None:
    mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
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
        index_name = f"{node.output[0]}_pad_index_{axis}"
        out_name = f"{node.output[0]}_pad_axis_{axis}"
        idx = pad_indices(shape[axis], before, after, mode).astype(np.int64)
        nodes.append(helper.make_node("Constant", [], [index_name], value=numpy_helper.from_array(idx)))
        nodes.append(helper.make_node("Gather", [current, index_name], [out_name], axis=axis))
        current = out_name
    nodes.append(helper.make_node("Identity", [current], [node.output[0]]))
    return nodes


REWRITES: dict[str, Callable] = {"Pad": rewrite_pad}


def make_differentiable(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every registered op rewritten where its rule applies (a shape-inferred, static model)."""
    rewritten = _apply(model, REWRITES)
    if rewritten is model:
        return model
    return onnx.shape_inference.infer_shapes(rewritten, strict_mode=True, data_prop=True)


# --- speed: rewrites of the emitted gradient program ---------------------------------------------

def conv_transpose_as_conv(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int) -> list | None:
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
    name = f"{node.output[0]}_as_conv_weight"
    return [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(w.astype(weight.dtype))),
            helper.make_node("Conv", [node.input[0], name], list(node.output), dilations=list(dil),
                             group=group, pads=new_pads, strides=[1, 1], kernel_shape=[kh, kw])]


def transpose_of_unit_axes(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int) -> list | None:
    """A Transpose that only moves axes of size 1 is a Reshape (free): the seed axis when K = 1."""
    shape = shapes.get(node.input[0])
    if not shape or any(d is None for d in shape):
        return None
    perm = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"),
                list(reversed(range(len(shape)))))
    if [a for a in perm if shape[a] != 1] != [a for a in range(len(shape)) if shape[a] != 1]:
        return None
    name = f"{node.output[0]}_shape"
    target = np.array([shape[a] for a in perm], np.int64)
    return [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(target)),
            helper.make_node("Reshape", [node.input[0], name], list(node.output))]


SPEEDUPS: dict[str, Callable] = {"ConvTranspose": conv_transpose_as_conv, "Transpose": transpose_of_unit_axes}


def _apply(model: onnx.ModelProto, rules: dict[str, Callable]) -> onnx.ModelProto:
    constants, shapes = _constants(model), _shapes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes, changed = [], False
    for node in model.graph.node:
        rule = rules.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        replacement = rule(node, constants, shapes, opset) if rule else None
        if replacement is None:
            nodes.append(node)
        else:
            nodes.extend(replacement)
            changed = True
    if not changed:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def speed_up(program: onnx.ModelProto) -> onnx.ModelProto:
    """The gradient program with the SPEEDUPS rewrites applied (same values, faster kernels)."""
    inferred = onnx.shape_inference.infer_shapes(program, strict_mode=False, data_prop=True)
    return _apply(inferred, SPEEDUPS)
