"""Batch reports: LAM over models × images × windows, resumable, with results.csv/json and index.html.

A report is a list of cases (one model, one image, one window). The pending cases of one model and
one image are computed by one `Analyzer.run_windows` call, so their windows share each forward pass;
should that call fail, its cases are run one by one, so one bad window fails only itself. Each case is
written by `outputs.write_result` into its own folder `OUT/cases/<slug>/`, which appears all at once
(the folder is built under a temporary name and renamed). The case's parameters (`Fingerprint`) are
stored in its `result.json` under "case", so a rerun skips every case whose folder holds the same
fingerprint, and recomputes the rest. After every case `results.csv`, `results.json` and `index.html`
are rewritten from the rows (temporary file + `os.replace`), so a run killed at any moment loses no
finished case and leaves no half-written file.

A case that fails is recorded (folder with `error.json`, row with status "failed" and the message)
and the others go on; it is retried on the next run.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import html
import io
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import quote

from ._version import __version__
from .errors import InputError, OnnxlamError
from .outputs import replace_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FORMAT = 1  # of the fingerprint and results.json; a new format recomputes every case
CASES = "cases"
RESULT = "result.json"
ERROR = "error.json"
AGGREGATES = ("results.csv", "results.json", "index.html")
CASE_FILES = ("attribution.npy", "gradient.npy", RESULT, "panel.png")
CSV_COLUMNS = ("model", "image", "x", "y", "size", "path", "fold", "di", "gini", "pixels_50", "pixels_90",
               "pixels_99", "radius_90", "seconds", "status", "message", "folder")
RANGE_KEYS = ("pixels_50", "pixels_90", "pixels_99", "radius_90")
CONFIG_KEYS = ("models", "images", "windows", "windows_file", "out", "size", "lr", "path", "sigma", "fold",
               "kernel_size", "batch_size", "device", "value_range", "bgr", "crop", "context", "max_memory",
               "inputs")


# ------------------------------------------------------------------------------------------------
# Parameters and cases
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LamOptions:
    """The `lam` options shared by every case of a report (the window side is per window)."""

    size: int = 16
    lr: bool = False
    path: str = "blur"
    sigma: float = 1.2
    fold: int = 50
    kernel_size: int = 9
    batch_size: int | None = None
    device: str = "auto"
    value_range: float | None = None
    bgr: bool | None = None
    crop: bool = True             # run local networks on the LR crop a window depends on (exact)
    context: int | None = None    # forced crop margin in LR pixels (approximate for global networks)
    max_memory: int | str | None = None  # as given ("24G" or bytes); the Analyzer parses it
    inputs: tuple = ()            # ((name, value), ...): extra model inputs held fixed (--input NAME=VALUE)

    def validate(self) -> None:
        """InputError for options no case could run with (checked before any case starts)."""
        from .paths import PATHS

        if self.path not in PATHS:
            raise InputError(f"unknown path {self.path!r}; choose one of {', '.join(PATHS)}")
        if self.fold < 1:
            raise InputError(f"--fold must be at least 1; got {self.fold}")
        if not self.sigma >= 0:
            raise InputError(f"--sigma must be ≥ 0; got {self.sigma}")
        if self.kernel_size < 1:
            raise InputError(f"--kernel-size must be at least 1; got {self.kernel_size}")
        if self.size < 1:
            raise InputError(f"--size must be at least 1; got {self.size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {self.batch_size}")
        if self.value_range is not None and self.value_range not in (1.0, 255.0):
            raise InputError(f"--value-range must be 1 or 255; got {self.value_range:g}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"--device must be auto, cpu or cuda; got {self.device!r}")
        if self.context is not None and self.context < 0:
            raise InputError(f"--context must be ≥ 0; got {self.context}")
        if self.max_memory is not None:
            from .memory import parse_size

            parse_size(self.max_memory)

    def run_arguments(self) -> dict:
        """Keyword arguments of `Analyzer.run` for these options (crop options only when not the default)."""
        args = dict(lr=self.lr, path=self.path, sigma=self.sigma, fold=self.fold, kernel_size=self.kernel_size)
        if not self.crop:
            args["crop"] = False
        if self.context is not None:
            args["context"] = self.context
        return args


@dataclass(frozen=True)
class WindowSpec:
    """A window as given: top-left (x, y) in SR pixels, and its side (None: the report's --size)."""

    x: int
    y: int
    size: int | None = None


@dataclass(frozen=True)
class Case:
    """One analysis of a report: `model` and `image` as given (paths or collection names)."""

    model: str
    image: str
    x: int
    y: int
    size: int

    @property
    def slug(self) -> str:
        """The case folder's name: readable, file-system safe, unique per (model, image, window)."""
        readable = _safe(f"{_stem(self.model)}-{_stem(self.image)}")[:80]
        where = hashlib.sha1(f"{os.path.abspath(self.model)}\0{os.path.abspath(self.image)}".encode()).hexdigest()
        return f"{readable}-{self.x}-{self.y}-{self.size}-{where[:8]}"

    @property
    def label(self) -> str:
        return f"{_stem(self.model)} · {Path(self.image).name} · ({self.x}, {self.y}) {self.size}px"


@dataclass(frozen=True)
class ReportConfig:
    """Everything a report run needs: inputs, windows, output folder and the lam options."""

    models: tuple[str, ...]
    images: tuple[str, ...]
    windows: tuple[WindowSpec, ...]
    out: Path
    options: LamOptions = LamOptions()


@dataclass(frozen=True)
class ConfigValues:
    """Report settings as given (TOML file or command line); None means "not given here"."""

    models: tuple[str, ...] | None = None
    images: tuple[str, ...] | None = None
    windows: tuple[WindowSpec, ...] | None = None
    windows_file: Path | None = None
    out: Path | None = None
    size: int | None = None
    lr: bool | None = None
    path: str | None = None
    sigma: float | None = None
    fold: int | None = None
    kernel_size: int | None = None
    batch_size: int | None = None
    device: str | None = None
    value_range: float | None = None
    bgr: bool | None = None
    crop: bool | None = None
    context: int | None = None
    max_memory: int | str | None = None
    inputs: tuple | None = None

    def overridden_by(self, other: ConfigValues) -> ConfigValues:
        """These values with every value that `other` gives replacing ours.

        Windows are one setting: giving `--window` or `--windows-file` replaces both of the config's.
        """
        given = {k: v for k, v in asdict_shallow(other).items() if v is not None}
        if "windows" in given or "windows_file" in given:
            given.setdefault("windows", None)
            given.setdefault("windows_file", None)
        return replace(self, **given)

    def resolve(self, default_out: Path = Path("onnxlam-report")) -> ReportConfig:
        """The complete configuration, with defaults filled in; InputError when something is missing."""
        if not self.models:
            raise InputError("no model given: use --model (repeatable) or `models = [...]` in the config")
        if not self.images:
            raise InputError("no image given: use --image (repeatable) or `images = [...]` in the config")
        windows = list(self.windows or ())
        if self.windows_file is not None:
            windows += read_windows_file(self.windows_file)
        if not windows:
            raise InputError("no window given: use --window X Y (repeatable), --windows-file or `windows`")
        defaults = LamOptions()
        options = LamOptions(**{k: (getattr(self, k) if getattr(self, k) is not None else getattr(defaults, k))
                                for k in LamOptions.__dataclass_fields__})
        options.validate()
        return ReportConfig(tuple(self.models), tuple(self.images), tuple(windows), self.out or default_out,
                            options)


def asdict_shallow(values: ConfigValues) -> dict:
    return {k: getattr(values, k) for k in ConfigValues.__dataclass_fields__}


def _stem(name: str) -> str:
    return Path(name).stem or name


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def parse_window(text: str) -> WindowSpec:
    """"X Y" or "X,Y" (from `--window X Y`) as a WindowSpec; InputError otherwise."""
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"--window takes two integers X Y; got {text!r}") from None
    return WindowSpec(x, y)


