"""Running the `onnxlam` command line from tests, against this checkout.

`run_cli` runs the command in this process through Typer's CliRunner (the same `main` argument
rewriting, exit codes, stdout and stderr), which is how most CLI tests run: a fresh interpreter per
call costs seconds of imports. `process=True` (or an `env_extra`, which must reach a new interpreter)
runs `python -m onnxlam` in a child process instead: for what only a real process shows (a traceback
printed by the interpreter, its memory, an import that must fail, being killed).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "onnxlam" / "data" / "chelsea.png"


@dataclass
class CliResult:
    """What a CompletedProcess of the command line holds, for either way of running it."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, cwd=None, env_extra=None, timeout=600, process=False):
    """`onnxlam ARGS`: in this process by default, in a child `python -m onnxlam` with `process`."""
    argv = [str(a) for a in args]
    if process or env_extra:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(env_extra or {})
        return subprocess.run([sys.executable, "-m", "onnxlam", *argv], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=timeout)
    from typer.testing import CliRunner

    from onnxlam.cli import app
    from onnxlam.cli.app import repeatable_windows

    with _working_dir(cwd):
        r = CliRunner().invoke(app, repeatable_windows(argv), prog_name="onnxlam")
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        # what the interpreter would print for an exception that escaped the command (--debug)
        stderr += "".join(traceback.format_exception(r.exception))
    return CliResult(r.exit_code, r.stdout, stderr)


@contextlib.contextmanager
def _working_dir(path):
    old = os.getcwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
