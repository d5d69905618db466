"""The collection of pretrained super-resolution models shipped in ``exported_models/``.

``exported_models/manifest.json`` lists them; it is installed as the package
``onnxlam.exported_models`` and, in a source checkout, found next to the ``onnxlam/``
folder. Models marked ``fetch`` are not committed: ``python scripts/fetch_models.py``
downloads and converts them.
"""

from __future__ import annotations

import importlib.resources
import json
import pathlib
from dataclasses import dataclass

from onnxlam.core.errors import InputError

MANIFEST = "manifest.json"


def models_dir() -> pathlib.Path:
    """The folder holding manifest.json and the .onnx files."""
    try:
        folder = pathlib.Path(str(importlib.resources.files("onnxlam.exported_models")))
        if (folder / MANIFEST).is_file():
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    return pathlib.Path(__file__).resolve().parents[2] / "exported_models"


@dataclass(frozen=True)
class ModelEntry:
    """One manifest entry (see exported_models/README.md for the fields)."""

    file: str
    name: str
    architecture: str
    scale: int
    params: int
    license: str
    sha256: str
    fetch: bool
    input: dict
    source: dict

    @property
    def path(self) -> pathlib.Path:
        return models_dir() / self.file

    @property
    def available(self) -> bool:
        """False for a fetch-on-demand model that has not been fetched yet."""
        return self.path.is_file()

    def to_json(self) -> dict:
        """`onnxlam models --json`'s row."""
        return {"name": self.name, "file": str(self.path), "architecture": self.architecture, "scale": self.scale,
                "params": self.params, "license": self.license, "available": self.available}


def list_models() -> list[ModelEntry]:
    """Every model of the collection, in manifest order."""
    path = models_dir() / MANIFEST
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the model collection manifest {path}: {exc}") from None
    fields = ModelEntry.__dataclass_fields__
    return [ModelEntry(**{k: e[k] for k in fields}) for e in entries]


def resolve(name_or_path: str, image=None, lr: bool = False, notify=None) -> pathlib.Path:
    """An existing file path as is, or the file of a collection model by name. A PyTorch checkpoint
    becomes its cached ONNX export (see `convert.pytorch.resolve_checkpoint`; `image` and `lr` give the
    LR size for a model that exports at a fixed size only)."""
    path = pathlib.Path(name_or_path)
    from onnxlam.convert.pytorch import is_checkpoint, resolve_checkpoint

    if is_checkpoint(path):
        return resolve_checkpoint(path, image=image, lr=lr, notify=notify)
    if path.is_file():
        return path
    models = list_models()
    for entry in models:
        if entry.name == name_or_path:
            if not entry.available:
                raise InputError(
                    f"model {entry.name!r} is not downloaded yet: run "
                    f"'python scripts/fetch_models.py {entry.name}'"
                )
            return entry.path
    names = ", ".join(m.name for m in models)
    raise InputError(f"{name_or_path!r} is neither a file nor a collection model (available: {names})")


def resolve_model(name_or_path: str, image=None, lr: bool = False, notify=None) -> str:
    """What every command does with a model as given: its file (see `resolve`), as a string."""
    return str(resolve(name_or_path, image=image, lr=lr, notify=notify))
