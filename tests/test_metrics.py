"""Mirror metrics: worked values, interval coverage, bad input, and the EX/CX mirror table."""

from __future__ import annotations

from cxex_lab.ledger import ledger_of

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cxex_lab.metrics import (
    CLUSTER_STATS_COLUMNS,
    ces,
    cluster_stats,
    compare,
    csat,
    ees,
    enps,
    esat,
    mean_ci,
    metric_from_cluster_stats,
    mirror,
    mirror_cluster_stats,
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


# --------------------------------------------------------------------------- cluster-robust intervals
# Issue 10 acceptance: the clustered interval equals a linearisation computed by hand on a small example.
# Four agents; per-answer NPS scores are +1 (9-10), -1 (0-6), 0 (7-8).
NPS_BY_AGENT = {"A": [10, 9, 9, 6], "B": [3, 5, 8], "C": [10, 10, 7, 9, 2], "D": [8, 4]}


def _long(answers_by_agent):
    agent = [a for a, xs in answers_by_agent.items() for _ in xs]
    return [x for xs in answers_by_agent.values() for x in xs], agent


def test_nps_cluster_interval_equals_hand_linearisation():
    scores, agent = _long(NPS_BY_AGENT)
    res = nps(scores, cluster=agent).iloc[0]
    # cluster totals of the scores: A 3 promoters - 1 detractor = 2 (n 4); B 0 - 2 = -2 (n 3);
    # C 3 - 1 = 2 (n 5); D 0 - 1 = -1 (n 2). N = 14, sum = 1, R = 1/14.
    y, n = np.array([2, -2, 2, -1]), np.array([4, 3, 5, 2])
    big_n, r, g = 14, 1 / 14, 4
    # residuals y_c - R n_c = 24/14, -31/14, 23/14, -16/14; sum of squares 2322/196
    z = y - r * n
    assert z.tolist() == pytest.approx([24 / 14, -31 / 14, 23 / 14, -16 / 14])
    v = g / (g - 1) * (2322 / 196) / big_n**2  # G/(G-1) sum z^2 / N^2 = 0.0805914...
    assert res["estimate"] == pytest.approx(100 / 14)
    assert res["se"] == pytest.approx(100 * np.sqrt(v))
    assert (res["n_clusters"], res["df"]) == (4, 3)
    # independent-answers variance (p+ + p- - R^2)/N = (11/14 - 1/196)/14 = 153/2744; design effect v / that
    v0 = 153 / 2744
    assert res["deff"] == pytest.approx(v / v0)
    # adjusted Wald at the df-adjusted effective sample size m = (N / deff) (z / t_3)^2 (Korn & Graubard 1998)
    zq, tq = stats.norm.ppf(0.975), stats.t.ppf(0.975, 3)
    m = big_n / (v / v0) * (zq / tq) ** 2
    pa, da = (6 / 14 * m + 0.75) / (m + 3), (5 / 14 * m + 0.75) / (m + 3)
    half = zq * np.sqrt((pa + da - (pa - da) ** 2) / (m + 3))
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((100 * (pa - da - half), 100 * (pa - da + half)))
    # the plain Wald shape is the estimate +- t_3 * se
    wald = nps(scores, cluster=agent, method="wald").iloc[0]
    assert wald["ci_high"] - wald["estimate"] == pytest.approx(tq * res["se"])


def test_ces_cluster_interval_equals_hand_linearisation():
    # agents A [7, 6], B [5, 5, 6], C [2]: N = 6, sum 31, mean 31/6
    # residuals 13 - 2(31/6) = 8/3, 16 - 3(31/6) = 1/2, 2 - 31/6 = -19/6; sum of squares 626/36
    res = ces([7, 6, 5, 5, 6, 2], cluster=list("AABBBC")).iloc[0]
    v = 3 / 2 * (626 / 36) / 36
    half = stats.t.ppf(0.975, 2) * np.sqrt(v)
    assert res["estimate"] == pytest.approx(31 / 6) and res["se"] == pytest.approx(np.sqrt(v))
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((31 / 6 - half, 31 / 6 + half))


def test_csat_cluster_interval_equals_hand_linearisation():
    # agents A [5, 4, 2] (2 of 3 in the top box), B [1, 2] (0 of 2), C [4, 5, 5, 3] (3 of 4): p = 5/9
    # residuals 2 - 3(5/9) = 1/3, -10/9, 3 - 4(5/9) = 7/9; sum of squares 158/81
    res = csat([5, 4, 2, 1, 2, 4, 5, 5, 3], cluster=list("AAABBCCCC")).iloc[0]
    v = 3 / 2 * (158 / 81) / 81  # 237/6561
    v0 = (5 / 9) * (4 / 9) / 9  # 20/729 -> deff = 237/180
    assert res["deff"] == pytest.approx(237 / 180)
    zq, tq = stats.norm.ppf(0.975), stats.t.ppf(0.975, 2)
    m = 9 / (v / v0) * (zq / tq) ** 2
    p = 5 / 9
    centre = (p + zq**2 / (2 * m)) / (1 + zq**2 / m)
    half = zq * np.sqrt(p * (1 - p) / m + zq**2 / (4 * m**2)) / (1 + zq**2 / m)
    assert res["se"] == pytest.approx(100 * np.sqrt(v))
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((100 * (centre - half), 100 * (centre + half)))
    # Wilson at n_eff with t_{G-1} in place of z is the same interval (the df adjustment, written the other way)
    ne = 9 / (v / v0)
    c2 = (p + tq**2 / (2 * ne)) / (1 + tq**2 / ne)
    h2 = tq * np.sqrt(p * (1 - p) / ne + tq**2 / (4 * ne**2)) / (1 + tq**2 / ne)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((100 * (c2 - h2), 100 * (c2 + h2)))


def test_one_answer_per_cluster_gives_the_independent_mean_interval():
    x = np.array([7, 6, 5, 6, 4, 7, 2, 3])
    clustered = ces(x, cluster=np.arange(len(x))).iloc[0]
    independent = ces(x).iloc[0]
    for c in ("estimate", "se", "ci_low", "ci_high", "df"):
        assert clustered[c] == pytest.approx(independent[c])
    assert clustered["deff"] == pytest.approx(1.0)


def test_sufficient_statistics_from_a_database_give_the_same_interval():
    # the contract: one GROUP BY per cluster in SQL gives the table metric_from_cluster_stats reads
    import duckdb

    rng = np.random.default_rng(8)
    answers = pd.DataFrame({"employee_id": rng.choice([f"E{i}" for i in range(25)], 600),
                            "nps": rng.choice(11, 600, p=P_NPS), "csat": rng.choice(np.arange(1, 6), 600, p=P_CSAT)})
    answers.loc[rng.choice(600, 30, replace=False), "csat"] = np.nan
    con = duckdb.connect()
    con.register("answers", answers)
    sql = """SELECT employee_id, count(x) AS n, sum(x) AS "sum", sum(x * x) AS sum_sq,
                    count_if(x >= 9) AS n_promoters, count_if(x <= 6) AS n_detractors, count_if(x >= 4) AS n_top
             FROM (SELECT employee_id, {col} AS x FROM answers) GROUP BY employee_id"""
    for col, statistic, func in (("nps", "net", nps), ("csat", "top_box", csat)):
        st = con.execute(sql.format(col=col)).df()
        got = metric_from_cluster_stats(st, statistic, cluster="employee_id").iloc[0]
        expect = func(answers[col], cluster=answers["employee_id"]).iloc[0]
        for c in ("estimate", "se", "ci_low", "ci_high", "n", "n_clusters", "deff"):
            assert got[c] == pytest.approx(expect[c], rel=1e-12), (col, c)
    # and pandas' own helper computes the same table
    ours = cluster_stats(answers, "csat", cluster="employee_id").set_index("employee_id").sort_index()
    ref = con.execute(sql.format(col="csat")).df().set_index("employee_id").sort_index()
    for c in ("n", "sum", "sum_sq", "n_top"):
        assert ours[c].to_numpy(float) == pytest.approx(ref[c].to_numpy(float)), c
    # promoter / detractor counts are defined for 0-10 items only (missing for CSAT)
    assert ours[["n_promoters", "n_detractors"]].isna().all().all()
    assert set(CLUSTER_STATS_COLUMNS) <= set(ours.columns)


def _clustered_counts(rng, reps, agents, sizes, cuts, mu, agent_sd):
    """Answer counts per rep x agent x scale point, answers clustered within agents (ordered probit)."""
    u = rng.normal(0, agent_sd, (reps, agents, 1))
    p = np.diff(stats.norm.cdf(cuts[None, None, :] - mu - u), axis=-1)
    counts = rng.multinomial(sizes, p)
    truth_p = np.diff(stats.norm.cdf((cuts - mu) / np.sqrt(1 + agent_sd**2)))  # marginal answer distribution
    return counts, truth_p


@pytest.mark.parametrize("agents", [12, 40])
def test_clustered_intervals_cover_where_independent_ones_do_not(agents):
    # 2,000 studies at once: agents with a known agent effect (SD 0.6 on a unit-variance latent scale),
    # unequal numbers of rated interactions per agent (3 + Poisson(20))
    rng = np.random.default_rng(agents)
    reps = 2000
    cuts = np.r_[-np.inf, np.linspace(-2.2, 1.0, 10), np.inf]  # 0-10 answers
    sizes = 3 + rng.poisson(20, (reps, agents))
    counts, pm = _clustered_counts(rng, reps, agents, sizes, cuts, 0.3, 0.6)
    points = np.arange(11)
    st = pd.DataFrame({
        "rep": np.repeat(np.arange(reps), agents), "agent": np.tile(np.arange(agents), reps),
        "n": counts.sum(-1).ravel(), "sum": (counts @ points).ravel().astype(float),
        "sum_sq": (counts @ points**2).ravel().astype(float),
        "n_promoters": counts[..., 9:].sum(-1).ravel().astype(float),
        "n_detractors": counts[..., :7].sum(-1).ravel().astype(float),
        "n_top": counts[..., 8:].sum(-1).ravel().astype(float),
    })
    truths = {"net": 100 * (pm[9:].sum() - pm[:7].sum()), "top_box": 100 * pm[8:].sum(), "mean": float(points @ pm)}
    for statistic, truth in truths.items():
        cover = {}
        for cl in ("agent", None):
            r = metric_from_cluster_stats(st, statistic, by="rep", cluster=cl)
            cover[cl] = float(((r["ci_low"] <= truth) & (truth <= r["ci_high"])).mean())
        # Monte Carlo SE of a 95% coverage over 2,000 studies: 0.5 points
        assert 0.93 <= cover["agent"] <= 0.97, (statistic, cover)
        assert cover[None] < 0.80, (statistic, cover)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"scores": [9, 10, 3], "cluster": ["a", "b"]}, r"nps: cluster has 2 labels for 3 answers"),
        ({"scores": [9, 10, 3], "cluster": ["a", None, "b"]}, r"nps: 1 answer without a cluster label, e\.g\. positions 1"),
        ({"scores": [9, 10, 3], "cluster": "a"}, r"nps: cluster must be one label per answer"),
    ],
)
def test_bad_cluster_labels_are_named(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        nps(**kwargs)


def test_missing_answers_keep_their_cluster_alignment():
    res = nps([10, None, 3, 9], cluster=["a", None, "b", "b"]).iloc[0]  # the unlabelled answer is missing anyway
    assert (res["n"], res["n_missing"], res["n_clusters"]) == (3, 1, 2)


@pytest.mark.parametrize(
    "stats_, statistic, msg",
    [
        (pd.DataFrame({"g": ["a"], "n": [3]}), "top_box", r"column\(s\) \['n_top'\] not found"),
        (pd.DataFrame({"g": ["a", "b"], "n": [3, 2], "n_top": [1.0, np.nan]}), "top_box",
         r"column 'n_top' is missing in 1 row\(s\), e\.g\. rows 1; 'top_box' needs it \(the item has no top box"),
        (pd.DataFrame({"g": ["a"], "n": [3], "n_promoters": [2], "n_detractors": [2]}), "net",
         r"counts exceed n .* in 1 row\(s\), e\.g\. rows 0"),
        (pd.DataFrame({"g": ["a"], "n": [-3], "n_top": [0]}), "top_box", r"column 'n' must not be negative"),
        (pd.DataFrame({"g": ["a"], "n": [3], "n_top": [1]}), "median", r"statistic must be one of \['net', 'top_box', 'mean'\]"),
    ],
)
def test_bad_sufficient_statistics_are_named(stats_, statistic, msg):
    with pytest.raises(ValueError, match=msg):
        metric_from_cluster_stats(stats_, statistic, cluster="g")


def test_one_cluster_has_no_interval():
    res = nps([9, 10, 3, 5], cluster=["a"] * 4).iloc[0]
    assert res["n_clusters"] == 1 and np.isnan(res["se"]) and np.isnan(res["ci_low"]) and np.isnan(res["ci_high"])


# --------------------------------------------------------------------------- design-based comparisons
SITE_STATS = pd.DataFrame({
    "site_id": ["A", "A", "B", "B", "B"], "employee_id": ["a1", "a2", "b1", "b2", "b3"],
    "n": [4, 6, 5, 5, 4], "sum": [12.0, 20.0, 20.0, 18.0, 17.0], "sum_sq": [40.0, 70.0, 84.0, 70.0, 75.0],
})


def test_site_difference_equals_hand_computation_variances_add():
    # site A: R = 32/10, residuals 12 - 4(3.2) = -0.8 and 20 - 6(3.2) = 0.8 -> v_A = 2/1 * 1.28 / 10^2 = 0.0256
    # site B: R = 55/14, residuals 5/14, -23/14, 18/14 -> v_B = 3/2 * (25 + 529 + 324)/196 / 14^2
    v_a = 2 / 1 * (0.8**2 + 0.8**2) / 10**2
    v_b = 3 / 2 * ((5**2 + 23**2 + 18**2) / 196) / 14**2
    r = compare(SITE_STATS, "mean", between="site_id", reference="B").iloc[0]
    assert r["estimate"] == pytest.approx(3.2 - 55 / 14)
    assert r["se"] == pytest.approx(np.sqrt(v_a + v_b))
    # Welch-Satterthwaite degrees of freedom over the two strata (1 and 2 df) = 2.89, bounded by the smallest
    # G_h - 1 of the strata carrying >= 10% of the variance (A: 43%, B: 57%) = 1
    satterthwaite = (v_a + v_b) ** 2 / (v_a**2 / 1 + v_b**2 / 2)
    assert satterthwaite == pytest.approx(2.885, abs=1e-3)
    df = min(satterthwaite, 1)
    assert r["df"] == pytest.approx(df)
    half = stats.t.ppf(0.975, df) * np.sqrt(v_a + v_b)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((r["estimate"] - half, r["estimate"] + half))
    assert r["p"] == pytest.approx(2 * stats.t.sf(abs(r["estimate"]) / np.sqrt(v_a + v_b), df))
    assert r["strata"].startswith("site_id (clusters nested")
    # each site's own interval comes from the same variances
    own = metric_from_cluster_stats(SITE_STATS, "mean", by="site_id").set_index("site_id")["se"]
    assert own.to_dict() == pytest.approx({"A": np.sqrt(v_a), "B": np.sqrt(v_b)})
    # with two sites, "A vs rest" is "A vs B"
    rest = compare(SITE_STATS, "mean", between="site_id").set_index("contrast")
    assert rest.loc["A vs rest", "se"] == pytest.approx(r["se"]) and rest.loc["B vs rest", "estimate"] == pytest.approx(-r["estimate"])


def test_wave_difference_uses_the_agents_contributions_in_both_waves():
    # the same three agents in both waves (mean answers)
    st = pd.DataFrame({"wave": [1, 1, 1, 2, 2, 2], "employee_id": ["a1", "a2", "a3"] * 2,
                       "n": [3, 2, 4, 2, 3, 3], "sum": [12.0, 6.0, 20.0, 9.0, 9.0, 14.0],
                       "sum_sq": [50.0, 20.0, 102.0, 41.0, 29.0, 66.0]})
    r1, r2 = 38 / 9, 32 / 8
    # per agent: (y1 - R1 n1)/N1 - (y2 - R2 n2)/N2
    u = np.array([(12 - 3 * r1) / 9 - (9 - 2 * r2) / 8, (6 - 2 * r1) / 9 - (9 - 3 * r2) / 8, (20 - 4 * r1) / 9 - (14 - 3 * r2) / 8])
    assert u.sum() == pytest.approx(0.0)
    v = 3 / 2 * (u**2).sum()
    r = compare(st, "mean", between="wave", reference="previous").iloc[0]
    assert r["contrast"] == "2 vs 1"
    assert r["estimate"] == pytest.approx(r2 - r1) and r["se"] == pytest.approx(np.sqrt(v))
    assert r["df"] == pytest.approx(2) and r["n_clusters"] == 3
    assert r["strata"].startswith("none (clusters shared across wave")
    # treating the waves as independent samples would add their variances and drop the covariance
    own = metric_from_cluster_stats(st, "mean", by="wave", cluster="employee_id")["se"]
    assert np.sqrt((own**2).sum()) != pytest.approx(r["se"])


def test_holm_adjustment_within_each_family():
    rng = np.random.default_rng(3)
    st = pd.DataFrame({"site_id": np.repeat(list("ABCDE"), 8), "employee_id": np.arange(40), "n": 20,
                       "n_top": rng.binomial(20, np.repeat([0.5, 0.55, 0.6, 0.7, 0.5], 8)).astype(float)})
    r = compare(st, "top_box", between="site_id")
    assert len(r) == 5 and r["contrast"].tolist() == [f"{s} vs rest" for s in "ABCDE"]
    assert r["p_adj"].to_numpy() == pytest.approx(multipletests(r["p"], method="holm")[1])
    pairs = compare(st, "top_box", between="site_id", reference="pairs", adjust="bonferroni")
    assert len(pairs) == 10 and pairs["p_adj"].to_numpy() == pytest.approx(np.minimum(pairs["p"] * 10, 1))


def _site_rows(counts, reps, sites, agents):
    g = sites * agents
    return pd.DataFrame({
        "rep": np.repeat(np.arange(reps), g), "site_id": np.tile(np.repeat(np.arange(sites), agents), reps),
        "employee_id": np.tile(np.arange(g), reps), "n": counts.sum(-1).ravel(),
        "n_promoters": counts[..., 9:].sum(-1).ravel().astype(float),
        "n_detractors": counts[..., :7].sum(-1).ravel().astype(float),
    })


def test_no_false_alarms_between_sites_that_do_not_differ():
    # 2,000 studies: 5 sites x 12 agents, ~20 rated interactions per agent, agent effects, no site effect
    rng = np.random.default_rng(21)
    reps, sites, agents = 2000, 5, 12
    cuts = np.r_[-np.inf, np.linspace(-2.2, 1.0, 10), np.inf]
    counts, _ = _clustered_counts(rng, reps, sites * agents, 5 + rng.poisson(15, (reps, sites * agents)), cuts, 0.3, 0.6)
    st = _site_rows(counts, reps, sites, agents)
    r = compare(st, "net", between="site_id", by="rep")
    per_contrast = float((r["p"] < 0.05).mean())
    familywise = float(r.groupby("rep")["p_adj"].min().lt(0.05).mean())
    # Monte Carlo SE: 0.2 points per contrast (10,000 contrasts), 0.5 points family-wise
    assert per_contrast <= 0.055, per_contrast
    assert familywise <= 0.06, familywise
    # the same comparisons with independent-answer standard errors raise false alarms on most studies
    tot = st.groupby(["rep", "site_id"])[["n", "n_promoters", "n_detractors"]].sum()
    rest = tot.groupby("rep").transform("sum") - tot
    def net_var(t):
        pp, pd_ = t["n_promoters"] / t["n"], t["n_detractors"] / t["n"]
        return pp - pd_, (pp + pd_ - (pp - pd_) ** 2) / t["n"]
    (e1, v1), (e2, v2) = net_var(tot), net_var(rest)
    naive = float((np.abs(e1 - e2) / np.sqrt(v1 + v2) > stats.norm.ppf(0.975)).mean())
    assert naive > 0.25, naive


def test_no_false_alarms_between_waves_of_the_same_agents():
    # 2,000 studies: 30 agents rated in two waves; a stable agent effect (SD 0.6) plus a small wave-specific
    # one (SD 0.2); no change between waves
    rng = np.random.default_rng(22)
    reps, agents = 2000, 30
    cuts = np.r_[-np.inf, np.linspace(-2.2, 1.0, 10), np.inf]
    stable = rng.normal(0, 0.6, (reps, agents, 1))
    rows = []
    for wave in (1, 2):
        u = stable + rng.normal(0, 0.2, (reps, agents, 1))
        p = np.diff(stats.norm.cdf(cuts[None, None, :] - 0.3 - u), axis=-1)
        c = rng.multinomial(5 + rng.poisson(15, (reps, agents)), p)
        rows.append(pd.DataFrame({"rep": np.repeat(np.arange(reps), agents), "wave": wave,
                                  "employee_id": np.tile(np.arange(agents), reps), "n": c.sum(-1).ravel(),
                                  "n_promoters": c[..., 9:].sum(-1).ravel().astype(float),
                                  "n_detractors": c[..., :7].sum(-1).ravel().astype(float)}))
    st = pd.concat(rows, ignore_index=True)
    r = compare(st, "net", between="wave", reference="previous", by="rep")
    alarms = float((r["p"] < 0.05).mean())
    assert 0.03 <= alarms <= 0.065, alarms  # Monte Carlo SE 0.5 points
    # netting the shared agents' contributions removes their covariance: a much smaller SE than adding the
    # two waves' variances as if they were independent samples
    own = metric_from_cluster_stats(st, "net", by=["rep", "wave"], cluster="employee_id")
    added = np.sqrt(own.pivot(index="rep", columns="wave", values="se").pow(2).sum(axis=1))
    assert float((r.set_index("rep")["se"] / added).median()) < 0.8


def test_compare_every_mirror_metric_from_the_study(mirror_study):
    st = mirror_cluster_stats(mirror_study, by="site_id")
    assert {"side", "dimension", "metric", "item", "site_id", "employee_id", *CLUSTER_STATS_COLUMNS} <= set(st.columns)
    r = compare(st, between="site_id")
    assert len(r) == 6 * 3 and set(r["metric"]) == {"NPS", "eNPS", "CSAT", "eSat", "CES", "EES"}
    # the estimates on each side are the mirror's own estimates (agent clustering, latest EX wave)
    tab = mirror(mirror_study, by="site_id").set_index(["site_id", "metric"])["estimate"]
    row = r[(r["metric"] == "NPS") & (r["level"] == "S01")].iloc[0]
    assert row["estimate_level"] == pytest.approx(tab[("S01", "NPS")])
    # waves: the same agents in every wave's period
    waves = compare(mirror_cluster_stats(mirror_study, period="wave"), between="wave", reference="previous")
    assert set(waves["contrast"]) == {"2 vs 1", "3 vs 2"}
    assert waves["strata"].str.startswith("none (clusters shared").all()


def test_compare_bad_input(mirror_study):
    with pytest.raises(ValueError, match=r"'site_id' has 1 level\(s\) with answers; comparisons need at least 2"):
        compare(SITE_STATS[SITE_STATS["site_id"] == "A"], "mean")
    with pytest.raises(ValueError, match=r"reference must be one of \['rest', 'previous', 'first', 'pairs'\] or a level of 'site_id' \(\['A', 'B'\]\), got 'C'"):
        compare(SITE_STATS, "mean", reference="C")
    with pytest.raises(ValueError, match=r"statistic=None takes the statistic from a 'metric' column"):
        compare(SITE_STATS)
    with pytest.raises(ValueError, match=r"column\(s\) \['wave'\] not found"):
        compare(SITE_STATS, "mean", between="wave")
    with pytest.raises(ValueError, match=r"cluster must be 'employee_id' or 'team_id'"):
        mirror_cluster_stats(mirror_study, cluster=None)


# --------------------------------------------------------------------------- compare: vectorised == the per-contrast original
# REFERENCE IMPLEMENTATION, NOT PROJECT CODE. `_reference_adjust`, `_reference_compare_one` and
# `_reference_compare` are verbatim copies of `cxex_lab.metrics._adjust`, `_compare_one` and `compare` as they
# were before the vectorised rewrite (commit bbcd0ea: one round of pandas groupbys per contrast; only the
# names are changed). They are kept here only as the reference the vectorised `compare` must reproduce; the
# helpers they call (`_check_stats`, `_scores`, `_contrasts`) were not changed by the rewrite.
from cxex_lab.metrics import (  # noqa: E402
    METRIC_STATISTIC as _METRIC_STATISTIC,
    STATISTICS as _STATISTICS,
    _check_stats,
    _contrasts,
    _scores,
)


def _reference_adjust(out: pd.DataFrame, by: list[str], method: str, alpha: float) -> np.ndarray:
    """Multiplicity-adjusted p-values within each family (one family per ``by`` group).

    Holm is computed for all families at once: statsmodels' ``multipletests``
    adjusts one family per call, which is slow over thousands of families
    (simulations); the vectorised Holm is checked against it in the tests.
    Other methods go through ``multipletests`` family by family.
    """
    fam = out.groupby(by, sort=False, observed=True, dropna=False).ngroup().to_numpy() if by else np.zeros(len(out), int)
    p = out["p"].to_numpy(dtype=float)
    res = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    if method == "holm":
        f, q = fam[ok], p[ok]
        order = np.lexsort((q, f))
        fs, qs = f[order], q[order]
        m = np.bincount(fs)[fs]
        start = np.r_[0, np.flatnonzero(np.diff(fs)) + 1]
        rank = np.arange(len(fs)) - np.repeat(start, np.diff(np.r_[start, len(fs)]))
        scaled = np.minimum((m - rank) * qs, 1.0)
        adj = pd.Series(scaled).groupby(fs).cummax().to_numpy()
        tmp = np.empty(len(q))
        tmp[order] = adj
        res[ok] = tmp
        return res
    for g in np.unique(fam[ok]):
        sel = ok & (fam == g)
        res[sel] = multipletests(p[sel], alpha=alpha, method=method)[1]
    return res



def _reference_compare_one(data, statistic, between, cluster, reference, by, strata, alpha, adjust, who):
    extra = [strata] if strata not in (None, "auto") else []
    _check_stats(data, statistic, by + [between, cluster] + extra, who)
    y, _ = _scores(data, statistic)
    keys = by if by else ["_all"]
    d = pd.DataFrame({c: data[c].to_numpy() for c in dict.fromkeys(by + [between, cluster] + extra)})
    if not by:
        d["_all"] = 0
    d["_y"], d["_n"] = y, data["n"].to_numpy(float)
    if d[[between, cluster]].isna().any().any():
        bad = d[[between, cluster]].isna().any(axis=1).to_numpy()
        raise ValueError(f"{who}: {int(bad.sum())} row(s) have no {between!r} or {cluster!r}, e.g. rows "
                         f"{', '.join(str(r) for r in data.index[bad][:3])}")
    agg = d.groupby(list(dict.fromkeys(keys + [between, cluster] + extra)), sort=True, dropna=False, observed=True)[
        ["_y", "_n"]].sum().reset_index()
    agg = agg[agg["_n"] > 0].reset_index(drop=True)
    if strata == "auto":
        nested = bool((agg.groupby(keys + [cluster], observed=True)[between].nunique() <= 1).all())
        scol = between if nested else None
        strata_text = (f"{between} (clusters nested in {between}: variances add)" if nested
                       else f"none (clusters shared across {between}: covariance through shared clusters)")
    elif strata is None:
        scol, strata_text = None, f"none (single stratum; clusters shared across {between} add their covariance)"
    else:
        if (agg.groupby(keys + [cluster], observed=True)[strata].nunique() > 1).any():
            raise ValueError(f"{who}: strata column {strata!r} must be constant within each {cluster!r}")
        scol, strata_text = strata, f"{strata} (fixed strata)"
    if scol is None:
        agg["_stratum"] = 0
        scol = "_stratum"
    levels = list(pd.unique(agg[between]))
    try:
        levels = sorted(levels)
    except TypeError:
        pass
    if len(levels) < 2:
        raise ValueError(f"{who}: {between!r} has {len(levels)} level(s) with answers; comparisons need at least 2")
    label, _, scale = _STATISTICS[statistic]
    t_crit = lambda df: stats.t.ppf(1 - alpha / 2, df)  # noqa: E731
    rows = []
    for name, set1, set2, lev, ref in _contrasts(levels, reference, between, who):
        in1, in2 = agg[between].isin(set1).to_numpy(), agg[between].isin(set2).to_numpy()
        sub = agg[in1 | in2].copy()
        i1, i2 = in1[in1 | in2].astype(float), in2[in1 | in2].astype(float)
        grp = [sub[k] for k in keys]
        n1 = pd.Series(sub["_n"].to_numpy() * i1, index=sub.index).groupby(grp, observed=True).transform("sum").to_numpy()
        y1 = pd.Series(sub["_y"].to_numpy() * i1, index=sub.index).groupby(grp, observed=True).transform("sum").to_numpy()
        n2 = pd.Series(sub["_n"].to_numpy() * i2, index=sub.index).groupby(grp, observed=True).transform("sum").to_numpy()
        y2 = pd.Series(sub["_y"].to_numpy() * i2, index=sub.index).groupby(grp, observed=True).transform("sum").to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            r1, r2 = y1 / n1, y2 / n2
            u1 = np.where(i1 > 0, (sub["_y"].to_numpy() - r1 * sub["_n"].to_numpy()) / n1, 0.0)
            u2 = np.where(i2 > 0, (sub["_y"].to_numpy() - r2 * sub["_n"].to_numpy()) / n2, 0.0)
        sub["_u"] = u1 - u2  # a cluster in both sides (shared across waves) nets its two contributions
        sub["_n1"], sub["_n2"] = sub["_n"] * i1, sub["_n"] * i2
        per_cl = sub.groupby(keys + [scol, cluster], sort=True, observed=True)[["_u"]].sum().reset_index()
        per_cl["_ubar"] = per_cl.groupby(keys + [scol], observed=True)["_u"].transform("mean")
        per_cl["_dev2"] = (per_cl["_u"] - per_cl["_ubar"]) ** 2
        per_st = per_cl.groupby(keys + [scol], sort=True, observed=True).agg(g=("_u", "size"), ss=("_dev2", "sum")).reset_index()
        with np.errstate(divide="ignore", invalid="ignore"):
            per_st["v"] = np.where(per_st["g"] >= 2, per_st["g"] / (per_st["g"] - 1) * per_st["ss"], np.nan)
            per_st["v2"] = per_st["v"] ** 2 / (per_st["g"] - 1)
        per_st["g1"] = per_st["g"] - 1
        per_st["v_nan"] = per_st["v"].isna()
        # the smallest G_h - 1 among strata carrying >= 10% of the variance bounds the df (see Notes)
        share = per_st["v"] / per_st.groupby(keys, observed=True)["v"].transform("sum")
        per_st["g1_big"] = per_st["g1"].where(share >= 0.1, np.inf)
        tot = per_st.groupby(keys, sort=True, observed=True).agg(
            v=("v", "sum"), v_nan=("v_nan", "any"), v2=("v2", "sum"), g=("g", "sum"), g1=("g1", "sum"),
            g1_big=("g1_big", "min"))
        tot.loc[tot["v_nan"], "v"] = np.nan  # a stratum with one cluster: the variance cannot be estimated
        est = sub.assign(_y1=sub["_y"] * i1, _y2=sub["_y"] * i2).groupby(keys, sort=True, observed=True)[
            ["_y1", "_n1", "_y2", "_n2"]].sum()
        tot = tot.join(est)
        with np.errstate(divide="ignore", invalid="ignore"):
            e1, e2 = tot["_y1"] / tot["_n1"], tot["_y2"] / tot["_n2"]
            v = tot["v"].to_numpy()
            df = np.where(v > 0, np.minimum(v**2 / tot["v2"].to_numpy(), tot["g1_big"].to_numpy()),
                          tot["g1"].to_numpy().astype(float))
            df = np.where(np.isfinite(v) & (df > 0), df, np.nan)
            diff = scale * (e1 - e2).to_numpy()
            se = scale * np.sqrt(v)
            half = t_crit(df) * se
            tstat = diff / se
            p = 2 * stats.t.sf(np.abs(tstat), df)
        part = tot.index.to_frame(index=False) if by else pd.DataFrame(index=range(len(tot)))
        part["contrast"], part["level"], part["reference"], part["statistic"] = name, lev, ref, label
        part["estimate"], part["se"], part["ci_low"], part["ci_high"] = diff, se, diff - half, diff + half
        part["df"], part["t"], part["p"] = df, tstat, p
        part["estimate_level"], part["estimate_reference"] = scale * e1.to_numpy(), scale * e2.to_numpy()
        part["n_level"], part["n_reference"] = tot["_n1"].to_numpy().astype("int64"), tot["_n2"].to_numpy().astype("int64")
        part["n_clusters"] = tot["g"].to_numpy().astype("int64")
        rows.append(part)
    out = pd.concat(rows, ignore_index=True)
    out["p_adj"] = _reference_adjust(out, by, adjust, alpha) if adjust else out["p"]
    out["adjust"] = adjust
    out["cluster"] = cluster
    out["strata"] = strata_text
    out["method"] = "linearisation (ratio estimator) with cluster totals, t with design df"
    order = by + ["contrast", "level", "reference", "statistic", "estimate", "se", "ci_low", "ci_high", "df", "t", "p",
                  "p_adj", "adjust", "estimate_level", "estimate_reference", "n_level", "n_reference", "n_clusters",
                  "cluster", "strata", "method"]
    return out[order]


def _reference_compare(data, statistic=None, between="site_id", cluster="employee_id", reference="rest", by=None,
                       strata="auto", alpha=0.05, adjust="holm"):
    who = "compare"
    by = [] if by is None else ([by] if isinstance(by, str) else list(by))
    if statistic is not None:
        return _reference_compare_one(data, statistic, between, cluster, reference, by, strata, alpha, adjust, who)
    lead = [c for c in ("side", "metric") if c in data.columns]
    parts = []
    for metric in pd.unique(data["metric"].dropna()):
        sub = data[data["metric"] == metric]
        parts.append(_reference_compare_one(sub, _METRIC_STATISTIC[metric], between, cluster, reference, lead + by,
                                            strata, alpha, adjust, who))
    return pd.concat(parts, ignore_index=True)
# ------------------------------------------------------------------------ end of the reference implementation


def _random_design(seed: int, *, shared: bool, reps: int = 1, one_cluster_site: bool = False,
                   float_levels: bool = False) -> pd.DataFrame:
    """Per-cluster sufficient statistics of a random study (0-10 answers, agent effects).

    Sites have unequal numbers of agents (2-7; optionally one site with a single agent, whose
    stratum has no variance); agents sit in teams of 1-3; ``shared``: the same agents answer in
    3-5 waves, each agent missing from some waves; ``reps``: independent groups (a ``rep``
    column, plus a ``half`` column splitting them); some clusters come as two rows, some rows
    have no answers (n = 0).
    """
    rng = np.random.default_rng(seed)
    rows = []
    n_waves = int(rng.integers(3, 6)) if shared else 1
    for rep in range(reps):
        n_sites = int(rng.integers(3, 6))
        for s in range(n_sites):
            n_agents = 1 if (one_cluster_site and s == 1) else int(rng.integers(2, 8))
            for a in range(n_agents):
                agent_effect = rng.normal(0, 0.8)
                for w in range(1, n_waves + 1):
                    if shared and n_waves > 1 and rng.random() < 0.15:
                        continue  # this agent was not rated in this wave
                    k = int(rng.poisson(6)) + (0 if rng.random() < 0.1 else 1)
                    ans = np.clip(np.round(7.5 + 0.4 * s + agent_effect + rng.normal(0, 2, k)), 0, 10)
                    pieces = [ans[: k // 2], ans[k // 2:]] if rng.random() < 0.2 else [ans]
                    for piece in pieces:
                        rows.append({
                            "rep": rep, "half": rep % 2, "site_id": f"S{s + 1:02d}",
                            "wave": (w + 0.5) if float_levels else w,
                            "team_id": f"T{s + 1:02d}{a // 3}", "employee_id": f"E{s + 1:02d}{a:02d}",
                            "n": len(piece), "sum": float(piece.sum()), "sum_sq": float((piece**2).sum()),
                            "n_promoters": float((piece >= 9).sum()), "n_detractors": float((piece <= 6).sum()),
                            "n_top": float((piece >= 8).sum()),
                        })
    st = pd.DataFrame(rows)
    if reps == 1:
        st = st.drop(columns=["rep", "half"])
    return st.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # row order must not matter


def _assert_same(new: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(new.columns) == list(ref.columns)
    assert len(ref) > 0
    pd.testing.assert_frame_equal(new, ref, check_exact=False, rtol=1e-12, atol=1e-12)


_SITE_CASES = [
    # (seed, statistic, reference, by, strata, adjust, cluster, one-cluster site)
    (1, "mean", "rest", None, "auto", "holm", "employee_id", False),
    (2, "net", "pairs", None, "auto", "holm", "employee_id", True),
    (3, "top_box", "first", None, "auto", "bonferroni", "team_id", False),
    (4, "mean", "previous", None, None, None, "employee_id", True),
    (5, "net", "S02", None, "auto", "fdr_bh", "employee_id", False),
    (6, "top_box", "rest", "rep", "auto", "holm", "employee_id", True),
    (7, "mean", "pairs", ["half", "rep"], "auto", "holm", "team_id", False),
    (8, "net", "rest", "rep", None, "holm", "employee_id", False),
]


@pytest.mark.parametrize("seed, statistic, reference, by, strata, adjust, cluster, one", _SITE_CASES)
def test_vectorised_compare_equals_the_per_contrast_original_between_sites(
        seed, statistic, reference, by, strata, adjust, cluster, one):
    st = _random_design(seed, shared=False, reps=3 if by else 1, one_cluster_site=one)
    kw = dict(between="site_id", cluster=cluster, reference=reference, by=by, strata=strata, adjust=adjust)
    ref = _reference_compare(st, statistic, **kw)
    if one and strata == "auto":
        assert ref["se"].isna().any()  # the one-agent site is a stratum with no variance
    _assert_same(compare(st, statistic, **kw), ref)


_WAVE_CASES = [
    # (seed, statistic, reference, by, strata, adjust, float wave labels)
    (11, "mean", "previous", None, "auto", "holm", False),
    (12, "net", "first", None, "site_id", "holm", False),
    (13, "top_box", "pairs", None, None, "holm", True),
    (14, "mean", "rest", "site_id", "auto", "holm", False),
    (15, "net", 2, "rep", "site_id", "sidak", False),
    (16, "top_box", "previous", ["rep", "site_id"], "auto", None, False),
    (17, "mean", "pairs", "rep", "team_id", "holm", True),
]


@pytest.mark.parametrize("seed, statistic, reference, by, strata, adjust, flt", _WAVE_CASES)
def test_vectorised_compare_equals_the_per_contrast_original_between_waves(
        seed, statistic, reference, by, strata, adjust, flt):
    by_list = [by] if isinstance(by, str) else list(by or [])
    st = _random_design(seed, shared=True, reps=2 if "rep" in by_list else 1, one_cluster_site=seed % 2 == 0,
                        float_levels=flt)
    if flt and reference == 2:
        reference = 2.5
    kw = dict(between="wave", cluster="employee_id", reference=reference, by=by, strata=strata, adjust=adjust)
    _assert_same(compare(st, statistic, **kw), _reference_compare(st, statistic, **kw))


@pytest.mark.parametrize("between, reference, by", [("site_id", "rest", None), ("wave", "previous", None),
                                                     ("wave", "pairs", "site_id")])
def test_vectorised_compare_equals_the_original_for_every_metric_of_a_mirror_table(between, reference, by):
    # statistic=None: one comparison per metric and side, the statistic taken from the metric
    parts = []
    for i, (side, metric, cl) in enumerate([("CX", "NPS", "employee_id"), ("CX", "CSAT", "employee_id"),
                                            ("CX", "CES", "employee_id"), ("EX", "eNPS", "team_id"),
                                            ("EX", "eSat", "team_id"), ("EX", "EES", "team_id")]):
        st = _random_design(30 + i, shared=between == "wave")
        parts.append(st.assign(side=side, metric=metric))
    st = pd.concat(parts, ignore_index=True)
    kw = dict(between=between, cluster="employee_id", reference=reference, by=by)
    _assert_same(compare(st, **kw), _reference_compare(st, **kw))


def test_vectorised_compare_equals_the_original_with_missing_group_keys_and_categories():
    # rows whose group (by) key is missing take part in no contrast; categorical keys keep their dtype
    st = _random_design(41, shared=True, reps=3)
    st.loc[st.index[:15], "rep"] = np.nan
    st["site_id"] = st["site_id"].astype("category")
    for kw in (dict(between="wave", reference="previous", by="rep"),
               dict(between="wave", reference="rest", by=["site_id", "rep"], strata=None),
               dict(between="site_id", reference="pairs", by=["wave", "rep"])):
        _assert_same(compare(st, "net", **kw), _reference_compare(st, "net", **kw))


# --------------------------------------------------------------------------- metric_from_cluster_stats: vectorised == the original
# REFERENCE IMPLEMENTATION, NOT PROJECT CODE. `_reference_metric_from_cluster_stats` is a verbatim copy of the body
# of `cxex_lab.metrics.metric_from_cluster_stats` before it was rewritten on integer codes and np.bincount (commit
# bbcd0ea: pandas groupbys and transforms). It is kept only as the reference the rewrite must reproduce; the
# helpers it calls were not changed.
from cxex_lab.metrics import (  # noqa: E402
    STATISTICS,
    _DEFAULT_METHOD,
    _METHODS,
    _as_list,
    _check_alpha,
    _check_method,
)


def _reference_metric_from_cluster_stats(data, statistic, by=None, cluster="employee_id", alpha=0.05, method=None):
    who = "metric_from_cluster_stats"
    alpha = _check_alpha(alpha)
    by = _as_list(by)
    if statistic not in STATISTICS:
        raise ValueError(f"{who}: statistic must be one of {list(STATISTICS)}, got {statistic!r}")
    method = _DEFAULT_METHOD[statistic] if method is None else method
    _check_method(method, _METHODS[statistic], {"net": "a net score", "top_box": "a proportion", "mean": "a mean"}[statistic])
    _check_stats(data, statistic, by + ([cluster] if cluster else []), who)
    label, _, scale = STATISTICS[statistic]
    y, yy = _scores(data, statistic)
    d = pd.DataFrame({c: data[c].to_numpy() for c in by + ([cluster] if cluster else [])})
    d["_n"], d["_y"], d["_yy"] = data["n"].to_numpy(float), y, yy
    if statistic == "net":
        d["_pro"], d["_det"] = data["n_promoters"].to_numpy(float), data["n_detractors"].to_numpy(float)
    has_sum = "sum" in data.columns and data["sum"].notna().all()
    if statistic == "top_box" and has_sum:
        d["_sum"] = data["sum"].to_numpy(float)
    keys = by if by else ["_all"]
    if not by:
        d["_all"] = 0
    if cluster:  # one row per group x cluster
        d = d.groupby(keys + [cluster], sort=False, dropna=False, observed=True).sum().reset_index()
    d = d[d["_n"] > 0]
    g = d.groupby(keys, sort=True, dropna=False, observed=True)
    tot = g[[c for c in d.columns if c.startswith("_") and c != "_all"]].sum()
    big_n = tot["_n"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        r = tot["_y"].to_numpy() / big_n
        if statistic == "mean":
            v0 = (tot["_yy"].to_numpy() - big_n * r**2) / ((big_n - 1) * big_n)
            v0 = np.where(big_n >= 2, np.maximum(v0, 0.0), np.nan)
        else:
            v0 = np.maximum(tot["_yy"].to_numpy() / big_n - r**2, 0.0) / big_n
        if cluster:
            r_row = g["_y"].transform("sum").to_numpy() / g["_n"].transform("sum").to_numpy()
            resid2 = pd.Series((d["_y"].to_numpy() - r_row * d["_n"].to_numpy()) ** 2, index=d.index)
            ssz = resid2.groupby([d[k] for k in keys], sort=True, dropna=False, observed=True).sum().to_numpy()
            n_cl = g.size().to_numpy().astype(float)
            v = np.where(n_cl >= 2, n_cl / (n_cl - 1) * ssz / big_n**2, np.nan)
            df = np.where(n_cl >= 2, n_cl - 1, np.nan)
            deff = np.where(v0 > 0, v / v0, np.nan)
        else:
            n_cl = big_n.astype(float)
            v = v0
            df = np.where(big_n >= 2, big_n - 1, np.nan) if statistic == "mean" else np.full(len(big_n), np.inf)
            deff = np.ones(len(big_n))
        d_floor = np.where(np.isfinite(deff), np.maximum(deff, 1.0), 1.0)
        n_eff = big_n / d_floor
        se = np.sqrt(v)
        if statistic == "mean":
            half = stats.t.ppf(1 - alpha / 2, df) * se
            lo, hi = r - half, r + half
        else:
            z = stats.norm.ppf(1 - alpha / 2)
            m = n_eff * (z / stats.t.ppf(1 - alpha / 2, df)) ** 2 if cluster else big_n.astype(float)
            if statistic == "net":
                p_pro, p_det = tot["_pro"].to_numpy() / big_n, tot["_det"].to_numpy() / big_n
                lo, hi = net_score_ci(p_pro * m, p_det * m, m, alpha, method)
            else:
                lo, hi = proportion_ci(r * m, m, alpha, method)
            bad = ~np.isfinite(m)
            lo, hi = np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
    out = tot.index.to_frame(index=False) if by else pd.DataFrame(index=range(len(tot)))
    out["statistic"] = label
    out["estimate"] = scale * r
    out["se"] = scale * se
    out["ci_low"] = scale * np.asarray(lo, dtype=float)
    out["ci_high"] = scale * np.asarray(hi, dtype=float)
    out["n"] = big_n.astype("int64")
    out["n_clusters"] = n_cl.astype("int64")
    out["deff"] = deff
    out["n_eff"] = n_eff
    out["df"] = df
    out["method"] = method
    out["cluster"] = cluster
    if statistic == "net":
        out["promoters"] = tot["_pro"].to_numpy() / big_n
        out["passives"] = 1 - (tot["_pro"].to_numpy() + tot["_det"].to_numpy()) / big_n
        out["detractors"] = tot["_det"].to_numpy() / big_n
    elif statistic == "top_box" and has_sum:
        out["mean"] = tot["_sum"].to_numpy() / big_n
    return out.reset_index(drop=True)

# ------------------------------------------------------------------------ end of the reference implementation


def _random_cluster_stats(seed: int, *, keys: int, zero_rows: bool = True) -> pd.DataFrame:
    """Per-cluster statistics of random 0-10 answers: unequal clusters (1 to 6 per group, so some groups have a
    single cluster), clusters split over two rows, rows without answers, a missing group key, teams over agents."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(int(rng.integers(2, 5))):
        for w in (1, 2, 3):
            for a in range(int(rng.integers(1, 7))):
                k = int(rng.poisson(5)) + (0 if (zero_rows and rng.random() < 0.1) else 1)
                ans = np.clip(np.round(7 + 0.5 * s + rng.normal(0, 2.5, k)), 0, 10)
                pieces = [ans[: k // 2], ans[k // 2:]] if rng.random() < 0.2 else [ans]
                for piece in pieces:
                    rows.append({"site_id": f"S{s}", "wave": w, "employee_id": f"E{s}{a}", "team_id": f"T{s}{a // 2}",
                                 "n": len(piece), "sum": float(piece.sum()), "sum_sq": float((piece**2).sum()),
                                 "n_promoters": float((piece >= 9).sum()), "n_detractors": float((piece <= 6).sum()),
                                 "n_top": float((piece >= 8).sum())})
    rows.append({"site_id": "S9", "wave": 1, "employee_id": "E90", "team_id": "T90", "n": 4, "sum": 30.0,
                 "sum_sq": 246.0, "n_promoters": 2.0, "n_detractors": 1.0, "n_top": 2.0})  # 10, 9, 7, 4: one cluster
    rows.append({"site_id": "S8", "wave": 1, "employee_id": "E80", "team_id": "T80", "n": 0, "sum": 0.0,
                 "sum_sq": 0.0, "n_promoters": 0.0, "n_detractors": 0.0, "n_top": 0.0})  # no answers: no output row
    st = pd.DataFrame(rows)
    if keys:
        st.loc[st.sample(3, random_state=seed).index, "wave"] = np.nan  # a missing key is a group of its own
    return st.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("statistic, method", [("net", "adjusted_wald"), ("net", "wald"), ("top_box", "wilson"),
                                               ("top_box", "agresti_coull"), ("top_box", "wald"), ("mean", "t")])
@pytest.mark.parametrize("by, cluster", [(None, "employee_id"), (None, None), ("site_id", "team_id"),
                                         (["site_id", "wave"], "employee_id"), (["wave", "site_id"], None),
                                         ("wave", "employee_id")])
def test_vectorised_metric_from_cluster_stats_equals_the_original(statistic, method, by, cluster):
    seed = 100 + len(str(by)) + 7 * len(str(cluster)) + len(method)
    st = _random_cluster_stats(seed, keys=len(_as_list(by)))
    kw = dict(by=by, cluster=cluster, alpha=0.1 if method == "wald" else 0.05, method=method)
    ref = _reference_metric_from_cluster_stats(st, statistic, **kw)
    assert len(ref) > 0 and "S8" not in set(ref.get("site_id", []))
    if cluster and "site_id" in _as_list(by):
        assert ref["se"].isna().any() and ref["se"].notna().any()  # site S9 rests on one cluster
    pd.testing.assert_frame_equal(metric_from_cluster_stats(st, statistic, **kw), ref, check_exact=False,
                                  rtol=1e-12, atol=1e-12)
    if statistic == "top_box":  # without the sum column: no mean column
        st2 = st.drop(columns="sum")
        pd.testing.assert_frame_equal(metric_from_cluster_stats(st2, statistic, **kw),
                                      _reference_metric_from_cluster_stats(st2, statistic, **kw),
                                      check_exact=False, rtol=1e-12, atol=1e-12)


def test_vectorised_holm_equals_statsmodels_in_every_family():
    # 60 families of 1 to 12 p-values, with ties and missing p-values, in shuffled order
    from cxex_lab.metrics import _adjust

    rng = np.random.default_rng(7)
    fam = rng.permutation(np.repeat(np.arange(60), rng.integers(1, 13, 60)))
    p = np.round(rng.beta(0.5, 2.0, len(fam)), 2)
    p[rng.random(len(fam)) < 0.05] = np.nan
    got = _adjust(None, ["family"], "holm", 0.05, fam=fam, p=p)
    want = np.full(len(p), np.nan)
    for f in np.unique(fam):
        sel = (fam == f) & ~np.isnan(p)
        if sel.any():
            want[sel] = multipletests(p[sel], method="holm")[1]
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    # the same through a table's `by` columns
    tab = pd.DataFrame({"family": fam, "p": p})
    np.testing.assert_allclose(_adjust(tab, ["family"], "holm", 0.05), want, rtol=1e-15, atol=0)
