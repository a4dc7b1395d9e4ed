"""Mirror metrics: values, interval coverage, bad input, and the EX/CX mirror table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxex_lab.metrics import ces, csat, enps, ees, esat, mirror, nps
from cxex_lab.simulate import simulate_study


def test_nps_textbook_value():
    # 4 promoters, 3 passives, 3 detractors of 10 -> NPS = 10
    res = nps([10, 9, 9, 10, 7, 8, 8, 0, 5, 6]).iloc[0]
    assert res["estimate"] == pytest.approx(10.0)
    assert res["promoters"] == 0.4 and res["detractors"] == 0.3
    assert res["se"] == pytest.approx(100 * np.sqrt((0.7 - 0.01) / 10))
    assert res["ci_low"] < 10 < res["ci_high"]


def test_csat_wilson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    scores = [5, 4, 4, 3, 2, 5, 1, 4, 5, 5, 3, 4]
    res = csat(scores).iloc[0]
    k = sum(s >= 4 for s in scores)
    lo, hi = proportion_confint(k, len(scores), method="wilson")
    assert res["estimate"] == pytest.approx(100 * k / len(scores))
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((100 * lo, 100 * hi))


def test_ces_mean_and_t_interval():
    x = np.array([7, 6, 5, 6, 4, 7])
    res = ces(x).iloc[0]
    half = stats.t.ppf(0.975, 5) * x.std(ddof=1) / np.sqrt(6)
    assert res["estimate"] == pytest.approx(x.mean())
    assert res["ci_high"] - res["estimate"] == pytest.approx(half)


def test_employee_twins_use_the_same_maths():
    s = [9, 10, 3, 7]
    assert enps(s)["estimate"].item() == nps(s)["estimate"].item()
    assert enps(s)["metric"].item() == "eNPS"
    assert esat([5, 4, 1])["estimate"].item() == pytest.approx(200 / 3)
    assert ees([1, 7])["estimate"].item() == 4.0


def test_missing_answers_are_counted():
    res = nps(pd.Series([10, None, 9, np.nan]))
    assert res[["n", "n_missing"]].iloc[0].tolist() == [2, 2]


@pytest.mark.parametrize(
    "func, scores, msg",
    [
        (nps, [10, 11, 5], r"nps must be whole numbers 0-10; 1 value\(s\) out of range, e.g. rows 1 \(values 11.0\)"),
        (csat, [0, 3, 5], r"csat must be whole numbers 1-5; 1 value\(s\) out of range, e.g. rows 0 \(values 0.0\)"),
        (ces, [1, 8, 9], r"ces must be whole numbers 1-7; 2 value\(s\) out of range, e.g. rows 1, 2"),
        (nps, ["high", "low"], r"nps must hold numbers"),
        (nps, [np.nan, np.nan], r"nps: no answers to compute from \(2 missing, 0 valid\)"),
        (esat, [3.5], r"esat must be whole numbers 1-5"),
    ],
)
def test_bad_scores_are_named(func, scores, msg):
    with pytest.raises(ValueError, match=msg):
        func(scores)


def _coverage(func, probs, values, n, draws, truth, seed):
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        x = rng.choice(values, size=n, p=probs)
        r = func(x).iloc[0]
        hits += r["ci_low"] <= truth <= r["ci_high"]
    return hits / draws


def test_nps_interval_has_nominal_coverage():
    probs = np.array([0.03, 0.02, 0.02, 0.03, 0.03, 0.05, 0.07, 0.12, 0.18, 0.20, 0.25])
    truth = 100 * (probs[9:].sum() - probs[:7].sum())
    cover = _coverage(nps, probs, np.arange(11), 200, 1000, truth, seed=1)
    assert 0.93 <= cover <= 0.97, cover


def test_csat_and_ces_intervals_have_nominal_coverage():
    probs = np.array([0.07, 0.08, 0.15, 0.30, 0.40])
    cover = _coverage(csat, probs, np.arange(1, 6), 200, 1000, 70.0, seed=2)
    assert 0.93 <= cover <= 0.97, cover
    p7 = np.array([0.04, 0.05, 0.08, 0.13, 0.22, 0.26, 0.22])
    cover = _coverage(ces, p7, np.arange(1, 8), 200, 1000, float((np.arange(1, 8) * p7).sum()), seed=3)
    assert 0.93 <= cover <= 0.97, cover


@pytest.fixture(scope="module")
def mirror_study():
    return simulate_study(n_sites=3, n_employees=60, n_waves=3, seed=1, orphan_responses=10)


def test_mirror_by_site_matches_raw_metrics(mirror_study):
    s = mirror_study
    tab = mirror(s, by="site_id")
    assert len(tab) == 3 * 3 * 2  # sites x dimensions x sides
    assert set(tab.columns) >= {"site_id", "dimension", "side", "metric", "estimate", "ci_low", "ci_high", "n", "suppressed"}
    assert not {"employee_id", "customer_id", "interaction_id"} & set(tab.columns)
    raw = (
        s.cx_responses.merge(s.interactions[["interaction_id", "employee_id"]], on="interaction_id")
        .merge(s.employees[["employee_id", "site_id"]], on="employee_id")
    )
    expect = nps(raw.loc[raw["site_id"] == "S02", "nps"])["estimate"].item()
    got = tab.query("site_id == 'S02' and metric == 'NPS'")["estimate"].item()
    assert got == pytest.approx(expect)
    ex_raw = s.ex_responses.merge(s.employees[["employee_id", "site_id"]], on="employee_id")
    got_ex = tab.query("site_id == 'S01' and metric == 'eSat'")["n"].item()
    assert got_ex == (ex_raw["site_id"] == "S01").sum()
    # orphan responses are counted, not silently dropped
    led = tab.attrs["ledger"]
    assert led.loc[led["rule"].str.startswith("response links to no interaction"), "rows_excluded"].item() == 10


def test_mirror_by_wave_and_suppression(mirror_study):
    tab = mirror(mirror_study, by="site_id", period="wave", min_group_size=25)
    small = tab["n"].notna() & (tab["n"] < 25)
    assert not small.any()
    assert tab["suppressed"].any() and tab.loc[tab["suppressed"], "estimate"].isna().all()
    assert set(tab["wave"]) == {1, 2, 3}


def test_mirror_bad_arguments(mirror_study):
    with pytest.raises(ValueError, match="by must be None, 'site_id' or 'team_id'"):
        mirror(mirror_study, by="employee_id")
    with pytest.raises(ValueError, match="min_group_size must be a whole number >= 1"):
        mirror(mirror_study, min_group_size=0)
