"""The faithfulness check's numpy layer, pure functions: orders, the images along the curves, the
detector, the areas, the random control and Captum's two metrics.

Deletion and insertion (Petsiuk et al., "RISE", BMVC 2018; Samek et al., IEEE TNNLS 2017), with the
LAM detector D (LAM-SPEC §2) as the score. For the LR input x (C×h×w), the map M (h×w) and the
baseline x̃ = K(σ) ⊛ x (the blur path's starting point, LAM-SPEC §3):

    order      the LR pixels by M descending, ties by flat (row-major) index ascending: a stable
               sort of −M over M's row-major flattening
    n(f)       int(round(f·h·w)): Python's round, half to even (0.5·5 = 2.5 → 2)
    deletion   x_f = x with the first n(f) pixels of the order set to x̃ (every channel)
    insertion  x_f = x̃ with the first n(f) pixels of the order set back to x
    score      D(F(x_f)), and D(F(x_f)) / D(F(x))
    AUC        the trapezoid rule over the fractions of the divided scores

The random control: R orders `numpy.random.default_rng(seed).permutation(h·w)`, drawn one after
the other from one generator, give the same curves; the map's AUC is set against their mean and
sample standard deviation (ddof = 1) as a z-score signed so that positive is better than random:
deletion z = (mean − AUC) / std (a faithful map's deletion lowers D faster, a smaller area),
insertion z = (AUC − mean) / std (its insertion raises D faster). `check --min-deletion-z 2` holds a
map to two standard deviations better than random.

Captum's metrics (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019;
`captum.metrics.infidelity` and `sensitivity_max`) of the gradient attribution Φ(x) = ∇_x D(F(x))
(Captum's `Saliency` without its absolute value, C×h×w), the scalar output being D of the window:

    infidelity  (1/S) Σ_i (Σ I_i ⊙ Φ(x) − (D(F(x)) − D(F(x − I_i))))²,
                I_i ~ N(0, 0.003²) per value (Captum's documented example), S = 10, not normalised
    sensitivity max_i ‖Φ(x + u_i) − Φ(x)‖_F / ‖Φ(x)‖_F (a zero norm counts as 1),
                u_i ~ U(−0.02, 0.02) per value (Captum's default radius), S = 10

The perturbations are drawn as float32 arrays S×C×h×w: `default_rng(seed + 1).normal(0, 0.003, …)`
for the infidelity and `default_rng(seed + 2).uniform(−0.02, 0.02, …)` for the sensitivity, and the
perturbed inputs are the float32 x − I_i and x + u_i, as Captum forms them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

INFIDELITY_SAMPLES = 10   # Captum's default n_perturb_samples
INFIDELITY_STDEV = 0.003  # the noise of Captum's documented infidelity example
SENSITIVITY_SAMPLES = 10  # Captum's default n_perturb_samples
SENSITIVITY_RADIUS = 0.02  # Captum's default perturb_radius


def order_of(attribution_map: np.ndarray) -> np.ndarray:
    """The LR pixels' flat indices by the map descending, ties by index ascending."""
    return np.argsort(-np.asarray(attribution_map).ravel(), kind="stable")


