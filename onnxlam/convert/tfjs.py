"""Convert a TensorFlow.js Keras *layers* model (``model.json`` and its weight shards) into ONNX.

The result uses standard operators only (opset 17), takes one float32 input ``input`` of
shape [N, C, h, w] with N, h, w dynamic (dim_params "batch", "height", "width") and gives
one output ``output`` [N, C', s*h, s*w]. Only the standard library and numpy read the files:
TensorFlow is not needed.

The format
----------
* ``model.json`` holds ``format: "layers-model"``, ``modelTopology.model_config`` (a Keras
  ``Functional`` model: ``config.layers``, each with ``class_name``, ``name``, ``config`` and
  ``inbound_nodes`` ``[[[layer, node_index, tensor_index, kwargs], ...]]``, plus
  ``input_layers`` and ``output_layers``; a ``Sequential`` model chains its layers) and
  ``weightsManifest``: groups of ``{paths: [shard files, in order], weights: [{name, shape,
  dtype}]}``.
* A group's weights are its shards concatenated, little-endian float32, in *manifest* order
  (not layer order). A weight is named ``LAYER/kernel`` or ``LAYER/bias``.

Conventions
-----------
* Keras tensors are NHWC; the ONNX graph is NCHW. Keras channel axis 3 (or -1) is ONNX axis 1;
  a kernel [kh, kw, cin, cout] becomes [cout, cin, kh, kw].
* ``padding="same"`` at stride 1 pads (k-1)//2 before and the rest after, as Keras does.
* ``tf.depthToSpace(x, r, "NHWC")`` reads channel ``(i*r + j)*C + c`` for output pixel offset
  (i, j): in NCHW that is ONNX ``DepthToSpace`` in mode "DCR".
* The UpscalerJS ESRGAN custom layers are known: ``MultiplyBeta`` (x * 0.2) and
  ``PixelShuffle{N}x`` (depthToSpace by N).
* ``onnxlam.scale`` is the product of the upsampling factors on the way to the output. The
  pixel range the network expects is not in the files: ``convert(..., value_range=...)``
  records it (``onnxlam.value_range``) when given.
* Anything this module cannot translate exactly (an unknown layer class, strides, dilation or
  groups other than 1, channels_first, an unknown activation, a missing or short shard, weights that
  do not match the layers) raises :class:`onnxlam.core.errors.InputError` naming the culprit;
  it never returns an approximate model.

Layers are translated by a registry, :data:`CONVERTERS`: one small function per Keras class.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxlam.convert.ncnn import set_metadata, upsample_nearest
from onnxlam.core.errors import InputError
from onnxlam.graph.model import fresh_name

OPSET = 17

#: The factor of UpscalerJS's ``MultiplyBeta`` layer (``BETA`` in its esrgan.js).
MULTIPLY_BETA = 0.2

_DTYPES = {"float32": "<f4"}


# --------------------------------------------------------------------------- reading


@dataclass
class Layer:
    """One entry of ``config.layers``."""

    class_name: str
    name: str
    config: dict
    inbound: list[tuple[str, int, int]]

    def where(self) -> str:
        return f"layer {self.class_name} '{self.name}'"

    def error(self, what: str) -> InputError:
        return InputError(f"tfjs {self.where()}: {what}")


@dataclass
class TfjsModel:
    """A parsed ``model.json``: its layers in file order, the graph ends and every weight by name."""

    path: pathlib.Path
    layers: list[Layer]
    inputs: list[tuple[str, int, int]]
    outputs: list[tuple[str, int, int]]
    weights: dict[str, np.ndarray]

    @property
    def params(self) -> int:
        return int(sum(w.size for w in self.weights.values()))


def _load_json(path: pathlib.Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read TF.js model file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a TF.js model.json (a JSON object)")
    return data


def _model_config(path: pathlib.Path, data: dict) -> dict:
    fmt = data.get("format", "layers-model")
    if fmt != "layers-model":
        raise InputError(f"{path}: format {fmt!r} is not supported (only Keras layers models, 'layers-model')")
    topology = data.get("modelTopology")
    if not isinstance(topology, dict):
        raise InputError(f"{path}: no modelTopology")
    config = topology.get("model_config", topology)
    if config.get("class_name") not in ("Functional", "Model", "Sequential"):
        raise InputError(f"{path}: model class {config.get('class_name')!r} is not supported "
                         "(Functional, Model or Sequential)")
    return config


def _ref(item, path: pathlib.Path) -> tuple[str, int, int]:
    try:
        return str(item[0]), int(item[1]), int(item[2])
    except (TypeError, ValueError, IndexError):
        raise InputError(f"{path}: malformed tensor reference {item!r}") from None


def _layers(path: pathlib.Path, config: dict) -> tuple[list[Layer], list, list]:
    body = config.get("config")
    sequential = config["class_name"] == "Sequential"
    raw = body if isinstance(body, list) else (body or {}).get("layers")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path}: the model has no layers")
    layers = []
    for i, entry in enumerate(raw):
        cfg = entry.get("config") or {}
        name = str(entry.get("name") or cfg.get("name") or f"layer_{i}")
        nodes = entry.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise InputError(f"tfjs layer {entry.get('class_name')} '{name}': shared layers (called "
                             f"{len(nodes)} times) are not supported")
        inbound = [_ref(item, path) for item in nodes[0]] if nodes else []
        layers.append(Layer(str(entry.get("class_name")), name, cfg, inbound))
    if sequential:
        return _chain(layers)
    inputs = [_ref(r, path) for r in body.get("input_layers") or []]
    outputs = [_ref(r, path) for r in body.get("output_layers") or []]
    return layers, inputs, outputs


def _chain(layers: list[Layer]) -> tuple[list[Layer], list, list]:
    """A Sequential model as a Functional one: an input layer first, then each layer feeds the next."""
    if layers[0].class_name != "InputLayer":
        shape = layers[0].config.get("batch_input_shape")
        layers.insert(0, Layer("InputLayer", "input", {"batch_input_shape": shape}, []))
    for prev, layer in zip(layers, layers[1:]):
        layer.inbound = [(prev.name, 0, 0)]
    return layers, [(layers[0].name, 0, 0)], [(layers[-1].name, 0, 0)]


def _read_weights(path: pathlib.Path, manifest) -> dict[str, np.ndarray]:
    if not isinstance(manifest, list):
        raise InputError(f"{path}: no weightsManifest")
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        shards = [path.parent / p for p in group.get("paths", [])]
        chunks = []
        for shard in shards:
            try:
                chunks.append(shard.read_bytes())
            except OSError:
                raise InputError(f"{path}: weight shard {shard.name} is missing (looked in {shard.parent})") from None
        data = b"".join(chunks)
        offset = 0
        for spec in group.get("weights", []):
            name, shape, dtype = spec.get("name"), [int(d) for d in spec.get("shape", [])], spec.get("dtype")
            if dtype not in _DTYPES or spec.get("quantization"):
                raise InputError(f"{path}: weight {name} has dtype {dtype!r}"
                                 f"{' (quantized)' if spec.get('quantization') else ''}; only float32 is supported")
            nbytes = 4 * math.prod(shape)
            if offset + nbytes > len(data):
                raise InputError(f"{path}: weight shard {shards[-1].name if shards else '(none)'} is short: the "
                                 f"group's shards hold {len(data)} bytes, weight {name} needs bytes {offset} to "
                                 f"{offset + nbytes}")
            weights[name] = np.frombuffer(data, _DTYPES[dtype], math.prod(shape), offset).astype(
                np.float32).reshape(shape)
            offset += nbytes
        if offset != len(data):
            raise InputError(f"{path}: the shards {', '.join(s.name for s in shards)} hold {len(data)} bytes but "
                             f"the manifest's weights take {offset}: weight count mismatch")
    return weights


def read_model(path) -> TfjsModel:
    """Parse ``model.json`` and read its weight shards (every check of the module doc on the files)."""
    path = pathlib.Path(path)
    data = _load_json(path)
    config = _model_config(path, data)
    layers, inputs, outputs = _layers(path, config)
    weights = _read_weights(path, data.get("weightsManifest"))
    return TfjsModel(path, layers, inputs, outputs, weights)


# --------------------------------------------------------------------------- building


@dataclass
class Tensor:
    """What the converter knows of a Keras tensor: its ONNX name, channel count and upscaling so far."""

    name: str
    channels: int
    scale: int = 1


@dataclass
class Builder:
    model: TfjsModel
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    tensors: dict[tuple[str, int, int], Tensor] = field(default_factory=dict)
    used_weights: set = field(default_factory=set)
    used: set = field(default_factory=lambda: {"input", "output"})
    layer: Layer | None = None

    def fresh(self, hint: str) -> str:
        return fresh_name(hint, self.used, start=2)

    def const(self, hint: str, value) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def f32(self, hint: str, value) -> str:
        return self.const(hint, np.asarray(value, dtype=np.float32))

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.fresh(hint or f"{self.layer.name}/{op_type}")
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.fresh(f"{out}/node"), **attrs))
        return out

    def inputs(self, count: int | None = None) -> list[Tensor]:
        layer = self.layer
        if count is not None and len(layer.inbound) != count:
            raise layer.error(f"expects {count} input(s), has {len(layer.inbound)}")
        if not layer.inbound:
            raise layer.error("has no inputs")
        missing = [ref for ref in layer.inbound if ref not in self.tensors]
        if missing:
            raise layer.error(f"input {missing[0][0]!r} is not produced by an earlier layer")
        return [self.tensors[ref] for ref in layer.inbound]

    def input(self) -> Tensor:
        return self.inputs(1)[0]

    def output(self, name: str, channels: int, scale: int) -> None:
        self.tensors[(self.layer.name, 0, 0)] = Tensor(name, channels, scale)

    def weight(self, kind: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        key = f"{self.layer.name}/{kind}"
        w = self.model.weights.get(key)
        if w is None:
            raise self.layer.error(f"weight {key} is not in the weights manifest")
        if shape is not None and tuple(w.shape) != tuple(shape):
            raise self.layer.error(f"weight {key} has shape {list(w.shape)}, the layer needs {list(shape)}")
        self.used_weights.add(key)
        return w


Converter = Callable[[Builder, Layer], None]
CONVERTERS: dict[str, Converter] = {}


def converter(*classes: str):
    def register(fn: Converter) -> Converter:
        for c in classes:
            CONVERTERS[c] = fn
        return fn

    return register


def _channels_last(layer: Layer) -> None:
    fmt = layer.config.get("data_format") or "channels_last"
    if fmt != "channels_last":
        raise layer.error(f"data_format {fmt!r} is not supported (channels_last only)")


def _pair(layer: Layer, key: str, default) -> tuple[int, int]:
    value = layer.config.get(key, default)
    value = [value, value] if isinstance(value, int) else list(value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise layer.error(f"{key} {value!r} is not a pair of integers")
    return value[0], value[1]


# TF.js activation name -> its exact ONNX form: the names TF.js itself knows, less the two GELUs.
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _activation(b: Builder, x: str, name) -> str:
    name = name or "linear"
    hint = f"{b.layer.name}/{name}"
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "elu": "Elu", "softplus": "Softplus",
              "softsign": "Softsign"}
    if name == "linear":
        return x
    if name in simple:
        return b.op(simple[name], [x], hint=hint)
    if name == "selu":
        return b.op("Selu", [x], hint=hint, alpha=_SELU_ALPHA, gamma=_SELU_SCALE)
    if name == "relu6":
        return b.op("Clip", [x, b.f32(f"{hint}/min", 0.0), b.f32(f"{hint}/max", 6.0)], hint=hint)
    if name == "hard_sigmoid":  # TF.js and Keras 2: clip(0.2 x + 0.5, 0, 1)
        return b.op("HardSigmoid", [x], hint=hint, alpha=0.2, beta=0.5)
    if name == "swish":
        return b.op("Mul", [x, b.op("Sigmoid", [x])], hint=hint)
    if name == "mish":  # the Mish operator itself only exists from opset 18
        return b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])], hint=hint)
    if name == "softmax":  # over the channels, Keras' default axis -1
        return b.op("Softmax", [x], hint=hint, axis=1)
    raise b.layer.error(f"activation {name!r} is not supported (supported: {', '.join(ACTIVATIONS)})")


ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "elu", "selu", "softplus",
               "softsign", "swish", "mish", "softmax")


# --------------------------------------------------------------------------- layers


@converter("InputLayer")
def _input_layer(b: Builder, layer: Layer) -> None:
    """The graph input; ``batch_input_shape`` [None, h, w, C] gives C."""
    shape = layer.config.get("batch_input_shape") or layer.config.get("batch_shape")
    if not shape or len(shape) != 4 or not isinstance(shape[3], int):
        raise layer.error(f"batch_input_shape {shape!r} is not an image [batch, height, width, channels]")
    if any(t.name == "input" for t in b.tensors.values()):
        raise layer.error("only models with one input are supported")
    b.output("input", shape[3], 1)


@converter("Conv2D")
def _conv2d(b: Builder, layer: Layer) -> None:
    """Convolution at stride 1 and dilation 1, ``same`` or ``valid`` padding, fused activation."""
    _channels_last(layer)
    x = b.input()
    cfg = layer.config
    kh, kw = _pair(layer, "kernel_size", None)
    for key in ("strides", "dilation_rate"):
        if _pair(layer, key, 1) != (1, 1):
            raise layer.error(f"{key} {list(_pair(layer, key, 1))} is not supported (1 only)")
    padding, groups, filters = cfg.get("padding", "valid"), int(cfg.get("groups", 1)), int(cfg["filters"])
    if padding not in ("same", "valid"):
        raise layer.error(f"padding {padding!r} is not supported (same or valid)")
    if groups != 1:  # TF.js's Conv2D has no groups: it would not even load such a model
        raise layer.error(f"groups {groups} is not supported (1 only, as in TF.js)")
    kernel = b.weight("kernel", (kh, kw, x.channels, filters))
    inputs = [x.name, b.f32(f"{layer.name}/kernel", kernel.transpose(3, 2, 0, 1))]
    if cfg.get("use_bias", True):
        inputs.append(b.f32(f"{layer.name}/bias", b.weight("bias", (filters,))))
    top, left = ((kh - 1) // 2, (kw - 1) // 2) if padding == "same" else (0, 0)
    bottom, right = ((kh - 1) - top, (kw - 1) - left) if padding == "same" else (0, 0)
    y = b.op("Conv", inputs, hint=f"{layer.name}/conv", kernel_shape=[kh, kw], pads=[top, left, bottom, right])
    b.output(_activation(b, y, cfg.get("activation")), filters, x.scale)


@converter("Activation")
def _activation_layer(b: Builder, layer: Layer) -> None:
    x = b.input()
    b.output(_activation(b, x.name, layer.config.get("activation")), x.channels, x.scale)


@converter("LeakyReLU")
def _leaky_relu(b: Builder, layer: Layer) -> None:
    """max(x, alpha*x); Keras' default alpha is 0.3."""
    x = b.input()
    alpha = float(layer.config.get("alpha", layer.config.get("negative_slope", 0.3)))
    b.output(b.op("LeakyRelu", [x.name], alpha=alpha), x.channels, x.scale)


