"""Atomic writes: a reader (or a rerun after a kill) sees the old file or folder or the new one, never half.

Every file onnxlam writes for the user goes through here: a temporary sibling, then `os.replace`.
Temporary names start with "." and end in ".tmp" so that a killed run's leftovers are recognisable.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from onnxlam.core.errors import InputError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # the environment failed, not the input: exit 1, said in one line


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
    made = make_parents(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except BaseException:
        remove_empty(made)
        raise
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(made)
        raise


def make_parents(target: Path) -> list[Path]:
    """Create `target`'s missing parent folders; the ones made, innermost first."""
    missing = []
    parent = target.absolute().parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed write made (innermost first), where still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def check_out_dir(out: str | Path) -> None:
    """InputError unless `out` is a folder, or can be created as one, that this process can write in:
    said before any computing starts, and without creating anything (a probe folder in the nearest
    existing one is made and removed)."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} is a file; name a folder (it is created)")
        base = out.absolute()
        while not base.exists() and base != base.parent:
            base = base.parent
        if not base.is_dir():
            raise InputError(f"--out {out}: {base} is a file, so no folder can be made under it; choose another --out")
        os.rmdir(tempfile.mkdtemp(prefix=".onnxlam-probe-", suffix=".tmp", dir=base))
    except InputError:
        raise
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise
        where = Path(exc.filename).parent if exc.filename else out
        raise InputError(f"--out {out}: cannot write in {where} ({exc.strerror or exc}); "
                         "choose a folder you can write to") from None


def disk_full_message(exc: BaseException) -> str | None:
    """The one line for a write that found the disk full (the environment failed, not the input:
    exit 1), or None for any other error."""
    if not (isinstance(exc, OSError) and exc.errno in DISK_FULL):
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return (f"no space left on the device{where}: free some space (or choose another --out) and rerun; "
            "nothing was left half-written")


def write_result_json(path: Path, data: dict, about: dict | None = None) -> None:
    """`path` ← `data` plus `about` (further top-level keys: a report's "case" and "group"), which may
    not replace `data`'s own keys."""
    clash = set(about or ()) & set(data)
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))} would overwrite the result's own keys")
    path.write_text(json.dumps({**data, **(about or {})}, indent=2) + "\n")


def write_result_dir(out: str | Path, data: dict, about: dict | None = None, arrays: dict | None = None,
                     pictures: dict | None = None) -> Path:
    """Folder `out`, all or nothing: `arrays` ({file name: array}) as .npy files, result.json (`data`,
    and `about`: a report's "case" and "group", which may not replace `data`'s keys) and `pictures`
    ({file name: uint8 image}, written by Pillow); a name may hold a sub-folder ("stage-0/map.npy").
    The folder is checked before anything is written."""
    import numpy as np
    from PIL import Image

    out = Path(out)
    check_out_dir(out)
    with atomic_dir(out) as tmp:
        for name, array in (arrays or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            np.save(tmp / name, array)
        write_result_json(tmp / "result.json", data, about)
        for name, picture in (pictures or {}).items():
            Image.fromarray(picture).save(tmp / name)
    return out
