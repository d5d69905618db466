"""Interpretation methods beyond LAM (issue 12): one method per module."""
