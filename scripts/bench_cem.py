"""Throughput of `onnxlam cem`: interventions per second by batch size and with/without the crop.

    python scripts/bench_cem.py [--model animevideov3-x4] [--side 96] [--roi 32] [--device auto]

One coarse pass (draws 1, no refinement) on a side×side crop of the bundled cat photo, ROI 32×32
at (roi, roi); each configuration is run once (its session created beforehand). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxlam.convert.collection import resolve  # noqa: E402
from onnxlam.methods.cem.runner import CemRunner  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="animevideov3-x4")
    p.add_argument("--side", type=int, default=96)
    p.add_argument("--roi", type=int, default=32)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    model = str(resolve(args.model))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.png"
        Image.open(ROOT / "onnxlam" / "data" / "chelsea.png").convert("RGB").crop((0, 0, args.side, args.side)).save(photo)
        for batch, crop in ((1, False), (None, False), (1, True), (None, True)):
            runner = CemRunner(model, device=args.device, batch_size=batch)
            kw = dict(draws=1, refine=0, crop=crop)
            runner.session()  # the session's creation is not timed
            start = time.perf_counter()
            r = runner.run(photo, (args.roi, args.roi), size=32, **kw)
            seconds = time.perf_counter() - start
            n = r.grid[0] * r.grid[1]
            rows.append((r.batch_size, "yes" if r.crop else "no", n, r.forward_passes - 1, seconds, n / seconds))
    print(f"{args.model}, {args.side}×{args.side} image, ROI 32 at ({args.roi}, {args.roi}), {r.provider}\n")
    print("| batch | crop | interventions | model runs | seconds | interventions/s |")
    print("|---|---|---|---|---|---|")
    for b, c, n, runs, s, rate in rows:
        print(f"| {b} | {c} | {n} | {runs} | {s:.2f} | {rate:.1f} |")


if __name__ == "__main__":
    main()
