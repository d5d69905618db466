"""GPU check (run on a machine with an NVIDIA GPU and onnxruntime-gpu): CUDA maps equal CPU maps,
and onnxlam on CUDA against a demo-style PyTorch loop on the same GPU.

    python scripts/gpu_check.py OUT_DIR

Writes OUT_DIR/gpu_results.json. Needs torch (with CUDA) for the reference loop.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.graph.detector import window_mask
from onnxlam.lam.paths import make_path
from onnxlam.engine.runtime import cuda_available

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_memory_check import rrdbnet_under_limit  # noqa: E402
from torch_lam import EDSRBaseline, demo_loop, export  # noqa: E402

import os

REPO = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("GPU_CHECK_QUICK") == "1"  # a dry run of the script itself on a CPU machine
TORCH_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ORT_DEVICE = "cuda" if cuda_available() else "cpu"
FOLD = 4 if QUICK else 50
PHOTO = REPO / "onnxlam" / "data" / "chelsea.png"


def timed(fn, repeat=3):
    times = []
    result = None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return result, float(np.median(times)), times


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
              "cuda_usable": cuda_available(), "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "python": platform.python_version(), "tf32_torch_conv": torch.backends.cudnn.allow_tf32}
    print(json.dumps(report), flush=True)

    # 1. The bundled pretrained network: CUDA map against CPU map.
    cpu = Analyzer(REPO / "exported_models" / "animevideov3-x4.onnx", device="cpu")
    gpu = Analyzer(REPO / "exported_models" / "animevideov3-x4.onnx", device=ORT_DEVICE)
    r_cpu, t_cpu, _ = timed(lambda: cpu.run(PHOTO, window=(120, 72), fold=FOLD), repeat=1 if QUICK else 2)
    r_gpu, t_gpu, _ = timed(lambda: gpu.run(PHOTO, window=(120, 72), fold=FOLD), repeat=1 if QUICK else 3)
    report["animevideov3"] = {
        "provider_gpu": r_gpu.provider, "provider_cpu": r_cpu.provider,
        "di_cpu": r_cpu.di, "di_gpu": r_gpu.di, "max_abs_M_diff": float(np.abs(r_cpu.attribution - r_gpu.attribution).max()),
        "max_rel_A_diff": float(np.abs(r_cpu.gradient - r_gpu.gradient).max() / np.abs(r_cpu.gradient).max()),
        "seconds_cpu_median": t_cpu, "seconds_gpu_median": t_gpu, "batch_gpu": r_gpu.batch_size}
    print(json.dumps(report["animevideov3"]), flush=True)

    # 2. EDSR-baseline size at LR 48×48, fold 50: onnxlam (CUDA) against the demo loop (PyTorch, same GPU).
    torch.manual_seed(0)
    net = EDSRBaseline(blocks=2 if QUICK else 16).eval()
    onnx_path = out / "edsr_baseline.onnx"
    export(net, onnx_path)
    from PIL import Image
    hr = np.asarray(Image.open(PHOTO))[:192, :192]
    window = (90, 80)
    results = {}
    for batch in ((4,) if QUICK else (10, 25, 50)):
        an = Analyzer(onnx_path, device=ORT_DEVICE, batch_size=batch)
        res, t, ts = timed(lambda: an.run(hr, window=window, fold=FOLD), repeat=1 if QUICK else 3)
        results[f"onnxlam_cuda_batch{batch}"] = {"median_s": t, "runs_s": ts, "di": res.di}
    an_cpu = Analyzer(onnx_path, device="cpu")
    res_cpu, t_cpu2, ts_cpu2 = timed(lambda: an_cpu.run(hr, window=window, fold=FOLD), repeat=1 if QUICK else 2)
    results["onnxlam_cpu_16cores"] = {"median_s": t_cpu2, "runs_s": ts_cpu2, "di": res_cpu.di}
    lr = res_cpu.lr_image
    mask = window_mask(192, 192, window[0], window[1], 16)

    def reference():
        steps = make_path(lr, "blur", 1.2, FOLD, 9)
        return demo_loop(net, steps.images, steps.derivatives, mask, TORCH_DEVICE)

    A_ref, t_ref, ts_ref = timed(reference, repeat=1 if QUICK else 3)
    from onnxlam.lam.metrics import abs_normalise, diffusion_index
    M_ref = abs_normalise(A_ref)
    best = min(v["median_s"] for k, v in results.items() if k.startswith("onnxlam_cuda"))
    res_gpu = Analyzer(onnx_path, device=ORT_DEVICE, batch_size=10).run(hr, window=window, fold=FOLD)
    results["torch_demo_loop_cuda"] = {"median_s": t_ref, "runs_s": ts_ref, "di": diffusion_index(M_ref)}
    results["speedup_best_cuda_vs_torch"] = t_ref / best
    results["max_abs_M_diff_cuda_vs_torch"] = float(np.abs(res_gpu.attribution - M_ref).max())
    results["max_abs_M_diff_cuda_vs_cpu"] = float(np.abs(res_gpu.attribution - res_cpu.attribution).max())
    results["di_diff_cuda_vs_torch"] = abs(res_gpu.di - diffusion_index(M_ref))
    # auto batch: planned from the measured device memory (no --batch-size)
    an_auto = Analyzer(onnx_path, device=ORT_DEVICE)
    res_auto, t_auto, ts_auto = timed(lambda: an_auto.run(hr, window=window, fold=FOLD), repeat=1 if QUICK else 3)
    results["onnxlam_cuda_auto"] = {"median_s": t_auto, "runs_s": ts_auto, "batch": res_auto.batch_size,
                                    "memory": res_auto.memory.to_json(),
                                    "max_abs_M_diff_vs_cpu": float(np.abs(res_auto.attribution - res_cpu.attribution).max())}
    results["speedup_auto_cuda_vs_torch"] = t_ref / t_auto
    report["edsr_baseline_48"] = results
    print(json.dumps(results), flush=True)
    (out / "gpu_results.json").write_text(json.dumps(report, indent=2))
    onnx_path.unlink()

    # 3. A 23-block RRDBNet (Real-ESRGAN x4plus's generator, random weights) on a 512×512 LR image
    #    within 24 GiB of device memory (see scripts/gpu_memory_check.py for one that must crop).
    report["rrdbnet_512"] = rrdbnet_under_limit(out, ORT_DEVICE, 64 if QUICK else 512, FOLD, "3G" if QUICK else "24G",
                                                blocks=2 if QUICK else 23)
    (out / "gpu_results.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
