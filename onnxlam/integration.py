"""Attribution along a path (spec §4): `A = (1/n) Σ_k ∇_x D(F(x_k)) ⊙ dλ_k`.

The path steps run through the gradient program in batches of the program's size (the last batch
padded with copies whose window mask is empty, so they contribute nothing). A NaN in a gradient is
replaced by 0 and counted, as the spec says; an infinite gradient or objective is an error, since it
cannot be averaged into a map honestly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import NumericalError
from .paths import PathSteps
from .program import GradientProgram


@dataclass(frozen=True)
class Integration:
    """The signed attribution A (float32 C×h×w), D(F(x_k)) at every step, and NaNs replaced."""

    attribution: np.ndarray
    objectives: np.ndarray
    nan_gradients: int


def integrate(program: GradientProgram, steps: PathSteps, mask: np.ndarray, device: str = "auto",
              progress: Callable[[int, int], None] | None = None) -> Integration:
    """Integrate ∇D ⊙ dλ over `steps` with the window `mask` ((H−1)×(W−1))."""
    n, b = steps.fold, program.batch
    total = np.zeros(steps.images.shape[1:], np.float64)
    objectives = np.zeros(n, np.float64)
    nan_count = 0
    for start in range(0, n, b):
        stop = min(start + b, n)
        used = stop - start
        x = steps.images[start:stop]
        masks = np.broadcast_to(mask, (used, 1) + mask.shape)
        if used < b:  # pad to the program's batch with empty windows
            x = np.concatenate([x, np.repeat(x[-1:], b - used, axis=0)])
            masks = np.concatenate([masks, np.zeros((b - used, 1) + mask.shape, np.float32)])
        objective, gradient = program.objective_and_gradient(x, masks, device)
        objective, gradient = objective[:used], gradient[:used]
        if not np.all(np.isfinite(objective)):
            raise NumericalError(f"the detector is NaN or inf at path step {start + int(np.argmin(np.isfinite(objective)))}"
                                 " (the model's output overflows on this path)")
        nans = np.isnan(gradient)
        if np.isinf(gradient).any():
            raise NumericalError(f"the gradient is infinite at path steps {start}–{stop - 1}; "
                                 "the model's derivatives overflow on this input")
        nan_count += int(nans.sum())
        gradient = np.where(nans, np.float32(0), gradient)
        total += np.einsum("kchw,kchw->chw", gradient.astype(np.float64),
                           steps.derivatives[start:stop].astype(np.float64))
        objectives[start:stop] = objective
        if progress is not None:
            progress(stop, n)
    return Integration((total / n).astype(np.float32), objectives, nan_count)
