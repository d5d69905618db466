"""The `report`, `check` and `sweep` commands: many analyses at once.

Exit codes as for `lam`: 0 success (check: pass), 1 a failed case or a failed check, 2 bad usage or input.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.markup import escape
from typer.core import TyperCommand

from onnxlam.cli.app import app, err, fmt as _fmt, handled, out, progress as _bar, resolve_model
from onnxlam.cli.options import (D, BatchSize, Bgr, Context, Debug, Device, Fold, GivenCrop, GivenDevice, GivenFold,
                                 GivenKernelSize, GivenLr, GivenPath, GivenSigma, GivenSize, Inputs, KernelSize, Lr,
                                 MaxMemory, Path as PathKind, Sigma, Size, ValueRange, inputs, option_parameters,
                                 with_options)
from onnxlam.core.errors import InputError

Cluster = Annotated[Optional[str], typer.Option(
    "--cluster", metavar="local:N", help="Run on a Dask LocalCluster of N single-threaded worker processes on "
    "127.0.0.1 (needs the cluster extra of onnxlam).")]
def _methods_option():
    from onnxlam.methods.registry import names

    return Annotated[Optional[List[str]], typer.Option(
        "--method", metavar="NAME", help=f"What each case computes: {', '.join(names())} (default lam); "
        "repeatable or a comma list (--method lam,cem).")]


def _method_parameters():
    """The report's flags of the methods' own options (--cem-block, --samples, …: `config.method_keys`)."""
    from onnxlam.batch.report.config import method_options_class

    return option_parameters(method_options_class(), given=False, exclude=())


Methods = _methods_option()
Scheduler = Annotated[Optional[str], typer.Option(
    "--scheduler", metavar="ADDRESS", help="Run on an existing Dask cluster: tcp://host:port, tls://host:port "
    "or a scheduler file; the output folder must be on a file system every worker reaches (needs the "
    "cluster extra).")]


class PairOptions(TyperCommand):
    """A command whose `--window X Y` may be repeated.

    Typer has no repeatable two-value options, so before parsing, each `--window X Y` becomes
    `--window "X Y"`, a single value of a repeatable string option that `parse_window` reads.
    (`cli.main` already turns every `--window X Y` after the first into `--more-window X,Y`; the
    commands here accept that hidden form too, so they work with and without that rewrite.)
    """

    pair_options = ("--window",)

    def parse_args(self, ctx, args):
        joined, i = [], 0
        while i < len(args):
            if args[i] == "--":
                joined += args[i:]
                break
            if args[i] in self.pair_options and len(args) - i >= 3:
                joined += [args[i], f"{args[i + 1]} {args[i + 2]}"]
                i += 3
                continue
            joined.append(args[i])
            i += 1
        return super().parse_args(ctx, joined)



def _progress():
    return _bar(elapsed=True)


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------

class _LiveProgress:
    """The report's live display (a `ReportListener`): cases done of those to compute (with ETA), and the
    current case."""

    def __init__(self, progress):
        self.progress = progress
        self.cases = None
        self.steps = None

    def planned(self, total: int, reused: int) -> None:
        what = f"cases ({reused} of {total} reused)" if reused else f"cases ({total})"
        self.cases = self.progress.add_task(what, total=total - reused)
        self.steps = self.progress.add_task("", total=1, visible=False)

    def group_started(self, cases, index: int, count: int) -> None:
        if len(cases) == 1:
            return self.case_started(cases[0], index, count)
        c = cases[0]
        label = f"{Path(c.model).stem} · {Path(c.image).name} · {len(cases)} windows"
        self.progress.reset(self.steps, total=None, visible=True,
                            description=f"  [{index}–{index + len(cases) - 1}/{count}] {escape(label)}")

    def case_started(self, case, index: int, count: int) -> None:
        self.progress.reset(self.steps, total=None, visible=True,
                            description=f"  [{index}/{count}] {escape(case.label)}")

    def step(self, done: int, total: int) -> None:
        self.progress.update(self.steps, completed=done, total=total)

    def case_finished(self, row) -> None:
        self.progress.advance(self.cases)
        if row.status == "failed":
            self.progress.console.print(f"[red]failed[/] {escape(row.case.label)}: {escape(row.message)}",
                                        highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _executor(config):
    """(config, executor) for the report: (config, None) in this process; on a Dask cluster, the config
    with absolute paths for an external scheduler's workers, and a connected ClusterExecutor."""
    from onnxlam.batch.cluster import parse_target

    target = parse_target(config.cluster, config.scheduler)
    if target is None:
        yield config, None
        return
    from onnxlam.batch.cluster import ClusterExecutor, for_workers

    if not target.local:
        config = for_workers(config)
    def connected(workers: int) -> None:
        err.print(f"[dim]running on {escape(target.describe())}: {workers} workers[/]", highlight=False)

    with ClusterExecutor(target, config.options.device, notify=_cluster_note, connected=connected) as executor:
        yield config, executor
        if not executor.started:  # a local cluster starts on demand only
            err.print(f"[dim]nothing to compute: {escape(target.describe())} not started[/]", highlight=False)


