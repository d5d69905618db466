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

from onnxlam.graph.model import opset_version, static_shapes

NUMPY_PAD_MODE = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


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


def expand_to_own_shape(node: onnx.NodeProto, constants: dict, shapes: dict, opset: int) -> list | None:
    """An Expand whose output has its input's shape is a copy: onnx-ad emits one per broadcast adjoint
    even where nothing broadcasts (two per residual scaling in EDSR), each a full pass over memory."""
    before, after = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not before or before != after or any(d is None for d in before):
        return None
    return [helper.make_node("Identity", [node.input[0]], list(node.output))]


SPEEDUPS: dict[str, Callable] = {"ConvTranspose": conv_transpose_as_conv, "Transpose": transpose_of_unit_axes,
                                 "Expand": expand_to_own_shape}


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
    shapes, constants = static_shapes(model), _constants(model)
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
    axis_name = "onnxlam_seed_axis"
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
                lowered, target = f"{out}_4d", f"{out}_4d_shape"
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
            lowered, argument = f"{out}_4d", f"{out}_4d_{node.op_type.lower()}"
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
            lowered = f"{out}_4d"
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
    constants, shapes = _constants(model), static_shapes(model)
    opset = opset_version(model)
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
