"""The `report`, `check`, `compare` and `diff` commands, registered on `onnxlam.cli.app`.

Imported at the end of cli.py. Exit codes as for `lam`: 0 success (check: pass), 1 a failed case or
a failed check, 2 bad usage or input.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from typer.core import TyperCommand

from .cli import (BATCH_SIZE, BGR, DEBUG, DEVICE, FOLD, INPUTS, KERNEL_SIZE, LR, MAX_MEMORY, PATH, SIGMA, SIZE,
                  VALUE_RANGE, _resolve_model, app, err, handled, out)
from .errors import InputError
from .model import parse_inputs
from .report import (CaseRow, ConfigValues, LamOptions, Report, ReportListener, check_out, load_config,
                     parse_window, plan_cases, run_report)

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


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


MORE_WINDOW = typer.Option(None, "--more-window", hidden=True, help="X,Y: a further window (what `cli.main` "
                           "makes of a repeated --window).")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True)


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else (str(value) if isinstance(value, int) else f"{value:.{digits}f}")


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------

class _LiveProgress(ReportListener):
    """The report's live display: cases done of those to compute (with ETA), and the current case."""

    def __init__(self, progress: Progress):
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

    def case_finished(self, row: CaseRow) -> None:
        self.progress.advance(self.cases)
        if row.status == "failed":
            self.progress.console.print(f"[red]failed[/] {escape(row.case.label)}: {escape(row.message)}",
                                        highlight=False, soft_wrap=True)


def _report_summary(report: Report) -> None:
    table = Table(title="LAM report", title_justify="left")
    for name, justify in (("model", "left"), ("cases", "right"), ("failed", "right"), ("DI mean", "right"),
                          ("DI median", "right"), ("DI std", "right"), ("radius 90%", "right")):
        table.add_column(name, justify=justify)
    for s in report.summaries():
        table.add_row(escape(s.model), str(s.cases), f"[red]{s.failures}[/]" if s.failures else "0",
                      _fmt(s.di_mean), _fmt(s.di_median), _fmt(s.di_std), _fmt(s.radius_90_mean, 1))
    out.print(table)
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


