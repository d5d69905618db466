"""Memory benchmark: a 512×512 LR image through a 23-block RRDBNet (realesrgan-x4plus) within a limit.

    python scripts/fetch_models.py            # realesrgan-x4plus.onnx (67 MB), once
    python scripts/bench_memory.py [--max-memory 16G] [--fold 4] [--side 512]

One step of the gradient program on the whole 512×512 LR image needs about 37 GB (measured by the
probes), so onnxlam crops around the window to the largest region that fits and says so. The run is
a whole `onnxlam lam` process; its resident set is sampled from outside every millisecond. Writes
benchmarks/memory_cpu.json (BENCHMARKS.md's memory section is made from it by scripts/bench.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onnxlam.engine.memory import Footprint, Probe, ProcessPeak, parse_size  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--side", type=int, default=512, help="LR side")
    parser.add_argument("--fold", type=int, default=4)
    parser.add_argument("--max-memory", default="16G")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "memory_cpu.json"))
    parser.add_argument("--cache", help="program cache to use (default: a fresh one, so probes and builds count)")
    args = parser.parse_args()
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="onnxlam-membench-"))
    hr = work / "hr.png"
    photo = Image.open(REPO / "onnxlam" / "data" / "astronaut.png").convert("RGB")
    photo.resize((args.side * 4, args.side * 4), Image.BICUBIC).save(hr)
    window = (args.side * 2, args.side * 2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "ONNXLAM_CACHE": args.cache or str(work / "cache")}
    argv = [sys.executable, "-m", "onnxlam", "lam", args.model, str(hr), "--window", *map(str, window),
            "--fold", str(args.fold), "--device", "cpu", "--max-memory", args.max_memory, "--json",
            "--out", str(work / "out")]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = ProcessPeak(proc.pid)
    out, err = proc.communicate()
    peak = sampler.stop()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"onnxlam failed ({proc.returncode}): {err[-2000:]}")
    result = json.loads(out)
    import onnxruntime

    record = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "onnxruntime": onnxruntime.__version__, "model": args.model, "lr_side": args.side,
              "fold": args.fold, "window": list(window), "max_memory": args.max_memory,
              "limit_bytes": parse_size(args.max_memory), "seconds": seconds,
              "sampled_peak_rss": peak, "in_process_seconds": result["seconds"], "di": result["di"],
              "crop": result["crop"], "batch_size": result["batch_size"], "memory": result["memory"],
              "warnings": result["warnings"], "receptive_field": result["receptive_field"],
              "whole_image_step": Footprint(tuple(Probe(**p) for p in result["memory"]["probes"])).peak(
                  1, args.side ** 2),
              "stderr": err.strip().splitlines()[-3:]}
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
