"""The noise tunnel's options: LAM's, and the noisy copies' number, noise level and seed."""
from __future__ import annotations

from dataclasses import dataclass

from onnxlam.lam.options import LamOptions, at_least, non_negative, option

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")
SAMPLES = 10    # Smilkov et al. saw little change past 50; 10 keeps the cost at 10 LAM runs
STDEV = 0.1     # 10 % of the [0, 1] range, the low end of the 10–20 % Smilkov et al. recommend
SEED = 0


@dataclass(frozen=True)
class TunnelOptions(LamOptions):
    """LAM's options and the tunnel's own."""

    samples: int = option(SAMPLES, "--samples", "Noisy copies of the input (the noise tunnel).",
                          check=at_least(1), types=(int,))
    stdev: float = option(STDEV, "--stdev", "Noise standard deviation in [0, 1] units (the noise tunnel).",
                          check=non_negative, types=(int, float))
    seed: int = option(SEED, "--seed", "Seed of the noise (the noise tunnel).", types=(int,))

    def lam(self) -> LamOptions:
        """LAM's options among these."""
        return LamOptions(**{n: getattr(self, n) for n in LamOptions.__dataclass_fields__})
