"""The `import-ncnn` and `models` commands: models into onnxlam."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxlam.cli.app import app, err, handled, out
from onnxlam.cli.options import Debug
from onnxlam.errors import InputError


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
    from onnxlam.files import write_atomic
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


@app.command()
@handled
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
           debug: Debug = False):
    """List the bundled collection of pretrained models (usable by name wherever a model is expected)."""
    from rich.table import Table

    from onnxlam.convert.collection import list_models

    entries = list_models()
    if as_json:
        sys.stdout.write(json.dumps([e.to_json() for e in entries], indent=2) + "\n")
        return
    table = Table(title="onnxlam model collection", title_justify="left")
    for col in ("name", "architecture", "scale", "params", "licence", "status"):
        table.add_column(col)
    for e in entries:
        status = "ready" if e.available else "fetch: python scripts/fetch_models.py " + e.name
        table.add_row(e.name, e.architecture, f"×{e.scale}", f"{e.params:,}", e.license, status)
    out.print(table)
