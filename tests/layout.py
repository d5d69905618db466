"""The house rules' checker, for `tests/test_layout.py`: reads a package's source with `ast` (nothing
is imported) and returns every offence as a line `file:line: what`, so a failing test says where to look.

Every function takes the package folder (`root`, e.g. `.../onnxlam`); the package's name is the
folder's name, so the same code checks the real package and the small fake one the tests write.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 80
CONSUMERS = ("batch", "cli", "render", "api")  # the layers that must not compare method names
ROOT_MODULES = ("__init__", "__main__")


@dataclass(frozen=True)
class Edge:
    """One import: module `source` (file `path`, line `line`) imports module `target`."""

    source: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Package:
    """A package's modules (name -> file), their parsed trees and every import between them."""

    root: Path
    name: str
    files: dict[str, Path] = field(default_factory=dict)
    trees: dict[str, ast.Module] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)  # the modules that are packages (an __init__.py)
    edges: list[Edge] = field(default_factory=list)

    def is_module(self, name: str) -> bool:
        return name in self.files


def module_name(root: Path, path: Path) -> str:
    """`root/x/y.py` -> `pkg.x.y`; `root/x/__init__.py` -> `pkg.x`."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load(root: Path) -> Package:
    """Parse every .py file under `root` and collect its imports (anywhere in the file)."""
    root = Path(root)
    pkg = Package(root=root, name=root.name)
    for path in sorted(root.rglob("*.py")):
        name = module_name(root, path)
        pkg.files[name] = path
        pkg.trees[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        if path.name == "__init__.py":
            pkg.packages.add(name)
    for name, tree in pkg.trees.items():
        pkg.edges += _imports(pkg, name, tree)
    return pkg


def _resolve_relative(pkg: Package, module: str, level: int, target: str | None) -> str:
    base = module if module in pkg.packages else module.rpartition(".")[0]
    parts = base.split(".")
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([target] if target else []))


def _inside(pkg: Package, name: str) -> bool:
    return name == pkg.name or name.startswith(pkg.name + ".")


def _imports(pkg: Package, module: str, tree: ast.Module) -> list[Edge]:
    """The edges out of `module`: `import`, `from ... import`, `importlib.import_module("literal")`."""
    path, edges = pkg.files[module], []

    def add(target: str, line: int) -> None:
        if _inside(pkg, target):
            edges.append(Edge(module, target, path, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(pkg, module, node.level, node.module) if node.level else node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if pkg.is_module(sub) else base, node.lineno)
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
                add(arg.value, node.lineno)
    return list(dict.fromkeys(edges))  # `from m import a, b` of one module is one edge


def _is_import_module(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" and isinstance(func.value, ast.Name) and func.value.id == "importlib"
    return isinstance(func, ast.Name) and func.id == "import_module"


# --- the graph -------------------------------------------------------------------------------------------


def strongly_connected(nodes: set[str], edges: set[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, those of one node left out."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(succ):
        if start in index:
            continue
        work = [(start, iter(sorted(succ[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def _cycle_report(components: list[list[str]], edges: list[tuple[str, str, Edge]], kind: str) -> list[str]:
    lines = []
    for component in components:
        members = set(component)
        lines.append(f"{kind} cycle through {len(component)}: {', '.join(component)}")
        for a, b, edge in sorted(edges, key=lambda e: (str(e[2].path), e[2].line, e[1])):
            if a in members and b in members:
                lines.append(f"  {edge.where()}: {edge.source} imports {edge.target}" + ("" if (a, b) == (edge.source, edge.target) else f"  ({a} -> {b})"))
    return lines


def file_cycles(root: Path) -> list[str]:
    """Modules that import each other, directly or round a loop: each strongly connected component of
    more than one module, with the imports that close it."""
    pkg = load(root)
    edges = [(e.source, e.target, e) for e in pkg.edges if e.source != e.target]
    components = strongly_connected(set(pkg.files), {(a, b) for a, b, _ in edges})
    return _cycle_report(components, edges, "module")


def package_of(pkg: Package, module: str) -> str:
    """`pkg.batch.report.run` -> `pkg.batch.report`; a package's `__init__` is the package itself."""
    if module in pkg.packages or module == pkg.name:
        return module
    return module.rpartition(".")[0] or module


def package_cycles(root: Path) -> list[str]:
    """Packages that import each other round a loop (modules collapsed to their package)."""
    pkg = load(root)
    edges = [(package_of(pkg, e.source), package_of(pkg, e.target), e) for e in pkg.edges]
    edges = [(a, b, e) for a, b, e in edges if a != b]
    nodes = {package_of(pkg, m) for m in pkg.files}
    components = strongly_connected(nodes, {(a, b) for a, b, _ in edges})
    return _cycle_report(components, edges, "package")


