"""cxex_lab.plots: one style, units on the axes, alt text, a forest plot that never
mixes units on one axis."""

from __future__ import annotations

import re
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cxex_lab import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def estimates():
    return pd.DataFrame({
        "term": ["a path: eSat -> resolution", "b path: resolution -> CSAT", "indirect", "direct"],
        "estimate": [0.04, 1.9, 0.08, 0.1], "ci_low": [0.02, 1.2, 0.03, 0.04], "ci_high": [0.06, 2.6, 0.13, 0.16],
        "unit": ["resolution share per eSat point", "CSAT points per resolution share", "CSAT points per eSat point",
                 "CSAT points per eSat point"],
    })


def test_forest_puts_each_unit_on_its_own_axis():
    df = estimates()
    chart = plots.forest(df, title="Mediation")
    units = list(dict.fromkeys(df["unit"]))
    assert len(chart.axes) == len(units) == 3
    for ax, unit in zip(chart.axes, units):
        assert ax.get_xlabel() == unit
        shown = [t.get_text() for t in ax.get_yticklabels()]
        assert shown == df.loc[df["unit"] == unit, "term"].tolist(), "every term sits on the axis of its own unit"
    for unit in units:
        assert unit in chart.alt
    assert chart.alt.startswith("Forest plot: Mediation.")


def test_forest_without_a_unit_warns_and_says_so_on_the_axis():
    df = estimates().drop(columns="unit")
    with pytest.warns(UserWarning, match="unit is not stated"):
        chart = plots.forest(df)
    assert chart.axes[0].get_xlabel() == "estimate (unit not stated)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = plots.forest(df, xlabel="% of R²")
    assert one.axes[0].get_xlabel() == "% of R²"


def test_forest_truth_marks_and_hue():
    df = pd.concat([estimates().assign(model="A"), estimates().assign(model="B")], ignore_index=True)
    chart = plots.forest(df, hue="model", truth={"indirect": 0.07})
    ax = chart.axes[2]  # the CSAT-per-eSat panel holds "indirect"
    marks = [ln for ln in ax.get_lines() if ln.get_label() == "truth"]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == pytest.approx(0.07)
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"A", "B", "truth"}
    assert "red marks" in chart.alt


def test_mirror_axes_are_in_each_dimensions_unit():
    rows = []
    for site in ("S01", "S02"):
        for dim, metric_ex, metric_cx, stat, est in (("Ease", "EES", "CES", "mean", 4.4),
                                                      ("Recommendation", "eNPS", "NPS", "net score", -10.0),
                                                      ("Satisfaction", "eSat", "CSAT", "top-box %", 55.0)):
            for side, metric in (("EX", metric_ex), ("CX", metric_cx)):
                rows.append({"site_id": site, "dimension": dim, "side": side, "metric": metric, "statistic": stat,
                             "estimate": est, "ci_low": est - 1, "ci_high": est + 1})
    df = pd.DataFrame(rows)
    df.loc[(df["site_id"] == "S02") & (df["side"] == "EX"), ["estimate", "ci_low", "ci_high"]] = np.nan  # suppressed
    chart = plots.mirror(df, x="site_id")
    assert [ax.get_ylabel() for ax in chart.axes] == ["Mean score (1-7 scale)", "Net score (-100 to 100)",
                                                      "Top-2-box share (%)"]
    assert all(ax.get_xlabel() == "Site" for ax in chart.axes)
    assert "3 value(s) suppressed" in chart.alt
    assert plots.mirror_plot(df, "site_id").alt  # the former name still works


def test_response_rates_in_percent():
    rates = pd.DataFrame({"side": ["EX", "EX", "CX", "CX", "CX"], "wave": [1, 2, 0, 1, 2],
                          "rate": [0.85, 0.8, 0.3, 0.21, 0.2]})
    chart = plots.response_rates(rates)
    ax = chart.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [20.0, 21.0, 80.0, 85.0], "wave 0 left out, rates drawn as %"
    assert ax.get_ylabel() == "Response rate (%)" and ax.get_ylim() == (0, 100)
    assert "EX 80% to 85%" in chart.alt and "CX 20% to 21%" in chart.alt


