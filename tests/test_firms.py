"""Firm-level panels (issue 15): the simulator, models.firm_panel, findings.firm_level.

Expectations come from the simulator's stated parameters and its observed-scale
truth (computed on a 60,000-firm panel by an implementation independent of the
estimators), from hand computations (the two-way fixed-effects annihilator by
brute-force least squares) and from reference implementations (linearmodels
PanelOLS, statsmodels least-squares dummy variables, numpy correlations).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from cxex_lab.findings import firm_level
from cxex_lab.ledger import ledger_of
from cxex_lab.models.firm_panel import _TwoWay, find_firm_panel, firm_panel, read_firm_panel
from cxex_lab.simulate_firms import (
    DEFAULT_PARAMS,
    FAST_KEYS,
    firm_replicates,
    firm_scenarios,
    simulate_firms,
    summarise_replicates,
)

CONTACT = "contact_intensity"


@pytest.fixture(scope="module")
def panel():
    """The default design (300 firms, 2008-2018, 13 industries) with its observed truth."""
    return simulate_firms(seed=0)


@pytest.fixture(scope="module")
def report(panel):
    """findings.firm_level on the default panel."""
    return firm_level(panel, min_group_size=5, n_boot=200)


@pytest.fixture(scope="module")
def mid():
    """A smaller panel with latent columns, for the dummy-variable reference regressions."""
    return simulate_firms(n_firms=90, seed=6, truth_firms=0)


@pytest.fixture(scope="module")
def small():
    return simulate_firms(n_firms=60, n_years=6, seed=4, truth_firms=0).data


# --------------------------------------------------------------------------- simulator
def test_simulator_columns_ranges_and_realism(panel):
    d = panel.data
    assert list(d.columns) == ["firm_id", "industry", CONTACT, "year", "employee_rating", "n_reviews", "rating_sd",
                               "customer_index"]
    assert d["firm_id"].nunique() == 300 and d["industry"].nunique() == 13
    assert set(d["year"]) == set(range(2008, 2019))
    r, c = d["employee_rating"].dropna(), d["customer_index"]
    assert r.between(1, 5).all() and c.between(0, 100).all()
    assert 3.0 < r.median() < 4.0 and r.between(3, 4).mean() > 0.6  # ratings cluster between 3 and 4 stars
    lo, hi = c.quantile([0.05, 0.95])
    assert 60 <= lo and hi <= 88  # the index mostly between 60 and 85
    assert (c == c.round()).all()  # whole points, like the ACSI
    # rating missing exactly when there were no reviews
    assert (d["employee_rating"].isna() == (d["n_reviews"] == 0)).all()
    assert (d.groupby("firm_id").size() == 1).sum() > 0  # some firms observed one year only
    # five of the 13 industries are high-contact; 36% of firms by design
    assert d.groupby(CONTACT)["industry"].nunique().to_dict() == {"high": 5, "low": 8}
    assert d.groupby(CONTACT)["firm_id"].nunique()["high"] == 108


def test_simulator_is_reproducible_and_validates_parameters():
    a = simulate_firms(n_firms=30, n_years=4, seed=9, truth_firms=0).data
    b = simulate_firms(n_firms=30, n_years=4, seed=9, truth_firms=0).data
    c = simulate_firms(n_firms=30, n_years=4, seed=10, truth_firms=0).data
    pd.testing.assert_frame_equal(a, b)
    assert not a["customer_index"].equals(c["customer_index"])
    with pytest.raises(ValueError, match="unknown parameter.*'effect_hgh'"):
        simulate_firms(effect_hgh=1.0, truth_firms=0)
    with pytest.raises(ValueError, match="explosive"):
        simulate_firms(reverse=0.5, truth_firms=0)
    with pytest.raises(ValueError, match="review_sd must be > 0"):
        simulate_firms(review_sd=0, truth_firms=0)
    with pytest.raises(ValueError, match="n_firms must be a whole number"):
        simulate_firms(n_firms=1)


def test_truth_record(panel):
    t = panel.truth
    assert {"params", "derived", "derivation", "observed", "design"} <= set(t)
    assert t["derived"]["effect_per_star"] == {"high": 4.0, "low": 0.35, "difference": 4.0 - 0.35}
    obs = t["observed"]
    for key in ("firm.fe.per_star", "firm.fe.per_star.high_contact", "firm.fe_corrected.per_star.low_contact",
                "firm.pooled.corr", "firm.between.per_star", "firm.lag.index_to_rating"):
        assert {"value", "latent", "derivation"} <= set(obs[key])
    # noise-free ratings recover the stated effects exactly (the slope outcome excludes the index noise)
    assert obs["firm.fe_corrected.per_star.high_contact"]["value"] == pytest.approx(4.0, abs=1e-6)
    assert obs["firm.fe_corrected.per_star.low_contact"]["value"] == pytest.approx(0.35, abs=1e-6)
    # rating noise attenuates the published-design slopes; the published pattern is reproduced
    assert obs["firm.fe.per_star.high_contact"]["value"] == pytest.approx(3.2, abs=0.15)
    assert obs["firm.fe.per_star"]["value"] == pytest.approx(1.3, abs=0.1)
    # confounding raises the between-firm slope far above the within-firm one
    assert obs["firm.between.per_star"]["value"] > 3 * obs["firm.fe.per_star"]["value"]


def test_simulator_parts_recovered_on_latent_columns(panel, mid):
    """Plain regressions on the latent columns give back the stated parameters."""
    d = panel.data.merge(panel.latent, on=["firm_id", "year"])
    # review noise: n * (rating - true rating)^2 averages review_sd^2 (few-review rows: rounding negligible)
    ok = d["n_reviews"].between(1, 200) & d["employee_rating"].between(1.01, 4.99)
    z2 = d.loc[ok, "n_reviews"] * (d.loc[ok, "employee_rating"] - d.loc[ok, "true_rating"]) ** 2
    assert z2.mean() == pytest.approx(DEFAULT_PARAMS["review_sd"] ** 2, rel=0.08)
    # the index on the true rating, firm and year effects, by contact group: the stated effects
    m_d = mid.data.merge(mid.latent, on=["firm_id", "year"])
    m_d["signal"] = m_d["index_latent"] - m_d["index_noise"]
    m = smf.ols("signal ~ true_rating:contact_intensity + C(firm_id) + C(year)", m_d).fit()
    assert m.params["true_rating:contact_intensity[high]"] == pytest.approx(4.0, abs=1e-8)
    assert m.params["true_rating:contact_intensity[low]"] == pytest.approx(0.35, abs=1e-8)
    # the confounder raises both series
    fm = d.groupby("firm_id")[["true_rating", "index_latent", "confounder"]].mean()
    assert fm.corr().loc["confounder", "true_rating"] > 0.2 and fm.corr().loc["confounder", "index_latent"] > 0.2


# --------------------------------------------------------------------------- estimator: reference checks
def test_two_way_algebra_matches_brute_force_least_squares():
    rng = np.random.default_rng(0)
    sizes = [3, 4, 2, 5, 4, 3, 1]
    f = np.repeat(np.arange(len(sizes)), sizes)
    t = np.concatenate([rng.choice(6, k, replace=False) for k in sizes])
    tw = _TwoWay(f, t)
    D = np.column_stack([np.eye(len(sizes))[f], np.eye(6)[t]])
    M = np.eye(len(f)) - D @ np.linalg.pinv(D)
    v = rng.standard_normal((len(f), 2))
    np.testing.assert_allclose(tw.demean(v), M @ v, atol=1e-12)
    np.testing.assert_allclose(tw.diag_m(), np.diag(M), atol=1e-12)


def test_fixed_effects_match_lsdv_and_clustered_se_match_panelols_algebra(mid):
    d = mid.data
    table, fit = firm_panel(d, moderator=CONTACT)
    assert table["group"].tolist() == ["high", "low", "high - low"]
    assert fit.cluster == "firm_id" and fit.n_clusters == table.loc[2, "n_firms"]
    # point estimates: statsmodels least squares with firm and year dummies (single-year firms dropped)
    dd = d.dropna(subset=["employee_rating"])
    dd = dd[dd.groupby("firm_id")["year"].transform("size") >= 2]
    m = smf.ols("customer_index ~ employee_rating:contact_intensity + C(firm_id) + C(year)", dd).fit()
    assert table.loc[0, "estimate"] == pytest.approx(m.params["employee_rating:contact_intensity[high]"], abs=1e-8)
    assert table.loc[1, "estimate"] == pytest.approx(m.params["employee_rating:contact_intensity[low]"], abs=1e-8)
    assert table.loc[2, "estimate"] == pytest.approx(table.loc[0, "estimate"] - table.loc[1, "estimate"], abs=1e-10)
    # the hand-written corrected estimator with (practically) no review noise reproduces PanelOLS
    zero, _ = firm_panel(d, moderator=CONTACT, eiv=True, n_reviews="n_reviews", review_sd=1e-9)
    np.testing.assert_allclose(zero[["estimate", "se"]].to_numpy(), table[["estimate", "se"]].to_numpy(), atol=1e-8)
    # interval: t with G - 1 degrees of freedom
    from scipy import stats

    q = stats.t.ppf(0.975, fit.n_clusters - 1)
    assert table.loc[0, "ci_high"] == pytest.approx(table.loc[0, "estimate"] + q * table.loc[0, "se"])


def test_contrast_designs_match_numpy(panel):
    d = panel.data.dropna(subset=["employee_rating"])
    pooled, pfit = firm_panel(d, design="pooled", n_boot=200, seed=1)
    p = pooled.set_index("term")
    r = np.corrcoef(d["employee_rating"], d["customer_index"])[0, 1]
    assert p.loc["corr", "estimate"] == pytest.approx(r, abs=1e-12)
    assert p.loc["r2", "estimate"] == pytest.approx(r * r, abs=1e-12)
    assert p.loc["rating->index", "estimate"] == pytest.approx(np.polyfit(d["employee_rating"], d["customer_index"], 1)[0])
    assert p.loc["corr", "ci_low"] < r < p.loc["corr", "ci_high"]
    assert pfit.cluster == "firm_id"
    means = d.groupby("firm_id")[["employee_rating", "customer_index"]].mean()
    b = firm_panel(d, design="between").table.set_index("term")
    assert b.loc["rating->index", "estimate"] == pytest.approx(np.polyfit(means.iloc[:, 0], means.iloc[:, 1], 1)[0])
    last = d[d["year"] == 2018]
    s = firm_panel(d, design="cross_section").table.set_index("term")
    assert s.loc["r2", "estimate"] == pytest.approx(np.corrcoef(last["employee_rating"], last["customer_index"])[0, 1] ** 2)


def test_reliability_matches_the_realised_noise_share(panel):
    """The reported within-firm reliability equals 1 - (demeaned noise)²/(demeaned rating)² realised in the panel."""
    d = panel.data.merge(panel.latent, on=["firm_id", "year"]).dropna(subset=["employee_rating"])
    d = d[d.groupby("firm_id")["year"].transform("size") >= 2].reset_index(drop=True)
    _, fit = firm_panel(d, n_reviews="n_reviews", review_sd=DEFAULT_PARAMS["review_sd"])
    tw = _TwoWay(pd.factorize(d["firm_id"])[0], pd.factorize(d["year"])[0])
    x = tw.demean(d["employee_rating"].to_numpy())
    nu = tw.demean((d["employee_rating"] - d["true_rating"]).to_numpy())
    realised = 1 - (nu @ nu) / (x @ x)
    assert fit.reliability["all"] == pytest.approx(realised, abs=0.04)
    assert 0.6 < fit.reliability["all"] < 0.9


def test_lag_and_reverse_designs(panel):
    fwd, ffit = firm_panel(panel.data, lag=1)
    rev, _ = firm_panel(panel.data, lag=1, reverse=True)
    assert fwd["term"].tolist() == ["rating->index", "lagged outcome"]
    assert rev["term"].tolist() == ["index->rating", "lagged outcome"]
    assert rev.loc[0, "unit"] == "stars per index point"
    assert any("Nickell" in n for n in ffit.notes)
    assert any("values of 1 year(s) earlier" in e["rule"] for e in ffit.ledger)
    obs = panel.truth["observed"]
    for tab, key in ((fwd, "firm.lag.rating_to_index"), (rev, "firm.lag.index_to_rating")):
        assert tab.loc[0, "ci_low"] <= obs[key]["value"] <= tab.loc[0, "ci_high"]


def test_reverse_path_is_detected():
    """With a reverse path (index -> next year's rating) the reverse diagnostic covers its observed truth and is > 0."""
    p = simulate_firms(n_firms=600, seed=2, reverse=0.03, truth_firms=30_000, reviews_median=3000)
    rev, _ = firm_panel(p.data, lag=1, reverse=True)
    truth = p.truth["observed"]["firm.lag.index_to_rating"]
    assert truth["latent"] == 0.03 and truth["value"] > 0.01
    assert rev.loc[0, "ci_low"] <= truth["value"] <= rev.loc[0, "ci_high"]
    assert rev.loc[0, "ci_low"] > 0


# --------------------------------------------------------------------------- bad input
def test_rating_out_of_range_is_rejected_with_rows_value_and_rule(small):
    bad = small.copy()
    bad.loc[7, "employee_rating"] = 6.2
    with pytest.raises(ValueError) as exc:
        firm_panel(bad)
    msg = str(exc.value)
    assert "'employee_rating'" in msg and "outside 1-5" in msg and "row 7" in msg and "6.2" in msg and "stars" in msg


def test_index_out_of_range_is_rejected(small):
    bad = small.copy()
    bad.loc[3, "customer_index"] = 120
    with pytest.raises(ValueError, match=r"'customer_index' has 1 value\(s\) outside 0-100.*row 3.*120"):
        firm_panel(bad)


def test_duplicate_firm_years_are_rejected(small):
    bad = pd.concat([small, small.iloc[[5]]], ignore_index=True)
    fid, yr = small.loc[5, "firm_id"], small.loc[5, "year"]
    with pytest.raises(ValueError, match=rf"2 rows share a \(firm, year\) pair.*one row per firm and year.*{fid}.*{yr}"):
        firm_panel(bad)


def test_other_bad_inputs(small):
    with pytest.raises(ValueError, match=r"column\(s\) \['rating'\] not found.*Available columns"):
        firm_panel(small, x="rating")
    bad = small.assign(employee_rating=small["employee_rating"].astype(str))
    with pytest.raises(ValueError, match="'employee_rating' must be numeric"):
        firm_panel(bad)
    with pytest.raises(ValueError, match="whole years"):
        firm_panel(small.assign(year=small["year"] + 0.5))
    with pytest.raises(ValueError, match="'n_reviews' .* not whole numbers >= 0"):
        firm_panel(small.assign(n_reviews=-small["n_reviews"] - 1), n_reviews="n_reviews", review_sd=1.2)
    with pytest.raises(ValueError, match="either weights= or eiv=True"):
        firm_panel(small, weights="n_reviews", eiv=True, n_reviews="n_reviews", review_sd=1.2)
    with pytest.raises(ValueError, match="eiv=True needs n_reviews="):
        firm_panel(small, eiv=True)
    with pytest.raises(ValueError, match="design must be one of"):
        firm_panel(small, design="random")
    with pytest.raises(ValueError, match="apply to design='fe' only"):
        firm_panel(small, design="pooled", lag=1)


def test_single_year_firm_is_excluded_and_counted_in_the_ledger(small):
    extra = pd.DataFrame({"firm_id": ["ONE"], "industry": ["Retail"], CONTACT: ["high"], "year": [2010],
                          "employee_rating": [3.5], "n_reviews": [40], "rating_sd": [1.1], "customer_index": [77.0]})
    d = pd.concat([small, extra], ignore_index=True)
    per = d.dropna(subset=["employee_rating"]).groupby("firm_id")["year"].size()
    n_single = int((per < 2).sum())
    assert n_single >= 1
    table, fit = firm_panel(d)
    led = ledger_of(list(fit.ledger))
    hit = led[led["rule"].str.contains("fewer than 2 usable years")]
    assert len(hit) == 1 and int(hit["rows_excluded"].iloc[0]) == n_single
    assert f"({n_single} firm(s))" in hit["rule"].iloc[0]
    assert table.loc[0, "n_firms"] == int((per >= 2).sum())
    assert fit.n_obs == int(per[per >= 2].sum())


def test_small_industry_is_suppressed_in_the_report(panel, report):
    f = report
    by = f.details["by_industry"]
    n_firms = panel.data.groupby("industry")["firm_id"].nunique()
    small = set(n_firms[n_firms < 5].index)
    assert small == {"Appliances & electronics"}  # 4 firms by design
    sup = by[by["suppressed"]]
    assert set(sup["industry"]) == small
    assert sup[["n_firms", "mean_rating", "mean_index", "fe_per_star"]].isna().all().all()
    assert any("confidentiality minimum" in r for r in f.details["ledger"]["rule"])
    # the firms stay in the estimates
    assert f["firm.pooled.corr"]["n_clusters"] == 300
    from cxex_lab.privacy import assert_reportable

    assert_reportable(by, ["n_firms"], 5)


def test_read_and_find_a_researchers_file(tmp_path, small):
    raw = small.rename(columns={"firm_id": "Company", "year": "FY", "employee_rating": "Glassdoor",
                                "customer_index": "ACSI", "n_reviews": "Reviews", CONTACT: "Contact",
                                "industry": "Sector"})
    raw["Contact"] = raw["Contact"].str.upper()
    path = tmp_path / "panel.csv"
    raw.to_csv(path, index=False)
    cols = dict(firm="Company", year="FY", rating="Glassdoor", index="ACSI", n_reviews="Reviews", contact="Contact",
                industry="Sector")
    d = read_firm_panel(path, **cols)
    assert {"firm_id", "year", "employee_rating", "customer_index", CONTACT} <= set(d.columns)
    assert set(d[CONTACT]) == {"high", "low"} and d.attrs["source"] == "panel.csv"
    raw.loc[2, "ACSI"] = 101
    raw.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"read_firm_panel \(panel.csv\): column 'customer_index'.*outside 0-100.*row 2"):
        read_firm_panel(path, **cols)
    with pytest.raises(ValueError, match=r"panel.csv: column\(s\) \['Rating'\] not found"):
        read_firm_panel(path, **{**cols, "rating": "Rating"})
    assert find_firm_panel(tmp_path) is None
    small.to_csv(tmp_path / "firm_panel.csv", index=False)
    assert find_firm_panel(tmp_path).name == "firm_panel.csv"
    with pytest.raises(ValueError, match="not found"):
        find_firm_panel(tmp_path, firm_data=tmp_path / "nope.csv")


