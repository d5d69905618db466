"""Batch reports (see run.py)."""
from onnxlam.batch.report.run import *  # noqa: F401,F403
