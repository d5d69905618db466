"""CPU benchmarks: onnxlam against the demo-style PyTorch loop, and against the forward pass alone.

    python scripts/bench.py [--runs 3] [--cases ABCD] [--out BENCHMARKS.md] [--markdown-only]

Every timing is a whole process (imports, model loading, path, integration), started in this one run
so the ratios compare like with like on the same machine, both cold (an empty program cache: the
program is built, checked and its memory measured, as on CI or a first look at a model) and warm
(the gradient program from a cache filled beforehand, as on any second run). Peak memory is each
process's maximum resident set. `--profile` also writes cProfile's top functions of one cold run.
Cases:
  A. EDSR-baseline size (64 channels, 16 blocks, ×4) at LR 48×48, fold 50, one 16×16 window;
  B. the same network at LR 128×128 (onnxlam crops exactly to the window's receptive field);
  C. four windows sharing each forward pass, against four separate runs;
  D. a 32×32 toy network (3 convolutions, ×2), LR 32×32, fold 10: the cold process against the warm one.
The maps are compared too: onnxlam's against the PyTorch loop's (max |ΔM|, |ΔDI|). `--cases` runs a
subset; the others keep the figures of benchmarks/cpu.json's earlier run, and the page says so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
TORCH_BATCH = 10  # path images per forward/backward in the batched PyTorch baseline


# --- workers (run as separate processes) -----------------------------------------------------

def worker_torch(model_dir: str, hr: str, x: int, y: int, fold: int, batch: int = 1) -> dict:
    """The PyTorch baseline: the demo's loop (`batch` 1) or the batched loop (`batch` path images a pass)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_lam import EDSRBaseline, batched_loop, demo_loop

    from onnxlam.graph.detector import window_mask
    from onnxlam.lam.image import prepare_lr, read_image
    from onnxlam.lam.metrics import abs_normalise, diffusion_index
    from onnxlam.lam.paths import make_path

    torch.set_num_threads(os.cpu_count() or 1)
    net = EDSRBaseline()
    net.load_state_dict(torch.load(Path(model_dir) / "edsr.pt"))
    lr = prepare_lr(read_image(hr), 4)
    steps = make_path(lr, "blur", 1.2, fold, 9)
    H, W = lr.shape[1] * 4, lr.shape[2] * 4
    mask = window_mask(H, W, x, y, 16)
    A = (demo_loop(net, steps.images, steps.derivatives, mask) if batch == 1
         else batched_loop(net, steps.images, steps.derivatives, mask, batch=batch))
    M = abs_normalise(A)
    np.save(Path(model_dir) / f"torch-M-{lr.shape[1]}{'' if batch == 1 else f'-b{batch}'}.npy", M)
    return {"di": diffusion_index(M)}


def worker_lam(model: str, hr: str, out: str, *window_coords) -> dict:
    """What `onnxlam lam MODEL HR --window X Y [--window ...] [--fold N] --out OUT --device cpu` does."""
    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.methods.lam.method import LAM

    coords, fold = list(window_coords), 50
    if "--fold" in coords:
        fold = int(coords[coords.index("--fold") + 1])
        del coords[coords.index("--fold"):coords.index("--fold") + 2]
    windows = list(zip(coords[::2], coords[1::2]))
    results = Analyzer(model, device="cpu").run_windows(hr, windows, fold=fold)
    LAM.write_all(results, Path(out))
    first = results[0].to_json()
    return {"seconds": first["seconds"], "di": first["di"], "batch_size": first["batch_size"],
            "lr_size": first["lr_size"], "crop": first["crop"]}


def worker_startup() -> dict:
    """What every run pays before any work: importing the Python API of `lam` (onnx, onnxruntime, numpy)."""
    import ml_dtypes

    from onnxlam.methods.lam.analyzer import Analyzer  # noqa: F401

    return {"ml_dtypes": ml_dtypes.__version__}


def worker_forward(model_dir: str, hr: str, fold: int, batch: int) -> dict:
    """The forward pass alone over the same path images and batches onnxlam uses."""
    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.graph.model import INPUT
    from onnxlam.lam.paths import make_path
    from onnxlam.engine.runtime import create_session

    analyzer = Analyzer(Path(model_dir) / "edsr.onnx", device="cpu")
    lr, _ = analyzer.prepare(hr)
    steps = make_path(lr, "blur", 1.2, fold, 9)
    session = create_session(analyzer.normalised, "cpu")
    for start in range(0, fold, batch):
        session.session.run(None, {INPUT: steps.images[start:start + batch]})
    return {}


