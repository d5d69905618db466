"""The `onnxlam` command line: a thin layer over the Python API.

Exit codes: 0 success; 2 bad usage or input; 1 anything unexpected (and NaN/inf trouble). Errors are
one line on stderr starting with `error:`; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .errors import InputError, OnnxlamError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Local Attribution Maps (LAM) for super-resolution networks in ONNX.")
err = Console(stderr=True)
out = Console()

DEBUG = typer.Option(False, "--debug", help="Show tracebacks.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when usable, else CPU), cpu or cuda.")
VALUE_RANGE = typer.Option(None, "--value-range", help="1 or 255: the pixel range the model expects "
                           "(default: the model's metadata onnxlam.value_range, else 1).")
SIZE = typer.Option(16, "--size", help="Window side in SR pixels.")
LR = typer.Option(False, "--lr", help="IMAGE is the LR input: use it as is.")
PATH = typer.Option("blur", "--path", help="blur (LAM), linear or gaussian-linear.")
SIGMA = typer.Option(1.2, "--sigma", help="Blur of the path's baseline.")
FOLD = typer.Option(50, "--fold", help="Path steps.")
KERNEL_SIZE = typer.Option(9, "--kernel-size", help="Gaussian kernel side.")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Path steps per run (default: as many as memory "
                          "allows, up to 10).")
MAX_MEMORY = typer.Option(None, "--max-memory", help="Memory limit, e.g. 24G: the process's peak "
                          "resident set on the CPU, the device memory onnxlam holds on CUDA (default: 70% "
                          "of what is free). The batch is sized from measured memory; when even one step "
                          "does not fit, the analysis is cropped around the windows (and says so).")
INPUTS = typer.Option(None, "--input", metavar="NAME=VALUE", help="Hold a model's extra input (a noise "
                      "level, a quality factor) at VALUE, broadcast to the input's shape (repeatable; "
                      "needed for every input but the image).")
BGR = typer.Option(None, "--bgr/--rgb", help="Channel order the model expects "
                   "(default: metadata onnxlam.channel_order, else RGB).")


def fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handled(command):
    """Turn onnxlam's errors into one stderr line and an exit code; `--debug` re-raises."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except OnnxlamError as exc:
            if kwargs.get("debug"):
                raise
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:
            if kwargs.get("debug"):
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)

    return wrapper


def _resolve_model(model: str) -> str:
    from .collection import resolve

    return str(resolve(model))


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err, transient=True)


def _default_out(model: str, image: str, x: int, y: int) -> Path:
    return Path(f"lam-{Path(model).stem}-{Path(image).stem}-{x}-{y}")


