"""What one LAM analysis produces: typed all the way to `result.json`.

`to_json()` is derived from the fields (`methods.base.Result`: arrays left out, nested results
through their own `to_json`, the provenance's keys at the top level), so nothing can overwrite a
core key and consumers read typed fields, not re-parsed JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from onnxlam.lam.result import Completeness, Window
from onnxlam.methods.base import Provenance, Result

if TYPE_CHECKING:
    import numpy as np

    from onnxlam.engine.cropping import Crop
    from onnxlam.engine.memory import MemoryUsage
    from onnxlam.graph.receptive_field import ReceptiveField
    from onnxlam.lam.metrics import RangeStats


@dataclass(frozen=True)
class PathResult(Result):
    """What every analysis by a path-integrated gradient records, a single image's or a video's: the
    window, the path and its integration, the SR output and the model's pixel conventions."""

    window: Window
    scale: int
    lr_size: tuple[int, int]
    path: str
    sigma: float
    fold: int
    kernel_size: int
    completeness: Completeness
    nan_gradients: int
    sr_image: np.ndarray = field(metadata={"array": True})      # float32 C×H×W, as the model returned it
    hr_image: np.ndarray | None = field(metadata={"array": True})  # C×H×W HR cropped to s·h×s·w (None with lr)
    provenance: Provenance
    batch_size: int
    value_range: float
    channel_order: str

    @property
    def sr_size(self) -> tuple[int, int]:
        return int(self.sr_image.shape[1]), int(self.sr_image.shape[2])


@dataclass(frozen=True)
class LamResult(PathResult):
    """Everything one LAM analysis produced; `to_json()` is what `result.json` holds."""

    method: ClassVar[str] = "lam"

    attribution: np.ndarray = field(metadata={"array": True})   # M, float32 h×w, abs-normalised
    gradient: np.ndarray = field(metadata={"array": True})      # A, float32 C×h×w, signed
    di: float
    gini: float
    lr_image: np.ndarray = field(metadata={"array": True})      # float32 C×h×w in [0, 1], RGB: what the model saw
    range: RangeStats
    warnings: tuple[str, ...] = ()   # what the user must know (an approximate memory crop)
    receptive_field: ReceptiveField | None = None
    crop: Crop | None = None         # the LR box analysed, where not the whole image
    memory: MemoryUsage | None = None
    inputs: dict | None = field(default=None, metadata={"optional": True})  # extra model inputs held fixed

    def panel_label(self) -> str:
        """The map's label in panel.png."""
        return "LAM"

    def json_extras(self) -> dict:
        return {"sr_size": list(self.sr_size)}