def read_windows_file(path: str | Path) -> list[WindowSpec]:
    """Windows from a CSV file of rows `x,y` or `x,y,size`; a header row and `#` comments are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read the windows file {path}: {exc.strerror or exc}") from None
    windows = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        try:
            values = [int(c) for c in cells if c != ""]
        except ValueError:
            if number == 1 and not windows:  # a header such as "x,y,size"
                continue
            raise InputError(f"{path}:{number}: expected integers x,y[,size]; got {','.join(row)!r}") from None
        if len(values) not in (2, 3):
            raise InputError(f"{path}:{number}: expected x,y or x,y,size; got {len(values)} values")
        windows.append(WindowSpec(*values))
    if not windows:
        raise InputError(f"the windows file {path} holds no window (rows x,y[,size])")
    return windows


def load_config(path: str | Path) -> ConfigValues:
    """The settings of a TOML report configuration; relative paths are taken from the file's folder.

    Keys: models, images, windows ([[x, y], [x, y, size], ...]), windows_file, out, and the lam options
    size, lr, path, sigma, fold, kernel_size, batch_size, device, value_range, bgr, crop, context,
    max_memory (a string such as "24G", or bytes) and inputs (a table of the model's extra inputs held
    fixed, `inputs = {noise_level = 0.06}`).
    """
    try:
        import tomllib
    except ModuleNotFoundError:
        raise InputError("TOML report configurations need Python 3.11 or later (tomllib); "
                         "give the cases with --model, --image and --window instead") from None
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the configuration {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"known keys: {', '.join(CONFIG_KEYS)}")
    base = path.parent

    def paths(key: str) -> tuple[str, ...] | None:
        value = data.get(key)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise InputError(f"{path}: `{key}` must be a string or a list of strings")
        return tuple(_relative_to(base, v, keep_names=(key == "models")) for v in items)

    def typed(key: str, kind: type | tuple[type, ...]):
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) and kind is not bool:
            raise InputError(f"{path}: `{key}` must be a number, not true/false")
        if not isinstance(value, kind):
            raise InputError(f"{path}: `{key}` has the wrong type ({type(value).__name__})")
        return value

    windows = None
    if "windows" in data:
        raw = data["windows"]
        ok = isinstance(raw, list) and all(
            isinstance(w, list) and len(w) in (2, 3) and all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in w) for w in raw)
        if not ok:
            raise InputError(f"{path}: `windows` must be a list of [x, y] or [x, y, size] integer lists")
        windows = tuple(WindowSpec(*w) for w in raw)
    sigma = typed("sigma", (int, float))
    value_range = typed("value_range", (int, float))
    inputs = None
    if "inputs" in data:
        raw = data["inputs"]
        if not (isinstance(raw, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in raw.values())):
            raise InputError(f"{path}: `inputs` must be a table of numbers, e.g. inputs = {{noise_level = 0.06}}")
        inputs = tuple(sorted((str(k), float(v)) for k, v in raw.items()))
    def one_path(key: str) -> Path | None:
        value = typed(key, str)
        return None if value is None else Path(_relative_to(base, value))

    return ConfigValues(
        models=paths("models"), images=paths("images"), windows=windows, windows_file=one_path("windows_file"),
        out=one_path("out"),
        size=typed("size", int), lr=typed("lr", bool), path=typed("path", str),
        sigma=None if sigma is None else float(sigma), fold=typed("fold", int),
        kernel_size=typed("kernel_size", int), batch_size=typed("batch_size", int), device=typed("device", str),
        value_range=None if value_range is None else float(value_range), bgr=typed("bgr", bool),
        crop=typed("crop", bool), context=typed("context", int), max_memory=typed("max_memory", (str, int)),
        inputs=inputs)


def _relative_to(base: Path, value: str, keep_names: bool = False) -> str:
    """`value` taken from the config's folder, unless absolute (or, for models, a collection name)."""
    candidate = Path(value).expanduser()
    if candidate.is_absolute():
        return str(candidate)
    joined = base / candidate
    if keep_names and not joined.exists() and "/" not in value and not value.endswith(".onnx"):
        return value  # a collection model name such as "animevideov3-x4"
    return str(joined)


