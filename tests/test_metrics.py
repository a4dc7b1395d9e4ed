"""Mirror metrics: worked values, interval coverage, bad input, and the EX/CX mirror table."""

from __future__ import annotations

from cxex_lab.ledger import ledger_of

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxex_lab.metrics import (
    ces,
    csat,
    ees,
    enps,
    esat,
    mean_ci,
    mirror,
    net_score_ci,
    nps,
    proportion_ci,
)
from cxex_lab.simulate import simulate_study

# Marginal distributions of a contact-centre survey (the simulator's targets).
P_NPS = np.array([0.03, 0.02, 0.02, 0.03, 0.03, 0.05, 0.07, 0.12, 0.18, 0.20, 0.25])
P_CSAT = np.array([0.07, 0.08, 0.15, 0.30, 0.40])
P_CES = np.array([0.04, 0.05, 0.08, 0.13, 0.22, 0.26, 0.22])


# --------------------------------------------------------------------------- worked values
def test_nps_worked_example():
    # 4 promoters (9-10), 3 passives (7-8), 3 detractors (0-6) of 10: NPS = 40 - 30 = 10
    res = nps([10, 9, 9, 10, 7, 8, 8, 0, 5, 6]).iloc[0]
    assert res["metric"] == "NPS" and res["statistic"] == "net score"
    assert res["estimate"] == pytest.approx(10.0)
    assert (res["promoters"], res["passives"], res["detractors"]) == pytest.approx((0.4, 0.3, 0.3))
    # Var = (p_pro + p_det - (p_pro - p_det)^2) / n = (0.7 - 0.01) / 10
    assert res["se"] == pytest.approx(100 * np.sqrt(0.069))
    # adjusted Wald: 4.75 promoters and 3.75 detractors of 13
    pa, da = 4.75 / 13, 3.75 / 13
    half = stats.norm.ppf(0.975) * np.sqrt((pa + da - (pa - da) ** 2) / 13)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((100 * (pa - da - half), 100 * (pa - da + half)))
    assert res["method"] == "adjusted_wald"
    wald = nps([10, 9, 9, 10, 7, 8, 8, 0, 5, 6], method="wald").iloc[0]
    assert wald["ci_high"] - wald["estimate"] == pytest.approx(stats.norm.ppf(0.975) * res["se"])


def test_nps_interval_is_clipped_to_the_scale():
    res = nps([10] * 5).iloc[0]
    assert res["estimate"] == 100 and res["ci_high"] == 100 and res["ci_low"] < 100


def test_csat_wilson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    scores = [5, 4, 4, 3, 2, 5, 1, 4, 5, 5, 3, 4]
    k = sum(s >= 4 for s in scores)
    for method, sm in (("wilson", "wilson"), ("agresti_coull", "agresti_coull"), ("wald", "normal")):
        res = csat(scores, method=method).iloc[0]
        lo, hi = proportion_confint(k, len(scores), method=sm)
        assert res["estimate"] == pytest.approx(100 * k / len(scores))
        assert (res["ci_low"], res["ci_high"]) == pytest.approx((100 * lo, 100 * hi)), method
    assert csat(scores).iloc[0]["top_box"] == "4,5"


def test_top_box_as_threshold_list_or_mean():
    scores = [5, 4, 3, 5, 2]
    assert csat(scores, top_box=5)["estimate"].item() == pytest.approx(40.0)
    assert csat(scores, top_box=[5])["estimate"].item() == pytest.approx(40.0)
    assert csat(scores, top_box=3)["estimate"].item() == pytest.approx(80.0)
    as_mean = csat(scores, top_box=None).iloc[0]
    assert as_mean["statistic"] == "mean" and as_mean["estimate"] == pytest.approx(3.8)
    top = ces([7, 6, 5, 2], top_box=6).iloc[0]
    assert top["statistic"] == "top-box %" and top["estimate"] == pytest.approx(50.0) and top["mean"] == 5.0


def test_ces_mean_and_t_interval():
    x = np.array([7, 6, 5, 6, 4, 7])
    res = ces(x).iloc[0]
    half = stats.t.ppf(0.975, 5) * x.std(ddof=1) / np.sqrt(6)
    assert res["statistic"] == "mean"
    assert res["estimate"] == pytest.approx(x.mean())
    assert res["se"] == pytest.approx(x.std(ddof=1) / np.sqrt(6))
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    # matches scipy's t interval
    lo, hi = stats.t.interval(0.95, 5, loc=x.mean(), scale=stats.sem(x))
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((lo, hi))


