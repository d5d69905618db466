"""The LAM detector D (spec §2), appended to a model as ONNX nodes.

    dh = (y[:, :, :-1, :] − y[:, :, 1:, :])²      dw = (y[:, :, :, :-1] − y[:, :, :, 1:])²
    g  = sqrt(dh[:, :, :, :-1] + dw[:, :, :-1, :])                   N×C×(H−1)×(W−1)
    D  = Σ_{rows, cols} (Σ_c g) · mask_k                             N×K

The windows are not baked in: `lam_mask` (N×K×(H−1)×(W−1), 1 inside window k) is a runtime input,
so one program serves every window of an input shape, and K windows share one forward pass. `sqrt` is guarded with a double `Where`
so that where `dh + dw = 0` both the value and its derivative are exactly 0, never NaN.

A second kind, `"intensity"`, replaces D by the sum of the window's intensities (for the effective
receptive field, `methods/erf/`; Luo et al., NeurIPS 2016):

    D  = Σ_{c, rows, cols} y · mask_k                                  mask N×K×H×W

Its mask covers the whole H×W output (a window may touch the last row and column). The kind is part
of a program's cache key and metadata (`program.py`); the inputs and output keep their names, so the
same integration and gradient checks run on either.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxlam.core.errors import InputError
from onnxlam.graph.model import OUTPUT

MASK = "lam_mask"
OBJECTIVE = "lam_objective"
INT64_MAX = np.iinfo(np.int64).max
LAM = "lam"              # the LAM detector of spec §2
INTENSITY = "intensity"  # the sum of the window's intensities
KINDS = (LAM, INTENSITY)
DESCRIPTIONS = {LAM: "gradient-magnitude sum over a runtime window mask (LAM-SPEC §2)",
                INTENSITY: "intensity sum over a runtime window mask (effective receptive field)"}


def mask_size(kind: str, height: int, width: int) -> tuple[int, int]:
    """The mask's spatial size for an H×W output: (H−1)×(W−1) for LAM, H×W for the intensity sum."""
    return (height, width) if kind == INTENSITY else (height - 1, width - 1)


def window_mask(height: int, width: int, x: int, y: int, size: int) -> np.ndarray:
    """The (H−1)×(W−1) mask of the window with top-left column `x`, row `y` and side `size`."""
    check_window(height, width, x, y, size)
    mask = np.zeros((height - 1, width - 1), np.float32)
    mask[y:y + size, x:x + size] = 1.0
    return mask


def check_window(height: int, width: int, x: int, y: int, size: int) -> None:
    """The window must lie inside the (H−1)×(W−1) gradient-magnitude map of the SR output."""
    if size < 1:
        raise InputError(f"window size must be at least 1; got {size}")
    if x < 0 or y < 0 or x + size > width - 1 or y + size > height - 1:
        raise InputError(
            f"window {size}×{size} at x={x}, y={y} lies outside the {width}×{height} image analysed "
            f"(the SR output, as large as the HR image cropped to a multiple of the scale; a window ends one "
            f"pixel short of its right and bottom edges); choose 0 ≤ x ≤ {width - 1 - size}, "
            f"0 ≤ y ≤ {height - 1 - size}")


def _const(name: str, values, dtype=np.int64) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype)))