def expand_images(images: Sequence[str]) -> list[str]:
    """The image files: files as given, folders replaced by their image files (sorted, not recursive)."""
    files = []
    for item in images:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"the folder {p} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(str(p))
        else:
            raise InputError(f"image not found: {p}")
    return files


def plan_cases(config: ReportConfig, resolve_model=None) -> list[Case]:
    """The report's cases, models × images × windows in that order, without duplicates.

    `resolve_model` maps a model as given to its file (collection names); a missing model or image is
    an InputError here, before any case runs.
    """
    for model in config.models:
        resolved = resolve_model(model) if resolve_model else model
        if not Path(resolved).is_file():
            raise InputError(f"model not found: {model}")
    images = expand_images(config.images)
    seen, cases = set(), []
    for model in config.models:
        for image in images:
            for w in config.windows:
                case = Case(model, image, w.x, w.y, w.size if w.size is not None else config.options.size)
                if case not in seen:
                    seen.add(case)
                    cases.append(case)
    return cases


# ------------------------------------------------------------------------------------------------
# Fingerprints and case folders
# ------------------------------------------------------------------------------------------------

def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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

    def to_json(self, options: LamOptions) -> dict:
        c = self.case
        return {"model": c.model, "image": c.image, "window": {"x": c.x, "y": c.y, "size": c.size},
                "lr": options.lr, "path": options.path, "sigma": options.sigma, "fold": options.fold,
                "kernel_size": options.kernel_size, "value_range": options.value_range, "bgr": options.bgr,
                "crop": options.crop, "context": options.context, "inputs": dict(options.inputs),
                "di": self.di, "gini": self.gini,
                "range": {k: self.range.get(k) for k in RANGE_KEYS},
                "scale": self.scale, "seconds": self.seconds, "status": self.status, "message": self.message,
                "folder": self.folder, "model_sha256": self.model_sha256, "reused": self.reused}

    def csv_values(self, options: LamOptions) -> list:
        c = self.case
        return [c.model, c.image, c.x, c.y, c.size, options.path, options.fold, _num(self.di), _num(self.gini),
                *(_num(self.range.get(k)) for k in RANGE_KEYS), _num(self.seconds, 3), self.status,
                self.message, self.folder]


def _num(value, digits: int = 6) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{round(value, digits)}"


