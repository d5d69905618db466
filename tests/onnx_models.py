"""Tiny SR networks written directly with onnx.helper: no PyTorch needed to build or run them."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _weights(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def tiny_sr(scale: int = 2, channels: int = 3, features: int = 8, seed: int = 0, batch="N",
            value_range: float = 1.0, bgr: bool = False, extra_nodes=None, metadata=None,
            opset: int = 17, extra_opsets=()) -> onnx.ModelProto:
    """conv3×3 → ReLU → conv3×3 → DepthToSpace(scale), plus the bicubic-free skip `x` upsampled nearest.

    With `value_range`/`bgr` the graph expects that convention and metadata says so; it computes
    exactly what the [0, 1] RGB model of the same seed computes on converted pixels.
    """
    rng = np.random.default_rng(seed)
    w1 = _weights(rng, features, channels, 3, 3)
    b1 = _weights(rng, features, scale=0.05)
    w2 = _weights(rng, channels * scale * scale, features, 3, 3, scale=0.1)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "up_scales"),
             numpy_helper.from_array(np.array([1.0 / value_range], np.float32), "to_unit"),
             numpy_helper.from_array(np.array([value_range], np.float32), "from_unit"),
             numpy_helper.from_array(np.array([2, 1, 0], np.int64), "flip")]
    nodes = []
    x = "image"
    if bgr:
        nodes.append(helper.make_node("Gather", [x, "flip"], ["rgb_in"], axis=1))
        x = "rgb_in"
    nodes += [helper.make_node("Mul", [x, "to_unit"], ["unit"]),
              helper.make_node("Conv", ["unit", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c1"], ["r1"]),
              helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
              helper.make_node("DepthToSpace", ["c2"], ["ps"], blocksize=scale, mode="CRD"),
              helper.make_node("Resize", ["unit", "", "up_scales"], ["skip"], mode="nearest"),
              helper.make_node("Add", ["ps", "skip"], ["sr_unit"])]
    y = "sr_unit"
    for node in extra_nodes or []:
        nodes.append(node)
        y = node.output[0]
    nodes.append(helper.make_node("Mul", [y, "from_unit"], ["scaled"]))
    y = "scaled"
    if bgr:
        nodes.append(helper.make_node("Gather", [y, "flip"], ["bgr_out"], axis=1))
        y = "bgr_out"
    nodes.append(helper.make_node("Identity", [y], ["sr"]))
    graph = helper.make_graph(
        nodes, "tiny_sr",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, channels, "h", "w"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [batch, channels, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                              + [helper.make_opsetid(d, v) for d, v in extra_opsets])
    props = dict(metadata or {})
    if value_range != 1.0:
        props["onnxlam.value_range"] = f"{value_range:g}"
    if bgr:
        props["onnxlam.channel_order"] = "bgr"
    if props:
        helper.set_model_props(model, props)
    if not extra_opsets:
        onnx.checker.check_model(model)
    return model


def numpy_forward(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model run by onnx's reference evaluator (an independent runtime)."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})[0]
