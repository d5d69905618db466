"""The pieces of a result every method shares: the analysed window, the completeness check, and the
JSON form of a field (`to_json_value`) from which each result's `to_json()` is derived
(`methods/base.py`; LAM's result is `methods.lam.result.LamResult`)."""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class Window:
    """The analysed window: top-left column `x`, row `y`, side `size`, in SR-output pixels."""

    x: int
    y: int
    size: int = 16

    def centre_lr(self, scale: int) -> tuple[float, float]:
        """The window's centre (x, y) in LR pixel coordinates (pixel centres at integers)."""
        return ((self.x + self.size / 2) / scale - 0.5, (self.y + self.size / 2) / scale - 0.5)


@dataclass(frozen=True)
class Completeness:
    """Σ A against D(F(x)) − D(F(baseline)): equal up to the Riemann-sum error of the path."""

    attribution_sum: float
    objective_delta: float


def to_json_value(value: Any) -> Any:
    """A field's JSON form: `to_json()` where a type has one, dataclasses field by field, tuples as lists."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if is_dataclass(value):
        return {f.name: to_json_value(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "shape", None) == ():
        return value.item()  # a numpy scalar
    if isinstance(value, Fraction):  # a receptive field's scale: a number, whole where it is
        return int(value) if value.denominator == 1 else float(value)
    return value
