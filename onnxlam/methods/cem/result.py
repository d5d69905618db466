"""What one CEM run produces: typed all the way to `result.json`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

from onnxlam.lam.result import Window
from onnxlam.methods.base import Provenance, Result

if TYPE_CHECKING:
    import numpy as np

    from onnxlam.engine.cropping import Crop


@dataclass(frozen=True)
class Roi:
    """The region of interest: top-left column `x`, row `y`, side `size`, in output pixels."""

    x: int
    y: int
    size: int = 32

    def to_json(self) -> dict:
        return {"x": self.x, "y": self.y, "size": self.size}


@dataclass(frozen=True)
class Draw:
    """One intervention's random content: a bank patch (block×block×C uint8, output pixels) and, for
    denoising, the noise added to it after resizing (b×b×C float64, in [0, 1] units)."""

    patch: np.ndarray
    noise: np.ndarray | None = None


DrawFn = Callable[[str, int, int, int], Draw]  # (pass "coarse"/"fine", row, col, k) → Draw


@dataclass(frozen=True)
class BankInfo:
    """Where the patch bank came from: `source` (a folder, or "bundled"), `size` patches, `seed`."""

    source: str
    size: int
    seed: int
    images: int

    def to_json(self) -> dict:
        return {"source": self.source, "size": self.size, "seed": self.seed, "images": self.images}


@dataclass(frozen=True)
class CemParams:
    """The parameters of one run (§ Notation): block in output px, draws Nc, refine Nf, tol in dB."""

    task: str
    block: int
    draws: int
    refine: int
    tol: float
    seed: int
    noise: float                      # DN noise σ in grey levels (unused for SR)
    bank: BankInfo | None             # None when the draws were supplied

    def to_json(self) -> dict:
        return {"task": self.task, "block": self.block, "draws": self.draws, "refine": self.refine,
                "tol": self.tol, "seed": self.seed, "noise": self.noise,
                "bank": self.bank.to_json() if self.bank else "supplied"}


@dataclass(frozen=True)
class Summary:
    """§5 over the non-ROI blocks; min/max/argmin/argmax over the map with ROI blocks at 0 (as the code)."""

    positive: int
    negative: int
    neutral: int
    roi_blocks: int
    minimum: float
    maximum: float
    argmin: tuple[int, int]
    argmax: tuple[int, int]

    @property
    def effect_range(self) -> float:
        return self.maximum - self.minimum

    def to_json(self) -> dict:
        return {"positive": self.positive, "negative": self.negative, "neutral": self.neutral,
                "roi_blocks": self.roi_blocks, "min": self.minimum, "max": self.maximum,
                "argmin": list(self.argmin), "argmax": list(self.argmax), "range": self.effect_range}


@dataclass(frozen=True)
class CemMemory:
    """How the interventions' batch was sized: the device, the limit, one forward pass's measured need
    per image and what was in use before (None where not measurable)."""

    device: str
    limit: int
    per_image: float | None
    in_use: float | None

    def to_json(self) -> dict:
        return {"device": self.device, "limit": self.limit, "per_image": self.per_image, "in_use": self.in_use,
                "counts": "resident set of the process" if self.device == "cpu"
                else "device memory held by onnxlam's sessions"}


@dataclass(frozen=True)
class CemResult(Result):
    """Everything one CEM run produced; `to_json()` is what `result.json` holds: the fields (arrays
    left out, the provenance's keys at the top level), with the summary as "counts" and "effect" and
    the parameters as "parameters"."""

    method: ClassVar[str] = "cem"

    effect: np.ndarray = field(metadata={"array": True})       # CE, float64 n_h×n_w dB, tol-zeroed; NaN on ROI blocks
    psnr_coarse: np.ndarray = field(metadata={"array": True})  # C, float64 n_h×n_w×Nc
    psnr_fine: np.ndarray = field(metadata={"array": True})    # F, float64 n_h×n_w×Nf; NaN where not refined
    refined: np.ndarray = field(metadata={"array": True})      # bool n_h×n_w
    roi_mask: np.ndarray = field(metadata={"array": True})     # bool n_h×n_w: the ROI's own blocks
    reference_psnr: float                                       # O
    summary: Summary
    roi: Roi
    params: CemParams
    scale: int
    block_input: int                                            # b, input pixels
    input_image: np.ndarray = field(metadata={"array": True})  # x, uint8 h×w×C: what the model saw
    truth: np.ndarray = field(metadata={"array": True})        # I, uint8 H×W×C
    provenance: Provenance
    batch_size: int
    forward_passes: int
    memory: CemMemory | None = None
    crop: Crop | None = None         # the LR box the interventions ran on, None: all of it
    warnings: tuple[str, ...] = ()

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.effect.shape)

    @property
    def window(self) -> Window:
        """The ROI, as every method's results name their window."""
        return Window(self.roi.x, self.roi.y, self.roi.size)

    def json_extras(self) -> dict:
        s = self.summary
        return {"counts": {"positive": s.positive, "negative": s.negative, "neutral": s.neutral,
                           "roi_blocks": s.roi_blocks},
                "effect": {"min": s.minimum, "max": s.maximum, "argmin": list(s.argmin), "argmax": list(s.argmax),
                           "range": s.effect_range, "range_text": f"{s.effect_range:.2f}"},
                "grid": list(self.grid), "refined_blocks": int(self.refined.sum()),
                "lr_size": list(self.input_image.shape[:2]), "sr_size": list(self.truth.shape[:2])}

    def to_json(self) -> dict:
        data = super().to_json()
        del data["summary"]  # written as "counts" and "effect" (json_extras)
        data["parameters"] = data.pop("params")
        return {"method": self.method, **data}
