"""Cinelli & Hazlett (2020) sensitivity: published Darfur numbers, PySensemakr, the exact OVB
identity, the Mundlak = fixed-effects equality and the within-employee headline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from linearmodels.panel import PanelOLS
from scipy.optimize import brentq

from cxex_lab.models.sensitivity import (
    SensitivityFit,
    WithinSensitivityFit,
    _adjusted,
    adjusted_grid,
    benchmark_bounds,
    group_partial_r2,
    partial_r2,
    robustness_value,
    sensitivity,
    sensitivity_within,
)
from cxex_lab.results import TABLE_COLUMNS

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"

# Darfur example, Cinelli & Hazlett (2020, Sec. 4-6): treatment "directlyharmed",
# estimate 0.0973, se 0.0233, t = 4.18, dof = 783. Published: partial R^2 2.19%,
# RV_1 13.9%, RV_{1,0.05} 7.6%; the package sensemakr reports 0.02187309,
# 0.1387764 and 0.07625797 (its test suite, tests/test_darfur.py).
EST, SE, DOF = 0.09731582, 0.02325654, 783
T = EST / SE


def test_darfur_partial_r2_and_robustness_values():
    assert T == pytest.approx(4.18445, abs=1e-5)
    assert partial_r2(T, DOF) == pytest.approx(0.02187309, abs=1e-7)
    assert robustness_value(T, DOF) == pytest.approx(0.1387764, abs=1e-6)
    assert robustness_value(T, DOF, q=1, alpha=0.05) == pytest.approx(0.07625797, abs=1e-6)
    # rounded as printed in the paper
    assert round(100 * partial_r2(T, DOF), 1) == 2.2
    assert round(100 * robustness_value(T, DOF), 1) == 13.9
    assert round(100 * robustness_value(T, DOF, alpha=0.05), 1) == 7.6


def test_darfur_female_benchmark_bounds_and_adjusted_estimates():
    # sensemakr's published bounds for confounders 1x, 2x, 3x as strong as "female".
    # The Darfur data are not available offline, so we recover female's two partial R^2
    # from the 1x row and then check the 2x and 3x rows and all adjusted estimates.
    pub = {
        1: (0.00916428667504862, 0.12464092303637, 0.0752202698486415, 0.0218733298036818, 3.43890347394571),
        2: (0.0183285733500972, 0.249324064199975, 0.0529151689180575, 0.0203500639944344, 2.60024582392121),
        3: (0.0274928600251459, 0.374050471038094, 0.0303960178770157, 0.0186700665753491, 1.62806156873318),
    }
    pub_ci = {1: (0.0322829603, 0.1181575794), 2: (0.0129680276, 0.0928623102), 3: (-0.0062532913, 0.0670453271)}
    r2dxj = pub[1][0] / (1 + pub[1][0])  # r2dz = kd * r2dxj / (1 - r2dxj) with kd = 1
    r2yxj = brentq(lambda r: benchmark_bounds(r2dxj, r)[1] - pub[1][1], 1e-6, 0.9)
    for kd, (r2dz_pub, r2yz_pub, adj_pub, se_pub, t_pub) in pub.items():
        r2dz, r2yz = benchmark_bounds(r2dxj, r2yxj, kd=kd)
        assert r2dz == pytest.approx(r2dz_pub, abs=1e-9)
        assert r2yz == pytest.approx(r2yz_pub, abs=1e-9)
        adj, adj_se, adj_t, lo, hi = _adjusted(EST, SE, DOF, r2dz, r2yz, 0.05)
        assert adj == pytest.approx(adj_pub, abs=1e-9)
        assert adj_se == pytest.approx(se_pub, abs=1e-9)
        assert adj_t == pytest.approx(t_pub, abs=1e-6)
        assert lo == pytest.approx(pub_ci[kd][0], abs=1e-6)
        assert hi == pytest.approx(pub_ci[kd][1], abs=1e-6)


def test_robustness_value_edge_cases():
    assert robustness_value(1.0, 500, alpha=0.05) == 0.0  # not significant to begin with
    # huge t: the constraint is not binding (sensemakr's extreme branch)
    fq, f_crit = 60 / math.sqrt(100), abs(-1.984216952) / math.sqrt(99)
    assert fq > 1 / f_crit
    assert robustness_value(60, 100, alpha=0.05) == pytest.approx((fq**2 - f_crit**2) / (1 + fq**2), rel=1e-6)
    # q = 0.5: confounder that halves the estimate is weaker than one that kills it
    assert robustness_value(T, DOF, q=0.5) < robustness_value(T, DOF)


def _confounded(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    tenure = rng.normal(size=n)
    z = rng.normal(size=n)  # unobserved confounder, as strong as tenure, independent of it
    ex = 0.4 * tenure + 0.4 * z + rng.normal(size=n)
    cx = 0.3 * ex + 0.5 * tenure + 0.5 * z + rng.normal(size=n)
    return pd.DataFrame({"ex": ex, "cx": cx, "tenure": tenure, "z": z})


def test_sensitivity_on_statsmodels_fit_matches_formulas_and_exact_ovb():
    d = _confounded()
    short = smf.ols("cx ~ ex + tenure", data=d).fit()
    table, fit = sensitivity(short, "ex", benchmark_covariates=["tenure"], kd=[1, 2])
    assert isinstance(fit, SensitivityFit)
    assert list(table.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    row = table.iloc[0]
    assert row["term"] == "ex"
    assert row["estimate"] == pytest.approx(short.params["ex"])
    assert row["se"] == pytest.approx(short.bse["ex"])
    assert row["partial_r2"] == pytest.approx(partial_r2(short.tvalues["ex"], short.df_resid))
    assert row["rv_q"] == pytest.approx(robustness_value(short.tvalues["ex"], short.df_resid))
    assert row["rv_qa"] == pytest.approx(robustness_value(short.tvalues["ex"], short.df_resid, alpha=0.05))
    assert list(table["term"]) == ["ex", "1x tenure", "2x tenure"]
    assert fit.dof == short.df_resid and fit.se_ratio == pytest.approx(1.0)
    assert not table.loc[1:, ["r2dz_x", "r2yz_dx"]].isna().any().any()

    # Exact OVB identity (C&H eq. 11-12): with the confounder's actual partial R^2s the
    # formula reproduces the coefficient change between the short and the long model.
    long = smf.ols("cx ~ ex + tenure + z", data=d).fit()
    r2yz = partial_r2(long.tvalues["z"], long.df_resid)
    r2dz = partial_r2(smf.ols("ex ~ tenure + z", data=d).fit().tvalues["z"], long.df_resid + 1)
    adj, *_ = _adjusted(short.params["ex"], short.bse["ex"], short.df_resid, r2dz, r2yz, 0.05)
    assert adj == pytest.approx(long.params["ex"], abs=1e-10)

    # The unobserved z is built exactly as strong as tenure (independent of it): the
    # 1x-tenure bounds match z's actual partial R^2s up to sampling error, the adjusted
    # estimate lands near the truth (0.3; naive 0.49), and the 2x bound overshoots it.
    one = table.set_index("term").loc["1x tenure"]
    assert abs(one["estimate"] - 0.3) < 0.05
    assert one["r2dz_x"] == pytest.approx(r2dz, rel=0.2)
    assert one["r2yz_dx"] == pytest.approx(r2yz, rel=0.2)
    assert table.set_index("term").loc["2x tenure", "estimate"] < 0.3
    # the multiplier that explains the estimate away lies between 1 and 2
    k = fit.benchmarks["tenure"]["k_explain_away"]
    assert 1 < k < 4
    r2dz_k, r2yz_k = benchmark_bounds(fit.benchmarks["tenure"]["r2dxj_x"], fit.benchmarks["tenure"]["r2yxj_dx"], kd=k)
    assert _adjusted(fit.estimate, fit.se_classical, fit.dof, r2dz_k, r2yz_k, 0.05)[0] == pytest.approx(0, abs=1e-8)


def test_grouped_benchmark_matches_pysensemakr():
    # Reference: PySensemakr 0.0.8 (statsmodels 0.15, pandas 3.1) on the committed fixture,
    # model cx ~ ex + tenure + C(site), benchmark_covariates={"site": <the 4 site dummies>},
    # kd = [1, 2]: group_partial_r2, ovb_partial_r2_bound, adjusted_estimate/_se/_t and
    # sensitivity_stats printed to full precision (script in the drivers track report).
    d = pd.read_csv(FIXTURES / "sensitivity_groups.csv")
    fit = smf.ols("cx ~ ex + tenure + C(site)", data=d).fit()
    sites = [c for c in fit.model.exog_names if c.startswith("C(site)")]
    assert group_partial_r2(fit, sites) == pytest.approx(0.03690671388980815, rel=1e-10)
    table, sfit = sensitivity(fit, "ex", benchmark_covariates={"site": sites}, kd=[1, 2])
    b = table.set_index("term")
    np.testing.assert_allclose(b.loc[["1x site", "2x site"], "r2dz_x"], [0.07765003019700152, 0.15530006039400304], rtol=1e-9)
    np.testing.assert_allclose(b.loc[["1x site", "2x site"], "r2yz_dx"], [0.04477329229010857, 0.0907225934018564], rtol=1e-9)
    np.testing.assert_allclose(b.loc[["1x site", "2x site"], "estimate"], [0.25231321304325294, 0.18679555781897283], rtol=1e-9)
    np.testing.assert_allclose(b.loc[["1x site", "2x site"], "se"], [0.049703026709321925, 0.05067274665691634], rtol=1e-9)
    np.testing.assert_allclose(b.loc[["1x site", "2x site"], "t"], [5.076415456926911, 3.6863120738981503], rtol=1e-9)
    assert sfit.estimate == pytest.approx(0.31168128857273136, rel=1e-10)
    assert sfit.partial_r2 == pytest.approx(0.09411395218310226, rel=1e-10)
    assert sfit.rv_q == pytest.approx(0.2745353895728021, rel=1e-10)
    assert sfit.rv_qa == pytest.approx(0.19953530057720584, rel=1e-10)
    # the group partial R^2 is the share of residual variance the set explains (SSR form)
    without = smf.ols("cx ~ ex + tenure", data=d).fit()
    assert group_partial_r2(fit, sites) == pytest.approx((without.ssr - fit.ssr) / without.ssr, rel=1e-10)


def test_clustered_rv_qa_is_the_root_of_the_adjusted_clustered_interval():
    # RV_{q,alpha} with cluster-robust SEs: the closed form (critical value scaled by the
    # SE ratio c, t with G-1 df) equals the strength r = R2yz = R2dz at which the adjusted
    # clustered interval's bound reaches (1-q) x estimate, found numerically.
    est, se, dof = 0.1318, 0.0328, 1368
    for c, nu in ((1.0, None), (0.78, 366), (1.3, 60)):
        for q in (1.0, 0.5):
            rv = robustness_value(est / se, dof, q=q, alpha=0.05, se_ratio=c, dof_inference=nu)
            if rv == 0:  # the clustered interval includes (1-q) x estimate without any confounder
                assert _adjusted(est, se, dof, 0.0, 0.0, 0.05, se_ratio=c, dof_inference=nu)[3] < (1 - q) * est
                continue
            root = brentq(
                lambda r: _adjusted(est, se, dof, r, r, 0.05, se_ratio=c, dof_inference=nu)[3] - (1 - q) * est,
                1e-12,
                0.99,
            )
            assert rv == pytest.approx(root, rel=1e-8)


def test_clustered_fit_keeps_point_statistics_and_scales_intervals():
    d = _confounded(n=1200, seed=3)
    d["g"] = np.arange(len(d)) // 6
    cl = smf.ols("cx ~ ex + tenure", data=d).fit(cov_type="cluster", cov_kwds={"groups": d["g"]}, use_t=True)
    classical = smf.ols("cx ~ ex + tenure", data=d).fit()
    table, fit = sensitivity(cl, "ex", benchmark_covariates=["tenure"])
    assert fit.t_classical == pytest.approx(classical.tvalues["ex"])
    assert fit.partial_r2 == pytest.approx(partial_r2(classical.tvalues["ex"], classical.df_resid))
    assert fit.se == pytest.approx(cl.bse["ex"]) and fit.dof_inference == 199
    assert table.iloc[0]["ci_low"] == pytest.approx(cl.conf_int().loc["ex", 0])
    assert fit.rv_qa_classical == pytest.approx(robustness_value(classical.tvalues["ex"], classical.df_resid, alpha=0.05))
    assert any("cluster" in n for n in fit.notes)


# --------------------------------------------------------------------------- within-employee headline
def _panel(n=400, waves=5, seed=0, unbalanced=True, effect=0.3, n_sites=8):
    """Employee-wave panel with stable traits that confound EX and CX, and a lagged EX -> CX effect."""
    rng = np.random.default_rng(seed)
    emp = np.repeat(np.arange(n), waves)
    wave = np.tile(np.arange(1, waves + 1), n)
    site = emp % n_sites
    u_site = rng.normal(0, 0.5, n_sites)[site]
    trait = np.repeat(rng.normal(size=n), waves)
    shock = np.tile(rng.normal(0, 0.3, waves), n)
    ex = trait + u_site + shock + rng.normal(size=n * waves)
    p = pd.DataFrame({"employee_id": emp, "wave": wave, "site_id": [f"S{s}" for s in site], "esat": ex})
    lag = p.groupby("employee_id")["esat"].shift()
    p["csat"] = 0.8 * trait + u_site + shock + effect * lag.fillna(0) + rng.normal(size=n * waves)
    if unbalanced:
        p = p[rng.random(len(p)) > 0.2].reset_index(drop=True)
    return p


def _fe_reference(p, lagged=True):
    d = p.copy()
    if lagged:
        prev = d[["employee_id", "wave", "esat"]].assign(wave=d["wave"] + 1).rename(columns={"esat": "x"})
        d = d.merge(prev, on=["employee_id", "wave"], how="left").dropna(subset=["x", "csat"])
    return d


def test_mundlak_coefficient_equals_two_way_fixed_effects_on_an_unbalanced_panel():
    p = _panel()
    table, fit = sensitivity_within(p, y="csat", x="esat")
    assert isinstance(fit, WithinSensitivityFit)
    d = _fe_reference(p)
    fe = PanelOLS(
        d.set_index(["employee_id", "wave"])["csat"], d.set_index(["employee_id", "wave"])[["x"]],
        entity_effects=True, time_effects=True,
    ).fit()
    assert fit.estimate == pytest.approx(float(fe.params["x"]), abs=1e-10)
    assert table.iloc[0]["estimate"] == pytest.approx(float(fe.params["x"]), abs=1e-10)
    assert fit.n_obs == len(d) and fit.n_units == d["employee_id"].nunique()
    # Without the employee means of the wave indicators (Wooldridge 2021) the equality
    # fails on an unbalanced panel: they are needed, not decoration.
    d["xbar"] = d.groupby("employee_id")["x"].transform("mean")
    naive = smf.ols("csat ~ x + xbar + C(site_id) + C(wave)", data=d).fit()
    assert abs(naive.params["x"] - float(fe.params["x"])) > 1e-5


def _arellano_se(d, estimate, groups):
    """Arellano cluster-robust SE of the two-way FE slope, by hand from the within residuals,
    with the small-sample factor G/(G-1) (absorbed employee and wave effects not counted;
    Cameron & Miller 2015, Sec. VI; the convention of within_effects)."""
    dummies = pd.get_dummies(d[["employee_id", "wave"]].astype(str)).to_numpy(float)

    def resid(v):
        return v - dummies @ np.linalg.lstsq(dummies, v, rcond=None)[0]

    xt = resid(d["x"].to_numpy())
    e = resid(d["csat"].to_numpy() - estimate * d["x"].to_numpy())
    g = pd.factorize(groups)[0]
    meat = (np.bincount(g, weights=xt * e) ** 2).sum()
    n_g = g.max() + 1
    return np.sqrt(meat) / (xt @ xt) * np.sqrt(n_g / (n_g - 1))


def test_clustered_se_is_the_fixed_effects_arellano_se():
    p = _panel(n=150, seed=4)
    table, fit = sensitivity_within(p, y="csat", x="esat")
    d = _fe_reference(p)
    n_g = d["employee_id"].nunique()
    assert fit.se == pytest.approx(_arellano_se(d, fit.estimate, d["employee_id"]), rel=1e-8)
    assert fit.cluster == "employee_id" and fit.n_clusters == n_g and fit.dof_inference == n_g - 1


def test_team_clustering_matches_the_headline_exactly():
    # the report's headline clusters by team: the sensitivity's estimate, SE, interval and
    # RV_{q,alpha} must belong to exactly that interval (within_effects, linearmodels)
    from cxex_lab.models import within_effects

    p = _panel(n=240, seed=6)
    p["team_id"] = "T" + (p["employee_id"] % 24).astype(str)
    fe = within_effects(p, "employee_id", "wave", y="csat", x="esat", lags=1, cluster="team_id").table.iloc[0]
    table, fit = sensitivity_within(p, y="csat", x="esat", cluster="team_id")
    assert fit.estimate == pytest.approx(fe["estimate"], rel=1e-10)
    assert fit.se == pytest.approx(fe["se"], rel=1e-8)
    assert table.iloc[0]["ci_low"] == pytest.approx(fe["ci_low"], rel=1e-8)
    assert table.iloc[0]["p"] == pytest.approx(fe["p"], rel=1e-6)
    assert fit.cluster == "team_id" and fit.n_clusters == 24 and fit.dof_inference == 23
    d = _fe_reference(p)
    assert fit.se == pytest.approx(_arellano_se(d, fit.estimate, d["team_id"]), rel=1e-8)
    # RV_{q,alpha} uses that SE: the closed form with se_ratio and G - 1 df
    assert fit.rv_qa == pytest.approx(robustness_value(fit.t_classical, fit.dof, alpha=0.05, se_ratio=fit.se_ratio,
                                                       dof_inference=23))
    assert any("Only 24 clusters (team_id)" in n for n in fit.notes)


def test_within_cluster_column_problems():
    p = _panel(n=60, seed=2, unbalanced=False)
    p["team_id"] = np.where(p["employee_id"] < 30, "A", "B")
    with pytest.raises(ValueError, match="column 'team' not found"):
        sensitivity_within(p, y="csat", x="esat", cluster="team")
    q = p.assign(team_id=p["team_id"].where(p.index % 50 != 7))
    with pytest.raises(ValueError, match="no value in the cluster column 'team_id'"):
        sensitivity_within(q, y="csat", x="esat", cluster="team_id")
    with pytest.raises(ValueError, match="clustering needs at least 2"):
        sensitivity_within(p.assign(team_id="A"), y="csat", x="esat", cluster="team_id")


def test_adjusted_grid_is_the_bias_formula_over_a_grid():
    p = _panel(seed=1)
    _, fit = sensitivity_within(p, y="csat", x="esat", cluster="site_id")
    g = adjusted_grid(fit, [0.0, 0.05, 0.2], [0.0, 0.1, 0.3])
    assert len(g) == 9
    for r in g.itertuples(index=False):
        ref = _adjusted(fit.estimate, fit.se_classical, fit.dof, r.r2dz_x, r.r2yz_dx, 0.05, se_ratio=fit.se_ratio,
                        dof_inference=fit.dof_inference)
        assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx((ref[0], ref[3], ref[4]))
    at_rv = adjusted_grid(fit, [fit.rv_q], [fit.rv_q]).iloc[0]
    assert at_rv["estimate"] == pytest.approx(0.0, abs=1e-12)  # the robustness value brings it to zero
    default = adjusted_grid(fit)
    assert default["r2dz_x"].max() >= 0.5 and default["r2dz_x"].nunique() == default["r2yz_dx"].nunique()
    with pytest.raises(ValueError, match="partial R2 values"):
        adjusted_grid(fit, [1.0], [0.1])


def test_sensitivity_takes_a_given_standard_error():
    d = _confounded(n=500, seed=2)
    fit = smf.ols("cx ~ ex + tenure", data=d).fit()
    table, f = sensitivity(fit, "ex", se=2 * fit.bse["ex"])
    assert f.se == pytest.approx(2 * fit.bse["ex"]) and f.se_ratio == pytest.approx(2.0)
    assert f.rv_q == pytest.approx(robustness_value(fit.tvalues["ex"], fit.df_resid))  # point statistics unchanged
    assert f.rv_qa < robustness_value(fit.tvalues["ex"], fit.df_resid, alpha=0.05)
    with pytest.raises(ValueError, match="se must be a positive number"):
        sensitivity(fit, "ex", se=0.0)


def test_within_benchmarks_are_stable_traits_and_site_and_never_nan():
    p = _panel(seed=1)
    table, fit = sensitivity_within(p, y="csat", x="esat", kd=(0.1, 0.25, 0.5, 1, 2))
    assert set(fit.benchmarks) == {"stable traits", "site"}
    bounds = table[table["benchmark"].notna()]
    assert not bounds[["estimate", "se", "ci_low", "ci_high", "r2dz_x", "r2yz_dx"]].isna().any().any()
    # site is stable: given the employee mean it explains none of the within variation of EX,
    # so the bound leaves the estimate where it is, whatever the multiplier
    site = fit.benchmarks["site"]
    assert site["r2dxj_x"] == 0.0 and math.isinf(site["kd_max"]) and math.isinf(site["k_explain_away"])
    np.testing.assert_allclose(bounds.loc[bounds.benchmark == "site", "estimate"], fit.estimate, rtol=1e-12)
    # the stable-traits benchmark's partial R2 with the treatment is the share of the
    # (site- and wave-adjusted) variation of lagged EX that is stable between employees:
    # here the traits (var 1) and the within noise (var 1) are about equal
    tr = fit.benchmarks["stable traits"]
    assert 0.3 < tr["r2dxj_x"] < 0.7
    assert tr["kd_max"] == pytest.approx((1 - tr["r2dxj_x"]) / tr["r2dxj_x"])
    kept = set(bounds.loc[bounds.benchmark == "stable traits", "kd"])
    assert kept == {k for k in (0.1, 0.25, 0.5, 1, 2) if k < tr["kd_max"]}
    if len(kept) < 5:
        assert any("cannot exist" in n for n in fit.notes)
    # the reported estimate recovers the simulated lagged effect
    assert table.iloc[0]["ci_low"] < 0.3 < table.iloc[0]["ci_high"]


def test_within_sensitivity_on_the_simulated_headline():
    # The report's pipeline: simulated study -> employee x wave linked panel -> the headline.
    from cxex_lab.linkage import link
    from cxex_lab.simulate import simulate_study

    study = simulate_study(n_sites=6, n_employees=300, n_waves=4, seed=3, interactions_per_wave=20.0)
    panel = link(study, level="employee", period="wave", ex_lag=0, min_group_size=5)
    table, fit = sensitivity_within(panel, y="csat", x="esat", period="period")
    assert table.iloc[0]["term"] == "esat(t-1)"
    assert fit.estimate > 0  # latent EX -> CX cross-lag 0.25, attenuated on the survey scales
    assert 0 < fit.benchmarks["stable traits"]["r2dxj_x"] < 1
    assert fit.benchmarks["site"]["r2dxj_x"] == 0.0
    assert not table.loc[table.benchmark.notna(), ["estimate", "r2dz_x", "r2yz_dx"]].isna().any().any()


def test_sensitivity_bad_input_messages():
    d = _confounded(n=200)
    with pytest.raises(ValueError, match="benchmark covariate 'site' is not a regressor"):
        sensitivity(smf.ols("cx ~ ex + tenure", data=d).fit(), "ex", benchmark_covariates={"site": ["site"]})
    fit = smf.ols("cx ~ ex + tenure", data=d).fit()
    with pytest.raises(ValueError, match="treatment 'engagement' is not a regressor"):
        sensitivity(fit, "engagement")
    with pytest.raises(ValueError, match="benchmark covariate 'site' is not a regressor"):
        sensitivity(fit, "ex", benchmark_covariates=["site"])
    with pytest.raises(ValueError, match="expected a fitted statsmodels OLS results object"):
        sensitivity(d, "ex")
    with pytest.raises(ValueError, match="degrees of freedom must be > 1"):
        partial_r2(2.0, 0)
    with pytest.raises(ValueError, match="use a smaller kd"):
        benchmark_bounds(0.4, 0.1, kd=3)


@pytest.mark.parametrize(
    "mutate, kwargs, message",
    [
        (lambda p: p, {"x": "enps"}, "column 'enps' not found"),
        (lambda p: p.assign(wave=p["wave"] + 0.5), {}, "period column 'wave' must hold whole numbers"),
        (lambda p: pd.concat([p, p.head(3)]), {}, "3 rows repeat a \\(employee_id, wave\\) pair"),
        (lambda p: p.assign(site_id=np.where(p["wave"] == 2, "S0", p["site_id"])), {}, "site column 'site_id' changes within"),
        (lambda p: p.assign(esat=p.groupby("employee_id")["esat"].transform("mean")), {}, "does not vary within employees"),
        (lambda p: p.head(6), {}, "need at least 3 employees"),
        (lambda p: p, {"lag": -1}, "lag must be an integer >= 0"),
    ],
)
def test_within_bad_input_messages(mutate, kwargs, message):
    p = mutate(_panel(n=60, seed=2, unbalanced=False))
    with pytest.raises(ValueError, match=message):
        sensitivity_within(p, **({"y": "csat", "x": "esat"} | kwargs))
