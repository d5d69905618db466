"""Static receptive field of an ONNX super-resolution graph: which LR pixels an SR pixel can depend on.

    >>> rf = analyse_file("model.onnx")                  # input fixed to 1×C×32×32, then 64×64
    >>> rf.global_, rf.reach, rf.period                  # (False, (18, 18, 18, 18), (1, 1))
    >>> crop_box(rf, (120, 80, 16), 4, (270, 480))       # LR box whose SR equals the full image's

Definitions (LR = the model's input grid, SR = its output grid, s = SR/LR size ratio per axis):

* ``reach = (top, bottom, left, right)``: for every SR pixel (Y, X) the output can depend only on
  LR pixels in rows ``[⌊Y/s⌋ − top, ⌊Y/s⌋ + bottom]`` and columns ``[⌊X/s⌋ − left, ⌊X/s⌋ + right]``.
  It is the maximum over *all* SR positions, border ones included (a reflect pad folds a border
  pixel's cone inwards; where that makes a border pixel reach further than an interior one, the
  reach says so), and it is tight: no smaller reach holds at every position of the analysed size.
* "depend" is structural: a value depends on every input that an operator reads to compute it
  (every tap of a convolution window whatever its weight, every tap of a linear/cubic resize,
  clamped at the border as the runtime does). Numerical accidents (a zero weight, a ReLU that is
  off) can only make the true dependence smaller, never larger, so the reach is sound.
* ``global_``: some operator mixes a whole image axis (a global pool, a reduction, a softmax or a
  normalisation over pixels, a matrix product contracting pixel positions, an unknown operator, a
  wrap-around pad ...) or the reach keeps growing with the image size; ``reason`` names the first
  such node.
* ``period = (p_rows, p_cols)``: the model is shift-equivariant for LR shifts that are multiples of
  the period (the product of the strides along the way, e.g. 4 for two stride-2 convolutions), so a
  crop must start at a multiple of it to be computed on the same sampling phase. ``None`` when some
  operator is not shift-equivariant at all (``align_corners`` resizing, say).

How it works. The model's input is fixed to 1×C×h×w, shapes are inferred and shape arithmetic is
folded to constants (reflect pads written as Gathers of computed indices become Gathers of constant
indices). Then every tensor on the path from the input carries, for each LR axis (rows, cols), two
integer arrays ``lo``/``hi`` broadcastable to the tensor's shape: element e depends on LR rows
``[lo_rows[e], hi_rows[e]]`` × columns ``[lo_cols[e], hi_cols[e]]`` (a box hull). Operators map these
exactly per position: a convolution takes the min/max over its window (padding taps read nothing),
a Pad/Slice/Gather re-indexes, a Resize reads its taps, a Reshape/Transpose reshapes the arrays
(so window partitions and pixel (un)shuffles are tracked exactly), a contraction takes the hull
over the contracted axis. A contraction over an axis whose size grows with the image (found by
comparing the inferred shapes at two image sizes) makes the result global. The analysis is repeated
at twice the size; the reach must agree (``confirmed``), otherwise the size is doubled again
(up to ``max_size``) and a reach that keeps growing is reported as global.

Crops (``crop_box``). An SR pixel computed on an LR crop equals the full-image one when the crop
contains the pixel's cone ``[⌊Y/s⌋ − top, ⌊Y/s⌋ + bottom]`` clipped to the image, and starts on the
sampling phase (a multiple of the period). Every intermediate value in the cone has its own cone
inside it. Where the unclipped cone lies inside the image, the pixel's computation reads no
padding at all (the reach is at least the interior, unfolded reach), so the crop's artificial
border (zero padding, reflect/edge padding, resize clamping) is never read; where the cone crosses
the image border, the box is clipped there, so the crop shares that border with the image and the
model pads it exactly as on the full image (a reflect pad of width p reflects rows 1..p, which
are in the cone). So reflect/edge pads need no extra margin beyond the reach; what they need is
that the box is the reach-based cone, not the per-pixel hull: with a dilated kernel after a
reflect pad a border pixel's hull can miss row 0 although the pixel reads the reflection, and a
crop starting at row 1 would reflect differently. This holds for shift-equivariant local networks
(CNNs with zero/reflect/edge padding, pixel shuffles, strided and transposed convolutions,
nearest/linear/cubic resizing with integer factors and half-pixel or asymmetric coordinates); the
tests check it against full-image runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

BIG = 1 << 40          # "depends on nothing" is the empty interval [BIG, −BIG]
ROWS, COLS = 0, 1
_LR_NAMES = ("rows", "cols")

__all__ = ["ReceptiveField", "receptive_field", "analyse_file", "prepare", "crop_box",
           "dependence_box"]


# ----------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class ReceptiveField:
    """The static receptive field of an SR model (see the module docstring for the definitions)."""

    global_: bool
    reach: tuple[int, int, int, int] | None          # (top, bottom, left, right) in LR pixels
    reason: str
    scale: tuple[Fraction, Fraction] | None = None   # SR samples per LR pixel (rows, cols)
    period: tuple[int, int] | None = None            # LR alignment of shift equivariance
    period_reason: str = ""                          # why period is None
    size: tuple[int, int] | None = None              # the LR size that row_span/col_span refer to
    row_span: tuple[tuple[int, int], ...] = field(default=(), repr=False)  # per SR row: LR rows
    col_span: tuple[tuple[int, int], ...] = field(default=(), repr=False)  # per SR col: LR cols
    sizes: tuple[tuple[int, int], ...] = ()          # every LR size analysed
    confirmed: bool = False                          # same answer at the two largest sizes
    # reach by SR phase: entry r holds (top, bottom) for SR rows Y ≡ r (mod len), len = period·s
    # (the pattern repeats every period LR pixels), the max over all such rows; same for columns
    row_phase_reach: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    col_phase_reach: tuple[tuple[int, int], ...] = field(default=(), repr=False)

    @property
    def radius(self) -> tuple[int, int] | None:
        """Symmetric reach (rows, cols): max(top, bottom), max(left, right)."""
        if self.reach is None:
            return None
        t, b, l, r = self.reach
        return max(t, b), max(l, r)

    @property
    def local(self) -> bool:
        return not self.global_

    def describe(self) -> str:
        """One line for people (`onnxlam inspect`)."""
        if self.global_:
            return f"global: {self.reason}"
        t, b, l, r = self.reach
        return f"{t + b + 1}×{l + r + 1} LR px (reach top/bottom/left/right {t}, {b}, {l}, {r})"

    def to_json(self) -> dict:
        return {
            "global": self.global_,
            "reach": None if self.reach is None else dict(zip(("top", "bottom", "left", "right"),
                                                              self.reach)),
            "radius": None if self.radius is None else list(self.radius),
            "reason": self.reason,
            "scale": None if self.scale is None else [str(s) for s in self.scale],
            "period": None if self.period is None else list(self.period),
            "period_reason": self.period_reason,
            "sizes": [list(s) for s in self.sizes],
            "confirmed": self.confirmed,
        }


# ------------------------------------------------------------------------------------ preparation
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


def _dims(v: onnx.ValueInfoProto) -> tuple | None:
    t = v.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


def prepare(model: onnx.ModelProto, height: int, width: int, input_name: str | None = None,
            channels: int | None = None) -> onnx.ModelProto:
    """A copy with the input fixed to 1×C×height×width, shapes inferred and shape arithmetic folded."""
    from onnx_ad.expand import fold_constants

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inp = _graph_input(m, input_name)
    old = _dims(inp) or (None, None, None, None)
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


# ---------------------------------------------------------------------------------- tensor states
class _Global:
    """Depends on the whole image. `order` (node index) keeps the earliest culprit."""

    __slots__ = ("reason", "order")

    def __init__(self, reason: str, order: int):
        self.reason, self.order = reason, order


class _Broken:
    """An image-derived axis whose samples are not a shift-equivariant grid."""

    __slots__ = ("why",)

    def __init__(self, why: str):
        self.why = why


@dataclass(frozen=True)
class _Grid:
    lr: int           # ROWS or COLS
    f: Fraction       # samples per LR pixel
    period: int       # LR shift that maps the grid onto itself (f·period is an integer)


class _Local:
    """lo/hi: per LR axis an int64 array of the tensor's rank, each dim 1 or the tensor's dim."""

    __slots__ = ("lo", "hi", "grid")

    def __init__(self, lo, hi, grid):
        self.lo, self.hi, self.grid = list(lo), list(hi), list(grid)

    @property
    def rank(self) -> int:
        return len(self.grid)

    def map(self, fn, grid=None) -> "_Local":
        return _Local([fn(a, True) for a in self.lo], [fn(a, False) for a in self.hi],
                      self.grid if grid is None else grid)


class _Unsupported(Exception):
    pass


def _combine_grid(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, _Broken):
        return a
    if isinstance(b, _Broken):
        return b
    if a.lr != b.lr or a.f != b.f:
        return _Broken("operands sampled on different grids are combined")
    return _Grid(a.lr, a.f, math.lcm(a.period, b.period))


def _stride_grid(g, s: int, up: Fraction = Fraction(1)):
    """Grid after sampling every s-th sample (then up-sampling by `up`)."""
    if not isinstance(g, _Grid):
        return g
    m = g.f * g.period                # samples per period: an integer
    k = s // math.gcd(int(m), s) if m.denominator == 1 else s * m.denominator
    return _Grid(g.lr, g.f / s * up, g.period * k)


def _reduce(arr: np.ndarray, axes, lo: bool) -> np.ndarray:
    axes = tuple(a for a in axes if arr.shape[a] > 1)
    if not axes:
        return arr
    return (arr.min if lo else arr.max)(axis=axes, keepdims=True)


def _take(arr: np.ndarray, axis: int, src: np.ndarray, lo: bool) -> np.ndarray:
    """arr re-indexed along `axis` by `src` (1-D, −1 = reads nothing)."""
    valid = src >= 0
    if arr.shape[axis] == 1:
        if valid.all():
            return arr
        out = np.repeat(arr, len(src), axis=axis)
    else:
        out = np.take(arr, np.where(valid, src, 0), axis=axis)
    if not valid.all():
        idx = [slice(None)] * out.ndim
        idx[axis] = ~valid
        out[tuple(idx)] = BIG if lo else -BIG
    return out


def _window(arr: np.ndarray, axis: int, n_in: int, n_out: int, stride: int, pad: int,
            kernel: int, dil: int, lo: bool) -> np.ndarray:
    """Hull over the convolution window: out j reads in j·stride − pad + k·dil (k < kernel)."""
    j = np.arange(n_out)
    reads = [j * stride - pad + k * dil for k in range(kernel)]
    if arr.shape[axis] == 1:
        return _uniform(arr, axis, np.any([(i >= 0) & (i < n_in) for i in reads], axis=0), lo)
    fill, red = (BIG, np.minimum) if lo else (-BIG, np.maximum)
    a = np.moveaxis(arr, axis, 0)
    out = np.full((n_out,) + a.shape[1:], fill, np.int64)
    for i in reads:
        ok = (i >= 0) & (i < n_in)
        out[ok] = red(out[ok], a[i[ok]])
    return np.moveaxis(out, 0, axis)


def _uniform(arr: np.ndarray, axis: int, reads: np.ndarray, lo: bool) -> np.ndarray:
    """An operator over an axis along which `arr` does not vary: output j keeps the value if it
    reads anything (`reads[j]`), else depends on nothing."""
    if reads.all():
        return arr
    out = np.repeat(arr, len(reads), axis=axis)
    idx = [slice(None)] * out.ndim
    idx[axis] = ~reads
    out[tuple(idx)] = BIG if lo else -BIG
    return out


def _scatter(arr: np.ndarray, axis: int, n_in: int, n_out: int, stride: int, pad: int,
             kernel: int, dil: int, lo: bool) -> np.ndarray:
    """Hull for a transposed convolution: in i writes out i·stride − pad + k·dil."""
    i = np.arange(n_in)
    if arr.shape[axis] == 1:
        written = np.zeros(n_out, bool)
        for k in range(kernel):
            j = i * stride - pad + k * dil
            written[j[(j >= 0) & (j < n_out)]] = True
        return _uniform(arr, axis, written, lo)
    fill, red = (BIG, np.minimum) if lo else (-BIG, np.maximum)
    a = np.moveaxis(arr, axis, 0)
    out = np.full((n_out,) + a.shape[1:], fill, np.int64)
    for k in range(kernel):
        j = i * stride - pad + k * dil
        ok = (j >= 0) & (j < n_out)
        out[j[ok]] = red(out[j[ok]], a[i[ok]])
    return np.moveaxis(out, 0, axis)


def _ranges(arr: np.ndarray, axis: int, n_in: int, first: np.ndarray, last: np.ndarray,
            lo: bool) -> np.ndarray:
    """Hull over in[first[j] .. last[j]] for each out j (empty where first > last)."""
    if arr.shape[axis] == 1:
        return _uniform(arr, axis, first <= last, lo)
    fill, red = (BIG, np.minimum) if lo else (-BIG, np.maximum)
    a = np.moveaxis(arr, axis, 0)
    out = np.full((len(first),) + a.shape[1:], fill, np.int64)
    width = int((last - first).max()) + 1 if len(first) else 0
    for t in range(max(width, 0)):
        i = first + t
        ok = i <= last
        out[ok] = red(out[ok], a[i[ok]])
    return np.moveaxis(out, 0, axis)


def _reshape_arr(arr: np.ndarray, in_shape, out_shape) -> np.ndarray:
    """Reshape a dependence array, materialising only the dim groups along which it varies."""
    ia = [d for d in range(len(in_shape)) if in_shape[d] != 1]
    oa = [d for d in range(len(out_shape)) if out_shape[d] != 1]
    groups = _groups(in_shape, out_shape, ia, oa)
    a = arr.reshape([arr.shape[d] for d in ia])
    full_in, dims = [], []
    for gi, go in groups:
        if all(arr.shape[d] == 1 for d in gi):
            full_in += [1] * len(gi)
            dims += [1] * len(go)
        else:
            full_in += [in_shape[d] for d in gi]
            dims += [out_shape[d] for d in go]
    a = np.broadcast_to(a, full_in).reshape(dims)
    final = [1] * len(out_shape)
    for k, d in enumerate(oa):
        final[d] = dims[k]
    return np.ascontiguousarray(a.reshape(final))


def _groups(in_shape, out_shape, ia, oa):
    groups, i, j = [], 0, 0
    while i < len(ia):
        if j >= len(oa):
            raise _Unsupported("reshape sizes do not match")
        gi, go = [ia[i]], [oa[j]]
        pi, po = in_shape[ia[i]], out_shape[oa[j]]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po:
                if i >= len(ia):
                    raise _Unsupported("reshape sizes do not match")
                gi.append(ia[i])
                pi *= in_shape[ia[i]]
                i += 1
            else:
                if j >= len(oa):
                    raise _Unsupported("reshape sizes do not match")
                go.append(oa[j])
                po *= out_shape[oa[j]]
                j += 1
        groups.append((gi, go))
    if j != len(oa):
        raise _Unsupported("reshape sizes do not match")
    return groups


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


# ----------------------------------------------------------------------------------- op catalogue
_UNARY = {
    "Identity", "Cast", "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Gelu", "Mish", "Exp", "Log", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Erf", "Sin", "Cos", "Tan", "Asin", "Acos",
    "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "IsNaN", "IsInf", "Shrink", "Neg", "Abs",
    "Not", "BitwiseNot", "Swish",
}
_ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Mod", "And", "Or", "Xor",
    "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "BitShift", "BitwiseAnd",
    "BitwiseOr", "BitwiseXor", "PRelu", "Where", "Clip",
}
_SHAPE_ONLY = {"Shape", "Size", "EyeLike", "RandomNormalLike", "RandomUniformLike"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
_POOL = {"MaxPool", "AveragePool", "LpPool"}
_GLOBAL_POOL = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}


# ---------------------------------------------------------------------------------------- analysis
class _Analysis:
    def __init__(self, model: onnx.ModelProto, input_name: str, imgsized: dict | None):
        self.model = model
        self.graph = model.graph
        self.input = input_name
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        self.shapes: dict[str, tuple] = {}
        for v in list(self.graph.input) + list(self.graph.value_info) + list(self.graph.output):
            d = _dims(v)
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
        self.states[input_name] = _Local([rows, cols], [rows.copy(), cols.copy()],
                                         [None, None, _Grid(ROWS, Fraction(1), 1),
                                          _Grid(COLS, Fraction(1), 1)])
        self.lr_size = (h, w)

    # -- helpers
    def state(self, name: str):
        if not name:
            return None
        return self.states.get(name)

    def shape(self, name: str) -> tuple:
        s = self.shapes.get(name)
        if s is None:
            raise _Unsupported(f"the shape of {name!r} is unknown")
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
        raise _Unsupported(f"its {what} ({name!r}) is not a constant")

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
                raise _Unsupported(f"{t!r} is not a constant")
            idx, node = self.producer[t]
            if node.op_type in ("Shape", "Size") and self.state(node.input[0]) is not None:
                shp = np.array(self.shape(node.input[0]), np.int64)
                if node.op_type == "Size":
                    val = np.array(shp.prod(), np.int64)
                else:
                    a = _attrs(node)
                    val = shp[a.get("start", 0):a.get("end", len(shp))]
                nodes[idx] = helper.make_node("Constant", [], [t],
                                              value=numpy_helper.from_array(val, t))
                continue
            if any(self.state(i) is not None for i in node.input):
                raise _Unsupported(f"{t!r} is computed from the image")
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
        if isinstance(st, _Local):
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
            if node.op_type in _SHAPE_ONLY:
                continue                              # outputs: constants (no value dependence)
            live = [s for s in ins if s is not None]
            if any(self.state(n) is not None for n in _outer_names(node)):
                self._set_all(node, _Global(f"{self.label(node, idx)}: a subgraph reads the "
                                            "image (control flow is not analysed)", idx))
                continue
            if not live:
                continue
            if node.domain not in ("", "ai.onnx"):
                self._set_all(node, _Global(f"{self.label(node, idx)}: operator of domain "
                                            f"{node.domain!r} not analysed", idx))
                continue
            glob = [s for s in live if isinstance(s, _Global)]
            if glob:
                self._set_all(node, min(glob, key=lambda g: g.order))
                continue
            handler = getattr(self, "_op_" + node.op_type, None)
            if node.op_type in _UNARY:
                handler = self._unary
            elif node.op_type in _ELEMENTWISE:
                handler = self._elementwise
            elif node.op_type in _REDUCE or node.op_type in ("ArgMax", "ArgMin"):
                handler = self._reduce_op
            elif node.op_type in _POOL:
                handler = self._pool
            elif node.op_type in _GLOBAL_POOL:
                handler = self._global_pool
            if handler is None:
                self._set_all(node, _Global(f"{self.label(node, idx)}: operator not analysed", idx))
                continue
            try:
                result = handler(node, idx, ins)
            except _Unsupported as exc:
                result = _Global(f"{self.label(node, idx)}: {exc}", idx)
            except Exception as exc:  # be conservative rather than wrong
                result = _Global(f"{self.label(node, idx)}: not analysed ({type(exc).__name__}: "
                                 f"{str(exc)[:200]})", idx)
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
        a = _attrs(node)
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in a:
                v = a[key]
                arr = numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.array(v)
                self.consts[node.output[0]] = arr
                self.shapes[node.output[0]] = arr.shape
                return

    # -- elementwise ------------------------------------------------------------------------------
    def _unary(self, node, idx, ins):
        return ins[0]

    def _elementwise(self, node, idx, ins):
        out = node.output[0]
        return self._union(node, idx, self._operands(node.input, ins), self.shape(out), out)

    def _operands(self, names, states):
        return [(self.shape(n), s) for n, s in zip(names, states) if s is not None]

    def _union(self, node, idx, operands, out_shape, out_name):
        rank = len(out_shape)
        lo = [None, None]
        hi = [None, None]
        grid = [None] * rank
        live = [(shp, st) for shp, st in operands if st is not None]
        derived = [False] * rank          # fallback for is_imgsized: an operand's axis is
        for shp, st in live:              # image-derived or its dependence varies along it
            k = rank - len(shp)
            for d in range(k, rank):
                derived[d] |= st.grid[d - k] is not None or any(
                    a.shape[d - k] > 1 for a in st.lo)
        for shp, st in live:
            k = rank - len(shp)
            for d in range(rank):
                own = shp[d - k] if d >= k else 1
                if own == 1 and out_shape[d] > 1 and self.is_imgsized(out_name, d, derived[d]):
                    return _Global(f"{self.label(node, idx)} broadcasts an operand of size 1 "
                                   f"across an image axis (axis {d})", idx)
        for shp, st in live:
            k = rank - len(shp)
            for ax in (ROWS, COLS):
                a = st.lo[ax].reshape((1,) * k + st.lo[ax].shape)
                b = st.hi[ax].reshape((1,) * k + st.hi[ax].shape)
                lo[ax] = a if lo[ax] is None else np.minimum(lo[ax], a)
                hi[ax] = b if hi[ax] is None else np.maximum(hi[ax], b)
            g = [None] * k + list(st.grid)
            grid = [_combine_grid(x, y) for x, y in zip(grid, g)]
        return _Local(lo, hi, grid)

    def _op_Dropout(self, node, idx, ins):
        return [ins[0]] * len(node.output)

    def _op_CastLike(self, node, idx, ins):
        return ins[0]

    def _op_Expand(self, node, idx, ins):
        out = node.output[0]
        return self._union(node, idx, self._operands(node.input[:1], ins[:1]), self.shape(out), out)

    def _op_BatchNormalization(self, node, idx, ins):
        if any(s is not None for s in ins[1:5]):
            raise _Unsupported("its statistics depend on the input")
        if _attrs(node).get("training_mode", 0):
            return self._normalize(node, idx, ins[0], node.input[0],
                                   [0] + list(range(2, len(self.shape(node.input[0])))))
        return [ins[0]] + [None] * (len(node.output) - 1)

    def _op_DequantizeLinear(self, node, idx, ins):
        if any(s is not None for s in ins[1:]):
            raise _Unsupported("its scale depends on the input")
        return ins[0]

    _op_QuantizeLinear = _op_DequantizeLinear

    # -- re-indexing ------------------------------------------------------------------------------
    def _op_Transpose(self, node, idx, ins):
        st = ins[0]
        perm = _attrs(node).get("perm", list(range(st.rank))[::-1])
        return _Local([a.transpose(perm) for a in st.lo], [a.transpose(perm) for a in st.hi],
                      [st.grid[p] for p in perm])

    def _reshape(self, st: _Local, in_shape, out_shape, in_name: str | None = None,
                 out_name: str | None = None) -> _Local:
        """Arrays reshaped exactly. Grids: an image axis split into (outer, inner…) keeps its
        grid on the outer axis, sampled every prod(inner) (a window partition, a space-to-depth);
        an image axis merged with inner non-image axes (the reverse) gets it back, finer. Anything
        else that splits or merges an image axis is not a grid (period unknown)."""
        ia = [d for d in range(len(in_shape)) if in_shape[d] != 1]
        oa = [d for d in range(len(out_shape)) if out_shape[d] != 1]
        grid = [None] * len(out_shape)
        for gi, go in _groups(in_shape, out_shape, ia, oa):
            if len(gi) == 1 and len(go) == 1:
                grid[go[0]] = st.grid[gi[0]]
                continue
            if all(st.grid[d] is None for d in gi):
                continue
            g = st.grid[gi[0]]
            if (len(gi) == 1 and isinstance(g, _Grid)
                    and not any(self.is_imgsized(out_name, d, True) for d in go[1:])):
                grid[go[0]] = _stride_grid(g, math.prod(out_shape[d] for d in go[1:]))
            elif (len(go) == 1 and isinstance(g, _Grid)
                  and all(st.grid[d] is None for d in gi[1:])
                  and not any(self.is_imgsized(in_name, d, True) for d in gi[1:])):
                grid[go[0]] = _Grid(g.lr, g.f * math.prod(in_shape[d] for d in gi[1:]), g.period)
            else:
                for d in go:
                    grid[d] = _Broken("a reshape splits or merges an image axis")
        return _Local([_reshape_arr(a, in_shape, out_shape) for a in st.lo],
                      [_reshape_arr(a, in_shape, out_shape) for a in st.hi], grid)

    def _op_Reshape(self, node, idx, ins):
        if len(ins) > 1 and ins[1] is not None:
            raise _Unsupported("its target shape depends on the input's values")
        return self._reshape(ins[0], self.shape(node.input[0]), self.shape(node.output[0]),
                             node.input[0], node.output[0])

    def _op_Flatten(self, node, idx, ins):
        return self._reshape(ins[0], self.shape(node.input[0]), self.shape(node.output[0]),
                             node.input[0], node.output[0])

    _op_Squeeze = _op_Flatten
    _op_Unsqueeze = _op_Flatten

    def _op_Slice(self, node, idx, ins):
        if any(s is not None for s in ins[1:]):
            raise _Unsupported("its bounds depend on the input's values")
        st = ins[0]
        in_shape = self.shape(node.input[0])
        out_name = node.output[0]
        if self.opset < 10:
            a = _attrs(node)
            starts, ends = a["starts"], a["ends"]
            axes = a.get("axes", list(range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts = self.const(node.input[1], "starts").tolist()
            ends = self.const(node.input[2], "ends").tolist()
            axes = self.const_or_none(node, 3, "axes")
            axes = list(range(len(starts))) if axes is None else axes.tolist()
            steps = self.const_or_none(node, 4, "steps")
            steps = [1] * len(starts) if steps is None else steps.tolist()
        lo, hi, grid = list(st.lo), list(st.hi), list(st.grid)
        for s0, e0, ax, step in zip(starts, ends, axes, steps):
            ax = ax % len(in_shape)
            n = in_shape[ax]
            src = np.arange(n)[slice(int(s0), int(e0), int(step))]
            if len(src) == n and step == 1:
                continue
            lo = [_take(a, ax, src, True) for a in lo]
            hi = [_take(a, ax, src, False) for a in hi]
            if not self.is_imgsized(out_name, ax, st):
                grid[ax] = None
            elif step < 0:
                raise _Unsupported("it reverses an image axis")
            elif step > 1:
                grid[ax] = _stride_grid(grid[ax], int(step))
        return _Local(lo, hi, grid)

    def _op_Gather(self, node, idx, ins):
        if ins[1] is not None:
            raise _Unsupported("its indices depend on the input's values")
        st = ins[0]
        in_shape = self.shape(node.input[0])
        ax = _attrs(node).get("axis", 0) % len(in_shape)
        ind = np.asarray(self.const(node.input[1], "indices")).astype(np.int64)
        n = in_shape[ax]
        ind = np.where(ind < 0, ind + n, ind)
        flat = ind.reshape(-1)

        def take(a, lo):
            if a.shape[ax] == 1:
                b = a
            else:
                b = np.take(a, flat, axis=ax)
            new = a.shape[:ax] + (b.shape[ax] if a.shape[ax] > 1 else 1,) + a.shape[ax + 1:]
            b = b.reshape(new)
            shp = b.shape[:ax] + (ind.shape if a.shape[ax] > 1 else (1,) * ind.ndim) + b.shape[ax + 1:]
            return b.reshape(shp)

        grid = list(st.grid[:ax])
        g = st.grid[ax]
        if ind.ndim == 1:
            out_name = node.output[0]
            if g is None or not self.is_imgsized(out_name, ax, st):
                grid.append(None)
            elif _interior_shift(flat, n):
                grid.append(g)
            else:
                grid.append(_Broken("a Gather re-orders an image axis"))
        else:
            grid += [None if g is None else _Broken("a Gather re-shapes an image axis")] * ind.ndim
        grid += list(st.grid[ax + 1:])
        return _Local([take(a, True) for a in st.lo], [take(a, False) for a in st.hi], grid)

    def _op_Concat(self, node, idx, ins):
        out_shape = self.shape(node.output[0])
        rank = len(out_shape)
        ax = _attrs(node)["axis"] % rank
        live = [s for s in ins if s is not None]
        sizes = [self.shape(name)[ax] for name in node.input]

        def cat(axl: int, lo: bool) -> np.ndarray:
            arrs = [(s.lo if lo else s.hi)[axl] for s in live]
            common = [max(a.shape[d] for a in arrs) if d != ax else 1 for d in range(rank)]
            if all(a.shape[ax] == 1 for a in arrs) and all(s is not None for s in ins) and all(
                    np.array_equal(np.broadcast_to(a, common), np.broadcast_to(arrs[0], common))
                    for a in arrs):
                return np.broadcast_to(arrs[0], common).copy()     # the same everywhere
            pieces = []
            for s, n in zip(ins, sizes):
                tgt = list(common)
                tgt[ax] = n
                if s is None:
                    pieces.append(np.full(tgt, BIG if lo else -BIG, np.int64))
                else:
                    pieces.append(np.broadcast_to((s.lo if lo else s.hi)[axl], tgt))
            return _compress(np.concatenate(pieces, axis=ax), ax)

        grid = [None] * rank
        for s in live:
            grid = [_combine_grid(x, y) for x, y in zip(grid, s.grid)]
        lo = [cat(a, True) for a in (ROWS, COLS)]
        hi = [cat(a, False) for a in (ROWS, COLS)]
        if self.is_imgsized(node.output[0], ax, live[0]):
            for axl in (ROWS, COLS):
                if _wraps(lo[axl], ax, self.lr_size[axl]):
                    raise _Unsupported("it joins the far side of the image to this side along "
                                       f"axis {ax} (a roll or circular padding)")
        else:
            grid[ax] = None
        return _Local(lo, hi, grid)

    def _op_Split(self, node, idx, ins):
        st = ins[0]
        in_shape = self.shape(node.input[0])
        ax = _attrs(node).get("axis", 0) % len(in_shape)
        outs, start = [], 0
        for name in node.output:
            n = self.shape(name)[ax]
            src = np.arange(start, start + n)
            start += n
            lo = [_take(a, ax, src, True) for a in st.lo]
            hi = [_take(a, ax, src, False) for a in st.hi]
            grid = list(st.grid)
            if not self.is_imgsized(name, ax, st):
                grid[ax] = None
            outs.append(_Local(lo, hi, grid))
        return outs

    def _op_Tile(self, node, idx, ins):
        if ins[1] is not None:
            raise _Unsupported("its repeats depend on the input's values")
        st = ins[0]
        in_shape, out_shape = self.shape(node.input[0]), self.shape(node.output[0])
        lo, hi = list(st.lo), list(st.hi)
        for d, (a, b) in enumerate(zip(in_shape, out_shape)):
            if b == a:
                continue
            if st.grid[d] is not None and a > 1:
                raise _Unsupported("it repeats the image along an image axis")
            reps = [1] * len(in_shape)
            reps[d] = b // a
            lo = [np.tile(x, reps) if x.shape[d] > 1 else x for x in lo]
            hi = [np.tile(x, reps) if x.shape[d] > 1 else x for x in hi]
        return _Local(lo, hi, st.grid)

    def _op_Pad(self, node, idx, ins):
        if any(s is not None for s in ins[1:]):
            raise _Unsupported("its pads depend on the input's values")
        st = ins[0]
        a = _attrs(node)
        mode = a.get("mode", "constant")
        in_shape = self.shape(node.input[0])
        rank = len(in_shape)
        if self.opset < 11:
            pads = list(a["pads"])
            axes = list(range(rank))
        else:
            pads = self.const(node.input[1], "pads").tolist()
            axes = self.const_or_none(node, 3, "axes")
            axes = list(range(rank)) if axes is None else [x % rank for x in axes.tolist()]
        k = len(axes)
        lo, hi = list(st.lo), list(st.hi)
        for ax, pb, pe in zip(axes, pads[:k], pads[k:]):
            if pb == 0 and pe == 0:
                continue
            n = in_shape[ax]
            src = np.arange(n + pb + pe) - pb
            inside = (src >= 0) & (src < n)
            if mode == "constant":
                src = np.where(inside, src, -1)
            elif mode == "edge":
                src = np.clip(src, 0, n - 1)
            elif mode == "reflect":
                src = _reflect(src, n)
            elif mode == "wrap":
                if st.grid[ax] is not None:
                    raise _Unsupported("mode=wrap copies the opposite border of the image")
                src = np.mod(src, n)
            else:
                raise _Unsupported(f"unknown mode {mode!r}")
            lo = [_take(x, ax, src, True) for x in lo]
            hi = [_take(x, ax, src, False) for x in hi]
        return _Local(lo, hi, st.grid)

    def _op_DepthToSpace(self, node, idx, ins):
        st = ins[0]
        b = _attrs(node)["blocksize"]
        mode = _attrs(node).get("mode", "DCR")
        n, c, h, w = self.shape(node.input[0])
        c2 = c // (b * b)
        if mode == "DCR":
            mid, perm = (n, b, b, c2, h, w), (0, 3, 4, 1, 5, 2)
        else:
            mid, perm = (n, c2, b, b, h, w), (0, 1, 4, 2, 5, 3)
        out = self._chain(st, (n, c, h, w), mid, perm, (n, c2, h * b, w * b))
        return self._upgrid(out, st, b)

    def _op_SpaceToDepth(self, node, idx, ins):
        st = ins[0]
        b = _attrs(node)["blocksize"]
        n, c, h, w = self.shape(node.input[0])
        out = self._chain(st, (n, c, h, w), (n, c, h // b, b, w // b, b), (0, 3, 5, 1, 2, 4),
                          (n, c * b * b, h // b, w // b))
        out.grid = [st.grid[0], None, _stride_grid(st.grid[2], b), _stride_grid(st.grid[3], b)]
        return out

    def _chain(self, st, in_shape, mid, perm, out_shape) -> _Local:
        x = self._reshape(st, in_shape, mid)
        x = _Local([a.transpose(perm) for a in x.lo], [a.transpose(perm) for a in x.hi],
                   [x.grid[p] for p in perm])
        return self._reshape(x, tuple(mid[p] for p in perm), out_shape)

    @staticmethod
    def _upgrid(out: _Local, st: _Local, b: int) -> _Local:
        def up(g):
            return _Grid(g.lr, g.f * b, g.period) if isinstance(g, _Grid) else g
        out.grid = [st.grid[0], None, up(st.grid[2]), up(st.grid[3])]
        return out

    # -- windows ----------------------------------------------------------------------------------
    def _channel_hull(self, node, idx, st, name, groups: int, out_channels: int) -> _Local:
        if self.is_imgsized(name, 1, st) and self.shape(name)[1] > 1:
            raise _Unsupported("it contracts over an image axis (axis 1)")
        c = self.shape(name)[1]

        def hull(a, lo):
            if a.shape[1] == 1:
                return a
            if groups == 1:
                return _reduce(a, (1,), lo)
            g = a.reshape(a.shape[:1] + (groups, c // groups) + a.shape[2:])
            g = (g.min if lo else g.max)(axis=2)
            return np.repeat(g, out_channels // groups, axis=1)

        grid = list(st.grid)
        grid[1] = None
        return st.map(hull, grid)

    def _spatial_pads(self, a: dict, in_sp, out_sp, kernel, strides, dils) -> list[int]:
        auto = a.get("auto_pad", "NOTSET")
        nd = len(in_sp)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for n, m, k, s, d in zip(in_sp, out_sp, kernel, strides, dils):
                total = max(0, (m - 1) * s + (k - 1) * d + 1 - n)
                pads.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
            return pads
        if auto == "VALID":
            return [0] * nd
        return list(a.get("pads", [0] * (2 * nd)))[:nd]

    def _windowed(self, st: _Local, in_shape, out_shape, kernel, strides, dils, pads) -> _Local:
        lo, hi, grid = list(st.lo), list(st.hi), list(st.grid)
        for i, (k, s, d, p) in enumerate(zip(kernel, strides, dils, pads)):
            ax = 2 + i
            n, m = in_shape[ax], out_shape[ax]
            lo = [_window(x, ax, n, m, s, p, k, d, True) for x in lo]
            hi = [_window(x, ax, n, m, s, p, k, d, False) for x in hi]
            if s > 1:
                grid[ax] = _stride_grid(grid[ax], s)
        return _Local(lo, hi, grid)

    def _op_Conv(self, node, idx, ins):
        if any(s is not None for s in ins[1:]):
            raise _Unsupported("its weights depend on the input")
        a = _attrs(node)
        in_shape, out_shape = self.shape(node.input[0]), self.shape(node.output[0])
        wshape = self.shape(node.input[1])
        nd = len(in_shape) - 2
        kernel = list(a.get("kernel_shape", wshape[2:]))
        strides = list(a.get("strides", [1] * nd))
        dils = list(a.get("dilations", [1] * nd))
        pads = self._spatial_pads(a, in_shape[2:], out_shape[2:], kernel, strides, dils)
        st = self._channel_hull(node, idx, ins[0], node.input[0], a.get("group", 1), out_shape[1])
        return self._windowed(st, in_shape, out_shape, kernel, strides, dils, pads)

    def _pool(self, node, idx, ins):
        a = _attrs(node)
        in_shape, out_shape = self.shape(node.input[0]), self.shape(node.output[0])
        nd = len(in_shape) - 2
        kernel = list(a["kernel_shape"])
        strides = list(a.get("strides", [1] * nd))
        dils = list(a.get("dilations", [1] * nd))
        pads = self._spatial_pads(a, in_shape[2:], out_shape[2:], kernel, strides, dils)
        out = self._windowed(ins[0], in_shape, out_shape, kernel, strides, dils, pads)
        return [out] * len(node.output)

    def _op_ConvTranspose(self, node, idx, ins):
        if any(s is not None for s in ins[1:]):
            raise _Unsupported("its weights depend on the input")
        a = _attrs(node)
        in_shape, out_shape = self.shape(node.input[0]), self.shape(node.output[0])
        wshape = self.shape(node.input[1])
        nd = len(in_shape) - 2
        kernel = list(a.get("kernel_shape", wshape[2:]))
        strides = list(a.get("strides", [1] * nd))
        dils = list(a.get("dilations", [1] * nd))
        outpad = list(a.get("output_padding", [0] * nd))
        auto = a.get("auto_pad", "NOTSET")
        st = self._channel_hull(node, idx, ins[0], node.input[0], a.get("group", 1), out_shape[1])
        lo, hi, grid = list(st.lo), list(st.hi), list(st.grid)
        for i in range(nd):
            ax = 2 + i
            n, m, k, s, d = in_shape[ax], out_shape[ax], kernel[i], strides[i], dils[i]
            if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
                total = s * (n - 1) + outpad[i] + (k - 1) * d + 1 - m
                # the spec and runtimes have disagreed on which side gets the odd pixel: take both
                cands = sorted({total // 2, total - total // 2})
            elif auto == "VALID":
                cands = [0]
            else:
                cands = [list(a.get("pads", [0] * 2 * nd))[i]]
            nlo = [None, None]
            nhi = [None, None]
            for p in cands:
                for axl in (ROWS, COLS):
                    x = _scatter(lo[axl], ax, n, m, s, p, k, d, True)
                    y = _scatter(hi[axl], ax, n, m, s, p, k, d, False)
                    nlo[axl] = x if nlo[axl] is None else np.minimum(nlo[axl], x)
                    nhi[axl] = y if nhi[axl] is None else np.maximum(nhi[axl], y)
            lo, hi = nlo, nhi
            g = grid[ax]
            grid[ax] = _Grid(g.lr, g.f * s, g.period) if isinstance(g, _Grid) else g
        return _Local(lo, hi, grid)

    # -- resizing ---------------------------------------------------------------------------------
    def _op_Resize(self, node, idx, ins):
        if any(s is not None for s in ins[1:]):
            raise _Unsupported("its scales or sizes depend on the input's values")
        a = _attrs(node)
        st = ins[0]
        in_shape, out_shape = self.shape(node.input[0]), self.shape(node.output[0])
        rank = len(in_shape)
        mode = a.get("mode", "nearest")
        if node.op_type == "Upsample" or self.opset < 11:
            ctm = "asymmetric"
            nearest = "floor" if node.op_type == "Upsample" else "floor|round_prefer_floor"
            roi = None
            if "scales" in a:
                scales = list(a["scales"])
            else:
                scales = self.const(node.input[1], "scales").tolist()
            sizes = None
            axes = list(range(rank))
        else:
            ctm = a.get("coordinate_transformation_mode", "half_pixel")
            nearest = a.get("nearest_mode", "round_prefer_floor")
            roi = self.const_or_none(node, 1, "roi")
            scales = self.const_or_none(node, 2, "scales")
            sizes = self.const_or_none(node, 3, "sizes")
            scales = None if scales is None or scales.size == 0 else scales.tolist()
            sizes = None if sizes is None or sizes.size == 0 else sizes.tolist()
            axes = a.get("axes")
            axes = list(range(rank)) if axes is None else [x % rank for x in axes]
        antialias = bool(a.get("antialias", 0))
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        common = None
        if sizes is not None and policy != "stretch":
            ratios = [Fraction(int(sz), in_shape[ax]) for sz, ax in zip(sizes, axes)]
            common = min(ratios) if policy == "not_larger" else max(ratios)
        lo, hi, grid = list(st.lo), list(st.hi), list(st.grid)
        for k, ax in enumerate(axes):
            n, m = in_shape[ax], out_shape[ax]
            if scales is not None:
                scale = Fraction(float(np.float32(scales[k])))
            elif common is not None:
                scale = common
            else:
                scale = Fraction(m, n)
            if n == m and scale == 1 and ctm != "tf_crop_and_resize":
                continue
            r0, r1 = (0.0, 1.0) if roi is None or roi.size == 0 else (
                float(roi.reshape(-1)[k]), float(roi.reshape(-1)[len(axes) + k]))
            first, last = _resize_taps(n, m, scale, mode, ctm, nearest, antialias, r0, r1)
            lo = [_ranges(x, ax, n, first, last, True) for x in lo]
            hi = [_ranges(x, ax, n, first, last, False) for x in hi]
            g = grid[ax]
            if isinstance(g, _Grid):
                if ctm in ("half_pixel", "asymmetric", "pytorch_half_pixel",
                           "tf_half_pixel_for_nn") or (ctm == "half_pixel_symmetric"
                                                       and Fraction(m) == scale * n):
                    r = scale.limit_denominator(1000)
                    grid[ax] = _stride_grid(g, r.denominator, Fraction(r.numerator))
                else:
                    grid[ax] = _Broken(f"Resize coordinate_transformation_mode={ctm} "
                                       f"is not shift-equivariant")
        return _Local(lo, hi, grid)

    _op_Upsample = _op_Resize

    # -- contractions and normalisations ----------------------------------------------------------
    def _normalize(self, node, idx, st: _Local, name: str, axes) -> _Local:
        shp = self.shape(name)
        for ax in axes:
            if shp[ax] > 1 and self.is_imgsized(name, ax, st):
                raise _Unsupported(f"it normalises over an image axis (axis {ax})")
        return st.map(lambda a, lo: _reduce(a, axes, lo))

    def _op_Softmax(self, node, idx, ins):
        rank = len(self.shape(node.input[0]))
        default = -1 if self.opset >= 13 else 1
        ax = _attrs(node).get("axis", default) % rank
        axes = [ax] if self.opset >= 13 else list(range(ax, rank))
        return self._normalize(node, idx, ins[0], node.input[0], axes)

    _op_LogSoftmax = _op_Softmax
    _op_Hardmax = _op_Softmax

    def _op_LpNormalization(self, node, idx, ins):
        rank = len(self.shape(node.input[0]))
        return self._normalize(node, idx, ins[0], node.input[0],
                               [_attrs(node).get("axis", -1) % rank])

    def _op_LRN(self, node, idx, ins):
        return self._normalize(node, idx, ins[0], node.input[0], [1])

    def _op_MeanVarianceNormalization(self, node, idx, ins):
        rank = len(self.shape(node.input[0]))
        axes = [x % rank for x in _attrs(node).get("axes", [0, 2, 3])]
        return self._normalize(node, idx, ins[0], node.input[0], axes)

    def _op_InstanceNormalization(self, node, idx, ins):
        if any(s is not None for s in ins[1:]):
            raise _Unsupported("its scale depends on the input")
        rank = len(self.shape(node.input[0]))
        return self._normalize(node, idx, ins[0], node.input[0], list(range(2, rank)))

    def _op_GroupNormalization(self, node, idx, ins):
        if any(s is not None for s in ins[1:]):
            raise _Unsupported("its scale depends on the input")
        rank = len(self.shape(node.input[0]))
        return self._normalize(node, idx, ins[0], node.input[0], list(range(1, rank)))

    def _op_LayerNormalization(self, node, idx, ins):
        rank = len(self.shape(node.input[0]))
        ax = _attrs(node).get("axis", -1) % rank
        out = self._normalize(node, idx, ins[0], node.input[0], list(range(ax, rank)))
        if any(s is not None for s in ins[1:]):
            shp = self.shape(node.input[0])
            out = self._union(node, idx, [(shp, out)] + self._operands(node.input[1:], ins[1:]),
                              shp, node.output[0])
        return [out] * len(node.output)

    def _op_CumSum(self, node, idx, ins):
        if ins[1] is not None:
            raise _Unsupported("its axis depends on the input's values")
        rank = len(self.shape(node.input[0]))
        ax = int(self.const(node.input[1], "axis").reshape(-1)[0]) % rank
        return self._normalize(node, idx, ins[0], node.input[0], [ax])

    def _op_TopK(self, node, idx, ins):
        rank = len(self.shape(node.input[0]))
        ax = _attrs(node).get("axis", -1) % rank
        out = self._normalize(node, idx, ins[0], node.input[0], [ax])
        return [out] * len(node.output)

    def _reduce_op(self, node, idx, ins):
        st = ins[0]
        name = node.input[0]
        shp = self.shape(name)
        rank = len(shp)
        a = _attrs(node)
        keep = a.get("keepdims", 1)
        if node.op_type in ("ArgMax", "ArgMin"):
            axes = [a.get("axis", 0) % rank]
        else:
            axes = a.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1]:
                if ins[1] is not None:
                    raise _Unsupported("its axes depend on the input's values")
                axes = self.const(node.input[1], "axes").tolist()
            if not axes:
                if a.get("noop_with_empty_axes", 0):
                    return st
                axes = list(range(rank))
            axes = [x % rank for x in axes]
        for ax in axes:
            if shp[ax] > 1 and self.is_imgsized(name, ax, st):
                raise _Unsupported(f"it reduces over an image axis (axis {ax})")
        out = st.map(lambda arr, lo: _reduce(arr, axes, lo))
        if not keep:
            kept = [d for d in range(rank) if d not in axes]
            out = _Local([x.reshape([x.shape[d] for d in kept]) for x in out.lo],
                         [x.reshape([x.shape[d] for d in kept]) for x in out.hi],
                         [out.grid[d] for d in kept])
        else:
            out.grid = [None if d in axes else g for d, g in enumerate(out.grid)]
        return out

    def _global_pool(self, node, idx, ins):
        st = ins[0]
        name = node.input[0]
        shp = self.shape(name)
        axes = list(range(2, len(shp)))
        for ax in axes:
            if shp[ax] > 1 and self.is_imgsized(name, ax, st):
                raise _Unsupported(f"it pools over an image axis (axis {ax})")
        out = st.map(lambda arr, lo: _reduce(arr, axes, lo))
        out.grid = [None if d in axes else g for d, g in enumerate(out.grid)]
        return out

    def _contract(self, node, idx, st, name, axis) -> _Local | None:
        """An operand's arrays with `axis` contracted (hull), or None for a constant operand."""
        if st is None:
            return None
        if self.shape(name)[axis] > 1 and self.is_imgsized(name, axis, st):
            raise _Unsupported(f"it contracts over an image axis (axis {axis} of {name!r})")
        out = st.map(lambda a, lo: _reduce(a, (axis,), lo))
        out.grid = [None if d == axis else g for d, g in enumerate(out.grid)]
        return out

    def _op_MatMul(self, node, idx, ins):
        sa, sb = self.shape(node.input[0]), self.shape(node.input[1])
        a = self._contract(node, idx, ins[0], node.input[0], len(sa) - 1)
        b = self._contract(node, idx, ins[1], node.input[1], max(len(sb) - 2, 0))
        parts = []
        for x, vec in ((a, len(sa) == 1), (b, len(sb) == 1)):
            if x is None:
                continue
            if vec:      # a vector operand: (1,) after contraction → a 1×1 matrix
                x = _Local([v.reshape(1, 1) for v in x.lo], [v.reshape(1, 1) for v in x.hi],
                           [None, None])
            parts.append(x)
        rank = max(p.rank for p in parts) if parts else 0
        parts = [_Local([v.reshape((1,) * (rank - p.rank) + v.shape) for v in p.lo],
                        [v.reshape((1,) * (rank - p.rank) + v.shape) for v in p.hi],
                        [None] * (rank - p.rank) + p.grid) for p in parts]
        out = _merge(parts)
        drop = ([rank - 2] if len(sa) == 1 else []) + ([rank - 1] if len(sb) == 1 else [])
        if drop:
            keep = [d for d in range(rank) if d not in drop]
            out = _Local([v.reshape([v.shape[d] for d in keep]) for v in out.lo],
                         [v.reshape([v.shape[d] for d in keep]) for v in out.hi],
                         [out.grid[d] for d in keep])
        return out

    def _op_Gemm(self, node, idx, ins):
        at = _attrs(node)
        ta, tb = at.get("transA", 0), at.get("transB", 0)
        a = self._contract(node, idx, ins[0], node.input[0], 0 if ta else 1)
        b = self._contract(node, idx, ins[1], node.input[1], 1 if tb else 0)
        parts = []
        for x, t in ((a, ta), (b, tb)):
            if x is not None:
                parts.append(_Local([v.T for v in x.lo], [v.T for v in x.hi], x.grid[::-1])
                             if t else x)
        if len(ins) > 2 and ins[2] is not None:
            out = node.output[0]
            parts.append(self._union(node, idx, self._operands(node.input[2:3], ins[2:3]),
                                     self.shape(out), out))
            if isinstance(parts[-1], _Global):
                return parts[-1]
        return _merge(parts)

    def _op_Einsum(self, node, idx, ins):
        eq = _attrs(node)["equation"].replace(" ", "")
        if "..." in eq or "->" not in eq:
            raise _Unsupported("only explicit equations without ellipsis are analysed")
        lhs, out_letters = eq.split("->")
        parts = []
        for term, name, st in zip(lhs.split(","), node.input, ins):
            if st is None:
                continue
            if len(set(term)) != len(term):
                raise _Unsupported("repeated subscripts are not analysed")
            contracted = [i for i, ch in enumerate(term) if ch not in out_letters]
            x = st
            for ax in contracted:
                x = self._contract(node, idx, x, name, ax)
            kept = [i for i, ch in enumerate(term) if ch in out_letters]
            lo, hi = [], []
            for v in x.lo + x.hi:
                v = v.reshape([v.shape[i] for i in kept])
                order = [term[i] for i in kept]
                full = []
                for ch in out_letters:
                    full.append(order.index(ch) if ch in order else None)
                present = [p for p in full if p is not None]
                v = v.transpose(present) if present else v
                shp, it = [], iter(v.shape)
                for p in full:
                    shp.append(next(it) if p is not None else 1)
                (lo if len(lo) < 2 else hi).append(v.reshape(shp))
            grid = [x.grid[kept[[term[i] for i in kept].index(ch)]]
                    if ch in [term[i] for i in kept] else None for ch in out_letters]
            parts.append(_Local(lo, hi, grid))
        return _merge(parts)


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