def _row_from_result(case: Case, folder: str, data: dict, reused: bool) -> CaseRow:
    # an ok case's message is what its run warned about (an approximate memory crop), for the CSV and table
    message = " ".join(" ".join(data.get("warnings") or []).split())
    return CaseRow(case, folder, "ok", message, float(data["di"]), float(data["gini"]), data.get("seconds"),
                   dict(data.get("range") or {}), data.get("scale"), data.get("model_sha256"), reused)


def read_complete(folder: Path, fingerprint: Fingerprint) -> dict | None:
    """The case's result.json when the folder holds a complete result of these parameters, else None."""
    try:
        data = json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("case") != fingerprint.to_json():
        return None
    if not all((folder / name).is_file() for name in CASE_FILES):
        return None
    return data


def _write_dir_atomically(target: Path, files: dict[str, str]) -> None:
    """Replace folder `target` by one holding `files` (name → text), all at once."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Write `path` through a temporary sibling and `os.replace`: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_leftovers(out: Path) -> int:
    """Delete what an interrupted run left half-written: temporary copies of the aggregate files in
    OUT and temporary or replaced case folders in OUT/cases. Nothing else in OUT is touched."""
    removed = 0
    prefixes = tuple(f".{name}." for name in AGGREGATES)
    for p in out.iterdir() if out.is_dir() else ():
        if p.is_file() and p.name.startswith(prefixes) and p.name.endswith(".tmp"):
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


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

class ReportListener:
    """Callbacks of a report run (the command line shows them as a live progress display)."""

    def planned(self, total: int, reused: int) -> None:
        """`total` cases, of which `reused` are complete from an earlier run."""

    def group_started(self, cases: Sequence[Case], index: int, count: int) -> None:
        """Cases `index` … `index + len(cases) − 1` (from 1) of the `count` to compute begin together:
        the windows of one model and one image, sharing each forward pass. By default, `case_started`
        for each of them."""
        for n, case in enumerate(cases):
            self.case_started(case, index + n, count)

    def case_started(self, case: Case, index: int, count: int) -> None:
        """The `index`-th (from 1) of the `count` cases to compute begins (see `group_started`). Called
        again for each case of a group that failed as a whole, as it is retried alone."""

    def step(self, done: int, total: int) -> None:
        """Path steps of the current group (or retried case) done so far."""

    def case_finished(self, row: CaseRow) -> None:
        """The current case ended (row.status is "ok" or "failed")."""


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
    """DI statistics of one model's completed cases (std: sample standard deviation, None below 2)."""

    model: str
    cases: int
    failures: int
    di_mean: float | None
    di_median: float | None
    di_std: float | None
    radius_90_mean: float | None
    dis: tuple[float, ...]

    def to_json(self) -> dict:
        return {"model": self.model, "cases": self.cases, "failures": self.failures, "di_mean": self.di_mean,
                "di_median": self.di_median, "di_std": self.di_std, "radius_90_mean": self.radius_90_mean}


def summarise(rows: Sequence[CaseRow]) -> list[ModelSummary]:
    """Per model, in order of first appearance: case and failure counts, DI mean/median/std."""
    models = list(dict.fromkeys(r.case.model for r in rows))
    summaries = []
    for model in models:
        mine = [r for r in rows if r.case.model == model]
        dis = [r.di for r in mine if r.status == "ok" and r.di is not None]
        radii = [r.range["radius_90"] for r in mine if r.status == "ok" and r.range.get("radius_90") is not None]
        summaries.append(ModelSummary(
            model, len(mine), sum(r.status == "failed" for r in mine),
            statistics.fmean(dis) if dis else None, statistics.median(dis) if dis else None,
            statistics.stdev(dis) if len(dis) > 1 else None, statistics.fmean(radii) if radii else None,
            tuple(dis)))
    return summaries


def run_report(config: ReportConfig, listener: ReportListener | None = None, resolve_model=None,
               reraise_unexpected: bool = False, cases: list[Case] | None = None) -> Report:
    """Run every case of `config` not already complete in `config.out`; write the results as it goes.

    `resolve_model` maps a model as given to its file (default: the collection's resolver). With
    `reraise_unexpected`, an exception that is not an OnnxlamError stops the run (for --debug).
    `cases`: the result of `plan_cases(config)` when the caller has it already.
    """
    listener = listener or ReportListener()
    resolve_model = resolve_model or _default_resolver
    cases = plan_cases(config, resolve_model) if cases is None else cases
    out = config.out
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        remove_leftovers(out)
        return _run_locked(config, cases, listener, resolve_model, reraise_unexpected)


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; name a folder (it is created)")


def _default_resolver(model: str) -> str:
    """The model's file: a path as is, a collection name through the collection (InputError if neither)."""
    try:
        from .collection import resolve
    except ImportError:  # the collection is optional in a partial install
        return model
    return str(resolve(model))


