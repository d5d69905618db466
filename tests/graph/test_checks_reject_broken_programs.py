"""The gradient checks must reject broken gradient programs, not only pass correct ones.

Real gradient programs (`build_program` on tiny ONNX SR nets) get faults planted into their graphs
(the ONNX ModelProto of the program) or into onnx-ad's derivative table, and every check must reject
them, while it passes the unmodified program (so each test shows the check discriminates):

- `gradcheck.check_gradient` / `program.check_finite_differences` (> FD_TOLERANCE): a negated, a
  transposed and an unflipped adjoint kernel, a wrong unary derivative in the reverse pass
  (LeakyReLU slope ×2, Sigmoid' ×1.05), ×1.05 on half the pixels of the input gradient; and a wrong
  derivative rule used by BOTH modes (which forward-vs-reverse cannot see: the node-local check must);
- `program.check_batch_independence`: one batch element's gradient moved by another's window;
- `program.check_against`: a batched program with a corrupted adjoint against the checked batch-1 one;
- end to end, `build_program` refusing such programs with its documented errors.

Every planted fault is asserted to change the program's gradient, so a test cannot plant nothing.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ad.rules
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import tiny_sr
from onnxlam.engine import program as P
from onnxlam.core.errors import InputError, NumericalError
from onnxlam.engine import gradcheck
from onnxlam.graph.model import open_model

pytestmark = pytest.mark.integration

LR = 8  # LR side of every program here: a check takes < 1 s


# ----------------------------------------------------------------------------- models
def activation_sr(scale: int = 2, channels: int = 3, features: int = 8, seed: int = 0) -> onnx.ModelProto:
    """conv3×3 → LeakyReLU(0.2) → conv3×3 → Sigmoid → DepthToSpace, plus a nearest skip: both unary
    rules sit where their inputs take both signs (before the convs' outputs are summed away)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, channels, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((channels * scale * scale, features, 3, 3)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "up_scales")]
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["c1"], ["l1"], alpha=0.2),
             helper.make_node("Conv", ["l1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c2"], ["s2"]),
             helper.make_node("DepthToSpace", ["s2"], ["ps"], blocksize=scale, mode="CRD"),
             helper.make_node("Resize", ["image", "", "up_scales"], ["skip"], mode="nearest"),
             helper.make_node("Add", ["ps", "skip"], ["sr"])]
    graph = helper.make_graph(
        nodes, "activation_sr", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, "h", "w"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", channels, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def batch_mixing_sr() -> onnx.ModelProto:
    """tiny_sr whose output adds a tenth of the batch mean: every element's SR depends on the others."""
    return tiny_sr(2, extra_nodes=[
        helper.make_node("ReduceMean", ["sr_unit"], ["batch_mean"], axes=[0], keepdims=1),
        helper.make_node("Mul", ["batch_mean", "to_unit"], ["batch_mean_small"]),  # to_unit = 1
        helper.make_node("Add", ["sr_unit", "batch_mean_small"], ["mixed"])])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("broken_programs")
    paths = {}
    for name, model in (("tiny", tiny_sr(2)), ("activation", activation_sr()), ("mixing", batch_mixing_sr())):
        paths[name] = d / f"{name}.onnx"
        onnx.save(model, paths[name])
    return paths


def _build(path, batch: int = 1) -> P.GradientProgram:
    """The real (unverified) program: the faults below are planted into copies of its graph."""
    return P.build_program(path, batch, LR, LR, cache=False, verify=False)


@pytest.fixture(scope="module")
def tiny(models):
    return _build(models["tiny"])


@pytest.fixture(scope="module")
def activation(models):
    return _build(models["activation"])


@pytest.fixture(scope="module")
def tiny_batch2(models):
    return _build(models["tiny"], batch=2)


# ----------------------------------------------------------------------------- graph surgery
def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _adjoint_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The reverse-pass nodes: those outside the primal graph (lam_input, lam_mask → lam_objective)."""
    primal = {o for n in gradcheck.primal_graph(model).graph.node for o in n.output}
    return [n for n in model.graph.node if not primal.intersection(n.output)]


def _ancestors(model: onnx.ModelProto, name: str) -> set[str]:
    producer = {o: n for n in model.graph.node for o in n.output}
    seen, todo = set(), [name]
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in producer:
            todo.extend(i for i in producer[v].input if i)
    return seen


def _get_tensor(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise AssertionError(f"{name} is neither an initializer nor a Constant")


def _set_tensor(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
            return
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            assert [a.name for a in n.attribute] == ["value"]
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
            return
    raise AssertionError(f"{name} is neither an initializer nor a Constant")


def _adjoint_convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Conv/ConvTranspose nodes of the reverse pass (onnx-ad's `a_conv…` nodes) with a constant
    weight: the transposed kernels that carry the gradient back through the model's convolutions."""
    convs = [n for n in _adjoint_nodes(model) if n.op_type in ("Conv", "ConvTranspose")]
    assert convs, "no adjoint convolution in the program (onnx-ad's naming changed?)"
    for n in convs:
        _get_tensor(model, n.input[1])  # a constant weight
    return convs


def corrupt_kernel(model: onnx.ModelProto, how: str, which: int = -1) -> onnx.ModelProto:
    """One adjoint convolution's kernel (by default the last, nearest the input) negated, spatially
    transposed or left unflipped. (Negating all of them would cancel out in tiny_sr: two in series.)"""
    m = _copy(model)
    weight = _adjoint_convs(m)[which].input[1]
    w = _get_tensor(m, weight)
    changed = {"negated": lambda: -w, "transposed": lambda: np.swapaxes(w, 2, 3),
               "unflipped": lambda: w[:, :, ::-1, ::-1]}[how]()
    assert not np.array_equal(changed, w)
    _set_tensor(m, weight, changed)
    return m


def _rewire_output(m: onnx.ModelProto, name: str) -> str:
    """Rename `name`'s producer output to a fresh name (returned); the caller produces `name` again."""
    fresh = f"lam_fault/{name}"
    for n in m.graph.node:
        for j, o in enumerate(n.output):
            if o == name:
                n.output[j] = fresh
    return fresh


def _insert_after(m: onnx.ModelProto, name: str, nodes_from) -> None:
    """Insert nodes right after `name`'s producer so that `name` is recomputed from the original value."""
    fresh = _rewire_output(m, name)
    at = next(k for k, n in enumerate(m.graph.node) if fresh in n.output)
    new = nodes_from(fresh)
    assert new[-1].output[0] == name
    for k, node in enumerate(new):
        m.graph.node.insert(at + 1 + k, node)


def wrong_unary_reverse(model: onnx.ModelProto, op_type: str) -> onnx.ModelProto:
    """The reverse pass of the (one) `op_type` node with a wrong derivative: LeakyReLU's negative slope
    ×2, anything else's derivative ×1.05. onnx-ad's rule is `a_x = Mul(adjoint of y, lift(d/dx))`,
    named "a_" + x (the rewrites may append "_4d"); only its derivative operand is changed."""
    m = _copy(model)
    (primal,) = [n for n in gradcheck.primal_graph(m).graph.node if n.op_type == op_type]
    x = primal.input[0]
    (mul,) = [n for n in _adjoint_nodes(m) if n.op_type == "Mul" and n.output[0] in (f"a_{x}", f"a_{x}_4d")]
    d = mul.input[1]
    # the derivative is computed from primal values only, never from the seed
    assert P.SEED not in _ancestors(m, d) and P.SEED in _ancestors(m, mul.input[0])
    m.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), f"lam_fault/{name}")
                               for name, v in (("one", 1.0), ("two", 2.0), ("factor", 1.05)))
    if op_type == "LeakyRelu":  # d is 1 (x > 0) or alpha: alpha → 2·alpha
        nodes = lambda v: [helper.make_node("Less", [v, "lam_fault/one"], ["lam_fault/slope"]),
                           helper.make_node("Mul", [v, "lam_fault/two"], ["lam_fault/double"]),
                           helper.make_node("Where", ["lam_fault/slope", "lam_fault/double", v], [d])]
    else:
        nodes = lambda v: [helper.make_node("Mul", [v, "lam_fault/factor"], [d])]
    _insert_after(m, d, nodes)
    return m


