"""A damaged cache entry of any kind (program files and their records, memory footprints, rule checks,
checkpoint exports and their markers) is discarded with one warning line on stderr and rebuilt: a run
on a damaged cache gives what a run on a fresh cache gives, and the next run finds the entry whole."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxlam.engine import cache
from onnxlam.engine.memory import Footprint, Probe
from onnxlam.engine.program import read_rule_record
from tests.clitools import run_cli
from tests.onnx_models import tiny_sr

FOOTPRINT = Footprint((Probe(169, 13909580, 200704, 14786560), Probe(400, 13909580, 480000, None)), False)


def damages(text: str) -> dict[str, str | bytes]:
    """A record's text damaged each way: cut short, garbled bytes, the wrong JSON type, a field renamed."""
    first_key = next(iter(json.loads(text)))
    return {"truncated": text[: len(text) // 2], "garbled": b"\xff\xfe{\x00\x9c" + text.encode()[5:],
            "empty object": "{}", "list": "[]", "number": "3",
            "missing field": text.replace(f'"{first_key}"', f'"{first_key[:-1]}z"', 1)}


def write(path: Path, content: str | bytes) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize("damage", list(damages(json.dumps(FOOTPRINT.to_json()))))
def test_a_damaged_footprint_is_discarded_with_a_warning(tmp_path, capsys, damage):
    store = cache.RecordCache("footprints", tmp_path)
    store.save("m", FOOTPRINT.to_json())
    assert store.load("m", Footprint.from_json) == FOOTPRINT  # whole: read back as written
    path = tmp_path / "footprints" / "m.json"
    write(path, damages(path.read_text())[damage])
    assert store.load("m", Footprint.from_json) is None
    assert not path.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: discarded a damaged cache entry" in err and "m.json" in err, err


@pytest.mark.parametrize("record", [
    {"probes": [{"pixels": "169", "static": 1, "activations": 2, "check": None}], "quadratic": False},
    {"probes": [{"pixels": 169, "static": 1.5, "activations": 2, "check": None}], "quadratic": False},
    {"probes": [{"pixels": 169, "static": 1, "activations": 2}], "quadratic": False},
    {"probes": [], "quadratic": False},
    {"probes": [{"pixels": 169, "static": 1, "activations": 2, "check": None}], "quadratic": "no"},
    {"probes": {"pixels": 169}, "quadratic": False},
])
def test_a_footprint_of_the_wrong_types_is_damaged(tmp_path, record):
    store = cache.RecordCache("footprints", tmp_path)
    store.save("m", record)
    assert store.load("m", Footprint.from_json) is None


@pytest.mark.parametrize("damage", list(damages(json.dumps({"error": 1e-7, "signatures": ["Conv|a"]}))) + [
    "wrong type"])
def test_a_damaged_rule_check_is_discarded(tmp_path, capsys, damage):
    store = cache.RecordCache("rules", tmp_path)
    store.save("m", {"error": 1e-7, "signatures": ["Conv|a", "Relu|"]})
    assert store.load("m", read_rule_record) == (1e-7, frozenset({"Conv|a", "Relu|"}))
    path = tmp_path / "rules" / "m.json"
    text = path.read_text()
    write(path, '{"error": "small", "signatures": ["Conv|a"]}' if damage == "wrong type" else damages(text)[damage])
    assert store.load("m", read_rule_record) is None and not path.exists()
    assert "damaged cache entry" in capsys.readouterr().err


class _Key:
    def slug(self) -> str:
        return "prog"


class _Program:
    def __init__(self):
        self.key, self.model, self.scale, self.fd_error, self.build_seconds = _Key(), tiny_sr(2), 2, 1e-9, 0.1


@pytest.mark.parametrize("damage", ["truncated record", "garbled record", "record a list", "no sha256",
                                    "scale a string", "fd_error a string", "program truncated",
                                    "program changed"])
def test_a_damaged_program_entry_is_discarded(tmp_path, capsys, damage):
    store = cache.ProgramCache(tmp_path)
    store.save(_Program())
    model_path, record_path = store._paths(_Key())
    graph, record = store.load(_Key())
    assert record == {"scale": 2, "fd_error": 1e-9} and len(graph.graph.node) == len(tiny_sr(2).graph.node)
    text, data = record_path.read_text(), json.loads(record_path.read_text())
    if damage == "truncated record":
        write(record_path, text[:10])
    elif damage == "garbled record":
        write(record_path, b"\x00\xff" + text.encode())
    elif damage == "record a list":
        write(record_path, "[]")
    elif damage == "no sha256":
        write(record_path, json.dumps({k: v for k, v in data.items() if k != "sha256"}))
    elif damage in ("scale a string", "fd_error a string"):
        write(record_path, json.dumps({**data, damage.split()[0]: "2"}))
    elif damage == "program truncated":
        write(model_path, model_path.read_bytes()[:100])
    else:
        b = bytearray(model_path.read_bytes())
        b[len(b) // 2] ^= 1
        write(model_path, bytes(b))
    assert store.load(_Key()) is None
    assert not model_path.exists() and not record_path.exists()
    assert "damaged cache entry" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["changed", "truncated", "unsealed", "bad seal"])
def test_a_damaged_export_is_not_trusted(tmp_path, capsys, damage):
    path = tmp_path / "export.onnx"
    onnx.save(tiny_sr(2), path)
    assert not cache.sealed(path) and not path.exists()  # an unsealed export: not trusted
    onnx.save(tiny_sr(2), path)
    cache.seal(path)
    assert cache.sealed(path)
    stamp = path.with_name("export.onnx.sha256")
    if damage == "changed":
        b = bytearray(path.read_bytes())
        b[-3] ^= 1
        path.write_bytes(bytes(b))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "unsealed":
        stamp.unlink()
    else:
        stamp.write_text("not a sha")
    capsys.readouterr()
    assert not cache.sealed(path) and not path.exists() and not stamp.exists()
    assert "damaged cache entry" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["footprints", "programs"])
def test_a_run_on_a_damaged_cache_equals_a_run_on_a_fresh_one(tmp_path, monkeypatch, inputs, kind):
    """`onnxlam lam` twice: fresh cache, then with every entry of `kind` damaged as still-valid JSON
    (a field renamed) or, for program files, cut short. The second run warns, rebuilds, and gives the
    same map; the third finds the rebuilt entries whole and says nothing."""
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "cache"))
    args = ("lam", inputs / "a.onnx", inputs / "images" / "one.png", "--window", 8, 8, "--fold", 4)
    fresh = run_cli(*args, "--out", tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr
    entries = sorted((tmp_path / "cache" / kind).iterdir())
    assert entries
    for path in entries:
        if path.suffix == ".json":
            write(path, path.read_text().replace('"probes"', '"probez"').replace('"sha256"', '"sha257"'))
        else:
            write(path, path.read_bytes()[:64])
    damaged = run_cli(*args, "--out", tmp_path / "damaged")
    assert damaged.returncode == 0, damaged.stderr
    assert "warning: discarded a damaged cache entry" in damaged.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "damaged" / "gradient.npy"),
                                  np.load(tmp_path / "fresh" / "gradient.npy"))
    assert json.loads((tmp_path / "damaged" / "result.json").read_text())["di"] == \
        json.loads((tmp_path / "fresh" / "result.json").read_text())["di"]
    again = run_cli(*args, "--out", tmp_path / "again")
    assert again.returncode == 0 and "damaged" not in again.stderr, again.stderr
