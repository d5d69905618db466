"""onnxruntime faults onnxlam works around in its gradient programs, each with a minimal reproducer
asserting that the fault is still there, and the rewrite that avoids it checked on the same input.

When a reproducer fails, onnxruntime has fixed that fault: drop the matching rewrite in
`onnxlam/graph/rewrite.py` (named in each docstring) and the reproducer. Checked against
onnxruntime 1.31.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from onnxlam.graph import rewrite
from onnxlam.graph.model import open_model

ROWS, REPEATS, COLUMNS = 2, 512, 1 << 14
THREADS, RUNS = 8, 50


def _scatter_add() -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("ScatterND", ["data", "indices", "updates"], ["out"], reduction="add")], "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [ROWS, COLUMNS]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, [REPEATS, 1]),
         helper.make_tensor_value_info("updates", TensorProto.FLOAT, [REPEATS, COLUMNS])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [ROWS, COLUMNS])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


def _wrong_runs(model: onnx.ModelProto) -> int:
    """How many of RUNS runs on THREADS threads differ from numpy's unbuffered sum (np.add.at)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    indices = (np.arange(REPEATS) % ROWS).astype(np.int64)[:, None]
    updates = np.random.default_rng(0).integers(0, 4, (REPEATS, COLUMNS)).astype(np.float32)  # exact sums
    data = np.zeros((ROWS, COLUMNS), np.float32)
    expected = data.copy()
    np.add.at(expected, indices[:, 0], updates)
    feeds = {"data": data, "indices": indices, "updates": updates}
    return sum(not np.array_equal(session.run(None, feeds)[0], expected) for _ in range(RUNS))


def test_scatternd_add_races_on_repeated_indices():
    """ScatterND with reduction="add" and repeated indices gives wrong sums, different on each run,
    when onnxruntime's CPU kernel runs on several threads: threads adding into one row race.

    onnx-ad differentiates every Gather into such a ScatterND, and a reflect or edge pad (ncnn
    programs, Real-CUGAN, SwinIR's `check_image_size`) is a Gather with repeated indices: LAM maps of
    such models changed from run to run by up to 10% of their largest value. Workaround:
    `rewrite.scatter_add_as_matmul`. Upstream: microsoft/onnxruntime#18048 (closed, still there).
    """
    assert _wrong_runs(_scatter_add()) > 0


def test_scatter_add_as_matmul_gives_the_exact_sums_on_every_run():
    model = _scatter_add()
    rewritten = rewrite._apply(model, rewrite.SPEEDUPS)
    assert "ScatterND" not in {n.op_type for n in rewritten.graph.node}
    onnx.checker.check_model(rewritten, full_check=True)
    assert _wrong_runs(rewritten) == 0


def test_gradient_programs_of_padded_models_hold_no_scatter_and_repeat_exactly(tmp_path):
    """A model that reflect-pads its input (the bundled animevideov3's ncnn program): its gradient
    program has no ScatterND left and gives the same gradient, bit for bit, on every run."""
    from onnxlam.convert.collection import resolve_model
    from onnxlam.engine.program import GradientProgram, gradient_graph, program_key, _scale_of

    source, info = open_model(resolve_model("animevideov3-x4"))
    assert "Gather" in {n.op_type for n in source.graph.node}  # the pad the program adds
    key = program_key(info, 4, 23, 40, windows=8)
    graph = gradient_graph(source, info, key)
    assert "ScatterND" not in {n.op_type for n in graph.graph.node}
    program = GradientProgram(graph, key, _scale_of(graph, key))
    rng = np.random.default_rng(0)
    Hm, Wm = program.mask_size
    x = rng.random((4, 3, 23, 40), np.float32)
    mask = (rng.random((4, 8, Hm, Wm)) > 0.9).astype(np.float32)
    first = program.objective_and_gradient(x, mask)[1]
    assert np.abs(first).max() > 0
    for _ in range(6):
        assert np.array_equal(program.objective_and_gradient(x, mask)[1], first)
