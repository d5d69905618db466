"""Dataset-level statistics of the diffusion index: bootstrap intervals and rank correlation.

- `bootstrap_mean`: the mean DI over windows and images with a seeded percentile bootstrap interval
  (Efron & Tibshirani 1993, ch. 13). With `groups` (the image of each window) whole images are
  resampled, since windows of one image are not independent of each other.
- `spearman`: Spearman's ρ, the Pearson correlation of average ranks (ties share their mean rank).
- `bootstrap_spearman`: ρ across models between mean DI and mean PSNR (the LAM paper's observation
  that DI rises with PSNR), with images resampled.

Every interval is the percentile interval: `np.percentile(estimates, [100·(1−level)/2,
100·(1+level)/2])` with NumPy's default linear interpolation, over `n` draws from
`np.random.default_rng(seed)`, so one seed gives one interval on every machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onnxlam.core.errors import InputError


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval [low, high]; `n` is the number of draws used."""

    mean: float
    low: float
    high: float
    n: int

    def to_json(self) -> dict:
        """The fields, NaN as null (JSON has no NaN)."""
        def number(v: float):
            return v if math.isfinite(v) else None
        return {"mean": number(self.mean), "low": number(self.low), "high": number(self.high), "n": self.n}

    def text(self, digits: int = 1) -> str:
        """`12.3 [10.1, 14.0]`: the estimate and its interval, `digits` after the point."""
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _percentiles(estimates: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(estimates, [tail, 100.0 - tail])
    return float(low), float(high)


def _check(n: int, level: float) -> None:
    if n < 1:
        raise InputError(f"the bootstrap needs at least 1 draw; got n={n}")
    if not 0.0 < level < 1.0:
        raise InputError(f"the interval's level must lie in (0, 1); got {level}")


def _finite(values, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} holds {int(np.sum(~np.isfinite(a)))} NaN or inf values")
    return a


def bootstrap_mean(values, groups=None, n: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """The mean of `values` with a seeded percentile bootstrap interval.

    Without `groups`, each draw is `values[rng.integers(0, m, size=m)]` (m values, with replacement)
    and its mean. With `groups` (one label per value, e.g. the image of each window), the G distinct
    labels are sorted (`np.unique`), each draw picks `rng.integers(0, G, size=G)` of them with
    replacement, and its estimate is the mean over all values of the drawn groups, a group counted as
    often as it was drawn. The point estimate is the plain mean of all values either way. `rng` is
    `np.random.default_rng(seed)`; the draws are made in order, one `integers` call each.
    """
    _check(n, level)
    v = _finite(values, "the values").ravel()
    if v.size == 0:
        raise InputError("bootstrap_mean needs at least one value")
    rng = np.random.default_rng(seed)
    estimates = np.empty(n)
    if groups is None:
        for i in range(n):
            estimates[i] = v[rng.integers(0, v.size, size=v.size)].mean()
    else:
        labels = np.asarray(groups).ravel()
        if labels.shape != v.shape:
            raise InputError(f"groups must hold one label per value: {labels.size} labels for {v.size} values")
        _, index = np.unique(labels, return_inverse=True)
        index = index.ravel()
        sums = np.bincount(index, weights=v)
        counts = np.bincount(index).astype(np.float64)
        for i in range(n):
            drawn = rng.integers(0, sums.size, size=sums.size)
            estimates[i] = sums[drawn].sum() / counts[drawn].sum()
    low, high = _percentiles(estimates, level)
    return Interval(float(v.mean()), low, high, n)


def spearman(x, y) -> float:
    """Spearman's ρ of two equal-length samples, average ranks for ties; NaN if either has < 2 distinct values."""
    a = _finite(x, "x").ravel()
    b = _finite(y, "y").ravel()
    if a.shape != b.shape:
        raise InputError(f"spearman needs two samples of one length; got {a.size} and {b.size}")
    if np.unique(a).size < 2 or np.unique(b).size < 2:
        return float("nan")  # a constant sample has no ranks to correlate
    from scipy.stats import rankdata  # here, not at the top: importing scipy.stats costs about a second

    ra = rankdata(a) - (a.size + 1) / 2.0
    rb = rankdata(b) - (b.size + 1) / 2.0
    rho = float(np.sum(ra * rb) / math.sqrt(np.sum(ra * ra) * np.sum(rb * rb)))
    return min(1.0, max(-1.0, rho))  # rounding must not carry |ρ| past 1


def bootstrap_spearman(di, psnr, n: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """ρ across models between mean DI and mean PSNR, with images resampled.

    `di` and `psnr` are full arrays (models × images): row m holds model m's DI and PSNR on each
    image, columns in the same image order (no NaN; a model must have every image). The estimate is
    `spearman(di.mean(1), psnr.mean(1))`. Each draw picks `rng.integers(0, images, size=images)`
    columns with replacement (`rng = np.random.default_rng(seed)`), averages each model over them and
    takes ρ across models; draws where ρ is NaN (a tie of every model) are skipped, and `n` of the
    result counts the draws used. With no usable draw the interval is NaN.
    """
    _check(n, level)
    d = _finite(di, "the DI table")
    p = _finite(psnr, "the PSNR table")
    if d.ndim != 2 or d.shape != p.shape:
        raise InputError(f"DI and PSNR must be two tables models × images of one shape; got {d.shape} and {p.shape}")
    models, images = d.shape
    if models < 2 or images < 1:
        raise InputError(f"a rank correlation across models needs ≥ 2 models and ≥ 1 image; got {models}×{images}")
    point = spearman(d.mean(axis=1), p.mean(axis=1))
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(n):
        cols = rng.integers(0, images, size=images)
        rho = spearman(d[:, cols].mean(axis=1), p[:, cols].mean(axis=1))
        if not math.isnan(rho):
            estimates.append(rho)
    if not estimates:
        return Interval(point, float("nan"), float("nan"), 0)
    low, high = _percentiles(np.asarray(estimates), level)
    return Interval(point, low, high, len(estimates))