def _merge(parts: list) -> _Local | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    lo = [parts[0].lo[a] for a in (ROWS, COLS)]
    hi = [parts[0].hi[a] for a in (ROWS, COLS)]
    grid = list(parts[0].grid)
    for p in parts[1:]:
        lo = [np.minimum(x, y) for x, y in zip(lo, p.lo)]
        hi = [np.maximum(x, y) for x, y in zip(hi, p.hi)]
        grid = [_combine_grid(x, y) for x, y in zip(grid, p.grid)]
    return _Local(lo, hi, grid)


def _compress(arr: np.ndarray, ax: int) -> np.ndarray:
    if arr.shape[ax] > 1 and (arr == arr.take([0], axis=ax)).all():
        return np.ascontiguousarray(arr.take([0], axis=ax))
    return arr


def _wraps(lo: np.ndarray, ax: int, n: int) -> bool:
    """Whether neighbours along `ax` depend on pixels more than half the image apart (a wrap)."""
    if lo.shape[ax] < 2:
        return False
    a, b = lo.take(range(lo.shape[ax] - 1), axis=ax), lo.take(range(1, lo.shape[ax]), axis=ax)
    real = (a < BIG) & (b < BIG)
    return bool((np.abs(a - b)[real] > n // 2).any()) if n > 2 else False


def _reflect(src: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros_like(src)
    period = 2 * (n - 1)
    s = np.mod(src, period)
    return np.where(s >= n, period - s, s)


def _interior_shift(idx: np.ndarray, n: int) -> bool:
    """Whether the index map is a plain shift over at least half the input (pads at its ends)."""
    if len(idx) < 2:
        return False
    steps = np.diff(idx) == 1
    best = run = 0
    for s in steps:
        run = run + 1 if s else 0
        best = max(best, run)
    return best + 1 >= max(2, (n + 1) // 2)


_EPS = 1e-5


def _resize_taps(n: int, m: int, scale: Fraction, mode: str, ctm: str, nearest: str,
                 antialias: bool, r0: float, r1: float):
    """First and last input index read by each of the m outputs (inclusive, clipped to [0, n))."""
    first = np.empty(m, np.int64)
    last = np.empty(m, np.int64)
    for j in range(m):
        if ctm == "half_pixel":
            x = (Fraction(2 * j + 1, 2)) / scale - Fraction(1, 2)
        elif ctm == "pytorch_half_pixel":
            x = (Fraction(2 * j + 1, 2)) / scale - Fraction(1, 2) if m > 1 else Fraction(0)
        elif ctm == "half_pixel_symmetric":
            adj = Fraction(m) / (scale * n)
            offset = Fraction(n, 2) * (1 - adj)
            x = offset + Fraction(2 * j + 1, 2) / scale - Fraction(1, 2)
        elif ctm == "align_corners":
            x = Fraction(0) if m == 1 else Fraction(j * (n - 1), m - 1)
        elif ctm == "asymmetric":
            x = Fraction(j) / scale
        elif ctm == "tf_half_pixel_for_nn":
            x = Fraction(2 * j + 1, 2) / scale
        elif ctm == "tf_crop_and_resize":
            a, b = Fraction(r0), Fraction(r1)
            x = (a * (n - 1) + j * (b - a) * (n - 1) / (m - 1)) if m > 1 else (a + b) / 2 * (n - 1)
        else:
            raise _Unsupported(f"unknown coordinate_transformation_mode {ctm!r}")
        if mode == "nearest":
            cands = set()
            for rule in nearest.split("|"):
                cands |= _nearest(x, rule)
            lo_i, hi_i = min(cands), max(cands)
        else:
            support = 1 if mode == "linear" else 2
            if antialias and scale < 1:
                s = support / scale
                lo_i, hi_i = math.floor(x - s), math.ceil(x + s)
            else:
                fl = math.floor(x)
                lo_i, hi_i = (fl, fl + 1) if mode == "linear" else (fl - 1, fl + 2)
        first[j] = min(max(lo_i, 0), n - 1)
        last[j] = min(max(hi_i, 0), n - 1)
    return first, last


def _nearest(x: Fraction, rule: str) -> set:
    """Indices a nearest rule may pick at x; both neighbours when x is within float error of a tie."""
    def pick(v: Fraction) -> int:
        if rule == "floor":
            return math.floor(v)
        if rule == "ceil":
            return math.ceil(v)
        if rule == "round_prefer_ceil":
            return math.floor(v + Fraction(1, 2))
        if rule == "round_prefer_floor":
            return math.ceil(v - Fraction(1, 2))
        raise _Unsupported(f"unknown nearest_mode {rule!r}")
    return {pick(x), pick(x - Fraction(_EPS)), pick(x + Fraction(_EPS))} if _near_boundary(
        x, rule) else {pick(x)}


def _near_boundary(x: Fraction, rule: str) -> bool:
    frac = x - math.floor(x)
    boundary = Fraction(0) if rule in ("floor", "ceil") else Fraction(1, 2)
    d = abs(frac - boundary)
    d = min(d, 1 - d) if boundary == 0 else d
    return 0 < d < _EPS


# ------------------------------------------------------------------------------------- public API
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


def _shapes(model: onnx.ModelProto) -> dict:
    out = {}
    for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        d = _dims(v)
        if d is not None and all(x is not None for x in d):
            out[v.name] = d
    return out


def _imgsized(a: onnx.ModelProto, b: onnx.ModelProto) -> dict:
    sa, sb = _shapes(a), _shapes(b)
    return {k: tuple(x != y for x, y in zip(sa[k], sb[k]))
            for k in sa.keys() & sb.keys() if len(sa[k]) == len(sb[k])}


def _spans(lo: np.ndarray, hi: np.ndarray, axis: int, n: int):
    other = tuple(d for d in range(lo.ndim) if d != axis)
    lo = np.broadcast_to(_reduce(lo, other, True).reshape(-1), (n,))
    hi = np.broadcast_to(_reduce(hi, other, False).reshape(-1), (n,))
    return lo, hi


def _analyse_once(model: onnx.ModelProto, input_name: str, output_name: str,
                  imgsized: dict | None) -> _SizeResult:
    an = _Analysis(model, input_name, imgsized)
    an.run()
    h, w = an.lr_size
    st = an.states.get(output_name)
    if isinstance(st, _Global):
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
            raise ValueError(f"output {output_name!r} does not depend on the input's {_LR_NAMES[axl]}")
        reach += [int((anchor - lo)[ok].max()), int((hi - anchor)[ok].max())]
        spans.append(tuple((int(a), int(b)) if a <= b else (0, -1) for a, b in zip(lo, hi)))
        raw.append((anchor, lo, hi, ok))
    period, why, phases = [], "", []
    for axl, axis, n_sr, n_lr in ((ROWS, 2, H, h), (COLS, 3, W, w)):
        g = st.grid[axis]
        if isinstance(g, _Grid) and g.lr == axl and g.f == Fraction(n_sr, n_lr):
            period.append(g.period)
            phases.append(_phase_reach(*raw[axl], int(g.f * g.period),
                                       (reach[2 * axl], reach[2 * axl + 1])))
        else:
            why = why or (g.why if isinstance(g, _Broken) else
                          f"the output's {_LR_NAMES[axl]} are not a shift-equivariant grid of the input's")
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
    dims = _dims(inp) or ()
    if size is None:
        size = (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else (32, 32)
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


# -------------------------------------------------------------------------------------- cropping
def _sr_needed(window_sr, scale, sr_h: int, sr_w: int):
    x, y, size = window_sr
    if size < 1 or x < 0 or y < 0:
        raise ValueError(f"bad window {window_sr}")
    # the detector at window pixel (Y, X) reads SR (Y, X), (Y+1, X), (Y, X+1)
    return y, min(y + size, sr_h - 1), x, min(x + size, sr_w - 1)


def dependence_box(rf: ReceptiveField, window_sr: Sequence[int], scale: int,
                   lr_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom/right exclusive: the LR pixels the window's detector can
    depend on (its needed SR pixels' cones), clipped to the image. The whole image when global."""
    h, w = lr_size
    if rf.global_ or rf.reach is None:
        return 0, 0, h, w
    s = Fraction(scale)
    y0, y1, x0, x1 = _sr_needed(window_sr, scale, int(h * s), int(w * s))
    t, b, l, r = rf.reach
    top, bottom = _cone(y0, y1, s, t, b, rf.row_phase_reach)
    left, right = _cone(x0, x1, s, l, r, rf.col_phase_reach)
    return max(0, top), max(0, left), min(h, bottom + 1), min(w, right + 1)


def _cone(a: int, b: int, s: Fraction, before: int, after: int, phases) -> tuple[int, int]:
    """LR interval [first, last] that SR pixels a..b depend on (per-phase reach when known)."""
    if not phases:
        return math.floor(a / s) - before, math.floor(b / s) + after
    q = len(phases)
    first = min(math.floor(y / s) - phases[y % q][0] for y in range(a, min(b, a + q - 1) + 1))
    last = max(math.floor(y / s) + phases[y % q][1] for y in range(max(a, b - q + 1), b + 1))
    return first, last


def crop_box(rf: ReceptiveField, window_sr: Sequence[int], scale: int, lr_size: tuple[int, int],
             margin: int = 0) -> tuple[int, int, int, int]:
    """The LR crop (top, left, bottom, right), bottom/right exclusive, on which the model computes
    the window's SR pixels and their detector neighbours (SR rows y..y+size, cols x..x+size)
    exactly as on the whole image.

    It is the dependence box (the needed pixels' cones, see `dependence_box`) widened by `margin`,
    its top/left moved down to a multiple of the period and its extent rounded up to a multiple
    of the period, clipped to the image. The whole image when the model is global or not
    shift-equivariant.
    """
    h, w = lr_size
    if rf.scale is not None and Fraction(scale) not in (rf.scale[0], rf.scale[1]):
        raise ValueError(f"scale {scale} differs from the model's {rf.scale}")
    if rf.global_ or rf.reach is None or rf.period is None:
        return 0, 0, h, w
    top, left, bottom, right = dependence_box(rf, window_sr, scale, lr_size)
    pr, pc = rf.period
    top, left = max(0, top - margin), max(0, left - margin)
    bottom, right = min(h, bottom + margin), min(w, right + margin)
    top, left = top - top % pr, left - left % pc
    bottom = min(h, top + -(-(bottom - top) // pr) * pr)
    right = min(w, left + -(-(right - left) // pc) * pc)
    return top, left, bottom, right
