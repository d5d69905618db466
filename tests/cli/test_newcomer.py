"""What a new user meets first: `--version`, the collection's names (typed in full, resolved by the
Python API as by the command line), numbers in JSON as numbers, and errors that say what to do."""
from __future__ import annotations

import json
import re

import pytest
from PIL import Image

import onnxlam
from onnxlam.core.version import __version__
from tests.clitools import PHOTO, run_cli


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"onnxlam {__version__}"


def test_models_never_cuts_a_name_at_80_columns():
    r = run_cli("models", process=True, env_extra={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    names = [e["name"] for e in json.loads(run_cli("models", "--json").stdout)]
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    for name in names:
        assert any(f"│ {name} " in line for line in lines), (name, r.stdout)


def test_inspect_and_models_count_the_same_parameters():
    """The network's weights as its converter counted them, not the constants a conversion adds."""
    ready = [e for e in json.loads(run_cli("models", "--json").stdout) if e["available"]]
    assert ready
    for entry in ready[:3]:
        r = run_cli("inspect", entry["name"], "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["parameters"] == entry["params"], entry["name"]


@pytest.mark.integration
def test_the_api_takes_collection_names(tmp_path):
    image = tmp_path / "cat.png"
    Image.open(PHOTO).convert("RGB").crop((60, 40, 108, 88)).save(image)
    result = onnxlam.analyze("span-x4", image, window=(20, 20), size=8, fold=2, device="cpu")
    assert result.scale == 4 and result.di > 0


@pytest.mark.integration
def test_a_receptive_field_scale_is_a_number(inputs):
    r = run_cli("lam", inputs / "a.onnx", inputs / "images" / "one.png", "--window", 8, 8, "--fold", 2,
                "--json", "--out", inputs / "rf-out")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["receptive_field"]["scale"] == [2, 2]


@pytest.mark.integration
def test_an_odd_size_for_a_model_that_needs_even_ones_says_so(tmp_path):
    image = tmp_path / "odd.png"
    Image.open(PHOTO).convert("RGB").crop((0, 0, 70, 62)).save(image)  # LR 35×31 at ×2
    r = run_cli("lam", "realcugan-se-x2", image, "--window", 8, 8, "--fold", 2, "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "needs LR sizes that are multiples of 2" in line and "35×31" in line, line
    # the same for an LR image given as is (--lr): its size decides the scale probe's shape
    lr = tmp_path / "odd-lr.png"
    Image.open(PHOTO).convert("RGB").crop((0, 0, 35, 31)).save(lr)
    r = run_cli("lam", "realcugan-se-x4", lr, "--lr", "--window", 8, 8, "--fold", 2, "--out", tmp_path / "out2")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "needs LR sizes that are multiples of 2" in line and "35×31" in line and "realcugan-se-x4" in line, line
    assert not (tmp_path / "out2").exists()


def test_cuda_diagnosis_says_what_was_found():
    from onnxlam.engine.runtime import cuda_available, cuda_diagnosis

    if cuda_available():
        pytest.skip("a usable GPU: there is nothing to diagnose")
    text = cuda_diagnosis()
    import onnxruntime as ort

    assert ort.__version__ in text
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert "is installed but its CUDA provider does not start here" in text
    else:
        assert "has no CUDA provider" in text


@pytest.mark.parametrize("command", ["lam", "report", "cem", "check", "sweep", "compare"])
def test_help_shows_metavars_a_user_reads(command):
    r = run_cli(command, "--help", process=True, env_extra={"COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    for python_type in ("<list[str]>", "<int,int>", "{model}", "<float>", "<int>"):
        assert python_type not in r.stdout, (python_type, r.stdout)
    assert not re.search(r"--window(?![\w-])", r.stdout) or "X Y" in r.stdout
    if command in ("lam", "report", "check"):
        assert "--fold N" in r.stdout and "--sigma X" in r.stdout


def test_titles_and_errors_name_collection_models_as_typed(tmp_path):
    """`inspect span-x4` is titled span-x4, not the file the package installed; an error about a
    collection model's file names the model."""
    from onnxlam.convert.collection import list_models, named

    r = run_cli("inspect", "span-x4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].strip() == "span-x4" and "exported_models" not in r.stdout
    entry = next(e for e in list_models() if e.name == "span-x4")
    assert named(f"{entry.path}: cannot differentiate the model") == "span-x4: cannot differentiate the model"
    assert named("/elsewhere/span-x4.onnx: x") == "/elsewhere/span-x4.onnx: x"
