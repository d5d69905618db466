"""Make docs/video.png: video LAM of the recurrent (BasicVSR-style) test network on five frames.

    python scripts/video_picture.py [-o docs/video.png] [--fold 50]

The frames are 128×128 HR crops of chelsea.png, the camera panning 6 px right per frame; the network
is tests/video_architectures.py's RecurrentVSR (seeded random weights, ×2, flow-warped hidden state),
exported to ONNX for 5 frames. The picture is the strip `onnxlam lam` writes for

    onnxlam lam recurrent.onnx frames/ --frame 4 --window 56 56 --size 16

Prints the shares, the DIs and the time taken.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxlam.lam.image import bundled_photo  # noqa: E402
from onnxlam.methods.video.analyzer import VideoAnalyzer, frame_files, write_video_result  # noqa: E402
from tests.video_architectures import RecurrentVSR, build, export  # noqa: E402

FRAMES, SIDE, PAN = 5, 128, 6
ORIGIN = (20, 40)  # left, top of the first crop in chelsea.png
WINDOW = (56, 56)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "video.png")
    p.add_argument("--fold", type=int, default=50)
    args = p.parse_args()
    photo = np.asarray(Image.open(bundled_photo("chelsea")).convert("RGB"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "frames"
        folder.mkdir()
        for t in range(FRAMES):
            left, top = ORIGIN[0] + PAN * t, ORIGIN[1]
            Image.fromarray(photo[top:top + SIDE, left:left + SIDE]).save(folder / f"frame{t}.png")
        model = export(build(RecurrentVSR), tmp / "recurrent.onnx", "torchscript", shape=(1, FRAMES, 3, 16, 16))
        start = time.perf_counter()
        result = VideoAnalyzer(model, FRAMES, FRAMES - 1, device="cpu").run_video(
            [str(f) for f in frame_files([folder])], WINDOW, 16, fold=args.fold)
        write_video_result(result, tmp / "out")
        shutil.copyfile(tmp / "out" / "strip.png", args.output)
    print("shares", " ".join(f"{s:.3f}" for s in result.shares))
    print("DI per frame", " ".join(f"{d:.2f}" for d in result.di_frames),
          f"joint {result.di_joint:.2f} temporal {result.di_temporal:.2f}")
    print(f"{time.perf_counter() - start:.1f} s; wrote {args.output}")


if __name__ == "__main__":
    main()
