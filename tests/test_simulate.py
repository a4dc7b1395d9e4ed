"""The simulator does what it claims: stated parameters are recoverable, zeroed
paths vanish, seeds reproduce. These tests check the oracle itself, using only
the latent (fully observed) tables it can return and plain OLS from statsmodels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from cxex_lab.simulate import DEFAULT_PARAMS, TOUCHPOINTS, derive_truth, simulate_panel, simulate_study


def _within_lagged(ew: pd.DataFrame) -> pd.DataFrame:
    ew = ew.sort_values(["employee_id", "wave"]).copy()
    g = ew.groupby("employee_id")
    for c in ("ex_within", "cx_within"):
        ew[f"{c}_lag"] = g[c].shift(1)
    return ew.dropna(subset=["ex_within_lag"])


def _covers(fit, term: str, truth: float, k: float = 4.0) -> bool:
    return abs(fit.params[term] - truth) < k * fit.bse[term]


def test_same_seed_same_tables_and_different_seed_differs():
    a = simulate_study(n_sites=2, n_employees=30, n_waves=3, seed=5)
    b = simulate_study(n_sites=2, n_employees=30, n_waves=3, seed=5)
    c = simulate_study(n_sites=2, n_employees=30, n_waves=3, seed=6)
    for name in a.tables():
        pd.testing.assert_frame_equal(a.tables()[name], b.tables()[name])
    assert not a.cx_responses["csat"].equals(c.cx_responses["csat"])
    assert a.truth == b.truth


def test_default_study_has_realistic_contact_centre_size():
    s = simulate_study(seed=3)
    assert len(s.employees) == 400
    assert s.employees["site_id"].nunique() == 10
    assert 90_000 < len(s.interactions) < 120_000
    assert 17_000 < len(s.cx_responses) < 26_000
    assert set(s.ex_responses["wave"]) == set(range(1, 7))
    # scales stay inside the contract
    assert s.cx_responses["nps"].between(0, 10).all() and s.cx_responses["csat"].between(1, 5).all()
    assert s.cx_responses["ces"].between(1, 7).all() and s.ex_responses["ees"].between(1, 7).all()


def test_touchpoint_weights_recovered_from_latent_ex(big_panel_study):
    ew = big_panel_study.latent["employee_waves"]
    ew = ew[ew["active"]].merge(big_panel_study.employees[["employee_id", "site_id"]], on="employee_id")
    rhs = " + ".join([f"tp_{t}" for t in TOUCHPOINTS] + ["cx_insight_access", "empowerment"])
    # Team climates and site effects are drawn once per team/site: their chance
    # correlation is sampling error at site level, so cluster by site.
    fit = smf.ols(f"ex ~ {rhs}", data=ew).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(ew["site_id"])[0]})
    truth = big_panel_study.truth["derived"]["drivers"]
    for term, beta in truth.items():
        assert _covers(fit, term, beta), (term, fit.params[term], beta)
    assert _covers(fit, "cx_insight_access", DEFAULT_PARAMS["insight_to_ex"])
    assert _covers(fit, "empowerment", 0.0)
    # unequal weights, several exactly zero
    assert sum(v == 0 for v in truth.values()) >= 2 and len(set(truth.values())) >= 4


def test_within_lags_are_exactly_the_stated_var(big_panel_study):
    ew = _within_lagged(big_panel_study.latent["employee_waves"])
    fx = smf.ols("ex_within ~ ex_within_lag + cx_within_lag", data=ew).fit()
    fy = smf.ols("cx_within ~ ex_within_lag + cx_within_lag", data=ew).fit()
    lags = big_panel_study.truth["derived"]["within_lags"]
    assert _covers(fx, "ex_within_lag", lags["ex->ex"])
    assert _covers(fx, "cx_within_lag", lags["cx->ex"])
    assert _covers(fy, "ex_within_lag", lags["ex->cx"])
    assert _covers(fy, "cx_within_lag", lags["cx->cx"])


def test_between_unit_confounding_makes_naive_correlation_too_large(big_panel_study):
    ew = big_panel_study.latent["employee_waves"]
    between = ew.groupby("employee_id")[["ex_between", "cx_between"]].first()
    truth = big_panel_study.truth["derived"]["between"]["corr_ri"]
    assert abs(between.corr().iloc[0, 1] - truth) < 0.05
    assert truth > 0.5


def test_mediation_paths_recovered_when_confounding_is_off():
    params = dict(site_sd=0, ri_corr=0, ar_ex=0, ar_cx=0, ex_to_cx=0, cx_to_ex=0)
    panel = simulate_panel(4000, 3, seed=2, **params)
    truth = derive_truth(params)["derived"]["mediation"]
    for m in ("fcr", "aht", "transfer"):
        fa = smf.ols(f"{m} ~ ex", data=panel).fit()
        assert _covers(fa, "ex", truth["a"][m])
    fb = smf.ols("cx ~ ex + fcr + aht + transfer", data=panel).fit()
    assert _covers(fb, "ex", truth["direct"])
    for m in ("fcr", "aht", "transfer"):
        assert _covers(fb, m, truth["b"][m])
    assert truth["indirect"]["fcr"] == pytest.approx(truth["a"]["fcr"] * truth["b"]["fcr"])
    assert truth["total"] == pytest.approx(truth["direct"] + truth["indirect_total"])


@pytest.mark.parametrize(
    "params, check",
    [
        ({"ex_to_cx": 0.0}, "ex->cx"),
        ({"cx_to_ex": 0.0}, "cx->ex"),
    ],
)
def test_zero_lag_parameter_removes_the_path(params, check):
    s = simulate_study(n_sites=10, n_employees=3000, n_waves=4, seed=8, latent=True, interactions_per_wave=1.0, **params)
    ew = _within_lagged(s.latent["employee_waves"])
    target, source = {"ex->cx": ("cx_within", "ex_within_lag"), "cx->ex": ("ex_within", "cx_within_lag")}[check]
    fit = smf.ols(f"{target} ~ ex_within_lag + cx_within_lag", data=ew).fit()
    assert abs(fit.params[source]) < 3.5 * fit.bse[source]


def test_zero_touchpoint_weight_removes_the_path():
    weights = {t: 0.0 for t in TOUCHPOINTS}
    s = simulate_study(n_sites=10, n_employees=2000, n_waves=3, seed=4, latent=True, interactions_per_wave=1.0, tp_weights=weights)
    ew = s.latent["employee_waves"].merge(s.employees[["employee_id", "team_id"]], on="employee_id")
    # team fixed effects absorb the chance correlation of team climates with site effects
    fit = smf.ols("ex ~ tp_daily_work + tp_coaching + C(team_id)", data=ew).fit()
    assert abs(fit.params["tp_coaching"]) < 3.5 * fit.bse["tp_coaching"]
    assert abs(fit.params["tp_daily_work"]) < 3.5 * fit.bse["tp_daily_work"]


def _spill_fit(study):
    """Consecutive pairs of the agent: ``dev`` = latent CX minus its level and day state;
    ``dev_prev`` = the previous interaction's dev times the decay factor of the gap (1 without decay)."""
    li = study.latent["interactions"].sort_values(["employee_id", "started_at"]).copy()
    li["dev"] = li["cx_latent"] - li["cx_level"] - li["day_state"]
    li["dev_prev"] = li.groupby("employee_id")["dev"].shift(1) * li["spillover_decay"]
    return li.dropna(subset=["dev_prev"])