@app.command(cls=PairOptions)
@handled
def report(config: Optional[Path] = typer.Argument(None, help="TOML configuration: models, images, windows "
                                                   "(or windows_file), out and any lam option; flags override it."),
           model: Optional[List[str]] = typer.Option(None, "--model", help="ONNX model or collection name "
                                                     "(repeatable)."),
           image: Optional[List[str]] = typer.Option(None, "--image", help="HR image, or a folder of images "
                                                     "(repeatable)."),
           window: Optional[List[str]] = typer.Option(None, "--window", metavar="X Y", help="Top-left column "
                                                      "and row of a window in SR pixels (repeatable)."),
           more_window: Optional[List[str]] = MORE_WINDOW,
           windows_file: Optional[Path] = typer.Option(None, "--windows-file", help="CSV of windows: x,y[,size] "
                                                       "per row."),
           size: Optional[int] = typer.Option(None, "--size", help="Window side in SR pixels (default 16)."),
           lr: Optional[bool] = typer.Option(None, "--lr/--hr", help="Images are LR inputs (use as is) "
                                             "(default --hr)."),
           path: Optional[str] = typer.Option(None, "--path", help="blur, linear or gaussian-linear "
                                              "(default blur)."),
           sigma: Optional[float] = typer.Option(None, "--sigma", help="Blur of the path's baseline "
                                                 "(default 1.2)."),
           fold: Optional[int] = typer.Option(None, "--fold", help="Path steps (default 50)."),
           kernel_size: Optional[int] = typer.Option(None, "--kernel-size", help="Gaussian kernel side "
                                                     "(default 9)."),
           batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Path steps per run "
                                                    "(default: as memory allows, up to 10)."),
           device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda (default auto)."),
           value_range: Optional[float] = VALUE_RANGE, bgr: Optional[bool] = BGR,
           crop: Optional[bool] = typer.Option(None, "--crop/--no-crop", help="Run a local network only on the "
                                               "LR crop each window depends on (exact; default --crop)."),
           context: Optional[int] = typer.Option(None, "--context", help="Crop margin in LR pixels around the "
                                                 "window (approximate for global networks)."),
           max_memory: Optional[str] = MAX_MEMORY,
           out_dir: Optional[Path] = typer.Option(None, "--out", help="Report folder (default onnxlam-report)."),
           as_json: bool = typer.Option(False, "--json", help="Print results.json on stdout, nothing else."),
           input_values: Optional[List[str]] = INPUTS,
           debug: bool = DEBUG):
    """LAM for every model × image × window, into one folder with results.csv/json and index.html.

    Rerunning the same command skips the cases already complete; the exit code is 1 when a case failed.
    """
    settings = load_config(config) if config is not None else ConfigValues()
    window = list(window or []) + list(more_window or [])
    given = ConfigValues(
        models=tuple(model) if model else None, images=tuple(image) if image else None,
        windows=tuple(parse_window(w) for w in window) if window else None, windows_file=windows_file,
        out=out_dir, size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
        batch_size=batch_size, device=device, value_range=value_range, bgr=bgr, crop=crop, context=context,
        max_memory=max_memory, inputs=tuple(sorted(parse_inputs(input_values).items())) if input_values else None)
    resolved = settings.overridden_by(given).resolve()  # validates every option, --max-memory included
    cases = plan_cases(resolved, _resolve_model)  # bad input is reported before the live display starts
    check_out(resolved.out)
    with _progress() as progress:
        result = run_report(resolved, _LiveProgress(progress), resolve_model=_resolve_model,
                            reraise_unexpected=debug, cases=cases)
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
    table = Table(title="Checked cases", title_justify="left")
    for name, justify in (("case", "left"), ("DI", "right"), ("baseline", "right"), ("drift", "right")):
        table.add_column(name, justify=justify)
    for c in result.checks:
        table.add_row(escape(c.case.label), _fmt(c.di, 3) if c.di is not None else "[red]error[/]",
                      _fmt(c.case.baseline_di, 3), "–" if c.drift is None else f"{c.drift:+.3f}")
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
def check(model: Optional[str] = typer.Argument(None, help="ONNX model or collection name (not with --baseline)."),
          image: Optional[str] = typer.Argument(None, help="HR image (LR with --lr)."),
          window: Optional[List[str]] = typer.Option(None, "--window", metavar="X Y", help="Window top-left in "
                                                     "SR pixels (repeatable)."),
          more_window: Optional[List[str]] = MORE_WINDOW,
          size: int = SIZE,
          min_di: Optional[float] = typer.Option(None, "--min-di", help="Fail when a DI is below A."),
          max_di: Optional[float] = typer.Option(None, "--max-di", help="Fail when a DI is above B."),
          baseline: Optional[Path] = typer.Option(None, "--baseline", help="results.json of a report: recompute "
                                                  "its completed cases with their parameters."),
          tolerance: float = typer.Option(0.5, "--tolerance", help="With --baseline: the largest DI drift "
                                          "allowed, in DI points."),
          verify_gradients: bool = typer.Option(False, "--verify-gradients", help="Also check each gradient "
                                                "program against finite differences and batch independence."),
          lr: bool = LR,
          path: str = PATH,
          sigma: float = SIGMA,
          fold: int = FOLD,
          kernel_size: int = KERNEL_SIZE,
          batch_size: Optional[int] = BATCH_SIZE,
          device: str = DEVICE, value_range: Optional[float] = VALUE_RANGE, bgr: Optional[bool] = BGR,
          max_memory: Optional[str] = MAX_MEMORY,
          as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON on stdout."),
          input_values: Optional[List[str]] = INPUTS,
          debug: bool = DEBUG):
    """CI gate: fail (exit 1) when a DI leaves [--min-di, --max-di], drifts from a baseline, or a case
    no longer runs; exit 0 when every check passes, 2 on bad usage.

    With --baseline the cases and their lam options come from the baseline's results.json.
    """
    from .gate import GateCase, check_cases, load_baseline, validate_limits
    from .memory import parse_size

    validate_limits(min_di, max_di, tolerance)
    if max_memory is not None:
        parse_size(max_memory)  # a bad value is bad usage, not a failed case of the gate
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
                             inputs=tuple(sorted(parse_inputs(input_values).items())))
        options.validate()
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
                             max_memory=max_memory, resolve_model=_resolve_model, progress=advance,
                             baseline=str(baseline) if baseline is not None else None)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        _check_output(result)
    if not result.passed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# compare and diff
