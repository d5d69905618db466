"""onnxlam (onnxruntime + onnx-ad gradient graphs) against the independent PyTorch reference.

For every test architecture x exporter (TorchScript with dynamic axes; dynamo with the default
static shapes, batch 1) x path (blur, linear, gaussian-linear), ``onnxlam.analyze`` must give the
same LAM as ``torch_reference.reference_lam`` run on the original PyTorch module:

- the abs-normalised map M to 1e-4 (max abs difference),
- the diffusion index to 0.01,
- the signed attribution A to 1e-4 of max|A| (the float32 vs float64 noise of these models is
  ~1e-6 of max|A|, measured by running the reference with the model in float64),
- the objective difference D(F(x)) - D(F(baseline)) to 1e-4 relative.

And ``onnxlam.engine.program.build_program(...).objective_and_gradient`` must equal
``torch.autograd.grad`` of the reference detector (rel. err <= 1e-4), per batch element.

The blur cases give the engine an HR image (lr=False, prepared per spec §1 by the engine and by
the reference independently); the linear / gaussian-linear cases give it the LR image (lr=True).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests import architectures as arch
from tests import torch_reference as ref

import onnxlam  # a broken import must fail the suite, not skip it
from onnxlam.engine import program as lam_program  # noqa: E402
from onnxlam.graph.detector import window_mask as engine_window_mask  # noqa: E402

pytestmark = pytest.mark.integration

LR = arch.LR_SIZE

# HR crop origin (row, col) in astronaut.png and the window (x, y, size) in SR pixels, per model
SETUP = {
    "edsr": dict(origin=(40, 90), window=(10, 12, 16)),
    "rcan": dict(origin=(20, 120), window=(6, 9, 16)),
    "swin": dict(origin=(60, 100), window=(12, 8, 16)),
    "rrdb": dict(origin=(30, 80), window=(26, 20, 16)),
    "fsrcnn": dict(origin=(50, 95), window=(17, 21, 16)),
}

# Cases that run with other parameters than fold=8, sigma=1.2, kernel_size=9.
# fold=None means the engine default (50), passed to the reference explicitly.
SPECIAL = {
    ("edsr", "torchscript", "blur"): dict(fold=None),
    ("swin", "dynamo", "blur"): dict(fold=None),
    ("rcan", "dynamo", "gaussian-linear"): dict(sigma=2.0, kernel_size=7),
    ("fsrcnn", "torchscript", "blur"): dict(sigma=0.8, kernel_size=5, fold=12),
}

# RRDB-like (nearest upsampling + convs) maps the all-zero image, the first point of the linear
# path, to an output that is constant in the interior: dh + dw there is 0 up to float rounding
# (1e-15), so the detector's gradient direction at that step is rounding noise. Running the
# reference itself in float64 instead of float32 moves its M by 1.5e-2, so no implementation can
# be held to 1e-4 there; the case is skipped (the two other paths of RRDB are tested).
ILL_CONDITIONED = {("rrdb", "linear")}


def _hr_crop(img: np.ndarray, name: str) -> np.ndarray:
    """An HR crop that is NOT a multiple of the scale (so §1's crop matters) and maps to LR x LR."""
    s = arch.scale_of(name)
    r, c = SETUP[name]["origin"]
    return np.ascontiguousarray(img[r : r + LR * s + 1, c : c + LR * s + (s - 1)])


def _cases():
    for name in arch.ARCHITECTURES:
        for exporter in arch.EXPORTERS:
            for path in ref.PATHS:
                marks = []
                if (name, path) in ILL_CONDITIONED:
                    marks.append(pytest.mark.skip(reason="ill-conditioned: see ILL_CONDITIONED"))
                yield pytest.param(name, exporter, path, marks=marks, id=f"{name}-{exporter}-{path}")


@pytest.mark.parametrize("name,exporter,path", list(_cases()))
def test_analyze_matches_torch_reference(zoo, astronaut, tmp_path, name, exporter, path):
    model = zoo.torch(name)
    onnx_path = zoo.onnx(name, exporter)
    s = arch.scale_of(name)
    x, y, size = SETUP[name]["window"]
    params = dict(sigma=1.2, kernel_size=9, fold=8)
    params.update(SPECIAL.get((name, exporter, path), {}))
    engine_fold = params["fold"]
    ref_fold = 50 if engine_fold is None else engine_fold

    hr = _hr_crop(astronaut, name)
    lr_ref = ref.prepare_lr(hr, s)
    assert lr_ref.shape == (3, LR, LR)

    kwargs = dict(window=(x, y), size=size, path=path, sigma=params["sigma"], kernel_size=params["kernel_size"])
    if engine_fold is not None:
        kwargs["fold"] = engine_fold
    if path == "blur":  # HR image: the engine prepares the LR input itself (spec §1)
        if (name, exporter) == ("edsr", "torchscript"):
            image = tmp_path / "hr.png"  # also exercise a file path as the image
            Image.fromarray(hr).save(image)
        else:
            image = hr
        res = onnxlam.analyze(onnx_path, image, lr=False, **kwargs)
    elif path == "linear":  # LR image as uint8 H x W x C
        lr_u8 = np.round(np.moveaxis(lr_ref, 0, 2) * 255.0).astype(np.uint8)
        res = onnxlam.analyze(str(onnx_path), lr_u8, lr=True, **kwargs)
    else:  # LR image as float32 H x W x C in [0, 1]
        res = onnxlam.analyze(onnx_path, np.ascontiguousarray(np.moveaxis(lr_ref, 0, 2)), lr=True, **kwargs)

    r = ref.reference_lam(model, lr_ref, x, y, size, path, params["sigma"], ref_fold, params["kernel_size"])

    # the input and the output the engine worked with
    assert res.scale == s
    assert tuple(res.lr_size) == (LR, LR)
    np.testing.assert_allclose(res.lr_image, lr_ref, rtol=0, atol=1e-6)
    assert res.sr_image.shape == r["sr"].shape
    np.testing.assert_allclose(res.sr_image, r["sr"], rtol=0, atol=1e-4)
    assert (res.path, res.fold, res.kernel_size) == (path, ref_fold, params["kernel_size"])
    assert res.sigma == pytest.approx(params["sigma"])
    assert (res.window.x, res.window.y, res.window.size) == (x, y, size)
    assert res.nan_gradients == 0

    # the LAM itself
    A_e = np.asarray(res.gradient, np.float64)
    M_e = np.asarray(res.attribution, np.float64)
    assert A_e.shape == r["A"].shape and M_e.shape == r["M"].shape == (LR, LR)
    dM = float(np.abs(M_e - r["M"]).max())
    dDI = abs(res.di - r["di"])
    dA = float(np.abs(A_e - r["A"]).max() / np.abs(r["A"]).max())
    print(f"\n{name}-{exporter}-{path}: max|dM|={dM:.2e} |dDI|={dDI:.2e} (DI={r['di']:.3f}) dA/max|A|={dA:.2e}")
    assert dM <= 1e-4, f"max |M_engine - M_ref| = {dM:.3g}"
    assert dDI <= 0.01, f"DI engine {res.di:.4f} vs reference {r['di']:.4f}"
    assert res.gini == pytest.approx(r["gini"], abs=1e-4)
    assert res.di == pytest.approx((1.0 - res.gini) * 100.0, abs=1e-6)
    assert dA <= 1e-4, f"max |A_engine - A_ref| / max |A_ref| = {dA:.3g}"

    # completeness numbers
    delta = r["objective_delta"]
    assert res.completeness.objective_delta == pytest.approx(delta, rel=1e-4, abs=1e-5)
    scale_A = float(np.abs(r["A"]).sum())
    assert res.completeness.attribution_sum == pytest.approx(r["attribution_sum"], abs=1e-4 * scale_A)
    assert res.completeness.attribution_sum == pytest.approx(float(A_e.sum()), abs=1e-5 * scale_A)


@pytest.mark.parametrize("exporter", arch.EXPORTERS)
@pytest.mark.parametrize("name", list(arch.ARCHITECTURES))
def test_gradient_program_matches_autograd(zoo, astronaut, name, exporter):
    model = zoo.torch(name)
    s = arch.scale_of(name)
    H = W = LR * s
    lr = ref.prepare_lr(_hr_crop(astronaut, name), s)
    blurred = ref.correlate(lr, ref.gaussian_kernel(1.2, 9)).numpy().astype(np.float32)
    x, y, size = SETUP[name]["window"]
    masks = [engine_window_mask(H, W, x, y, size), engine_window_mask(H, W, 3, H - 1 - 11, 11)]
    for m, (mx, my, ms) in zip(masks, [(x, y, size), (3, H - 1 - 11, 11)]):
        assert m.shape == (H - 1, W - 1) and m.dtype == np.float32
        np.testing.assert_array_equal(m, ref.window_mask(H, W, mx, my, ms))

    if exporter == "dynamo":  # static batch 1
        xb = lr[None]
        mb = masks[0][None, None]
    else:  # dynamic batch: different images and windows per element
        xb = np.stack([lr, blurred])
        mb = np.stack(masks)[:, None]
    prog = lam_program.build_program(zoo.onnx(name, exporter), batch=xb.shape[0], height=LR, width=LR)
    obj, grad = prog.objective_and_gradient(np.ascontiguousarray(xb, np.float32), np.ascontiguousarray(mb, np.float32))
    obj = np.asarray(obj)
    grad = np.asarray(grad)
    assert obj.shape == (xb.shape[0], 1) and grad.shape == (xb.shape[0], 1) + xb.shape[1:]
    obj, grad = obj[:, 0], grad[:, 0]
    assert np.isfinite(grad).all()

    obj_ref, grad_ref = ref.objective_and_gradient(model, xb, mb)
    np.testing.assert_allclose(obj, obj_ref, rtol=1e-5)
    for b in range(xb.shape[0]):
        rel = float(np.abs(grad[b] - grad_ref[b]).max() / np.abs(grad_ref[b]).max())
        print(f"\n{name}-{exporter} batch element {b}: gradient rel. err {rel:.2e}")
        assert rel <= 1e-4, f"element {b}: rel. err {rel:.3g}"


@pytest.mark.parametrize("name, exporter", [("edsr", "torchscript"), ("swin", "torchscript")])
def test_several_windows_share_one_reverse_pass(zoo, astronaut, name, exporter):
    """A program with K = 3 windows: each seed column equals autograd for that window alone."""
    model = zoo.torch(name)
    s = arch.scale_of(name)
    lr = np.ascontiguousarray(ref.prepare_lr(_hr_crop(astronaut, name), s), np.float32)
    H = W = LR * s
    windows = [(2, 3, 16), (H - 18, 5, 16), (7, W - 12, 8)]
    masks = np.stack([ref.window_mask(H, W, x, y, s) for x, y, s in windows])
    xb = np.stack([lr, np.clip(lr[:, ::-1, :] * 0.9, 0, 1)]).astype(np.float32)
    prog = lam_program.build_program(zoo.onnx(name, exporter), batch=2, height=LR, width=LR, windows=3)
    obj, grad = prog.objective_and_gradient(xb, np.broadcast_to(masks, (2,) + masks.shape))
    assert obj.shape == (2, 3) and grad.shape == (2, 3) + lr.shape
    for k in range(3):
        obj_ref, grad_ref = ref.objective_and_gradient(model, xb, np.broadcast_to(masks[k], (2, 1) + masks.shape[1:]))
        np.testing.assert_allclose(obj[:, k], obj_ref, rtol=1e-5)
        for b in range(2):
            rel = float(np.abs(grad[b, k] - grad_ref[b]).max() / np.abs(grad_ref[b]).max())
            assert rel <= 1e-4, f"window {k}, element {b}: rel. err {rel:.3g}"


def test_weights_in_external_data_are_part_of_the_model(zoo, astronaut, tmp_path):
    """Two models with the same graph and different weights, every tensor in external data (the
    .onnx files are then byte-identical): each must be analysed with its own weights."""
    import onnx

    lr = ref.prepare_lr(_hr_crop(astronaut, "edsr"), 2)
    x, y, size = SETUP["edsr"]["window"]
    shas = []
    for seed in (101, 102):
        model = arch.build("edsr", seed=seed)
        d = tmp_path / str(seed)
        d.mkdir()
        tmp = arch.export_onnx(model, d / "inline.onnx", "torchscript")
        path = d / "model.onnx"
        onnx.save(onnx.load(str(tmp)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=0)
        tmp.unlink()
        res = onnxlam.analyze(path, np.ascontiguousarray(np.moveaxis(lr, 0, 2)), window=(x, y), size=size,
                              lr=True, fold=8)
        r = ref.reference_lam(model, lr, x, y, size, "blur", 1.2, 8, 9)
        np.testing.assert_allclose(res.sr_image, r["sr"], rtol=0, atol=1e-4)
        dM = float(np.abs(res.attribution - r["M"]).max())
        assert dM <= 1e-4, f"seed {seed}: max |M_engine - M_ref| = {dM:.3g}"
        shas.append(res.model_sha256)
    assert shas[0] != shas[1], "different weights, same model_sha256"
