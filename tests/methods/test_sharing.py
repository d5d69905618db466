"""Windows that share a reverse pass (disjoint dependence boxes, one seed: the sum of their detectors)
give every window exactly the map a run of that window alone gives; global networks share nothing."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxlam.batch.sweep import run_sweep, sweep_windows
from onnxlam.graph.receptive_field.colouring import classes, colour, overlap
from onnxlam.methods.lam import run
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.methods.lam.sharing import plan_sharing
from tests.onnx_models import tiny_sr

pytestmark = pytest.mark.integration  # builds a program per crop size: seconds each


def _image(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("share") / "tiny.onnx"
    onnx.save(tiny_sr(scale=2), path)
    return str(path)


def _global_model(path) -> str:
    """tiny_sr times (1 + the image's mean): every output pixel depends on every input pixel."""
    nodes = [helper.make_node("GlobalAveragePool", ["sr_unit"], ["mean"]),
             helper.make_node("Add", ["sr_unit", "mean"], ["with_mean"])]
    onnx.save(tiny_sr(scale=2, extra_nodes=nodes), path)
    return str(path)


def _max_depth(boxes) -> int:
    """The most boxes covering one pixel: no colouring can use fewer colours (they all overlap)."""
    cover = {}
    for t, l, b, r in boxes:
        for p in itertools.product(range(t, b), range(l, r)):
            cover[p] = cover.get(p, 0) + 1
    return max(cover.values())


def test_colouring_separates_overlapping_boxes_with_the_fewest_colours_on_a_grid():
    boxes = [(y, x, y + 10, x + 10) for y in range(0, 30, 3) for x in range(0, 30, 3)]
    colours = colour(boxes)
    for members in classes(colours):
        for i, j in itertools.combinations(members, 2):
            assert not overlap(boxes[i], boxes[j])
    assert len(set(colours)) == _max_depth(boxes) == 16  # ⌈10/3⌉² around the centre
    assert overlap((0, 0, 2, 2), (1, 1, 3, 3)) and not overlap((0, 0, 2, 2), (2, 0, 4, 2))


@pytest.mark.parametrize("size, stride", [(4, 8), (4, 2)], ids=["sparse", "heavy-overlap"])
def test_shared_passes_give_each_window_its_own_run_to_the_bit(local_model, size, stride):
    analyzer = Analyzer(local_model)
    image = _image(24)
    _, _, wins = sweep_windows(analyzer, image, stride, size, lr=True)
    options = analyzer.lam_options(size=size, lr=True, fold=4).validate()
    sharing = plan_sharing(analyzer, wins, options, (24, 24))
    assert sharing.used, sharing.reason
    passes = len(set(sharing.colours))
    assert passes < len(wins)
    shared = run.run_windows(analyzer, image, wins, options)
    for i in range(0, len(wins), max(1, len(wins) // 7)):
        alone = run.run_windows(analyzer, image, [wins[i]], options)[0]
        assert np.array_equal(shared[i].gradient, alone.gradient), (i, wins[i])
        assert shared[i].di == alone.di
        top, left, bottom, right = sharing.boxes[i]
        outside = np.ones(alone.gradient.shape[1:], bool)
        outside[top:bottom, left:right] = False
        assert not alone.gradient[:, outside].any()  # the box holds the whole map
    unshared = run.run_windows(analyzer, image, wins, options, share=False)
    for a, b in zip(shared, unshared):
        np.testing.assert_allclose(a.gradient, b.gradient, rtol=0, atol=1e-6 * np.abs(b.gradient).max())


def test_sweep_records_its_colouring(local_model):
    sweep = run_sweep(Analyzer(local_model), _image(24), 4, 4, lr=True, fold=2)
    data = sweep.to_json()["sharing"]
    n = sweep.di.size
    assert data["used"] and data["windows"] == n and len(data["colours"]) == n
    assert data["passes"] == len(set(data["colours"])) < n
    assert data["windows_per_pass"] == pytest.approx(n / data["passes"], abs=1e-3)


def test_global_network_shares_nothing(tmp_path):
    analyzer = Analyzer(_global_model(tmp_path / "global.onnx"))
    image = _image(16)
    _, _, wins = sweep_windows(analyzer, image, 8, 4, lr=True)
    options = analyzer.lam_options(size=4, lr=True, fold=2).validate()
    sharing = plan_sharing(analyzer, wins, options, (16, 16))
    assert not sharing.used and sharing.reason.startswith("global network")
    shared = run.run_windows(analyzer, image, wins[:3], options)
    alone = run.run_windows(analyzer, image, [wins[1]], options)[0]
    np.testing.assert_allclose(shared[1].gradient, alone.gradient, rtol=0, atol=1e-6)
    assert np.count_nonzero(alone.gradient[0]) > 0.9 * alone.gradient[0].size  # the whole image
