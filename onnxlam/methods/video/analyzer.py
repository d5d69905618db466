"""LAM for video SR networks: which input frames, and where in them, one output frame's window draws on.

The method is LAM (Gu & Dong, CVPR 2021; LAM-SPEC) applied to a T-frame input, the natural extension
the paper's framework allows for the multi-frame networks it did not treat (sliding window: EDVR,
Wang et al. 2019; recurrent: BasicVSR, Chan et al. 2021). With frames `x = (x_0 … x_{T−1})`, each
C×h×w and prepared as a single image (spec §1), and `F_K` the network's output frame K:

- path (spec §3): every frame is blurred along the path, `x_{t,k} = K(σ_{k+1}) ⊛ x_t`, with its own
  `dλ_{t,k}`; frames are never mixed by the path (the blur is per channel of the stacked T·C channels);
- detector (spec §2): D on output frame K's window (for a sliding-window model the one frame it
  restores, the centre K = T//2);
- attribution (spec §4): `A_t = (1/n) Σ_k ∇_{x_t} D(F_K(x_k)) ⊙ dλ_{t,k}`, C×h×w per frame;
- per-frame maps, normalised jointly so that frames compare: `S_t = |Σ_c A_t|`,
  `M_t = S_t / (max_{t,i,j} S + 1e-5)` (spec §4's abs-normalisation over all frames at once);
- mass shares: `share_t = Σ_ij M_t / Σ_{t,ij} M` (sum 1): how much of the attribution each frame holds;
- `di_frames[t]`: the spec §5 DI of frame t's map normalised on its own, `abs_normalise(A_t)`, which is
  exactly the single-image DI of that frame (DI is scale-free up to the spec's 1e-7);
- `di_joint`: the DI of the joint map (all T·h·w pixels): the spread over space and time together;
- `di_temporal = (1 − Gini(shares)) · 100` with the spec §5 Gini: the spread over time alone. It is
  100 when every frame holds the same share and 100/T when one frame holds everything. It is kept
  apart from `di_joint` because the joint DI mixes the two: a model drawing on one frame over a wide
  area and one drawing on every frame at a point can have the same joint DI.

The engine does the work: `graph.video.adapt_video` turns the video model into a one-image model
(N×(T·C)×h×w → N×C×H×W, per-frame pixel conventions inside), and `VideoAnalyzer` is LAM's
`Analyzer` with frames in place of an image.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

import numpy as np

from onnxlam.core.errors import InputError
from onnxlam.core.files import write_result_dir
from onnxlam.graph.video import VideoLayout, open_video_model
from onnxlam.lam.metrics import abs_normalise, diffusion_index, gini
from onnxlam.lam.options import LamOptions
from onnxlam.lam.result import Window
from onnxlam.methods.base import image_name
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.methods.lam.result import PathResult
from onnxlam.methods.video.options import VideoOptions

if TYPE_CHECKING:
    from onnxlam.engine.cropping import Crop

D = LamOptions()
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class VideoLamResult(PathResult):
    """Everything one video LAM analysis produced; `to_json()` is what `result.json` holds. Its `sr_image`
    and `hr_image` are output frame K's; its provenance's options are `VideoOptions`."""

    method: ClassVar[str] = "video"

    maps: np.ndarray = field(metadata={"array": True})       # M, float32 T×h×w, normalised jointly
    gradient: np.ndarray = field(metadata={"array": True})   # A, float32 T×C×h×w, signed
    frames: tuple[str, ...]          # the input frames, in order
    frame: int                       # K, the output frame whose window is analysed
    layout: VideoLayout
    shares: tuple[float, ...]        # attribution mass per input frame (sum 1)
    di_frames: tuple[float, ...]     # DI of each frame's own map
    di_joint: float                  # DI of the joint T·h·w map
    gini_joint: float
    di_temporal: float               # (1 − Gini(shares)) · 100
    lr_frames: np.ndarray = field(metadata={"array": True})  # float32 T×C×h×w in [0, 1], RGB
    warnings: tuple[str, ...] = ()
    crop: Crop | None = None         # the LR box analysed, where not the whole frame


def frame_metrics(attribution: np.ndarray) -> dict:
    """The per-frame figures of the module docstring from A (T×C×h×w): maps, shares and the DIs."""
    a = np.asarray(attribution, np.float32)
    t, c, h, w = a.shape
    # abs_normalise over the T frames stacked as rows: one max for all frames, spec §4 as is
    joint = abs_normalise(a.transpose(1, 0, 2, 3).reshape(c, t * h, w)).reshape(t, h, w)
    mass = joint.astype(np.float64).sum(axis=(1, 2))
    total = mass.sum()
    shares = mass / total if total > 0 else np.zeros(t)
    return dict(maps=joint, shares=tuple(float(s) for s in shares),
                di_frames=tuple(diffusion_index(abs_normalise(a[i])) for i in range(t)),
                di_joint=diffusion_index(joint), gini_joint=gini(joint),
                di_temporal=(1.0 - gini(shares)) * 100.0, zero=not total > 0)


def _natural(path: Path) -> list:
    """Sort key of a file name with its runs of digits compared as numbers (frame2 before frame10)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