def _cluster_note(message: str) -> None:
    err.print(f"[red]worker error[/] {escape(message)}", highlight=False, soft_wrap=True)


def _report_summary(report) -> None:
    """One table per method, with that method's columns only: at 80 columns the names still show."""
    from rich.table import Table

    from onnxlam.batch.report.store import report_columns, summary_heads

    summaries = report.summaries()
    width = max((len(s.model) for s in summaries), default=5)
    for method in report.config.methods:
        heads = summary_heads(report_columns([method]))
        mine = [s for s in summaries if s.method == method]
        if not mine:
            continue
        title = "Report" if len(report.config.methods) == 1 else f"Report: {method}"
        table = Table(title=title, title_justify="left")
        # a model's name is typed by the user: never cut; the statistics give way first
        table.add_column("model", no_wrap=True, min_width=min(width, 40), overflow="fold")
        for name in ("cases", "failed", *(h for _, h in heads)):
            table.add_column(name, justify="right")
        for s in mine:
            table.add_row(escape(s.model), str(s.cases), f"[red]{s.failures}[/]" if s.failures else "0",
                          *(_fmt(s.stat(key)) for key, _ in heads))
        out.print(table)
    _dataset_summary(report, width)
    failed = [r for r in report.rows if r.status == "failed"]
    if failed:
        ft = Table(title="Failed cases", title_justify="left")
        ft.add_column("case")
        ft.add_column("message", style="red")
        for r in failed:
            ft.add_row(escape(r.case.label), escape(r.message))
        out.print(ft)
    out.print(f"{report.computed} computed, {report.reused} reused from an earlier run, {report.failed} failed; "
              f"open {escape(str(report.out / 'index.html'))}", highlight=False, soft_wrap=True)


def _dataset_summary(report, width: int) -> None:
    """The dataset level (`batch/report/dataset.py`) where the report has HR images: per model its mean DI
    with the 95% bootstrap interval over images, PSNR and SSIM on Y; then Spearman's ρ(DI, PSNR)."""
    from rich.table import Table

    from onnxlam.batch.report.dataset import dataset

    level = dataset(report.rows, report.config.methods)
    if not any(m.psnr is not None for m in level.models):
        return
    table = Table(title=f"Dataset level ({level.method}; 95% intervals: images resampled)", title_justify="left")
    table.add_column("model", no_wrap=True, min_width=min(width, 40), overflow="fold")
    for name in ("images", "windows", "DI mean [95%]", "PSNR-Y", "SSIM-Y"):
        table.add_column(name, justify="right")
    for m in level.models:
        table.add_row(escape(m.name), str(m.images), str(m.windows), m.di.text(2),
                      "–" if m.psnr is None else f"{m.psnr:.2f}", "–" if m.ssim is None else f"{m.ssim:.4f}")
    out.print(table)
    rho = level.spearman
    out.print(f"Spearman ρ(mean DI, mean PSNR) over {len(level.models)} models: "
              + (rho.text(2) if rho is not None else f"none ({level.reason})"), highlight=False, soft_wrap=True)


MoreWindow = Annotated[Optional[List[str]], typer.Option("--more-window", hidden=True, help="X,Y: a further "
                                                         "window (what `cli.main` makes of a repeated --window).")]
