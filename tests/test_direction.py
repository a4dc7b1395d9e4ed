"""Force pairs: RI-CLPM / CLPM and the multiple-indicator RI-CLPM (FIML), and two-way fixed effects.

Where the truth comes from:

* ``simulate_panel``: its ``ar_ex``, ``ar_cx``, ``ex_to_cx`` and ``cx_to_ex`` are
  exactly the RI-CLPM's within-unit lags (docstring of :mod:`cxex_lab.simulate`);
* ``_riclpm_panel`` below draws an RI-CLPM directly from stated parameters
  (lags, innovation covariance, random-intercept covariance, team shocks), so
  the within-wave residual covariance and correlation are known exactly;
* semopy 2.3.11 (which matches lavaan on complete data) is the reference
  implementation for estimates, ML standard errors (expected information) and
  robust standard errors (``inspect(se_robust=True)``);
* the two-way fixed-effects clustered SE is recomputed by hand on a balanced
  panel (within transformation and the Liang-Zeger sandwich).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from cxex_lab.models import _fiml
from cxex_lab.models.direction import (
    FEFit,
    SEMFit,
    cross_lagged,
    cross_lagged_mi,
    measurement_invariance,
    within_effects,
)
from cxex_lab.results import Result
from cxex_lab.simulate import simulate_panel

TRUTH = {"ex->cx": 0.25, "cx->ex": 0.05, "ex->ex": 0.4, "cx->cx": 0.3}
SIM = dict(ex_to_cx=0.25, cx_to_ex=0.05, ar_ex=0.4, ar_cx=0.3)
LAGS = list(TRUTH)


def _row(table: pd.DataFrame, term: str, wave=None) -> pd.Series:
    """The row of ``term`` (the headline row, ``wave`` missing, unless a wave is given)."""
    sel = table["term"] == term
    sel &= table["wave"].isna() if wave is None else table["wave"] == wave
    rows = table.loc[sel]
    assert len(rows) == 1, (term, wave, len(rows))
    return rows.iloc[0]


def _covers(table: pd.DataFrame, term: str, value: float, wave=None) -> bool:
    r = _row(table, term, wave)
    return bool(r["ci_low"] <= value <= r["ci_high"])


def _near(table: pd.DataFrame, term: str, value: float, z: float = 3.29, wave=None) -> bool:
    """Within z standard errors (3.29: a 99.9% interval; for checks of many terms at once)."""
    r = _row(table, term, wave)
    return bool(abs(r["estimate"] - value) <= z * r["se"])


def _stationary(A: np.ndarray, Psi: np.ndarray) -> np.ndarray:
    """Stationary covariance S = A S A' + Psi of a VAR(1)."""
    k = len(A)
    vec = np.linalg.solve(np.eye(k * k) - np.kron(A, A), Psi.ravel())
    return vec.reshape(k, k)


def _riclpm_panel(
    n: int,
    T: int,
    seed: int,
    A=((0.4, 0.05), (0.25, 0.3)),
    Psi=((0.5, 0.2), (0.2, 0.4)),
    R=((0.5, 0.3), (0.3, 0.6)),
    team_size: int = 10,
    team_share: float = 0.0,
    missing: float = 0.0,
) -> pd.DataFrame:
    """An RI-CLPM drawn from stated parameters (truth known exactly).

    ``team_share`` of every innovation (and of the wave-1 state and random
    intercepts) is a shock shared by the ``team_size`` units of a team; the
    marginal parameters of a unit do not change, only units stop being
    independent. ``missing`` sets unit-wave values of x and y missing at
    random (independently).
    """
    rng = np.random.default_rng(seed)
    A, Psi, R = (np.asarray(v, float) for v in (A, Psi, R))
    S1 = _stationary(A, Psi)
    team = np.arange(n) // team_size
    G = team.max() + 1
    a, b = np.sqrt(1 - team_share), np.sqrt(team_share)

    def draw(cov, shape):
        own = rng.multivariate_normal(np.zeros(2), cov, size=(n, *shape))
        shared = rng.multivariate_normal(np.zeros(2), cov, size=(G, *shape))[team]
        return a * own + b * shared

    ri = draw(R, ())
    w = np.zeros((n, T, 2))
    w[:, 0] = draw(S1, ())
    innov = draw(Psi, (T,))
    for t in range(1, T):
        w[:, t] = w[:, t - 1] @ A.T + innov[:, t]
    x = 3.0 + ri[:, None, 0] + w[..., 0]
    y = 2.0 + ri[:, None, 1] + w[..., 1]
    df = pd.DataFrame(
        {
            "unit": np.repeat(np.arange(n), T),
            "team": np.repeat(team, T),
            "wave": np.tile(np.arange(1, T + 1), n),
            "x": x.ravel(),
            "y": y.ravel(),
        }
    )
    if missing:
        df.loc[rng.random(len(df)) < missing, "x"] = np.nan
        df.loc[rng.random(len(df)) < missing, "y"] = np.nan
    return df


@pytest.fixture(scope="module")
def confounded_panel() -> pd.DataFrame:
    # strong stable between-unit confounding: correlated traits plus site effects
    return simulate_panel(1500, 5, seed=101, ri_corr=0.8, site_sd=0.5, **SIM)


@pytest.fixture(scope="module")
def fits(confounded_panel):
    ri = cross_lagged(confounded_panel, "unit", "wave", "ex", "cx", kind="riclpm")
    cl = cross_lagged(confounded_panel, "unit", "wave", "ex", "cx", kind="clpm")
    return ri, cl


@pytest.fixture(scope="module")
def missing_panel() -> pd.DataFrame:
    return simulate_panel(1500, 5, seed=12, missing=0.15, ri_corr=0.8, **SIM)


