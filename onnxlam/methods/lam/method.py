"""LAM as a registered method: its options are `LamOptions`, its windows of one image share every
forward pass and path step, and its folder is `files.py`'s."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from onnxlam.lam.options import LamOptions
from onnxlam.lam.result import Window
from onnxlam.methods.base import Column, Method, Progress

RANGE_KEYS = ("pixels_50", "pixels_90", "pixels_99", "radius_90")


class LamMethod(Method):
    """The local attribution map (Gu & Dong, CVPR 2021): the path-integrated gradient of the window's
    gradient-magnitude detector along the blur path, abs-normalised; DI is its diffusion index."""

    name = "lam"
    title = "Local attribution map"
    Options = LamOptions
    shares_passes = True
    files = ("attribution.npy", "gradient.npy", "result.json", "panel.png")
    columns = (Column("di", "DI", 2, "distribution"), Column("gini", "Gini", 4),
               Column("pixels_50", "px 50%"), Column("pixels_90", "px 90%"), Column("pixels_99", "px 99%"),
               Column("radius_90", "radius 90%", 1, "mean"))
    help = "Local attribution map of a window: arrays, result.json and pictures."
    command = False  # `onnxlam lam` (cli/lam.py): windows, the noise tunnel, programs and frames

    def fingerprint(self, options) -> dict | None:
        return None  # a LAM case's fingerprint is the LAM options themselves

    def attribute(self, model, image, windows: Sequence[Window], options, progress: Progress | None = None,
                  program=None) -> list:
        from onnxlam.methods.lam.run import run_windows

        return run_windows(model, image, windows, options, program=program, progress=progress)

    def write(self, result, out: Path, about: dict | None = None) -> Path:
        from onnxlam.methods.lam.files import write_result

        return write_result(result, out, about)

    def picture(self, result):
        from onnxlam.methods.lam.files import render

        return render(result)["panel.png"]

    def row(self, data: dict) -> dict:
        stats = data.get("range") or {}
        return {"di": float(data["di"]), "gini": float(data["gini"]), **{k: stats.get(k) for k in RANGE_KEYS}}

    def facts(self, result) -> list[tuple[str, str]]:
        w, c = result.window, result.completeness
        rows = [("DI", f"{result.di:.3f}"), ("Gini", f"{result.gini:.5f}"),
                ("window", f"x={w.x} y={w.y} size={w.size}"),
                ("scale", f"×{result.scale}  (LR {result.lr_size[1]}×{result.lr_size[0]})"),
                ("path", f"{result.path}  sigma={result.sigma:g} fold={result.fold} kernel={result.kernel_size}"),
                ("completeness", f"Σ attribution {c.attribution_sum:.5g}  vs  ΔD {c.objective_delta:.5g}"),
                ("NaN gradients", str(result.nan_gradients)),
                ("provider", f"{result.provider}  (batch {result.batch_size})"),
                ("seconds", f"{result.seconds:.2f}")]
        if result.crop is not None:
            rows.append(("crop", result.crop.describe()))
        mem = result.memory
        if mem is not None and mem.measured_peak:
            from onnxlam.core.sizes import format_size

            limit = f" of {format_size(mem.limit)}" if mem.limit else ""
            rows.append(("memory", f"peak {format_size(mem.measured_peak)}{limit} ({mem.counts})"))
        return rows + self.extra_facts(result)

    def extra_facts(self, result) -> list[tuple[str, str]]:
        return []


LAM = LamMethod()
