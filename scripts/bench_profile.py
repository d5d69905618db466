"""Where the warm time goes: onnxruntime's profiler on the gradient program against PyTorch's profiler
on the batched loop's forward and backward, same network, batch and threads.

    python scripts/bench_profile.py [--runs 4] [--json benchmarks/profile_cpu.json]

The network is bench.py's EDSR-baseline ×4 (random weights, seed 0) at LR 48×48, batch 10 (what the
planner chooses for fold 50), one 16×16 window. onnxruntime: kernel time per op type and the slowest
nodes, summed over `runs` runs after a first one. PyTorch: self CPU time per aten op over the same
number of forward+backward passes (parameters not requiring grad, as in the batched baseline). The
section "Where the warm time goes" of BENCHMARKS.md is rewritten from the JSON.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH, SIZE, WINDOW = 10, 48, (88, 96)


def onnxruntime_profile(model: Path, runs: int, work: Path) -> dict:
    import onnxruntime as ort

    from onnxlam.engine.runtime import _options, serialise
    from onnxlam.graph.detector import window_mask
    from onnxlam.methods.lam.analyzer import Analyzer

    analyzer = Analyzer(model, device="cpu", batch_size=BATCH)
    program = analyzer.program(SIZE, SIZE, 50)
    H, W = program.output_size
    x = np.random.default_rng(0).uniform(0.2, 0.8, (BATCH, 3, SIZE, SIZE)).astype(np.float32)
    mask = np.broadcast_to(window_mask(H, W, *WINDOW, 16), (BATCH, 1, H - 1, W - 1))
    feeds = program.feeds(x, mask)
    options = _options()  # the options every onnxlam session has, plus the profiler
    options.enable_profiling = True
    options.profile_file_prefix = str(work / "ort")
    session = ort.InferenceSession(serialise(program.model), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    wall = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        wall.append(time.perf_counter() - t)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op, by_node, count = collections.Counter(), collections.Counter(), collections.Counter()
    shapes = {}
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (runs + 1)
    for e in kernels[per_run:]:  # the first run (allocations, pre-packing) is left out
        op, node = e["args"]["op_name"], e["name"][:-len("_kernel_time")]
        by_op[op] += e["dur"] / 1e6 / runs
        by_node[(node, op)] += e["dur"] / 1e6 / runs
        count[op] += 1
        shapes[node] = e["args"].get("output_type_shape")
    return {"wall_s": float(np.median(wall)), "kernel_s": sum(by_op.values()),
            "by_op": [{"op": op, "s": s, "nodes": count[op] // runs} for op, s in by_op.most_common()],
            "slowest": [{"node": n, "op": op, "s": s, "output": shapes[n]} for (n, op), s in by_node.most_common(12)]}


def torch_profile(model_dir: Path, runs: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from onnxlam.graph.detector import window_mask
    from torch_lam import EDSRBaseline

    torch.set_num_threads(os.cpu_count() or 1)
    net = EDSRBaseline()
    net.load_state_dict(torch.load(model_dir / "edsr.pt"))
    net.train(False)
    for p in net.parameters():
        p.requires_grad_(False)
    H, W = SIZE * 4, SIZE * 4
    m = torch.from_numpy(window_mask(H, W, *WINDOW, 16))
    x0 = torch.from_numpy(np.random.default_rng(0).uniform(0.2, 0.8, (BATCH, 3, SIZE, SIZE)).astype(np.float32))

    def step():
        x = x0.clone().requires_grad_(True)
        y = net(x)
        dh = (y[:, :, :-1, :] - y[:, :, 1:, :]) ** 2
        dw = (y[:, :, :, :-1] - y[:, :, :, 1:]) ** 2
        s = dh[:, :, :, :-1] + dw[:, :, :-1, :]
        g = torch.where(s > 0, torch.sqrt(torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(s))
        return torch.autograd.grad((g * m).sum(), x)

    step()
    wall = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            t = time.perf_counter()
            step()
            wall.append(time.perf_counter() - t)
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows) / 1e6 / runs
    return {"wall_s": float(np.median(wall)), "self_s": total,
            "by_op": [{"op": e.key, "s": e.self_cpu_time_total / 1e6 / runs, "calls": e.count // runs}
                      for e in rows[:12]]}


def write_section(f: dict) -> None:
    o, t = f["onnxruntime"], f["torch"]
    lines = ["## Where the warm time goes", "",
             f"`python scripts/bench_profile.py`: {f['case']}, one gradient program run (objective and input "
             f"gradient of {BATCH} path images) against PyTorch's forward and backward of the same batch; "
             f"{f['threads']} threads each, per run, means of {f['runs']} runs after a first one.", "",
             f"Wall time per batch: onnxruntime **{o['wall_s']:.3f} s**, PyTorch **{t['wall_s']:.3f} s** "
             f"({t['wall_s'] / o['wall_s']:.2f}×).", "",
             "| onnxruntime op | s per run | nodes | share |", "|---|---|---|---|"]
    for r in o["by_op"][:10]:
        lines.append(f"| {r['op']} | {r['s']:.3f} | {r['nodes']} | {100 * r['s'] / o['kernel_s']:.1f}% |")
    lines += ["", "Slowest nodes (onnxruntime):", "", "| node | op | output | s per run |", "|---|---|---|---|"]
    for r in o["slowest"][:8]:
        shape = "×".join(map(str, next(iter(r["output"][0].values())))) if r["output"] else ""
        lines.append(f"| `{r['node']}` | {r['op']} | {shape} | {r['s']:.3f} |")
    lines += ["", "| PyTorch op (self time) | s per run | calls |", "|---|---|---|"]
    for r in t["by_op"][:8]:
        lines.append(f"| {r['op']} | {r['s']:.3f} | {r['calls']} |")
    lines += ["", "What bounds onnxlam here: convolutions are most of the program (forward and input-gradient "
              "convolutions of equal cost, so the program costs about twice the forward). The SR-resolution tail "
              "(the last upsampling convolution at 96×96, its adjoint, the pixel shuffle to 192×192 and back) is "
              "computed over the whole image although the window's gradient is zero outside a few pixels around "
              "it; only a crop inside the network (not done) would skip that. The adjoint of PyTorch's pixel "
              "shuffle is SpaceToDepth and a move of whole planes (`rewrite.crd_inverse_as_space_to_depth`), not "
              "onnx-ad's element-wise 6-D Transpose.", ""]
    path = REPO / "BENCHMARKS.md"
    text, section = path.read_text(), "\n".join(lines)
    title = "## Where the warm time goes"
    if title in text:
        text = re.sub(re.escape(title) + r"\n.*?(?=\n## |\Z)", lambda _: section.rstrip("\n") + "\n", text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "profile_cpu.json"))
    parser.add_argument("--markdown-only", action="store_true")
    args = parser.parse_args()
    if args.markdown_only:
        write_section(json.loads(Path(args.json).read_text()))
        return
    from torch_lam import edsr_workspace

    work = edsr_workspace("onnxlam-profile-")
    result = {"case": f"EDSR-baseline ×4, LR {SIZE}×{SIZE}, batch {BATCH}", "runs": args.runs,
              "threads": os.cpu_count(), "onnxruntime": onnxruntime_profile(work / "edsr.onnx", args.runs, work),
              "torch": torch_profile(work, args.runs)}
    Path(args.json).parent.mkdir(exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    write_section(result)
    print(json.dumps({k: result[k]["wall_s"] for k in ("onnxruntime", "torch")}))


if __name__ == "__main__":
    main()
