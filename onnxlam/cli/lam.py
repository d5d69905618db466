"""The `lam`, `export`, `inspect` and `demo` commands: one model, one image."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from onnxlam.cli.app import app, err, facts, handled, out, pair, progress, resolve_model
from onnxlam.cli.options import (D, BatchSize, Bgr, Context, Crop, Debug, Device, Fold, Inputs, KernelSize, Lr,
                                 MaxMemory, Path as PathKind, Sigma, Size, ValueRange, inputs, option_parameters,
                                 with_options)
from onnxlam.core.errors import InputError, OnnxlamError

Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, nothing else.")]
ModelArg = Annotated[str, typer.Argument(help="ONNX model file (or a collection name, see `onnxlam models`).")]


def run_lam(model: str, image: str, windows: list[tuple[int, int]], options=None, *,
            program: Optional[Path] = None, out_dir: Optional[Path] = None, as_json: bool = False,
            method: str = "lam", hard: int | None = None):
    """`onnxlam lam` as a function: analyse, write the folder, print the summary (or JSON).

    `method`: lam, or a noise tunnel's combination (`options` then a `TunnelOptions`): LAM of noisy
    copies of the input, combined. `hard`: K, for the image's K hardest windows (`lam.hard_windows`,
    chosen on the HR image) instead of `windows`."""
    from onnxlam.convert.pytorch import is_checkpoint
    from onnxlam.core.files import check_out_dir
    from onnxlam.lam.hard_windows import NEEDS_HR, image_windows
    from onnxlam.lam.result import Window
    from onnxlam.methods.registry import method as registered

    m = registered(method)
    options = (options or m.Options()).validate()
    if hard is not None and windows:
        raise InputError("give either --window X Y or --windows hard:K, not both")
    if hard is not None and options.lr:
        raise InputError(NEEDS_HR)
    if not windows and hard is None:
        raise InputError("no window given; pass --window X Y (repeatable) or --windows hard:K")
    given, model = model, resolve_model(model, image, options.lr)
    loaded = None
    if hard is not None:
        loaded = m.open(model, options, image)
        # the HR image as the model's input is cut: to a multiple of the scale, from the top left
        windows = [(w.x, w.y) for w in image_windows(str(image), options.size, hard, loaded.scale)]
    # a checkpoint's folder is named after it, not after its cached export
    name = given if is_checkpoint(given) else model
    folder = out_dir or m.default_out(name, image, Window(*windows[0], options.size) if hard is None
                                      else f"hard{hard}", options)
    check_out_dir(folder)
    loaded = loaded or m.open(model, options, image)
    with progress() as bar:
        task = bar.add_task("LAM", total=options.fold)
        step = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        results = m.attribute(loaded, image, [Window(x, y, options.size) for x, y in windows], options,
                              progress=step, program=program)
    m.write_all(results, folder)
    if as_json:
        data = [r.to_json() for r in results]
        sys.stdout.write(json.dumps(data[0] if len(data) == 1 else data, indent=2) + "\n")
    else:
        for r in results:
            where = folder if len(results) == 1 else folder / f"window-{r.window.x}-{r.window.y}-{r.window.size}"
            facts("Local attribution map", m.facts(r) + [("written to", str(where))])
    for note in dict.fromkeys(n for r in results for n in r.warnings):  # once per group, in order
        err.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    for r in results:
        if r.nan_gradients:
            err.print(f"[yellow]warning:[/] window ({r.window.x}, {r.window.y}): {r.nan_gradients} NaN "
                      "gradient values were replaced by 0")
    return results


def _tunnel_and_frame():
    """The flags `lam` takes from the noise tunnel's and video LAM's Options (overrides: None is "not given")."""
    from onnxlam.methods.registry import method

    return (option_parameters(method("smoothgrad").Options, names=("samples", "stdev", "seed"), given=True),
            option_parameters(method("video").Options, names=("frame",)))


@app.command()
@handled
@with_options(*_tunnel_and_frame())
def lam(model: ModelArg,
        images: Annotated[List[str], typer.Argument(
            help="HR image (downsampled per the LAM protocol), or LR with --lr. For a video SR model: the "
            "frames in order (FRAME0 FRAME1 …), or one folder of frames (sorted by name).", metavar="IMAGE")],
        window: Annotated[Optional[Tuple[int, int]], typer.Option(
            "--window", metavar="X Y", help="Top-left column and row of the window in SR-output pixels. Repeat "
            "for several windows: they share each forward pass and get a sub-folder each.")] = None,
        more_windows: Annotated[List[str], typer.Option("--more-window", hidden=True)] = [],
        windows_spec: Annotated[Optional[str], typer.Option(
            "--windows", metavar="hard:K", help="Instead of --window: the K hardest windows of the HR image "
            "(the LAM detector on the HR image, non-overlapping, best first), a sub-folder each.")] = None,
        size: Size = D.size, lr: Lr = D.lr, path: PathKind = D.path, sigma: Sigma = D.sigma, fold: Fold = D.fold,
        kernel_size: KernelSize = D.kernel_size, batch_size: BatchSize = D.batch_size, device: Device = D.device,
        value_range: ValueRange = D.value_range, bgr: Bgr = D.bgr,
        program: Annotated[Optional[Path], typer.Option("--program", help="A program from `onnxlam export`.")] = None,
        out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder "
                                                        "(default lam-<model>-<image>-<X>-<Y>).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print result.json on stdout, nothing else.")] = False,
        crop: Crop = D.crop, context: Context = D.context, max_memory: MaxMemory = D.max_memory,
        input_values: Inputs = None,
        noise_tunnel: Annotated[Optional[str], typer.Option(
            "--noise-tunnel", help="smoothgrad, smoothgrad_sq or vargrad: LAM of noisy copies of the LR input, "
            "combined as Captum's NoiseTunnel does; DI of the combined map.")] = None,
        debug: Debug = False, **more):
    """Compute the local attribution map of a window and write the arrays, result.json and pictures.

    With several frames (or a folder of them) or --frame: video LAM, a map per input frame."""
    from dataclasses import replace

    from onnxlam.lam.hard_windows import parse_hard
    from onnxlam.lam.options import LamOptions

    frame = more.get("frame")
    tunnel_values = {k: more[k] for k in ("samples", "stdev", "seed") if more.get(k) is not None}
    video = frame is not None or len(images) > 1 or Path(images[0]).is_dir()
    if video and (noise_tunnel is not None or program is not None or more_windows or input_values
                  or windows_spec is not None):
        raise InputError("video LAM takes one --window and no --windows, --noise-tunnel, --program or --input")
    if video and window is None:
        raise InputError("no window given; pass --window X Y")
    if noise_tunnel is None and tunnel_values:
        raise InputError("--samples, --stdev and --seed belong to the noise tunnel: add --noise-tunnel "
                         "smoothgrad|smoothgrad_sq|vargrad")
    options = LamOptions(size=size, lr=lr, path=path, sigma=sigma, fold=fold, kernel_size=kernel_size,
                         batch_size=batch_size, device=device, value_range=value_range, bgr=bgr, crop=crop,
                         context=context, max_memory=max_memory, inputs=inputs(input_values))
    if video:
        return run_video_lam(model, images, window, frame, options, out_dir=out_dir, as_json=as_json)
    method = "lam"
    if noise_tunnel is not None:
        from onnxlam.methods.registry import method as registered
        from onnxlam.methods.noise_tunnel.options import KINDS

        if noise_tunnel not in KINDS:
            raise InputError(f"unknown noise tunnel {noise_tunnel!r}; choose one of {', '.join(KINDS)}")
        method = noise_tunnel
        options = replace(registered(method).Options(),
                          **{f: getattr(options, f) for f in options.__dataclass_fields__}, **tunnel_values)
    hard = parse_hard(windows_spec) if windows_spec is not None else None
    given_windows = ([window] if window is not None else []) + [pair(w) for w in more_windows]
    run_lam(model, images[0], given_windows, options, program=program, out_dir=out_dir, as_json=as_json,
            method=method, hard=hard)


def run_video_lam(model: str, frames: list[str], window: tuple[int, int], frame: int | None, options=None, *,
                  out_dir: Optional[Path] = None, as_json: bool = False):
    """`onnxlam lam MODEL FRAME0 FRAME1 … [--frame K]` as a function: video LAM (`methods/video/`)."""
    from dataclasses import replace

    from onnxlam.core.files import check_out_dir
    from onnxlam.lam.result import Window
    from onnxlam.methods.registry import method

    m = method("video")
    options = replace(m.Options(), **{f: getattr(options, f) for f in options.__dataclass_fields__}, frame=frame) \
        if options is not None else m.Options(frame=frame)
    options = options.validate()
    first = Path(frames[0])
    first_file = sorted(p for p in first.iterdir() if p.is_file())[0] if first.is_dir() else first
    model = resolve_model(model, str(first_file), options.lr)
    folder = out_dir or m.default_out(model, [str(f) for f in frames], Window(*window, options.size), options)
    check_out_dir(folder)
    loaded = m.open(model, options, frames)
    with progress() as bar:
        task = bar.add_task("video LAM", total=options.fold)
        step = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        (result,) = m.attribute(loaded, frames, [Window(window[0], window[1], options.size)], options, progress=step)
    m.write(result, folder)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        facts(m.title, m.facts(result) + [("written to", str(folder))])
    for note in result.warnings:
        err.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    if result.nan_gradients:
        err.print(f"[yellow]warning:[/] {result.nan_gradients} NaN gradient values were replaced by 0")
    return result


@app.command()
@handled
def export(model: ModelArg,
           size: Annotated[Tuple[int, int], typer.Option("--size", help="H W: the LR input height and width.")],
           output: Annotated[Path, typer.Option("-o", "--output", help="Program file to write.")],
           batch: Annotated[int, typer.Option("--batch", help="Images per run.")] = 1,
           device: Device = D.device, value_range: ValueRange = D.value_range, bgr: Bgr = D.bgr,
           input_values: Inputs = None, debug: Debug = False):
    """Build, verify and write the gradient program for one input shape (for `lam --program`)."""
    from onnxlam.engine.program import build_program
    from onnxlam.core.files import write_atomic
    from onnxlam.graph.model import open_model
    from onnxlam.lam.options import LamOptions

    LamOptions(device=device, value_range=value_range).validate()
    if batch < 1 or min(size) < 1:
        raise InputError("--batch and --size must be positive")
    if output.is_dir():
        raise InputError(f"-o {output} is a folder; name the program file to write")
    source = open_model(resolve_model(model), dict(inputs(input_values)))
    prog = build_program(source, batch, size[0], size[1], value_range, bgr, device=device)
    write_atomic(output, prog.save)
    err.print(f"wrote {output}: input {batch}×{prog.key.channels}×{size[0]}×{size[1]}, scale ×{prog.scale}, "
              f"finite-difference relative error {prog.fd_error:.2e}", highlight=False)


@app.command()
@handled
def inspect(model: ModelArg, as_json: Json = False, input_values: Inputs = None, debug: Debug = False):
    """Describe a model: input/output, dynamic dims, scale, opset, ops, parameters, gradient coverage."""
    from onnxlam.convert.pytorch import is_checkpoint
    from onnxlam.engine.model import Model
    from onnxlam.engine.program import ungradable_ops

    if is_checkpoint(model):
        from onnxlam.cli.convert import inspect_checkpoint

        return inspect_checkpoint(model, as_json)
    analyzer = Model(resolve_model(model), device="cpu", check_ops=False, inputs=inputs(input_values))
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
    missing = data["ops_without_gradient"]
    facts(info.path, [
        ("input", f"{info.input.name}  {info.input.shape_text()}  {info.input.type_name}"),
        ("output", f"{info.output.name}  {info.output.shape_text()}  {info.output.type_name}"),
        ("dynamic", ", ".join(info.dynamic_dims) or "none (fixed shape)"),
        ("scale", f"×{scale}" if isinstance(scale, int) else scale), ("opset", str(info.opset)),
        ("parameters", f"{info.parameters:,}"),
        ("pixels", f"range {info.value_range:g}, {info.channel_order.upper()}"),
        ("ops", ", ".join(f"{k} {v}" for k, v in info.op_histogram.items())),
        ("receptive field", analyzer.receptive_field.describe()),
        ("no gradient rule", ", ".join(missing) if missing else "none: every op is differentiable"),
        ("sha256", info.sha256)])


DEMO_MODEL = "animevideov3-x4"
DEMO_WINDOW = (120, 72)


@app.command()
@handled
def demo(out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("onnxlam-demo"),
         device: Device = D.device, debug: Debug = False):
    """Run `lam` on the bundled model and photograph into ./onnxlam-demo/ and print the summary."""
    from onnxlam.lam.image import bundled_photo
    from onnxlam.lam.options import LamOptions

    run_lam(DEMO_MODEL, str(bundled_photo("chelsea")), [DEMO_WINDOW], LamOptions(device=device), out_dir=out_dir)
    out.print(f"Open {out_dir / 'panel.png'} to see the map.")
