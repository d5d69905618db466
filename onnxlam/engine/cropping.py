"""Exact receptive-field cropping: run the network only on the LR crop its windows can depend on.

For a local network (see `receptive_field.py`) the detector of a window depends only on the LR
pixels in its cone; outside it, ∇_x D is exactly 0, and inside it the crop computes every value the
window reads exactly as the whole image does. So integrating over the crop's path images (cut from
the full image's path, so the blur sees the whole image) and putting the result back into a
full-size map of zeros gives the same attribution, at the cost of the crop. `--context N` forces a
margin of N LR pixels around the windows instead: exact for local networks when N covers the
reach, an approximation for global ones (reported as such).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onnxlam.lam.paths import PathSteps
from onnxlam.graph.receptive_field import ReceptiveField, crop_box

WORTH_IT = 0.75  # crop only when it saves at least a quarter of the pixels (a new program costs)


@dataclass(frozen=True)
class Crop:
    """An LR box (bottom/right exclusive) and whether analysing it equals analysing the whole image."""

    top: int
    left: int
    bottom: int
    right: int
    exact: bool
    context: int | None = None
    reason: str = "receptive field"  # or "context" (--context) or "memory" (one step did not fit)

    @property
    def size(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    def to_json(self) -> dict:
        return {"box": [self.top, self.left, self.bottom, self.right], "exact": self.exact,
                "context": self.context, "reason": self.reason}

    def describe(self) -> str:
        """One line for people: the box and whether the map is exact."""
        how = "exact" if self.exact else {"memory": "approximate: cut to fit the memory limit"}.get(
            self.reason, "approximate: --context on a global network")
        return f"LR rows {self.top}–{self.bottom - 1}, cols {self.left}–{self.right - 1} ({how})"


def _window_box(window: tuple[int, int, int], scale: int, lr_size: tuple[int, int], margin: int):
    """The LR pixels under a window's SR pixels (and detector neighbours), widened by `margin`."""
    x, y, size = window
    h, w = lr_size
    return (max(0, y // scale - margin), max(0, x // scale - margin),
            min(h, (y + size) // scale + 1 + margin), min(w, (x + size) // scale + 1 + margin))


def choose_crop(rf: ReceptiveField | None, windows: list[tuple[int, int, int]], scale: int,
                lr_size: tuple[int, int], context: int | None = None, worth_it: float = WORTH_IT) -> Crop | None:
    """The crop covering every window's cone, or None when the whole image should be analysed.

    Without `context`: exact crops of local, shift-equivariant networks, when worth it. With it:
    the windows' LR boxes widened by `context` (plus the reach for local networks).
    """
    h, w = lr_size
    local = rf is not None and not rf.global_ and rf.reach is not None and rf.period is not None
    if context is None and not local:
        return None
    if local:
        boxes = [crop_box(rf, win, scale, lr_size, margin=context or 0) for win in windows]
    else:
        boxes = [_window_box(win, scale, lr_size, context) for win in windows]
    top, left = min(b[0] for b in boxes), min(b[1] for b in boxes)
    bottom, right = max(b[2] for b in boxes), max(b[3] for b in boxes)
    if local:  # the union of aligned boxes must stay aligned to the period
        pr, pc = rf.period
        bottom = min(h, top + -(-(bottom - top) // pr) * pr)
        right = min(w, left + -(-(right - left) // pc) * pc)
    if (bottom - top) * (right - left) >= h * w:
        return None
    if context is None and (bottom - top) * (right - left) > worth_it * h * w:
        return None
    return Crop(top, left, bottom, right, exact=local, context=context,
                reason="receptive field" if context is None else "context")


def windows_box(windows: list[tuple[int, int, int]], scale: int, lr_size: tuple[int, int]):
    """The LR box (top, left, bottom, right) under all windows' SR pixels and detector neighbours."""
    boxes = [_window_box(win, scale, lr_size, 0) for win in windows]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def _span(lo: int, hi: int, n: int, length: int, period: int) -> tuple[int, int]:
    """An interval of `length` (≤ n) on [0, n) containing [lo, hi) as centrally as it can, its start
    a multiple of `period`."""
    start = max(0, min((lo + hi - length) // 2, n - length))
    start -= start % period
    if start + length < hi:  # alignment moved it off the windows: move right by a period
        start += period
    return start, min(n, start + length)


def memory_crop(inside: tuple[int, int, int, int], windows: tuple[int, int, int, int], max_pixels: int,
                period: tuple[int, int] = (1, 1), step: int = 1) -> tuple[int, int, int, int] | None:
    """The largest box within `inside` around `windows` (LR boxes) with at most `max_pixels` pixels.

    Square where the image allows (the windows draw on all directions alike), sides multiples of
    `step` and of the model's period, its corner aligned to the period so the network sees its usual
    sampling phase; None when even the windows' own pixels do not fit.
    """
    t0, l0, b0, r0 = inside
    h, w = b0 - t0, r0 - l0
    wt, wl, wb, wr = windows[0] - t0, windows[1] - l0, windows[2] - t0, windows[3] - l0
    sr, sc = (math.lcm(p, step) for p in period)

    def up(n, p):
        return -(-n // p) * p

    need_h = min(h, up(wb - wt + period[0], sr))  # room for the alignment shift
    need_w = min(w, up(wr - wl + period[1], sc))
    side = int(np.sqrt(max_pixels))
    hc = min(h, max(need_h, side // sr * sr))
    wc = min(w, max(need_w, max_pixels // max(hc, 1) // sc * sc))
    hc = min(h, max(need_h, max_pixels // max(wc, 1) // sr * sr))  # a narrow image leaves height room
    if hc * wc > max_pixels:
        return None
    top, bottom = _span(wt, wb, h, hc, period[0])
    left, right = _span(wl, wr, w, wc, period[1])
    return t0 + top, l0 + left, t0 + bottom, l0 + right


def crop_steps(steps: PathSteps, crop: Crop) -> PathSteps:
    """The path restricted to the crop (images, derivatives and baseline)."""
    sl = (slice(crop.top, crop.bottom), slice(crop.left, crop.right))
    return PathSteps(np.ascontiguousarray(steps.images[(slice(None), slice(None)) + sl]),
                     np.ascontiguousarray(steps.derivatives[(slice(None), slice(None)) + sl]),
                     np.ascontiguousarray(steps.baseline[(slice(None),) + sl]))


def crop_masks(masks: np.ndarray, crop: Crop, scale: int) -> np.ndarray:
    """Window masks (K×(H−1)×(W−1)) cut to the crop's SR grid ((s·hc − 1)×(s·wc − 1))."""
    hc, wc = crop.size
    y0, x0 = crop.top * scale, crop.left * scale
    return np.ascontiguousarray(masks[:, y0:y0 + hc * scale - 1, x0:x0 + wc * scale - 1])


def uncrop(attribution: np.ndarray, crop: Crop, lr_size: tuple[int, int]) -> np.ndarray:
    """A K×C×hc×wc attribution placed into K×C×h×w zeros."""
    full = np.zeros(attribution.shape[:2] + tuple(lr_size), attribution.dtype)
    full[:, :, crop.top:crop.bottom, crop.left:crop.right] = attribution
    return full
