"""The sanity test's options: LAM's, the noise tunnel's (for its three attributions), the seed of the
re-drawn weights, the stages and the attribution tested."""
from __future__ import annotations

from dataclasses import dataclass

from onnxlam.lam.options import non_negative, option
from onnxlam.methods.noise_tunnel.options import KINDS, SEED, TunnelOptions

ATTRIBUTIONS = ("lam",) + KINDS
ALL = "all"


def _stages(flag: str, value) -> str | None:
    value = canonical_stages(value)
    if value == ALL or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return f"{flag} must be {ALL} or a whole number ≥ 1; got {value!r}"


def _attribution(flag: str, value) -> str | None:
    return None if value in ATTRIBUTIONS else f"{flag} must be one of {', '.join(ATTRIBUTIONS)}; got {value!r}"


def canonical_stages(value):
    """"all", or the stage count as an int (from "3", 3 or " ALL "); other values as given, for the check."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == ALL:
            return ALL
        if text.lstrip("+").isdigit():
            return int(text)
    return value


@dataclass(frozen=True)
class SanityOptions(TunnelOptions):
    """LAM's options (`LamOptions`), the noise tunnel's `samples` and `stdev` (used by its attributions)
    and the test's own: the seed, the stages and the attribution."""

    seed: int = option(SEED, "--seed", "Seed of the re-drawn weights (numpy default_rng) and, for the noise "
                       "tunnel's attributions, of the noise (the same noise at every stage).", check=non_negative,
                       types=(int,))
    stages: str | int = option(ALL, "--stages", "all: one stage per weight-bearing layer; K: stages 0 … K "
                               "(stage k re-draws the last k layers).", check=_stages, types=(str, int))
    attribution: str = option("lam", "--attribution", "The attribution tested: "
                              f"{', '.join(ATTRIBUTIONS)} (the noise tunnel's take --samples and --stdev).",
                              check=_attribution, types=(str,))

    def __post_init__(self):
        # "3" from the command line and 3 from Python are one option value, in result.json too
        object.__setattr__(self, "stages", canonical_stages(self.stages))
