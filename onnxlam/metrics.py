"""Metrics on attributions (spec §4–5): the abs-normalised map, the Gini coefficient, the diffusion index."""
from __future__ import annotations

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

