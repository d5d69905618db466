"""Make docs/cem.png: the causal effect map of a bundled network on a bundled photograph.

    python scripts/cem_picture.py [--model animevideov3-x4] [--refine 10] [-o docs/cem.png]

The photograph is a 96×96 crop of chelsea.png around the cat's left eye (LR 24×24 at ×4, a 12×12
grid of 8-px blocks), the ROI 32×32 at (32, 32); the same numbers as

    onnxlam cem animevideov3-x4 chelsea-eye.png --roi 32 32 --refine 10

It saves the panel that command writes (panel.png) and prints the counts, the effect range and the
time taken.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxlam.render import pictures  # noqa: E402
from onnxlam.convert.collection import resolve  # noqa: E402
from onnxlam.methods.cem.files import render  # noqa: E402
from onnxlam.methods.cem.runner import CemRunner  # noqa: E402

CROP = (12, 48, 108, 144)  # left, top, right, bottom of chelsea.png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="animevideov3-x4")
    p.add_argument("--refine", type=int, default=10)
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "cem.png")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "chelsea-eye.png"
        Image.open(ROOT / "onnxlam" / "data" / "chelsea.png").convert("RGB").crop(CROP).save(photo)
        runner = CemRunner(str(resolve(args.model)), device="auto")
        result = runner.run(photo, (32, 32), size=32, draws=args.draws, refine=args.refine,
                            progress=lambda d, t: print(f"\r{d}/{t}", end="", file=sys.stderr))
    print(file=sys.stderr)
    s = result.summary
    panel = render(result)["panel.png"]  # the picture `onnxlam cem` writes as panel.png
    pictures.save(str(args.output), panel)
    print(f"reference PSNR {result.reference_psnr:.3f} dB; positive {s.positive}, negative {s.negative}, "
          f"neutral {s.neutral}, ROI {s.roi_blocks}; range {s.effect_range:.2f} dB "
          f"(min {s.minimum:.3f}, max {s.maximum:.3f}); {int(result.refined.sum())} refined; "
          f"{result.forward_passes} forward passes, batch {result.batch_size}, {result.seconds:.1f} s "
          f"on {result.provider}; wrote {args.output}")


if __name__ == "__main__":
    main()
