"""Numbers as people read them in tables (the terminal's and index.html's)."""


def fmt(value, digits: int = 2) -> str:
    """A table cell: – for None, integers as they are, floats to `digits` places."""
    return "–" if value is None else (str(value) if isinstance(value, int) else f"{value:.{digits}f}")