def scale_half_the_pixels(model: onnx.ModelProto, factor: float = 1.05) -> onnx.ModelProto:
    """The input gradient (graph output adj_lam_input, [B, C, h, w, K]) ×factor on the left half."""
    m = _copy(model)
    (out,) = [o for o in m.graph.output if o.name == P.GRADIENT]
    dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
    assert len(dims) == 5 and dims[3] == LR, dims
    scale = np.ones((1, 1, 1, dims[3], 1), np.float32)
    scale[..., : dims[3] // 2, :] = factor
    m.graph.initializer.append(numpy_helper.from_array(scale, "lam_fault/half"))
    _insert_after(m, P.GRADIENT, lambda v: [helper.make_node("Mul", [v, "lam_fault/half"], [P.GRADIENT])])
    return m


def leak_between_elements(model: onnx.ModelProto, into: int, source: int, eps: float = 1e-2) -> onnx.ModelProto:
    """A batch-2 program whose input gradient of element `into` gets eps × element `source`'s."""
    m = _copy(model)
    (out,) = [o for o in m.graph.output if o.name == P.GRADIENT]
    assert out.type.tensor_type.shape.dim[0].dim_value == 2
    m.graph.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), f"lam_fault/i{v}") for v in (0, 1, 2))
    m.graph.initializer.append(numpy_helper.from_array(np.array(eps, np.float32), "lam_fault/eps"))

    def nodes(v):
        return [helper.make_node("Slice", [v, "lam_fault/i0", "lam_fault/i1", "lam_fault/i0"], ["lam_fault/g0"]),
                helper.make_node("Slice", [v, "lam_fault/i1", "lam_fault/i2", "lam_fault/i0"], ["lam_fault/g1"]),
                helper.make_node("Mul", [f"lam_fault/g{source}", "lam_fault/eps"], ["lam_fault/leak"]),
                helper.make_node("Add", [f"lam_fault/g{into}", "lam_fault/leak"], ["lam_fault/moved"]),
                helper.make_node("Concat", ["lam_fault/moved", "lam_fault/g1"] if into == 0
                                 else ["lam_fault/g0", "lam_fault/moved"], [P.GRADIENT], axis=0)]
    _insert_after(m, P.GRADIENT, nodes)
    return m


