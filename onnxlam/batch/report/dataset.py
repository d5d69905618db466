"""A report's dataset level: per model, the mean DI over its windows and images with a bootstrap interval
(images resampled), its mean PSNR and SSIM on Y; across models, Spearman's ρ between mean DI and mean
PSNR with a bootstrap interval (images resampled): results.json's "dataset", finding.png and the page's
per-model table.

Images, not windows, are resampled: the windows of one image share its content, so they are not
independent draws of the dataset. The bootstraps are seeded (`SEED`), so a report's numbers are
reproducible and a rerun over the same rows writes the same file.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from onnxlam.lam.statistics import Interval, bootstrap_mean, bootstrap_spearman
from onnxlam.methods import registry

SEED = 0
RESAMPLES = 2000
MIN_MODELS = 3  # a rank correlation of two points is ±1 whatever the data


@dataclass(frozen=True)
class ModelPoint:
    """One model over the dataset: its DI (mean over every window and image, with its interval), mean
    PSNR and SSIM over its images (None without HR images), and how many windows and images it has."""

    name: str
    di: Interval
    psnr: float | None
    ssim: float | None
    windows: int
    images: int

    def to_json(self) -> dict:
        return {"name": self.name, "di": self.di.to_json(), "psnr": self.psnr, "ssim": self.ssim,
                "windows": self.windows, "images": self.images}


@dataclass(frozen=True)
class Dataset:
    """The dataset level of a report (see the module); `reason` says why there is no ρ."""

    method: str | None
    models: tuple[ModelPoint, ...]
    spearman: Interval | None
    reason: str | None
    seed: int = SEED
    resamples: int = RESAMPLES

    def to_json(self) -> dict:
        return {"method": self.method, "models": [m.to_json() for m in self.models],
                "spearman_di_psnr": None if self.spearman is None else self.spearman.to_json(),
                "spearman_reason": self.reason, "seed": self.seed, "resamples": self.resamples}


def di_method(methods: Sequence[str]) -> str | None:
    """The first of the report's methods with a DI column: the one whose DI the dataset level summarises."""
    return next((m for m in methods if any(c.name == "di" for c in registry.method(m).columns)), None)


def dataset(rows: Sequence, methods: Sequence[str]) -> Dataset:
    """The dataset level of the report's completed rows (`store.CaseRow`, which imports this module
    lazily) of its DI method (`di_method`)."""
    method = di_method(methods)
    cases = tuple((r.case.model, r.case.image, float(r.di), r.value("psnr_y"), r.value("ssim_y"))
                  for r in rows if r.status == "ok" and r.case.method == method and r.di is not None
                  and math.isfinite(r.di))
    return _dataset(method, cases)


@functools.lru_cache(maxsize=8)  # results.json and the page are written from the same rows
def _dataset(method: str | None, cases: tuple) -> Dataset:
    by_model: dict[str, list[tuple]] = {}
    for case in cases:
        by_model.setdefault(case[0], []).append(case)
    points = tuple(_point(name, mine) for name, mine in by_model.items())
    rho, reason = _spearman(by_model)
    return Dataset(method, points, rho, reason)


def _per_image(cases: Sequence[tuple], index: int) -> dict[str, float]:
    """Each image's value of column `index` (psnr 3, ssim 4): one SR output per model and image."""
    values: dict[str, float] = {}
    for case in cases:
        if case[index] is not None:
            values.setdefault(case[1], float(case[index]))
    return values


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def _point(name: str, cases: Sequence[tuple]) -> ModelPoint:
    di = bootstrap_mean([c[2] for c in cases], groups=[c[1] for c in cases], n=RESAMPLES, seed=SEED)
    return ModelPoint(name, di, _mean(_per_image(cases, 3).values()), _mean(_per_image(cases, 4).values()),
                      len(cases), len({c[1] for c in cases}))


def _spearman(by_model: dict[str, list[tuple]]) -> tuple[Interval | None, str | None]:
    """ρ between the models' mean DI and mean PSNR over the images every model with PSNR has."""
    psnr = {name: _per_image(cases, 3) for name, cases in by_model.items()}
    with_psnr = [name for name in by_model if psnr[name]]
    if len(with_psnr) < MIN_MODELS:
        why = "no HR image (LR inputs)" if not with_psnr else f"{len(with_psnr)} model(s) with PSNR"
        return None, f"{why}: a rank correlation across models needs at least {MIN_MODELS}"
    images = sorted(set.intersection(*(set(psnr[name]) for name in with_psnr)))
    if not images:
        return None, "no image on which every model has PSNR"
    di = np.array([[np.mean([c[2] for c in by_model[name] if c[1] == image]) for image in images]
                   for name in with_psnr])
    table = np.array([[psnr[name][image] for image in images] for name in with_psnr])
    if not np.all(np.isfinite(table)):
        return None, "a PSNR is infinite (an SR output equal to its HR image)"
    return bootstrap_spearman(di, table, n=RESAMPLES, seed=SEED), None
