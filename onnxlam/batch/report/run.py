"""Batch reports: LAM (or any registered method) over models × images × windows, resumable, with
results.csv/json and index.html.

A report is a list of cases (one model, one image, one window, one method of the registry). The
pending cases of one model, one image and one method whose windows share passes (`Method.shares_passes`:
LAM, the noise tunnel) are computed by one `Method.attribute` call; should that call fail, its cases
are run one by one, so one bad window fails only itself. The other methods' cases run one at a time
(CEM: the ROI's interventions are the work; nothing is shared between windows). Each case is written
by its method's own writer (`Method.write`) into its own folder `OUT/cases/<slug>/`, which appears all
at once
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

from onnxlam.batch.report.aggregates import AggregateWriter, write_aggregates
from onnxlam.batch.report.hard import common_scale, hard_json
from onnxlam.batch.report.config import Case, ReportConfig, expand_images, plan_cases
from onnxlam.batch.report.store import (CASES, ERROR, RESULT, CaseRow, Fingerprint, Report, case_files, exclusive,
                                        first_started, read_complete, remove_leftovers, row_from_result,
                                        write_dir_atomically)
from onnxlam.core.errors import InputError, OnnxlamError
from onnxlam.core.files import check_out_dir, disk_full_message
from onnxlam.graph.model import file_sha256, inputs_text
from onnxlam.lam.options import LamOptions
from onnxlam.lam.quality import quality
from onnxlam.lam.result import Window
from onnxlam.methods import registry


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
    fills `pending.report`'s rows (default: `run_serial`, in this process). A config naming a
    `cluster` or `scheduler` needs the cluster's executor: `onnxlam.batch.run_report` picks it.
    """
    if executor is None and (config.cluster is not None or config.scheduler is not None):
        raise InputError("this report names a Dask cluster or scheduler: run it with onnxlam.batch.run_report "
                         "(or `onnxlam report`), which starts or reaches it")
    listener = listener or ReportListener()
    resolve_model = resolve_model or default_resolver
    out = config.out
    check_out_dir(out)
    cases = plan_cases(config, resolve_model) if cases is None else cases
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        remove_leftovers(out)
        pending = plan_run(config, cases, listener, resolve_model)
        (executor or run_serial)(pending, listener, resolve_model, reraise_unexpected)
        return pending.report



def default_resolver(model: str) -> str:
    """A model as given (a file, or a name of the collection) to its file."""
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
            hashes[path] = input_sha256(path)  # a model's external-data files too
        return hashes[path]

    def model_sha(model: str) -> str:  # fixed extra inputs make another function of the same file
        digest = sha(resolve_model(model))
        if options.inputs:
            digest = hashlib.sha256(f"{digest}|{inputs_text(dict(options.inputs))}".encode()).hexdigest()
        return digest

    def fingerprint(c: Case) -> Fingerprint:
        m = registry.method(c.method)
        # a method without LAM's path holds LAM's defaults there, so --fold & co. do not recompute it
        o = options if m.path_options else LamOptions(lr=options.lr and m.takes_lr, value_range=options.value_range,
                                                      bgr=options.bgr)
        return Fingerprint(model_sha(c.model), sha(c.image), c.x, c.y, c.size, o.lr, o.path, float(o.sigma), o.fold,
                           o.kernel_size, o.value_range, o.bgr, o.context,
                           method=m.fingerprint(config.options_of(c.method)))

    fingerprints = {c: fingerprint(c) for c in cases}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = Report(out, config, [], started=now, first_started=first_started(out, now))
    if config.hard is not None:  # the windows plan_cases chose (cached there), with their scores
        report.hard = hard_json(expand_images(config.images), options.size, config.hard,
                                common_scale(config.models, resolve_model))
    todo = []
    for c in cases:
        folder = f"{CASES}/{c.slug}"
        data = read_complete(out / folder, fingerprints[c], case_files(c.method))
        if data is not None:
            report.rows.append(row_from_result(c, folder, data, reused=True))
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
    models = Models(options, resolve_model)
    aggregates = AggregateWriter()
    try:
        index = 1
        for group in pending.groups:
            rows = [report.rows[i] for i in group]
            listener.group_started([r.case for r in rows], index, pending.count)
            finished = run_group(rows, pending.fingerprints, models, report.config, out, listener,
                                 reraise_unexpected, index, pending.count)
            for i, row in zip(group, finished):  # each case is written and counted as soon as it is done
                report.rows[i] = row
                report.computed += row.status == "ok"
                aggregates.maybe(report)
                listener.case_finished(row)
            index += len(group)
    finally:
        models.close()
        aggregates.now(report)


