"""Model inspection: what an ONNX file is, and the normalised form every later stage works on.

The normalised model takes `lam_input` (N×C×h×w, float32, RGB, values in [0, 1]) and returns
`lam_sr` (N×C×H×W in the same convention), whatever range, channel order and float type the file
itself uses: conversions are graph nodes, so gradients flow through them exactly.
"""
from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_ad.expand import fold_constants

from onnxlam.core.errors import InputError
from onnxlam.graph.validity import invalid_model_message, undefined_inputs, weight_mismatches, with_input_dims

INPUT = "lam_input"
OUTPUT = "lam_sr"
MIN_OPSET = 13  # Slice/ReduceSum with tensor operands; older models are converted up
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and dims (int, or str for a symbolic one) of a graph input or output."""

    name: str
    elem_type: int
    dims: tuple

    @property
    def type_name(self) -> str:
        return TensorProto.DataType.Name(self.elem_type).lower()

    def shape_text(self) -> str:
        return "×".join(str(d) if d is not None else "?" for d in self.dims)


@dataclass(frozen=True)
class ModelInfo:
    """What `inspect_model` learns from a model without running it."""

    path: str
    sha256: str
    input: TensorSpec
    output: TensorSpec
    opset: int
    channels: int
    value_range: float
    channel_order: str
    parameters: int
    op_histogram: dict = field(default_factory=dict)

    @property
    def fixed_batch(self) -> int | None:
        """The batch the file fixes (e.g. 1 for a dynamo export), or None when it is dynamic."""
        d = self.input.dims[0]
        return d if isinstance(d, int) else None

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """The LR (h, w) the file fixes, or None when height or width is dynamic."""
        h, w = self.input.dims[2:]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    @property
    def dynamic_dims(self) -> list[str]:
        names = ("batch", "channels", "height", "width")
        return [n for n, d in zip(names, self.input.dims) if not isinstance(d, int)]


def file_sha256(path: str | Path) -> str:
    """sha256 of the model file, folding in its external-data files (so `sha256sum` agrees when none).

    The data files are found from the file's own protobuf: `onnx.load` with external data clears
    the references, and weights that differ only in a data file must not share cached programs.
    """
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes())
    try:
        bare = onnx.load(str(path), load_external_data=False)
    except Exception:
        return digest.hexdigest()
    locations = sorted({entry.value for t in _all_initializers(bare.graph)
                        for entry in t.external_data if entry.key == "location"})
    for loc in locations:
        digest.update(loc.encode())
        digest.update((path.parent / loc).read_bytes())
    return digest.hexdigest()


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file with its external data; a missing or corrupt file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf raises DecodeError, onnx raises several kinds
        raise InputError(f"cannot read {path} as an ONNX model ({type(exc).__name__}: {exc})") from None


def _all_initializers(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_initializers(attr.g)


def dims(value: onnx.ValueInfoProto, symbolic: bool = True) -> tuple | None:
    """A value's dimensions: ints, and for unknown ones the dim_param name (None without one, or
    always None when not `symbolic`); None when the value has no shape at all."""
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else ((d.dim_param or None) if symbolic else None)
                 for d in t.shape.dim)


def fresh_name(base: str, taken: set, start: int = 1) -> str:
    """`base`, or `base_<k>` for the first k ≥ `start` not in `taken`; the name is added to `taken`."""
    name, k = base, start - 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def static_shapes(model: onnx.ModelProto, complete: bool = False) -> dict[str, tuple]:
    """Inferred shapes of the graph's inputs, values and outputs (unknown dims None); with `complete`,
    only the fully known ones."""
    shapes = {}
    for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        d = dims(v, symbolic=False)
        if d is not None and (not complete or all(x is not None for x in d)):
            shapes[v.name] = d
    return shapes


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The initializers and Constant nodes' values of the main graph, by name."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def opset_version(model: onnx.ModelProto) -> int:
    """The model's default-domain opset (a model without one is taken as the newest onnx knows)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                onnx.defs.onnx_opset_version())


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    return TensorSpec(value.name, value.type.tensor_type.elem_type, dims(value))


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def inspect_model(model: onnx.ModelProto, path: str | Path = "<memory>", sha256: str = "") -> ModelInfo:
    """Check that `model` is a single-image SR network and describe it.

    One float image input N×C×h×w (C = 1 or 3) and one float image output of the same channels.
    Initializers listed as inputs (old exporters did that) are not inputs.
    """
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in weights]
    where = f"{path}"
    if len(inputs) > 1:
        raise InputError(several_inputs_message(where, inputs))
    if len(inputs) != 1:
        raise InputError(f"{where}: not a single-image SR model: it has no inputs; "
                         "onnxlam needs exactly one image input")
    if len(graph.output) != 1:
        names = ", ".join(v.name for v in graph.output)
        raise InputError(f"{where}: not a single-image SR model: it has {len(graph.output)} outputs "
                         f"({names}); export the SR image alone")
    inp, out = _spec(inputs[0]), _spec(graph.output[0])
    for role, spec in (("input", inp), ("output", out)):
        if spec.elem_type not in FLOAT_TYPES:
            raise InputError(f"{where}: not a single-image SR model: its {role} '{spec.name}' is "
                             f"{spec.type_name}, not a float image")
        if len(spec.dims) != 4:
            video = (" (a video SR model, N×T×C×h×w: give its frames, `onnxlam lam MODEL FRAME0 FRAME1 … "
                     "--frame K`)") if role == "input" and len(spec.dims) == 5 else ""
            raise InputError(f"{where}: not a single-image SR model: its {role} '{spec.name}' has "
                             f"shape {spec.shape_text() or 'unknown'}; onnxlam needs N×C×H×W{video}")
    channels = inp.dims[1] if isinstance(inp.dims[1], int) else 3  # a symbolic channel axis: RGB
    if channels not in (1, 3):
        raise InputError(f"{where}: the input '{inp.name}' has {channels} channels; onnxlam analyses "
                         "1-channel (luma) or 3-channel (RGB) models")
    if out.dims[1] not in (channels, None) and not isinstance(out.dims[1], str):
        raise InputError(f"{where}: the output has {out.dims[1]} channels but the input {channels}")
    meta = _metadata(model)
    value_range = parse_range(meta.get("onnxlam.value_range", "1"), f"{where} metadata onnxlam.value_range")
    order = meta.get("onnxlam.channel_order", "rgb").lower()
    if order not in ("rgb", "bgr"):
        raise InputError(f"{where}: metadata onnxlam.channel_order is {order!r}; expected rgb or bgr")
    histogram = collections.Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                                    for n in _all_nodes(graph))
    # A converter records the network's own weights: the file also holds the index and shape constants
    # a conversion adds (pads as Gathers, say), which are not parameters; `models` shows the same count.
    recorded = meta.get("onnxlam.params", "")
    params = (int(recorded) if recorded.isdigit()
              else sum(int(np.prod(t.dims)) for t in _all_initializers(graph)))
    return ModelInfo(path=str(path), sha256=sha256, input=inp, output=out, opset=opset_version(model),
                     channels=channels, value_range=value_range, channel_order=order,
                     parameters=params, op_histogram=dict(histogram.most_common()))


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def nonstandard_ops(model: onnx.ModelProto) -> list[str]:
    """Nodes outside the default ONNX domain, as "domain.OpType (node 'name')": onnx-ad has no rules for them."""
    return [f"{n.domain}.{n.op_type} (node '{n.name or n.output[0]}')" for n in _all_nodes(model.graph)
            if n.domain not in ("", "ai.onnx")]


