"""`onnxlam import-pth` and `onnxlam inspect CKPT`: PyTorch checkpoints (see `convert/pytorch.py`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Tuple

import typer
from rich.markup import escape
from rich.table import Table

from .cli import DEBUG, app, err, handled, out
from .errors import InputError


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
               debug: bool = DEBUG):
    """Convert a PyTorch SR checkpoint to ONNX with its size requirements (padding, crop) baked in."""
    from .convert.pytorch import EXPORTERS, export_checkpoint

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
    from .cli import _resolve_model
    from .convert.pytorch import describe_checkpoint

    info = describe_checkpoint(model)
    try:
        onnx_path: str | None = _resolve_model(model)
        export = f"dynamic height and width: {onnx_path}"
    except InputError as exc:  # fixed size only (needs an image), or no exporter manages it
        onnx_path, export = None, str(exc)
    data = {**info.to_json(), "onnx": onnx_path, "export": export}
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    table = Table(title=f"{info.path}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [("architecture", f"{info.architecture_name} ({info.architecture})"),
            ("purpose", info.purpose), ("scale", f"×{info.scale}"),
            ("channels", f"{info.input_channels} → {info.output_channels}"),
            ("size requirements", info.size_requirements.text()), ("tiling", info.tiling),
            ("tags", ", ".join(info.tags)), ("parameters", f"{info.parameters:,}"),
            ("pixels", f"range {info.value_range:g}, {info.channel_order.upper()}"),
            ("ONNX export", export), ("sha256", info.sha256)]
    for k, v in rows:
        table.add_row(k, escape(v))
    out.print(table)
