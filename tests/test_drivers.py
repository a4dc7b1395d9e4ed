"""Driver importance: reference checks (dominance analysis by brute force) and recovery."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from cxex_lab.models.drivers import dominance_weights, drivers, relative_weights
from cxex_lab.simulate import simulate_study


def _correlated(n=600, seed=0):
    rng = np.random.default_rng(seed)
    cov = np.array([[1, 0.5, 0.3, 0.2], [0.5, 1, 0.4, 0.1], [0.3, 0.4, 1, 0.3], [0.2, 0.1, 0.3, 1]])
    x = rng.multivariate_normal(np.zeros(4), cov, size=n)
    d = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    d["y"] = 0.5 * d["a"] + 0.3 * d["b"] + 0.1 * d["c"] + rng.normal(size=n)
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


# --------------------------------------------------------------------------- reference
def test_relative_weights_approximate_brute_force_dominance():
    # Johnson (2000) and LeBreton et al. (2004): relative weights approximate general
    # dominance weights closely. Reference computed here by brute force (all subsets).
    d = _correlated()
    xs = ["a", "b", "c", "d"]
    gd = _brute_force_general_dominance(d, "y", xs)
    rw = relative_weights(d, "y", xs)
    np.testing.assert_allclose(rw[xs].to_numpy(), gd[xs].to_numpy(), atol=0.01)
    assert list(rw.sort_values().index) == list(gd.sort_values().index)
    # the exact method reproduces the brute force to machine precision
    np.testing.assert_allclose(dominance_weights(d, "y", xs)[xs].to_numpy(), gd[xs].to_numpy(), atol=1e-10)
    full_r2 = sm.OLS(d["y"], sm.add_constant(d[xs])).fit().rsquared
    assert rw.sum() == pytest.approx(full_r2, abs=1e-10)
    assert rw.attrs["r2"] == pytest.approx(full_r2, abs=1e-10)


def test_orthogonal_predictors_give_squared_correlations():
    # With uncorrelated predictors every decomposition equals r^2 (Johnson 2000, p. 5).
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3))
    q, _ = np.linalg.qr(x - x.mean(axis=0))
    d = pd.DataFrame(q, columns=["a", "b", "c"])
    d["y"] = 0.6 * d["a"] + 0.3 * d["b"] + rng.normal(size=500) * 0.05
    rw = relative_weights(d, "y", ["a", "b", "c"])
    r2 = d[["a", "b", "c"]].corrwith(d["y"]) ** 2
    np.testing.assert_allclose(rw.to_numpy(), r2.to_numpy(), atol=1e-10)


def test_table_shape_sums_and_std_beta_match_statsmodels():
    d = _correlated(seed=1)
    xs = ["a", "b", "c", "d"]
    res = drivers(d, "y", xs, n_boot=200, seed=1)
    assert set(res.columns) >= {"term", "measure", "estimate", "se", "ci_low", "ci_high", "p", "n", "rank"}
    assert set(res["measure"]) == {"relative_weight", "rescaled_weight", "std_beta"}
    wide = res.pivot(index="term", columns="measure", values="estimate")
    assert wide["rescaled_weight"].sum() == pytest.approx(100.0)
    assert wide["relative_weight"].sum() == pytest.approx(res.attrs["r2"])
    z = (d - d.mean()) / d.std()
    ols = sm.OLS(z["y"], sm.add_constant(z[xs])).fit()
    np.testing.assert_allclose(wide.loc[xs, "std_beta"].to_numpy(), ols.params[xs].to_numpy(), atol=1e-10)
    betas = res[res.measure == "std_beta"].set_index("term")
    np.testing.assert_allclose(betas.loc[xs, "p"].to_numpy(), ols.pvalues[xs].to_numpy(), rtol=1e-8)
    assert (res["ci_low"] <= res["estimate"]).all() and (res["estimate"] <= res["ci_high"]).all()
    assert res["n"].eq(len(d)).all()


def test_bootstrap_is_reproducible_with_seed():
    d = _correlated(n=200, seed=2)
    a = drivers(d, "y", ["a", "b", "c"], n_boot=100, seed=42)
    b = drivers(d, "y", ["a", "b", "c"], n_boot=100, seed=np.random.default_rng(42))
    pd.testing.assert_frame_equal(a, b)


# --------------------------------------------------------------------------- recovery
@pytest.fixture(scope="module")
def study():
    # 50 sites -> 200 teams: each touchpoint's variance then depends little on the
    # handful of team climates drawn, so importance order = order of the true weights
    # (with the default 40 teams the middle items can swap by chance). Few
    # interactions per wave: the interaction log is not needed here (speed).
    return simulate_study(n_sites=50, n_employees=2000, n_waves=3, seed=1, latent=True, interactions_per_wave=1.0)


def _check_recovery(res, truth, require_order):
    w = res[res.measure == "rescaled_weight"].set_index("term")["estimate"]
    zero = [t for t, v in truth.items() if v == 0]
    nonzero = sorted((t for t, v in truth.items() if v > 0), key=lambda t: -truth[t])
    assert len(zero) >= 2
    assert w[zero].max() < w[nonzero].min(), (w[zero], w[nonzero])
    if require_order:
        assert list(w[nonzero].sort_values(ascending=False).index) == nonzero


def test_recovers_true_driver_ranking_on_latent_ex(study):
    ew = study.latent["employee_waves"]
    truth = study.truth["derived"]["drivers"]
    res = drivers(ew, "ex", list(truth), n_boot=200, seed=1)
    _check_recovery(res, truth, require_order=True)
    # zero-weight aspects: their whole interval lies below every non-zero aspect's estimate
    w = res[res.measure == "rescaled_weight"].set_index("term")
    zero = [t for t, v in truth.items() if v == 0]
    assert w.loc[zero, "ci_high"].max() < w.loc[[t for t in truth if truth[t] > 0], "estimate"].min()


def test_separates_zero_from_nonzero_drivers_on_observed_esat(study):
    truth = study.truth["derived"]["drivers"]
    res = drivers(study.ex_responses, "esat", list(truth), n_boot=200, seed=2)
    _check_recovery(res, truth, require_order=False)


# --------------------------------------------------------------------------- bad input
def test_missing_rows_are_counted():
    d = _correlated(n=100)
    d.loc[:4, "a"] = np.nan
    d.loc[10, "y"] = np.nan
    res = drivers(d, "y", ["a", "b"], n_boot=0)
    assert res.attrs["n_dropped"] == 6
    assert res["n"].eq(94).all()


@pytest.mark.parametrize(
    "mutate, predictors, message",
    [
        (lambda d: d, ["a", "zz"], "column 'zz' not found"),
        (lambda d: d.assign(a=d["a"].astype(str)), ["a", "b"], "column 'a' is not numeric"),
        (lambda d: d.assign(b=np.nan), ["a", "b"], "column 'b' is entirely missing"),
        (lambda d: d.assign(c=3.0), ["a", "c"], "predictor 'c' is constant"),
        (lambda d: d.assign(e=d["a"] + d["b"]), ["a", "b", "e"], "perfectly collinear"),
        (lambda d: d.head(4), ["a", "b"], "only 4 complete rows"),
        (lambda d: d, ["a", "y"], "also listed as a predictor"),
    ],
)
def test_bad_input_messages(mutate, predictors, message):
    d = mutate(_correlated(n=100))
    with pytest.raises(ValueError, match=message):
        drivers(d, "y", predictors, n_boot=0)


def test_bad_method_message():
    with pytest.raises(ValueError, match="unknown method 'shapley'"):
        drivers(_correlated(n=50), "y", ["a", "b"], method="shapley")
