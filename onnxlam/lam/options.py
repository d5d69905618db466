"""The LAM options, declared once.

Each option is one field of `LamOptions`: its default, its command-line flag and help, how it is
checked and which TOML/JSON types it takes. Everything else derives from that declaration: the
Analyzer's defaults, the CLI's option aliases (`onnxlam.cli.options`), the report configuration's
keys and overrides (`batch.report.config`), validation, and the options recorded in `results.json`
and read back by the CI gate.

Options are of two kinds (`scope`): those of the model (`device`, `value_range`, `bgr`,
`batch_size`, `max_memory`: fixed when an `Analyzer` is made) and those of a run (the rest).
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

from onnxlam.core.errors import InputError

PATHS = ("blur", "linear", "gaussian-linear")  # the path functions are in lam/paths.py
DEVICES = ("auto", "cpu", "cuda")
VALUE_RANGES = (1.0, 255.0)
MAX_AUTO_BATCH = {"cpu": 10, "cuda": 25}  # beyond these a batch gains nothing measurable (BENCHMARKS.md)


def at_least(low: float, symbol: str = "be at least"):
    def check(flag: str, value) -> str | None:
        return None if value >= low else f"{flag} must {symbol} {low:g}; got {value}"
    return check


def non_negative(flag: str, value) -> str | None:
    return None if value >= 0 else f"{flag} must be ≥ 0; got {value}"


def _path(flag: str, value) -> str | None:
    return None if value in PATHS else f"unknown path {value!r}; choose one of {', '.join(PATHS)}"


def _device(flag: str, value) -> str | None:
    return None if value in DEVICES else f"{flag} must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}; got {value!r}"


def _value_range(flag: str, value) -> str | None:
    return None if value in VALUE_RANGES else f"{flag} must be 1 or 255; got {value:g}"


def _inputs(flag: str, value) -> str | None:
    bad = [name for name, v in value if not (isinstance(v, (int, float)) and not isinstance(v, bool))]
    return f"{flag} values must be numbers; got {', '.join(bad)}" if bad else None


def as_inputs(values) -> tuple[tuple[str, float], ...]:
    """Extra inputs as the options hold them (sorted (name, value) pairs) from a mapping or pairs."""
    items = values.items() if isinstance(values, dict) else (values or ())
    return tuple(sorted((str(k), float(v)) for k, v in items))


def _memory(flag: str, value) -> str | None:
    from onnxlam.core.sizes import parse_size

    parse_size(value)  # raises its own InputError naming the accepted forms
    return None


def option(default, flag: str, help: str, *, check: Callable | None = None, types: tuple = (),
           scope: str = "run", optional_flag: str | None = None):
    """One LAM option: a dataclass field whose metadata the CLI, the configuration and validation read.

    `types` are the JSON/TOML types accepted (numbers: int also for floats); `optional_flag` is the
    flag where the option is an override that may be left out (the report's `--lr/--hr`).
    """
    return field(default=default, metadata={"flag": flag, "help": help, "check": check, "types": types,
                                            "scope": scope, "optional_flag": optional_flag or flag})


@dataclass(frozen=True)
class ModelOptions:
    """The options of the model, shared by every method: where it runs, its pixel convention, the
    fixed extra inputs, how many inputs go through it at once and the memory limit."""

    batch_size: int | None = option(None, "--batch-size", "Inputs per run: path steps (LAM), interventions "
                                    f"(CEM) (default: as many as memory allows, up to {MAX_AUTO_BATCH['cpu']} on the CPU and "
                                    f"{MAX_AUTO_BATCH['cuda']} on CUDA).", check=at_least(1), types=(int,),
                                    scope="model")
    device: str = option("auto", "--device", "auto (CUDA when usable, else CPU), cpu or cuda.", check=_device,
                         types=(str,), scope="model")
    value_range: float | None = option(None, "--value-range", "1 or 255: the pixel range the model expects "
                                       "(default: the model's metadata onnxlam.value_range, else 1).",
                                       check=_value_range, types=(int, float), scope="model")
    bgr: bool | None = option(None, "--bgr/--rgb", "Channel order the model expects (default: metadata "
                              "onnxlam.channel_order, else RGB).", types=(bool,), scope="model")
    inputs: tuple[tuple[str, float], ...] = option(
        (), "--input", "NAME=VALUE: hold a model's extra input (a noise level, a quality factor) at VALUE, "
        "broadcast to the input's shape (repeatable; needed for every input but the image).", check=_inputs,
        types=(dict,), scope="model")
    max_memory: int | str | None = option(None, "--max-memory", "Memory limit, e.g. 24G: the process's peak "
                                          "resident set on the CPU, the device memory onnxlam holds on CUDA "
                                          "(default: 70% of what is free). The batch is sized from measured "
                                          "memory; when even one step does not fit, the analysis is cropped "
                                          "around the windows (and says so).", check=_memory,
                                          types=(str, int), scope="model")

    def validate(self):
        """InputError for the first option no analysis could run with; the options themselves otherwise."""
        return validate_options(self)

    def model_arguments(self) -> dict:
        """Keyword arguments of `engine.model.Model(...)` for these options."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["scope"] == "model"}

    def run_arguments(self) -> dict:
        """The options of a run (every one not of the model's; the window side is per window)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.metadata["scope"] == "run" and f.name != "size"}

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["inputs"] = dict(self.inputs)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "options"):
        """Options from a JSON/TOML mapping (missing keys take the defaults), type-checked and validated."""
        return replace(cls(), **given_options(data, where, cls)).validate()


@dataclass(frozen=True)
class LamOptions(ModelOptions):
    """Every option of a LAM analysis, with the defaults of the authors' demo (LAM-SPEC): the model's
    (`ModelOptions`) and the run's."""

    size: int = option(16, "--size", "Window side in SR pixels.", check=at_least(1), types=(int,))
    lr: bool = option(False, "--lr", "IMAGE is the LR input: use it as is.", types=(bool,),
                      optional_flag="--lr/--hr")
    path: str = option("blur", "--path", "blur (LAM), linear or gaussian-linear.", check=_path, types=(str,))
    sigma: float = option(1.2, "--sigma", "Blur of the path's baseline.", check=non_negative,
                          types=(int, float))
    fold: int = option(50, "--fold", "Path steps.", check=at_least(1), types=(int,))
    kernel_size: int = option(9, "--kernel-size", "Gaussian kernel side.", check=at_least(1), types=(int,))
    crop: bool = option(True, "--crop/--no-crop", "Run a local network only on the LR crop its windows "
                        "depend on (exact; the default).", types=(bool,))
    context: int | None = option(None, "--context", "Crop margin in LR pixels around the windows: "
                                 "approximate for global networks, and how images too large for memory "
                                 "still run.", check=non_negative, types=(int,))


def validate_options(options):
    """InputError for the first field of `options` (a dataclass of `option` fields: LamOptions, or
    another method's declaration) whose check fails; `options` itself otherwise."""
    for f in fields(options):
        value = getattr(options, f.name)
        check = f.metadata["check"]
        if value is not None and check is not None:
            problem = check(f.metadata["flag"].split("/")[0], value)
            if problem:
                raise InputError(problem)
    return options


def option_names(scope: str | None = None, cls=None) -> tuple[str, ...]:
    """The option names of `cls` (default LamOptions; any dataclass of `option` fields)."""
    return tuple(f.name for f in fields(cls or LamOptions) if scope is None or f.metadata["scope"] == scope)


def option_field(name: str, cls=None):
    return next(f for f in fields(cls or LamOptions) if f.name == name)


def default(name: str):
    f = option_field(name)
    return None if f.default is MISSING else f.default


def given_options(data: Mapping[str, Any], where: str = "options", cls=None) -> dict:
    """The options of `cls` (default LamOptions) among `data`'s keys, type-checked (floats from ints),
    None values left out."""
    given = {}
    for f in fields(cls or LamOptions):
        value = data.get(f.name)
        if value is None:
            continue
        types = f.metadata["types"]
        if isinstance(value, bool) and bool not in types:
            raise InputError(f"{where}: `{f.name}` must be a number, not true/false")
        if not isinstance(value, types):
            raise InputError(f"{where}: `{f.name}` has the wrong type ({type(value).__name__})")
        if float in types and not isinstance(value, bool) and str not in types:
            value = float(value)
        if dict in types:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
                raise InputError(f"{where}: `{f.name}` must be a table of numbers, e.g. {f.name} = {{noise_level = 0.06}}")
            value = as_inputs(value)
        given[f.name] = value
    return given
