"""The commands of the registered methods: `onnxlam NAME MODEL IMAGE --window X Y` for every method
without a command of its own (CEM, the noise tunnel's combinations, any method registered later), its
flags made from the method's Options; and `erf`, whose input is many images."""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from onnxlam.cli.app import app, err, facts, handled, pair, progress as _progress, resolve_model as _resolve_model
from onnxlam.cli.options import Debug, Inputs, inputs, option_parameters, with_options
from onnxlam.methods import registry

ModelArg = Annotated[str, typer.Argument(help="ONNX model file (or a collection name, see `onnxlam models`).")]
OutDir = Annotated[Optional[Path], typer.Option("--out", help="Output folder (default NAME-<model>-<image>-<X>-<Y>).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print result.json on stdout, nothing else.")]


def run_method(name: str, model: str, image, windows: list[tuple[int, int]], values: dict, *,
               out_dir: Optional[Path] = None, as_json: bool = False) -> list:
    """`onnxlam NAME` as a function: the method's results for the windows, written into one folder
    (a sub-folder per window for several), the summary (or result.json) printed."""
    from onnxlam.convert.pytorch import is_checkpoint
    from onnxlam.core.files import check_out_dir
    from onnxlam.lam.result import Window

    m = registry.method(name)
    options = m.options(**values)
    path = _resolve_model(model, str(image[0] if isinstance(image, list) else image), getattr(options, "lr", False))
    size = getattr(options, "size", Window(0, 0).size)
    wins = [Window(int(x), int(y), int(size)) for x, y in windows]
    folder = out_dir or m.default_out(model if is_checkpoint(model) else path, image[0] if isinstance(image, list)
                                      else image, wins[0], options)
    check_out_dir(folder)
    loaded = m.open(path, options, image)
    with _progress() as bar:
        task = bar.add_task(m.name, total=None)
        results = m.attribute(loaded, image, wins, options,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    m.write_all(results, folder)
    if as_json:
        data = [r.to_json() for r in results]
        sys.stdout.write(json.dumps(data[0] if len(data) == 1 else data, indent=2) + "\n")
    else:
        for r in results:
            where = folder if len(results) == 1 else folder / f"window-{r.window.x}-{r.window.y}-{r.window.size}"
            facts(m.title, m.facts(r) + [("written to", str(where))])
    for note in dict.fromkeys(n for r in results for n in getattr(r, "warnings", ())):
        err.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    return results


def method_command(m) -> None:
    """Register `onnxlam NAME` for method `m`: MODEL, IMAGE (frames: FRAME…), --window X Y (repeatable),
    --out, --json, --input, and one flag per option of `m.Options`."""
    image_help = ("The frames in order, or one folder of them." if m.frames else
                  "The image (HR unless the method's --lr says otherwise).")
    own = [("model", ModelArg, inspect.Parameter.empty),
           ("image", Annotated[List[str] if m.frames else str, typer.Argument(help=image_help)],
            inspect.Parameter.empty),
           ("window", Annotated[Tuple[int, int], typer.Option(
               *m.window_flags, help="X Y: top-left column and row of the window in output pixels. Repeat for "
               "several windows: a sub-folder each.")], inspect.Parameter.empty),
           ("more_windows", Annotated[List[str], typer.Option("--more-window", hidden=True)], []),
           ("out_dir", OutDir, None), ("as_json", AsJson, False), ("input_values", Inputs, None),
           ("debug", Debug, False)]
    parameters = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
                  for name, kind, default in own]

    @with_options(parameters, option_parameters(m.Options))
    def command(**values):
        model, image, window = values.pop("model"), values.pop("image"), values.pop("window")
        more, out_dir, as_json = values.pop("more_windows"), values.pop("out_dir"), values.pop("as_json")
        input_values = values.pop("input_values")
        values.pop("debug")
        if input_values:
            values["inputs"] = dict(inputs(input_values))
        run_method(m.name, model, list(image) if m.frames else image, [window] + [pair(w) for w in more or []],
                   values, out_dir=out_dir, as_json=as_json)

    command.__name__ = m.name
    command.__doc__ = m.help or m.title
    app.command(name=m.name, help=m.help or m.title)(handled(command))


for _method in registry.methods():
    if _method.command:
        method_command(_method)


@app.command()
@handled
@with_options(option_parameters(registry.method("erf").Options))
def erf(model: ModelArg,
        images: Annotated[List[str], typer.Argument(help="HR images (downsampled per the LAM protocol; LR with "
                                                    "--lr), all of one size: the ERF is averaged over them.")],
        pixel: Annotated[Optional[Tuple[int, int]], typer.Option(
            "--pixel", help="X Y: top-left column and row of the output window in SR pixels (default: the "
            "centre).")] = None,
        out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default erf-<model>).")] = None,
        as_json: AsJson = False, debug: Debug = False, **values):
    """Effective receptive field: |∂ output window / ∂ input| averaged over images (erf.npy, result.json,
    erf.png), with the radii holding 50/90/99% of it next to the static receptive field."""
    from onnxlam.core.files import check_out_dir
    from onnxlam.lam.result import Window

    m = registry.method("erf")
    options = m.options(**values)
    model = _resolve_model(model)
    folder = out_dir or Path(f"erf-{Path(model).stem}")
    check_out_dir(folder)
    loaded = m.open(model, options, images)
    with _progress() as progress:
        task = progress.add_task("ERF", total=len(images))
        window = None if pixel is None else Window(pixel[0], pixel[1], options.size)
        (result,) = m.attribute(loaded, list(images), [window], options,
                                progress=lambda done, total: progress.update(task, completed=done))
    m.write(result, folder)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
        return
    facts(m.title, m.facts(result) + [("written to", str(folder))])

