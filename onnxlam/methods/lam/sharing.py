"""Which windows of one image share a reverse pass (see `graph/receptive_field/colouring.py`).

Windows whose dependence boxes are disjoint are seeded together: one reverse pass per colour
instead of one per window, each window's map cut from the pass by its own box (exact). The plan
is taken only when a cost estimate says it is cheaper than one seed per window; global networks,
`--context`, `--no-crop` and exported programs keep one seed per window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxlam.engine.cropping import choose_crop
from onnxlam.engine.model import Model
from onnxlam.graph.receptive_field import dependence_box
from onnxlam.graph.receptive_field.colouring import Box, classes, colour
from onnxlam.lam.options import LamOptions
from onnxlam.lam.result import Window

MAX_WINDOWS = 8  # seeds sharing one forward pass; more are processed in groups of this size


@dataclass(frozen=True)
class Sharing:
    """The windows' colours (one reverse pass per colour and step) or why every window has its own."""

    used: bool
    reason: str
    colours: tuple[int, ...] = ()    # per window
    boxes: tuple[Box, ...] = ()      # per window: the LR pixels its detector can depend on
    cost: tuple[float, float] = (0.0, 0.0)  # estimated (one seed per window, one per colour)

    @property
    def classes(self) -> list[list[int]]:
        return classes(self.colours)

    def to_json(self) -> dict:
        n = len(self.colours)
        return {"used": self.used, "reason": self.reason, "windows": n,
                "passes": len(set(self.colours)) if self.used else n,
                "windows_per_pass": round(n / len(set(self.colours)), 3) if self.used and n else 1.0,
                "colours": list(self.colours), "estimated_cost": {"per_window": self.cost[0],
                                                                   "per_colour": self.cost[1]}}


def _cost(model: Model, wins: list[Window], seeds: int, lr_size: tuple[int, int]) -> float:
    """What one group's pass costs, in pixels: its crop's area × (the forward + about two per seed)."""
    crop = choose_crop(model.receptive_field, [(w.x, w.y, w.size) for w in wins], model.scale, lr_size)
    h, w = crop.size if crop is not None else lr_size
    return float(h * w * (1 + 2 * seeds))


def plan_sharing(model: Model, wins: list[Window], options: LamOptions, lr_size: tuple[int, int],
                 fixed_program: bool = False) -> Sharing:
    """Colour `wins` when that saves work; the colouring (or the reason there is none) either way."""
    if len(wins) < 2:
        return Sharing(False, "one window")
    if fixed_program:
        return Sharing(False, "an exported program (--program) has its own window count")
    if not options.crop or options.context is not None:
        return Sharing(False, "--no-crop or --context: every window seeds its own pass")
    rf = None if model.info.fixed_size else model.receptive_field
    if rf is None or rf.global_ or rf.reach is None or rf.period is None:
        why = rf.reason if rf is not None and rf.global_ else "no exact receptive field"
        return Sharing(False, f"global network ({why}): every window depends on the whole image")
    plan = model.plan(options.fold, *lr_size, MAX_WINDOWS)
    if plan.footprint is not None and plan.batch == 0:
        return Sharing(False, "a whole-image pass does not fit the memory limit: windows keep their own crops")
    boxes = tuple(dependence_box(rf, (w.x, w.y, w.size), model.scale, lr_size) for w in wins)
    colours = tuple(colour(boxes))
    members = classes(colours)
    alone = sum(_cost(model, wins[i:i + MAX_WINDOWS], len(wins[i:i + MAX_WINDOWS]), lr_size)
                for i in range(0, len(wins), MAX_WINDOWS))
    together = sum(_cost(model, [wins[j] for c in members[i:i + MAX_WINDOWS] for j in c], len(members[i:i + MAX_WINDOWS]),
                         lr_size) for i in range(0, len(members), MAX_WINDOWS))
    used = len(members) < len(wins) and together < alone
    reason = (f"{len(wins)} windows in {len(members)} passes (disjoint dependence boxes share one)" if used
              else f"sharing would not save work ({len(members)} colours for {len(wins)} windows)")
    return Sharing(used, reason, colours, boxes, (alone, together))


def class_masks(masks: np.ndarray, members: list[list[int]]) -> np.ndarray:
    """One mask per colour: the sum of its windows' masks (disjoint windows: still 0 or 1)."""
    return np.stack([masks[m].sum(axis=0) for m in members]).astype(np.float32)


def cut(attribution: np.ndarray, box: Box) -> np.ndarray:
    """A colour's map (C×h×w) restricted to one window's box, zero elsewhere."""
    top, left, bottom, right = box
    out = np.zeros_like(attribution)
    out[:, top:bottom, left:right] = attribution[:, top:bottom, left:right]
    return out
