"""The model-parameter randomisation test as a registered method: `onnxlam sanity MODEL IMAGE --window
X Y`, one result per window, in the folder `files.py` writes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from onnxlam.lam.result import Window
from onnxlam.methods.base import Column, Method, Progress
from onnxlam.methods.sanity.options import SanityOptions


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


class SanityMethod(Method):
    """The sanity check of Adebayo et al. (NeurIPS 2018): the attribution's map on networks whose last
    k weight-bearing layers are re-drawn (k = 0, 1, …), compared with the trained network's, next to a
    control explainer that reads no network (see `run.py`)."""

    name = "sanity"
    title = "Sanity check: model-parameter randomisation"
    Options = SanityOptions
    prefix = "sanity"
    gradients = True
    shares_passes = True   # every window of a stage runs on that stage's one network
    files = ("result.json", "sanity.png", "stage-0/attribution.npy", "stage-0/control.npy")
    picture_file = "sanity.png"
    columns = (Column("mprt_stage", "MPRT stage", 0, "mean"),
               Column("final_spearman", "final ρ", 3, "distribution"),
               Column("control_final_spearman", "control final ρ", 3))
    command = True
    help = ("Sanity check (model-parameter randomisation, Adebayo et al. 2018): the map on networks whose "
            "last k layers are re-drawn, compared with the trained one's (Spearman, SSIM), next to an edge "
            "detector that must fail it: stage-K/attribution.npy, result.json, sanity.png.")

    def attribute(self, model, image, windows: Sequence[Window], options, progress: Progress | None = None) -> list:
        from onnxlam.methods.sanity.run import sanity_test

        return sanity_test(model, image, windows, options, progress)

    def write(self, result, out: Path, about: dict | None = None) -> Path:
        from onnxlam.methods.sanity.files import write_sanity

        return write_sanity(result, out, about)

    def picture(self, result):
        from onnxlam.methods.sanity.picture import sanity_picture

        return sanity_picture(result)

    def row(self, data: dict) -> dict:
        stages, control = data.get("stages") or [{}], (data.get("control") or {}).get("stages") or [{}]
        return {"mprt_stage": data.get("independent_at"),
                "final_spearman": (stages[-1].get("spearman") or {}).get("whole"),
                "control_final_spearman": (control[-1].get("spearman") or {}).get("whole")}

    def facts(self, result) -> list[tuple[str, str]]:
        w, last, control = result.window, result.stages[-1], result.control.stages[-1]
        at = result.independent_at
        return [("attribution", result.attribution), ("window", f"x={w.x} y={w.y} size={w.size}"),
                ("stages", f"{len(result.stages) - 1} of {len(result.layers)} weight-bearing layers re-drawn, "
                           f"seed {result.seed}"),
                ("Spearman per stage", "  ".join(_number(s.spearman.whole, 2) for s in result.stages)),
                ("SSIM per stage", "  ".join(_number(s.ssim.whole, 2) for s in result.stages)),
                ("final stage", f"ρ {_number(last.spearman.whole)} (outside the window "
                                f"{_number(last.spearman.outside)}), SSIM {_number(last.ssim.whole)}"),
                ("verdict", f"passes: independent of the weights from stage {at} (ρ < {result.threshold:g})"
                 if at is not None else f"fails: ρ stays ≥ {result.threshold:g} at every stage"),
                ("control (edges)", f"final ρ {_number(control.spearman.whole)}: "
                                    + ("passes (unexpected)" if result.control.passed else "fails, as it must")),
                ("provider", result.provider), ("seconds", f"{result.seconds:.2f}")]


SANITY = SanityMethod()