_SPILL = "dev ~ dev_prev + dev_prev:I(empowerment - 3) + dev_prev:I(cx_insight_access - 3)"


@pytest.mark.parametrize("insight_spillover", [DEFAULT_PARAMS["insight_spillover"], -0.1, 0.0])
def test_spillover_recovered_and_shrinks_with_empowerment_and_insight(insight_spillover):
    s = simulate_study(n_sites=4, n_employees=400, n_waves=2, seed=9, latent=True, insight_spillover=insight_spillover)
    li = _spill_fit(s)
    # deviation also contains the interaction's own operational effect, independent of the past;
    # the regressor carries the gap's decay factor, so the coefficients are the structural lambda
    fit = smf.ols(_SPILL, data=li).fit()
    assert _covers(fit, "dev_prev", DEFAULT_PARAMS["spillover"])
    assert _covers(fit, "dev_prev:I(empowerment - 3)", DEFAULT_PARAMS["spillover_empowerment"])
    assert _covers(fit, "dev_prev:I(cx_insight_access - 3)", insight_spillover)
    if insight_spillover:
        assert fit.params["dev_prev:I(cx_insight_access - 3)"] < -2 * fit.bse["dev_prev:I(cx_insight_access - 3)"]
    truth = s.truth["derived"]
    assert truth["spillover_by_empowerment"]["1"] > truth["spillover_by_empowerment"]["3"] > truth["spillover_by_empowerment"]["5"]
    grid = truth["spillover_by_empowerment_insight"]
    assert grid["3"]["3"] == pytest.approx(DEFAULT_PARAMS["spillover"])
    assert grid["2"]["5"] - grid["2"]["4"] == pytest.approx(insight_spillover)
    # a carry-over fitted without moderators targets the population average
    plain = smf.ols("dev ~ dev_prev", data=li).fit()
    assert _covers(plain, "dev_prev", truth["spillover_average"])


def test_zero_spillover_removes_the_vicious_circle():
    s = simulate_study(
        n_sites=4, n_employees=200, n_waves=2, seed=9, latent=True,
        spillover=0.0, spillover_empowerment=0.0, insight_spillover=0.0,
    )
    fit = smf.ols("dev ~ dev_prev", data=_spill_fit(s)).fit()
    assert abs(fit.params["dev_prev"]) < 3.5 * fit.bse["dev_prev"]


def _moderated_lags(ew: pd.DataFrame, centre: float) -> pd.DataFrame:
    ew = ew.sort_values(["employee_id", "wave"]).copy()
    g = ew.groupby("employee_id")
    for c in ("ex_within", "cx_within", "cx_insight_access"):
        ew[f"{c}_lag"] = g[c].shift(1)
    ew = ew.dropna(subset=["ex_within_lag"])
    return ew.assign(ins_c=ew["cx_insight_access_lag"] - centre)


