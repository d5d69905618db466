"""The aggregate files of a report, results.csv, results.json and index.html, rewritten from its rows,
each atomically, and how often while it runs."""
from __future__ import annotations

import csv
import io
import json
import math
import time

from onnxlam.batch.report.config import stem
from onnxlam.batch.report.dataset import Dataset, dataset
from onnxlam.batch.report.html import render_html
from onnxlam.batch.report.store import Report, csv_columns, results_json
from onnxlam.core.files import write_atomic

FINDING = "finding.png"


class AggregateWriter:
    """Rewrites of results.csv/json and index.html while a report runs: at most every `every` seconds,
    and never more than `share` of the time (a rewrite costs in proportion to the rows, 1.8 s at
    10,000: rewritten after every case, a large report spent most of its time on them)."""

    def __init__(self, every: float = 2.0, share: float = 0.1):
        self.every, self.share = every, share
        self.last, self.cost = time.monotonic(), 0.0

    def maybe(self, report: Report) -> None:
        if time.monotonic() - self.last > max(self.every, self.cost / self.share):
            self.now(report)

    def now(self, report: Report) -> None:
        start = time.monotonic()
        write_aggregates(report)
        self.last = time.monotonic()
        self.cost = self.last - start


def write_aggregates(report: Report) -> None:
    """Rewrite results.csv, results.json and index.html from the report's rows (each atomically)."""
    out, options = report.out, report.config.options
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns())
    for row in report.rows:
        writer.writerow(row.csv_values(options))
    write_atomic(out / "results.csv", buffer.getvalue())
    write_atomic(out / "results.json", json.dumps(results_json(report), indent=2) + "\n")
    level = dataset(report.rows, report.config.methods)
    if level.method is not None:  # a report without DI (CEM alone) has no finding to draw
        write_atomic(out / FINDING, finding_png(level))
    write_atomic(out / "index.html", render_html(report))


def finding_png(level: Dataset) -> bytes:
    """finding.png: each model's mean DI (its bootstrap interval as a bar) against its mean PSNR, with
    Spearman's rho and its interval in the title, as the LAM paper's figure."""
    from onnxlam.render import pictures
    from onnxlam.render.scatter import Point, scatter

    points = [Point(m.psnr, m.di.mean, m.di.low, m.di.high, stem(m.name)) for m in level.models
              if m.psnr is not None]
    rho = level.spearman
    if rho is not None and math.isfinite(rho.mean):
        title = f"DI against PSNR: Spearman rho = {rho.text(2)} (95% bootstrap, images resampled)"
    else:
        title = f"DI against PSNR: no Spearman rho ({level.reason or 'every model ties'})"
    picture = scatter(points, title, "PSNR (dB, Y channel)", "mean DI [95% interval]",
                      empty="no PSNR: with LR inputs there is no HR image")
    return pictures.png_bytes(picture)