def _same_scale(layer: Layer, xs: list[Tensor]) -> int:
    if len({x.scale for x in xs}) != 1:
        raise layer.error(f"inputs at different scales {[x.scale for x in xs]}")
    return xs[0].scale


@converter("Concatenate")
def _concatenate(b: Builder, layer: Layer) -> None:
    """Along the channels (Keras axis 3 or -1) only."""
    xs = b.inputs()
    axis = int(layer.config.get("axis", -1))
    if axis not in (3, -1):
        raise layer.error(f"axis {axis} is not supported (the channel axis, 3 or -1)")
    b.output(b.op("Concat", [x.name for x in xs], axis=1), sum(x.channels for x in xs), _same_scale(layer, xs))


@converter("Add")
def _add(b: Builder, layer: Layer) -> None:
    xs = b.inputs()
    if len(xs) < 2 or len({x.channels for x in xs}) != 1:
        raise layer.error(f"needs two or more inputs of equal channels, got {[x.channels for x in xs]}")
    y = xs[0].name
    for x in xs[1:]:
        y = b.op("Add", [y, x.name])
    b.output(y, xs[0].channels, _same_scale(layer, xs))


@converter("UpSampling2D")
def _upsampling2d(b: Builder, layer: Layer) -> None:
    """Nearest-neighbour by an integer factor, the same along both axes."""
    _channels_last(layer)
    x = b.input()
    sh, sw = _pair(layer, "size", 2)
    interpolation = layer.config.get("interpolation", "nearest")
    if interpolation != "nearest":
        raise layer.error(f"interpolation {interpolation!r} is not supported (nearest only)")
    if sh != sw or sh < 1:
        raise layer.error(f"size {[sh, sw]} is not supported (one positive factor for both axes)")
    b.output(upsample_nearest(b, x.name, x.channels, sh, sw, layer.name), x.channels, x.scale * sh)