@pytest.mark.parametrize("insight_cx_to_ex", [0.0, 0.06])
def test_insight_moderates_the_cx_to_ex_cross_lag(insight_cx_to_ex):
    s = simulate_study(
        n_sites=40, n_employees=16000, n_waves=4, seed=31, latent=True,
        interactions_per_wave=0.1, insight_cx_to_ex=insight_cx_to_ex,
    )
    ins = s.truth["derived"]["insight"]
    ew = _moderated_lags(s.latent["employee_waves"], ins["item_centre"])
    fit = smf.ols("ex_within ~ ex_within_lag + cx_within_lag + cx_within_lag:ins_c", data=ew).fit()
    assert _covers(fit, "cx_within_lag:ins_c", insight_cx_to_ex)
    assert _covers(fit, "cx_within_lag", DEFAULT_PARAMS["cx_to_ex"])
    if insight_cx_to_ex:
        assert fit.params["cx_within_lag:ins_c"] > 5 * fit.bse["cx_within_lag:ins_c"]
    # the population-average cross-lag is cx_to_ex: the RI-CLPM without the interaction targets it
    plain = smf.ols("ex_within ~ ex_within_lag + cx_within_lag", data=ew).fit()
    assert _covers(plain, "cx_within_lag", ins["cx_to_ex_average"])
    # the CX equation keeps ar_cx and ex_to_cx exactly
    fy = smf.ols("cx_within ~ ex_within_lag + cx_within_lag + cx_within_lag:ins_c", data=ew).fit()
    assert _covers(fy, "cx_within_lag", DEFAULT_PARAMS["ar_cx"])
    assert _covers(fy, "ex_within_lag", DEFAULT_PARAMS["ex_to_cx"])
    assert _covers(fy, "cx_within_lag:ins_c", 0.0)
    by = ins["cx_to_ex_by_insight"]
    assert by["5"] - by["4"] == pytest.approx(insight_cx_to_ex)


def test_insight_item_centre_is_its_population_mean(big_panel_study):
    s = big_panel_study
    ew = s.latent["employee_waves"].merge(s.employees[["employee_id", "team_id"]], on="employee_id")
    centre = s.truth["derived"]["insight"]["item_centre"]
    # items differ between teams by their climate: the mean's sampling error is at team level
    for cols in (["cx_insight_access"], [f"tp_{t}" for t in TOUCHPOINTS] + ["empowerment", "cx_insight_access"]):
        team = ew.groupby("team_id")[cols].mean().to_numpy()
        se = team.mean(axis=1).std(ddof=1) / np.sqrt(len(team))
        assert abs(team.mean() - centre) < 4 * se, (cols, team.mean(), centre, se)


@pytest.fixture(scope="module")
def loyalty_study():
    return simulate_study(n_sites=10, n_employees=400, n_waves=4, seed=12, latent=True, interactions_per_wave=120.0)


def test_customer_periods_hold_the_cx_received_in_the_preceding_period(loyalty_study):
    s = loyalty_study
    li = s.latent["interactions"].merge(s.interactions[["interaction_id", "customer_id"]], on="interaction_id")
    # recompute from the interactions: period of the outcome = period of the CX + 1
    rec = (
        li.assign(y=li["cx_latent"] - DEFAULT_PARAMS["mu_cx"], period=li["wave"] + 1)
        .groupby(["customer_id", "period"])["y"].agg(["mean", "size"]).reset_index()
    )
    rec = rec[rec["period"] <= s.truth["study"]["n_waves"]]
    cp = s.latent["customer_periods"]
    assert cp[["customer_id", "period"]].equals(s.customer_outcomes[["customer_id", "period"]])
    m = cp.merge(rec, on=["customer_id", "period"], how="outer", indicator=True)
    assert (m["_merge"] == "both").all()
    assert np.allclose(m["ybar_prev"], m["mean"]) and (m["n_prev"] == m["size"]).all()
    assert cp["period"].min() == 2


def test_loyalty_depends_on_prior_period_cx_with_stated_coefficients(loyalty_study):
    s = loyalty_study
    df = s.customer_outcomes.merge(s.latent["customer_periods"], on=["customer_id", "period"])
    assert len(df) > 50_000
    truth = s.truth["derived"]["loyalty"]
    groups = pd.factorize(df["customer_id"])[0]  # the stable revenue trait repeats within customer
    rev = smf.ols("revenue ~ ybar_prev", data=df).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert _covers(rev, "ybar_prev", truth["revenue_per_cx"], k=3)
    ret = smf.logit("retained ~ ybar_prev", data=df.assign(retained=df["retained"].astype(int))).fit(disp=0)
    assert _covers(ret, "ybar_prev", truth["retention_logit_per_cx"], k=3)
    assert _covers(ret, "Intercept", np.log(DEFAULT_PARAMS["retention_base"] / (1 - DEFAULT_PARAMS["retention_base"])), k=3)
    # the stable customer trait: revenue residuals of the same customer correlate by
    # customer_revenue_sd^2 / (customer_revenue_sd^2 + revenue_sd^2)
    r = df.assign(e=rev.resid).pivot_table(index="customer_id", columns="period", values="e")
    icc = r[2].corr(r[3])
    sd_c, sd_e = DEFAULT_PARAMS["customer_revenue_sd"], DEFAULT_PARAMS["revenue_sd"]
    assert abs(icc - sd_c**2 / (sd_c**2 + sd_e**2)) < 0.03


