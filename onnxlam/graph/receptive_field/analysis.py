"""The driver: a graph index (shapes, constants, producers) walked node by node through `RULES`, and
the size heuristics that run it at two sizes to tell image-sized axes from fixed ones."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxlam.graph.model import dims, opset_version, static_shapes

from onnxlam.graph.receptive_field.field import ReceptiveField
from onnxlam.graph.receptive_field.intervals import (
    COLS, LR_AXIS_NAMES, ROWS, BrokenGrid, GlobalDependence, Grid, LocalDependence, Unsupported,
    node_attrs, reduce_axes,
)
from onnxlam.graph.receptive_field.rules import RULES, SHAPE_ONLY


def _graph_input(model: onnx.ModelProto, input_name: str | None) -> onnx.ValueInfoProto:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if input_name is None:
        if not inputs:
            raise ValueError("the model has no graph input")
        return inputs[0]
    for i in inputs:
        if i.name == input_name:
            return i
    raise ValueError(f"no graph input named {input_name!r}; inputs: {[i.name for i in inputs]}")


def prepare(model: onnx.ModelProto, height: int, width: int, input_name: str | None = None,
            channels: int | None = None) -> onnx.ModelProto:
    """A copy with the input fixed to 1×C×height×width, shapes inferred and shape arithmetic folded."""
    from onnx_ad.expand import fold_constants

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inp = _graph_input(m, input_name)
    old = dims(inp, symbolic=False) or (None, None, None, None)
    if len(old) != 4:
        raise ValueError(f"input {inp.name!r} has rank {len(old)}; expected N×C×H×W")
    c = channels or old[1] or 3
    shape = inp.type.tensor_type.shape
    del shape.dim[:]
    for d in (1, c, height, width):
        shape.dim.add().dim_value = d
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    try:
        m = fold_constants(m)
    except Exception:  # analysis still works; only constants it needs may then be missing
        pass
    return onnx.shape_inference.infer_shapes(m, data_prop=True)


class _Analysis:
    def __init__(self, model: onnx.ModelProto, input_name: str, imgsized: dict | None):
        self.model = model
        self.graph = model.graph
        self.input = input_name
        self.opset = opset_version(model)
        self.shapes: dict[str, tuple] = {}
        for v in list(self.graph.input) + list(self.graph.value_info) + list(self.graph.output):
            d = dims(v, symbolic=False)
            if d is not None and all(x is not None for x in d):
                self.shapes[v.name] = d
        self.consts: dict[str, np.ndarray] = {}
        for init in self.graph.initializer:
            arr = numpy_helper.to_array(init)
            self.consts[init.name] = arr
            self.shapes[init.name] = arr.shape
        self.imgsized = imgsized
        self.producer = {o: (i, n) for i, n in enumerate(self.graph.node) for o in n.output if o}
        self.states: dict[str, object] = {}
        d = self.shapes[input_name]
        h, w = d[2], d[3]
        rows = np.arange(h, dtype=np.int64).reshape(1, 1, h, 1)
        cols = np.arange(w, dtype=np.int64).reshape(1, 1, 1, w)
        self.states[input_name] = LocalDependence([rows, cols], [rows.copy(), cols.copy()],
                                                  [None, None, Grid(ROWS, Fraction(1), 1),
                                          Grid(COLS, Fraction(1), 1)])
        self.lr_size = (h, w)

    # -- helpers
    def state(self, name: str):
        if not name:
            return None
        return self.states.get(name)

    def shape(self, name: str) -> tuple:
        s = self.shapes.get(name)
        if s is None:
            raise Unsupported(f"the shape of {name!r} is unknown")
        return tuple(int(x) for x in s)

    def const(self, name: str, what: str) -> np.ndarray:
        if name in self.consts:
            return self.consts[name]
        if self.state(name) is None and name in self.producer:
            try:
                self.consts[name] = self._evaluate(name)
                return self.consts[name]
            except Exception:
                pass
        raise Unsupported(f"its {what} ({name!r}) is not a constant")

    def _evaluate(self, name: str) -> np.ndarray:
        """A constant the folder left (too large, say), by onnx's reference evaluator; the Shape
        and Size of image tensors are taken from the inferred shapes."""
        from onnx.reference import ReferenceEvaluator

        nodes, inits, seen, stack = {}, {}, set(), [name]
        while stack:
            t = stack.pop()
            if t in seen or not t:
                continue
            seen.add(t)
            if t in self.consts:
                inits[t] = numpy_helper.from_array(np.asarray(self.consts[t]), t)
                continue
            if t not in self.producer:
                raise Unsupported(f"{t!r} is not a constant")
            idx, node = self.producer[t]
            if node.op_type in ("Shape", "Size") and self.state(node.input[0]) is not None:
                shp = np.array(self.shape(node.input[0]), np.int64)
                if node.op_type == "Size":
                    val = np.array(shp.prod(), np.int64)
                else:
                    a = node_attrs(node)
                    val = shp[a.get("start", 0):a.get("end", len(shp))]
                nodes[idx] = helper.make_node("Constant", [], [t],
                                              value=numpy_helper.from_array(val, t))
                continue
            if any(self.state(i) is not None for i in node.input):
                raise Unsupported(f"{t!r} is computed from the image")
            nodes[idx] = node
            stack.extend(node.input)
        graph = helper.make_graph([nodes[i] for i in sorted(nodes)], "const", [],
                                  [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED,
                                                                 None)],
                                  list(inits.values()))
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        return np.asarray(ReferenceEvaluator(model).run(None, {})[0])

    def const_or_none(self, node, i: int, what: str):
        if len(node.input) <= i or not node.input[i]:
            return None
        return self.const(node.input[i], what)

    def is_imgsized(self, name: str, axis: int, st=None) -> bool:
        """Whether axis `axis` of tensor `name` grows with the image (shapes at two sizes differ).

        Without a second size, any axis of `st` (a state of the same rank) that is image-derived
        or along which the dependence varies counts, or `st` itself when it is a bool."""
        if self.imgsized is not None and name in self.imgsized:
            flags = self.imgsized[name]
            return flags[axis] if axis < len(flags) else False
        if isinstance(st, bool):
            return st
        if isinstance(st, LocalDependence):
            return st.grid[axis] is not None or any(a.shape[axis] > 1 for a in st.lo)
        return True

    @staticmethod
    def label(node, idx: int) -> str:
        return f"{node.op_type} (node '{node.name or '#' + str(idx)}')"

    # -- driver
    def run(self):
        for idx, node in enumerate(self.graph.node):
            if node.op_type == "Constant":
                self._constant(node)
                continue
            ins = [self.state(n) for n in node.input]
            if node.op_type in SHAPE_ONLY:
                continue                              # outputs: constants (no value dependence)
            live = [s for s in ins if s is not None]
            if any(self.state(n) is not None for n in _outer_names(node)):
                self._set_all(node, GlobalDependence(
                    f"{self.label(node, idx)}: a subgraph reads the image (control flow is not "
                    "analysed)", idx))
                continue
            if not live:
                continue
            if node.domain not in ("", "ai.onnx"):
                self._set_all(node, GlobalDependence(
                    f"{self.label(node, idx)}: operator of domain {node.domain!r} not analysed",
                    idx))
                continue
            glob = [s for s in live if isinstance(s, GlobalDependence)]
            if glob:
                self._set_all(node, min(glob, key=lambda g: g.order))
                continue
            handler = RULES.get(node.op_type)
            if handler is None:
                self._set_all(node, GlobalDependence(
                    f"{self.label(node, idx)}: operator not analysed", idx))
                continue
            try:
                result = handler(self, node, idx, ins)
            except Unsupported as exc:
                result = GlobalDependence(f"{self.label(node, idx)}: {exc}", idx)
            except Exception as exc:  # be conservative rather than wrong
                result = GlobalDependence(f"{self.label(node, idx)}: not analysed "
                                          f"({type(exc).__name__}: {str(exc)[:200]})", idx)
            if isinstance(result, list):
                for name, st in zip(node.output, result):
                    if name:
                        self.states[name] = st
            else:
                self._set_all(node, result)

    def _set_all(self, node, st):
        for name in node.output:
            if name:
                self.states[name] = st

    def _constant(self, node):
        a = node_attrs(node)
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in a:
                v = a[key]
                arr = numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.array(v)
                self.consts[node.output[0]] = arr
                self.shapes[node.output[0]] = arr.shape
                return






































def _outer_names(node: onnx.NodeProto) -> set:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    names: set = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else (
            list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else [])
        for g in graphs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            for n in g.node:
                names |= {x for x in n.input if x and x not in local}
                names |= _outer_names(n)
                local |= set(n.output)
    return names


@dataclass
class _SizeResult:
    size: tuple[int, int]
    global_: bool
    reason: str
    reach: tuple[int, int, int, int] | None = None
    scale: tuple[Fraction, Fraction] | None = None
    period: tuple[int, int] | None = None
    period_reason: str = ""
    row_span: tuple = ()
    col_span: tuple = ()
    row_phase: tuple = ()
    col_phase: tuple = ()


def _imgsized(a: onnx.ModelProto, b: onnx.ModelProto) -> dict:
    sa, sb = static_shapes(a, complete=True), static_shapes(b, complete=True)
    return {k: tuple(x != y for x, y in zip(sa[k], sb[k]))
            for k in sa.keys() & sb.keys() if len(sa[k]) == len(sb[k])}


def _spans(lo: np.ndarray, hi: np.ndarray, axis: int, n: int):
    other = tuple(d for d in range(lo.ndim) if d != axis)
    lo = np.broadcast_to(reduce_axes(lo, other, True).reshape(-1), (n,))
    hi = np.broadcast_to(reduce_axes(hi, other, False).reshape(-1), (n,))
    return lo, hi


def _analyse_once(model: onnx.ModelProto, input_name: str, output_name: str,
                  imgsized: dict | None) -> _SizeResult:
    an = _Analysis(model, input_name, imgsized)
    an.run()
    h, w = an.lr_size
    st = an.states.get(output_name)
    if isinstance(st, GlobalDependence):
        return _SizeResult((h, w), True, st.reason)
    if st is None:
        raise ValueError(f"output {output_name!r} does not depend on input {input_name!r}")
    shp = an.shape(output_name)
    if len(shp) != 4:
        raise ValueError(f"output {output_name!r} has rank {len(shp)}; expected N×C×H×W")
    H, W = shp[2], shp[3]
    reach, spans, raw = [], [], []
    for axl, axis, n_sr, n_lr in ((ROWS, 2, H, h), (COLS, 3, W, w)):
        lo, hi = _spans(st.lo[axl], st.hi[axl], axis, n_sr)
        anchor = (np.arange(n_sr) * n_lr) // n_sr          # ⌊Y / s⌋ with s = n_sr / n_lr
        ok = lo <= hi
        if not ok.any():
            raise ValueError(f"output {output_name!r} does not depend on the input's "
                             f"{LR_AXIS_NAMES[axl]}")
        reach += [int((anchor - lo)[ok].max()), int((hi - anchor)[ok].max())]
        spans.append(tuple((int(a), int(b)) if a <= b else (0, -1) for a, b in zip(lo, hi)))
        raw.append((anchor, lo, hi, ok))
    period, why, phases = [], "", []
    for axl, axis, n_sr, n_lr in ((ROWS, 2, H, h), (COLS, 3, W, w)):
        g = st.grid[axis]
        if isinstance(g, Grid) and g.lr == axl and g.f == Fraction(n_sr, n_lr):
            period.append(g.period)
            phases.append(_phase_reach(*raw[axl], int(g.f * g.period),
                                       (reach[2 * axl], reach[2 * axl + 1])))
        else:
            why = why or (g.why if isinstance(g, BrokenGrid) else
                          f"the output's {LR_AXIS_NAMES[axl]} are not a shift-equivariant grid "
                          "of the input's")
            period.append(None)
            phases.append(())
    return _SizeResult((h, w), False, "", tuple(reach), (Fraction(H, h), Fraction(W, w)),
                       None if None in period else tuple(period), why, spans[0], spans[1],
                       phases[0], phases[1])


def _phase_reach(anchor, lo, hi, ok, q: int, overall) -> tuple:
    """(before, after) reach per SR phase r = Y mod q.

    Phases are counted from the top/left border, so the upper half of the positions (the top
    border and the interior) gives each phase's reach. The bottom/right border falls on another
    phase at another image size: a position there that reaches further than its phase does (a
    reflect pad folding its cone inwards) raises every phase, so that the table holds at any size.
    """
    n = len(anchor)
    pos = np.arange(n)
    before, after = anchor - lo, hi - anchor
    table = []
    for r in range(q):
        sel = ok & (pos % q == r) & (pos < max(n // 2, q))
        table.append([int(before[sel].max()), int(after[sel].max())] if sel.any() else
                     list(overall))
    extra = [None, None]
    for y in np.nonzero(ok & (pos >= max(n // 2, q)))[0]:
        for k, v in enumerate((before[y], after[y])):
            if v > table[y % q][k]:
                extra[k] = max(extra[k] if extra[k] is not None else v, int(v))
    for k in (0, 1):
        if extra[k] is not None:
            for row in table:
                row[k] = max(row[k], extra[k])
    return tuple((b, a) for b, a in table)


def receptive_field(model: onnx.ModelProto, input_name: str | None = None, *,
                    size: tuple[int, int] | None = None, output_name: str | None = None,
                    max_size: int = 1024) -> ReceptiveField:
    """The static receptive field of `model`'s output with respect to its image input.

    The input is fixed to 1×C×h×w with (h, w) = `size`, else the model's static size, else 32×32,
    and analysed again at twice that size (then 4×, … up to `max_size`) until the answer repeats.
    A model that accepts only its own static size is analysed there alone (`confirmed` False).
    """
    inp = _graph_input(model, input_name)
    shape = dims(inp, symbolic=False) or ()
    if size is None:
        size = (shape[2], shape[3]) if len(shape) == 4 and shape[2] and shape[3] else (32, 32)
    out_name = output_name or model.graph.output[0].name
    h, w = size
    current = prepare(model, h, w, inp.name)
    results: list[_SizeResult] = []
    confirmed = False
    while True:
        cur = results[-1].size if results else (h, w)
        nxt = None
        if not results or max(cur) < max_size:
            try:
                nxt = prepare(model, 2 * cur[0], 2 * cur[1], inp.name)
            except Exception:   # the model accepts its own size only
                nxt = None
        imgsized = _imgsized(current, nxt) if nxt is not None else None
        if not results:
            results.append(_analyse_once(current, inp.name, out_name, imgsized))
        if nxt is None:
            break
        results.append(_analyse_once(nxt, inp.name, out_name, imgsized))
        current = nxt
        a, b = results[-2], results[-1]
        if a.global_ or b.global_:
            confirmed = a.global_ and b.global_
            break
        if a.reach == b.reach and a.period == b.period:
            confirmed = True
            break
    first, last = results[0], results[-1]
    sizes = tuple(r.size for r in results)
    glob = next((r for r in results if r.global_), None)
    if glob is not None:
        return ReceptiveField(True, None, glob.reason, size=first.size, sizes=sizes,
                              confirmed=confirmed)
    if len(results) > 1 and not confirmed:
        reaches = ", ".join(f"{r.reach} at {r.size[0]}×{r.size[1]}" for r in results)
        return ReceptiveField(True, None, "the reach keeps growing with the image size "
                              f"(top, bottom, left, right = {reaches}): wrap-around, flips or "
                              "a spatial broadcast make border pixels depend on the far side",
                              size=first.size, sizes=sizes, confirmed=False)
    t, b, l, r = last.reach
    reason = (f"local: reach top {t}, bottom {b}, left {l}, right {r} LR px"
              + (f", period {last.period[0]}×{last.period[1]}" if last.period else
                 f"; not shift-equivariant ({last.period_reason})"))
    return ReceptiveField(False, last.reach, reason, last.scale, last.period, last.period_reason,
                          first.size, first.row_span, first.col_span, sizes, confirmed,
                          last.row_phase if last.period else (), last.col_phase if last.period else ())


def analyse_file(path, height: int = 32, width: int = 32, input_name: str | None = None,
                 **kw) -> ReceptiveField:
    """`receptive_field` of the model at `path`, its input fixed to 1×C×height×width first."""
    model = onnx.load(str(path))
    return receptive_field(model, input_name, size=(height, width), **kw)
