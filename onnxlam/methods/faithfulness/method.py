"""The faithfulness check as a registered method: deletion and insertion curves of a map (LAM's, or a
noise tunnel's) against random orders, and Captum's infidelity and sensitivity-max of the gradient,
one result per window, in the folder `onnxlam faithfulness` writes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from onnxlam.lam.result import Window
from onnxlam.methods.base import Column, Method, Progress
from onnxlam.methods.faithfulness.options import FaithfulnessOptions


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


class FaithfulnessMethod(Method):
    """How faithful a map is to the window's detector: D of the SR output as the map's most important
    LR pixels are blurred away (deletion) or put back into the blurred input (insertion), against
    random orders (see `curves.py`)."""

    name = "faithfulness"
    title = "Faithfulness of an attribution map"
    Options = FaithfulnessOptions
    prefix = "faithfulness"
    gradients = True
    shares_passes = True  # the windows of one image share the map's passes
    path_options = True
    takes_lr = True
    files = ("attribution.npy", "result.json", "faithfulness.png")
    picture_file = "faithfulness.png"
    # per model, the means of the four a reader compares (a table that fits 80 columns); the others per case
    columns = (Column("deletion_auc", "deletion AUC", 3, "mean"), Column("insertion_auc", "insertion AUC", 3, "mean"),
               Column("deletion_z", "deletion z", 2, "mean"), Column("insertion_z", "insertion z", 2, "mean"),
               Column("infidelity", "infidelity", 6), Column("sensitivity_max", "sensitivity max", 4))
    help = ("Faithfulness of a map (LAM's or a noise tunnel's): deletion and insertion curves of the window's "
            "detector against random orders, infidelity and sensitivity-max (attribution.npy, result.json, "
            "faithfulness.png).")
    command = True

    def attribute(self, model, image, windows: Sequence[Window], options, progress: Progress | None = None) -> list:
        """One FaithfulnessResult per window of `image`, the map computed for all windows at once."""
        from onnxlam.methods.faithfulness.run import faithfulness

        return faithfulness(model, image, list(windows), options, progress=progress)

    def write(self, result, out: Path, about: dict | None = None) -> Path:
        from onnxlam.methods.faithfulness.files import write_result

        return write_result(result, out, about)

    def picture(self, result):
        from onnxlam.methods.faithfulness.files import render

        return render(result)

    def row(self, data: dict) -> dict:
        random = data.get("random") or {}
        return {"deletion_auc": data["deletion"]["auc"], "insertion_auc": data["insertion"]["auc"],
                "deletion_z": random.get("deletion_z"), "insertion_z": random.get("insertion_z"),
                "infidelity": data["infidelity"]["value"], "sensitivity_max": data["sensitivity"]["value"]}

    def facts(self, result) -> list[tuple[str, str]]:
        w, rc, reach = result.window, result.random, result.reach
        rows = [("window", f"x={w.x} y={w.y} size={w.size}"),
                ("map", f"{result.map_method}  (DI {result.map_di:.2f})"),
                ("baseline", f"blur sigma={result.sigma:g} kernel={result.kernel_size}  "
                             f"D {result.detector_baseline:.5g} of {result.detector_input:.5g}")]
        for name, curve, mean, std, z in (("deletion", result.deletion, rc.deletion_mean, rc.deletion_std,
                                           rc.deletion_z),
                                          ("insertion", result.insertion, rc.insertion_mean, rc.insertion_std,
                                           rc.insertion_z)):
            rows.append((f"{name} AUC", f"{curve.auc:.4f}  random {_fmt(mean, 4)} ± {_fmt(std, 4)} "
                                        f"({rc.orders} orders)  z {_fmt(z, 2)}"))
        outside = ("global network" if reach.box is None else
                   f"{100 * reach.outside:.1f}% of the LR pixels cannot change D; the map's order reaches them at "
                   f"{_fmt(reach.map_first_outside)}")
        rows += [("receptive field", outside),
                 ("infidelity", f"{result.infidelity.value:.4g}  ({result.infidelity.samples} samples)"),
                 ("sensitivity max", f"{result.sensitivity.value:.4g}  (radius {result.sensitivity.radius:g}, "
                                     f"{result.sensitivity.samples} samples)"),
                 ("forward passes", f"{result.forwards}  (batch {result.batch_size})"),
                 ("provider", result.provider), ("seconds", f"{result.seconds:.2f}")]
        if result.crop is not None:
            rows.append(("crop", result.crop.describe()))
        return rows


FAITHFULNESS = FaithfulnessMethod()
