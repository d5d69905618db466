"""The commands' options, generated from the methods' Options (declared once: `lam.options.option`).

`Size`, `Fold`, … are `Annotated` types for commands whose options have the LAM defaults
(`size: Size = D.size`); the `Given*` forms are the same options as overrides that default to
None ("not given": a report's TOML file or a baseline decides). `option_parameters` makes the
parameters of any Options class (a method's, with an optional flag prefix) and `with_options`
adds them to a command, which receives them as keyword arguments.
"""
from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import fields
from typing import Annotated, Optional

import typer

from onnxlam.lam.options import LamOptions, option_field

D = LamOptions()  # the defaults, for the commands' signatures
_HINTS = typing.get_type_hints(LamOptions)


def _alias(name: str, given: bool = False, cls=None):
    """`Annotated[T, typer.Option(flag, help)]` for the option `name` of `cls` (default LamOptions; any
    dataclass of `lam.options.option` fields), its type from the field's."""
    f = option_field(name, cls)
    hints = _HINTS if cls is None else typing.get_type_hints(cls)
    choices = [t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None)]
    kind = str if str in choices else choices[0]  # "24G" on the command line; parsed by the option's check
    flag = f.metadata["optional_flag" if given else "flag"]
    help = f.metadata["help"]
    if given and f.default is not None:
        help = f"{help} (default {_shown(f.default)})"
    if given or f.default is None:
        kind = Optional[kind]
    return Annotated[kind, typer.Option(flag, help=help)]


def _shown(value) -> str:
    return {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else str(value)


Size = _alias("size")
Lr = _alias("lr")
Path = _alias("path")
Sigma = _alias("sigma")
Fold = _alias("fold")
KernelSize = _alias("kernel_size")
Crop = _alias("crop")
Context = _alias("context")
BatchSize = _alias("batch_size")
Device = _alias("device")
ValueRange = _alias("value_range")
Bgr = _alias("bgr")
MaxMemory = _alias("max_memory")

GivenSize = _alias("size", given=True)
GivenLr = _alias("lr", given=True)
GivenPath = _alias("path", given=True)
GivenSigma = _alias("sigma", given=True)
GivenFold = _alias("fold", given=True)
GivenKernelSize = _alias("kernel_size", given=True)
GivenCrop = _alias("crop", given=True)
GivenDevice = _alias("device", given=True)

def option_parameters(cls, *, prefix: str = "", given: bool = False, names=None,
                      exclude=("inputs",)) -> list[inspect.Parameter]:
    """A command's keyword parameters for the options of `cls` (all, or `names`), with their flags
    and help; `prefix` makes --cem-block of --block (the parameter cem_block); `given` makes them
    overrides that default to None. `inputs` (`--input NAME=VALUE`) is the commands' own."""
    made = []
    for f in fields(cls):
        if (names is not None and f.name not in names) or f.name in exclude:
            continue
        kind, flag, help = _kind(f, cls, given)
        if prefix:
            flag = "/".join(f"--{'no-' if part.startswith('--no-') else ''}{prefix}-"
                            f"{part[5:] if part.startswith('--no-') else part[2:]}" for part in flag.split("/"))
        default = None if given else f.default
        made.append(inspect.Parameter(f"{prefix}_{f.name}" if prefix else f.name, inspect.Parameter.KEYWORD_ONLY,
                                      default=default, annotation=Annotated[kind, typer.Option(flag, help=help)]))
    return made


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    """The field types of an Options class (evaluated once: it is most of the command line's start)."""
    return typing.get_type_hints(cls)


def _kind(f, cls, given: bool):
    """The command-line type, flag and help of option field `f`."""
    hints = _hints(cls)
    choices = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None)]
    kind = str if str in choices else choices[0]  # "24G" on the command line; parsed by the option's check
    help = f.metadata["help"]
    if given and f.default is not None:
        help = f"{help} (default {_shown(f.default)})"
    if given or f.default is None:
        kind = Optional[kind]
    return kind, f.metadata["optional_flag" if given else "flag"], help


def with_options(*groups: list[inspect.Parameter]):
    """Add the parameters of `groups` (`option_parameters`) to a command that takes **options: Typer
    reads the signature, so each becomes a flag, and the command receives their values by name."""
    def decorate(command):
        signature = inspect.signature(command, eval_str=True)  # the annotations as objects, for Typer
        own = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        known = {p.name for p in own}
        extra = [p for group in groups for p in group if p.name not in known]
        command.__signature__ = signature.replace(parameters=own + extra)
        command.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in extra}}
        return command
    return decorate


Inputs = Annotated[Optional[typing.List[str]], typer.Option("--input", metavar="NAME=VALUE",
                                                            help=option_field("inputs").metadata["help"])]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def inputs(values) -> tuple[tuple[str, float], ...]:
    """`--input NAME=VALUE ...` as LamOptions.inputs."""
    from onnxlam.graph.model import parse_inputs
    from onnxlam.lam.options import as_inputs

    return as_inputs(parse_inputs(values)) if values else ()
