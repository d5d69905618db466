"""An independent PyTorch implementation of the LAM algorithm, written from /work/shared/LAM-SPEC.md.

It shares no code with ``onnxlam``: the tests compare the engine (onnxruntime + onnx-ad gradient
graphs) against this module (PyTorch autograd, one path step at a time, as the authors' demo does).

Conventions (spec section in brackets):
- kernel axis ``arange(-l//2 + 1, l//2 + 1)`` with Python floor division [3];
- correlation: per-channel 2-D correlation with reflect-101 borders, float64 [3]. For an even
  kernel size the anchor is the OpenCV / SciPy one: kernel index ``j`` reads input offset
  ``j - l//2`` (so ``F.pad`` pads ``l//2`` before and ``l - 1 - l//2`` after);
- detector with a zero gradient where ``dh + dw == 0`` [2];
- attribution ``A = (1/n) sum_k grad D(F(x_k)) * dlambda_k``, NaN -> 0 before the product [4];
- ``M = |sum_c A| / (max |sum_c A| + 1e-5)`` [4]; Gini / DI [5]; HR -> LR with Pillow bicubic [1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PATHS = ("blur", "linear", "gaussian-linear")


# --------------------------------------------------------------------------- §3 kernel / correlation
def kernel_axis(l: int) -> np.ndarray:
    """The spec's ``ax = arange(-l//2 + 1, l//2 + 1)`` (Python floor division)."""
    return np.arange(-l // 2 + 1, l // 2 + 1, dtype=np.float64)


def gaussian_kernel(sigma: float, l: int) -> torch.Tensor:
    """``K(sigma)``, float64 l x l, normalised to sum 1 (spec §3)."""
    ax = torch.from_numpy(kernel_axis(l))
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    k = torch.exp(-(xx**2 + yy**2) / (2.0 * (float(sigma) + 1e-5) ** 2))
    return k / k.sum()


def correlate(x, kernel) -> torch.Tensor:
    """Per-channel 2-D correlation of ``x`` (C x h x w) with ``kernel`` (l x l), reflect-101, float64."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(torch.float64)
    k = torch.as_tensor(np.asarray(kernel) if not torch.is_tensor(kernel) else kernel).to(torch.float64)
    c = x.shape[0]
    kh, kw = k.shape
    top, left = kh // 2, kw // 2
    bottom, right = kh - 1 - top, kw - 1 - left
    xp = F.pad(x[None], (left, right, top, bottom), mode="reflect")  # torch "reflect" == reflect-101
    weight = k[None, None].expand(c, 1, kh, kw).contiguous()
    return F.conv2d(xp, weight, groups=c)[0]  # conv2d is a correlation


# --------------------------------------------------------------------------- §3 paths
def make_path(x: np.ndarray, kind: str = "blur", sigma: float = 1.2, fold: int = 50, kernel_size: int = 9):
    """Path images, path derivatives and baseline, each float32 (spec §3).

    Returns (images n x C x h x w, derivatives n x C x h x w, baseline C x h x w) as numpy float32.
    """
    x64 = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(torch.float64)
    n = int(fold)
    if kind == "blur":
        sigmas = np.linspace(sigma, 0.0, n + 1)
        kernels = [gaussian_kernel(s, kernel_size) for s in sigmas]
        images = torch.stack([correlate(x64, kernels[k + 1]) for k in range(n)])
        derivs = torch.stack([correlate(x64, (kernels[k + 1] - kernels[k]) * n) for k in range(n)])
        baseline = correlate(x64, kernels[0])
    elif kind in ("linear", "gaussian-linear"):
        if kind == "linear":
            baseline = torch.zeros_like(x64)
        else:
            baseline = correlate(x64, gaussian_kernel(sigma, kernel_size))
        t = torch.from_numpy(np.linspace(0.0, 1.0, n))
        images = baseline[None] + t[:, None, None, None] * (x64 - baseline)[None]
        derivs = (x64 - baseline)[None].expand(n, *x64.shape).clone()
    else:
        raise ValueError(kind)
    f32 = lambda t: t.to(torch.float32).numpy()  # noqa: E731
    return f32(images), f32(derivs), f32(baseline)


# --------------------------------------------------------------------------- §2 detector
def _safe_sqrt(s: torch.Tensor) -> torch.Tensor:
    """sqrt with derivative 0 (not inf / NaN) where s == 0."""
    pos = s > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))), torch.zeros_like(s))


def gradient_magnitude(y: torch.Tensor) -> torch.Tensor:
    """``g`` of spec §2 for y (N x C x H x W): N x C x (H-1) x (W-1)."""
    dh = (y[:, :, :-1, :] - y[:, :, 1:, :]) ** 2
    dw = (y[:, :, :, :-1] - y[:, :, :, 1:]) ** 2
    return _safe_sqrt(dh[:, :, :, :-1] + dw[:, :, :-1, :])


def detector(y: torch.Tensor, x: int, y0: int, size: int) -> torch.Tensor:
    """D per batch element (shape [N]); window top-left (column x, row y0), side ``size``. Float64."""
    g = gradient_magnitude(y.to(torch.float64))
    return g[:, :, y0 : y0 + size, x : x + size].sum(dim=(1, 2, 3))


def detector_masked(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """D with an explicit (H-1) x (W-1) mask (N x 1 x (H-1) x (W-1) or (H-1) x (W-1)); float64."""
    g = gradient_magnitude(y.to(torch.float64))
    m = mask.to(torch.float64)
    while m.dim() < 4:
        m = m[None]
    return (g * m).sum(dim=(1, 2, 3))


def window_mask(H: int, W: int, x: int, y: int, size: int) -> np.ndarray:
    m = np.zeros((H - 1, W - 1), np.float32)
    m[y : y + size, x : x + size] = 1.0
    return m


def objective_and_gradient(model: torch.nn.Module, xb: np.ndarray, mask: np.ndarray):
    """Reference of ``program.objective_and_gradient``: D (float64 [B]) and dD/dx (float64 B x C x h x w)."""
    xt = torch.tensor(np.asarray(xb, np.float32), requires_grad=True)
    with torch.enable_grad():
        out = model(xt)
        d = detector_masked(out, torch.as_tensor(np.asarray(mask, np.float32)))
        (grad,) = torch.autograd.grad(d.sum(), xt)
    return d.detach().numpy(), grad.to(torch.float64).numpy()


# --------------------------------------------------------------------------- §4 / §5
def abs_normalise(A: np.ndarray) -> np.ndarray:
    a = np.abs(np.asarray(A, np.float64).sum(axis=0))
    return a / (a.max() + 1e-5)


def gini(values) -> float:
    """Spec §5 Gini, in torch float64 (independent of the numpy versions in the tests)."""
    a = torch.as_tensor(np.asarray(values, dtype=np.float64)).flatten().clone()
    if a.min() < 0:
        a = a - a.min()
    a = a + 1e-7
    a, _ = torch.sort(a)
    n = a.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * a).sum() / (n * a.sum()))


def diffusion_index(M) -> float:
    return (1.0 - gini(M)) * 100.0


# --------------------------------------------------------------------------- §1
def prepare_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """HR uint8 H x W x C -> LR float32 C x h x w in [0,1] (crop top-left, Pillow bicubic)."""
    hr = np.asarray(hr)
    H, W = hr.shape[:2]
    crop = np.ascontiguousarray(hr[: H - H % scale, : W - W % scale])
    img = Image.fromarray(crop)
    lr = img.resize((crop.shape[1] // scale, crop.shape[0] // scale), Image.BICUBIC)
    arr = np.asarray(lr, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(np.moveaxis(arr, 2, 0))


# --------------------------------------------------------------------------- the whole thing
def forward_objective(model: torch.nn.Module, x: np.ndarray, wx: int, wy: int, size: int) -> float:
    with torch.no_grad():
        out = model(torch.from_numpy(np.asarray(x, np.float32))[None])
        return float(detector(out, wx, wy, size)[0])


def reference_lam(
    model: torch.nn.Module,
    lr: np.ndarray,
    x: int,
    y: int,
    size: int = 16,
    path: str = "blur",
    sigma: float = 1.2,
    fold: int = 50,
    kernel_size: int = 9,
) -> dict:
    """LAM of ``model`` at LR input ``lr`` (C x h x w float32 in [0,1]) for window (x, y, size).

    Returns dict(M, A, di, gini, objective_delta, attribution_sum, images, derivatives, baseline,
    nan_gradients, sr).
    """
    lr = np.asarray(lr, np.float32)
    model.eval()
    images, derivs, baseline = make_path(lr, path, sigma, fold, kernel_size)
    n = images.shape[0]
    acc = np.zeros(lr.shape, np.float64)
    nan_count = 0
    for k in range(n):
        xt = torch.from_numpy(images[k].copy())[None].requires_grad_(True)
        with torch.enable_grad():
            out = model(xt)
            d = detector(out, x, y, size)[0]
            d.backward()
        grad = xt.grad[0].numpy().astype(np.float64)
        nans = np.isnan(grad)
        nan_count += int(nans.sum())
        grad[nans] = 0.0
        acc += grad * derivs[k].astype(np.float64)
    A = acc / n
    M = abs_normalise(A)
    g = gini(M)
    with torch.no_grad():
        sr = model(torch.from_numpy(lr)[None])[0].numpy()
    delta = forward_objective(model, lr, x, y, size) - forward_objective(model, baseline, x, y, size)
    return dict(
        M=M,
        A=A,
        gini=g,
        di=(1.0 - g) * 100.0,
        objective_delta=delta,
        attribution_sum=float(A.sum()),
        images=images,
        derivatives=derivs,
        baseline=baseline,
        nan_gradients=nan_count,
        sr=sr,
    )


# --------------------------------------------------------------------------- video: T input frames
def reference_video_lam(
    model: torch.nn.Module,
    frames: np.ndarray,
    x: int,
    y: int,
    size: int = 16,
    output_frame: int | None = None,
    sigma: float = 1.2,
    fold: int = 50,
    kernel_size: int = 9,
) -> dict:
    """LAM of a video model for frames ``frames`` (T x C x h x w float32 in [0,1]), window (x, y, size).

    Every frame is blurred along the path (spec §3 per frame); the detector (spec §2) is on the model's
    output frame ``output_frame`` (output N x T x C x H x W), or on its only output (N x C x H x W) when
    None; autograd w.r.t. all frames (spec §4). Returns dict(A (T x C x h x w), M (T x h x w, one max
    over all frames), shares, di_frames (each frame's own abs-normalised map), di_joint, di_temporal).
    """
    frames = np.asarray(frames, np.float32)
    t, c, h, w = frames.shape
    images, derivs, _ = make_path(frames.reshape(t * c, h, w), "blur", sigma, fold, kernel_size)
    model.eval()
    acc = np.zeros(frames.shape, np.float64)
    for k in range(images.shape[0]):
        xt = torch.from_numpy(images[k].reshape(t, c, h, w).copy())[None].requires_grad_(True)
        with torch.enable_grad():
            out = model(xt)
            if output_frame is not None:
                out = out[:, output_frame]
            d = detector(out, x, y, size)[0]
            d.backward()
        grad = xt.grad[0].numpy().astype(np.float64)
        grad[np.isnan(grad)] = 0.0
        acc += grad * derivs[k].reshape(t, c, h, w).astype(np.float64)
    A = acc / images.shape[0]
    S = np.abs(A.sum(axis=1))
    M = S / (S.max() + 1e-5)
    shares = M.sum(axis=(1, 2)) / M.sum()
    return dict(A=A, M=M, shares=shares, di_frames=[diffusion_index(abs_normalise(A[i])) for i in range(t)],
                di_joint=diffusion_index(M), di_temporal=(1.0 - gini(shares)) * 100.0)
