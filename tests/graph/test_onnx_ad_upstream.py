"""onnx-ad faults onnxlam works around, each a minimal pure-ONNX reproducer asserting that
the fault is still there.

When one of these tests fails, onnx-ad has fixed that fault: drop the matching rewrite in
`onnxlam/graph/rewrite.py` (named in each docstring) and this test. Each docstring is the report one would
file upstream. Checked against onnx-ad 0.3.0, onnx 1.23, onnxruntime 1.31.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ad
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytestmark = pytest.mark.integration


def _model(node, shape, initializers=(), opset=17) -> onnx.ModelProto:
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)


def _reverse(model):
    return onnx_ad.reverse(model, inputs=["x"], outputs=["y"], layout="onnx")


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def test_pad_with_negative_pads_gives_an_invalid_adjoint():
    """Pad with negative pads: the reverse program fails in onnxruntime.

    ONNX allows negative pads (they remove elements: PyTorch exports `F.pad(x, (-1, …))` so).
    `onnx_ad.reverse` of `Pad(x[1,1,6,6], pads=[0,0,-1,-2, 0,0,-1,0])` (y: [1,1,4,4]) builds a
    program that onnxruntime rejects: "Op (Expand) [ShapeInferenceError] Incompatible dimensions".
    The adjoint of a crop is a zero pad of the seed by the removed amounts (and of a positive pad a
    slice). Worked around by `rewrite.negative_pad_as_slice`.
    """
    m = _model(helper.make_node("Pad", ["x", "pads"], ["y"]), [1, 1, 6, 6],
               [_ints("pads", [0, 0, -1, -2, 0, 0, -1, 0])])
    program = _reverse(m)
    program.ir_version = min(program.ir_version, 10)
    with pytest.raises(Exception, match="Incompatible dimensions"):
        session = ort.InferenceSession(program.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.ones((1, 1, 6, 6), np.float32), "adj_y": np.ones((1, 1, 4, 4, 1), np.float32)})


def test_slice_with_a_negative_step_is_not_differentiated():
    """Slice with step ≠ 1 (`torch.flip` exports starts −1, ends INT64_MIN, steps −1): `onnx_ad.reverse`
    raises UnsupportedOperator "Slice with a step other than 1 is not differentiated in reverse mode".
    With constant starts/ends/steps and a static shape the adjoint is a scatter (ScatterElements /
    ScatterND add, or a Pad of the seed for |step| = 1). Worked around by `rewrite.slice_steps_as_gather`.
    """
    m = _model(helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"]), [1, 1, 4, 5],
               [_ints("starts", [-1]), _ints("ends", [-(2 ** 63)]), _ints("axes", [3]), _ints("steps", [-1])])
    with pytest.raises(onnx_ad.UnsupportedOperator, match="step other than 1"):
        _reverse(m)


def test_average_pool_with_ceil_mode_is_not_differentiated():
    """AveragePool with ceil_mode=1 (PyTorch `avg_pool2d(ceil_mode=True)`): `onnx_ad.reverse` raises
    UnsupportedOperator "AveragePool with ceil_mode=1 is not differentiated in reverse mode". At a
    static shape the overhanging windows are an explicit zero pad at the end plus a per-window divisor
    (count_include_pad counts the declared padding, never the overhang), and where nothing overhangs
    ceil_mode changes nothing. Worked around by `rewrite.average_pool_ceil_mode`.
    """
    m = _model(helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
               [1, 1, 8, 8])
    with pytest.raises(onnx_ad.UnsupportedOperator, match="ceil_mode=1"):
        _reverse(m)


def test_inverse_onesided_dft_is_not_differentiated():
    """DFT with inverse=1, onesided=1 (the C2R transform `torch.fft.irfft` exports, opset 20):
    `onnx_ad.reverse` raises UnsupportedOperator "an inverse onesided DFT is not differentiated in
    reverse". It is linear over the reals: the full inverse DFT of the Hermitian extension
    X[k] = conj(X[N−k]) (real part), whose adjoint onnx-ad has. Worked around by
    `rewrite.onesided_inverse_dft_as_full`.
    """
    m = _model(helper.make_node("DFT", ["x", "n", "axis"], ["y"], inverse=1, onesided=1), [1, 5, 2],
               [numpy_helper.from_array(np.array(8, np.int64), "n"),
                numpy_helper.from_array(np.array(1, np.int64), "axis")],
               opset=20)
    with pytest.raises(onnx_ad.UnsupportedOperator, match="inverse onesided DFT"):
        _reverse(m)



def test_slice_with_a_computed_end_is_not_differentiated():
    """Slice whose `ends` is computed (from a NonZero's count): not differentiated.

    TorchScript exports a boolean-mask assignment `x[m] = f(y[m])` (HVI-CIDNet's colour transform) as
    NonZero, GatherND, f, a Slice of the values to `Shape(NonZero(m))[1]`, and ScatterND. `onnx_ad.reverse`
    of `Slice(x[6], starts=[0], ends=Unsqueeze(Gather(Shape(NonZero(x > 0.5)), 1)))` raises
    "Slice is differentiable only with a constant 'ends' operand". The adjoint of a unit-step Slice is
    a Pad of the seed to the input's length, which onnxruntime computes at run time as well (Shape of
    the input, Sub, Concat) whatever the bounds are. Worked around by `rewrite.masked_assignment_as_where`.
    """
    nodes = [helper.make_node("Greater", ["x", "half"], ["m"]),
             helper.make_node("NonZero", ["m"], ["nz"]),
             helper.make_node("Shape", ["nz"], ["nz_shape"]),
             helper.make_node("Gather", ["nz_shape", "one"], ["count"], axis=0),
             helper.make_node("Unsqueeze", ["count", "zero_axis"], ["end"]),
             helper.make_node("Slice", ["x", "zero", "end"], ["y"])]
    init = [numpy_helper.from_array(np.array(0.5, np.float32), "half"), _ints("one", 1), _ints("zero", [0]),
            _ints("zero_axis", [0])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)
    x = np.array([0.1, 0.9, 0.7, 0.2, 0.8, 0.3], np.float32)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x[:3])  # the model itself runs
    with pytest.raises(onnx_ad.UnsupportedOperator, match="constant 'ends'"):
        _reverse(m)
