"""Attribution along a path (spec §4): `A = (1/n) Σ_k ∇_x D(F(x_k)) ⊙ dλ_k`.

The path steps run through the gradient program in batches of the program's size (the last batch
padded with copies whose window masks are empty, so they contribute nothing); all K windows of a
program share each step's forward pass. A NaN in a gradient is replaced by 0 and counted, as the
spec says; an infinite gradient or objective is an error, since it cannot be averaged into a map
honestly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from onnxlam.core.errors import NumericalError
from onnxlam.lam.paths import PathSteps


class Program(Protocol):
    """What integration needs of a gradient program (`engine.program.GradientProgram` is one)."""

    batch: int

    def objective_and_gradient(self, x: np.ndarray, masks: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
        ...

    def confirm(self, x: np.ndarray, masks: np.ndarray, gradient: np.ndarray, device: str, used: int) -> None:
        ...


@dataclass(frozen=True)
class Integration:
    """Per window: the signed attribution A (float32 K×C×h×w), D(F(x_k)) (n×K), NaNs replaced (K)."""

    attribution: np.ndarray
    objectives: np.ndarray
    nan_gradients: np.ndarray


def integrate(program: Program, steps: PathSteps, masks: np.ndarray, device: str = "auto",
              progress: Callable[[int, int], None] | None = None) -> Integration:
    """Integrate ∇D ⊙ dλ over `steps` for the window masks `masks` (K×(H−1)×(W−1), K = program.windows)."""
    n, b = steps.fold, program.batch
    k = masks.shape[0]
    total = np.zeros((k,) + steps.images.shape[1:], np.float64)
    objectives = np.zeros((n, k), np.float64)
    nan_count = np.zeros(k, np.int64)
    for start in range(0, n, b):
        stop = min(start + b, n)
        used = stop - start
        x = steps.images[start:stop]
        batch_masks = np.broadcast_to(masks, (used,) + masks.shape)
        if used < b:  # pad to the program's batch with empty windows
            x = np.concatenate([x, np.repeat(x[-1:], b - used, axis=0)])
            batch_masks = np.concatenate([batch_masks, np.zeros((b - used,) + masks.shape, np.float32)])
        objective, gradient = program.objective_and_gradient(x, batch_masks, device)
        if start == 0:  # a batched program not yet confirmed is, before any of its gradients counts
            program.confirm(x, batch_masks, gradient, device, used)
        objective, gradient = objective[:used], gradient[:used]
        if not np.all(np.isfinite(objective)):
            bad = start + int(np.argmin(np.all(np.isfinite(objective), axis=1)))
            raise NumericalError(f"the detector is NaN or inf at path step {bad} "
                                 "(the model's output overflows on this path)")
        if np.isinf(gradient).any():
            raise NumericalError(f"the gradient is infinite at path steps {start}–{stop - 1}; "
                                 "the model's derivatives overflow on this input")
        nans = np.isnan(gradient)
        nan_count += nans.sum(axis=(0, 2, 3, 4))
        gradient = np.where(nans, np.float32(0), gradient)
        total += np.einsum("skchw,schw->kchw", gradient.astype(np.float64),
                           steps.derivatives[start:stop].astype(np.float64))
        objectives[start:stop] = objective
        if progress is not None:
            progress(stop, n)
    return Integration((total / n).astype(np.float32), objectives, nan_count)
