"""The `compare` and `diff` commands: one window, several models, one picture."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer
from rich.markup import escape

from onnxlam.cli.app import app, fmt, handled, out, progress, resolve_model
from onnxlam.cli.options import (D, BatchSize, Bgr, Debug, Device, Fold, Inputs, KernelSize, Lr, MaxMemory,
                                 Path as PathKind, Sigma, Size, ValueRange, inputs)
from onnxlam.core.errors import InputError

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
Window = Annotated[Tuple[int, int], typer.Option("--window", help="X Y: top-left of the window in SR pixels.")]


def _check_picture_path(output: Path) -> None:
    if output.is_dir():
        raise InputError(f"--out {output} is a folder; name the picture file to write")
    if output.suffix.lower() not in PICTURE_SUFFIXES:
        raise InputError(f"--out {output}: use a picture file name ending in {', '.join(PICTURE_SUFFIXES)}")
    if not output.parent.exists():
        raise InputError(f"--out {output}: the folder {output.parent} does not exist")


def _save_picture(picture, output: Path) -> None:
    from onnxlam.core.files import write_atomic
    from onnxlam.render.pictures import save

    write_atomic(output, lambda tmp: save(tmp, picture))


def _analyse_all(models: List[str], image: str, window: tuple[int, int], options, same_scale: bool = False):
    """The LAM of the same window for each model, with a progress bar on stderr.

    With `same_scale`, models of different scales are refused before anything runs.
    """
    from onnxlam.methods.lam.analyzer import Analyzer

    options.validate()  # before any model is loaded
    analyzers = [Analyzer(resolve_model(m, image, options.lr), **options.model_arguments()) for m in models]
    scales = [a.scale for a in analyzers]
    if same_scale and len(set(scales)) > 1:
        raise InputError(f"the models have different scales ({', '.join(f'×{s}' for s in scales)}); their "
                         "attributions live on different LR images and cannot be subtracted")
    results = []
    with progress(elapsed=True) as bar:
        for m, analyzer in zip(models, analyzers):
            task = bar.add_task(escape(Path(m).stem), total=options.fold)
            results.append(analyzer.run(image, window, options.size,
                                        progress=lambda done, total, t=task: bar.update(t, completed=done),
                                        **options.run_arguments()))
    return results


def _models_table(title: str, names: List[str], results):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in (("model", "left"), ("scale", "right"), ("DI", "right"), ("Gini", "right"),
                          ("px 50%", "right"), ("px 90%", "right"), ("radius 90%", "right")):
        table.add_column(name, justify=justify)
    for name, r in zip(names, results):
        rng = r.range
        table.add_row(escape(name), f"×{r.scale}", f"{r.di:.3f}", f"{r.gini:.4f}", fmt(rng.pixels_50),
                      fmt(rng.pixels_90), fmt(rng.radius_90, 1))
    return table


def _options(**given):
    from onnxlam.lam.options import LamOptions

    return LamOptions(**given)


@app.command()
@handled
def compare(models: Annotated[List[str], typer.Argument(help="Models (files or collection names), then IMAGE.")],
            image: Annotated[str, typer.Argument(help="HR image (LR with --lr).")],
            window: Window, size: Size = D.size,
            name: Annotated[Optional[List[str]], typer.Option(
                "--name", help="Row label, one per model (default: the model's file name).")] = None,
            lr: Lr = D.lr, path: PathKind = D.path, sigma: Sigma = D.sigma, fold: Fold = D.fold,
            kernel_size: KernelSize = D.kernel_size, batch_size: BatchSize = D.batch_size,
            device: Device = D.device, value_range: ValueRange = D.value_range, bgr: Bgr = D.bgr,
            max_memory: MaxMemory = D.max_memory, input_values: Inputs = None,
            output: Annotated[Path, typer.Option("-o", "--out", help="Picture to write.")] = Path("compare.png"),
            as_json: Annotated[bool, typer.Option(
                "--json", help="Print the models' DI etc. as JSON on stdout.")] = False,
            debug: Debug = False):
    """The paper's comparison figure: one row per model (HR + window, LAM, LAM blend, KDE blend, SR
    window), DI annotated, as one picture."""
    from onnxlam.render.figures import comparison_figure

    _check_picture_path(output)
    names = list(name) if name else [Path(m).stem for m in models]
    if len(names) != len(models):
        raise InputError(f"{len(names)} --name for {len(models)} models; give one per model or none")
    options = _options(size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                       batch_size=batch_size, device=device, value_range=value_range, bgr=bgr, max_memory=max_memory,
                       inputs=inputs(input_values))
    results = _analyse_all(models, image, window, options)
    _save_picture(comparison_figure(results, names), output)
    if as_json:
        data = {"figure": str(output), "models": [
            {"model": m, "name": n, "di": r.di, "gini": r.gini, "scale": r.scale, "range": r.range.to_json()}
            for m, n, r in zip(models, names, results)]}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    out.print(_models_table("Comparison", names, results))
    out.print(f"wrote {escape(str(output))}", highlight=False)


def _display_name(model: str) -> str:
    """A model as the user named it: a collection name as is, a file by its stem."""
    return Path(model).stem if Path(model).suffix else model


@app.command()
@handled
def diff(model_a: Annotated[str, typer.Argument(help="Model A (file or collection name).")],
         model_b: Annotated[str, typer.Argument(help="Model B, of the same scale.")],
         image: Annotated[str, typer.Argument(help="HR image (LR with --lr).")],
         window: Window, size: Size = D.size,
         lr: Lr = D.lr, path: PathKind = D.path, sigma: Sigma = D.sigma, fold: Fold = D.fold,
         kernel_size: KernelSize = D.kernel_size, batch_size: BatchSize = D.batch_size,
         device: Device = D.device, value_range: ValueRange = D.value_range, bgr: Bgr = D.bgr,
         max_memory: MaxMemory = D.max_memory, input_values: Inputs = None,
         output: Annotated[Path, typer.Option("-o", "--out", help="Picture to write.")] = Path("diff.png"),
         as_json: Annotated[bool, typer.Option(
             "--json", help="Print both DIs and the difference's range as JSON.")] = False,
         debug: Debug = False):
    """The difference of two models' attributions: KDE of A minus KDE of B over A's SR image, red where A
    draws more on a pixel, blue where B does, the image itself where they agree; a colour bar beside it."""
    import numpy as np

    from onnxlam.render.figures import difference_figure, kde_difference

    _check_picture_path(output)
    options = _options(size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                       batch_size=batch_size, device=device, value_range=value_range, bgr=bgr, max_memory=max_memory,
                       inputs=inputs(input_values))
    results = _analyse_all([model_a, model_b], image, window, options, same_scale=True)
    d = kde_difference(*results)
    _save_picture(difference_figure(d, results[0], [_display_name(model_a), _display_name(model_b)]), output)
    peak = float(np.abs(d).max())
    if as_json:
        data = {"picture": str(output), "max_abs_difference": peak, "mean_difference": float(d.mean()),
                "a": {"model": model_a, "di": results[0].di}, "b": {"model": model_b, "di": results[1].di}}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    names = [f"A  {_display_name(model_a)}", f"B  {_display_name(model_b)}"]
    out.print(_models_table("Attribution difference (KDE A − KDE B)", names, results))
    out.print(f"max |A − B| = {peak:.3f} (of densities normalised to 1); red: A higher, blue: B higher. "
              f"wrote {escape(str(output))}", highlight=False, soft_wrap=True)
