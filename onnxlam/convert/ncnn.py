"""Convert an ncnn network (a ``.param`` text file and its ``.bin`` weights) into ONNX.

The result uses standard operators only (opset 17), takes one float32 input ``input`` of
shape [N, C, h, w] with N, h, w dynamic (dim_params "batch", "height", "width") and gives
one output ``output``.

Conventions
-----------
* An ncnn blob has no batch axis: 1-D [w], 2-D [h, w], 3-D [c, h, w]. Its ONNX tensor gets
  a leading batch axis: [N, w], [N, h, w], [N, c, h, w]. ncnn axis ``a`` is ONNX axis
  ``a + 1``.
* Weights are read from the ``.bin`` file in layer order, exactly as ncnn's ModelBin does:
  a weight array that ncnn loads with "type 0" starts with a 4-byte flag tag (0: raw
  float32; 0x01306B47: float16; 0x000D4B38: int8; 0x0002C056: raw float32 with extra
  scales; any other non-zero tag: a 256-entry float32 lookup table followed by one uint8
  index per value); biases, slopes and other "type 1" arrays are raw float32 without a
  tag. Every array is padded to a multiple of 4 bytes. float16 becomes float32.
* Anything this module cannot translate exactly (an unknown layer type, int8 quantized
  inference, a parameter combination it does not implement, a truncated file) raises
  :class:`onnxlam.core.errors.InputError` naming the layer and its ``.param`` line; it never
  returns an approximate model.

Layers are translated by a registry, :data:`CONVERTERS`: one small function per ncnn
layer type.

:func:`bake_program` wraps a converted network with the pixel handling that the
upstream ncnn programs do around it (border padding, cropping, a residual), so the
model maps [N, C, h, w] to [N, C, s*h, s*w] the way the program does for a whole image.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxlam.core.errors import InputError
from onnxlam.graph.model import fresh_name

#: The first line of every ncnn ``.param`` file (the format written since 2018; older
#: magic-less files are not accepted because their layout differs).
MAGIC = 7767517

OPSET = 17

TAG_FLOAT32 = 0x00000000
TAG_FLOAT16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FLOAT32_SCALED = 0x0002C056

_FLT_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- parsing


@dataclass
class Layer:
    """One line of a ``.param`` file."""

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, object]
    line: int

    def where(self) -> str:
        return f"layer {self.type} '{self.name}' (.param line {self.line})"

    def error(self, what: str) -> InputError:
        return InputError(f"ncnn {self.where()}: {what}")

    def get(self, key: int, default=None):
        return self.params.get(key, default)

    def int(self, key: int, default: int = 0) -> int:
        value = self.params.get(key, default)
        if isinstance(value, list) or int(value) != value:
            raise self.error(f"parameter {key} should be an integer, got {value!r}")
        return int(value)

    def float(self, key: int, default: float = 0.0) -> float:
        value = self.params.get(key, default)
        if isinstance(value, list):
            raise self.error(f"parameter {key} should be a number, got an array")
        return float(value)

    def floats(self, key: int) -> list[float]:
        value = self.params.get(key, [])
        return [float(v) for v in (value if isinstance(value, list) else [value])]

    def ints(self, key: int) -> list[int]:
        return [int(v) for v in self.floats(key)]


def _number(text: str):
    # ncnn reads a value as float when it contains '.' or an exponent, else as int.
    if any(ch in text for ch in ".eE") and not text.lower().startswith(("0x",)):
        return float(text)
    return int(text)


def parse_param(path: pathlib.Path) -> list[Layer]:
    """Parse an ncnn ``.param`` text file into layers (magic and counts checked)."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read ncnn param file {path}: {exc}") from None
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not lines or lines[0][1] != str(MAGIC):
        got = lines[0][1][:40] if lines else "an empty file"
        raise InputError(
            f"{path} is not an ncnn .param file: line 1 must be the magic number {MAGIC}, "
            f"got {got!r}"
        )
    if len(lines) < 2:
        raise InputError(f"{path}: missing the 'layer_count blob_count' line")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1][1].split())
    except ValueError:
        raise InputError(
            f"{path} line {lines[1][0]}: expected 'layer_count blob_count', got {lines[1][1]!r}"
        ) from None
    layers = []
    for lineno, ln in lines[2:]:
        tokens = ln.split()
        where = f"{path} line {lineno}"
        if len(tokens) < 4:
            raise InputError(f"{where}: malformed layer line {ln[:60]!r}")
        ltype, name = tokens[0], tokens[1]
        try:
            n_in, n_out = int(tokens[2]), int(tokens[3])
        except ValueError:
            raise InputError(
                f"{where}: layer {ltype} '{name}': bad input/output counts {tokens[2:4]}"
            ) from None
        if n_in < 0 or n_out < 0 or len(tokens) < 4 + n_in + n_out:
            raise InputError(f"{where}: layer {ltype} '{name}': missing blob names")
        inputs = tokens[4 : 4 + n_in]
        outputs = tokens[4 + n_in : 4 + n_in + n_out]
        params: dict[int, object] = {}
        for kv in tokens[4 + n_in + n_out :]:
            key, sep, value = kv.partition("=")
            try:
                k = int(key)
                if not sep:
                    raise ValueError
                if k <= -23300:  # array parameter: "-233xx=count,v1,v2,..."
                    items = value.split(",")
                    count = int(items[0])
                    if count != len(items) - 1:
                        raise ValueError
                    params[-k - 23300] = [_number(v) for v in items[1:]]
                else:
                    params[k] = _number(value)
            except ValueError:
                raise InputError(
                    f"{where}: layer {ltype} '{name}': malformed parameter {kv!r}"
                ) from None
        layers.append(Layer(ltype, name, inputs, outputs, params, lineno))
    if len(layers) != layer_count:
        raise InputError(
            f"{path}: header says {layer_count} layers but the file has {len(layers)}"
        )
    return layers


class ModelBin:
    """Sequential reader of an ncnn ``.bin`` weight file."""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read ncnn weight file {path}: {exc}") from None
        self.offset = 0
        self.values = 0  # how many weights have been read: the network's parameter count
        self.layer: Layer | None = None

    def _take(self, nbytes: int) -> bytes:
        if self.offset + nbytes > len(self.data):
            raise self.layer.error(
                f"{self.path.name} ends at byte {len(self.data)} but this layer needs "
                f"{nbytes} bytes from byte {self.offset} (weights do not match the .param)"
            )
        chunk = self.data[self.offset : self.offset + nbytes]
        self.offset += nbytes
        return chunk

    def raw(self, count: int) -> np.ndarray:
        """A "type 1" array: ``count`` float32 values, no tag."""
        self.values += count
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)

    def tagged(self, count: int) -> np.ndarray:
        """A "type 0" array: a 4-byte tag saying how ``count`` values are stored."""
        tag = int.from_bytes(self._take(4), "little")
        if tag == TAG_FLOAT16:
            self.values += count
            values = np.frombuffer(self._take(2 * count), dtype="<f2").astype(np.float32)
            self._take((-2 * count) % 4)
            return values
        if tag == TAG_INT8:
            raise self.layer.error(
                "int8-quantized weights (tag 0x000D4B38) are not supported: ncnn runs them "
                "with int8 arithmetic, which a float ONNX model cannot reproduce"
            )
        if tag in (TAG_FLOAT32, TAG_FLOAT32_SCALED):
            return self.raw(count)
        # Any other tag: a 256-entry float32 codebook and one uint8 index per value.
        table = self.raw(256)
        self.values += count - 256
        index = np.frombuffer(self._take(count), dtype=np.uint8)
        self._take((-count) % 4)
        return table[index]


