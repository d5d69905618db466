"""The scale probe runs at an LR image's own size: a file declaring dynamic height/width may still bake
its traced size into a Reshape (TorchScript exports of DITN do), and work at that size only."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxlam

pytestmark = pytest.mark.integration


def _traced_at_16(path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (12, 3, 3, 3)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 12, 16, 16], np.int64), "traced_shape")
    nodes = [helper.make_node("Conv", ["input", "w"], ["f"], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["f"], ["t"]),
             helper.make_node("Reshape", ["t", "traced_shape"], ["r"]),  # the traced 16×16, baked in
             helper.make_node("DepthToSpace", ["r"], ["output"], blocksize=2, mode="CRD")]
    graph = helper.make_graph(nodes, "traced", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"])],
                              [w, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_lr_image_size_is_the_probe_size(tmp_path):
    model = _traced_at_16(tmp_path / "traced.onnx")
    lr = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
    res = onnxlam.analyze(model, lr, window=(8, 8), size=8, lr=True, fold=2)
    # (probed at 32×32 instead, shape inference takes the baked Reshape at its word: 32×32 out, "×1")
    assert res.scale == 2 and res.attribution.shape == (16, 16) and np.isfinite(res.di)
    assert res.sr_image.shape == (3, 32, 32)