# --------------------------------------------------------------------------- result shape
def test_result_shape_and_fit_record(fits):
    ri, _ = fits
    assert isinstance(ri, Result)
    table, fit = ri
    assert isinstance(fit, SEMFit)
    assert list(table.columns[:7]) == ["term", "estimate", "se", "ci_low", "ci_high", "p", "n"]
    assert list(table.columns[7:]) == ["std_estimate", "wave", "component"]
    head = table[table["wave"].isna()]
    assert list(head["term"]) == [
        "ex->cx", "cx->ex", "ex->ex", "cx->cx", "resid_cov(ex,cx)", "resid_corr(ex,cx)",
        "wave1_cov(ex,cx)", "wave1_corr(ex,cx)", "corr(RI_ex,RI_cx)",
    ]
    # free residuals by default: one row per wave 2..5 for covariance and correlation
    per_wave = table[table["wave"].notna()]
    assert sorted(per_wave["wave"].unique()) == [2, 3, 4, 5] and len(per_wave) == 8
    assert fit.converged and fit.information_ok and fit.notes == ()
    assert fit.n_units == 1500 and fit.n_obs == 1500 * 5 and fit.n_dropped == 0
    assert fit.se == "robust" and fit.cluster == "unit" and fit.n_clusters == 1500
    assert fit.df == 2 * 5 * 11 // 2 + 2 * 5 - (10 + 4 + 3 * 6)  # 65 moments - 32 parameters
    assert fit.n_par == 32 and fit.kind == "riclpm" and not fit.equal_residuals
    assert fit.waves == (1, 2, 3, 4, 5)
    assert (table["n"] == 1500).all()
    assert set(fit.as_dict()) >= {"loglik", "aic", "bic", "chi2", "cfi", "rmsea", "n_patterns"}


def test_riclpm_recovers_true_lags_under_confounding(fits):
    (ri, fit), _ = fits
    for term, value in TRUTH.items():
        assert _covers(ri, term, value), (term, _row(ri, term).to_dict())
    # correctly specified model fits: chi-square not rejected, CFI ~ 1
    assert fit.p_chi2 > 0.001
    assert fit.cfi > 0.99
    assert _row(ri, "corr(RI_ex,RI_cx)")["estimate"] > 0.5


def test_clpm_is_biased_by_stable_differences(fits):
    (ri, ri_fit), (cl, cl_fit) = fits
    # the CLPM reads stable between-unit differences as carry-over: its
    # autoregressions are far above the within-unit truth, outside their CIs
    for term in ("ex->ex", "cx->cx"):
        row = _row(cl, term)
        assert row["ci_low"] > TRUTH[term], row.to_dict()
        assert row["estimate"] > TRUTH[term] + 0.05, row.to_dict()
        # while the RI-CLPM's are on target
        assert abs(_row(ri, term)["estimate"] - TRUTH[term]) < 0.05
    # it even invents a strong CX -> EX effect (truth 0.05) that the RI-CLPM does not
    assert _row(cl, "cx->ex")["ci_low"] > TRUTH["cx->ex"] + 0.1
    assert _covers(ri, "cx->ex", TRUTH["cx->ex"])
    # and it fits much worse than the RI-CLPM
    assert cl_fit.rmsea > ri_fit.rmsea + 0.03
    assert cl_fit.chi2 > 10 * ri_fit.chi2


def test_fiml_uses_incomplete_units_and_recovers_lags(missing_panel):
    res, fit = cross_lagged(missing_panel, "unit", "wave", "ex", "cx")
    wide = missing_panel.pivot(index="unit", columns="wave", values="ex")
    complete_units = int(wide.notna().all(axis=1).sum())
    # complete-case analysis would discard most units (0.85**5 ~ 44% kept) ...
    assert complete_units < 0.5 * 1500
    assert fit.n_units_complete == complete_units
    # ... FIML uses every unit with any observed value and every observed row
    assert fit.n_units == int(wide.notna().any(axis=1).sum())
    assert fit.n_obs == int(missing_panel["ex"].notna().sum())
    assert fit.estimator == "FIML" and fit.converged
    for term, value in TRUTH.items():
        assert _covers(res, term, value), (term, _row(res, term).to_dict())


def test_free_lags_by_wave():
    panel = simulate_panel(800, 4, seed=3, **SIM)
    res, fit = cross_lagged(panel, "unit", "wave", "ex", "cx", equal_lags=False)
    lag_rows = res[res["component"] == "lag"]
    assert len(lag_rows) == 4 * 3 and sorted(lag_rows["wave"].unique()) == [2, 3, 4]
    assert fit.df == 2 * 4 * 9 // 2 + 2 * 4 - (8 + 12 + 3 * 5)
    # the constrained model is nested: its chi-square is at least as large
    _, eq = cross_lagged(panel, "unit", "wave", "ex", "cx")
    assert eq.chi2 >= fit.chi2 - 1e-6


def test_covariate_predicts_random_intercept():
    panel = simulate_panel(1000, 4, seed=4, **SIM)
    rng = np.random.default_rng(0)
    z = rng.normal(size=1000)
    panel["tenure"] = np.repeat(z, 4)
    panel["ex"] = panel["ex"] + 0.3 * panel["tenure"]  # shifts the EX intercept only
    res, _ = cross_lagged(panel, "unit", "wave", "ex", "cx", covariates=["tenure"])
    assert _covers(res, "tenure->RI_ex", 0.3)
    assert _covers(res, "ex->cx", 0.25)


