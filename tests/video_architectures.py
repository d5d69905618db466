"""Tiny seeded video SR networks for the video LAM tests (and the README picture), written from the
papers' designs: EDVR (Wang et al. 2019, sliding window, centre frame) without deformable convolution,
and BasicVSR (Chan et al. 2021, recurrent, flow-warped hidden state) with forward propagation only."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

T, LR = 3, 16  # frames and the LR side the tests use (the dynamo exports are static at it)


class SlidingVSR(nn.Module):
    """EDVR-style: per-frame conv features; each neighbour aligned to the centre by sigmoid weights from
    a conv over [neighbour, centre] features (no deformable conv); 1×1 fusion; pixel-shuffle ×2 plus the
    nearest-upsampled centre frame. N×T×3×h×w → N×3×2h×2w."""

    def __init__(self, frames=T, nf=8):
        super().__init__()
        self.feat = nn.Conv2d(3, nf, 3, padding=1)
        self.align = nn.Conv2d(2 * nf, nf, 3, padding=1)
        self.fuse = nn.Conv2d(frames * nf, nf, 1)
        self.body = nn.Conv2d(nf, nf, 3, padding=1)
        self.up = nn.Conv2d(nf, 12, 3, padding=1)

    def forward(self, x):
        n, t, c, h, w = x.shape
        f = F.leaky_relu(self.feat(x.reshape(n * t, c, h, w)), 0.1).reshape(n, t, -1, h, w)
        centre = f[:, t // 2]
        aligned = [f[:, i] * torch.sigmoid(self.align(torch.cat([f[:, i], centre], 1))) for i in range(t)]
        y = F.leaky_relu(self.fuse(torch.cat(aligned, 1)), 0.1)
        y = F.leaky_relu(self.body(y), 0.1) + y
        return F.pixel_shuffle(self.up(y), 2) + F.interpolate(x[:, t // 2], scale_factor=2, mode="nearest")


class RecurrentVSR(nn.Module):
    """BasicVSR-style forward propagation: per frame a flow (±2 px) from [frame, previous frame], the
    hidden state warped along it with `grid_sample` (bilinear, align_corners=True), a cell, and
    pixel-shuffle ×2 plus the nearest-upsampled frame. N×T×3×h×w → N×T×3×2h×2w."""

    def __init__(self, nf=8, padding="zeros"):
        super().__init__()
        self.nf, self.padding = nf, padding
        self.flow = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(8, 2, 3, padding=1))
        self.cell = nn.Conv2d(3 + nf, nf, 3, padding=1)
        self.up = nn.Conv2d(nf, 12, 3, padding=1)

    def warp(self, h, flow):
        n, _, H, W = h.shape
        ys = torch.arange(H, dtype=h.dtype).view(1, H, 1).expand(n, H, W)
        xs = torch.arange(W, dtype=h.dtype).view(1, 1, W).expand(n, H, W)
        grid = torch.stack([2 * (xs + flow[:, 0]) / (W - 1) - 1, 2 * (ys + flow[:, 1]) / (H - 1) - 1], dim=3)
        return F.grid_sample(h, grid, mode="bilinear", padding_mode=self.padding, align_corners=True)

    def forward(self, x):
        n, t, c, H, W = x.shape
        hidden = x.new_zeros(n, self.nf, H, W)
        outs = []
        for i in range(t):
            if i > 0:
                hidden = self.warp(hidden, 2.0 * torch.tanh(self.flow(torch.cat([x[:, i], x[:, i - 1]], 1))))
            hidden = F.leaky_relu(self.cell(torch.cat([x[:, i], hidden], 1)), 0.1)
            outs.append(F.pixel_shuffle(self.up(hidden), 2) + F.interpolate(x[:, i], scale_factor=2, mode="nearest"))
        return torch.stack(outs, 1)


class StackedBgr255(nn.Module):
    """`net` behind a frames-on-channels BGR, 0…255 interface: N×(T·3)×h×w BGR → N×3×H×W BGR."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n, tc, h, w = x.shape
        frames = x.reshape(n, tc // 3, 3, h, w).flip(2) / 255.0
        return self.net(frames).flip(1) * 255.0


def build(cls, seed=1, **kw):
    torch.manual_seed(seed)
    m = cls(**kw)
    with torch.no_grad():  # non-trivial biases
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def export(model, path, exporter, shape=(1, T, 3, LR, LR)):
    dummy = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", len(shape) - 2: "h", len(shape) - 1: "w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, (dummy,), str(path), dynamo=False, input_names=["frames"], output_names=["sr"],
                              dynamic_axes={"frames": axes, "sr": {0: "batch"}}, opset_version=17)
        else:
            torch.onnx.export(model, (dummy,), str(path), dynamo=True)
    return path
