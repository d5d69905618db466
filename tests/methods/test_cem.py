"""Causal effect maps against a plain PyTorch implementation of docs/CEM-SPEC.md written here.

The reference below uses no onnxlam code: Pillow loads and downsamples the images (§1), PyTorch does
the arithmetic (noise, quantisation, PSNR in float64, cv2-style bicubic via `F.interpolate`, the
coarse-to-fine statistics) and matplotlib colours the picture. Both sides get the SAME supplied
patch sequence (a memoised draw per (pass, row, col, k)), so they must agree exactly, given the
same model outputs:

- with the model run by a plain onnxruntime session on the file (batch 1), every per-intervention
  PSNR equals onnxlam's to float64 precision (1e-12 dB: the squared errors are integers summed
  exactly; only log10/sqrt may differ in the last ulp between numpy and PyTorch), and refinement
  sets, effects, counts, ranges and pictures are identical;
- with the model run by PyTorch itself, float32 outputs differ from onnxruntime's by ~1e-7, which
  flips Q(y) = round(255·y) for a value only when 255·y lies within ~3e-5 of a half-integer (a
  chance of ~6e-5 per value, so ~0.05 per 16×16×3 ROI). A flip of a value whose error is e moves the
  MSE by (2|e| + 1)/(3R²), i.e. the PSNR by 4.34·(2|e| + 1)/(3R²·MSE) dB: ≤ 1.8e-3 dB for |e| ≤ 20
  at the test models' MSE ≥ 130 (PSNR ≤ 27 dB). FLIP_TOL allows two or three such flips; at least
  80% of the interventions must agree to float64 precision (here all of them do).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from tests import architectures
import matplotlib
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as tF
from PIL import Image

from onnxlam.methods.cem.files import result_picture
from tests.clitools import run_cli

DATA = Path(__file__).resolve().parents[2] / "onnxlam" / "data"
EXACT = 1e-12   # dB: float64 precision of a PSNR (see the module docstring)
FLIP_TOL = 5e-3  # dB: two or three one-level flips in a 16×16 ROI at these PSNRs (module docstring)


# --- the reference: CEM-SPEC in PyTorch ------------------------------------------------------------

def ref_quantise(y: torch.Tensor) -> torch.Tensor:
    return torch.round(torch.clamp(y, 0, 1) * 255).to(torch.uint8)  # float32, half to even (§1)


def ref_psnr(q: np.ndarray, truth: np.ndarray) -> float:
    d = torch.from_numpy(q).double() - torch.from_numpy(truth).double()
    mse = torch.mean(d * d).item()
    return math.inf if mse == 0 else 20 * math.log10(255 / math.sqrt(mse))


def ref_resize(patch: np.ndarray, side: int) -> np.ndarray:
    """cv2.resize INTER_CUBIC: A = −0.75, half-pixel centres, edges repeated, round half up."""
    if patch.shape[0] == side:
        return patch.copy()
    t = torch.from_numpy(patch).double().permute(2, 0, 1)[None]
    v = tF.interpolate(t, size=(side, side), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    return torch.clamp(torch.floor(v + 0.5), 0, 255).to(torch.uint8).numpy()


def ref_noise(pixels: np.ndarray, noise: np.ndarray) -> np.ndarray:
    v = torch.clamp(torch.from_numpy(pixels).double() / 255 + torch.from_numpy(noise), 0, 1) * 255
    return v.to(torch.uint8).numpy()  # truncation


def reference_cem(forward, hr_path, roi, block, draws, refine, tol, task, draw, seed=0, sigma=50.0):
    """CEM-SPEC §1–§5 with onnxlam's deviations (RGB paste, ROI blocks counted apart, ceil grid)."""
    x0, y0, R = roi
    I = np.asarray(Image.open(hr_path).convert("RGB"))
    if task == "sr":
        s = forward.scale
        I = I[:I.shape[0] // s * s, :I.shape[1] // s * s]
        x = np.asarray(Image.fromarray(I).resize((I.shape[1] // s, I.shape[0] // s), Image.BICUBIC))
    else:
        s = 1
        x = ref_noise(I, np.random.RandomState(seed).normal(0, sigma / 255, I.shape))
    b = block // s
    n_h, n_w = -(-x.shape[0] // b), -(-x.shape[1] // b)
    truth = I[y0:y0 + R, x0:x0 + R]

    def P(inp: np.ndarray) -> float:
        t = torch.from_numpy(inp).float().permute(2, 0, 1)[None] / 255
        y = forward(t)[0].permute(1, 2, 0)[y0:y0 + R, x0:x0 + R]
        return ref_psnr(ref_quantise(y).numpy(), truth)

    def intervene(i, j, d) -> float:
        content = ref_resize(d.patch, b)
        if d.noise is not None:
            content = ref_noise(content, d.noise)
        xi = x.copy()
        region = xi[i * b:(i + 1) * b, j * b:(j + 1) * b]
        region[...] = content[:region.shape[0], :region.shape[1]]
        return P(xi)

    O = P(x)
    C = np.zeros((n_h, n_w, draws))
    for i in range(n_h):
        for j in range(n_w):
            for k in range(draws):
                C[i, j, k] = intervene(i, j, draw("coarse", i, j, k))
    refined = np.zeros((n_h, n_w), bool)
    Fn = np.full((n_h, n_w, refine), np.nan)
    mu = np.zeros((n_h, n_w))
    for i in range(n_h):
        for j in range(n_w):
            refined[i, j] = refine > 0 and max(abs(O - c) for c in C[i, j]) >= tol
            if refined[i, j]:
                for m in range(refine):
                    Fn[i, j, m] = intervene(i, j, draw("fine", i, j, m))
                mu[i, j] = sum(Fn[i, j]) / refine
            else:
                mu[i, j] = sum(C[i, j]) / draws
    CE = O - mu
    CE[np.abs(CE) < tol] = 0
    px = s * b
    roi_blocks = np.zeros((n_h, n_w), bool)
    roi_blocks[y0 // px:(y0 + R) // px, x0 // px:(x0 + R) // px] = True  # gen:62-66: h//8 … (h+R)//8 − 1
    outside = CE[~roi_blocks]
    zeroed = np.where(roi_blocks, 0, CE)
    return {"O": O, "C": C, "F": Fn, "refined": refined, "CE": CE, "roi_blocks": roi_blocks,
            "positive": int((outside > 0).sum()), "negative": int((outside < 0).sum()),
            "neutral": int((outside == 0).sum()), "min": zeroed.min(), "max": zeroed.max(),
            "argmin": tuple(int(v) for v in np.unravel_index(zeroed.argmin(), CE.shape)),
            "argmax": tuple(int(v) for v in np.unravel_index(zeroed.argmax(), CE.shape)), "x": x, "I": I,
            "s": s, "b": b}


def reference_picture(ref, roi, bound):
    """§6 with matplotlib's seismic, the ROI box where the ROI is."""
    from PIL import ImageDraw

    x0, y0, R = roi
    M = np.clip(np.where(ref["roi_blocks"], bound, ref["CE"]), -bound, bound)
    V = np.sign(M) * np.abs(M) ** (1 / 1.2) / bound ** (1 / 1.2)
    colours = (255 * matplotlib.colormaps["seismic"](V / 2 + 0.5)).astype(np.uint8)[..., :3]
    px = ref["s"] * ref["b"]
    H, W = ref["I"].shape[:2]
    pic = np.asarray(Image.fromarray(colours).resize((colours.shape[1] * px, colours.shape[0] * px),
                                                     Image.NEAREST))[:H, :W].copy()
    pic[y0:y0 + R, x0:x0 + R] = (0, 255, 0)
    bg = np.asarray(Image.fromarray(ref["x"]).resize((W, H)), np.float64)
    out = Image.fromarray((0.9 * pic + 0.1 * bg).astype(np.uint8))
    ImageDraw.Draw(out).rectangle((x0, y0, x0 + R, y0 + R), outline=(0, 255, 0), width=2)
    return np.asarray(out)


# --- models, images and the supplied draws ---------------------------------------------------------

class OrtForward:
    """The ONNX file run by a bare onnxruntime session, one image at a time."""

    def __init__(self, path, scale):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one small image at a time: threads only contend
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name
        self.scale = scale

    def __call__(self, t):
        return torch.from_numpy(self.session.run(None, {self.name: t.numpy()})[0])


class TorchForward:
    def __init__(self, module, scale):
        self.module, self.scale = module, scale

    def __call__(self, t):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny convolutions: more threads only contend (10× slower on 2 cores)
        try:
            with torch.no_grad():
                return self.module(t)
        finally:
            torch.set_num_threads(threads)


class DnNet(nn.Module):
    """A ×1 denoiser: two 5×5 box filters (a reach of 4 px, so neighbouring blocks matter) plus a seeded
    residual of three 3×3 convolutions with ReLU (DnCNN-like)."""

    scale = 1

    def __init__(self):
        super().__init__()
        self.box = nn.Conv2d(3, 3, 5, padding=2, groups=3, bias=False)
        with torch.no_grad():
            self.box.weight.fill_(1 / 25)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return self.box(self.box(x)) + 0.1 * self.body(x)


def make_draws(block, sigma, side, seed=1234):
    """Patches cut from the bundled photos and DN noise, from the test's own generator, memoised so
    that both implementations see the same draw for the same (pass, row, col, k)."""
    from onnxlam.methods.cem.result import Draw

    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(DATA.glob("*.png"))]
    rng = np.random.default_rng(seed)
    memo = {}

    def draw(phase, i, j, k):
        key = (phase, i, j, k)
        if key not in memo:
            img = photos[rng.integers(len(photos))]
            top, left = rng.integers(img.shape[0] - block + 1), rng.integers(img.shape[1] - block + 1)
            noise = rng.normal(0, sigma / 255, (side, side, 3)) if sigma else None
            memo[key] = Draw(img[top:top + block, left:left + block].copy(), noise)
        return memo[key]

    return draw


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("cem_images")
    sr = d / "sr.png"   # 60×64 HR: LR 30×32 at ×2, a partial last column of 4-px blocks, not square
    Image.open(DATA / "chelsea.png").convert("RGB").crop((96, 56, 156, 120)).save(sr)
    dn = d / "dn.png"   # 40×48: a 5×6 grid of 8-px blocks
    Image.open(DATA / "astronaut.png").convert("RGB").crop((100, 40, 148, 80)).save(dn)
    return {"sr": sr, "dn": dn}


class SrNet(nn.Module):
    """×2: bilinear upsampling plus a seeded EDSR-like residual (tests/architectures.py), so that the
    output resembles the image and effects are tenths of a dB, as for trained networks."""

    scale = 2

    def __init__(self):
        super().__init__()
        self.body = architectures.build("edsr")

    def forward(self, x):
        return tF.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) + 0.3 * self.body(x)


@pytest.fixture(scope="module")
def sr_model(tmp_path_factory):
    net = SrNet().eval()
    d = tmp_path_factory.mktemp("cem_sr")
    return {"torch": net, "torchscript": architectures.export_onnx(net, d / "sr.onnx", "torchscript"), "dir": d}


@pytest.fixture(scope="module")
def dn_model(tmp_path_factory):
    torch.manual_seed(5)
    net = DnNet().eval()
    path = tmp_path_factory.mktemp("cem_dn") / "dn.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 16, 16),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
                      opset_version=17)
    return net, path


SR = dict(roi=(24, 20, 16), block=8, draws=2, refine=4, tol=0.01)
DN = dict(roi=(16, 8, 16), block=8, draws=2, refine=4, tol=0.01)


def run_onnxlam(path, image, cfg, task, draw, **kw):
    from onnxlam.methods.cem.runner import causal_effect_map

    x, y, r = cfg["roi"]
    return causal_effect_map(path, image, (x, y), r, block=cfg["block"], draws=cfg["draws"],
                             refine=cfg["refine"], tol=cfg["tol"], task=task, draw=draw, device="cpu", **kw)


def assert_identical(result, ref):
    assert abs(result.reference_psnr - ref["O"]) <= EXACT
    np.testing.assert_allclose(result.psnr_coarse, ref["C"], rtol=0, atol=EXACT)
    np.testing.assert_array_equal(result.refined, ref["refined"])
    np.testing.assert_allclose(result.psnr_fine, ref["F"], rtol=0, atol=EXACT)  # NaN where not refined
    np.testing.assert_array_equal(result.roi_mask, ref["roi_blocks"])
    np.testing.assert_allclose(np.where(ref["roi_blocks"], np.nan, ref["CE"]), result.effect, rtol=0, atol=EXACT)
    s = result.summary
    assert (s.positive, s.negative, s.neutral, s.roi_blocks) == (ref["positive"], ref["negative"], ref["neutral"],
                                                                 int(ref["roi_blocks"].sum()))
    assert abs(s.minimum - ref["min"]) <= EXACT and abs(s.maximum - ref["max"]) <= EXACT
    assert (s.argmin, s.argmax) == (ref["argmin"], ref["argmax"])
    np.testing.assert_array_equal(result.input_image, ref["x"])


# --- the tests -------------------------------------------------------------------------------------

@pytest.mark.integration
def test_sr_equals_reference_exactly(sr_model, images):
    path = sr_model["torchscript"]
    draw = make_draws(8, None, 4)
    result = run_onnxlam(path, images["sr"], SR, "sr", draw)
    ref = reference_cem(OrtForward(path, 2), images["sr"], SR["roi"], 8, 2, 4, 0.01, "sr", draw)
    assert result.grid == (8, 8) and result.block_input == 4 and result.batch_size > 1
    assert result.crop is not None and result.crop.exact  # a local network: the ROI's cone only
    assert 0 < result.refined.sum() < 64  # both branches of §3.3 are exercised
    assert result.summary.positive + result.summary.negative > 0
    assert_identical(result, ref)
    np.testing.assert_array_equal(result_picture(result), reference_picture(ref, SR["roi"], 2.5))


@pytest.mark.integration
def test_dn_equals_reference_exactly(dn_model, images):
    _, path = dn_model
    draw = make_draws(8, 50.0, 8)
    result = run_onnxlam(path, images["dn"], DN, "dn", draw, seed=7)
    ref = reference_cem(OrtForward(path, 1), images["dn"], DN["roi"], 8, 2, 4, 0.01, "dn", draw, seed=7)
    assert result.grid == (5, 6) and result.block_input == 8
    assert 0 < result.refined.sum() and result.summary.roi_blocks == 4
    assert_identical(result, ref)
    np.testing.assert_array_equal(result_picture(result), reference_picture(ref, DN["roi"], 1.0))


@pytest.mark.integration
@pytest.mark.parametrize("roi, own", [((27, 21, 16), (2, 4, 3, 5)),    # rows 2..3, cols 3..4: 4 blocks, not 9
                                      ((33, 45, 14), (5, 7, 4, 5))])   # a far edge short of a whole block
def test_unaligned_roi_owns_the_blocks_the_public_code_gives_it(sr_model, images, roi, own):
    """An ROI off the block grid: its own blocks are rows h//8 … (h+R)//8 − 1 and columns likewise
    (the public code's gen:62-66), the partly covered blocks keep their effects; everything else as
    the reference, and the picture too."""
    path = sr_model["torchscript"]
    cfg = dict(SR, roi=roi)
    draw = make_draws(8, None, 4)
    result = run_onnxlam(path, images["sr"], cfg, "sr", draw)
    ref = reference_cem(OrtForward(path, 2), images["sr"], roi, 8, 2, 4, 0.01, "sr", draw)
    r0, r1, c0, c1 = own
    expected = np.zeros(result.grid, bool)
    expected[r0:r1, c0:c1] = True
    np.testing.assert_array_equal(result.roi_mask, expected)
    assert result.summary.roi_blocks == expected.sum()
    assert_identical(result, ref)
    partly = np.zeros(result.grid, bool)
    x, y, r = roi
    partly[y // 8:-(-(y + r) // 8), x // 8:-(-(x + r) // 8)] = True
    assert np.isfinite(result.effect[partly & ~expected]).all()  # the blocks the ROI covers in part
    np.testing.assert_array_equal(result_picture(result), reference_picture(ref, roi, 2.5))


@pytest.mark.integration
@pytest.mark.parametrize("case", ["sr", "dn"])
def test_matches_pytorch_model(case, sr_model, images, dn_model):
    """The reference with the model run by PyTorch: PSNRs to float32 output precision (module docstring)."""
    if case == "sr":
        path, module, cfg, side, sigma = sr_model["torchscript"], sr_model["torch"], SR, 4, None
    else:
        (module, path), cfg, side, sigma = dn_model, DN, 8, 50.0
    draw = make_draws(8, sigma, side, seed=99)
    result = run_onnxlam(path, images[case], cfg, case, draw)
    ref = reference_cem(TorchForward(module, 2 if case == "sr" else 1), images[case], cfg["roi"], 8, 2, 4, 0.01,
                        case, draw)
    assert abs(result.reference_psnr - ref["O"]) <= FLIP_TOL
    diff = np.abs(result.psnr_coarse - ref["C"])
    assert diff.max() <= FLIP_TOL
    print(f"{case}: {(diff <= EXACT).mean():.1%} of {diff.size} coarse PSNRs equal to 1e-12 dB, max |Δ| {diff.max():.2e} dB")
    assert (diff <= EXACT).mean() >= 0.8, f"only {(diff <= EXACT).mean():.0%} of interventions agree exactly"
    # the refinement sets may differ only where a flip can move max_k |O − C| across tol
    margin = np.abs(np.max(np.abs(ref["O"] - ref["C"]), axis=-1) - 0.01)
    assert np.all((result.refined == ref["refined"]) | (margin <= 2 * FLIP_TOL))


@pytest.mark.integration
def test_seeded_bank_draws_follow_the_documented_stream(dn_model, images, tmp_path):
    """The default draws: RandomState(seed), DN input noise first, then per intervention (coarse row-major,
    k inner, then fine) a bank index and the patch's noise; the bank cut from --patches at seeded positions."""
    from onnxlam.methods.cem.bank import cut_bank
    from onnxlam.methods.cem.runner import causal_effect_map

    _, path = dn_model
    folder = tmp_path / "bank"
    folder.mkdir()
    Image.open(DATA / "chelsea.png").convert("RGB").crop((0, 0, 100, 90)).save(folder / "a.png")
    (folder / "notes.txt").write_text("not an image")
    x, y, r = DN["roi"]
    kw = dict(block=8, draws=2, refine=3, tol=0.01, task="dn", patches=folder, bank_size=50, device="cpu")
    a = causal_effect_map(path, images["dn"], (x, y), r, seed=3, **kw)
    b = causal_effect_map(path, images["dn"], (x, y), r, seed=3, batch_size=1, **kw)
    c = causal_effect_map(path, images["dn"], (x, y), r, seed=4, **kw)
    np.testing.assert_array_equal(a.psnr_coarse, b.psnr_coarse)  # reproducible, whatever the batch
    np.testing.assert_array_equal(a.effect, b.effect)
    assert not np.array_equal(a.psnr_coarse, c.psnr_coarse)
    assert a.params.bank.to_json() == {"source": str(folder), "size": 50, "seed": 3, "images": 1}
    source = np.asarray(Image.open(folder / "a.png").convert("RGB"))
    bank = cut_bank([source], 50, 8, 3)
    windows = np.lib.stride_tricks.sliding_window_view(source, (8, 8, 3))[..., 0, :, :, :]
    assert all((windows == p).all(axis=(-3, -2, -1)).any() for p in bank)  # every patch is a crop of the source
    rng = np.random.RandomState(3)
    rng.normal(0, 50 / 255, (40, 48, 3))  # the input noise

    class Stream:
        def __call__(self, phase, i, j, k):
            from onnxlam.methods.cem.result import Draw

            index = rng.randint(50)
            return Draw(bank[index], rng.normal(0, 50 / 255, (8, 8, 3)))

    ref = reference_cem(OrtForward(path, 1), images["dn"], DN["roi"], 8, 2, 3, 0.01, "dn", Stream(), seed=3)
    assert_identical(a, ref)


@pytest.mark.integration
@pytest.mark.parametrize("case", ["sr", "dn"])
def test_crop_changes_nothing_beyond_the_quantisation(case, sr_model, dn_model, images):
    """Running only the ROI's receptive field (and skipping blocks outside it) gives what running every
    intervention on the whole input gives, within the output's 8-bit quantisation: the cropped pass
    differs from the whole one by float rounding (~1e-6), which re-rounds an output value only near a
    half-integer (module docstring). So PSNRs agree within FLIP_TOL (most to float64 precision), the
    refinement sets wherever max_k |O − C| is not within a flip of tol; with fewer forward passes."""
    path, cfg, side, sigma = (sr_model["torchscript"], SR, 4, None) if case == "sr" else (dn_model[1], DN, 8, 50.0)
    draw = make_draws(8, sigma, side, seed=5)
    cropped = run_onnxlam(path, images[case], cfg, case, draw)
    whole = run_onnxlam(path, images[case], cfg, case, draw, crop=False)
    assert cropped.crop is not None and whole.crop is None
    assert cropped.forward_passes < whole.forward_passes
    assert abs(cropped.reference_psnr - whole.reference_psnr) <= FLIP_TOL
    diff = np.abs(cropped.psnr_coarse - whole.psnr_coarse)
    assert diff.max() <= FLIP_TOL and (diff <= EXACT).mean() >= 0.8, diff.max()
    margin = np.abs(np.max(np.abs(whole.reference_psnr - whole.psnr_coarse), axis=-1) - cfg["tol"])
    assert np.all((cropped.refined == whole.refined) | (margin <= 2 * FLIP_TOL))
    both = cropped.refined & whole.refined
    np.testing.assert_allclose(cropped.psnr_fine[both], whole.psnr_fine[both], rtol=0, atol=FLIP_TOL)
    finite = np.isfinite(whole.effect)
    np.testing.assert_array_equal(np.isfinite(cropped.effect), finite)
    # tol-zeroing may flip with a block whose |CE| lies within a flip of tol; elsewhere within two flips
    near = np.abs(np.abs(np.where(finite, whole.effect, 0)) - cfg["tol"]) <= 2 * FLIP_TOL
    close = np.abs(cropped.effect - whole.effect) <= 2 * FLIP_TOL
    assert np.all(close[finite] | near[finite])


@pytest.mark.integration
def test_memory_limit_bounds_the_batch(sr_model, images, monkeypatch):
    """--max-memory sizes the batch from the measured forward memory; the numbers do not depend on it."""
    from onnxlam.engine import memory

    draw = make_draws(8, None, 4, seed=8)
    roomy = run_onnxlam(sr_model["torchscript"], images["sr"], SR, "sr", draw, max_memory="64G")
    mem = roomy.memory
    assert roomy.batch_size == 16 and mem.per_image > 0 and mem.limit == 64 << 30
    # The resident set moves by megabytes between runs while this model's pass needs about one, so a
    # limit taken from one run's measurement does not pin the next run's batch. The meter is driven
    # instead: 500 MiB in use, 10 MiB per pass, and a limit that holds three and a half passes.
    base, per = 500 << 20, 10 << 20
    monkeypatch.setattr(memory, "in_use", lambda device: base)
    monkeypatch.setattr(memory.PeakMeter, "__exit__", lambda self, *exc: setattr(self, "peak", base + per))
    limit = int(base + memory.margin(3.5 * per))
    tight = run_onnxlam(sr_model["torchscript"], images["sr"], SR, "sr", draw, max_memory=limit)
    assert tight.memory.in_use == base and per < tight.memory.per_image < 1.01 * per
    assert tight.batch_size == 3 and tight.memory.limit == limit
    np.testing.assert_array_equal(tight.psnr_coarse, roomy.psnr_coarse)
    np.testing.assert_array_equal(tight.effect, roomy.effect)
    # below one pass: still one at a time, with a warning
    alone = run_onnxlam(sr_model["torchscript"], images["sr"], SR, "sr", draw, max_memory=base + (1 << 20))
    assert alone.batch_size == 1 and any("one at a time" in w for w in alone.warnings)
    np.testing.assert_array_equal(alone.effect, roomy.effect)


def test_plan_batch():
    from onnxlam.engine.memory import margin
    from onnxlam.engine.planner import plan_batch

    assert plan_batch(None, 100, 1 << 30, 16) == 1            # nothing measured: one at a time
    assert plan_batch(10 << 20, 0, 1 << 40, 16) == 16          # capped
    per, base = 10 << 20, 100 << 20
    budget = base + margin(5 * per)
    assert plan_batch(per, base, budget, 16) == 5
    assert plan_batch(per, base, base, 16) == 1                # not even one fits: still one


@pytest.mark.integration
def test_fixed_batch_model_runs_one_at_a_time(images, tmp_path):
    import onnx
    from tests.onnx_models import tiny_sr

    path = tmp_path / "fixed.onnx"
    model = tiny_sr(2, batch=1)  # batch 1 fixed in the file, dynamic size
    model.ir_version = 8  # what every onnxruntime loads (the bare session below does not lower it)
    onnx.save(model, path)
    draw = make_draws(8, None, 4)
    cfg = dict(SR, refine=2)
    result = run_onnxlam(path, images["sr"], cfg, "sr", draw)
    assert result.batch_size == 1
    assert_identical(result, reference_cem(OrtForward(path, 2), images["sr"], cfg["roi"], 8, 2, 2, 0.01, "sr", draw))


def test_pure_functions_on_reference_statistics():
    """Given the same C and F, refinement, CE, counts and range are the spec's (hand-computed case)."""
    from onnxlam.methods.cem.effects import block_means, causal_effect, refinement_set, roi_mask, summarise
    from onnxlam.methods.cem.result import Roi

    O = 30.0
    C = np.array([[[30.0, 30.005], [29.0, 29.5]], [[30.2, 30.3], [31.0, 30.0]]])
    refined = refinement_set(O, C, 0.01)
    np.testing.assert_array_equal(refined, [[False, True], [True, True]])
    F = np.full((2, 2, 2), np.nan)
    F[0, 1], F[1, 0], F[1, 1] = (29.8, 29.6), (30.004, 29.998), (30.5, 30.5)
    mu = block_means(C, F, refined)
    np.testing.assert_allclose(mu, [[30.0025, 29.7], [30.001, 30.5]])
    ce = causal_effect(O, mu, 0.01)
    np.testing.assert_allclose(ce, [[0, 0.3], [0, -0.5]], atol=1e-12)
    mask = roi_mask((2, 2), Roi(0, 0, 8), 4, 2)
    np.testing.assert_array_equal(mask, [[True, False], [False, False]])
    s = summarise(ce, mask)
    assert (s.positive, s.negative, s.neutral, s.roi_blocks) == (1, 1, 1, 1)
    assert s.argmax == (0, 1) and s.argmin == (1, 1) and abs(s.effect_range - 0.8) < 1e-12


@pytest.mark.integration
def test_cli_end_to_end(dn_model, images, tmp_path):
    _, path = dn_model
    out = tmp_path / "out"
    r = run_cli("cem", path, images["dn"], "--roi", 16, 8, "--size", 16, "--draws", 2, "--refine", 2,
                "--bank-size", 100, "--seed", 1, "--out", out, "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert json.loads((out / "result.json").read_text()) == data
    assert {p.name for p in out.iterdir()} == {"effect.npy", "psnr_coarse.npy", "psnr_fine.npy", "refined.npy",
                                               "result.json", "cem.png", "panel.png"}
    effect = np.load(out / "effect.npy")
    assert effect.shape == (5, 6) and np.isnan(effect).sum() == 4
    c = data["counts"]
    assert c["positive"] + c["negative"] + c["neutral"] + c["roi_blocks"] == 30
    assert data["parameters"]["task"] == "dn" and data["parameters"]["bank"]["size"] == 100
    assert data["effect"]["range"] == pytest.approx(data["effect"]["max"] - data["effect"]["min"])
    assert Image.open(out / "cem.png").size == (48, 40)
    # the panel reads at this small size: both pictures enlarged ×7 (40 px → 280), each caption
    # (wrapped) under its own picture, never across the gap into the other's
    panel = np.asarray(Image.open(out / "panel.png").convert("RGB"))
    assert panel.shape[0] > 280 and panel.shape[1] == 2 * 48 * 7 + 4
    strip = panel[280:]
    ink = np.flatnonzero((strip.min(axis=2) < 128).any(axis=0))
    assert ink.size and not ((ink >= 48 * 7) & (ink < 48 * 7 + 4)).any()
    assert (strip[:, :48 * 7].min(axis=2) < 128).any() and (strip[:, 48 * 7 + 4:].min(axis=2) < 128).any()


@pytest.mark.integration
@pytest.mark.parametrize("args, message", [
    (["--roi", 40, 8], "not inside"),
    (["--roi", 16, 8, "--task", "dr"], "dr needs"),
])
def test_cli_bad_input(dn_model, images, tmp_path, args, message):
    _, path = dn_model
    out = tmp_path / "bad"
    r = run_cli("cem", path, images["dn"], "--size", 16, "--out", out, *args)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not out.exists() and not list(tmp_path.glob(".bad*"))


@pytest.mark.integration
@pytest.mark.parametrize("options, message", [
    (dict(block=0), "--block must be at least 1"),
    (dict(draws=0), "--draws"),
    (dict(refine=-1), "--refine"),
    (dict(tol=-1.0), "--tol"),
    (dict(bank_size=0), "--bank-size"),
    (dict(task="sr"), "needs a super-resolution"),
    (dict(patches="/nonexistent-folder"), "not a folder"),
])
def test_bad_parameters(dn_model, images, options, message):
    from onnxlam.core.errors import InputError
    from onnxlam.methods.cem.runner import causal_effect_map

    with pytest.raises(InputError, match=message):
        causal_effect_map(dn_model[1], images["dn"], (16, 8), 16, device="cpu", **options)


@pytest.mark.integration
def test_bad_patch_folder(dn_model, images, tmp_path):
    from onnxlam.core.errors import InputError
    from onnxlam.methods.cem.runner import causal_effect_map

    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="no images"):
        causal_effect_map(dn_model[1], images["dn"], (16, 8), 16, device="cpu", patches=tmp_path)


@pytest.mark.integration
def test_block_smaller_than_the_scale(sr_model, images):
    from onnxlam.core.errors import InputError
    from onnxlam.methods.cem.runner import causal_effect_map

    with pytest.raises(InputError, match="smaller than the scale"):
        causal_effect_map(sr_model["torchscript"], images["sr"], (24, 20), 16, device="cpu", block=1)


@pytest.mark.integration
def test_runner_options_and_keywords(dn_model, images):
    """`run` takes a CemOptions and CemOptions' run options as keywords (the defaults are CemOptions');
    the runner over a loaded Model gives the same numbers as over the path; the JSON's keys are fixed."""
    from onnxlam.core.errors import InputError
    from onnxlam.engine.model import Model
    from onnxlam.methods.cem.options import CemOptions
    from onnxlam.methods.cem.runner import CemRunner

    path = dn_model[1]
    runner = CemRunner(path, device="cpu")
    by_keywords = runner.run(images["dn"], (16, 8), size=16, draws=2, refine=2, bank_size=60, seed=1)
    options = CemOptions(size=16, draws=2, refine=2, bank_size=60, seed=1)
    loaded = CemRunner(Model(path, check_ops=False, cache=False, device="cpu"))
    by_options = loaded.run(images["dn"], (16, 8), options)
    overridden = loaded.run(images["dn"], (16, 8), CemOptions(size=16, draws=5), draws=2, refine=2, bank_size=60,
                            seed=1)
    for r in (by_options, overridden):
        np.testing.assert_array_equal(r.effect, by_keywords.effect)
        np.testing.assert_array_equal(r.psnr_fine, by_keywords.psnr_fine)
    data = by_keywords.to_json()
    assert set(data) == {"method", "reference_psnr", "counts", "effect", "roi", "grid", "block_input",
                         "refined_blocks", "parameters", "scale", "lr_size", "sr_size", "model", "model_sha256",
                         "image", "provider", "seconds", "batch_size", "forward_passes", "memory", "crop",
                         "warnings", "onnxlam", "options"}
    assert data["method"] == "cem" and data["parameters"]["draws"] == 2 and "samples" not in data["parameters"]
    assert data["options"]["draws"] == 2 and data["options"]["device"] == "cpu"
    json.dumps(data)
    with pytest.raises(InputError, match="'samples'"):
        runner.run(images["dn"], (16, 8), samples=2)
    with pytest.raises(InputError, match="options of the model"):
        runner.run(images["dn"], (16, 8), device="cpu")


@pytest.mark.integration
def test_registered_method(dn_model, images, tmp_path):
    """CEM through the registry: one result per window (the window's side the ROI's), its folder, row and facts."""
    from onnxlam.core.errors import InputError
    from onnxlam.lam.result import Window
    from onnxlam.methods.registry import method

    m = method("cem")
    assert m.Options.__name__ == "CemOptions" and not m.gradients and m.report_names[2] == "draws"
    options = m.options(draws=2, refine=2, bank_size=60, seed=1, device="cpu")
    results = m.attribute(m.open(dn_model[1], options), images["dn"], [Window(16, 8, 16), Window(0, 0, 8)], options)
    assert [r.window for r in results] == [Window(16, 8, 16), Window(0, 0, 8)]
    out = m.write(results[0], tmp_path / "one")
    assert {p.name for p in out.iterdir()} == set(m.files)
    data = json.loads((out / "result.json").read_text())
    s = results[0].summary
    assert m.row(data) == {"positive": s.positive, "negative": s.negative, "neutral": s.neutral,
                           "effect_range": pytest.approx(s.effect_range), "reference_psnr":
                           pytest.approx(results[0].reference_psnr)}
    facts = dict(m.facts(results[0]))
    assert "draws 2" in facts["parameters"] and m.picture(results[0]).ndim == 3
    with pytest.raises(InputError, match="--input"):
        m.check(m.options(inputs={"noise": 1.0}))
    with pytest.raises(InputError, match="--lr"):
        m.check(type("Report", (), {"lr": True, "inputs": (), "patches": None})())