def worker_ratio(model_dir: str, batch: int, size: int) -> dict:
    """Gradient program against the forward pass on the same batch, in one process (medians of 7)."""
    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.graph.model import INPUT, fix_input_shape
    from onnxlam.engine.runtime import create_session

    analyzer = Analyzer(Path(model_dir) / "edsr.onnx", device="cpu", batch_size=batch)
    program = analyzer.program(size, size, 50)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (batch, 3, size, size)).astype(np.float32)
    H, W = program.output_size
    mask = np.zeros((batch, 1, H - 1, W - 1), np.float32)
    mask[:, :, H // 2:H // 2 + 16, W // 2:W // 2 + 16] = 1
    forward = create_session(fix_input_shape(analyzer.normalised, (batch, 3, size, size)), "cpu")

    def median(fn):
        fn()
        times = []
        for _ in range(7):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    t_program = median(lambda: program.objective_and_gradient(x, mask, "cpu"))
    t_forward = median(lambda: forward.session.run(None, {INPUT: x}))
    return {"program_s": t_program, "forward_s": t_forward, "ratio": t_program / t_forward, "batch": batch}


def profile_cold(model, hr, work: Path, top: int = 25) -> list[dict]:
    """cProfile of one cold `lam` run (fresh cache), in a child: the top functions by cumulative time."""
    out = work / "profile.txt"
    code = (f"import cProfile, pstats, sys; sys.argv = ['bench', '--worker', 'lam', {str(model)!r}, {str(hr)!r}, "
            f"{str(work / 'prof-out')!r}, '{WINDOW[0]}', '{WINDOW[1]}']; import runpy; "
            f"cProfile.run(\"runpy.run_path({__file__!r}, run_name='__main__')\", {str(out)!r})")
    env = {**os.environ, "PYTHONPATH": str(REPO), "ONNXLAM_CACHE": tempfile.mkdtemp(prefix="onnxlam-prof-")}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    import pstats

    stats = pstats.Stats(str(out))
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, callers) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}:{fn}", "cumulative_s": round(ct, 3)})
    return sorted(rows, key=lambda r: -r["cumulative_s"])[:top]


