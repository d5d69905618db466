"""`onnxlam cem`: causal effect maps (onnxlam/methods/cem.py) from the command line."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Tuple

import typer

from onnxlam.cli.app import app, err, handled, out, progress as _progress, resolve_model as _resolve_model
from onnxlam.cli.options import D, Debug, Device, MaxMemory


def _summary(result, folder: Path):
    from rich.table import Table

    table = Table(title="Causal effect map", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    s, p, r = result.summary, result.params, result.roi
    rows = [("ROI", f"x={r.x} y={r.y} size={r.size}"),
            ("reference PSNR", f"{result.reference_psnr:.3f} dB"),
            ("blocks", f"{s.positive} positive, {s.negative} negative, {s.neutral} neutral "
                       f"(+ {s.roi_blocks} in the ROI); {int(result.refined.sum())} refined"),
            ("effect range", f"{s.effect_range:.2f} dB  (min {s.minimum:.3f} at {s.argmin}, "
                             f"max {s.maximum:.3f} at {s.argmax})"),
            ("parameters", f"{p.task}  block {p.block} (input {result.block_input})  samples {p.samples}  "
                           f"refine {p.refine}  tol {p.tol:g}  seed {p.seed}"),
            ("provider", f"{result.provider}  (batch {result.batch_size}, {result.forward_passes} forward passes)"),
            ("crop", "none (the whole input)" if result.crop is None else
             "LR rows {0}–{2}, cols {1}–{3} (the ROI's receptive field)".format(*result.crop["box"][:2],
                                                                                result.crop["box"][2] - 1,
                                                                                result.crop["box"][3] - 1)),
            ("seconds", f"{result.seconds:.2f}"),
            ("written to", str(folder))]
    for k, v in rows:
        table.add_row(k, v)
    return table


@app.command()
@handled
def cem(model: str = typer.Argument(..., help="ONNX model file (or a collection name, see `onnxlam models`)."),
        image: str = typer.Argument(..., help="The clean image: the ground truth (SR: downsampled bicubic "
                                    "×1/scale for the input; DN: noised)."),
        roi: Tuple[int, int] = typer.Option(..., "--roi", help="X Y: top-left column and row of the region of "
                                            "interest in output pixels."),
        size: int = typer.Option(32, "--size", help="ROI side in output pixels."),
        block: int = typer.Option(8, "--block", help="Block side in output pixels (block // scale input px)."),
        samples: int = typer.Option(3, "--samples", help="Coarse interventions per block."),
        refine: int = typer.Option(50, "--refine", help="Interventions per refined block (0: no refinement)."),
        tol: float = typer.Option(0.01, "--tol", help="Tolerance in dB: refinement threshold, and |CE| below it "
                                  "is 0."),
        patches: Optional[Path] = typer.Option(None, "--patches", help="Folder of images to cut the patch bank "
                                               "from (default: the bundled photographs)."),
        bank_size: int = typer.Option(10_000, "--bank-size", help="Patches in the bank."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bank, the draws and the DN noise."),
        task: str = typer.Option("auto", "--task", help="sr, dn, or auto (sr for scale > 1, else dn)."),
        noise: float = typer.Option(50.0, "--noise", help="DN noise σ in grey levels."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Interventions per run (default: as "
                                                 "many as the memory limit allows, up to 16 on the CPU)."),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder "
                                               "(default cem-<model>-<image>-<X>-<Y>)."),
        as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout, nothing else."),
        crop: bool = typer.Option(True, "--crop/--no-crop", help="Run a local network only on the LR crop the "
                                  "ROI depends on (exact; the default)."),
        max_memory: MaxMemory = D.max_memory,
        device: Device = D.device,
        debug: Debug = False):
    """Causal effect map of an output region: effect.npy, result.json, cem.png and panel.png."""
    from onnxlam.methods.cem import CemRunner, write_result
    from onnxlam.render.outputs import check_out_dir

    model = _resolve_model(model)
    folder = out_dir or Path(f"cem-{Path(model).stem}-{Path(image).stem}-{roi[0]}-{roi[1]}")
    check_out_dir(folder)
    runner = CemRunner(model, device=device, max_memory=max_memory, batch_size=batch_size)
    with _progress() as progress:
        bar = progress.add_task("CEM", total=1)
        result = runner.run(image, roi, size, block=block, samples=samples, refine=refine, tol=tol, task=task,
                            patches=patches, bank_size=bank_size, seed=seed, noise=noise, crop=crop,
                            progress=lambda done, total: progress.update(bar, completed=done, total=total))
    write_result(result, folder)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.print(_summary(result, folder))
    for note in result.warnings:
        err.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
