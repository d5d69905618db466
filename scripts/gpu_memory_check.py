"""GPU memory check: a 23-block RRDBNet (random weights) on a 512×512 LR image, on CUDA, under a
memory limit too small for one whole-image step (so onnxlam crops, approximately) and without one.

    bash scripts/gpu_check.sh memory      # on the GPU machine; writes OUT/gpu_memory.json
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.engine.runtime import cuda_available

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_lam import RRDBNet, export  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("GPU_CHECK_QUICK") == "1"


def rrdbnet_under_limit(out: Path, device: str, side: int, fold: int, limit: str, blocks: int = 23) -> dict:
    """A `blocks`-block RRDBNet on a side×side LR image under `--max-memory limit`, then on the whole image
    at batch 1 with no limit: times, crops, predicted and measured memory, and how far the maps differ."""
    torch.manual_seed(0)
    path = out / "rrdbnet.onnx"
    export(RRDBNet(blocks=blocks).eval(), path, size=32)
    photo = Image.open(REPO / "onnxlam" / "data" / "astronaut.png").convert("RGB")
    hr = np.asarray(photo.resize((side * 4, side * 4), Image.BICUBIC))
    window = (side * 2, side * 2)
    report = {"device": device, "lr_side": side, "fold": fold, "window": window, "limit": limit}
    runs = {}
    for name, kwargs, run_kwargs in (("limited", {"max_memory": limit}, {}),
                                     ("whole_image", {"batch_size": 1}, {"crop": False})):
        analyzer = Analyzer(path, device=device, **kwargs)
        t = time.perf_counter()
        result = analyzer.run(hr, window=window, fold=fold, **run_kwargs)
        runs[name] = result
        report[name] = {"seconds": time.perf_counter() - t, "limit": kwargs.get("max_memory"), "di": result.di,
                        "batch": result.batch_size, "crop": result.crop.to_json() if result.crop else None, "memory": result.memory.to_json(),
                        "warnings": result.warnings, "provider": result.provider}
        print(json.dumps(report[name]), flush=True)
        del analyzer
    a, b = runs["limited"], runs["whole_image"]
    report["max_abs_M_diff_crop_vs_whole"] = float(np.abs(a.attribution - b.attribution).max())
    report["di_whole"], report["di_cropped"] = b.di, a.di
    report["di_diff_crop_vs_whole"] = abs(a.di - b.di)
    path.unlink()
    return report


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if cuda_available() else "cpu"
    side, fold, limit = (64, 4, "3G") if QUICK else (512, 20, "8G")
    report = rrdbnet_under_limit(out, device, side, fold, limit, blocks=2 if QUICK else 23)
    (out / "gpu_memory.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("max_abs_M_diff_crop_vs_whole", "di_whole", "di_cropped")}))


if __name__ == "__main__":
    main(sys.argv[1])