def _faulty(program: P.GradientProgram, model: onnx.ModelProto) -> P.GradientProgram:
    return P.GradientProgram(model, program.key, program.scale)


def _gradient(program: P.GradientProgram, mask_elements=None) -> np.ndarray:
    """∇_x D on a fixed random image with a window over the whole output (every pixel counts)."""
    k = program.key
    H, W = program.output_size
    x = np.random.default_rng(7).uniform(0.2, 0.8, (k.batch, k.channels, k.height, k.width)).astype(np.float32)
    mask = np.zeros((k.batch, k.windows, H - 1, W - 1), np.float32)
    mask[mask_elements if mask_elements is not None else slice(None)] = 1.0
    return program.objective_and_gradient(x, mask)[1]


def assert_fault_planted(real: P.GradientProgram, broken: P.GradientProgram, mask_elements=None) -> None:
    """The planted fault changes the program's output gradient (relative max difference ≥ 1e-3)."""
    g, b = _gradient(real, mask_elements), _gradient(broken, mask_elements)
    assert np.all(np.isfinite(b))
    assert np.abs(b - g).max() >= 1e-3 * np.abs(g).max(), "the planted fault does not change the gradient"


# ----------------------------------------------------------------------------- check_gradient
def test_the_real_programs_pass_the_gradient_check(tiny, activation):
    for program in (tiny, activation):
        error = P.check_finite_differences(program)
        assert error <= P.FD_TOLERANCE / 10, error  # a margin: the faults below are ≥ 100× larger
        assert gradcheck.check_gradient(program) == error