Windows = Annotated[Optional[List[str]], typer.Option("--window", metavar="X Y", help="Top-left column and row "
                                                      "of a window in SR pixels (repeatable).")]


@app.command(cls=PairOptions)
@handled
@with_options(_method_parameters())
def report(config: Annotated[Optional[Path], typer.Argument(
               help="TOML configuration: models, images, windows (or windows_file), out and any lam option; "
               "flags override it.")] = None,
           model: Annotated[Optional[List[str]], typer.Option(
               "--model", help="ONNX model or collection name (repeatable).")] = None,
           image: Annotated[Optional[List[str]], typer.Option(
               "--image", help="HR image, or a folder of images (repeatable).")] = None,
           window: Windows = None, more_window: MoreWindow = None,
           windows_file: Annotated[Optional[Path], typer.Option(
               "--windows-file", help="CSV of windows: x,y[,size] per row.")] = None,
           windows: Annotated[Optional[str], typer.Option(
               "--windows", metavar="hard:K", help="Each image's K hardest windows (highest LAM detector on the "
               "HR image, non-overlapping) instead of --window.")] = None,
           size: GivenSize = None, lr: GivenLr = None, path: GivenPath = None, sigma: GivenSigma = None,
           fold: GivenFold = None, kernel_size: GivenKernelSize = None, batch_size: BatchSize = None,
           device: GivenDevice = None, value_range: ValueRange = None, bgr: Bgr = None, crop: GivenCrop = None,
           context: Context = None, max_memory: MaxMemory = None,
           out_dir: Annotated[Optional[Path], typer.Option(
               "--out", help="Report folder (default onnxlam-report).")] = None,
           cluster: Cluster = None, scheduler: Scheduler = None, input_values: Inputs = None,
           method: Methods = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print results.json on stdout, nothing else.")] = False,
           debug: Debug = False, **method_values):
    """LAM (or --method cem, smoothgrad, …) for every model × image × window, into one folder with
    results.csv/json and index.html.

    Rerunning the same command skips the cases already complete; the exit code is 1 when a case failed.
    """
    from onnxlam.batch.report import ConfigValues, load_config, parse_window, plan_cases, run_report
    from onnxlam.core.files import check_out_dir
    from onnxlam.lam.hard_windows import parse_hard
    from onnxlam.methods.registry import parse_methods

    settings = load_config(config) if config is not None else ConfigValues()
    window = list(window or []) + list(more_window or [])
    given = ConfigValues(
        models=tuple(model) if model else None, images=tuple(image) if image else None,
        windows=tuple(parse_window(w) for w in window) if window else None, windows_file=windows_file,
        hard=parse_hard(windows) if windows is not None else None, out=out_dir, size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
        batch_size=batch_size, device=device, value_range=value_range, bgr=bgr, crop=crop, context=context,
        max_memory=max_memory, cluster=cluster, scheduler=scheduler, inputs=inputs(input_values) or None,
        methods=parse_methods(method) if method else None,
        method_values=tuple((k, v) for k, v in method_values.items() if v is not None) or None)
    resolved = settings.overridden_by(given).resolve()  # validates every option, --max-memory included
    check_out_dir(resolved.out)
    with _executor(resolved) as (resolved, executor):  # the cluster is reached before anything is written
        cases = plan_cases(resolved, resolve_model)  # bad input is reported before the live display starts
        with _progress() as bar:
            result = run_report(resolved, _LiveProgress(bar), resolve_model=resolve_model,
                                reraise_unexpected=debug, cases=cases, executor=executor)
    if as_json:
        sys.stdout.write((resolved.out / "results.json").read_text())
    else:
        _report_summary(result)
    if result.failed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# check
# ------------------------------------------------------------------------------------------------

