"""The CI gate for exported networks: DI bounds, drift against a baseline report, gradient checks.

`check_cases` analyses cases and collects violations: a DI outside [min_di, max_di], a DI that moved
more than `tolerance` from the baseline's, a case that no longer runs, and (with gradient checks) a
gradient program that disagrees with finite differences or mixes batch elements. The gate passes
when there is no violation.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from onnxlam.batch.report.run import default_resolver
from onnxlam.core.errors import InputError, OnnxlamError
from onnxlam.lam.options import LamOptions, option_names
from onnxlam.methods.registry import DEFAULT

BASELINE_KEYS = ("lr", "path", "sigma", "fold", "kernel_size")  # what every report row records

DEFAULT_TOLERANCE = 0.5  # DI points: far above run-to-run noise (~1e-4), below a real change of behaviour


@dataclass(frozen=True)
class GateCase:
    """One case to check, with the DI the baseline recorded for it (None without a baseline)."""

    model: str
    image: str
    x: int
    y: int
    size: int
    options: LamOptions
    baseline_di: float | None = None

    @property
    def label(self) -> str:
        return f"{self.model} · {self.image} · ({self.x}, {self.y}) {self.size}px"


@dataclass(frozen=True)
class MethodBound:
    """A bound on a registered method's report column, per case: `check --min-deletion-z 2` is
    MethodBound("faithfulness", "deletion_z", minimum=2): the map must beat random orders."""

    method: str
    column: str
    minimum: float | None = None
    maximum: float | None = None

    @property
    def flag(self) -> str:
        side, limit = ("min", self.minimum) if self.minimum is not None else ("max", self.maximum)
        return f"{self.method} {self.column} {'≥' if side == 'min' else '≤'} {limit:g}"

    def violated(self, value: float | None) -> bool:
        if value is None or value != value:  # no value (NaN): the bound cannot be shown to hold
            return True
        return (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum)


@dataclass(frozen=True)
class CaseCheck:
    """What one case gave: its DI (None when it failed), the error message when it failed, and the
    values of the bounded methods' columns ({"faithfulness.deletion_z": 4.2})."""

    case: GateCase
    di: float | None
    error: str = ""
    values: tuple[tuple[str, float | None], ...] = ()

    @property
    def drift(self) -> float | None:
        if self.di is None or self.case.baseline_di is None:
            return None
        return self.di - self.case.baseline_di

    def to_json(self) -> dict:
        c = self.case
        return {"model": c.model, "image": c.image, "window": {"x": c.x, "y": c.y, "size": c.size},
                "di": self.di, "baseline_di": c.baseline_di, "drift": self.drift, "error": self.error or None,
                **({"values": dict(self.values)} if self.values else {})}


@dataclass(frozen=True)
class GradientCheck:
    """The finite-difference check of one model's gradient program at one LR input shape."""

    model: str
    height: int
    width: int
    batch: int | None
    fd_error: float | None
    error: str = ""

    @property
    def passed(self) -> bool:
        from onnxlam.engine.program import FD_TOLERANCE

        return not self.error and self.fd_error is not None and self.fd_error <= FD_TOLERANCE

    def to_json(self) -> dict:
        return {"model": self.model, "lr_size": [self.height, self.width], "batch": self.batch,
                "fd_error": self.fd_error, "passed": self.passed, "error": self.error or None}


@dataclass(frozen=True)
class Violation:
    """One reason the gate fails. kind: below-min, above-max, drift, error, gradient or bound."""

    kind: str
    subject: str
    detail: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True)
class GateResult:
    """Everything the gate looked at, and what it found wrong."""

    checks: tuple[CaseCheck, ...]
    gradients: tuple[GradientCheck, ...]
    violations: tuple[Violation, ...]
    min_di: float | None = None
    max_di: float | None = None
    tolerance: float | None = None
    baseline: str | None = None

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_json(self) -> dict:
        return {"passed": self.passed, "violations": [v.to_json() for v in self.violations],
                "checks": [c.to_json() for c in self.checks], "gradients": [g.to_json() for g in self.gradients],
                "min_di": self.min_di, "max_di": self.max_di, "tolerance": self.tolerance, "baseline": self.baseline}


