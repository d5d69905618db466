"""On-disk cache of gradient programs, keyed by what a program depends on (see `program.ProgramKey`).

Location: `$ONNXLAM_CACHE`, else the user cache directory (`$XDG_CACHE_HOME/onnxlam`,
`~/Library/Caches/onnxlam`, `%LOCALAPPDATA%\\onnxlam`). Each entry is the program file and a JSON
record of its sha256; JSON records (footprints, rule checks) are parsed by their kind's own reader,
and files of other layers (checkpoint exports) are sealed with their sha256. Every entry is validated
on read: one that does not parse, lacks a field, holds a wrong type or does not match its sha256 is
discarded with a warning on stderr and rebuilt, never trusted. Writes go to a temporary name and are
renamed into place, so readers never see half a file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar

import onnx

from onnxlam.core.files import write_atomic


def cache_dir() -> Path:
    if os.environ.get("ONNXLAM_CACHE"):
        return Path(os.environ["ONNXLAM_CACHE"])
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "onnxlam"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "onnxlam"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onnxlam"


T = TypeVar("T")


class DamagedEntry(ValueError):
    """A cache entry that does not hold what its kind needs."""


def require(condition: bool, what: str) -> None:
    """DamagedEntry(`what`) unless `condition`: for the readers of cache records."""
    if not condition:
        raise DamagedEntry(what)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return is_int(value) or (isinstance(value, float) and math.isfinite(value))


def discard(paths: list[Path], why: object) -> None:
    """Remove a damaged entry's files and say so on stderr, once per entry."""
    reason = why if isinstance(why, DamagedEntry) else f"{type(why).__name__}: {why}"
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
    print(f"onnxlam: warning: discarded a damaged cache entry {paths[0]} ({reason}); it is rebuilt",
          file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(path: Path) -> None:
    """Record `path`'s sha256 beside it (`<name>.sha256`), for `sealed` to check on later reads."""
    try:
        _atomic_write(path.with_name(path.name + ".sha256"), sha256_of(path).encode())
    except OSError:
        pass


def sealed(path: Path) -> bool:
    """Whether the cached file `path` is there and intact (its sha256 as sealed); a damaged or
    unsealed one is discarded with a warning, so the caller rebuilds it."""
    if not path.is_file():
        return False
    stamp = path.with_name(path.name + ".sha256")
    try:
        recorded = stamp.read_text().strip()
        require(len(recorded) == 64, "its sha256 record is not a sha256")
        require(sha256_of(path) == recorded, "its bytes do not match their sha256")
        return True
    except FileNotFoundError:
        discard([path, stamp], DamagedEntry("no sha256 record beside it"))
    except (OSError, UnicodeDecodeError, DamagedEntry) as exc:
        discard([path, stamp], exc)
    return False


def _atomic_write(path: Path, data: bytes) -> None:
    write_atomic(path, data, shared=False)  # the cache is the user's own


class ProgramCache:
    """Programs stored under `cache_dir()/programs`."""

    def __init__(self, root: Path | None = None):
        self.root = (root or cache_dir()) / "programs"

    def _paths(self, key) -> tuple[Path, Path]:
        slug = key.slug()
        return self.root / f"{slug}.onnx", self.root / f"{slug}.json"

    def has(self, key) -> bool:
        """Whether an entry for `key` is there (it may still turn out corrupt when loaded)."""
        return all(p.exists() for p in self._paths(key))

    def load(self, key) -> tuple[onnx.ModelProto, dict] | None:
        """The cached program's graph and record (scale, fd_error) for `key`, or None when absent or
        corrupt (a corrupt entry is removed)."""
        model_path, record_path = self._paths(key)
        if not model_path.exists() or not record_path.exists():
            return None
        try:
            record = json.loads(record_path.read_bytes())
            require(isinstance(record, dict), "its record is not a JSON object")
            require(isinstance(record.get("sha256"), str), "its record has no sha256")
            require(is_int(record.get("scale")) and record["scale"] > 0, "its record has no positive integer scale")
            require(record.get("fd_error") is None or is_number(record["fd_error"]), "its fd_error is not a number")
            data = model_path.read_bytes()
            require(hashlib.sha256(data).hexdigest() == record["sha256"], "its bytes do not match their sha256")
            model = onnx.load_from_string(data)
            return model, {"scale": record["scale"], "fd_error": record.get("fd_error")}
        except FileNotFoundError:  # removed meanwhile (a concurrent run discarded it)
            return None
        except Exception as exc:  # whatever the damage: the entry is not trusted
            discard([model_path, record_path], exc)
            return None

    def save(self, program) -> None:
        """Store `program` (best effort: a read-only cache only costs a rebuild next time)."""
        model_path, record_path = self._paths(program.key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            data = program.model.SerializeToString()
            _atomic_write(model_path, data)
            record = {"sha256": hashlib.sha256(data).hexdigest(), "scale": program.scale,
                      "fd_error": program.fd_error, "build_seconds": program.build_seconds}
            _atomic_write(record_path, json.dumps(record).encode())
        except OSError:
            pass


class RecordCache:
    """Small JSON records (measured memory footprints) under `cache_dir()/<kind>`; best effort both ways."""

    def __init__(self, kind: str, root: Path | None = None):
        self.root = (root or cache_dir()) / kind

    def load(self, slug: str, read: Callable[[object], T]) -> T | None:
        """The record `slug` as `read` makes it of the parsed JSON (raising for a record it cannot
        use), or None when absent or damaged (then discarded)."""
        path = self.root / f"{slug}.json"
        try:
            data = path.read_bytes()
        except OSError:  # absent, or unreadable: measured again, best effort
            return None
        try:
            return read(json.loads(data))
        except Exception as exc:  # whatever the damage: the record is not trusted
            discard([path], exc)
            return None

    def save(self, slug: str, record: dict) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.root / f"{slug}.json", json.dumps(record).encode())
        except OSError:
            pass
