"""The aggregate files of a report, results.csv, results.json and index.html, rewritten from its rows,
each atomically, and how often while it runs."""
from __future__ import annotations

import csv
import io
import json
import time

from onnxlam.batch.report.html import render_html
from onnxlam.batch.report.store import Report, csv_columns, results_json
from onnxlam.core.files import write_atomic


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
    write_atomic(out / "index.html", render_html(report))