# --------------------------------------------------------------------------- findings
def test_firm_level_findings_and_truth_check(report):
    f = report
    t = f.table.set_index("key")
    for key in ("firm.fe.per_star", "firm.fe.per_star.high_contact", "firm.fe.per_star.low_contact",
                "firm.fe.difference", "firm.fe_corrected.per_star.high_contact"):
        assert t.loc[key, "kind"] == "effect"
    for key in ("firm.pooled.corr", "firm.pooled.per_star", "firm.between.per_star", "firm.cross_section.r2",
                "firm.lag.rating_to_index", "firm.lag.index_to_rating"):
        assert t.loc[key, "kind"] == "association"
    # causal only for an effect whose interval the harness passed (cxex_lab/data/coverage.json)
    from cxex_lab.findings import verdicts
    want = [k == "effect" and bool(verdicts().get(key, {}).get("passed")) for key, k in zip(t.index, t["kind"])]
    assert t["causal"].tolist() == want
    # the truth check covers every finding that has an observed truth
    tc = f.truth.set_index("key")
    assert {"firm.fe.per_star.high_contact", "firm.pooled.corr"} <= set(tc.index)
    assert tc.loc["firm.fe_corrected.per_star.high_contact", "latent"] == 4.0
    assert tc["inside_ci"].mean() >= 0.8
    # the published reading and the "no relationship" reading of the same data
    assert t.loc["firm.fe.per_star.high_contact", "ci_low"] > 2 * max(t.loc["firm.fe.per_star", "estimate"], 0)
    assert t.loc["firm.fe.per_star.low_contact", "ci_low"] < 0.5
    assert t.loc["firm.cross_section.r2", "estimate"] < 0.15
    assert {"by_industry", "by_contact", "designs", "direction", "noise", "effect_size", "ledger"} <= set(f.details)
    assert f.details["effect_size"]["sentence"].str.contains("one more star goes with about").all()
    share = t.loc["firm.fe.share_of_spread", "estimate"]
    assert share == pytest.approx(100 * t.loc["firm.fe.per_star", "estimate"] / f.details["effect_size"].loc[0, "between_firm_sd_index"])