# --------------------------------------------------------------------------- building


@dataclass
class Blob:
    """What the converter knows of an ncnn blob: its ONNX name, rank and channel count."""

    name: str
    dims: int  # ncnn rank, without batch
    channels: int | None = None  # c of a 3-D blob, w of a 1-D blob, when known


@dataclass
class Builder:
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    blobs: dict[str, Blob] = field(default_factory=dict)
    used: set = field(default_factory=set)
    layer: Layer | None = None

    def fresh(self, hint: str) -> str:
        return fresh_name(hint, self.used, start=2)

    def const(self, hint: str, value) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def f32(self, hint: str, value) -> str:
        return self.const(hint, np.asarray(value, dtype=np.float32))

    def i64(self, hint: str, value) -> str:
        return self.const(hint, np.asarray(value, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.fresh(hint or f"{self.layer.name}/{op_type}")
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=self.fresh(f"{out}/node"), **attrs)
        )
        return out

    def input(self, i: int = 0) -> Blob:
        layer = self.layer
        if len(layer.inputs) <= i:
            raise layer.error(f"expects at least {i + 1} input blob(s)")
        blob = self.blobs.get(layer.inputs[i])
        if blob is None:
            raise layer.error(f"input blob '{layer.inputs[i]}' is not produced by an earlier layer")
        return blob

    def output(self, tensor: str, dims: int, channels: int | None, i: int = 0) -> None:
        layer = self.layer
        if len(layer.outputs) <= i:
            raise layer.error(f"expects at least {i + 1} output blob(s)")
        self.blobs[layer.outputs[i]] = Blob(tensor, dims, channels)


Converter = Callable[[Builder, Layer, ModelBin], None]
CONVERTERS: dict[str, Converter] = {}


def converter(*types: str):
    def register(fn: Converter) -> Converter:
        for t in types:
            CONVERTERS[t] = fn
        return fn

    return register


def _one_to_one(b: Builder, layer: Layer) -> Blob:
    if len(layer.inputs) != 1 or len(layer.outputs) != 1:
        raise layer.error(
            f"expects 1 input and 1 output, has {len(layer.inputs)} and {len(layer.outputs)}"
        )
    return b.input()


def _activation(b: Builder, layer: Layer, x: str, kind: int, params: list[float]) -> str:
    """ncnn's fused activation (param 9): 0 none, 1 ReLU, 2 leaky ReLU (slope), 3 clip
    (min, max), 4 sigmoid, 5 mish, 6 hard-swish x * clip(alpha*x + beta, 0, 1)."""
    if kind == 0:
        return x
    if kind == 1:
        return b.op("Relu", [x])
    if kind == 2:
        slope = params[0] if params else 0.0
        return b.op("LeakyRelu", [x], alpha=slope) if slope != 0.0 else b.op("Relu", [x])
    if kind == 3:
        lo, hi = (list(params) + [-_FLT_MAX, _FLT_MAX][len(params) :])[:2]
        return b.op("Clip", [x, b.f32(f"{layer.name}/min", lo), b.f32(f"{layer.name}/max", hi)])
    if kind == 4:
        return b.op("Sigmoid", [x])
    if kind == 5:
        return _mish(b, x)
    if kind == 6:
        alpha, beta = (list(params) + [0.2, 0.5][len(params) :])[:2]
        return b.op("Mul", [x, b.op("HardSigmoid", [x], alpha=alpha, beta=beta)])
    raise layer.error(f"unknown fused activation type {kind} (parameter 9)")


def _mish(b: Builder, x: str) -> str:
    # x * tanh(softplus(x)); the Mish operator itself only exists from opset 18.
    return b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])])


def _per_channel(values: np.ndarray, dims: int) -> np.ndarray:
    """Shape a per-channel vector so it broadcasts over an ONNX tensor of ncnn rank ``dims``."""
    if values.size == 1:
        return values.reshape(1)
    return values.reshape((-1,) + (1,) * (dims - 1))


# --------------------------------------------------------------------------- layers


