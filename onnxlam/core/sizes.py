"""Memory sizes as users write them (`24G`, `1.5GiB`, `800M`) and as onnxlam prints them."""
from __future__ import annotations

import re

from onnxlam.core.errors import InputError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10 ** 6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10 ** 9, "gib": 1 << 30, "t": 1 << 40, "tb": 10 ** 12,
          "tib": 1 << 40}


def parse_size(text: str | int | float) -> int:
    """Bytes from `24G`, `24GiB`, `1.5g`, `512M`, `16e9` or a plain number (K/M/G/T alone are binary)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise InputError(f"--max-memory: cannot read {text!r}; write a size like 24G, 1.5GiB or 800M")
        value = float(m.group(1)) * _UNITS[unit]
    if not value > 0:
        raise InputError(f"--max-memory must be positive; got {text!r}")
    return int(value)


def format_size(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"
