"""Sweep benchmark: a whole-image DI map against one window's LAM, with and without shared passes.

    python scripts/bench_sweep.py [--model animevideov3-x4] [--stride 16] [--fold 10] [--runs 1] [--json F]

Each timing is a whole process (imports, model loading, path, integration) on the bundled chelsea
photograph (256×256 HR, so a ×4 model sees LR 64×64): `lam` of one 16×16 window at the centre; the
sweep of 16×16 windows every `--stride` SR pixels with windows sharing reverse passes where their
dependence boxes are disjoint (`methods/lam/sharing.py`); and the same sweep with one seed per window
(the scheme before sharing). Cold runs start from an empty program cache, warm runs from the cache
the cold run filled. The maps are compared: the shared sweep's against the unshared one's, and one
window of it against that window's own `lam` run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import sys, time, numpy as np
from onnxlam.methods.lam.analyzer import Analyzer
from onnxlam.methods.lam import run
from onnxlam.methods.lam.sharing import plan_sharing
from onnxlam.batch.sweep import sweep_windows
from onnxlam.convert.collection import resolve_model
from onnxlam.lam.image import bundled_photo
mode, name, stride, fold, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
a = Analyzer(resolve_model(name))
image = str(bundled_photo("chelsea"))
xs, ys, wins = sweep_windows(a, image, stride, 16)
options = a.lam_options(size=16, fold=fold).validate()
if mode == "one":
    wins = [wins[len(wins) // 2]]
results = run.run_windows(a, image, wins, options, share=mode != "unshared")
np.save(out, np.stack([r.gradient for r in results]))
lr = results[0].lr_size
print(plan_sharing(a, wins, options, lr).to_json()["passes"] if mode == "shared" else len(wins))
"""


def timed(mode: str, args, cache: str, out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", WORKER, mode, args.model, str(args.stride), str(args.fold), str(out)],
                       capture_output=True, text=True, cwd=REPO, env={"ONNXLAM_CACHE": cache, "PATH": "/usr/bin:/bin",
                                                                      "PYTHONPATH": str(REPO)})
    if r.returncode:
        raise SystemExit(r.stderr)
    return time.perf_counter() - start, int(r.stdout.split()[-1])


def main() -> None:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="animevideov3-x4")
    p.add_argument("--stride", type=int, default=16)
    p.add_argument("--fold", type=int, default=10)
    p.add_argument("--runs", type=int, default=1, help="warm runs per mode (the median is reported)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("one", "shared", "unshared"):
            cache = tempfile.mkdtemp(dir=tmp)
            out = Path(tmp) / f"{mode}.npy"
            cold, passes = timed(mode, args, cache, out)
            warm = sorted(timed(mode, args, cache, out)[0] for _ in range(args.runs))[args.runs // 2]
            rows[mode] = {"cold_s": round(cold, 2), "warm_s": round(warm, 2), "reverse_seeds": passes}
            print(mode, rows[mode], flush=True)
        shared, unshared = np.load(Path(tmp) / "shared.npy"), np.load(Path(tmp) / "unshared.npy")
        one = np.load(Path(tmp) / "one.npy")[0]
        n = len(shared)
    figures = {
        "model": args.model, "stride": args.stride, "fold": args.fold, "windows": n, **rows,
        "windows_per_pass": round(n / rows["shared"]["reverse_seeds"], 2),
        "shared_vs_one_window_warm": round(rows["shared"]["warm_s"] / rows["one"]["warm_s"], 2),
        "unshared_vs_one_window_warm": round(rows["unshared"]["warm_s"] / rows["one"]["warm_s"], 2),
        "speedup_warm": round(rows["unshared"]["warm_s"] / rows["shared"]["warm_s"], 2),
        "speedup_cold": round(rows["unshared"]["cold_s"] / rows["shared"]["cold_s"], 2),
        "centre_window_equals_its_lam_run": bool(np.array_equal(shared[n // 2], one)),
        "max_abs_shared_minus_unshared": float(np.abs(shared - unshared).max()),
        "max_abs_gradient": float(np.abs(unshared).max()),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
