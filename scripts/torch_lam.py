"""The PyTorch baseline the benchmarks compare against: the authors' demo loop (one path step at a
time, parameters requiring grad, float32), and an EDSR-baseline-sized network to run it on."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


class EDSRBaseline(nn.Module):
    """EDSR-baseline size: 64 channels, 16 residual blocks, ×4 (two PixelShuffle ×2)."""

    def __init__(self, c: int = 64, blocks: int = 16):
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
                                  for _ in range(blocks))
        self.tail = nn.Conv2d(c, c, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2),
                                nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(c, 3, 3, padding=1))

    def forward(self, x):
        h = self.head(x)
        r = h
        for b in self.body:
            r = r + 0.1 * b(r)
        return self.up(self.tail(r) + h)


class ToySR(nn.Module):
    """A toy ×2 network (three 3×3 convolutions and a PixelShuffle): what a cold start costs when the
    network itself costs nothing."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


class _RDB(nn.Module):
    """ESRGAN's residual dense block: five 3×3 convolutions, each seeing all earlier features."""

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, padding=1) for i in range(5))

    def forward(self, x):
        feats = [x]
        for i, conv in enumerate(self.convs):
            y = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(nn.functional.leaky_relu(y, 0.2))
        return x + 0.2 * y


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN x4plus generator: 23 RRDBs (3 RDBs each), nearest ×2 upsampling twice."""

    def __init__(self, nf: int = 64, gc: int = 32, blocks: int = 23):
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.ModuleList(nn.ModuleList(_RDB(nf, gc) for _ in range(3)) for _ in range(blocks))
        self.conv_body = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x):
        lrelu = nn.functional.leaky_relu
        up = nn.functional.interpolate
        feat = self.conv_first(x)
        body = feat
        for rrdb in self.body:
            y = body
            for rdb in rrdb:
                y = rdb(y)
            body = body + 0.2 * y
        feat = feat + self.conv_body(body)
        feat = lrelu(self.conv_up1(up(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = lrelu(self.conv_up2(up(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(lrelu(self.conv_hr(feat), 0.2))


def export(net: nn.Module, path, size: int = 48) -> None:
    torch.onnx.export(net, torch.rand(1, 3, size, size), str(path), input_names=["lr"], output_names=["sr"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "H", 3: "W"}})


def edsr_workspace(prefix: str):
    """A fresh folder with the benchmarks' EDSR-baseline (seed 0) as edsr.pt and edsr.onnx, and its own
    empty program cache (ONNXLAM_CACHE, for this process and its children)."""
    import os
    import tempfile
    from pathlib import Path

    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["ONNXLAM_CACHE"] = str(work / "cache")
    torch.manual_seed(0)
    net = EDSRBaseline().eval()
    torch.save(net.state_dict(), work / "edsr.pt")
    export(net, work / "edsr.onnx")
    return work


def demo_loop(model: nn.Module, images: np.ndarray, derivatives: np.ndarray, mask: np.ndarray,
              device: str = "cpu") -> np.ndarray:
    """A = (1/n) Σ_k ∇D(F(x_k)) ⊙ dλ_k, one step at a time, as the LAM demo runs it."""
    model = model.to(device).train(False)
    for p in model.parameters():
        p.requires_grad_(True)
    m = torch.from_numpy(mask).to(device)
    acc = torch.zeros(images.shape[1:], dtype=torch.float64, device=device)
    for k in range(images.shape[0]):
        x = torch.from_numpy(images[k][None]).to(device).requires_grad_(True)
        y = model(x)
        dh = (y[:, :, :-1, :] - y[:, :, 1:, :]) ** 2
        dw = (y[:, :, :, :-1] - y[:, :, :, 1:]) ** 2
        s = dh[:, :, :, :-1] + dw[:, :, :-1, :]
        g = torch.where(s > 0, torch.sqrt(torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(s))
        model.zero_grad()
        (g * m).sum().backward()
        grad = torch.nan_to_num(x.grad[0], nan=0.0)
        acc += grad.double() * torch.from_numpy(derivatives[k]).to(device).double()
    return (acc / images.shape[0]).float().cpu().numpy()


def batched_loop(model: nn.Module, images: np.ndarray, derivatives: np.ndarray, mask: np.ndarray,
                 device: str = "cpu", batch: int = 10) -> np.ndarray:
    """The same A as `demo_loop`, `batch` path images per forward/backward: what a PyTorch user who
    batches writes. The objective is the sum over the batch, so each image's input gradient is its
    own (the network has no batch coupling in eval mode); parameters do not require grad."""
    model = model.to(device).train(False)
    for p in model.parameters():
        p.requires_grad_(False)
    m = torch.from_numpy(mask).to(device)
    acc = torch.zeros(images.shape[1:], dtype=torch.float64, device=device)
    for start in range(0, images.shape[0], batch):
        x = torch.from_numpy(images[start:start + batch]).to(device).requires_grad_(True)
        y = model(x)
        dh = (y[:, :, :-1, :] - y[:, :, 1:, :]) ** 2
        dw = (y[:, :, :, :-1] - y[:, :, :, 1:]) ** 2
        s = dh[:, :, :, :-1] + dw[:, :, :-1, :]
        g = torch.where(s > 0, torch.sqrt(torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(s))
        (grad,) = torch.autograd.grad((g * m).sum(), x)
        d = torch.from_numpy(derivatives[start:start + batch]).to(device).double()
        acc += (torch.nan_to_num(grad, nan=0.0).double() * d).sum(dim=0)
    return (acc / images.shape[0]).float().cpu().numpy()
