"""The `onnxlam` Typer app and what every command shares: errors, progress, model resolution, `main`.

Exit codes: 0 success; 2 bad usage or input; 1 anything unexpected (and NaN/inf trouble). Errors are
one line on stderr starting with `error:`; `--debug` shows the traceback instead. Nothing here imports
the engine, so `onnxlam --help` starts fast; commands import what they use when they run.
"""
from __future__ import annotations

import functools
import sys

import typer

from onnxlam.core.errors import OnnxlamError
from onnxlam.core.files import disk_full_message
from onnxlam.render.text import fmt  # noqa: F401  (the commands' table cells)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Local Attribution Maps (LAM) for super-resolution networks in ONNX.")


def _version(value: bool) -> None:
    if value:
        from onnxlam.core.version import __version__

        print(f"onnxlam {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print onnxlam's version and exit.")) -> None:
    """Local Attribution Maps (LAM) for super-resolution networks in ONNX."""


class _Console:
    """rich's Console, made on first use: importing rich.console is a third of `onnxlam --help`'s start."""

    def __init__(self, stderr: bool):
        self._stderr, self._console = stderr, None

    def get(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name):
        return getattr(self.get(), name)


err = _Console(stderr=True)
out = _Console(stderr=False)


def fail(message: str, code: int) -> None:
    from rich.markup import escape  # a message may hold brackets: pip install "onnxlam[torch]"

    from onnxlam.convert.collection import named

    err.print(f"[bold red]error:[/] {escape(named(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handled(command):
    """Turn onnxlam's errors into one stderr line and an exit code; `--debug` re-raises."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except OnnxlamError as exc:
            if kwargs.get("debug"):
                raise
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:
            if kwargs.get("debug"):
                raise
            full = disk_full_message(exc)
            if full:
                fail(full, 1)
            fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)

    return wrapper


def resolve_model(model: str, image: str | None = None, lr: bool = False) -> str:
    """A model as given (file, collection name or PyTorch checkpoint) → its ONNX file; `image` and `lr`
    give the LR size a checkpoint that exports at a fixed size only is exported at."""
    from onnxlam.convert.collection import resolve_model

    return resolve_model(model, image=image, lr=lr,
                         notify=lambda note: err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True))


def progress(elapsed: bool = False):
    """The live progress bar on stderr (done/total, ETA; with `elapsed`, the time so far too)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.table import Column

    # the description gives way first (cut with an ellipsis), so the counts and the ETA always show
    columns = [TextColumn("{task.description}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
               BarColumn(bar_width=20), MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), TextColumn("eta")] if elapsed else []
    return Progress(*columns, TimeRemainingColumn(), console=err.get(), transient=True, expand=True)


def facts(title: str, rows) -> None:
    """Print (label, value) rows as a two-column table: the summary every one-result command shows."""
    from rich.markup import escape
    from rich.table import Table

    from onnxlam.convert.collection import named

    table = Table(title=escape(named(title)), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, escape(named(str(value))))
    out.print(table)


def pair(text: str) -> tuple[int, int]:
    x, y = text.split(",")
    return int(x), int(y)


def repeatable_windows(argv: list[str]) -> list[str]:
    """Click cannot repeat a two-value option: every `--window X Y` after the first becomes the hidden
    `--more-window X,Y`, so `--window` stays repeatable on the command line."""
    result, seen, i = [], False, 0
    while i < len(argv):
        if argv[i] == "--window" and i + 2 < len(argv) and seen:
            result += ["--more-window", f"{argv[i + 1]},{argv[i + 2]}"]
            i += 3
            continue
        seen = seen or argv[i] == "--window"
        result.append(argv[i])
        i += 1
    return result


def readable_metavars(command) -> None:
    """Metavars a user reads in `--help` (MODEL, N, X Y, PATH) where Typer would show Python types
    (`<list[str]>`, `{model}`, `<int,int>...`), for every command of the group."""
    import pathlib
    import typing

    def word(kind, name: str) -> str:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) in (typing.Union, list, tuple) and typing.get_origin(kind) is not tuple:
            return word(args[0], name) if args else name.upper()
        if typing.get_origin(kind) is tuple:
            return "X Y" if name.startswith("window") else " ".join(word(a, name) for a in args)
        return {int: "N", float: "X", pathlib.Path: "PATH"}.get(kind, name.upper().replace("_", "-"))

    for sub in getattr(command, "commands", {}).values():
        readable_metavars(sub)
    for param in getattr(command, "params", []):
        kind = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        is_argument = type(param).__name__.endswith("Argument")
        if getattr(param, "is_flag", False) or kind is None or kind is bool:
            continue
        if param.metavar is None:
            param.metavar = param.name.upper() if is_argument else word(kind, param.name)
        if is_argument:  # `MODEL IMAGE...` as Click writes them, not `{MODEL} <str>`
            many = "..." if param.nargs != 1 else ""
            param.display_type_rich = lambda ctx=None: ""
            param._usage_display_name = lambda p=param, many=many: (p.metavar if p.required else f"[{p.metavar}]") + many


def main() -> None:
    import typer.main

    command = typer.main.get_command(app)
    readable_metavars(command)
    command(args=repeatable_windows(sys.argv[1:]), prog_name="onnxlam")



