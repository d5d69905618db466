"""The speed rewrites of gradient programs (`rewrite.speed_up`) keep every value: programs built with
and without them give the same objective and gradient, and the rewrites did remove what they target
(no-op Expands, unused adjoints of constants, 5-D elementwise work of one-window programs)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxlam.engine.program as program_module
from onnxlam.graph.model import open_model
from onnxlam.engine.program import GradientProgram, gradient_graph, program_key
from onnxlam.graph.model import static_shapes


def _both(path, batch, size, windows, monkeypatch):
    source, info = open_model(path)
    key = program_key(info, batch, size, size, windows=windows)
    fast = gradient_graph(source, info, key)
    with monkeypatch.context() as m:
        m.setattr(program_module, "speed_up", lambda model: model)
        plain = gradient_graph(source, info, key)
    scale = program_module._scale_of(fast, key)
    return GradientProgram(fast, key, scale), GradientProgram(plain, key, scale)


def _five_d_elementwise(model: onnx.ModelProto) -> int:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = static_shapes(inferred)
    return sum(1 for n in inferred.graph.node if n.op_type in ("Mul", "Add", "Sum", "Where", "Neg")
               and len(shapes.get(n.output[0]) or ()) == 5)


@pytest.mark.parametrize("name, windows", [("edsr", 1), ("edsr", 3), ("rcan", 1), ("swin", 1), ("rrdb", 1)])
def test_speed_rewrites_keep_values(zoo, monkeypatch, name, windows):
    path = zoo.onnx(name, "torchscript")
    fast, plain = _both(path, 2, 16, windows, monkeypatch)
    k = fast.key
    H, W = fast.output_size
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, (k.batch, k.channels, k.height, k.width)).astype(np.float32)
    mask = (rng.random((k.batch, k.windows, H - 1, W - 1)) < 0.2).astype(np.float32)
    d_fast, g_fast = fast.objective_and_gradient(x, mask, "cpu")
    d_plain, g_plain = plain.objective_and_gradient(x, mask, "cpu")
    np.testing.assert_allclose(d_fast, d_plain, rtol=1e-5)
    np.testing.assert_allclose(g_fast, g_plain, atol=1e-5 * float(np.abs(g_plain).max()))
    ops = [n.op_type for n in fast.model.graph.node]
    assert ops.count("Expand") < [n.op_type for n in plain.model.graph.node].count("Expand")
    if windows == 1:  # the seed axis is gone from the elementwise work
        assert _five_d_elementwise(fast.model) < _five_d_elementwise(plain.model) / 2
    if name in ("edsr", "rcan", "swin"):  # PixelShuffle: its adjoint's element-wise 6-D Transpose is gone
        assert _crd_inverses(plain.model) > 0 and _crd_inverses(fast.model) == 0


def _crd_inverses(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "Transpose"
               and list(onnx.helper.get_attribute_value(n.attribute[0])) == [0, 1, 3, 5, 2, 4])


@pytest.mark.parametrize("block", [2, 3])
def test_crd_inverse_as_space_to_depth(block):
    """The rewritten adjoint of a CRD DepthToSpace moves every value where the 6-D Transpose puts it."""
    from onnx import TensorProto, helper

    from onnxlam.engine.runtime import create_session
    from onnxlam.graph.rewrite import speed_up

    n, c, h, w = 2, 5, 4, 6
    shape = [n, c, h, block, w, block]
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 5, 2, 4])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = speed_up(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert "SpaceToDepth" in [node.op_type for node in model.graph.node]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    (y,) = create_session(model, "cpu").run({"x": x})
    np.testing.assert_array_equal(y, x.transpose(0, 1, 3, 5, 2, 4))


def test_prune_keeps_subgraph_inputs():
    """A value read only inside an If branch must survive pruning."""
    from onnx import TensorProto, helper

    from onnxlam.graph.rewrite import prune

    then = helper.make_graph([helper.make_node("Identity", ["hidden"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1])])
    nodes = [helper.make_node("Neg", ["x"], ["hidden"]), helper.make_node("Abs", ["x"], ["unused"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    pruned = prune(helper.make_model(graph))
    assert [n.op_type for n in pruned.graph.node] == ["Neg", "If"]
