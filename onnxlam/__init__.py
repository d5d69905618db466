"""onnxlam: Local Attribution Maps (Gu & Dong, CVPR 2021) for any super-resolution network in ONNX.

    >>> import onnxlam
    >>> result = onnxlam.analyze("model.onnx", "photo.png", window=(120, 80))
    >>> result.di, result.attribution.shape
"""
from onnxlam._version import __version__
from onnxlam.engine.analyzer import Analyzer, Completeness, LamResult, Window, analyze
from onnxlam.errors import InputError, NumericalError, OnnxlamError

__all__ = ["__version__", "analyze", "Analyzer", "LamResult", "Window", "Completeness",
           "OnnxlamError", "InputError", "NumericalError"]
