"""The effective receptive field against PyTorch autograd of the same seeded module, and the `erf` command."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from tests import torch_reference as ref
from tests.architectures import LR_SIZE
from tests.clitools import run_cli
from tests.onnx_models import tiny_sr
from onnxlam.engine.gradcheck import FD_TOLERANCE
from onnxlam.methods.erf.field import effective_receptive_field, write_erf
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.engine.program import build_program, load_program

pytestmark = pytest.mark.integration

NAME, EXPORTER = "edsr", "torchscript"


def hr_crops(astronaut, chelsea, scale):
    """Two HR photographs cut to LR_SIZE·scale: their LR inputs are LR_SIZE×LR_SIZE."""
    side = LR_SIZE * scale
    return [np.ascontiguousarray(astronaut[40:40 + side, 120:120 + side]),
            np.ascontiguousarray(chelsea[60:60 + side, 80:80 + side])]


def torch_erf(model, lrs, x, y, size):
    """(1/N) Σ g_n / Σ g_n with g_n = Σ_c |∂ Σ_window F(x_n) / ∂x_n|, by autograd, in float64."""
    total = np.zeros(lrs[0].shape[1:], np.float64)
    for lr in lrs:
        xt = torch.from_numpy(lr.copy())[None].requires_grad_(True)
        with torch.enable_grad():
            out = model(xt)
            objective = out[0, :, y:y + size, x:x + size].to(torch.float64).sum()
            (grad,) = torch.autograd.grad(objective, xt)
        g = grad[0].abs().to(torch.float64).sum(dim=0).numpy()
        total += g / g.sum()
    return total / len(lrs)


def radius(erf, centre, fraction):
    """Distance of the pixel completing `fraction` of the mass when pixels are taken nearest first."""
    h, w = erf.shape
    pixels = sorted(((np.hypot(c - centre[0], r - centre[1]), erf[r, c]) for r in range(h) for c in range(w)),
                    key=lambda p: p[0])
    total, acc = erf.sum(), 0.0
    for d, v in pixels:
        acc += v
        if acc >= fraction * total * (1 - 1e-12):
            return d
    return pixels[-1][0]


@pytest.mark.parametrize("pixel,size", [(None, 1), ((9, 20), 4)])
def test_erf_matches_autograd(zoo, astronaut, chelsea, pixel, size):
    model = zoo.torch(NAME)
    s = model.scale
    hrs = hr_crops(astronaut, chelsea, s)
    lrs = [ref.prepare_lr(hr, s) for hr in hrs]
    analyzer = Analyzer(zoo.onnx(NAME, EXPORTER), device="cpu")
    result = effective_receptive_field(analyzer, hrs, pixel, size)
    H = W = LR_SIZE * s
    x, y = pixel if pixel is not None else ((W - size) // 2, (H - size) // 2)
    assert (result.window.x, result.window.y, result.window.size) == (x, y, size)
    expected = torch_erf(model, lrs, x, y, size)
    assert result.erf.shape == expected.shape
    assert np.abs(result.erf - expected).max() <= 1e-5 * np.abs(expected).max()
    assert abs(result.erf.sum() - 1.0) < 1e-9
    centre = ((x + size / 2) / s - 0.5, (y + size / 2) / s - 0.5)
    for key, f in (("50", 0.5), ("90", 0.9), ("99", 0.99)):
        assert result.radii[key] == pytest.approx(radius(expected, centre, f), abs=1e-12)
    # the static receptive field holds every pixel with a gradient, and its box is no larger than the reach
    rf = analyzer.receptive_field
    assert result.receptive_field == rf and rf.local
    t, l, b, r = result.static_box
    support = np.argwhere(expected > 0)
    assert support[:, 0].min() >= t and support[:, 0].max() < b
    assert support[:, 1].min() >= l and support[:, 1].max() < r
    # and it is tight here: the gradient reaches every side of the box
    assert (support[:, 0].min(), support[:, 1].min(), support[:, 0].max() + 1, support[:, 1].max() + 1) == (t, l, b, r)
    assert result.radii["99"] <= result.static_radius


def test_intensity_program_is_checked_cached_and_recorded(zoo, tmp_path):
    path = zoo.onnx(NAME, EXPORTER)
    program = build_program(path, 1, LR_SIZE, LR_SIZE, detector="intensity")
    assert program.fd_error is not None and program.fd_error <= FD_TOLERANCE  # gradcheck ran on it
    lam = build_program(path, 1, LR_SIZE, LR_SIZE)
    assert program.key.slug() != lam.key.slug() and "-dintensity-" in program.key.slug()
    assert program.mask_size == (LR_SIZE * 2, LR_SIZE * 2) and lam.mask_size == (LR_SIZE * 2 - 1,) * 2
    assert build_program(path, 1, LR_SIZE, LR_SIZE, detector="intensity").model == program.model  # cached
    program.save(tmp_path / "p.onnx")
    loaded = load_program(tmp_path / "p.onnx")
    assert loaded.key == program.key and loaded.key.detector == "intensity"
    assert {p.key: p.value for p in loaded.model.metadata_props}["onnxlam.detector_kind"] == "intensity"
    from onnxlam.core.errors import InputError
    with pytest.raises(InputError, match="intensity"):  # not usable as a LAM program
        Analyzer(path, device="cpu").run(np.zeros((LR_SIZE, LR_SIZE, 3), np.uint8), (4, 4), 8, lr=True,
                                         program=tmp_path / "p.onnx", fold=2)


def test_zero_gradient_is_an_error(tmp_path):
    """An image whose window gradient is zero everywhere has no mass to normalise: an error, not averaged."""
    from onnxlam.core.errors import NumericalError
    from onnxlam.methods.erf.field import Window, combine, gradient_map, intensity_mask

    onnx.save(tiny_sr(2), tmp_path / "m.onnx")
    program = build_program(tmp_path / "m.onnx", 1, 12, 12, detector="intensity")
    g = gradient_map(program, np.full((3, 12, 12), 0.5, np.float32), intensity_mask(24, 24, Window(3, 3, 1)), "cpu")
    assert g.sum() > 0
    with pytest.raises(NumericalError, match="zero everywhere"):
        combine([g, np.zeros_like(g)], ["a.png", "b.png"])


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("erf_cli")
    onnx.save(tiny_sr(2), d / "m.onnx")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"i{i}.png")
    Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(d / "other.png")
    return d


def test_cli_erf_end_to_end(cli_files, tmp_path):
    d = cli_files
    out = tmp_path / "erf"
    done = run_cli("erf", d / "m.onnx", d / "i0.png", d / "i1.png", "--pixel", "10", "12", "--size", "2",
                   "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["erf.npy", "erf.png", "result.json"]
    assert json.loads((out / "result.json").read_text()) == printed
    assert printed["window"] == {"x": 10, "y": 12, "size": 2} and len(printed["images"]) == 2
    assert set(printed["radii"]) == {"50", "90", "99"} and printed["static_radius"] > 0
    erf = np.load(out / "erf.npy")
    assert erf.shape == (20, 20) and abs(float(erf.sum()) - 1) < 1e-5
    # the same numbers as the Python API on the same files
    api = effective_receptive_field(Analyzer(d / "m.onnx", device="cpu"), [d / "i0.png", d / "i1.png"], (10, 12), 2)
    np.testing.assert_allclose(erf, api.erf.astype(np.float32), rtol=0, atol=1e-9)
    picture = np.asarray(Image.open(out / "erf.png").convert("RGB"))
    assert picture.shape[0] >= 40 and picture.shape[1] > 2 * 40  # input, heat map and colour bar
    write_erf(api, tmp_path / "again")  # the writer replaces nothing half-way
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["erf.npy", "erf.png", "result.json"]


@pytest.mark.parametrize("args,message", [
    (["--pixel", "100", "3"], "outside"),
    (["--size", "0"], "--size"),
    (["OTHER"], "crop the images to one size"),
    (["MISSING"], "image not found"),
])
def test_cli_erf_bad_input(cli_files, tmp_path, args, message):
    d = cli_files
    args = [str(d / "other.png") if a == "OTHER" else str(d / "missing.png") if a == "MISSING" else a for a in args]
    images = [d / "i0.png"] + ([a for a in args if a.endswith(".png")])
    options = [a for a in args if not a.endswith(".png")]
    out = tmp_path / "erf"
    done = run_cli("erf", d / "m.onnx", *images, *options, "--out", out)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".erf*"))
