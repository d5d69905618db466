"""The method contract: what every interpretation method declares, does and returns.

A method (Captum's `Attribution` is the model) is a `Method` subclass with one instance in the
registry (`methods/registry.py`). It declares its `name`, its `Options` (a frozen dataclass of
`lam.options.option` fields: flags, help, checks and TOML types from one declaration), whether it
needs gradient programs, whether the windows of one image share its passes, the files a complete
case folder holds and the columns it adds to a report's rows; and it does four things:

    attribute(model, image, windows, options, progress) -> list[Result]   # one result per window
    write(result, out, about)                                              # the folder its command writes
    columns(data) -> dict                                                  # a report row, from result.json
    picture(result) -> H×W×3 uint8                                         # its panel

Every result is a frozen dataclass deriving from `Result`, with one `Provenance` (model, sha256,
image, provider, seconds, onnxlam version, options); `to_json()` is derived from the fields (arrays
left out, the provenance's keys at the top level), and `save`, `_repr_png_` and `_repr_html_` go
through the result's method, so a notebook shows and saves every result alike.

Method modules are light at import (no numpy, onnxruntime or scipy at their top level): the command
line reads their `Options` to build its flags and must start fast.
"""
from __future__ import annotations

import base64
import dataclasses
import html
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from onnxlam.core.errors import InputError
from onnxlam.core.version import __version__
from onnxlam.lam.options import LamOptions, ModelOptions, given_options, option_names, validate_options
from onnxlam.lam.result import Window, to_json_value

Progress = Callable[[int, int], None]
SUMMARIES = ("distribution", "mean", "")


@dataclass(frozen=True)
class Column:
    """A value a method's cases add to a report's rows: `name` in results.csv/json, `title` in
    index.html, shown with `digits`; `summary` per model: "distribution" (mean, median, standard
    deviation and a histogram), "mean", or "" (none)."""

    name: str
    title: str
    digits: int = 2
    summary: str = ""


@dataclass(frozen=True)
class Provenance:
    """Where a result comes from: the model as given and its sha256, the image, the execution
    provider, the seconds it took, this onnxlam's version and the method's options."""

    model: str
    model_sha256: str
    image: str
    provider: str
    seconds: float
    options: Any = None  # the method's Options instance
    version: str = __version__

    def to_json(self) -> dict:
        return {"model": self.model, "model_sha256": self.model_sha256, "image": self.image,
                "provider": self.provider, "seconds": round(self.seconds, 4), "onnxlam": self.version,
                "options": None if self.options is None else self.options.to_json()}


def image_name(image) -> str:
    """How a result names its image: the path as given, "<array>" for pixels passed directly."""
    return str(image) if isinstance(image, (str, Path)) else "<array>"


class Result:
    """The base of every method's result (a frozen dataclass with a `provenance` field).

    Fields with metadata {"array": True} are left out of `to_json()`; fields with {"optional": True}
    are left out while None; `json_extras()` adds derived keys."""

    method: ClassVar[str]

    @property
    def method_name(self) -> str:
        return self.method

    # the provenance's fields, read as the result's own
    model = property(lambda self: self.provenance.model)
    model_sha256 = property(lambda self: self.provenance.model_sha256)
    image = property(lambda self: self.provenance.image)
    provider = property(lambda self: self.provenance.provider)
    seconds = property(lambda self: self.provenance.seconds)

    def with_provenance(self, **changes):
        """This result with provenance fields changed (a report names the model as given)."""
        return dataclasses.replace(self, provenance=dataclasses.replace(self.provenance, **changes))

    def json_extras(self) -> dict:
        return {}

    def to_json(self) -> dict:
        data: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("array") or (f.metadata.get("optional") and value is None):
                continue
            if isinstance(value, Provenance):
                data.update(value.to_json())
            else:
                data[f.name] = to_json_value(value)
        data.update(self.json_extras())
        return data

    def save(self, out: str | Path) -> Path:
        """Write the folder the method's command writes (arrays, result.json, pictures), all at once."""
        from onnxlam.methods.registry import method

        return method(self.method_name).write(self, Path(out))

    def _repr_png_(self) -> bytes:
        from onnxlam.methods.registry import method
        from onnxlam.render.pictures import png_bytes

        return png_bytes(method(self.method_name).picture(self))

    def _repr_html_(self) -> str:
        from onnxlam.methods.registry import method

        m = method(self.method_name)
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in m.facts(self))
        picture = base64.b64encode(self._repr_png_()).decode("ascii")
        return (f"<div><b>{html.escape(m.title)}</b><table>{rows}</table>"
                f"<img src='data:image/png;base64,{picture}' alt='{html.escape(m.name)} panel'></div>")


