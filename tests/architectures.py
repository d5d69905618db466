"""Small seeded PyTorch super-resolution networks for the tests, and their ONNX exports.

Each architecture mimics the operator mix of a published family, with few channels so that the
tests stay fast on two CPU cores:

- ``edsr``:  plain residual CNN, PixelShuffle x2 (EDSR-like)
- ``rcan``:  residual blocks with channel attention (global average pool, 1x1 convs, sigmoid) x2
- ``swin``:  shifted-window self-attention (window partition by reshape/permute, torch.roll,
             LayerNorm, Softmax, GELU, MLP), pad-free, x2 (SwinIR-like)
- ``rrdb``:  dense blocks, nearest-neighbour upsampling + conv, x4 (RRDB / ESRGAN-like)
- ``fsrcnn``: PReLU, 1x1 shrink / expand, ConvTranspose upsampler x3 (FSRCNN-like)

Two more families widen the op coverage of the reference set (``REFERENCE_ARCHITECTURES``, used by
``tests/test_reference_models.py`` and ``scripts/export_reference_models.py``; ``ARCHITECTURES``
keeps the five above, the ones ``tests/test_parity.py`` runs every path on):

- ``imdn``: information multi-distillation blocks (channel split, concat, contrast-aware channel
            attention: std + mean over H x W, 1x1 convs, sigmoid), LeakyReLU, PixelShuffle x2
- ``nonlocal``: embedded-Gaussian non-local block (1x1 convs, reshape to B x C x HW, MatMul,
            Softmax over HW, MatMul back, reshape), nearest-neighbour upsampling + conv x2

``export_onnx`` writes each model with both exporters: the TorchScript exporter
(``dynamo=False``, dynamic batch / height / width) and the dynamo exporter (``dynamo=True``,
the default static shapes: batch 1 and the given LR size baked in).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

LR_SIZE = 16  # the LR height / width the tests use (the dynamo exports are static at this size)


# --------------------------------------------------------------------------- (a) EDSR-like
class ResBlock(nn.Module):
    def __init__(self, nf: int, res_scale: float = 0.5):
        super().__init__()
        self.c1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.c2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.c2(F.relu(self.c1(x)))


class EDSRLike(nn.Module):
    scale = 2

    def __init__(self, nf: int = 12, nb: int = 2):
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(nf) for _ in range(nb)], nn.Conv2d(nf, nf, 3, padding=1))
        self.up = nn.Sequential(nn.Conv2d(nf, nf * 4, 3, padding=1), nn.PixelShuffle(2))
        self.tail = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x):
        f = self.head(x)
        f = f + self.body(f)
        return self.tail(self.up(f))


# --------------------------------------------------------------------------- (b) RCAN-like
class ChannelAttention(nn.Module):
    def __init__(self, nf: int, reduction: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(inplace=True), nn.Conv2d(nf // reduction, nf, 1), nn.Sigmoid()
        )

    def forward(self, x):
        return x * self.fc(self.pool(x))


class RCAB(nn.Module):
    def __init__(self, nf: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(nf, nf, 3, padding=1), ChannelAttention(nf)
        )

    def forward(self, x):
        return x + self.body(x)


class RCANLike(nn.Module):
    scale = 2

    def __init__(self, nf: int = 16, nb: int = 2):
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.Sequential(*[RCAB(nf) for _ in range(nb)], nn.Conv2d(nf, nf, 3, padding=1))
        self.up = nn.Sequential(nn.Conv2d(nf, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        f = self.head(x)
        return self.up(f + self.body(f))


# --------------------------------------------------------------------------- (c) SwinIR-like
def window_partition(x, ws: int):
    """B x H x W x C -> (B * nW) x (ws*ws) x C"""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)


def window_reverse(windows, ws: int, B: int, H: int, W: int):
    C = windows.shape[-1]
    x = windows.view(B, H // ws, W // ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, ws: int, heads: int):
        super().__init__()
        self.heads, self.ws = heads, ws
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.randn(heads, ws * ws, ws * ws) * 0.5)

    def forward(self, x):  # (B*nW) x N x C
        Bn, N, C = x.shape
        qkv = self.qkv(x).reshape(Bn, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.bias.unsqueeze(0)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(Bn, N, C))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, ws: int, heads: int, shift: int):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, x):  # B x H x W x C
        B, H, W, C = x.shape
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = window_reverse(self.attn(window_partition(h, self.ws)), self.ws, B, H, W)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h
        return x + self.mlp(self.norm2(x))


class SwinLike(nn.Module):
    scale = 2

    def __init__(self, dim: int = 16, ws: int = 4, heads: int = 2):
        super().__init__()
        self.head = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.ModuleList([SwinBlock(dim, ws, heads, 0), SwinBlock(dim, ws, heads, ws // 2)])
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(dim, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        f = self.head(x)
        t = f.permute(0, 2, 3, 1)
        for blk in self.blocks:
            t = blk(t)
        f = f + self.conv(t.permute(0, 3, 1, 2))
        return self.up(f)


# --------------------------------------------------------------------------- (d) RRDB-like
class DenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.c1 = nn.Conv2d(nf, gc, 3, padding=1)
        self.c2 = nn.Conv2d(nf + gc, gc, 3, padding=1)
        self.c3 = nn.Conv2d(nf + 2 * gc, nf, 3, padding=1)

    def forward(self, x):
        x1 = F.leaky_relu(self.c1(x), 0.2)
        x2 = F.leaky_relu(self.c2(torch.cat((x, x1), 1)), 0.2)
        x3 = self.c3(torch.cat((x, x1, x2), 1))
        return x + 0.2 * x3


class RRDBLike(nn.Module):
    scale = 4

    def __init__(self, nf: int = 12, gc: int = 8):
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.Sequential(DenseBlock(nf, gc), DenseBlock(nf, gc))
        self.trunk = nn.Conv2d(nf, nf, 3, padding=1)
        self.up1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.up2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x):
        f = self.head(x)
        f = f + self.trunk(self.body(f))
        f = F.leaky_relu(self.up1(F.interpolate(f, scale_factor=2, mode="nearest")), 0.2)
        f = F.leaky_relu(self.up2(F.interpolate(f, scale_factor=2, mode="nearest")), 0.2)
        return self.last(f)


# --------------------------------------------------------------------------- (e) FSRCNN-like
class FSRCNNLike(nn.Module):
    scale = 3

    def __init__(self, d: int = 12, s: int = 6, m: int = 2):
        super().__init__()
        layers = [nn.Conv2d(3, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.features = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, 3, 9, stride=3, padding=3)

    def forward(self, x):
        return self.deconv(self.features(x))


# --------------------------------------------------------------------------- (f) IMDN-like
def channel_std(x):
    """Standard deviation of every channel over H x W (IMDN's ``stdv_channels``), B x C x 1 x 1."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).pow(0.5)


class ContrastChannelAttention(nn.Module):
    """IMDN's CCA layer: contrast (std + mean over H x W) -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid."""

    def __init__(self, nf: int, reduction: int = 4):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(inplace=True), nn.Conv2d(nf // reduction, nf, 1), nn.Sigmoid()
        )

    def forward(self, x):
        contrast = channel_std(x) + x.mean(dim=(2, 3), keepdim=True)
        return x * self.fc(contrast)


class DistillationBlock(nn.Module):
    """IMDB: each 3x3 conv's output is split into distilled channels (kept) and remaining ones (refined
    further); the distilled channels are concatenated, reweighted by CCA, fused by a 1x1 conv, plus x."""

    def __init__(self, nf: int = 16, distilled: int = 4):
        super().__init__()
        self.d, self.r = distilled, nf - distilled
        self.c1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.c2 = nn.Conv2d(self.r, nf, 3, padding=1)
        self.c3 = nn.Conv2d(self.r, nf, 3, padding=1)
        self.c4 = nn.Conv2d(self.r, distilled, 3, padding=1)
        self.cca = ContrastChannelAttention(4 * distilled)
        self.fuse = nn.Conv2d(4 * distilled, nf, 1)

    def forward(self, x):
        d1, r1 = torch.split(F.leaky_relu(self.c1(x), 0.05), (self.d, self.r), dim=1)
        d2, r2 = torch.split(F.leaky_relu(self.c2(r1), 0.05), (self.d, self.r), dim=1)
        d3, r3 = torch.split(F.leaky_relu(self.c3(r2), 0.05), (self.d, self.r), dim=1)
        d4 = self.c4(r3)
        return x + self.fuse(self.cca(torch.cat((d1, d2, d3, d4), dim=1)))


class IMDNLike(nn.Module):
    scale = 2

    def __init__(self, nf: int = 16, nb: int = 2):
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.blocks = nn.ModuleList([DistillationBlock(nf) for _ in range(nb)])
        self.collect = nn.Conv2d(nf * nb, nf, 1)  # IMDN fuses every block's output
        self.trunk = nn.Conv2d(nf, nf, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(nf, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        f = self.head(x)
        outs, h = [], f
        for blk in self.blocks:
            h = blk(h)
            outs.append(h)
        body = self.trunk(F.leaky_relu(self.collect(torch.cat(outs, dim=1)), 0.05))
        return self.up(f + body)


# --------------------------------------------------------------------------- (g) non-local
class NonLocalBlock(nn.Module):
    """Embedded Gaussian non-local block: softmax(theta(x)^T phi(x)) over all HW positions, applied to g(x)."""

    def __init__(self, nf: int, inter: int):
        super().__init__()
        self.theta = nn.Conv2d(nf, inter, 1)
        self.phi = nn.Conv2d(nf, inter, 1)
        self.g = nn.Conv2d(nf, inter, 1)
        self.w = nn.Conv2d(inter, nf, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        theta = self.theta(x).reshape(b, -1, h * w).permute(0, 2, 1)  # B x HW x C'
        phi = self.phi(x).reshape(b, -1, h * w)  # B x C' x HW
        attn = torch.softmax(torch.matmul(theta, phi), dim=-1)  # B x HW x HW, softmax over HW
        g = self.g(x).reshape(b, -1, h * w).permute(0, 2, 1)  # B x HW x C'
        y = torch.matmul(attn, g).permute(0, 2, 1).reshape(b, -1, h, w)
        return x + self.w(y)


class NonLocalLike(nn.Module):
    scale = 2

    def __init__(self, nf: int = 12, inter: int = 6):
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.pre = ResBlock(nf)
        self.nonlocal_block = NonLocalBlock(nf, inter)
        self.post = ResBlock(nf)
        self.up = nn.Conv2d(nf, nf, 3, padding=1)
        self.last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x):
        f = self.head(x)
        f = f + self.post(self.nonlocal_block(self.pre(f)))
        f = F.relu(self.up(F.interpolate(f, scale_factor=2, mode="nearest")))
        return self.last(f)


# --------------------------------------------------------------------------- helpers for spec tests
class SmoothNet(nn.Module):
    """A small smooth (tanh) network, x2: for completeness checks with a large fold."""

    scale = 2

    def __init__(self, nf: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(3, nf, 3, padding=1)
        self.c2 = nn.Conv2d(nf, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.c2(torch.tanh(self.c1(x))))


class NearestUp(nn.Module):
    """Parameter-free nearest-neighbour x2: a constant input gives dh + dw == 0 everywhere, and any
    input gives dh + dw == 0 exactly at every even (row, column) of the output."""

    scale = 2

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")


ARCHITECTURES = {
    "edsr": EDSRLike,
    "rcan": RCANLike,
    "swin": SwinLike,
    "rrdb": RRDBLike,
    "fsrcnn": FSRCNNLike,
}
# Every reference family: the five above and the two that widen the op coverage.
REFERENCE_ARCHITECTURES = {
    **ARCHITECTURES,
    "imdn": IMDNLike,
    "nonlocal": NonLocalLike,
}
NEW_FAMILIES = ("imdn", "nonlocal")
EXPORTERS = ("torchscript", "dynamo")

# Default seeds: the first five keep the ones they always had (their index in sorted order, plus 1).
SEEDS = {name: i + 1 for i, name in enumerate(sorted(ARCHITECTURES))}
SEEDS.update({"imdn": 6, "nonlocal": 7})


def build(name: str, seed: int | None = None) -> nn.Module:
    """The architecture ``name`` (any of ``REFERENCE_ARCHITECTURES``) with seeded random weights, in eval mode."""
    if seed is None:
        seed = SEEDS[name]
    torch.manual_seed(seed)
    model = REFERENCE_ARCHITECTURES[name]()
    with torch.no_grad():  # non-trivial biases, so that no layer is the identity at init
        for p in model.parameters():
            if p.dim() == 1 and not isinstance(model, FSRCNNLike):
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def scale_of(name: str) -> int:
    return REFERENCE_ARCHITECTURES[name].scale


def export_onnx(model: nn.Module, path: Path, exporter: str, lr_size: int = LR_SIZE) -> Path:
    """Export ``model`` to ``path`` with the given exporter; returns the path."""
    path = Path(path)
    dummy = torch.rand(1, 3, lr_size, lr_size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch", 2: "h", 3: "w"}, "output": {0: "batch", 2: "H", 3: "W"}},
                opset_version=17,
            )
        elif exporter == "dynamo":
            torch.onnx.export(model, (dummy,), str(path), dynamo=True)  # the default a user gets
        else:
            raise ValueError(exporter)
    return path