@pytest.mark.parametrize("how", ["negated", "transposed", "unflipped"])
def test_a_corrupted_adjoint_kernel_fails_the_gradient_check(tiny, how):
    broken = _faulty(tiny, corrupt_kernel(tiny.model, how))
    assert_fault_planted(tiny, broken)
    assert gradcheck.check_forward_reverse(broken) > 100 * gradcheck.FR_TOLERANCE
    assert P.check_finite_differences(broken) > P.FD_TOLERANCE


@pytest.mark.parametrize("op_type", ["LeakyRelu", "Sigmoid"])
def test_a_wrong_unary_derivative_in_the_reverse_pass_fails_the_gradient_check(activation, op_type):
    broken = _faulty(activation, wrong_unary_reverse(activation.model, op_type))
    assert_fault_planted(activation, broken)
    assert P.check_finite_differences(broken) > P.FD_TOLERANCE


def test_five_percent_on_half_the_pixels_fails_the_gradient_check(tiny):
    broken = _faulty(tiny, scale_half_the_pixels(tiny.model))
    assert_fault_planted(tiny, broken)
    assert P.check_finite_differences(broken) > P.FD_TOLERANCE


def _wrong_rule(op_type: str):
    """onnx-ad's derivative of `op_type`, wrong (LeakyReLU: slope ×2, Sigmoid: ×1.05), for both modes."""
    original = onnx_ad.rules.DERIVATIVE[op_type]

    def wrong(ctx, node, x, y, dtype):
        if op_type == "LeakyRelu":
            doubled = onnx.NodeProto()
            doubled.CopyFrom(node)
            alpha = next(a for a in doubled.attribute if a.name == "alpha")
            alpha.f *= 2
            return original(ctx, doubled, x, y, dtype)
        return ctx.b.op("Mul", [original(ctx, node, x, y, dtype), ctx.constant(1.05, dtype)])
    return wrong


@pytest.mark.parametrize("op_type", ["LeakyRelu", "Sigmoid"])
def test_a_wrong_derivative_rule_fails_the_node_local_check(models, activation, monkeypatch, op_type):
    """A rule wrong in onnx-ad's table is wrong in forward AND reverse mode, consistently: forward vs
    reverse passes it, the node-local central differences must not."""
    monkeypatch.setitem(onnx_ad.rules.DERIVATIVE, op_type, _wrong_rule(op_type))
    broken = _build(models["activation"])
    assert_fault_planted(activation, broken)
    assert gradcheck.check_forward_reverse(broken) <= gradcheck.FR_TOLERANCE  # consistent: invisible there
    assert gradcheck.check_local_derivatives(broken) > gradcheck.LOCAL_TOLERANCE
    assert P.check_finite_differences(broken) > P.FD_TOLERANCE


# ----------------------------------------------------------------------------- check_batch_independence
def test_the_real_batched_program_is_batch_independent(models, tiny_batch2):
    P.check_batch_independence(tiny_batch2, open_model(models["tiny"])[1])


@pytest.mark.parametrize("into,source", [(1, 0), (0, 1)], ids=["0-moves-1", "1-moves-0"])
def test_an_element_moved_by_another_fails_batch_independence(models, tiny_batch2, into, source):
    broken = _faulty(tiny_batch2, leak_between_elements(tiny_batch2.model, into, source))
    assert_fault_planted(tiny_batch2, broken, mask_elements=source)  # only the source element's window
    with pytest.raises(InputError, match="mixes batch elements"):
        P.check_batch_independence(broken, open_model(models["tiny"])[1])


def test_a_model_that_mixes_the_batch_fails_batch_independence(models):
    source, info = open_model(models["mixing"])
    with pytest.raises(InputError, match="mixes batch elements at batch 2"):
        P.check_batch_independence(_build(models["mixing"], batch=2), info)