def test_employee_twins_use_the_same_maths():
    s = [9, 10, 3, 7]
    cols = ["estimate", "se", "ci_low", "ci_high", "n"]
    assert enps(s)[cols].equals(nps(s)[cols])
    assert enps(s)["metric"].item() == "eNPS"
    assert esat([5, 4, 1])[cols].equals(csat([5, 4, 1])[cols]) and esat([5, 4, 1])["metric"].item() == "eSat"
    assert ees([1, 7])[cols].equals(ces([1, 7])[cols]) and ees([1, 7])["metric"].item() == "EES"


def test_missing_answers_are_dropped_and_counted():
    res = nps(pd.Series([10, None, 9, np.nan, 3])).iloc[0]
    assert (res["n"], res["n_missing"]) == (3, 2)
    assert res["estimate"] == pytest.approx(100 * (2 / 3 - 1 / 3))
    assert csat(pd.Series([5, pd.NA, 1], dtype="Int64"))[["n", "n_missing"]].iloc[0].tolist() == [2, 1]
    assert ces(np.array([7.0, np.nan]))["n_missing"].item() == 1


def test_single_answer_mean_has_no_interval():
    res = ces([5]).iloc[0]
    assert res["estimate"] == 5 and np.isnan(res["ci_low"]) and np.isnan(res["se"])


@pytest.mark.parametrize(
    "func, scores, msg",
    [
        (nps, pd.Series([1, 2, 3, 4, 11, 5, 6, 7, 8, 11, 9, 10, -1]),
         r"^nps must be 0-10; 3 values out of range, e\.g\. rows 4, 9, 12 \(values 11, 11, -1\)$"),
        (csat, [0, 3, 5], r"^csat must be 1-5; 1 value out of range, e\.g\. rows 0 \(values 0\)$"),
        (ces, [1, 8, 9], r"^ces must be 1-7; 2 values out of range, e\.g\. rows 1, 2 \(values 8, 9\)$"),
        (enps, [3, 10.5], r"^enps must be 0-10; 1 value out of range"),
        (esat, [3.5, 2], r"^esat must be whole numbers 1-5; 1 value is not, e\.g\. rows 0 \(values 3\.5\)$"),
        (nps, ["high", 7, "low"], r"^nps must be numeric answers; 2 values are not numbers, e\.g\. rows 0, 2 \(values 'high', 'low'\)$"),
        (nps, [True, False], r"^nps must be numeric answers, got booleans"),
        (nps, [], r"^nps: no answers \(empty input\)"),
        (ees, [np.nan, np.nan], r"^ees: all 2 answers missing; nothing to compute$"),
        (nps, pd.DataFrame({"nps": [1]}), r"^nps: pass one column of answers"),
    ],
)
def test_bad_scores_are_named(func, scores, msg):
    with pytest.raises(ValueError, match=msg):
        func(scores)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match=r"alpha must be a number between 0 and 1"):
        nps([9, 10], alpha=5)
    with pytest.raises(ValueError, match=r"method for NPS must be one of \['adjusted_wald', 'wald'\], got 'exact'"):
        nps([9, 10], method="exact")
    with pytest.raises(ValueError, match=r"top_box for csat must lie on the 1-5 scale; got \(5, 6\)"):
        csat([5, 4], top_box=(5, 6))


def test_string_numbers_from_a_csv_are_accepted():
    assert nps(pd.Series(["10", "9", "3", None], dtype=object))[["estimate", "n_missing"]].iloc[0].tolist() == [
        pytest.approx(100 / 3),
        1,
    ]


# --------------------------------------------------------------------------- coverage (vectorised)
DRAWS, N = 1000, 200


def test_metric_functions_use_the_vectorised_intervals():
    rng = np.random.default_rng(0)
    x = rng.choice(11, size=N, p=P_NPS)
    lo, hi = net_score_ci((x >= 9).sum(), (x <= 6).sum(), N)
    assert nps(x)[["ci_low", "ci_high"]].iloc[0].tolist() == pytest.approx([100 * lo, 100 * hi])
    y = rng.choice(np.arange(1, 6), size=N, p=P_CSAT)
    lo, hi = proportion_ci((y >= 4).sum(), N)
    assert csat(y)[["ci_low", "ci_high"]].iloc[0].tolist() == pytest.approx([100 * lo, 100 * hi])
    z = rng.choice(np.arange(1, 8), size=N, p=P_CES)
    lo, hi = mean_ci(z.mean(), z.std(ddof=1), N)
    assert ces(z)[["ci_low", "ci_high"]].iloc[0].tolist() == pytest.approx([lo, hi])


