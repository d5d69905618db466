"""The commands of the methods beyond LAM (`onnxlam/methods/`): `cem` (causal effect maps) and `erf`
(effective receptive field). The noise tunnel is an option of `lam`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from onnxlam.cli.app import app, err, facts, handled, progress as _progress, resolve_model as _resolve_model
from onnxlam.cli.options import D, Bgr, Debug, Device, Lr, MaxMemory, ValueRange


def _summary(result, folder: Path) -> list[tuple[str, str]]:
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
    return rows


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
        facts("Causal effect map", _summary(result, folder))
    for note in result.warnings:
        err.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)


@app.command()
@handled
def erf(model: str = typer.Argument(..., help="ONNX model file or collection name."),
        images: List[str] = typer.Argument(..., help="HR images (downsampled per the LAM protocol; LR with "
                                           "--lr), all of one size: the ERF is averaged over them."),
        pixel: Optional[Tuple[int, int]] = typer.Option(None, "--pixel", help="X Y: top-left column and row of "
                                                        "the output window in SR pixels (default: the centre)."),
        size: int = typer.Option(1, "--size", help="Window side in SR pixels (1: one output pixel)."),
        lr: Lr = D.lr, device: Device = D.device, value_range: ValueRange = D.value_range, bgr: Bgr = D.bgr,
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default erf-<model>)."),
        as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout, nothing else."),
        debug: Debug = False):
    """Effective receptive field: |∂ output window / ∂ input| averaged over images (erf.npy, result.json,
    erf.png), with the radii holding 50/90/99% of it next to the static receptive field."""
    from onnxlam.engine.analyzer import Analyzer
    from onnxlam.methods.erf import effective_receptive_field, write_erf
    from onnxlam.render.outputs import check_out_dir

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
    w, r, p = result.window, result.radii, result.pixels
    static = ("global" if result.static_radius is None else
              f"radius {result.static_radius:.2f} LR px, box {result.to_json()['static_pixels']} px")
    facts("Effective receptive field", [("window", f"x={w.x} y={w.y} size={w.size}  (LR centre {result.centre[0]:.2f}, "
                            f"{result.centre[1]:.2f})"),
                 ("images", str(len(result.images))),
                 ("radius 50/90/99%", f"{r['50']:.2f} / {r['90']:.2f} / {r['99']:.2f} LR px"),
                 ("pixels 50/90/99%", f"{p['50']} / {p['90']} / {p['99']}"),
                 ("static receptive field", static),
                 ("provider", result.provider), ("seconds", f"{result.seconds:.2f}"),
                 ("written to", str(folder))])