def run_worker(kind: str, *args, cache: str | None = None) -> dict:
    """One worker process; `cache`: its program cache (default: the shared, warm one)."""
    start = time.perf_counter()
    argv = [sys.executable, __file__, "--worker", kind, *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if cache is not None:
        env["ONNXLAM_CACHE"] = cache
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed: {proc.stderr[-2000:]}")
    return {"seconds": seconds, "result": json.loads(proc.stdout.strip().splitlines()[-1])}


def median_run(runs: int, kind: str, *args, cold: bool = False) -> dict:
    """Medians of `runs` processes; `cold`: each with a new, empty program cache."""
    results = [run_worker(kind, *args, cache=tempfile.mkdtemp(prefix="onnxlam-cold-") if cold else None)
               for _ in range(runs)]
    times = [r["seconds"] for r in results]
    return {"median": float(np.median(times)), "runs": times, "result": results[-1]["result"]}


# --- the benchmark ---------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--worker")
    parser.add_argument("--profile", action="store_true", help="cProfile one cold run of case A too")
    parser.add_argument("--cases", default="ABCD", help="which cases to run (letters; default all)")
    parser.add_argument("--markdown-only", action="store_true",
                        help="rewrite BENCHMARKS.md from benchmarks/*.json without running anything")
    args, rest = parser.parse_known_args()
    if args.markdown_only:
        write_markdown(json.loads((REPO / "benchmarks" / "cpu.json").read_text()), Path(args.out))
        return
    if args.worker:
        fn = {"torch": worker_torch, "forward": worker_forward, "lam": worker_lam, "ratio": worker_ratio,
              "startup": worker_startup}[args.worker]
        converted = [int(a) if a.lstrip("-").isdigit() else a for a in rest]
        result = fn(*converted)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_lam import edsr_workspace

    work = edsr_workspace("onnxlam-bench-")
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
    earlier_file = REPO / "benchmarks" / "cpu.json"
    earlier = json.loads(earlier_file.read_text())["cases"] if earlier_file.exists() else {}
    cases = {}
    run_worker("lam", model, hr48, work / "warm", *WINDOW)  # builds the batch-10 LR 48 program
    startup = median_run(5, "startup")
    cases["startup"] = {"seconds": startup["median"], "ml_dtypes": startup["result"]["ml_dtypes"]}
    print("startup", json.dumps(cases["startup"]), flush=True)
    cases["ratio"] = run_worker("ratio", work, 10, 48)["result"]
    print("ratio", json.dumps(cases["ratio"]), flush=True)
    for name, hr in (("A_lr48", hr48), ("B_lr128", hr128)):
        if name[0] not in args.cases:
            cases[name] = {**earlier[name], "from_earlier_run": True}
            continue
        lam_args = [model, hr, work / f"out-{name}", *WINDOW]
        cold = median_run(args.runs, "lam", *lam_args, cold=True)
        run_worker("lam", *lam_args)  # warm the program cache (build + check + memory probe)
        lam = median_run(args.runs, "lam", *lam_args)
        batch = lam["result"]["batch_size"]
        ref = median_run(args.runs, "torch", work, hr, WINDOW[0], WINDOW[1], 50)
        batched = median_run(args.runs, "torch", work, hr, WINDOW[0], WINDOW[1], 50, TORCH_BATCH)
        fwd = median_run(args.runs, "forward", work, hr, 50, batch)
        M = np.load(work / f"out-{name}" / "attribution.npy")
        M_ref = np.load(work / f"torch-M-{lam['result']['lr_size'][0]}.npy")
        cases[name] = {"onnxlam": lam["median"], "onnxlam_cold": cold["median"],
                       "onnxlam_in_process": lam["result"]["seconds"],
                       "speedup_cold_vs_torch": ref["median"] / cold["median"],
                       "torch_demo_loop": ref["median"], "forward_only": fwd["median"],
                       "speedup_vs_torch": ref["median"] / lam["median"],
                       "torch_batched_loop": batched["median"],
                       "speedup_vs_torch_batched": batched["median"] / lam["median"],
                       "di_diff_batched_vs_demo": abs(batched["result"]["di"] - ref["result"]["di"]),
                       "crop": lam["result"].get("crop"), "batch": batch,
                       "max_abs_M_diff": float(np.abs(M - M_ref).max()),
                       "di_diff": abs(lam["result"]["di"] - ref["result"]["di"]),
                       "peak_rss_mb": {"onnxlam": lam["result"]["peak_rss_mb"],
                                       "onnxlam_cold": cold["result"]["peak_rss_mb"],
                                       "torch": ref["result"]["peak_rss_mb"],
                                       "forward": fwd["result"]["peak_rss_mb"]},
                       "runs": {"onnxlam": lam["runs"], "onnxlam_cold": cold["runs"], "torch": ref["runs"],
                                "forward": fwd["runs"], "torch_batched": batched["runs"]}}
        print(name, json.dumps(cases[name]), flush=True)
    # C. four windows in one run against four single runs (in-process seconds, warm programs)
    if "C" not in args.cases:
        cases["C_four_windows"] = {**earlier["C_four_windows"], "from_earlier_run": True}
    else:
        cases["C_four_windows"] = four_windows(args, model, hr48, work)
    print("C", json.dumps(cases["C_four_windows"]), flush=True)
    # D. a toy network: what a cold start costs on top of a warm one, imports included
    if "D" not in args.cases:
        cases["D_toy32"] = {**earlier["D_toy32"], "from_earlier_run": True}
    else:
        cases["D_toy32"] = toy_case(args, photo, work)
    print("D", json.dumps(cases["D_toy32"]), flush=True)
    if args.profile:
        cases["profile_cold_A"] = profile_cold(model, hr48, work)
    report["cases"] = cases
    (REPO / "benchmarks").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    record_run(report)
    write_markdown(report, Path(args.out))


def four_windows(args, model: Path, hr48: Path, work: Path) -> dict:
    """C. four windows in one run against four single runs (whole processes, warm and cold)."""
    four_args = [model, hr48, work / "four"] + [v for w in FOUR for v in w]
    together_cold = median_run(args.runs, "lam", *four_args, cold=True)
    run_worker("lam", *four_args)
    together = median_run(args.runs, "lam", *four_args)
    singles, singles_cold = [], []
    for w in FOUR:
        one = [model, hr48, work / f"one-{w[0]}-{w[1]}", *w]
        singles_cold.append(median_run(args.runs, "lam", *one, cold=True)["median"])
        run_worker("lam", *one)
        singles.append(median_run(args.runs, "lam", *one)["median"])
    return {"together": together["median"], "separately": sum(singles),
            "speedup": sum(singles) / together["median"],
            "together_cold": together_cold["median"], "separately_cold": sum(singles_cold),
            "speedup_cold": sum(singles_cold) / together_cold["median"],
            "together_in_process": together["result"]["seconds"]}


def toy_case(args, photo: np.ndarray, work: Path) -> dict:
    """D. a toy network: what a cold start costs on top of a warm one, imports included."""
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_lam import ToySR, export

    toy = work / "toy.onnx"
    export(ToySR().eval(), toy, size=32)
    hr32 = work / "hr32.png"
    Image.fromarray(photo[:64, :64]).save(hr32)
    toy_args = [toy, hr32, work / "toy-out", 8, 8, "--fold", 10]
    toy_cold = median_run(args.runs, "lam", *toy_args, cold=True)
    run_worker("lam", *toy_args)
    toy_warm = median_run(args.runs, "lam", *toy_args)
    return {"cold": toy_cold["median"], "warm": toy_warm["median"],
            "cold_minus_warm": toy_cold["median"] - toy_warm["median"],
            "runs": {"cold": toy_cold["runs"], "warm": toy_warm["runs"]}}


RUNS = REPO / "benchmarks" / "cpu_runs.json"
GOALS = {"A_lr48": (1.25, 1.25), "B_lr128": (4.0, 3.5)}  # warm vs the batched loop, cold vs the demo loop


def run_summary(report: dict) -> dict:
    """One run's ratios of the goal cases (those it ran), for the list of every run."""
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "versions": report["versions"]}
    for name in GOALS:
        case = report["cases"].get(name)
        if case and not case.get("from_earlier_run"):
            summary[name] = {k: case[k] for k in ("onnxlam", "onnxlam_cold", "torch_demo_loop", "torch_batched_loop",
                                                  "speedup_vs_torch_batched", "speedup_cold_vs_torch")}
    return summary