def _nps_coverage(probs, n, draws, seed, method="adjusted_wald"):
    counts = np.random.default_rng(seed).multinomial(n, probs, size=draws)
    pro, det = counts[:, 9:].sum(axis=1), counts[:, :7].sum(axis=1)
    lo, hi = net_score_ci(pro, det, n, method=method)
    truth = probs[9:].sum() - probs[:7].sum()
    return float(((lo <= truth) & (truth <= hi)).mean())


def test_nps_interval_has_nominal_coverage():
    cover = _nps_coverage(P_NPS, N, DRAWS, seed=1)
    assert 0.93 <= cover <= 0.97, cover


def test_adjusted_wald_beats_wald_for_small_skewed_samples():
    # 90% promoters, 2% detractors, n = 30: the plain Wald interval under-covers badly
    skewed = np.r_[0.02, np.zeros(6), 0.04, 0.04, 0.2, 0.7]
    adjusted = _nps_coverage(skewed, 30, 4000, seed=4)
    wald = _nps_coverage(skewed, 30, 4000, seed=4, method="wald")
    assert 0.93 <= adjusted <= 0.97, adjusted
    assert wald < 0.90, wald


def test_csat_top_box_interval_has_nominal_coverage():
    counts = np.random.default_rng(2).multinomial(N, P_CSAT, size=DRAWS)
    lo, hi = proportion_ci(counts[:, 3:].sum(axis=1), N)
    truth = P_CSAT[3:].sum()
    cover = float(((lo <= truth) & (truth <= hi)).mean())
    assert 0.93 <= cover <= 0.97, cover


def test_ces_mean_interval_has_nominal_coverage():
    points = np.arange(1, 8)
    counts = np.random.default_rng(3).multinomial(N, P_CES, size=DRAWS)
    mean = counts @ points / N
    sd = np.sqrt((counts @ points**2 - N * mean**2) / (N - 1))
    lo, hi = mean_ci(mean, sd, N)
    truth = float(points @ P_CES)
    cover = float(((lo <= truth) & (truth <= hi)).mean())
    assert 0.93 <= cover <= 0.97, cover


# --------------------------------------------------------------------------- the mirror table
@pytest.fixture(scope="module")
def mirror_study():
    return simulate_study(n_sites=3, n_employees=60, n_waves=3, seed=1, orphan_responses=10)


@pytest.fixture(scope="module")
def by_site(mirror_study):
    return mirror(mirror_study, by="site_id")


def _cx_joined(s):
    return s.cx_responses.merge(s.interactions[["interaction_id", "employee_id"]], on="interaction_id").merge(
        s.employees[["employee_id", "site_id", "team_id"]], on="employee_id"
    )


def test_mirror_by_site_shape_and_columns(by_site):
    tab = by_site
    assert len(tab) == 3 * 3 * 2  # sites x dimensions x sides
    assert list(tab.columns[:4]) == ["site_id", "dimension", "side", "metric"]
    assert set(tab.columns) >= {"estimate", "se", "ci_low", "ci_high", "n", "n_missing", "suppressed"}
    assert not {"employee_id", "customer_id", "interaction_id"} & set(tab.columns)
    assert set(tab["dimension"]) == {"Ease", "Recommendation", "Satisfaction"}
    pairs = set(zip(tab["side"], tab["metric"]))
    assert pairs == {("EX", "eNPS"), ("CX", "NPS"), ("EX", "eSat"), ("CX", "CSAT"), ("EX", "EES"), ("CX", "CES")}
    assert not tab["suppressed"].any()


@pytest.mark.parametrize("site", ["S01", "S02", "S03"])
def test_mirror_cx_matches_the_raw_joined_answers(mirror_study, by_site, site):
    # the default clusters by agent: the single-group functions with the agent of each answer as its cluster
    raw = _cx_joined(mirror_study)
    raw = raw[raw["site_id"] == site]
    cols = ["estimate", "se", "ci_low", "ci_high", "n", "n_clusters", "deff", "df"]
    for metric, func in (("NPS", nps), ("CSAT", csat), ("CES", ces)):
        col = metric.lower()
        got = by_site.query("site_id == @site and metric == @metric")[cols].astype(float).iloc[0]
        expect = func(raw[col], cluster=raw["employee_id"])[cols].astype(float).iloc[0]
        pd.testing.assert_series_equal(got, expect, check_names=False, rtol=1e-12)
        assert got["n_clusters"] == raw["employee_id"].nunique()


