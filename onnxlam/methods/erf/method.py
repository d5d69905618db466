"""The effective receptive field as a registered method: one ERF per window, on one image or
averaged over several, in the folder `onnxlam erf` writes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from onnxlam.lam.result import Window
from onnxlam.methods.base import Column, Method, Progress, options_tag, part_progress
from onnxlam.methods.erf.options import ErfOptions


class ErfMethod(Method):
    """The effective receptive field (Luo et al., NeurIPS 2016): Σ_c |∂ window intensity / ∂ input|,
    each image's map normalised to unit mass, averaged over the images (see `field.py`)."""

    name = "erf"
    title = "Effective receptive field"
    Options = ErfOptions
    prefix = "erf"
    report_names = ()    # a report's --lr and --size apply
    gradients = True
    shares_passes = False
    path_options = False
    takes_lr = True
    files = ("erf.npy", "result.json", "erf.png")
    picture_file = "erf.png"
    columns = (Column("pixels_50", "px 50%"), Column("pixels_90", "px 90%"), Column("pixels_99", "px 99%"),
               Column("radius_90", "radius 90%", 1, "mean"))  # LAM's range columns, in the same places
    window_flags = ("--pixel",)
    command = False  # `onnxlam erf` (cli/methods.py): its input is many images
    help = ("Effective receptive field: |∂ output window / ∂ input| averaged over images (erf.npy, "
            "result.json, erf.png), with the radii holding 50/90/99% of it next to the static receptive field.")

    def fingerprint(self, options) -> dict | None:
        return {"name": self.name}

    def attribute(self, model, image, windows: Sequence[Window], options, progress: Progress | None = None) -> list:
        """One ErfResult per window on `image` (a list of images: one ERF averaged over them); a window
        of None is the centre one of side `options.size`."""
        from onnxlam.methods.erf.field import effective_receptive_field

        model.check_ops()
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        wins = list(windows)
        results = []
        for i, w in enumerate(wins):
            tick = part_progress(progress, i, len(wins))
            results.append(effective_receptive_field(model, images, None if w is None else (w.x, w.y),
                                                     options.size if w is None else w.size, lr=options.lr,
                                                     progress=tick))
        return results

    def write(self, result, out: Path, about: dict | None = None) -> Path:
        from onnxlam.methods.erf.field import write_erf

        return write_erf(result, out, about)

    def picture(self, result):
        from onnxlam.methods.erf.field import erf_picture

        return erf_picture(result)

    def row(self, data: dict) -> dict:
        pixels, radii = data["pixels"], data["radii"]
        return {"pixels_50": pixels["50"], "pixels_90": pixels["90"], "pixels_99": pixels["99"],
                "radius_90": radii["90"]}

    def facts(self, result) -> list[tuple[str, str]]:
        w, r, p, c = result.window, result.radii, result.pixels, result.centre
        static = ("global" if result.static_radius is None else
                  f"radius {result.static_radius:.2f} LR px, box {result.static_pixels} px")
        return [("window", f"x={w.x} y={w.y} size={w.size}  (LR centre {c[0]:.2f}, {c[1]:.2f})"),
                ("images", str(len(result.images))),
                ("radius 50/90/99%", f"{r['50']:.2f} / {r['90']:.2f} / {r['99']:.2f} LR px"),
                ("pixels 50/90/99%", f"{p['50']} / {p['90']} / {p['99']}"),
                ("static receptive field", static),
                ("provider", result.provider), ("seconds", f"{result.seconds:.2f}")]

    def default_out(self, model: str, image: str, window: Window, options=None) -> Path:
        return Path(f"erf-{Path(model).stem}{options_tag(options)}")


ERF = ErfMethod()
