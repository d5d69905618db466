"""The `import-ncnn`, `import-tfjs`, `import-pth` and `models` commands: models into onnxlam."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional, Tuple

import typer

from onnxlam.cli.app import app, err, handled, out
from onnxlam.cli.options import Debug
from onnxlam.core.errors import InputError


@app.command("import-ncnn")
@handled
def import_ncnn(param: Annotated[Path, typer.Argument(help="ncnn .param file.")],
                weights: Annotated[Path, typer.Argument(metavar="BIN", help="ncnn .bin file.")],
                output: Annotated[Path, typer.Option("-o", "--output", help="ONNX file to write.")],
                value_range: Annotated[Optional[float], typer.Option(
                    "--value-range", help="Record the pixel range the network expects (1 or 255).")] = None,
                bgr: Annotated[Optional[bool], typer.Option("--bgr/--rgb", help="Record the channel order.")] = None,
                debug: Debug = False):
    """Convert an ncnn model to ONNX with standard ops (fp16 weights become float32)."""
    import onnx

    from onnxlam.convert.ncnn import convert
    from onnxlam.core.files import write_atomic
    from onnxlam.lam.options import LamOptions

    for f in (param, weights):
        if not f.is_file():
            raise InputError(f"file not found: {f}")
    if output.is_dir():
        raise InputError(f"-o {output} is a folder; name the .onnx file to write")
    LamOptions(value_range=value_range).validate()
    model = convert(param, weights)
    props = {p.key: p.value for p in model.metadata_props}
    if value_range is not None:
        props["onnxlam.value_range"] = f"{value_range:g}"
    if bgr is not None:
        props["onnxlam.channel_order"] = "bgr" if bgr else "rgb"
    props.setdefault("onnxlam.source", f"ncnn:{param.name}")
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    write_atomic(output, lambda tmp: onnx.save(model, tmp))
    err.print(f"wrote {output} ({len(model.graph.node)} nodes)", highlight=False)


@app.command("import-tfjs")
@handled
def import_tfjs(model_json: Annotated[Path, typer.Argument(metavar="MODEL_JSON", help=(
                    "TensorFlow.js layers model.json (its weight shards next to it)."))],
                output: Annotated[Path, typer.Option("-o", "--output", help="ONNX file to write.")],
                value_range: Annotated[Optional[float], typer.Option(
                    "--value-range", help="Record the pixel range the network expects (1 or 255).")] = None,
                debug: Debug = False):
    """Convert a TensorFlow.js Keras layers model to ONNX with standard ops (NHWC becomes NCHW)."""
    import onnx

    from onnxlam.convert.tfjs import convert
    from onnxlam.core.files import write_atomic
    from onnxlam.lam.options import LamOptions

    if not model_json.is_file():
        raise InputError(f"file not found: {model_json}")
    if output.is_dir():
        raise InputError(f"-o {output} is a folder; name the .onnx file to write")
    LamOptions(value_range=value_range).validate()
    model = convert(model_json, value_range=value_range, source=f"tfjs:{model_json.name}")
    write_atomic(output, lambda tmp: onnx.save(model, tmp))
    scale = {p.key: p.value for p in model.metadata_props}["onnxlam.scale"]
    err.print(f"wrote {output} ({len(model.graph.node)} nodes, ×{scale})", highlight=False)


def fetch_model(name: str, tarball: Optional[Path]) -> None:
    """`onnxlam models --fetch NAME [--from TARBALL]`: fetch and convert one TF.js collection model."""
    from onnxlam.convert.collection import fetch

    with err.status(f"fetching {name}") as status:
        def note(text: str) -> None:
            err.print(f"note: {text}", markup=False, highlight=False, soft_wrap=True)
            status.update(text)

        path = fetch(name, tarball=tarball, notify=note)
    out.print(str(path), markup=False, highlight=False, soft_wrap=True)


@app.command()
@handled
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
           fetch: Annotated[Optional[str], typer.Option(
               "--fetch", metavar="NAME", help="Fetch and convert a TF.js model of the collection now "
               "(npm pack; done on first use otherwise).")] = None,
           tarball: Annotated[Optional[Path], typer.Option(
               "--from", metavar="TARBALL", help="With --fetch: the package's tarball (from npm pack) "
               "instead of downloading it.")] = None,
           debug: Debug = False):
    """List the bundled collection of pretrained models (usable by name wherever a model is expected)."""
    from rich.table import Table

    from onnxlam.convert.collection import list_models

    if tarball is not None and fetch is None:
        raise InputError("--from TARBALL goes with --fetch NAME")
    if fetch is not None:
        fetch_model(fetch, tarball)
        return
    entries = list_models()
    if as_json:
        sys.stdout.write(json.dumps([e.to_json() for e in entries], indent=2) + "\n")
        return
    table = Table(title="onnxlam model collection", title_justify="left")
    # the name is what a user types: never cut; the description wraps first
    table.add_column("name", no_wrap=True, min_width=max(len(e.name) for e in entries))
    table.add_column("architecture", ratio=1)  # its details: --json
    for col in ("scale", "params"):
        table.add_column(col, no_wrap=True)
    table.add_column("licence")
    table.add_column("status", no_wrap=True)
    for e in entries:
        table.add_row(e.name, e.architecture.split(" (")[0], f"×{e.scale}", f"{e.params:,}", e.license,
                      "ready" if e.available else "to fetch")
    out.print(table)
    if not all(e.available for e in entries):
        out.print("fetch a model with: onnxlam models --fetch NAME (TF.js models, also done on first use) or "
                  "python scripts/fetch_models.py NAME", highlight=False)


@app.command("import-pth")
@handled
def import_pth(checkpoint: Path = typer.Argument(..., help="PyTorch checkpoint: .pth, .pt, .ckpt or "
                                                 ".safetensors (any architecture spandrel detects)."),
               output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write."),
               size: Optional[Tuple[int, int]] = typer.Option(None, "--size", help="H W: export at this "
                                                              "fixed LR size (default: dynamic height and "
                                                              "width, checked at two sizes)."),
               exporter: str = typer.Option("auto", "--exporter", help="auto (TorchScript, then dynamo), "
                                            "torchscript or dynamo."),
               as_json: bool = typer.Option(False, "--json", help="Print what was exported as JSON on stdout."),
               debug: Debug = False):
    """Convert a PyTorch SR checkpoint to ONNX with its size requirements (padding, crop) baked in."""
    from onnxlam.convert.pytorch import EXPORTERS, export_checkpoint

    if output.is_dir():
        raise InputError(f"-o {output} is a folder; name the .onnx file to write")
    if exporter not in ("auto",) + EXPORTERS:
        raise InputError(f"--exporter must be auto, torchscript or dynamo; got {exporter!r}")
    result = export_checkpoint(checkpoint, output, size=size,
                               exporters=EXPORTERS if exporter == "auto" else (exporter,))
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    info = result.checkpoint
    shape = "dynamic height and width" if result.dynamic else f"fixed LR size {size[0]}×{size[1]}"
    checked = " and ".join(f"{h}×{w}" for h, w in result.checked_sizes)
    err.print(f"wrote {output}: {info.architecture_name} ×{info.scale} ({info.purpose}), {shape}, "
              f"size requirements {info.size_requirements.text()}; {result.exporter} exporter, onnxruntime "
              f"vs PyTorch max |Δ| {result.max_error:.1e} at {checked}", markup=False, highlight=False, soft_wrap=True)
    for note in result.rejected:
        err.print(f"note: not used: {note}", markup=False, highlight=False, soft_wrap=True)


def inspect_checkpoint(model: str, as_json: bool) -> None:
    """`onnxlam inspect CKPT`: what spandrel detects, and how the checkpoint exports (cached)."""
    from onnxlam.cli.app import facts, resolve_model
    from onnxlam.convert.pytorch import describe_checkpoint

    info = describe_checkpoint(model)
    try:
        onnx_path: str | None = resolve_model(model)
        export = f"dynamic height and width: {onnx_path}"
    except InputError as exc:  # fixed size only (needs an image), or no exporter manages it
        onnx_path, export = None, str(exc)
    data = {**info.to_json(), "onnx": onnx_path, "export": export}
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    facts(str(info.path), [("architecture", f"{info.architecture_name} ({info.architecture})"),
            ("purpose", info.purpose), ("scale", f"×{info.scale}"),
            ("channels", f"{info.input_channels} → {info.output_channels}"),
            ("size requirements", info.size_requirements.text()), ("tiling", info.tiling),
            ("tags", ", ".join(info.tags)), ("parameters", f"{info.parameters:,}"),
            ("pixels", f"range {info.value_range:g}, {info.channel_order.upper()}"),
            ("ONNX export", export), ("sha256", info.sha256)])
