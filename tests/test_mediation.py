"""Mediation EX -> operations -> CX: pingouin reference, recovery and coverage."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
import statsmodels.api as sm

from cxex_lab.models.mediation import _derived, _solve_paths, mediation
from cxex_lab.simulate import derive_truth, simulate_panel

MEDS = ["fcr", "aht", "transfer"]

# In simulate_panel, CX also depends on last wave's EX and CX (within-unit dynamics)
# and on stable unit/site differences correlated with EX (between-unit confounding).
# A cross-sectional mediation model omits both, so it is confounded by design. For a
# clean recovery test we switch them off: no site effect, uncorrelated random
# intercepts, no lagged effects. What remains is exactly the model
# M = a*EX + e_M, CX = direct*EX + sum b*M + (unit intercept) + e, and the unit
# intercept only makes rows of the same unit dependent -> cluster bootstrap by unit.
CLEAN = dict(site_sd=0, ri_corr=0, ar_ex=0, ar_cx=0, ex_to_cx=0, cx_to_ex=0)
TRUTH = derive_truth(CLEAN)["derived"]["mediation"]


@pytest.fixture(scope="module")
def panel():
    return simulate_panel(2000, 4, seed=5, **CLEAN)


def _row(res, term):
    return res.set_index("term").loc[term]


# --------------------------------------------------------------------------- reference
def test_point_estimates_agree_with_pingouin(panel):
    d = panel.sample(1500, random_state=1).assign(tenure=lambda x: np.random.default_rng(0).normal(size=len(x)))
    ours = mediation(d, "ex", MEDS, "cx", covariates="tenure", n_boot=300, seed=1)
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
    # decomposition is exact
    assert _row(ours, "total")["estimate"] == pytest.approx(
        _row(ours, "direct")["estimate"] + _row(ours, "indirect_total")["estimate"], abs=1e-12
    )


def test_crossproduct_bootstrap_equals_refitting_resampled_rows(panel):
    # The bootstrap sums per-cluster Z'Z with resample counts; check one resample by refitting.
    d = panel.head(400)
    z = np.column_stack([np.ones(len(d)), d[["ex", *MEDS, "cx"]].to_numpy()])
    idx = np.random.default_rng(3).integers(0, len(d), len(d))
    zb = z[idx]
    s = _solve_paths((zb.T @ zb)[None], {"y": 5, "y2": 6}, 0, 3, False)
    der = _derived(s, 3, False)[0]
    a = [sm.OLS(zb[:, 2 + i], zb[:, :2]).fit().params[1] for i in range(3)]
    b = sm.OLS(zb[:, 5], zb[:, :5]).fit().params[2:5]
    np.testing.assert_allclose(der[:3], np.array(a) * b, rtol=1e-9)


# --------------------------------------------------------------------------- recovery
def test_recovers_paths_and_effects_with_cluster_bootstrap(panel):
    res = mediation(panel, "ex", MEDS, "cx", n_boot=1000, seed=11, cluster="unit")
    checks = {f"ex -> {m}": TRUTH["a"][m] for m in MEDS}
    checks |= {f"{m} -> cx": TRUTH["b"][m] for m in MEDS}
    checks |= {f"indirect {m}": TRUTH["indirect"][m] for m in MEDS}
    checks |= {"direct": TRUTH["direct"], "indirect_total": TRUTH["indirect_total"], "total": TRUTH["total"]}
    for term, true in checks.items():
        r = _row(res, term)
        assert r["ci_low"] <= true <= r["ci_high"], (term, true, r["ci_low"], r["ci_high"])
    assert res.attrs["n_clusters"] == 2000
    assert res.attrs["n_boot_failed"] == 0
    assert res["n"].eq(8000).all()


def test_outcome2_adds_cx_to_loyalty_step(panel):
    rng = np.random.default_rng(2)
    d = panel.assign(retention=lambda x: 0.5 * x["cx"] + rng.normal(0, 1, len(x)))
    res = mediation(d, "ex", MEDS, "cx", outcome2="retention", n_boot=500, seed=3, cluster="unit")
    c2 = _row(res, "cx -> retention")
    assert c2["ci_low"] <= 0.5 <= c2["ci_high"]
    for m in MEDS:  # product path x -> M -> CX -> loyalty
        expected = _row(res, f"indirect {m}")["estimate"] * c2["estimate"]
        assert _row(res, f"serial {m}")["estimate"] == pytest.approx(expected, rel=1e-10)
    st = _row(res, "serial_total")
    assert st["ci_low"] <= 0.5 * TRUTH["total"] <= st["ci_high"]
    dr = _row(res, "direct ex -> retention")
    assert dr["ci_low"] <= 0.0 <= dr["ci_high"]  # EX reaches loyalty only through CX here


def test_seed_reproducible_and_missing_counted(panel):
    d = panel.head(300).copy()
    d.loc[:9, "fcr"] = np.nan
    a = mediation(d, "ex", MEDS, "cx", n_boot=100, seed=4, cluster="unit")
    b = mediation(d, "ex", MEDS, "cx", n_boot=100, seed=np.random.default_rng(4), cluster="unit")
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["n_dropped"] == 10
    assert a["n"].eq(290).all()


@pytest.mark.slow
def test_coverage_of_95pct_intervals_is_near_nominal():
    start = time.perf_counter()
    reps, hits = 100, {k: 0 for k in [*MEDS, "direct", "indirect_total"]}
    for rep in range(reps):
        d = simulate_panel(300, 3, seed=1000 + rep, **CLEAN)
        res = mediation(d, "ex", MEDS, "cx", n_boot=299, seed=rep, cluster="unit").set_index("term")
        for m in MEDS:
            hits[m] += res.loc[f"indirect {m}", "ci_low"] <= TRUTH["indirect"][m] <= res.loc[f"indirect {m}", "ci_high"]
        hits["direct"] += res.loc["direct", "ci_low"] <= TRUTH["direct"] <= res.loc["direct", "ci_high"]
        hits["indirect_total"] += (
            res.loc["indirect_total", "ci_low"] <= TRUTH["indirect_total"] <= res.loc["indirect_total", "ci_high"]
        )
    coverage = {k: v / reps for k, v in hits.items()}
    assert all(0.88 <= c <= 0.99 for c in coverage.values()), coverage
    assert time.perf_counter() - start < 60


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "mutate, kwargs, message",
    [
        (lambda d: d, dict(mediators=["fcr", "nps"]), "column 'nps' not found"),
        (lambda d: d.assign(aht=d["aht"].astype(str)), {}, "column 'aht' is not numeric"),
        (lambda d: d.assign(transfer=np.nan), {}, "column 'transfer' is entirely missing"),
        (lambda d: d.assign(ex=1.0), {}, "predictor 'ex' is constant"),
        (lambda d: d.assign(fcr2=2 * d["fcr"]), dict(mediators=["fcr", "fcr2"]), "perfectly collinear"),
        (lambda d: d.head(6), {}, "only 6 complete rows"),
        (lambda d: d, dict(cluster="site"), "column 'site' not found"),
        (lambda d: d, dict(mediators=["fcr", "cx"]), "used in two roles"),
    ],
)
def test_bad_input_messages(panel, mutate, kwargs, message):
    d = mutate(panel.head(200).copy())
    args = dict(x="ex", mediators=MEDS, y="cx", n_boot=10, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        mediation(d, **args)
