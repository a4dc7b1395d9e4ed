"""findings.linkage (report 03) and the agreement additions it rests on (icc_from_sums, reliability_from_sums).

Reference implementations are written here independently (pandas group-bys, a row-by-row
cluster bootstrap, numpy correlations); nothing is compared with numbers copied from the
code's own output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxex_lab import findings
from cxex_lab.agreement import agreement, icc_from_sums, icc_oneway, reliability, reliability_from_sums
from cxex_lab.present import CAUSAL_WORDS, format_table, key_findings
from cxex_lab.simulate import simulate_study
from cxex_lab.workspace import Workspace

KEYS = {
    "linkage.linked.corr", "linkage.linked.between_share", "linkage.linked.between_corr",
    "linkage.linked.within_corr", "linkage.company.corr", "linkage.team.corr",
    "linkage.agreement.team.esat.icc1", "linkage.agreement.team.esat.icc2", "linkage.agreement.team.esat.rwg",
    "linkage.agreement.team.esat.rwg_slight_skew", "linkage.cx_reliability.csat.icc2",
    "linkage.cx_reliability.csat.icc1", "linkage.cx_reliability.csat.answers",
}


@pytest.fixture(scope="module")
def study():
    return simulate_study(n_sites=4, n_employees=240, n_waves=4, seed=31)


@pytest.fixture(scope="module")
def ws(study):
    return Workspace.from_study(study)


@pytest.fixture(scope="module")
def report(ws):
    return findings.linkage(ws, n_boot=300, seed=3)


# --------------------------------------------------------------------------- agreement.py additions
@pytest.mark.parametrize("sizes", [[3, 3, 3, 3], [1, 2, 5, 9, 4, 1]])
def test_icc_from_sums_equals_icc_oneway(sizes):
    rng = np.random.default_rng(len(sizes))
    g = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.integers(1, 6, len(g)).astype(float) + g % 2
    ref = icc_oneway(x, g)
    d = pd.DataFrame({"g": g, "x": x})
    s = d.groupby("g")["x"].agg(["size", "sum"]).join(d.assign(x2=x**2).groupby("g")["x2"].sum())
    got = icc_from_sums(s["size"], s["sum"], s["x2"])
    for k in ("icc1", "icc2", "msb", "msw", "k", "F", "p", "df_between", "df_within", "n_groups", "n"):
        assert got[k] == pytest.approx(ref[k], rel=1e-10, abs=1e-12), k


def test_icc_from_sums_bad_input():
    with pytest.raises(ValueError, match="at least 2 groups"):
        icc_from_sums([3, 0], [10, 0], [40, 0])
    with pytest.raises(ValueError, match="single answer"):
        icc_from_sums([1, 1], [3, 4], [9, 16])
    with pytest.raises(ValueError, match="whole numbers"):
        icc_from_sums([2.5, 3], [3, 4], [9, 16])
    with pytest.raises(ValueError, match="one count, sum and sum of squares per group"):
        icc_from_sums([2, 3], [3], [9, 16])


def test_reliability_from_workspace_sums_equals_reliability_on_the_answers(study, ws):
    # the answers themselves, attributed in pandas: response -> interaction -> agent; period = latest wave opened
    cx = study.cx_responses.merge(study.interactions[["interaction_id", "employee_id", "started_at"]],
                                  on="interaction_id", how="inner")
    opened = ws.wave_openings()
    pos = np.searchsorted(opened.to_numpy(), cx["started_at"].to_numpy(dtype="datetime64[us]"), side="right") - 1
    cx = cx[pos >= 0].assign(wave=opened.index.to_numpy()[pos[pos >= 0]])
    ref = reliability(cx, "employee_id", ["csat", "nps", "ces"], wave="wave")
    got = reliability_from_sums(ws.cx_cluster_stats(period="wave", cluster="employee_id"), "employee_id",
                                ["csat", "nps", "ces"], wave="wave")
    assert list(got.columns) == list(ref.columns)
    assert got[["wave", "value", "n_units", "n"]].equals(ref[["wave", "value", "n_units", "n"]])
    for c in ("icc1", "icc2", "k", "mean_answers", "F", "msb", "msw", "answers_for_070"):
        np.testing.assert_allclose(got[c], ref[c], rtol=1e-9)


def test_reliability_from_sums_bad_input():
    st = pd.DataFrame({"employee_id": ["a", "b"], "csat_n": [1, 1], "csat_sum": [4.0, 5.0], "csat_sumsq": [16.0, 25.0]})
    with pytest.raises(ValueError, match="single answer"):
        reliability_from_sums(st, wave=None)
    with pytest.raises(ValueError, match=r"column\(s\) \['nps_n'"):
        reliability_from_sums(st, value="nps", wave=None)


# --------------------------------------------------------------------------- the findings
def test_keys_kinds_units_and_intervals(report):
    t = report.table
    assert report.report == "linkage"
    assert KEYS <= set(t["key"])
    assert set(t["kind"]) <= {"association", "descriptive"}  # nothing here is an effect
    assert not t["causal"].any()
    r = t.set_index("key")
    for k in ("linkage.linked.corr", "linkage.linked.between_corr", "linkage.linked.within_corr", "linkage.team.corr"):
        assert r.loc[k, "unit"] == "correlation (r)"
        assert r.loc[k, "ci_low"] < r.loc[k, "estimate"] < r.loc[k, "ci_high"]
        assert -1 <= r.loc[k, "ci_low"] and r.loc[k, "ci_high"] <= 1
    # default: the bootstrap resamples teams (4 sites x 4 teams)
    assert r.loc["linkage.linked.corr", "n_clusters"] == 16
    assert "cluster bootstrap over teams" in r.loc["linkage.linked.corr", "method"]
    assert "teams" in r.loc["linkage.team.corr", "method"]
    # the company-level correlation rests on 4 waves: no interval, and it says why
    assert r.loc["linkage.company.corr", "n"] == 4
    assert np.isnan(r.loc["linkage.company.corr", "ci_low"]) and "too few for an interval" in r.loc["linkage.company.corr", "caveat"]
    for k in ("linkage.agreement.team.esat.icc2", "linkage.cx_reliability.csat.icc2"):
        assert r.loc[k, "unit"] == "reliability (0-1)" and r.loc[k, "kind"] == "descriptive"
    assert r.loc["linkage.linked.between_share", "unit"] == "share"


def test_key_findings_are_associations_with_the_company_view_beside(report):
    sentences = key_findings(report.table)
    assert 3 <= len(sentences) <= 4
    assert not any(CAUSAL_WORDS.search(s) for s in sentences)
    assert "company-level correlation of wave means" in sentences[0]
    assert "Stable differences between employees carry" in sentences[1]
    assert "Averaging employees' eSat to team level is" in sentences[2]


def test_linked_correlations_and_decomposition_match_an_independent_computation(ws, report):
    p = findings.employee_wave_panel(ws).dropna(subset=["esat", "csat"])
    r = report.table.set_index("key")["estimate"]
    assert r["linkage.linked.corr"] == pytest.approx(np.corrcoef(p["esat"], p["csat"])[0, 1], rel=1e-10)
    means = p.groupby("employee_id")[["esat", "csat"]].mean()
    assert r["linkage.linked.between_corr"] == pytest.approx(means.corr().iloc[0, 1], rel=1e-10)
    dev = p[["esat", "csat"]] - p.groupby("employee_id")[["esat", "csat"]].transform("mean")
    assert r["linkage.linked.within_corr"] == pytest.approx(dev.corr().iloc[0, 1], rel=1e-10)
    # share of the pooled covariance between employee means: (total - within) / total
    tot = ((p["esat"] - p["esat"].mean()) * (p["csat"] - p["csat"].mean())).sum()
    within = (dev["esat"] * dev["csat"]).sum()
    assert r["linkage.linked.between_share"] == pytest.approx((tot - within) / tot, rel=1e-10)
    dec = report.details["decomposition"].set_index("key")["estimate"]
    assert dec["linkage.linked.slope.within"] == pytest.approx(np.polyfit(dev["esat"], dev["csat"], 1)[0], rel=1e-9)


def test_cluster_bootstrap_equals_a_row_by_row_resampling():
    # a small panel; the row-by-row version draws the same employees and rebuilds the resampled rows
    rng = np.random.default_rng(5)
    n_emp, b = 48, 120
    df = pd.DataFrame({"employee_id": np.repeat(np.arange(n_emp), 3), "team_id": np.repeat(np.arange(n_emp) // 4, 3)})
    trait = rng.normal(size=n_emp)[df["employee_id"]]
    df["x"] = trait + rng.normal(size=len(df))
    df["y"] = 0.5 * trait + rng.normal(size=len(df))
    df = df.drop(index=[4, 17])  # unbalanced
    for cluster in ("employee_id", "team_id"):
        point, ci, n_cl, _ = findings._boot_parts(df, "x", "y", "employee_id", cluster, b, 11, 0.05)
        codes = pd.factorize(df.groupby("employee_id")[cluster].first(), sort=True)[0]
        draws = np.random.default_rng(11).integers(0, codes.max() + 1, size=(b, codes.max() + 1))
        emps = np.sort(df["employee_id"].unique())
        reps = []
        for d in draws:
            rows = [df[df["employee_id"] == e] for c in d for e in emps[codes == c]]
            rr = pd.concat(rows)
            reps.append(np.corrcoef(rr["x"], rr["y"])[0, 1])
        assert n_cl == codes.max() + 1
        assert ci["total"] == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), rel=1e-9)
        assert point["total"] == pytest.approx(np.corrcoef(df["x"], df["y"])[0, 1])


def test_employee_bootstrap_and_the_fallback_with_few_teams(ws):
    by_emp = findings.linkage(ws, n_boot=200, cluster="employee_id").table.set_index("key")
    assert by_emp.loc["linkage.linked.corr", "n_clusters"] > 200
    assert "cluster bootstrap over employees" in by_emp.loc["linkage.linked.corr", "method"]
    # one site of four teams: too few teams, the interval resamples employees and says so
    f = findings.linkage(simulate_study(n_sites=1, n_employees=60, n_waves=3, seed=2), n_boot=100)
    t = f.table.set_index("key")
    assert "cluster bootstrap over employees" in t.loc["linkage.linked.corr", "method"]
    assert np.isfinite(t.loc["linkage.linked.corr", "ci_low"])
    assert any("resample employees instead of teams" in n for n in f.notes)
    with pytest.raises(ValueError, match="cluster must be"):
        findings.linkage(ws, cluster="site_id")


def test_agreement_is_per_wave_and_not_pooled(ws, report):
    ex = ws.ex_responses.merge(ws.employees[["employee_id", "team_id"]], on="employee_id")
    per_wave = agreement(ex, "team_id", "esat", wave="wave", person="employee_id")
    pooled = agreement(ex, "team_id", "esat", person="employee_id")
    r = report.table.set_index("key")["estimate"]
    assert r["linkage.agreement.team.esat.icc2"] == pytest.approx(per_wave["icc2"].median())
    assert r["linkage.agreement.team.esat.rwg"] == pytest.approx(per_wave["rwg_mean"].mean())
    # pooling counts each employee once per wave: larger k, higher ICC(2) than any single wave's median
    assert pooled["k"].item() > 2 * per_wave["k"].median()
    assert pooled["icc2"].item() > r["linkage.agreement.team.esat.icc2"]
    by_w = report.details["agreement_by_wave"]
    assert len(by_w) == 4 and {"rwg_uniform", "rwg_slight_skew", "reading"} <= set(by_w.columns)
    assert (by_w["rwg_slight_skew"] <= by_w["rwg_uniform"]).all()  # a skewed null has the smaller variance
    assert any("composition model" in n.lower() for n in report.notes)


def test_cx_reliability_finding_is_the_median_over_waves(ws, report):
    rel = reliability_from_sums(ws.cx_cluster_stats(period="wave", cluster="employee_id"), value="csat")
    r = report.table.set_index("key")["estimate"]
    assert r["linkage.cx_reliability.csat.icc2"] == pytest.approx(rel["icc2"].median())
    assert r["linkage.cx_reliability.csat.answers"] == pytest.approx(rel["n"].sum() / rel["n_units"].sum())


def test_stable_differences_carry_most_of_the_association_also_on_latent_data():
    # latent check: on the simulator's noise-free employee-waves the same decomposition puts most of the
    # EX-CX covariance between employees (stable traits correlate .79), as the observed one does
    s = simulate_study(n_sites=4, n_employees=400, n_waves=4, seed=8, latent=True)
    lat = s.latent["employee_waves"]
    xs, ys = ("ex", "cx") if {"ex", "cx"} <= set(lat.columns) else ("ex_latent", "cx_latent")
    dev = lat[[xs, ys]] - lat.groupby("employee_id")[[xs, ys]].transform("mean")
    tot = ((lat[xs] - lat[xs].mean()) * (lat[ys] - lat[ys].mean())).sum()
    latent_share = 1 - (dev[xs] * dev[ys]).sum() / tot
    obs = findings.linkage(Workspace.from_study(s), n_boot=200).table.set_index("key")
    assert latent_share > 0.5
    assert obs.loc["linkage.linked.between_share", "estimate"] > 0.5
    assert obs.loc["linkage.linked.between_share", "ci_low"] > 0.5


def test_team_view_suppresses_small_teams(ws):
    f = findings.linkage(ws, n_boot=0, min_group_size=9)
    teams = f.details["teams"]
    small = (teams["respondents"].fillna(0) < 9) | (teams["n_cx"].fillna(0) < 9)
    assert teams["suppressed"].any()
    assert teams.loc[teams["suppressed"], ["esat_mean", "csat_mean"]].isna().all().all()
    shown = format_table(teams, min_group_size=9)
    assert (shown.loc[teams["suppressed"].to_numpy(), "Respondents"] == "n < 9").all()
    assert "employee_id" not in teams.columns
    assert any("suppressed" in n for n in f.notes)
    assert not small[~teams["suppressed"]].any()


# --------------------------------------------------------------------------- study shapes
def _check(f):
    assert isinstance(f, findings.Findings) and f.report == "linkage"
    for s in key_findings(f.table):
        assert not CAUSAL_WORDS.search(s)
    return f.table.set_index("key"), " ".join(f.notes)


def test_one_site():
    t, notes = _check(findings.linkage(simulate_study(n_sites=1, n_employees=60, n_waves=3, seed=2), n_boot=100))
    assert "Agreement across sites needs at least 2 sites; this study has 1 site" in notes
    assert "linkage.agreement.team.esat.icc2" in t.index  # four teams: team agreement still works


def test_one_team():
    s = simulate_study(n_sites=1, n_employees=8, n_waves=3, seed=2, teams_per_site=1)
    t, notes = _check(findings.linkage(s, n_boot=100))
    assert "Agreement across teams needs at least 2 teams; this study has 1 team" in notes
    assert "team-level correlation needs at least 3 teams" in notes
    assert "linkage.linked.corr" in t.index and np.isnan(t.loc["linkage.linked.corr", "ci_low"])
    assert "too few for a cluster bootstrap" in notes


def test_two_waves():
    t, notes = _check(findings.linkage(simulate_study(n_sites=3, n_employees=90, n_waves=2, seed=4), n_boot=100))
    assert "linkage.company.corr" not in t.index
    assert "company-level correlation of wave means needs at least 3 waves" in notes
    assert "linkage.linked.within_corr" in t.index


def test_few_agents():
    t, notes = _check(findings.linkage(simulate_study(n_sites=2, n_employees=16, n_waves=3, seed=6), n_boot=100))
    assert "linkage.linked.corr" in t.index
    assert "cluster-bootstrap intervals are unreliable" in notes or "too few for a cluster bootstrap" in notes


def test_a_segment_of_one_site(ws):
    t, notes = _check(findings.linkage(ws, segment=ws.sites()[0], n_boot=100))
    assert "Agreement across sites needs at least 2 sites" in notes