def test_company_vs_linked_reports_both_correlations():
    rng = np.random.default_rng(3)
    linked = pd.DataFrame({"esat": rng.integers(1, 6, 200).astype(float)})
    linked["csat"] = 3 + 0.2 * linked["esat"] + rng.normal(0, 0.5, 200)
    company = linked.assign(period=np.arange(200) % 5).groupby("period")[["esat", "csat"]].mean()
    chart = plots.company_vs_linked(company, linked)
    r = np.corrcoef(linked["esat"], linked["csat"])[0, 1]
    assert f"correlation {r:.2f}" in chart.alt
    assert all("(1-5)" in ax.get_xlabel() and "(1-5)" in ax.get_ylabel() for ax in chart.axes)


def test_power_curves_one_panel_per_wave_count():
    grid = pd.DataFrame([{"n_units": u, "n_waves": w, "effect": e, "power": p}
                         for w in (3, 5) for e in (0.0, 0.15) for u, p in ((100, 0.3 if e else 0.05), (400, 0.9 if e else 0.06))])
    chart = plots.power_curves(grid)
    assert [ax.get_title() for ax in chart.axes] == ["3 waves", "5 waves"]
    assert chart.axes[0].get_ylabel().startswith("Power (%")
    assert [ln.get_ydata()[-1] for ln in chart.axes[0].get_lines()][:2] == [pytest.approx(6.0), pytest.approx(90.0)]


def decay_table():
    return pd.DataFrame({
        "gap": ["< 10 min", "10 min to 1 h", "1 h to 4 h"], "estimate": [0.19, 0.16, -0.02],
        "ci_low": [0.12, 0.05, -0.3], "ci_high": [0.26, 0.27, 0.26], "n": [700, 650, 1200],
        "unit": ["CSAT points (1-5) per CSAT point"] * 3, "truth": [0.2, 0.17, np.nan],
    })


def test_carry_over_by_gap_one_axis_in_the_estimates_unit_with_pairs_and_truth():
    chart = plots.carry_over_by_gap(decay_table(), truth="truth", title="Carry-over by gap")
    (ax,) = chart.axes
    assert "CSAT points (1-5)" in ax.get_ylabel() and ax.get_xlabel().startswith("Time since")
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["< 10 min\n700 pairs", "10 min to 1 h\n650 pairs", "1 h to 4 h\n1,200 pairs"]
    # the points are the estimates in table order (shortest gap first); truth marks only where known
    (bars,) = ax.containers
    assert bars.get_label() == "estimate (95% CI)"
    np.testing.assert_allclose(bars.lines[0].get_ydata(), [0.19, 0.16, -0.02])
    marks = [ln for ln in ax.get_lines() if ln.get_label() == "truth"][0]
    np.testing.assert_allclose(marks.get_ydata(), [0.2, 0.17])
    assert "< 10 min: 0.19 [0.12, 0.26]" in chart.alt and "1 h to 4 h: -0.02 [-0.30, 0.26]" in chart.alt


def test_carry_over_by_gap_refuses_mixed_or_missing_units():
    with pytest.raises(ValueError, match="one 'unit' for all rows"):
        plots.carry_over_by_gap(decay_table().assign(unit=["a", "b", "a"]))
    with pytest.raises(ValueError, match="one 'unit' for all rows"):
        plots.carry_over_by_gap(decay_table().drop(columns="unit"))
    assert plots.carry_over_by_gap(decay_table().drop(columns="unit"), ylabel="CSAT points").axes[0].get_ylabel() == "CSAT points"
    with pytest.raises(ValueError, match=r"column\(s\) \['gap'\] missing"):
        plots.carry_over_by_gap(decay_table().drop(columns="gap"))


