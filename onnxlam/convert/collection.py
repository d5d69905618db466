"""The collection of pretrained super-resolution models shipped in ``exported_models/``.

``exported_models/manifest.json`` lists them; it is installed as the package
``onnxlam.exported_models`` and, in a source checkout, found next to the ``onnxlam/``
folder. Models marked ``fetch`` are not committed: ``python scripts/fetch_models.py``
downloads and converts them. A TF.js model (source kind "tfjs") is also fetched on first use:
:func:`fetch` runs ``npm pack PACKAGE@VERSION``, checks the tarball's sha256 against the
manifest's ``tarball_sha256``, converts the model with :mod:`onnxlam.convert.tfjs` and writes it
into ``exported_models/`` when that folder is writable, else into the cache folder
(``$ONNXLAM_CACHE/models``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional

from onnxlam.core.errors import InputError

MANIFEST = "manifest.json"
NPM_TIMEOUT_S = 900  # a 110 MB package on a slow link


def fetched_dir() -> pathlib.Path:
    """Where fetched models go when ``exported_models/`` is not writable (an installed package)."""
    from onnxlam.engine.cache import cache_dir

    return cache_dir() / "models"


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
        """The file in ``exported_models/``, else a fetched copy in the cache folder, if there is one."""
        bundled = models_dir() / self.file
        if not bundled.is_file() and self.fetch and (fetched_dir() / self.file).is_file():
            return fetched_dir() / self.file
        return bundled

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


def named(text: str) -> str:
    """`text` with every collection model's file path (bundled or fetched) replaced by the model's
    collection name: what the user typed, not where the package put the file."""
    if "exported_models" not in text and str(fetched_dir()) not in text:
        return text
    try:
        entries = list_models()
    except InputError:
        return text
    for entry in sorted(entries, key=lambda e: -len(str(e.path))):
        text = text.replace(str(entry.path), entry.name)
    return text


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
            if not entry.available and entry.source.get("kind") == "tfjs":
                return fetch(entry.name, notify=notify)
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


# --------------------------------------------------------------------------- fetching TF.js models


def entry_named(name: str) -> ModelEntry:
    models = list_models()
    for entry in models:
        if entry.name == name:
            return entry
    raise InputError(f"{name!r} is not a collection model (available: {', '.join(m.name for m in models)})")


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def npm_pack(package: str, dest: pathlib.Path) -> pathlib.Path:
    """``npm pack PACKAGE@VERSION`` into ``dest``: the package's tarball, as npm publishes it."""
    npm = shutil.which("npm")
    if npm is None:
        raise InputError(f"npm is not on PATH: it downloads {package}; install Node.js, or pass "
                         f"--from TARBALL (a tarball made elsewhere with 'npm pack {package}')")
    try:
        r = subprocess.run([npm, "pack", package, "--silent"], cwd=dest, capture_output=True, text=True,
                           timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise InputError(f"npm pack {package} did not finish in {NPM_TIMEOUT_S} s") from None
    tarballs = sorted(dest.glob("*.tgz"))
    if r.returncode != 0 or len(tarballs) != 1:
        last = (r.stderr.strip().splitlines() or ["no tarball written"])[-1]
        raise InputError(f"npm pack {package} failed (exit {r.returncode}): {last}")
    return tarballs[0]


def extract_tfjs(tarball: pathlib.Path, model: str, dest: pathlib.Path) -> pathlib.Path:
    """Copy ``package/MODEL`` (a model.json) and the shards it names out of an npm tarball into ``dest``."""
    folder = pathlib.PurePosixPath("package", model).parent
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            def read(name: str) -> bytes:
                try:
                    return archive.extractfile(str(folder / name)).read()
                except (KeyError, AttributeError):
                    raise InputError(f"{tarball.name} has no {folder / name}") from None

            spec = read(pathlib.PurePosixPath(model).name)
            (dest / "model.json").write_bytes(spec)
            for group in json.loads(spec).get("weightsManifest", []):
                for shard in group.get("paths", []):
                    if pathlib.PurePosixPath(shard).name != shard:
                        raise InputError(f"{tarball.name}: shard path {shard!r} leaves the model's folder")
                    (dest / shard).write_bytes(read(shard))
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise InputError(f"cannot read npm tarball {tarball}: {exc}") from None
    return dest / "model.json"


def build_tfjs(model_json: pathlib.Path, *, name: str, scale: int, license: str, value_range: str,
               package: str, model: str):
    """Convert a collection TF.js model with the collection's metadata (scripts/convert_collection.py
    builds the committed ones with this too, so a fetched model is the same file)."""
    from onnxlam.convert import tfjs
    from onnxlam.convert.ncnn import set_metadata

    onnx_model = tfjs.convert(model_json, value_range=value_range, source=f"tfjs:{package}:{model}")
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    if meta["onnxlam.scale"] != str(scale):
        raise InputError(f"{package} {model}: the graph upscales by {meta['onnxlam.scale']}, the collection "
                         f"says {scale}")
    set_metadata(onnx_model, {"onnxlam.name": name, "onnxlam.license": license})
    return onnx_model


def _writable_target(file: str) -> pathlib.Path:
    bundled = models_dir()
    if os.access(bundled, os.W_OK):
        return bundled / file
    folder = fetched_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / file


def fetch(name: str, tarball=None, notify: Optional[Callable[[str], None]] = None) -> pathlib.Path:
    """Fetch a ``fetch: true`` TF.js model of the collection and convert it (see the module doc).

    ``tarball`` is the npm tarball already at hand (``--from``), else ``npm pack`` downloads it. The
    tarball's sha256 must be the manifest's ``tarball_sha256``: otherwise nothing is written."""
    from onnxlam.core.files import write_atomic

    say = notify or (lambda _: None)
    entry = entry_named(name)
    src = entry.source
    if src.get("kind") != "tfjs":
        raise InputError(f"model {name!r} is not a TF.js model: run 'python scripts/fetch_models.py {name}'")
    if entry.available:
        say(f"{name}: already fetched ({entry.path})")
        return entry.path
    with tempfile.TemporaryDirectory(prefix="onnxlam-fetch-") as tmpdir:
        tmp = pathlib.Path(tmpdir)
        if tarball is None:
            say(f"{name}: downloading {src['package']} with 'npm pack'")
            tarball = npm_pack(src["package"], tmp)
        tarball = pathlib.Path(tarball)
        if not tarball.is_file():
            raise InputError(f"tarball not found: {tarball}")
        digest = sha256_file(tarball)
        if digest != src["tarball_sha256"]:
            raise InputError(f"{tarball.name} has sha256 {digest}, the manifest expects {src['tarball_sha256']} "
                             f"for {src['package']}: not the published package; nothing written")
        say(f"{name}: tarball sha256 checked; converting {src['model']}")
        folder = tmp / entry.name  # the graph's name: the same as scripts/convert_collection.py's build
        folder.mkdir()
        model = build_tfjs(extract_tfjs(tarball, src["model"], folder), name=entry.name, scale=entry.scale,
                           license=entry.license, value_range=entry.input["value_range"], package=src["package"],
                           model=src["model"])
        data = model.SerializeToString()
        target = write_atomic(_writable_target(entry.file), data)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        say(f"{name}: the converted file's sha256 differs from the manifest's (another onnx version can "
            "serialise differently; the weights were checked by the tarball's sha256)")
    say(f"{name}: wrote {target} ({len(data) / 1e6:.1f} MB)")
    return target
