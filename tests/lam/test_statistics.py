"""Bootstrap intervals and Spearman's ρ (onnxlam.lam.statistics) against scipy.stats.spearmanr and plain
Python loops that follow the documented contract (the same rng calls, in the same order)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from onnxlam.core.errors import InputError
from onnxlam.lam import statistics as st


def loop_percentile_interval(estimates, level):
    tail = 100 * (1 - level) / 2
    return float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100 - tail))


def loop_bootstrap_mean(values, groups, n, seed, level):
    """The contract, written as loops: draw m values (or G sorted group labels) with
    `rng.integers(0, m or G, size=m or G)`, one call per draw; mean over the drawn values."""
    rng = np.random.default_rng(seed)
    values = [float(v) for v in values]
    estimates = []
    if groups is None:
        for _ in range(n):
            drawn = rng.integers(0, len(values), size=len(values))
            estimates.append(sum(values[i] for i in drawn) / len(values))
    else:
        labels = sorted(set(groups))
        members = {g: [v for v, h in zip(values, groups) if h == g] for g in labels}
        for _ in range(n):
            drawn = rng.integers(0, len(labels), size=len(labels))
            pooled = [v for i in drawn for v in members[labels[i]]]
            estimates.append(sum(pooled) / len(pooled))
    low, high = loop_percentile_interval(estimates, level)
    return sum(values) / len(values), low, high


# --------------------------------------------------------------------------- spearman
def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 5, 30).astype(float)     # many ties
        y = x + rng.integers(0, 4, 30)
        assert st.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert st.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_extremes_and_constant_samples():
    assert st.spearman([1, 2, 3, 4], [10, 20, 35, 90]) == 1.0
    assert st.spearman([1, 2, 3, 4], [9, 5, 3, 1]) == -1.0
    assert math.isnan(st.spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(st.spearman([2.0], [3.0]))
    with pytest.raises(InputError):
        st.spearman([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------- bootstrap_mean
def test_bootstrap_mean_follows_the_contract_without_groups():
    values = np.random.default_rng(1).normal(30, 5, 40)
    got = st.bootstrap_mean(values, n=300, seed=7, level=0.9)
    mean, low, high = loop_bootstrap_mean(values, None, 300, 7, 0.9)
    assert (got.mean, got.low, got.high, got.n) == (pytest.approx(mean, abs=1e-12), pytest.approx(low, abs=1e-12),
                                                     pytest.approx(high, abs=1e-12), 300)


def test_bootstrap_mean_follows_the_contract_with_groups():
    rng = np.random.default_rng(2)
    groups = ["img3", "img1", "img2", "img1", "img3", "img3", "img0", "img2", "img1", "img0", "img4"]
    values = rng.normal(25, 6, len(groups))
    got = st.bootstrap_mean(values, groups=groups, n=400, seed=11)
    mean, low, high = loop_bootstrap_mean(values, groups, 400, 11, 0.95)
    assert got.mean == pytest.approx(mean, abs=1e-12)
    assert got.low == pytest.approx(low, abs=1e-12) and got.high == pytest.approx(high, abs=1e-12)
    assert got.low <= got.mean <= got.high


def test_grouped_bootstrap_is_wider_when_windows_of_an_image_agree():
    """Windows that share their image's value carry no more information than one value per image."""
    rng = np.random.default_rng(3)
    per_image = rng.normal(30, 5, 8)
    values = np.repeat(per_image, 20)
    groups = np.repeat(np.arange(8), 20)
    flat = st.bootstrap_mean(values, n=1000)
    grouped = st.bootstrap_mean(values, groups=groups, n=1000)
    assert grouped.high - grouped.low > 3 * (flat.high - flat.low)


def test_bootstrap_mean_covers_the_true_mean_about_95_percent_of_the_time():
    hits = 0
    for trial in range(200):
        sample = np.random.default_rng(1000 + trial).normal(10.0, 2.0, 40)
        interval = st.bootstrap_mean(sample, n=500, seed=trial)
        hits += interval.low <= 10.0 <= interval.high
    assert 170 <= hits <= 200, hits