def test_firm_level_on_real_data_without_truth_counts_or_contact(small):
    plain = small.drop(columns=["n_reviews", "rating_sd", CONTACT])
    f = firm_level(plain, n_boot=50)
    assert f.truth is None
    keys = set(f.table["key"])
    assert "firm.fe.per_star" in keys and not any(k.startswith("firm.fe_corrected") for k in keys)
    assert not any(k.endswith("_contact") for k in keys)
    assert "by_contact" not in f.details and "noise" not in f.details
    assert f["firm.fe.per_star"]["n_clusters"] == (plain.dropna(subset=["employee_rating"])
                                                  .groupby("firm_id").size() >= 2).sum()


def test_truth_without_observed_section_is_compared_on_the_latent_scale():
    p = simulate_firms(n_firms=200, seed=5, truth_firms=0)
    f = firm_level(p, details=False, n_boot=0)
    assert set(f.truth["key"]) == {"firm.fe_corrected.per_star.high_contact", "firm.fe_corrected.per_star.low_contact",
                                   "firm.fe_corrected.difference"}
    assert (f.truth["truth"] == f.truth["latent"]).all()
    assert any("no observed-scale section" in n for n in f.notes)


# --------------------------------------------------------------------------- recovery (issue 15 acceptance)
def test_fe_intervals_cover_the_truth_for_both_contact_groups(panel):
    obs = panel.truth["observed"]
    fe, _ = firm_panel(panel.data, moderator=CONTACT)
    ev, _ = firm_panel(panel.data, moderator=CONTACT, eiv=True, n_reviews="n_reviews", review_sd="rating_sd")
    for tab, prefix in ((fe, "firm.fe"), (ev, "firm.fe_corrected")):
        for g in ("high", "low"):
            row = tab[tab["group"] == g].iloc[0]
            truth = obs[f"{prefix}.per_star.{g}_contact"]["value"]
            assert row.ci_low <= truth <= row.ci_high, (prefix, g, row.estimate, truth)


