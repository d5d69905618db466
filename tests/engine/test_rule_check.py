"""The node-local check of a model's derivative rules, run once per model at a small size (`RuleCheck`).

Against the check it replaces (`check_local_derivatives` on the program itself): the same verdict on
a correct model and on a wrong rule in onnx-ad's table; a cached result used only where it covers the
program's rules; the memory probe's child giving the same number as the check run here.
"""
from __future__ import annotations

import json

import onnx
import onnx_ad.rules
import pytest

from onnxlam.engine import memory
from onnxlam.engine import program as P
from onnxlam.engine.cache import RecordCache
from onnxlam.core.errors import NumericalError
from onnxlam.engine import gradcheck
from onnxlam.graph.model import open_model

from tests.graph.test_checks_reject_broken_programs import _wrong_rule, activation_sr

pytestmark = pytest.mark.integration

LR = 24  # above RULE_SIDE: the rules are checked on the small graph


@pytest.fixture()
def model(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "activation.onnx"
    onnx.save(activation_sr(), path)
    return path


def _records():
    root = RecordCache("rules").root
    return sorted(root.glob("*.json")) if root.exists() else []


def _count_local_checks(monkeypatch) -> list:
    """Which programs' rules `check_program` checks (their LR sizes), calling through to the real check."""
    seen = []
    real = P.check_local_derivatives

    def counted(program, device="auto", *args, **kwargs):
        seen.append((program.key.height, program.key.width))
        return real(program, device, *args, **kwargs)
    monkeypatch.setattr(P, "check_local_derivatives", counted)
    return seen


def test_the_rules_are_checked_once_at_the_small_size_and_cached(model, monkeypatch):
    seen = _count_local_checks(monkeypatch)
    first = P.build_program(model, 1, LR, LR)
    assert seen == [(P.RULE_SIDE, P.RULE_SIDE)] and len(_records()) == 1
    assert first.fd_error <= P.FD_TOLERANCE / 10
    P.build_program(model, 1, LR + 8, LR + 4)  # another size: the record covers its rules
    assert seen == [(P.RULE_SIDE, P.RULE_SIDE)]
    # the verdict of the small graph is the verdict of the program's own rules
    program = P.build_program(model, 1, LR, LR, cache=False, verify=False)
    small = P.RuleCheck.plan(open_model(model), program, cache=False).small
    assert gradcheck.check_local_derivatives(small) <= gradcheck.LOCAL_TOLERANCE / 100
    assert gradcheck.check_local_derivatives(program) <= gradcheck.LOCAL_TOLERANCE / 100


def test_a_wrong_rule_is_refused_at_the_small_size_and_not_cached(model, monkeypatch):
    monkeypatch.setitem(onnx_ad.rules.DERIVATIVE, "LeakyRelu", _wrong_rule("LeakyRelu"))
    seen = _count_local_checks(monkeypatch)
    with pytest.raises(NumericalError, match="fails its check"):
        P.build_program(model, 1, LR, LR)
    assert seen == [(P.RULE_SIDE, P.RULE_SIDE)] and _records() == []


def test_a_wrong_rule_is_refused_after_a_correct_run_cached_its_record(model, monkeypatch):
    """A record is keyed by onnx-ad's version, not its table: a rule broken after the record was written
    is still seen by forward vs reverse where it differs between the modes (here: reverse only)."""
    P.build_program(model, 1, LR, LR)
    assert len(_records()) == 1
    original = onnx_ad.rules.REVERSE["LeakyRelu"]

    def doubled(ctx, node, *args, **kwargs):
        bad = onnx.NodeProto()
        bad.CopyFrom(node)
        next(a for a in bad.attribute if a.name == "alpha").f *= 2
        return original(ctx, bad, *args, **kwargs)
    monkeypatch.setitem(onnx_ad.rules.REVERSE, "LeakyRelu", doubled)
    with pytest.raises(NumericalError, match="fails its check"):
        P.build_program(model, 1, LR + 8, LR + 8)


def test_a_record_is_used_only_where_it_covers_the_program(model, monkeypatch):
    program = P.build_program(model, 1, LR, LR, cache=False, verify=False)
    info = open_model(model)
    rules = P.RuleCheck.plan(info, program)
    rules.checked = 1e-6
    rules.record()
    assert P.RuleCheck.plan(info, program).error == pytest.approx(1e-6)
    record_path = _records()[0]
    record = json.loads(record_path.read_text())
    missing = dict(record, signatures=[s for s in record["signatures"] if "Sigmoid" not in s])
    RecordCache("rules").save(record_path.stem, missing)
    again = P.RuleCheck.plan(info, program)
    assert again.error is None and again.small is not None  # checked anew
    RecordCache("rules").save(record_path.stem, dict(record, error=0.5))  # a failing record: not trusted
    assert P.RuleCheck.plan(info, program).error is None
    record_path.write_text("{not json")
    assert P.RuleCheck.plan(info, program).error is None


def test_a_program_whose_rules_the_small_graph_lacks_is_checked_itself(model, monkeypatch):
    """A graph that changes with the size (here: the small graph planted without its Sigmoid) is not
    covered by the small graph's check: the program's own rules are checked."""
    real = P.objective_graph

    def without_sigmoid(source, info, key):
        graph = real(source, info, key)
        if key.height == P.RULE_SIDE:
            for node in graph.graph.node:
                if node.op_type == "Sigmoid":
                    node.op_type = "Relu"
        return graph
    monkeypatch.setattr(P, "objective_graph", without_sigmoid)
    seen = _count_local_checks(monkeypatch)
    P.build_program(model, 1, LR, LR)
    assert seen == [(LR, LR)] and _records() == []


def test_the_probe_child_gives_the_check_run_here(model):
    """The memory probe's child runs forward vs reverse on its own measured run and the rules on the
    small graph: the same number as the check in this process, and the record is written."""
    info = open_model(model)
    program = P.build_program(model, 1, LR, LR, cache=False, verify=False)
    rules = P.RuleCheck.plan(info, program)
    here = gradcheck.combine(gradcheck.check_forward_reverse(program, "cpu"),
                             gradcheck.check_local_derivatives(rules.small, "cpu"))
    probe = memory.probe(program, "cpu", check=True, rules=rules)
    assert program.fd_error == pytest.approx(here, rel=1e-3, abs=1e-9)
    assert probe.check is not None and len(_records()) == 1
    assert P.RuleCheck.plan(info, program).error is not None
