"""A report on disk: case fingerprints (what a result depends on), case folders, the rows, and the
aggregate files results.csv/results.json, each written atomically; the lock and leftover clean-up."""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from onnxlam.core.version import __version__
from onnxlam.core.errors import InputError
from onnxlam.core.files import atomic_dir, write_atomic
from onnxlam.lam.options import LamOptions
from onnxlam.batch.report.config import Case, ReportConfig
from onnxlam.methods.options import CEM, ERF, LAM


FORMAT = 1  # of the fingerprint and results.json; a new format recomputes every case
CASES = "cases"
RESULT = "result.json"
ERROR = "error.json"
AGGREGATES = ("results.csv", "results.json", "index.html")
CASE_FILES = ("attribution.npy", "gradient.npy", RESULT, "panel.png")
CEM_FILES = ("effect.npy", "psnr_coarse.npy", "psnr_fine.npy", "refined.npy", RESULT, "cem.png", "panel.png")
ERF_FILES = ("erf.npy", RESULT, "erf.png")
NO_PATH = (CEM, ERF)  # methods without LAM's path (path, sigma, fold, kernel): those options do not apply
# The columns after "folder" came with the methods (appended, so the LAM columns keep their places): a
# column a case's method does not have is empty (CEM has no DI; LAM has no causal effects).
CSV_COLUMNS = ("model", "image", "x", "y", "size", "path", "fold", "di", "gini", "pixels_50", "pixels_90",
               "pixels_99", "radius_90", "seconds", "status", "message", "folder", "method", "positive",
               "negative", "neutral", "effect_range", "reference_psnr")
RANGE_KEYS = ("pixels_50", "pixels_90", "pixels_99", "radius_90")


# ------------------------------------------------------------------------------------------------
# Fingerprints and case folders
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fingerprint:
    """What a case's result depends on; stored in result.json under "case"."""

    model_sha256: str
    image_sha256: str
    x: int
    y: int
    size: int
    lr: bool
    path: str
    sigma: float
    fold: int
    kernel_size: int
    value_range: float | None
    bgr: bool | None
    context: int | None = None  # --crop is exact and left out; a forced margin may change the map
    format: int = FORMAT
    # Left out, as device and batch_size are: max_memory. It decides how the work is split, not which
    # map is asked for; a case cut to fit the limit says so in its result.json ("crop", "warnings").
    # a method beyond LAM and its options (`MethodOptions.parameters`); not hashed, the rest is
    method: dict | None = field(default=None, hash=False)

    def to_json(self) -> dict:
        data = asdict(self)
        if data["method"] is None:  # a LAM case's fingerprint is what it was before methods were added
            del data["method"]
        return data


def case_files(method: str) -> tuple[str, ...]:
    """The files a complete case folder of `method` holds (what the method's own command writes)."""
    return {CEM: CEM_FILES, ERF: ERF_FILES}.get(method, CASE_FILES)


@dataclass(frozen=True)
class Effects:
    """A CEM case's summary (methods/cem.py §5): blocks whose replacement lowers (positive), raises
    (negative) or leaves (neutral) the ROI's PSNR, the ROI's own blocks, max CE − min CE in dB, and O."""

    positive: int
    negative: int
    neutral: int
    roi_blocks: int
    effect_range: float
    reference_psnr: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CaseRow:
    """One line of results.csv / results.json: a case and what became of it."""

    case: Case
    folder: str                  # relative to the report folder, with "/" separators
    status: str                  # ok, failed or pending
    message: str = ""
    di: float | None = None
    gini: float | None = None
    seconds: float | None = None
    range: dict = field(default_factory=dict)
    scale: int | None = None
    model_sha256: str | None = None
    reused: bool = False
    effects: Effects | None = None  # CEM's

    def to_json(self, options: LamOptions) -> dict:
        c = self.case
        data = {"model": c.model, "image": c.image, "method": c.method,
                "window": {"x": c.x, "y": c.y, "size": c.size},
                "lr": options.lr, "path": options.path, "sigma": options.sigma, "fold": options.fold,
                "kernel_size": options.kernel_size, "value_range": options.value_range, "bgr": options.bgr,
                "crop": options.crop, "context": options.context, "inputs": dict(options.inputs),
                "di": self.di, "gini": self.gini,
                "range": {k: self.range.get(k) for k in RANGE_KEYS},
                "scale": self.scale, "seconds": self.seconds, "status": self.status, "message": self.message,
                "folder": self.folder, "model_sha256": self.model_sha256, "reused": self.reused,
                "effects": self.effects.to_json() if self.effects else None}
        if c.method in NO_PATH:  # LAM's path options do not apply (nor --lr to CEM: it downsamples the HR)
            data.update(dict.fromkeys(("path", "sigma", "fold", "kernel_size", "context")
                                      + (("lr",) if c.method == CEM else ())))
        return data

    def csv_values(self, options: LamOptions) -> list:
        c, e = self.case, self.effects
        path, fold = ("", "") if c.method in NO_PATH else (options.path, options.fold)
        return [c.model, c.image, c.x, c.y, c.size, path, fold, _num(self.di), _num(self.gini),
                *(_num(self.range.get(k)) for k in RANGE_KEYS), _num(self.seconds, 3), self.status,
                self.message, self.folder, c.method,
                *(("",) * 5 if e is None else (e.positive, e.negative, e.neutral, _num(e.effect_range),
                                               _num(e.reference_psnr)))]


