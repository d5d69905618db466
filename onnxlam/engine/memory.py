"""Memory: the budget (`--max-memory`) and what gradient programs need, measured rather than estimated.

A gradient program keeps every activation of the forward pass for the reverse pass, so its peak
memory is what limits the batch size and, for large images, whether one path step fits at all.
onnxlam does not add up tensor sizes to guess it (allocators, kernel workspaces and the runtime's
memory planner make such sums wrong both ways): it runs the program at batch 1 on one or two small
probe sizes, each in a fresh child process so that memory freed earlier cannot hide what the run
needs, and reads how much the child's resident set (on CUDA: the device memory in use) grew while
the session was created (`static`: weights, prepacked kernels) and while it ran (`activations`).

Activation memory of a local network is linear in the number of input pixels (every tensor is a
fixed multiple of the image's size), and a batch of B costs B images, so

    peak(B, P) ≈ static + B · (a + b·P)

with a, b from two probes. A global network (attention over all positions) may grow with P², so it
gets a third probe and a quadratic term. The prediction chooses the batch and, when even one step at
full size does not fit, the largest crop that does (see `planner.py`); the peak of the real run is
measured again and reported beside the prediction.

Measuring here means Linux's peak resident set (`VmHWM`, reset through `/proc/self/clear_refs`) on
the CPU and `cudaMemGetInfo` on CUDA (onnxruntime's device arena keeps what it once allocated, so
the memory in use after a run is its peak).
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxlam.core.sizes import format_size, parse_size  # noqa: F401  (the memory options' units)
from onnxlam.engine.cache import is_int, require

SAFE_FRACTION = 0.7   # of available memory, for the default budget
HEADROOM = 1.1        # a program's measured needs are multiplied by this before they meet the budget
SLACK = 64 << 20      # and this is added: what the process allocates besides (building programs, Python)
def margin(nbytes: float) -> float:
    """What measured program needs of `nbytes` count for against the budget (HEADROOM, SLACK)."""
    return HEADROOM * nbytes + SLACK


def room(nbytes: float) -> float:
    """The measured program needs that `nbytes` of budget holds: the inverse of `margin`."""
    return (nbytes - SLACK) / HEADROOM


# --- measuring: host -------------------------------------------------------------------------------

def _proc_kib(path: str, field: str) -> int | None:
    """Bytes of a `Field:  N kB` line of a /proc file (None where there is no such file or line)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _status(field: str, pid: int | str = "self") -> int | None:
    return _proc_kib(f"/proc/{pid}/status", field)


def _maxrss() -> int | None:
    """The process's lifetime peak resident set where /proc is missing (macOS: bytes; BSDs: KiB)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def resident() -> int:
    """This process's resident set now, in bytes (without /proc: its peak so far, an upper bound)."""
    return _status("VmRSS") or _maxrss() or 0


def trim() -> None:
    """Hand the allocator's free pages back to the system (glibc's `malloc_trim`; elsewhere nothing).

    Memory freed earlier in this process (a finished session's arena, say) stays resident, and a
    later allocation reuses it without growing the resident set: a measurement in this process
    would then see less than the work needs (a CEM forward pass measured 0.18 MB per image after
    another run, 1.49 MB in a fresh process). Trimmed first, the work's pages are faulted in anew.
    """
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None
_earlier_peak = 0  # the highest peak before the last reset, so `process_peak` stays the whole run's


