"""CEM as a registered method: forward passes only (no gradient rules needed), one window at a time,
the window taken as the region of interest."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from onnxlam.core.errors import InputError
from onnxlam.lam.result import Window
from onnxlam.methods.base import Column, Method, Progress, model_arguments, part_progress
from onnxlam.methods.cem.options import CemOptions


class CemMethod(Method):
    """The causal effect map (Hu et al., TPAMI 2025): each input block replaced by bank patches, the
    change of the ROI's PSNR its causal effect (see `cem/__init__.py` and docs/CEM-SPEC.md)."""

    name = "cem"
    title = "Causal effect map"
    Options = CemOptions
    prefix = "cem"
    report_names = ("size", "block", "draws", "refine", "tol", "seed", "patches", "bank_size", "task", "noise")
    gradients = False
    shares_passes = False
    path_options = False
    takes_lr = False
    files = ("effect.npy", "psnr_coarse.npy", "psnr_fine.npy", "refined.npy", "result.json", "cem.png", "panel.png")
    picture_file = "panel.png"
    columns = (Column("positive", "CEM +", 0), Column("negative", "CEM −", 0), Column("neutral", "CEM 0", 0),
               Column("effect_range", "CEM range dB", 2, "mean"), Column("reference_psnr", "reference PSNR", 3))
    window_flags = ("--window", "--roi")
    help = ("Causal effect map of an output region (the window as the ROI): which input blocks help or hurt its "
            "PSNR (effect.npy, result.json, cem.png, panel.png).")

    def check(self, options):
        """InputError for --lr (CEM's image is its ground truth) and for extra model inputs; the options
        with the patch folder made absolute (a cluster's workers run elsewhere)."""
        check_inputs(options)
        if options.patches is not None:
            folder = Path(options.patches).expanduser()
            if not folder.is_dir():
                raise InputError(f"--cem-patches {options.patches}: not a folder; give a folder of images to cut "
                                 "patches from")
            options = replace(options, patches=str(folder.absolute()))
        return options

    def open(self, model: str | Path, options, image=None):
        """The loaded model, its ops unchecked (CEM only runs it forward) and no gradient program cached."""
        from onnxlam.engine.model import Model

        return Model(model, check_ops=False, cache=False, **model_arguments(options))

    def attribute(self, model, image, windows: Sequence[Window], options, progress: Progress | None = None) -> list:
        """One `CemResult` per window (its side the ROI's), one after another, on one runner over `model`
        (a loaded `engine.model.Model`, or a path opened with the options' model options)."""
        from onnxlam.engine.model import Model
        from onnxlam.methods.cem.result import Roi
        from onnxlam.methods.cem.runner import CemRunner

        check_inputs(options)
        runner = CemRunner(model if isinstance(model, Model) else self.open(model, options))
        wins = list(windows)
        results = []
        for i, w in enumerate(wins):
            tick = part_progress(progress, i, len(wins))
            results.append(runner.run(image, Roi(w.x, w.y, w.size), options, progress=tick))
        return results

    def write(self, result, out: Path, about: dict | None = None) -> Path:
        from onnxlam.methods.cem.files import write_result

        return write_result(result, out, about)

    def picture(self, result):
        from onnxlam.methods.cem.files import render

        return render(result)["panel.png"]

    def row(self, data: dict) -> dict:
        counts = data["counts"]
        return {"positive": int(counts["positive"]), "negative": int(counts["negative"]),
                "neutral": int(counts["neutral"]), "effect_range": float(data["effect"]["range"]),
                "reference_psnr": float(data["reference_psnr"])}

    def facts(self, result) -> list[tuple[str, str]]:
        s, p, r, crop = result.summary, result.params, result.roi, result.crop
        return [("ROI", f"x={r.x} y={r.y} size={r.size}"),
                ("reference PSNR", f"{result.reference_psnr:.3f} dB"),
                ("blocks", f"{s.positive} positive, {s.negative} negative, {s.neutral} neutral "
                           f"(+ {s.roi_blocks} in the ROI); {int(result.refined.sum())} refined"),
                ("effect range", f"{s.effect_range:.2f} dB  (min {s.minimum:.3f} at {s.argmin}, "
                                 f"max {s.maximum:.3f} at {s.argmax})"),
                ("parameters", f"{p.task}  block {p.block} (input {result.block_input})  draws {p.draws}  "
                               f"refine {p.refine}  tol {p.tol:g}  seed {p.seed}"),
                ("provider", f"{result.provider}  (batch {result.batch_size}, "
                             f"{result.forward_passes} forward passes)"),
                ("crop", "none (the whole input)" if crop is None else
                 f"LR rows {crop.top}–{crop.bottom - 1}, cols {crop.left}–{crop.right - 1} "
                 "(the ROI's receptive field)"),
                ("seconds", f"{result.seconds:.2f}")]


def check_inputs(options) -> None:
    """InputError for --lr (CEM's image is its ground truth) and for extra model inputs."""
    if getattr(options, "lr", False):
        raise InputError("--method cem takes the HR image as its ground truth (the input is its bicubic "
                         "downsampling); --lr does not apply to it: run cem without --lr")
    if options.inputs:
        raise InputError("--method cem does not take --input values (extra model inputs); run cem without --input")


CEM = CemMethod()
