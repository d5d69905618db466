"""The registry of methods: one explicit list, as spandrel registers its architectures.

Each built-in method is registered by the spec of its `Method` instance ("module:NAME") and imported
when first asked for, so listing names costs nothing and the command line starts without loading
numpy or onnxruntime. `register` adds a method (an instance, or a spec) under its name; a name
registered twice raises. Everything that runs, writes or shows methods (the report, the command
line, the Python API, the HTML page) asks the registry, so a method registered here appears in all
of them.
"""
from __future__ import annotations

import importlib

from onnxlam.core.errors import InputError

DEFAULT = "lam"  # what a report runs, and the gate holds, when no method is named
BUILTIN = (
    ("lam", "onnxlam.methods.lam.method:LAM"),
    ("cem", "onnxlam.methods.cem.method:CEM"),
    ("smoothgrad", "onnxlam.methods.noise_tunnel.method:SMOOTHGRAD"),
    ("smoothgrad_sq", "onnxlam.methods.noise_tunnel.method:SMOOTHGRAD_SQ"),
    ("vargrad", "onnxlam.methods.noise_tunnel.method:VARGRAD"),
    ("erf", "onnxlam.methods.erf.method:ERF"),
    ("video", "onnxlam.methods.video.method:VIDEO"),
    ("faithfulness", "onnxlam.methods.faithfulness.method:FAITHFULNESS"),
    ("sanity", "onnxlam.methods.sanity.method:SANITY"),
)

_entries: dict[str, object] = {}  # name -> Method instance, or its spec until first use


def register(method, name: str | None = None) -> None:
    """Add `method` (a `Method` instance, or a "module:NAME" spec together with `name`) to the registry."""
    if isinstance(method, str):
        if name is None:
            raise ValueError("a method registered by spec needs its name")
    else:
        name = name or method.name
    if name in _entries:
        raise ValueError(f"a method named {name!r} is registered already")
    _entries[name] = method


def unregister(name: str) -> None:
    """Remove a method (one registered by a plugin or a test)."""
    _entries.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered methods' names, in registration order."""
    return tuple(_entries)


def method(name: str):
    """The registered `Method` named `name`; InputError naming the choices for an unknown name."""
    entry = _entries.get(name)
    if entry is None:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(_entries)}")
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
        _entries[name] = entry
    return entry


def methods() -> list:
    """Every registered method, in registration order."""
    return [method(n) for n in _entries]


def parse_methods(values) -> tuple[str, ...]:
    """The methods of `--method` (repeatable, or a comma list) or TOML `methods`/`method`: in order,
    without duplicates; default (DEFAULT,). InputError naming the choices for an unknown name."""
    if values is None:
        return (DEFAULT,)
    items = [values] if isinstance(values, str) else list(values)
    chosen = []
    for item in items:
        if not isinstance(item, str):
            raise InputError(f"a method is a name ({', '.join(_entries)}); got {item!r}")
        chosen += [n.strip().lower() for n in item.split(",") if n.strip()]
    for name in chosen:
        if name not in _entries:
            raise InputError(f"unknown method {name!r}; choose one or more of {', '.join(_entries)} "
                             "(--method lam,cem or --method lam --method cem)")
    if not chosen:
        raise InputError(f"--method names no method; choose one or more of {', '.join(_entries)}")
    return tuple(dict.fromkeys(chosen))


for _name, _spec in BUILTIN:
    register(_spec, _name)
