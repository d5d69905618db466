"""What the sanity test produces: typed all the way to `result.json` (see `methods.base.Result`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from onnxlam.lam.result import Window
from onnxlam.methods.base import Provenance, Result

if TYPE_CHECKING:
    import numpy as np

    from onnxlam.methods.sanity.randomise import Layer
    from onnxlam.methods.sanity.statistics import Footprint

RANDOMISATION = ("cascading from the output end: stage k re-draws the weights (not the biases) of the last "
                 "k weight-bearing layers (Conv, ConvTranspose, Gemm, MatMul), each from a normal of its own "
                 "mean and standard deviation, numpy default_rng(seed), drawn in stage order")
STATISTICS = ("Spearman rank correlation (as scipy.stats.spearmanr) and SSIM (as skimage.metrics."
              "structural_similarity, data_range 1) of each stage's map with stage 0's, over the whole map "
              "and outside the window's LR footprint (for SSIM: the mean of skimage's full=True SSIM map "
              "over every pixel outside it); independent_at: the first stage whose whole-map Spearman falls below the "
              "threshold (or whose map is constant), null if none")
CONTROL = "Sobel gradient magnitude of the LR input's luma, abs-normalised (reads no model)"


@dataclass(frozen=True)
class Similarity:
    """A comparison with stage 0's map: over the whole map, and outside the window's footprint (None
    where it is undefined: a constant map, or no pixel outside)."""

    whole: float | None
    outside: float | None


@dataclass(frozen=True)
class Stage:
    """One stage of one explainer: the layer it re-drew (None at stage 0; it keeps the earlier stages'
    draws), its map's DI, and its map's Spearman correlation and SSIM with stage 0's."""

    stage: int
    layer: str | None
    di: float
    spearman: Similarity
    ssim: Similarity


@dataclass(frozen=True)
class Curve:
    """An explainer's way through the stages, and where its map stopped depending on the weights."""

    explainer: str
    stages: tuple[Stage, ...]
    independent_at: int | None

    @property
    def passed(self) -> bool:
        """The map changes with the weights (its correlation fell below the threshold at some stage)."""
        return self.independent_at is not None

    def to_json(self) -> dict:
        return {"explainer": self.explainer, "stages": [_stage_json(s) for s in self.stages],
                "independent_at": self.independent_at, "passed": self.passed}


def _stage_json(stage: Stage) -> dict:
    return {"stage": stage.stage, "layer": stage.layer, "di": stage.di,
            "spearman": {"whole": stage.spearman.whole, "outside": stage.spearman.outside},
            "ssim": {"whole": stage.ssim.whole, "outside": stage.ssim.outside}}


@dataclass(frozen=True)
class SanityResult(Result):
    """The model-parameter randomisation test of one window; `to_json()` is what `result.json` holds."""

    method: ClassVar[str] = "sanity"

    window: Window
    scale: int
    lr_size: tuple[int, int]
    footprint: Footprint              # the window's LR pixels (statistics.footprint)
    attribution: str                  # the explainer tested: lam or a noise tunnel's combination
    seed: int
    threshold: float
    layers: tuple[Layer, ...]         # every weight-bearing layer, in stage order
    method_curve: Curve               # the attribution's stages (result.json: stages, independent_at, passed)
    control: Curve                    # the model-independent control's
    maps: np.ndarray = field(metadata={"array": True})          # float32 S×h×w, stage k's map at k
    control_maps: np.ndarray = field(metadata={"array": True})  # float32 S×h×w, the control's
    lr_image: np.ndarray = field(metadata={"array": True})      # float32 C×h×w in [0, 1], RGB
    provenance: Provenance
    warnings: tuple[str, ...] = ()

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self.method_curve.stages

    @property
    def independent_at(self) -> int | None:
        return self.method_curve.independent_at

    @property
    def passed(self) -> bool:
        return self.method_curve.passed

    def to_json(self) -> dict:
        data: dict = {}
        for key, value in super().to_json().items():  # the attribution's curve in its place, unnested
            if key == "method_curve":
                data.update(stages=value["stages"], independent_at=value["independent_at"], passed=value["passed"])
            else:
                data[key] = value
        return data

    def json_extras(self) -> dict:
        return {"method": self.method, "randomised_layers": len(self.stages) - 1,
                "randomisation": RANDOMISATION, "statistics": STATISTICS, "control_explainer": CONTROL}
