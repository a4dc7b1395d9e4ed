"""cxex_lab.plots additions for reports 03 and 04: agreement_by_wave, linked_views, drivers.

Units on the axes, alt text that states what is drawn, suppressed values not drawn.
"""

from __future__ import annotations

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


def test_agreement_by_wave_draws_each_index_and_the_bar():
    df = pd.DataFrame({"wave": [1, 2, 3], "icc1": [0.1, 0.08, 0.05], "icc2": [0.55, 0.41, 0.2],
                       "rwg_uniform": [0.4, 0.39, 0.33], "rwg_slight_skew": [0.24, 0.23, 0.2], "n_groups": [40, 40, 40]})
    chart = plots.agreement_by_wave(df, title="eSat to teams")
    ax = chart.axes[0]
    assert ax.get_ylabel() == "Index value (0-1)" and ax.get_xlabel() == "Survey wave"
    lines = ax.get_lines()
    assert [list(ln.get_ydata()) for ln in lines[:4]] == [df[c].tolist() for c in ("icc1", "icc2", "rwg_uniform",
                                                                                   "rwg_slight_skew")]
    assert any(list(ln.get_ydata()) == [0.7, 0.7] for ln in lines)  # the usual bar
    assert "ICC(2): reliability of a group mean from 0.20 to 0.55" in chart.alt and "3 waves" in chart.alt
    with pytest.raises(ValueError, match="no index column"):
        plots.agreement_by_wave(df[["wave", "n_groups"]])


def test_linked_views_panels_units_and_suppressed_answers():
    company = pd.DataFrame({"wave": [1, 2, 3], "esat_mean": [3.4, 3.5, 3.6], "csat_mean": [3.3, 3.2, 3.4]})
    by_answer = pd.DataFrame({"esat": [1.0, 2.0, 3.0, 4.0, 5.0], "estimate": [np.nan, 2.8, 3.2, 3.7, 4.1],
                              "ci_low": [np.nan, 2.6, 3.1, 3.6, 4.0], "ci_high": [np.nan, 3.0, 3.3, 3.8, 4.2]})
    chart = plots.linked_views(company, by_answer, r_company=0.12, r_linked=0.5)
    left, right = chart.axes
    assert "(1-5)" in left.get_xlabel() and "(1-5)" in left.get_ylabel() and "(1-5)" in right.get_ylabel()
    assert "r = 0.12" in left.get_title() and "r = 0.50" in right.get_title()
    assert len(right.get_xticks()) == 4  # the suppressed answer is not drawn
    assert "1 answer level(s) suppressed" in chart.alt and "correlation 0.50" in chart.alt
    corr = pd.DataFrame({"view": ["Company level: wave means", "Linked: employee x wave"], "estimate": [0.3, 0.45]})
    chart = plots.linked_views(company, by_answer, correlations=corr)
    assert "r = 0.30" in chart.axes[0].get_title() and "r = 0.45" in chart.axes[1].get_title()


def test_drivers_one_panel_per_side_filled_when_beating_random():
    w = pd.DataFrame({
        "side": ["EX", "EX", "CX", "CX"], "touchpoint": ["Coaching", "Hiring", "Coaching", "Hiring"],
        "estimate": [10.0, 1.0, 2.7, 0.05], "ci_low": [7.7, 0.4, 1.4, 0.03], "ci_high": [12.5, 1.8, 4.5, 0.5],
        "unit": ["% of the variance of eSat"] * 2 + ["% of the variance of CSAT"] * 2,
        "beats_random": [True, True, True, False]})
    r2 = pd.DataFrame({"side": ["EX", "CX"], "random_ci_low": [0.0, 0.0], "random_ci_high": [0.4, 0.3]})
    chart = plots.drivers(w, random=r2)
    ex, cx = chart.axes
    assert (ex.get_title(), cx.get_title()) == ("EX side", "CX side")
    assert ex.get_xlabel() == "% of the variance of eSat" and cx.get_xlabel() == "% of the variance of CSAT"
    assert [t.get_text() for t in ex.get_yticklabels()] == ["Coaching", "Hiring"]  # shared by both panels
    filled, hollow = cx.collections[1], cx.collections[2]
    assert len(filled.get_offsets()) == 1 and len(hollow.get_offsets()) == 1
    assert "CX side (% of the variance of CSAT): 1 of 2 touchpoints beat a random variable" in chart.alt
    assert "EX side (% of the variance of eSat): 2 of 2" in chart.alt
    with pytest.raises(ValueError, match="missing"):
        plots.drivers(w.drop(columns="unit"))