def test_nonresponse_is_not_completely_at_random(big_panel_study):
    s = big_panel_study
    ew = s.latent["employee_waves"]
    ew = ew[ew["active"]].merge(s.ex_responses[["employee_id", "wave"]].assign(responded=True), how="left", on=["employee_id", "wave"])
    ew["responded"] = ew["responded"].fillna(False).astype(bool)
    means = ew.groupby("responded")["ex"].mean()
    assert means[True] - means[False] > 0.1  # unhappy employees answer less
    li = s.latent["interactions"]
    z = (li["cx_latent"] - li["cx_latent"].mean()).abs()
    assert z[li["responded"]].mean() > z[~li["responded"]].mean()  # extremes answer more


def test_attrition_depends_on_ex_and_can_be_switched_off():
    s = simulate_study(n_sites=10, n_employees=3000, n_waves=4, seed=13, latent=True, interactions_per_wave=1.0)
    ew = s.latent["employee_waves"].query("wave == 1")
    left_early = ew["employee_id"].isin(s.employees.loc[s.employees["exit_date"] < pd.Timestamp(s.truth["study"]["wave_open"][1]), "employee_id"])
    assert ew.loc[left_early, "ex"].mean() < ew.loc[~left_early, "ex"].mean() - 0.1
    none = simulate_study(n_sites=2, n_employees=100, n_waves=3, seed=13, attrition_rate=0.0)
    assert none.employees["exit_date"].isna().all()


def test_no_activity_after_exit():
    s = simulate_study(n_sites=3, n_employees=300, n_waves=4, seed=14, attrition_rate=0.2)
    exits = s.employees.set_index("employee_id")["exit_date"]
    assert (s.interactions["started_at"] <= s.interactions["employee_id"].map(exits).fillna(pd.Timestamp("2200-01-01"))).all()
    assert (s.ex_responses["responded_at"] <= s.ex_responses["employee_id"].map(exits).fillna(pd.Timestamp("2200-01-01"))).all()


def test_truth_is_json_serialisable_and_documented():
    import json

    truth = derive_truth({"ex_to_cx": 0.3})
    back = json.loads(json.dumps(truth))
    assert back["derived"]["within_lags"]["ex->cx"] == 0.3
    assert set(truth["derivation"]) <= set(truth["derived"]) | {"scales"}


def test_bad_parameters_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="unknown parameter.*'ex_to_xc'"):
        simulate_study(n_employees=10, ex_to_xc=0.3)
    with pytest.raises(ValueError, match="explosive"):
        simulate_study(n_employees=10, ar_ex=0.9, ar_cx=0.9, ex_to_cx=0.5, cx_to_ex=0.5)
    with pytest.raises(ValueError, match="tp_weights.*unknown key"):
        simulate_study(n_employees=10, tp_weights={"lunch": 1.0})


def test_simulate_panel_missing_cells():
    panel = simulate_panel(500, 5, seed=1, missing=0.15)
    share = panel["ex"].isna().mean()
    assert 0.12 < share < 0.18
    assert np.array_equal(panel["ex"].isna(), panel["cx"].isna())


# --------------------------------------------------------------------------- common-method halo
_ITEMS = [f"tp_{t}" for t in TOUCHPOINTS] + ["empowerment", "cx_insight_access"]


def _reported_and_causal(study):
    ew = study.latent["employee_waves"]
    return study.ex_responses.merge(ew, on=["employee_id", "wave"], suffixes=("", "_causal"))


def test_without_halo_reported_items_are_the_causal_items():
    s = simulate_study(n_sites=3, n_employees=120, n_waves=3, seed=21, latent=True, cm_halo=0.0)
    m = _reported_and_causal(s)
    assert len(m) == len(s.ex_responses)
    for c in _ITEMS:
        assert (m[c] == m[f"{c}_causal"]).all(), c


def test_halo_changes_only_the_reported_answers():
    kw = dict(n_sites=3, n_employees=120, n_waves=3, seed=21, latent=True)
    off, on = simulate_study(cm_halo=0.0, **kw), simulate_study(cm_halo=0.6, **kw)
    for name in ("employees", "interactions", "cx_responses", "customer_outcomes"):
        pd.testing.assert_frame_equal(off.tables()[name], on.tables()[name])
    pd.testing.assert_frame_equal(off.latent["employee_waves"], on.latent["employee_waves"])
    same = ["employee_id", "wave", "responded_at", "enps", "ees"]
    pd.testing.assert_frame_equal(off.ex_responses[same], on.ex_responses[same])
    assert not off.ex_responses["esat"].equals(on.ex_responses["esat"])
    assert sum(not off.ex_responses[c].equals(on.ex_responses[c]) for c in _ITEMS) == len(_ITEMS)


def test_halo_moves_reported_items_with_the_method_factor(big_panel_study):
    m = _reported_and_causal(big_panel_study)
    shift = sum(m[c] - m[f"{c}_causal"] for c in _ITEMS) / len(_ITEMS)
    # reported = cut(z + cm_halo*h): the shift rises with h, and is zero on average at h = 0
    fit = smf.ols("shift ~ cm_factor", data=m.assign(shift=shift)).fit()
    assert fit.params["cm_factor"] > 10 * fit.bse["cm_factor"]
    assert abs(fit.params["Intercept"]) < 0.05