def _summary(result, folder: Path | None) -> Table:
    table = Table(title="Local attribution map", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    w = result.window
    c = result.completeness
    rows = [("DI", f"{result.di:.3f}"), ("Gini", f"{result.gini:.5f}"),
            ("window", f"x={w.x} y={w.y} size={w.size}"),
            ("scale", f"×{result.scale}  (LR {result.lr_size[1]}×{result.lr_size[0]})"),
            ("path", f"{result.path}  sigma={result.sigma:g} fold={result.fold} kernel={result.kernel_size}"),
            ("completeness", f"Σ attribution {c.attribution_sum:.5g}  vs  ΔD {c.objective_delta:.5g}"),
            ("NaN gradients", str(result.nan_gradients)),
            ("provider", f"{result.provider}  (batch {result.batch_size})"),
            ("seconds", f"{result.seconds:.2f}")]
    crop = result.extra.get("crop")
    if crop:
        t, l, b, r = crop["box"]
        how = "exact" if crop["exact"] else {"memory": "approximate: cut to fit the memory limit"}.get(
            crop.get("reason"), "approximate: --context on a global network")
        rows.append(("crop", f"LR rows {t}–{b - 1}, cols {l}–{r - 1} ({how})"))
    mem = result.extra.get("memory") or {}
    if mem.get("measured_peak"):
        from .memory import format_size

        limit = f" of {format_size(mem['limit'])}" if mem.get("limit") else ""
        rows.append(("memory", f"peak {format_size(mem['measured_peak'])}{limit} ({mem['counts']})"))
    if folder is not None:
        rows.append(("written to", str(folder)))
    for k, v in rows:
        table.add_row(k, v)
    return table


def run_lam(model: str, image: str, windows: list[tuple[int, int]], size: int, lr: bool, path: str, sigma: float,
            fold: int, kernel_size: int, batch_size: Optional[int], device: str, value_range: Optional[float],
            bgr: Optional[bool], program: Optional[Path], out_dir: Optional[Path], as_json: bool,
            crop: bool = True, context: Optional[int] = None, max_memory: Optional[str] = None,
            inputs: Optional[dict] = None):
    from .analysis import Analyzer
    from .outputs import check_out_dir, window_folder, write_results

    if not windows:
        raise InputError("no window given; pass --window X Y (repeatable)")
    model = _resolve_model(model)
    folder = out_dir or _default_out(model, image, *windows[0])
    check_out_dir(folder)
    analyzer = Analyzer(model, device=device, value_range=value_range, bgr=bgr, batch_size=batch_size,
                        max_memory=max_memory, inputs=inputs)
    with _progress() as progress:
        task = progress.add_task("LAM", total=fold)
        results = analyzer.run_windows(image, windows, size, lr=lr, path=path, sigma=sigma, fold=fold,
                                       kernel_size=kernel_size, program=program, crop=crop, context=context,
                                       progress=lambda done, total: progress.update(task, completed=done,
                                                                                    total=total))
    write_results(results, folder)
    if as_json:
        data = [r.to_json() for r in results]
        sys.stdout.write(json.dumps(data[0] if len(data) == 1 else data, indent=2) + "\n")
    else:
        for r in results:
            out.print(_summary(r, folder if len(results) == 1 else folder / window_folder(r)))
    for note in dict.fromkeys(n for r in results for n in r.warnings):  # once per group, in order
        err.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    for r in results:
        if r.nan_gradients:
            err.print(f"[yellow]warning:[/] window ({r.window.x}, {r.window.y}): {r.nan_gradients} NaN "
                      "gradient values were replaced by 0")
    return results


@app.command()
@handled
def lam(model: str = typer.Argument(..., help="ONNX model file (or a collection name, see `onnxlam models`)."),
        image: str = typer.Argument(..., help="HR image (downsampled per the LAM protocol), or LR with --lr."),
        window: Tuple[int, int] = typer.Option(..., "--window", help="X Y: top-left column and row of the "
                                               "window in SR-output pixels. Repeat for several windows: they "
                                               "share each forward pass and get a sub-folder each."),
        more_windows: List[str] = typer.Option([], "--more-window", hidden=True),
        size: int = SIZE,
        lr: bool = LR,
        path: str = PATH,
        sigma: float = SIGMA,
        fold: int = FOLD,
        kernel_size: int = KERNEL_SIZE,
        batch_size: Optional[int] = BATCH_SIZE,
        device: str = DEVICE, value_range: Optional[float] = VALUE_RANGE, bgr: Optional[bool] = BGR,
        program: Optional[Path] = typer.Option(None, "--program", help="A program from `onnxlam export`."),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder "
                                               "(default lam-<model>-<image>-<X>-<Y>)."),
        as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout, nothing else."),
        crop: bool = typer.Option(True, "--crop/--no-crop", help="Run a local network only on the LR crop "
                                  "its window depends on (exact; the default)."),
        context: Optional[int] = typer.Option(None, "--context", help="Crop margin in LR pixels around the "
                                              "windows: approximate for global networks, and how images "
                                              "too large for memory still run."),
        max_memory: Optional[str] = MAX_MEMORY,
        input_values: Optional[List[str]] = INPUTS,
        debug: bool = DEBUG):
    """Compute the local attribution map of a window and write the arrays, result.json and pictures."""
    from .model import parse_inputs

    run_lam(model, image, [window] + [_pair(w) for w in more_windows], size, lr, path, sigma, fold,
            kernel_size, batch_size, device, value_range, bgr, program, out_dir, as_json, crop, context,
            max_memory, parse_inputs(input_values))


@app.command()
@handled
def export(model: str = typer.Argument(..., help="ONNX model file or collection name."),
           size: tuple[int, int] = typer.Option(..., "--size", help="H W: the LR input height and width."),
           batch: int = typer.Option(1, "--batch", help="Images per run."),
           output: Path = typer.Option(..., "-o", "--output", help="Program file to write."),
           device: str = DEVICE, value_range: Optional[float] = VALUE_RANGE, bgr: Optional[bool] = BGR,
           input_values: Optional[List[str]] = INPUTS,
           debug: bool = DEBUG):
    """Build, verify and write the gradient program for one input shape (for `lam --program`)."""
    from .model import open_model, parse_inputs
    from .program import build_program

    if batch < 1 or min(size) < 1:
        raise InputError("--batch and --size must be positive")
    if output.is_dir():
        raise InputError(f"-o {output} is a folder; name the program file to write")
    source = open_model(_resolve_model(model), parse_inputs(input_values))
    prog = build_program(source, batch, size[0], size[1], value_range, bgr, device=device)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        prog.save(tmp)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    err.print(f"wrote {output}: input {batch}×{prog.key.channels}×{size[0]}×{size[1]}, scale ×{prog.scale}, "
              f"finite-difference relative error {prog.fd_error:.2e}", highlight=False)


