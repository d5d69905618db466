"""Writing one analysis to disk: arrays, result.json and the pictures of spec §6, all or nothing.

Everything is written into a temporary sibling folder that is renamed into place at the end, so an
interrupted run never leaves a half-written output folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import pictures
from .analysis import LamResult
from .errors import InputError

PICTURES = ("sr.png", "window.png", "lam.png", "lam_blend.png", "kde_blend.png", "panel.png")


def _rgb(image_chw: np.ndarray) -> np.ndarray:
    """C×H×W float in [0, 1] (C = 1 or 3) → H×W×3 uint8, clipped."""
    a = np.clip(np.asarray(image_chw, np.float32), 0.0, 1.0).transpose(1, 2, 0)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return pictures.to_uint8(a)


def render(result: LamResult) -> dict[str, np.ndarray]:
    """The pictures of spec §6 for `result`, by file name."""
    s, win = result.scale, result.window
    sr = _rgb(result.sr_image)
    reference = _rgb(result.hr_image) if result.hr_image is not None else sr
    lr_up = pictures.upscale_bicubic(_rgb(result.lr_image), s)
    lam = pictures.lam_picture(result.attribution, s)
    lam_blend = pictures.blend(lam, lr_up)
    kde_blend = pictures.blend(pictures.kde_picture(result.attribution, s), lr_up)
    window = pictures.draw_window(reference, win.x, win.y, win.size)
    row = [window, lam, lam_blend, kde_blend, sr]
    tunnel = result.extra.get("noise_tunnel")
    labels = ["HR + window" if result.hr_image is not None else "SR + window",
              f"LAM, {tunnel['kind']} x{tunnel['samples']}" if tunnel else "LAM",
              "LAM blend", f"KDE blend  DI {result.di:.2f}", "SR"]
    return {"sr.png": sr, "window.png": window, "lam.png": lam, "lam_blend.png": lam_blend,
            "kde_blend.png": kde_blend, "panel.png": pictures.panel(row, labels)}


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; name a folder (it is created)")


def _write_files(result: LamResult, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    np.save(folder / "attribution.npy", result.attribution.astype(np.float32))
    np.save(folder / "gradient.npy", result.gradient.astype(np.float32))
    for name, picture in render(result).items():
        pictures.save(str(folder / name), picture)
    (folder / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")


def window_folder(result: LamResult) -> str:
    w = result.window
    return f"window-{w.x}-{w.y}-{w.size}"


def write_result(result: LamResult, out: str | Path) -> Path:
    """Write `attribution.npy`, `gradient.npy`, `result.json` and the pictures into folder `out`."""
    return write_results([result], out)


def write_results(results: list[LamResult], out: str | Path) -> Path:
    """One result into `out` itself; several into `out/window-X-Y-SIZE/` each. All or nothing."""
    out = Path(out)
    with atomic_folder(out) as tmp:
        if len(results) == 1:
            _write_files(results[0], tmp)
        else:
            for result in results:
                _write_files(result, tmp / window_folder(result))
    return out


@contextlib.contextmanager
def atomic_folder(out: str | Path):
    """A temporary sibling folder to write into, renamed to `out` when the block ends without error
    (replacing an existing folder only then), removed otherwise."""
    out = Path(out)
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, target: Path) -> None:
    """Move folder `new` to `target`, replacing an existing folder only once the new one is complete."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
