"""Driver importance: reference checks, the cluster bootstrap, the random-reference test, recovery."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from cxex_lab.models.drivers import DriversFit, dominance_weights, drivers, relative_weights
from cxex_lab.results import TABLE_COLUMNS, Result
from cxex_lab.simulate import simulate_study

TRUE_ZERO = ["tp_hiring", "tp_pip", "tp_promotion"]
STRONG = ["tp_daily_work", "tp_coaching", "tp_training", "tp_recognition"]


def _correlated(n=600, seed=0, n_per_cluster=1):
    rng = np.random.default_rng(seed)
    cov = np.array([[1, 0.5, 0.3, 0.2], [0.5, 1, 0.4, 0.1], [0.3, 0.4, 1, 0.3], [0.2, 0.1, 0.3, 1]])
    x = rng.multivariate_normal(np.zeros(4), cov, size=n)
    d = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    d["y"] = 0.5 * d["a"] + 0.3 * d["b"] + 0.1 * d["c"] + rng.normal(size=n)
    d["employee_id"] = np.arange(n) // n_per_cluster
    return d


def _brute_force_general_dominance(d, y, xs):
    """General dominance weights with statsmodels OLS over all 2**p subsets (independent code)."""
    r2 = {(): 0.0}
    for k in range(1, len(xs) + 1):
        for s in combinations(xs, k):
            r2[s] = sm.OLS(d[y], sm.add_constant(d[list(s)])).fit().rsquared
    out = {}
    for x in xs:
        others = [o for o in xs if o != x]
        per_size = []
        for k in range(len(others) + 1):
            incs = []
            for s in combinations(others, k):
                with_x = tuple(v for v in xs if v in s or v == x)
                incs.append(r2[with_x] - r2[s])
            per_size.append(np.mean(incs))
        out[x] = np.mean(per_size)
    return pd.Series(out)


def _johnson_svd(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Johnson (2000) relative weights from the SVD of the standardized data (as in R's rwa).

    Written independently of the package's eigen-decomposition of the correlation matrix.
    """
    xs = (x - x.mean(0)) / x.std(0, ddof=1)
    ys = (y - y.mean()) / y.std(ddof=1)
    u, _, vt = np.linalg.svd(xs, full_matrices=False)
    zorth = u @ vt  # orthogonal counterparts closest to X
    zorth = (zorth - zorth.mean(0)) / zorth.std(0, ddof=1)
    lam = np.linalg.lstsq(zorth, xs, rcond=None)[0]  # X regressed on Z
    beta = np.linalg.lstsq(zorth, ys, rcond=None)[0]  # y regressed on Z
    return (lam.T**2) @ (beta**2)


# --------------------------------------------------------------------------- reference
def test_relative_weights_approximate_brute_force_dominance():
    # Johnson (2000) and LeBreton et al. (2004): relative weights approximate general
    # dominance weights closely. Reference computed here by brute force (all subsets).
    d = _correlated()
    xs = ["a", "b", "c", "d"]
    gd = _brute_force_general_dominance(d, "y", xs)
    rw_table, rw_fit = relative_weights(d, "y", xs)
    rw = rw_table.set_index("term")["estimate"]
    np.testing.assert_allclose(rw[xs].to_numpy(), gd[xs].to_numpy(), atol=0.01)
    assert list(rw.sort_values().index) == list(gd.sort_values().index)
    # the SVD route of R's rwa gives the same weights to machine precision
    np.testing.assert_allclose(rw[xs].to_numpy(), _johnson_svd(d[xs].to_numpy(), d["y"].to_numpy()), atol=1e-10)
    # the exact method reproduces the brute force to machine precision
    dom = dominance_weights(d, "y", xs).table.set_index("term")["estimate"]
    np.testing.assert_allclose(dom[xs].to_numpy(), gd[xs].to_numpy(), atol=1e-10)
    full_r2 = sm.OLS(d["y"], sm.add_constant(d[xs])).fit().rsquared
    assert rw.sum() == pytest.approx(full_r2, abs=1e-10)
    assert rw_fit.r2 == pytest.approx(full_r2, abs=1e-10)


def test_orthogonal_predictors_give_squared_correlations():
    # With uncorrelated predictors every decomposition equals r^2 (Johnson 2000, p. 5).
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3))
    q, _ = np.linalg.qr(x - x.mean(axis=0))
    d = pd.DataFrame(q, columns=["a", "b", "c"])
    d["y"] = 0.6 * d["a"] + 0.3 * d["b"] + rng.normal(size=500) * 0.05
    rw = relative_weights(d, "y", ["a", "b", "c"]).table["estimate"]
    r2 = d[["a", "b", "c"]].corrwith(d["y"]) ** 2
    np.testing.assert_allclose(rw.to_numpy(), r2.to_numpy(), atol=1e-10)


