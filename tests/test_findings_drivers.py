"""findings.drivers (report 04): keys, units, the common-method note (issue 10 acceptance), the
truth check that compares rankings, and the study shapes (touchpoints not asked, asked in some
waves, few employees).

References are independent: statsmodels OLS for R², the simulator's truth for recovery, and
hand-made weight tables for the ranking check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from cxex_lab import findings
from cxex_lab.present import CAUSAL_WORDS, key_findings
from cxex_lab.simulate import TOUCHPOINTS, simulate_study
from cxex_lab.workspace import Workspace

TPS = [f"tp_{t}" for t in TOUCHPOINTS]
ZERO = ["tp_hiring", "tp_pip", "tp_promotion"]  # true weight 0 in the simulator's defaults


@pytest.fixture(scope="module")
def ws():
    return Workspace.from_study(simulate_study(n_sites=4, n_employees=240, n_waves=3, seed=21))


@pytest.fixture(scope="module")
def report(ws):
    return findings.drivers(ws, n_boot=200, seed=2)


def _beats(f, side, terms):
    w = f.details["weights"]
    w = w[(w["side"] == side) & w["term"].isin(terms)]
    return int(w["beats_random"].fillna(False).astype(bool).sum())


def test_keys_kinds_units(report):
    t = report.table
    assert report.report == "drivers"
    expect = {"drivers.ex.r2", "drivers.cx.r2"} | {f"drivers.{s}.share.{tp}" for s in ("ex", "cx") for tp in TPS}
    assert set(t["key"]) == expect
    # weights and R² describe how touchpoints and outcomes go together (same survey on the EX side): associations
    assert (t["kind"] == "association").all() and not t["causal"].any()
    assert (t["unit"] == "share").all()
    # percentile intervals of non-negative weights: ordered, within 0-1 (a weight near 0 may sit below its
    # interval, the upward bias of resampled weights near the boundary)
    assert ((0 <= t["ci_low"]) & (t["ci_low"] < t["ci_high"]) & (t["ci_high"] <= 1)).all()
    big = t["estimate"] > 0.01
    assert ((t.loc[big, "ci_low"] <= t.loc[big, "estimate"]) & (t.loc[big, "estimate"] <= t.loc[big, "ci_high"])).all()
    assert t["method"].str.contains("cluster bootstrap over employees").all()
    w = report.details["weights"]
    assert set(w["side"]) == {"EX", "CX"} and w["beats_random"].notna().all()
    assert {"pct_of_r2", "rank"} <= set(w.columns)


def test_shares_add_up_to_an_r2_equal_to_ols(ws, report):
    t = report.table.set_index("key")["estimate"]
    ex = ws.ex_responses.dropna(subset=["esat", *TPS])
    ols = sm.OLS(ex["esat"], sm.add_constant(ex[TPS])).fit()
    assert t["drivers.ex.r2"] == pytest.approx(ols.rsquared, rel=1e-9)
    assert sum(t[f"drivers.ex.share.{tp}"] for tp in TPS) == pytest.approx(ols.rsquared, rel=1e-9)
    panel = findings.employee_wave_panel(ws, extra=TPS).dropna(subset=["csat", *TPS])
    ols_cx = sm.OLS(panel["csat"], sm.add_constant(panel[TPS])).fit()
    assert t["drivers.cx.r2"] == pytest.approx(ols_cx.rsquared, rel=1e-9)
    assert sum(t[f"drivers.cx.share.{tp}"] for tp in TPS) == pytest.approx(ols_cx.rsquared, rel=1e-9)


def test_key_findings_and_the_rule_a_reader_gets(report):
    sentences = key_findings(report.table)
    assert 2 <= len(sentences) <= 4 and not any(CAUSAL_WORDS.search(s) for s in sentences)
    assert any("customers give" in s for s in sentences)
    text = " ".join(report.notes)
    assert "touches zero" not in text and "touch zero" not in text
    assert "random-reference test" in text and "never negative" in text


def test_with_the_halo_the_report_says_ex_side_weights_absorb_common_method_variance():
    # issue 10 acceptance: default common-method halo on; EX side inflated relative to the CX side
    kw = dict(n_sites=10, n_employees=1200, n_waves=3, seed=1, teams_per_site=12)
    halo = findings.drivers(Workspace.from_study(simulate_study(**kw)), n_boot=200, seed=0)
    notes = " ".join(halo.notes)
    assert "EX-side weights absorb common-method variance" in notes
    assert "same person rates the touchpoints and eSat" in notes
    assert "CX-side drivers" in notes and "shares no rater" in notes
    assert "cm_halo = 0.35" in notes
    assert set(halo.details["weights"]["side"]) == {"EX", "CX"}  # the CX side is shown beside
    # the true-zero touchpoints beat a random variable on the EX side (same rater), not on the CX side
    assert _beats(halo, "EX", ZERO) >= 2
    assert _beats(halo, "EX", ZERO) > _beats(halo, "CX", ZERO)
    # and the halo is what inflates them: the same study without it credits them less on the EX side
    none = findings.drivers(Workspace.from_study(simulate_study(**kw, cm_halo=0.0)), n_boot=200, seed=0)
    t_h, t_0 = halo.table.set_index("key")["estimate"], none.table.set_index("key")["estimate"]
    assert sum(t_h[f"drivers.ex.share.{z}"] for z in ZERO) > 1.5 * sum(t_0[f"drivers.ex.share.{z}"] for z in ZERO)
    assert _beats(none, "EX", ZERO) < _beats(halo, "EX", ZERO)


def test_recovery_without_halo():
    # no halo, many teams: the true-zero touchpoints do not beat random on the EX side, the strong ones do,
    # and the two largest true weights (daily work, coaching) are the EX side's two largest shares
    s = simulate_study(n_sites=10, n_employees=2000, n_waves=3, seed=4, teams_per_site=20, cm_halo=0.0, tp_halo=0.0)
    f = findings.drivers(Workspace.from_study(s), n_boot=200, seed=1)
    assert _beats(f, "EX", ZERO) == 0
    assert _beats(f, "EX", ["tp_daily_work", "tp_coaching", "tp_training"]) == 3
    ex = f.details["weights"].query("side == 'EX'").sort_values("estimate", ascending=False)
    assert set(ex["term"].head(2)) == {"tp_daily_work", "tp_coaching"}
    tr = f.details["truth_ranking"]
    truth = s.truth["derived"]["drivers"]
    assert dict(zip(tr["touchpoint"], tr["true_weight"])) == {findings._tp_label(k): v for k, v in truth.items()}
    assert {"cx_rank", "ex_rank", "cx_beats_random", "ex_beats_random"} <= set(tr.columns)


def test_truth_check_compares_rankings_and_says_when_they_fail():
    true_w = {"tp_a": 0.25, "tp_b": 0.20, "tp_c": 0.10, "tp_z": 0.0}
    ok = pd.DataFrame({"term": list(true_w), "estimate": [9.0, 6.0, 2.0, 0.1], "beats_random": [True, True, True, False]})
    _, notes, summ = findings._ranking_check(ok, true_w, "CX")
    assert summ["ranking_recovered"] and not notes and summ["spearman"] == pytest.approx(1.0)
    swap = ok.assign(estimate=[6.0, 9.0, 2.0, 0.1])  # neighbouring weights swap
    _, notes, summ = findings._ranking_check(swap, true_w, "CX")
    assert not summ["ranking_recovered"] and summ["neighbour_swaps"] == 1
    assert "not recovered" in notes[0] and "neighbouring weights swap: A (true 0.25) ranks below B (true 0.20)" in notes[0]
    fp = ok.assign(estimate=[9.0, 6.0, 0.05, 0.1], beats_random=[True, True, False, True])
    _, notes, summ = findings._ranking_check(fp, true_w, "CX")
    assert summ["zeros_beating_random"] == 1 and summ["nonzero_not_beating_random"] == 1
    assert any("C ranks at or below Z (true 0)" in n for n in notes) and any("true weight of 0 beat the random variable: Z" in n
                                                                for n in notes)


def test_truth_ranking_notes_follow_the_check(report):
    summ = report.details["truth_summary"].set_index("side")
    notes = " ".join(report.notes)
    assert ("CX side (next-period CSAT): the order of the true touchpoint effects is not recovered" in notes) \
        == (not summ.loc["CX", "ranking_recovered"])
    assert report.truth is not None  # observed-scale truths are shown once the harness records them


# --------------------------------------------------------------------------- study shapes
def test_touchpoint_items_not_asked():
    s = simulate_study(n_sites=2, n_employees=40, n_waves=3, seed=1)
    s.ex_responses = s.ex_responses.drop(columns=TPS)
    f = findings.drivers(s, n_boot=50)
    assert f.table.empty
    assert "did not ask the touchpoint items" in f.notes[0]
    assert not any("esat" in n.lower() for n in f.notes)
    assert set(f.details["items"]["waves_asked"]) == {"not asked"}


def test_a_touchpoint_asked_in_some_waves_only():
    s = simulate_study(n_sites=2, n_employees=60, n_waves=3, seed=1)
    s.ex_responses.loc[s.ex_responses["wave"] < 3, "tp_coaching"] = np.nan
    f = findings.drivers(s, n_boot=50)
    assert "drivers.cx.share.tp_coaching" not in set(f.table["key"])
    assert "drivers.ex.share.tp_daily_work" in set(f.table["key"])
    assert any("asked in only some waves" in n and "Coaching (wave 3 of waves 1-3)" in n for n in f.notes)
    items = f.details["items"].set_index("touchpoint")
    assert not items.loc["Coaching", "used"] and items.loc["Daily work", "used"]


def test_few_employees():
    f = findings.drivers(simulate_study(n_sites=1, n_employees=12, n_waves=2, seed=3), n_boot=50)
    assert isinstance(f, findings.Findings)
    notes = " ".join(f.notes)
    assert "clusters" in notes or "needed" in notes


def test_point_estimates_only_for_the_truth_study(ws):
    f = findings.drivers(ws, n_boot=0)
    assert f.table["ci_low"].isna().all() and len(f.table) == 18
    assert f.details["weights"]["beats_random"].isna().all()
