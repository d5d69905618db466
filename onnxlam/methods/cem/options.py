"""CEM's options, declared once: the command's flags, the report's (--cem-…), the API's keywords."""
from __future__ import annotations

from dataclasses import dataclass

from onnxlam.lam.options import ModelOptions, at_least, non_negative, option

TASKS = ("sr", "dn")
BANK_SIZE = 10_000    # the public bank's size (patch-DIV2K-8-Demo)
NOISE_SIGMA = 50.0    # the DN yml's noise level, in 8-bit grey levels


def _task(flag: str, value) -> str | None:
    if value in ("auto",) + TASKS:
        return None
    return (f"{flag} {value!r}: onnxlam computes CEM for sr (super-resolution) and dn (denoising); dr needs "
            "the public code's OpenCV rain generator, which is not shipped")


@dataclass(frozen=True)
class CemOptions(ModelOptions):
    """The options of a causal effect map (CEM-SPEC's defaults), and the model's."""

    size: int = option(32, "--size", "ROI side in output pixels.", check=at_least(1), types=(int,))
    block: int = option(8, "--block", "Block side in output pixels (block // scale input pixels).",
                        check=at_least(1), types=(int,))
    draws: int = option(3, "--draws", "Coarse interventions per block.", check=at_least(1), types=(int,))
    refine: int = option(50, "--refine", "Interventions per refined block (0: no refinement).",
                         check=non_negative, types=(int,))
    tol: float = option(0.01, "--tol", "Tolerance in dB: the refinement threshold, and |CE| below it is 0.",
                        check=non_negative, types=(int, float))
    seed: int = option(0, "--seed", "Seed of the patch bank, the draws and the DN noise.", types=(int,))
    patches: str | None = option(None, "--patches", "Folder of images to cut the patch bank from (default: the "
                                 "bundled photographs).", types=(str,))
    bank_size: int = option(BANK_SIZE, "--bank-size", "Patches in the bank.", check=at_least(1), types=(int,))
    task: str = option("auto", "--task", "sr, dn, or auto (sr for scale > 1, else dn).", check=_task, types=(str,))
    noise: float = option(NOISE_SIGMA, "--noise", "DN noise σ in grey levels.", check=non_negative,
                          types=(int, float))
    crop: bool = option(True, "--crop/--no-crop", "Run a local network only on the LR crop the ROI depends on "
                        "(exact; the default).", types=(bool,))