def test_seeds_reproduce_and_differ():
    values = np.random.default_rng(4).normal(size=30)
    assert st.bootstrap_mean(values, seed=5) == st.bootstrap_mean(values, seed=5)
    assert st.bootstrap_mean(values, seed=5) != st.bootstrap_mean(values, seed=6)


def test_bootstrap_mean_rejects_bad_input():
    with pytest.raises(InputError):
        st.bootstrap_mean([])
    with pytest.raises(InputError):
        st.bootstrap_mean([1.0, float("nan")])
    with pytest.raises(InputError, match="one label per value"):
        st.bootstrap_mean([1.0, 2.0], groups=["a"])
    with pytest.raises(InputError):
        st.bootstrap_mean([1.0, 2.0], level=1.5)


# --------------------------------------------------------------------------- bootstrap_spearman
def test_perfectly_monotone_models_give_rho_one_with_interval_one():
    rng = np.random.default_rng(5)
    base = rng.uniform(0, 1, 12)                       # per-image difficulty, shared by the models
    di = np.stack([10 * m + base for m in range(5)])    # model m: DI and PSNR both rise with m on every image
    psnr = np.stack([25 + m + 0.1 * base for m in range(5)])
    got = st.bootstrap_spearman(di, psnr, n=200, seed=1)
    assert (got.mean, got.low, got.high, got.n) == (1.0, 1.0, 1.0, 200)
    assert got.text() == "1.0 [1.0, 1.0]"


def test_bootstrap_spearman_follows_the_contract():
    rng = np.random.default_rng(6)
    di = rng.normal(30, 5, (6, 10))
    psnr = 0.3 * di + rng.normal(0, 2, (6, 10))
    got = st.bootstrap_spearman(di, psnr, n=300, seed=9)
    loop = np.random.default_rng(9)
    estimates = []
    for _ in range(300):
        cols = loop.integers(0, 10, size=10)
        rho = spearmanr(di[:, cols].mean(axis=1), psnr[:, cols].mean(axis=1)).statistic
        if not math.isnan(rho):
            estimates.append(rho)
    low, high = loop_percentile_interval(estimates, 0.95)
    assert got.mean == pytest.approx(spearmanr(di.mean(axis=1), psnr.mean(axis=1)).statistic, abs=1e-12)
    assert (got.low, got.high, got.n) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12), len(estimates))
    assert st.bootstrap_spearman(di, psnr, n=300, seed=9) == got


def test_bootstrap_spearman_skips_tied_draws():
    """Two models equal on image 0 and different on image 1: draws of image 0 only give NaN."""
    di = np.array([[1.0, 1.0], [1.0, 2.0]])
    psnr = np.array([[30.0, 30.0], [30.0, 31.0]])
    got = st.bootstrap_spearman(di, psnr, n=400, seed=0)
    assert got.mean == 1.0 and 250 < got.n < 350     # P(both draws image 0) = 1/4: about 300 of 400 used
    assert st.bootstrap_spearman(di[:, :1], psnr[:, :1], n=10).to_json() == {"mean": None, "low": None,
                                                                           "high": None, "n": 0}


def test_bootstrap_spearman_rejects_ragged_tables():
    with pytest.raises(InputError, match="one shape"):
        st.bootstrap_spearman(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(InputError, match="NaN"):
        st.bootstrap_spearman(np.array([[1.0, np.nan], [2.0, 3.0]]), np.ones((2, 2)))


def test_interval_text_and_json():
    interval = st.Interval(12.345, 10.06, 14.0, 2000)
    assert interval.text() == "12.3 [10.1, 14.0]"
    assert interval.text(2) == "12.35 [10.06, 14.00]"
    assert interval.to_json() == {"mean": 12.345, "low": 10.06, "high": 14.0, "n": 2000}