def reset_peak() -> bool:
    """Start a new peak measurement (Linux ≥ 4.0); False where the peak cannot be reset."""
    global _earlier_peak
    _earlier_peak = max(_earlier_peak, _status("VmHWM") or 0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_resident() -> int | None:
    """The peak resident set since the last `reset_peak` (without /proc: over the process's life, which
    a fresh probe process is; None where unknown)."""
    return _status("VmHWM") or _maxrss()


def process_peak() -> int | None:
    """The peak resident set over the whole process, resets notwithstanding."""
    now = _status("VmHWM")
    return None if now is None else max(now, _earlier_peak)


def available_memory() -> int:
    """Memory this process could still use: MemAvailable, within a cgroup (container) limit if lower."""
    free = _proc_kib("/proc/meminfo", "MemAvailable")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free if free is not None else 1 << 62, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free if free is not None else 4 << 30


# --- measuring: CUDA -------------------------------------------------------------------------------

_cudart = None


def cuda_runtime():
    """The CUDA runtime library (ctypes), loaded once; None where there is none."""
    global _cudart
    if _cudart is None:
        _cudart = False
        for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so", "cudart64_13.dll", "cudart64_12.dll"):
            try:
                _cudart = ctypes.CDLL(name)
                break
            except OSError:
                continue
    return _cudart or None


def gpu_memory() -> tuple[int, int] | None:
    """(free, total) bytes of the current CUDA device, or None where the CUDA runtime is not loadable."""
    lib = cuda_runtime()
    if lib is None:
        return None
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    if lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
        return None
    return free.value, total.value


def default_budget(device: str) -> int:
    """The default `--max-memory`: a safe fraction of what is free (host RAM, or the GPU's memory)."""
    if device == "cuda":
        gpu = gpu_memory()
        if gpu is not None:
            return int(SAFE_FRACTION * gpu[0])
    return resident() + int(SAFE_FRACTION * available_memory())


def in_use(device: str) -> int | None:
    """What counts against the budget now: the resident set, or device memory in use on CUDA."""
    if device == "cuda":
        gpu = gpu_memory()
        return None if gpu is None else gpu[1] - gpu[0]
    return resident()


class PeakMeter:
    """`with PeakMeter(device) as m: ...` then `m.peak`: the peak of what counts against the budget.

    On the CPU the process's peak resident set during the block; on CUDA the device memory in use
    after it (the runtime's arena keeps its high-water mark). None where it cannot be measured.
    """

    def __init__(self, device: str):
        self.device = device
        self.peak: int | None = None

    def __enter__(self) -> "PeakMeter":
        if self.device != "cuda":
            reset_peak()
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            self.peak = in_use("cuda")
        else:
            self.peak = peak_resident()  # without a reset, the process's peak so far: an upper bound


class ProcessPeak:
    """The peak resident set of another process, sampled from /proc every millisecond (for benchmarks:
    independent of the process's own `VmHWM`, which `reset_peak` resets)."""

    def __init__(self, pid: int):
        import threading

        self.pid, self.peak, self._done = pid, 0, False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import time

        while not self._done:
            self.peak = max(self.peak, _status("VmRSS", self.pid) or 0)
            time.sleep(0.001)

    def stop(self) -> int:
        self._done = True
        self._thread.join()
        return self.peak


# --- the footprint ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """One measurement: a batch-1 program on `pixels` LR pixels needed `static` + `activations` bytes,
    and its gradient check (see `program._verify`) `check` bytes beyond `static` (None: not run)."""

    pixels: int
    static: int
    activations: int
    check: int | None = None

    def to_json(self) -> dict:
        return {"pixels": self.pixels, "static": self.static, "activations": self.activations,
                "check": self.check}

    @classmethod
    def from_json(cls, data) -> "Probe":
        """A probe as `to_json` wrote it; DamagedEntry for anything else."""
        require(isinstance(data, dict) and set(data) == {"pixels", "static", "activations", "check"},
                "a probe is not {pixels, static, activations, check}")
        require(is_int(data["pixels"]) and data["pixels"] > 0, "a probe's pixels is not a positive integer")
        require(all(is_int(data[k]) for k in ("static", "activations")), "a probe's bytes are not integers")
        require(data["check"] is None or is_int(data["check"]), "a probe's check bytes are not an integer")
        return cls(**data)


@dataclass(frozen=True)
class Footprint:
    """What a model's gradient programs need, from probes: `peak(batch, pixels)` in bytes."""

    probes: tuple[Probe, ...]
    quadratic: bool = False

    @property
    def static(self) -> int:
        return max(p.static for p in self.probes)

    @property
    def check(self) -> int:
        """Bytes the gradient check of a new program needs (it runs at the probes' largest size)."""
        return max((p.static + p.check for p in self.probes if p.check is not None), default=0)

    def per_image(self, pixels: int) -> float:
        """Activation bytes of one batch element of `pixels` LR pixels (fitted, never below a probe's rate)."""
        return float(per_image(np.array([p.pixels for p in self.probes], float),
                               np.array([p.activations for p in self.probes], float), pixels, self.quadratic))

    def peak(self, batch: int, pixels: int) -> float:
        """Predicted bytes for a program of `batch` images of `pixels` LR pixels (static included)."""
        return self.static + batch * self.per_image(pixels)

    def max_pixels(self, available: float) -> int:
        """The most LR pixels one batch-1 step can have within `available` bytes (0 if none)."""
        lo, hi = 0, 1
        while self.peak(1, hi) <= available and hi < 1 << 40:
            hi *= 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.peak(1, mid) <= available else (lo, mid)
        return lo

    def to_json(self) -> dict:
        return {"probes": [p.to_json() for p in self.probes], "quadratic": self.quadratic}

    @classmethod
    def from_json(cls, data) -> "Footprint":
        """A footprint as `to_json` wrote it (a cache record); DamagedEntry for anything else."""
        require(isinstance(data, dict), "a footprint is not a JSON object")
        require(isinstance(data.get("probes"), list) and len(data["probes"]) > 0, "a footprint has no probes")
        require(isinstance(data.get("quadratic"), bool), "a footprint's quadratic is not true or false")
        return cls(tuple(Probe.from_json(p) for p in data["probes"]), data["quadratic"])


@dataclass(frozen=True)
class MemoryUsage:
    """result.json's "memory": the limit, what the footprint predicted, and what the run measured."""

    device: str
    limit: int | None            # bytes; None where nothing was measured and no --max-memory was given
    baseline: int | None         # what was in use when the batch was chosen
    predicted_peak: int | None   # for the batch that ran (None where it was not the planned one)
    measured_peak: int | None
    probes: tuple[Probe, ...] | None

    @property
    def counts(self) -> str:
        return "resident set of the process" if self.device == "cpu" else "device memory held by onnxlam's sessions"

    def to_json(self) -> dict:
        return {"device": self.device, "counts": self.counts, "limit": self.limit, "baseline": self.baseline,
                "predicted_peak": self.predicted_peak, "measured_peak": self.measured_peak,
                "probes": None if self.probes is None else [p.to_json() for p in self.probes]}


def per_image(pixels: np.ndarray, activations: np.ndarray, at: float, quadratic: bool = False) -> float:
    """Activation bytes at `at` pixels from measured (pixels, activations) pairs.

    One probe: proportional. Two or more: the line through the two largest (slope clipped at 0);
    below the largest probe, never under the piecewise-linear interpolation of the probes.
    Quadratic (three probes): the larger of the line and the parabola through the largest three.
    """
    order = np.argsort(pixels)
    p, a = pixels[order], activations[order]
    if len(p) == 1 or p[-1] == p[-2]:
        return float(a[-1] / p[-1] * at)
    slope = max((a[-1] - a[-2]) / (p[-1] - p[-2]), 0.0)
    line = a[-1] + slope * (at - p[-1])
    if at < p[-1]:  # inside the probed range: interpolate, never below the rate of the nearest probe
        line = max(line, float(np.interp(at, p, a)))
    if quadratic and len(p) >= 3:
        c = np.polyfit(p[-3:], a[-3:], 2)
        line = max(line, float(np.polyval([max(c[0], 0.0), c[1], c[2]], at)))
    return max(float(line), 0.0)


def probe(program, device: str, check: bool = False, rules=None, meanwhile=None) -> Probe:
    """Measure a batch-1 `GradientProgram` in a fresh child process; with `check`, its gradient check too,
    whose result is recorded as the program's `fd_error` (so it need not be run again). `rules`: the
    model's `program.RuleCheck` (the node-local part of the check; default: on the program itself).
    `meanwhile`: work for this process while the child runs (a program build: pure Python, so it
    takes the core the child's runtime leaves; it must not be a measured run)."""
    with tempfile.TemporaryDirectory(prefix="onnxlam-probe-") as tmp:
        path = Path(tmp) / "program.onnx"
        program.save(path)
        spec = rules.argument(tmp) if check and rules is not None else "own"
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the package
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen([sys.executable, "-m", "onnxlam.engine.memory", str(path), device, str(int(check)),
                                 spec], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            if meanwhile is not None:
                meanwhile()
            stdout, stderr = proc.communicate()
        finally:
            if proc.poll() is None:  # `meanwhile` raised (or Ctrl-C): no child outlives its parent
                proc.kill()
                proc.communicate()
    if proc.returncode != 0:
        lines = (stderr or stdout).strip().splitlines()
        raise RuntimeError(f"memory probe failed: {lines[-1] if lines else proc.returncode}")
    data = json.loads(stdout.strip().splitlines()[-1])
    if data.get("fd_error") is not None:
        program.fd_error = float(data["fd_error"])
        if rules is not None and data.get("rules_error") is not None:
            rules.checked = float(data["rules_error"])
            rules.record()
    return Probe(program.key.height * program.key.width, int(data["static"]), int(data["activations"]),
                 None if data.get("check") is None else int(data["check"]))


def _child(path: str, device: str, check: bool, rules: str = "own") -> dict:
    """The probe's child process: load, create the session, run twice, report what each step cost; with
    `check`, the gradient check on the same input (`rules`: `RuleCheck.argument`)."""
    from onnxlam.engine.program import RuleCheck, load_program
    from onnxlam.engine.runtime import cuda_available

    if device == "cuda":
        cuda_available()  # the CUDA context exists before the first reading
    before = in_use(device)
    program = load_program(path)  # the parent holds the program's ModelProto too: it counts as static
    from onnxlam.engine.gradcheck import check_forward_reverse, combine, probe_inputs

    x, mask = probe_inputs(program)  # the check's own input: its first run is the probe's
    feeds = program.feeds(x, mask)
    inputs = sum(f.nbytes for f in feeds.values())  # the parent holds its inputs outside the budget too
    session = program.session(device)
    created = in_use(device)
    with PeakMeter(session.device) as meter:
        for _ in range(2):  # a second run would show an allocator that grows from run to run
            outputs = session.run(feeds)
    if before is None or meter.peak is None:
        raise RuntimeError("memory cannot be measured on this platform")
    result = {"static": max(created - before - inputs, 0), "activations": max(meter.peak - created, 0)}
    if check:
        with PeakMeter(session.device) as meter:
            forward_reverse = check_forward_reverse(program, device, computed=program.unpack(outputs))
            rule_check = RuleCheck.from_argument(rules)
            result["fd_error"] = combine(forward_reverse, rule_check.run(program, device))
            result["rules_error"] = rule_check.checked
        result["check"] = max(meter.peak - created, 0)
    return result


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2], sys.argv[3] == "1", *sys.argv[4:5])))