def require_standard_ops(model: onnx.ModelProto, path: str) -> None:
    custom = nonstandard_ops(model)
    if custom:
        raise InputError(f"{path}: no gradient rule for {', '.join(custom[:5])}{' and more' if len(custom) > 5 else ''}"
                         "; onnxlam differentiates standard ONNX ops only (re-export without custom ops)")


def parse_range(text: str, what: str) -> float:
    """The value range stored as text (metadata `onnxlam.value_range`): 1 or 255, else an
    `InputError` naming `what`."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what} is {text!r}; expected 1 or 255") from None
    if value not in (1.0, 255.0):
        raise InputError(f"{what} is {text!r}; expected 1 or 255")
    return value


def open_model(path: str | Path, inputs: Mapping[str, float] | None = None) -> tuple[onnx.ModelProto, ModelInfo]:
    """Load and inspect a model file; `inputs` holds the model's extra inputs fixed (see `bind_inputs`)."""
    model = load_model(path)
    faults = undefined_inputs(model)
    if faults:
        raise InputError(invalid_model_message(str(path), faults))
    sha = file_sha256(path)
    if inputs:
        model = bind_inputs(model, inputs, path)
        # the bound network is another function: its programs must not share the file's cache entries
        sha = hashlib.sha256(f"{sha}|{inputs_text(inputs)}".encode()).hexdigest()
    return model, inspect_model(model, path, sha)


