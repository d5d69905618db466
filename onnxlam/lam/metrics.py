"""Metrics on attributions (spec §4–5): the abs-normalised map, the Gini coefficient, the diffusion index."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def abs_normalise(attribution: np.ndarray) -> np.ndarray:
    """M = |Σ_c A| / (max |Σ_c A| + 1e-5): the abs-normalised LAM map (h×w, in [0, 1))."""
    summed = np.abs(np.asarray(attribution, dtype=np.float32).sum(axis=0))
    return (summed / (summed.max() + np.float32(1e-5))).astype(np.float32)


def gini(values: np.ndarray) -> float:
    """Gini coefficient: `G = Σ_i (2i − N − 1) a_i / (N Σ a_i)`, `a` sorted ascending, i = 1…N.

    As in the demo, negative inputs are shifted by the minimum and 1e-7 is added so that an all-zero
    map is defined (G = 0). Computed in float64.
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.min() < 0:
        a = a - a.min()
    a = np.sort(a + 1e-7)
    n = a.size
    index = np.arange(1, n + 1)
    return float(np.sum((2 * index - n - 1) * a) / (n * np.sum(a)))


def diffusion_index(attribution_map: np.ndarray) -> float:
    """DI = (1 − G) · 100 of the abs-normalised map: high when many input pixels contribute."""
    return (1.0 - gini(attribution_map)) * 100.0



def mass_count(attribution_map: np.ndarray, fraction: float) -> int:
    """How many pixels, taken largest first, hold `fraction` of the map's total mass."""
    a = np.sort(np.asarray(attribution_map, dtype=np.float64).ravel())[::-1]
    total = a.sum()
    if total <= 0:
        return 0
    return int(min(np.searchsorted(np.cumsum(a), fraction * total * (1 - 1e-12)) + 1, a.size))


def mass_radius(attribution_map: np.ndarray, centre: tuple[float, float], fraction: float = 0.9) -> float:
    """Smallest radius (LR pixels) around `centre` = (x, y) whose disc holds `fraction` of the mass.

    Pixel centres sit at integer coordinates; the radius is the distance of the pixel that completes
    the fraction when pixels are taken nearest first.
    """
    a = np.asarray(attribution_map, dtype=np.float64)
    total = a.sum()
    if total <= 0:
        return 0.0
    rows, cols = np.indices(a.shape)
    dist = np.hypot(cols - centre[0], rows - centre[1]).ravel()
    order = np.argsort(dist, kind="stable")
    cumulative = np.cumsum(a.ravel()[order])
    k = int(min(np.searchsorted(cumulative, fraction * total * (1 - 1e-12)), a.size - 1))
    return float(dist[order][k])


@dataclass(frozen=True)
class RangeStats:
    """The paper's contributing-range figures of a map: how many LR pixels hold 50/90/99% of the
    attribution mass, and the radius (LR px, from the window's centre) holding 90%."""

    pixels_50: int
    pixels_90: int
    pixels_99: int
    radius_90: float

    def to_json(self) -> dict:
        return asdict(self)


def range_statistics(attribution_map: np.ndarray, window_centre_lr: tuple[float, float]) -> RangeStats:
    """The paper's contributing-range figures: pixels holding 50/90/99% of the mass, 90% radius."""
    return RangeStats(mass_count(attribution_map, 0.5), mass_count(attribution_map, 0.9),
                      mass_count(attribution_map, 0.99), mass_radius(attribution_map, window_centre_lr, 0.9))
