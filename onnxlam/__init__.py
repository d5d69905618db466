"""onnxlam: Local Attribution Maps (Gu & Dong, CVPR 2021) for any super-resolution network in ONNX.

    >>> import onnxlam
    >>> result = onnxlam.analyze("model.onnx", "photo.png", window=(120, 80))
    >>> result.di, result.attribution.shape

The package reads as the pipeline: `lam/` (the method: options, paths, integration, metrics,
results) → `graph/` (model inspection, detector, rewrites, gradient check, receptive field) →
`engine/` (programs, cache, runtime, memory, planning, the Analyzer) → `render/` (pictures,
figures, outputs) → `batch/` (report, gate, sweep) → `convert/` (ncnn, the collection) → `cli/`.

Importing the package loads nothing heavy: the names below are imported on first use, so
`onnxlam --help` and `import onnxlam` do not load onnxruntime, onnx-ad or scipy.
"""
from __future__ import annotations

import importlib

from onnxlam.core.version import __version__
from onnxlam.core.errors import InputError, NumericalError, OnnxlamError

_LAZY = {  # public name -> module that defines it
    "analyze": "onnxlam.engine.analyzer", "Analyzer": "onnxlam.engine.analyzer",
    "LamResult": "onnxlam.lam.result", "Window": "onnxlam.lam.result", "Completeness": "onnxlam.lam.result",
    "LamOptions": "onnxlam.lam.options", "RangeStats": "onnxlam.lam.metrics",
}
_MODULES = {  # the pieces the README names, importable as `onnxlam.paths` etc. (their homes moved)
    "paths": "onnxlam.lam.paths", "metrics": "onnxlam.lam.metrics", "pictures": "onnxlam.render.pictures",
    "program": "onnxlam.engine.program",
}

__all__ = ["__version__", "analyze", "Analyzer", "LamResult", "LamOptions", "Window", "Completeness", "RangeStats",
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
