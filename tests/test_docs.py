"""The documentation runs: every fenced `sh` and `python` block of README.md, docs/*.md and
exported_models/README.md either runs here, as written, in a folder holding the bundled models and
images (photo.png and photos/ are the bundled cat photograph, config.toml is the README's TOML
example), or says above it why not (`<!-- synopsis -->` for a usage summary, `<!-- not run: … -->`).
Every `onnxlam` command line of every block, run or not, names a real command and real flags; the
README's TOML example shows every key a report configuration takes, and loads."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.clitools import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "exported_models" / "README.md"]
MARKER = re.compile(r"<!--\s*(synopsis|python-example|run|not run:[^>]*?)\s*-->\s*$")
RUN_TIMEOUT = 300


@dataclass(frozen=True)
class Block:
    file: Path
    line: int
    language: str
    marker: str  # "run" unless marked
    text: str

    @property
    def name(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            fence = re.match(r"^```(\w+)\s*$", lines[i])
            if not fence:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if fence.group(1) in ("sh", "python"):
                above = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
                m = MARKER.search(above)
                marker = m.group(1) if m else "run"
                found.append(Block(doc, i + 1, fence.group(1), "run" if marker == "python-example" else marker,
                                   "\n".join(lines[i + 1:end])))
            i = end + 1
    return found


def commands(text: str) -> list[str]:
    """The shell lines of a block, continuations joined, comments dropped."""
    joined, out = text.replace("\\\n", " "), []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            out.append(line)
    return out


def _help(command: str) -> str:
    args = [command, "--help"] if command else ["--help"]
    done = subprocess.run([sys.executable, "-m", "onnxlam", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


def test_every_block_runs_or_says_why():
    """A block not run says why in a few words; the ones not run are listed by name (pytest -rA)."""
    found = blocks()
    assert len(found) > 10, "the documentation's blocks were not found"
    vague = [b.name for b in found if b.marker.startswith("not run") and len(b.marker.split()) < 5]
    assert not vague, f"a block marked not run gives no reason: {vague}"
    print("\n".join(f"not run here: {b.name} ({b.marker})" for b in found if b.marker != "run"))


def test_every_onnxlam_line_names_a_real_command_and_real_flags():
    top = _help("")
    known = set(re.findall(r"^\s{2}([a-z][a-z0-9_-]+)\s", top.split("Commands:")[1], re.M))
    helps: dict[str, str] = {}
    problems = []
    for block in blocks():
        if block.language != "sh":
            continue
        for line in commands(block.text):
            words = line.split()
            for start in [i for i, w in enumerate(words) if w == "onnxlam"]:
                if start + 1 >= len(words):
                    continue
                sub = words[start + 1]
                if sub.startswith("-"):
                    continue
                if sub not in known:
                    problems.append(f"{block.name}: no command `onnxlam {sub}`")
                    continue
                text = helps.setdefault(sub, _help(sub))
                rest = " ".join(words[start + 2:]).split("&&")[0].split(">")[0]
                for flag in set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest)):
                    if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                        problems.append(f"{block.name}: `onnxlam {sub}` has no flag {flag}")
    assert not problems, "\n".join(problems)


def _toml_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert found, "the README shows no TOML report configuration"
    return found[0]


def test_the_readme_toml_example_shows_every_key_and_loads(tmp_path):
    from onnxlam.batch.report.config import config_keys, load_config

    example = _toml_example()
    shown = set(re.findall(r"^#?\s*([a-z_]+)\s*=", example, re.M))
    missing = [k for k in config_keys() if k not in shown]
    assert not missing, f"keys the README's TOML example does not show: {missing}"
    (tmp_path / "photos").mkdir()
    shutil.copy(REPO / "onnxlam" / "data" / "chelsea.png", tmp_path / "photos" / "cat.png")
    path = tmp_path / "config.toml"
    path.write_text(example)
    values = load_config(path)
    assert values.windows and values.models and values.images


def _sandbox(tmp_path: Path) -> dict:
    """A folder the blocks run in, and their environment (`onnxlam` is this checkout's)."""
    data = REPO / "onnxlam" / "data"
    (tmp_path / "onnxlam").mkdir()
    (tmp_path / "onnxlam" / "data").symlink_to(data)
    shutil.copy(data / "chelsea.png", tmp_path / "photo.png")
    (tmp_path / "photos").mkdir()
    shutil.copy(data / "chelsea.png", tmp_path / "photos" / "cat.png")
    (tmp_path / "config.toml").write_text(_toml_example())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "onnxlam"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m onnxlam "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}


RUNNABLE = [b for b in blocks() if b.marker == "run"]


@pytest.mark.integration
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_a_block_runs_as_written(block, tmp_path):
    env = _sandbox(tmp_path)
    if block.language == "python":
        script = tmp_path / "block.py"
        script.write_text(block.text)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=RUN_TIMEOUT)
        assert done.returncode == 0, f"{block.name}:\n{done.stderr[-3000:]}"
        return
    for line in commands(block.text):
        done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=RUN_TIMEOUT)
        assert done.returncode == 0, f"{block.name}: `{line}` exited {done.returncode}:\n{done.stderr[-3000:]}"

