"""cxex_lab.present: key-finding sentences, tables for reading, notes, figures.

Expected strings are written by hand from the rounding and wording rules (the
module docstring), not copied from the code's output.
"""

from __future__ import annotations

import base64
import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from cxex_lab import present
from cxex_lab.findings import Findings, finding, findings_table
from cxex_lab.present import (
    fit_width,
    fmt_estimate,
    fmt_p,
    format_table,
    finding_sentence,
    key_findings,
    link_phrase,
    table_html,
)
from cxex_lab.results import Fit

NAN = float("nan")


def row(**kw):
    base = {"key": "k", "finding": "EX -> CX", "estimand": "change in next-quarter CSAT per eSat point",
            "estimate": 0.1812, "ci_low": 0.1213, "ci_high": 0.2411, "unit": "CSAT points", "n": 1200,
            "n_clusters": 300, "method": "FE", "kind": "association", "causal": False, "caveat": ""}
    return base | kw


@pytest.fixture
def shown(monkeypatch):
    """Display bundles the present functions emit (instead of an IPython kernel)."""
    bundles = []
    monkeypatch.setattr(present, "_display_bundle", lambda b: bundles.append(dict(b)))
    return bundles


# --------------------------------------------------------------------------- numbers

@pytest.mark.parametrize(("args", "expected"), [
    ((0.1812, 0.1213, 0.2411), "0.18 [0.12, 0.24]"),      # half-width 0.06 -> 2 decimals
    ((15.24, 9.1, 21.0), "15 [9, 21]"),                    # half-width 6 -> 0 decimals
    ((-0.4321, -0.9, 0.1), "-0.4 [-0.9, 0.1]"),            # half-width 0.5 -> 1 decimal
    ((0.1812, NAN, NAN), "0.18"),                          # no interval -> no interval text
    ((1046.0, 1000.0, 1090.0), "1,046 [1,000, 1,090]"),   # thousands separators
    ((NAN, NAN, NAN), "–"),
])
def test_fmt_estimate(args, expected):
    assert fmt_estimate(*args) == expected


@pytest.mark.parametrize(("p", "expected"), [(0.0, "<0.001"), (0.0004, "<0.001"), (0.001, "0.001"),
                                             (0.0123, "0.012"), (0.4321, "0.43"), (NAN, "–")])
def test_fmt_p(p, expected):
    assert fmt_p(p) == expected


# --------------------------------------------------------------------------- sentences

def test_link_phrase_follows_causal_flag():
    assert link_phrase(row(kind="effect", causal=True)) == "leads to"
    assert link_phrase(row(kind="effect", causal=False)) == "goes with"
    assert link_phrase(row(kind="association")) == "goes with"
    assert link_phrase(row(kind="descriptive")) == "goes with"


def test_default_sentence_shows_estimate_interval_and_unit():
    assert finding_sentence(row()) == "Change in next-quarter CSAT per eSat point: about 0.18 [0.12, 0.24] CSAT points."


def test_nan_interval_gives_no_interval_text():
    s = finding_sentence(row(ci_low=NAN, ci_high=NAN))
    assert s == "Change in next-quarter CSAT per eSat point: about 0.18 CSAT points."
    assert "[" not in s and "nan" not in s.lower()
    t = finding_sentence(row(ci_low=NAN, ci_high=NAN, sentence="It is {estimate}{interval} {unit}."))
    assert t == "It is 0.18 CSAT points."


def test_template_with_sign_and_absolute_value():
    tpl = ("An agent whose eSat rises one point above their usual level has customers about {abs_value} "
           "CSAT points {sign:happier|less happy} next quarter.")
    assert finding_sentence(row(sentence=tpl)) == (
        "An agent whose eSat rises one point above their usual level has customers about 0.18 [0.12, 0.24] "
        "CSAT points happier next quarter.")
    neg = finding_sentence(row(estimate=-0.1812, ci_low=-0.2411, ci_high=-0.1213, sentence=tpl))
    assert "about 0.18 [0.12, 0.24] CSAT points less happy" in neg


