"""Atomic writes: a reader (or a rerun after a kill) sees the old file or folder or the new one, never half.

Every file onnxlam writes for the user goes through here: a temporary sibling, then `os.replace`.
Temporary names start with "." and end in ".tmp" so that a killed run's leftovers are recognisable.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from onnxlam.core.errors import InputError


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: bytes | str | Callable[[str], None], *, shared: bool = True) -> Path:
    """Write `path` through a temporary sibling and a rename.

    `data` is the content, or a function that writes the file at the temporary path it is given
    (e.g. `lambda tmp: onnx.save(model, tmp)`); the temporary file keeps `path`'s suffix so that such
    writers pick the right format. With `shared` the file gets the umask's permissions (mkstemp's
    are 0600), as any file the user asked for.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w", **(
                    {} if isinstance(data, bytes) else {"encoding": "utf-8", "newline": ""})) as f:
                f.write(data)
        if shared:
            os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir(new: Path, target: Path) -> None:
    """Move folder `new` to `target`, replacing an existing folder only once the new one is complete."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """`with atomic_dir(out) as tmp:` fill `tmp`; on success it becomes `target` all at once, on an
    error nothing of it remains."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_out_dir(out: Path) -> None:
    """InputError for an output folder that is a file."""
    if Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"--out {out} is a file; name a folder (it is created)")


def write_result_json(path: Path, data: dict, about: dict | None = None) -> None:
    """`path` ← `data` plus `about` (further top-level keys: a report's "case" and "group"), which may
    not replace `data`'s own keys."""
    clash = set(about or ()) & set(data)
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))} would overwrite the result's own keys")
    path.write_text(json.dumps({**data, **(about or {})}, indent=2) + "\n")
