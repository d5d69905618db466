"""onnxlam.convert.collection: the manifest, name resolution, and the committed files' integrity."""

from __future__ import annotations

import hashlib
import pathlib
import json

import onnx
import pytest

from onnxlam.convert import collection
from onnxlam.core.errors import InputError

SRMD = {f"{kind}-x{s}" for kind in ("srmd", "srmdnf") for s in (2, 3, 4)}
THICK = {f"esrgan-thick-x{s}" for s in (2, 3, 4)}
UPSCALERJS = {f"esrgan-{size}-x{s}" for size in ("slim", "medium") for s in (2, 3, 4)} | {"default-model-x2"} | THICK
EXPECTED = {"animevideov3-x4", "span-x4", "waifu2x-upconv7-photo-x2", "realcugan-se-x2",
            "realcugan-se-x4", "realesrgan-x4plus"} | SRMD | UPSCALERJS


def test_manifest_lists_the_collection():
    models = collection.list_models()
    assert {m.name for m in models} == EXPECTED
    for m in models:
        if m.name in UPSCALERJS:
            assert m.source["kind"] == "tfjs" and m.source["package"].startswith("@upscalerjs/")
            assert m.source["package"].endswith("@1.0.0") and len(m.source["tarball_sha256"]) == 64
            # UpscalerJS "rdn" models take RGB in [0, 255], "rrdn" (thick) in [0, 1]
            assert m.input == {"value_range": "1" if m.name in THICK else "255", "channels": "rgb"}
            assert m.scale in (2, 3, 4) and m.params > 0 and m.sha256 and m.license == "MIT"
            continue
        assert m.source["kind"] == "ncnn" and "==" in m.source["package"]
        extra = {"noise_level"} if m.name.startswith("srmd-") else set()
        assert {k: v for k, v in m.input.items() if k != "extra"} == {"value_range": "1", "channels": "rgb"}
        assert set(m.input.get("extra", {})) == extra
        assert m.scale in (2, 3, 4) and m.params > 0 and m.sha256
    assert {m.name for m in models if m.fetch} == {"realesrgan-x4plus"} | SRMD | THICK


def test_committed_models_are_present_and_intact():
    for m in collection.list_models():
        if m.fetch:
            continue
        assert m.available
        assert hashlib.sha256(m.path.read_bytes()).hexdigest() == m.sha256
        meta = {p.key: p.value for p in onnx.load(m.path).metadata_props}
        assert meta["onnxlam.scale"] == str(m.scale)
        assert meta["onnxlam.value_range"] == m.input["value_range"] and meta["onnxlam.channel_order"] == "rgb"
        if m.source["kind"] == "tfjs":
            assert meta["onnxlam.source"] == f"tfjs:{m.source['package']}:{m.source['model']}"
            assert meta["onnxlam.params"] == str(m.params)
            continue
        assert meta["onnxlam.source"].startswith(f"ncnn:{m.source['package']}")
        assert json.loads(meta["onnxlam.padding"])["mode"] in ("reflect", "edge")


def test_committed_size_stays_small():
    total = sum(m.path.stat().st_size for m in collection.list_models() if not m.fetch)
    assert total < 40e6


def test_resolve_by_name_and_path(tmp_path):
    path = collection.resolve("span-x4")
    assert path.name == "span-x4.onnx" and path.is_file()
    other = tmp_path / "mine.onnx"
    other.write_bytes(b"x")
    assert collection.resolve(str(other)) == other


def test_resolve_unknown_name_lists_the_collection():
    with pytest.raises(InputError) as err:
        collection.resolve("no-such-model")
    for name in EXPECTED:
        assert name in str(err.value)


def test_fetch_model_not_yet_fetched_is_unavailable(monkeypatch, tmp_path):
    manifest = json.loads((collection.models_dir() / collection.MANIFEST).read_text())
    (tmp_path / collection.MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setattr(collection, "models_dir", lambda: tmp_path)
    entry = next(m for m in collection.list_models() if m.fetch and m.source["kind"] == "ncnn")
    assert not entry.available
    with pytest.raises(InputError, match="fetch_models.py"):
        collection.resolve(entry.name)


def test_models_dir_is_the_exported_models_folder():
    folder = collection.models_dir()
    assert folder.name == "exported_models" and (folder / collection.MANIFEST).is_file()


@pytest.mark.integration
def test_models_command_lists_the_collection():
    import json
    import os
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "onnxlam", "models", "--json"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(repo)})
    assert r.returncode == 0, r.stderr
    names = {row["name"] for row in json.loads(r.stdout)}
    assert {"animevideov3-x4", "span-x4", "waifu2x-upconv7-photo-x2", "realcugan-se-x2",
            "realcugan-se-x4", "realesrgan-x4plus"} <= names
