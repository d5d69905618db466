"""The house rules, read from the source with `ast` (the checker is `tests/layout.py`): no import cycles
between modules or packages, imports only downward through `onnxlam.LAYERS`, no private names across
modules, short classes and functions, no tracker numbers in comments, no method names compared in the
consumers, and a command line that starts without the heavy libraries. The last test shows each check
catches its offence in a small fake package."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import layout

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "onnxlam"
HEAVY = ("numpy", "onnxruntime", "onnx_ad", "scipy", "torch", "dask", "distributed")
FALLBACK_METHODS = {"lam", "cem", "erf", "smoothgrad", "smoothgrad_sq", "vargrad", "video", "faithfulness", "sanity"}


def declared_layers(root: Path = PACKAGE) -> tuple[str, ...]:
    """`LAYERS` as `onnxlam/__init__.py` assigns it, read without importing the package."""
    tree = ast.parse((root / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "LAYERS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"{root / '__init__.py'} assigns no LAYERS")


def method_names() -> set[str]:
    """The registry's method names (`onnxlam.method_names()`), or the known list while it has none."""
    import onnxlam

    try:
        return set(onnxlam.method_names())
    except (AttributeError, ImportError):
        return set(FALLBACK_METHODS)


def report(rule: str, offences: list[str]) -> str:
    return f"{rule}: {len(offences)} offence(s)\n" + "\n".join(offences)


def test_no_file_cycle():
    """No two modules import each other, directly or round a loop."""
    offences = layout.file_cycles(PACKAGE)
    assert not offences, report("module import cycles", offences)


def test_no_package_cycle():
    """With modules collapsed to their package, no packages import each other round a loop."""
    offences = layout.package_cycles(PACKAGE)
    assert not offences, report("package import cycles", offences)


def test_no_upward_import():
    """A module imports only its own layer and the layers before it; only `__main__` imports `onnxlam`."""
    offences = layout.upward_imports(PACKAGE, declared_layers())
    assert not offences, report(f"imports against LAYERS {declared_layers()}", offences)


def test_no_private_name_across_modules():
    """`from onnxlam.m import _x` only inside `onnxlam.m` (a private module only inside its package)."""
    offences = layout.private_imports(PACKAGE)
    assert not offences, report("private names imported across modules", offences)


def test_size():
    """No class over 300 lines, no function or method over 80."""
    offences = layout.oversized(PACKAGE)
    assert not offences, report("oversized definitions", offences)


def test_no_issue_numbers():
    """Comments and docstrings in onnxlam/ and tests/ name no tracker numbers."""
    offences = layout.issue_numbers([PACKAGE, REPO / "tests"], skip=(Path(__file__), Path(layout.__file__)))
    assert not offences, report("tracker numbers in comments or docstrings", offences)


def test_no_method_name_comparisons_in_consumers():
    """batch/, cli/, render/ and api.py ask the method registry instead of comparing method names."""
    offences = layout.method_name_comparisons(PACKAGE, method_names())
    assert not offences, report("method names compared in the consumers", offences)


CLI_PROBE = """
import contextlib, io, json, sys
from onnxlam.cli import main
codes = {}
for command in ([], ["report"], ["lam"], ["cem"]):
    sys.argv = ["onnxlam", *command, "--help"]
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            main()
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    codes[" ".join(command) or "(top)"] = [code, "Usage" in text.getvalue()]
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def test_light_command_line():
    """`onnxlam --help` (and `report`, `lam`, `cem --help`) loads none of the heavy libraries."""
    done = subprocess.run([sys.executable, "-c", CLI_PROBE], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    failed = {command: v for command, v in result["codes"].items() if v != [0, True]}
    assert not failed, f"--help did not print usage with exit 0 (code, printed usage): {failed}\n{done.stderr}"
    heavy = sorted(m for m in result["modules"] if m.split(".")[0] in HEAVY)
    assert not heavy, f"--help loaded heavy modules: {', '.join(heavy)}"


FAKE = {  # a package of layers low < high, breaking each rule once
    "__init__.py": 'LAYERS = ("low", "high", "cli")\n',
    "low/__init__.py": "",
    "low/a.py": "from fake.low import b\n\n\ndef helper():\n    from fake.high import c  # inside a function\n    return c\n",
    "low/b.py": "from fake.low.a import helper\nfrom fake.high.c import _secret\n",
    "low/root.py": "import fake\n",
    "high/__init__.py": "",
    "high/c.py": "from fake.low import a\n\n_secret = 1\n" + "# (iss" + "ue 7) a tracker number\n",
    "high/long.py": "def long():\n" + "    x = 1\n" * 79 + "    return x\n",
    "cli/__init__.py": "def pick(name):\n    return name == 'lam'\n",
}


def write_fake(tmp_path: Path) -> Path:
    root = tmp_path / "fake"
    for name, text in FAKE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_checker_catches_each_offence(tmp_path):
    """Each check reports its offence in a fake package, naming the file and line."""
    root = write_fake(tmp_path)
    layers = declared_layers(root)

    cycles = "\n".join(layout.file_cycles(root))
    assert "fake.low.a, fake.low.b" in cycles and f"{root / 'low' / 'a.py'}:1" in cycles, cycles

    packages = "\n".join(layout.package_cycles(root))
    assert "fake.high, fake.low" in packages and f"{root / 'low' / 'a.py'}:5" in packages, packages

    upward = layout.upward_imports(root, layers)
    assert any(f"{root / 'low' / 'a.py'}:5: fake.low.a (layer low) imports fake.high.c (layer high)" in o
               for o in upward), upward
    assert any(f"{root / 'low' / 'root.py'}:1: fake.low.root imports the root module fake" in o for o in upward), upward

    private = layout.private_imports(root)
    assert any(f"{root / 'low' / 'b.py'}:2" in o and "_secret" in o for o in private), private

    sizes = layout.oversized(root)
    assert sizes == [f"{root / 'high' / 'long.py'}:1: function long is 81 lines (at most 80)"], sizes

    issues = layout.issue_numbers([root])
    assert len(issues) == 1 and f"{root / 'high' / 'c.py'}:4" in issues[0], issues

    compared = layout.method_name_comparisons(root, FALLBACK_METHODS, consumers=("cli",))
    assert len(compared) == 1 and f"{root / 'cli' / '__init__.py'}:2" in compared[0], compared

