"""The commands' option aliases, generated from `LamOptions` (declared once in lam/options.py).

`Size`, `Fold`, … are `Annotated` types for commands whose options have the LAM defaults
(`size: Size = D.size`); the `Given*` forms are the same options as overrides that default to
None ("not given": a report's TOML file or a baseline decides).
"""
from __future__ import annotations

import typing
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

# The report's options of the methods beyond LAM, from `batch.report.methods.MethodOptions` (as overrides:
# None is "not given", so a TOML file or the method's default decides).
def _method_alias(name: str):
    from onnxlam.methods.options import MethodOptions

    return _alias(name, given=True, cls=MethodOptions)


GivenSamples = _method_alias("samples")
GivenStdev = _method_alias("stdev")
GivenSeed = _method_alias("seed")
GivenCemSize = _method_alias("cem_size")
GivenCemBlock = _method_alias("cem_block")
GivenCemSamples = _method_alias("cem_samples")
GivenCemRefine = _method_alias("cem_refine")
GivenCemTol = _method_alias("cem_tol")
GivenCemSeed = _method_alias("cem_seed")
GivenCemPatches = _method_alias("cem_patches")
GivenCemBankSize = _method_alias("cem_bank_size")

Inputs = Annotated[Optional[typing.List[str]], typer.Option("--input", metavar="NAME=VALUE",
                                                            help=option_field("inputs").metadata["help"])]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def inputs(values) -> tuple[tuple[str, float], ...]:
    """`--input NAME=VALUE ...` as LamOptions.inputs."""
    from onnxlam.graph.model import parse_inputs
    from onnxlam.lam.options import as_inputs

    return as_inputs(parse_inputs(values)) if values else ()
