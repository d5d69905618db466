"""Why onnxruntime would refuse a model, in the model's own terms: the node and the tensor to name.

Two faults a damaged or mis-edited file shows, read off the graph without running it:
- `undefined_inputs`: a node reads a tensor that no initializer, graph input or node provides (a
  weight deleted from the file); onnxruntime refuses to load such a model.
- `weight_mismatches`: an initializer whose shape does not fit the tensor it meets at a given input
  size (a Conv's weight with the wrong input channels, a MatMul's inner size, a bias or scale that
  does not broadcast); onnxruntime loads such a model and fails when it runs, naming one of its own
  fused kernels. Found with onnx's shape inference at that size.

A correct model has neither, so neither check can reject one; dimensions shape inference leaves
unknown are never counted against a model.
"""
from __future__ import annotations

import onnx
from onnx import shape_inference

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "PRelu", "Pow", "Max", "Min"}


def undefined_inputs(model: onnx.ModelProto) -> list[str]:
    """One line per node input that nothing defines, subgraphs included (they may read the outer graph)."""
    found: list[str] = []
    _undefined(model.graph, set(), found)
    return list(dict.fromkeys(found))  # a tensor read twice by one node (or in two branches): once


def _undefined(graph: onnx.GraphProto, outer: set[str], found: list[str]) -> None:
    defined = set(outer) | {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.name for t in graph.sparse_initializer}
    defined |= {o for node in graph.node for o in node.output if o}
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                found.append(f"{_node(node)} reads {name!r}, which no "
                             "initializer, graph input or node provides")
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                _undefined(sub, defined, found)
    for out in graph.output:
        if out.name not in defined:
            found.append(f"the graph output {out.name!r} is produced by no node")


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Every tensor's inferred dims (int where known, None elsewhere), initializers included."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # inference fails on some valid graphs: then nothing is claimed
        inferred = model
    g = inferred.graph
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in g.initializer}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            shapes.setdefault(v.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                            for d in v.type.tensor_type.shape.dim))
    return shapes


def with_input_dims(model: onnx.ModelProto, dims: tuple[int, ...]) -> onnx.ModelProto:
    """A copy whose first input has `dims`, its outputs' shapes and inferred value_info cleared."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inp = m.graph.input[0]
    del inp.type.tensor_type.shape.dim[:]
    for d in dims:
        inp.type.tensor_type.shape.dim.add().dim_value = d
    for out in m.graph.output:
        del out.type.tensor_type.shape.dim[:]
        out.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    return m


def weight_mismatches(model: onnx.ModelProto, dims: tuple[int, ...] | None = None) -> list[str]:
    """One line per initializer whose shape does not fit what it meets, with the first input of
    shape `dims` (default: as the file declares it)."""
    model = model if dims is None else with_input_dims(model, dims)
    shapes = _shapes(model)
    weights = {t.name for t in model.graph.initializer}
    found: list[str] = []
    for node in model.graph.node:
        name = _node(node)
        ins = [shapes.get(i) if i else None for i in node.input]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "ConvTranspose") and len(ins) > 1 and node.input[1] in weights \
                and ins[0] and ins[1] and len(ins[0]) > 1 and ins[0][1] is not None:
            group = int(attrs.get("group", 1))
            takes = ins[1][1] * group if node.op_type == "Conv" else ins[1][0]
            if takes != ins[0][1]:
                found.append(f"{name}: its weight {node.input[1]!r} of shape {_text(ins[1])} takes {takes} input "
                             f"channels, but its input has {ins[0][1]}")
            outputs = ins[1][0] if node.op_type == "Conv" else ins[1][1] * group
            if len(ins) > 2 and node.input[2] in weights and ins[2] and ins[2] != (outputs,):
                found.append(f"{name}: its bias {node.input[2]!r} holds {_text(ins[2])} values for {outputs} "
                             "output channels")
        elif node.op_type == "MatMul" and len(ins) == 2 and all(ins) and min(len(ins[0]), len(ins[1])) >= 2:
            k_a, k_b = ins[0][-1], ins[1][-2]
            if None not in (k_a, k_b) and k_a != k_b and (node.input[0] in weights or node.input[1] in weights):
                w = node.input[1] if node.input[1] in weights else node.input[0]
                found.append(f"{name}: inner sizes {k_a} and {k_b} differ (initializer {w!r}, shapes "
                             f"{_text(ins[0])} × {_text(ins[1])})")
        elif node.op_type == "Gemm" and len(ins) >= 2 and all(ins[:2]) and len(ins[0]) == 2 and len(ins[1]) == 2:
            k_a = ins[0][0] if attrs.get("transA", 0) else ins[0][1]
            k_b = ins[1][1] if attrs.get("transB", 0) else ins[1][0]
            if None not in (k_a, k_b) and k_a != k_b and node.input[1] in weights:
                found.append(f"{name}: its weight {node.input[1]!r} of shape {_text(ins[1])} takes {k_b} inputs, "
                             f"but its input has {k_a}")
        elif node.op_type in ELEMENTWISE and len(ins) == 2 and all(ins):
            for i, w in enumerate(node.input):
                if w in weights and not _broadcasts(ins[0], ins[1]):
                    found.append(f"{name}: initializer {w!r} of shape {_text(ins[i])} does not broadcast with "
                                 f"{_text(ins[1 - i])}")
                    break
        elif node.op_type in ("BatchNormalization", "InstanceNormalization") and ins and ins[0] \
                and len(ins[0]) > 1 and ins[0][1] is not None:
            for w, shape in zip(node.input[1:], ins[1:]):
                if w in weights and shape and len(shape) == 1 and shape[0] != ins[0][1]:
                    found.append(f"{name}: its {w!r} holds {shape[0]} values, but its input has {ins[0][1]} "
                                 "channels")
                    break
    return found


def _node(node: onnx.NodeProto) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"an unnamed {node.op_type} node"


def _broadcasts(a: tuple, b: tuple) -> bool:
    for x, y in zip(reversed(a), reversed(b)):
        if None not in (x, y) and x != y and 1 not in (x, y):
            return False
    return True


def _text(shape: tuple) -> str:
    return "×".join("?" if d is None else str(d) for d in shape)


def invalid_model_message(path: str | None, faults: list[str]) -> str:
    """The one line that says a model file is invalid, naming its first fault."""
    more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
    return f"{path or 'the model'} is not a valid model: {faults[0]}{more}; re-export it or fix the file"
