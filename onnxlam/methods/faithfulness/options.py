"""The faithfulness check's options: LAM's (for the map it tests, and the blur of its baseline), the
noise tunnel's (when the map is a tunnel's), the fractions, the random orders and the seed."""
from __future__ import annotations

from dataclasses import dataclass

from onnxlam.lam.options import non_negative, option
from onnxlam.methods.noise_tunnel.options import KINDS, SEED, TunnelOptions

FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
RANDOM = 5  # random orders: enough for a standard deviation, cheap next to the map itself
ATTRIBUTIONS = ("lam",) + KINDS  # the registered methods whose map (`attribution`, h×w) is tested


def fraction_values(value) -> tuple[float, ...]:
    """The fractions of `value` (a comma-separated string, or a sequence of numbers) as floats;
    ValueError naming what is wrong: not numbers, fewer than two, outside [0, 1], not increasing."""
    items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    try:
        fractions = tuple(float(v) for v in items if not isinstance(v, bool))
    except (TypeError, ValueError):
        raise ValueError(f"must be numbers separated by commas, e.g. 0,0.1,0.5,1; got {value!r}") from None
    if len(fractions) != len(items) or len(fractions) < 2:
        raise ValueError(f"needs at least two numbers, e.g. 0,0.1,0.5,1; got {value!r}")
    if not all(0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"must lie in [0, 1]; got {', '.join(f'{f:g}' for f in fractions)}")
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise ValueError(f"must be strictly increasing; got {', '.join(f'{f:g}' for f in fractions)}")
    return fractions


def _fractions(flag: str, value) -> str | None:
    try:
        fraction_values(value)
    except ValueError as exc:
        return f"{flag} {exc}"
    return None


def _attribution(flag: str, value) -> str | None:
    return None if value in ATTRIBUTIONS else (f"{flag} {value!r}: choose one of {', '.join(ATTRIBUTIONS)} "
                                               "(the methods whose map is an LR attribution)")


@dataclass(frozen=True)
class FaithfulnessOptions(TunnelOptions):
    """LAM's options, the noise tunnel's (samples, stdev: used when the map is a tunnel's) and the
    check's own. `fractions` is held as a tuple of floats however it was given (a string, a list)."""

    fractions: tuple[float, ...] | str = option(
        ",".join(f"{f:g}" for f in FRACTIONS), "--fractions",
        "Fractions of the LR pixels deleted/inserted, comma-separated, increasing, in [0, 1].",
        check=_fractions, types=(str, list, tuple))
    random: int = option(RANDOM, "--random", "Random orders compared with the map's (0: none).",
                         check=non_negative, types=(int,))
    seed: int = option(SEED, "--seed", "Seed of the random orders, of the infidelity and sensitivity "
                       "perturbations and of the noise tunnel's noise.", types=(int,))
    attribution: str = option("lam", "--attribution", f"The map tested: {', '.join(ATTRIBUTIONS)}.",
                              check=_attribution, types=(str,))

    def __post_init__(self):
        try:
            object.__setattr__(self, "fractions", fraction_values(self.fractions))
        except (ValueError, TypeError):
            pass  # left as given: validation names the flag and what is wrong

    def to_json(self) -> dict:
        data = super().to_json()
        data["fractions"] = list(self.fractions) if isinstance(self.fractions, tuple) else self.fractions
        return data
