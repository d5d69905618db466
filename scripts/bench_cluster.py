"""Benchmark of `onnxlam report --cluster local:2` against the serial report, and the scaling model.

A 24-case report (2 bundled ×4 models × 4 images × 3 windows) at each FOLD given (default: LAM's own
50, then 20), run as whole `onnxlam report` processes (imports, cluster start-up and shut-down included):

- serial at 1 onnxruntime intra-op thread (ONNXLAM_THREADS=1) and at 2 (equal total threads to the
  cluster; also onnxruntime's default here, one thread per physical core);
- `--cluster local:2`: two worker processes of one Dask thread and one onnxruntime thread each;
- each cold (empty program cache: every gradient program built, checked and probed) and warm (the
  cache the cold run filled; only the cases are computed).

Then the parts of the scaling model, measured: the start-up of a run with nothing to compute, the
per-case cost (warm, one thread), the program build per model (cold minus warm), the scheduler's
round trip per task (2,000 no-op tasks on the local cluster) and the client's rewrite of the
aggregates for 10,000 rows; and from them the predicted wall time of 10,000 cases on 1, 8 and 64
workers. Writes benchmarks/cluster_cpu.json and the "Cluster" section of BENCHMARKS.md.

    PYTHONPATH=. python scripts/bench_cluster.py [--fold 50 20] [--repeat 1]

The scaling model takes its per-case cost from the first fold.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("animevideov3-x4", "span-x4")
CROPS = {"chelsea": [(0, 0), (280, 150)], "astronaut": [(100, 20), (250, 200)]}  # 4 images
SIDE = 128            # HR side of each image: LR 32×32 for the ×4 models
WINDOWS = ((16, 16), (56, 64), (88, 24))
TASKS = 2000          # no-op tasks timed on the local cluster
ROWS = 10_000         # rows of the aggregate rewrite timed


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def load() -> float:
    return os.getloadavg()[0]


def make_inputs(root: Path) -> Path:
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True)
    for name, corners in CROPS.items():
        photo = Image.open(ROOT / "onnxlam" / "data" / f"{name}.png").convert("RGB")
        for x, y in corners:
            photo.crop((x, y, x + SIDE, y + SIDE)).save(images / f"{name}-{x}-{y}.png")
    assert len(list(images.iterdir())) == 4
    return images


def report(images: Path, out: Path, fold: int, cache: Path, threads: str | None, cluster: str | None) -> dict:
    """One whole `onnxlam report` process: wall seconds and its results.json run counts."""
    args = [sys.executable, "-m", "onnxlam", "report", "--image", str(images), "--fold", str(fold),
            "--out", str(out), "--json"]
    for m in MODELS:
        args += ["--model", m]
    for x, y in WINDOWS:
        args += ["--window", str(x), str(y)]
    if cluster:
        args += ["--cluster", cluster]
    env = dict(os.environ, PYTHONPATH=str(ROOT), ONNXLAM_CACHE=str(cache))
    env.pop("ONNXLAM_THREADS", None)
    if threads:
        env["ONNXLAM_THREADS"] = threads
    before = load()
    cpu0 = os.times()
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    cpu1 = os.times()  # the process and every process it waited for (workers, memory probes)
    cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    if proc.returncode != 0:
        raise SystemExit(f"report failed: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout)
    seconds = [c["seconds"] for c in data["cases"] if c["seconds"] is not None]
    return {"wall": wall, "cpu": cpu, "run": data["run"], "case_seconds_sum": sum(seconds), "load_before": before,
            "load_after": load()}


def scheduler_overhead() -> dict:
    """Seconds per task of the Dask round trip (submit, schedule, run a no-op, gather) on local:2."""
    from distributed import Client, as_completed

    from onnxlam.batch.cluster import start_local_cluster

    with start_local_cluster(2, "cpu") as cluster, Client(cluster) as client:
        client.submit(_noop, -1).result()  # warm the connection and the function's pickle
        start = time.perf_counter()
        futures = [client.submit(_noop, i, pure=False) for i in range(TASKS)]
        for f in as_completed(futures):
            f.result()
        per = (time.perf_counter() - start) / TASKS
    return {"tasks": TASKS, "seconds_per_task": per}


def cluster_up_down() -> dict:
    """Wall seconds, in a fresh process, of importing Dask, starting the local cluster of 2 workers, one
    call on each worker, and stopping it: what a cluster run that computes anything pays on top of the
    serial start-up (a rerun with nothing to compute starts no workers)."""
    code = ("import time; t = time.perf_counter()\n"
            "from onnxlam.batch.cluster import Target, connect\n"
            "with connect(Target(workers=2), 'cpu') as client:\n"
            "    client.run(lambda: None)\n"
            "print(time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"cluster start-up failed: {proc.stderr[-2000:]}")
    return {"seconds": float(proc.stdout.split()[-1])}


def _noop(i):
    return i


def aggregate_rewrite() -> dict:
    """Seconds to rewrite results.csv/json and index.html for ROWS synthetic completed rows."""
    from onnxlam.batch.report import Case, CaseRow, LamOptions, Report, ReportConfig, write_aggregates

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        config = ReportConfig(("m.onnx",), ("i.png",), (), out, LamOptions())
        rows = [CaseRow(Case(f"model{i % 20}.onnx", f"image{i // 20}.png", i % 97, i % 89, 16), f"cases/c{i}", "ok",
                        di=5 + (i % 13) / 7, gini=0.5, seconds=1.0,
                        range={"pixels_50": 10, "pixels_90": 40, "pixels_99": 90, "radius_90": 7.5}, scale=4)
                for i in range(ROWS)]
        r = Report(out, config, rows, computed=ROWS)
        start = time.perf_counter()
        write_aggregates(r)
        seconds = time.perf_counter() - start
    return {"rows": ROWS, "seconds": seconds}


def _rewrites(n: int, seconds: float, m: dict) -> float:
    """Seconds of aggregate rewrites in a run of n cases lasting `seconds` (see `predict`)."""
    final = m["rewrite_10k"] * n / ROWS
    return min(n * final / 2, 0.1 * seconds) + final


def predict(n: int, workers: int | None, m: dict) -> dict:
    """Wall seconds of n cases (of these models, 3 windows an image) on `workers` single-threaded Dask
    workers, or the serial run for None.

    Cluster: start-up + c_build · ceil(models / W) (each worker builds the programs of the models it is
    given, in parallel) + max(n·c / W, tasks · s) (the scheduler handles tasks one at a time while the
    workers compute) + the rewrites of the aggregates. Serial: start-up + every build + n·c + the
    rewrites. Rewrites (`store.AggregateWriter`): at most one per case, whose cost grows with the rows
    (n · r(n) / 2 in all), and at most a tenth of the time (0.1 × compute), plus the final one.
    """
    groups = n / len(WINDOWS)
    if workers is None:
        compute, build, scheduler = n * m["case_seconds"], m["build_per_model"] * len(MODELS), 0.0
        rewrites = _rewrites(n, compute, m)
        wall = m["serial_startup"] + build + compute + rewrites
        return {"workers": "serial", "compute": compute, "build": build, "scheduler": scheduler,
                "rewrites": rewrites, "wall": wall, "limited_by": "compute"}
    compute = n * m["case_seconds"] / workers
    build = m["build_per_model"] * -(-len(MODELS) // workers)
    scheduler = groups * m["scheduler_per_task"]
    rewrites = _rewrites(n, max(compute, scheduler), m)
    wall = m["startup"] + build + max(compute, scheduler) + rewrites
    return {"workers": workers, "compute": compute, "build": build, "scheduler": scheduler, "rewrites": rewrites,
            "wall": wall, "limited_by": "the scheduler" if scheduler > compute else "compute"}


CLUSTER = "cluster local:2 (1 thread each)"
# (ONNXLAM_THREADS, --cluster) per run; onnxruntime's default intra-op pool is one thread per
# physical core: 2 threads on this machine
CONFIGS = {"serial, 1 thread": ("1", None), "serial, 2 threads": ("2", None), CLUSTER: (None, "local:2")}


def run_configs(images: Path, tmp: Path, fold: int, repeat: int) -> dict[str, dict]:
    """Every configuration at `fold`, cold then warm, `repeat` times: {"<config>, <state>": facts}. The
    configurations take turns within each repeat, so a drift of the machine's speed over the minutes
    of a benchmark falls on all of them alike."""
    runs: dict[str, dict] = {f"{name}, {state}": {"walls": []} for name in CONFIGS for state in ("cold", "warm")}
    for rep in range(repeat):
        for n, (name, (threads, target)) in enumerate(CONFIGS.items()):
            cache = tmp / f"cache-{fold}-{n}-{rep}"
            for state in ("cold", "warm"):  # warm: the cache the cold run just filled
                out = tmp / f"out-{fold}-{n}-{rep}-{state}"
                r = report(images, out, fold, cache, threads, target)
                assert r["run"]["computed"] == 24, r
                entry = runs[f"{name}, {state}"]
                entry["walls"].append(r["wall"])
                entry.update({k: v for k, v in r.items() if k != "wall"})
                print(f"fold {fold}, {name}, {state}: {r['wall']:.1f} s (load {r['load_before']:.2f} → "
                      f"{r['load_after']:.2f})", flush=True)
                if state == "warm" and rep == 0 and threads != "2":  # nothing to compute: the start-up
                    again = report(images, out, fold, cache, threads, target)
                    assert again["run"]["reused"] == 24
                    entry["startup"] = again["wall"]
                shutil.rmtree(out, ignore_errors=True)
    for entry in runs.values():
        entry["wall"] = statistics.median(entry["walls"])
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fold", type=int, nargs="+", default=[50, 20])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    a = parser.parse_args()
    import onnxruntime

    loads = [uptime()]
    print(loads[0], flush=True)
    folds: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="onnxlam-bench-cluster-") as tmp:
        tmp = Path(tmp)
        images = make_inputs(tmp)
        for fold in a.fold:
            folds[fold] = run_configs(images, tmp, fold, a.repeat)
            loads.append(uptime())
        overhead = scheduler_overhead()
        up_down = statistics.median(cluster_up_down()["seconds"] for _ in range(3))
        rewrite = aggregate_rewrite()
        loads.append(uptime())
    runs = folds[a.fold[0]]
    serial1, cl = runs["serial, 1 thread, warm"], runs[CLUSTER + ", warm"]
    model = {
        "startup": serial1["startup"] + up_down,  # a run on the cluster: the serial start-up, the cluster up and down
        "cluster_up_down": up_down,
        "rerun_nothing_to_compute": {"serial": serial1["startup"], "cluster": cl["startup"]},
        "case_seconds": (serial1["wall"] - serial1["startup"]) / 24,
        "build_per_model": max(0.0, runs["serial, 1 thread, cold"]["wall"] - serial1["wall"]) / len(MODELS),
        "scheduler_per_task": overhead["seconds_per_task"],
        "rewrite_10k": rewrite["seconds"],
    }
    model["serial_startup"] = serial1["startup"]
    predictions = [predict(10_000, w, model) for w in (None, 1, 8, 64)]
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
              "onnxruntime": onnxruntime.__version__, "fold": a.fold[0], "models": MODELS, "cases": 24,
              "windows_per_image": len(WINDOWS), "images": 4, "lr": f"{SIDE // 4}x{SIDE // 4}", "repeat": a.repeat,
              "uptime": loads, "folds": {str(f): r for f, r in folds.items()}, "scheduler": overhead,
              "aggregates": rewrite, "model": model, "predictions": predictions}
    print(json.dumps(result, indent=2))
    if not a.no_write:
        (ROOT / "benchmarks").mkdir(exist_ok=True)
        (ROOT / "benchmarks" / "cluster_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
        write_section(result)


def write_section(r: dict) -> None:
    folds = {int(f): runs for f, runs in r["folds"].items()}
    lines = ["## Cluster", "",
             f"`python scripts/bench_cluster.py` on {r['machine']}, onnxruntime {r['onnxruntime']}: a 24-case "
             f"report ({' and '.join(r['models'])} × 4 images of LR {r['lr']} × 3 windows) at fold "
             f"{' and '.join(map(str, folds))}, whole `onnxlam report` processes (imports and cluster start-up "
             f"included), median of {r['repeat']}. Cold: empty program cache (programs built, checked, "
             "memory-probed); warm: the cache the cold run filled. Load (`uptime`) before, between and after: "
             + "; ".join(f"`{u.split('load average:')[-1].strip()}`" for u in r["uptime"]) + ".", "",
             "| fold | run | cold (s) | warm (s) | warm speed-up vs serial 1 thread | CPU-seconds, warm |",
             "|---|---|---|---|---|---|"]
    for fold, runs in folds.items():
        base = runs["serial, 1 thread, warm"]["wall"]
        for name in CONFIGS:
            cold, warm = runs[name + ", cold"], runs[name + ", warm"]
            lines.append(f"| {fold} | {name} | {cold['wall']:.1f} | {warm['wall']:.1f} | "
                         f"{base / warm['wall']:.2f}× | {warm['cpu']:.1f} |")
    lines.append("")
    for fold, runs in folds.items():
        def vs(serial: str, state: str) -> float:  # the cluster's speed-up over a serial run
            return runs[f"{serial}, {state}"]["wall"] / runs[f"{CLUSTER}, {state}"]["wall"]

        default = " (LAM's default)" if fold == 50 else ""
        lines.append(
            f"- Fold {fold}{default}: `--cluster local:2` against the serial run at one thread "
            f"**{vs('serial, 1 thread', 'warm'):.2f}×** warm, {vs('serial, 1 thread', 'cold'):.2f}× cold "
            f"(target ≥ 1.7×); at equal total threads (serial with 2 onnxruntime threads) "
            f"{vs('serial, 2 threads', 'warm'):.2f}× warm, {vs('serial, 2 threads', 'cold'):.2f}× cold.")
    lines += ["", "Serial onnxlam runs onnxruntime's default intra-op pool unless ONNXLAM_THREADS is set: one "
              "thread per physical core, 2 here, so the 2-thread row is the serial default. What the cluster "
              "pays on top of the cases: Dask's import and start-up in the client, the two worker processes' "
              "imports and model loads (in parallel, where the serial run loads the models one after the "
              "other), and the shut-down; and the 24 cases make 8 tasks (one image's windows of one model), "
              "4 per worker, so the slower model's worker finishes last.", ""]
    m = r["model"]
    lines += ["Scaling model (measured here): wall ≈ start-up + program builds + max(n·c / W, tasks · s) + "
              "aggregate rewrites, with", "",
              f"- start-up: {m['startup']:.1f} s, the serial start-up (CLI and planning of a run with nothing to "
              f"compute, {m['serial_startup']:.1f} s) plus the local cluster up and down in a fresh process "
              f"(import Dask, start 2 workers, stop them; median of 3) {m['cluster_up_down']:.1f} s. A rerun with "
              f"nothing to compute starts no workers: {m['rerun_nothing_to_compute']['cluster']:.1f} s on "
              "`--cluster local:2`;",
              f"- c, per-case cost (warm, one thread, fold {r['fold']}): {m['case_seconds']:.2f} s;",
              f"- program build per model per worker (cold − warm, serial): {m['build_per_model']:.1f} s (a shared "
              "program cache on the shared file system builds each program once for all workers);",
              f"- s, scheduler round trip per task ({r['scheduler']['tasks']} no-op tasks on local:2): "
              f"{1000 * m['scheduler_per_task']:.2f} ms (one task is one image's windows of one model: "
              f"{r['windows_per_image']} cases here);",
              f"- the client's rewrite of results.csv/json and index.html for 10,000 rows: {m['rewrite_10k']:.2f} s "
              "(rewritten at most every 2 s and at most a tenth of the time, and at the end: "
              "`store.AggregateWriter`, serial and cluster alike).", "",
              "| 10,000 cases | compute n·c/W (s) | builds (s) | scheduler (s) | aggregate rewrites (s) | "
              "predicted wall | limited by |", "|---|---|---|---|---|---|---|"]
    for p in r["predictions"]:
        who = "serial (in-process)" if p["workers"] == "serial" else \
            f"{p['workers']} worker{'s' if p['workers'] > 1 else ''}"
        lines.append(f"| {who} | {p['compute']:.0f} | {p['build']:.0f} | {p['scheduler']:.1f} | "
                     f"{p['rewrites']:.0f} | {_hms(p['wall'])} | {p['limited_by']} |")
    have = 1 / m["scheduler_per_task"]
    need = 64 / (m["case_seconds"] * r["windows_per_image"])
    lines += ["", f"The scheduler served {have:.0f} tasks a second here; 64 workers ask for {need:.1f} a second, "
              f"so it limits only past about {int(64 * have / need)} workers of this per-case cost (a "
              "cheaper case, a smaller fold or a faster device lowers that bound: group more windows per task). "
              "Before that the limits are outside onnxlam: the shared file system (each case writes its "
              "arrays and five PNGs, about 0.1–0.5 MB at these sizes).", ""]
    text = (ROOT / "BENCHMARKS.md").read_text()  # "## Cluster: where the time goes" (by hand) is left as it is
    section = "\n".join(lines)
    if "## Cluster" in text:
        text = re.sub(r"## Cluster\n.*?(?=\n## |\Z)", lambda _: section.rstrip("\n") + "\n", text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    (ROOT / "BENCHMARKS.md").write_text(text)


def _hms(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


if __name__ == "__main__":
    main()