def _run_locked(config: ReportConfig, cases: list[Case], listener: ReportListener, resolve_model,
                reraise_unexpected: bool) -> Report:
    out, options = config.out, config.options
    hashes: dict[str, str] = {}

    def sha(path: str) -> str:
        if path not in hashes:
            hashes[path] = file_sha256(path)
        return hashes[path]

    def model_sha(model: str) -> str:  # fixed extra inputs make another function of the same file
        digest = sha(resolve_model(model))
        if options.inputs:
            from .model import inputs_text

            digest = hashlib.sha256(f"{digest}|{inputs_text(dict(options.inputs))}".encode()).hexdigest()
        return digest

    fingerprints = {c: Fingerprint(model_sha(c.model), sha(c.image), c.x, c.y, c.size, options.lr,
                                   options.path, float(options.sigma), options.fold, options.kernel_size,
                                   options.value_range, options.bgr, options.context) for c in cases}
    report = Report(out, config, [], started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    todo = []
    for c in cases:
        folder = f"{CASES}/{c.slug}"
        data = read_complete(out / folder, fingerprints[c])
        if data is not None:
            report.rows.append(_row_from_result(c, folder, data, reused=True))
        else:
            report.rows.append(CaseRow(c, folder, "pending"))
            todo.append(len(report.rows) - 1)
    report.reused = len(cases) - len(todo)
    listener.planned(len(cases), report.reused)
    write_aggregates(report)
    analyzers = _Analyzers(options, resolve_model)
    try:
        index = 1
        for group in _groups(report.rows, todo):
            rows = [report.rows[i] for i in group]
            listener.group_started([r.case for r in rows], index, len(todo))
            finished = _run_group(rows, fingerprints, analyzers, options, out, listener, reraise_unexpected,
                                  index, len(todo))
            for i, row in zip(group, finished):  # each case is written and counted as soon as it is done
                report.rows[i] = row
                report.computed += row.status == "ok"
                write_aggregates(report)
                listener.case_finished(row)
            index += len(group)
    finally:
        analyzers.close()
    return report


def _groups(rows: Sequence[CaseRow], todo: Sequence[int]) -> list[list[int]]:
    """The pending rows (indices) by model and image, in order of first appearance: one group per
    `run_windows` call. Models stay together as planned, so each model is loaded once."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in todo:
        groups.setdefault((rows[i].case.model, rows[i].case.image), []).append(i)
    return list(groups.values())


class ModelSession:
    """One model's Analyzer, whose gradient programs are built once per input shape.

    The Analyzer plans each shape's batch once from measured memory (`Analyzer.plan`), so the report
    leaves the batch to it: pinning the first case's batch would skip that planning for later, larger
    images.
    """

    def __init__(self, analyzer):
        self.analyzer = analyzer

    def run(self, image: str, x: int, y: int, size: int, options: LamOptions, progress=None):
        """`Analyzer.run` of one window with the report's options."""
        return self.analyzer.run(image, (x, y), size, progress=progress, **options.run_arguments())

    def run_windows(self, image: str, cases: Sequence[Case], options: LamOptions, progress=None):
        """`Analyzer.run_windows` of the cases' windows (each with its own size) on one image."""
        from .analysis import Window

        windows = [Window(c.x, c.y, c.size) for c in cases]
        return self.analyzer.run_windows(image, windows, progress=progress, **options.run_arguments())


class _Analyzers:
    """One model session at a time, for the model whose cases are running: its programs (one per
    input shape) are built once and reused by every case of that model. A model that cannot be
    loaded fails its cases with the same message without being loaded again."""

    def __init__(self, options: LamOptions, resolve_model):
        self.options = options
        self.resolve_model = resolve_model
        self.model: str | None = None
        self.analyzer = None
        self.error: str | None = None

    def get(self, model: str) -> ModelSession:
        if model != self.model:
            from .analysis import Analyzer

            self.close()
            self.model = model
            o = self.options
            try:
                self.analyzer = ModelSession(Analyzer(self.resolve_model(model), device=o.device,
                                                      value_range=o.value_range, bgr=o.bgr,
                                                      batch_size=o.batch_size, max_memory=o.max_memory,
                                                      inputs=dict(o.inputs)))
            except OnnxlamError as exc:
                self.error = str(exc)
        if self.error is not None:
            raise InputError(self.error)
        return self.analyzer

    def close(self) -> None:
        self.model, self.analyzer, self.error = None, None, None


def _run_group(rows: Sequence[CaseRow], fingerprints: dict, analyzers: _Analyzers, options: LamOptions,
               out: Path, listener: ReportListener, reraise_unexpected: bool, index: int,
               count: int) -> Iterator[CaseRow]:
    """The rows of one model's pending cases on one image, each yielded once its folder is written.

    One `run_windows` call computes them all. When it fails, each case runs alone, so that one bad
    window (outside the image, say) fails only itself and its message is its own.
    """
    first = rows[0].case
    if len(rows) > 1:
        try:
            results = analyzers.get(first.model).run_windows(first.image, [r.case for r in rows], options,
                                                             progress=listener.step)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if reraise_unexpected and not isinstance(exc, OnnxlamError):
                raise
            results = None
        if results is not None:
            for row, result in zip(rows, results):
                yield _finish_case(row, fingerprints[row.case], out, reraise_unexpected,
                                   lambda r=result: _share(r, len(rows)))
            return
    for n, row in enumerate(rows):
        if len(rows) > 1:  # a retry after the group failed; a lone case was announced by group_started
            listener.case_started(row.case, index + n, count)
        yield _finish_case(row, fingerprints[row.case], out, reraise_unexpected,
                           lambda c=row.case: _share(analyzers.get(c.model).run(c.image, c.x, c.y, c.size,
                                                                                options, progress=listener.step), 1))


def _share(result, windows: int):
    """The result with `seconds` its share of its `run_windows` call (the call's time, which
    `LamResult.seconds` holds, over its windows) and the whole call under "group" in result.json:
    the windows of a call share their forward passes, so a window's own time does not exist."""
    return replace(result, seconds=result.seconds / windows,
                   extra={**result.extra, "group": {"windows": windows, "seconds": round(result.seconds, 4)}})


def _finish_case(row: CaseRow, fingerprint: Fingerprint, out: Path, reraise_unexpected: bool,
                 compute) -> CaseRow:
    """Write the case's folder from `compute()` (its LamResult) and return its row; a failure of either
    is recorded in the case's folder (error.json) and row instead."""
    from .outputs import write_result

    case, target = row.case, out / row.folder
    start = time.perf_counter()
    try:
        result = compute()
        result = replace(result, model=case.model, extra={**result.extra, "case": fingerprint.to_json()})
        write_result(result, target)
        return _row_from_result(case, row.folder, json.loads((target / RESULT).read_text()), reused=False)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if reraise_unexpected and not isinstance(exc, OnnxlamError):
            raise
        message = str(exc) if isinstance(exc, OnnxlamError) else f"unexpected {type(exc).__name__}: {exc}"
        message = " ".join(message.split())  # one line, for the CSV and the table
        seconds = time.perf_counter() - start
        record = {"case": fingerprint.to_json(), "model": case.model, "image": case.image,
                  "window": {"x": case.x, "y": case.y, "size": case.size}, "status": "failed",
                  "message": message, "seconds": round(seconds, 4)}
        with contextlib.suppress(OSError):
            _write_dir_atomically(target, {ERROR: json.dumps(record, indent=2) + "\n"})
        return replace(row, status="failed", message=message, seconds=round(seconds, 4))


# ------------------------------------------------------------------------------------------------
# results.csv, results.json
# ------------------------------------------------------------------------------------------------

def write_aggregates(report: Report) -> None:
    """Rewrite results.csv, results.json and index.html from the report's rows (each atomically)."""
    out, options = report.out, report.config.options
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        writer.writerow(row.csv_values(options))
    write_text_atomically(out / "results.csv", buffer.getvalue())
    write_text_atomically(out / "results.json", json.dumps(results_json(report), indent=2) + "\n")
    write_text_atomically(out / "index.html", render_html(report))


def results_json(report: Report) -> dict:
    """The content of results.json: settings, per-model summary, this run's counts, one entry per case."""
    o = report.config.options
    return {
        "format": FORMAT, "onnxlam": __version__, "started": report.started,
        "options": {"size": o.size, "lr": o.lr, "path": o.path, "sigma": o.sigma, "fold": o.fold,
                    "kernel_size": o.kernel_size, "batch_size": o.batch_size, "device": o.device,
                    "value_range": o.value_range, "bgr": o.bgr, "crop": o.crop, "context": o.context,
                    "max_memory": o.max_memory, "inputs": dict(o.inputs)},
        "run": {"cases": len(report.rows), "computed": report.computed, "reused": report.reused,
                "failed": report.failed, "pending": report.pending},
        "summary": [s.to_json() for s in report.summaries()],
        "cases": [r.to_json(o) for r in report.rows],
    }


# ------------------------------------------------------------------------------------------------
# index.html: one self-contained page (no network), every user string escaped
# ------------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555;margin:0 0 12px}.meta code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse}th,td{padding:4px 8px;border-bottom:1px solid #e3e3e3;text-align:left;
vertical-align:middle}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
#cases th{cursor:pointer;user-select:none;position:sticky;top:0;background:#fafafa}
#cases th:hover{background:#eee}#cases th .arrow{color:#999;font-size:11px}
#cases img{height:72px;display:block}
td.name{white-space:nowrap;max-width:260px;overflow:hidden;text-overflow:ellipsis}
tr.failed td{background:#fff2f2}.status-failed{color:#b00020;font-weight:600}.status-pending{color:#a60}
.msg{max-width:420px;white-space:normal;color:#b00020;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot{border:1px solid #e3e3e3;border-radius:6px;padding:8px}
.plot h3{font-size:13px;margin:0 0 4px;max-width:420px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
svg text{font:11px system-ui,sans-serif;fill:#444}
.wrap{overflow-x:auto}input#filter{margin:0 0 8px;padding:4px 8px;width:320px;font:inherit}
"""

_JS = """
(function(){
  var table=document.getElementById('cases'); if(!table) return;
  var body=table.tBodies[0], heads=table.tHead.rows[0].cells, state={col:-1,dir:1};
  function key(row,col){var c=row.cells[col], v=c.getAttribute('data-v'); if(v===null) v=c.textContent;
    var f=parseFloat(v); return (v!=='' && !isNaN(f) && isFinite(v)) ? [0,f] : [v==='' ? 2 : 1, v.toLowerCase()];}
  function sortBy(col){
    state.dir = (state.col===col) ? -state.dir : 1; state.col=col;
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a,col), y=key(b,col);
      if(x[0]!==y[0]) return x[0]-y[0];
      return (x[1]<y[1] ? -1 : x[1]>y[1] ? 1 : 0)*state.dir;});
    rows.forEach(function(r){body.appendChild(r);});
    for(var i=0;i<heads.length;i++){var a=heads[i].querySelector('.arrow');
      if(a) a.textContent = i===col ? (state.dir>0 ? ' \\u25B2' : ' \\u25BC') : '';}
  }
  for(var i=0;i<heads.length;i++){(function(i){ if(heads[i].hasAttribute('data-nosort')) return;
    heads[i].addEventListener('click',function(){sortBy(i);});})(i);}
  var filter=document.getElementById('filter');
  if(filter) filter.addEventListener('input',function(){var q=filter.value.toLowerCase();
    Array.prototype.forEach.call(body.rows,function(r){
      r.style.display = r.textContent.toLowerCase().indexOf(q)>=0 ? '' : 'none';});});
})();
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _href(relative: str) -> str:
    """A relative URL to a file inside the report folder, percent-encoded and HTML-escaped."""
    return _e(quote(relative, safe="/"))


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def render_html(report: Report) -> str:
    """index.html: summary per model, DI distribution per model (inline SVG), sortable case table."""
    o = report.config.options
    summaries = report.summaries()
    all_dis = [d for s in summaries for d in s.dis]
    lo, hi = _axis_range(all_dis)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>onnxlam report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>Local attribution maps: report</h1>",
             f'<p class="meta">{len(report.rows)} cases · {report.failed} failed · {report.pending} pending · '
             f"path <code>{_e(o.path)}</code> · sigma {_e(f'{o.sigma:g}')} · fold {o.fold} · "
             f"kernel {o.kernel_size}{' · LR input' if o.lr else ''} · onnxlam {_e(__version__)} · "
             f"started {_e(report.started)}</p>",
             '<p class="meta">Files: <a href="results.csv">results.csv</a> · '
             '<a href="results.json">results.json</a>. DI: diffusion index (higher: more input pixels '
             "contribute). Range: LR pixels holding 50/90/99% of the attribution, and the radius (LR pixels) "
             "around the window centre holding 90%.</p>"]
    parts += _summary_table(summaries)
    parts.append("<h2>DI distribution per model</h2><div class=\"plots\">")
    for s in summaries:
        parts.append(f'<div class="plot"><h3 title="{_e(s.model)}">{_e(s.model)}</h3>'
                     f"{_histogram_svg(s.dis, lo, hi)}</div>")
    parts.append("</div>")
    parts += _case_table(report.rows)
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def _summary_table(summaries: Sequence[ModelSummary]) -> list[str]:
    lines = ["<h2>Summary per model</h2>", "<table><thead><tr><th>model</th><th class=n>cases</th>"
             "<th class=n>failures</th><th class=n>DI mean</th><th class=n>DI median</th><th class=n>DI std</th>"
             "<th class=n>radius 90% (mean)</th></tr></thead><tbody>"]
    for s in summaries:
        lines.append(f"<tr><td>{_e(s.model)}</td><td class=n>{s.cases}</td><td class=n>{s.failures}</td>"
                     f"<td class=n>{_fmt(s.di_mean)}</td><td class=n>{_fmt(s.di_median)}</td>"
                     f"<td class=n>{_fmt(s.di_std)}</td><td class=n>{_fmt(s.radius_90_mean)}</td></tr>")
    lines.append("</tbody></table>")
    return lines