def test_halo_inflates_esat_correlation_with_true_zero_touchpoints_but_not_latent_drivers():
    kw = dict(n_sites=40, n_employees=4000, n_waves=2, seed=22, latent=True, interactions_per_wave=0.5)
    off = simulate_study(cm_halo=0.0, **kw)
    on = simulate_study(**kw)  # default halo
    assert DEFAULT_PARAMS["cm_halo"] > 0
    zero = [f"tp_{t}" for t, b in DEFAULT_PARAMS["tp_weights"].items() if b == 0]

    def corr(s):
        ex = s.ex_responses
        return float(np.mean([ex["esat"].corr(ex[c]) for c in zero]))

    # with n ~ 7,000 answers the sampling SE of a correlation is ~0.012
    assert corr(on) - corr(off) > 0.05
    # the causal items and latent EX are untouched: the structural weights are still recovered
    ew = on.latent["employee_waves"]
    ew = ew[ew["active"]].merge(on.employees[["employee_id", "team_id"]], on="employee_id")
    fit = smf.ols("ex ~ " + " + ".join(_ITEMS) + " + C(team_id)", data=ew).fit()
    for t, beta in DEFAULT_PARAMS["tp_weights"].items():
        assert _covers(fit, f"tp_{t}", beta), (t, fit.params[f"tp_{t}"], beta)


# --------------------------------------------------------------------------- fixed site effects
def test_fixed_site_effects_are_shared_and_everything_else_is_redrawn():
    u = [0.5, -0.3, 0.0, 0.2]
    kw = dict(n_sites=4, n_employees=400, n_waves=3, latent=True, interactions_per_wave=2.0, site_effects=u)
    a, b = simulate_study(seed=1, **kw), simulate_study(seed=2, **kw)
    for s in (a, b):
        assert list(s.truth["study"]["site_effects"].values()) == u
        assert s.truth["study"]["site_effects_fixed"] is True
    assert not a.latent["employee_waves"]["ex"].equals(b.latent["employee_waves"]["ex"])
    # the site effect is recoverable from the latent between parts: A_i = site_ex*u_s + a_i + Tbar_i
    # (a_i has sd ri_sd_ex, Tbar_i is small): site means of ex_between sit near u_s in both studies
    for s in (a, b):
        ew = s.latent["employee_waves"].query("wave == 1").merge(s.employees[["employee_id", "site_id"]], on="employee_id")
        means = ew.groupby("site_id")["ex_between"].mean().to_numpy()
        se = DEFAULT_PARAMS["ri_sd_ex"] / np.sqrt(100)
        assert np.all(np.abs(means - np.array(u)) < 4 * se + 0.1)


def test_fixed_site_effects_leave_the_rest_of_the_stream_unchanged():
    kw = dict(n_sites=3, n_employees=60, n_waves=3, seed=5, latent=True)
    drawn = simulate_study(**kw)
    u = list(drawn.truth["study"]["site_effects"].values())
    assert drawn.truth["study"]["site_effects_fixed"] is False
    fixed = simulate_study(site_effects=u, **kw)
    for name, df in drawn.tables().items():
        pd.testing.assert_frame_equal(df, fixed.tables()[name])
    other = simulate_study(site_effects=[x + 1.0 for x in u], **kw)
    # shifting every u_s by 1 shifts latent EX by site_ex*1 and nothing else in the EX draw stream
    diff = other.latent["employee_waves"]["ex"] - drawn.latent["employee_waves"]["ex"]
    assert np.allclose(diff, DEFAULT_PARAMS["site_ex"])


