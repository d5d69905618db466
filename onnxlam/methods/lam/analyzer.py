"""LAM on one loaded model, as scripts call it: `Analyzer("model.onnx").run("photo.png", window=(x, y))`.

`Analyzer` is an `engine.model.Model` (opened, inspected and normalised once; its programs and
memory plans kept) with LAM's two calls; `analyze` is the one-call form. Both take LAM's options
as keywords, with `LamOptions`' defaults; `onnxlam.attribute` is the same for every method.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from onnxlam.engine.model import Model
from onnxlam.lam.options import LamOptions
from onnxlam.lam.result import Window
from onnxlam.methods.base import windows_of
from onnxlam.methods.lam import run
from onnxlam.methods.lam.result import LamResult

D = LamOptions()  # the defaults of the keyword arguments below


class Analyzer(Model):
    """One model, ready to analyse images with LAM."""

    def lam_options(self, **run_options) -> LamOptions:
        """LamOptions of this model's options as given and the run's `run_options`."""
        given = {k: v for k, v in self.given.items() if k != "inputs"}
        return replace(LamOptions(), inputs=tuple(sorted(self.inputs.items())), **given, **run_options)

    def run(self, image: str | Path | np.ndarray, window: tuple[int, int] | Window, size: int = D.size, *,
            lr: bool = D.lr, path: str = D.path, sigma: float = D.sigma, fold: int = D.fold,
            kernel_size: int = D.kernel_size, program=None, progress: Callable[[int, int], None] | None = None,
            crop: bool = D.crop, context: int | None = D.context, lr_input: np.ndarray | None = None) -> LamResult:
        """LAM of the window at `window` = (x, y) (SR pixels, top-left) of side `size` on `image`."""
        return self.run_windows(image, [window], size, lr=lr, path=path, sigma=sigma, fold=fold,
                                kernel_size=kernel_size, program=program, progress=progress, crop=crop,
                                context=context, lr_input=lr_input)[0]

    def run_windows(self, image: str | Path | np.ndarray, windows: Sequence[tuple[int, int] | Window],
                    size: int = D.size, *, lr: bool = D.lr, path: str = D.path, sigma: float = D.sigma,
                    fold: int = D.fold, kernel_size: int = D.kernel_size, program=None,
                    progress: Callable[[int, int], None] | None = None, crop: bool = D.crop,
                    context: int | None = D.context, lr_input: np.ndarray | None = None) -> list[LamResult]:
        """LAM of several windows of one image (see `methods.lam.run.run_windows`)."""
        options = self.lam_options(size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                                   crop=crop, context=context).validate()
        return run.run_windows(self, image, windows_of(windows, size), options, program=program,
                               progress=progress, lr_input=lr_input)


def analyze(model: str | Path, image: str | Path | np.ndarray, window: tuple[int, int], size: int = D.size, *,
            lr: bool = D.lr, path: str = D.path, sigma: float = D.sigma, fold: int = D.fold,
            kernel_size: int = D.kernel_size, batch_size: int | None = D.batch_size, device: str = D.device,
            value_range: float | None = D.value_range, bgr: bool | None = D.bgr, program: str | Path | None = None,
            progress: Callable[[int, int], None] | None = None, crop: bool = D.crop,
            context: int | None = D.context, max_memory: int | str | None = D.max_memory,
            inputs: dict[str, float] | None = None) -> LamResult:
    """Local attribution map of `model` for the window at `window` = (x, y) of side `size` on `image`.

    See `Analyzer.run`; this builds an Analyzer for a single call. `model` is resolved as the command
    line resolves it: a file, a collection name or a PyTorch checkpoint. `inputs` fixes a model's extra
    inputs ({name: value}, broadcast to the input's shape; see `graph.model.bind_inputs`).
    """
    from onnxlam.convert.collection import resolve_model

    model = resolve_model(str(model), image=image if isinstance(image, (str, Path)) else None, lr=lr)
    analyzer = Analyzer(model, device=device, value_range=value_range, bgr=bgr, batch_size=batch_size,
                        max_memory=max_memory, inputs=inputs)
    return analyzer.run(image, window, size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                        program=program, progress=progress, crop=crop, context=context)
