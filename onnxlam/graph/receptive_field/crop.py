"""From a receptive field to the LR box a window depends on (the exact crop)."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence


from onnxlam.graph.receptive_field.field import ReceptiveField


def _sr_needed(window_sr, scale, sr_h: int, sr_w: int):
    x, y, size = window_sr
    if size < 1 or x < 0 or y < 0:
        raise ValueError(f"bad window {window_sr}")
    # the detector at window pixel (Y, X) reads SR (Y, X), (Y+1, X), (Y, X+1)
    return y, min(y + size, sr_h - 1), x, min(x + size, sr_w - 1)


def dependence_box(rf: ReceptiveField, window_sr: Sequence[int], scale: int,
                   lr_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom/right exclusive: the LR pixels the window's detector can
    depend on (its needed SR pixels' cones), clipped to the image. The whole image when global."""
    h, w = lr_size
    if rf.global_ or rf.reach is None:
        return 0, 0, h, w
    s = Fraction(scale)
    y0, y1, x0, x1 = _sr_needed(window_sr, scale, int(h * s), int(w * s))
    t, b, l, r = rf.reach
    top, bottom = cone(y0, y1, s, t, b, rf.row_phase_reach)
    left, right = cone(x0, x1, s, l, r, rf.col_phase_reach)
    return max(0, top), max(0, left), min(h, bottom + 1), min(w, right + 1)


def cone(a: int, b: int, s: Fraction, before: int, after: int, phases) -> tuple[int, int]:
    """LR interval [first, last] that SR pixels a..b depend on (per-phase reach when known)."""
    if not phases:
        return math.floor(a / s) - before, math.floor(b / s) + after
    q = len(phases)
    first = min(math.floor(y / s) - phases[y % q][0] for y in range(a, min(b, a + q - 1) + 1))
    last = max(math.floor(y / s) + phases[y % q][1] for y in range(max(a, b - q + 1), b + 1))
    return first, last


def crop_box(rf: ReceptiveField, window_sr: Sequence[int], scale: int, lr_size: tuple[int, int],
             margin: int = 0) -> tuple[int, int, int, int]:
    """The LR crop (top, left, bottom, right), bottom/right exclusive, on which the model computes
    the window's SR pixels and their detector neighbours (SR rows y..y+size, cols x..x+size)
    exactly as on the whole image.

    It is the dependence box (the needed pixels' cones, see `dependence_box`) widened by `margin`,
    its top/left moved down to a multiple of the period and its extent rounded up to a multiple
    of the period, clipped to the image. The whole image when the model is global or not
    shift-equivariant.
    """
    h, w = lr_size
    if rf.scale is not None and Fraction(scale) not in (rf.scale[0], rf.scale[1]):
        raise ValueError(f"scale {scale} differs from the model's {rf.scale}")
    if rf.global_ or rf.reach is None or rf.period is None:
        return 0, 0, h, w
    top, left, bottom, right = dependence_box(rf, window_sr, scale, lr_size)
    pr, pc = rf.period
    top, left = max(0, top - margin), max(0, left - margin)
    bottom, right = min(h, bottom + margin), min(w, right + margin)
    top, left = top - top % pr, left - left % pc
    bottom = min(h, top + -(-(bottom - top) // pr) * pr)
    right = min(w, left + -(-(right - left) // pc) * pc)
    return top, left, bottom, right