def _check_output(result) -> None:
    from rich.table import Table

    table = Table(title="Checked cases", title_justify="left")
    bounded = list(dict.fromkeys(k for c in result.checks for k, _ in c.values))
    for name, justify in (("case", "left"), ("DI", "right"), ("baseline", "right"), ("drift", "right"),
                          *((k, "right") for k in bounded)):
        table.add_column(name, justify=justify)
    for c in result.checks:
        values = dict(c.values)
        table.add_row(escape(c.case.label), _fmt(c.di, 3) if c.di is not None else "[red]error[/]",
                      _fmt(c.case.baseline_di, 3), "–" if c.drift is None else f"{c.drift:+.3f}",
                      *(_fmt(values.get(k), 3) for k in bounded))
    out.print(table)
    if result.gradients:
        gt = Table(title="Gradient programs", title_justify="left")
        for name in ("model", "LR size", "batch", "FD relative error", "result"):
            gt.add_column(name)
        for g in result.gradients:
            gt.add_row(escape(g.model), f"{g.width}×{g.height}", _fmt(g.batch),
                       "–" if g.fd_error is None else f"{g.fd_error:.2e}",
                       "[green]ok[/]" if g.passed else f"[red]fail[/] {escape(g.error)}")
        out.print(gt)
    if result.violations:
        vt = Table(title="Violations", title_justify="left", title_style="bold red")
        for name in ("kind", "case", "detail"):
            vt.add_column(name)
        for v in result.violations:
            vt.add_row(v.kind, escape(v.subject), escape(v.detail))
        out.print(vt)
        out.print(f"[bold red]FAIL[/]: {len(result.violations)} violation"
                  f"{'s' if len(result.violations) != 1 else ''}")
    else:
        out.print("[bold green]PASS[/]")


@app.command(cls=PairOptions)
@handled
def check(model: Annotated[Optional[str], typer.Argument(
              help="ONNX model or collection name (not with --baseline).")] = None,
          image: Annotated[Optional[str], typer.Argument(help="HR image (LR with --lr).")] = None,
          window: Windows = None, more_window: MoreWindow = None, size: Size = D.size,
          min_di: Annotated[Optional[float], typer.Option("--min-di", help="Fail when a DI is below A.")] = None,
          max_di: Annotated[Optional[float], typer.Option("--max-di", help="Fail when a DI is above B.")] = None,
          baseline: Annotated[Optional[Path], typer.Option(
              "--baseline", help="results.json of a report: recompute its completed cases with their "
              "parameters.")] = None,
          tolerance: Annotated[float, typer.Option(
              "--tolerance", help="With --baseline: the largest DI drift allowed, in DI points.")] = 0.5,
          verify_gradients: Annotated[bool, typer.Option(
              "--verify-gradients", help="Also check each gradient program against finite differences and "
              "batch independence.")] = False,
          min_deletion_z: Annotated[Optional[float], typer.Option(
              "--min-deletion-z", help="Also run `faithfulness` per case: fail when deleting pixels in the "
              "map's order lowers the detector by fewer than Z standard deviations beyond random orders "
              "(2: the map is no better than random).")] = None,
          max_sanity_spearman: Annotated[Optional[float], typer.Option(
              "--max-sanity-spearman", help="Also run `sanity` per case: fail when the map of the fully "
              "randomised network still correlates above R (Spearman) with the trained network's.")] = None,
          lr: Lr = D.lr, path: PathKind = D.path, sigma: Sigma = D.sigma, fold: Fold = D.fold,
          kernel_size: KernelSize = D.kernel_size, batch_size: BatchSize = D.batch_size, device: Device = D.device,
          value_range: ValueRange = D.value_range, bgr: Bgr = D.bgr, max_memory: MaxMemory = D.max_memory,
          input_values: Inputs = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON on stdout.")] = False,
          debug: Debug = False):
    """CI gate: fail (exit 1) when a DI leaves [--min-di, --max-di], drifts from a baseline, or a case
    no longer runs; exit 0 when every check passes, 2 on bad usage.

    With --baseline the cases and their lam options come from the baseline's results.json.
    """
    from onnxlam.batch.gate import GateCase, MethodBound, check_cases, load_baseline, validate_limits
    from onnxlam.batch.report import parse_window
    from onnxlam.lam.options import LamOptions

    validate_limits(min_di, max_di, tolerance)
    bounds = ([MethodBound("faithfulness", "deletion_z", minimum=min_deletion_z)] if min_deletion_z is not None
              else []) + ([MethodBound("sanity", "final_spearman", maximum=max_sanity_spearman)]
                          if max_sanity_spearman is not None else [])
    LamOptions(max_memory=max_memory).validate()  # a bad value is bad usage, not a failed case of the gate
    window = list(window or []) + list(more_window or [])
    if baseline is not None:
        if model is not None or image is not None or window:
            raise InputError("give either --baseline FILE or MODEL IMAGE --window X Y, not both")
        cases = load_baseline(baseline)
    else:
        if model is None or image is None:
            raise InputError("give MODEL IMAGE --window X Y, or --baseline results.json")
        if not window:
            raise InputError("--window X Y is required with MODEL IMAGE")
        options = LamOptions(size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                             batch_size=batch_size, device=device, value_range=value_range, bgr=bgr,
                             inputs=inputs(input_values)).validate()
        cases = [GateCase(model, image, w.x, w.y, size, options) for w in map(parse_window, window)]
    with _progress() as progress:
        task = progress.add_task("check", total=len(cases))
        seen = []

        def advance(label: str) -> None:
            if seen:
                progress.advance(task)
            seen.append(label)
            progress.update(task, description=escape(label))

        result = check_cases(cases, min_di=min_di, max_di=max_di,
                             tolerance=tolerance if baseline is not None else None,
                             verify_gradients=verify_gradients, device=device, batch_size=batch_size,
                             max_memory=max_memory, resolve_model=resolve_model, progress=advance,
                             baseline=str(baseline) if baseline is not None else None, bounds=bounds)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        _check_output(result)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