class Method:
    """One interpretation method; subclasses set the class attributes and implement the verbs."""

    name: ClassVar[str]
    title: ClassVar[str]                        # what its command and pages call it
    Options: ClassVar[type] = LamOptions
    prefix: ClassVar[str] = ""                  # of its flags in `report` (--cem-block); "" for none
    report_names: ClassVar[tuple[str, ...] | None] = None  # its options a report takes (default: beyond LAM's)
    gradients: ClassVar[bool] = True            # needs gradient programs (so the model's ops must have rules)
    shares_passes: ClassVar[bool] = False       # the windows of one image are computed together
    frames: ClassVar[bool] = False              # its input is a sequence of frames (a folder), not one image
    path_options: ClassVar[bool] = True         # LAM's path (path, sigma, fold, kernel_size, context) applies
    takes_lr: ClassVar[bool] = True             # --lr (the image is the LR input) applies
    files: ClassVar[tuple[str, ...]] = ()       # what a complete case folder holds
    picture_file: ClassVar[str] = "panel.png"   # the picture a report's page shows
    columns: ClassVar[tuple[Column, ...]] = ()  # what it adds to a report row
    window_flags: ClassVar[tuple[str, ...]] = ("--window",)
    help: ClassVar[str] = ""                    # its command's help
    command: ClassVar[bool] = True              # `onnxlam NAME` is made from its Options (else it has its own)

    # --- options ------------------------------------------------------------------------------
    def options(self, **values):
        """The method's Options from keyword values (the flags' names with underscores): InputError
        naming an option it does not take, or a value that fails its check."""
        names = option_names(cls=self.Options)
        unknown = [k for k in values if k not in names]
        if unknown:
            raise InputError(f"{self.name} takes no option {', '.join(map(repr, unknown))}; its options are "
                             f"{', '.join(names)}")
        values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
        if isinstance(values.get("inputs"), (tuple, list)):
            values["inputs"] = dict(values["inputs"])
        typed = given_options(values, f"{self.name} options", self.Options)  # None: the default
        return validate_options(dataclasses.replace(self.Options(), **typed))

    def report_option_names(self) -> tuple[str, ...]:
        """The options a report sets per method (with `prefix`), the others being the report's own."""
        if self.report_names is not None:
            return self.report_names
        return tuple(n for n in option_names(cls=self.Options) if n not in option_names())

    def fingerprint(self, options) -> dict | None:
        """What a report case depends on beyond the LAM options: the method and its report options."""
        return {"name": self.name, **{n: to_json_value(getattr(options, n)) for n in self.report_option_names()
                                      if n != "size"}}

    def check(self, options):
        """InputError for options (a report's, made into this method's) no case of it could run with;
        else the options, made ready for the report's workers (a folder made absolute, say)."""
        return options

    # --- the verbs ----------------------------------------------------------------------------
    def open(self, model: str | Path, options, image=None):
        """The loaded model this method runs on (`engine.model.Model`), opened with `options`. Its ops
        are checked by the methods that differentiate it (`Model.check_ops`), so one loaded model
        serves every method, forward-only ones on models without gradient rules included."""
        from onnxlam.engine.model import Model

        return Model(model, check_ops=False, **model_arguments(options))

    def session_key(self, image) -> object:
        """Which loaded model a case on `image` needs: methods whose keys are equal share one (`open`)."""
        return None

    def attribute(self, model, image, windows: Sequence[Window], options, progress: Progress | None = None) -> list:
        raise NotImplementedError

    def write(self, result, out: Path, about: dict | None = None) -> Path:
        raise NotImplementedError

    def picture(self, result):
        raise NotImplementedError

    def row(self, data: dict) -> dict:
        """The report row's values of `columns` from a case's result.json (default: its keys of those names)."""
        return {c.name: data.get(c.name) for c in self.columns}

    def facts(self, result) -> list[tuple[str, str]]:
        """What its command prints about a result: (label, text) rows."""
        return [("model", result.model), ("provider", result.provider), ("seconds", f"{result.seconds:.2f}")]

    def default_out(self, model: str, image: str, window: Window | str, options=None) -> Path:
        """NAME-MODEL-IMAGE-X-Y (or -WHERE, `window` a text such as "hard8"), and a tag of the options
        where they are not the defaults (`options_tag`)."""
        where = window if isinstance(window, str) else f"{window.x}-{window.y}"
        return Path(f"{self.name}-{Path(model).stem}-{Path(str(image)).stem}-{where}{options_tag(options)}")

    def write_all(self, results: list, out: Path) -> Path:
        """Several windows' results: a sub-folder `window-X-Y-SIZE` each (one result: the folder itself),
        all or nothing."""
        from onnxlam.core.files import atomic_dir, check_out_dir

        if len(results) == 1:
            return self.write(results[0], Path(out))
        check_out_dir(Path(out))
        with atomic_dir(Path(out)) as tmp:
            for r in results:
                w = r.window
                self.write(r, tmp / f"window-{w.x}-{w.y}-{w.size}")
        return Path(out)


UNCHANGING = ("device", "batch_size", "max_memory")  # options that do not change what a method computes


def options_tag(options) -> str:
    """"" for default options (or None), else "-" and 8 hex digits of the options that differ from the
    defaults: the default folders of two runs with different options never coincide, and a rerun with
    the same options writes the same folder."""
    if options is None:
        return ""
    mine, defaults = options.to_json(), type(options)().to_json()
    changed = {k: v for k, v in sorted(mine.items()) if k not in UNCHANGING and v != defaults.get(k)}
    if not changed:
        return ""
    import hashlib
    import json

    return "-" + hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]


def model_arguments(options) -> dict:
    """The model options among `options` (any dataclass of option fields), as `Model(...)` takes them."""
    names = set(option_names(cls=ModelOptions))
    return {f.name: getattr(options, f.name) for f in fields(options) if f.name in names}


def windows_of(windows, size: int) -> list[Window]:
    """Windows from (x, y) pairs (of side `size`) or `Window`s; InputError for none."""
    wins = [w if isinstance(w, Window) else Window(int(w[0]), int(w[1]), int(size)) for w in windows]
    if not wins:
        raise InputError("no window given; pass --window X Y")
    return wins


def part_progress(progress: Progress | None, part: int, parts: int) -> Progress | None:
    """The progress callback of part `part` of `parts` equal parts of one task (a window of several,
    a noisy sample of several): its (done, total) mapped onto the whole task's."""
    if progress is None:
        return None
    return lambda done, total: progress(part * total + done, total * parts)
