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
    li = study.latent["interactions"].sort_values(["employee_id", "started_at"]).copy()
    li["dev"] = li["cx_latent"] - li["cx_level"]
    li["dev_prev"] = li.groupby("employee_id")["dev"].shift(1)
    return li.dropna(subset=["dev_prev"])


_SPILL = "dev ~ dev_prev + dev_prev:I(empowerment - 3) + dev_prev:I(cx_insight_access - 3)"


@pytest.mark.parametrize("insight_spillover", [DEFAULT_PARAMS["insight_spillover"], -0.1, 0.0])
def test_spillover_recovered_and_shrinks_with_empowerment_and_insight(insight_spillover):
    s = simulate_study(n_sites=4, n_employees=400, n_waves=2, seed=9, latent=True, insight_spillover=insight_spillover)
    li = _spill_fit(s)
    # deviation also contains the interaction's own operational effect, independent of the past
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