def test_pooled_correlation_is_biased_by_firm_level_confounding():
    """Same seeds with and without the confounder (no industry differences, to isolate it)."""
    iso = dict(industry_sd_rating=0.0, industry_sd_index=0.0, contact_rating_shift=0.0, truth_firms=0)
    diffs, excl_on, cover_off = [], 0, 0
    seeds = range(8)
    for s in seeds:
        on = simulate_firms(seed=s, **iso).data
        off = simulate_firms(seed=s, confounding_rating=0.0, confounding_index=0.0, **iso).data
        t_on = firm_panel(on, design="pooled", moderator=CONTACT, n_boot=0).table
        t_off = firm_panel(off, design="pooled", moderator=CONTACT, n_boot=0).table
        c = lambda t: t[(t["term"] == "corr") & (t["group"] == "low")].iloc[0].estimate  # noqa: E731
        diffs.append(c(t_on) - c(t_off))
        low_on = t_on[(t_on["term"] == "rating->index") & (t_on["group"] == "low")].iloc[0]
        low_off = t_off[(t_off["term"] == "rating->index") & (t_off["group"] == "low")].iloc[0]
        excl_on += low_on.ci_low > DEFAULT_PARAMS["effect_low"]
        cover_off += low_off.ci_low <= DEFAULT_PARAMS["effect_low"] <= low_off.ci_high
    diffs = np.array(diffs)
    # the confounder raises the pooled correlation of low-contact firms (true effect small) in every seed
    assert (diffs > 0).all() and diffs.mean() > 0.1
    # pooled slopes of low-contact firms exclude the true effect per star with confounding, cover it without
    assert excl_on >= 6 and cover_off >= 6