# --- layers ----------------------------------------------------------------------------------------------


def layer_of(pkg: Package, module: str, layers: tuple[str, ...]) -> int | None:
    """The index in `layers` of the first name after the package's; None for the root modules."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in ROOT_MODULES:
        return None
    return layers.index(parts[1]) if parts[1] in layers else -1


def upward_imports(root: Path, layers: tuple[str, ...]) -> list[str]:
    """A module of layer i imports only layers <= i; only `__main__` imports the root package; every
    module outside the root ones belongs to a layer."""
    pkg = load(root)
    offences = []
    for module, path in pkg.files.items():
        if layer_of(pkg, module, layers) == -1:
            offences.append(f"{path}:1: {module} is in no layer of {layers}")
    main = f"{pkg.name}.__main__"
    for e in sorted(pkg.edges, key=lambda e: (str(e.path), e.line)):
        if e.target in (pkg.name, main) and e.source != main:
            offences.append(f"{e.where()}: {e.source} imports the root module {e.target}")
            continue
        source, target = layer_of(pkg, e.source, layers), layer_of(pkg, e.target, layers)
        if source is not None and source >= 0 and target is not None and target > source:
            offences.append(f"{e.where()}: {e.source} (layer {layers[source]}) imports {e.target} "
                            f"(layer {layers[target]})")
    return offences


# --- names, sizes, comments ------------------------------------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(root: Path) -> list[str]:
    """No `from pkg.m import _x` from another module (a private module is its package's own)."""
    pkg = load(root)
    offences = []
    for module, tree in pkg.trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _resolve_relative(pkg, module, node.level, node.module) if node.level else node.module
            if not base or not _inside(pkg, base):
                continue
            for alias in node.names:
                if not _private(alias.name):
                    continue
                sub = f"{base}.{alias.name}"
                owner_is_package = pkg.is_module(sub)  # a private module: fine inside its own package
                allowed = module.startswith(base + ".") or module == base if owner_is_package else module == base
                if not allowed:
                    offences.append(f"{pkg.files[module]}:{node.lineno}: {module} imports the private "
                                    f"{'module' if owner_is_package else 'name'} {alias.name} from {base}")
    return offences


def oversized(root: Path, max_class: int = MAX_CLASS_LINES, max_function: int = MAX_FUNCTION_LINES) -> list[str]:
    """No class over `max_class` lines, no function or method over `max_function`."""
    pkg = load(root)
    offences = []
    for module, tree in pkg.trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                limit, kind = max_class, "class"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit, kind = max_function, "function"
            else:
                continue
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                offences.append(f"{pkg.files[module]}:{node.lineno}: {kind} {node.name} is {length} lines "
                                f"(at most {limit})")
    return offences


# The word is split so that this file's own source does not spell the pattern it looks for.
ISSUE_NUMBER = re.compile(r"\b" + "iss" + r"ues?\s*(?:no\.?\s*|number\s*)?#?\s*\d+", re.IGNORECASE)


def _docstrings(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                yield first.value.lineno, first.value.value


def _comments(source: str):
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def issue_numbers(folders: list[Path], skip: tuple[Path, ...] = ()) -> list[str]:
    """No tracker numbers in comments or docstrings: the code says what it does, not which ticket."""
    skip = {Path(p).resolve() for p in skip}
    offences = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            if path.resolve() in skip:
                continue
            source = path.read_text(encoding="utf-8")
            texts = [*_comments(source), *_docstrings(ast.parse(source, filename=str(path)))]
            for line, text in sorted(texts):
                for offset, row in enumerate(text.splitlines()):
                    for match in ISSUE_NUMBER.finditer(row):
                        offences.append(f"{path}:{line + offset}: {match.group(0)!r} in {row.strip()!r}")
    return offences


def _is_consumer(module: str, consumers: tuple[str, ...]) -> bool:
    parts = module.split(".")
    return len(parts) > 1 and parts[1] in consumers


def _strings(node: ast.expr):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for element in node.elts:
            yield from _strings(element)


def method_name_comparisons(root: Path, methods: set[str], consumers: tuple[str, ...] = CONSUMERS) -> list[str]:
    """The consumers (batch, cli, render, api) ask the method registry, never compare a method's name
    (`==`, `!=`, `in`, `not in` against a string that is one)."""
    pkg = load(root)
    ops = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
    offences = []
    for module, tree in pkg.trees.items():
        if not _is_consumer(module, consumers):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(op, ops) for op in node.ops):
                names = sorted({s for side in [node.left, *node.comparators] for s in _strings(side)} & methods)
                if names:
                    offences.append(f"{pkg.files[module]}:{node.lineno}: {module} compares against method "
                                    f"name(s) {', '.join(names)}: {ast.unparse(node)}")
    return offences
