"""Noise-tunnel LAM against the PyTorch LAM reference over the same noisy inputs, and `lam --noise-tunnel`."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from tests import torch_reference as ref
from tests.architectures import LR_SIZE
from tests.clitools import run_cli
from tests.onnx_models import tiny_sr
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.methods.noise_tunnel.tunnel import NoiseTunnel, noise, noise_tunnel

pytestmark = pytest.mark.integration

NAME, EXPORTER = "edsr", "torchscript"
SAMPLES, STDEV, FOLD = 3, 0.05, 8
WINDOW, SIZE = (10, 12), 8


def torch_combine(attributions, kind):
    """Captum's NoiseTunnel combinations, written here from its definitions, in float64."""
    a = np.stack(attributions).astype(np.float64)
    if kind == "smoothgrad":
        return a.sum(axis=0) / len(a)
    if kind == "smoothgrad_sq":
        return (a ** 2).sum(axis=0) / len(a)
    mean = a.sum(axis=0) / len(a)
    return ((a - mean) ** 2).sum(axis=0) / len(a)  # vargrad: population variance


@pytest.fixture(scope="module")
def case(zoo, astronaut):
    model = zoo.torch(NAME)
    s = model.scale
    hr = np.ascontiguousarray(astronaut[40:40 + LR_SIZE * s, 120:120 + LR_SIZE * s])
    lr = ref.prepare_lr(hr, s)
    noises = np.random.default_rng(1234).normal(0.0, STDEV, (SAMPLES,) + lr.shape).astype(np.float32)
    # the reference: LAM of each noisy copy, its path starting at the blurred noisy copy
    samples = [ref.reference_lam(model, (lr + n).astype(np.float32), *WINDOW, SIZE, fold=FOLD) for n in noises]
    analyzer = Analyzer(zoo.onnx(NAME, EXPORTER), device="cpu")
    return hr, lr, noises, samples, analyzer


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_matches_torch_reference(case, kind):
    hr, lr, noises, samples, analyzer = case
    tunnel = NoiseTunnel(kind, SAMPLES, STDEV, seed=0)
    (result,) = noise_tunnel(analyzer, hr, [WINDOW], tunnel, SIZE, noises=noises, fold=FOLD)
    combined = torch_combine([s["A"] for s in samples], kind)
    M = ref.abs_normalise(combined)
    assert np.abs(result.gradient - combined).max() <= 1e-4 * np.abs(combined).max()
    assert np.abs(result.attribution - M).max() <= 1e-4
    assert abs(result.di - ref.diffusion_index(M)) <= 0.01
    assert list(result.noise_tunnel.sample_di) == pytest.approx([s["di"] for s in samples], abs=0.01)
    assert result.completeness.objective_delta == pytest.approx(
        np.mean([s["objective_delta"] for s in samples]), rel=1e-4)
    np.testing.assert_array_equal(result.lr_image, lr)  # the pictures show the clean input
    assert result.to_json()["noise_tunnel"]["kind"] == kind


def test_seeded_noise_is_reproducible(case):
    _, lr, _, _, _ = case
    tunnel = NoiseTunnel("smoothgrad", 4, 0.2, seed=7)
    expected = np.random.default_rng(7).normal(0.0, 0.2, (4,) + lr.shape).astype(np.float32)
    np.testing.assert_array_equal(noise(lr.shape, tunnel), expected)
    assert not np.array_equal(noise(lr.shape, NoiseTunnel("smoothgrad", 4, 0.2, seed=8)), expected)


def test_seeded_run_equals_run_with_its_noise(case):
    hr, lr, _, _, analyzer = case
    tunnel = NoiseTunnel("vargrad", 2, 0.1, seed=5)
    (seeded,) = noise_tunnel(analyzer, hr, [WINDOW], tunnel, SIZE, fold=4)
    (given,) = noise_tunnel(analyzer, hr, [WINDOW], tunnel, SIZE, fold=4, noises=noise(lr.shape, tunnel))
    np.testing.assert_array_equal(seeded.attribution, given.attribution)
    assert seeded.noise_tunnel.tunnel.seed == 5