def test_review_count_correction_reduces_the_attenuation():
    """With few reviews per firm-year the FE slope is attenuated; weights and the correction bring it back."""
    few = dict(reviews_median=60.0, truth_firms=0)
    est = {"fe": [], "weighted": [], "corrected": []}
    for s in range(6):
        d = simulate_firms(seed=100 + s, **few).data
        hi = lambda t: t[t["group"] == "high"].iloc[0].estimate  # noqa: E731
        est["fe"].append(hi(firm_panel(d, moderator=CONTACT).table))
        est["weighted"].append(hi(firm_panel(d, moderator=CONTACT, weights="n_reviews").table))
        est["corrected"].append(hi(firm_panel(d, moderator=CONTACT, eiv=True, n_reviews="n_reviews",
                                              review_sd="rating_sd").table))
    bias = {k: np.mean(v) - DEFAULT_PARAMS["effect_high"] for k, v in est.items()}
    assert bias["fe"] < -1.0  # strong attenuation
    assert abs(bias["weighted"]) < abs(bias["fe"])
    assert abs(bias["corrected"]) < 0.5 < abs(bias["fe"]) / 2


def test_scenarios_show_what_moves_the_answer():
    keep = ("as simulated", "no firm-level confounding", "few reviews (median 30 a year)", "noise-free ratings",
            "contact does not matter (low = high)")
    from cxex_lab.simulate_firms import SCENARIOS

    tab = firm_scenarios(seed=0, n_firms=200, scenarios={k: SCENARIOS[k] for k in keep}).set_index("scenario")
    assert tab.loc["noise-free ratings", "fe_high"] == pytest.approx(4.0, abs=0.5)
    assert tab.loc["few reviews (median 30 a year)", "fe_high"] < 0.5 * tab.loc["as simulated", "fe_high"]
    assert tab.loc["no firm-level confounding", "between_per_star"] < tab.loc["as simulated", "between_per_star"]
    assert tab.loc["contact does not matter (low = high)", "fe_low"] > 2.0


