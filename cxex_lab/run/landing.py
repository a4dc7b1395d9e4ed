"""The index of a run as a landing page for people who did not run it.

From top to bottom:

1. the study in a few sentences (:mod:`cxex_lab.run.summary`);
2. with several site segments, the **headline finding across sites**: each
   site's estimate with its interval, sites with fewer clusters (or rows) than
   the confidentiality minimum shown as "n < 5", never their estimate;
3. one entry per report: its question (title), its first key finding, links
   to each segment's report; a failed report shows its one-line message only;
4. the provenance: data fingerprint, code revision, package versions, times,
   and a link to ``provenance.json``; plus a compact table of every report's
   status and duration for the analyst.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxex_lab.present import fmt_count, fmt_estimate, study_sentences

__all__ = ["headline_key", "site_comparison", "write_index"]

_STATUS_ORDER = ("failed", "ok", "cached")

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;margin:0 auto;padding:1.5rem 1rem 3rem;
 color:#1f2328;max-width:62rem;line-height:1.5}
h1{font-size:1.6rem;margin:.2rem 0 .6rem}h2{font-size:1.2rem;margin:1.8rem 0 .6rem;border-bottom:1px solid #d8dee4;padding-bottom:.25rem}
h3{font-size:1.02rem;margin:0 0 .2rem}
a{color:#0969da}p{margin:.3rem 0}
.study p{font-size:1.02rem}
.reports{list-style:none;padding:0;margin:0}
.reports>li{border:1px solid #d0d7de;border-radius:6px;padding:.7rem .9rem;margin:.6rem 0}
.finding{margin:.25rem 0 .35rem}.segments{font-size:.9rem;color:#57606a}
.failed{color:#cf222e;font-weight:600}.ok{color:#1a7f37}.cached{color:#0969da}
.msg{font-size:.9rem;color:#6e2a2a;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e1e4e8;
 vertical-align:top;overflow-wrap:anywhere}th{background:#f6f8fa;font-weight:600}td.num,th.num{text-align:right;white-space:nowrap}
.meta{color:#57606a;font-size:.88rem}
details{margin-top:1rem}summary{cursor:pointer;color:#57606a}
code{font-size:.88em}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _first_sentence(emitted: Mapping[str, Any] | None) -> str:
    for payload in (emitted or {}).get("findings", []) or []:
        sentences = payload.get("sentences") if isinstance(payload, Mapping) else None
        if sentences:
            return str(sentences[0])
    return ""


def _headline(emitted: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for payload in (emitted or {}).get("findings", []) or []:
        if isinstance(payload, Mapping) and payload.get("headline"):
            return payload["headline"]
    return None


def headline_key(rows: Sequence[Mapping[str, Any]], wanted: str | None = None) -> str | None:
    """The finding compared across sites: ``wanted``, else the first report's headline key."""
    if wanted:
        return wanted
    for r in rows:
        h = _headline(r.get("emitted"))
        if h and h.get("key"):
            return str(h["key"])
    return None


