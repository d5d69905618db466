"""onnxlam: Local Attribution Maps (Gu & Dong, CVPR 2021) for any super-resolution network in ONNX.

    >>> import onnxlam
    >>> onnxlam.method_names()
    >>> result = onnxlam.attribute("model.onnx", "photo.png", method="lam", window=(120, 80))
    >>> result.di, result.attribution.shape, result.save("out/")

The package reads as the pipeline, one layer a subpackage, in the order `LAYERS` declares (a module
imports only from its own layer and the layers before it; `tests/test_layout.py` holds every import to
it, those inside functions and under TYPE_CHECKING included): `core/` (errors, files, sizes, the
version) → `lam/` (the method's math: options, paths, integration, metrics) → `graph/` (model
inspection, detector, rewrites, receptive field) → `engine/` (programs, gradient check, cache,
runtime, memory, planning, the `Model`) → `convert/` (ncnn, PyTorch checkpoints, the collection:
below the batch work, which resolves collection names) → `render/` (pictures, figures) →
`methods/` (the method registry: LAM, the noise tunnel, CEM, ERF, video LAM, their results and
files) → `batch/` (report, gate, sweep, cluster) → `api` (`attribute`, `Model`) → `cli/`. This
module and `__main__` sit on top; nothing inside the package imports them.

Importing the package loads nothing heavy: the names below are imported on first use, so
`onnxlam --help` and `import onnxlam` do not load onnxruntime, onnx-ad or scipy.
"""
from __future__ import annotations

import importlib

from onnxlam.core.version import __version__
from onnxlam.core.errors import InputError, NumericalError, OnnxlamError

LAYERS = ("core", "lam", "graph", "engine", "convert", "render", "methods", "batch", "api", "cli")

_LAZY = {  # public name -> module that defines it
    "attribute": "onnxlam.api", "Model": "onnxlam.api", "method_names": "onnxlam.api",
    "analyze": "onnxlam.methods.lam.analyzer", "Analyzer": "onnxlam.methods.lam.analyzer",
    "LamResult": "onnxlam.methods.lam.result", "Window": "onnxlam.lam.result", "Completeness": "onnxlam.lam.result",
    "LamOptions": "onnxlam.lam.options", "RangeStats": "onnxlam.lam.metrics",
}
_MODULES = {  # the pieces the README names, importable as `onnxlam.paths` etc. (their homes moved)
    "paths": "onnxlam.lam.paths", "metrics": "onnxlam.lam.metrics", "pictures": "onnxlam.render.pictures",
    "program": "onnxlam.engine.program",
}

__all__ = ["__version__", "attribute", "Model", "method_names", "analyze", "Analyzer", "LamResult", "LamOptions", "Window", "Completeness", "RangeStats",
           "OnnxlamError", "InputError", "NumericalError", *_MODULES]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'onnxlam' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
