"""Static receptive field (see analysis.py)."""
from onnxlam.graph.receptive_field.analysis import *  # noqa: F401,F403
from onnxlam.graph.receptive_field.analysis import _Analysis  # noqa: F401
