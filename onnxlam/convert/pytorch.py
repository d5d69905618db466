"""Import PyTorch super-resolution checkpoints to ONNX, with the model's own pre- and post-processing.

A checkpoint (`.pth`, `.pt`, `.ckpt`, `.safetensors`) holds a state dict, not a graph. spandrel
(chaiNNer's loader, also used by OpenModelDB) detects the architecture and its hyper-parameters from
the state dict and builds the PyTorch module; `ModelDescriptor.__call__` is how the model is meant
to be run: it pads the input to the architecture's `size_requirements` (minimum side, multiple of,
square) — reflect padding at the bottom and right, replicate beyond reflect's limit of side − 1 —
calls the network, clamps to [0, 1] and crops the output to scale × the input size.

The exported graph is that call (`SpandrelCall`) without the clamp: LAM attributes the network's
output, and a clamp would zero the gradient wherever the output leaves [0, 1]. Skipping the padding
instead is the most reported LAM error on transformer SR networks (HAT, SwinIR…: a window-size
multiple is assumed by their attention), so it is part of the graph, not left to the user.

Export order: the TorchScript exporter with dynamic height and width, then the dynamo exporter with
dynamic shapes; an export counts as dynamic only when onnxruntime reproduces the PyTorch call at two
sizes (a tracer can bake the trace's size into a graph that still declares dynamic axes). When
neither gives a dynamic graph, the model is exported at a fixed LR size (both exporters in turn).
The source, architecture, size requirements, value range and channel order are recorded in the ONNX
`metadata_props` under `onnxlam.*`, as the ncnn importer does.

`resolve_checkpoint` is what lets every command take a checkpoint where it takes a model: it exports
on demand and caches the ONNX file under `cache_dir()/checkpoints`, keyed by the checkpoint's sha256
(and the LR size, for a fixed-size export).

PyTorch and spandrel are the optional extra `onnxlam[torch]`; they are imported only here, lazily.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from onnxlam.graph.model import SizeRequirements, size_dependent_padding  # noqa: F401 (the API names both here)
from onnxlam.core.errors import InputError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
EXPORTERS = ("torchscript", "dynamo")
OPSET = 17
INSTALL = 'pip install "onnxlam[torch]"'
# onnxruntime against PyTorch: float32 exporters agree to ~1e-6 on images in [0, 1].
TOLERANCE = 1e-4
# Part of the cache key: bump when the exported graph changes, so old cached exports are not reused.
EXPORT_VERSION = 1


def is_checkpoint(path: str | Path) -> bool:
    """True for a path with a checkpoint suffix (whether or not the file exists)."""
    return Path(str(path)).suffix.lower() in CHECKPOINT_SUFFIXES


class ExportError(InputError):
    """Neither exporter produced a graph that onnxruntime runs like the PyTorch call."""


class FixedSizeOnly(ExportError):
    """No dynamic-size export reproduces the model; a fixed LR size is needed."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What spandrel detected in a checkpoint."""

    path: str
    sha256: str
    architecture: str          # spandrel's architecture id, e.g. "HAT"
    architecture_name: str     # its display name
    purpose: str               # "SR" or "Restoration" (scale 1)
    scale: int
    input_channels: int
    output_channels: int
    size_requirements: SizeRequirements
    tiling: str                # spandrel's ModelTiling: supported, discouraged, internal
    tags: tuple[str, ...]
    parameters: int
    value_range: float = 1.0   # spandrel models take and return [0, 1]
    channel_order: str = "rgb"

    def to_json(self) -> dict:
        data = asdict(self)
        data["size_requirements"] = self.size_requirements.to_json()
        data["tags"] = list(self.tags)
        return data


@dataclass(frozen=True)
class ImportResult:
    """An exported checkpoint: where, how, and how closely onnxruntime reproduces the PyTorch call."""

    output: str
    checkpoint: CheckpointInfo
    exporter: str                          # "torchscript" or "dynamo"
    dynamic: bool                          # dynamic height and width (checked at two sizes)
    size: Optional[tuple[int, int]]        # the LR height, width of a fixed-size export
    checked_sizes: tuple[tuple[int, int], ...]
    max_error: float                       # max |ONNX − PyTorch| over the checked sizes
    rejected: tuple[str, ...] = field(default=())  # why earlier attempts were not used

    def to_json(self) -> dict:
        return {"output": self.output, "checkpoint": self.checkpoint.to_json(), "exporter": self.exporter,
                "dynamic": self.dynamic, "size": list(self.size) if self.size else None,
                "checked_sizes": [list(s) for s in self.checked_sizes], "max_error": self.max_error,
                "rejected": list(self.rejected)}