def _row_of(emitted: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    for payload in (emitted or {}).get("findings", []) or []:
        for f in payload.get("findings", []) if isinstance(payload, Mapping) else []:
            if f.get("key") == key:
                return f
    return None


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def site_comparison(rows: Sequence[Mapping[str, Any]], key: str, min_group_size: int) -> pd.DataFrame:
    """The finding ``key`` in every segment that reported it.

    Returns one row per segment (``all`` first): ``segment``, ``value``
    ("0.18 [0.12, 0.24]", or "n < 5" when the segment's clusters, else rows, are
    below ``min_group_size``, or "not estimated"), ``n``, ``n_clusters``,
    ``unit``, ``report``.
    """
    out = []
    for r in rows:
        f = _row_of(r.get("emitted"), key)
        if f is None:
            continue
        n, g = f.get("n"), f.get("n_clusters")
        size = _num(g) if g is not None and not math.isnan(_num(g)) else _num(n)
        if not math.isnan(size) and size < min_group_size:
            value = f"n < {min_group_size}"
            n = g = None
        elif math.isnan(_num(f.get("estimate"))):
            value = "not estimated"
        else:
            value = fmt_estimate(_num(f.get("estimate")), _num(f.get("ci_low")), _num(f.get("ci_high")))
        out.append({"segment": r["segment"], "value": value, "n": n, "n_clusters": g, "unit": f.get("unit", ""),
                    "finding": f.get("finding", key), "report": r.get("html_final") or ""})
    df = pd.DataFrame(out, columns=["segment", "value", "n", "n_clusters", "unit", "finding", "report"])
    order = {"all": 0}
    return df.sort_values("segment", key=lambda s: s.map(lambda v: (order.get(v, 1), str(v)))).reset_index(drop=True)


def _comparison_html(rows: Sequence[Mapping[str, Any]], key: str | None, min_group_size: int) -> str:
    if not key:
        return ""
    sites = [r for r in rows if r["segment"] != "all"]
    if len({r["segment"] for r in sites}) < 2:
        return ""
    cmp = site_comparison(rows, key, min_group_size)
    if cmp.empty:
        return ""
    # one notebook is enough: the one whose reports carry the key
    first = cmp.iloc[0]
    unit = next((u for u in cmp["unit"] if u), "")
    body = []
    for r in cmp.itertuples(index=False):
        seg = "All sites" if r.segment == "all" else r.segment
        link = f'<a href="{_esc(r.report)}">{_esc(seg)}</a>' if r.report else _esc(seg)
        body.append(f'<tr><td>{link}</td><td class="num">{_esc(r.value)}</td>'
                    f'<td class="num">{_esc(fmt_count(r.n)) if r.n is not None else "–"}</td>'
                    f'<td class="num">{_esc(fmt_count(r.n_clusters)) if r.n_clusters is not None else "–"}</td></tr>')
    return (f'<section class="comparison" id="across-sites"><h2>The headline across sites</h2>'
            f'<p>{_esc(first.finding)}{f", in {_esc(unit)}" if unit else ""}: estimate and 95% interval per site. '
            f'Sites with fewer than {min_group_size} clusters are not shown (n &lt; {min_group_size}).</p>'
            f'<table><thead><tr><th>Site</th><th class="num">Estimate [95% CI]</th><th class="num">n</th>'
            f'<th class="num">Clusters</th></tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></section>')


def _reports_html(rows: Sequence[Mapping[str, Any]]) -> str:
    by_nb: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_nb.setdefault(r["notebook"], []).append(r)
    items = []
    for nb, group in by_nb.items():
        title = next((g.get("title") for g in group if g.get("title")), nb)
        main = next((g for g in group if g["segment"] == "all" and g.get("html_final")),
                    next((g for g in group if g.get("html_final")), None))
        heading = f'<a href="{_esc(main["html_final"])}">{_esc(title)}</a>' if main else _esc(title)
        sentence = next((s for s in (_first_sentence(g.get("emitted")) for g in ([main] if main else []) + group) if s), "")
        parts = [f'<li id="report-{_esc(nb)}"><h3>{heading}</h3>']
        if sentence:
            parts.append(f'<p class="finding">{_esc(sentence)}</p>')
        failed = [g for g in group if g["status"] == "failed"]
        for g in failed:
            seg = "" if len(group) == 1 else f" [{_esc(g['segment'])}]"
            parts.append(f'<p class="msg"><span class="failed">Not produced{seg}:</span> {_esc(g["error"])}</p>')
        if len(group) > 1:
            links = []
            for g in group:
                seg = "All sites" if g["segment"] == "all" else g["segment"]
                links.append(f'<a href="{_esc(g["html_final"])}">{_esc(seg)}</a>' if g.get("html_final")
                             else f'<span class="failed">{_esc(seg)}</span>')
            parts.append(f'<p class="segments">Segments: {" · ".join(links)}</p>')
        parts.append("</li>")
        items.append("".join(parts))
    return f'<section id="reports"><h2>Reports</h2><ul class="reports">{"".join(items)}</ul></section>'


def _status_table(rows: Sequence[Mapping[str, Any]]) -> str:
    body = []
    for r in rows:
        label = r["status"] if r["status"] != "failed" else f"failed: {r['reason']}"
        links = []
        if r.get("html_final"):
            links.append(f'<a href="{_esc(r["html_final"])}">report</a>')
        if r.get("ipynb") and r["status"] != "failed":  # a failed notebook holds its traceback: not linked
            links.append(f'<a href="{_esc(r["ipynb"])}">notebook</a>')
        body.append(f'<tr><td>{_esc(r["notebook"])}</td><td>{_esc(r["segment"])}</td>'
                    f'<td class="{_esc(r["status"])}">{_esc(label)}</td><td class="num">{float(r["seconds"]):.1f} s</td>'
                    f'<td>{" · ".join(links) or "–"}</td></tr>')
    return ('<table><thead><tr><th>Notebook</th><th>Segment</th><th>Status</th><th>Duration</th><th>Files</th></tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table>')


def write_index(run_dir: Path, rows: Sequence[Mapping[str, Any]], prov: Mapping[str, Any],
                facts: Mapping[str, Any] | None = None, headline: str | None = None,
                min_group_size: int = 5) -> Path:
    """Write ``index.html`` (the landing page) into ``run_dir``; returns its path."""
    run = prov["run"]
    code = prov.get("code", {})
    counts = pd.Series([r["status"] for r in rows]).value_counts().to_dict() if rows else {}
    summary = ", ".join(f"{counts[s]} {s}" for s in _STATUS_ORDER if s in counts) or "no reports"
    study = study_sentences(facts or {})
    study_html = ("<section class=\"study\" id=\"study\">" + "".join(f"<p>{_esc(s)}</p>" for s in study) + "</section>"
                  if study else "")
    rev = f"{str(code.get('revision', 'unknown'))[:12]}{' (uncommitted changes)' if code.get('dirty') else ''}"
    pk = prov.get("packages", {})
    versions = ", ".join(f"{k} {pk[k]}" for k in ("cxex-lab", "python", "pandas", "statsmodels", "papermill") if k in pk)
    segs = run.get("resolved_segments", [])
    key = headline_key(rows, headline)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>cxex-lab reports: {_esc(run['name'])}</title><style>{_CSS}</style></head>
<body>
<header><h1>EX &rarr; CX reports</h1>
<p class="meta">Run <strong>{_esc(run['name'])}</strong> · {_esc(summary)} · {len(segs)} segment{'s' if len(segs) != 1 else ''}
({_esc(', '.join(segs[:12]))}{'…' if len(segs) > 12 else ''})</p></header>
<main>
{study_html}
{_comparison_html(rows, key, min_group_size)}
{_reports_html(rows)}
<section id="provenance"><h2>Provenance</h2>
<p class="meta">Data <code>{_esc(Path(str(prov['data']['path'])).name)}</code> (sha256 {_esc(prov['data']['fingerprint'][:16])}…,
{prov['data'].get('n_files', '?')} files) · code {_esc(rev)} · {_esc(versions)}<br>
started {_esc(run['started_at'])} · finished {_esc(run['finished_at'])} · {float(run['seconds']):.1f} s ·
<a href="provenance.json">provenance.json</a> (every parameter, package version and cache key)</p>
<details><summary>All reports with status and duration</summary>
{_status_table(rows)}
</details>
</section>
</main>
</body></html>
"""
    path = run_dir / "index.html"
    path.write_text(doc, encoding="utf-8")
    return path
