"""The `onnxlam` command line: one Typer app (`app.py`: errors, progress, option aliases, `main`) and
one module per command group, each registering its commands on the app."""
from onnxlam.cli.app import app, main
from onnxlam.cli import batch  # noqa: F401,E402  (registers report and check)

__all__ = ["app", "main"]
