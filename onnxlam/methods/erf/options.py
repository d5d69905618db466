"""The ERF's options: the model's, the output window's side and whether the images are LR inputs."""
from __future__ import annotations

from dataclasses import dataclass

from onnxlam.lam.options import ModelOptions, at_least, option


@dataclass(frozen=True)
class ErfOptions(ModelOptions):
    """The model's options (`ModelOptions`) and the ERF's own."""

    size: int = option(1, "--size", "Window side in SR pixels (1: one output pixel).", check=at_least(1),
                       types=(int,))
    lr: bool = option(False, "--lr", "IMAGE is the LR input: use it as is.", types=(bool,),
                      optional_flag="--lr/--hr")