# ------------------------------------------------------------------------------------------------

def _check_picture_path(output: Path) -> None:
    if output.is_dir():
        raise InputError(f"--out {output} is a folder; name the picture file to write")
    if output.suffix.lower() not in PICTURE_SUFFIXES:
        raise InputError(f"--out {output}: use a picture file name ending in {', '.join(PICTURE_SUFFIXES)}")
    if not output.parent.exists():
        raise InputError(f"--out {output}: the folder {output.parent} does not exist")


def _save_picture(picture, output: Path) -> None:
    """Write the picture through a temporary sibling and a rename: never half a file."""
    from .pictures import save

    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.", suffix=output.suffix)
    os.close(fd)
    try:
        save(tmp, picture)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600 files; a figure is meant to be shared
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _analyse_all(models: List[str], image: str, window: tuple[int, int], size: int, lr: bool, path: str,
                 sigma: float, fold: int, kernel_size: int, batch_size: Optional[int], device: str,
                 value_range: Optional[float], bgr: Optional[bool], same_scale: bool = False,
                 max_memory: Optional[str] = None, inputs: Optional[dict] = None):
    """The LAM of the same window for each model, with a progress bar on stderr.

    With `same_scale`, models of different scales are refused before anything runs.
    """
    from .analysis import Analyzer
    from .memory import parse_size

    if max_memory is not None:
        parse_size(max_memory)  # before any model is loaded
    analyzers = [Analyzer(_resolve_model(m), device=device, value_range=value_range, bgr=bgr,
                          batch_size=batch_size, max_memory=max_memory, inputs=inputs) for m in models]
    scales = [a.scale for a in analyzers]
    if same_scale and len(set(scales)) > 1:
        raise InputError(f"the models have different scales ({', '.join(f'×{s}' for s in scales)}); their "
                         "attributions live on different LR images and cannot be subtracted")
    results = []
    with _progress() as progress:
        for m, analyzer in zip(models, analyzers):
            task = progress.add_task(escape(Path(m).stem), total=fold)
            results.append(analyzer.run(image, window, size, lr=lr, path=path, sigma=sigma, fold=fold,
                                        kernel_size=kernel_size,
                                        progress=lambda done, total, t=task: progress.update(t, completed=done)))
    return results


def _models_table(title: str, names: List[str], results) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (("model", "left"), ("scale", "right"), ("DI", "right"), ("Gini", "right"),
                          ("px 50%", "right"), ("px 90%", "right"), ("radius 90%", "right")):
        table.add_column(name, justify=justify)
    for name, r in zip(names, results):
        rng = r.range
        table.add_row(escape(name), f"×{r.scale}", f"{r.di:.3f}", f"{r.gini:.4f}", _fmt(rng.get("pixels_50")),
                      _fmt(rng.get("pixels_90")), _fmt(rng.get("radius_90"), 1))
    return table