def test_link_placeholder_words_by_flag():
    tpl = "A rise in eSat {link} higher CSAT ({value} {unit})."
    assert finding_sentence(row(sentence=tpl)).startswith("A rise in eSat goes with higher CSAT (0.18 [0.12, 0.24]")
    assert "goes with" in finding_sentence(row(sentence=tpl, kind="effect", causal=False))
    assert "leads to" in finding_sentence(row(sentence=tpl, kind="effect", causal=True))


@pytest.mark.parametrize("word", ["drives", "causes", "leads to", "results in", "driving"])
def test_causal_words_refused_unless_causal(word):
    tpl = f"Higher eSat {word} higher CSAT: {{value}} {{unit}}."
    for kind in ("association", "descriptive", "effect"):
        with pytest.raises(ValueError, match=f"not causal.*{word}"):
            finding_sentence(row(sentence=tpl, kind=kind, causal=False))
    # a causal effect may say so
    assert word in finding_sentence(row(sentence=tpl, kind="effect", causal=True))


def test_never_drives_for_non_causal_default_or_link():
    for kind in ("association", "effect", "descriptive"):
        for tpl in (None, "eSat {link} CSAT, {value} {unit}."):
            s = finding_sentence(row(kind=kind, causal=False, sentence=tpl))
            assert not re.search(r"\b(drive|drives|cause|causes|leads to)\b", s), s


def test_unknown_placeholder_names_the_row():
    with pytest.raises(ValueError, match=r"finding 'k'.*\{effect\}|finding 'k'.*effect"):
        finding_sentence(row(sentence="It is {effect}."))


def test_share_units_read_as_percentages():
    assert finding_sentence(row(kind="descriptive", estimand="CX answers linked to the agent's EX",
                                estimate=0.781, ci_low=NAN, ci_high=NAN, unit="share")) == \
        "CX answers linked to the agent's EX: 78%."


def test_key_findings_two_to_four_sentences_with_main_caveat():
    rows = [finding("a", "EX -> CX", "change in CSAT per eSat point", 0.18, 0.12, 0.24, unit="CSAT points", n=10,
                    n_clusters=5, method="FE", kind="effect", caveat="Stable differences explain most of it."),
            finding("b", "CX -> EX", "change in eSat per CSAT point", 0.02, -0.03, 0.07, unit="eSat points", n=10,
                    method="FE", kind="effect"),
            finding("c", "share", "between share", 0.7, unit="share", n=10, method="x", kind="descriptive"),
            finding("d", "more", "another", 1.0, unit="u", n=10, method="x", kind="descriptive")]
    table = findings_table(rows, harness={})
    s = key_findings(table)
    assert 2 <= len(s) <= 5
    assert s[0] == "Change in CSAT per eSat point: about 0.18 [0.12, 0.24] CSAT points."
    # the author's caveat is the main one; the harness sentence appended to it is not repeated here
    assert s[-2] == "Stable differences explain most of it."
    # ... but the reader is told that the effects are read as associations
    assert s[-1] == ("None of these estimates passed the replicate-study check of its interval, so each is read as an "
                     "association, not as an effect.")
    # rows flagged as headline choose the sentences
    table["headline"] = [False, True, False, False]
    assert key_findings(table)[0].startswith("Change in eSat per CSAT point")
    assert key_findings(table.iloc[0:0]) == []