def test_mirror_without_clustering_gives_the_independent_answer_intervals(mirror_study):
    raw = _cx_joined(mirror_study)
    raw = raw[raw["site_id"] == "S02"]
    tab = mirror(mirror_study, by="site_id", cluster=None)
    cols = ["estimate", "se", "ci_low", "ci_high", "n"]
    for metric, func in (("NPS", nps), ("CSAT", csat), ("CES", ces)):
        got = tab.query("site_id == 'S02' and metric == @metric")[cols].astype(float).iloc[0]
        expect = func(raw[metric.lower()])[cols].astype(float).iloc[0]
        pd.testing.assert_series_equal(got, expect, check_names=False, rtol=1e-12)
    assert tab["cluster"].isna().all()


def test_mirror_by_team_cluster_matches_team_labels(mirror_study):
    raw = _cx_joined(mirror_study)
    raw = raw[raw["site_id"] == "S03"]
    tab = mirror(mirror_study, by="site_id", cluster="team_id")
    got = tab.query("site_id == 'S03' and metric == 'NPS'").iloc[0]
    expect = nps(raw["nps"], cluster=raw["team_id"]).iloc[0]
    assert (got["estimate"], got["se"], got["ci_low"], got["ci_high"]) == pytest.approx(
        (expect["estimate"], expect["se"], expect["ci_low"], expect["ci_high"]), rel=1e-12)
    assert got["n_clusters"] == raw["team_id"].nunique() and got["cluster"] == "team_id"


def test_mirror_ex_shows_one_wave_never_pooled(mirror_study, by_site):
    s = mirror_study
    ex = s.ex_responses.merge(s.employees[["employee_id", "site_id"]], on="employee_id")
    latest = ex["wave"].max()
    site = ex[(ex["site_id"] == "S01") & (ex["wave"] == latest)]
    got = by_site.query("site_id == 'S01' and metric == 'eNPS'").iloc[0]
    expect = enps(site["enps"], cluster=site["employee_id"]).iloc[0]
    assert got["estimate"] == pytest.approx(expect["estimate"]) and got["se"] == pytest.approx(expect["se"])
    assert got["n"] == len(site) and got["n_respondents"] == site["employee_id"].nunique()
    assert got["basis"] == f"wave {latest}"
    assert set(by_site.loc[by_site["side"] == "CX", "basis"]) == {"all interactions"}
    # each EX answer of another wave is in the ledger, so nothing is dropped silently
    led = ledger_of(by_site)
    other = led[led["rule"].str.startswith(f"answer from another wave than wave {latest}")]
    assert other["rows_excluded"].item() == int((ex["wave"] != latest).sum())
    # an earlier wave on request
    first = mirror(s, by="site_id", ex_wave=1).query("site_id == 'S01' and metric == 'eNPS'").iloc[0]
    w1 = ex[(ex["site_id"] == "S01") & (ex["wave"] == 1)]
    assert first["n"] == len(w1) and first["basis"] == "wave 1"


def test_mirror_counts_orphan_responses_in_the_ledger(by_site):
    led = ledger_of(by_site)
    orphans = led[led["rule"].str.startswith("response links to no interaction")]
    assert orphans["rows_excluded"].item() == 10
    assert orphans["table"].item() == "cx_responses"


def test_mirror_accounts_for_every_cx_response(mirror_study):
    tab = mirror(mirror_study)
    led = ledger_of(tab)
    used = tab.query("metric == 'NPS'")["n"].item()
    excluded = led.loc[led["table"] == "cx_responses", "rows_excluded"].sum()
    assert used + excluded == len(mirror_study.cx_responses)


def test_mirror_suppresses_small_groups(mirror_study):
    tab = mirror(mirror_study, by="site_id", min_group_size=25)
    # EX rows rest on <= 20 employees per site, so all are suppressed; CX rows have hundreds of
    # customers but only ~20 employees behind them, so they are suppressed too
    assert tab["suppressed"].all()
    assert tab[["estimate", "ci_low", "ci_high", "n"]].isna().all().all()
    led = ledger_of(tab)
    assert led.loc[led["table"] == "mirror", "rows_excluded"].item() == len(tab)
    # a moderate minimum leaves the big groups alone (EX rows rest on the 12-14 respondents of the latest wave)
    assert not mirror(mirror_study, by="site_id", min_group_size=10)["suppressed"].any()


