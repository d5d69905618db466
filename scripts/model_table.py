"""The diffusion-index table of the model collection, written into exported_models/README.md.

For every available model of the collection (``onnxlam.convert.collection.list_models()``; models not
fetched yet are skipped unless ``--fetch``), the DI of three fixed 16×16 windows on each of the two
bundled photographs (256×256 HR, downsampled by the model's scale per the LAM protocol), with the
paper's settings: progressive-blur path, sigma 1.2, fold 50, kernel 9. One ``onnxlam.Analyzer`` per
model, so each gradient program is built once per LR shape; the three windows of an image share
each forward pass (``Analyzer.run_windows``).

    python scripts/model_table.py                       # compute and rewrite the README table
    python scripts/model_table.py --fetch               # fetch realesrgan-x4plus first, include it
    python scripts/model_table.py --models span-x4 --no-write   # print the rows of one model
    python scripts/model_table.py --results di.json     # keep raw results; reuse rows still valid
    python scripts/model_table.py --skip esrgan-thick-x2 esrgan-thick-x3   # leave models out (said so)

On two CPU cores the five committed models take about 15 minutes together; the fetched
realesrgan-x4plus (16.7 M parameters) about 45 minutes more, so ``--results`` is worth giving.

The table goes between ``<!-- di-table:start -->`` and ``<!-- di-table:end -->`` in the README;
everything outside the markers is left alone. With ``--results FILE`` each model's results are
saved as soon as they are computed and reused on the next run when the model's sha256, the
settings and the windows are unchanged (so an interrupted run resumes, and a large model can be
computed on its own and merged later).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import pathlib
import platform
import subprocess
import sys
import textwrap
import time


REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import onnxlam  # noqa: E402
from onnxlam.convert import collection  # noqa: E402
from onnxlam.graph.model import file_sha256  # noqa: E402

DATA = REPO / "onnxlam" / "data"
README = REPO / "exported_models" / "README.md"
START = "<!-- di-table:start -->"
END = "<!-- di-table:end -->"

# The settings of the table: the paper's defaults.
SIZE = 16
PATH = "blur"
SIGMA = 1.2
FOLD = 50
KERNEL = 9

# The windows, chosen once (top-left column x, row y in SR pixels of the 256×256 output, which is
# also the HR image's pixel grid): for each photograph an edge, a texture and a smooth area.
IMAGES = {"chelsea": DATA / "chelsea.png", "astronaut": DATA / "astronaut.png"}
WINDOWS: dict[str, list[tuple[str, int, int, str]]] = {
    "chelsea": [("edge", 56, 72, "the rim of the left pupil"),
                ("texture", 136, 24, "striped fur of the forehead"),
                ("smooth", 32, 80, "inside the left iris")],
    "astronaut": [("edge", 152, 100, "the contour of cheek and hair on the right"),
                  ("texture", 120, 16, "hair on top of the head"),
                  ("smooth", 200, 60, "the plain background on the right")],
}

def settings() -> dict:
    return {"size": SIZE, "path": PATH, "sigma": SIGMA, "fold": FOLD, "kernel_size": KERNEL,
            "windows": {img: [[kind, x, y] for kind, x, y, _ in ws] for img, ws in WINDOWS.items()}}


def columns() -> list[tuple[str, str, int, int]]:
    """(image, kind, x, y) per DI column, in table order."""
    return [(img, kind, x, y) for img in IMAGES for kind, x, y, _ in WINDOWS[img]]


# --------------------------------------------------------------------------- computing the rows
def model_row(entry, device: str, log) -> dict:
    """DI of every column for one collection model, with the facts the table and JSON record."""
    start = time.perf_counter()
    analyzer = onnxlam.Analyzer(entry.path, device=device)
    row = {"name": entry.name, "scale": entry.scale, "params": entry.params, "sha256": analyzer.info.sha256,
           "fetch": entry.fetch, "settings": settings(), "di": {}, "gini": {}, "completeness": {},
           "nan_gradients": {}, "lr_size": {}, "seconds": {}, "note": None}
    for img, path in IMAGES.items():
        wins = [(x, y) for _, x, y, _ in WINDOWS[img]]
        t = time.perf_counter()
        results = analyzer.run_windows(path, wins, size=SIZE, path=PATH, sigma=SIGMA, fold=FOLD,
                                       kernel_size=KERNEL)
        for (kind, x, y, _), r in zip(WINDOWS[img], results):
            key = f"{img}/{kind}"
            row["di"][key] = r.di
            row["gini"][key] = r.gini
            row["completeness"][key] = [r.completeness.attribution_sum, r.completeness.objective_delta]
            row["nan_gradients"][key] = r.nan_gradients
            row["lr_size"][img] = list(r.lr_size)
            row["provider"] = r.provider
        row["seconds"][img] = round(time.perf_counter() - t, 1)
        log(f"  {entry.name} {img}: " + ", ".join(f"{k} {r.di:.3f}" for (k, *_), r in zip(WINDOWS[img], results))
            + f"  ({row['seconds'][img]:.0f} s, LR {results[0].lr_size[1]}×{results[0].lr_size[0]}, "
            f"batch {results[0].batch_size})")
    row["total_seconds"] = round(time.perf_counter() - start, 1)
    return row


def fetch_missing(entries, log) -> None:
    names = [e.name for e in entries if not e.available and e.fetch]
    if not names:
        return
    log(f"fetching {', '.join(names)} (scripts/fetch_models.py)")
    subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_models.py"), *names], check=True)


# --------------------------------------------------------------------------- the markdown
def _runtime_line(rows: list[dict]) -> str:
    import onnx_ad
    import onnxruntime

    providers = sorted({r.get("provider", "?") for r in rows})
    return (f"onnxlam {onnxlam.__version__}, onnx-ad {onnx_ad.__version__}, onnxruntime "
            f"{onnxruntime.__version__} ({', '.join(providers)}), Python {platform.python_version()}")


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width=92, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def render(rows: list[dict], date: str, skipped: list[str] = (), unfetched: list[str] = (),
           fetched: bool = False) -> str:
    cols = columns()
    header = ["model", "scale", "params"] + [f"{img} {kind} ({x}, {y})" for img, kind, x, y in cols]
    lines = [START,
             "<!-- generated by scripts/model_table.py: edit the script, not this section -->",
             "",
             "## Diffusion index on the bundled photographs",
             ""]
    lines += _wrap("DI = (1 − Gini)·100 of the local attribution map: higher means the network draws on "
                   "more input pixels. Each photograph (`onnxlam/data/*.png`, 256×256) is the HR image, "
                   "downsampled by the model's scale with Pillow's bicubic (LR 128×128 for ×2, 64×64 for ×4), "
                   "so every model reconstructs the same 256×256 output and a window is the same output "
                   f"pixels for every model. Window {SIZE}×{SIZE}, progressive-blur path, sigma {SIGMA:g}, "
                   f"fold {FOLD}, kernel {KERNEL}.")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    notes = []
    for row in rows:
        name = f"`{row['name']}`"
        if row.get("fetch"):
            name += " (fetched)"
        if row.get("note"):
            notes.append(row["note"])
            name += f" [{len(notes)}]"
        cells = [name, f"×{row['scale']}", f"{row['params']:,}"]
        cells += [f"{row['di'][f'{img}/{kind}']:.2f}" for img, kind, _, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Windows (top-left column x, row y of the 16×16 window in the 256×256 output):", ""]
    for img in IMAGES:
        lines += _wrap(f"* {img}: " + "; ".join(f"{kind} ({x}, {y}), {where}" for kind, x, y, where in WINDOWS[img]),
                       indent="  ")
    lines.append("")
    for i, note in enumerate(notes, 1):
        lines += _wrap(f"[{i}] {note[:1].upper()}{note[1:]}.") + [""]
    if skipped:
        lines += _wrap("Not tabulated (each takes tens of minutes on two CPU cores; run the script with "
                       f"`--models NAME --results FILE` to add one): {', '.join(f'`{n}`' for n in skipped)}.") + [""]
    if unfetched:
        lines += _wrap("Not fetched on the machine that computed the table (`--fetch` includes them): "
                       f"{', '.join(f'`{n}`' for n in unfetched)}.") + [""]
    lines += _wrap(f"Computed {date} with {_runtime_line(rows)}, by `python scripts/model_table.py"
                   + (" --fetch" if fetched else "")
                   + (f" --skip {' '.join(skipped)}" if skipped else "") + "`.")
    lines.append(END)
    return "\n".join(lines)


def rewrite(readme: pathlib.Path, block: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{readme}: needs exactly one '{START}' … '{END}' pair")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(before + block + after, encoding="utf-8")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fetch", action="store_true", help="fetch the fetch-on-demand models first and include them")
    ap.add_argument("--models", nargs="+", metavar="NAME", help="compute only these models; the README is "
                    "rewritten only when --results holds every other available model")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    ap.add_argument("--readme", type=pathlib.Path, default=README)
    ap.add_argument("--results", type=pathlib.Path, help="JSON file of raw results: read, reused where valid, "
                    "updated after each model")
    ap.add_argument("--recompute", action="store_true", help="recompute the rows of --models (default: all) "
                    "even where --results holds valid ones")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave the README alone")
    ap.add_argument("--skip", nargs="+", metavar="NAME", default=[],
                    help="leave these models out of the table (its footer names them)")
    args = ap.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    entries = collection.list_models()
    known = {e.name for e in entries}
    for name in args.skip:
        if name not in known:
            ap.error(f"unknown model {name} in --skip; the collection has {', '.join(sorted(known))}")
    entries = [e for e in entries if e.name not in args.skip]
    if args.models:
        unknown = set(args.models) - known
        if unknown:
            ap.error(f"unknown model(s) {', '.join(sorted(unknown))}; the collection has {', '.join(sorted(known))}")
    if args.fetch:
        fetch_missing([e for e in entries if not args.models or e.name in args.models], log)
        entries = [e for e in collection.list_models() if e.name not in args.skip]

    saved: dict = {}
    if args.results and args.results.is_file():
        saved = json.loads(args.results.read_text(encoding="utf-8")).get("rows", {})

    rows = []
    for entry in entries:
        if not entry.available:
            log(f"{entry.name}: not fetched, skipped (python scripts/fetch_models.py {entry.name}, or --fetch)")
            continue
        wanted = not args.models or entry.name in args.models
        old = saved.get(entry.name)
        valid = old and old.get("sha256") == file_sha256(entry.path) and old.get("settings") == settings()
        if valid and not (args.recompute and wanted):
            log(f"{entry.name}: reusing the saved results")
            rows.append(old)
            continue
        if not wanted:
            continue
        log(f"{entry.name} (×{entry.scale}, {entry.params:,} parameters)")
        row = model_row(entry, args.device, log)
        rows.append(row)
        if args.results:
            saved[entry.name] = row
            args.results.write_text(json.dumps({"rows": saved}, indent=1) + "\n", encoding="utf-8")

    if not rows:
        log("no model to tabulate")
        return 1
    date = _dt.date.today().isoformat()
    unfetched = [e.name for e in entries if not e.available]
    block = render(rows, date, args.skip, unfetched, args.fetch)
    print(block)
    complete = {r["name"] for r in rows} == {e.name for e in entries if e.available}
    if args.no_write:
        return 0
    if not complete:
        log("not every available model has a row (use --results to merge runs): README left alone")
        return 0
    rewrite(args.readme, block)
    log(f"wrote the table into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
