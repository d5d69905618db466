"""Checking a gradient program before it is used: is ∇_x D what the model's derivative really is?

Two independent checks, combined into one number compared with `FD_TOLERANCE`:

1. forward vs reverse (`check_forward_reverse`): onnx-ad's forward mode (J·v) of the program's own
   primal part, evaluated in the SAME session as the program's reverse-mode gradient, must satisfy
   <∇D, v> = J·v for four directions. No truncation error: float32 agreement is ≤ 1e-6 relative on
   every model tried, planted adjoint bugs (a negated, transposed or unflipped kernel, ×1.05 on half
   the pixels) give ≥ 2e-2. Tolerance FR_TOLERANCE = 1e-4.
2. node-local central differences (`check_local_derivatives`): onnx-ad's unary elementwise rules
   (Relu, LeakyRelu, Sigmoid, Sqrt, …) use one derivative table for both modes, so a wrong one would
   be consistent between J and Jᵀ. Every image-dependent node, cut loose and fed the values it sees on
   the probe image, is compared with a central difference of that node alone; inputs move
   multiplicatively, so no kink is crossed; the inputs of ops smooth everywhere (Sigmoid, Exp, …) by
   at least a floor, so a tiny input's step is resolved in float32 (`floored_tangents`); and the
   inputs of max-type ops (MaxPool, ReduceMax, Max, …) along a tangent that is a function of the
   value, so no step reorders them and no tie is crossed (`order_preserving_tangents`). Tolerance
   1e-2 (noise ≤ 1e-4). The rules do not depend on the image's size: a new program gets this part
   from its model's 16×16 objective graph, checked once and cached (`program.RuleCheck`), where
   that graph's `rule_signatures` cover the program's.

Why not a central difference of the whole network along a random direction: on ReLU networks with
~10⁶ units (Real-CUGAN) a ±1e-3 step crosses ~10³ kinks and the quotient does not converge, even in
float64, until h ≈ 1e-6, which float32 cannot resolve: the correct program of realcugan-se-x4
(checked against float64 autograd of an independent interpreter to 4e-5) failed that check by 3–9%.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ad
from onnx import TensorProto, helper

from onnxlam.graph.detector import MASK, OBJECTIVE
from onnxlam.core.errors import NumericalError
from onnxlam.graph.model import INPUT, constant_values
from onnxlam.engine.runtime import create_session

SEED = "adj_" + OBJECTIVE          # the program's seed input (onnx-ad's naming)
GRADIENT = "adj_" + INPUT          # the program's gradient output
FD_TOLERANCE = 1e-2                # the number `check_gradient` returns is compared with it
FR_TOLERANCE = 1e-4                # forward vs reverse, relative to Σ|∇D|·|v|
LOCAL_TOLERANCE = 1e-2             # node-local differences, relative L2 per node
FWD_SEED, JVP = "fwd_" + INPUT, "fwd_" + OBJECTIVE


def _probe(program, seed):
    """The check's image (uniform in [0.2, 0.8]) and a 16×16 window at the centre, in every window slot."""
    k = program.key
    rng = np.random.default_rng(seed)
    Hm, Wm = program.mask_size  # (H−1)×(W−1) for the LAM detector, H×W for the intensity sum
    x = rng.uniform(0.2, 0.8, (k.batch, k.channels, k.height, k.width)).astype(np.float32)
    mask = np.zeros((k.batch, k.windows, Hm, Wm), np.float32)
    size = min(16, Hm, Wm)
    top, left = (Hm - size) // 2, (Wm - size) // 2
    mask[:, :, top:top + size, left:left + size] = 1.0
    return rng, x, mask