# --- extra inputs held fixed ------------------------------------------------------------------

def _graph_inputs(graph: onnx.GraphProto) -> list:
    weights = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in weights]


def inputs_text(inputs: Mapping[str, float]) -> str:
    """`name=value,...` sorted by name: the canonical form recorded with results and cache keys."""
    return ",".join(f"{k}={float(v)!r}" for k, v in sorted(inputs.items()))


def parse_inputs(items: list[str] | tuple[str, ...] | None) -> dict[str, float]:
    """`["noise=0.06", "qf=0.9"]` (the `--input NAME=VALUE` flags) as {name: value}."""
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name or number is None or not np.isfinite(number):
            raise InputError(f"--input {item!r}: expected NAME=VALUE with a finite number, e.g. --input noise_level=0.06")
        if name in out:
            raise InputError(f"--input {name} is given twice")
        out[name] = number
    return out


def several_inputs_message(where: str, inputs: list) -> str:
    listing = ", ".join(f"{v.name} ({_spec(v).shape_text() or '?'} {_spec(v).type_name})" for v in inputs)
    example = next((v.name for v in inputs[1:]), "NAME")
    return (f"{where}: the model has {len(inputs)} inputs ({listing}); onnxlam analyses one image input: "
            f"give every other input a value with --input NAME=VALUE (a scalar, broadcast to the input's "
            f"shape), e.g. --input {example}=0.06")


def bind_inputs(model: onnx.ModelProto, inputs: Mapping[str, float], path: str | Path = "<memory>") -> onnx.ModelProto:
    """A copy of `model` in which every input named in `inputs` is a constant of that value.

    The one input left unnamed is the image. A named input's shape comes from its declared dims: a
    fixed dim as is; a symbolic one from the image's dim of the same name, else (rank-4 maps, N×C×H×W)
    from the image's dim at the same position (batch, height, width), else (a per-image vector) from
    the image's batch. The constant is `Expand(value, shape)`, so a map follows the image's size once
    `fix_input_shape` fixes it, and the rest of the pipeline sees a one-input network.
    """
    where = f"{path}"
    graph_inputs = _graph_inputs(model.graph)
    by_name = {v.name: v for v in graph_inputs}
    unknown = [n for n in inputs if n not in by_name]
    if unknown:
        raise InputError(f"{where}: --input {unknown[0]}: the model has no input of that name; its inputs: "
                         + ", ".join(by_name))
    free = [v for v in graph_inputs if v.name not in inputs]
    if len(free) != 1:
        if not free:
            raise InputError(f"{where}: every input has an --input value; leave the image input unset "
                             f"(inputs: {', '.join(by_name)})")
        raise InputError(several_inputs_message(where, graph_inputs))
    image = free[0]
    image_dims = dims(image)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph = m.graph
    nodes = []
    shape_name = f"{image.name}__onnxlam_shape"
    need_shape = False
    for name, value in inputs.items():
        spec = _spec(by_name[name])
        dtype = helper.tensor_dtype_to_np_dtype(spec.elem_type)
        scalar = numpy_helper.from_array(np.array(value, dtype=dtype))
        if all(isinstance(d, int) for d in spec.dims):
            nodes.append(helper.make_node("Constant", [], [name], name=f"onnxlam_input_{name}",
                                          value=numpy_helper.from_array(np.full(spec.dims, value, dtype=dtype))))
            continue
        pieces = []
        for k, d in enumerate(spec.dims):
            if isinstance(d, int):
                src = None
            elif d in image_dims:
                src = image_dims.index(d)
            elif len(spec.dims) == 4 and len(image_dims) == 4 and k in (0, 2, 3):
                src = k
            elif k == 0:
                src = 0
            else:
                raise InputError(f"{where}: --input {name}: its dim {k} ({d}) is symbolic and not the image's; "
                                 "onnxlam cannot tell its size (re-export it with a fixed size)")
            piece = f"onnxlam_input_{name}_dim{k}"
            if src is None:
                nodes.append(helper.make_node("Constant", [], [piece],
                                              value=numpy_helper.from_array(np.array([d], np.int64))))
            else:
                need_shape = True
                for suffix, at in (("at", src), ("end", src + 1)):
                    nodes.append(helper.make_node("Constant", [], [f"{piece}_{suffix}"],
                                                  value=numpy_helper.from_array(np.array([at], np.int64))))
                nodes.append(helper.make_node("Slice", [shape_name, f"{piece}_at", f"{piece}_end"], [piece]))
            pieces.append(piece)
        nodes += [helper.make_node("Concat", pieces, [f"onnxlam_input_{name}_shape"], axis=0),
                  helper.make_node("Constant", [], [f"onnxlam_input_{name}_value"], value=scalar),
                  helper.make_node("Expand", [f"onnxlam_input_{name}_value", f"onnxlam_input_{name}_shape"], [name],
                                   name=f"onnxlam_input_{name}")]
    if need_shape:
        nodes.insert(0, helper.make_node("Shape", [image.name], [shape_name]))
    body = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(body)
    kept = [v for v in graph.input if v.name not in inputs]
    del graph.input[:]
    graph.input.extend(kept)
    helper.set_model_props(m, {**_metadata(model), "onnxlam.fixed_inputs": inputs_text(inputs)})
    return m


