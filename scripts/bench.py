"""CPU benchmarks: onnxlam against the demo-style PyTorch loop, and against the forward pass alone.

    python scripts/bench.py [--runs 3] [--out BENCHMARKS.md]

Every timing is a whole process (imports, model loading, path, integration; the gradient program
comes from a cache warmed beforehand, as on any second run), started in this one run so the ratios
compare like with like on the same machine. Peak memory is each process's maximum resident set.
Cases:
  A. EDSR-baseline size (64 channels, 16 blocks, ×4) at LR 48×48, fold 50, one 16×16 window;
  B. the same network at LR 128×128 (onnxlam crops exactly to the window's receptive field);
  C. four windows sharing each forward pass, against four separate runs.
The maps are compared too: onnxlam's against the PyTorch loop's (max |ΔM|, |ΔDI|).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "onnxlam" / "data" / "astronaut.png"
WINDOW = (88, 96)
FOUR = [(40, 40), (88, 96), (150, 60), (120, 150)]


# --- workers (run as separate processes) -----------------------------------------------------

def worker_torch(model_dir: str, hr: str, x: int, y: int, fold: int) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_lam import EDSRBaseline, demo_loop

    from onnxlam.detector import window_mask
    from onnxlam.image import prepare_lr, read_image
    from onnxlam.metrics import abs_normalise, diffusion_index
    from onnxlam.paths import make_path

    torch.set_num_threads(os.cpu_count() or 1)
    net = EDSRBaseline()
    net.load_state_dict(torch.load(Path(model_dir) / "edsr.pt"))
    lr = prepare_lr(read_image(hr), 4)
    steps = make_path(lr, "blur", 1.2, fold, 9)
    H, W = lr.shape[1] * 4, lr.shape[2] * 4
    A = demo_loop(net, steps.images, steps.derivatives, window_mask(H, W, x, y, 16))
    M = abs_normalise(A)
    np.save(Path(model_dir) / f"torch-M-{lr.shape[1]}.npy", M)
    return {"di": diffusion_index(M)}


def worker_lam(model: str, hr: str, out: str, *window_coords: int) -> dict:
    """What `onnxlam lam MODEL HR --window X Y [--window ...] --out OUT --device cpu` does."""
    from onnxlam.analysis import Analyzer
    from onnxlam.outputs import write_results

    windows = list(zip(window_coords[::2], window_coords[1::2]))
    results = Analyzer(model, device="cpu").run_windows(hr, windows)
    write_results(results, out)
    first = results[0].to_json()
    return {"seconds": first["seconds"], "di": first["di"], "batch_size": first["batch_size"],
            "lr_size": first["lr_size"], "crop": first["crop"]}


def worker_forward(model_dir: str, hr: str, fold: int, batch: int) -> dict:
    """The forward pass alone over the same path images and batches onnxlam uses."""
    from onnxlam.analysis import Analyzer
    from onnxlam.model import INPUT
    from onnxlam.paths import make_path
    from onnxlam.runtime import create_session

    analyzer = Analyzer(Path(model_dir) / "edsr.onnx", device="cpu")
    lr, _ = analyzer.prepare(hr)
    steps = make_path(lr, "blur", 1.2, fold, 9)
    session = create_session(analyzer.normalised, "cpu")
    for start in range(0, fold, batch):
        session.session.run(None, {INPUT: steps.images[start:start + batch]})
    return {}


def run_worker(kind: str, *args) -> dict:
    start = time.perf_counter()
    argv = [sys.executable, __file__, "--worker", kind, *map(str, args)]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed: {proc.stderr[-2000:]}")
    return {"seconds": seconds, "result": json.loads(proc.stdout.strip().splitlines()[-1])}


def median_run(runs: int, kind: str, *args) -> dict:
    results = [run_worker(kind, *args) for _ in range(runs)]
    times = [r["seconds"] for r in results]
    return {"median": float(np.median(times)), "runs": times, "result": results[-1]["result"]}


# --- the benchmark ---------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--worker")
    args, rest = parser.parse_known_args()
    if args.worker:
        fn = {"torch": worker_torch, "forward": worker_forward, "lam": worker_lam}[args.worker]
        converted = [int(a) if a.lstrip("-").isdigit() else a for a in rest]
        result = fn(*converted)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_lam import EDSRBaseline, export

    work = Path(tempfile.mkdtemp(prefix="onnxlam-bench-"))
    os.environ["ONNXLAM_CACHE"] = str(work / "cache")
    torch.manual_seed(0)
    net = EDSRBaseline().eval()
    torch.save(net.state_dict(), work / "edsr.pt")
    export(net, work / "edsr.onnx")
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    hr48, hr128 = work / "hr48.png", work / "hr128.png"
    Image.fromarray(photo[:192, :192]).save(hr48)
    big = np.asarray(Image.open(PHOTO).convert("RGB").resize((512, 512), Image.BICUBIC))
    Image.fromarray(big).save(hr128)
    model = work / "edsr.onnx"
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "python": platform.python_version()}
    import onnxruntime

    report["versions"] = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__}
    cases = {}
    for name, hr in (("A_lr48", hr48), ("B_lr128", hr128)):
        lam_args = [model, hr, work / f"out-{name}", *WINDOW]
        run_worker("lam", *lam_args)  # warm the program cache (build + finite-difference check)
        lam = median_run(args.runs, "lam", *lam_args)
        batch = lam["result"]["batch_size"]
        ref = median_run(args.runs, "torch", work, hr, WINDOW[0], WINDOW[1], 50)
        fwd = median_run(args.runs, "forward", work, hr, 50, batch)
        M = np.load(work / f"out-{name}" / "attribution.npy")
        M_ref = np.load(work / f"torch-M-{lam['result']['lr_size'][0]}.npy")
        cases[name] = {"onnxlam": lam["median"], "onnxlam_in_process": lam["result"]["seconds"],
                       "torch_demo_loop": ref["median"], "forward_only": fwd["median"],
                       "speedup_vs_torch": ref["median"] / lam["median"],
                       "crop": lam["result"].get("crop"), "batch": batch,
                       "max_abs_M_diff": float(np.abs(M - M_ref).max()),
                       "di_diff": abs(lam["result"]["di"] - ref["result"]["di"]),
                       "peak_rss_mb": {"onnxlam": lam["result"]["peak_rss_mb"],
                                       "torch": ref["result"]["peak_rss_mb"],
                                       "forward": fwd["result"]["peak_rss_mb"]},
                       "runs": {"onnxlam": lam["runs"], "torch": ref["runs"], "forward": fwd["runs"]}}
        print(name, json.dumps(cases[name]), flush=True)
    # C. four windows in one run against four single runs (in-process seconds, warm programs)
    four_args = [model, hr48, work / "four"] + [v for w in FOUR for v in w]
    run_worker("lam", *four_args)
    together = median_run(args.runs, "lam", *four_args)
    singles = []
    for w in FOUR:
        one = [model, hr48, work / f"one-{w[0]}-{w[1]}", *w]
        run_worker("lam", *one)
        singles.append(median_run(args.runs, "lam", *one)["median"])
    cases["C_four_windows"] = {"together": together["median"], "separately": sum(singles),
                               "speedup": sum(singles) / together["median"],
                               "together_in_process": together["result"]["seconds"]}
    print("C", json.dumps(cases["C_four_windows"]), flush=True)
    report["cases"] = cases
    (REPO / "benchmarks").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, Path(args.out))


def write_markdown(report: dict, path: Path) -> None:
    c = report["cases"]
    lines = ["# Benchmarks", "",
             f"Generated by `python scripts/bench.py` on {report['machine']}, Python {report['python']}, "
             f"onnxruntime {report['versions']['onnxruntime']}, torch {report['versions']['torch']}. "
             "Whole-process medians (imports included; gradient programs from a warm cache).", "",
             "## CPU", "",
             "| case | onnxlam (s) | PyTorch demo loop (s) | forward only (s) | speed-up | max abs ΔM | ΔDI | crop | peak RSS onnxlam / torch (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, label in (("A_lr48", "EDSR-baseline ×4, LR 48×48, fold 50"),
                        ("B_lr128", "EDSR-baseline ×4, LR 128×128, fold 50")):
        r = c[name]
        crop = r["crop"]["box"] if r["crop"] else "none"
        lines.append(f"| {label} | {r['onnxlam']:.2f} | {r['torch_demo_loop']:.2f} | {r['forward_only']:.2f} | "
                     f"{r['speedup_vs_torch']:.2f}× | {r['max_abs_M_diff']:.1e} | {r['di_diff']:.1e} | {crop} | "
                     f"{r['peak_rss_mb']['onnxlam']:.0f} / {r['peak_rss_mb']['torch']:.0f} |")
    f = c["C_four_windows"]
    lines += ["", f"Four windows sharing each forward pass: {f['together']:.2f} s against {f['separately']:.2f} s "
              f"for four separate runs ({f['speedup']:.2f}×).", ""]
    lines += gpu_section()
    path.write_text("\n".join(lines) + "\n")


def gpu_section() -> list[str]:
    """The GPU results `scripts/gpu_check.py` wrote (benchmarks/gpu_*.json), as Markdown."""
    off, on = REPO / "benchmarks" / "gpu_h200_tf32off.json", REPO / "benchmarks" / "gpu_h200_tf32on.json"
    if not off.exists():
        return []
    g = json.loads(off.read_text())
    e = g["edsr_baseline_48"]
    best = min((v["median_s"], k) for k, v in e.items() if k.startswith("onnxlam_cuda"))
    a = g["animevideov3"]
    lines = ["## GPU", "",
             f"`scripts/gpu_check.sh` on an {g['gpu']} (onnxruntime-gpu {g['onnxruntime']}, torch {g['torch']}, "
             "TF32 off in onnxlam, PyTorch's default cuDNN TF32 on), medians of 3 in-process runs, "
             "the first of which builds the program:", "",
             "| case | onnxlam CUDA (s) | PyTorch demo loop, same GPU (s) | speed-up | max abs ΔM vs CPU | max abs ΔM vs PyTorch |",
             "|---|---|---|---|---|---|",
             f"| EDSR-baseline ×4, LR 48×48, fold 50 ({best[1].split('_')[-1]}) | {best[0]:.3f} | "
             f"{e['torch_demo_loop_cuda']['median_s']:.3f} | {e['speedup_best_cuda_vs_torch']:.1f}× | "
             f"{e['max_abs_M_diff_cuda_vs_cpu']:.1e} | {e['max_abs_M_diff_cuda_vs_torch']:.1e} |",
             f"| animevideov3 ×4 (bundled), LR 64×64, fold 50 | {a['seconds_gpu_median']:.3f} | – | "
             f"{a['seconds_cpu_median'] / a['seconds_gpu_median']:.0f}× over 16 CPU cores | {a['max_abs_M_diff']:.1e} | – |",
             "", "Batch sizes 10 / 25 / 50 on CUDA (EDSR-baseline): " + ", ".join(
                 f"{e[f'onnxlam_cuda_batch{b}']['median_s']:.3f} s" for b in (10, 25, 50)) + "."]
    if on.exists():
        t = json.loads(on.read_text())
        lines += ["", f"With TF32 on (onnxruntime's default), the animevideov3 map differed from the CPU's by up to "
                  f"{t['animevideov3']['max_abs_M_diff']:.2f} (DI {t['animevideov3']['di_gpu']:.3f} against "
                  f"{t['animevideov3']['di_cpu']:.3f}) and its gradient program failed the finite-difference check; "
                  "onnxlam therefore turns TF32 off unless `ONNXLAM_TF32=1`."]
    return lines


if __name__ == "__main__":
    main()