# ----------------------------------------------------------------------------- 1. forward–reverse
def with_tangents(program_model: onnx.ModelProto) -> onnx.ModelProto:
    """The program plus onnx-ad's forward-mode tangent nodes of its primal part: inputs lam_input,
    lam_mask, adj_lam_objective and fwd_lam_input ([B,C,h,w,n]); outputs lam_objective, adj_lam_input
    and fwd_lam_objective ([B,K,n]). `onnx_ad.forward(program_model)` gives the same but differentiates
    the adjoint nodes too (forward-over-adjoint: 2.6× the nodes, 5 s on realesrgan-x4plus); here only
    the primal is differentiated and its tangent nodes, renamed apart, are appended to the program."""
    primal = primal_graph(program_model)
    forward = onnx_ad.forward(primal, inputs=[INPUT], outputs=[OBJECTIVE], layout="onnx")
    ours = {o for n in primal.graph.node for o in n.output} | {v.name for v in primal.graph.input} \
        | {t.name for t in primal.graph.initializer}
    rename = {}
    new_nodes = []
    for node in forward.graph.node:
        if node.output and all(o in ours for o in node.output if o):
            continue                                   # a primal node: the program computes it already
        c = onnx.NodeProto()
        c.CopyFrom(node)
        for j, o in enumerate(c.output):
            if o and o not in ours:
                c.output[j] = rename.setdefault(o, "lam_jvp/" + o)
        new_nodes.append(c)
    initializers = []
    for t in forward.graph.initializer:
        if t.name not in ours:
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = rename.setdefault(t.name, "lam_jvp/" + t.name)
            initializers.append(c)
    rename[FWD_SEED] = FWD_SEED
    for c in new_nodes:
        for j, i in enumerate(c.input):
            if i in rename:
                c.input[j] = rename[i]
    m = onnx.ModelProto()
    m.CopyFrom(program_model)
    m.graph.node.extend(new_nodes)
    m.graph.initializer.extend(initializers)
    m.graph.input.extend(v for v in forward.graph.input if v.name == FWD_SEED)
    jvp = next(v for v in forward.graph.output if v.name == JVP)
    out = m.graph.output.add()
    out.CopyFrom(jvp)
    producer = rename.get(JVP, JVP)
    if producer != JVP:
        m.graph.node.append(helper.make_node("Identity", [producer], [JVP]))
    return m


