"""Video SR models as one-image models: the graph adapter behind `methods/video/`.

A video SR network takes T frames, either as N×T×C×h×w or stacked on channels as N×(T·C)×h×w, and
returns one restored frame (sliding window, EDVR-style: N×C×H×W, the centre frame) or every frame
(recurrent, BasicVSR-style: N×T×C×H×W, or stacked N×(T·C)×H×W). `adapt_video` rewrites such a
model into one with input `video_input` N×(T·C)×h×w (frames stacked on channels, each frame RGB in
[0, 1]) and output `video_output` N×C×H×W (output frame K, RGB in [0, 1]), so the whole one-image
engine (normalise, shape fixing, detector, onnx-ad, crops, batching) applies unchanged.

The file's value range and channel order act per frame here, not on the stacked channel axis: a
plain BGR flip of T·C channels would reverse the frame order as well. The adapted model therefore
carries value range 1 and RGB, and the Analyzer must run it with those (its own normalisation is
then the identity).
"""
from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxlam.core.errors import InputError
from onnxlam.graph.model import (FLOAT_TYPES, MIN_OPSET, ModelInfo, TensorSpec, dims, file_sha256,
                                 load_model, opset_version, parse_range)

VIDEO_INPUT = "video_input"
VIDEO_OUTPUT = "video_output"
OUTPUTS = ("one", "frames", "stacked")  # one restored frame; N×T×C×H×W; N×(T·C)×H×W


@dataclass(frozen=True)
class VideoLayout:
    """How a video model lays out its frames: T frames of C channels in, `output` out."""

    frames: int
    channels: int
    stacked_input: bool   # N×(T·C)×h×w rather than N×T×C×h×w
    output: str           # one of OUTPUTS

    def check_frame(self, frame: int | None) -> int:
        """The output frame K analysed: `frame`, or the centre for a one-frame output (the only one it has)."""
        centre = self.frames // 2
        if self.output == "one":
            if frame not in (None, centre):
                raise InputError(f"the model restores one frame, the centre of its {self.frames} input frames "
                                 f"(frame {centre}); drop --frame or give --frame {centre}")
            return centre
        if frame is None:
            raise InputError(f"the model restores all {self.frames} frames; choose the output frame with "
                             f"--frame K (0…{self.frames - 1})")
        if not 0 <= frame < self.frames:
            raise InputError(f"--frame {frame} is out of range: the model has {self.frames} frames "
                             f"(0…{self.frames - 1})")
        return int(frame)

    def to_json(self) -> dict:
        return {"frames": self.frames, "channels": self.channels, "stacked_input": self.stacked_input,
                "output": self.output}


def _io(model: onnx.ModelProto, where: str) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    weights = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise InputError(f"{where}: a video model needs exactly one input and one output; it has "
                         f"{len(inputs)} and {len(model.graph.output)}")
    for role, v in (("input", inputs[0]), ("output", model.graph.output[0])):
        if v.type.tensor_type.elem_type not in FLOAT_TYPES:
            raise InputError(f"{where}: its {role} '{v.name}' is not a float tensor")
    return inputs[0], model.graph.output[0]


def video_layout(model: onnx.ModelProto, frames: int, where: str = "<memory>") -> VideoLayout:
    """The layout of a video model given `frames` input frames; an InputError when they do not fit."""
    inp, out = _io(model, where)
    di, do = dims(inp) or (), dims(out) or ()
    fixed = lambda d: d if isinstance(d, int) else None  # noqa: E731
    if len(di) == 5:
        t, c = fixed(di[1]), fixed(di[2]) or 3
        if t is not None and t != frames:
            raise InputError(f"{where} takes {t} frames (fixed in the file); {frames} given")
        if c not in (1, 3):
            raise InputError(f"{where}: its frames have {c} channels; onnxlam analyses 1- or 3-channel frames")
        if len(do) == 5:
            if fixed(do[1]) not in (None, frames):
                raise InputError(f"{where}: it returns {do[1]} frames for {frames} input frames")
            return VideoLayout(frames, c, False, "frames")
        if len(do) == 4 and fixed(do[1]) in (None, c):
            return VideoLayout(frames, c, False, "one")
        raise InputError(f"{where}: its output has shape {_text(do)}; a video model returns N×C×H×W "
                         "(the centre frame) or N×T×C×H×W (every frame)")
    if len(di) == 4:
        total = fixed(di[1])
        if total is None:
            raise InputError(f"{where}: its input's channel axis is symbolic; a frames-on-channels video "
                             "model needs it fixed (T·C)")
        if total in (1, 3):  # a one-image model (frames of 1 or 3 channels stacked would be ambiguous)
            raise InputError(f"{where} takes one image ({total} channels), not {frames} frames: "
                             "analyse a single image with one image argument and no --frame")
        c = total // frames if total % frames == 0 else 0
        if c not in (1, 3):
            raise InputError(f"{where} takes {total} input channels, which is not {frames} frames of 1 or 3 "
                             "channels; give as many frames as the model takes")
        oc = fixed(do[1]) if len(do) == 4 else None
        if len(do) == 4 and oc is None:
            oc = _inferred_channels(model, inp, di)
        if len(do) == 4 and oc == c:
            return VideoLayout(frames, c, True, "one")
        if len(do) == 4 and oc == total:
            return VideoLayout(frames, c, True, "stacked")
        if len(do) == 5 and fixed(do[1]) in (None, frames):
            return VideoLayout(frames, c, True, "frames")
        raise InputError(f"{where}: its output has shape {_text(do)}; expected N×{c}×H×W, N×{total}×H×W "
                         f"or N×{frames}×{c}×H×W")
    raise InputError(f"{where}: its input has shape {_text(di)}; a video model takes N×T×C×h×w or "
                     "N×(T·C)×h×w")