def load_baseline(path: str | Path) -> list[GateCase]:
    """The completed cases of a report's results.json, with their parameters and DI.

    Cases that failed in the baseline are left out: there is no DI to hold them to.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the baseline {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"the baseline {path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise InputError(f"{path} is not a report's results.json (no \"cases\" list); "
                         "write one with `onnxlam report`")
    base = path.parent / str(data.get("paths_from", "."))
    cases = []
    for i, entry in enumerate(data["cases"]):
        if not isinstance(entry, dict) or entry.get("status") != "ok":
            continue
        if entry.get("method", DEFAULT) != DEFAULT:  # the gate holds LAM's DI; other methods' cases are not its
            continue
        try:
            w = entry["window"]
            missing = [k for k in BASELINE_KEYS if k not in entry]
            if missing:
                raise KeyError(", ".join(missing))
            recorded = {k: entry.get(k) for k in option_names("run") + ("value_range", "bgr", "inputs")}
            options = LamOptions.from_json({**recorded, "size": w["size"]}, f"{path}: case {i + 1}")
            cases.append(GateCase(rebased(str(entry["model"]), base), rebased(str(entry["image"]), base),
                                  int(w["x"]), int(w["y"]), int(w["size"]), options, float(entry["di"])))
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise InputError(f"{path}: case {i + 1} is malformed ({type(exc).__name__}: {exc})") from None
    if not cases:
        raise InputError(f"the baseline {path} holds no completed case")
    return cases


def rebased(value: str, base: Path) -> str:
    """A baseline's relative model or image path, found from the folder the report ran in (`base`,
    recorded in results.json relative to it), so the gate runs from any folder; else as written (a
    collection name, or a path relative to here)."""
    if Path(value).is_absolute():
        return value
    candidate = base / value
    return os.path.normpath(candidate) if candidate.exists() else value


Progress = Callable[[str], None]


def validate_limits(min_di: float | None, max_di: float | None, tolerance: float | None) -> None:
    """InputError for limits no DI could meet."""
    if min_di is not None and max_di is not None and min_di > max_di:
        raise InputError(f"--min-di {min_di:g} is above --max-di {max_di:g}")
    if tolerance is not None and not tolerance >= 0:
        raise InputError(f"--tolerance must be ≥ 0; got {tolerance}")


def check_cases(cases: Sequence[GateCase], *, min_di: float | None = None, max_di: float | None = None,
                tolerance: float | None = None, verify_gradients: bool = False, device: str = "auto",
                batch_size: int | None = None, max_memory: int | str | None = None,
                resolve_model: Callable[[str], str] | None = None, progress: Progress | None = None,
                baseline: str | None = None, bounds: Sequence[MethodBound] = ()) -> GateResult:
    """Run every case and collect the violations of the gate's rules.

    `tolerance` applies to cases with a baseline DI (|DI − baseline| ≤ tolerance). A case that raises an
    onnxlam error is an "error" violation. With `verify_gradients`, each model's gradient program at
    each LR shape met is checked against central finite differences (program.FD_TOLERANCE) and for
    batch independence. `max_memory` ("24G" or bytes) is every Analyzer's memory limit. `bounds`:
    each case also runs each bounded method (with the case's LAM options) and its column must hold.
    """
    validate_limits(min_di, max_di, tolerance)
    LamOptions(max_memory=max_memory).validate()  # an InputError here, not one "error" violation per case
    resolve_model = resolve_model or default_resolver
    progress = progress or (lambda label: None)
    checks: list[CaseCheck] = []
    gradients: list[GradientCheck] = []
    violations: list[Violation] = []
    analyzers: dict[tuple, object] = {}
    shapes_checked: set[tuple] = set()
    for case in cases:
        progress(case.label)
        o = case.options
        key = (case.model, o.value_range, o.bgr, o.inputs)
        try:
            if key not in analyzers:
                from onnxlam.methods.lam.analyzer import Analyzer

                analyzers.clear()  # one model in memory at a time
                analyzers[key] = Analyzer(resolve_model(case.model), device=device, value_range=o.value_range,
                                          bgr=o.bgr, batch_size=batch_size, max_memory=max_memory,
                                          inputs=dict(o.inputs))
            analyzer = analyzers[key]
            if verify_gradients:
                lr_image, _ = analyzer.prepare(case.image, o.lr)
                shape = (key, lr_image.shape[1], lr_image.shape[2])
                if shape not in shapes_checked:
                    shapes_checked.add(shape)
                    gradients.append(gradient_check(analyzer, case.model, lr_image.shape[1],
                                                    lr_image.shape[2], o.fold, device))
            result = analyzer.run(case.image, (case.x, case.y), case.size, **o.run_arguments())
            checks.append(CaseCheck(case, result.di, values=bounded_values(analyzer, case, bounds)))
        except OnnxlamError as exc:
            checks.append(CaseCheck(case, None, " ".join(str(exc).split())))
    for check in checks:
        violations += _case_violations(check, min_di, max_di, tolerance)
        values = dict(check.values)
        for b in bounds:
            key = f"{b.method}.{b.column}"
            if check.di is not None and b.violated(values.get(key)):
                violations.append(Violation("bound", check.case.label, f"{key} = {values.get(key)}: not "
                                                                       f"{b.flag}"))
    for g in gradients:
        if not g.passed:
            from onnxlam.engine.program import FD_TOLERANCE

            detail = g.error or f"finite-difference relative error {g.fd_error:.2e} > {FD_TOLERANCE:.0e}"
            violations.append(Violation("gradient", f"{g.model} at LR {g.width}×{g.height}", detail))
    return GateResult(tuple(checks), tuple(gradients), tuple(violations), min_di, max_di, tolerance, baseline)


def bounded_values(model, case: GateCase, bounds: Sequence[MethodBound]) -> tuple[tuple[str, float | None], ...]:
    """The bounded methods' columns for `case` on the loaded `model`: each method run once, with the
    case's LAM options and its own defaults otherwise."""
    from dataclasses import fields, replace

    from onnxlam.lam.result import Window
    from onnxlam.methods import registry

    values = []
    for name in dict.fromkeys(b.method for b in bounds):
        method = registry.method(name)
        mine = {f.name for f in fields(method.Options)}
        options = replace(method.Options(), **{f.name: getattr(case.options, f.name) for f in fields(case.options)
                                               if f.name in mine}).validate()
        (result,) = method.attribute(model, case.image, [Window(case.x, case.y, case.size)], options)
        row = method.row(result.to_json())
        values += [(f"{name}.{b.column}", row.get(b.column)) for b in bounds if b.method == name]
    return tuple(values)


def _case_violations(check: CaseCheck, min_di: float | None, max_di: float | None,
                     tolerance: float | None) -> list[Violation]:
    c = check.case
    if check.di is None:
        return [Violation("error", c.label, f"the case no longer runs: {check.error}")]
    found = []
    if min_di is not None and check.di < min_di:
        found.append(Violation("below-min", c.label, f"DI {check.di:.3f} < --min-di {min_di:g}"))
    if max_di is not None and check.di > max_di:
        found.append(Violation("above-max", c.label, f"DI {check.di:.3f} > --max-di {max_di:g}"))
    drift = check.drift
    if tolerance is not None and drift is not None and abs(drift) > tolerance:
        found.append(Violation("drift", c.label, f"DI {check.di:.3f} vs baseline {c.baseline_di:.3f}: "
                                                 f"drift {drift:+.3f} beyond ±{tolerance:g}"))
    return found


def gradient_check(analyzer, model: str, height: int, width: int, fold: int, device: str) -> GradientCheck:
    """Build (or load) the program for LR height×width and check it against finite differences."""
    from onnxlam.engine.program import check_batch_independence, check_finite_differences

    try:
        program = analyzer.program(height, width, fold)
        check_batch_independence(program, analyzer.info, device)
        fd = check_finite_differences(program, device)
    except OnnxlamError as exc:
        return GradientCheck(model, height, width, None, None, " ".join(str(exc).split()))
    return GradientCheck(model, height, width, program.batch, fd)
