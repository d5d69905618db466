"""A report's configuration: models, images, windows and LAM options, from flags or a TOML file, and
the cases they make (models × images × windows)."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxlam.batch.report.target import parse_target
from onnxlam.core.errors import InputError
from onnxlam.lam.options import LamOptions, given_options, option_names, validate_options
from onnxlam.methods import registry
from onnxlam.methods.registry import DEFAULT, parse_methods


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
REPORT_KEYS = ("models", "images", "windows", "windows_file", "out", "cluster", "scheduler", "methods", "method")


# ------------------------------------------------------------------------------------------------
# The methods' options in a report
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MethodKey:
    """A report option of the methods: `key` (TOML key and flag stem, the method's `prefix` joined to
    the option's name: cem_block, --cem-block), the option's `name` in the methods' Options and the
    methods that take it (the noise tunnel's three share theirs)."""

    key: str
    name: str
    methods: tuple[str, ...]
    field: Any

    @property
    def flag(self) -> str:
        flag = self.field.metadata["flag"].split("/")[0]
        prefix = self.key[:len(self.key) - len(self.name)].rstrip("_")
        return f"--{prefix}-{flag[2:]}" if prefix else flag


def method_keys() -> dict[str, MethodKey]:
    """Every registered method's report options by key (`Method.report_option_names`, `Method.prefix`)."""
    keys: dict[str, MethodKey] = {}
    for m in registry.methods():
        for f in fields(m.Options):
            if f.name not in m.report_option_names():
                continue
            key = f"{m.prefix}_{f.name}" if m.prefix else f.name
            if key in keys:
                keys[key] = replace(keys[key], methods=keys[key].methods + (m.name,))
            else:
                keys[key] = MethodKey(key, f.name, (m.name,), f)
    return keys


def method_options_class():
    """A dataclass of every method key (default None: "not given"), for the flags and TOML typing."""
    made = []
    for k in method_keys().values():
        default = k.field.default
        shown = "" if default is None else f" (default {default})"
        metadata = {**k.field.metadata, "flag": k.flag, "optional_flag": k.flag,
                    "help": f"{', '.join(k.methods)}: {k.field.metadata['help']}{shown}"}
        made.append((k.key, k.field.type, field(default=None, metadata=metadata)))
    return make_dataclass("MethodValues", made, frozen=True)


def method_options(methods: Sequence[str], options: LamOptions, values: Mapping[str, Any]) -> dict:
    """Each chosen method's Options: its defaults, the report's LAM options where it shares them, and
    the report's values of its own keys (`values`, given only). InputError for a value no chosen
    method takes, or a combination no case of a method could run with."""
    keys = method_keys()
    for key in values:
        k = keys.get(key)
        if k is None:
            raise InputError(f"unknown option {key!r}; the methods' options are {', '.join(keys)}")
        if not set(k.methods) & set(methods):
            raise InputError(f"{k.flag} belongs to --method {' or '.join(k.methods)}; the report runs "
                             f"{', '.join(methods)}: add the method or leave the option out")
    validate_options(replace(method_options_class()(), **values))  # messages name the report's flags
    chosen = {}
    for name in methods:
        m = registry.method(name)
        if options.lr and not m.takes_lr:
            raise InputError(f"--method {name} takes the HR image (its input is derived from it); --lr does "
                             f"not apply to it: run {name} in a report without --lr")
        shared = {n: getattr(options, n) for n in option_names(cls=m.Options) if n in option_names()}
        own = {n: values[k.key] for k in keys.values() if name in k.methods for n in [k.name] if k.key in values}
        chosen[name] = m.check(replace(m.Options(), **{**shared, **own}).validate())
    return chosen


# ------------------------------------------------------------------------------------------------
# Parameters and cases
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSpec:
    """A window as given: top-left (x, y) in SR pixels, and its side (None: the report's --size)."""

    x: int
    y: int
    size: int | None = None


@dataclass(frozen=True)
class Case:
    """One analysis of a report: `model` and `image` as given (paths or collection names; a folder of
    frames for a method of frames), the window (for CEM: the region of interest) and the `method`."""

    model: str
    image: str
    x: int
    y: int
    size: int
    method: str = DEFAULT

    @property
    def slug(self) -> str:
        """The case folder's name: readable, file-system safe, unique per (model, image, window, method).
        The default method's has no method in it, as before methods were added, so earlier reports resume."""
        readable = _safe(f"{stem(self.model)}-{stem(self.image)}")[:80]
        where = hashlib.sha1(f"{os.path.abspath(self.model)}\0{os.path.abspath(self.image)}".encode()).hexdigest()
        method = "" if self.method == DEFAULT else f"{self.method}-"
        return f"{readable}-{method}{self.x}-{self.y}-{self.size}-{where[:8]}"

    @property
    def label(self) -> str:
        method = "" if self.method == DEFAULT else f" · {self.method}"
        return f"{stem(self.model)} · {Path(self.image).name} · ({self.x}, {self.y}) {self.size}px{method}"


@dataclass(frozen=True)
class ReportConfig:
    """Everything a report run needs: inputs, windows, output folder and the lam options."""

    models: tuple[str, ...]
    images: tuple[str, ...]
    windows: tuple[WindowSpec, ...]
    out: Path
    options: LamOptions = LamOptions()
    cluster: str | None = None     # "local:N": a Dask LocalCluster of N workers (batch/cluster.py)
    scheduler: str | None = None   # an existing Dask scheduler: tcp://…, tls://… or a scheduler file
    methods: tuple[str, ...] = (DEFAULT,)          # what each (model, image, window) case runs
    method_options: dict = field(default_factory=dict)  # each method's Options (`method_options`)
    method_values: tuple[tuple[str, Any], ...] = ()     # the methods' options as given (keys of `method_keys`)
    hard: int | None = None  # `--windows hard:K`: each image's K hardest windows instead of `windows`

    def options_of(self, method: str):
        """The Options of `method` in this report (its defaults where the report does not run it)."""
        if method not in self.method_options:
            return method_options([method], self.options, {})[method]
        return self.method_options[method]

    def method_options_json(self) -> dict:
        """The methods' options as given, by key (results.json's "method_options")."""
        return dict(self.method_values)


@dataclass(frozen=True)
class _ReportValues:
    models: tuple[str, ...] | None = None
    images: tuple[str, ...] | None = None
    windows: tuple[WindowSpec, ...] | None = None
    windows_file: Path | None = None
    out: Path | None = None
    cluster: str | None = None
    scheduler: str | None = None
    methods: tuple[str, ...] | None = None
    method_values: tuple[tuple[str, Any], ...] | None = None  # the methods' options (`method_keys`) given
    hard: int | None = None  # K of `--windows hard:K` (`windows = "hard:K"` in TOML)


class ConfigValues(make_dataclass("_ConfigValues", [(name, object, None) for name in option_names()],
                                  bases=(_ReportValues,), frozen=True)):
    """Report settings as given (TOML file or command line); None means "not given here".

    The report's own keys, then every LAM option (its fields derive from `LamOptions`), then the
    methods' own options as (key, value) pairs (`method_keys`: --cem-block is cem_block).
    """

    def overridden_by(self, other: ConfigValues) -> ConfigValues:
        """These values with every value that `other` gives replacing ours.

        Windows are one setting: giving `--window`, `--windows-file` or `--windows hard:K` replaces all
        three of the config's;
        so is where the run goes: `--cluster` or `--scheduler` replaces both.
        """
        given = {k: v for k, v in asdict_shallow(other).items() if v is not None}
        if "method_values" in given:  # one key at a time, like the other options
            given["method_values"] = tuple({**dict(self.method_values or ()), **dict(given["method_values"])}.items())
        for pair in (("windows", "windows_file", "hard"), ("cluster", "scheduler")):
            if any(k in given for k in pair):
                for k in pair:
                    given.setdefault(k, None)
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
        if windows and self.hard is not None:
            raise InputError("give fixed windows (--window, --windows-file) or --windows hard:K, not both")
        if not windows and self.hard is None:
            raise InputError("no window given: use --window X Y (repeatable), --windows-file, --windows hard:K "
                             "or `windows`")
        given = {k: getattr(self, k) for k in option_names() if getattr(self, k) is not None}
        options = replace(LamOptions(), **given).validate()
        methods = parse_methods(self.methods)
        values = {k: v for k, v in (self.method_values or ()) if v is not None}
        chosen = method_options(methods, options, values)
        parse_target(self.cluster, self.scheduler)  # InputError for a bad or doubly given target
        return ReportConfig(tuple(self.models), tuple(self.images), tuple(windows), self.out or default_out,
                            options, self.cluster, self.scheduler, methods, chosen, tuple(sorted(values.items())),
                            self.hard)


def asdict_shallow(values: ConfigValues) -> dict:
    return {f.name: getattr(values, f.name) for f in fields(values)}


def stem(name: str) -> str:
    """A model's or image's short name: its file stem, or the name itself (a collection name)."""
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

    Keys: models, images, windows ([[x, y], [x, y, size], ...], or "hard:K"), windows_file, out, and the lam options
    size, lr, path, sigma, fold, kernel_size, batch_size, device, value_range, bgr, crop, context and
    max_memory (a string such as "24G", or bytes); where it runs: cluster ("local:N") or scheduler
    (tcp://host:port, tls://host:port or a scheduler file), not both; `methods` (or `method`: a name or
    a list, default ["lam"]) and the methods' options (`method_keys`: samples, stdev, seed, cem_size,
    cem_block, …; a folder such as cem_patches is taken from the file's folder).
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
    known = config_keys()
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"known keys: {', '.join(known)}")
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

    windows, hard = _toml_windows(data, path)
    def one_path(key: str) -> Path | None:
        value = typed(key, str)
        return None if value is None else Path(_relative_to(base, value))

    scheduler = typed("scheduler", str)  # a scheduler file is taken from the config's folder too
    if scheduler is not None and "://" not in scheduler:
        scheduler = _relative_to(base, scheduler)
    if "methods" in data and "method" in data:
        raise InputError(f"{path}: give `methods` or `method`, not both")
    methods = data.get("methods", data.get("method"))
    if methods is not None and not (isinstance(methods, str) or (isinstance(methods, list) and all(
            isinstance(m, str) for m in methods))):
        raise InputError(f"{path}: `methods` must be a string or a list of strings")
    method_values = given_options(data, str(path), cls=method_options_class())
    for key in method_values:
        if key.endswith("patches"):  # a folder of the method's (CEM's patch bank)
            method_values[key] = _relative_to(base, method_values[key])
    return ConfigValues(models=paths("models"), images=paths("images"), windows=windows,
                        windows_file=one_path("windows_file"), out=one_path("out"), cluster=typed("cluster", str),
                        scheduler=scheduler, methods=None if methods is None else tuple(parse_methods(methods)),
                        method_values=tuple(method_values.items()) or None, hard=hard,
                        **given_options(data, str(path)))


def _toml_windows(data: dict, path: Path) -> tuple[tuple[WindowSpec, ...] | None, int | None]:
    """A TOML configuration's `windows`: fixed windows, or K of "hard:K"."""
    from onnxlam.lam.hard_windows import parse_hard  # lazily, as everything numpy: `--help` stays light

    windows, hard = None, None
    if isinstance(data.get("windows"), str):  # "hard:K"
        hard = parse_hard(data["windows"])
    elif "windows" in data:
        raw = data["windows"]
        ok = isinstance(raw, list) and all(
            isinstance(w, list) and len(w) in (2, 3) and all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in w) for w in raw)
        if not ok:
            raise InputError(f"{path}: `windows` must be \"hard:K\" or a list of [x, y] or [x, y, size] integer "
                             "lists")
        windows = tuple(WindowSpec(*w) for w in raw)
    return windows, hard


