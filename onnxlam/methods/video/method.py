"""Video LAM as a registered method: its input is a sequence of frames (a folder, or a list of
files), its result a map per input frame, its folder `write_video_result`'s."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from onnxlam.lam.result import Window
from onnxlam.methods.base import Column, Method, Progress, model_arguments, options_tag, part_progress
from onnxlam.methods.video.options import VideoOptions


class VideoMethod(Method):
    """LAM of a video SR model (Gu & Dong's LAM on T input frames): output frame K's window, one map
    per input frame normalised jointly, their shares of the attribution and the DIs (see `analyzer.py`)."""

    name = "video"
    title = "Video local attribution map"
    Options = VideoOptions
    prefix = "video"
    report_names = ("frame",)
    frames = True
    shares_passes = False
    files = ("maps.npy", "gradient.npy", "sr.png", "strip.png", "result.json")
    picture_file = "strip.png"
    columns = (Column("di", "DI", 2, "distribution"), Column("gini", "Gini", 4),
               Column("di_temporal", "temporal DI", 2, "mean"))
    help = "Video LAM of output frame K's window: a map per input frame, their shares and DIs."

    def fingerprint(self, options) -> dict | None:
        return {"name": self.name, "frame": options.frame}

    def open(self, model: str | Path, options, image=None):
        """A `VideoAnalyzer` for the frames of `image` (a folder, or a list of frames) and `options.frame`."""
        from onnxlam.core.errors import InputError
        from onnxlam.methods.video.analyzer import VideoAnalyzer, frames_of

        if image is None:
            raise InputError("video LAM opens its model for a number of frames: pass the frames as `image`")
        return VideoAnalyzer(model, len(frames_of(image)), options.frame, **model_arguments(options))

    def attribute(self, model, image, windows: Sequence[Window], options, progress: Progress | None = None) -> list:
        """One VideoLamResult per window of output frame K on the frames of `image`; `model` is reopened
        as a VideoAnalyzer where it is not one for that many frames and that frame."""
        from onnxlam.methods.base import image_name
        from onnxlam.methods.video.analyzer import VideoAnalyzer, frames_of

        frames = frames_of(image)
        fits = (isinstance(model, VideoAnalyzer) and model.layout.frames == len(frames)
                and options.frame in (None, model.video.frame))
        if not fits:
            model = self.open(getattr(model, "model_path", model), options, frames)
        wins = list(windows)
        results = []
        for i, w in enumerate(wins):
            tick = part_progress(progress, i, len(wins))
            result = model.run_video(frames, w, w.size, progress=tick, **options.lam().run_arguments())
            if not isinstance(image, (list, tuple)):
                result = result.with_provenance(image=image_name(image))
            results.append(result)
        return results

    def write(self, result, out: Path, about: dict | None = None) -> Path:
        from onnxlam.methods.video.analyzer import write_video_result

        return write_video_result(result, out, about)

    def picture(self, result):
        from onnxlam.methods.video.analyzer import strip

        return strip(result)

    def row(self, data: dict) -> dict:
        return {"di": float(data["di_joint"]), "gini": float(data["gini_joint"]),
                "di_temporal": float(data["di_temporal"])}

    def facts(self, result) -> list[tuple[str, str]]:
        w, c = result.window, result.completeness
        return [("frames", f"{len(result.frames)}  (output frame {result.frame}, {result.layout.output} output)"),
                ("shares", "  ".join(f"{t}: {100 * s:.1f}%" for t, s in enumerate(result.shares))),
                ("DI per frame", "  ".join(f"{t}: {d:.2f}" for t, d in enumerate(result.di_frames))),
                ("DI joint", f"{result.di_joint:.3f}"), ("temporal DI", f"{result.di_temporal:.3f}"),
                ("window", f"x={w.x} y={w.y} size={w.size}"),
                ("scale", f"×{result.scale}  (LR {result.lr_size[1]}×{result.lr_size[0]})"),
                ("completeness", f"Σ attribution {c.attribution_sum:.5g}  vs  ΔD {c.objective_delta:.5g}"),
                ("seconds", f"{result.seconds:.2f}")]

    def default_out(self, model: str, image, window: Window, options=None) -> Path:
        """video-MODEL-NAME-X-Y, NAME the folder's, or the first frame's stem and the frame count; and a
        tag of the options where they are not the defaults."""
        if isinstance(image, (list, tuple)):
            name = Path(str(image[0])).name if len(image) == 1 else f"{Path(str(image[0])).stem}-T{len(image)}"
        else:
            name = Path(str(image)).name
        return Path(f"video-{Path(model).stem}-{name}-{window.x}-{window.y}{options_tag(options)}")


VIDEO = VideoMethod()
