"""Command line of the methods beyond LAM (`onnxlam/methods/`): `erf`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from rich.table import Table

from .cli import BGR, DEBUG, DEVICE, LR, VALUE_RANGE, _progress, _resolve_model, app, handled, out


@app.command()
@handled
def erf(model: str = typer.Argument(..., help="ONNX model file or collection name."),
        images: List[str] = typer.Argument(..., help="HR images (downsampled per the LAM protocol; LR with "
                                           "--lr), all of one size: the ERF is averaged over them."),
        pixel: Optional[Tuple[int, int]] = typer.Option(None, "--pixel", help="X Y: top-left column and row of "
                                                        "the output window in SR pixels (default: the centre)."),
        size: int = typer.Option(1, "--size", help="Window side in SR pixels (1: one output pixel)."),
        lr: bool = LR,
        device: str = DEVICE, value_range: Optional[float] = VALUE_RANGE, bgr: Optional[bool] = BGR,
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default erf-<model>)."),
        as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout, nothing else."),
        debug: bool = DEBUG):
    """Effective receptive field: |∂ output window / ∂ input| averaged over images (erf.npy, result.json,
    erf.png), with the radii holding 50/90/99% of it next to the static receptive field."""
    from .analysis import Analyzer
    from .methods.erf import effective_receptive_field, write_erf
    from .outputs import check_out_dir

    model = _resolve_model(model)
    folder = out_dir or Path(f"erf-{Path(model).stem}")
    check_out_dir(folder)
    analyzer = Analyzer(model, device=device, value_range=value_range, bgr=bgr)
    with _progress() as progress:
        task = progress.add_task("ERF", total=len(images))
        result = effective_receptive_field(analyzer, images, pixel, size, lr=lr,
                                           progress=lambda done, total: progress.update(task, completed=done))
    write_erf(result, folder)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
        return
    table = Table(title="Effective receptive field", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    w, r, p = result.window, result.radii, result.pixels
    static = ("global" if result.static_radius is None else
              f"radius {result.static_radius:.2f} LR px, box {result.to_json()['static_pixels']} px")
    for k, v in [("window", f"x={w.x} y={w.y} size={w.size}  (LR centre {result.centre[0]:.2f}, "
                            f"{result.centre[1]:.2f})"),
                 ("images", str(len(result.images))),
                 ("radius 50/90/99%", f"{r['50']:.2f} / {r['90']:.2f} / {r['99']:.2f} LR px"),
                 ("pixels 50/90/99%", f"{p['50']} / {p['90']} / {p['99']}"),
                 ("static receptive field", static),
                 ("provider", result.provider), ("seconds", f"{result.seconds:.2f}"),
                 ("written to", str(folder))]:
        table.add_row(k, v)
    out.print(table)