# ----------------------------------------------------------------------------- check_against
def test_check_against_sees_a_corrupted_batched_program(tiny, tiny_batch2):
    assert P.check_against(tiny_batch2, tiny) <= 1e-5
    broken = _faulty(tiny_batch2, corrupt_kernel(tiny_batch2.model, "negated"))
    assert_fault_planted(tiny_batch2, broken)
    assert P.check_against(broken, tiny) > 1e-1
    half = _faulty(tiny_batch2, scale_half_the_pixels(tiny_batch2.model))
    assert P.check_against(half, tiny) > 1e-2  # ×1.05 on half the pixels: a 5 % difference there


# ----------------------------------------------------------------------------- build_program, end to end
def test_build_program_refuses_a_broken_derivative_rule(models, monkeypatch):
    P.build_program(models["activation"], 1, LR, LR, cache=False)  # the real rules pass
    monkeypatch.setitem(onnx_ad.rules.DERIVATIVE, "LeakyRelu", _wrong_rule("LeakyRelu"))
    with pytest.raises(NumericalError, match=r"activation\.onnx: the gradient program fails its check "
                                             r"\(forward vs reverse mode, node-local differences"):
        P.build_program(models["activation"], 1, LR, LR, cache=False)


def _plant_between_differentiation_and_check(monkeypatch, fault, batches=(1,)):
    """`build_program` differentiates with `gradient_graph`, then checks: corrupt what it returns."""
    original = P.gradient_graph

    def broken(source, info, key):
        graph = original(source, info, key)
        return fault(graph) if key.batch in batches else graph
    monkeypatch.setattr(P, "gradient_graph", broken)


def test_build_program_refuses_a_corrupted_program(models, monkeypatch):
    _plant_between_differentiation_and_check(monkeypatch, lambda g: corrupt_kernel(g, "transposed"))
    with pytest.raises(NumericalError, match=r"tiny\.onnx: the gradient program fails its check"):
        P.build_program(models["tiny"], 1, LR, LR, cache=False)


def test_build_program_refuses_a_batched_program_unlike_the_checked_one(models, monkeypatch):
    """At batch 2 the check runs on a batch-1 program; the batched one must then agree with it."""
    P.build_program(models["tiny"], 2, LR, LR, cache=False)  # the real one passes
    _plant_between_differentiation_and_check(monkeypatch, lambda g: corrupt_kernel(g, "negated"), batches=(2,))
    with pytest.raises(NumericalError, match=r"tiny\.onnx: the gradient program fails its check"):
        P.build_program(models["tiny"], 2, LR, LR, cache=False)


@pytest.mark.parametrize("into,source", [(1, 0), (0, 1)], ids=["0-moves-1", "1-moves-0"])
@pytest.mark.parametrize("check_side", [P.CHECK_SIDE, LR - 2], ids=["checked-as-is", "checked-smaller"])
def test_build_program_refuses_a_batched_program_that_mixes_elements(models, monkeypatch, into, source,
                                                                     check_side):
    """Checked at its own size or (a program larger than CHECK_SIDE) on a smaller batch-1 program, where
    `check_against` cannot run and batch independence alone must see the leak."""
    monkeypatch.setattr(P, "CHECK_SIDE", check_side)
    P.build_program(models["tiny"], 2, LR, LR, cache=False)  # the real one passes either way
    _plant_between_differentiation_and_check(monkeypatch, lambda g: leak_between_elements(g, into, source),
                                             batches=(2,))
    with pytest.raises(InputError, match=r"tiny\.onnx: the model mixes batch elements at batch 2"):
        P.build_program(models["tiny"], 2, LR, LR, cache=False)


def test_build_program_refuses_a_model_that_mixes_the_batch(models):
    P.build_program(models["mixing"], 1, LR, LR, cache=False)  # at batch 1 nothing mixes
    with pytest.raises(InputError, match=r"mixing\.onnx: the model mixes batch elements at batch 2; "
                                         "run it with --batch-size 1"):
        P.build_program(models["mixing"], 2, LR, LR, cache=False)