# --- normalisation --------------------------------------------------------------------------

def to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16/bfloat16 model rewritten to compute in float32 (weights, casts, declared types)."""
    low = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    _graph_to_float32(model.graph, low)
    return model


def _tensor_to_float32(t: onnx.TensorProto) -> None:
    array = numpy_helper.to_array(t).astype(np.float32)
    t.CopyFrom(numpy_helper.from_array(array, t.name))


def _graph_to_float32(graph: onnx.GraphProto, low) -> None:
    for t in graph.initializer:
        if t.data_type in low:
            _tensor_to_float32(t)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type in low:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in low:
                _tensor_to_float32(attr.t)
            elif attr.type == onnx.AttributeProto.GRAPH:
                _graph_to_float32(attr.g, low)
            elif attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i in low:
                attr.i = TensorProto.FLOAT


def normalise(model: onnx.ModelProto, info: ModelInfo, value_range: float | None = None,
              bgr: bool | None = None) -> onnx.ModelProto:
    """The model as `lam_input` → `lam_sr`: float32, RGB, [0, 1], opset ≥ 13.

    `value_range` and `bgr` override what the model's metadata says. For a 255-range model the
    input is multiplied by 255 and the output divided by it; for a BGR model both are flipped.
    """
    value_range = info.value_range if value_range is None else value_range
    bgr = info.channel_order == "bgr" if bgr is None else bgr
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if info.opset < MIN_OPSET:
        try:
            m = onnx.version_converter.convert_version(m, MIN_OPSET)
        except Exception as exc:
            raise InputError(f"{info.path}: opset {info.opset} could not be converted to "
                             f"{MIN_OPSET} ({exc}); re-export the model with opset ≥ {MIN_OPSET}") from None
    to_float32(m)
    graph = m.graph
    weights = {t.name for t in graph.initializer}
    kept = [v for v in graph.input if v.name not in weights]
    del graph.input[:]
    graph.input.extend(kept)
    src_in, src_out = info.input.name, info.output.name
    pre, post = [], []
    x = INPUT
    bgr = bgr and info.channels == 3
    if bgr:
        pre += _flip_channels(x, "lam_input_bgr")
        x = "lam_input_bgr"
    if value_range != 1.0:
        pre += _scale(x, "lam_input_scaled", value_range)
        x = "lam_input_scaled"
    pre.append(helper.make_node("Identity", [x], [src_in], name="lam_input_to_model"))
    y = src_out
    if value_range != 1.0:
        post += _scale(y, "lam_sr_unscaled", 1.0 / value_range)
        y = "lam_sr_unscaled"
    if bgr:
        post += _flip_channels(y, "lam_sr_rgb")
        y = "lam_sr_rgb"
    post.append(helper.make_node("Identity", [y], [OUTPUT], name="lam_sr_from_model"))
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    old_in = graph.input[0]
    new_in = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, list(dims(old_in)))
    new_out = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, list(dims(graph.output[0])))
    del graph.input[:]
    graph.input.append(new_in)
    del graph.output[:]
    graph.output.append(new_out)
    return m


def _scale(src: str, dst: str, factor: float) -> list:
    const = helper.make_node("Constant", [], [dst + "_factor"],
                             value=numpy_helper.from_array(np.array(factor, np.float32)))
    return [const, helper.make_node("Mul", [src, dst + "_factor"], [dst])]


def _flip_channels(src: str, dst: str) -> list:
    """RGB ↔ BGR as a Gather with indices [2, 1, 0] (onnx-ad differentiates Gather, not negative Slices)."""
    index = helper.make_node("Constant", [], [dst + "_index"],
                             value=numpy_helper.from_array(np.array([2, 1, 0], np.int64)))
    return [index, helper.make_node("Gather", [src, dst + "_index"], [dst], axis=1)]


def fix_input_shape(model: onnx.ModelProto, dims: tuple[int, int, int, int], path: str | None = None) -> onnx.ModelProto:
    """A copy with `lam_input` fixed to `dims`, old value_info dropped and shapes inferred (strictly).

    onnx-ad needs every shape known. An inference failure here usually means the file bakes another
    shape into its constants (a batch of 1 in a Reshape, say): an InputError the caller may act on.
    """
    m = with_input_dims(model, dims)  # outputs re-inferred from the new input
    try:
        fixed = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True, data_prop=True)
        # Shape arithmetic (crops computed from the input's size, say) folds to constants once the
        # input shape is fixed; onnx-ad's folder iterates that with inference to a fixed point.
        return onnx.shape_inference.infer_shapes(fold_constants(fixed), strict_mode=True, data_prop=True)
    except Exception as exc:
        faults = weight_mismatches(m)  # a weight of the wrong size is the file's fault, not the input's
        if faults:
            raise InputError(invalid_model_message(path, faults)) from None
        raise InputError(f"the model does not accept input of shape {'×'.join(map(str, dims))} "
                         f"({str(exc).splitlines()[0][:300]})") from None


def output_dims(model: onnx.ModelProto, name: str = OUTPUT) -> tuple | None:
    for v in list(model.graph.output) + list(model.graph.value_info):
        if v.name == name and v.type.tensor_type.HasField("shape"):
            return dims(v)
    return None


# --- size requirements baked into an imported checkpoint (convert/pytorch.py writes them) ---
@dataclass(frozen=True)
class SizeRequirements:
    """spandrel's `SizeRequirements`: sides ≥ minimum, multiples of `multiple_of`, square when `square`."""

    minimum: int = 0
    multiple_of: int = 1
    square: bool = False

    @property
    def none(self) -> bool:
        return self.minimum == 0 and self.multiple_of == 1 and not self.square

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The size the network is called at for an LR input of height × width (spandrel's rule)."""
        def up(n: int) -> int:
            n = max(n, self.minimum)
            return -(-n // self.multiple_of) * self.multiple_of
        h, w = up(height), up(width)
        return (max(h, w),) * 2 if self.square else (h, w)

    def text(self) -> str:
        if self.none:
            return "none"
        parts = [f"minimum {self.minimum}"] if self.minimum else []
        parts += [f"multiple of {self.multiple_of}"] if self.multiple_of > 1 else []
        parts += ["square"] if self.square else []
        return ", ".join(parts) + " (padded reflect bottom/right, output cropped)"

    def to_json(self) -> dict:
        return asdict(self)


def size_dependent_padding(model: onnx.ModelProto) -> str | None:
    """Why a crop of the input would change what an imported model computes, or None.

    An imported checkpoint (`convert.pytorch`) records its baked size requirements in
    `metadata_props`. The baked padding depends on the input size (how many rows reach the next multiple, or the
    minimum), so the network run on a crop is padded differently from the network run on the image:
    the receptive-field crop, exact for shift-equivariant networks, is not exact here.
    """
    meta = _metadata(model)
    try:
        req = SizeRequirements(**json.loads(meta["onnxlam.size_requirements"]))
    except (KeyError, TypeError, ValueError):
        return None
    if req.none:
        return None
    return (f"the model pads its input to its size requirements ({req.text()}), by an amount that "
            "depends on the input size: a crop would be padded differently, so it is analysed whole")
