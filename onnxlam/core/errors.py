"""The errors onnxlam reports to users, with the exit code each maps to on the command line."""


class OnnxlamError(Exception):
    """Base of every error meant for the user: one line, no traceback (unless --debug)."""

    exit_code = 1


class InputError(OnnxlamError):
    """Bad usage or input: missing or corrupt files, unsupported models, windows outside the map.

    Exit code 2. The message says what is wrong and, where it can, what to do.
    """

    exit_code = 2


class NumericalError(OnnxlamError):
    """NaN or inf where a finite number is required (a model's output, a failed gradient check)."""

    exit_code = 1
