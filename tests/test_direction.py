"""Force pairs: RI-CLPM / CLPM (FIML) and two-way fixed effects.

Recovery tests use the simulator's known truth: its ``ar_ex``, ``ar_cx``,
``ex_to_cx`` and ``cx_to_ex`` are exactly the RI-CLPM's within-unit lags
(see the docstring of :mod:`cxex_lab.simulate`). The reference-implementation
test compares with semopy 2.3.11, which matches lavaan on complete panels.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from cxex_lab.models import direction
from cxex_lab.models.direction import cross_lagged, within_effects
from cxex_lab.simulate import simulate_panel

TRUTH = {"ex->cx": 0.25, "cx->ex": 0.05, "ex->ex": 0.4, "cx->cx": 0.3}
SIM = dict(ex_to_cx=0.25, cx_to_ex=0.05, ar_ex=0.4, ar_cx=0.3)
LAGS = list(TRUTH)


def _row(res: pd.DataFrame, term: str) -> pd.Series:
    return res.set_index("term").loc[term]


def _covers(res: pd.DataFrame, term: str, value: float) -> bool:
    r = _row(res, term)
    return bool(r["ci_low"] <= value <= r["ci_high"])


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


# --------------------------------------------------------------------------- recovery
def test_tidy_columns_and_fit_attrs(fits):
    ri, _ = fits
    assert list(ri.columns) == ["term", "estimate", "se", "ci_low", "ci_high", "p", "n", "std_estimate"]
    assert list(ri["term"]) == ["ex->cx", "cx->ex", "ex->ex", "cx->cx", "corr(RI_ex,RI_cx)"]
    fit = ri.attrs["fit"]
    for key in ("cfi", "rmsea", "chi2", "df", "p_chi2", "loglik", "n_units", "n_obs", "n_units_complete", "converged"):
        assert key in fit
    assert fit["converged"] and fit["n_units"] == 1500 and fit["n_obs"] == 1500 * 5
    assert fit["df"] == 2 * 5 * 11 // 2 + 2 * 5 - (10 + 4 + 3 * 6)  # 65 moments - 32 parameters
    assert (ri["n"] == 1500).all()


def test_riclpm_recovers_true_lags_under_confounding(fits):
    ri, _ = fits
    for term, value in TRUTH.items():
        assert _covers(ri, term, value), (term, _row(ri, term).to_dict())
    # correctly specified model fits: chi-square not rejected, CFI ~ 1
    assert ri.attrs["fit"]["p_chi2"] > 0.001
    assert ri.attrs["fit"]["cfi"] > 0.99
    assert _row(ri, "corr(RI_ex,RI_cx)")["estimate"] > 0.5


def test_clpm_is_biased_by_stable_differences(fits):
    ri, cl = fits
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
    assert cl.attrs["fit"]["rmsea"] > ri.attrs["fit"]["rmsea"] + 0.03
    assert cl.attrs["fit"]["chi2"] > 10 * ri.attrs["fit"]["chi2"]


def test_fiml_uses_incomplete_units_and_recovers_lags(missing_panel):
    res = cross_lagged(missing_panel, "unit", "wave", "ex", "cx")
    fit = res.attrs["fit"]
    wide = missing_panel.pivot(index="unit", columns="wave", values="ex")
    complete_units = int(wide.notna().all(axis=1).sum())
    # complete-case analysis would discard most units (0.85**5 ~ 44% kept) ...
    assert complete_units < 0.5 * 1500
    assert fit["n_units_complete"] == complete_units
    # ... FIML uses every unit with any observed value and every observed row
    assert fit["n_units"] == int(wide.notna().any(axis=1).sum())
    assert fit["n_obs"] == int(missing_panel["ex"].notna().sum())
    assert fit["estimator"] == "FIML" and fit["converged"]
    for term, value in TRUTH.items():
        assert _covers(res, term, value), (term, _row(res, term).to_dict())


def test_free_lags_by_wave():
    panel = simulate_panel(800, 4, seed=3, **SIM)
    res = cross_lagged(panel, "unit", "wave", "ex", "cx", equal_lags=False)
    assert "wave" in res.columns
    lag_rows = res[res["term"].isin(LAGS)]
    assert len(lag_rows) == 4 * 3 and sorted(lag_rows["wave"].unique()) == [2, 3, 4]
    assert res.attrs["fit"]["df"] == 2 * 4 * 9 // 2 + 2 * 4 - (8 + 12 + 3 * 5)
    # the constrained model is nested: its chi-square is at least as large
    eq = cross_lagged(panel, "unit", "wave", "ex", "cx")
    assert eq.attrs["fit"]["chi2"] >= res.attrs["fit"]["chi2"] - 1e-6


def test_covariate_predicts_random_intercept():
    panel = simulate_panel(1000, 4, seed=4, **SIM)
    rng = np.random.default_rng(0)
    z = rng.normal(size=1000)
    panel["tenure"] = np.repeat(z, 4)
    panel["ex"] = panel["ex"] + 0.3 * panel["tenure"]  # shifts the EX intercept only
    res = cross_lagged(panel, "unit", "wave", "ex", "cx", covariates=["tenure"])
    assert _covers(res, "tenure->RI_ex", 0.3)
    assert _covers(res, "ex->cx", 0.25)


def test_scale_invariance():
    panel = simulate_panel(400, 4, seed=5, **SIM)
    a = cross_lagged(panel, "unit", "wave", "ex", "cx")
    scaled = panel.assign(cx=panel["cx"] * 10 + 3)
    b = cross_lagged(scaled, "unit", "wave", "ex", "cx")
    np.testing.assert_allclose(_row(b, "ex->cx")["estimate"], 10 * _row(a, "ex->cx")["estimate"], rtol=1e-3)
    np.testing.assert_allclose(_row(b, "ex->ex")["estimate"], _row(a, "ex->ex")["estimate"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(b.attrs["fit"]["chi2"], a.attrs["fit"]["chi2"], rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- reference implementation
def test_matches_semopy_on_complete_panel():
    """semopy 2.3.11 (which matches lavaan to 3 decimals on complete RI-CLPMs)."""
    semopy = pytest.importorskip("semopy")
    T = 4
    panel = simulate_panel(500, T, seed=3, **SIM)
    wide = panel.pivot(index="unit", columns="wave", values=["ex", "cx"])
    wide.columns = [f"{v}{t}" for v, t in wide.columns]
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
    model.fit(wide, obj="MLW")
    est = model.inspect()
    reg = est[(est["op"] == "~") & (est["lval"] == "wx2")].set_index("rval")
    reg_y = est[(est["op"] == "~") & (est["lval"] == "wy2")].set_index("rval")
    sem = {
        "ex->ex": reg.loc["wx1"], "cx->ex": reg.loc["wy1"],
        "ex->cx": reg_y.loc["wx1"], "cx->cx": reg_y.loc["wy1"],
    }
    ours = cross_lagged(panel, "unit", "wave", "ex", "cx")
    for term, row in sem.items():
        assert abs(_row(ours, term)["estimate"] - float(row["Estimate"])) < 2e-3, term
        # semopy reports expected-information SEs; ours are observed-information
        # (lavaan's default under missing="ml"): close on a complete panel
        assert abs(_row(ours, term)["se"] / float(row["Std. Err"]) - 1) < 0.15, term
    cov = est[(est["op"] == "~~") & (est["lval"] == "RIx") & (est["rval"].isin(["RIx", "RIy"]))].set_index("rval")["Estimate"]
    vy = float(est[(est["op"] == "~~") & (est["lval"] == "RIy") & (est["rval"] == "RIy")]["Estimate"].iloc[0])
    r_sem = float(cov["RIy"]) / np.sqrt(float(cov["RIx"]) * vy)
    assert abs(_row(ours, "corr(RI_ex,RI_cx)")["estimate"] - r_sem) < 2e-3


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
    fe = within_effects(panel, "unit", "wave", y="cx", x="ex")
    ri = cross_lagged(panel, "unit", "wave", "ex", "cx")
    b_fe, b_ri = _row(fe, "ex->cx"), _row(ri, "ex->cx")
    assert b_fe["ci_low"] <= 0.25 <= b_fe["ci_high"]
    assert b_ri["ci_low"] <= 0.25 <= b_ri["ci_high"]
    assert abs(b_fe["estimate"] - b_ri["estimate"]) < 2 * max(b_fe["se"], b_ri["se"])
    assert fe["n"].iloc[0] == 1500 * 5 and fe.attrs["fit"]["n_units"] == 1500


def test_within_effects_lags_respect_gaps():
    rows = []
    for u in range(40):
        for w in (1, 2, 4, 5):  # wave 3 absent: 4 is not consecutive to 2
            rows.append({"unit": u, "wave": w, "ex": np.sin(u + w) + 0.1 * w, "cx": np.cos(u * w)})
    panel = pd.DataFrame(rows)
    res = within_effects(panel, "unit", "wave", y="cx", x="ex", lags=1)
    # usable rows: wave 2 (lag 1) and wave 5 (lag 4); wave 4 has no wave-3 lag
    assert res["n"].iloc[0] == 40 * 2
    assert res.attrs["fit"]["n_rows_dropped"] == 40 * 2
    with_y = within_effects(panel.assign(wave=panel["wave"].where(panel["wave"] != 4, 3)), "unit", "wave",
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
    # every unit observed in one wave only
    one = panel.copy()
    keep = (one["unit"] % 4) + 1 == one["wave"]
    one.loc[~keep, ["ex", "cx"]] = np.nan
    with pytest.raises(ValueError, match="only one wave"):
        cross_lagged(one, "unit", "wave", "ex", "cx")
    with pytest.raises(ValueError, match="vary within unit"):
        cross_lagged(panel, "unit", "wave", "ex", "cx", covariates=["fcr"])
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
    res = cross_lagged(panel, "unit", "wave", "ex", "cx")
    assert res.attrs["fit"]["n_units"] == 300
    assert res.attrs["fit"]["n_units_one_wave"] == 30


def test_nonconvergence_is_reported(monkeypatch):
    real = direction.optimize.minimize

    def stingy(*args, **kwargs):
        kwargs["options"] = {**kwargs.get("options", {}), "maxiter": 2}
        return real(*args, **kwargs)

    monkeypatch.setattr(direction.optimize, "minimize", stingy)
    panel = simulate_panel(200, 4, seed=6)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = cross_lagged(panel, "unit", "wave", "ex", "cx", fit_indices=False)
    assert res.attrs["fit"]["converged"] is False


# --------------------------------------------------------------------------- coverage
@pytest.mark.slow
def test_coverage_over_seeds():
    hits = {t: 0 for t in TRUTH}
    n_rep = 60
    for seed in range(n_rep):
        panel = simulate_panel(300, 4, seed=1000 + seed, missing=0.1, **SIM)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any convergence warning fails the test
            res = cross_lagged(panel, "unit", "wave", "ex", "cx", fit_indices=False)
        for t, v in TRUTH.items():
            hits[t] += _covers(res, t, v)
    for t, k in hits.items():
        assert 0.85 <= k / n_rep <= 1.0, (t, k / n_rep)


def test_within_effects_accepts_a_panel_carrying_a_ledger_in_attrs():
    """Linked panels carry their data-quality ledger (a DataFrame) in attrs."""
    from cxex_lab.ledger import Ledger
    from cxex_lab.simulate import simulate_panel

    panel = simulate_panel(200, 4, seed=3)
    panel.attrs["ledger"] = Ledger().frame  # a DataFrame in attrs, as older callers may pass
    res = within_effects(panel, unit="unit", period="wave", y="cx", x="ex")
    assert res["term"].tolist() == ["ex->cx"]