def _case_table(rows: Sequence[CaseRow]) -> list[str]:
    heads = [("panel", False), ("model", False), ("image", False), ("x", True), ("y", True), ("size", True),
             ("DI", True), ("Gini", True), ("px 50%", True), ("px 90%", True), ("px 99%", True),
             ("radius 90%", True), ("seconds", True), ("status", False), ("message", False)]
    lines = ["<h2>Cases</h2>", '<input id="filter" type="search" placeholder="Filter cases…" '
             'aria-label="Filter cases">', '<div class="wrap"><table id="cases"><thead><tr>']
    for name, numeric in heads:
        extra = ' data-nosort=""' if name == "panel" else ""
        lines.append(f'<th{" class=n" if numeric else ""}{extra}>{_e(name)}<span class="arrow"></span></th>')
    lines.append("</tr></thead><tbody>")
    for r in rows:
        c = r.case
        if r.status == "ok":
            panel = f"{r.folder}/panel.png"
            thumb = (f'<a href="{_href(panel)}"><img src="{_href(panel)}" loading="lazy" '
                     f'alt="{_e(c.label)}"></a>')
        else:
            thumb = ""
        rng = r.range

        def num(v, digits=2):
            return f'<td class=n data-v="{"" if v is None else _e(v)}">{_fmt(v, digits)}</td>'

        folder_link = f'<a href="{_href(r.folder + "/")}">{_e(r.status)}</a>' if r.status != "pending" \
            else _e(r.status)
        lines.append(
            f'<tr class="{_e(r.status)}"><td>{thumb}</td><td class="name" title="{_e(c.model)}">'
            f'{_e(_stem(c.model))}</td><td class="name" title="{_e(c.image)}">{_e(Path(c.image).name)}</td>'
            f"{num(c.x)}{num(c.y)}{num(c.size)}"
            f"{num(r.di)}{num(r.gini, 4)}{num(rng.get('pixels_50'))}{num(rng.get('pixels_90'))}"
            f"{num(rng.get('pixels_99'))}{num(rng.get('radius_90'), 1)}{num(r.seconds, 1)}"
            f'<td class="status-{_e(r.status)}">{folder_link}</td><td class="msg">{_e(r.message)}</td></tr>')
    lines.append("</tbody></table></div>")
    return lines


