"""The sanity test's folder, all or nothing: result.json, sanity.png and each stage's maps,
`stage-K/attribution.npy` (the attribution's, float32 h×w) and `stage-K/control.npy` (the control's)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxlam.core.files import atomic_dir, check_out_dir, write_result_json
from onnxlam.methods.sanity.picture import sanity_picture
from onnxlam.methods.sanity.result import SanityResult
from onnxlam.render import pictures


def stage_folder(stage: int) -> str:
    return f"stage-{stage}"


def write_sanity(result: SanityResult, out: str | Path, about: dict | None = None) -> Path:
    """The folder of one window's test. `about`: further top-level keys of result.json (a report's
    "case" and "group"); they may not replace the result's own keys."""
    out = Path(out)
    check_out_dir(out)
    with atomic_dir(out) as tmp:
        for k in range(result.maps.shape[0]):
            folder = tmp / stage_folder(k)
            folder.mkdir()
            np.save(folder / "attribution.npy", result.maps[k].astype(np.float32))
            np.save(folder / "control.npy", result.control_maps[k].astype(np.float32))
        write_result_json(tmp / "result.json", result.to_json(), about)
        pictures.save(str(tmp / "sanity.png"), sanity_picture(result))
    return out