# --------------------------------------------------------------------------------------------- loading
def _spandrel():
    try:
        from ._torchvision import import_spandrel

        return import_spandrel()
    except ImportError as exc:
        raise InputError(f"reading PyTorch checkpoints needs PyTorch and spandrel ({exc}): "
                         f"{INSTALL}") from None


def load_checkpoint(path: str | Path):
    """(spandrel's ImageModelDescriptor in eval mode, CheckpointInfo) for a checkpoint file."""
    from onnxlam.graph.model import file_sha256

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    spandrel = _spandrel()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            desc = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise InputError(f"{path}: spandrel does not recognise the architecture of this state dict; "
                         "onnxlam imports the architectures spandrel and spandrel_extra_arches support "
                         "(export other models to ONNX yourself)") from None
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise InputError(f"{path} is not a PyTorch checkpoint that can be read ({type(exc).__name__}: "
                         f"{first}); give a .pth, .pt, .ckpt or .safetensors state dict") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise InputError(f"{path}: a {desc.architecture.name} {desc.purpose} model takes an image and a "
                         "mask; onnxlam analyses single-image SR and restoration models")
    desc.model.eval()
    req = desc.size_requirements
    info = CheckpointInfo(
        path=str(path), sha256=file_sha256(path), architecture=desc.architecture.id,
        architecture_name=desc.architecture.name, purpose=desc.purpose, scale=int(desc.scale),
        input_channels=int(desc.input_channels), output_channels=int(desc.output_channels),
        size_requirements=SizeRequirements(int(req.minimum), int(req.multiple_of), bool(req.square)),
        tiling=desc.tiling.name.lower(), tags=tuple(desc.tags),
        parameters=sum(p.numel() for p in desc.model.parameters()))
    if info.input_channels not in (1, 3) or info.output_channels != info.input_channels:
        raise InputError(f"{path}: {info.architecture_name} maps {info.input_channels} to "
                         f"{info.output_channels} channels; onnxlam analyses 1→1 (luma) or 3→3 (RGB) models")
    return desc, info


def describe_checkpoint(path: str | Path) -> CheckpointInfo:
    return load_checkpoint(path)[1]


