"""Running the `onnxlam` command line from tests, against this checkout."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "onnxlam" / "data" / "chelsea.png"


def run_cli(*args, cwd=None, env_extra=None, timeout=600):
    """`python -m onnxlam ARGS` with this checkout first on the path; returns the CompletedProcess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "onnxlam", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
