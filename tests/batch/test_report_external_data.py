"""`onnxlam report` resumes by fingerprint: a model's fingerprint must cover its external-data files.

A model whose weights live in `model.onnx.data` can change without its `.onnx` file changing a byte
(same graph, same tensor names, sizes and offsets). A fingerprint of the `.onnx` file alone would
then reuse the stale cases; `graph.model.file_sha256` folds the data files in.
"""
from __future__ import annotations

import hashlib
import shutil

import onnx
import pytest
from PIL import Image

from tests.clitools import PHOTO
from tests.onnx_models import tiny_sr
from onnxlam.batch.report import ConfigValues, WindowSpec, run_report
from onnxlam.graph.model import file_sha256

pytestmark = pytest.mark.integration


def _save_external(model: onnx.ModelProto, folder) -> None:
    folder.mkdir()
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)


def test_weights_changed_only_in_the_data_file_are_recomputed(tmp_path):
    _save_external(tiny_sr(2, seed=0), tmp_path / "old")
    _save_external(tiny_sr(2, seed=5), tmp_path / "new")
    model = tmp_path / "model"
    shutil.copytree(tmp_path / "old", model)
    onnx_file, data_file = model / "model.onnx", model / "model.onnx.data"
    image = tmp_path / "img.png"
    Image.open(PHOTO).crop((0, 0, 64, 64)).save(image)
    config = ConfigValues(models=(str(onnx_file),), images=(str(image),), windows=(WindowSpec(8, 8),),
                          out=tmp_path / "rep", fold=4).resolve()

    first = run_report(config)
    assert first.computed == 1 and first.failed == 0
    assert run_report(config).reused == 1  # unchanged: resumed

    onnx_bytes = onnx_file.read_bytes()
    data_bytes = data_file.read_bytes()
    shutil.copyfile(tmp_path / "new" / "model.onnx.data", data_file)  # ONLY the weights change
    assert onnx_file.read_bytes() == onnx_bytes  # a hash of the .onnx file alone would not see it
    assert data_file.read_bytes() != data_bytes
    assert (tmp_path / "new" / "model.onnx").read_bytes() == onnx_bytes  # the same file, other weights
    assert file_sha256(onnx_file) != hashlib.sha256(onnx_bytes).hexdigest()

    second = run_report(config)
    assert second.computed == 1 and second.reused == 0 and second.failed == 0
    fresh = run_report(ConfigValues(models=(str(tmp_path / "new" / "model.onnx"),), images=(str(image),),
                                    windows=(WindowSpec(8, 8),), out=tmp_path / "fresh", fold=4).resolve())
    assert fresh.computed == 1
    (old,), (new,), (expected,) = first.rows, second.rows, fresh.rows
    assert abs(new.di - old.di) > 1e-3  # the new weights give another map
    assert new.di == expected.di        # ... the one the new model gives in a report of its own