def test_replicates_shape_and_summary():
    reps = firm_replicates(R=3, seed=1, n_firms=120, fast=True, truth_firms=5000)
    assert set(reps["key"]) == set(FAST_KEYS) and reps["replicate"].nunique() == 3
    s = summarise_replicates(reps)
    assert {"bias", "bias_se", "coverage", "coverage_mc_se", "mean_width"} <= set(s.columns)
    full = firm_replicates(R=1, seed=1, n_firms=120, truth_firms=5000, n_boot=20)
    assert "firm.pooled.corr" in set(full["key"])
    assert full.loc[full["key"] != "firm.fe.share_of_spread", "truth"].notna().all()


@pytest.mark.slow
def test_fe_coverage_over_replicate_panels():
    """Issue 15 acceptance: the FE intervals cover the simulated truth for both contact groups (150 panels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reps = firm_replicates(R=150, seed=2015, fast=True)
    s = summarise_replicates(reps).set_index("key")
    print(s.round(3).to_string())
    for key in FAST_KEYS:
        assert 0.88 <= s.loc[key, "coverage"] <= 0.99, (key, s.loc[key, "coverage"])
        assert abs(s.loc[key, "bias_se"]) <= 0.3, (key, s.loc[key, "bias_se"])


def test_other_contact_labels_use_the_low_level_as_reference(small):
    d = small.assign(contact_intensity=small[CONTACT].map({"high": "High touch", "low": "Low touch"}))
    table, _ = firm_panel(d, moderator=CONTACT)
    assert table["group"].tolist() == ["High touch", "Low touch", "High touch - Low touch"]
    f = firm_level(d, details=False, n_boot=0)
    assert {"firm.fe.per_star.high_touch_contact", "firm.fe.per_star.low_touch_contact"} <= set(f.table["key"])


def test_notebook_runs_on_a_researchers_csv(tmp_path, small):
    """The notebook's real-data path: a CSV with its own column names, given as parameters."""
    import json

    import papermill as pm

    from tests.conftest import ROOT

    raw = small.drop(columns=["rating_sd"]).rename(columns={"firm_id": "Company", "year": "FY",
                                                            "employee_rating": "Glassdoor", "customer_index": "ACSI"})
    path = tmp_path / "benchmark.csv"
    raw.to_csv(path, index=False)
    out = tmp_path / "09.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "09_firm_level.ipynb"), str(out), cwd=str(ROOT),
                        parameters={"firm_data": str(path), "firm_col": "Company", "year_col": "FY",
                                    "rating_col": "Glassdoor", "index_col": "ACSI", "review_sd_col": "",
                                    "review_sd_stars": 1.2},
                        kernel_name="python3", progress_bar=False)
    text = json.dumps([o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])])
    assert "benchmark.csv: 60 firms" in text
    assert "Real data: no ground truth" in text
    assert "Index points per star, within firms, corrected for rating noise" in text


def test_optional_market_value_follows_the_index():
    p = simulate_firms(n_firms=150, seed=8, truth_firms=0, market_value=True)
    d = p.data.merge(p.latent, on=["firm_id", "year"])
    assert (d["market_value"] > 0).all()
    m = smf.ols("np.log(market_value) ~ index_latent + C(firm_id)", d).fit()
    assert m.params["index_latent"] == pytest.approx(DEFAULT_PARAMS["value_per_index_point"], abs=0.003)
