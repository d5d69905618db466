"""The result of the analysis: an SR model's static receptive field."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from fractions import Fraction

RECORD_FORMAT = "1"  # of `to_record`: bump when the analysis would answer differently, so cached fields are redone




@dataclass(frozen=True)
class ReceptiveField:
    """The static receptive field of an SR model (see the module docstring for the definitions)."""

    global_: bool
    reach: tuple[int, int, int, int] | None          # (top, bottom, left, right) in LR pixels
    reason: str
    scale: tuple[Fraction, Fraction] | None = None   # SR samples per LR pixel (rows, cols)
    period: tuple[int, int] | None = None            # LR alignment of shift equivariance
    period_reason: str = ""                          # why period is None
    size: tuple[int, int] | None = None              # the LR size that row_span/col_span refer to
    row_span: tuple[tuple[int, int], ...] = field(default=(), repr=False)  # per SR row: LR rows
    col_span: tuple[tuple[int, int], ...] = field(default=(), repr=False)  # per SR col: LR cols
    sizes: tuple[tuple[int, int], ...] = ()          # every LR size analysed
    confirmed: bool = False                          # same answer at the two largest sizes
    # reach by SR phase: entry r holds (top, bottom) for SR rows Y ≡ r (mod len), len = period·s
    # (the pattern repeats every period LR pixels), the max over all such rows; same for columns
    row_phase_reach: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    col_phase_reach: tuple[tuple[int, int], ...] = field(default=(), repr=False)

    @property
    def radius(self) -> tuple[int, int] | None:
        """Symmetric reach (rows, cols): max(top, bottom), max(left, right)."""
        if self.reach is None:
            return None
        t, b, l, r = self.reach
        return max(t, b), max(l, r)

    @property
    def local(self) -> bool:
        return not self.global_

    def describe(self) -> str:
        """One line for people (`onnxlam inspect`)."""
        if self.global_:
            return f"global: {self.reason}"
        t, b, l, r = self.reach
        return f"{t + b + 1}×{l + r + 1} LR px (reach top/bottom/left/right {t}, {b}, {l}, {r})"

    def to_json(self) -> dict:
        return {
            "global": self.global_,
            "reach": None if self.reach is None else dict(zip(("top", "bottom", "left", "right"),
                                                              self.reach)),
            "radius": None if self.radius is None else list(self.radius),
            "reason": self.reason,
            "scale": None if self.scale is None else [int(s) if s.denominator == 1 else float(s) for s in self.scale],
            "period": None if self.period is None else list(self.period),
            "period_reason": self.period_reason,
            "sizes": [list(s) for s in self.sizes],
            "confirmed": self.confirmed,
        }

    def to_record(self) -> dict:
        """Every field, exactly (fractions as [numerator, denominator]): what `from_record` reads back."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.scale is not None:
            record["scale"] = [[s.numerator, s.denominator] for s in self.scale]
        return record

    @classmethod
    def from_record(cls, record: dict) -> ReceptiveField:
        def tuples(value):
            return tuple(tuples(v) for v in value) if isinstance(value, list) else value

        values = {f.name: tuples(record[f.name]) for f in fields(cls)}
        if values["scale"] is not None:
            values["scale"] = tuple(Fraction(n, d) for n, d in values["scale"])
        return cls(**values)