@handled
def sweep(model: Annotated[str, typer.Argument(help="ONNX model file or collection name.")],
          image: Annotated[str, typer.Argument(help="HR image (or LR with --lr).")],
          stride: Annotated[Optional[int], typer.Option("--stride", metavar="N",
                                                        help="Grid step in SR pixels.")] = None,
          windows_spec: Annotated[Optional[str], typer.Option(
              "--windows", metavar="hard:K", help="Instead of a grid: the K hardest windows of the HR image "
                                                  "(highest LAM detector, non-overlapping).")] = None,
          size: Size = D.size, lr: Lr = D.lr, path: PathKind = D.path, sigma: Sigma = D.sigma, fold: Fold = D.fold,
          kernel_size: KernelSize = D.kernel_size, batch_size: BatchSize = D.batch_size, device: Device = D.device,
          value_range: ValueRange = D.value_range, bgr: Bgr = D.bgr,
          out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("onnxlam-sweep"),
          as_json: Annotated[bool, typer.Option("--json", help="Print sweep.json on stdout.")] = False,
          max_memory: MaxMemory = D.max_memory, cluster: Cluster = None, scheduler: Scheduler = None,
          input_values: Inputs = None, debug: Debug = False):
    """DI for windows on a grid (--stride) or the hardest ones (--windows hard:K), and a DI heat map over
    the image (sweep.npy, sweep.json, sweep.png)."""
    from onnxlam.batch.sweep import run_sweep, write_sweep
    from onnxlam.lam.hard_windows import parse_hard
    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.lam.options import LamOptions
    from onnxlam.core.files import check_out_dir

    options = LamOptions(size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                         batch_size=batch_size, device=device, value_range=value_range, bgr=bgr,
                         max_memory=max_memory, inputs=inputs(input_values)).validate()
    hard = parse_hard(windows_spec) if windows_spec is not None else None
    if (stride is None) == (hard is None):
        raise InputError("give either --stride N (a grid of windows) or --windows hard:K")
    check_out_dir(out_dir)
    with _bar() as bar:
        task = bar.add_task("sweep", total=1)
        step = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        if cluster is not None or scheduler is not None:
            from onnxlam.batch.cluster import parse_target, run_sweep_on_cluster

            result = run_sweep_on_cluster(resolve_model(model, image, lr), image, stride, options,
                                          parse_target(cluster, scheduler), progress=step, hard=hard)
        else:
            analyzer = Analyzer(resolve_model(model, image, lr), **options.model_arguments())
            result = run_sweep(analyzer, image, stride, size, lr=lr, path=path, sigma=sigma, fold=fold,
                               kernel_size=kernel_size, progress=step, hard=hard)
    write_sweep(result, out_dir)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.print(f"{result.di.size} windows: DI mean {result.di.mean():.3f}, min {result.di.min():.3f}, "
                  f"max {result.di.max():.3f}; heat map in {out_dir / 'sweep.png'}")