def _num(value, digits: int = 6) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{round(value, digits)}"


def _row_from_result(case: Case, folder: str, data: dict, reused: bool) -> CaseRow:
    # an ok case's message is what its run warned about (an approximate memory crop), for the CSV and table
    message = " ".join(" ".join(data.get("warnings") or []).split())
    if case.method == CEM:  # cem.CemResult.to_json: no DI; counts and the effect range instead
        counts, effect = data["counts"], data["effect"]
        effects = Effects(int(counts["positive"]), int(counts["negative"]), int(counts["neutral"]),
                          int(counts["roi_blocks"]), float(effect["range"]), float(data["reference_psnr"]))
        return CaseRow(case, folder, "ok", message, None, None, data.get("seconds"), {}, data.get("scale"),
                       data.get("model_sha256"), reused, effects)
    if case.method == ERF:  # erf.ErfResult.to_json: no DI; the mass counts and radius, as LAM's range
        stats = {"pixels_50": data["pixels"]["50"], "pixels_90": data["pixels"]["90"],
                 "pixels_99": data["pixels"]["99"], "radius_90": data["radii"]["90"]}
        return CaseRow(case, folder, "ok", message, None, None, data.get("seconds"), stats, data.get("scale"),
                       data.get("model_sha256"), reused)
    return CaseRow(case, folder, "ok", message, float(data["di"]), float(data["gini"]), data.get("seconds"),
                   dict(data.get("range") or {}), data.get("scale"), data.get("model_sha256"), reused)


def read_complete(folder: Path, fingerprint: Fingerprint, files: Sequence[str] = CASE_FILES) -> dict | None:
    """The case's result.json when the folder holds a complete result of these parameters (and every
    one of `files`, `case_files(method)`), else None."""
    try:
        data = json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("case") != fingerprint.to_json():
        return None
    if not all((folder / name).is_file() for name in files):
        return None
    return data


def _write_dir_atomically(target: Path, files: dict[str, str]) -> None:
    """Replace folder `target` by one holding `files` (name → text), all at once."""
    with atomic_dir(target) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")