def probe_inputs(program, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask the check runs the program on (so a caller that runs the program on them
    anyway, the memory probe, can hand its result to `check_forward_reverse`)."""
    _, x, mask = _probe(program, seed)
    return x, mask


def check_forward_reverse(program, device="auto", seed=0, computed=None) -> float:
    """max over batch elements, windows and 4 directions of |<∇D_bk, v> − (J v)_bk| / <|∇D_bk|, |v|>.

    J·V and ∇D come out of one session from the same primal values (`with_tangents`): two separate
    sessions are not enough, since onnxruntime fuses two graphs differently, the primal values then
    differ by ~1e-6, and on a deep ReLU net (realesrgan-x4plus) a few units take the other branch,
    which moves J·v by 2e-4 although both derivatives are right. `computed`: the program's own
    (objective, gradient) on `probe_inputs(program, seed)`, where the caller has them already.
    """
    k = program.key
    rng, x, mask = _probe(program, seed)
    combined = with_tangents(program.model)
    session = create_session(combined, device)
    seeds = np.ascontiguousarray(np.broadcast_to(np.eye(k.windows, dtype=np.float32), (k.batch, k.windows, k.windows)))
    names = [o.name for o in combined.graph.output]

    objective, gradient = computed or program.objective_and_gradient(x, mask, device)  # [B,K], [B,K,C,h,w]
    if not (np.all(np.isfinite(objective)) and np.all(np.isfinite(gradient))):
        raise NumericalError("the gradient program gives NaN or inf on a random image in [0.2, 0.8]")
    # one direction leaning on the gradient's signs, two Gaussian (one on a random half of the
    # pixels only), one non-negative: an error on some pixels cannot average away in all four
    lean = np.sign(gradient.sum(axis=1)) * rng.uniform(0.5, 1.0, x.shape) + 0.5 * rng.standard_normal(x.shape)
    half = rng.standard_normal(x.shape) * (rng.random((x.shape[0], 1) + x.shape[2:]) < 0.5)
    V = np.stack([v / np.abs(v).max() for v in (lean, rng.standard_normal(x.shape), half,
                                                 rng.uniform(0, 1, x.shape))], axis=-1).astype(np.float32)
    out = dict(zip(names, session.run({INPUT: x, MASK: mask, SEED: seeds, FWD_SEED: V})))
    g = np.moveaxis(out[GRADIENT], -1, 1).astype(np.float64)   # the same program, the same primal values as J·V
    jvp = out[JVP].astype(np.float64)                                                      # [B,K,4]
    vjp = np.einsum("bkchw,bchwn->bkn", g, V.astype(np.float64))
    scale = np.einsum("bkchw,bchwn->bkn", np.abs(g), np.abs(V).astype(np.float64))
    return float(np.max(np.abs(jvp - vjp) / np.maximum(scale, 1e-30)))


# ----------------------------------------------------------------------------- 2. node-local differences
def _primal_part(graph: onnx.GraphProto) -> tuple[list, set[str]]:
    """The nodes lam_objective depends on, in graph order, and every value name they read or write."""
    needed, keep = {OBJECTIVE}, []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    return keep[::-1], needed


def primal_graph(program_model: onnx.ModelProto) -> onnx.ModelProto:
    """lam_input, lam_mask → lam_objective: the primal part of a gradient program."""
    g = program_model.graph
    keep, needed = _primal_part(g)
    m = onnx.ModelProto()
    m.CopyFrom(program_model)
    del m.graph.node[:], m.graph.input[:], m.graph.output[:], m.graph.initializer[:], m.graph.value_info[:]
    m.graph.node.extend(keep)
    m.graph.input.extend(v for v in g.input if v.name in (INPUT, MASK))
    m.graph.output.extend(v for v in g.output if v.name == OBJECTIVE)
    m.graph.initializer.extend(t for t in g.initializer if t.name in needed)
    return m


def _all_values(primal: onnx.ModelProto, feeds: dict, device: str) -> dict:
    """Every value of `primal` at `feeds` (typeless graph outputs: onnxruntime fills the types in)."""
    m = onnx.ModelProto()
    m.CopyFrom(primal)
    del m.graph.output[:]
    names = [o for n in primal.graph.node if n.op_type != "Constant" for o in n.output if o]
    m.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in names)
    values = dict(zip(names, create_session(m, device).run(feeds)))
    values.update(feeds)
    return values


def _signature(node: onnx.NodeProto, shapes: dict) -> tuple:
    """Nodes with equal signatures exercise a derivative rule the same way: op, attributes, and per
    input whether it is constant (with its shape: a weight) or image-dependent (with its rank)."""
    attrs = tuple(sorted((a.name, repr(helper.get_attribute_value(a))) for a in node.attribute
                         if a.type not in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.GRAPH)))
    return node.domain, node.op_type, attrs, tuple(shapes.get(i) for i in node.input)


def exploded_graph(primal: onnx.ModelProto, values: dict, one_per_signature: bool = True):
    """The image-dependent nodes of `primal` cut loose: each reads its non-constant inputs from graph
    inputs (fed `values`, the ones it sees at the probe) and writes its float outputs to graph outputs.
    Returns the model, its feeds, the float inputs to perturb and each output's node (for messages)."""
    g = primal.graph
    constant = {t.name for t in g.initializer}
    shapes = {t.name: ("constant", tuple(t.dims)) for t in g.initializer}
    shapes.update((n, ("image", np.ndim(v))) for n, v in values.items())
    chosen, kept = {}, []
    for k, n in enumerate(g.node):
        if all((not i) or i in constant for i in n.input):
            kept.append(n)                                    # Constant, or computed from constants only
            constant.update(n.output)
            for a in n.attribute:
                if n.op_type == "Constant" and a.type == onnx.AttributeProto.TENSOR:
                    shapes[n.output[0]] = ("constant", tuple(a.t.dims))
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            continue                                          # If/Loop/Scan: left to forward–reverse
        ins = [i for i in n.input if i and i not in constant]
        outs = [o for o in n.output if o and o in values and values[o].dtype == np.float32]
        if not outs or any(i not in values for i in ins):
            continue
        key = _signature(n, shapes) if one_per_signature else k
        size = sum(values[i].size for i in ins)
        if key not in chosen or size < chosen[key][0]:
            chosen[key] = (size, k, n)
    nodes, inputs, outputs, feeds, perturb, node_of = list(kept), [], [], {}, [], {}
    for _, k, n in sorted(chosen.values(), key=lambda c: c[1]):
        c = onnx.NodeProto()
        c.CopyFrom(n)
        for j, i in enumerate(n.input):
            if i and i not in constant:
                c.input[j] = name = f"lam_local/{k}/in{j}"
                feeds[name] = values[i]
                inputs.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(values[i].dtype), values[i].shape))
                if values[i].dtype == np.float32:
                    perturb.append(name)
        for j, o in enumerate(n.output):
            if o:
                c.output[j] = f"lam_local/{k}/out{j}"
                if o in values and values[o].dtype == np.float32:
                    outputs.append(helper.make_tensor_value_info(c.output[j], TensorProto.FLOAT, values[o].shape))
                    node_of[c.output[j]] = f"{n.op_type} '{n.name or o}'"
        nodes.append(c)
    m = onnx.ModelProto()
    m.CopyFrom(primal)
    del m.graph.node[:], m.graph.input[:], m.graph.output[:], m.graph.value_info[:]
    m.graph.node.extend(nodes)
    m.graph.input.extend(inputs)
    m.graph.output.extend(outputs)
    return m, feeds, perturb, node_of


