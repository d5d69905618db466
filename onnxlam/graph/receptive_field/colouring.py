"""Windows that can share one reverse pass: a colouring of their dependence boxes.

For a local network, window a's detector D_a depends only on the LR pixels of its dependence box
(`dependence_box`). Seed the reverse pass with the sum Σ D_a over windows whose boxes are pairwise
disjoint: the gradient of the sum, restricted to a's box, is a's gradient, since no other window of
the sum depends on (so no other window's adjoint reaches) a pixel of a's box, and outside its box
a's own gradient is zero. The boxes are hulls of the structural dependence, so disjoint boxes are
enough (they over-approximate, never under-).

Colouring the conflict graph (boxes that overlap) so that each colour holds disjoint boxes gives one
reverse pass per colour instead of per window. Greedy first fit in the windows' order, which on a
regular grid gives the periodic colouring: about ⌈box/stride⌉ colours per axis, a number set by the
receptive field and the stride, not by the image size. On a grid it is also the least possible:
that many windows around any point all overlap one another.
"""
from __future__ import annotations

from typing import Sequence

Box = tuple[int, int, int, int]  # top, left, bottom, right (bottom/right exclusive)


def overlap(a: Box, b: Box) -> bool:
    """Whether two boxes share at least one pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def colour(boxes: Sequence[Box]) -> list[int]:
    """A colour per box (0, 1, …), boxes of one colour pairwise disjoint; greedy first fit in order."""
    classes: list[list[Box]] = []
    colours = []
    for box in boxes:
        for c, members in enumerate(classes):
            if not any(overlap(box, other) for other in members):
                members.append(box)
                colours.append(c)
                break
        else:
            classes.append([box])
            colours.append(len(classes) - 1)
    return colours


def classes(colours: Sequence[int]) -> list[list[int]]:
    """The members (indices) of each colour, in colour order."""
    out: list[list[int]] = [[] for _ in range(max(colours, default=-1) + 1)]
    for i, c in enumerate(colours):
        out[c].append(i)
    return out
