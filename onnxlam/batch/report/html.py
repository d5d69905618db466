"""index.html: a page that needs no network (its thumbnails link to the case folders beside it) with the summary per model and method, the
distribution of each method's distribution column (DI) per model and method as inline SVG, and a
sortable case table with each case's picture (its method's `picture_file`). Columns and pictures come
from the methods (`Method.columns`), so every registered method shows as its own declaration says."""
from __future__ import annotations

import html
import math
import statistics
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from onnxlam.batch.report.config import stem
from onnxlam.batch.report.store import CaseRow, ModelSummary, Report, report_columns, summary_heads
from onnxlam.core.version import __version__
from onnxlam.methods import registry
from onnxlam.render.text import fmt as _fmt


# ------------------------------------------------------------------------------------------------
# index.html: one self-contained page (no network), every user string escaped
# ------------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555;margin:0 0 12px}.meta code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse}th,td{padding:4px 8px;border-bottom:1px solid #e3e3e3;text-align:left;
vertical-align:middle}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
#cases th{cursor:pointer;user-select:none;position:sticky;top:0;background:#fafafa}
#cases th:hover{background:#eee}#cases th .arrow{color:#999;font-size:11px}
#cases img{height:72px;display:block}
td.name{white-space:nowrap;max-width:260px;overflow:hidden;text-overflow:ellipsis}
tr.failed td{background:#fff2f2}.status-failed{color:#b00020;font-weight:600}.status-pending{color:#a60}
.msg{max-width:420px;white-space:normal;color:#b00020;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot{border:1px solid #e3e3e3;border-radius:6px;padding:8px}
.plot h3{font-size:13px;margin:0 0 4px;max-width:420px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
svg text{font:11px system-ui,sans-serif;fill:#444}
.wrap{overflow-x:auto}input#filter{margin:0 0 8px;padding:4px 8px;width:320px;font:inherit}
"""

_JS = """
(function(){
  var table=document.getElementById('cases'); if(!table) return;
  var body=table.tBodies[0], heads=table.tHead.rows[0].cells, state={col:-1,dir:1};
  function key(row,col){var c=row.cells[col], v=c.getAttribute('data-v'); if(v===null) v=c.textContent;
    var f=parseFloat(v); return (v!=='' && !isNaN(f) && isFinite(v)) ? [0,f] : [v==='' ? 2 : 1, v.toLowerCase()];}
  function sortBy(col){
    state.dir = (state.col===col) ? -state.dir : 1; state.col=col;
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a,col), y=key(b,col);
      if(x[0]!==y[0]) return x[0]-y[0];
      return (x[1]<y[1] ? -1 : x[1]>y[1] ? 1 : 0)*state.dir;});
    rows.forEach(function(r){body.appendChild(r);});
    for(var i=0;i<heads.length;i++){var a=heads[i].querySelector('.arrow');
      if(a) a.textContent = i===col ? (state.dir>0 ? ' \\u25B2' : ' \\u25BC') : '';}
  }
  for(var i=0;i<heads.length;i++){(function(i){ if(heads[i].hasAttribute('data-nosort')) return;
    heads[i].addEventListener('click',function(){sortBy(i);});})(i);}
  var filter=document.getElementById('filter');
  if(filter) filter.addEventListener('input',function(){var q=filter.value.toLowerCase();
    Array.prototype.forEach.call(body.rows,function(r){
      r.style.display = r.textContent.toLowerCase().indexOf(q)>=0 ? '' : 'none';});});
})();
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _href(relative: str) -> str:
    """A relative URL to a file inside the report folder, percent-encoded and HTML-escaped."""
    return _e(quote(relative, safe="/"))


def render_html(report: Report) -> str:
    """index.html: summary per model, distributions per model (inline SVG), sortable case table."""
    o, methods = report.config.options, report.config.methods
    summaries = report.summaries()
    columns = report_columns(methods)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>onnxlam report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>Local attribution maps: report</h1>",
             f'<p class="meta">{len(report.rows)} cases · {report.failed} failed · {report.pending} pending · '
             f"method{'s' if len(methods) > 1 else ''} <code>{_e(', '.join(methods))}</code> · "
             f"path <code>{_e(o.path)}</code> · sigma {_e(f'{o.sigma:g}')} · fold {o.fold} · "
             f"kernel {o.kernel_size}{' · LR input' if o.lr else ''} · onnxlam {_e(__version__)} · "
             + (f"started {_e(report.started)}</p>" if report.first_started in ("", report.started) else
                f"first started {_e(report.first_started)} · this run {_e(report.started)}</p>"),
             '<p class="meta">Files: <a href="results.csv">results.csv</a> · '
             '<a href="results.json">results.json</a>. DI: diffusion index (higher: more input pixels '
             "contribute). Range: LR pixels holding 50/90/99% of the attribution, and the radius (LR pixels) "
             "around the window centre holding 90%.</p>",
             '<p class="meta">PSNR/SSIM: the SR output against the HR image, on Y (BT.601), border crop = scale, '
             "as SR papers report them"
             + (" — none here: with LR inputs (--lr) there is no HR image to compare with.</p>" if o.lr else ".</p>"),
             '<p class="meta">' + " · ".join(f"<code>{_e(m)}</code>: {_e(registry.method(m).help)}" for m in methods)
             + "</p>"]
    parts += _summary_table(summaries, columns)
    parts += _dataset_section(report)
    parts += _distributions(summaries, columns)
    parts += _case_table(report.rows, columns)
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def _dataset_section(report: Report) -> list[str]:
    """finding.png (DI against PSNR per model) beside the per-model table of the dataset level."""
    from onnxlam.batch.report.dataset import dataset  # lazily: numpy

    level = dataset(report.rows, report.config.methods)
    if level.method is None:
        return []
    rho = level.spearman
    said = (f"Spearman's ρ between mean DI and mean PSNR: {_e(rho.text(2))} (95% bootstrap interval, "
            f"{level.resamples} resamples of the images, seed {level.seed})" if rho is not None
            else f"No Spearman's ρ: {_e(level.reason)}")
    lines = [f"<h2>Dataset: DI against PSNR ({_e(level.method)})</h2>", f'<p class="meta">{said}.</p>',
             '<div class="plots"><div class="plot"><a href="finding.png"><img src="finding.png" '
             'alt="mean DI against PSNR per model" width="640"></a></div><div class="plot">'
             '<table id="dataset"><thead><tr><th>model</th><th class=n>windows</th><th class=n>images</th>'
             "<th class=n>mean DI [95% interval]</th><th class=n>PSNR (dB)</th><th class=n>SSIM</th></tr>"
             "</thead><tbody>"]
    for m in level.models:
        lines.append(f'<tr><td class="name" title="{_e(m.name)}">{_e(stem(m.name))}</td>'
                     f"<td class=n>{m.windows}</td><td class=n>{m.images}</td><td class=n>{_e(m.di.text(2))}</td>"
                     f"<td class=n>{_fmt(m.psnr)}</td><td class=n>{_fmt(m.ssim, 4)}</td></tr>")
    lines.append("</tbody></table></div></div>")
    return lines