SELECTING = {"MaxPool", "GlobalMaxPool", "ReduceMax", "ReduceMin", "Max", "Min", "TopK", "MaxRoiPool"}
SELECTION_CYCLES = 1.5  # periods of the selection tangent over the spread of the values


def order_preserving_tangents(exploded: onnx.ModelProto, feeds: dict, perturb: list, rng) -> dict:
    """Tangents for the float inputs of selection ops (`SELECTING`), by their subgradient definition.

    Such an op's output is the input element it selects (a window's maximum, say), and its
    derivative along t is t at that element. A random tangent per element reorders values that lie
    within a step of each other, and a max over 64 elements (SAFMN's `adaptive_max_pool2d`, kernel
    8) always has such near-ties: the central difference then measures a jump, not the derivative,
    and the correct rule failed (1.4e-2 on SAFMN). Here the tangent is a function of the value:

        t(z) = A·sin(ω (z − lo)/S + φ),   S = hi − lo (the values' spread), ω = 2π·1.5, A = 2.5 S/ω,

    one φ per node. z + s·t(z) has slope ≥ 1 − 0.2·A·ω/S = 0.5 > 0 for every step |s| ≤ 0.2, so no
    step reorders two elements (no tie or near-tie is crossed) and exact ties stay exact (where
    either choice is a subgradient). The check keeps its power: t goes through 1.5 periods over the
    spread, so a rule that selects another element, averages a window or scales the tangent is off
    by a fraction of A as with a random tangent, unless the two elements are within a small part of
    the spread (where the two derivatives nearly agree anyway). Max/Min with a constant operand
    (a clamp: a kink at a fixed value, like ReLU's) keep the multiplicative tangents, which do not
    cross zero.
    """
    out = {}
    for node in exploded.graph.node:
        if node.op_type not in SELECTING or node.domain not in ("", "ai.onnx"):
            continue
        names = [i for i in node.input if i in perturb]
        if not names or (node.op_type in ("Max", "Min") and len(names) < len([i for i in node.input if i])):
            continue
        lo = min(float(feeds[i].min()) for i in names)
        spread = max(float(feeds[i].max()) for i in names) - lo
        if not spread > 0:
            continue
        omega = 2 * np.pi * SELECTION_CYCLES
        amplitude, phase = 2.5 * spread / omega, rng.uniform(0, 2 * np.pi)
        for i in names:
            z = feeds[i].astype(np.float64)
            out[i] = (amplitude * np.sin(omega * (z - lo) / spread + phase)).astype(np.float32)
    return out


SMOOTH = {"Sigmoid", "Tanh", "Exp", "Erf", "Sin", "Cos", "Softplus", "Softsign", "Gelu", "Mish", "Softmax",
          "LogSoftmax"}
SMOOTH_FLOOR = 0.1  # the least |tangent| per element of a `SMOOTH` op's input, in that op's own units


def floored_tangents(exploded: onnx.ModelProto, feeds: dict, perturb: list, r: dict) -> dict:
    """Tangents for the inputs of ops that are smooth everywhere (`SMOOTH`: Sigmoid, Exp, Erf, …):
    t = r·sign(z)·max(|z|, SMOOTH_FLOOR) instead of the multiplicative r·z.

    The multiplicative tangent keeps a value from crossing zero (ReLU's kink); these ops have no
    kink, but their output is O(1) where the input is tiny, so a step of ~|z| cannot be resolved:
    FDAT's channel gate feeds a Sigmoid values of ~1e-5, whose central difference (a change of
    ~1e-8 in ~0.5) was float32 rounding, and the correct rule failed (5.5e-2). Their curvature is on
    a scale of ~1, so a step of SMOOTH_FLOOR·|s| ≤ 0.02 is resolved and still small.
    """
    out = {}
    for node in exploded.graph.node:
        if node.op_type not in SMOOTH or node.domain not in ("", "ai.onnx"):
            continue
        for i in node.input:
            if i in perturb:
                z = feeds[i]
                out[i] = (r[i] * np.where(z < 0, -1.0, 1.0) * np.maximum(np.abs(z), SMOOTH_FLOOR)).astype(np.float32)
    return out