def _groups(rows: Sequence[CaseRow], todo: Sequence[int]) -> list[list[int]]:
    """The pending rows (indices) by model, image and method, in order of first appearance: one group
    per `run_windows` call. Models stay together as planned, so each model is loaded once."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i in todo:
        c = rows[i].case
        groups.setdefault((c.model, c.image, c.method), []).append(i)
    return list(groups.values())


class Models:
    """The models a run has open: one model file at a time (the one whose cases are running), opened on
    first use by the case's method (`Method.open`) and shared by every method and case of that model
    (a method of frames opens one per sequence length). A model that cannot be opened fails its cases
    with the same message without being opened again."""

    def __init__(self, options: LamOptions, resolve_model):
        self.options = options
        self.resolve_model = resolve_model
        self.model: str | None = None
        self.open: dict = {}    # session key -> the loaded model
        self.errors: dict = {}  # session key -> why it could not be opened

    def get(self, model: str, method, image: str):
        """The loaded model for `method`'s cases of `model` on `image`."""
        if model != self.model:
            self.close()
            self.model = model
        key = method.session_key(image)
        if key not in self.open and key not in self.errors:
            try:
                self.open[key] = method.open(self.resolve_model(model), self.options, image)
            except OnnxlamError as exc:
                self.errors[key] = str(exc)
        if key in self.errors:
            raise InputError(self.errors[key])
        return self.open[key]

    def close(self) -> None:
        self.model, self.open, self.errors = None, {}, {}


def run_group(rows: Sequence[CaseRow], fingerprints: dict, models: Models, config: ReportConfig, out: Path,
              listener: ReportListener, reraise_unexpected: bool, index: int, count: int) -> Iterator[CaseRow]:
    """The rows of one model's pending cases of one method on one image, each yielded once its folder
    is written.

    A method whose windows share passes computes them in one `Method.attribute` call; when that fails,
    each case runs alone, so that one bad window (outside the image, say) fails only itself and its
    message is its own. The other methods' cases run one at a time. The one function that computes and
    writes cases: the serial run calls it in this process, a cluster's workers call it on theirs
    (`batch/cluster.py`), so both write exactly the same case folders.
    """
    first = rows[0].case
    method = registry.method(first.method)
    options = config.options_of(first.method)
    memo: dict = {}  # the group's one SR output: its quality is computed once

    def compute(cases: Sequence[Case]) -> list:
        model = models.get(first.model, method, first.image)
        windows = [Window(c.x, c.y, c.size) for c in cases]
        return method.attribute(model, first.image, windows, options, progress=listener.step)

    if len(rows) > 1 and method.shares_passes:
        try:
            results = compute([r.case for r in rows])
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if reraise_unexpected and not isinstance(exc, OnnxlamError):
                raise
            results = None
        if results is not None:
            for row, result in zip(rows, results):
                yield _finish_case(row, fingerprints[row.case], out, reraise_unexpected,
                                   lambda r=result: _share(r, len(rows)), memo)
            return
    for n, row in enumerate(rows):
        if len(rows) > 1:  # announced alone (a lone case was announced by group_started)
            listener.case_started(row.case, index + n, count)
        yield _finish_case(row, fingerprints[row.case], out, reraise_unexpected,
                           lambda c=row.case: _share(compute([c])[0], 1), memo)