@converter("Input")
def _input(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """The graph input; ``2=c`` (if given) fixes the channel count."""
    if b.blobs.get("__input__"):
        raise layer.error("only networks with one Input layer are supported")
    c = layer.int(2, 0)
    b.output("input", 3, c or None)
    b.blobs["__input__"] = b.blobs[layer.outputs[0]]  # the same object: later layers may learn c


@converter("Split")
def _split(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Every output is the input (ONNX tensors can be read many times)."""
    x = b.input()
    for name in layer.outputs:
        b.blobs[name] = x


@converter("Noop")
def _noop(b: Builder, layer: Layer, mb: ModelBin) -> None:
    for i, name in enumerate(layer.outputs):
        b.blobs[name] = b.input(i)


def _conv_weights(b: Builder, layer: Layer, mb: ModelBin, group: int, transposed: bool):
    num_output = layer.int(0)
    kw = layer.int(1)
    kh = layer.int(11, kw)
    size = layer.int(6)
    if layer.int(8, 0):
        raise layer.error("int8 quantized inference (parameter 8) is not supported")
    if layer.int(19, 0) if not transposed else layer.int(28, 0):
        raise layer.error("dynamic weights (weights as a second input) are not supported")
    if num_output <= 0 or kw <= 0 or kh <= 0 or size <= 0 or size % (num_output * kw * kh):
        raise layer.error(
            f"weight_data_size {size} does not fit num_output {num_output} and kernel {kh}x{kw}"
        )
    if group <= 0 or num_output % group:
        raise layer.error(f"num_output {num_output} is not a multiple of group {group}")
    in_per_group = size // (num_output * kw * kh)
    weight = mb.tagged(size)
    bias = mb.raw(num_output) if layer.int(5, 0) else None
    out_per_group = num_output // group
    if transposed:
        # ncnn stores [group][out/group][in/group][kh][kw]; ONNX ConvTranspose wants
        # [in][out/group][kh][kw].
        w = weight.reshape(group, out_per_group, in_per_group, kh, kw).transpose(0, 2, 1, 3, 4)
        w = w.reshape(group * in_per_group, out_per_group, kh, kw)
    else:
        w = weight.reshape(num_output, in_per_group, kh, kw)
    return w, bias, in_per_group * group


def _conv_geometry(layer: Layer):
    kw = layer.int(1)
    kh = layer.int(11, kw)
    dw = layer.int(2, 1)
    dh = layer.int(12, dw)
    sw = layer.int(3, 1)
    sh = layer.int(13, sw)
    pl = layer.int(4, 0)
    pr = layer.int(15, pl)
    pt = layer.int(14, pl)
    pb = layer.int(16, pt)
    return (kh, kw), (dh, dw), (sh, sw), (pt, pl, pb, pr)


def _check_channels(layer: Layer, x: Blob, expected: int) -> None:
    if x.dims != 3:
        raise layer.error(f"expects a 3-D (c, h, w) input blob, got a {x.dims}-D one")
    if x.channels is not None and x.channels != expected:
        raise layer.error(f"weights expect {expected} input channels, the blob has {x.channels}")
    x.channels = expected


@converter("Convolution", "ConvolutionDepthWise")
def _convolution(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Cross-correlation, weights [out, in/group, kh, kw]; pad -233/-234 mean SAME_UPPER /
    SAME_LOWER; ``18=pad_value`` fills explicit padding; then the fused activation."""
    x = _one_to_one(b, layer)
    group = layer.int(7, 1) if layer.type == "ConvolutionDepthWise" else 1
    kernel, dilation, stride, pads = _conv_geometry(layer)
    w, bias, in_channels = _conv_weights(b, layer, mb, group, transposed=False)
    _check_channels(layer, x, in_channels)
    attrs = dict(kernel_shape=list(kernel), dilations=list(dilation), strides=list(stride), group=group)
    src = x.name
    pad_value = layer.float(18, 0.0)
    if any(p in (-233, -234) for p in pads):
        if set(pads) - {-233, -234} and set(pads) != {pads[0]}:
            raise layer.error(f"mixed automatic and explicit padding {pads}")
        attrs["auto_pad"] = "SAME_UPPER" if pads[0] == -233 else "SAME_LOWER"
    elif any(p < 0 for p in pads):
        raise layer.error(f"unsupported padding {pads}")
    elif pad_value != 0.0 and any(pads):
        pt, pl, pb, pr = pads
        src = b.op("Pad", [src, b.i64(f"{layer.name}/pads", [0, 0, pt, pl, 0, 0, pb, pr]),
                           b.f32(f"{layer.name}/pad_value", pad_value)], mode="constant")
    else:
        pt, pl, pb, pr = pads
        attrs["pads"] = [pt, pl, pb, pr]
    inputs = [src, b.f32(f"{layer.name}/weight", w)]
    if bias is not None:
        inputs.append(b.f32(f"{layer.name}/bias", bias))
    y = b.op("Conv", inputs, **attrs)
    y = _activation(b, layer, y, layer.int(9, 0), layer.floats(10))
    b.output(y, 3, w.shape[0])


@converter("Deconvolution", "DeconvolutionDepthWise")
def _deconvolution(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Transposed convolution: out = (in-1)*stride + dilation*(k-1) + 1 - pad_begin -
    pad_end + output_pad; ncnn weights [group][out/group][in/group][kh][kw]."""
    x = _one_to_one(b, layer)
    group = layer.int(7, 1) if layer.type == "DeconvolutionDepthWise" else 1
    kernel, dilation, stride, pads = _conv_geometry(layer)
    if any(p < 0 for p in pads):
        raise layer.error(f"automatic padding {pads} is not supported for deconvolution")
    if layer.int(20, 0) or layer.int(21, 0):
        raise layer.error("a fixed output size (parameters 20/21) is not supported")
    opr = layer.int(18, 0)
    opb = layer.int(19, opr)
    if opb >= max(stride[0], dilation[0]) or opr >= max(stride[1], dilation[1]):
        raise layer.error(f"output padding ({opb}, {opr}) must be smaller than the stride")
    w, bias, in_channels = _conv_weights(b, layer, mb, group, transposed=True)
    _check_channels(layer, x, in_channels)
    pt, pl, pb, pr = pads
    inputs = [x.name, b.f32(f"{layer.name}/weight", w)]
    if bias is not None:
        inputs.append(b.f32(f"{layer.name}/bias", bias))
    y = b.op("ConvTranspose", inputs, kernel_shape=list(kernel), dilations=list(dilation),
             strides=list(stride), pads=[pt, pl, pb, pr], output_padding=[opb, opr], group=group)
    y = _activation(b, layer, y, layer.int(9, 0), layer.floats(10))
    b.output(y, 3, w.shape[1] * group)


@converter("InnerProduct")
def _inner_product(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """y = W x + bias over the flattened input (c*h*w); the output is a 1-D blob."""
    x = _one_to_one(b, layer)
    num_output = layer.int(0)
    size = layer.int(2)
    if layer.int(8, 0):
        raise layer.error("int8 quantized inference (parameter 8) is not supported")
    if num_output <= 0 or size <= 0 or size % num_output:
        raise layer.error(f"weight_data_size {size} is not a multiple of num_output {num_output}")
    w = mb.tagged(size).reshape(num_output, size // num_output)
    bias = mb.raw(num_output) if layer.int(1, 0) else None
    if x.dims == 1 and x.channels is not None and x.channels != w.shape[1]:
        raise layer.error(f"weights expect {w.shape[1]} inputs, the blob has {x.channels}")
    src = x.name if x.dims == 1 else b.op("Flatten", [x.name], axis=1)
    inputs = [src, b.f32(f"{layer.name}/weight", w)]
    if bias is not None:
        inputs.append(b.f32(f"{layer.name}/bias", bias))
    y = b.op("Gemm", inputs, transB=1)
    y = _activation(b, layer, y, layer.int(9, 0), layer.floats(10))
    b.output(y, 1, num_output)


@converter("PReLU")
def _prelu(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """max(x, 0) + slope[c] * min(x, 0); one slope for all channels when num_slope is 1."""
    x = _one_to_one(b, layer)
    slope = mb.raw(layer.int(0, 1))
    if slope.size > 1 and x.channels is not None and x.channels != slope.size:
        raise layer.error(f"{slope.size} slopes for a blob of {x.channels} channels")
    y = b.op("PRelu", [x.name, b.f32(f"{layer.name}/slope", _per_channel(slope, x.dims))])
    b.output(y, x.dims, x.channels)


def _unary(onnx_op: str, doc: str):
    def convert(b: Builder, layer: Layer, mb: ModelBin) -> None:
        x = _one_to_one(b, layer)
        b.output(b.op(onnx_op, [x.name]), x.dims, x.channels)

    convert.__doc__ = doc
    return convert


CONVERTERS["Sigmoid"] = _unary("Sigmoid", "1 / (1 + exp(-x)).")
CONVERTERS["TanH"] = _unary("Tanh", "tanh(x).")
CONVERTERS["AbsVal"] = _unary("Abs", "|x|.")


@converter("ReLU")
def _relu(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """max(x, 0), or leaky with ``0=slope``."""
    x = _one_to_one(b, layer)
    slope = layer.float(0, 0.0)
    y = b.op("LeakyRelu", [x.name], alpha=slope) if slope else b.op("Relu", [x.name])
    b.output(y, x.dims, x.channels)


@converter("Swish")
def _swish(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """x * sigmoid(x)."""
    x = _one_to_one(b, layer)
    b.output(b.op("Mul", [x.name, b.op("Sigmoid", [x.name])]), x.dims, x.channels)


@converter("Mish")
def _mish_layer(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """x * tanh(softplus(x))."""
    x = _one_to_one(b, layer)
    b.output(_mish(b, x.name), x.dims, x.channels)


@converter("Clip")
def _clip(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """min(max(x, 0=min), 1=max)."""
    x = _one_to_one(b, layer)
    lo, hi = layer.float(0, -_FLT_MAX), layer.float(1, _FLT_MAX)
    y = b.op("Clip", [x.name, b.f32(f"{layer.name}/min", lo), b.f32(f"{layer.name}/max", hi)])
    b.output(y, x.dims, x.channels)


@converter("HardSigmoid")
def _hard_sigmoid(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """clip(alpha*x + beta, 0, 1), defaults alpha 0.2, beta 0.5."""
    x = _one_to_one(b, layer)
    y = b.op("HardSigmoid", [x.name], alpha=layer.float(0, 0.2), beta=layer.float(1, 0.5))
    b.output(y, x.dims, x.channels)


@converter("HardSwish")
def _hard_swish(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """x * clip(alpha*x + beta, 0, 1), defaults alpha 0.2, beta 0.5."""
    x = _one_to_one(b, layer)
    hs = b.op("HardSigmoid", [x.name], alpha=layer.float(0, 0.2), beta=layer.float(1, 0.5))
    b.output(b.op("Mul", [x.name, hs]), x.dims, x.channels)


@converter("ELU")
def _elu(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """x if x > 0 else alpha * (exp(x) - 1), default alpha 0.1."""
    x = _one_to_one(b, layer)
    b.output(b.op("Elu", [x.name], alpha=layer.float(0, 0.1)), x.dims, x.channels)


@converter("Dropout")
def _dropout(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Inference-time dropout: x * scale (``0=scale``, default 1)."""
    x = _one_to_one(b, layer)
    scale = layer.float(0, 1.0)
    y = x.name if scale == 1.0 else b.op("Mul", [x.name, b.f32(f"{layer.name}/scale", scale)])
    b.output(y, x.dims, x.channels)


_UNARY_OPS = {0: "Abs", 1: "Neg", 2: "Floor", 3: "Ceil", 5: "Sqrt", 7: "Exp", 8: "Log",
              9: "Sin", 10: "Cos", 11: "Tan", 12: "Asin", 13: "Acos", 14: "Atan",
              15: "Reciprocal", 16: "Tanh"}


@converter("UnaryOp")
def _unary_op(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Elementwise function by ``0=op_type``: 0 abs, 1 neg, 2 floor, 3 ceil, 4 square,
    5 sqrt, 6 rsqrt, 7 exp, 8 log, 9 sin, 10 cos, 11 tan, 12 asin, 13 acos, 14 atan,
    15 reciprocal, 16 tanh."""
    x = _one_to_one(b, layer)
    kind = layer.int(0, 0)
    if kind == 4:
        y = b.op("Mul", [x.name, x.name])
    elif kind == 6:
        y = b.op("Reciprocal", [b.op("Sqrt", [x.name])])
    elif kind in _UNARY_OPS:
        y = b.op(_UNARY_OPS[kind], [x.name])
    else:
        raise layer.error(f"unsupported UnaryOp type {kind}")
    b.output(y, x.dims, x.channels)


def _atan2(b: Builder, y: str, x: str) -> str:
    """atan2(y, x) from Atan and Where (ONNX has no Atan2)."""
    name = b.layer.name
    zero, pi = b.f32(f"{name}/zero", 0.0), b.f32(f"{name}/pi", math.pi)
    half_pi = b.f32(f"{name}/half_pi", math.pi / 2)
    x_is_zero = b.op("Equal", [x, zero])
    safe_x = b.op("Where", [x_is_zero, b.f32(f"{name}/one", 1.0), x])
    base = b.op("Atan", [b.op("Div", [y, safe_x])])
    y_neg = b.op("Less", [y, zero])
    shift = b.op("Where", [y_neg, b.op("Neg", [pi]), pi])
    left = b.op("Add", [base, shift])
    result = b.op("Where", [b.op("Less", [x, zero]), left, base])
    at_zero = b.op("Mul", [b.op("Sign", [y]), half_pi])
    return b.op("Where", [x_is_zero, at_zero, result])


_BINARY = {0: "Add", 1: "Sub", 2: "Mul", 3: "Div", 4: "Max", 5: "Min", 6: "Pow"}
_REVERSED = {7: 1, 8: 3, 9: 6, 11: 10}  # rsub, rdiv, rpow, ratan2: swap the operands


def _broadcast_pair(b: Builder, layer: Layer, a: Blob, c: Blob) -> tuple[str, str, Blob]:
    """ncnn's broadcasting of two blobs of different rank, in ONNX terms.

    Equal ranks broadcast axis by axis (as numpy). A 1-D blob of w values meets a 3-D
    one per channel when w equals its channel count (the squeeze-excitation case) or
    when w is 1; other rank mixes are refused rather than guessed.
    """
    if a.dims == c.dims:
        return a.name, c.name, a if (a.channels or 0) >= (c.channels or 0) else c
    big, small = (a, c) if a.dims > c.dims else (c, a)
    if small.dims == 1 and big.dims == 3 and small.channels is not None and (
        small.channels == 1 or small.channels == big.channels
    ):
        expanded = b.op("Unsqueeze", [small.name, b.i64(f"{layer.name}/axes", [2, 3])])
        names = (expanded, big.name) if small is a else (big.name, expanded)
        return names[0], names[1], big
    raise layer.error(
        f"broadcasting a {a.dims}-D blob against a {c.dims}-D blob "
        f"(channels {a.channels} and {c.channels}) is not supported"
    )


@converter("BinaryOp")
def _binary_op(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """a (op) b with ``0=op_type``: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min, 6 pow,
    7 rsub (b - a), 8 rdiv (b / a), 9 rpow (b ** a), 10 atan2(a, b), 11 ratan2(b, a);
    ``1=with_scalar`` takes b from ``2=b`` instead of a second input."""
    kind = layer.int(0, 0)
    if kind not in _BINARY and kind not in _REVERSED and kind != 10:
        raise layer.error(f"unknown BinaryOp type {kind}")
    a = b.input(0)
    if layer.int(1, 0):
        lhs, rhs, shape = a.name, b.f32(f"{layer.name}/b", layer.float(2, 0.0)), a
    else:
        if len(layer.inputs) != 2:
            raise layer.error("without with_scalar (parameter 1) it needs two inputs")
        lhs, rhs, shape = _broadcast_pair(b, layer, a, b.input(1))
    if kind in _REVERSED:
        lhs, rhs, kind = rhs, lhs, _REVERSED[kind]
    y = _atan2(b, lhs, rhs) if kind == 10 else b.op(_BINARY[kind], [lhs, rhs])
    b.output(y, shape.dims, shape.channels)


@converter("Eltwise")
def _eltwise(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """``0=op_type``: 0 product, 1 sum (weighted by ``1=coeffs`` if given), 2 max."""
    kind = layer.int(0, 0)
    coeffs = layer.floats(1)
    xs = [b.input(i) for i in range(len(layer.inputs))]
    if len(xs) < 2:
        raise layer.error("needs at least two inputs")
    names = [x.name for x in xs]
    if kind == 1 and coeffs and any(cf != 1.0 for cf in coeffs):
        if len(coeffs) != len(xs):
            raise layer.error(f"{len(coeffs)} coefficients for {len(xs)} inputs")
        names = [n if cf == 1.0 else b.op("Mul", [n, b.f32(f"{layer.name}/coeff", cf)])
                 for n, cf in zip(names, coeffs)]
    ops = {0: "Mul", 1: "Add", 2: "Max"}
    if kind not in ops:
        raise layer.error(f"unknown Eltwise type {kind}")
    y = names[0]
    for n in names[1:]:
        y = b.op(ops[kind], [y, n])
    b.output(y, xs[0].dims, xs[0].channels)


@converter("Concat")
def _concat(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Join along ``0=axis`` (ncnn axis, 0 = channels for a 3-D blob; negative counts
    from the end)."""
    xs = [b.input(i) for i in range(len(layer.inputs))]
    dims = xs[0].dims
    if any(x.dims != dims for x in xs):
        raise layer.error("inputs of different rank")
    axis = layer.int(0, 0)
    axis = axis + dims if axis < 0 else axis
    if not 0 <= axis < dims:
        raise layer.error(f"axis {layer.int(0, 0)} out of range for a {dims}-D blob")
    channels = None
    if axis == 0 and all(x.channels is not None for x in xs):
        channels = sum(x.channels for x in xs)
    elif axis != 0:
        channels = xs[0].channels
    y = b.op("Concat", [x.name for x in xs], axis=axis + 1)
    b.output(y, dims, channels)


def _spatial_size(b: Builder, x: str, scale_h: float, scale_w: float, layer: Layer) -> str:
    """[N, C, floor(h*scale_h), floor(w*scale_w)] computed from the input's shape."""
    shape = b.op("Shape", [x])
    nc = b.op("Slice", [shape, b.i64(f"{layer.name}/s0", [0]), b.i64(f"{layer.name}/e2", [2])])
    hw = b.op("Cast", [b.op("Slice", [shape, b.i64(f"{layer.name}/s2", [2]),
                                      b.i64(f"{layer.name}/e4", [4])])], to=TensorProto.FLOAT)
    hw = b.op("Floor", [b.op("Mul", [hw, b.f32(f"{layer.name}/scales", [scale_h, scale_w])])])
    hw = b.op("Cast", [hw], to=TensorProto.INT64)
    return b.op("Concat", [nc, hw], axis=0)


@converter("Interp")
def _interp(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Resize by ``0=resize_type`` (1 nearest: src = floor(dst / scale); 2 bilinear and
    3 bicubic (a = -0.75): half-pixel centres, or ``6=align_corner``), to ``1=height_scale``
    x ``2=width_scale`` or a fixed ``3=output_height`` x ``4=output_width``."""
    x = _one_to_one(b, layer)
    if x.dims != 3:
        raise layer.error("only 3-D (c, h, w) blobs are supported")
    kind = layer.int(0, 0)
    if layer.int(5, 0):
        raise layer.error("a target size from a second input (parameter 5) is not supported")
    align = layer.int(6, 0)
    attrs: dict = {}
    if kind == 1:
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    elif kind in (2, 3):
        attrs = dict(mode="linear" if kind == 2 else "cubic",
                     coordinate_transformation_mode="align_corners" if align else "half_pixel")
        if kind == 3:
            attrs.update(cubic_coeff_a=-0.75, exclude_outside=0)
    else:
        raise layer.error(f"unknown resize type {kind}")
    out_h, out_w = layer.int(3, 0), layer.int(4, 0)
    sh, sw = layer.float(1, 1.0), layer.float(2, 1.0)
    def empty() -> str:
        return b.f32(f"{layer.name}/roi", np.zeros(0, np.float32))

    if out_h or out_w:
        if not (out_h and out_w):
            raise layer.error("only one of output_height/output_width is set")
        shape = b.op("Shape", [x.name])
        nc = b.op("Slice", [shape, b.i64(f"{layer.name}/s0", [0]), b.i64(f"{layer.name}/e2", [2])])
        sizes = b.op("Concat", [nc, b.i64(f"{layer.name}/hw", [out_h, out_w])], axis=0)
        y = b.op("Resize", [x.name, empty(), "", sizes], **attrs)
    elif kind == 1 and sh == int(sh) and sw == int(sw) and sh >= 1 and sw >= 1 and x.channels:
        y = upsample_nearest(b, x.name, x.channels, int(sh), int(sw), layer.name)
    elif sh == int(sh) and sw == int(sw):
        # Integer factors: floor(h*s) = h*s, and s is exactly what ncnn divides by.
        y = b.op("Resize", [x.name, empty(), b.f32(f"{layer.name}/scales", [1, 1, sh, sw])], **attrs)
    else:
        # ncnn maps coordinates with in/out sizes, not with the scale factor.
        y = b.op("Resize", [x.name, empty(), "", _spatial_size(b, x.name, sh, sw, layer)], **attrs)
    b.output(y, 3, x.channels)


def upsample_nearest(b: Builder, x: str, channels: int, sh: int, sw: int, hint: str) -> str:
    """Nearest-neighbour upsampling by integer factors, y[c, i, j] = x[c, i//sh, j//sw],
    written as a depthwise ConvTranspose with an all-ones sh x sw kernel and stride
    (sh, sw): exact, and differentiable without knowing the spatial size (Resize is not)."""
    ones = np.ones((channels, 1, sh, sw), np.float32)
    return b.op("ConvTranspose", [x, b.f32(f"{hint}/nearest_kernel", ones)], hint=f"{hint}/nearest",
                kernel_shape=[sh, sw], strides=[sh, sw], group=channels)


@converter("PixelShuffle")
def _pixel_shuffle(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """[c*r*r, h, w] -> [c, h*r, w*r]; ``1=mode`` 0 is PyTorch's order (ONNX CRD), 1 DCR."""
    x = _one_to_one(b, layer)
    r = layer.int(0, 1)
    mode = layer.int(1, 0)
    if mode not in (0, 1):
        raise layer.error(f"unknown PixelShuffle mode {mode}")
    y = b.op("DepthToSpace", [x.name], blocksize=r, mode="CRD" if mode == 0 else "DCR")
    b.output(y, 3, x.channels // (r * r) if x.channels else None)


@converter("Crop")
def _crop(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Slice a blob: numpy style (``9=starts``, ``10=ends``, ``11=axes``; -233 = open,
    an end <= 0 counts from the end) or offset style (``0/1/2`` = w/h/c offsets,
    ``3/4/5`` = w/h/c sizes, -233 = to the end, -234 = to one before the end), or, with
    a second input, the offsets and the second blob's (h, w) size."""
    if len(layer.inputs) == 2:
        _crop_to_reference(b, layer)
        return
    x = _one_to_one(b, layer)
    big = 2**62
    starts, ends, axes = [], [], []
    if 9 in layer.params or 10 in layer.params:
        s_list, e_list = layer.ints(9), layer.ints(10)
        a_list = layer.ints(11) or list(range(x.dims))
        if not (len(s_list) == len(e_list) == len(a_list)):
            raise layer.error("starts, ends and axes differ in length")
        for s, e, a in zip(s_list, e_list, a_list):
            a = a + x.dims if a < 0 else a
            if not 0 <= a < x.dims:
                raise layer.error(f"axis {a} out of range")
            starts.append(0 if s == -233 else s)
            ends.append(big if e in (-233, 0) else e)
            axes.append(a + 1)
    else:
        if x.dims != 3:
            raise layer.error("offset-style crop is only supported on 3-D blobs")
        for axis, off_k, size_k in ((3, 0, 3), (2, 1, 4), (1, 2, 5)):
            off, size = layer.int(off_k, 0), layer.int(size_k, 0)
            if size == -233:
                end = big
            elif size == -234:
                end = -1
            elif size > 0:
                end = off + size
            else:  # 0 and the offset2 forms differ between ncnn versions: refuse, don't guess
                raise layer.error(f"unsupported crop size {size} (parameter {size_k})")
            if off or end != big:
                starts.append(off)
                ends.append(end)
                axes.append(axis)
    channels = x.channels
    if 1 in axes and x.dims == 3:
        channels = None
    if not axes:
        b.output(x.name, x.dims, channels)
        return
    y = b.op("Slice", [x.name, b.i64(f"{layer.name}/starts", starts),
                       b.i64(f"{layer.name}/ends", ends), b.i64(f"{layer.name}/axes", axes)])
    b.output(y, x.dims, channels)


def _crop_to_reference(b: Builder, layer: Layer) -> None:
    x, ref = b.input(0), b.input(1)
    if x.dims != 3 or ref.dims != 3 or layer.int(2, 0):
        raise layer.error("cropping to a reference blob is only supported for 3-D blobs in h, w")
    offsets = b.i64(f"{layer.name}/offsets", [layer.int(1, 0), layer.int(0, 0)])
    size = b.op("Slice", [b.op("Shape", [ref.name]), b.i64(f"{layer.name}/s2", [2]),
                          b.i64(f"{layer.name}/e4", [4])])
    y = b.op("Slice", [x.name, offsets, b.op("Add", [offsets, size]),
                       b.i64(f"{layer.name}/axes", [2, 3])])
    b.output(y, 3, x.channels)


@converter("Pooling")
def _pooling(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """``0=pooling_type`` 0 max / 1 average. Global pooling (``4=1``) gives a 1-D blob
    of c values. Otherwise kernel ``1/11``, stride ``2/12``, pads ``3`` left, ``14`` right,
    ``13`` top, ``15`` bottom, ``5=pad_mode`` (0 full: ceil, 1 valid: floor, 2/3 same)."""
    x = _one_to_one(b, layer)
    kind = layer.int(0, 0)
    if kind not in (0, 1):
        raise layer.error(f"unknown pooling type {kind}")
    if x.dims != 3:
        raise layer.error("only 3-D (c, h, w) blobs are supported")
    if layer.int(7, 0):
        raise layer.error("adaptive pooling (parameter 7) is not supported")
    if layer.int(4, 0):
        y = b.op("GlobalMaxPool" if kind == 0 else "GlobalAveragePool", [x.name])
        y = b.op("Flatten", [y], axis=1)
        b.output(y, 1, x.channels)
        return
    kw = layer.int(1, 0)
    kh = layer.int(11, kw)
    sw = layer.int(2, 1)
    sh = layer.int(12, sw)
    pl = layer.int(3, 0)
    pr = layer.int(14, pl)
    pt = layer.int(13, pl)
    pb = layer.int(15, pt)
    pad_mode = layer.int(5, 0)
    include_pad = layer.int(6, 0)
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw])
    if pad_mode in (0, 1):
        attrs["pads"] = [pt, pl, pb, pr]
        attrs["ceil_mode"] = 1 if pad_mode == 0 else 0
        if kind == 1 and pad_mode == 0 and include_pad:
            # ncnn counts explicit padding but not the tail padding of "full" mode.
            raise layer.error("average pooling with pad_mode 0 and avgpool_count_include_pad")
    elif pad_mode in (2, 3):
        attrs["auto_pad"] = "SAME_UPPER" if pad_mode == 2 else "SAME_LOWER"
    else:
        raise layer.error(f"unknown pad_mode {pad_mode}")
    if kind == 1:
        attrs["count_include_pad"] = include_pad
    y = b.op("MaxPool" if kind == 0 else "AveragePool", [x.name], **attrs)
    b.output(y, 3, x.channels)


@converter("Scale")
def _scale(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """x * scale[c] (+ bias[c]); ``0=scale_data_size`` -233 takes the scale from a second
    input blob."""
    size = layer.int(0, 0)
    x = b.input(0)
    if size == -233:
        if len(layer.inputs) != 2:
            raise layer.error("scale_data_size -233 needs two inputs")
        lhs, rhs, _ = _broadcast_pair(b, layer, x, b.input(1))
        y = b.op("Mul", [lhs, rhs])
        if layer.int(1, 0):
            raise layer.error("a bias with a blob scale is not supported")
    else:
        scale = mb.raw(size)
        y = b.op("Mul", [x.name, b.f32(f"{layer.name}/scale", _per_channel(scale, x.dims))])
        if layer.int(1, 0):
            bias = mb.raw(size)
            y = b.op("Add", [y, b.f32(f"{layer.name}/bias", _per_channel(bias, x.dims))])
    b.output(y, x.dims, x.channels)


@converter("BatchNorm")
def _batch_norm(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """slope * (x - mean) / sqrt(var + eps) + bias, folded into one per-channel affine."""
    x = _one_to_one(b, layer)
    c = layer.int(0, 0)
    eps = layer.float(1, 0.0)
    slope, mean, var, bias = (mb.raw(c) for _ in range(4))
    a = slope / np.sqrt(var + eps)
    y = b.op("Mul", [x.name, b.f32(f"{layer.name}/a", _per_channel(a, x.dims))])
    y = b.op("Add", [y, b.f32(f"{layer.name}/b", _per_channel(bias - mean * a, x.dims))])
    b.output(y, x.dims, x.channels)


@converter("MemoryData")
def _memory_data(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """A constant blob of ``2=c`` x ``1=h`` x ``0=w`` raw float32 values."""
    if layer.inputs:
        raise layer.error("MemoryData takes no input")
    w, h, c = layer.int(0, 0), layer.int(1, 0), layer.int(2, 0)
    if layer.int(11, 0):
        raise layer.error("4-D MemoryData is not supported")
    if c:
        dims, shape, channels = 3, (1, c, max(h, 1), max(w, 1)), c
    elif h:
        dims, shape, channels = 2, (1, h, max(w, 1)), None
    else:
        dims, shape, channels = 1, (1, max(w, 1)), max(w, 1)
    data = mb.raw(int(np.prod(shape))).reshape(shape)
    b.output(b.f32(f"{layer.name}/data", data), dims, channels)


@converter("Padding")
def _padding(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Pad ``0=top 1=bottom 2=left 3=right`` (and ``7=front 8=behind`` channels) with
    ``4=type`` 0 constant (``5=value``), 1 replicate (edge), 2 reflect (edge not repeated)."""
    x = _one_to_one(b, layer)
    top, bottom, left, right = (layer.int(k, 0) for k in range(4))
    kind = layer.int(4, 0)
    front, behind = layer.int(7, 0), layer.int(8, 0)
    if layer.int(6, 0):
        raise layer.error("per-channel pad values (parameter 6) are not supported")
    if x.dims != 3:
        raise layer.error("only 3-D (c, h, w) blobs are supported")
    if min(top, bottom, left, right, front, behind) < 0:
        raise layer.error("negative padding")
    if (front or behind) and kind != 0:
        raise layer.error("channel padding is only supported in constant mode")
    modes = {0: "constant", 1: "edge", 2: "reflect"}
    if kind not in modes:
        raise layer.error(f"unknown padding type {kind}")
    pads = b.i64(f"{layer.name}/pads", [0, front, top, left, 0, behind, bottom, right])
    inputs = [x.name, pads]
    if kind == 0:
        inputs.append(b.f32(f"{layer.name}/value", layer.float(5, 0.0)))
    y = b.op("Pad", inputs, mode=modes[kind])
    channels = x.channels + front + behind if x.channels is not None else None
    b.output(y, 3, channels)


@converter("Flatten")
def _flatten(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Flatten to a 1-D blob of c*h*w values."""
    x = _one_to_one(b, layer)
    b.output(b.op("Flatten", [x.name], axis=1), 1, None)


@converter("Reshape")
def _reshape(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Reshape to ``0=w 1=h 2=c`` (-233 = absent axis, 0 = keep, -1 = infer)."""
    x = _one_to_one(b, layer)
    if layer.int(3, 0) or layer.int(11, -233) != -233:
        raise layer.error("permuting or 4-D reshape is not supported")
    w, h, c = layer.int(0, -233), layer.int(1, -233), layer.int(2, -233)
    if h == -233:
        shape = [w]
    elif c == -233:
        shape = [h, w]
    else:
        shape = [c, h, w]
    if -233 in shape:
        raise layer.error(f"inconsistent reshape sizes w={w} h={h} c={c}")
    if 0 in shape and len(shape) != x.dims:
        raise layer.error("'keep this size' (0) across a change of rank is not supported")
    y = b.op("Reshape", [x.name, b.i64(f"{layer.name}/shape", [0] + shape)])
    channels = c if len(shape) == 3 and c > 0 else (w if len(shape) == 1 and w > 0 else None)
    if len(shape) == 3 and c == 0:
        channels = x.channels
    b.output(y, len(shape), channels)


# ncnn names the new axis order innermost first; these are the ONNX permutations.
_PERMUTE_2D = {0: [0, 1, 2], 1: [0, 2, 1]}
_PERMUTE_3D = {0: [0, 1, 2, 3], 1: [0, 1, 3, 2], 2: [0, 2, 1, 3], 3: [0, 2, 3, 1],
               4: [0, 3, 1, 2], 5: [0, 3, 2, 1]}


@converter("Permute")
def _permute(b: Builder, layer: Layer, mb: ModelBin) -> None:
    """Transpose by ``0=order_type`` (2-D: 0 w h, 1 h w; 3-D: 0 w h c, 1 h w c, 2 w c h,
    3 c w h, 4 h c w, 5 c h w, each naming the new axes innermost first)."""
    x = _one_to_one(b, layer)
    table = {2: _PERMUTE_2D, 3: _PERMUTE_3D}.get(x.dims, {})
    order = layer.int(0, 0)
    if order not in table:
        raise layer.error(f"order_type {order} on a {x.dims}-D blob is not supported")
    perm = table[order]
    y = b.op("Transpose", [x.name], perm=perm)
    channels = x.channels if x.dims == 3 and perm[1] == 1 else None
    b.output(y, x.dims, channels)


# --------------------------------------------------------------------------- entry points


def convert(param_path, bin_path) -> onnx.ModelProto:
    """Convert an ncnn ``.param``/``.bin`` pair into an ONNX model (see the module doc)."""
    param_path, bin_path = pathlib.Path(param_path), pathlib.Path(bin_path)
    layers = parse_param(param_path)
    mb = ModelBin(bin_path)
    b = Builder()
    consumed: set[str] = set()
    produced: list[str] = []
    for layer in layers:
        fn = CONVERTERS.get(layer.type)
        if fn is None:
            raise layer.error(
                f"unknown or unsupported layer type '{layer.type}' (supported: "
                f"{', '.join(sorted(CONVERTERS))})"
            )
        b.layer = mb.layer = layer
        for name in layer.inputs:
            if name not in b.blobs:
                raise layer.error(f"input blob '{name}' is not produced by an earlier layer")
            consumed.add(name)
        fn(b, layer, mb)
        produced.extend(layer.outputs)
    if mb.offset != len(mb.data):
        raise InputError(
            f"{bin_path.name} has {len(mb.data) - mb.offset} bytes left after the last layer "
            f"({mb.offset} of {len(mb.data)} read): it does not belong to {param_path.name}"
        )
    source = b.blobs.get("__input__")
    if source is None:
        raise InputError(f"{param_path}: the network has no Input layer")
    outputs = [name for name in produced if name not in consumed]
    if len(outputs) != 1:
        raise InputError(
            f"{param_path}: expected one output blob (one never consumed), found "
            f"{len(outputs)}: {', '.join(outputs[:10])}"
        )
    out = b.blobs[outputs[0]]
    out_shape = {1: ["batch", out.channels], 2: ["batch", None, None],
                 3: ["batch", out.channels, None, None]}[out.dims]
    b.nodes.append(helper.make_node("Identity", [out.name], ["output"], name="output/identity"))
    channels = source.channels if source.channels else "channels"
    graph = helper.make_graph(
        b.nodes,
        param_path.stem,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxlam.ncnn")
    model.ir_version = 8
    set_metadata(model, {"onnxlam.source": f"ncnn:{param_path.name}+{bin_path.name}",
                         "onnxlam.params": str(mb.values)})
    onnx.checker.check_model(model)
    return model


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Set (or replace) ``metadata_props`` entries."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            model.metadata_props.add(key=key, value=str(value))


def bake_program(
    model: onnx.ModelProto,
    *,
    scale: int,
    pad: int,
    pad_mode: str,
    crop: int = 0,
    residual: str | None = None,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Wrap a converted network with a program's border handling.

    input [N, C, h, w] -> pad ``pad`` px on each side (``pad_mode``: "reflect" mirrors
    without repeating the edge pixel, "edge" repeats it) -> network -> drop ``crop`` px
    on each side -> optionally add the input upsampled by nearest neighbour
    (``residual="nearest"``) -> [N, C, s*h, s*w].

    The padding is a Gather whose index vector has length h + 2*pad computed with
    Shape/Add only, and the crop a constant Slice: onnx's shape inference (with
    data_prop) then resolves every size once the input size is fixed, and onnx_ad can
    differentiate the result (it has no reverse rule for reflect/edge Pad or for Slice
    with computed bounds).
    """
    if pad_mode not in ("reflect", "edge"):
        raise ValueError(f"unknown pad_mode {pad_mode!r}")
    net = model.graph
    b = _program_builder(net)
    padded = _pad_input(b, pad, pad_mode)
    n_pre = len(b.nodes)
    body_nodes = _rewired_body(net, padded)
    y = _crop_output(b, "program/net_output", crop)
    y = _add_residual(b, net, y, scale, residual)
    pad_nodes, post_nodes = b.nodes[:n_pre], b.nodes[n_pre:]
    post_nodes.append(helper.make_node("Identity", [y], ["output"], name="program/identity"))
    return _program_model(model, pad_nodes + body_nodes + post_nodes, b.initializers, metadata)


def _program_builder(net: onnx.GraphProto) -> Builder:
    """A builder for the wrapper's own nodes whose fresh names avoid every name the network
    already uses (initializers, node outputs, the graph's input and output)."""
    b = Builder()
    b.layer = Layer("bake", "program", [], [], {}, 0)
    b.used.update(n.name for n in net.initializer)
    b.used.update(o for node in net.node for o in node.output)
    b.used.update({"input", "output"})
    return b


def _border_indices(b: Builder, axis: int, pad: int, pad_mode: str) -> str:
    """Source row (column) of each padded position i in [-pad, n + pad), built from the input's
    Shape with Add/CumSum only, so that shape inference knows its length once the input size is
    fixed."""
    n = b.op("Shape", ["input"], hint=f"program/extent{axis}", start=axis, end=axis + 1)
    count = b.op("Add", [n, b.i64("program/2pad", [2 * pad])], hint=f"program/count{axis}")
    ones = b.op("ConstantOfShape", [count], hint=f"program/ones{axis}",
                value=numpy_helper.from_array(np.array([1], np.int64)))
    i = b.op("Sub", [b.op("CumSum", [ones, b.const("program/axis0", np.int64(0))]),
                     b.i64("program/pad+1", [pad + 1])], hint=f"program/positions{axis}")
    last = b.op("Sub", [n, b.i64("program/one", [1])], hint=f"program/last{axis}")
    if pad_mode == "reflect":  # (n-1) - |(|i|) - (n-1)|
        return b.op("Sub", [last, b.op("Abs", [b.op("Sub", [b.op("Abs", [i]), last])])],
                    hint=f"program/reflect{axis}")
    return b.op("Min", [b.op("Max", [i, b.i64("program/zero", [0])]), last],
                hint=f"program/edge{axis}")


def _pad_input(b: Builder, pad: int, pad_mode: str) -> str:
    """The input padded by ``pad`` px on each side, as a Gather along the rows then one along the
    columns: onnx_ad differentiates a Gather, not a reflect/edge Pad."""
    if not pad:
        return "input"
    padded = b.op("Gather", ["input", _border_indices(b, 2, pad, pad_mode)],
                  hint="program/padded_h", axis=2)
    return b.op("Gather", [padded, _border_indices(b, 3, pad, pad_mode)],
                hint="program/padded_w", axis=3)


def _rewired_body(net: onnx.GraphProto, padded: str) -> list[onnx.NodeProto]:
    """Copies of the network's nodes that read ``padded`` instead of the graph input and write
    ``program/net_output`` instead of the graph output, which the wrapper's tail now produces."""
    body_nodes = []
    for node in net.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = [padded if i == "input" else i for i in node.input]
        if list(node.output) == ["output"]:
            node.output[:] = ["program/net_output"]
        body_nodes.append(node)
    return body_nodes


def _crop_output(b: Builder, y: str, crop: int) -> str:
    """``y`` without ``crop`` px on each side, as a Slice with constant bounds (onnx_ad has no
    reverse rule for a Slice with computed ones)."""
    if not crop:
        return y
    return b.op("Slice", [y, b.i64("program/crop_start", [crop, crop]),
                          b.i64("program/crop_end", [-crop, -crop]),
                          b.i64("program/crop_axes", [2, 3])], hint="program/cropped")


def _add_residual(b: Builder, net: onnx.GraphProto, y: str, scale: int,
                  residual: str | None) -> str:
    """``y`` plus the input upsampled ``scale``× by nearest neighbour when ``residual`` is
    "nearest" (the program adds it to the network's output), ``y`` itself when it is None."""
    if residual is None:
        return y
    if residual != "nearest":
        raise ValueError(f"unknown residual {residual!r}")
    channels = net.input[0].type.tensor_type.shape.dim[1].dim_value
    if not channels:
        raise ValueError("a nearest residual needs a known channel count")
    up = upsample_nearest(b, "input", channels, scale, scale, "program/residual")
    return b.op("Add", [y, up], hint="program/with_residual")


def _program_model(model: onnx.ModelProto, nodes: list[onnx.NodeProto], initializers: list,
                   metadata: dict[str, str] | None) -> onnx.ModelProto:
    """The wrapped graph as a checked model that keeps the network's input, opset, producer, IR
    version and metadata (``metadata`` added), its output's height and width left free since
    padding and cropping change them."""
    net = model.graph
    out_dims = [d.dim_param or d.dim_value or None for d in net.output[0].type.tensor_type.shape.dim]
    graph = helper.make_graph(
        nodes,
        net.name,
        list(net.input),
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims[:2] + [None, None])],
        list(net.initializer) + initializers,
    )
    result = helper.make_model(graph, opset_imports=list(model.opset_import),
                               producer_name=model.producer_name)
    result.ir_version = model.ir_version
    result.metadata_props.extend(model.metadata_props)
    set_metadata(result, metadata or {})
    onnx.checker.check_model(result)
    return result


def append_input_channels(
    model: onnx.ModelProto,
    channels: int,
    constants: np.ndarray,
    maps: tuple[str, ...] = (),
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Wrap a network whose input stacks the image with degradation maps (SRMD's 3 + 15 + 1).

    The result takes ``input`` [N, ``channels``, h, w] and, for each name of ``maps``, one more
    input [N, 1, h, w] (dims named like ``input``'s, so a fixed value broadcasts to the image's
    size: ``onnxlam lam --input NAME=VALUE``), and feeds the network
    Concat(input, constants[k] for every k expanded to h×w, maps...) along the channels, as the
    upstream program's pre-processing does.
    """
    net = model.graph
    b = Builder()
    b.layer = Layer("stack", "program", [], [], {}, 0)
    b.used.update(n.name for n in net.initializer)
    b.used.update(o for node in net.node for o in node.output)
    b.used.update({"input", "output", *maps})
    k = len(constants)
    shape = b.op("Shape", ["input"], hint="stack/shape")
    size = b.op("Concat", [b.op("Slice", [shape, b.i64("stack/0", [0]), b.i64("stack/1", [1])], hint="stack/n"),
                           b.i64("stack/k", [k]),
                           b.op("Slice", [shape, b.i64("stack/2", [2]), b.i64("stack/4", [4])], hint="stack/hw")],
                hint="stack/size", axis=0)
    values = b.const("stack/values", np.asarray(constants, np.float32).reshape(1, k, 1, 1))
    planes = b.op("Expand", [values, size], hint="stack/planes")
    stacked = b.op("Concat", ["input", planes, *maps], hint="stack/stacked", axis=1)
    body = []
    for node in net.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = [stacked if i == "input" else i for i in node.input]
        body.append(node)
    old = net.input[0].type.tensor_type.shape.dim
    dims = [d.dim_param or d.dim_value or None for d in old]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [dims[0], channels, dims[2], dims[3]])]
    inputs += [helper.make_tensor_value_info(m, TensorProto.FLOAT, [dims[0], 1, dims[2], dims[3]]) for m in maps]
    graph = helper.make_graph(b.nodes + body, net.name, inputs, list(net.output),
                              list(net.initializer) + b.initializers)
    result = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name=model.producer_name)
    result.ir_version = model.ir_version
    result.metadata_props.extend(model.metadata_props)
    set_metadata(result, metadata or {})
    onnx.checker.check_model(result)
    return result