def test_effect_that_failed_the_harness_is_worded_as_association():
    rows = [finding("a", "EX -> CX", "x", 0.18, 0.12, 0.24, unit="u", n=10, method="FE", kind="effect")]
    failed = findings_table(rows, harness={"a": {"passed": False, "coverage": 0.81, "bias_se": 0.1}})
    passed = findings_table(rows, harness={"a": {"passed": True, "coverage": 0.95, "bias_se": 0.0}})
    tpl = "eSat {link} CSAT."
    assert finding_sentence(failed.iloc[0].to_dict() | {"sentence": tpl}) == "eSat goes with CSAT."
    assert finding_sentence(passed.iloc[0].to_dict() | {"sentence": tpl}) == "eSat leads to CSAT."
    assert key_findings(failed)[-2].startswith("Read as an association: its 95% interval covered the truth in 81%")
    assert key_findings(failed)[-1].startswith("None of these estimates passed")
    assert not any("replicate-study check" in x for x in key_findings(passed))


# --------------------------------------------------------------------------- the key findings section

def test_show_findings_emits_section_and_machine_readable_table(shown):
    rows = [finding("a", "EX -> CX", "change in CSAT per eSat point", 0.18, 0.12, 0.24, unit="CSAT points", n=1200,
                    n_clusters=300, method="FE", kind="association", caveat="Read with care.")]
    f = Findings(report="direction", table=findings_table(rows, harness={}), notes=("Too few clusters (8).",))
    assert present.show_findings(f) is None
    (bundle,) = shown
    html = bundle["text/html"]
    assert 'id="key-findings"' in html and ">Key findings</h2>" in html
    assert "0.18 [0.12, 0.24]" in html
    assert 'class="cxex-note"' in html and "Too few clusters (8)." in html
    payload = bundle[present.FINDINGS_MIME]
    assert payload["report"] == "direction"
    assert payload["sentences"][0] == "Change in CSAT per eSat point: about 0.18 [0.12, 0.24] CSAT points."
    assert payload["headline"]["key"] == "a" and payload["findings"][0]["n_clusters"] == 300
    assert payload["notes"] == ["Too few clusters (8)."]
    import json

    json.dumps(payload, allow_nan=False)  # NaN became null: strict JSON


def test_notes_from_fit_findings_and_strings(shown):
    fit = Fit(method="m", n_obs=10, notes=("The model did not converge.",))
    f = Findings(report="r", table=pd.DataFrame(), notes=("Only 6 clusters.", "The model did not converge."))
    assert present.notes_of(fit, f, "Extra.", ["Extra."]) == ["The model did not converge.", "Only 6 clusters.", "Extra."]
    present.show_notes(fit, f)
    assert shown[0]["text/html"].count('role="note"') == 2 and "Note.</strong>" in shown[0]["text/html"]
    present.show_notes(())
    assert len(shown) == 1, "no notes -> nothing displayed"


# --------------------------------------------------------------------------- tables

def tidy():
    return pd.DataFrame({
        "term": ["esat->csat", "csat->esat"], "estimate": [0.1812, -0.0204], "se": [0.03, 0.025],
        "ci_low": [0.1213, -0.0694], "ci_high": [0.2411, 0.0286], "p": [0.00002, 0.4321], "n": [1200, 1200],
    })


def test_format_table_reads_like_a_report():
    t = format_table(tidy(), values={"term": {"esat->csat": "eSat -> next CSAT"}}, units={"estimate": "CSAT points"},
                     drop=["se"])
    assert list(t.columns) == ["Term", "Estimate [95% CI] (CSAT points)", "p", "n"]
    assert t.iloc[0].tolist() == ["eSat -> next CSAT", "0.18 [0.12, 0.24]", "<0.001", "1,200"]
    assert t.iloc[1].tolist() == ["csat->esat", "-0.02 [-0.07, 0.03]", "0.43", "1,200"]