def _axis_range(values: Sequence[float]) -> tuple[float, float]:
    """A DI axis shared by every model's plot, on round numbers around the values."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    step = _nice_step((hi - lo) / 5)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _nice_step(raw: float) -> float:
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _histogram_svg(values: Sequence[float], lo: float, hi: float, bins: int = 20) -> str:
    """A DI histogram with a rug of the individual cases and the mean marked, as inline SVG."""
    width, height, left, right, top, bottom = 420, 150, 34, 10, 8, 40
    pw, ph = width - left - right, height - top - bottom
    parts = [f'<svg width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="DI histogram">']
    if not values:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no completed case</text></svg>')
        return "".join(parts)
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    peak = max(counts)

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    bw = pw / bins
    for i, n in enumerate(counts):
        if n:
            h = n / peak * ph
            a, b = lo + i * (hi - lo) / bins, lo + (i + 1) * (hi - lo) / bins
            parts.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{top + ph - h:.1f}" width="{bw - 1:.1f}" '
                         f'height="{h:.1f}" fill="#4a78b5"><title>DI {a:.2f}–{b:.2f}: {n} '
                         f'case{"s" if n > 1 else ""}</title></rect>')
    base = top + ph
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + pw}" y2="{base}" stroke="#888"/>')
    for v in values:  # rug: one tick per case
        parts.append(f'<line x1="{sx(v):.1f}" y1="{base + 3}" x2="{sx(v):.1f}" y2="{base + 11}" '
                     f'stroke="#c0392b" stroke-opacity="0.6"/>')
    mean = statistics.fmean(values)
    parts.append(f'<line x1="{sx(mean):.1f}" y1="{top}" x2="{sx(mean):.1f}" y2="{base}" stroke="#c0392b" '
                 f'stroke-dasharray="3,3"><title>mean DI {mean:.2f}</title></line>')
    step = _nice_step((hi - lo) / 5)
    t = lo
    while t <= hi + 1e-9:
        parts.append(f'<line x1="{sx(t):.1f}" y1="{base + 11}" x2="{sx(t):.1f}" y2="{base + 14}" stroke="#888"/>'
                     f'<text x="{sx(t):.1f}" y="{base + 25}" text-anchor="middle">{t:g}</text>')
        t += step
    parts.append(f'<text x="{left + pw / 2}" y="{height - 2}" text-anchor="middle">DI  (n = {len(values)}, '
                 f"mean {mean:.2f})</text>")
    parts.append(f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{peak}</text>'
                 f'<text x="{left - 4}" y="{base}" text-anchor="end">0</text></svg>')
    return "".join(parts)