def _inferred_channels(model: onnx.ModelProto, inp: onnx.ValueInfoProto, di: tuple) -> int | None:
    """The output's channel count by shape inference at a fixed input shape (dynamic dims: batch 1,
    32×32), where the file leaves it symbolic; None if inference cannot tell."""
    from onnxlam.graph.model import fix_input_shape

    m = onnx.ModelProto()
    m.CopyFrom(model)
    weights = {t.name for t in m.graph.initializer}
    kept = [v for v in m.graph.input if v.name not in weights]
    del m.graph.input[:]
    m.graph.input.extend(kept)
    shape = tuple(d if isinstance(d, int) else (1 if k == 0 else 32) for k, d in enumerate(di))
    try:
        d = dims(fix_input_shape(m, shape).graph.output[0], symbolic=False)
    except InputError:
        return None
    return d[1] if d and len(d) == 4 else None


def _text(d) -> str:
    return "×".join(str(x) if x is not None else "?" for x in d) or "unknown"


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value)))


def adapt_video(model: onnx.ModelProto, layout: VideoLayout, frame: int, value_range: float = 1.0,
                bgr: bool = False) -> onnx.ModelProto:
    """`model` as `video_input` N×(T·C)×h×w (RGB, [0, 1] per frame) → `video_output` N×C×H×W (frame K).

    Front: per-frame RGB→BGR (one Gather over the stacked channels, frame order kept), ×value_range,
    Reshape to N×T×C×h×w unless the model stacks frames itself. Back: frame K (Gather on the frame
    axis, or on its C stacked channels), ÷value_range, BGR→RGB.
    """
    inp, out = _io(model, "<memory>")
    T, C = layout.frames, layout.channels
    bgr = bgr and C == 3
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    pre, post = [], []
    x = VIDEO_INPUT
    if bgr:  # channel t·C + c reads t·C + (C−1−c): each frame flipped, frames in order
        order = np.array([t * C + (C - 1 - c) for t in range(T) for c in range(C)], np.int64)
        pre += [_const("video_bgr_index", order), helper.make_node("Gather", [x, "video_bgr_index"], ["video_bgr"], axis=1)]
        x = "video_bgr"
    if value_range != 1.0:
        pre += [_const("video_in_factor", np.float32(value_range)),
                helper.make_node("Mul", [x, "video_in_factor"], ["video_in_scaled"])]
        x = "video_in_scaled"
    if not layout.stacked_input:  # N×(T·C)×h×w → N×T×C×h×w; h, w read from the input (dynamic sizes)
        pre += [helper.make_node("Shape", [x], ["video_shape"]),
                _const("video_hw_at", np.array([2], np.int64)), _const("video_hw_end", np.array([4], np.int64)),
                helper.make_node("Slice", ["video_shape", "video_hw_at", "video_hw_end"], ["video_hw"]),
                _const("video_ntc", np.array([-1, T, C], np.int64)),
                helper.make_node("Concat", ["video_ntc", "video_hw"], ["video_5d"], axis=0),
                helper.make_node("Reshape", [x, "video_5d"], ["video_frames"])]
        x = "video_frames"
    pre.append(helper.make_node("Identity", [x], [inp.name], name="video_input_to_model"))
    y = out.name
    if layout.output == "frames":  # a scalar index drops the frame axis: N×C×H×W
        post += [_const("video_frame_index", np.array(frame, np.int64)),
                 helper.make_node("Gather", [y, "video_frame_index"], ["video_frame"], axis=1)]
        y = "video_frame"
    elif layout.output == "stacked":
        post += [_const("video_frame_index", np.arange(frame * C, frame * C + C, dtype=np.int64)),
                 helper.make_node("Gather", [y, "video_frame_index"], ["video_frame"], axis=1)]
        y = "video_frame"
    if value_range != 1.0:
        post += [_const("video_out_factor", np.float32(1.0 / value_range)),
                 helper.make_node("Mul", [y, "video_out_factor"], ["video_out_scaled"])]
        y = "video_out_scaled"
    if bgr:
        post += [_const("video_rgb_index", np.array([2, 1, 0], np.int64)),
                 helper.make_node("Gather", [y, "video_rgb_index"], ["video_rgb"], axis=1)]
        y = "video_rgb"
    post.append(helper.make_node("Identity", [y], [VIDEO_OUTPUT], name="video_output_from_model"))
    body = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(body)
    di, do = dims(inp), dims(out)
    n, h, w = di[0], di[-2], di[-1]
    del g.input[:]  # initializers listed as inputs go: one image input from here on
    g.input.append(helper.make_tensor_value_info(VIDEO_INPUT, TensorProto.FLOAT, [n, T * C, h, w]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(VIDEO_OUTPUT, TensorProto.FLOAT, [do[0], C, do[-2], do[-1]]))
    return m


@dataclass(frozen=True)
class VideoModel:
    """A video model adapted to one image (`adapt_video`), with what the adaptation fixed."""

    model: onnx.ModelProto
    info: ModelInfo          # of the adapted model: value range 1, RGB, T·C channels
    layout: VideoLayout
    frame: int               # K, the output frame analysed
    value_range: float       # the file's own per-frame pixel convention
    channel_order: str
    file_sha256: str         # of the file itself


def open_video_model(path, frames: int, frame: int | None, value_range: float | None = None,
                     bgr: bool | None = None) -> VideoModel:
    """Load a video model file and adapt it (`adapt_video`) for `frames` frames and output frame `frame`.

    The adapted model's `ModelInfo` says value range 1, RGB; its sha256 folds in T, K, the layout and
    the per-frame pixel convention, so cached programs are never shared between them.
    `value_range` / `bgr` override the file's `onnxlam.value_range` / `onnxlam.channel_order` metadata.
    """
    model = load_model(path)
    where = str(path)
    layout = video_layout(model, frames, where)
    k = layout.check_frame(frame)
    if opset_version(model) < MIN_OPSET:
        raise InputError(f"{where}: opset {opset_version(model)}; re-export the video model with opset ≥ {MIN_OPSET}")
    meta = {p.key: p.value for p in model.metadata_props}
    vr = parse_range(meta.get("onnxlam.value_range", "1"), f"{where} metadata onnxlam.value_range") \
        if value_range is None else float(value_range)
    order = meta.get("onnxlam.channel_order", "rgb").lower() if bgr is None else ("bgr" if bgr else "rgb")
    if order not in ("rgb", "bgr"):
        raise InputError(f"{where}: metadata onnxlam.channel_order is {order!r}; expected rgb or bgr")
    adapted = adapt_video(model, layout, k, vr, order == "bgr")
    file_sha = file_sha256(path)
    sha = hashlib.sha256(f"{file_sha}|video|T={layout.frames}|C={layout.channels}|"
                         f"stacked={layout.stacked_input}|out={layout.output}|K={k}|range={vr!r}|{order}"
                         .encode()).hexdigest()
    inp, out = adapted.graph.input[0], adapted.graph.output[0]
    histogram = collections.Counter(n.op_type for n in model.graph.node)
    info = ModelInfo(path=where, sha256=sha, input=TensorSpec(inp.name, TensorProto.FLOAT, dims(inp)),
                     output=TensorSpec(out.name, TensorProto.FLOAT, dims(out)), opset=opset_version(model),
                     channels=layout.frames * layout.channels, value_range=1.0, channel_order="rgb",
                     parameters=sum(int(np.prod(t.dims)) for t in model.graph.initializer),
                     op_histogram=dict(histogram.most_common()))
    return VideoModel(adapted, info, layout, k, vr, order, file_sha)