def test_scale_invariance():
    panel = simulate_panel(400, 4, seed=5, **SIM)
    a, fa = cross_lagged(panel, "unit", "wave", "ex", "cx")
    scaled = panel.assign(cx=panel["cx"] * 10 + 3)
    b, fb = cross_lagged(scaled, "unit", "wave", "ex", "cx")
    np.testing.assert_allclose(_row(b, "ex->cx")["estimate"], 10 * _row(a, "ex->cx")["estimate"], rtol=1e-4)
    np.testing.assert_allclose(_row(b, "ex->cx")["se"], 10 * _row(a, "ex->cx")["se"], rtol=1e-3)
    np.testing.assert_allclose(_row(b, "ex->ex")["estimate"], _row(a, "ex->ex")["estimate"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_row(b, "resid_cov(ex,cx)")["estimate"], 10 * _row(a, "resid_cov(ex,cx)")["estimate"], rtol=1e-4)
    np.testing.assert_allclose(_row(b, "resid_corr(ex,cx)")["estimate"], _row(a, "resid_corr(ex,cx)")["estimate"], rtol=1e-4)
    np.testing.assert_allclose(fb.chi2, fa.chi2, rtol=1e-3, atol=1e-3)
    # the log-likelihood is in original units: rescaling cx by 10 shifts it by -n_cells * log(10)
    n_cells_cx = int(panel["cx"].notna().sum())
    np.testing.assert_allclose(fb.loglik, fa.loglik - n_cells_cx * np.log(10), rtol=1e-7)


# --------------------------------------------------------------------------- reference implementation
def _semopy_riclpm(wide: pd.DataFrame, T: int):
    semopy = pytest.importorskip("semopy")
    lines = [
        "RIx =~ " + " + ".join(f"1*ex{t}" for t in range(1, T + 1)),
        "RIy =~ " + " + ".join(f"1*cx{t}" for t in range(1, T + 1)),
        "RIx ~~ RIy", "RIx ~~ RIx", "RIy ~~ RIy",
        "RIx ~~ 0*wx1", "RIx ~~ 0*wy1", "RIy ~~ 0*wx1", "RIy ~~ 0*wy1",
    ]
    for t in range(1, T + 1):
        lines += [f"wx{t} =~ 1*ex{t}", f"wy{t} =~ 1*cx{t}", f"ex{t} ~~ 0*ex{t}", f"cx{t} ~~ 0*cx{t}", f"wx{t} ~~ wy{t}"]
    for t in range(2, T + 1):
        lines += [f"wx{t} ~ axx*wx{t - 1} + ayx*wy{t - 1}", f"wy{t} ~ axy*wx{t - 1} + ayy*wy{t - 1}"]
    model = semopy.Model("\n".join(lines))
    # a tight tolerance: semopy's default SLSQP stops about 1e-4 short of the optimum
    model.fit(wide, obj="MLW", options={"ftol": 1e-14, "maxiter": 20000})
    return model


def _sem_lags(est: pd.DataFrame, col: str) -> dict[str, float]:
    rx = est[(est["op"] == "~") & (est["lval"] == "wx2")].set_index("rval")[col]
    ry = est[(est["op"] == "~") & (est["lval"] == "wy2")].set_index("rval")[col]
    return {"ex->ex": rx["wx1"], "cx->ex": rx["wy1"], "ex->cx": ry["wx1"], "cx->cx": ry["wy1"]}


def test_matches_semopy_on_complete_panel():
    """Estimates, ML and robust SEs equal semopy 2.3.11's on a complete panel.

    semopy's SEs use the expected information; its robust SEs (``se_robust=True``)
    are the sandwich H^-1 (sum_i s_i s_i') H^-1 with per-observation scores and
    no small-sample factor: ours with ``information="expected"``.
    """
    T = 4
    panel = simulate_panel(500, T, seed=3, **SIM)
    wide = panel.pivot(index="unit", columns="wave", values=["ex", "cx"])
    wide.columns = [f"{v}{t}" for v, t in wide.columns]
    model = _semopy_riclpm(wide, T)
    est = model.inspect()
    rob = model.inspect(se_robust=True)
    ml, _ = cross_lagged(panel, "unit", "wave", "ex", "cx", se="ml", information="expected")
    robust, _ = cross_lagged(panel, "unit", "wave", "ex", "cx", se="robust", information="expected")
    for term, value in _sem_lags(est, "Estimate").items():
        assert abs(_row(ml, term)["estimate"] - float(value)) < 1e-5, term
    for term, value in _sem_lags(est, "Std. Err").items():
        assert abs(_row(ml, term)["se"] / float(value) - 1) < 1e-3, term
    for term, value in _sem_lags(rob, "Std. Err").items():
        assert abs(_row(robust, term)["se"] / float(value) - 1) < 1e-3, term
    # the within-wave residual covariance of wave 2 and the RI correlation
    cov2 = est[(est["op"] == "~~") & (est["lval"] == "wx2") & (est["rval"] == "wy2")].iloc[0]
    assert abs(_row(ml, "resid_cov(ex,cx)", wave=2)["estimate"] - cov2["Estimate"]) < 1e-5
    assert abs(_row(ml, "resid_cov(ex,cx)", wave=2)["se"] / float(cov2["Std. Err"]) - 1) < 1e-3
    v = est[est["op"] == "~~"].set_index(["lval", "rval"])["Estimate"]
    r_sem = v[("RIx", "RIy")] / np.sqrt(v[("RIx", "RIx")] * v[("RIy", "RIy")])
    assert abs(_row(ml, "corr(RI_ex,RI_cx)")["estimate"] - r_sem) < 1e-5
    # observed information (the default, valid under MAR) differs only in finite samples
    obs, _ = cross_lagged(panel, "unit", "wave", "ex", "cx", se="ml")
    for term in TRUTH:
        assert abs(_row(obs, term)["se"] / _row(ml, term)["se"] - 1) < 0.15, term


# --------------------------------------------------------------------------- within-wave residual covariance
def test_within_wave_residual_covariance_recovers_truth():
    Psi = np.array([[0.5, 0.2], [0.2, 0.4]])
    A = np.array([[0.4, 0.05], [0.25, 0.3]])
    panel = _riclpm_panel(3000, 5, seed=8, A=A, Psi=Psi, missing=0.1)
    free, ffit = cross_lagged(panel, "unit", "wave", "x", "y")
    equal, efit = cross_lagged(panel, "unit", "wave", "x", "y", equal_residuals=True)
    cov, corr = Psi[0, 1], Psi[0, 1] / np.sqrt(Psi[0, 0] * Psi[1, 1])
    wave1_cov = _stationary(A, Psi)[0, 1]
    for tab in (free, equal):
        assert _covers(tab, "resid_cov(x,y)", cov), _row(tab, "resid_cov(x,y)").to_dict()
        assert _covers(tab, "resid_corr(x,y)", corr), _row(tab, "resid_corr(x,y)").to_dict()
        assert _covers(tab, "wave1_cov(x,y)", wave1_cov)
        assert _row(tab, "resid_corr(x,y)")["std_estimate"] == _row(tab, "resid_corr(x,y)")["estimate"]
        assert _row(tab, "resid_cov(x,y)")["component"] == "within-wave"
    # free: one covariance per wave 2..5 (each covers the truth), the headline is their mean
    waves = free.loc[free["term"] == "resid_cov(x,y)", "wave"].dropna().tolist()
    assert waves == [2, 3, 4, 5]
    per = [_row(free, "resid_cov(x,y)", wave=w)["estimate"] for w in waves]
    assert abs(_row(free, "resid_cov(x,y)")["estimate"] - np.mean(per)) < 1e-12
    assert sum(_covers(free, "resid_cov(x,y)", cov, wave=w) for w in waves) >= 3
    # equal: one row, fewer parameters, nested (3 constraints per extra wave)
    assert equal["wave"].isna().all()
    assert ffit.n_par - efit.n_par == 3 * (5 - 2)
    assert efit.loglik <= ffit.loglik + 1e-6
    assert efit.equal_residuals and not ffit.equal_residuals
    # the pooled estimate is more precise than any single wave's
    assert _row(equal, "resid_cov(x,y)")["se"] < min(_row(free, "resid_cov(x,y)", wave=w)["se"] for w in waves)


# --------------------------------------------------------------------------- robust and clustered SEs
def test_cluster_per_unit_is_the_unclustered_sandwich_times_n_over_n_minus_1():
    """With every unit its own cluster, B = G/(G-1) sum_i s_i s_i': the clustered
    SEs are the per-unit sandwich SEs times sqrt(N/(N-1)), with t(N-1) intervals."""
    panel = _riclpm_panel(400, 4, seed=2, missing=0.1)
    panel["own"] = "u" + panel["unit"].astype(str)
    a, fa = cross_lagged(panel, "unit", "wave", "x", "y")
    b, fb = cross_lagged(panel, "unit", "wave", "x", "y", cluster="own")
    n = fa.n_units
    np.testing.assert_allclose(b["se"], a["se"] * np.sqrt(n / (n - 1)), rtol=1e-9)
    np.testing.assert_allclose(b["estimate"], a["estimate"], rtol=1e-12)
    assert fb.cluster == "own" and fb.n_clusters == n and fa.cluster == "unit"
    from scipy import stats

    r = _row(b, "x->y")
    q = stats.t.ppf(0.975, n - 1)
    np.testing.assert_allclose(r["ci_high"] - r["estimate"], q * r["se"], rtol=1e-10)


def test_unit_scores_sum_to_the_gradient():
    """The per-unit FIML scores (the sandwich's meat) add up to the gradient."""
    panel = _riclpm_panel(300, 4, seed=4, missing=0.2)
    from cxex_lab.models.direction import _PanelSpec, _wide

    Z, _ = _wide(panel, "unit", "wave", ["x", "y"], np.arange(1, 5))
    spec = _PanelSpec(4, True, True, False, 0, 0, 0)
    pats = _fiml.group_patterns(Z, np.empty((len(Z), 0)))
    obj = _fiml.Objective(spec, pats)
    raw = spec.start(Z) + 0.05
    Sig, M, JS, JM = obj.jacobians(raw)
    scores = _fiml.unit_scores(JS, JM, Sig, M, pats)
    nll, grad = obj(raw, "raw")
    np.testing.assert_allclose(scores.sum(axis=0), -grad, rtol=1e-8, atol=1e-8)
    # and the log-likelihood is the sum of per-unit multivariate normal densities
    from scipy.stats import multivariate_normal

    ll = 0.0
    for z in Z:
        o = ~np.isnan(z)
        ll += multivariate_normal(M[o, 0], Sig[np.ix_(o, o)]).logpdf(z[o])
    np.testing.assert_allclose(-nll, ll, rtol=1e-10)


def test_clustered_ses_are_wider_when_teams_share_shocks():
    panel = _riclpm_panel(1500, 4, seed=5, team_size=15, team_share=0.5)
    plain, _ = cross_lagged(panel, "unit", "wave", "x", "y")
    clustered, fit = cross_lagged(panel, "unit", "wave", "x", "y", cluster="team")
    assert fit.cluster == "team" and fit.n_clusters == 100 and fit.notes == ()
    for term in ("x->y", "y->x", "x->x", "y->y", "resid_cov(x,y)"):
        assert _row(clustered, term)["se"] > 1.3 * _row(plain, term)["se"], term


def test_few_clusters_are_noted():
    panel = _riclpm_panel(200, 4, seed=6, team_size=20)
    with pytest.warns(RuntimeWarning, match="Only 10 clusters"):
        table, fit = cross_lagged(panel, "unit", "wave", "x", "y", cluster="team", fit_indices=False)
    assert any("Only 10 clusters" in n for n in fit.notes)
    # se="ml" ignores the cluster column, and says so
    _, fit_ml = cross_lagged(panel, "unit", "wave", "x", "y", se="ml", cluster="team", fit_indices=False)
    assert fit_ml.cluster == "unit" and any("ignores cluster" in n for n in fit_ml.notes)


def test_cluster_must_be_constant_within_unit():
    panel = _riclpm_panel(100, 4, seed=1)
    panel.loc[(panel["unit"] == 7) & (panel["wave"] == 3), "team"] = 99
    with pytest.raises(ValueError, match=r"cluster column 'team' must be constant within each 'unit'.*unit=7"):
        cross_lagged(panel, "unit", "wave", "x", "y", cluster="team")


@pytest.mark.slow
def test_team_clustered_intervals_cover_when_units_share_team_shocks():
    """Coverage of 95% intervals over 200 replicate panels whose units share team
    shocks (half of each innovation): ML and per-unit robust intervals are too
    narrow, the team-clustered ones cover about 95%."""
    truth = {"x->x": 0.4, "y->x": 0.05, "x->y": 0.25, "y->y": 0.3, "resid_cov(x,y)": 0.2}
    n_rep = 200
    hits = {k: {t: 0 for t in truth} for k in ("ml", "robust", "team")}
    for rep in range(n_rep):
        panel = _riclpm_panel(600, 4, seed=5000 + rep, team_size=10, team_share=0.5, missing=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any convergence warning fails the test
            fits = {
                "ml": cross_lagged(panel, "unit", "wave", "x", "y", se="ml", fit_indices=False).table,
                "robust": cross_lagged(panel, "unit", "wave", "x", "y", fit_indices=False).table,
                "team": cross_lagged(panel, "unit", "wave", "x", "y", cluster="team", fit_indices=False).table,
            }
        for k, tab in fits.items():
            for t, v in truth.items():
                hits[k][t] += _covers(tab, t, v)
    cov = {k: {t: h / n_rep for t, h in d.items()} for k, d in hits.items()}
    print("coverage over", n_rep, "replicates:", cov)
    # 200 replicates: Monte Carlo SE about 1.5 points (measured: .925, .915, .96,
    # .92, .93 clustered by team; about .70-.75 for ML and per-unit robust)
    for t in truth:
        assert 0.90 <= cov["team"][t] <= 0.985, (t, cov["team"][t])
    assert np.mean(list(cov["team"].values())) >= 0.92
    assert np.mean(list(cov["ml"].values())) < 0.9
    assert np.mean(list(cov["robust"].values())) < 0.9


# --------------------------------------------------------------------------- time-varying covariates
def test_time_varying_covariate_effect_is_within_unit_and_missing_cells_are_counted():
    rng = np.random.default_rng(11)
    panel = _riclpm_panel(2000, 5, seed=11)
    # a workload that differs stably between units (a_i), which also raises
    # their stable levels of x and y (their random intercepts)
    a = np.repeat(rng.normal(0, 1, 2000), 5)
    panel["x"] += 0.5 * a
    panel["y"] += 0.5 * a
    panel["load"] = a + rng.normal(0, 1, len(panel))
    panel["x"] += 0.3 * panel["load"]
    panel["y"] += -0.2 * panel["load"]
    miss = rng.random(len(panel)) < 0.05
    panel.loc[miss, "load"] = np.nan
    with pytest.warns(UserWarning, match="time-varying covariate"):
        table, fit = cross_lagged(panel, "unit", "wave", "x", "y", time_varying=["load"])
    assert _near(table, "load->x", 0.3), _row(table, "load->x").to_dict()
    assert _near(table, "load->y", -0.2), _row(table, "load->y").to_dict()
    for term, v in {"x->x": 0.4, "y->x": 0.05, "x->y": 0.25, "y->y": 0.3}.items():
        assert _near(table, term, v), term
    # the unit mean of the covariate absorbs its between-unit part (Mundlak)
    assert _row(table, "mean(load)->RI_x")["component"] == "covariate"
    assert fit.n_cells_dropped == int(miss.sum())
    assert fit.n_obs == len(panel) - int(miss.sum())
    assert fit.n_dropped == int(miss.sum())
    assert any("treated as missing" in n for n in fit.notes)
    # the CLPM takes the covariate without unit means
    t_cl, _ = cross_lagged(panel.dropna(subset=["load"]), "unit", "wave", "x", "y", kind="clpm", time_varying=["load"])
    assert "mean(load)->RI_x" not in set(t_cl["term"]) and "load->x" in set(t_cl["term"])


# --------------------------------------------------------------------------- fixed effects
def test_within_effects_agrees_with_riclpm():
    # Two-way FE of CX on lagged EX targets the RI-CLPM cross-lag only when
    # nothing else carries the past into CX_t: no autoregression (else the
    # lagged-x slope absorbs the path through CX_{t-1}), no CX -> EX feedback
    # and no same-wave EX -> CX chain (both make lagged EX correlate with the
    # demeaned error: small-T "Nickell-type" bias). So simulate exactly that.
    panel = simulate_panel(
        1500, 6, seed=21, ar_ex=0.0, ar_cx=0.0, cx_to_ex=0.0, ex_to_cx=0.25,
        ex_direct_cx=0.0, ex_to_ops={"fcr": 0.0, "aht": 0.0, "transfer": 0.0},
    )
    fe, fe_fit = within_effects(panel, "unit", "wave", y="cx", x="ex")
    ri, _ = cross_lagged(panel, "unit", "wave", "ex", "cx")
    b_fe, b_ri = fe.set_index("term").loc["ex->cx"], _row(ri, "ex->cx")
    assert b_fe["ci_low"] <= 0.25 <= b_fe["ci_high"]
    assert b_ri["ci_low"] <= 0.25 <= b_ri["ci_high"]
    assert abs(b_fe["estimate"] - b_ri["estimate"]) < 2 * max(b_fe["se"], b_ri["se"])
    assert isinstance(fe_fit, FEFit)
    assert fe["n"].iloc[0] == 1500 * 5 and fe_fit.n_units == 1500 and fe_fit.cluster == "unit"


def test_within_effects_clustered_se_matches_hand_computation():
    """Balanced panel: two-way within transformation, OLS, Liang-Zeger sandwich by
    team with the G/(G-1)(n-1)/(n-k) factor and t(G-1) intervals."""
    from scipy import stats

    panel = _riclpm_panel(400, 5, seed=9, team_size=8, team_share=0.4)
    table, fit = within_effects(panel, "unit", "wave", y="y", x="x", cluster="team")
    d = panel.sort_values(["unit", "wave"]).copy()
    d["xl"] = d.groupby("unit")["x"].shift(1)
    d = d.dropna(subset=["xl"])

    def within(v):
        return v - d.groupby("unit")[v.name].transform("mean") - d.groupby("wave")[v.name].transform("mean") + v.mean()

    xt, yt = within(d["xl"]).to_numpy(), within(d["y"]).to_numpy()
    beta = (xt @ yt) / (xt @ xt)
    e = yt - xt * beta
    g = pd.Series(xt * e).groupby(d["team"].to_numpy()).sum().to_numpy()
    G, n, k = len(g), len(xt), 1
    var = (g @ g) / (xt @ xt) ** 2 * G / (G - 1) * (n - 1) / (n - k)
    row = table.set_index("term").loc["x->y"]
    np.testing.assert_allclose(row["estimate"], beta, rtol=1e-10)
    np.testing.assert_allclose(row["se"], np.sqrt(var), rtol=1e-8)
    q = stats.t.ppf(0.975, G - 1)
    np.testing.assert_allclose(row["ci_high"], beta + q * np.sqrt(var), rtol=1e-8)
    assert fit.cluster == "team" and fit.n_clusters == G == 50


def test_within_effects_cluster_input_checks():
    panel = _riclpm_panel(60, 4, seed=1, team_size=20)
    with pytest.warns(RuntimeWarning, match="Only 3 clusters"):
        _, fit = within_effects(panel, "unit", "wave", y="y", x="x", cluster="team")
    assert any("Only 3 clusters" in n for n in fit.notes)
    bad = panel.copy()
    bad.loc[bad.index[7], "team"] = np.nan
    with pytest.raises(ValueError, match="no value in the cluster column 'team'"):
        within_effects(bad, "unit", "wave", y="y", x="x", cluster="team")
    with pytest.raises(ValueError, match=r"column\(s\) \['squad'\] not found"):
        within_effects(panel, "unit", "wave", y="y", x="x", cluster="squad")


def test_within_effects_lags_respect_gaps():
    rows = []
    for u in range(40):
        for w in (1, 2, 4, 5):  # wave 3 absent: 4 is not consecutive to 2
            rows.append({"unit": u, "wave": w, "ex": np.sin(u + w) + 0.1 * w, "cx": np.cos(u * w)})
    panel = pd.DataFrame(rows)
    res, fit = within_effects(panel, "unit", "wave", y="cx", x="ex", lags=1)
    # usable rows: wave 2 (lag 1) and wave 5 (lag 4); wave 4 has no wave-3 lag
    assert res["n"].iloc[0] == 40 * 2
    assert fit.n_dropped == 40 * 2
    with_y, _ = within_effects(panel.assign(wave=panel["wave"].where(panel["wave"] != 4, 3)), "unit", "wave",
                               y="cx", x="ex", lagged_y=True)
    assert list(with_y["term"]) == ["ex->cx", "cx->cx"]


# --------------------------------------------------------------------------- bad input
def test_bad_input_messages():
    panel = simulate_panel(50, 4, seed=1)
    with pytest.raises(ValueError, match=r"column\(s\) \['nope'\] not found"):
        cross_lagged(panel, "unit", "wave", "nope", "cx")
    with pytest.raises(ValueError, match="at least 3 waves"):
        cross_lagged(panel[panel["wave"] <= 2], "unit", "wave", "ex", "cx")
    with pytest.raises(ValueError, match="at least 2 waves"):
        cross_lagged(panel[panel["wave"] == 1], "unit", "wave", "ex", "cx", kind="clpm")
    with pytest.raises(ValueError, match="'ex' is not numeric"):
        cross_lagged(panel.assign(ex=panel["ex"].astype(str)), "unit", "wave", "ex", "cx")
    with pytest.raises(ValueError, match="duplicate"):
        cross_lagged(pd.concat([panel, panel.iloc[:1]]), "unit", "wave", "ex", "cx")
    with pytest.raises(ValueError, match="kind must be"):
        cross_lagged(panel, "unit", "wave", "ex", "cx", kind="lavaan")
    with pytest.raises(ValueError, match="se must be 'ml' or 'robust'"):
        cross_lagged(panel, "unit", "wave", "ex", "cx", se="huber")
    with pytest.raises(ValueError, match="information must be"):
        cross_lagged(panel, "unit", "wave", "ex", "cx", information="fisher")
    # every unit observed in one wave only
    one = panel.copy()
    keep = (one["unit"] % 4) + 1 == one["wave"]
    one.loc[~keep, ["ex", "cx"]] = np.nan
    with pytest.raises(ValueError, match="only one wave"):
        cross_lagged(one, "unit", "wave", "ex", "cx")
    with pytest.raises(ValueError, match="vary within unit.*time_varying"):
        cross_lagged(panel, "unit", "wave", "ex", "cx", covariates=["fcr"])
    with pytest.raises(ValueError, match="both covariates and time_varying"):
        cross_lagged(panel, "unit", "wave", "ex", "cx", covariates=["fcr"], time_varying=["fcr"])
    with pytest.raises(ValueError, match="integer period numbers"):
        within_effects(panel.assign(wave=panel["wave"] + 0.5), "unit", "wave", y="cx", x="ex")
    with pytest.raises(ValueError, match="duplicate"):
        within_effects(pd.concat([panel, panel.iloc[:1]]), "unit", "wave", y="cx", x="ex")
    with pytest.raises(ValueError, match="'cx' is not numeric"):
        within_effects(panel.assign(cx="high"), "unit", "wave", y="cx", x="ex")


def test_units_with_one_wave_are_still_used():
    panel = simulate_panel(300, 4, seed=2, **SIM)
    single = panel["unit"] < 30
    panel.loc[single & (panel["wave"] > 1), ["ex", "cx"]] = np.nan
    _, fit = cross_lagged(panel, "unit", "wave", "ex", "cx")
    assert fit.n_units == 300
    assert fit.n_units_one_wave == 30


def test_nonconvergence_is_reported(monkeypatch):
    real = _fiml.optimize.minimize

    def stingy(*args, **kwargs):
        kwargs["options"] = {**kwargs.get("options", {}), "maxiter": 2}
        return real(*args, **kwargs)

    # two L-BFGS iterations and an information matrix that allows no Newton step
    monkeypatch.setattr(_fiml.optimize, "minimize", stingy)
    monkeypatch.setattr(_fiml, "numerical_hessian", lambda f, th, g: -np.eye(len(th)))
    panel = simulate_panel(200, 4, seed=6)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        _, fit = cross_lagged(panel, "unit", "wave", "ex", "cx", fit_indices=False)
    assert fit.converged is False
    assert any("did not converge" in n for n in fit.notes)


@pytest.mark.slow
def test_coverage_over_seeds():
    hits = {t: 0 for t in TRUTH}
    n_rep = 60
    for seed in range(n_rep):
        panel = simulate_panel(300, 4, seed=1000 + seed, missing=0.1, **SIM)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any convergence warning fails the test
            res, _ = cross_lagged(panel, "unit", "wave", "ex", "cx", fit_indices=False)
        for t, v in TRUTH.items():
            hits[t] += _covers(res, t, v)
    for t, k in hits.items():
        assert 0.85 <= k / n_rep <= 1.0, (t, k / n_rep)


def test_within_effects_accepts_a_panel_carrying_a_ledger_in_attrs():
    """Linked panels carry their data-quality ledger (a DataFrame) in attrs."""
    from cxex_lab.ledger import Ledger

    panel = simulate_panel(200, 4, seed=3)
    panel.attrs["ledger"] = Ledger().frame  # a DataFrame in attrs, as older callers may pass
    res, _ = within_effects(panel, unit="unit", period="wave", y="cx", x="ex")
    assert res["term"].tolist() == ["ex->cx"]


# --------------------------------------------------------------------------- multiple indicators
LOADINGS = (1.0, 0.8, 1.2)


def _item_panel(n, T, seed, loadings_x=LOADINGS, loadings_y=LOADINGS, noise=0.4, item_stable=0.2,
                missing=0.0, drift=None) -> pd.DataFrame:
    """Three items per construct on the latent simulate_panel scores.

    Item j of x at wave t = loading_j * ex + N(0, noise) + an item-specific
    stable part N(0, item_stable) (what per-item random intercepts absorb).
    ``drift=(item, waves, loading)`` changes one loading at some waves
    (non-invariance). ``missing`` drops whole answers (all x items, or all y
    items, of a unit-wave).
    """
    panel = simulate_panel(n, T, seed=seed, **SIM)
    rng = np.random.default_rng(seed + 1)
    for c, lat, lams in (("x", "ex", loadings_x), ("y", "cx", loadings_y)):
        for k, lam in enumerate(lams):
            lam_t = np.full(len(panel), lam)
            if drift and drift[0] == f"{c}{k + 1}":
                lam_t[panel["wave"].isin(drift[1]).to_numpy()] = drift[2]
            stable = np.repeat(rng.normal(0, item_stable, n), T)
            panel[f"{c}{k + 1}"] = 2 + lam_t * panel[lat] + stable + rng.normal(0, noise, len(panel))
    if missing:
        for c in "xy":
            drop = rng.random(len(panel)) < missing
            panel.loc[drop, [f"{c}1", f"{c}2", f"{c}3"]] = np.nan
    return panel


X_ITEMS, Y_ITEMS = ["x1", "x2", "x3"], ["y1", "y2", "y3"]


def test_mi_riclpm_matches_semopy_on_complete_data():
    """The metric multiple-indicator RI-CLPM with a random intercept per item
    (Mulder & Hamaker 2021, step 2 of extension 3) equals semopy 2.3.11's fit of
    the same lavaan-style syntax: estimates to 1e-3 (we see about 1e-6), SEs."""
    semopy = pytest.importorskip("semopy")
    T, n = 3, 800
    panel = _item_panel(n, T, seed=5)
    items = X_ITEMS + Y_ITEMS
    wide = panel.pivot(index="unit", columns="wave", values=items)
    wide.columns = [f"{v}_{t}" for v, t in wide.columns]
    lines, ris = [], []
    for it in items:
        lines.append(f"RI{it} =~ " + " + ".join(f"1*{it}_{t}" for t in range(1, T + 1)))
        ris.append(f"RI{it}")
    for t in range(1, T + 1):
        lines += [f"WX{t} =~ 1*x1_{t} + lx2*x2_{t} + lx3*x3_{t}", f"WY{t} =~ 1*y1_{t} + ly2*y2_{t} + ly3*y3_{t}",
                  f"WX{t} ~~ WY{t}"]
    for t in range(2, T + 1):
        lines += [f"WX{t} ~ axx*WX{t - 1} + ayx*WY{t - 1}", f"WY{t} ~ axy*WX{t - 1} + ayy*WY{t - 1}"]
    for i, a in enumerate(ris):
        lines += [f"{a} ~~ {b}" for b in ris[i:]] + [f"{a} ~~ 0*WX1", f"{a} ~~ 0*WY1"]
    model = semopy.Model("\n".join(lines))
    model.fit(wide, obj="MLW", options={"ftol": 1e-14, "maxiter": 50000})
    est = model.inspect()
    table, fit = cross_lagged_mi(panel, "unit", "wave", X_ITEMS, Y_ITEMS, names=("ex", "cx"),
                                 se="ml", information="expected")
    reg = est[est["op"] == "~"].set_index(["lval", "rval"])
    sem = {"ex->ex": ("WX2", "WX1"), "cx->ex": ("WX2", "WY1"), "ex->cx": ("WY2", "WX1"), "cx->cx": ("WY2", "WY1")}
    for term, key in sem.items():
        assert abs(_row(table, term)["estimate"] - reg.loc[key, "Estimate"]) < 1e-3, term
        assert abs(_row(table, term)["se"] / float(reg.loc[key, "Std. Err"]) - 1) < 1e-2, term
    load = est[est["op"] == "~"]  # semopy lists loadings with op "~" (item ~ factor)
    for item in ("x2", "x3", "y2", "y3"):
        r = load[(load["lval"] == f"{item}_1") & load["rval"].isin(["WX1", "WY1"])].iloc[0]
        assert abs(_row(table, f"loading({item})")["estimate"] - r["Estimate"]) < 1e-3, item
    cov2 = est[(est["op"] == "~~") & (est["lval"] == "WX2") & (est["rval"] == "WY2")].iloc[0]
    assert abs(_row(table, "resid_cov(ex,cx)", wave=2)["estimate"] - cov2["Estimate"]) < 1e-3
    assert fit.converged and fit.kind == "mi-riclpm" and fit.items == tuple(items)
    # a correctly specified model: the chi-square test does not reject
    assert fit.p_chi2 > 0.001


def test_mi_riclpm_recovers_lags_from_incomplete_items():
    panel = _item_panel(1500, 5, seed=7, missing=0.15)
    table, fit = cross_lagged_mi(panel, "unit", "wave", X_ITEMS, Y_ITEMS, names=("ex", "cx"))
    for term, v in TRUTH.items():
        assert _covers(table, term, v), (term, _row(table, term).to_dict())
    for item, lam in zip(X_ITEMS[1:] + Y_ITEMS[1:], LOADINGS[1:] * 2):
        assert _covers(table, f"loading({item})", lam), item
    assert np.isnan(_row(table, "loading(x1)")["se"]) and _row(table, "loading(x1)")["estimate"] == 1.0
    assert fit.converged and fit.n_units == 1500 and fit.n_units_complete < 0.3 * 1500
    # the single-indicator model on one item is attenuated by its measurement error
    single, _ = cross_lagged(panel, "unit", "wave", "x2", "y2")
    assert _row(single, "x2->x2")["ci_high"] < TRUTH["ex->ex"]


def test_measurement_invariance_table_and_tests():
    invariant = _item_panel(1000, 4, seed=3)
    tab = measurement_invariance(invariant, "unit", "wave", X_ITEMS, Y_ITEMS)
    assert tab["model"].tolist() == ["configural", "metric", "scalar"]
    assert list(tab.columns) == ["model", "n_par", "loglik", "chi2", "df", "p_chi2", "cfi", "rmsea", "aic", "bic",
                                 "delta_chi2", "delta_df", "p_delta", "delta_cfi", "delta_rmsea", "converged"]
    # nested models: fewer parameters, lower log-likelihood, the df count the constraints
    assert (np.diff(tab["n_par"]) < 0).all() and (np.diff(tab["loglik"]) <= 1e-6).all()
    T, free = 4, 4  # 4 non-marker items
    assert tab.loc[1, "delta_df"] == free * (T - 1)
    # scalar: J*T intercepts -> J + 2(T-1) (item intercepts + factor means from wave 2)
    assert tab.loc[2, "delta_df"] == 6 * T - (6 + 2 * (T - 1))
    np.testing.assert_allclose(tab["chi2"].diff().iloc[1:], tab["delta_chi2"].iloc[1:], atol=1e-6)
    assert tab["converged"].all()
    assert tab.loc[1, "p_delta"] > 0.01 and tab.loc[2, "p_delta"] > 0.01
    # a loading that drifts (0.8 -> 0.4 in waves 3-4) breaks metric invariance
    drifting = _item_panel(1000, 4, seed=3, drift=("x2", [3, 4], 0.4))
    tab2 = measurement_invariance(drifting, "unit", "wave", X_ITEMS, Y_ITEMS)
    assert tab2.loc[1, "p_delta"] < 1e-4 and tab2.loc[1, "delta_cfi"] < 0


def test_random_intercepts_per_item_versus_on_the_factor():
    """With item-specific stable parts, the RI-on-the-factor model pushes them into
    the item residuals (assumed independent over waves), misfits and overstates
    the autoregressions; per-item random intercepts (the default) recover them."""
    panel = _item_panel(1500, 5, seed=13, item_stable=0.5)
    ind, fi = cross_lagged_mi(panel, "unit", "wave", X_ITEMS, Y_ITEMS, names=("ex", "cx"))
    fac, ff = cross_lagged_mi(panel, "unit", "wave", X_ITEMS, Y_ITEMS, names=("ex", "cx"), random_intercepts="factor")
    assert ff.random_intercepts == "factor" and ff.n_par < fi.n_par and ff.loglik < fi.loglik
    assert ff.p_chi2 < 1e-6 < fi.p_chi2
    for term in ("ex->ex", "cx->cx"):
        assert _covers(ind, term, TRUTH[term])
        assert _row(fac, term)["estimate"] > TRUTH[term] + 0.05
    assert _row(fac, "ex->ex")["ci_low"] > TRUTH["ex->ex"]


def test_mi_bad_input():
    panel = _item_panel(100, 4, seed=1)
    with pytest.raises(ValueError, match="x_items must list at least 2 item columns"):
        cross_lagged_mi(panel, "unit", "wave", ["x1"], Y_ITEMS)
    with pytest.raises(ValueError, match="appears twice"):
        cross_lagged_mi(panel, "unit", "wave", X_ITEMS, ["y1", "y2", "x1"])
    with pytest.raises(ValueError, match="invariance must be one of"):
        cross_lagged_mi(panel, "unit", "wave", X_ITEMS, Y_ITEMS, invariance="strict")
    with pytest.raises(ValueError, match="random_intercepts must be"):
        cross_lagged_mi(panel, "unit", "wave", X_ITEMS, Y_ITEMS, random_intercepts="none")
    with pytest.raises(ValueError, match="at least 3 waves"):
        cross_lagged_mi(panel[panel["wave"] <= 2], "unit", "wave", X_ITEMS, Y_ITEMS)
    with pytest.raises(ValueError, match=r"item column 'y3' has no observed value at wave=2"):
        cross_lagged_mi(panel.assign(y3=panel["y3"].where(panel["wave"] != 2)), "unit", "wave", X_ITEMS, Y_ITEMS)
