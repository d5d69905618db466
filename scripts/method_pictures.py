"""The README's pictures of the methods beyond LAM: docs/erf.png and docs/noise_tunnel.png.

Each picture is made by the very command the README shows, run on the bundled realesr-animevideov3
×4 (`exported_models/`) and the two bundled photographs, into a temporary folder; the picture is
then copied into docs/.

    python scripts/method_pictures.py              # both
    python scripts/method_pictures.py --only erf   # one of them
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "onnxlam" / "data"
MODEL = "animevideov3-x4"

COMMANDS = {
    # the centre pixel of the 256×256 output, averaged over both photographs
    "erf": (["erf", MODEL, str(DATA / "chelsea.png"), str(DATA / "astronaut.png"), "--pixel", "128", "128"],
            "erf.png", "erf.png"),
    # the demo's window, SmoothGrad over 8 noisy copies
    "noise_tunnel": (["lam", MODEL, str(DATA / "chelsea.png"), "--window", "120", "72",
                      "--noise-tunnel", "smoothgrad", "--samples", "8", "--stdev", "0.1", "--seed", "0"],
                     "panel.png", "noise_tunnel.png"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(COMMANDS), action="append")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or COMMANDS:
            command, picture, target = COMMANDS[name]
            out = Path(tmp) / name
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "onnxlam", *command, "--out", str(out)], check=True, cwd=REPO)
            shutil.copyfile(out / picture, REPO / "docs" / target)
            print(f"docs/{target}: onnxlam {' '.join(command)}  ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
