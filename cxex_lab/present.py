"""Presentation for people who did not run the report.

A report is read by a manager or a researcher who did not run it. The functions
here turn findings, tables, notes and figures into output made for reading,
and are all a notebook needs to show something:

==========================  ==================================================
``show_findings(findings)``  the "Key findings" section: 2-4 sentences built
                             from the findings table, the notes, and (for the
                             runner's landing page) the table as JSON
``show_table(df, ...)``      a table for reading (no index, labelled columns
                             with units, "0.18 [0.12, 0.24]", ``<0.001``,
                             ``n < 5`` for suppressed cells, never wider than
                             the page)
``show_notes(*sources)``     "Note" boxes from ``fit.notes``, ``Findings.notes``
                             or plain sentences
``show_figure(fig, alt)``    a figure as an embedded PNG with alt text
``show_truth(findings)``     the truth check (simulated data only)
``emit_study(facts)``        study facts for the landing page
==========================  ==================================================

Wording of findings
    A sentence follows the finding's ``causal`` flag (see
    :mod:`cxex_lab.findings`). The verb placeholder ``{link}`` reads "leads to"
    only for ``causal`` rows (an effect whose interval passed the replicate-study
    harness) and "goes with" otherwise; "Key findings" then says which estimates
    are read as associations. A sentence for a row that is not ``causal`` may
    not contain a causal verb ("drives", "causes", "leads to", "raises", ...):
    :func:`finding_sentence` raises ``ValueError`` naming the row, so a template
    cannot slip one in.

Sentence templates
    A findings row may carry an optional ``sentence`` column: a
    :meth:`str.format` template with the placeholders

    * ``{value}``: estimate and interval, "0.18 [0.12, 0.24]" (no interval text
      when the interval is NaN); ``{estimate}``, ``{interval}`` ("[0.12, 0.24]"
      or ""), ``{ci_low}``, ``{ci_high}`` separately;
    * ``{abs_value}``: the same for the absolute value (the interval mirrored
      when the estimate is negative), with ``{sign:higher|lower}`` choosing a
      word by the estimate's sign ("{abs_value} CSAT points {sign:higher|lower}");
    * ``{link}``: the verb phrase above; ``{unit}``, ``{finding}``,
      ``{estimand}``, ``{n}``, ``{n_clusters}``, ``{method}``.

    Without a template the sentence is "<Estimand>: about <value> <unit>."
    Example template (the issue's target sentence)::

        "An agent whose eSat rises one point above their usual level has customers "
        "about {abs_value} CSAT points {sign:happier|less happy} next quarter."

    A row may also carry a boolean ``headline`` column: the rows marked True
    (else the first three rows) make the key findings, and the first of them is
    the report's headline on the landing page.

Everything emitted is HTML with inline styles, so it looks the same in
JupyterLab and in the runner's self-contained reports; no script, font or style
sheet is fetched from anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FINDINGS_MIME",
    "STUDY_MIME",
    "LABELS",
    "fmt_number",
    "fmt_estimate",
    "fmt_p",
    "fmt_count",
    "decimals_for",
    "link_phrase",
    "finding_sentence",
    "key_findings",
    "findings_payload",
    "findings_html",
    "show_findings",
    "note_html",
    "notes_of",
    "show_notes",
    "format_table",
    "fit_width",
    "table_html",
    "show_table",
    "figure_html",
    "show_figure",
    "show_plot",
    "show_truth",
    "study_sentences",
    "emit_study",
]

#: Mime types read by the runner (:mod:`cxex_lab.run.render`) from executed notebooks.
FINDINGS_MIME = "application/vnd.cxex-lab.findings+json"
STUDY_MIME = "application/vnd.cxex-lab.study+json"

#: Words that claim cause; not allowed in a sentence about a finding that is not ``causal``.
CAUSAL_WORDS = re.compile(
    r"\b(drive|drives|driving|drove|driven|cause|causes|caused|causing|leads? to|led to|results? in"
    r"|because of|due to|raises?|lifts?|boosts?|impacts?|pays? off)\b", re.IGNORECASE)

_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif"

# --------------------------------------------------------------------------- numbers


def _isnan(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def decimals_for(estimate: float, ci_low: float = math.nan, ci_high: float = math.nan, cap: int = 3) -> int:
    """Decimals that show an estimate as precisely as its interval warrants.

    With an interval: enough decimals for the interval's half-width to show its
    first significant digit (half-width 0.06 -> 2 decimals, 0.6 -> 1, 6 -> 0),
    or its first two when the first is a 1 or a 2 (0.108 -> 2 decimals, 1.5 -> 1),
    so that "0.10 [-0.01, 0.21]" is not shown as "0.1 [0.0, 0.2]" (the
    rounding rule of the Particle Data Group).
    Without one: two significant digits of the estimate (0.18 -> 2, 12.3 -> 0).
    At most ``cap``.

    Examples
    --------
    >>> decimals_for(0.18, 0.12, 0.24), decimals_for(15.2, 9.1, 21.0), decimals_for(0.0042)
    (2, 0, 3)
    """
    if not _isnan(ci_low) and not _isnan(ci_high) and float(ci_high) > float(ci_low):
        half = (float(ci_high) - float(ci_low)) / 2
        d = -math.floor(math.log10(half))
        if half * 10.0 ** d < 3:  # leading digit 1 or 2: keep a second significant digit
            d += 1
        return int(min(cap, max(0, d)))
    if _isnan(estimate) or float(estimate) == 0:
        return 2
    return int(min(cap, max(0, 1 - math.floor(math.log10(abs(float(estimate)))))))


def fmt_number(x: Any, decimals: int = 2) -> str:
    """``x`` with ``decimals`` decimals and thousands separators; "–" when missing.

    Examples
    --------
    >>> fmt_number(1046.25, 1), fmt_number(-0.004, 2), fmt_number(float("nan"))
    ('1,046.2', '0.00', '–')
    """
    if _isnan(x):
        return "–"
    s = f"{float(x):,.{decimals}f}"
    if re.fullmatch(r"-0\.?0*", s):  # no "-0.00"
        s = s[1:]
    return s


def fmt_estimate(estimate: Any, ci_low: Any = math.nan, ci_high: Any = math.nan, decimals: int | None = None,
                 suffix: str = "") -> str:
    """"0.18 [0.12, 0.24]"; the estimate alone when the interval is missing.

    ``suffix`` follows every number ("%").

    Examples
    --------
    >>> fmt_estimate(0.1812, 0.1213, 0.2411)
    '0.18 [0.12, 0.24]'
    >>> fmt_estimate(0.1812, float("nan"), float("nan"))
    '0.18'
    >>> fmt_estimate(71.4, 65.2, 77.9, suffix="%")
    '71% [65%, 78%]'
    """
    if _isnan(estimate):
        return "–"
    d = decimals_for(estimate, ci_low, ci_high) if decimals is None else decimals
    out = fmt_number(estimate, d) + suffix
    if not _isnan(ci_low) and not _isnan(ci_high):
        out += f" [{fmt_number(ci_low, d)}{suffix}, {fmt_number(ci_high, d)}{suffix}]"
    return out


#: Units whose values are shares (0-1) and are stated as percentages.
SHARE_UNITS = frozenset({"share", "proportion", "fraction"})


def _scaled(unit: Any, *values: Any) -> tuple[list[Any], str, str]:
    """Values in the unit a reader knows: shares become percentages (``(values, suffix, unit text)``)."""
    u = str(unit or "").strip()
    if u.lower() in SHARE_UNITS:
        return [v if _isnan(v) else 100 * float(v) for v in values], "%", ""
    return list(values), "", u


def fmt_p(p: Any) -> str:
    """A p-value as a reader expects it: ``<0.001``, ``0.012``, ``0.43``; "–" when missing.

    Examples
    --------
    >>> fmt_p(0.00002), fmt_p(0.0123), fmt_p(0.4321), fmt_p(1.0)
    ('<0.001', '0.012', '0.43', '1.00')
    """
    if _isnan(p):
        return "–"
    p = float(p)
    if p < 0.001:
        return "<0.001"
    if p < 0.1:
        return f"{p:.3f}"
    return f"{p:.2f}"


def fmt_count(n: Any) -> str:
    """A count with thousands separators ("1,046"); "–" when missing."""
    if _isnan(n):
        return "–"
    return f"{int(round(float(n))):,}"


# --------------------------------------------------------------------------- findings -> sentences


def _row(row: Any) -> dict[str, Any]:
    if isinstance(row, pd.Series):
        return row.to_dict()
    return dict(row)


def link_phrase(row: Mapping[str, Any]) -> str:
    """The verb phrase a finding allows: "leads to" for an effect that passed the replicate-study check,
    "goes with" for everything else (an effect that did not pass is read as an association)."""
    if bool(row.get("causal")) and row.get("kind") == "effect":
        return "leads to"
    return "goes with"


class _Formatter(string.Formatter):
    def get_value(self, key, args, kwargs):  # noqa: D401 - string.Formatter API
        if isinstance(key, str) and key.startswith("sign:"):
            up, _, down = key[5:].partition("|")
            return up if kwargs["_sign"] >= 0 else down
        return super().get_value(key, args, kwargs)

    def parse(self, format_string):
        # "{sign:a|b}" would be read as field "sign" with format spec "a|b": keep it whole
        for literal, field, spec, conv in super().parse(format_string):
            if field == "sign" and spec is not None:
                field, spec = f"sign:{spec}", ""
            yield literal, field, spec, conv


def finding_sentence(row: Mapping[str, Any] | pd.Series) -> str:
    """One sentence stating a finding (see the module notes for templates and wording).

    Raises
    ------
    ValueError
        When the row is not ``causal`` and its sentence contains a causal verb, or
        its template names an unknown placeholder.

    Examples
    --------
    >>> row = {"key": "k", "finding": "EX -> CX", "estimand": "change in CSAT per eSat point",
    ...        "estimate": 0.181, "ci_low": 0.121, "ci_high": 0.241, "unit": "CSAT points",
    ...        "kind": "association", "causal": False}
    >>> finding_sentence(row)
    'Change in CSAT per eSat point: about 0.18 [0.12, 0.24] CSAT points.'
    """
    r = _row(row)
    (est, lo, hi), suffix, unit = _scaled(r.get("unit"), r.get("estimate"), r.get("ci_low"), r.get("ci_high"))
    d = decimals_for(est, lo, hi)
    has_ci = not _isnan(lo) and not _isnan(hi)
    neg = not _isnan(est) and float(est) < 0
    a_est, a_lo, a_hi = (-float(est), -float(hi), -float(lo)) if neg and has_ci else \
        ((-float(est), lo, hi) if neg else (est, lo, hi))
    fields = {
        "value": fmt_estimate(est, lo, hi, d, suffix),
        "abs_value": fmt_estimate(a_est, a_lo, a_hi, d, suffix),
        "estimate": fmt_number(est, d) + suffix,
        "interval": f"[{fmt_number(lo, d)}{suffix}, {fmt_number(hi, d)}{suffix}]" if has_ci else "",
        "ci_low": fmt_number(lo, d) + suffix, "ci_high": fmt_number(hi, d) + suffix,
        "unit": unit, "finding": str(r.get("finding") or ""),
        "estimand": str(r.get("estimand") or ""), "method": str(r.get("method") or ""),
        "n": fmt_count(r.get("n")), "n_clusters": fmt_count(r.get("n_clusters")),
        "link": link_phrase(r), "_sign": -1 if neg else 1,
    }
    template = r.get("sentence")
    if isinstance(template, str) and template.strip():
        try:
            text = _Formatter().vformat(template.strip(), (), fields)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"finding {r.get('key')!r}: its sentence template {template!r} cannot be filled "
                             f"({type(err).__name__}: {err}); placeholders are {sorted(k for k in fields if k[0] != '_')}"
                             ) from None
    else:
        subject = fields["estimand"] or fields["finding"] or str(r.get("key"))
        about = "" if r.get("kind") == "descriptive" else "about "
        text = f"{subject[:1].upper()}{subject[1:]}: {about}{fields['value']} {fields['unit']}"
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    if not text.endswith((".", "!", "?")):
        text += "."
    if not (bool(r.get("causal")) and r.get("kind") == "effect"):
        m = CAUSAL_WORDS.search(text)
        if m:
            raise ValueError(f"finding {r.get('key')!r} is not causal (kind={r.get('kind')!r}, causal="
                             f"{bool(r.get('causal'))}) but its sentence says {m.group(0)!r}: {text!r}; "
                             f"use {{link}} ('goes with') or other words")
    return text


def _headline_rows(table: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    t = table[table["estimate"].notna()] if "estimate" in table.columns else table
    if "headline" in t.columns and t["headline"].fillna(False).astype(bool).any():
        t = t[t["headline"].fillna(False).astype(bool)]
    return t.head(max_rows)


def key_findings(table: pd.DataFrame, max_sentences: int = 4) -> list[str]:
    """The key findings of a report: 2-4 sentences from its findings table.

    One sentence per headline row (the rows with ``headline`` True, else the
    first three with an estimate), then the main caveat: the first sentence of
    the caveat of the first headline row that has one (the author's caveat
    comes before the harness's "read as an association" sentence that
    :func:`cxex_lab.findings.findings_table` appends). At most ``max_sentences``,
    plus one closing sentence when a headline effect has not passed the
    replicate-study check (it says those are read as associations).
    """
    if table is None or len(table) == 0:
        return []
    rows = _headline_rows(table, max(1, max_sentences - 1))
    sentences = [finding_sentence(r) for _, r in rows.iterrows()]
    caveats = [str(c).strip() for c in rows.get("caveat", pd.Series(dtype=object)) if isinstance(c, str) and c.strip()]
    if caveats:
        c = _first_sentence(caveats[0])
        sentences.append(c if c.endswith((".", "!", "?")) else c + ".")
    if {"kind", "causal"} <= set(rows.columns):
        effects = rows[rows["kind"] == "effect"]
        unchecked = effects[~effects["causal"].astype(bool)]
        if len(unchecked):
            sentences.append(
                ("None of these estimates" if len(unchecked) == len(effects) else "Not every estimate here")
                + " passed the replicate-study check of its interval, so "
                + ("each is" if len(unchecked) == len(effects) else "those marked 'association' below are")
                + " read as an association, not as an effect.")
    return sentences[:max_sentences + 1]


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.!?])(\s+[A-Z]|$)", text.strip(), flags=re.S)
    return m.group(1) if m else text.strip()


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if not isinstance(v, (str, bytes)) and _isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _table_of(findings: Any) -> pd.DataFrame:
    if isinstance(findings, pd.DataFrame):
        return findings
    table = getattr(findings, "table", None)
    if isinstance(table, pd.DataFrame):
        return table
    raise TypeError(f"expected a findings table (DataFrame) or a Findings object, got {type(findings).__name__}")


def findings_payload(findings: Any, notes: Iterable[str] = (), report: str | None = None) -> dict[str, Any]:
    """The machine-readable key findings: report, sentences, rows and notes (JSON-safe)."""
    table = _table_of(findings)
    report = report or getattr(findings, "report", None) or ""
    headline = _headline_rows(table, 1)
    return {
        "report": report,
        "sentences": key_findings(table),
        "headline": _jsonable(headline.iloc[0].to_dict()) if len(headline) else None,
        "findings": [_jsonable(r) for r in table.to_dict(orient="records")],
        "notes": list(notes_of(findings, *([notes] if isinstance(notes, str) else notes))),
    }


# --------------------------------------------------------------------------- notes


def notes_of(*sources: Any) -> list[str]:
    """Note sentences from ``fit.notes``, a Result, a Findings, strings or lists of them (deduplicated)."""
    out: list[str] = []

    def add(x: Any) -> None:
        if x is None:
            return
        if isinstance(x, str):
            s = " ".join(x.split())
            if s and s not in out:
                out.append(s)
            return
        if isinstance(x, pd.DataFrame):
            return
        notes = getattr(x, "notes", None)
        if notes is not None and not isinstance(x, (list, tuple, set)):
            add(notes)
            return
        fit = getattr(x, "fit", None)
        if fit is not None:
            add(fit)
            return
        if isinstance(x, Iterable):
            for item in x:
                add(item)

    for s in sources:
        add(s)
    return out


def note_html(text: str, title: str = "Note") -> str:
    """One "Note" box (a ``role="note"`` element with a visible heading word)."""
    return (f'<div class="cxex-note" role="note" style="{_FONT};border-left:4px solid #bf8700;background:#fff8c5;'
            f'padding:.55rem .8rem;margin:.6rem 0;border-radius:3px;color:#24292f;font-size:14px;line-height:1.45">'
            f'<strong>{html.escape(title)}.</strong> {html.escape(text)}</div>')


def show_notes(*sources: Any, title: str = "Note") -> None:
    """Display each note of the sources as a "Note" box (nothing when there is none; see :func:`notes_of`)."""
    notes = notes_of(*sources)
    if notes:
        _display_html("".join(note_html(n, title) for n in notes), "\n".join(f"{title}: {n}" for n in notes))


# --------------------------------------------------------------------------- key findings section


def findings_html(findings: Any, notes: Iterable[str] = (), title: str = "Key findings", details: bool = True) -> str:
    """The "Key findings" section as HTML (``<section id="key-findings">``)."""
    table = _table_of(findings)
    sentences = key_findings(table)
    body = " ".join(html.escape(s) for s in sentences) or "No finding could be estimated on these data."
    parts = [f'<section class="cxex-key-findings" id="key-findings" aria-labelledby="key-findings-title" '
             f'style="{_FONT};border:1px solid #d0d7de;border-radius:6px;padding:.8rem 1rem;margin:.8rem 0;'
             f'background:#f6f8fa;color:#1f2328">',
             f'<h2 id="key-findings-title" style="margin:0 0 .4rem;font-size:1.2rem">{html.escape(title)}</h2>',
             f'<p style="margin:0;font-size:15px;line-height:1.55">{body}</p>']
    for n in notes_of(findings, list(notes)):
        parts.append(note_html(n))
    if details and len(table):
        shown = table.assign(kind=[("effect (checked)" if c else "association") if k == "effect" else k
                                   for k, c in zip(table["kind"], table["causal"])]) \
            if {"kind", "causal"} <= set(table.columns) else table
        cols = [c for c in ("finding", "estimate", "ci_low", "ci_high", "unit", "n", "n_clusters", "kind") if c in shown]
        parts.append('<details style="margin-top:.5rem"><summary style="cursor:pointer;font-size:14px">'
                     'All findings of this report</summary>')
        parts.append(table_html(shown[cols], labels={"kind": "Read as"}, digits=None))
        parts.append("</details>")
        how = [c for c in ("finding", "method", "caveat") if c in table.columns]
        if len(how) == 3:
            parts.append('<details style="margin-top:.5rem"><summary style="cursor:pointer;font-size:14px">'
                         'How each number was estimated, and what it assumes</summary>')
            parts.append(table_html(table[how], labels={"method": "Method (and the level intervals resample or "
                                                                  "cluster at)", "caveat": "Assumption and caveat"},
                                    max_chars=400))
            parts.append("</details>")
    parts.append("</section>")
    return "".join(parts)


def show_findings(findings: Any, notes: Iterable[str] = (), *, report: str | None = None,
                  title: str = "Key findings", details: bool = True) -> None:
    """Display the "Key findings" section and emit the findings for the runner.

    Parameters
    ----------
    findings : Findings or DataFrame
        A :class:`cxex_lab.findings.Findings` (its ``table`` and ``notes`` are
        used) or a findings table.
    notes : iterable of str, optional
        More notes to show in the section (e.g. ``fit.notes``).
    report : str, optional
        The report's name for the payload (default ``findings.report``).
    details : bool
        Add a collapsed table of every finding below the sentences.

    Returns None (so that a cell ending with it shows nothing raw); the
    sentences themselves come from :func:`key_findings`. The display bundle holds ``text/html`` (what readers see),
    ``text/plain`` (the sentences) and :data:`FINDINGS_MIME` (the JSON the runner
    reads for the landing page; not rendered).
    """
    payload = findings_payload(findings, notes, report)
    bundle = {"text/html": findings_html(findings, notes, title, details),
              "text/plain": f"{title}: " + " ".join(payload["sentences"]),
              FINDINGS_MIME: payload}
    _display_bundle(bundle)


# --------------------------------------------------------------------------- tables

#: Labels of the columns this project's tables use (a caller's ``labels`` win).
LABELS: dict[str, str] = {
    "term": "Term", "finding": "Finding", "estimand": "What is estimated", "estimate": "Estimate",
    "se": "Std. error", "p": "p", "n": "n", "n_clusters": "Clusters", "unit": "Unit", "method": "Method",
    "caveat": "Caveat", "kind": "Kind", "truth": "Truth", "inside_ci": "Truth inside the interval",
    "latent": "Latent value", "model": "Model", "measure": "Measure", "site_id": "Site", "team_id": "Team",
    "wave": "Wave", "period": "Period", "side": "Side", "metric": "Metric", "dimension": "Dimension",
    "eligible": "Eligible", "responded": "Responded", "rate": "Response rate", "respondents": "Respondents",
    "esat": "eSat (1-5)", "enps": "eNPS (0-10 answer)", "ees": "EES (1-7)", "csat": "CSAT (1-5)",
    "nps": "NPS (0-10 answer)", "ces": "CES (1-7)", "esat_mean": "Mean eSat (1-5)", "csat_mean": "Mean CSAT (1-5)",
    "fcr_rate": "First-contact resolution (share)", "transfer_rate": "Transfers (share)",
    "aht_seconds": "Handle time (seconds)", "handle_minutes": "Handle time (minutes)",
    "retention_rate": "Retention (share)", "revenue_mean": "Revenue per customer-period",
    "n_customers": "Customers", "n_interactions": "Interactions", "n_cx": "CX answers", "n_ex": "EX answers",
    "groups": "Groups", "suppressed": "Suppressed", "rows_excluded": "Rows excluded", "rule": "Rule",
    "step": "Step", "table": "Table", "power": "Power", "effect": "Effect", "n_units": "Employees",
    "n_waves": "Waves", "group_level": "Level", "what": "What", "value": "Value",
}

_COUNT_NAME = re.compile(r"^(n|n_.+|.+_count|count|respondents|eligible|responded|rows_excluded|groups)$")


def _humanise(col: str) -> str:
    s = str(col).replace("_", " ").strip()
    return s[:1].upper() + s[1:]


def _label(col: str, labels: Mapping[str, str], units: Mapping[str, str]) -> str:
    label = labels.get(col) or LABELS.get(col) or _humanise(col)
    unit = units.get(col)
    return f"{label} ({unit})" if unit else label


def format_table(
    df: pd.DataFrame,
    *,
    labels: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    values: Mapping[str, Mapping[Any, str]] | None = None,
    digits: Mapping[str, int] | int | None = None,
    percent: Sequence[str] = (),
    estimate: str = "estimate",
    ci: tuple[str, str] = ("ci_low", "ci_high"),
    ci_label: str = "95% CI",
    p: str = "p",
    min_group_size: int | None = None,
    suppressed: str = "suppressed",
    drop: Sequence[str] = (),
) -> pd.DataFrame:
    """A table's cells as the strings a reader sees (labels as column names).

    Parameters
    ----------
    df : DataFrame
        Any tidy table. A non-default index becomes a column; the default
        (0..n-1) index is dropped.
    labels, units : mapping, optional
        Column label and unit, e.g. ``units={"estimate": "CSAT points"}`` ->
        "Estimate [95% CI] (CSAT points)". Known names have labels
        (:data:`LABELS`); others are humanised ("esat_mean" -> "Esat mean").
    values : mapping, optional
        Replacements of cell values per column (``{"term": {"esat->csat":
        "eSat -> next CSAT"}}``): internal names never reach a reader.
    digits : int or mapping, optional
        Decimals of float columns (default 2). The combined estimate column
        chooses its decimals per row from the interval (:func:`decimals_for`).
    percent : list of str
        Columns holding shares (0-1) shown as percentages ("45%").
    estimate, ci : str
        When all three exist they become one column "Estimate [95% CI]"
        ("0.18 [0.12, 0.24]").
    p : str
        p-value column, shown as ``<0.001`` / ``0.012``.
    min_group_size : int, optional
        The confidentiality minimum: missing cells of rows flagged in
        ``suppressed`` read "n < 5" (with the actual minimum), other missing
        cells "–". Without it suppressed cells read "suppressed". Never blank.
    drop : list of str
        Columns not to show (the ``suppressed`` flag is always dropped).

    Returns
    -------
    DataFrame of str
    """
    labels, units, values = dict(labels or {}), dict(units or {}), dict(values or {})
    t = df.copy()
    if not (isinstance(t.index, pd.RangeIndex) and t.index.start == 0 and t.index.step == 1) or t.index.name:
        t = t.reset_index()
    t = t.reset_index(drop=True)
    small = t[suppressed].fillna(False).astype(bool) if suppressed in t.columns else pd.Series(False, index=t.index)
    # internal ids of findings ("key") and the suppression flag never reach a reader
    t = t.drop(columns=[c for c in [suppressed, "key", *drop] if c in t.columns])
    for col, mapping in values.items():
        if col in t.columns:
            t[col] = t[col].map(lambda v, m=mapping: m.get(v, v))
    missing = f"n < {min_group_size}" if min_group_size is not None else "suppressed"

    def cell(v: Any, i: int, text: str) -> str:
        if _isnan(v):
            return missing if small.iloc[i] else "–"
        return text

    out: dict[str, list[str]] = {}
    numeric_cols: list[str] = []
    combine = estimate in t.columns and all(c in t.columns for c in ci)
    for col in t.columns:
        if combine and col in ci:
            continue
        s = t[col]
        if combine and col == estimate:
            name = f"{labels.get(col) or LABELS.get(col, 'Estimate')} [{ci_label}]"
            name = f"{name} ({units[col]})" if units.get(col) else name
            d_fixed = digits.get(col) if isinstance(digits, Mapping) else None
            row_units = t["unit"] if "unit" in t.columns else pd.Series("", index=t.index)
            cells = []
            for i, (v, lo, hi, u) in enumerate(zip(s, t[ci[0]], t[ci[1]], row_units)):
                (v2, lo2, hi2), suffix, _ = _scaled(u, v, lo, hi)  # shares read as percentages
                cells.append(cell(v, i, fmt_estimate(v2, lo2, hi2, d_fixed, suffix)))
            out[name] = cells
            numeric_cols.append(name)
            continue
        name = _label(col, labels, units)
        if col == "unit" and combine:
            s = s.map(lambda u: "%" if str(u).strip().lower() in SHARE_UNITS else u)
        if col == p:
            out[name] = [cell(v, i, fmt_p(v)) for i, v in enumerate(s)]
            numeric_cols.append(name)
        elif pd.api.types.is_bool_dtype(s) or (s.dtype == object and s.dropna().map(type).eq(bool).all() and s.notna().any()):
            out[name] = [cell(v, i, "yes" if bool(v) else "no") for i, v in enumerate(s)]
        elif col in percent and pd.api.types.is_numeric_dtype(s):
            d = digits.get(col, 0) if isinstance(digits, Mapping) else (digits if isinstance(digits, int) else 0)
            out[name] = [cell(v, i, f"{100 * float(v):.{d}f}%") for i, v in enumerate(s)]
            numeric_cols.append(name)
        elif pd.api.types.is_integer_dtype(s) or (_COUNT_NAME.match(str(col)) and pd.api.types.is_numeric_dtype(s)):
            out[name] = [cell(v, i, fmt_count(v)) for i, v in enumerate(s)]
            numeric_cols.append(name)
        elif pd.api.types.is_float_dtype(s):
            d = digits.get(col, 2) if isinstance(digits, Mapping) else (digits if isinstance(digits, int) else 2)
            out[name] = [cell(v, i, fmt_number(v, d)) for i, v in enumerate(s)]
            numeric_cols.append(name)
        elif pd.api.types.is_datetime64_any_dtype(s):
            out[name] = [cell(v, i, pd.Timestamp(v).strftime("%Y-%m-%d")) for i, v in enumerate(s)]
        else:
            out[name] = [cell(v, i, str(v)) for i, v in enumerate(s)]
    result = pd.DataFrame(out, columns=list(out))
    result.attrs["numeric"] = numeric_cols
    return result


def _col_width(t: pd.DataFrame, col: str) -> int:
    cells = max((len(str(v)) for v in t[col]), default=0)
    header = max((len(w) for w in str(col).split()), default=0)
    return max(cells, header, min(len(str(col)), 14)) + 3


def fit_width(t: pd.DataFrame, max_chars: int = 100) -> list[pd.DataFrame]:
    """Split (or transpose) a formatted table so that no part is wider than the page.

    Width is estimated in characters (cell text, header words). A table that
    fits is returned as is; a wide table with at most 6 rows is transposed if
    that fits; otherwise its columns are split into parts that each repeat the
    first column (the row labels).
    """
    numeric = t.attrs.get("numeric", [])
    if sum(_col_width(t, c) for c in t.columns) <= max_chars or len(t.columns) <= 2:
        return [t]
    if len(t) <= 6:
        first = t.columns[0]
        tt = t.set_index(first).T.reset_index().rename(columns={"index": ""})
        tt.columns = [str(c) for c in tt.columns]
        if tt.columns.duplicated().any():
            tt.columns = [f"{c} ({i})" if tt.columns.duplicated()[i] else c for i, c in enumerate(tt.columns)]
        if sum(_col_width(tt, c) for c in tt.columns) <= max_chars:
            tt.attrs["numeric"] = list(tt.columns[1:])
            return [tt]
    key, rest = t.columns[0], list(t.columns[1:])
    parts, current, width = [], [], _col_width(t, key)
    for c in rest:
        w = _col_width(t, c)
        if current and width + w > max_chars:
            parts.append(current)
            current, width = [], _col_width(t, key)
        current.append(c)
        width += w
    if current:
        parts.append(current)
    out = []
    for cols in parts:
        part = t[[key, *cols]].copy()
        part.attrs["numeric"] = [c for c in cols if c in numeric]
        out.append(part)
    return out


def _stable_id(t: pd.DataFrame, salt: str = "") -> str:
    digest = hashlib.sha1((salt + t.to_json()).encode()).hexdigest()[:10]
    return f"cxex{digest}"


def table_html(df: pd.DataFrame, *, title: str | None = None, note: str | None = None, max_chars: int = 100,
               **fmt: Any) -> str:
    """A table for reading as self-contained HTML (great_tables, no external resources).

    ``fmt`` goes to :func:`format_table`; wide tables are split or transposed
    (:func:`fit_width`). ``note`` goes under the table (e.g. the source, or what
    "n < 5" means).
    """
    from great_tables import GT

    t = format_table(df, **fmt)
    if fmt.get("min_group_size") is not None and t.isin([f"n < {fmt['min_group_size']}"]).any().any() and note is None:
        note = (f"n < {fmt['min_group_size']}: fewer people than the confidentiality minimum; "
                f"the value is not shown.")
    parts = fit_width(t, max_chars)
    html_parts = []
    for i, part in enumerate(parts):
        gt = GT(part, id=_stable_id(part, f"{title}{i}"))
        if title:
            gt = gt.tab_header(title=title if len(parts) == 1 else f"{title} ({i + 1} of {len(parts)})")
        numeric = [c for c in part.attrs.get("numeric", []) if c in part.columns]
        if numeric:
            gt = gt.cols_align(align="right", columns=numeric)
        if note and i == len(parts) - 1:
            gt = gt.tab_source_note(note)
        gt = gt.tab_options(table_font_size="14px", heading_title_font_size="16px", data_row_padding="4px",
                            column_labels_font_weight="600")
        html_parts.append(gt.as_raw_html())
    return f'<div class="cxex-table" style="max-width:100%;overflow-x:auto">{"".join(html_parts)}</div>'


def show_table(df: pd.DataFrame | None, *, title: str | None = None, note: str | None = None, **fmt: Any) -> None:
    """Display a table for reading (see :func:`table_html` and :func:`format_table`;
    ``max_chars`` goes to :func:`fit_width`).

    ``None`` (a table the study could not support, e.g. ``findings.details.get(...)``)
    shows nothing: the report's notes say why it is missing. An empty table shows
    its title and "No rows."
    """
    if df is None:
        return
    if len(df) == 0:
        _display_html(f'<p style="{_FONT}"><strong>{html.escape(title or "")}</strong> No rows.</p>', "No rows.")
        return
    t = format_table(df, **{k: v for k, v in fmt.items() if k != "max_chars"})
    _display_html(table_html(df, title=title, note=note, **fmt), t.to_string(index=False))


# --------------------------------------------------------------------------- figures


def figure_html(fig: Any, alt: str, caption: str | None = None, dpi: int = 110) -> str:
    """A matplotlib figure as ``<figure><img alt=...>`` with the PNG embedded."""
    if not alt or not str(alt).strip():
        raise ValueError("a figure needs alt text: say in words what it shows (alt='EX and CX by site ...')")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = (f'<figcaption style="{_FONT};font-size:13px;color:#57606a;margin-top:.3rem">{html.escape(caption)}'
           f'</figcaption>') if caption else ""
    return (f'<figure class="cxex-figure" style="margin:.6rem 0"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(" ".join(str(alt).split()), quote=True)}" style="max-width:100%;height:auto">{cap}</figure>')


def show_figure(fig: Any, alt: str | None = None, caption: str | None = None) -> None:
    """Display a figure with alt text (a :class:`cxex_lab.plots.Chart` brings its own).

    The figure is closed in pyplot afterwards, so the inline backend does not show
    it a second time without alt text.
    """
    chart_alt = getattr(fig, "alt", None)
    figure = getattr(fig, "fig", fig)
    alt = alt or chart_alt
    _display_html(figure_html(figure, alt, caption), str(alt))
    try:
        import matplotlib.pyplot as plt

        plt.close(figure)
    except Exception:  # noqa: BLE001 - closing is a courtesy
        pass


def show_plot(plot: Any, data: pd.DataFrame | None, /, *args: Any, caption: str | None = None, **kwargs: Any) -> None:
    """Draw ``plot(data, *args, **kwargs)`` (a :mod:`cxex_lab.plots` function) and show it with its alt text.

    ``None`` or an empty table shows nothing (a table the study could not
    support: the report's notes say why), so a notebook needs no ``if``.
    """
    if data is None or len(data) == 0:
        return
    show_figure(plot(data, *args, **kwargs), caption=caption)


# --------------------------------------------------------------------------- truth check, study facts


def show_truth(findings: Any, title: str = "Truth check (simulated data only)", **fmt: Any) -> None:
    """The truth check of a Findings (``findings.truth``) as a table.

    On real data (a Findings without ``truth``) it says so in one line instead.
    ``fmt`` goes to :func:`table_html` (e.g. ``digits={"truth": 3}``, ``labels=...``).
    """
    truth = findings if isinstance(findings, pd.DataFrame) or findings is None else getattr(findings, "truth", None)
    if truth is None and findings is not None and not isinstance(findings, pd.DataFrame):
        print("Real data: no ground truth to compare with.")
        return
    if truth is None or len(truth) == 0:
        return
    shown = truth.drop(columns=[c for c in ("key",) if c in truth.columns])
    _display_html(f'<h2 style="{_FONT};font-size:1.15rem">{html.escape(title)}</h2>' + table_html(shown, **fmt), title)


#: Known study facts, in the order they are stated, with their wording.
FACT_ORDER: tuple[tuple[str, str, str], ...] = (
    ("employees", "employee", "employees"),
    ("sites", "site", "sites"),
    ("teams", "team", "teams"),
    ("waves", "EX survey wave", "EX survey waves"),
    ("ex_answers", "EX answer", "EX answers"),
    ("interactions", "customer interaction", "customer interactions"),
    ("cx_answers", "CX survey answer", "CX survey answers"),
    ("customers", "customer", "customers"),
)


def study_sentences(facts: Mapping[str, Any]) -> list[str]:
    """Study facts as short sentences (empty when nothing is known).

    Known keys: those of :data:`FACT_ORDER` plus ``period`` (text),
    ``linked_share`` (share of CX answers linked to the handling employee's EX,
    0-1), ``linked`` (a sentence instead) and ``ledger`` (one line: what was set
    aside, and why).
    """
    parts = []
    for key, one, many in FACT_ORDER:
        v = facts.get(key)
        if isinstance(v, (int, float, np.integer)) and not isinstance(v, bool) and not _isnan(v):
            parts.append(f"{int(v):,} {one if int(v) == 1 else many}")
    out = []
    if parts:
        period = f" ({facts['period']})" if facts.get("period") else ""
        out.append("The study: " + ", ".join(parts) + period + ".")
    if facts.get("linked"):
        out.append(str(facts["linked"]).rstrip(".") + ".")
    elif facts.get("linked_share") is not None and not _isnan(facts.get("linked_share")):
        out.append(f"{100 * float(facts['linked_share']):.0f}% of CX answers are linked to the EX of the employee "
                   f"who handled the interaction.")
    if facts.get("ledger"):
        out.append("Set aside on purpose: " + str(facts["ledger"]).rstrip(".") + ".")
    return out


def emit_study(facts: Mapping[str, Any] | None = None, *, visible: bool = True, **more: Any) -> None:
    """Hand study facts to the runner's landing page (and show them as a sentence).

    Parameters
    ----------
    facts : mapping, optional
        E.g. ``{"employees": 400, "waves": 6, "interactions": 100534,
        "linked_share": 0.78, "ledger": "25 CX answers whose interaction is unknown"}``;
        see :func:`study_sentences` for the known keys. Keyword arguments add to it.
    visible : bool
        Show the facts as a short paragraph (default); else emit them only.
    """
    f = _jsonable({**(facts or {}), **more})
    text = " ".join(study_sentences(f))
    shown = f'<p class="cxex-study" style="{_FONT};font-size:15px">{html.escape(text)}</p>' if visible and text else ""
    _display_bundle({"text/html": shown, "text/plain": text if visible else "", STUDY_MIME: {"facts": f}})


# --------------------------------------------------------------------------- display


def _display_bundle(bundle: Mapping[str, Any]) -> None:
    from IPython.display import display

    display(dict(bundle), raw=True)


def _display_html(text: str, plain: str = "") -> None:
    _display_bundle({"text/html": text, "text/plain": plain})


def as_json(payload: Any) -> str:
    """A payload as JSON text (NaN as null)."""
    return json.dumps(_jsonable(payload))