def _distributions(summaries: Sequence[ModelSummary], columns) -> list[str]:
    """One histogram per model, method and distribution column, on an axis shared per column."""
    parts = []
    for c in (c for c in columns if c.summary == "distribution"):
        lo, hi = _axis_range([v for s in summaries for v in dict(s.values).get(c.name, ())])
        parts.append(f"<h2>{_e(c.title)} distribution per model</h2><div class=\"plots\">")
        for s in summaries:
            if c.name not in dict(s.values):
                continue
            title = s.model if s.method == registry.DEFAULT else f"{s.model} · {s.method}"
            parts.append(f'<div class="plot"><h3 title="{_e(title)}">{_e(title)}</h3>'
                         f"{_histogram_svg(dict(s.values)[c.name], lo, hi, c.title)}</div>")
        parts.append("</div>")
    return parts


def _summary_table(summaries: Sequence[ModelSummary], columns) -> list[str]:
    heads = summary_heads(columns)
    lines = ["<h2>Summary per model</h2>", "<table><thead><tr><th>model</th><th>method</th><th class=n>cases</th>"
             "<th class=n>failures</th>" + "".join(f"<th class=n>{_e(h)}</th>" for _, h in heads)
             + "</tr></thead><tbody>"]
    for s in summaries:
        lines.append(f"<tr><td>{_e(s.model)}</td><td>{_e(s.method)}</td><td class=n>{s.cases}</td>"
                     f"<td class=n>{s.failures}</td>"
                     + "".join(f"<td class=n>{_fmt(s.stat(key))}</td>" for key, _ in heads) + "</tr>")
    lines.append("</tbody></table>")
    return lines