PIECEWISE_CONSTANT = {"Floor": 0.0, "Ceil": 0.0, "Round": 0.5}  # op: where its jumps are, mod 1
CLAMPING = {"Clip", "Max", "Min"}  # kinks at their constant operands (Max/Min: a clamp, like ReLU's at 0)


def in_cell_tangents(exploded: onnx.ModelProto, feeds: dict, perturb: list, r: dict) -> dict:
    """Tangents for the inputs of ops with jumps or kinks at fixed values: t = r·d/2, d the distance
    to the nearest one, so no step |s| ≤ 0.2 reaches it.

    `PIECEWISE_CONSTANT` ops (Floor, Ceil, Round) jump at every integer (Round: every half-integer):
    a step across one measures the jump, not the derivative (0); onnx-ad's own lowering of a
    bilinear GridSample floors coordinates, and its correct program failed the check (1.0). Clip,
    and Max/Min with a constant operand, have kinks at their constant bounds, not at 0 where the
    multiplicative tangent keeps away from: GridSample's clamped coordinates failed (8.6e-2).
    An element on a jump or kink (or too near one for float32 to resolve the step) stays put
    (t = 0: either one-sided derivative is a subgradient);
    a wrong rule still shows, as a non-zero Floor derivative or a Clip passing the tangent outside.
    """
    constants, out = None, {}
    for node in exploded.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in PIECEWISE_CONSTANT:
            for i in node.input:
                if i in perturb:
                    z = feeds[i].astype(np.float64) - PIECEWISE_CONSTANT[node.op_type]
                    frac = z - np.floor(z)
                    out[i] = (r[i] * 0.5 * np.minimum(frac, 1.0 - frac)).astype(np.float32)
        elif node.op_type in CLAMPING:
            constants = constant_values(exploded) if constants is None else constants
            points = [float(np.asarray(constants[c]).reshape(-1)[0]) for c in node.input
                      if c in constants and np.asarray(constants[c]).size == 1]
            if not points or (node.op_type != "Clip" and len(points) + 1 != len([c for c in node.input if c])):
                continue
            for i in node.input:
                if i in perturb:
                    z = feeds[i].astype(np.float64)
                    t = r[i] * 0.5 * np.min([np.abs(z - p) for p in points], axis=0)
                    # a step float32 cannot resolve (within ~1e-6·|z| of a kink): that element stays too
                    out[i] = np.where(1e-2 * t < 1e-4 * np.abs(z), 0.0, t).astype(np.float32)
    return out


def check_local_derivatives(program, device="auto", seed=0, steps=(1e-2, 1e-1), one_per_signature=True,
                            report=False):
    """Largest relative L2 error, over the image-dependent nodes, of onnx-ad's forward rule against a
    central difference of that node alone (Richardson over h and 2h; per node the smaller error of the
    two step sizes counts: rounding rules the small one, curvature the large one, a wrong derivative
    both), at the values the node sees on the probe image.

    Each float input z moves as z·(1 + s·r), r uniform in [0.5, 1], |s| ≤ 2h = 0.2: no value crosses
    zero (no ReLU/Abs kink is crossed) and the tangent has the sign of the value (no cancellation in
    the detector's sums); inputs of ops smooth everywhere (Sigmoid, Exp, …) move at least
    SMOOTH_FLOOR·r per element (`floored_tangents`), which float32 resolves where they are tiny.
    The inputs of selection ops (MaxPool, ReduceMax, Max, …: `SELECTING`) move
    along a tangent that is a smooth function of the value instead (`order_preserving_tangents`),
    so no step reorders them and no tie or near-tie is crossed. An element whose two differences
    disagree (a kink of Clip, say) is left out unless a tenth of the node is.
    With `one_per_signature`, one node (the smallest) per (op, attributes, input layout) is
    checked: the rule is what can be wrong, not the node.
    """
    primal = primal_graph(program.model)
    rng, x, mask = _probe(program, seed)
    values = _all_values(primal, {INPUT: x, MASK: mask}, device)
    exploded, feeds, perturb, node_of = exploded_graph(primal, values, one_per_signature)
    names = [o.name for o in exploded.graph.output]
    if not names:
        return (0.0, []) if report else 0.0
    r = {k: rng.uniform(0.5, 1.0, feeds[k].shape).astype(np.float32) for k in perturb}
    tangent = {k: feeds[k] * r[k] for k in perturb}
    tangent.update(floored_tangents(exploded, feeds, perturb, r))
    tangent.update(in_cell_tangents(exploded, feeds, perturb, r))
    tangent.update(order_preserving_tangents(exploded, feeds, perturb, rng))
    forward = onnx_ad.forward(exploded, inputs=perturb, outputs=names, layout="onnx")
    jvp = create_session(forward, device).run({**feeds, **{"fwd_" + k: t[..., None] for k, t in tangent.items()}})
    jvp = [j[..., 0].astype(np.float64) for j in jvp[len(names):]]
    session = create_session(exploded, device)

    def at(s):
        moved = {k: feeds[k] + np.float32(s) * tangent[k] for k in perturb}
        return [o.astype(np.float64) for o in session.run({**feeds, **moved})]
    errors = np.full((len(steps), len(names)), np.inf)
    for a, h in enumerate(steps):
        p1, m1, p2, m2 = at(h), at(-h), at(2 * h), at(-2 * h)
        for i in range(len(names)):
            d1, d2 = (p1[i] - m1[i]) / (2 * h), (p2[i] - m2[i]) / (4 * h)
            d = (4 * d1 - d2) / 3                                            # O(h⁴)
            ok = np.abs(d1 - d2) <= 0.1 * np.abs(d1) + 1e-3 * np.abs(d1).max() + 1e-30
            if ok.mean() < 0.9:
                ok[:] = True
            j = jvp[i]
            errors[a, i] = np.linalg.norm((d - j)[ok]) / max(np.linalg.norm(j[ok]), np.linalg.norm(d[ok]), 1e-30)
    best = errors.min(axis=0)
    worst = float(best.max())
    if report:
        return worst, sorted(zip(best.tolist(), [node_of[n] for n in names]), reverse=True)[:3]
    return worst