def test_format_table_drops_index_and_never_leaves_blanks():
    df = pd.DataFrame({"respondents": [12, np.nan, 40], "esat_mean": [3.456, np.nan, np.nan],
                       "suppressed": [False, True, False]}, index=pd.Index(["S01", "S02", "S03"], name="site_id"))
    t = format_table(df, min_group_size=5)
    assert list(t.columns) == ["Site", "Respondents", "Mean eSat (1-5)"]  # the named index became a column
    assert t.iloc[1].tolist() == ["S02", "n < 5", "n < 5"]              # suppressed, with the actual minimum
    assert t.iloc[2, 2] == "–"                                           # missing but not suppressed
    assert t.iloc[0, 2] == "3.46"
    assert (t != "").all().all()
    assert format_table(df, min_group_size=10).iloc[1, 1] == "n < 10"
    plain = format_table(pd.DataFrame({"a": [1.0]}))
    assert list(plain.columns) == ["A"] and len(plain) == 1  # a default 0..n-1 index is not shown


def test_wide_table_is_transposed_or_split():
    few = pd.DataFrame({"site_id": ["S01", "S02"], **{f"touchpoint_rating_{i}": [3.2, 4.1] for i in range(12)}})
    (part,) = fit_width(format_table(few), max_chars=100)
    assert list(part.columns) == ["", "S01", "S02"] and len(part) == 12   # transposed
    many = pd.DataFrame({"site_id": [f"S{i:02d}" for i in range(20)],
                         **{f"touchpoint_rating_{i}": np.linspace(1, 5, 20) for i in range(12)}})
    parts = fit_width(format_table(many), max_chars=100)
    assert len(parts) > 1 and all(p.columns[0] == "Site" for p in parts)  # split, row labels repeated
    shown_cols = [c for p in parts for c in p.columns[1:]]
    assert len(shown_cols) == 12 and len(set(shown_cols)) == 12
    for p in parts:
        width = sum(max(max(len(str(v)) for v in p[c]), max(len(w) for w in str(c).split() or [""]),
                        min(len(str(c)), 14)) + 3 for c in p.columns)
        assert width <= 100


def test_table_html_is_offline_and_self_contained():
    html = table_html(tidy(), title="Lagged effects", min_group_size=5)
    assert "<table" in html and "Lagged effects" in html and "0.18 [0.12, 0.24]" in html
    assert "&lt;0.001" in html or "<0.001" in html
    assert not re.search(r"https?://", html), "no URL: nothing is fetched"
    assert "@import" not in html and "<script" not in html and "<link" not in html
    assert table_html(tidy()) == table_html(tidy()), "deterministic (stable element ids)"


# --------------------------------------------------------------------------- figures, facts

def test_figure_html_needs_alt_and_embeds_png():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="alt text"):
        present.figure_html(fig, "  ")
    html = present.figure_html(fig, 'A line "up"')
    m = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"', html)
    assert m and base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert m.group(2) == "A line &quot;up&quot;"
    plt.close(fig)


def test_show_figure_uses_chart_alt_and_closes_the_figure(shown):
    import matplotlib.pyplot as plt

    from cxex_lab.plots import forest

    chart = forest(tidy().assign(unit="CSAT points"))
    present.show_figure(chart)
    import html as htmllib

    alt = re.search(r'alt="([^"]*)"', shown[0]["text/html"]).group(1)
    assert htmllib.unescape(alt) == chart.alt and "CSAT points" in chart.alt
    assert chart.fig.number not in plt.get_fignums()


def test_study_sentences_and_emit_study(shown):
    s = present.study_sentences({"employees": 400, "sites": 1, "waves": 6, "interactions": 100534,
                                 "linked_share": 0.781, "ledger": "25 CX answers whose interaction is unknown"})
    assert s == ["The study: 400 employees, 1 site, 6 EX survey waves, 100,534 customer interactions.",
                 "78% of CX answers are linked to the EX of the employee who handled the interaction.",
                 "Set aside on purpose: 25 CX answers whose interaction is unknown."]
    assert present.study_sentences({}) == []
    assert present.emit_study({"employees": 3, "x": math.nan}) is None
    assert shown[0][present.STUDY_MIME] == {"facts": {"employees": 3, "x": None}}