def test_table_shape_units_and_std_beta_match_statsmodels_cluster_robust():
    d = _correlated(seed=1, n_per_cluster=3)
    xs = ["a", "b", "c", "d"]
    res = drivers(d, "y", xs, n_boot=200, seed=1)
    assert isinstance(res, Result) and isinstance(res.fit, DriversFit)
    table, fit = res
    assert list(table.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert set(table["measure"]) == {"relative_weight", "pct_of_variance", "rescaled_weight", "std_beta", "r2"}
    assert table["unit"].notna().all()
    wide = table[table.measure != "r2"].pivot(index="term", columns="measure", values="estimate")
    ols_r2 = sm.OLS(d["y"], sm.add_constant(d[xs])).fit().rsquared
    # weight = share of the outcome's variance; pct_of_variance = 100 x weight; rescaled = % of R2
    assert wide["relative_weight"].sum() == pytest.approx(ols_r2)
    np.testing.assert_allclose(wide["pct_of_variance"], 100 * wide["relative_weight"])
    np.testing.assert_allclose(wide["rescaled_weight"], 100 * wide["relative_weight"] / ols_r2)
    assert wide["rescaled_weight"].sum() == pytest.approx(100.0)
    r2_row = table.set_index("measure").loc["r2"]
    assert r2_row["term"] == "R2" and r2_row["estimate"] == pytest.approx(ols_r2)
    assert r2_row["ci_low"] < ols_r2 < r2_row["ci_high"]
    assert fit.r2 == pytest.approx(ols_r2) and fit.r2_ci == (r2_row["ci_low"], r2_row["ci_high"])
    # standardized betas and their p-values: statsmodels OLS, SEs clustered by employee (t, G-1 df)
    z = (d[xs + ["y"]] - d[xs + ["y"]].mean()) / d[xs + ["y"]].std()
    ols = sm.OLS(z["y"], sm.add_constant(z[xs])).fit(
        cov_type="cluster", cov_kwds={"groups": d["employee_id"]}, use_t=True
    )
    np.testing.assert_allclose(wide.loc[xs, "std_beta"].to_numpy(), ols.params[xs].to_numpy(), atol=1e-10)
    betas = table[table.measure == "std_beta"].set_index("term")
    np.testing.assert_allclose(betas.loc[xs, "p"].to_numpy(), ols.pvalues[xs].to_numpy(), rtol=1e-8)
    assert (table["ci_low"] <= table["estimate"]).all() and (table["estimate"] <= table["ci_high"]).all()
    assert table["n"].eq(len(d)).all()
    assert fit.cluster == "employee_id" and fit.n_clusters == 200 and fit.n_obs == 600


def test_cluster_bootstrap_matches_a_row_by_row_reference():
    # Independent implementation: the same random draws (the random reference variable
    # first, then B x G cluster indices), each replicate built by concatenating the rows
    # of the drawn employees, weights by the SVD route. Percentile intervals must agree.
    d = _correlated(n=240, seed=5, n_per_cluster=4)
    d = d.sample(frac=1, random_state=2).reset_index(drop=True)  # rows of an employee scattered
    xs = ["a", "b", "c"]
    n_boot, seed = 60, 11
    table, fit = drivers(d, "y", xs, n_boot=n_boot, seed=seed)

    rng = np.random.default_rng(seed)
    rand = rng.standard_normal(len(d))
    ids = pd.factorize(d["employee_id"], sort=False)[0]
    rows_of = [np.flatnonzero(ids == g) for g in range(ids.max() + 1)]
    draws = rng.integers(0, len(rows_of), size=(n_boot, len(rows_of)))
    w_ref, diff_ref, r2_ref = [], [], []
    x, xa, y = d[xs].to_numpy(), np.column_stack([d[xs].to_numpy(), rand]), d["y"].to_numpy()
    for b in range(n_boot):
        idx = np.concatenate([rows_of[g] for g in draws[b]])
        w = _johnson_svd(x[idx], y[idx])
        wa = _johnson_svd(xa[idx], y[idx])
        w_ref.append(w)
        diff_ref.append(wa[:-1] - wa[-1])
        r2_ref.append(sm.OLS(y[idx], sm.add_constant(x[idx])).fit().rsquared)
    w_ref, diff_ref = np.array(w_ref), np.array(diff_ref)
    rw = table[table.measure == "relative_weight"].set_index("term").loc[xs]
    np.testing.assert_allclose(rw["ci_low"], np.percentile(w_ref, 2.5, axis=0), rtol=1e-8)
    np.testing.assert_allclose(rw["ci_high"], np.percentile(w_ref, 97.5, axis=0), rtol=1e-8)
    np.testing.assert_allclose(rw["se"], w_ref.std(axis=0, ddof=1), rtol=1e-8)
    np.testing.assert_allclose(rw["diff_ci_low"], np.percentile(diff_ref, 2.5, axis=0), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(rw["diff_ci_high"], np.percentile(diff_ref, 97.5, axis=0), rtol=1e-8)
    assert fit.r2_ci == pytest.approx((np.percentile(r2_ref, 2.5), np.percentile(r2_ref, 97.5)), rel=1e-8)
    # the point difference comes from the augmented model on the full sample
    wa_full = _johnson_svd(xa, y)
    np.testing.assert_allclose(rw["diff_random"], wa_full[:-1] - wa_full[-1], atol=1e-10)
    assert fit.random_weight == pytest.approx(wa_full[-1])


def test_cluster_bootstrap_is_wider_than_row_bootstrap_when_rows_repeat_a_person():
    # Each person answers 5 times with (nearly) the same answers: resampling rows treats
    # 5 copies as 5 people, so its intervals are about sqrt(5) too narrow.
    base = _correlated(n=150, seed=7)
    rng = np.random.default_rng(0)
    d = pd.concat([base.assign(y=base["y"] + 0.05 * rng.normal(size=150)) for _ in range(5)], ignore_index=True)
    clus = drivers(d, "y", ["a", "b", "c", "d"], n_boot=300, seed=1).table
    rows = drivers(d, "y", ["a", "b", "c", "d"], n_boot=300, seed=1, cluster=None).table
    ratio = (clus["se"] / rows["se"])[clus.measure == "relative_weight"]
    assert ratio.min() > 1.6, ratio  # about sqrt(5) = 2.2


def test_random_reference_separates_null_from_real_predictors():
    rng = np.random.default_rng(4)
    n = 1500
    d = pd.DataFrame(rng.normal(size=(n, 4)), columns=["strong", "weak", "null1", "null2"])
    d["y"] = 0.5 * d["strong"] + 0.15 * d["weak"] + rng.normal(size=n)
    d["employee_id"] = np.arange(n) // 3
    table, fit = drivers(d, "y", ["strong", "weak", "null1", "null2"], n_boot=500, seed=3)
    rw = table[table.measure == "relative_weight"].set_index("term")
    assert rw.loc[["strong", "weak"], "beats_random"].all()
    assert not rw.loc[["null1", "null2"], "beats_random"].any()
    # the weights' own percentile intervals exclude zero even for the null predictors:
    # exactly why the report's "interval touches zero" rule never fired
    assert (rw.loc[["null1", "null2"], "ci_low"] > 0).all()
    # the test is the same on every weight scale
    for m in ("pct_of_variance", "rescaled_weight"):
        other = table[table.measure == m].set_index("term")
        assert other["beats_random"].equals(rw["beats_random"])
    assert table.loc[table.measure == "std_beta", "beats_random"].isna().all()
    assert fit.random_reference and 0 <= fit.random_weight_ci[0] < fit.random_weight_ci[1] < 0.01


def test_bootstrap_is_reproducible_with_seed():
    d = _correlated(n=200, seed=2, n_per_cluster=2)
    a = drivers(d, "y", ["a", "b", "c"], n_boot=100, seed=42)
    b = drivers(d, "y", ["a", "b", "c"], n_boot=100, seed=np.random.default_rng(42))
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.fit == b.fit


def test_dominance_with_bootstrap_and_random_reference():
    d = _correlated(n=300, seed=8, n_per_cluster=3)
    table, fit = drivers(d, "y", ["a", "b", "d"], n_boot=100, seed=1, method="dominance")
    gd = table[table.measure == "general_dominance"].set_index("term")["estimate"]
    ref = _brute_force_general_dominance(d, "y", ["a", "b", "d"])
    np.testing.assert_allclose(gd[["a", "b", "d"]], ref[["a", "b", "d"]], atol=1e-10)
    assert fit.importance == "dominance" and table["beats_random"].notna().sum() == 9


def test_no_bootstrap_gives_point_estimates_only():
    table, fit = drivers(_correlated(n=100), "y", ["a", "b"], n_boot=0)
    assert table["ci_low"].isna().all() and table["beats_random"].isna().all()
    assert fit.cluster is None and not fit.random_reference


# --------------------------------------------------------------------------- recovery


@pytest.fixture(scope="module")
def study_no_halo():
    # 50 sites x 4 teams = 200 teams (issue 10: "a simulated study with 200 teams and
    # no halo"). With 200 team climates drawn independently per touchpoint, items are
    # nearly uncorrelated, so the true-zero touchpoints earn (almost) no R2. Few
    # interactions per wave: the interaction log is not needed here (speed).
    return simulate_study(
        n_sites=50, n_employees=2000, n_waves=3, seed=1, latent=True, interactions_per_wave=1.0,
        tp_halo=0.0, cm_halo=0.0,  # no halo: neither the items' shared respondent factor nor common method
    )


def test_true_zero_touchpoints_do_not_beat_random_on_observed_esat(study_no_halo):
    # Acceptance test of issue 10 (drivers), on the observed survey answers (eSat 1-5,
    # items 1-5), clustered by employee over 3 waves.
    truth = study_no_halo.truth["derived"]["drivers"]
    tps = list(truth)
    assert sorted(t for t in tps if truth[t] == 0) == sorted(TRUE_ZERO)
    table, fit = drivers(study_no_halo.ex_responses, "esat", tps, n_boot=500, seed=2)
    rw = table[table.measure == "relative_weight"].set_index("term")
    assert not rw.loc[TRUE_ZERO, "beats_random"].any(), rw.loc[TRUE_ZERO]
    assert rw.loc[STRONG, "beats_random"].all(), rw.loc[STRONG]
    assert fit.n_clusters == study_no_halo.ex_responses["employee_id"].nunique()


def test_true_zero_touchpoints_do_not_beat_random_on_latent_ex(study_no_halo):
    ew = study_no_halo.latent["employee_waves"].query("active")
    truth = study_no_halo.truth["derived"]["drivers"]
    tps = list(truth)
    table, _ = drivers(ew, "ex", tps, n_boot=500, seed=3)
    rw = table[table.measure == "rescaled_weight"].set_index("term")
    assert not rw.loc[TRUE_ZERO, "beats_random"].any()
    assert rw.loc[[t for t in tps if truth[t] > 0], "beats_random"].all()
    # ranking of the non-zero touchpoints follows the true weights
    nonzero = sorted((t for t in tps if truth[t] > 0), key=lambda t: -truth[t])
    assert list(rw.loc[nonzero, "estimate"].sort_values(ascending=False).index) == nonzero


# --------------------------------------------------------------------------- bad input
def test_missing_rows_are_counted():
    d = _correlated(n=100)
    d.loc[:4, "a"] = np.nan
    d.loc[10, "y"] = np.nan
    table, fit = drivers(d, "y", ["a", "b"], n_boot=0)
    assert fit.n_dropped == 6
    assert table["n"].eq(94).all()


@pytest.mark.parametrize(
    "mutate, predictors, kwargs, message",
    [
        (lambda d: d, ["a", "zz"], {}, "column 'zz' not found"),
        (lambda d: d.assign(a=d["a"].astype(str)), ["a", "b"], {}, "column 'a' is not numeric"),
        (lambda d: d.assign(b=np.nan), ["a", "b"], {}, "column 'b' is entirely missing"),
        (lambda d: d.assign(c=3.0), ["a", "c"], {}, "predictor 'c' is constant"),
        (lambda d: d.assign(e=d["a"] + d["b"]), ["a", "b", "e"], {}, "perfectly collinear"),
        (lambda d: d.head(4), ["a", "b"], {}, "only 4 complete rows"),
        (lambda d: d, ["a", "y"], {}, "also listed as a predictor"),
        (lambda d: d, ["a", "b"], {"cluster": "team_id"}, "cluster column 'team_id' not found"),
        (lambda d: d.assign(employee_id=d["employee_id"].where(d.index > 2)), ["a", "b"], {}, "cluster column 'employee_id' is missing in 3"),
        (lambda d: d, ["a", "b"], {"method": "shapley"}, "unknown method 'shapley'"),
        (lambda d: d, ["a", "b"], {"n_boot": -1}, "n_boot must be an integer >= 0"),
    ],
)
def test_bad_input_messages(mutate, predictors, kwargs, message):
    d = mutate(_correlated(n=100))
    with pytest.raises(ValueError, match=message):
        drivers(d, "y", predictors, **({"n_boot": 0} | kwargs))
