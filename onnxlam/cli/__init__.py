"""The `onnxlam` command line: one Typer app (`app.py`: errors, progress, model resolution, `main`),
the option aliases generated from `LamOptions` (`options.py`), and one module per command group, each
registering its commands on the app when imported here."""
from onnxlam.cli.app import app, main
from onnxlam.cli import lam, batch, figures, methods, convert  # noqa: F401,E402  (register their commands)

__all__ = ["app", "main"]
