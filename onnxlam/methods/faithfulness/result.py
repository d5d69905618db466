"""What one faithfulness check produces, typed all the way to `result.json` (see `curves.py` for the
definitions): the map's deletion and insertion curves, the random orders' areas, where the window's
receptive field ends, Captum's two metrics, and the provenance every result has."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar

from onnxlam.lam.result import Window, to_json_value
from onnxlam.methods.base import Provenance, Result

if TYPE_CHECKING:
    import numpy as np

    from onnxlam.engine.cropping import Crop


@dataclass(frozen=True)
class Curve:
    """One curve of the map's order: D(F(x_f)) per fraction (`detector`), divided by D(F(x))
    (`normalised`), its area, and the window's PSNR against the HR image (None with --lr; an entry
    None where the window equals the HR image)."""

    detector: tuple[float, ...]
    normalised: tuple[float, ...]
    auc: float
    psnr: tuple[float | None, ...] | None = None


@dataclass(frozen=True)
class RandomControl:
    """The curves of `orders` random orders (`numpy.random.default_rng(seed).permutation`, in turn):
    each one's normalised scores and area, their mean and sample standard deviation (ddof = 1), and
    the map's z-score against them (None without two orders or without spread)."""

    orders: int
    seed: int
    deletion_auc: tuple[float, ...]
    insertion_auc: tuple[float, ...]
    deletion_mean: float | None
    deletion_std: float | None
    insertion_mean: float | None
    insertion_std: float | None
    deletion_z: float | None
    insertion_z: float | None
    deletion_normalised: tuple[tuple[float, ...], ...] = ()
    insertion_normalised: tuple[tuple[float, ...], ...] = ()

    def to_json(self) -> dict:
        data = {k: to_json_value(getattr(self, k)) for k in self.__dataclass_fields__}
        data["order"] = "numpy.random.default_rng(seed).permutation(h·w), drawn in turn"
        data["std"] = "sample standard deviation (ddof = 1)"
        data["faithful"] = ("z > 0: better than random (deletion_z = (mean − AUC)/std: D falls faster; "
                            "insertion_z = (AUC − mean)/std: D rises faster)")
        return data


@dataclass(frozen=True)
class Reach:
    """Where the window's static receptive field ends: its LR box (top, left, bottom, right; bottom and
    right exclusive; None for a global network), the fraction of the LR pixels outside it (deleting
    or inserting them cannot change D) and the fraction of the map's order before its first pixel
    outside (None where none is outside)."""

    box: tuple[int, int, int, int] | None
    outside: float
    map_first_outside: float | None

    def to_json(self) -> dict:
        note = ("global network: every LR pixel may change D" if self.box is None else
                "pixels outside the box cannot change D: the curves are flat where the order takes them")
        return {"box": None if self.box is None else list(self.box), "outside": self.outside,
                "map_first_outside": self.map_first_outside, "note": note}


@dataclass(frozen=True)
class Infidelity:
    """Captum's infidelity of the gradient attribution Φ = ∇_x D(F(x)), not normalised."""

    value: float
    samples: int
    stdev: float
    seed: int

    def to_json(self) -> dict:
        return {**asdict(self), "attribution": "gradient dD/dx at the input (Saliency, signed)",
                "perturbation": "I = default_rng(seed + 1).normal(0, stdev, S×C×h×w) as float32; input x − I"}


@dataclass(frozen=True)
class Sensitivity:
    """Captum's sensitivity-max of the gradient attribution Φ = ∇_x D(F(x)) (Frobenius norm)."""

    value: float
    samples: int
    radius: float
    seed: int

    def to_json(self) -> dict:
        return {**asdict(self), "attribution": "gradient dD/dx at the input (Saliency, signed)",
                "perturbation": "u = default_rng(seed + 2).uniform(-radius, radius, S×C×h×w) as float32; "
                                "input x + u"}


@dataclass(frozen=True)
class FaithfulnessResult(Result):
    """Everything one faithfulness check of one window produced; `to_json()` is what `result.json` holds."""

    method: ClassVar[str] = "faithfulness"

    attribution: np.ndarray = field(metadata={"array": True})  # the map M tested, float32 h×w
    window: Window
    scale: int
    lr_size: tuple[int, int]
    map_method: str                 # the registered method whose map was tested
    map_di: float
    fractions: tuple[float, ...]
    pixels: tuple[int, ...]         # n(f) = int(round(f·h·w)) per fraction
    sigma: float                    # the baseline's blur K(σ), as the blur path's
    kernel_size: int
    detector_input: float           # D(F(x))
    detector_baseline: float        # D(F(x̃))
    deletion: Curve
    insertion: Curve
    random: RandomControl
    reach: Reach
    infidelity: Infidelity
    sensitivity: Sensitivity
    forwards: int                   # network evaluations of the curves (equal images evaluated once)
    batch_size: int                 # images per forward run
    provenance: Provenance
    crop: Crop | None = None        # the LR box the forwards ran on, where not the whole image
    warnings: tuple[str, ...] = ()
    lr_image: np.ndarray | None = field(default=None, repr=False, metadata={"array": True})

    def json_extras(self) -> dict:
        return {"method": self.method}
