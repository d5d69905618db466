"""onnxruntime sessions: provider choice (CUDA when usable, else CPU) without onnxruntime's log spam."""
from __future__ import annotations

import os
from dataclasses import dataclass

import onnxruntime as ort

from onnxlam.core.errors import InputError

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# onnxruntime-gpu prints pages of errors when it cannot load CUDA, and every failed run logs before it
# raises: the errors we need surface as exceptions, so its own log shows fatal messages only.
ort.set_default_logger_severity(4)


@dataclass
class Session:
    """An inference session and the provider that actually runs it."""

    session: ort.InferenceSession
    provider: str

    def run(self, feeds: dict) -> list:
        return self.session.run(None, feeds)

    @property
    def device(self) -> str:
        return "cuda" if self.provider == CUDA else "cpu"


def _options(arena: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.enable_mem_pattern = False  # with it, the arena holds two copies of the activations (memory.py)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4
    threads = os.environ.get("ONNXLAM_THREADS")
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


_cuda_usable: bool | None = None
_max_ir: int | None = None


def _identity_model(ir_version: int):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=ir_version)


def max_ir_version() -> int:
    """The newest ONNX IR version this onnxruntime loads (probed once).

    A newer `onnx` stamps files with an IR version an older onnxruntime refuses, although the ops
    are the same; sessions are created with the version lowered to this one.
    """
    global _max_ir
    if _max_ir is None:
        import onnx

        _max_ir = 7
        for version in range(onnx.IR_VERSION, 7, -1):
            try:
                ort.InferenceSession(_identity_model(version).SerializeToString(), providers=[CPU])
                _max_ir = version
                break
            except Exception:
                continue
    return _max_ir


def serialise(model) -> bytes:
    """Bytes of a ModelProto for onnxruntime, its IR version lowered to what the runtime loads."""
    limit = max_ir_version()
    if model.ir_version <= limit:
        return model.SerializeToString()
    original = model.ir_version
    model.ir_version = limit
    try:
        return model.SerializeToString()
    finally:
        model.ir_version = original


def cuda_available() -> bool:
    """Whether onnxruntime's CUDA provider actually starts here (probed once, silently).

    onnxruntime-gpu lists the provider even where CUDA's libraries are missing, then logs errors
    and falls back to the CPU; a tiny probe session at fatal-only logging tells the truth quietly.
    """
    global _cuda_usable
    if _cuda_usable is None:
        _cuda_usable = False
        if CUDA in ort.get_available_providers():
            probe = _identity_model(8)
            options = ort.SessionOptions()
            options.log_severity_level = 4
            try:
                session = ort.InferenceSession(probe.SerializeToString(), options, providers=[CUDA, CPU])
                _cuda_usable = session.get_providers()[0] == CUDA
            except Exception:
                _cuda_usable = False
    return _cuda_usable


def cuda_diagnosis() -> str:
    """What was found, for the user without a usable GPU: which onnxruntime, and what it lacks."""
    package = "onnxruntime-gpu" if CUDA in ort.get_available_providers() else "onnxruntime"
    if package == "onnxruntime":
        return (f"this onnxruntime {ort.__version__} has no CUDA provider: install onnxruntime-gpu on a "
                "machine with an NVIDIA GPU")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return (f"onnxruntime-gpu {ort.__version__} is installed but its CUDA provider does not start here{hidden}: "
            "check for an NVIDIA GPU, its driver (nvidia-smi) and the CUDA/cuDNN libraries")


def resolve_device(device: str) -> str:
    """"cuda" or "cpu": where a session for `device` (auto, cpu, cuda) runs."""
    return "cuda" if device in ("auto", "cuda") and cuda_available() else "cpu"


def create_session(model, device: str = "auto", arena: bool = True) -> Session:
    """A session for a ModelProto on `device`: `auto` tries CUDA quietly, else the CPU; `cuda` insists.

    `arena=False` gives memory back after each run (for sessions run rarely, like the plain forward
    pass, whose memory the gradient program needs next). On CUDA the arena grows by what is asked,
    not by powers of two, so the device memory in use is what the runs needed (see `memory.py`).
    """
    model = serialise(model)
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device in ("auto", "cuda") and cuda_available():
        try:
            # TF32 would round convolution inputs to 10-bit mantissas: maps must equal the CPU's.
            tf32 = os.environ.get("ONNXLAM_TF32", "0")
            cuda = {"use_tf32": tf32, "arena_extend_strategy": "kSameAsRequested"}
            session = ort.InferenceSession(model, _options(arena), providers=[(CUDA, cuda), CPU])
            if session.get_providers()[0] == CUDA:
                return Session(session, CUDA)
        except Exception:  # a broken CUDA install: fall back quietly for auto, report for cuda
            if device == "cuda":
                ort.InferenceSession(model, _options(arena), providers=[CPU])  # or the model itself is bad
                raise InputError("--device cuda: onnxruntime could not start its CUDA provider; "
                                 "check the NVIDIA driver and CUDA/cuDNN libraries, or use --device cpu") from None
    if device == "cuda":
        raise InputError(f"--device cuda: no usable GPU ({cuda_diagnosis()}), or use --device cpu")
    return Session(ort.InferenceSession(model, _options(arena), providers=[CPU]), CPU)