def test_site_effects_of_the_wrong_length_are_rejected():
    with pytest.raises(ValueError, match="site_effects has 2 value.*n_sites=3"):
        simulate_study(n_sites=3, n_employees=30, n_waves=2, site_effects=[0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        simulate_study(n_sites=2, n_employees=30, n_waves=2, site_effects=[0.1, float("nan")])


def test_saved_parquet_timestamps_are_microseconds(tmp_path):
    import pyarrow.parquet as pq

    s = simulate_study(n_sites=2, n_employees=20, n_waves=3, seed=1, latent=True)
    s.save(tmp_path, latent=True)
    stamps = []
    for f in sorted(tmp_path.rglob("*.parquet")):
        for field in pq.read_schema(f):
            if str(field.type).startswith("timestamp"):
                stamps.append((f.name, field.name, field.type.unit))
    # hire/exit dates, answer times, interaction starts: all written as INT64 TIMESTAMP(MICROS)
    assert len(stamps) >= 6 and {u for *_, u in stamps} == {"us"}, stamps


# --------------------------------------------------------------------------- table subsets, timing
def test_interactions_fall_in_their_period_and_ids_are_unique():
    s = simulate_study(n_sites=3, n_employees=60, n_waves=3, seed=2, latent=True)
    li = s.latent["interactions"]
    opens = pd.to_datetime(s.truth["study"]["wave_open"]).as_unit("us")
    lo = opens[li["wave"] - 1]
    days = DEFAULT_PARAMS["wave_days"]
    assert (li["started_at"].to_numpy() >= lo.to_numpy()).all()
    assert (li["started_at"].to_numpy() < (lo + pd.Timedelta(days=days)).to_numpy()).all()
    assert s.interactions["interaction_id"].is_unique and len(s.interactions) == s.truth["study"]["n_interactions"]
    assert (s.cx_responses["interaction_id"].str.startswith("I") | s.cx_responses["interaction_id"].str.startswith("X")).all()
    # a CX answer comes after its interaction
    m = s.cx_responses.merge(s.interactions, on="interaction_id")
    assert (m["responded_at"] > m["started_at"]).all()


def test_table_subsets_give_the_same_values():
    kw = dict(n_sites=3, n_employees=90, n_waves=3, seed=4)
    full = simulate_study(**kw)
    panel = simulate_study(tables=["employees", "ex_responses"], **kw)
    no_loyalty = simulate_study(tables=["employees", "ex_responses", "interactions", "cx_responses"], **kw)
    for name in ("employees", "ex_responses"):
        pd.testing.assert_frame_equal(full.tables()[name], panel.tables()[name])
    for name in ("interactions", "cx_responses"):
        pd.testing.assert_frame_equal(full.tables()[name], no_loyalty.tables()[name])
        assert len(panel.tables()[name]) == 0
        assert list(panel.tables()[name].columns) == list(full.tables()[name].columns)
    assert len(no_loyalty.customer_outcomes) == 0
    assert panel.truth["study"]["n_interactions"] is None
    with pytest.raises(ValueError, match="unknown table.*'interaction'"):
        simulate_study(tables=["interaction"], **kw)


# --------------------------------------------------------------------------- chunked writer
def test_chunked_writer_gives_the_in_memory_study(tmp_path):
    from cxex_lab.io import load_study
    from cxex_lab.simulate import write_study

    kw = dict(n_sites=4, n_employees=80, n_waves=3, seed=17, orphan_responses=5, site_effects=[0.2, -0.1, 0.0, 0.3])
    write_study(tmp_path / "chunked", latent=True, **kw)
    simulate_study(latent=True, **kw).save(tmp_path / "memory", latent=True)
    a, b = load_study(tmp_path / "chunked"), load_study(tmp_path / "memory")
    for name in a.tables():
        pd.testing.assert_frame_equal(a.tables()[name], b.tables()[name])
    assert set(a.latent) == {"employee_waves", "interactions", "customer_periods"}
    for name in a.latent:
        pd.testing.assert_frame_equal(a.latent[name], b.latent[name])
    assert a.truth == b.truth
    # one row group per site in the interactions file
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "chunked" / "interactions.parquet").num_row_groups == 4


def test_chunked_study_reads_in_duckdb_and_customers_span_sites(tmp_path):
    import duckdb

    from cxex_lab.cli import main

    assert main(["simulate", "--out", str(tmp_path), "--sites", "3", "--employees", "60", "--waves", "3", "--chunked", "--seed", "3"]) == 0
    con = duckdb.connect()
    n_int, n_cust_sites = con.execute(
        f"""select count(*), max(n_sites) from (
              select customer_id, count(distinct e.site_id) as n_sites
              from read_parquet('{tmp_path}/interactions.parquet') i
              join read_parquet('{tmp_path}/employees.parquet') e using (employee_id)
              group by customer_id) t"""
    ).fetchone()
    assert n_cust_sites == 3  # a customer is served by agents of several sites
    rows = con.execute(f"select count(*) from read_parquet('{tmp_path}/interactions.parquet')").fetchone()[0]
    assert rows == json.loads((tmp_path / "truth.json").read_text())["study"]["n_interactions"]
    # an outcome row of period p exists exactly when the customer called in p-1
    bad = con.execute(
        f"""with calls as (
              select distinct customer_id, w as period from (
                select customer_id, 1 + floor(date_diff('second', timestamp '2025-01-06', started_at) / (91*86400.0)) as w
                from read_parquet('{tmp_path}/interactions.parquet')))
            select count(*) from read_parquet('{tmp_path}/customer_outcomes.parquet') o
            left join calls c on c.customer_id = o.customer_id and c.period = o.period - 1
            where c.customer_id is null"""
    ).fetchone()[0]
    assert bad == 0


# --------------------------------------------------------------------------- working days, decay, day state
def _with_days(study) -> pd.DataFrame:
    """Latent interactions with handle time, transfer, calendar day and same-day flag."""
    li = study.latent["interactions"].merge(
        study.interactions[["interaction_id", "handle_seconds", "transferred"]], on="interaction_id"
    )
    li["day"] = li["started_at"].dt.normalize()
    prev_same = li["employee_id"].eq(li["employee_id"].shift()) & li["day"].eq(li["day"].shift())
    return li.assign(same_day=prev_same)


@pytest.fixture(scope="module")
def workday_study():
    # 1,000 agents x 2 quarters: ~90k interactions on ~7,500 agent-days
    return simulate_study(n_sites=10, n_employees=1000, n_waves=2, seed=41, latent=True)


def test_interactions_fall_on_working_days_in_shifts(workday_study):
    s = workday_study
    li = _with_days(s)
    assert (li["started_at"].dt.day_of_week < 5).all()  # Monday-Friday
    lo, hi = DEFAULT_PARAMS["shift_start_hours"]
    first = li.groupby(["employee_id", "day"])["started_at"].min()
    hours = (first - first.dt.normalize()) / pd.Timedelta(hours=1)
    assert hours.between(lo, hi).all() and hours.min() < lo + 0.1 and hours.max() > hi - 0.1
    assert ((li["started_at"] - li["day"]) <= pd.Timedelta(hours=23)).all()
    # a call starts after the previous one of the day has ended (no compression at 12 a day)
    sd = li[li["same_day"]]
    prev_end = li["started_at"].shift() + pd.to_timedelta(li["handle_seconds"].shift(), unit="s")
    assert (sd["started_at"] >= prev_end[li["same_day"]]).all()
    # about calls_per_day calls on a logged day; about interactions_per_wave / calls_per_day days
    per_day = li.groupby(["employee_id", "day"]).size()
    assert len(per_day) == s.truth["study"]["n_agent_days"]
    assert abs(per_day.mean() - DEFAULT_PARAMS["calls_per_day"]) < 0.5
    assert 2.0 < per_day.std() < 5.0  # calls go to the agent's days at random
    days = li.groupby(["employee_id", "wave"])["day"].nunique()
    calls = li.groupby(["employee_id", "wave"]).size()
    planned = np.clip(np.rint(calls / DEFAULT_PARAMS["calls_per_day"]), 1, None)
    stayers = ~days.index.get_level_values(0).isin(s.employees.loc[s.employees["exit_date"].notna(), "employee_id"])
    assert (days[stayers] <= planned[stayers]).all() and (days[stayers] == planned[stayers]).mean() > 0.97
    # the same number of interactions per agent-period as before the schedule existed
    assert abs(calls[stayers].mean() - DEFAULT_PARAMS["interactions_per_wave"]) < 1.0


def test_long_days_are_compressed_into_the_calendar_day():
    s = simulate_study(n_sites=2, n_employees=20, n_waves=1, seed=3, latent=True, interactions_per_wave=5000.0)
    li = _with_days(s)
    per_day = li.groupby(["employee_id", "day"]).size()
    assert per_day.mean() > 70  # more calls than days: 5000 calls on at most 65 working days
    assert ((li["started_at"] - li["day"]) <= pd.Timedelta(hours=23)).all()
    assert (li.loc[li["same_day"], "gap_minutes"] > 0).all()


def test_carry_over_decays_with_the_gap_and_vanishes_overnight(workday_study):
    s = workday_study
    li = _with_days(s)
    gap = li.groupby("employee_id")["started_at"].diff() / pd.Timedelta(minutes=1)
    np.testing.assert_allclose(li["gap_minutes"], gap)
    half = DEFAULT_PARAMS["spillover_halflife_minutes"]
    np.testing.assert_allclose(li["spillover_decay"], 0.5 ** (gap / half))
    g = s.truth["derived"]["spillover_gap"]
    overnight = li["spillover_decay"].notna() & ~li["same_day"]
    assert li.loc[overnight, "gap_minutes"].min() >= g["overnight_gap_minutes_at_least"]
    assert li.loc[overnight, "spillover_decay"].max() <= g["overnight_decay_at_most"] < 0.01
    # the structural equation: dev_k = own_k + lambda_k * decay_k * dev_{k-1}
    fit = smf.ols("dev ~ dev_prev", data=_spill_fit(s).assign(dev_prev=lambda d: d["dev_prev"] * d["spillover_lambda"])).fit()
    assert _covers(fit, "dev_prev", 1.0)


def test_decay_truth_by_gap_bin_matches_the_realised_pairs(workday_study):
    # truth["derived"]["spillover_gap"] comes from a separate fixed-seed draw of the schedule;
    # the study's own within-day pairs must show the same gap distribution and decay factors
    s = workday_study
    li = _with_days(s)
    g = s.truth["derived"]["spillover_gap"]
    sd = li[li["same_day"]]
    b = np.searchsorted(g["bins_minutes"], sd["gap_minutes"], side="right")
    for i, label in enumerate(g["share_of_within_day_pairs"]):
        at = b == i
        assert abs(at.mean() - g["share_of_within_day_pairs"][label]) < 0.02, label
        if at.sum() >= 1000:
            assert abs(sd.loc[at, "spillover_decay"].mean() - g["mean_decay_by_gap"][label]) < 0.005, label
            assert g["carry_over_by_gap"][label] == pytest.approx(s.truth["derived"]["spillover_average"] * g["mean_decay_by_gap"][label])
    assert g["mean_decay_by_gap"][">= 4 h"] is None  # (almost) no within-day pair is 4 h apart
    assert abs(sd["spillover_decay"].mean() - g["mean_decay_within_day"]) < 0.005
    assert abs(sd["gap_minutes"].median() - g["median_within_day_gap_minutes"]) < 0.5
    # the by-empowerment truths hold at gap 0; within the day they scale with the mean decay
    emp = s.truth["derived"]["spillover_by_empowerment"]
    for e, v in g["by_empowerment_within_day"].items():
        assert v == pytest.approx(emp[e] * g["mean_decay_within_day"])
    assert 0.8 < g["mean_decay_within_day"] < 0.9 and g["halflife_minutes"] == 60.0
    # the study's own realised value: the mean carry-over coefficient of its same-day pairs
    real = s.truth["study"]["spillover_realised"]
    carried = sd["spillover_lambda"] * sd["spillover_decay"]
    assert real["n_within_day_pairs"] == len(sd)
    assert real["carry_over_within_day"] == pytest.approx(carried.mean(), rel=1e-9)
    for i, label in enumerate(real["n_pairs_by_gap"]):
        assert real["n_pairs_by_gap"][label] == int((b == i).sum())
        if (b == i).any():
            assert real["carry_over_by_gap"][label] == pytest.approx(carried[b == i].mean(), rel=1e-9)


def test_without_decay_the_carry_over_runs_by_position():
    kw = dict(n_sites=4, n_employees=400, n_waves=2, seed=9, latent=True)
    none, zero = simulate_study(spillover_halflife_minutes=None, **kw), simulate_study(spillover_halflife_minutes=0, **kw)
    for name, df in none.tables().items():
        pd.testing.assert_frame_equal(df, zero.tables()[name])
    li = none.latent["interactions"]
    assert (li["spillover_decay"].dropna() == 1.0).all()
    fit = smf.ols("dev ~ dev_prev", data=_spill_fit(none)).fit()  # unweighted previous deviation
    assert _covers(fit, "dev_prev", none.truth["derived"]["spillover_average"])
    g = none.truth["derived"]["spillover_gap"]
    assert g["halflife_minutes"] is None and g["mean_decay_within_day"] == 1.0 and g["overnight_decay_at_most"] == 1.0
    # the decay changes the latent CX only: times, handle times, channels, customers are the same
    decayed = simulate_study(**kw)
    cols = ["interaction_id", "employee_id", "customer_id", "started_at", "handle_seconds", "transferred"]
    pd.testing.assert_frame_equal(none.interactions[cols], decayed.interactions[cols])
    assert not none.latent["interactions"]["cx_latent"].equals(decayed.latent["interactions"]["cx_latent"])


def test_day_state_shifts_a_day_together_and_drifts_within_it():
    kw = dict(n_sites=10, n_employees=1000, n_waves=2, seed=42, latent=True)
    off = simulate_study(**kw)
    assert (off.latent["interactions"]["day_state"] == 0).all()
    lvl = simulate_study(day_state_sd=0.5, **kw)
    li = _with_days(lvl)
    # a level: constant within the agent-day, sd day_state_sd across days; nothing else moves
    per_day = li.groupby(["employee_id", "day"])["day_state"]
    assert (per_day.nunique() == 1).all()
    assert abs(per_day.first().std() - 0.5) < 0.02
    pd.testing.assert_frame_equal(off.interactions, lvl.interactions)
    np.testing.assert_allclose(
        lvl.latent["interactions"]["cx_latent"] - off.latent["interactions"]["cx_latent"], li["day_state"]
    )
    # a drift: 0 at the day's first call, Brownian in clock hours (increment variance drift^2 * hours)
    drift = _with_days(simulate_study(day_drift_sd=0.4, day_state_transfer=0.1, **kw))
    first = ~drift["same_day"]
    assert (drift.loc[first, "day_state"] == 0).all()
    inc = drift["day_state"].diff()[drift["same_day"]]
    hours = drift.loc[drift["same_day"], "gap_minutes"] / 60
    assert abs(np.mean(inc**2 / hours) - 0.4**2) < 0.01
    # a bad state raises transfers: P(transfer) = rate - day_state_transfer * state
    fit = smf.ols("tr ~ day_state", data=drift.assign(tr=drift["transferred"].astype(float))).fit()
    assert _covers(fit, "day_state", -0.1)
    assert lvl.truth["derived"]["day_state"]["level_sd"] == 0.5


def test_bad_working_day_parameters_are_rejected():
    for kw, msg in (
        ({"calls_per_day": 0}, "calls_per_day must be > 0"),
        ({"spillover_halflife_minutes": -5}, "spillover_halflife_minutes must be > 0, or None / 0"),
        ({"shift_start_hours": [10, 8]}, "shift_start_hours must satisfy"),
        ({"shift_start_hours": 8}, "shift_start_hours must be two hours"),
        ({"break_prob": 1.5}, "break_prob must be in"),
        ({"day_drift_sd": -0.1}, "day_drift_sd must be >= 0"),
        ({"idle_minutes": "3"}, "'idle_minutes' must be a finite number"),
    ):
        with pytest.raises(ValueError, match=msg):
            simulate_study(n_sites=1, n_employees=5, n_waves=1, **kw)


def test_an_agent_who_leaves_works_the_days_up_to_the_exit():
    s = simulate_study(n_sites=4, n_employees=2000, n_waves=2, seed=15, latent=True, attrition_rate=0.3)
    li, emp = s.latent["interactions"], s.employees.set_index("employee_id")
    opens = pd.to_datetime(s.truth["study"]["wave_open"])
    rows = []
    for eid, ex in emp["exit_date"].dropna().items():
        w = int(np.searchsorted(opens, ex, side="right"))  # the exit's period (1-based)
        days = pd.bdate_range(opens[w - 1], opens[w - 1] + pd.Timedelta(days=DEFAULT_PARAMS["wave_days"] - 1))
        share = (days <= ex.normalize()).mean()
        n = int(((li["employee_id"] == eid) & (li["wave"] == w)).sum())
        rows.append((share, n))
    df = pd.DataFrame(rows, columns=["share", "n"])
    assert len(df) > 300
    # calls in the exit period in proportion to the working days employed (minus the exit
    # day's calls after the exit time: at most one day's worth)
    expected = DEFAULT_PARAMS["interactions_per_wave"] * df["share"]
    ratio = df["n"].sum() / expected.sum()
    assert 0.9 < ratio < 1.02, ratio
    # anyone who worked a quarter of the period has calls in it
    assert (df.loc[df["share"] > 0.25, "n"] > 0).mean() > 0.98