def test_mirror_by_team_never_shows_a_small_group(mirror_study):
    tab = mirror(mirror_study, by="team_id", min_group_size=5)
    shown = tab[~tab["suppressed"]]
    assert (shown["n_respondents"] >= 5).all() and (shown["n_employees"] >= 5).all()
    assert tab.loc[tab["suppressed"], "estimate"].isna().all()


def test_mirror_by_wave_periods(mirror_study):
    s = mirror_study
    tab = mirror(s, by="site_id", period="wave")
    assert len(tab) == 3 * 3 * 3 * 2 and set(tab["wave"]) == {1, 2, 3}
    # the CX of wave 2 = interactions started from wave 2's opening up to wave 3's
    opening = s.wave_openings()  # the one definition of a wave opening (day of first answer)
    raw = _cx_joined(s).merge(s.interactions[["interaction_id", "started_at"]])
    raw = raw[(raw["site_id"] == "S02") & (raw["started_at"] >= opening[2]) & (raw["started_at"] < opening[3])]
    got = tab.query("site_id == 'S02' and wave == 2 and metric == 'CSAT'")
    assert got["estimate"].item() == pytest.approx(csat(raw["csat"])["estimate"].item())
    assert got["n"].item() == len(raw)
    # the EX of wave 2 = the wave-2 answers
    ex = s.ex_responses.merge(s.employees[["employee_id", "site_id"]])
    ex = ex[(ex["site_id"] == "S02") & (ex["wave"] == 2)]
    assert tab.query("site_id == 'S02' and wave == 2 and metric == 'EES'")["n"].item() == len(ex)
    led = ledger_of(tab)
    early = led[led["rule"].str.startswith("interaction started before the first EX wave")]
    n_early = int((_cx_joined(s).merge(s.interactions[["interaction_id", "started_at"]])["started_at"] < opening[1]).sum())
    assert early["rows_excluded"].sum() == n_early


def test_mirror_ledgers_missing_answers_and_unknown_employees(mirror_study):
    s = mirror_study
    cx = s.cx_responses.copy()
    cx.loc[[0, 1, 2], "nps"] = np.nan
    ex = s.ex_responses.copy()
    ex.loc[0, "employee_id"] = "E99999"
    broken = s.__class__(employees=s.employees, ex_responses=ex, interactions=s.interactions, cx_responses=cx,
                         customer_outcomes=s.customer_outcomes)
    tab = mirror(broken)
    nps_row = tab.query("metric == 'NPS'").iloc[0]
    assert nps_row["n_missing"] == 3
    assert tab.query("metric == 'CSAT'")["n_missing"].item() == 0
    led = ledger_of(tab)
    assert led.loc[led["rule"].str.startswith("nps answer missing"), "rows_excluded"].item() == 3
    assert led.loc[led["rule"].str.startswith("answer from an employee not in"), "rows_excluded"].item() == 1


def test_mirror_bad_arguments(mirror_study):
    with pytest.raises(ValueError, match=r"by must be None, 'site_id' or 'team_id', got 'employee_id'"):
        mirror(mirror_study, by="employee_id")
    with pytest.raises(ValueError, match=r"period must be None or 'wave', got 'month'"):
        mirror(mirror_study, period="month")
    with pytest.raises(ValueError, match=r"cluster must be 'employee_id' \(the agent\), 'team_id' or None"):
        mirror(mirror_study, cluster="site_id")
    with pytest.raises(ValueError, match=r"by='team_id' with cluster='team_id' leaves one cluster per group"):
        mirror(mirror_study, by="team_id", cluster="team_id")
    with pytest.raises(ValueError, match=r"ex_wave=9 is not among the waves with EX answers \[1, 2, 3\]"):
        mirror(mirror_study, ex_wave=9)
    with pytest.raises(ValueError, match="min_group_size must be a whole number >= 1"):
        mirror(mirror_study, min_group_size=0)
    s = mirror_study
    no_site = s.__class__(employees=s.employees.drop(columns="site_id"), ex_responses=s.ex_responses,
                          interactions=s.interactions, cx_responses=s.cx_responses,
                          customer_outcomes=s.customer_outcomes)
    with pytest.raises(ValueError, match=r"employees lacks column\(s\) \['site_id'\]"):
        mirror(no_site, by="site_id")
    bad = s.cx_responses.copy()
    bad.loc[5, "csat"] = 9
    off = s.__class__(employees=s.employees, ex_responses=s.ex_responses, interactions=s.interactions,
                      cx_responses=bad, customer_outcomes=s.customer_outcomes)
    with pytest.raises(ValueError, match=r"csat must be 1-5; 1 value out of range, e\.g\. rows 5 \(values 9\)"):
        mirror(off)