@app.command()
@handled
def inspect(model: str = typer.Argument(..., help="ONNX model file or collection name."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
            input_values: Optional[List[str]] = INPUTS,
            debug: bool = DEBUG):
    """Describe a model: input/output, dynamic dims, scale, opset, ops, parameters, gradient coverage."""
    from .analysis import Analyzer
    from .model import parse_inputs
    from .program import ungradable_ops

    analyzer = Analyzer(_resolve_model(model), device="cpu", check_ops=False, inputs=parse_inputs(input_values))
    info = analyzer.info
    try:
        scale: int | str = analyzer.scale
    except OnnxlamError as exc:
        scale = f"unknown ({exc})"
    data = {"model": info.path, "sha256": info.sha256,
            "input": {"name": info.input.name, "shape": list(info.input.dims), "type": info.input.type_name},
            "output": {"name": info.output.name, "shape": list(info.output.dims), "type": info.output.type_name},
            "dynamic": info.dynamic_dims, "scale": scale, "opset": info.opset, "parameters": info.parameters,
            "value_range": info.value_range, "channel_order": info.channel_order,
            "ops": info.op_histogram, "ops_without_gradient": ungradable_ops(analyzer.normalised),
            "receptive_field": analyzer.receptive_field.to_json()}
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    table = Table(title=f"{info.path}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("input", f"{info.input.name}  {info.input.shape_text()}  {info.input.type_name}")
    table.add_row("output", f"{info.output.name}  {info.output.shape_text()}  {info.output.type_name}")
    table.add_row("dynamic", ", ".join(info.dynamic_dims) or "none (fixed shape)")
    table.add_row("scale", f"×{scale}" if isinstance(scale, int) else scale)
    table.add_row("opset", str(info.opset))
    table.add_row("parameters", f"{info.parameters:,}")
    table.add_row("pixels", f"range {info.value_range:g}, {info.channel_order.upper()}")
    table.add_row("ops", ", ".join(f"{k} {v}" for k, v in info.op_histogram.items()))
    missing = data["ops_without_gradient"]
    rf = analyzer.receptive_field
    table.add_row("receptive field", f"global: {rf.reason}" if rf.global_ else
                  f"{rf.reach[0] + rf.reach[1] + 1}×{rf.reach[2] + rf.reach[3] + 1} LR px "
                  f"(reach top/bottom/left/right {', '.join(map(str, rf.reach))})")
    table.add_row("no gradient rule", ", ".join(missing) if missing else "none: every op is differentiable")
    table.add_row("sha256", info.sha256)
    out.print(table)


@app.command()
@handled
def sweep(model: str = typer.Argument(..., help="ONNX model file or collection name."),
          image: str = typer.Argument(..., help="HR image (or LR with --lr)."),
          stride: int = typer.Option(..., "--stride", help="Grid step in SR pixels."),
          size: int = SIZE,
          lr: bool = LR,
          path: str = PATH, sigma: float = SIGMA,
          fold: int = FOLD, kernel_size: int = KERNEL_SIZE,
          batch_size: Optional[int] = BATCH_SIZE, device: str = DEVICE,
          value_range: Optional[float] = VALUE_RANGE, bgr: Optional[bool] = BGR,
          out_dir: Path = typer.Option(Path("onnxlam-sweep"), "--out", help="Output folder."),
          as_json: bool = typer.Option(False, "--json", help="Print sweep.json on stdout."),
          max_memory: Optional[str] = MAX_MEMORY,
          debug: bool = DEBUG):
    """DI for windows on a grid, and a DI heat map over the image (sweep.npy, sweep.json, sweep.png)."""
    from .analysis import Analyzer
    from .outputs import check_out_dir
    from .sweep import run_sweep, write_sweep

    check_out_dir(out_dir)
    analyzer = Analyzer(_resolve_model(model), device=device, value_range=value_range, bgr=bgr,
                        batch_size=batch_size, max_memory=max_memory)
    with _progress() as progress:
        task = progress.add_task("sweep", total=1)
        result = run_sweep(analyzer, image, stride, size, lr=lr, path=path, sigma=sigma, fold=fold,
                           kernel_size=kernel_size,
                           progress=lambda done, total: progress.update(task, completed=done, total=total))
    write_sweep(result, out_dir)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.print(f"{result.di.size} windows: DI mean {result.di.mean():.3f}, min {result.di.min():.3f}, "
                  f"max {result.di.max():.3f}; heat map in {out_dir / 'sweep.png'}")


@app.command("import-ncnn")
@handled
def import_ncnn(param: Path = typer.Argument(..., help="ncnn .param file."),
                weights: Path = typer.Argument(..., metavar="BIN", help="ncnn .bin file."),
                output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write."),
                value_range: Optional[float] = typer.Option(None, "--value-range", help="Record the pixel "
                                                            "range the network expects (1 or 255)."),
                bgr: Optional[bool] = typer.Option(None, "--bgr/--rgb", help="Record the channel order."),
                debug: bool = DEBUG):
    """Convert an ncnn model to ONNX with standard ops (fp16 weights become float32)."""
    import onnx

    from .ncnn import convert

    for f in (param, weights):
        if not f.is_file():
            raise InputError(f"file not found: {f}")
    if output.is_dir():
        raise InputError(f"-o {output} is a folder; name the .onnx file to write")
    model = convert(param, weights)
    props = {p.key: p.value for p in model.metadata_props}
    if value_range is not None:
        if value_range not in (1.0, 255.0):
            raise InputError(f"--value-range must be 1 or 255; got {value_range:g}")
        props["onnxlam.value_range"] = f"{value_range:g}"
    if bgr is not None:
        props["onnxlam.channel_order"] = "bgr" if bgr else "rgb"
    props.setdefault("onnxlam.source", f"ncnn:{param.name}")
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        onnx.save(model, str(tmp))
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    err.print(f"wrote {output} ({len(model.graph.node)} nodes)", highlight=False)


@app.command()
@handled
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."), debug: bool = DEBUG):
    """List the bundled collection of pretrained models (usable by name wherever a model is expected)."""
    from .collection import list_models

    entries = list_models()
    if as_json:
        rows = [{"name": e.name, "file": str(e.path), "architecture": e.architecture, "scale": e.scale,
                 "params": e.params, "license": e.license, "available": e.available} for e in entries]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="onnxlam model collection", title_justify="left")
    for col in ("name", "architecture", "scale", "params", "licence", "status"):
        table.add_column(col)
    for e in entries:
        status = "ready" if e.available else "fetch: python scripts/fetch_models.py " + e.name
        table.add_row(e.name, e.architecture, f"×{e.scale}", f"{e.params:,}", e.license, status)
    out.print(table)


DEMO_MODEL = "animevideov3-x4"
DEMO_WINDOW = (120, 72)


@app.command()
@handled
def demo(out_dir: Path = typer.Option(Path("onnxlam-demo"), "--out", help="Output folder."),
         device: str = DEVICE, debug: bool = DEBUG):
    """Run `lam` on the bundled model and photograph into ./onnxlam-demo/ and print the summary."""
    photo = Path(__file__).parent / "data" / "chelsea.png"
    run_lam(DEMO_MODEL, str(photo), [DEMO_WINDOW], 16, False, "blur", 1.2, 50, 9, None, device, None, None,
            None, out_dir, False)
    out.print(f"Open {out_dir / 'panel.png'} to see the map.")


def _pair(text: str) -> tuple[int, int]:
    x, y = text.split(",")
    return int(x), int(y)


def repeatable_windows(argv: list[str]) -> list[str]:
    """Click cannot repeat a two-value option: every `--window X Y` after the first becomes the hidden
    `--more-window X,Y`, so `--window` stays repeatable on the command line."""
    result, seen, i = [], False, 0
    while i < len(argv):
        if argv[i] == "--window" and i + 2 < len(argv) and seen:
            result += ["--more-window", f"{argv[i + 1]},{argv[i + 2]}"]
            i += 3
            continue
        seen = seen or argv[i] == "--window"
        result.append(argv[i])
        i += 1
    return result


def main() -> None:
    app(args=repeatable_windows(sys.argv[1:]), prog_name="onnxlam")


from . import report_cli  # noqa: E402,F401  (registers report/check/compare)

if __name__ == "__main__":
    main()
