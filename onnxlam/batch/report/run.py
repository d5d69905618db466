"""Batch reports: LAM (or another method) over models × images × windows, resumable, with
results.csv/json and index.html.

A report is a list of cases (one model, one image, one window, one method: methods/options.py).
The pending LAM cases of one model and one image are computed by one `Analyzer.run_windows` call, so
their windows share each forward pass (a noise tunnel's likewise, through `noise_tunnel`); should that
call fail, its cases are run one by one, so one bad window fails only itself. CEM cases run one at a
time (`CemRunner.run`: the ROI's interventions are the work; nothing is shared between windows). Each
case is written by its method's own writer (`outputs.write_result`, `cem.write_result`) into its own
folder `OUT/cases/<slug>/`, which appears all at once
(the folder is built under a temporary name and renamed). The case's parameters (`Fingerprint`) are
stored in its `result.json` under "case", so a rerun skips every case whose folder holds the same
fingerprint, and recomputes the rest. After every case `results.csv`, `results.json` and `index.html`
are rewritten from the rows (temporary file + `os.replace`), so a run killed at any moment loses no
finished case and leaves no half-written file.

A case that fails is recorded (folder with `error.json`, row with status "failed" and the message)
and the others go on; it is retried on the next run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from onnxlam.graph.model import file_sha256, inputs_text
from onnxlam.core.errors import InputError, OnnxlamError
from onnxlam.lam.options import LamOptions
from onnxlam.batch.report.config import Case, ReportConfig, plan_cases
from onnxlam.methods.options import CEM, ERF, LAM, MethodOptions
from onnxlam.batch.report.store import (CASES, ERROR, RESULT, AggregateWriter, CaseRow, Fingerprint, Report,
                                        _row_from_result,
                                        _write_dir_atomically, case_files, exclusive, read_complete,
                                        remove_leftovers, write_aggregates)



# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

class ReportListener:
    """Callbacks of a report run (the command line shows them as a live progress display)."""

    def planned(self, total: int, reused: int) -> None:
        """`total` cases, of which `reused` are complete from an earlier run."""

    def group_started(self, cases: Sequence[Case], index: int, count: int) -> None:
        """Cases `index` … `index + len(cases) − 1` (from 1) of the `count` to compute begin together:
        the windows of one model and one image, sharing each forward pass. By default, `case_started`
        for each of them."""
        for n, case in enumerate(cases):
            self.case_started(case, index + n, count)

    def case_started(self, case: Case, index: int, count: int) -> None:
        """The `index`-th (from 1) of the `count` cases to compute begins (see `group_started`). Called
        again for each case of a group that failed as a whole, as it is retried alone."""

    def step(self, done: int, total: int) -> None:
        """Path steps of the current group (or retried case) done so far."""

    def case_finished(self, row: CaseRow) -> None:
        """The current case ended (row.status is "ok" or "failed")."""


def run_report(config: ReportConfig, listener: ReportListener | None = None, resolve_model=None,
               reraise_unexpected: bool = False, cases: list[Case] | None = None, executor=None) -> Report:
    """Run every case of `config` not already complete in `config.out`; write the results as it goes.

    `resolve_model` maps a model as given to its file (default: the collection's resolver). With
    `reraise_unexpected`, an exception that is not an OnnxlamError stops the run (for --debug).
    `cases`: the result of `plan_cases(config)` when the caller has it already.
    `executor(pending, listener, resolve_model, reraise_unexpected)` computes the pending groups and
    fills `pending.report`'s rows (default: `run_serial`, in this process; see `batch/cluster.py`).
    A config naming a `cluster` or `scheduler` runs there (`batch.cluster.run_report_on_cluster`).
    """
    if executor is None and (config.cluster is not None or config.scheduler is not None):
        from onnxlam.batch.cluster import run_report_on_cluster

        return run_report_on_cluster(config, listener=listener, resolve_model=resolve_model,
                                     reraise_unexpected=reraise_unexpected)
    listener = listener or ReportListener()
    resolve_model = resolve_model or _default_resolver
    cases = plan_cases(config, resolve_model) if cases is None else cases
    out = config.out
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        remove_leftovers(out)
        pending = plan_run(config, cases, listener, resolve_model)
        (executor or run_serial)(pending, listener, resolve_model, reraise_unexpected)
        return pending.report


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; name a folder (it is created)")


def _default_resolver(model: str) -> str:
    from onnxlam.convert.collection import resolve_model  # lazily: the collection reads its manifest

    return resolve_model(model)


@dataclass
class PendingRun:
    """A report run once its completed cases are known: the report (reused rows filled in, the others
    "pending"), every case's fingerprint, and the pending rows grouped into `run_windows` calls."""

    report: Report
    fingerprints: dict
    groups: list[list[int]]

    @property
    def count(self) -> int:
        return sum(map(len, self.groups))


def plan_run(config: ReportConfig, cases: list[Case], listener: ReportListener, resolve_model) -> PendingRun:
    """Fingerprint the cases, reuse the complete ones, write the first aggregates (called under the lock)."""
    out, options = config.out, config.options
    hashes: dict[str, str] = {}

    def sha(path: str) -> str:
        if path not in hashes:
            hashes[path] = file_sha256(path)  # a model's external-data files too
        return hashes[path]

    def model_sha(model: str) -> str:  # fixed extra inputs make another function of the same file
        digest = sha(resolve_model(model))
        if options.inputs:
            digest = hashlib.sha256(f"{digest}|{inputs_text(dict(options.inputs))}".encode()).hexdigest()
        return digest

    method_options = config.method_options

    # CEM and ERF have no LAM path: their cases hold LAM's defaults there, so --fold & co. do not
    # recompute them (ERF reads --lr: it differentiates at the LR input itself)
    pathless = {CEM: LamOptions(value_range=options.value_range, bgr=options.bgr),
                ERF: LamOptions(lr=options.lr, value_range=options.value_range, bgr=options.bgr)}

    def fingerprint(c: Case) -> Fingerprint:
        o = pathless.get(c.method, options)
        return Fingerprint(model_sha(c.model), sha(c.image), c.x, c.y, c.size, o.lr, o.path, float(o.sigma), o.fold,
                           o.kernel_size, o.value_range, o.bgr, o.context, method=method_options.parameters(c.method))

    fingerprints = {c: fingerprint(c) for c in cases}
    report = Report(out, config, [], started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    todo = []
    for c in cases:
        folder = f"{CASES}/{c.slug}"
        data = read_complete(out / folder, fingerprints[c], case_files(c.method))
        if data is not None:
            report.rows.append(_row_from_result(c, folder, data, reused=True))
        else:
            report.rows.append(CaseRow(c, folder, "pending"))
            todo.append(len(report.rows) - 1)
    report.reused = len(cases) - len(todo)
    listener.planned(len(cases), report.reused)
    write_aggregates(report)
    return PendingRun(report, fingerprints, _groups(report.rows, todo))


def run_serial(pending: PendingRun, listener: ReportListener, resolve_model, reraise_unexpected: bool) -> None:
    """The embedded executor: the groups one after the other in this process, one model loaded at a time.

    The aggregates (results.csv/json, index.html) are rewritten as `AggregateWriter` allows and at the
    end, not after every case (their cost grows with the rows); the case folders, not the aggregates,
    are what a rerun resumes from."""
    report = pending.report
    options, out = report.config.options, report.out
    analyzers = _Analyzers(options, resolve_model)
    aggregates = AggregateWriter()
    try:
        index = 1
        for group in pending.groups:
            rows = [report.rows[i] for i in group]
            listener.group_started([r.case for r in rows], index, pending.count)
            finished = run_group(rows, pending.fingerprints, analyzers, options, out, listener,
                                 reraise_unexpected, index, pending.count, report.config.method_options)
            for i, row in zip(group, finished):  # each case is written and counted as soon as it is done
                report.rows[i] = row
                report.computed += row.status == "ok"
                aggregates.maybe(report)
                listener.case_finished(row)
            index += len(group)
    finally:
        analyzers.close()
        aggregates.now(report)


def _groups(rows: Sequence[CaseRow], todo: Sequence[int]) -> list[list[int]]:
    """The pending rows (indices) by model, image and method, in order of first appearance: one group
    per `run_windows` call. Models stay together as planned, so each model is loaded once."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i in todo:
        c = rows[i].case
        groups.setdefault((c.model, c.image, c.method), []).append(i)
    return list(groups.values())


class ModelSession:
    """One model's Analyzer, whose gradient programs are built once per input shape.

    The Analyzer plans each shape's batch once from measured memory (`Analyzer.plan`), so the report
    leaves the batch to it: pinning the first case's batch would skip that planning for later, larger
    images.
    """

    def __init__(self, analyzer):
        self.analyzer = analyzer

    def run(self, image: str, x: int, y: int, size: int, options: LamOptions, progress=None):
        """`Analyzer.run` of one window with the report's options."""
        return self.analyzer.run(image, (x, y), size, progress=progress, **options.run_arguments())

    def run_windows(self, image: str, cases: Sequence[Case], options: LamOptions, progress=None):
        """`Analyzer.run_windows` of the cases' windows (each with its own size) on one image."""
        from onnxlam.lam.result import Window

        windows = [Window(c.x, c.y, c.size) for c in cases]
        return self.analyzer.run_windows(image, windows, progress=progress, **options.run_arguments())

    def run_tunnel(self, image: str, cases: Sequence[Case], tunnel, options: LamOptions, progress=None):
        """`noise_tunnel.noise_tunnel` of the cases' windows on one image (`tunnel`: a NoiseTunnel)."""
        from onnxlam.lam.result import Window
        from onnxlam.methods.noise_tunnel import noise_tunnel

        windows = [Window(c.x, c.y, c.size) for c in cases]
        return noise_tunnel(self.analyzer, image, windows, tunnel, cases[0].size, progress=progress,
                            **options.run_arguments())

    def run_erf(self, case: Case, options: LamOptions, progress=None):
        """`erf.effective_receptive_field` of the case's window on its one image."""
        from onnxlam.methods.erf import effective_receptive_field

        return effective_receptive_field(self.analyzer, [case.image], (case.x, case.y), case.size, lr=options.lr,
                                         progress=progress)


class _Analyzers:
    """One model at a time, for the model whose cases are running: its session (programs built once
    per input shape) and, for CEM cases, its `CemRunner` (forward passes only), each made on first use
    and reused by every case of that model. A model that cannot be loaded fails its cases with the
    same message without being loaded again (per kind: a model without gradient rules still runs CEM)."""

    def __init__(self, options: LamOptions, resolve_model):
        self.options = options
        self.resolve_model = resolve_model
        self.model: str | None = None
        self.analyzer = None
        self.runner = None
        self.error: str | None = None
        self.runner_error: str | None = None

    def _switch(self, model: str) -> None:
        if model != self.model:
            self.close()
            self.model = model

    def get(self, model: str) -> ModelSession:
        self._switch(model)
        if self.analyzer is None and self.error is None:
            from onnxlam.engine.analyzer import Analyzer

            try:
                self.analyzer = ModelSession(Analyzer(self.resolve_model(model), **self.options.model_arguments()))
            except OnnxlamError as exc:
                self.error = str(exc)
        if self.error is not None:
            raise InputError(self.error)
        return self.analyzer

    def cem(self, model: str):
        """The model's `cem.CemRunner` with the report's device, memory limit and pixel convention (the
        batch is CEM's own: interventions per run, sized from measured memory)."""
        self._switch(model)
        if self.runner is None and self.runner_error is None:
            from onnxlam.methods.cem import CemRunner

            o = self.options
            try:
                self.runner = CemRunner(self.resolve_model(model), device=o.device, max_memory=o.max_memory,
                                        value_range=o.value_range, bgr=o.bgr)
            except OnnxlamError as exc:
                self.runner_error = str(exc)
        if self.runner_error is not None:
            raise InputError(self.runner_error)
        return self.runner

    def close(self) -> None:
        self.model, self.analyzer, self.error, self.runner, self.runner_error = None, None, None, None, None


def run_group(rows: Sequence[CaseRow], fingerprints: dict, analyzers: _Analyzers, options: LamOptions,
              out: Path, listener: ReportListener, reraise_unexpected: bool, index: int,
              count: int, method_options: MethodOptions | None = None) -> Iterator[CaseRow]:
    """The rows of one model's pending cases of one method on one image, each yielded once its folder
    is written.

    One `run_windows` call computes them all (a noise tunnel's: one `noise_tunnel` call). When it
    fails, each case runs alone, so that one bad window (outside the image, say) fails only itself and
    its message is its own. CEM cases run one at a time. The one function that computes and writes
    cases: the serial run calls it in this process, a cluster's workers call it on theirs
    (`batch/cluster.py`), so both write exactly the same case folders.
    """
    first = rows[0].case
    method_options = method_options or MethodOptions()
    if first.method in (CEM, ERF):
        run = _run_cem if first.method == CEM else _run_erf
        for n, row in enumerate(rows):
            if len(rows) > 1:  # a lone case was announced by group_started
                listener.case_started(row.case, index + n, count)
            yield _finish_case(row, fingerprints[row.case], out, reraise_unexpected,
                               lambda c=row.case: run(analyzers, c, options, method_options, listener.step))
        return
    if first.method == LAM:
        def together(cases):
            return analyzers.get(first.model).run_windows(first.image, cases, options, progress=listener.step)

        def alone(c):
            return analyzers.get(c.model).run(c.image, c.x, c.y, c.size, options, progress=listener.step)
    else:
        tunnel = method_options.tunnel(first.method)

        def together(cases):
            return analyzers.get(first.model).run_tunnel(first.image, cases, tunnel, options,
                                                         progress=listener.step)

        def alone(c):
            return together([c])[0]
    if len(rows) > 1:
        try:
            results = together([r.case for r in rows])
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if reraise_unexpected and not isinstance(exc, OnnxlamError):
                raise
            results = None
        if results is not None:
            for row, result in zip(rows, results):
                yield _finish_case(row, fingerprints[row.case], out, reraise_unexpected,
                                   lambda r=result: _share(r, len(rows)))
            return
    for n, row in enumerate(rows):
        if len(rows) > 1:  # a retry after the group failed; a lone case was announced by group_started
            listener.case_started(row.case, index + n, count)
        yield _finish_case(row, fingerprints[row.case], out, reraise_unexpected,
                           lambda c=row.case: _share(alone(c), 1))


def _run_cem(analyzers: _Analyzers, case: Case, options: LamOptions, method_options: MethodOptions, progress):
    """A CEM case: the causal effect map of the case's window as the ROI (its "group" is itself)."""
    result = analyzers.cem(case.model).run(case.image, (case.x, case.y), case.size, crop=options.crop,
                                           progress=progress, **method_options.cem_arguments())
    return result, {"windows": 1, "seconds": round(result.seconds, 4)}


def _run_erf(analyzers: _Analyzers, case: Case, options: LamOptions, method_options: MethodOptions, progress):
    """An ERF case: the effective receptive field of the case's window on its one image."""
    result = analyzers.get(case.model).run_erf(case, options, progress)
    return result, {"windows": 1, "seconds": round(result.seconds, 4)}


def fail_case(row: CaseRow, fingerprint: Fingerprint, out: Path, message: str) -> CaseRow:
    """Record `row` as failed with `message`, as a failed computation is (error.json, failed row): for
    cases whose whole task failed, out of the reach of `run_group` (a cluster's worker lost for good)."""
    def compute():
        raise OnnxlamError(message)

    return _finish_case(row, fingerprint, out, False, compute)


def _share(result, windows: int):
    """The result with `seconds` its share of its `run_windows` call (the call's time, which
    `LamResult.seconds` holds, over its windows), and the whole call, for "group" in result.json:
    the windows of a call share their forward passes, so a window's own time does not exist."""
    return replace(result, seconds=result.seconds / windows), {"windows": windows,
                                                               "seconds": round(result.seconds, 4)}


def _finish_case(row: CaseRow, fingerprint: Fingerprint, out: Path, reraise_unexpected: bool,
                 compute) -> CaseRow:
    """Write the case's folder from `compute()` (its LamResult, or CemResult for CEM) with the method's
    own writer and return its row; a failure of either is recorded in the case's folder (error.json)
    and row instead."""
    from onnxlam.render.outputs import write_result

    case, target = row.case, out / row.folder
    start = time.perf_counter()
    try:
        result, group = compute()
        about = {"case": fingerprint.to_json(), "group": group}
        if case.method == CEM:
            from onnxlam.methods.cem import write_result as write_cem

            write_cem(replace(result, model=case.model), target, about)
        elif case.method == ERF:
            from onnxlam.methods.erf import write_erf

            write_erf(replace(result, model=case.model), target, about)
        else:
            write_result(replace(result, model=case.model), target, about)
        return _row_from_result(case, row.folder, json.loads((target / RESULT).read_text()), reused=False)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if reraise_unexpected and not isinstance(exc, OnnxlamError):
            raise
        message = str(exc) if isinstance(exc, OnnxlamError) else f"unexpected {type(exc).__name__}: {exc}"
        message = " ".join(message.split())  # one line, for the CSV and the table
        seconds = time.perf_counter() - start
        record = {"case": fingerprint.to_json(), "model": case.model, "image": case.image,
                  **({} if case.method == LAM else {"method": case.method}),
                  "window": {"x": case.x, "y": case.y, "size": case.size}, "status": "failed",
                  "message": message, "seconds": round(seconds, 4)}
        with contextlib.suppress(OSError):
            _write_dir_atomically(target, {ERROR: json.dumps(record, indent=2) + "\n"})
        return replace(row, status="failed", message=message, seconds=round(seconds, 4))


