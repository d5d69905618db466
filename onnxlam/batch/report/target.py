"""Where a report runs: `--cluster local:N` (a Dask LocalCluster) or `--scheduler ADDRESS` (a running
Dask scheduler), parsed and checked without Dask (`batch/cluster.py` runs it)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from onnxlam.core.errors import InputError

SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")
_LOCAL = re.compile(r"local:(\d+)")
_ADDRESS = re.compile(r"(%s)://[^\s/]+" % "|".join(SCHEMES))


@dataclass(frozen=True)
class Target:
    """A Dask cluster to run on: a local one of `workers` processes, or a scheduler `address` or file."""

    workers: int | None = None         # local:N
    address: str | None = None         # tcp://host:port, tls://host:port …
    scheduler_file: str | None = None  # the JSON written by `dask scheduler --scheduler-file`

    @property
    def local(self) -> bool:
        return self.workers is not None

    def describe(self) -> str:
        if self.local:
            return "a local Dask cluster on 127.0.0.1"
        return f"the Dask scheduler {self.address or self.scheduler_file}"

    def to_json(self) -> dict:
        return {"workers": self.workers, "address": self.address, "scheduler_file": self.scheduler_file}


def parse_target(cluster: str | None, scheduler: str | None) -> Target | None:
    """The Target of `--cluster local:N` or `--scheduler ADDRESS` (None for neither); InputError when a
    value is malformed or both are given. A scheduler file must exist and name an address."""
    if cluster is not None and scheduler is not None:
        raise InputError("give --cluster or --scheduler, not both (`cluster` and `scheduler` in a config "
                         "are exclusive too)")
    if cluster is not None:
        match = _LOCAL.fullmatch(cluster.strip())
        if not match:
            raise InputError(f"--cluster takes local:N (N worker processes on this machine); got {cluster!r}; "
                             "for a cluster elsewhere use --scheduler ADDRESS")
        n = int(match.group(1))
        if not 1 <= n <= 1024:
            raise InputError(f"--cluster local:N needs 1 ≤ N ≤ 1024 workers; got {n}")
        return Target(workers=n)
    if scheduler is not None:
        text = scheduler.strip()
        if "://" in text:
            if not _ADDRESS.fullmatch(text):
                raise InputError(f"--scheduler {scheduler!r} is not a scheduler address: use "
                                 f"{'://host:port, '.join(SCHEMES)}://host:port, or a scheduler file (JSON)")
            return Target(address=text)
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"--scheduler {scheduler!r}: no such scheduler file; give tcp://host:port, "
                             "tls://host:port, or the JSON file of `dask scheduler --scheduler-file`")
        try:
            data = json.loads(path.read_text())
            address = data["address"]
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"--scheduler {scheduler!r} is not a Dask scheduler file (JSON with an "
                             "\"address\")") from None
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise InputError(f"--scheduler file {scheduler!r} names no valid address ({address!r})")
        return Target(scheduler_file=str(path.resolve()))
    return None