def config_keys() -> tuple[str, ...]:
    """The keys of a TOML configuration: the report's, LAM's options, the methods' (`method_keys`)."""
    return REPORT_KEYS + option_names() + tuple(method_keys())


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
    """The report's cases, models × images × windows × methods in that order, without duplicates.

    A window's size is its own, else its method's size option where the report gives one (--cem-size:
    CEM's ROI), else the report's --size. A method of frames (video LAM) takes each folder given as
    one sequence of frames; the others take the image files, folders replaced by their files.

    `resolve_model` maps a model as given to its file (collection names); a missing model or image is
    an InputError here, before any case runs.
    """
    for model in config.models:
        resolved = resolve_model(model) if resolve_model else model
        if not Path(resolved).is_file():
            raise InputError(f"model not found: {model}")
    images = expand_images(config.images)
    sequences = [str(p) for p in config.images if Path(p).is_dir()]
    from onnxlam.batch.report.hard import common_scale

    seen, cases = set(), []
    align = common_scale(config.models, resolve_model) if config.hard is not None else 1
    for model in config.models:
        for method in config.methods:
            m = registry.method(method)
            if m.frames and config.hard is not None:
                raise InputError(f"--windows hard:K chooses windows on single images; --method {method} takes "
                                 "sequences of frames: give its windows with --window")
            if m.frames and not sequences:
                raise InputError(f"--method {method} takes a sequence of frames: give a folder of frames as "
                                 "--image FOLDER")
            size = getattr(config.options_of(method), "size", config.options.size)
            for image in sequences if m.frames else images:
                for w in _windows_of(config, image, size, align):
                    case = Case(model, image, w.x, w.y, w.size if w.size is not None else size, method)
                    if case not in seen:
                        seen.add(case)
                        cases.append(case)
    return _in_order(cases, config)


def _windows_of(config: ReportConfig, image: str, size: int, align: int) -> Sequence[WindowSpec]:
    """The report's fixed windows, or `image`'s hard ones (side `size`, see `report.hard`)."""
    if config.hard is None:
        return config.windows
    from onnxlam.lam.hard_windows import image_windows

    return [WindowSpec(w.x, w.y, w.size) for w in image_windows(image, size, config.hard, align)]


def _in_order(cases: list[Case], config: ReportConfig) -> list[Case]:
    """The cases models × images × windows × methods, in that order (each method's inputs planned above)."""
    rank = {m: i for i, m in enumerate(config.methods)}
    models = {m: i for i, m in enumerate(config.models)}
    images: dict[str, int] = {}
    windows: dict[tuple, int] = {}
    for c in cases:
        images.setdefault(c.image, len(images))
        windows.setdefault((c.x, c.y), len(windows))
    return sorted(cases, key=lambda c: (models[c.model], images[c.image], windows[(c.x, c.y)], rank[c.method]))