# --------------------------------------------------------------------------------------------- the call
def _call_module(desc):
    """`ModelDescriptor.__call__` as a module, minus the output clamp, written with tensor ops on the
    input's shape so that both exporters keep height and width symbolic.

    Padding as `spandrel.__helpers.size_req.pad_tensor`: reflect by r = min(p, n − 1) rows, then
    replicate the rest. As a gather, padded row i reads row clamp(min(i, 2(n − 1) − i), 0) — i for
    i < n, the reflection 2(n − 1) − i after, and row 0 (the reflection's last row) once past it.
    spandrel pads only when needed; a pad of zero rows here gathers the identity, the same values.
    """
    import torch

    req = desc.size_requirements

    def target(n, minimum: int, multiple: int):
        n = torch.clamp(n, min=minimum) if isinstance(n, torch.Tensor) else torch.sym_max(n, minimum)
        return (n + multiple - 1) // multiple * multiple

    def source_rows(n, length):
        i = torch.arange(length)
        return torch.clamp(torch.minimum(i, 2 * (n - 1) - i), min=0)

    class SpandrelCall(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = desc.model

        def forward(self, x):
            if req.none:
                return desc._call_fn(self.model, x)
            h, w = x.shape[2], x.shape[3]
            th, tw = target(h, req.minimum, req.multiple_of), target(w, req.minimum, req.multiple_of)
            if req.square:
                th = tw = torch.maximum(th, tw) if isinstance(th, torch.Tensor) else torch.sym_max(th, tw)
            x = x.index_select(2, source_rows(h, th)).index_select(3, source_rows(w, tw))
            y = desc._call_fn(self.model, x)
            return y[:, :, : h * desc.scale, : w * desc.scale]

    return SpandrelCall().eval()


# --------------------------------------------------------------------------------------------- export
_OP = r"(?:aten|prims|torchvision|quantized|[a-z_]+)(?:::|\.)[A-Za-z_]\w*"
# The TorchScript exporter: "Exporting the operator 'aten::foo' to ONNX opset version 17 is not supported";
# the dynamo exporter: "No ONNX function found for <OpOverload(op='aten.foo', overload='default')>".
_NAMED = re.compile(rf"(?:operator |op=)'({_OP})'")
_ANY = re.compile(r"\b((?:aten|prims|torchvision|quantized)(?:::|\.)[A-Za-z_]\w*)")


def stopping_op(message: str) -> Optional[str]:
    """The PyTorch op an exporter error names (`aten::foo`, `aten.foo`, `torchvision::nms`…), or None."""
    m = _NAMED.search(message) or _ANY.search(message)
    return m.group(1) if m else None


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send stdout to stderr, at the file-descriptor level too: the exporters print progress and, on
    failure, graphs from C++; stdout is reserved for --json."""
    with contextlib.redirect_stdout(sys.stderr):
        try:
            sys.__stdout__.flush()
            saved = os.dup(1)
        except (AttributeError, OSError, ValueError):
            yield
            return
        os.dup2(2, 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}"


def _export(module, dummy, path: Path, exporter: str, dynamic: bool, batch: bool) -> None:
    """Export with a symbolic batch (when `batch`) and symbolic height and width (when `dynamic`)."""
    import torch

    names = {0: "batch"} if batch else {}
    if dynamic:
        names.update({2: "height", 3: "width"})
    with warnings.catch_warnings(), _stdout_to_stderr():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            out_names = {k: f"out_{v}" if k else v for k, v in names.items()}
            torch.onnx.export(module, (dummy,), str(path), dynamo=False, input_names=["input"],
                              output_names=["output"], opset_version=OPSET,
                              dynamic_axes={"input": names, "output": out_names} if names else None)
        else:
            dims = {k: torch.export.Dim(v, min=1, max=1 << 14) for k, v in names.items()}
            program = torch.onnx.export(module, (dummy,), dynamo=True, input_names=["input"],
                                        output_names=["output"], opset_version=max(OPSET, 18),
                                        dynamic_shapes=(dims,) if dims else None, verbose=False)
            program.save(str(path))


class _BatchMismatch(ExportError):
    """The export runs at batch 1 but not at batch 2 (a reshape baked the trace's batch)."""


def _check(module, path: Path, sizes, channels: int, batch: bool) -> float:
    """max |onnxruntime − PyTorch| over `sizes` at batch 1, then (with `batch`) at batch 2 at the first
    size; raises ExportError where they disagree (_BatchMismatch when only batch 2 does)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = 0.0
    runs = [(1, h, w) for h, w in sizes] + ([(2, *sizes[0])] if batch else [])
    for i, (n, h, w) in enumerate(runs):
        where, fail = (f"{h}×{w}", ExportError) if n == 1 else (f"batch {n}", _BatchMismatch)
        x = torch.rand(n, channels, h, w, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():  # the PyTorch call is per image (spandrel's takes one)
            ref = torch.cat([module(x[k:k + 1]) for k in range(n)]).numpy()
        try:
            got = session.run(None, {name: x.numpy()})[0]
        except Exception as exc:
            raise fail(f"onnxruntime cannot run it at {where} ({_first_line(exc)[:160]})") from None
        if got.shape != ref.shape:
            raise fail(f"at {where} onnxruntime gives {got.shape}, PyTorch {ref.shape}")
        err = float(np.abs(got.astype(np.float64) - ref).max())
        if not err <= TOLERANCE * max(1.0, float(np.abs(ref).max())):
            raise fail(f"at {where} onnxruntime differs from PyTorch by {err:.2g}")
        worst = max(worst, err)
    return worst


def _metadata(info: CheckpointInfo, exporter: str, dynamic: bool, size, batch: bool) -> dict[str, str]:
    import torch

    spandrel = _spandrel()
    padding = {"mode": "reflect, then replicate beyond side - 1", "sides": "bottom, right",
               "crop": "scale x input", "clamp": None}
    return {
        "onnxlam.source": f"pytorch:{Path(info.path).name}",
        "onnxlam.source_sha256": info.sha256,
        "onnxlam.architecture": info.architecture,
        "onnxlam.purpose": info.purpose,
        "onnxlam.scale": str(info.scale),
        "onnxlam.value_range": f"{info.value_range:g}",
        "onnxlam.channel_order": info.channel_order,
        "onnxlam.size_requirements": json.dumps(info.size_requirements.to_json(), sort_keys=True),
        "onnxlam.padding": json.dumps(padding, sort_keys=True),
        "onnxlam.tiling": info.tiling,
        "onnxlam.tags": ",".join(info.tags),
        "onnxlam.params": str(info.parameters),
        "onnxlam.exporter": f"{exporter} (torch {torch.__version__}, spandrel {spandrel.__version__})",
        "onnxlam.dynamic": "true" if dynamic else "false",
        "onnxlam.dynamic_batch": "true" if batch else "false",
        **({"onnxlam.input_size": f"{size[0]} {size[1]}"} if size else {}),
    }


def _check_sizes(info: CheckpointInfo, size) -> tuple[tuple[int, int], ...]:
    if size:
        return (tuple(size),)
    # Two unequal, non-square sizes that are neither multiples of the requirement nor of each other,
    # one below the minimum: a graph that baked its trace size fails at the other.
    base = max(info.size_requirements.minimum, 8)
    return ((base + 3, base + 5), (base - 3, base + 10) if base > 8 else (base + 9, base + 2))


def _attempt(module, dummy, tmp: Path, exporter: str, dynamic: bool, sizes, channels: int,
             rejected: list[str], stopped: dict[str, str]):
    """(path, symbolic batch?, max error) of `exporter`'s export that passes the check, or None.

    A symbolic batch lets onnxlam run several path steps per pass; where the exporter cannot give one
    (it fails, or its graph mixes the batch) it is asked again for batch 1. Why attempts failed goes to
    `rejected`; an exporter that could not export at all goes to `stopped`, with the op it names.
    """
    failures = []
    for batch in (True, False):
        path = tmp / f"{exporter}-{'batch' if batch else 'one'}.onnx"
        try:
            _export(module, dummy, path, exporter, dynamic, batch)
        except Exception as exc:
            op = stopping_op(str(exc))
            failures.append(f"{exporter} stopped at {op}" if op else f"{exporter}: {_first_line(exc)}")
            rejected.append(failures[-1] + (" (symbolic batch)" if batch else ""))
            continue
        try:
            return path, batch, _check(module, path, sizes, channels, batch)
        except _BatchMismatch as exc:
            rejected.append(f"{exporter} with a symbolic batch: {exc}")
        except ExportError as exc:
            rejected.append(f"{exporter}{' dynamic' if dynamic else ''}: {exc}")
            return None  # at batch 1 already: a batch-1 export fails the same way
    if len(failures) == 2:
        stopped[exporter] = failures[-1]
    return None


def export_checkpoint(checkpoint: str | Path, output: str | Path, *, size: Optional[Sequence[int]] = None,
                      exporters: Sequence[str] = EXPORTERS) -> ImportResult:
    """Export `checkpoint` to `output` (written atomically).

    Without `size`: dynamic height and width, or `FixedSizeOnly` when neither exporter gives a graph
    that onnxruntime runs like PyTorch at two sizes. With `size` (LR height, width): a fixed-size export.
    Raises ExportError naming the PyTorch op that stopped the exporters when no export works.
    """
    desc, info = load_checkpoint(checkpoint)  # first: a missing torch extra is reported there
    import onnx
    import torch

    from onnxlam.convert.ncnn import set_metadata
    from onnxlam.core.files import write_atomic

    for e in exporters:
        if e not in EXPORTERS:
            raise InputError(f"unknown exporter {e!r}; choose from {', '.join(EXPORTERS)}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise InputError(f"the LR size must be two positive numbers (height width); got {size}")
    dynamic = size is None
    module = _call_module(desc)
    sizes = _check_sizes(info, size)
    dummy = torch.rand(1, info.input_channels, *sizes[0], generator=torch.Generator().manual_seed(0))
    rejected: list[str] = []
    stopped: dict[str, str] = {}   # exporter -> the op (or error) that stopped it
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="onnxlam-pth-") as tmp:
        for exporter in exporters:
            found = _attempt(module, dummy, Path(tmp), exporter, dynamic, sizes, info.input_channels,
                             rejected, stopped)
            if found is None:
                continue
            path, batch, error = found
            model = onnx.load(str(path))
            set_metadata(model, _metadata(info, exporter, dynamic, size, batch))
            output.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(output, model.SerializeToString())
            return ImportResult(str(output), info, exporter, dynamic, tuple(size) if size else None,
                                sizes, error, tuple(rejected))
    what = f"{checkpoint} ({info.architecture_name})"
    # An op no exporter converts stops a fixed-size export too; anything else (a dynamic-shape
    # constraint the dynamo exporter cannot prove, say) may not.
    if len(stopped) == len(exporters) and (not dynamic or all(" stopped at " in m for m in stopped.values())):
        who = "neither PyTorch exporter could" if len(stopped) > 1 else "the exporter could not"
        raise ExportError(f"{what}: {who} export it: {'; '.join(stopped.values())}")
    if dynamic:
        raise FixedSizeOnly(f"{what} exports at a fixed size only ({'; '.join(rejected)}); give the LR size "
                            "(import-pth --size H W)")
    raise ExportError(f"{what}: no export reproduces the PyTorch call: {'; '.join(rejected)}")


# --------------------------------------------------------------------------------------------- the cache
def lr_size(image: str | Path, scale: int, lr: bool = False) -> tuple[int, int]:
    """The LR height, width onnxlam feeds a ×`scale` model for `image` (spec §1: HR cropped to a
    multiple of the scale, then downsampled; `lr`: the image as is)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as im:
            w, h = im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {image}: {exc}") from None
    return (h, w) if lr else (h // scale, w // scale)


def resolve_checkpoint(path: str | Path, image: str | Path | None = None, lr: bool = False,
                       notify: Optional[Callable[[str], None]] = None) -> Path:
    """The cached ONNX export of checkpoint `path`, exported now if not cached yet.

    Cache entries (`<key>` = the checkpoint's sha256 and EXPORT_VERSION): `<key>.onnx` (dynamic), or, when
    only a fixed size exports, `<key>.fixed.json` (why) and `<key>-<h>x<w>.onnx` per LR size, which needs `image` (and `lr`) to know the size.
    Files are written atomically: a concurrent or killed run leaves no partial export; each export is
    sealed with its sha256 (`<file>.sha256`) and a damaged or unsealed one is exported again.
    """
    from onnxlam.core.files import write_atomic
    from onnxlam.engine.cache import RecordCache, cache_dir, require, seal, sealed
    from onnxlam.graph.model import file_sha256

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    sha = f"{file_sha256(path)}.v{EXPORT_VERSION}"
    root = cache_dir() / "checkpoints"
    dynamic, marker = root / f"{sha}.onnx", root / f"{sha}.fixed.json"
    if sealed(dynamic):
        return dynamic
    say = notify or (lambda _: None)
    fixed_only = RecordCache("checkpoints").load(marker.stem, lambda data: require(
        isinstance(data, dict) and isinstance(data.get("reason"), str), "not {reason: text}") or True)
    if not fixed_only:
        try:
            result = export_checkpoint(path, dynamic)
            seal(dynamic)
            say(f"exported {path} ({result.checkpoint.architecture_name} ×{result.checkpoint.scale}) to ONNX "
                f"with dynamic height and width ({result.exporter} exporter), cached as {dynamic}")
            return dynamic
        except FixedSizeOnly as exc:
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(marker, json.dumps({"reason": str(exc)}).encode())
    if image is None:
        raise InputError(f"{path} exports at a fixed input size only; run a command that names an image, "
                         f"or 'onnxlam import-pth {path} --size H W -o OUT.onnx'")
    info = describe_checkpoint(path)
    h, w = lr_size(image, info.scale, lr)
    fixed = root / f"{sha}-{h}x{w}.onnx"
    if not sealed(fixed):
        result = export_checkpoint(path, fixed, size=(h, w))
        seal(fixed)
        say(f"exported {path} ({info.architecture_name} ×{info.scale}) to ONNX at LR {h}×{w} "
            f"({result.exporter} exporter; no dynamic export reproduces it), cached as {fixed}")
    return fixed
