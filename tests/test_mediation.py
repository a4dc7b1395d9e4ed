"""Mediation EX -> operations -> CX: references (pingouin, linearmodels, statsmodels), recovery, coverage."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from linearmodels import PanelOLS

from cxex_lab.models.mediation import MediationFit, _resample_counts, mediation
from cxex_lab.results import Result
from cxex_lab.simulate import derive_truth, simulate_panel

MEDS = ["fcr", "aht", "transfer"]

# In simulate_panel, CX also depends on last wave's EX and CX (within-unit dynamics)
# and on stable unit/site differences correlated with EX (between-unit confounding).
# CLEAN switches both off: no site effect, uncorrelated random intercepts, no lagged
# effects. What remains is M = a*EX + e_M, CX = direct*EX + sum b*M + (unit intercept) + e.
CLEAN = dict(site_sd=0, ri_corr=0, ar_ex=0, ar_cx=0, ex_to_cx=0, cx_to_ex=0)
# CONFOUNDED keeps the stable confounders (site effects on EX and CX, correlated random
# intercepts, team climate) but no within-employee dynamics: the setting the within-employee
# design is for (stable confounding, no time-varying confounding).
CONFOUNDED = dict(ar_ex=0, ar_cx=0, ex_to_cx=0, cx_to_ex=0)
# DYNAMIC adds EX persistence (ar_ex = 0.4). The simulator keeps the RI-CLPM lag ex_to_cx = 0,
# which makes CX depend on last wave's EX (-d * ar_ex): a time-varying confounder that the
# within design handles only with lags=["ex"].
DYNAMIC = dict(ar_cx=0, ex_to_cx=0, cx_to_ex=0)
TRUTH = derive_truth(CLEAN)["derived"]["mediation"]
assert derive_truth(CONFOUNDED)["derived"]["mediation"] == TRUTH  # same structural paths
assert derive_truth(DYNAMIC)["derived"]["mediation"] == TRUTH


@pytest.fixture(scope="module")
def panel():
    return simulate_panel(2000, 4, seed=5, **CLEAN)


@pytest.fixture(scope="module")
def confounded():
    return simulate_panel(1500, 4, seed=6, **CONFOUNDED)


def _row(table, term):
    return table.set_index("term").loc[term]


def _unbalanced(seed=0, n_units=150, n_waves=5):
    """A small unbalanced panel with stable confounding, a wave shock and a time-varying covariate."""
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"emp": np.repeat(np.arange(n_units), n_waves), "wave": np.tile(np.arange(1, n_waves + 1), n_units)})
    stable = np.repeat(rng.normal(size=n_units), n_waves)
    shock = np.array([0.0, 0.3, -0.2, 0.1, 0.4])[d["wave"] - 1]
    d["tenure"] = d["wave"] * 0.25 + rng.normal(0, 1, len(d))
    d["ex"] = stable + shock + rng.normal(size=len(d))
    d["m1"] = 0.5 * d["ex"] + 0.3 * stable + rng.normal(size=len(d))
    d["m2"] = -0.3 * d["ex"] + rng.normal(size=len(d))
    d["cx"] = 0.4 * d["m1"] - 0.5 * d["m2"] + 0.2 * d["ex"] + stable + shock + 0.1 * d["tenure"] + rng.normal(size=len(d))
    d["loyal"] = 0.6 * d["cx"] + 0.2 * d["m2"] + stable + rng.normal(size=len(d))
    d["team"] = d["emp"] // 5
    keep = rng.random(len(d)) > 0.3  # unbalanced, some employees with a single row
    return d.loc[keep].reset_index(drop=True)


# --------------------------------------------------------------------------- references
def test_pooled_point_estimates_and_ses_agree_with_pingouin(panel):
    d = panel.sample(1500, random_state=1).assign(tenure=lambda x: np.random.default_rng(0).normal(size=len(x)))
    res = mediation(d, "ex", MEDS, "cx", unit=None, effects="pooled", covariates="tenure", n_boot=300, seed=1)
    assert isinstance(res, Result) and isinstance(res.fit, MediationFit)
    ours, fit = res
    assert fit.cluster is None and fit.effects == "pooled"
    ref = pg.mediation_analysis(data=d, x="ex", m=MEDS, y="cx", covar="tenure", n_boot=300, seed=1).set_index("path")
    for m in MEDS:
        assert _row(ours, f"ex -> {m}")["estimate"] == pytest.approx(ref.loc[f"{m} ~ X", "coef"], rel=1e-8)
        assert _row(ours, f"ex -> {m}")["se"] == pytest.approx(ref.loc[f"{m} ~ X", "se"], rel=1e-6)
        assert _row(ours, f"indirect {m}")["estimate"] == pytest.approx(ref.loc[f"Indirect {m}", "coef"], rel=1e-8)
        # pingouin's CIs are bias-corrected, ours percentile: close, not identical
        assert _row(ours, f"indirect {m}")["ci_low"] == pytest.approx(ref.loc[f"Indirect {m}", "CI2.5"], abs=0.02)
    for ours_term, ref_term in (("direct", "Direct"), ("total", "Total")):
        assert _row(ours, ours_term)["estimate"] == pytest.approx(ref.loc[ref_term, "coef"], rel=1e-8)
        assert _row(ours, ours_term)["se"] == pytest.approx(ref.loc[ref_term, "se"], rel=1e-6)
    # b-paths hold EX fixed (pingouin's "Y ~ M" rows do not; its indirect effects do)
    full = sm.OLS(d["cx"], sm.add_constant(d[["ex", *MEDS, "tenure"]])).fit()
    for m in MEDS:
        assert _row(ours, f"{m} -> cx")["estimate"] == pytest.approx(full.params[m], rel=1e-8)
    assert _row(ours, "total")["estimate"] == pytest.approx(
        _row(ours, "direct")["estimate"] + _row(ours, "indirect_total")["estimate"], abs=1e-12
    )


def test_within_equals_two_way_fixed_effects_panelols():
    d = _unbalanced()
    table, fit = mediation(d, "ex", ["m1", "m2"], "cx", unit="emp", period="wave", covariates="tenure", n_boot=0)
    singles = d.groupby("emp")["emp"].transform("size") == 1
    assert fit.n_singletons == d.loc[singles, "emp"].nunique() > 0
    dd = d.loc[~singles].set_index(["emp", "wave"])
    n = len(dd)
    assert fit.n_obs == n and fit.n_units == dd.index.get_level_values(0).nunique()
    n_wave = dd.index.get_level_values(1).nunique() - 1  # wave indicators our design counts as regressors
    # linearmodels absorbs the wave effects and (auto_df=False, count_effects=False) does not count
    # them in K; debiased + group_debias give (N-1)/(N-K) * G/(G-1) (CR1), which we compute
    # with K = x, covariates, mediators *and* the wave indicators (Stata's xtreg-fe convention).
    kw = dict(cov_type="clustered", cluster_entity=True, debiased=True, group_debias=True, auto_df=False, count_effects=False)

    def check(dep, regs, ours):
        r = PanelOLS(dd[dep], dd[regs], entity_effects=True, time_effects=True).fit(**kw)
        k_lm = len(regs)
        scale = np.sqrt((n - k_lm) / (n - k_lm - n_wave))
        for reg, term in ours.items():
            row = _row(table, term)
            assert row["estimate"] == pytest.approx(r.params[reg], rel=1e-9, abs=1e-12)
            assert row["se"] == pytest.approx(r.std_errors[reg] * scale, rel=1e-8)

    check("m1", ["ex", "tenure"], {"ex": "ex -> m1"})
    check("m2", ["ex", "tenure"], {"ex": "ex -> m2"})
    check("cx", ["ex", "tenure", "m1", "m2"], {"ex": "direct", "m1": "m1 -> cx", "m2": "m2 -> cx"})
    check("cx", ["ex", "tenure"], {"ex": "total"})
    # interval: t with G - 1 degrees of freedom
    from scipy import stats

    row = _row(table, "total")
    half = stats.t.ppf(0.975, fit.n_clusters - 1) * row["se"]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((row["estimate"] - half, row["estimate"] + half), rel=1e-9)


def test_within_products_equal_two_way_fe_dummy_regressions_with_outcome2():
    d = _unbalanced(seed=3)
    table, fit = mediation(d, "ex", ["m1", "m2"], "cx", unit="emp", outcome2="loyal", n_boot=0)
    d = d[d.groupby("emp")["emp"].transform("size") > 1]
    fe = "C(emp) + C(wave)"
    a = {m: smf.ols(f"{m} ~ ex + {fe}", d).fit().params["ex"] for m in ("m1", "m2")}
    fy = smf.ols(f"cx ~ ex + m1 + m2 + {fe}", d).fit().params
    f2 = smf.ols(f"loyal ~ ex + m1 + m2 + cx + {fe}", d).fit().params
    tot = smf.ols(f"cx ~ ex + {fe}", d).fit().params["ex"]
    tot2 = smf.ols(f"loyal ~ ex + {fe}", d).fit().params["ex"]
    expect = {
        "indirect m1": a["m1"] * fy["m1"], "indirect m2": a["m2"] * fy["m2"],
        "ex -> m1 -> cx -> loyal": a["m1"] * fy["m1"] * f2["cx"],
        "ex -> cx -> loyal": fy["ex"] * f2["cx"],
        "serial_total": tot * f2["cx"],
        "ex -> m2 -> loyal": a["m2"] * f2["m2"],
        "total ex -> loyal": tot2, "direct ex -> loyal": f2["ex"], "cx -> loyal": f2["cx"],
    }
    for term, value in expect.items():
        assert _row(table, term)["estimate"] == pytest.approx(value, rel=1e-8), term
    est = table.set_index("term")["estimate"]
    # the total effect on outcome2 decomposes exactly
    assert est["total ex -> loyal"] == pytest.approx(
        est["direct ex -> loyal"] + est["bypass_total"] + est["serial_total"], abs=1e-12
    )
    assert est["indirect2_total"] == pytest.approx(est["bypass_total"] + est["serial_total"], abs=1e-12)
    assert est["serial_total"] == pytest.approx(
        est["ex -> m1 -> cx -> loyal"] + est["ex -> m2 -> cx -> loyal"] + est["ex -> cx -> loyal"], abs=1e-12
    )


def test_between_equals_ols_on_unit_means():
    d = _unbalanced(seed=4)
    table, fit = mediation(d, "ex", ["m1", "m2"], "cx", unit="emp", effects="between", cluster="team", n_boot=0)
    means = d.groupby("emp")[["ex", "m1", "m2", "cx", "team"]].mean()
    r = sm.OLS(means["cx"], sm.add_constant(means[["ex", "m1", "m2"]])).fit(
        cov_type="cluster", cov_kwds={"groups": means["team"].astype(int)}, use_t=True
    )
    assert _row(table, "direct")["estimate"] == pytest.approx(r.params["ex"], rel=1e-9)
    assert _row(table, "direct")["se"] == pytest.approx(r.bse["ex"], rel=1e-9)
    assert _row(table, "m2 -> cx")["estimate"] == pytest.approx(r.params["m2"], rel=1e-9)
    assert fit.n_obs == len(means) and fit.n_clusters == means["team"].nunique() and fit.cluster == "team"


def _refit_within(d, counts, unit, x, meds, y):
    """Two-way FE on the resampled panel: a unit drawn c times enters c times as distinct units."""
    units = np.sort(d[unit].unique())
    parts = []
    for j, u in enumerate(units):
        for copy in range(int(counts[j])):
            parts.append(d[d[unit] == u].assign(_u=f"{u}_{copy}"))
    rs = pd.concat(parts, ignore_index=True)
    fe = "C(_u) + C(wave)"
    a = [smf.ols(f"{m} ~ {x} + {fe}", rs).fit().params[x] for m in meds]
    b = smf.ols(f"{y} ~ {x} + {' + '.join(meds)} + {fe}", rs).fit().params[meds].to_numpy()
    tot = smf.ols(f"{y} ~ {x} + {fe}", rs).fit().params[x]
    return np.array(a), b, tot


def test_crossproduct_bootstrap_equals_refitting_resampled_units():
    # Centring is done once per unit; a resampled unit brings its centred rows unchanged.
    # Check that a bootstrap draw equals two-way FE refitted on the resampled rows.
    d = _unbalanced(seed=5, n_units=40)
    d = d[d.groupby("emp")["emp"].transform("size") > 1]
    _, fit = mediation(d, "ex", ["m1", "m2"], "cx", unit="emp", n_boot=3, seed=9)
    counts = _resample_counts(np.random.default_rng(9), d["emp"].nunique(), 3)
    for i in range(2):
        a, b, tot = _refit_within(d, counts[i], "emp", "ex", ["m1", "m2"], "cx")
        draw = fit.boot.iloc[i]
        np.testing.assert_allclose(draw[["ex -> m1", "ex -> m2"]].to_numpy(float), a, rtol=1e-8)
        np.testing.assert_allclose(draw[["indirect m1", "indirect m2"]].to_numpy(float), a * b, rtol=1e-8)
        assert draw["total"] == pytest.approx(tot, rel=1e-8)


def test_team_cluster_bootstrap_resamples_whole_teams():
    d = _unbalanced(seed=6)
    _, fit = mediation(d, "ex", ["m1"], "cx", unit="emp", cluster="team", n_boot=50, seed=1)
    assert fit.cluster == "team" and fit.n_clusters == d.loc[d.groupby("emp")["emp"].transform("size") > 1, "team"].nunique()
    bad = d.assign(team=np.arange(len(d)) % 7)  # employees spread over teams
    with pytest.raises(ValueError, match="every 'emp' must lie in one 'team' cluster"):
        mediation(bad, "ex", ["m1"], "cx", unit="emp", cluster="team", n_boot=10)


# --------------------------------------------------------------------------- recovery
def test_within_recovers_paths_under_stable_confounding_where_pooled_fails(confounded):
    table, fit = mediation(confounded, "ex", MEDS, "cx", unit="unit", n_boot=1000, seed=11)
    checks = {f"ex -> {m}": TRUTH["a"][m] for m in MEDS}
    checks |= {f"{m} -> cx": TRUTH["b"][m] for m in MEDS}
    checks |= {f"indirect {m}": TRUTH["indirect"][m] for m in MEDS}
    checks |= {"direct": TRUTH["direct"], "indirect_total": TRUTH["indirect_total"], "total": TRUTH["total"]}
    for term, true in checks.items():
        r = _row(table, term)
        assert r["ci_low"] <= true <= r["ci_high"], (term, true, r["ci_low"], r["ci_high"])
    assert fit.n_clusters == 1500 and fit.n_boot_failed == 0 and fit.cluster == "unit"
    assert table["n"].eq(6000).all()
    assert len(fit.boot) == 1000 and set(checks) <= set(fit.boot.columns)
    # pooling over people lets the correlated random intercepts and site effects in
    pooled, _ = mediation(confounded, "ex", MEDS, "cx", unit="unit", effects="pooled", n_boot=0)
    assert _row(pooled, "total")["ci_low"] > TRUTH["total"] + 0.1
    between, _ = mediation(confounded, "ex", MEDS, "cx", unit="unit", effects="between", n_boot=0)
    assert _row(between, "total")["estimate"] > _row(pooled, "total")["estimate"]


def test_lags_adjust_for_last_waves_ex_when_it_confounds():
    d = simulate_panel(6000, 6, seed=8, **DYNAMIC)
    plain, _ = mediation(d, "ex", MEDS, "cx", unit="unit", n_boot=0)
    lagged, fit = mediation(d, "ex", MEDS, "cx", unit="unit", lags="ex", n_boot=0)
    assert _row(plain, "total")["ci_high"] < TRUTH["total"]  # omitted lagged EX biases the within total
    r = _row(lagged, "total")
    assert r["ci_low"] <= TRUTH["total"] <= r["ci_high"]
    assert fit.n_dropped == 6000 and fit.n_obs == 6000 * 5  # wave 1 has no previous wave
    assert not lagged["term"].str.contains("ex_lag1").any()  # a covariate, not a reported path
    # the lag is the value of the unit's previous period, found by period order, not row order
    shuffled = d.sample(frac=1.0, random_state=1)
    again, _ = mediation(shuffled, "ex", MEDS, "cx", unit="unit", lags="ex", n_boot=0)
    assert _row(again, "total")["estimate"] == pytest.approx(r["estimate"], rel=1e-10)
    sm_ref = smf.ols("cx ~ ex + ex_lag1 + C(unit) + C(wave)",
                     d.head(600).sort_values(["unit", "wave"]).assign(
                         ex_lag1=lambda x: x.groupby("unit")["ex"].shift())).fit()
    small, _ = mediation(d.head(600), "ex", MEDS, "cx", unit="unit", lags="ex", n_boot=0)
    assert _row(small, "total")["estimate"] == pytest.approx(sm_ref.params["ex"], rel=1e-9)


def test_serial_chain_recovered_within(confounded):
    rng = np.random.default_rng(2)
    stable = confounded.groupby("unit")["cx"].transform("mean")  # a stable confounder of CX and loyalty
    d = confounded.assign(retention=lambda x: 0.5 * x["cx"] + stable + rng.normal(0, 1, len(x)))
    table, _ = mediation(d, "ex", MEDS, "cx", unit="unit", outcome2="retention", n_boot=500, seed=3)
    c2 = _row(table, "cx -> retention")
    assert c2["ci_low"] <= 0.5 <= c2["ci_high"]
    for m in MEDS:  # product path x -> M -> CX -> loyalty, with its own bootstrap interval
        r = _row(table, f"ex -> {m} -> cx -> retention")
        assert r["estimate"] == pytest.approx(_row(table, f"indirect {m}")["estimate"] * c2["estimate"], rel=1e-10)
        assert r["ci_low"] <= 0.5 * TRUTH["indirect"][m] <= r["ci_high"]
        assert np.isfinite(r["se"]) and r["ci_method"].startswith("percentile bootstrap over unit")
    st = _row(table, "serial_total")
    assert st["ci_low"] <= 0.5 * TRUTH["total"] <= st["ci_high"]
    dr = _row(table, "direct ex -> retention")
    assert dr["ci_low"] <= 0.0 <= dr["ci_high"]  # EX reaches loyalty only through CX here
    by = _row(table, "bypass_total")
    assert by["ci_low"] <= 0.0 <= by["ci_high"]
    # every product row has a bootstrap interval
    prods = table[table["ci_method"].str.startswith("percentile")]
    assert len(prods) == 3 + 1 + 3 + 2 + 3 + 2 and prods[["ci_low", "ci_high"]].notna().all().all()


def test_seed_reproducible_and_missing_counted(panel):
    d = panel.head(300).copy()
    d.loc[:9, "fcr"] = np.nan
    a = mediation(d, "ex", MEDS, "cx", unit="unit", n_boot=100, seed=4)
    b = mediation(d, "ex", MEDS, "cx", unit="unit", n_boot=100, seed=np.random.default_rng(4))
    pd.testing.assert_frame_equal(a.table, b.table)
    pd.testing.assert_frame_equal(a.fit.boot, b.fit.boot)
    assert a.fit == b.fit  # boot is compare=False
    # rows 0-9 are the first 10 rows: units 0, 1 (4 waves) and 2 (2 waves): 10 missing
    assert a.fit.n_dropped >= 10 and any("missing" in n for n in a.fit.notes)
    assert a.table["n"].eq(a.fit.n_obs).all()


@pytest.mark.slow
def test_coverage_of_95pct_within_intervals_is_near_nominal():
    start = time.perf_counter()
    reps, hits = 100, {k: 0 for k in [*MEDS, "direct", "indirect_total", "total"]}
    for rep in range(reps):
        d = simulate_panel(300, 3, seed=1000 + rep, **CONFOUNDED)
        res = mediation(d, "ex", MEDS, "cx", unit="unit", n_boot=299, seed=rep).table.set_index("term")
        for m in MEDS:
            hits[m] += res.loc[f"indirect {m}", "ci_low"] <= TRUTH["indirect"][m] <= res.loc[f"indirect {m}", "ci_high"]
        for t in ("direct", "indirect_total", "total"):
            hits[t] += res.loc[t, "ci_low"] <= TRUTH[t] <= res.loc[t, "ci_high"]
    coverage = {k: v / reps for k, v in hits.items()}
    assert all(0.88 <= c <= 0.99 for c in coverage.values()), coverage
    assert time.perf_counter() - start < 90


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "mutate, kwargs, message",
    [
        (lambda d: d, dict(mediators=["fcr", "nps"]), "column 'nps' not found"),
        (lambda d: d.assign(aht=d["aht"].astype(str)), {}, "column 'aht' is not numeric"),
        (lambda d: d.assign(transfer=np.nan), {}, "column 'transfer' is entirely missing"),
        (lambda d: d.assign(ex=1.0), dict(effects="pooled"), "predictor 'ex' is constant"),
        (lambda d: d.assign(ex=d["unit"] * 1.0), {}, "column 'ex' does not vary within any 'unit'"),
        (lambda d: d.assign(tenure=d["unit"] * 1.0), dict(covariates="tenure"), "column 'tenure' does not vary within"),
        (lambda d: d.assign(fcr2=2 * d["fcr"]), dict(mediators=["fcr", "fcr2"]), "perfectly collinear"),
        (lambda d: d.assign(ex=d["wave"] * 0.5), {}, "perfectly collinear"),
        (lambda d: d.head(6), {}, "only 6 complete rows"),
        (lambda d: d, dict(cluster="site"), "column 'site' not found"),
        (lambda d: d, dict(period="quarter"), "column 'quarter' not found"),
        (lambda d: d, dict(mediators=["fcr", "cx"]), "used in two roles"),
        (lambda d: d, dict(effects="fixed"), "effects must be one of"),
        (lambda d: d, dict(unit=None), "needs the unit column"),
        (lambda d: pd.concat([d, d.head(1)]), {}, "must identify a row"),
        (lambda d: d, dict(lags="ex", effects="between"), "averages them away"),
        (lambda d: d, dict(lags="ex", period=None), "need both the unit and the period"),
        (lambda d: d.assign(ex_lag1=1.0), dict(lags="ex"), "lag column 'ex_lag1' already exists"),
    ],
)
def test_bad_input_messages(panel, mutate, kwargs, message):
    d = mutate(panel.head(200).copy())
    args = dict(x="ex", mediators=MEDS, y="cx", unit="unit", n_boot=10, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        mediation(d, **args)