def test_chart_displays_itself_with_alt_text_and_house_style():
    chart = plots.forest(estimates())
    bundle = chart._repr_mimebundle_()
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="Forest plot', bundle["text/html"])
    assert bundle["text/plain"] == chart.alt
    assert chart.fig.number not in plt.get_fignums(), "closed: the inline backend will not show it again"
    assert chart.png()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(not ax.spines["top"].get_visible() for ax in chart.axes)


# --------------------------------------------------------------------------- report 08
def test_power_curves_labels_effects_in_survey_units_and_rings_this_study():
    grid = pd.DataFrame([{"n_employees": n, "n_waves": w, "effect": e, "effect_observed": 0.4 * e, "estimate": p,
                          "ci_low": p - 0.05, "ci_high": min(1, p + 0.05), "this_study": n == 400 and w == 6}
                         for w in (3, 6) for e in (0.1, 0.25) for n, p in ((100, 0.2), (400, 0.7))])
    chart = plots.power_curves(grid, x="n_employees", power="estimate", ci=("ci_low", "ci_high"))
    labels = [t.get_text() for t in chart.fig.legends[0].get_texts()]
    assert "0.04 CSAT points per eSat point (latent 0.1)" in labels and "this study's design" in labels
    ring = [ln for ln in chart.axes[1].get_lines() if ln.get_marker() == "o" and ln.get_markerfacecolor() == "none"]
    assert len(ring) == 1 and list(ring[0].get_xdata()) == [400, 400]  # both effects at this study's design
    assert "employees from 100 to 400" in chart.alt


def test_power_by_effect_axes_in_survey_units_with_reference_lines():
    own = pd.DataFrame({"effect": [0.0, 0.1, 0.25], "effect_observed": [0.0, 0.04, 0.1],
                        "estimate": [0.06, 0.5, 0.97], "ci_low": [0.04, 0.43, 0.94], "ci_high": [0.08, 0.57, 0.99]})
    chart = plots.power_by_effect(own, observed=0.1)
    ax = chart.axes[0]
    assert "CSAT points per eSat point" in ax.get_xlabel() and ax.get_ylabel().startswith("Power (%")
    ys = sorted({round(float(ln.get_ydata()[0]), 6) for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1})
    assert 5.0 in ys and 80.0 in ys  # the false-alarm and the 80% lines
    assert "80% power is reached at about 0.1" in chart.alt and "0.04" not in chart.alt.split("reached")[0][-5:]


def test_sensitivity_contours_zero_line_benchmarks_and_view():
    xs = np.round(np.arange(0, 0.51, 0.01), 2)
    g = pd.DataFrame([(a, b) for a in xs for b in xs], columns=["r2dz_x", "r2yz_dx"])
    g["estimate"] = 0.1 - 0.6 * np.sqrt(g["r2dz_x"] * g["r2yz_dx"])  # reaches 0 at about 2.8% of both
    bounds = pd.DataFrame({"scenario": ["No confounder (the headline)", "0.1x stable traits", "1x site",
                                        "At the robustness value"],
                           "share_of_esat": [0.0, 0.12, 0.0, 0.028], "share_of_csat": [0.0, 0.03, 0.05, 0.028]})
    chart = plots.sensitivity_contours(g, bounds, rv=0.028)
    ax = chart.axes[0]
    assert "(%)" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
    assert ax.get_xlim()[1] == pytest.approx(100 * 0.12 * 1.15, rel=0.02)  # the view spans the benchmarks
    texts = [t.get_text() for t in ax.texts]
    assert "0.1x stable traits" in texts and "1x site" in texts and "robustness value 2.8%" in texts
    assert not any("At the robustness" in t for t in texts)  # drawn once, as the diamond
    assert "red dashed line marks where it reaches 0" in chart.alt and "0.1x stable traits, 1x site" in chart.alt
