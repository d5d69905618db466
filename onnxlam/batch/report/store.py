"""A report on disk: case fingerprints (what a result depends on), case folders, the rows and their
summaries, results.json's content; the lock and leftover clean-up (`aggregates.py` writes the files)."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from onnxlam.core.version import __version__
from onnxlam.core.errors import InputError
from onnxlam.core.files import atomic_dir
from onnxlam.batch.report.config import Case, ReportConfig
from onnxlam.lam.options import LamOptions
from onnxlam.methods import registry


FORMAT = 1  # of the fingerprint and results.json; a new format recomputes every case
CASES = "cases"
RESULT = "result.json"
ERROR = "error.json"
AGGREGATES = ("results.csv", "results.json", "index.html", "finding.png")
PATH_KEYS = ("path", "sigma", "fold", "kernel_size", "context")  # LAM's path: empty for a method without it
ROW_KEYS = ("model", "image", "x", "y", "size", "path", "fold")
RUN_KEYS = ("seconds", "status", "message", "folder", "method")
# the SR output's quality against the HR image (`lam.quality`, per model and image): appended last, so
# earlier consumers of results.csv find their columns where they were
QUALITY_KEYS = ("psnr_y", "ssim_y")


def columns() -> list:
    """Every registered method's report columns (`methods.base.Column`), each name once: the default
    method's first, the others' in registration order."""
    seen: dict = {}
    for m in [registry.method(registry.DEFAULT)] + registry.methods():
        for c in m.columns:
            seen.setdefault(c.name, c)
    return list(seen.values())


def csv_columns() -> tuple[str, ...]:
    """results.csv's header: the case, the default method's columns, the run, then the other
    methods' columns (appended, so the default method's keep their places)."""
    default = [c.name for c in registry.method(registry.DEFAULT).columns]
    others = [c.name for c in columns() if c.name not in default]
    return ROW_KEYS + tuple(default) + RUN_KEYS + tuple(others) + QUALITY_KEYS


CSV_COLUMNS = csv_columns()  # the built-in methods' header


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
    # a method beyond LAM and its options (`Method.fingerprint`); not hashed, the rest is
    method: dict | None = field(default=None, hash=False)

    def to_json(self) -> dict:
        data = asdict(self)
        if data["method"] is None:  # a LAM case's fingerprint is what it was before methods were added
            del data["method"]
        return data


def case_files(method: str) -> tuple[str, ...]:
    """The files a complete case folder of `method` holds (what the method's own command writes)."""
    return registry.method(method).files


@dataclass(frozen=True)
class CaseRow:
    """One line of results.csv / results.json: a case and what became of it; `values` are its
    method's columns (`Method.row` of its result.json), by name."""

    case: Case
    folder: str                  # relative to the report folder, with "/" separators
    status: str                  # ok, failed or pending
    message: str = ""
    seconds: float | None = None
    scale: int | None = None
    model_sha256: str | None = None
    reused: bool = False
    values: tuple[tuple[str, Any], ...] = ()

    def value(self, name: str):
        """The value of column `name`, None where the case's method has none (or the case is not done)."""
        return dict(self.values).get(name)

    @property
    def di(self) -> float | None:
        return self.value("di")

    def to_json(self, options: LamOptions) -> dict:
        c, m = self.case, registry.method(self.case.method)
        data = {"model": c.model, "image": c.image, "method": c.method,
                "window": {"x": c.x, "y": c.y, "size": c.size},
                "lr": options.lr, "path": options.path, "sigma": options.sigma, "fold": options.fold,
                "kernel_size": options.kernel_size, "value_range": options.value_range, "bgr": options.bgr,
                "crop": options.crop, "context": options.context, "inputs": dict(options.inputs),
                **{col.name: self.value(col.name) for col in columns()},
                **{key: self.value(key) for key in QUALITY_KEYS},
                "scale": self.scale, "seconds": self.seconds, "status": self.status, "message": self.message,
                "folder": self.folder, "model_sha256": self.model_sha256, "reused": self.reused}
        if not m.path_options:  # LAM's path options do not apply (nor --lr to a method without it)
            data.update(dict.fromkeys(PATH_KEYS + (() if m.takes_lr else ("lr",))))
        return data

    def csv_values(self, options: LamOptions) -> list:
        c = self.case
        path, fold = (options.path, options.fold) if registry.method(c.method).path_options else ("", "")
        digits = {col.name: col.digits for col in columns()}
        value = {"model": c.model, "image": c.image, "x": c.x, "y": c.y, "size": c.size, "path": path, "fold": fold,
                 "seconds": _num(self.seconds, 3), "status": self.status, "message": self.message,
                 "folder": self.folder, "method": c.method}
        return [value[k] if k in value else _num(self.value(k), 6 if digits.get(k, 2) else 0)
                for k in csv_columns()]


def _num(value, digits: int = 6) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or digits == 0:
        return str(int(value)) if float(value).is_integer() else str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{round(value, digits)}"


def row_from_result(case: Case, folder: str, data: dict, reused: bool) -> CaseRow:
    """The row of a complete case from its result.json (`data`): its method's columns (`Method.row`)."""
    # an ok case's message is what its run warned about (an approximate memory crop), for the CSV and table
    message = " ".join(" ".join(data.get("warnings") or []).split())
    values = {**registry.method(case.method).row(data), **quality_values(data)}
    return CaseRow(case, folder, "ok", message, data.get("seconds"), data.get("scale"), data.get("model_sha256"),
                   reused, tuple(values.items()))


def quality_values(data: dict) -> dict:
    """psnr_y and ssim_y of a case's result.json ("quality", written by the report's run); None where
    there is no HR image (--lr) or the case predates them."""
    q = data.get("quality") if isinstance(data.get("quality"), dict) else {}
    return {key: q.get(key) for key in QUALITY_KEYS}


def read_complete(folder: Path, fingerprint: Fingerprint, files: Sequence[str] = ()) -> dict | None:
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


def write_dir_atomically(target: Path, files: dict[str, str]) -> None:
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
    started: str = ""        # this run's start
    first_started: str = ""  # the first run's, for a report resumed or rerun (else this run's)
    hard: dict | None = None  # `--windows hard:K`: each image's chosen windows and scores (`hard.hard_json`)

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
    """One model's completed cases of one method: case and failure counts, and the statistics of its
    method's summarised columns (`Column.summary`): mean, median and sample standard deviation (None
    below 2) of a "distribution" column, the mean of a "mean" one; `values` are the distributions'."""

    model: str
    method: str
    cases: int
    failures: int
    stats: tuple[tuple[str, float | None], ...] = ()
    values: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def stat(self, key: str) -> float | None:
        """A statistic by its results.json key ("di_mean", "radius_90_mean", …); None where it has none."""
        return dict(self.stats).get(key)

    @property
    def dis(self) -> tuple[float, ...]:
        return dict(self.values).get("di", ())

    def to_json(self) -> dict:
        return {"model": self.model, "method": self.method, "cases": self.cases, "failures": self.failures,
                **{key: self.stat(key) for key in summary_keys()}}


def report_columns(methods) -> list:
    """The columns of `methods` (`Method.columns`), each name once, in the methods' order."""
    seen: dict = {}
    for name in methods:
        for c in registry.method(name).columns:
            seen.setdefault(c.name, c)
    return list(seen.values())


def summary_heads(columns) -> list[tuple[str, str]]:
    """(statistic key, heading) of a summary table of `columns`, from their `summary`."""
    heads = []
    for c in columns:
        if c.summary == "distribution":
            heads += [(f"{c.name}_mean", f"{c.title} mean"), (f"{c.name}_median", f"{c.title} median"),
                      (f"{c.name}_std", f"{c.title} std")]
        elif c.summary == "mean":
            heads.append((f"{c.name}_mean", f"{c.title} (mean)"))
    return heads


def summary_keys() -> list[str]:
    """The statistics' keys of every registered method's summarised columns, each once."""
    return [key for key, _ in summary_heads(columns())]


def _statistics(column, values: list[float]) -> list[tuple[str, float | None]]:
    mean = statistics.fmean(values) if values else None
    if column.summary == "mean":
        return [(f"{column.name}_mean", mean)]
    return [(f"{column.name}_mean", mean), (f"{column.name}_median", statistics.median(values) if values else None),
            (f"{column.name}_std", statistics.stdev(values) if len(values) > 1 else None)]


def summarise(rows: Sequence[CaseRow]) -> list[ModelSummary]:
    """Per model and method, in order of first appearance: case and failure counts and the statistics
    of the method's summarised columns (two methods' values are not pooled)."""
    keys = list(dict.fromkeys((r.case.model, r.case.method) for r in rows))
    summaries = []
    for model, method in keys:
        mine = [r for r in rows if (r.case.model, r.case.method) == (model, method)]
        stats, values = [], []
        for column in registry.method(method).columns:
            if not column.summary:
                continue
            got = [r.value(column.name) for r in mine if r.status == "ok" and r.value(column.name) is not None]
            stats += _statistics(column, got)
            if column.summary == "distribution":
                values.append((column.name, tuple(got)))
        summaries.append(ModelSummary(model, method, len(mine), sum(r.status == "failed" for r in mine),
                                      tuple(stats), tuple(values)))
    return summaries


# ------------------------------------------------------------------------------------------------
# results.json
# ------------------------------------------------------------------------------------------------

def first_started(out: Path, default: str) -> str:
    """When the report in `out` was first started (its results.json's), else `default`."""
    try:
        data = json.loads((Path(out) / "results.json").read_text())
        return str(data.get("first_started") or data.get("started") or default)
    except (OSError, ValueError, AttributeError):
        return default


def results_json(report: Report) -> dict:
    """The content of results.json: settings, per-model summary, this run's counts, one entry per case."""
    from onnxlam.batch.report.dataset import dataset  # lazily: numpy, and `--help` loads this module

    o = report.config.options
    return {
        "format": FORMAT, "onnxlam": __version__, "started": report.started,
        "first_started": report.first_started or report.started,
        # the folder the cases' relative paths start from, relative to this report's folder: a baseline
        # read from elsewhere (`check --baseline`) finds its images and models through it
        "paths_from": os.path.relpath(os.getcwd(), Path(report.out).absolute()),
        "options": o.to_json(),
        "methods": list(report.config.methods), "method_options": report.config.method_options_json(),
        "run": {"cases": len(report.rows), "computed": report.computed, "reused": report.reused,
                "failed": report.failed, "pending": report.pending},
        "summary": [s.to_json() for s in report.summaries()],
        "hard_windows": report.hard,
        "dataset": dataset(report.rows, report.config.methods).to_json(),
        "cases": [r.to_json(o) for r in report.rows],
    }