def detector_nodes(sr: str = OUTPUT) -> list[onnx.NodeProto]:
    """Nodes computing `lam_objective` from the SR output `sr` and the runtime input `lam_mask`."""
    p = "lam_det_"
    n = [_const(p + "zero", [0]), _const(p + "one", [1]), _const(p + "minus1", [-1]),
         _const(p + "end", [INT64_MAX]), _const(p + "ax2", [2]), _const(p + "ax3", [3]),
         _const(p + "channels", [1]), _const(p + "spatial", [2, 3]), _const(p + "f0", 0.0, np.float32), _const(p + "f1", 1.0, np.float32)]

    def sl(src, dst, start, end, axis):
        n.append(helper.make_node("Slice", [src, p + start, p + end, p + axis], [dst]))

    sl(sr, p + "top", "zero", "minus1", "ax2")      # y[:, :, :-1, :]
    sl(sr, p + "bottom", "one", "end", "ax2")       # y[:, :, 1:, :]
    sl(sr, p + "left", "zero", "minus1", "ax3")     # y[:, :, :, :-1]
    sl(sr, p + "right", "one", "end", "ax3")        # y[:, :, :, 1:]
    n += [helper.make_node("Sub", [p + "top", p + "bottom"], [p + "dh_diff"]),
          helper.make_node("Mul", [p + "dh_diff", p + "dh_diff"], [p + "dh"]),
          helper.make_node("Sub", [p + "left", p + "right"], [p + "dw_diff"]),
          helper.make_node("Mul", [p + "dw_diff", p + "dw_diff"], [p + "dw"])]
    sl(p + "dh", p + "dh_crop", "zero", "minus1", "ax3")   # dh[:, :, :, :-1]
    sl(p + "dw", p + "dw_crop", "zero", "minus1", "ax2")   # dw[:, :, :-1, :]
    n += [helper.make_node("Add", [p + "dh_crop", p + "dw_crop"], [p + "sq"]),
          helper.make_node("Greater", [p + "sq", p + "f0"], [p + "pos"]),
          helper.make_node("Where", [p + "pos", p + "sq", p + "f1"], [p + "safe"]),
          helper.make_node("Sqrt", [p + "safe"], [p + "root"]),
          helper.make_node("Where", [p + "pos", p + "root", p + "f0"], [p + "g"]),
          helper.make_node("ReduceSum", [p + "g", p + "channels"], [p + "g_sum"], keepdims=1),
          helper.make_node("Mul", [p + "g_sum", MASK], [p + "masked"]),
          helper.make_node("ReduceSum", [p + "masked", p + "spatial"], [OBJECTIVE], keepdims=0)]
    return n


def intensity_nodes(sr: str = OUTPUT) -> list[onnx.NodeProto]:
    """Nodes computing `lam_objective` = Σ_{c,rows,cols} sr · lam_mask (mask N×K×H×W) from the SR output."""
    p = "lam_int_"
    return [_const(p + "spatial", [2, 3]), _const(p + "channels", [1]),
            helper.make_node("ReduceSum", [sr, p + "channels"], [p + "y_sum"], keepdims=1),   # N×1×H×W
            helper.make_node("Mul", [p + "y_sum", MASK], [p + "masked"]),                     # N×K×H×W
            helper.make_node("ReduceSum", [p + "masked", p + "spatial"], [OBJECTIVE], keepdims=0)]


def append_detector(model: onnx.ModelProto, keep_sr: bool = True, windows: int | str = "K",
                    kind: str = LAM) -> onnx.ModelProto:
    """A copy of a normalised model (see `model.normalise`) with `lam_mask` in and `lam_objective` out.

    The mask's batch and spatial dims follow the (fixed or symbolic) output shape; `windows` is the
    number of windows K (symbolic by default); `kind` is the detector (LAM or INTENSITY).
    """
    if kind not in KINDS:
        raise InputError(f"unknown detector {kind!r}; choose one of {', '.join(KINDS)}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    out = m.graph.output[0]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in out.type.tensor_type.shape.dim]
    n, h, w = dims[0], dims[2], dims[3]
    if kind == INTENSITY:
        mask_dims = [n if n is not None else "N", windows, h if h is not None else "H", w if w is not None else "W"]
    else:
        mask_dims = [n if n is not None else "N", windows,
                     h - 1 if isinstance(h, int) else "Hm1", w - 1 if isinstance(w, int) else "Wm1"]
    m.graph.input.append(helper.make_tensor_value_info(MASK, TensorProto.FLOAT, mask_dims))
    m.graph.node.extend(intensity_nodes() if kind == INTENSITY else detector_nodes())
    objective = helper.make_tensor_value_info(OBJECTIVE, TensorProto.FLOAT, mask_dims[:2])
    if not keep_sr:
        del m.graph.output[:]
    m.graph.output.append(objective)
    return m
