"""A batched program of the checked size is confirmed on its first real batch, not on random images.

`GradientProgram.confirm` compares the first and last element of the first batch with the checked
batch-1 program on the same input; it must reject a batched program whose gradients are wrong, and a
rejected program must never reach the cache or the map.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.onnx_models import tiny_sr
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.engine.cache import ProgramCache
from onnxlam.engine.program import GradientProgram, build_program
from onnxlam.core.errors import NumericalError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import onnx


    path = tmp_path_factory.mktemp("confirm") / "tiny.onnx"
    onnx.save(tiny_sr(2), path)
    return path


def _inputs(program: GradientProgram, seed: int = 0):
    k = program.key
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, (k.batch, k.channels, k.height, k.width)).astype(np.float32)
    H, W = program.output_size
    mask = np.zeros((k.batch, k.windows, H - 1, W - 1), np.float32)
    mask[:, :, 4:12, 4:12] = 1
    return x, mask


def test_a_pending_program_is_cached_only_once_confirmed(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "cache"))
    program = build_program(str(model), 4, 24, 24, confirm_on_use=True)
    assert program.pending is not None and ProgramCache().load(program.key) is None
    x, mask = _inputs(program)
    _, gradient = program.objective_and_gradient(x, mask, "cpu")
    program.confirm(x, mask, gradient, "cpu")
    assert program.pending is None and program.fd_error is not None
    assert ProgramCache().load(program.key) is not None


def test_confirm_rejects_wrong_batched_gradients(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "cache"))
    program = build_program(str(model), 4, 24, 24, confirm_on_use=True)
    x, mask = _inputs(program)
    _, gradient = program.objective_and_gradient(x, mask, "cpu")
    for broken in (gradient * 1.01,                                   # every element scaled
                   np.concatenate([gradient[1:2], gradient[1:]]),     # element 0 has element 1's gradient
                   np.concatenate([gradient[:-1], gradient[:1]])):    # the last element has element 0's
        with pytest.raises(NumericalError, match="batched gradient program"):
            program.confirm(x, mask, broken, "cpu")
        assert program.pending is not None
    assert ProgramCache().load(program.key) is None


def test_a_rejected_batched_program_falls_back_to_the_checked_one(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "cache"))
    image = np.random.default_rng(3).uniform(0, 1, (48, 48, 3))
    reference = Analyzer(model, device="cpu", batch_size=1, cache=False).run(image, (8, 8), 8, fold=6)

    original = GradientProgram.objective_and_gradient

    def mixing(self, x, mask, device="auto"):  # a batched program that moves element 0 by element 1
        objective, gradient = original(self, x, mask, device)
        if self.batch > 1:
            gradient = gradient.copy()
            gradient[0] += 0.5 * gradient[1]
        return objective, gradient

    monkeypatch.setattr(GradientProgram, "objective_and_gradient", mixing)
    analyzer = Analyzer(model, device="cpu", cache=False)
    analyzer.planner.plan = lambda fold, h, w, windows=1: __import__(
        "onnxlam.engine.planner", fromlist=["Plan"]).Plan(3)
    result = analyzer.run(image, (8, 8), 8, fold=6)
    assert result.batch_size == 1  # the checked batch-1 program ran the path
    np.testing.assert_allclose(result.attribution, reference.attribution, atol=1e-6)


def test_a_batched_program_built_ahead_is_confirmed_like_any_other(model, tmp_path, monkeypatch):
    """While the memory probe runs, the analyzer differentiates for the likeliest batch (`prebuild`):
    that graph, planted wrong (×1.01 on the gradient), is still confirmed on its first batch, rejected,
    and the checked batch-1 program runs the path."""
    from onnx import helper

    from onnxlam.engine import program as P

    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "cache"))
    image = np.random.default_rng(4).uniform(0, 1, (48, 48, 3))
    reference = Analyzer(model, device="cpu", batch_size=1, cache=False).run(image, (8, 8), 8, fold=6)
    real, built = P.gradient_graph, []

    def ahead_and_wrong(source, info, key):
        graph = real(source, info, key)
        if key.batch > 1:
            built.append(key.batch)
            node = next(n for n in graph.graph.node if P.GRADIENT in n.output)
            node.output[list(node.output).index(P.GRADIENT)] = "lam_test/unscaled"
            graph.graph.node.extend([
                helper.make_node("Constant", [], ["lam_test/factor"], value=helper.make_tensor("f", 1, [], [1.01])),
                helper.make_node("Mul", ["lam_test/unscaled", "lam_test/factor"], [P.GRADIENT])])
        return graph
    monkeypatch.setattr(P, "gradient_graph", ahead_and_wrong)
    analyzer = Analyzer(model, device="cpu")
    result = analyzer.run(image, (8, 8), 8, fold=6)
    assert built == [6] and not analyzer._prebuilt  # built once, ahead, and used
    assert result.batch_size == 1
    np.testing.assert_allclose(result.attribution, reference.attribution, atol=1e-6)
    assert not list(ProgramCache().root.glob("*-b6-*"))
