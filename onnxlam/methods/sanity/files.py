"""The sanity test's folder, all or nothing: result.json, sanity.png and each stage's maps,
`stage-K/attribution.npy` (the attribution's, float32 h×w) and `stage-K/control.npy` (the control's)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxlam.core.files import write_result_dir
from onnxlam.methods.sanity.picture import sanity_picture
from onnxlam.methods.sanity.result import SanityResult


def stage_folder(stage: int) -> str:
    return f"stage-{stage}"


def write_sanity(result: SanityResult, out: str | Path, about: dict | None = None) -> Path:
    """The folder of one window's test. `about`: further top-level keys of result.json (a report's
    "case" and "group"); they may not replace the result's own keys."""
    arrays = {}
    for k in range(result.maps.shape[0]):
        arrays[f"{stage_folder(k)}/attribution.npy"] = result.maps[k].astype(np.float32)
        arrays[f"{stage_folder(k)}/control.npy"] = result.control_maps[k].astype(np.float32)
    return write_result_dir(out, result.to_json(), about, arrays=arrays, pictures={"sanity.png": sanity_picture(result)})