@app.command()
@handled
def compare(models: List[str] = typer.Argument(..., help="Models (files or collection names), then IMAGE."),
            image: str = typer.Argument(..., help="HR image (LR with --lr)."),
            window: tuple[int, int] = typer.Option(..., "--window", help="X Y: top-left of the window in SR "
                                                   "pixels."),
            size: int = SIZE,
            name: Optional[List[str]] = typer.Option(None, "--name", help="Row label, one per model "
                                                     "(default: the model's file name)."),
            lr: bool = LR,
            path: str = PATH,
            sigma: float = SIGMA,
            fold: int = FOLD,
            kernel_size: int = KERNEL_SIZE,
            batch_size: Optional[int] = BATCH_SIZE,
            device: str = DEVICE, value_range: Optional[float] = VALUE_RANGE, bgr: Optional[bool] = BGR,
            max_memory: Optional[str] = MAX_MEMORY,
            output: Path = typer.Option(Path("compare.png"), "-o", "--out", help="Picture to write."),
            as_json: bool = typer.Option(False, "--json", help="Print the models' DI etc. as JSON on stdout."),
            input_values: Optional[List[str]] = INPUTS,
            debug: bool = DEBUG):
    """The paper's comparison figure: one row per model (HR + window, LAM, LAM blend, KDE blend, SR
    window), DI annotated, as one picture."""
    from .compare import comparison_figure

    _check_picture_path(output)
    names = list(name) if name else [Path(m).stem for m in models]
    if len(names) != len(models):
        raise InputError(f"{len(names)} --name for {len(models)} models; give one per model or none")
    results = _analyse_all(models, image, window, size, lr, path, sigma, fold, kernel_size, batch_size, device,
                           value_range, bgr, max_memory=max_memory, inputs=parse_inputs(input_values))
    _save_picture(comparison_figure(results, names), output)
    if as_json:
        data = {"figure": str(output), "models": [
            {"model": m, "name": n, "di": r.di, "gini": r.gini, "scale": r.scale, "range": r.range}
            for m, n, r in zip(models, names, results)]}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    out.print(_models_table("Comparison", names, results))
    out.print(f"wrote {escape(str(output))}", highlight=False)


@app.command()
@handled
def diff(model_a: str = typer.Argument(..., help="Model A (file or collection name)."),
         model_b: str = typer.Argument(..., help="Model B, of the same scale."),
         image: str = typer.Argument(..., help="HR image (LR with --lr)."),
         window: tuple[int, int] = typer.Option(..., "--window", help="X Y: top-left of the window in SR pixels."),
         size: int = SIZE,
         lr: bool = LR,
         path: str = PATH,
         sigma: float = SIGMA,
         fold: int = FOLD,
         kernel_size: int = KERNEL_SIZE,
         batch_size: Optional[int] = BATCH_SIZE,
         device: str = DEVICE, value_range: Optional[float] = VALUE_RANGE, bgr: Optional[bool] = BGR,
         max_memory: Optional[str] = MAX_MEMORY,
         output: Path = typer.Option(Path("diff.png"), "-o", "--out", help="Picture to write."),
         as_json: bool = typer.Option(False, "--json", help="Print both DIs and the difference's range as JSON."),
         debug: bool = DEBUG):
    """The difference of two models' attributions: KDE of A minus KDE of B, red where A draws more on
    a pixel, blue where B does, white where they agree."""
    import numpy as np

    from .compare import difference_picture, kde_difference

    _check_picture_path(output)
    results = _analyse_all([model_a, model_b], image, window, size, lr, path, sigma, fold, kernel_size,
                           batch_size, device, value_range, bgr, same_scale=True, max_memory=max_memory)
    d = kde_difference(*results)
    _save_picture(difference_picture(d, results[0].scale), output)
    peak = float(np.abs(d).max())
    if as_json:
        data = {"picture": str(output), "max_abs_difference": peak, "mean_difference": float(d.mean()),
                "a": {"model": model_a, "di": results[0].di}, "b": {"model": model_b, "di": results[1].di}}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    names = [f"A  {Path(model_a).stem}", f"B  {Path(model_b).stem}"]
    out.print(_models_table("Attribution difference (KDE A − KDE B)", names, results))
    out.print(f"max |A − B| = {peak:.3f} (of densities normalised to 1); red: A higher, blue: B higher. "
              f"wrote {escape(str(output))}", highlight=False, soft_wrap=True)