def random_orders(pixels: int, count: int, seed: int) -> np.ndarray:
    """`count` orders (count×pixels) drawn in turn by one `numpy.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(pixels) for _ in range(count)]) if count else np.zeros((0, pixels), np.int64)


def pixel_counts(fractions: Sequence[float], pixels: int) -> tuple[int, ...]:
    """n(f) = int(round(f · pixels)) per fraction (Python's round: half to even)."""
    return tuple(int(round(f * pixels)) for f in fractions)


def blurred_set(order: np.ndarray, count: int, deletion: bool, shape: tuple[int, int]) -> np.ndarray:
    """The h×w pixels of x_f that take the baseline's values: the first `count` of the order for a
    deletion, all but those for an insertion."""
    first = np.zeros(shape[0] * shape[1], bool)
    first[order[:count]] = True
    return (first if deletion else ~first).reshape(shape)


def mixed(x: np.ndarray, baseline: np.ndarray, blurred: np.ndarray) -> np.ndarray:
    """x with the pixels of `blurred` (h×w bool) set to the baseline's values, every channel."""
    return np.where(blurred[None], baseline, x).astype(np.float32)


def detector(sr: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    """D (LAM-SPEC §2) of each SR output of a batch (N×C×H×W) for the window at column `x`, row `y`
    of side `size`, in float64: Σ_c Σ_window sqrt(dh² + dw²)."""
    a = np.asarray(sr, np.float64)[:, :, y:y + size + 1, x:x + size + 1]
    dh = (a[:, :, :-1, :-1] - a[:, :, 1:, :-1]) ** 2
    dw = (a[:, :, :-1, :-1] - a[:, :, :-1, 1:]) ** 2
    return np.sqrt(dh + dw).sum(axis=(1, 2, 3))


def window_psnr(sr_windows: np.ndarray, hr_window: np.ndarray) -> list[float | None]:
    """PSNR in dB of each SR window (N×C×d×d, clipped to [0, 1]) against the HR window (C×d×d in
    [0, 1]): 10·log10(1 / MSE) over every value, in float64; None where MSE = 0."""
    d = np.clip(np.asarray(sr_windows, np.float64), 0.0, 1.0) - np.asarray(hr_window, np.float64)[None]
    mse = (d * d).reshape(d.shape[0], -1).mean(axis=1)
    return [None if m == 0 else float(10.0 * np.log10(1.0 / m)) for m in mse]


def auc(fractions: Sequence[float], values: Sequence[float]) -> float:
    """The trapezoid rule: Σ_i (f_{i+1} − f_i)(v_i + v_{i+1}) / 2."""
    f, v = np.asarray(fractions, np.float64), np.asarray(values, np.float64)
    return float(np.sum(np.diff(f) * (v[1:] + v[:-1]) / 2.0))


def spread(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The mean and the sample standard deviation (ddof = 1) of `values`; None where undefined."""
    a = np.asarray(values, np.float64)
    mean = float(a.mean()) if a.size else None
    std = float(a.std(ddof=1)) if a.size > 1 else None
    return mean, std


def z_score(value: float, mean: float | None, std: float | None, lower_is_better: bool = False) -> float | None:
    """How many standard deviations `value` is better than `mean`: (value − mean) / std, or
    (mean − value) / std where lower is better; None where there is no spread to measure against."""
    if mean is None or std is None or not std > 0:
        return None
    return float((mean - value if lower_is_better else value - mean) / std)


def infidelity_noise(shape: Sequence[int], seed: int, samples: int = INFIDELITY_SAMPLES,
                     stdev: float = INFIDELITY_STDEV) -> np.ndarray:
    """I (float32 S×C×h×w): `default_rng(seed + 1).normal(0, stdev, (S,) + shape)`."""
    return np.random.default_rng(seed + 1).normal(0.0, stdev, (samples,) + tuple(shape)).astype(np.float32)


def sensitivity_noise(shape: Sequence[int], seed: int, samples: int = SENSITIVITY_SAMPLES,
                      radius: float = SENSITIVITY_RADIUS) -> np.ndarray:
    """u (float32 S×C×h×w): `default_rng(seed + 2).uniform(−radius, radius, (S,) + shape)`."""
    return np.random.default_rng(seed + 2).uniform(-radius, radius, (samples,) + tuple(shape)).astype(np.float32)


def infidelity(gradient: np.ndarray, perturbations: np.ndarray, objective: float,
               perturbed_objectives: np.ndarray) -> float:
    """(1/S) Σ_i (Σ I_i ⊙ Φ − (D(x) − D(x − I_i)))² for Φ (C×h×w), I (S×C×h×w) and the S values
    D(F(x − I_i)), in float64."""
    phi = np.asarray(gradient, np.float64)
    noise = np.asarray(perturbations, np.float64)
    explained = (noise * phi[None]).reshape(noise.shape[0], -1).sum(axis=1)
    change = float(objective) - np.asarray(perturbed_objectives, np.float64)
    return float(np.mean((explained - change) ** 2))


def sensitivity_max(gradient: np.ndarray, perturbed_gradients: np.ndarray) -> float:
    """max_i ‖Φ(x + u_i) − Φ(x)‖_F / ‖Φ(x)‖_F (a zero norm counts as 1), in float64."""
    phi = np.asarray(gradient, np.float64).ravel()
    others = np.asarray(perturbed_gradients, np.float64).reshape(len(perturbed_gradients), -1)
    norm = float(np.linalg.norm(phi)) or 1.0
    return float(np.max(np.linalg.norm(others - phi[None], axis=1)) / norm)


def first_outside(order: np.ndarray, box: tuple[int, int, int, int], width: int) -> int | None:
    """The rank in `order` of its first pixel outside the LR box (top, left, bottom, right; exclusive),
    None where every pixel lies inside."""
    rows, cols = np.divmod(np.asarray(order), width)
    top, left, bottom, right = box
    outside = (rows < top) | (rows >= bottom) | (cols < left) | (cols >= right)
    return int(np.argmax(outside)) if outside.any() else None


def finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in np.ravel(values))
