"""What one LAM analysis produces: typed all the way to `result.json`.

`LamResult.to_json()` is derived from the fields (arrays left out, nested results through their own
`to_json`), so nothing can overwrite a core key and consumers read typed fields, not re-parsed JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxlam.lam.metrics import RangeStats

if TYPE_CHECKING:  # the later stages' result types; only their to_json() is used here
    from onnxlam.engine.cropping import Crop
    from onnxlam.engine.memory import MemoryUsage
    from onnxlam.graph.receptive_field import ReceptiveField
    from onnxlam.methods.noise_tunnel import TunnelRecord


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
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class LamResult:
    """Everything one LAM analysis produced; `to_json()` is what `result.json` holds."""

    attribution: np.ndarray = field(metadata={"array": True})   # M, float32 h×w, abs-normalised
    gradient: np.ndarray = field(metadata={"array": True})      # A, float32 C×h×w, signed
    di: float
    gini: float
    window: Window
    scale: int
    lr_size: tuple[int, int]
    path: str
    sigma: float
    fold: int
    kernel_size: int
    completeness: Completeness
    nan_gradients: int
    lr_image: np.ndarray = field(metadata={"array": True})      # float32 C×h×w in [0, 1], RGB: what the model saw
    sr_image: np.ndarray = field(metadata={"array": True})      # float32 C×H×W, as the model returned it
    hr_image: np.ndarray | None = field(metadata={"array": True})  # C×H×W HR cropped to s·h×s·w (None with lr)
    model: str
    model_sha256: str
    image: str
    provider: str
    seconds: float
    batch_size: int
    value_range: float
    channel_order: str
    range: RangeStats
    warnings: tuple[str, ...] = ()   # what the user must know (an approximate memory crop)
    receptive_field: ReceptiveField | None = None
    crop: Crop | None = None         # the LR box analysed, where not the whole image
    memory: MemoryUsage | None = None
    noise_tunnel: TunnelRecord | None = field(default=None, metadata={"optional": True})  # noisy copies combined
    inputs: dict | None = field(default=None, metadata={"optional": True})  # extra model inputs held fixed

    @property
    def sr_size(self) -> tuple[int, int]:
        return int(self.sr_image.shape[1]), int(self.sr_image.shape[2])

    def to_json(self) -> dict:
        data = {f.name: to_json_value(getattr(self, f.name)) for f in fields(self) if not f.metadata.get("array")
                and not (f.metadata.get("optional") and getattr(self, f.name) is None)}
        data["sr_size"] = list(self.sr_size)
        data["seconds"] = round(self.seconds, 4)
        return data