def _case_table(rows: Sequence[CaseRow], columns) -> list[str]:
    heads = [("panel", False), ("model", False), ("image", False), ("method", False), ("x", True), ("y", True),
             ("size", True)] + [(c.title, True) for c in columns] + [("seconds", True), ("status", False),
                                                                      ("message", False)]
    lines = ["<h2>Cases</h2>", '<input id="filter" type="search" placeholder="Filter cases…" '
             'aria-label="Filter cases">', '<div class="wrap"><table id="cases"><thead><tr>']
    for name, numeric in heads:
        extra = ' data-nosort=""' if name == "panel" else ""
        lines.append(f'<th{" class=n" if numeric else ""}{extra}>{_e(name)}<span class="arrow"></span></th>')
    lines.append("</tr></thead><tbody>")

    def num(v, digits=2):
        return f'<td class=n data-v="{"" if v is None else _e(v)}">{_fmt(v, digits)}</td>'

    for r in rows:
        c = r.case
        thumb = ""
        if r.status == "ok":
            panel = f"{r.folder}/{registry.method(c.method).picture_file}"
            thumb = (f'<a href="{_href(panel)}"><img src="{_href(panel)}" loading="lazy" '
                     f'alt="{_e(c.label)}"></a>')
        folder_link = f'<a href="{_href(r.folder + "/")}">{_e(r.status)}</a>' if r.status != "pending" \
            else _e(r.status)
        lines.append(
            f'<tr class="{_e(r.status)}"><td>{thumb}</td><td class="name" title="{_e(c.model)}">'
            f'{_e(stem(c.model))}</td><td class="name" title="{_e(c.image)}">{_e(Path(c.image).name)}</td>'
            f"<td>{_e(c.method)}</td>{num(c.x)}{num(c.y)}{num(c.size)}"
            + "".join(num(r.value(col.name), col.digits) for col in columns) + f"{num(r.seconds, 1)}"
            f'<td class="status-{_e(r.status)}">{folder_link}</td><td class="msg">{_e(r.message)}</td></tr>')
    lines.append("</tbody></table></div>")
    return lines


def _axis_range(values: Sequence[float]) -> tuple[float, float]:
    """A DI axis shared by every model's plot, on round numbers around the values."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    step = _nice_step((hi - lo) / 5)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _nice_step(raw: float) -> float:
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _histogram_svg(values: Sequence[float], lo: float, hi: float, title: str = "DI", bins: int = 20) -> str:
    """A histogram of `title` with a rug of the individual cases and the mean marked, as inline SVG."""
    width, height, left, right, top, bottom = 420, 150, 34, 10, 8, 40
    pw, ph = width - left - right, height - top - bottom
    parts = [f'<svg width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)} histogram">']
    if not values:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no completed case</text></svg>')
        return "".join(parts)
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    peak = max(counts)

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    bw = pw / bins
    for i, n in enumerate(counts):
        if n:
            h = n / peak * ph
            a, b = lo + i * (hi - lo) / bins, lo + (i + 1) * (hi - lo) / bins
            parts.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{top + ph - h:.1f}" width="{bw - 1:.1f}" '
                         f'height="{h:.1f}" fill="#4a78b5"><title>{_e(title)} {a:.2f}–{b:.2f}: {n} '
                         f'case{"s" if n > 1 else ""}</title></rect>')
    base = top + ph
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + pw}" y2="{base}" stroke="#888"/>')
    for v in values:  # rug: one tick per case
        parts.append(f'<line x1="{sx(v):.1f}" y1="{base + 3}" x2="{sx(v):.1f}" y2="{base + 11}" '
                     f'stroke="#c0392b" stroke-opacity="0.6"/>')
    mean = statistics.fmean(values)
    parts.append(f'<line x1="{sx(mean):.1f}" y1="{top}" x2="{sx(mean):.1f}" y2="{base}" stroke="#c0392b" '
                 f'stroke-dasharray="3,3"><title>mean {_e(title)} {mean:.2f}</title></line>')
    step = _nice_step((hi - lo) / 5)
    t = lo
    while t <= hi + 1e-9:
        parts.append(f'<line x1="{sx(t):.1f}" y1="{base + 11}" x2="{sx(t):.1f}" y2="{base + 14}" stroke="#888"/>'
                     f'<text x="{sx(t):.1f}" y="{base + 25}" text-anchor="middle">{t:g}</text>')
        t += step
    parts.append(f'<text x="{left + pw / 2}" y="{height - 2}" text-anchor="middle">{_e(title)}  (n = {len(values)}, '
                 f"mean {mean:.2f})</text>")
    parts.append(f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{peak}</text>'
                 f'<text x="{left - 4}" y="{base}" text-anchor="end">0</text></svg>')
    return "".join(parts)
