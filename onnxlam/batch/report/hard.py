"""A report's `--windows hard:K`: each image's K hardest windows (`lam.hard_windows`) instead of fixed ones.

The windows are chosen on the HR image once per image, the same for every model, so that the models'
DI are compared on the same places. The image is first cropped (from the top-left, as every model's
input is) to a multiple of every model's scale: each model's SR output is at least that large, so a
window chosen there fits every model's output.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

from onnxlam.core.errors import OnnxlamError
from onnxlam.lam.hard_windows import image_windows


@functools.lru_cache(maxsize=64)
def _model_scale(path: str) -> int:
    from onnxlam.engine.model import Model  # lazily: onnxruntime

    try:
        return int(Model(path).scale)
    except OnnxlamError:  # the model's cases fail with their own message; it constrains nothing here
        return 1


def common_scale(models: Sequence[str], resolve_model=None) -> int:
    """The least common multiple of the models' scales (models as given, `resolve_model` to their files)."""
    scale = 1
    for m in models:
        scale = math.lcm(scale, _model_scale(resolve_model(m) if resolve_model else m))
    return scale


def hard_json(images: Sequence[str], size: int, k: int, align: int) -> dict:
    """results.json's "hard_windows": K, the alignment and each image's windows with their scores."""
    return {"k": k, "size": size, "align": align,
            "images": {image: [w.to_json() for w in image_windows(image, size, k, align)] for image in images}}
