"""On-disk cache of gradient programs, keyed by what a program depends on (see `program.ProgramKey`).

Location: `$ONNXLAM_CACHE`, else the user cache directory (`$XDG_CACHE_HOME/onnxlam`,
`~/Library/Caches/onnxlam`, `%LOCALAPPDATA%\\onnxlam`). Each entry is the program file and a JSON
record of its sha256; an entry whose bytes do not match, or that does not parse, is rebuilt, never
trusted. Writes go to a temporary name and are renamed into place, so readers never see half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

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
            record = json.loads(record_path.read_text())
            data = model_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                raise ValueError("checksum mismatch")
            model = onnx.load_from_string(data)
            return model, {"scale": int(record["scale"]), "fd_error": record.get("fd_error")}
        except Exception:
            model_path.unlink(missing_ok=True)
            record_path.unlink(missing_ok=True)
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

    def load(self, slug: str) -> dict | None:
        try:
            return json.loads((self.root / f"{slug}.json").read_text())
        except (OSError, ValueError):
            return None

    def save(self, slug: str, record: dict) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.root / f"{slug}.json", json.dumps(record).encode())
        except OSError:
            pass