@pytest.mark.parametrize("kind,samples,stdev,message", [
    ("smoothgrad2", 3, 0.1, "unknown noise tunnel"), ("vargrad", 0, 0.1, "--samples"),
    ("vargrad", 2, -0.1, "--stdev")])
def test_bad_parameters(kind, samples, stdev, message):
    from onnxlam.core.errors import InputError
    with pytest.raises(InputError, match=message):
        NoiseTunnel(kind, samples, stdev)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("nt_cli")
    onnx.save(tiny_sr(2), d / "m.onnx")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / "i.png")
    return d


def test_cli_noise_tunnel_end_to_end(cli_files, tmp_path):
    d = cli_files
    out = tmp_path / "lam"
    done = run_cli("lam", d / "m.onnx", d / "i.png", "--window", "8", "8", "--size", "8", "--fold", "4",
                   "--noise-tunnel", "smoothgrad_sq", "--samples", "2", "--stdev", "0.05", "--seed", "3",
                   "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert json.loads((out / "result.json").read_text()) == data
    nt = data["noise_tunnel"]
    assert (nt["kind"], nt["samples"], nt["stdev"], nt["seed"]) == ("smoothgrad_sq", 2, 0.05, 3)
    assert len(nt["sample_di"]) == 2
    # the same as the Python API with the same seed
    api = noise_tunnel(Analyzer(d / "m.onnx", device="cpu"), d / "i.png", [(8, 8)],
                       NoiseTunnel("smoothgrad_sq", 2, 0.05, 3), 8, fold=4)[0]
    np.testing.assert_array_equal(np.load(out / "attribution.npy"), api.attribution)
    assert data["di"] == pytest.approx(api.di, abs=1e-9)
    assert (out / "panel.png").exists()


@pytest.mark.parametrize("args,message", [
    (["--noise-tunnel", "smooth"], "unknown noise tunnel"),
    (["--noise-tunnel", "vargrad", "--samples", "0"], "--samples must be at least 1"),
    (["--noise-tunnel", "vargrad", "--stdev", "-0.5"], "--stdev must be"),
    (["--samples", "4"], "add --noise-tunnel"),
])
def test_cli_noise_tunnel_bad_input(cli_files, tmp_path, args, message):
    d = cli_files
    out = tmp_path / "lam"
    done = run_cli("lam", d / "m.onnx", d / "i.png", "--window", "8", "8", "--size", "8", "--fold", "2",
                   *args, "--out", out)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not out.exists()


def test_given_inputs_are_checked(case):
    from onnxlam.core.errors import InputError
    hr, lr, noises, _, analyzer = case
    with pytest.raises(InputError, match="samples of the"):
        noise_tunnel(analyzer, hr, [WINDOW], NoiseTunnel("smoothgrad", SAMPLES + 1), SIZE, noises=noises, fold=2)
    with pytest.raises(InputError, match="the given LR input"):
        analyzer.run_windows(hr, [WINDOW], SIZE, fold=2, lr_input=lr[:, :-1])
    with pytest.raises(InputError, match="NaN"):
        analyzer.run_windows(hr, [WINDOW], SIZE, fold=2, lr_input=np.full_like(lr, np.nan))


def test_several_windows_equal_one_at_a_time(case):
    hr, _, noises, _, analyzer = case
    tunnel = NoiseTunnel("smoothgrad_sq", SAMPLES, STDEV)
    both = noise_tunnel(analyzer, hr, [WINDOW, (2, 3)], tunnel, SIZE, noises=noises, fold=4)
    for window, result in zip([WINDOW, (2, 3)], both):
        (alone,) = noise_tunnel(analyzer, hr, [window], tunnel, SIZE, noises=noises, fold=4)
        assert (result.window.x, result.window.y) == window
        np.testing.assert_allclose(result.attribution, alone.attribution, rtol=0, atol=1e-6)