def fail_case(row: CaseRow, fingerprint: Fingerprint, out: Path, message: str) -> CaseRow:
    """Record `row` as failed with `message`, as a failed computation is (error.json, failed row): for
    cases whose whole task failed, out of the reach of `run_group` (a cluster's worker lost for good)."""
    def compute():
        raise OnnxlamError(message)

    return _finish_case(row, fingerprint, out, False, compute)


def _share(result, windows: int):
    """The result with `seconds` its share of its `attribute` call (the call's time, which the result's
    provenance holds, over its windows), and the whole call, for "group" in result.json: the windows of
    a call share their forward passes, so a window's own time does not exist."""
    return result.with_provenance(seconds=result.seconds / windows), {"windows": windows,
                                                                      "seconds": round(result.seconds, 4)}


def _finish_case(row: CaseRow, fingerprint: Fingerprint, out: Path, reraise_unexpected: bool,
                 compute, memo: dict | None = None) -> CaseRow:
    """Write the case's folder from `compute()` (its result, and the "group" it was computed in) with
    the method's own writer and return its row; a failure of either is recorded in the case's folder
    (error.json) and row instead."""
    case, target = row.case, out / row.folder
    start = time.perf_counter()
    try:
        result, group = compute()
        about = {"case": fingerprint.to_json(), "group": group, "quality": _memo_quality(result, memo)}
        registry.method(case.method).write(result.with_provenance(model=case.model), target, about)
        return row_from_result(case, row.folder, json.loads((target / RESULT).read_text()), reused=False)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if reraise_unexpected and not isinstance(exc, OnnxlamError):
            raise
        message = str(exc) if isinstance(exc, OnnxlamError) else (
            disk_full_message(exc) or f"unexpected {type(exc).__name__}: {exc}")
        message = " ".join(message.split())  # one line, for the CSV and the table
        seconds = time.perf_counter() - start
        record = {"case": fingerprint.to_json(), "model": case.model, "image": case.image,
                  **({} if case.method == registry.DEFAULT else {"method": case.method}),
                  "window": {"x": case.x, "y": case.y, "size": case.size}, "status": "failed",
                  "message": message, "seconds": round(seconds, 4)}
        with contextlib.suppress(OSError):
            write_dir_atomically(target, {ERROR: json.dumps(record, indent=2) + "\n"})
        return replace(row, status="failed", message=message, seconds=round(seconds, 4))


def _memo_quality(result, memo: dict | None):
    """`quality_json(result)`, once per SR output array (a group's windows share theirs); the memo
    keeps the array, so its id is not reused while the memo lives."""
    sr = getattr(result, "sr_image", None)
    if memo is None or sr is None:
        return quality_json(result)
    if id(sr) not in memo:
        memo[id(sr)] = (sr, quality_json(result))
    return memo[id(sr)][1]


def quality_json(result) -> dict | None:
    """PSNR and SSIM on Y of the result's SR output against its HR image (`lam.quality`: BasicSR's
    convention, border crop = scale), for result.json's "quality"; None without an HR image (--lr) or
    for a method whose result holds no SR output."""
    sr, hr = getattr(result, "sr_image", None), getattr(result, "hr_image", None)
    if sr is None or hr is None:
        return None
    try:
        q = quality(sr, hr, int(result.scale)).to_json()
    except OnnxlamError as exc:  # an SR output of another size than the HR image (a crop): no number
        return {"psnr_y": None, "ssim_y": None, "crop_border": int(result.scale), "reason": str(exc)}
    return {"psnr_y": q["psnr"], "ssim_y": q["ssim"], "crop_border": int(result.scale)}


def input_sha256(path: str) -> str:
    """The sha256 of a file (a model's external-data files too), or of a folder of frames (its image
    files' digests, in name order)."""
    p = Path(path)
    if not p.is_dir():
        return file_sha256(path)
    digests = "".join(f"{Path(f).name}:{file_sha256(f)};" for f in expand_images([path]))
    return hashlib.sha256(digests.encode()).hexdigest()
