"""Writing one analysis to disk: arrays, result.json and the pictures of spec §6, all or nothing.

Everything is written into a temporary sibling folder that is renamed into place at the end, so an
interrupted run never leaves a half-written output folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from onnxlam.render import pictures
from onnxlam.core.files import atomic_dir
from onnxlam.lam.result import LamResult
from onnxlam.core.errors import InputError

PICTURES = ("sr.png", "window.png", "lam.png", "lam_blend.png", "kde_blend.png", "panel.png")


def render(result: LamResult) -> dict[str, np.ndarray]:
    """The pictures of spec §6 for `result`, by file name."""
    s, win = result.scale, result.window
    sr = pictures.rgb(result.sr_image)
    reference = pictures.rgb(result.hr_image) if result.hr_image is not None else sr
    lr_up = pictures.upscale_bicubic(pictures.rgb(result.lr_image), s)
    lam = pictures.lam_picture(result.attribution, s)
    lam_blend = pictures.blend(lam, lr_up)
    kde_blend = pictures.blend(pictures.kde_picture(result.attribution, s), lr_up)
    window = pictures.draw_window(reference, win.x, win.y, win.size)
    row = [window, lam, lam_blend, kde_blend, sr]
    tunnel = result.noise_tunnel
    labels = ["HR + window" if result.hr_image is not None else "SR + window",
              f"LAM, {tunnel.kind} x{tunnel.samples}" if tunnel else "LAM",
              "LAM blend", f"KDE blend  DI {result.di:.2f}", "SR"]
    return {"sr.png": sr, "window.png": window, "lam.png": lam, "lam_blend.png": lam_blend,
            "kde_blend.png": kde_blend, "panel.png": pictures.panel(row, labels)}


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; name a folder (it is created)")


def write_result_json(path: Path, data: dict, about: dict | None = None) -> None:
    """`path` ← `data` plus `about` (further top-level keys: a report's "case" and "group"), which may
    not replace `data`'s own keys."""
    clash = set(about or ()) & set(data)
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))} would overwrite the result's own keys")
    path.write_text(json.dumps({**data, **(about or {})}, indent=2) + "\n")


def _write_files(result: LamResult, folder: Path, about: dict | None = None) -> None:
    folder.mkdir(exist_ok=True)
    np.save(folder / "attribution.npy", result.attribution.astype(np.float32))
    np.save(folder / "gradient.npy", result.gradient.astype(np.float32))
    for name, picture in render(result).items():
        pictures.save(str(folder / name), picture)
    write_result_json(folder / "result.json", result.to_json(), about)


def window_folder(result: LamResult) -> str:
    w = result.window
    return f"window-{w.x}-{w.y}-{w.size}"


def write_result(result: LamResult, out: str | Path, about: dict | None = None) -> Path:
    """Write `attribution.npy`, `gradient.npy`, `result.json` and the pictures into folder `out`.

    `about`: further top-level keys of result.json (a report's "case" and "group"); they may not
    replace the result's own keys."""
    return write_results([result], out, about)


def write_results(results: list[LamResult], out: str | Path, about: dict | None = None) -> Path:
    """One result into `out` itself; several into `out/window-X-Y-SIZE/` each. All or nothing."""
    out = Path(out)
    check_out_dir(out)
    with atomic_dir(out) as tmp:
        if len(results) == 1:
            _write_files(results[0], tmp, about)
        else:
            for result in results:
                _write_files(result, tmp / window_folder(result), about)
    return out
