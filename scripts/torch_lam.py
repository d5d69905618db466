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


def export(net: nn.Module, path, size: int = 48) -> None:
    torch.onnx.export(net, torch.rand(1, 3, size, size), str(path), input_names=["lr"], output_names=["sr"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "H", 3: "W"}})


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
