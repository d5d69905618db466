"""Video LAM's options: LAM's, and the output frame whose window is analysed."""
from __future__ import annotations

from dataclasses import dataclass

from onnxlam.lam.options import LamOptions, non_negative, option


@dataclass(frozen=True)
class VideoOptions(LamOptions):
    """LAM's options and the output frame K."""

    frame: int | None = option(None, "--frame", "Video SR: the output frame K whose window is analysed (a model "
                               "restoring every frame needs it; a sliding-window model restores the centre).",
                               check=non_negative, types=(int,))

    def lam(self) -> LamOptions:
        """LAM's options among these."""
        return LamOptions(**{n: getattr(self, n) for n in LamOptions.__dataclass_fields__})