def frame_files(items: Sequence[str | Path]) -> list[Path]:
    """The frames named on the command line: the files as given, or one folder's images sorted by name
    (runs of digits by value: frame2 before frame10; other files left out)."""
    paths = [Path(p) for p in items]
    if len(paths) == 1 and paths[0].is_dir():
        found = sorted((p for p in paths[0].iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=_natural)
        if not found:
            raise InputError(f"the folder {paths[0]} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return found
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise InputError(f"{folders[0]} is a folder; give either one folder of frames or frame files")
    return paths


def frames_of(image) -> list:
    """The frames a method's `image` names: one folder's images or the files of a list (`frame_files`),
    as strings; a list of arrays as given."""
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    if all(isinstance(item, (str, Path)) for item in items):
        return [str(p) for p in frame_files(items)]
    return items


class VideoAnalyzer(Analyzer):
    """A video model ready to analyse T frames: `VideoAnalyzer("vsr.onnx", frames=5).run_video(files, (x, y))`.

    `frame` is the output frame K (required for a model returning every frame; a sliding-window
    model restores the centre). `value_range` / `bgr` describe each frame as the file expects it."""

    def __init__(self, model: str | Path, frames: int, frame: int | None = None, *, device: str = D.device,
                 value_range: float | None = D.value_range, bgr: bool | None = D.bgr,
                 batch_size: int | None = D.batch_size, cache: bool = True,
                 max_memory: int | str | None = D.max_memory, inputs: dict[str, float] | tuple | None = None):
        if inputs:
            raise InputError("video LAM takes no --input: a video model's only input is its frames")
        LamOptions(device=device, value_range=value_range).validate()
        self.video = open_video_model(model, frames, frame, value_range, bgr)
        self.frame_given = frame
        # the adapted model does the per-frame conversions: the one-image normalisation is the identity
        super().__init__((self.video.model, self.video.info), device=device, value_range=1.0, bgr=False,
                         batch_size=batch_size, cache=cache, max_memory=max_memory)
        self.given.update(value_range=value_range, bgr=bgr)  # the file's per-frame options, as given

    @property
    def layout(self) -> VideoLayout:
        return self.video.layout

    def prepare(self, frames, lr: bool = False, channels: int | None = None):
        """The stacked LR frames ((T·C)×h×w, each prepared as one image, spec §1) and frame K's HR."""
        items = list(frames) if isinstance(frames, (list, tuple)) else [frames]
        T, C = self.layout.frames, self.layout.channels
        if len(items) != T:
            raise InputError(f"{len(items)} frames given; this analysis is for {T}")
        parts = [super(VideoAnalyzer, self).prepare(f, lr, channels=C) for f in items]
        first = parts[0][0].shape[1:]
        for item, (x, _) in zip(items, parts):
            if x.shape[1:] != first:
                raise InputError(f"frame {image_name(item)} gives LR {x.shape[2]}×{x.shape[1]}, frame "
                                 f"{image_name(items[0])} {first[1]}×{first[0]}: every frame must have one size")
        return np.concatenate([x for x, _ in parts]), parts[self.video.frame][1]

    def run_video(self, frames: Sequence[str | Path | np.ndarray], window: tuple[int, int] | Window,
                  size: int = D.size, *, lr: bool = D.lr, path: str = D.path, sigma: float = D.sigma,
                  fold: int = D.fold, kernel_size: int = D.kernel_size,
                  progress: Callable[[int, int], None] | None = None, crop: bool = D.crop,
                  context: int | None = D.context) -> VideoLamResult:
        """Video LAM of output frame K's window at `window` = (x, y) (SR pixels, top-left) of side `size`."""
        frames = list(frames)
        r = self.run_windows(frames, [window], size, lr=lr, path=path, sigma=sigma, fold=fold,
                             kernel_size=kernel_size, progress=progress, crop=crop, context=context)[0]
        T, C = self.layout.frames, self.layout.channels
        h, w = r.lr_size
        A = r.gradient.reshape(T, C, h, w)
        m = frame_metrics(A)
        notes = tuple(r.warnings) + (("the window's attribution is zero in every frame: the shares are 0",)
                                     if m["zero"] else ())
        options = VideoOptions(**{f.name: getattr(r.provenance.options, f.name) for f in fields(LamOptions)},
                               frame=self.frame_given)
        provenance = replace(r.provenance, model_sha256=self.video.file_sha256,
                             image=", ".join(image_name(f) for f in frames), options=options)
        return VideoLamResult(
            maps=m["maps"], gradient=A, frames=tuple(image_name(f) for f in frames), frame=self.video.frame,
            layout=self.layout, shares=m["shares"], di_frames=m["di_frames"], di_joint=m["di_joint"],
            gini_joint=m["gini_joint"], di_temporal=m["di_temporal"], window=r.window, scale=r.scale,
            lr_size=r.lr_size, path=r.path, sigma=r.sigma, fold=r.fold, kernel_size=r.kernel_size,
            completeness=r.completeness, nan_gradients=r.nan_gradients,
            lr_frames=r.lr_image.reshape(T, C, h, w), sr_image=r.sr_image, hr_image=r.hr_image,
            provenance=provenance, batch_size=r.batch_size, value_range=self.video.value_range,
            channel_order=self.video.channel_order, warnings=notes, crop=r.crop)


def analyze_video(model: str | Path, frames: Sequence[str | Path | np.ndarray], window: tuple[int, int],
                  frame: int | None = None, size: int = D.size, **options) -> VideoLamResult:
    """One-call form: `VideoAnalyzer(model, len(frames), frame).run_video(frames, window, size)`.

    `options`: the model options of `VideoAnalyzer` (device, value_range, bgr, batch_size, max_memory, cache)
    and the run options of `run_video` (lr, path, sigma, fold, kernel_size, crop, context, progress)."""
    model_keys = {"device", "value_range", "bgr", "batch_size", "max_memory", "cache", "inputs"}
    analyzer = VideoAnalyzer(model, len(frames), frame, **{k: v for k, v in options.items() if k in model_keys})
    return analyzer.run_video(frames, window, size, **{k: v for k, v in options.items() if k not in model_keys})


# --- pictures and the output folder ---------------------------------------------------------------

def strip(result: VideoLamResult) -> np.ndarray:
    """The picture strip: output frame K with the window, then each input frame with its map blended
    over it (spec §6 blend; jointly normalised, so colours compare across frames) and its share."""
    from onnxlam.render import pictures

    s, win = result.scale, result.window
    reference = result.hr_image if result.hr_image is not None else result.sr_image
    row = [pictures.draw_window(pictures.rgb(reference), win.x, win.y, win.size)]
    labels = [f"frame {result.frame} + window"]
    for t in range(result.maps.shape[0]):
        lr_up = pictures.upscale_bicubic(pictures.rgb(result.lr_frames[t]), s)
        row.append(pictures.blend(pictures.lam_picture(result.maps[t], s), lr_up))
        labels.append(f"frame {t}: {100 * result.shares[t]:.1f}%  DI {result.di_frames[t]:.1f}")
    return pictures.panel(row, labels)


def write_video_result(result: VideoLamResult, out: str | Path, about: dict | None = None) -> Path:
    """`maps.npy` (T×h×w), `gradient.npy` (T×C×h×w), `sr.png`, `strip.png` and `result.json` into `out`,
    all or nothing. `about`: further top-level keys of result.json (a report's "case" and "group")."""
    from onnxlam.render import pictures

    return write_result_dir(out, result.to_json(), about,
                            arrays={"maps.npy": result.maps.astype(np.float32),
                                    "gradient.npy": result.gradient.astype(np.float32)},
                            pictures={"sr.png": pictures.rgb(result.sr_image), "strip.png": strip(result)})
