"""The Python API (`onnxlam.attribute`, `onnxlam.Model`) against the command line: for LAM and CEM,
`to_json()` equals the CLI's result.json for the same options (timings and measured memory aside),
`save` writes the CLI's files with the same arrays, `_repr_png_` is a PNG of the method's panel;
and the README's Python example runs as written."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import onnxlam
from onnxlam.core.errors import InputError
from tests.clitools import REPO, run_cli

pytestmark = pytest.mark.integration

TIMED = ("seconds",)


def _comparable(data: dict) -> dict:
    """result.json without what differs between two runs of the same analysis: its time, and what it
    measured of the machine's memory (the free memory the default limit follows included)."""
    data = {k: v for k, v in data.items() if k not in TIMED}
    if isinstance(data.get("memory"), dict):
        data["memory"] = {k: data["memory"][k] for k in ("device", "counts") if k in data["memory"]}
    return data


@pytest.mark.parametrize("method, flags, options", [
    ("lam", ("--fold", "4", "--size", "12"), dict(fold=4, size=12)),
    ("cem", ("--size", "16", "--block", "8", "--draws", "1", "--refine", "2", "--bank-size", "40"),
     dict(size=16, block=8, draws=1, refine=2, bank_size=40)),
])
def test_attribute_equals_the_command_line(inputs, tmp_path, method, flags, options):
    model, image = str(inputs / "a.onnx"), str(inputs / "images" / "one.png")
    out = tmp_path / "cli"
    r = run_cli(method, model, image, "--window", 8, 8, "--device", "cpu", *flags, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    result = onnxlam.attribute(model, image, method=method, window=(8, 8), device="cpu", **options)
    assert _comparable(result.to_json()) == _comparable(cli)
    saved = result.save(tmp_path / "api")
    assert sorted(p.name for p in saved.iterdir()) == sorted(p.name for p in out.iterdir())
    for f in out.glob("*.npy"):
        np.testing.assert_array_equal(np.load(saved / f.name), np.load(f))
    assert _comparable(json.loads((saved / "result.json").read_text())) == _comparable(cli)
    png = result._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image
    import io

    panel = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(panel, np.asarray(Image.open(out / "panel.png").convert("RGB")))
    assert "<img src='data:image/png;base64," in result._repr_html_()


def test_a_model_is_opened_once_and_reused(inputs):
    model = onnxlam.Model(str(inputs / "a.onnx"), device="cpu")
    image = str(inputs / "images" / "two.png")
    a = onnxlam.attribute(model, image, window=(8, 8), fold=3)
    programs = dict(model._programs)
    b, c = onnxlam.attribute(model, image, window=[(8, 8), (20, 30)], fold=3)
    assert b.di == pytest.approx(a.di, rel=1e-6) and c.window.x == 20
    from PIL import Image

    array = onnxlam.attribute(model, np.asarray(Image.open(image).convert("RGB")), window=(8, 8), fold=3)
    np.testing.assert_array_equal(array.gradient, a.gradient)  # an H×W×C array is the same image as its file
    assert array.to_json()["image"] == "<array>"
    assert all(model._programs[k] is p for k, p in programs.items())  # the same programs, not rebuilt
    cem = onnxlam.attribute(model, image, method="cem", window=(16, 16), size=16, block=8, draws=1, refine=0,
                            bank_size=20)
    assert cem.to_json()["options"]["device"] == "cpu"  # the model's own options, recorded
    html = model._repr_html_()
    assert "receptive field" in html and "×2" in html and "Conv" in html
    with pytest.raises(InputError, match="device: the model's own options"):
        onnxlam.attribute(model, image, window=(8, 8), device="cuda")
    with pytest.raises(InputError, match="lam takes no option 'block'"):
        onnxlam.attribute(model, image, window=(8, 8), block=8)
    with pytest.raises(InputError, match="--fold must be at least 1"):
        onnxlam.attribute(model, image, window=(8, 8), fold=0)
    with pytest.raises(InputError, match="unknown method 'lamm'"):
        onnxlam.attribute(model, image, method="lamm", window=(8, 8))


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's notebook-style example, executed as a script in an empty folder."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "the README's Python example (marked <!-- python-example -->) is missing"
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})
    assert (tmp_path / "out" / "lam" / "panel.png").is_file() and (tmp_path / "out" / "cem" / "cem.png").is_file()
