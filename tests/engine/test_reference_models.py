"""The op-coverage reference families (IMDN-like, non-local) against the independent PyTorch reference.

``tests/test_parity.py`` runs every path on the five original families; the two families added for
op coverage (``architectures.NEW_FAMILIES``) are held here to the same standard on the LAM path:

- ``onnxlam.engine.program.build_program(...).objective_and_gradient`` equals ``torch.autograd.grad`` of the
  reference detector (rel. err <= 1e-4) per batch element: batch 2 (different images and windows)
  for the TorchScript export with dynamic axes, batch 1 for the static dynamo export;
- ``onnxlam.analyze`` on an HR crop equals ``torch_reference.reference_lam`` for the blur path at
  fold 8: M to 1e-4, DI to 0.01, A to 1e-4 of max|A|, the objective difference to 1e-4 relative.

What the families add: channel split (``Split``), ``Concat``, a standard deviation over H x W
(``ReduceMean``, ``Sub``, ``Pow``), ``Sigmoid`` gating and ``DepthToSpace`` (IMDN-like); runtime
shapes (``Shape``, ``Gather``, ``Unsqueeze``, ``Concat``, ``Reshape`` to B x C x HW), ``Transpose``,
batched ``MatMul``, ``Softmax`` over HW and ``Resize`` (non-local).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests import architectures as arch
from tests import torch_reference as ref

import onnxlam  # a broken import must fail the suite, not skip it
from onnxlam.engine import program as lam_program  # noqa: E402

pytestmark = pytest.mark.integration

LR = arch.LR_SIZE

# HR crop origin (row, col) in astronaut.png and the window (x, y, size) in SR pixels, per family
SETUP = {
    "imdn": dict(origin=(45, 85), window=(9, 14, 16)),
    "nonlocal": dict(origin=(25, 110), window=(13, 7, 16)),
}
# Ops each family's exports must contain (what the family is in the reference set for)
OPS = {
    "imdn": {"Split", "Concat", "ReduceMean", "Pow", "Sigmoid", "DepthToSpace"},
    "nonlocal": {"Reshape", "Transpose", "MatMul", "Softmax", "Resize"},
}
FOLD = 8

CASES = [pytest.param(name, exporter, id=f"{name}-{exporter}") for name in arch.NEW_FAMILIES
         for exporter in arch.EXPORTERS]


def _hr_crop(img: np.ndarray, name: str) -> np.ndarray:
    """An HR crop that is NOT a multiple of the scale (so spec §1's crop matters) and maps to LR x LR."""
    s = arch.scale_of(name)
    r, c = SETUP[name]["origin"]
    return np.ascontiguousarray(img[r : r + LR * s + 1, c : c + LR * s + (s - 1)])


def test_new_families_are_reference_families_only():
    """test_parity.py's ARCHITECTURES stays the original five; the new ones are reference families."""
    assert set(arch.NEW_FAMILIES) <= set(arch.REFERENCE_ARCHITECTURES)
    assert not set(arch.NEW_FAMILIES) & set(arch.ARCHITECTURES)
    for name in arch.NEW_FAMILIES:
        assert arch.scale_of(name) == 2


@pytest.mark.parametrize("name,exporter", CASES)
def test_exports_contain_the_family_ops(zoo, name, exporter):
    ops = {n.op_type for n in onnx.load(str(zoo.onnx(name, exporter))).graph.node}
    assert OPS[name] <= ops, f"missing {sorted(OPS[name] - ops)}"


@pytest.mark.parametrize("name,exporter", CASES)
def test_gradient_program_matches_autograd(zoo, astronaut, name, exporter):
    model = zoo.torch(name)
    s = arch.scale_of(name)
    H = W = LR * s
    lr = ref.prepare_lr(_hr_crop(astronaut, name), s)
    blurred = ref.correlate(lr, ref.gaussian_kernel(1.2, 9)).numpy().astype(np.float32)
    x, y, size = SETUP[name]["window"]
    masks = [ref.window_mask(H, W, x, y, size), ref.window_mask(H, W, 3, H - 1 - 11, 11)]

    if exporter == "dynamo":  # static batch 1
        xb, mb = lr[None], masks[0][None, None]
    else:  # dynamic batch: different images and windows per element
        xb, mb = np.stack([lr, blurred]), np.stack(masks)[:, None]
    prog = lam_program.build_program(zoo.onnx(name, exporter), batch=xb.shape[0], height=LR, width=LR, cache=False)
    assert prog.fd_error is not None and prog.fd_error <= lam_program.FD_TOLERANCE
    assert prog.scale == s
    obj, grad = prog.objective_and_gradient(np.ascontiguousarray(xb, np.float32), np.ascontiguousarray(mb, np.float32))
    obj, grad = np.asarray(obj), np.asarray(grad)
    assert obj.shape == (xb.shape[0], 1) and grad.shape == (xb.shape[0], 1) + xb.shape[1:]
    obj, grad = obj[:, 0], grad[:, 0]
    assert np.isfinite(grad).all()

    obj_ref, grad_ref = ref.objective_and_gradient(model, xb, mb)
    np.testing.assert_allclose(obj, obj_ref, rtol=1e-5)
    for b in range(xb.shape[0]):
        rel = float(np.abs(grad[b] - grad_ref[b]).max() / np.abs(grad_ref[b]).max())
        print(f"\n{name}-{exporter} batch element {b}: gradient rel. err {rel:.2e}")
        assert rel <= 1e-4, f"element {b}: rel. err {rel:.3g}"


@pytest.mark.parametrize("name,exporter", CASES)
def test_analyze_matches_torch_reference(zoo, astronaut, name, exporter):
    model = zoo.torch(name)
    s = arch.scale_of(name)
    x, y, size = SETUP[name]["window"]
    hr = _hr_crop(astronaut, name)
    lr_ref = ref.prepare_lr(hr, s)
    assert lr_ref.shape == (3, LR, LR)

    res = onnxlam.analyze(zoo.onnx(name, exporter), hr, window=(x, y), size=size, lr=False, path="blur",
                          sigma=1.2, kernel_size=9, fold=FOLD)
    r = ref.reference_lam(model, lr_ref, x, y, size, "blur", 1.2, FOLD, 9)

    assert res.scale == s and tuple(res.lr_size) == (LR, LR)
    np.testing.assert_allclose(res.lr_image, lr_ref, rtol=0, atol=1e-6)
    assert res.sr_image.shape == r["sr"].shape
    np.testing.assert_allclose(res.sr_image, r["sr"], rtol=0, atol=1e-4)
    assert (res.path, res.fold, res.kernel_size) == ("blur", FOLD, 9)
    assert res.nan_gradients == 0 == r["nan_gradients"]

    A_e = np.asarray(res.gradient, np.float64)
    M_e = np.asarray(res.attribution, np.float64)
    assert A_e.shape == r["A"].shape and M_e.shape == r["M"].shape == (LR, LR)
    dM = float(np.abs(M_e - r["M"]).max())
    dDI = abs(res.di - r["di"])
    dA = float(np.abs(A_e - r["A"]).max() / np.abs(r["A"]).max())
    print(f"\n{name}-{exporter}-blur: max|dM|={dM:.2e} |dDI|={dDI:.2e} (DI={r['di']:.3f}) dA/max|A|={dA:.2e}")
    assert dM <= 1e-4, f"max |M_engine - M_ref| = {dM:.3g}"
    assert dDI <= 0.01, f"DI engine {res.di:.4f} vs reference {r['di']:.4f}"
    assert res.gini == pytest.approx(r["gini"], abs=1e-4)
    assert dA <= 1e-4, f"max |A_engine - A_ref| / max |A_ref| = {dA:.3g}"

    assert res.completeness.objective_delta == pytest.approx(r["objective_delta"], rel=1e-4, abs=1e-5)
    scale_A = float(np.abs(r["A"]).sum())
    assert res.completeness.attribution_sum == pytest.approx(r["attribution_sum"], abs=1e-4 * scale_A)