@converter("MultiplyBeta")
def _multiply_beta(b: Builder, layer: Layer) -> None:
    """UpscalerJS ESRGAN's residual scaling: x * 0.2."""
    x = b.input()
    b.output(b.op("Mul", [x.name, b.f32(f"{layer.name}/beta", MULTIPLY_BETA)]), x.channels, x.scale)


@converter(*(f"PixelShuffle{r}x" for r in (2, 3, 4, 8)))
def _pixel_shuffle(b: Builder, layer: Layer) -> None:
    """UpscalerJS ESRGAN's ``tf.depthToSpace(x, r, 'NHWC')``: ONNX DepthToSpace, mode DCR."""
    x = b.input()
    r = int(re.fullmatch(r"PixelShuffle(\d+)x", layer.class_name).group(1))
    if int(layer.config.get("scale", r)) != r:
        raise layer.error(f"config scale {layer.config['scale']} differs from the class's factor {r}")
    if x.channels % (r * r):
        raise layer.error(f"{x.channels} channels are not a multiple of {r}x{r}")
    y = b.op("DepthToSpace", [x.name], blocksize=r, mode="DCR")
    b.output(y, x.channels // (r * r), x.scale * r)


#: Every Keras class :func:`convert` translates.
KNOWN_CLASSES = tuple(sorted(CONVERTERS))


# --------------------------------------------------------------------------- the model


def _graph(b: Builder, m: TfjsModel) -> tuple[Tensor, Tensor]:
    for layer in m.layers:
        fn = CONVERTERS.get(layer.class_name)
        if fn is None:
            raise InputError(f"tfjs {layer.where()}: unknown layer class {layer.class_name!r} (known: "
                             f"{', '.join(KNOWN_CLASSES)})")
        b.layer = layer
        fn(b, layer)
    if len(m.inputs) != 1 or len(m.outputs) != 1:
        raise InputError(f"{m.path}: only models with one input and one output are supported "
                         f"({len(m.inputs)} inputs, {len(m.outputs)} outputs)")
    source, out = b.tensors.get(m.inputs[0]), b.tensors.get(m.outputs[0])
    if source is None or source.name != "input" or out is None:
        raise InputError(f"{m.path}: the input/output layers {m.inputs[0][0]!r}/{m.outputs[0][0]!r} are not "
                         "layers of the model")
    unused = [k for k in m.weights if k not in b.used_weights]
    if unused:
        raise InputError(f"{m.path}: weight count mismatch: {len(unused)} weight(s) of the manifest belong to no "
                         f"layer: {', '.join(unused[:5])}")
    return source, out


def convert(model_json, value_range=None, source: str | None = None) -> onnx.ModelProto:
    """Convert a TF.js layers model into an ONNX model (see the module doc).

    ``value_range`` (1 or 255), when given, is recorded as ``onnxlam.value_range``; ``source`` replaces
    the default ``onnxlam.source`` ("tfjs:" and the file's folder and name)."""
    path = pathlib.Path(model_json)
    m = read_model(path)
    b = Builder(m)
    src, out = _graph(b, m)
    b.nodes.append(helper.make_node("Identity", [out.name], ["output"], name="output/identity"))
    graph = helper.make_graph(
        b.nodes, path.parent.name or path.stem,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", src.channels, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", out.channels, None, None])],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxlam.tfjs")
    model.ir_version = 8
    meta = {"onnxlam.scale": str(out.scale), "onnxlam.channel_order": "rgb",
            "onnxlam.source": source or f"tfjs:{path.parent.name + '/' if path.parent.name else ''}{path.name}",
            "onnxlam.params": str(m.params)}
    if value_range is not None:
        if float(value_range) not in (1.0, 255.0):
            raise InputError(f"value_range must be 1 or 255, got {value_range!r}")
        meta["onnxlam.value_range"] = f"{float(value_range):g}"
    set_metadata(model, meta)
    onnx.checker.check_model(model)
    return model