def record_run(report: dict) -> None:
    """Every run is kept (benchmarks/cpu_runs.json), not only the last: goals must hold in each."""
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    runs.append(run_summary(report))
    RUNS.write_text(json.dumps(runs, indent=2) + "\n")


def runs_section() -> list[str]:
    if not RUNS.exists():
        return []
    lines = ["Every recorded run of the goal cases (benchmarks/cpu_runs.json; goals: warm ≥ 1.25× the batched loop "
             "and cold ≥ 1.25× the demo loop at LR 48, ≥ 4× and ≥ 3.5× at LR 128):", "",
             "| run | LR 48 warm / batched | LR 48 cold / demo | LR 128 warm / batched | LR 128 cold / demo |",
             "|---|---|---|---|---|"]
    for run in json.loads(RUNS.read_text()):
        cells = []
        for name in GOALS:
            r = run.get(name)
            cells += (["–", "–"] if r is None else
                      [f"{r['torch_batched_loop']:.2f} / {r['onnxlam']:.2f} s = {r['speedup_vs_torch_batched']:.2f}×",
                       f"{r['torch_demo_loop']:.2f} / {r['onnxlam_cold']:.2f} s = {r['speedup_cold_vs_torch']:.2f}×"])
        lines.append(f"| {run['date']} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_markdown(report: dict, path: Path) -> None:
    c = report["cases"]
    lines = ["# Benchmarks", "",
             f"Generated by `python scripts/bench.py` on {report['machine']}, Python {report['python']}, "
             f"onnxruntime {report['versions']['onnxruntime']}, torch {report['versions']['torch']}. "
             "Whole-process medians, imports included: cold with an empty program cache (the program is "
             "built, checked and its memory measured), warm with the program from a cache filled "
             "beforehand.", "",
             "## CPU", "",
             "| case | onnxlam cold (s) | onnxlam warm (s) | PyTorch demo loop (s) | PyTorch batched loop (s) | "
             "forward only (s) | speed-up vs demo cold / warm | speed-up vs batched, warm | max abs ΔM | ΔDI | crop | "
             "peak RSS cold / warm / torch (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, label in (("A_lr48", "EDSR-baseline ×4, LR 48×48, fold 50"),
                        ("B_lr128", "EDSR-baseline ×4, LR 128×128, fold 50")):
        r = c[name]
        label += " (earlier run)" if r.get("from_earlier_run") else ""
        crop = r["crop"]["box"] if r["crop"] else "none"
        cold = r.get("onnxlam_cold")
        rss = r["peak_rss_mb"]
        lines.append(f"| {label} | {cold if cold is None else f'{cold:.2f}'} | {r['onnxlam']:.2f} | "
                     f"{r['torch_demo_loop']:.2f} | {r.get('torch_batched_loop', float('nan')):.2f} | "
                     f"{r['forward_only']:.2f} | "
                     f"{r.get('speedup_cold_vs_torch', float('nan')):.2f}× / {r['speedup_vs_torch']:.2f}× | "
                     f"{r.get('speedup_vs_torch_batched', float('nan')):.2f}× | "
                     f"{r['max_abs_M_diff']:.1e} | {r['di_diff']:.1e} | {crop} | "
                     f"{rss.get('onnxlam_cold', float('nan')):.0f} / {rss['onnxlam']:.0f} / {rss['torch']:.0f} |")
    lines += [""] + runs_section()
    f = c["C_four_windows"]
    earlier = " (from an earlier run)" if f.get("from_earlier_run") else ""
    lines += ["", f"Four windows sharing each forward pass{earlier}: {f['together']:.2f} s against {f['separately']:.2f} s "
              f"for four separate runs ({f['speedup']:.2f}×; warm)" + (
                  f"; cold (each run with an empty cache) {f['together_cold']:.2f} s against "
                  f"{f['separately_cold']:.2f} s ({f['speedup_cold']:.2f}×)." if "together_cold" in f else "."), ""]
    if "D_toy32" in c:
        d = c["D_toy32"]
        lines += [f"A toy ×2 network (three convolutions), LR 32×32, fold 10"
                  f"{' (from an earlier run)' if d.get('from_earlier_run') else ''}: cold {d['cold']:.2f} s, warm "
                  f"{d['warm']:.2f} s, **{d['cold_minus_warm']:+.2f} s** for the cold start (target ≤ 1.5 s).", ""]
    if "ratio" in c:
        r = c["ratio"]
        lines += [f"Gradient program against the forward pass of the same batch ({r['batch']} images of 48×48, "
                  f"one process, medians of 7): {r['program_s']:.3f} s against {r['forward_s']:.3f} s = "
                  f"**{r['ratio']:.2f}×** the forward time (the bound is 2×; target ≤ 2.3×).", ""]
    if "startup" in c:
        u = c["startup"]
        lines += [f"Start-up (a process importing `lam`'s Python API and exiting, median of 5): {u['seconds']:.2f} s "
                  f"with ml_dtypes {u['ml_dtypes']} (onnx imports it; 0.7.0's extension alone took 0.7–0.9 s to "
                  "import here, 0.6.0's 7 ms, so the dependencies exclude 0.7).", ""]
    if "profile_cold_A" in c:
        lines += profile_section(c["profile_cold_A"])
    lines += memory_section()
    lines += gpu_section()
    text = "\n".join(lines) + "\n"
    if path.exists():  # sections other scripts write (bench_cluster.py: "Cluster") are kept
        ours = set(re.findall(r"^## (.+)$", text, flags=re.M))
        for title, body in re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", path.read_text(), flags=re.M | re.S):
            if title not in ours and title != "Cold start":
                text += f"\n## {title}\n{body.rstrip()}\n"
    path.write_text(text)


def before_after_section() -> list[str]:
    """The code before the cold-start work against now (benchmarks/cold_before_after.json: alternating
    whole processes of both checkouts in one session), where kept."""
    path = REPO / "benchmarks" / "cold_before_after.json"
    if not path.exists():
        return []
    d = json.loads(path.read_text())
    med = lambda v: float(np.median(v))
    a, b = d["A_lr48"], d["B_lr128"]
    torch = med(a["torch"])
    rows = [("EDSR-baseline ×4, LR 48, cold", a["cold_before"], a["cold_now"], torch),
            ("EDSR-baseline ×4, LR 48, warm", a["warm_before"], a["warm_now"], torch),
            ("EDSR-baseline ×4, LR 128, cold", b["cold_before"], b["cold_now"], None)]
    lines = [f"Before ({d['before_commit']}) and now, {d['how']}; medians of "
             f"{len(a['cold_now'])} (LR 48) and {len(b['cold_now'])} (LR 128), each run listed:", "",
             "| run | before (s) | now (s) | vs PyTorch demo loop before / now |", "|---|---|---|---|"]
    for label, old, new, t in rows:
        vs = "–" if t is None else f"{t / med(old):.2f}× / {t / med(new):.2f}×"
        lines.append(f"| {label} | {med(old):.2f} ({', '.join(f'{v:.1f}' for v in old)}) | "
                     f"{med(new):.2f} ({', '.join(f'{v:.1f}' for v in new)}) | {vs} |")
    lines += ["", f"PyTorch demo loop in that session: {torch:.2f} s (LR 48). Peak RSS of a cold run: "
              f"{med(a['rss_cold_before']):.0f} → {med(a['rss_cold_now']):.0f} MB (LR 48), "
              f"{med(b['rss_cold_before']):.0f} → {med(b['rss_cold_now']):.0f} MB (LR 128).", ""]
    return lines


def profile_section(after: list[dict]) -> list[str]:
    """cProfile's top functions of one cold run of case A, now and (benchmarks/profile_cold_before.json,
    where kept) before the cold-start work, side by side."""
    before_path = REPO / "benchmarks" / "profile_cold_before.json"
    before = json.loads(before_path.read_text()) if before_path.exists() else None
    lines = ["## Cold start", ""] + before_after_section() + [
             "Profile of one cold run of case A (cProfile, so every time is inflated by its overhead; "
             "cumulative seconds of the top functions, imports and the run's own frames left out):", ""]
    def rows(profile):
        noise = ("~", "<", "bench.py", "subprocess.py", "selectors.py", "onnxruntime_inference_collection.py")
        return [r for r in profile if not r["function"].startswith(noise)][:16]
    if before is not None:
        lines += [f"| before ({before['commit']}) | s | now | s |", "|---|---|---|---|"]
        old, new = rows(before["profile"]), rows(after)
        for i in range(max(len(old), len(new))):
            a = old[i] if i < len(old) else {"function": "", "cumulative_s": None}
            b = new[i] if i < len(new) else {"function": "", "cumulative_s": None}
            fmt = lambda r: ("", "") if r["cumulative_s"] is None else (f"`{r['function']}`", f"{r['cumulative_s']:.2f}")
            lines.append("| {} | {} | {} | {} |".format(*fmt(a), *fmt(b)))
    else:
        lines += ["| function | cumulative (s) |", "|---|---|"]
        lines += [f"| `{r['function']}` | {r['cumulative_s']:.2f} |" for r in rows(after)]
    return lines + [""]


def memory_section() -> list[str]:
    """The memory benchmark `scripts/bench_memory.py` wrote (benchmarks/memory_cpu.json), as Markdown."""
    path = REPO / "benchmarks" / "memory_cpu.json"
    if not path.exists():
        return []
    m = json.loads(path.read_text())
    mem, crop = m["memory"], m["crop"]
    gib = 1 << 30
    t, l, b, r = crop["box"] if crop else (0, 0, m["lr_side"], m["lr_side"])
    return ["## Memory", "",
            f"`scripts/bench_memory.py` on {m['machine']}: {m['model']} (23-block RRDBNet, ×4) on a "
            f"{m['lr_side']}×{m['lr_side']} LR image, window at SR {m['window'][0]}, {m['window'][1]}, fold {m['fold']}, "
            f"`--max-memory {m['max_memory']}`, one whole `onnxlam lam` process from a fresh cache "
            "(probes, builds and checks included), its resident set sampled from outside every millisecond.", "",
            "| | |", "|---|---|",
            f"| one step on the whole image (predicted from the probes) | {m['whole_image_step'] / gib:.1f} GiB |",
            f"| crop chosen (LR rows × cols) | {t}–{b - 1} × {l}–{r - 1} ({b - t}×{r - l}, "
            f"{'exact' if crop and crop['exact'] else 'approximate'}: {crop['context'] if crop else '–'} LR px of "
            f"context; receptive field reach {max(m['receptive_field']['reach'].values()) if m['receptive_field'].get('reach') else '–'} px) |",
            f"| predicted peak / limit | {mem['predicted_peak'] / gib:.2f} / {mem['limit'] / gib:.2f} GiB |",
            f"| measured peak (onnxlam's meter, integration) | {mem['measured_peak'] / gib:.2f} GiB |",
            f"| sampled peak RSS of the whole process | **{m['sampled_peak_rss'] / gib:.2f} GiB** |",
            f"| wall time | {m['seconds']:.0f} s |", "",
            f"So a 512×512 LR input runs through the 23-block RRDBNet within 24 GiB on this CPU: the whole process "
            f"peaked at {m['sampled_peak_rss'] / gib:.1f} GiB. The map is approximate here (the crop is smaller "
            "than the receptive field) and `lam` says so on stderr and in `result.json`; with memory for one "
            "whole-image step it would be exact. The fold only changes the time (steps run one after another "
            "at batch 1), not the memory; on the GPU the same network fits uncropped in 24 GiB (below).", ""]


def gpu_section() -> list[str]:
    """The GPU results `scripts/gpu_check.py` wrote (benchmarks/gpu_*.json), as Markdown."""
    off, on = REPO / "benchmarks" / "gpu_h200_results.json", REPO / "benchmarks" / "gpu_h200_tf32on.json"
    if not off.exists():
        off = REPO / "benchmarks" / "gpu_h200_tf32off.json"
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
    if "onnxlam_cuda_auto" in e:
        auto = e["onnxlam_cuda_auto"]
        lines += ["", f"Without `--batch-size` onnxlam chose batch {auto['batch']} from the measured device memory "
                  f"(predicted {auto['memory']['predicted_peak'] / 2 ** 30:.2f} GiB, measured "
                  f"{auto['memory']['measured_peak'] / 2 ** 30:.2f} GiB): {auto['median_s']:.3f} s, "
                  f"{e['speedup_auto_cuda_vs_torch']:.1f}× the PyTorch loop."]
    if "rrdbnet_512" in g:
        r = g["rrdbnet_512"]["limited"]
        whole = g["rrdbnet_512"].get("whole_image", {})
        lines += ["", f"23-block RRDBNet (Real-ESRGAN x4plus's generator, random weights) on a 512×512 LR image, "
                  f"fold 50, `--max-memory {r['limit']}`: batch {r['batch']}, "
                  f"{'no crop needed' if r['crop'] is None else 'crop ' + str(r['crop']['box'])}, device memory "
                  f"predicted {r['memory']['predicted_peak'] / 2 ** 30:.1f} GiB, measured "
                  f"**{r['memory']['measured_peak'] / 2 ** 30:.1f} GiB** within {r['limit']}; {r['seconds']:.0f} s "
                  "from a fresh cache (probes, builds, checks included)"
                  + (f", {whole['seconds']:.0f} s for a second run with the programs cached." if whole else ".")]
    mem = REPO / "benchmarks" / "gpu_h200_memory.json"
    if mem.exists():
        m = json.loads(mem.read_text())
        c = m["limited"]
        lines += ["", f"The same network and image under `--max-memory {m['limit']}` (fold {m['fold']}): one whole-image "
                  f"step does not fit, so onnxlam analysed LR box {c['crop']['box']} "
                  f"({'exact' if c['crop']['exact'] else 'approximate'}, {c['crop']['context']} LR px of context), "
                  f"measured {c['memory']['measured_peak'] / 2 ** 30:.1f} GiB; DI {m['di_cropped']:.3f} against "
                  f"{m['di_whole']:.3f} on the whole image, max |ΔM| {m['max_abs_M_diff_crop_vs_whole']:.2e}."]
    if on.exists():
        t = json.loads(on.read_text())
        lines += ["", f"With TF32 on (onnxruntime's default), the animevideov3 map differed from the CPU's by up to "
                  f"{t['animevideov3']['max_abs_M_diff']:.2f} (DI {t['animevideov3']['di_gpu']:.3f} against "
                  f"{t['animevideov3']['di_cpu']:.3f}) and its gradient program failed the finite-difference check; "
                  "onnxlam therefore turns TF32 off unless `ONNXLAM_TF32=1`."]
    return lines


if __name__ == "__main__":
    main()