# ----------------------------------------------------------------------------- the drop-in
def check_gradient(program, device="auto", seed=0) -> float:
    """Gradient check of a built program, as one number against FD_TOLERANCE (1e-2).

    The program's reverse derivative against onnx-ad's forward derivative (a separate walk over
    separate rules, no truncation error: agreement to float32 rounding), scaled so that FR_TOLERANCE
    maps onto FD_TOLERANCE; and every local derivative rule against node-local central differences
    (LOCAL_TOLERANCE = FD_TOLERANCE). Whole-network difference quotients are not used: on ReLU
    networks with ~10⁶ units (Real-CUGAN) a ±1e-3 step crosses ~10³ kinks and they do not converge,
    even in float64, until h ≈ 1e-6.
    """
    return combine(check_forward_reverse(program, device, seed), check_local_derivatives(program, device, seed))


def combine(forward_reverse: float, local: float) -> float:
    """The two checks' errors as the one number `check_gradient` returns (compared with FD_TOLERANCE)."""
    return max(local * (FD_TOLERANCE / LOCAL_TOLERANCE), forward_reverse * (FD_TOLERANCE / FR_TOLERANCE))


def rule_signatures(program_model: onnx.ModelProto) -> frozenset[str]:
    """What the node-local check exercises, read off the graph without running it: per image-dependent
    primal node, its op, attributes and which inputs are constant (with their shapes).

    The derivative rules do not depend on the image's size, so a model's rules checked once at a
    small size (`program.RuleCheck`) hold at every size whose signatures they cover; a graph that
    changes with the size (a branch taken at one size only) shows new signatures and is checked anew.
    """
    g = program_model.graph
    nodes, needed = _primal_part(g)  # as `primal_graph` finds it, without copying the weights
    constant = {t.name for t in g.initializer if t.name in needed}
    dims = {t.name: tuple(t.dims) for t in g.initializer if t.name in needed}
    found = set()
    for n in nodes:
        if all((not i) or i in constant for i in n.input):
            constant.update(n.output)
            for a in n.attribute:
                if n.op_type == "Constant" and a.type == onnx.AttributeProto.TENSOR:
                    dims[n.output[0]] = tuple(a.t.dims)
            continue
        attrs = tuple(sorted((a.name, repr(helper.get_attribute_value(a))) for a in n.attribute
                             if a.type not in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.GRAPH,
                                               onnx.AttributeProto.GRAPHS)))
        layout = tuple(("constant", dims.get(i)) if i in constant else ("image",) for i in n.input if i)
        found.add(repr((n.domain, n.op_type, attrs, layout)))
    return frozenset(found)
