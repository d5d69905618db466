"""Export the reference architectures with both PyTorch exporters and check onnxlam's gradients on them.

The families are the seeded PyTorch networks of ``tests/architectures.py`` (EDSR-, RCAN-, SwinIR-,
RRDB-, FSRCNN-, IMDN-like and non-local): each is exported with the TorchScript exporter (dynamic
batch, height and width) and the dynamo exporter (static shapes: batch 1, the LR size baked in).
For every file the script prints the op histogram and whether the gradient program that
``onnxlam.engine.program.build_program`` builds from it equals PyTorch autograd of the reference detector
(``tests/torch_reference.py``'s ``objective_and_gradient``), per batch element, to a relative error
of 1e-4. Needs the test extra (torch, onnxscript).

    python scripts/export_reference_models.py OUT_DIR
    python scripts/export_reference_models.py OUT_DIR --families imdn nonlocal --exporters dynamo

Writes ``OUT_DIR/<family>-<exporter>.onnx`` and ``OUT_DIR/summary.json``; exits 1 if any program
fails to build or disagrees with autograd.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
import time
import traceback

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import architectures as arch  # noqa: E402
from tests import torch_reference as ref  # noqa: E402

from onnxlam.engine.program import build_program  # noqa: E402

PHOTO = REPO / "onnxlam" / "data" / "astronaut.png"
TOLERANCE = 1e-4  # max |g_onnxlam − g_torch| / max |g_torch|, per batch element


def op_histogram(path: pathlib.Path) -> dict[str, int]:
    """Op types of the main graph and of every subgraph and local function, most common first."""
    import onnx

    model = onnx.load(str(path))
    counts: collections.Counter = collections.Counter()

    def walk(graph):
        for node in graph.node:
            counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    for function in model.functions:
        for node in function.node:
            counts[node.op_type] += 1
    return dict(counts.most_common())


def inputs(name: str, lr_size: int, batch: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A batch of LR images (a crop of the photograph, then blurred copies) and window masks."""
    from PIL import Image

    s = arch.scale_of(name)
    hr = np.asarray(Image.open(PHOTO).convert("RGB"))[40:40 + lr_size * s, 90:90 + lr_size * s]
    lr = ref.prepare_lr(np.ascontiguousarray(hr), s)
    images = [lr]
    for sigma in (1.2, 2.0, 3.0)[:batch - 1]:
        images.append(ref.correlate(lr, ref.gaussian_kernel(sigma, 9)).numpy().astype(np.float32))
    H = W = lr_size * s
    size = min(16, H - 1)
    windows = [((W - 1 - size) // 2, (H - 1 - size) // 2, size), (1, H - 1 - size // 2, size // 2),
               (W - 1 - size, 0, size)]
    masks = np.stack([ref.window_mask(H, W, *windows[b % len(windows)]) for b in range(batch)])[:, None]
    return np.stack(images).astype(np.float32), masks.astype(np.float32), s


def check(model, path: pathlib.Path, name: str, exporter: str, lr_size: int) -> dict:
    """Build onnxlam's program for `path` and compare it with autograd of the PyTorch `model`."""
    batch = 2 if exporter == "torchscript" else 1  # the dynamo export fixes batch 1
    x, masks, s = inputs(name, lr_size, batch)
    start = time.perf_counter()
    prog = build_program(path, batch=batch, height=lr_size, width=lr_size, cache=False)
    build_seconds = time.perf_counter() - start
    objective, gradient = prog.objective_and_gradient(x, masks)
    objective, gradient = np.asarray(objective, np.float64), np.asarray(gradient, np.float64)
    if gradient.ndim == 5:  # B × K × C × h × w with K = 1 window
        objective, gradient = objective[:, 0], gradient[:, 0]
    objective_ref, gradient_ref = ref.objective_and_gradient(model, x, masks)
    rel = [float(np.abs(gradient[b] - gradient_ref[b]).max() / np.abs(gradient_ref[b]).max()) for b in range(batch)]
    obj_rel = float(np.max(np.abs(objective - objective_ref) / np.abs(objective_ref)))
    return {"batch": batch, "scale": prog.scale, "fd_error": prog.fd_error, "gradient_rel_error": rel,
            "objective_rel_error": obj_rel, "build_seconds": round(build_seconds, 2),
            "agrees": bool(prog.scale == s and max(rel) <= TOLERANCE and obj_rel <= 1e-5)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=pathlib.Path, help="folder to write the .onnx files and summary.json into")
    ap.add_argument("--families", nargs="+", choices=list(arch.REFERENCE_ARCHITECTURES),
                    default=list(arch.REFERENCE_ARCHITECTURES))
    ap.add_argument("--exporters", nargs="+", choices=list(arch.EXPORTERS), default=list(arch.EXPORTERS))
    ap.add_argument("--lr-size", type=int, default=arch.LR_SIZE,
                    help=f"LR height and width of the export and the check (default {arch.LR_SIZE})")
    ap.add_argument("--no-check", action="store_true", help="export and list ops only")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    summary, failures = [], 0
    for name in args.families:
        model = arch.build(name)
        params = sum(p.numel() for p in model.parameters())
        for exporter in args.exporters:
            path = args.out / f"{name}-{exporter}.onnx"
            entry = {"family": name, "exporter": exporter, "file": path.name, "params": params,
                     "scale": arch.scale_of(name)}
            print(f"== {name} ({type(model).__name__}, ×{arch.scale_of(name)}, {params:,} parameters), "
                  f"{exporter} exporter -> {path}", flush=True)
            try:
                arch.export_onnx(model, path, exporter, lr_size=args.lr_size)
            except Exception as exc:  # an exporter failure is reported, the other files still come
                failures += 1
                entry["error"] = f"export failed: {type(exc).__name__}: {exc}"
                print(f"   export FAILED: {type(exc).__name__}: {exc}", flush=True)
                summary.append(entry)
                continue
            entry["ops"] = op_histogram(path)
            print("   ops: " + ", ".join(f"{op} {n}" for op, n in entry["ops"].items()), flush=True)
            if not args.no_check:
                try:
                    result = check(model, path, name, exporter, args.lr_size)
                except Exception as exc:
                    failures += 1
                    entry["error"] = f"{type(exc).__name__}: {exc}"
                    print(f"   gradient program FAILED: {type(exc).__name__}: {exc}", flush=True)
                    traceback.print_exc(limit=3)
                else:
                    entry.update(result)
                    failures += not result["agrees"]
                    verdict = "agrees with autograd" if result["agrees"] else "DISAGREES with autograd"
                    print(f"   gradient program {verdict}: batch {result['batch']}, relative error "
                          + ", ".join(f"{r:.1e}" for r in result["gradient_rel_error"])
                          + f" (tolerance {TOLERANCE:.0e}); objective {result['objective_rel_error']:.1e}; "
                          f"finite differences {result['fd_error']:.1e}; built in {result['build_seconds']:.1f} s",
                          flush=True)
            summary.append(entry)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"{len(summary)} exports, {failures} failure(s); summary in {args.out / 'summary.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