def remove_leftovers(out: Path) -> int:
    """Delete what an interrupted run left half-written: temporary copies of the aggregate files in
    OUT and temporary or replaced case folders in OUT/cases. Nothing else in OUT is touched."""
    removed = 0
    prefixes = tuple(f".{name}." for name in AGGREGATES)
    for p in out.iterdir() if out.is_dir() else ():
        if p.is_file() and p.name.startswith(prefixes) and ".tmp" in p.name:
            p.unlink(missing_ok=True)
            removed += 1
    cases = out / CASES
    for p in cases.iterdir() if cases.is_dir() else ():
        if p.is_dir() and p.name.startswith(".") and (p.name.endswith(".tmp") or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold a lock on the report folder so that two runs never write into it at once (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks on folders; a second run is the user's choice
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                yield  # a file system without locks (some network mounts): run unguarded
                return
            raise InputError(f"another onnxlam report is writing into {out}; wait for it or use another --out") \
                from None
        yield
    finally:
        os.close(fd)


@dataclass
class Report:
    """The outcome of a report run: one row per case and what this run did."""

    out: Path
    config: ReportConfig
    rows: list[CaseRow]
    computed: int = 0
    reused: int = 0
    started: str = ""

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.rows)

    @property
    def pending(self) -> int:
        return sum(r.status == "pending" for r in self.rows)

    def summaries(self) -> list[ModelSummary]:
        return summarise(self.rows)


@dataclass(frozen=True)
class ModelSummary:
    """DI statistics of one model's completed cases of one method (std: sample standard deviation, None
    below 2); for CEM, which has no DI, the mean effect range (dB) instead."""

    model: str
    cases: int
    failures: int
    di_mean: float | None
    di_median: float | None
    di_std: float | None
    radius_90_mean: float | None
    dis: tuple[float, ...]
    method: str = LAM
    effect_range_mean: float | None = None

    def to_json(self) -> dict:
        return {"model": self.model, "method": self.method, "cases": self.cases, "failures": self.failures,
                "di_mean": self.di_mean, "di_median": self.di_median, "di_std": self.di_std,
                "radius_90_mean": self.radius_90_mean, "effect_range_mean": self.effect_range_mean}


def summarise(rows: Sequence[CaseRow]) -> list[ModelSummary]:
    """Per model and method, in order of first appearance: case and failure counts, DI mean/median/std
    (the DIs of two methods are not pooled), CEM's mean effect range."""
    keys = list(dict.fromkeys((r.case.model, r.case.method) for r in rows))
    summaries = []
    for model, method in keys:
        mine = [r for r in rows if (r.case.model, r.case.method) == (model, method)]
        dis = [r.di for r in mine if r.status == "ok" and r.di is not None]
        radii = [r.range["radius_90"] for r in mine if r.status == "ok" and r.range.get("radius_90") is not None]
        ranges = [r.effects.effect_range for r in mine if r.status == "ok" and r.effects is not None]
        summaries.append(ModelSummary(
            model, len(mine), sum(r.status == "failed" for r in mine),
            statistics.fmean(dis) if dis else None, statistics.median(dis) if dis else None,
            statistics.stdev(dis) if len(dis) > 1 else None, statistics.fmean(radii) if radii else None,
            tuple(dis), method, statistics.fmean(ranges) if ranges else None))
    return summaries


# ------------------------------------------------------------------------------------------------
# results.csv, results.json
# ------------------------------------------------------------------------------------------------

class AggregateWriter:
    """Rewrites of results.csv/json and index.html while a report runs: at most every `every` seconds,
    and never more than `share` of the time (a rewrite costs in proportion to the rows, 1.8 s at
    10,000: rewritten after every case, a large report spent most of its time on them)."""

    def __init__(self, every: float = 2.0, share: float = 0.1):
        self.every, self.share = every, share
        self.last, self.cost = time.monotonic(), 0.0

    def maybe(self, report: Report) -> None:
        if time.monotonic() - self.last > max(self.every, self.cost / self.share):
            self.now(report)

    def now(self, report: Report) -> None:
        start = time.monotonic()
        write_aggregates(report)
        self.last = time.monotonic()
        self.cost = self.last - start


def write_aggregates(report: Report) -> None:
    """Rewrite results.csv, results.json and index.html from the report's rows (each atomically)."""
    out, options = report.out, report.config.options
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        writer.writerow(row.csv_values(options))
    write_atomic(out / "results.csv", buffer.getvalue())
    write_atomic(out / "results.json", json.dumps(results_json(report), indent=2) + "\n")
    from onnxlam.batch.report.html import render_html  # the page renders the rows defined here

    write_atomic(out / "index.html", render_html(report))


def results_json(report: Report) -> dict:
    """The content of results.json: settings, per-model summary, this run's counts, one entry per case."""
    o = report.config.options
    return {
        "format": FORMAT, "onnxlam": __version__, "started": report.started,
        "options": o.to_json(),
        "methods": list(report.config.methods), "method_options": report.config.method_options.to_json(),
        "run": {"cases": len(report.rows), "computed": report.computed, "reused": report.reused,
                "failed": report.failed, "pending": report.pending},
        "summary": [s.to_json() for s in report.summaries()],
        "cases": [r.to_json(o) for r in report.rows],
    }


