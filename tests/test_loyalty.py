"""Customer-level loyalty (two-way clustered) and the money translation of the chain.

The synthetic customer-period data are generated here, following the simulator's
loyalty timing of round 2 (``/work/round2/PLAN.md``): the outcome of customer-period
p (retained at the end of p, revenue in p) depends on the mean latent CX the customer
received in the *preceding* period p-1,
``logit P(retained_p) = logit(0.85) + 0.6 * ybar_{c,p-1}`` and
``revenue_p = 100 + 15 * ybar_{c,p-1} + nu_c + N(0, 30)`` with a stable customer trait
``nu_c``; rows are customer-periods p = 2..W whose customer had >= 1 interaction in p-1.
The simulator itself is changed on another branch; its recovery test is added on merge.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from linearmodels.iv import IV2SLS
from scipy.special import expit, logit

from cxex_lab.models.loyalty import LoyaltyFit, MoneyChainFit, _pigeonhole_weights, loyalty, money_chain
from cxex_lab.models.mediation import mediation
from cxex_lab.results import Result

RETENTION_CX, REVENUE_CX = 0.6, 15.0


def simulate_customer_periods(
    n_customers=4000, n_agents=120, n_periods=5, seed=0, *, rate=1.0, agent_sd=0.5, agent_period_sd=0.3,
    interaction_sd=0.8, customer_revenue_sd=40.0, revenue_sd=30.0, agent_shock_sd=0.0, esat_to_cx=None,
    survey_sd=0.0, return_panel=False,
):
    """Customer-period table with the simulator's timing (module docstring).

    Agents have a stable CX level and a period deviation; each customer-period has
    Poisson(rate x heavy-tailed propensity) interactions with random agents. ``cx_prev``
    is the mean CX of the customer's interactions in p-1 (plus ``survey_sd`` noise per
    interaction when it stands for a survey answer); the agent is the one who served most
    of them (ties: the latest). ``agent_shock_sd`` adds an outcome shock per main agent
    (beyond CX), which makes the agent clustering matter.

    With ``esat_to_cx`` the agents' period CX level is driven by their eSat
    (``level = stable + esat_to_cx * esat + ...`` with eSat correlated with the stable
    level) and the employee-period panel (esat, fcr, csat as the mean observed CX of
    the agent's interactions) is returned too.
    """
    rng = np.random.default_rng(seed)
    stable = rng.normal(0, agent_sd, n_agents)
    panel = None
    if esat_to_cx is None:
        level = stable[:, None] + rng.normal(0, agent_period_sd, (n_agents, n_periods))
    else:
        esat = 3.5 + 0.8 * stable[:, None] / agent_sd + rng.normal(0, 0.6, (n_agents, n_periods))
        fcr = 0.5 * esat + rng.normal(0, 0.3, (n_agents, n_periods))
        # total effect of eSat on the CX level: direct 0.1 + 0.5 * 0.4 = esat_to_cx (0.3)
        direct = esat_to_cx - 0.2
        level = stable[:, None] + direct * (esat - 3.5) + 0.4 * (fcr - 1.75) + rng.normal(0, agent_period_sd, (n_agents, n_periods))
    prop = rng.gamma(0.7, 1.0, n_customers)
    lam = rate * prop / prop.mean()
    counts = rng.poisson(np.repeat(lam[:, None], n_periods, axis=1))  # customers x periods
    cust = np.repeat(np.repeat(np.arange(n_customers), n_periods), counts.ravel())
    per = np.repeat(np.tile(np.arange(n_periods), n_customers), counts.ravel())
    agent = rng.integers(0, n_agents, len(cust))
    y = level[agent, per] + rng.normal(0, interaction_sd, len(cust))
    obs = y + rng.normal(0, survey_sd, len(cust)) if survey_sd else y
    order = np.arange(len(cust))  # position = time order within a customer-period
    ints = pd.DataFrame({"c": cust, "p": per, "a": agent, "y": y, "obs": obs, "t": order})
    g = ints.groupby(["c", "p"])
    agg = g.agg(ybar=("y", "mean"), cx_obs=("obs", "mean"), n=("y", "size")).reset_index()
    served = ints.groupby(["c", "p", "a"]).agg(k=("t", "size"), last=("t", "max")).reset_index()
    main = served.sort_values(["c", "p", "k", "last"], ascending=[True, True, False, False]).drop_duplicates(["c", "p"])
    agg = agg.merge(main[["c", "p", "a"]], on=["c", "p"])
    # outcome of p from the CX of p-1
    rows = agg.assign(p=agg["p"] + 1).query(f"p < {n_periods}")
    nu = rng.normal(0, customer_revenue_sd, n_customers)
    shock_r = rng.normal(0, agent_shock_sd, n_agents)
    shock_v = rng.normal(0, agent_shock_sd * 20, n_agents)
    pr = expit(logit(0.85) + RETENTION_CX * rows["ybar"].to_numpy() + shock_r[rows["a"]])
    out = pd.DataFrame({
        "customer_id": rows["c"].to_numpy(), "period": rows["p"].to_numpy() + 1,  # periods 1..W
        "employee_id": rows["a"].to_numpy(), "cx_latent_prev": rows["ybar"].to_numpy(),
        "csat_prev": rows["cx_obs"].to_numpy(),
        "retained": rng.random(len(rows)) < pr,
        "revenue": 100 + REVENUE_CX * rows["ybar"].to_numpy() + nu[rows["c"]] + shock_v[rows["a"]]
        + rng.normal(0, revenue_sd, len(rows)),
    })
    prev = out[["customer_id", "period", "retained", "revenue"]].assign(period=lambda d: d["period"] + 1)
    out = out.merge(prev.rename(columns={"retained": "retained_prev", "revenue": "revenue_prev"}),
                    on=["customer_id", "period"], how="left")
    out["retained_prev"] = out["retained_prev"].astype(float)
    out = out.sort_values(["customer_id", "period"]).reset_index(drop=True)
    if esat_to_cx is not None:
        ap = ints.groupby(["a", "p"])["obs"].mean()
        panel = pd.DataFrame({"employee_id": np.repeat(np.arange(n_agents), n_periods),
                              "wave": np.tile(np.arange(1, n_periods + 1), n_agents),
                              "esat": esat.ravel(), "fcr": fcr.ravel()})
        panel["csat"] = ap.reindex(pd.MultiIndex.from_arrays([panel["employee_id"], panel["wave"] - 1])).to_numpy()
    return (out, panel) if return_panel else out


@pytest.fixture(scope="module")
def cp():
    return simulate_customer_periods(4000, 120, 5, seed=1)


def _row(table, term):
    return table.set_index("term").loc[term]


# --------------------------------------------------------------------------- two-way SEs: references
def _cgm_by_hand(x, scores, bread, cust, agent):
    """Cameron-Gelbach-Miller two-way covariance, each term CR1 (G/(G-1) (N-1)/(N-K))."""
    n, k = x.shape

    def one(codes):
        codes = pd.factorize(codes)[0]
        gsz = codes.max() + 1
        s = np.zeros((gsz, k))
        np.add.at(s, codes, scores)
        return gsz / (gsz - 1) * (n - 1) / (n - k) * bread @ s.T @ s @ bread

    pair = pd.factorize(pd.MultiIndex.from_arrays([cust, agent]))[0]
    return one(cust) + one(agent) - one(pair)


def test_linear_two_way_se_matches_cgm_formula_and_linearmodels(cp):
    table, fit = loyalty(cp, "csat_prev", "revenue", period=None)
    d = cp
    x = np.column_stack([np.ones(len(d)), d["csat_prev"], d["retained_prev"], d["revenue_prev"]])
    miss = d["revenue_prev"].isna().to_numpy()
    x[miss, 2] = np.nanmean(d["retained_prev"])
    x[miss, 3] = np.nanmean(d["revenue_prev"])
    x = np.column_stack([x, miss.astype(float)])
    y = d["revenue"].to_numpy()
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    bread = np.linalg.inv(x.T @ x)
    v = _cgm_by_hand(x, x * (y - x @ beta)[:, None], bread, d["customer_id"].to_numpy(), d["employee_id"].to_numpy())
    terms = ["const", "csat_prev", "retained_prev", "revenue_prev", "missing retained_prev, revenue_prev"]
    np.testing.assert_allclose(table.set_index("term").loc[terms, "estimate"], beta, rtol=1e-9)
    np.testing.assert_allclose(table.set_index("term").loc[terms, "se"], np.sqrt(np.diag(v)), rtol=1e-9)
    # linearmodels' two-way clustered covariance (debiased: the same CR1 factor per term)
    lm = IV2SLS(y, x, None, None).fit(cov_type="clustered", clusters=d[["customer_id", "employee_id"]], debiased=True)
    np.testing.assert_allclose(table.set_index("term").loc[terms, "se"], np.asarray(lm.std_errors), rtol=1e-9)
    # two-way differs from one-way: it is not silently one of them
    one_way = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(d["customer_id"])[0]})
    assert not np.allclose(one_way.bse, np.sqrt(np.diag(v)), rtol=1e-3)
    assert fit.n_customers == d["customer_id"].nunique() and fit.n_agents == 120
    assert fit.df_t == 119 and fit.cluster == "customer_id + employee_id (two-way)"


def test_logit_matches_statsmodels_and_cgm_formula(cp):
    table, fit = loyalty(cp, "csat_prev", "retained", model="logit", controls=["retained_prev"], missing_controls="drop")
    d = cp.dropna(subset=["retained_prev"])
    exog = sm.add_constant(d[["csat_prev", "retained_prev"]].to_numpy())
    ex = pd.get_dummies(d["period"], drop_first=True).to_numpy(float)
    x = np.column_stack([exog, ex])
    y = d["retained"].to_numpy(float)
    ref = sm.Logit(y, x).fit(disp=0)
    est = table.set_index("term")
    assert est.loc["csat_prev", "estimate"] == pytest.approx(ref.params[1], rel=1e-6)
    p = expit(x @ ref.params)
    bread = np.linalg.inv((x * (p * (1 - p))[:, None]).T @ x)
    v = _cgm_by_hand(x, x * (y - p)[:, None], bread, d["customer_id"].to_numpy(), d["employee_id"].to_numpy())
    assert est.loc["csat_prev", "se"] == pytest.approx(np.sqrt(v[1, 1]), rel=1e-5)
    assert est.loc["retained_prev", "se"] == pytest.approx(np.sqrt(v[2, 2]), rel=1e-5)
    # AME and its delta-method SE against statsmodels' get_margeff with the same two-way covariance
    ref2 = sm.Logit(y, x).fit(disp=0, cov_type="cluster", use_t=True,
                              cov_kwds={"groups": np.column_stack([pd.factorize(d["customer_id"])[0],
                                                                   pd.factorize(d["employee_id"])[0]])})
    me = ref2.get_margeff(at="overall", method="dydx")
    assert est.loc["AME csat_prev", "estimate"] == pytest.approx(me.margeff[0], rel=1e-6)
    assert est.loc["AME csat_prev", "se"] == pytest.approx(me.margeff_se[0], rel=1e-5)
    assert fit.ame == pytest.approx(me.margeff[0], rel=1e-6) and fit.converged and fit.model == "logit"


# --------------------------------------------------------------------------- pigeonhole bootstrap
def test_pigeonhole_refits_equal_weighted_refits_on_duplicated_rows(cp):
    d = cp.head(3000)
    for model, outcome in (("linear", "revenue"), ("logit", "retained")):
        _, fit = loyalty(d, "csat_prev", outcome, model=model, n_boot=2, seed=7, boot="pigeonhole", controls=None,
                         period=None)
        cust = pd.factorize(d["customer_id"], sort=True)[0]
        ag = pd.factorize(d["employee_id"], sort=True)[0]
        w = _pigeonhole_weights(np.random.default_rng(7), cust, ag, cust.max() + 1, ag.max() + 1, 2)
        for i in range(2):
            rep = np.repeat(np.arange(len(d)), w[i].astype(int))  # row i appears w_c * w_a times
            x = sm.add_constant(d["csat_prev"].to_numpy()[rep])
            y = d[outcome].to_numpy(float)[rep]
            ref = sm.OLS(y, x).fit() if model == "linear" else sm.Logit(y, x).fit(disp=0, tol=1e-12)
            assert fit.boot.loc[i, "csat_prev"] == pytest.approx(ref.params[1], rel=1e-7)
            if model == "logit":
                p = expit(x @ ref.params)
                assert fit.boot.loc[i, "AME csat_prev"] == pytest.approx((p * (1 - p)).mean() * ref.params[1], rel=1e-6)


def test_normal_draws_reproduce_two_way_t_intervals_and_pigeonhole_is_wider(cp):
    table, fit = loyalty(cp, "csat_prev", "retained", model="logit", n_boot=4000, seed=3)
    r = _row(table, "csat_prev")
    # draws from the multivariate t with the two-way covariance: percentile interval = t interval
    assert r["se_boot"] == pytest.approx(r["se"] * np.sqrt(fit.df_t / (fit.df_t - 2)), rel=0.05)
    assert r["ci_low_boot"] == pytest.approx(r["ci_low"], abs=0.1 * r["se"])
    assert r["ci_high_boot"] == pytest.approx(r["ci_high"], abs=0.1 * r["se"])
    # the AME per draw (Krinsky-Robb) agrees with the delta method
    a = _row(table, "AME csat_prev")
    assert a["se_boot"] == pytest.approx(a["se"], rel=0.08)
    assert fit.boot_method == "normal" and len(fit.boot) == 4000 and fit.n_boot_failed == 0
    # the pigeonhole bootstrap counts the row-level variance about three times here (Owen 2007)
    pig, pfit = loyalty(cp, "csat_prev", "revenue", n_boot=300, seed=3, boot="pigeonhole")
    p = _row(pig, "csat_prev")
    assert 1.2 < p["se_boot"] / p["se"] < 2.2, (p["se_boot"], p["se"])
    assert pfit.boot_method == "pigeonhole" and "pigeonhole bootstrap" in pfit.method


# --------------------------------------------------------------------------- recovery (simulator timing)
def test_recovers_logit_0_6_and_revenue_15_from_preceding_period_cx():
    d = simulate_customer_periods(20000, 300, 6, seed=11)
    # the latent CX received in p-1 is the regressor whose true coefficients are known
    ret, rfit = loyalty(d, "cx_latent_prev", "retained", model="logit")
    rev, vfit = loyalty(d, "cx_latent_prev", "revenue")
    r, v = _row(ret, "cx_latent_prev"), _row(rev, "cx_latent_prev")
    assert r["ci_low"] <= RETENTION_CX <= r["ci_high"], (r["estimate"], r["ci_low"], r["ci_high"])
    assert v["ci_low"] <= REVENUE_CX <= v["ci_high"], (v["estimate"], v["ci_low"], v["ci_high"])
    # controls: retention has no persistence beyond CX, revenue has a stable customer trait
    rp = _row(ret, "retained_prev")
    assert rp["ci_low"] <= 0 <= rp["ci_high"]
    assert _row(rev, "revenue_prev")["ci_low"] > 0.2
    # the AME is the logit slope times the mean density p(1-p) (~0.13 at p ~ 0.85)
    assert 0.6 * 0.10 < _row(ret, "AME cx_latent_prev")["estimate"] < 0.6 * 0.15
    assert rfit.binary and not vfit.binary and rfit.n_dropped == 0
    # same-period CX would not be the regressor: the CX of p does not affect p's outcome here
    same = d.merge(d[["customer_id", "period", "cx_latent_prev"]].assign(period=lambda x: x["period"] - 1)
                   .rename(columns={"cx_latent_prev": "cx_same"}), on=["customer_id", "period"])
    s = _row(loyalty(same, "cx_same", "revenue").table, "cx_same")
    assert s["ci_low"] <= 0 <= s["ci_high"]


@pytest.mark.slow
def test_two_way_intervals_cover_with_agent_shocks_where_customer_clustering_does_not():
    start = time.perf_counter()
    reps, hits_two, hits_one, hits_boot = 120, 0, 0, 0
    for rep in range(reps):
        d = simulate_customer_periods(1500, 40, 4, seed=500 + rep, agent_shock_sd=1.0, agent_sd=0.6,
                                      agent_period_sd=0.1)
        # same model for both intervals (no controls), so only the clustering differs
        table, _ = loyalty(d, "cx_latent_prev", "revenue", controls=None, period=None, n_boot=400, seed=rep)
        r = _row(table, "cx_latent_prev")
        hits_two += r["ci_low"] <= REVENUE_CX <= r["ci_high"]
        hits_boot += r["ci_low_boot"] <= REVENUE_CX <= r["ci_high_boot"]
        x = sm.add_constant(d[["cx_latent_prev"]].to_numpy())
        one = sm.OLS(d["revenue"].to_numpy(), x).fit(cov_type="cluster", use_t=True,
                                                     cov_kwds={"groups": pd.factorize(d["customer_id"])[0]})
        lo, hi = one.conf_int()[1]
        hits_one += lo <= REVENUE_CX <= hi
    two, one_, boot = hits_two / reps, hits_one / reps, hits_boot / reps
    assert 0.90 <= two <= 0.99, two
    assert 0.90 <= boot <= 0.99, boot
    print(f"coverage two-way {two:.3f}, its draws {boot:.3f}, customer-only clustering {one_:.3f}")
    assert one_ < two - 0.05, (one_, two)
    assert time.perf_counter() - start < 180


# --------------------------------------------------------------------------- money translation
def test_money_chain_table_steps_and_products():
    d, panel = simulate_customer_periods(3000, 100, 5, seed=21, esat_to_cx=0.3, return_panel=True)
    med = mediation(panel, "esat", ["fcr"], "csat", n_boot=300, seed=1)
    ret = loyalty(d, "csat_prev", "retained", model="logit", n_boot=200, seed=2)
    rev = loyalty(d, "csat_prev", "revenue", n_boot=200, seed=3)
    table, fit = money_chain(med, [ret, rev])
    assert isinstance(fit, MoneyChainFit) and fit.step == "total"
    assert table["term"].tolist() == ["esat -> csat", "csat -> retained", "esat -> csat -> retained",
                                      "csat -> revenue", "esat -> csat -> revenue"]
    t = table.set_index("term")
    x = _row(med.table, "total")["estimate"]
    assert t.loc["esat -> csat", "estimate"] == x
    assert t.loc["csat -> retained", "estimate"] == pytest.approx(100 * ret.fit.ame)
    assert t.loc["esat -> csat -> retained", "estimate"] == pytest.approx(x * 100 * ret.fit.ame)
    assert t.loc["esat -> csat -> revenue", "estimate"] == pytest.approx(x * _row(rev.table, "csat_prev")["estimate"])
    assert (t["ci_low"] < t["estimate"]).all() and (t["estimate"] < t["ci_high"]).all()
    assert t.loc["csat -> retained", "unit"] == "percentage points of retained per csat point"
    assert "Within employee_id" in t.loc["esat -> csat", "assumption"]
    assert "prior-period retention and revenue" in t.loc["csat -> revenue", "assumption"]
    assert t["kind"].tolist() == ["step", "step", "product", "step", "product"]
    assert len(fit.boot) == 200 and list(fit.boot.columns) == table["term"].tolist()
    # the interval of the product comes from all 300 x 200 pairs of independent draws
    prod = np.multiply.outer(med.fit.boot["total"].to_numpy(), rev.fit.boot["csat_prev"].to_numpy()).ravel()
    assert t.loc["esat -> csat -> revenue", "ci_low"] == pytest.approx(np.percentile(prod, 2.5))


@pytest.mark.slow
def test_money_chain_product_interval_covers_the_known_product():
    # Both steps known and sharing the agents: eSat -> CSAT (within-employee total 0.3) and
    # CSAT -> revenue (15 per CSAT point received in p-1): the product is 4.5 per eSat point.
    start = time.perf_counter()
    reps, hits, hits_x, hits_s = 150, 0, 0, 0
    est_x, est_s = [], []
    for rep in range(reps):
        d, panel = simulate_customer_periods(1500, 80, 5, seed=900 + rep, esat_to_cx=0.3, return_panel=True)
        med = mediation(panel, "esat", ["fcr"], "csat", n_boot=300, seed=rep)
        rev = loyalty(d, "csat_prev", "revenue", n_boot=300, seed=10_000 + rep)
        t = money_chain(med, rev).table.set_index("term")
        hits += t.loc["esat -> csat -> revenue", "ci_low"] <= 0.3 * REVENUE_CX <= t.loc["esat -> csat -> revenue", "ci_high"]
        hits_x += t.loc["esat -> csat", "ci_low"] <= 0.3 <= t.loc["esat -> csat", "ci_high"]
        hits_s += t.loc["csat -> revenue", "ci_low"] <= REVENUE_CX <= t.loc["csat -> revenue", "ci_high"]
        est_x.append(t.loc["esat -> csat", "estimate"])
        est_s.append(t.loc["csat -> revenue", "estimate"])
    cov = {"product": hits / reps, "step1": hits_x / reps, "step2": hits_s / reps}
    corr = float(np.corrcoef(est_x, est_s)[0, 1])
    print(f"coverage {cov}, correlation of the two step estimates over replicates {corr:+.3f}")
    assert all(0.90 <= c <= 0.99 for c in cov.values()), cov
    assert abs(corr) < 0.25, corr  # the independence the combination assumes is close to true here
    assert time.perf_counter() - start < 240


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "mutate, kwargs, message",
    [
        (lambda d: d, dict(cx="csat"), "column 'csat' not found"),
        (lambda d: d, dict(agent="agent"), "column 'agent' not found"),
        (lambda d: d.assign(csat_prev=d["csat_prev"].astype(str)), {}, "column 'csat_prev' is not numeric"),
        (lambda d: d, dict(outcome="revenue", model="logit"), "needs a 0/1 outcome, but column 'revenue'"),
        (lambda d: d, dict(model="probit"), "model must be one of"),
        (lambda d: d, dict(missing_controls="zero"), "missing_controls must be"),
        (lambda d: pd.concat([d, d.head(2)]), {}, "must identify a row"),
        (lambda d: d.assign(retained=True), {}, "outcome 'retained' is constant"),
        (lambda d: d.assign(x2=2 * d["csat_prev"]), dict(controls=["x2"]), "perfectly collinear"),
        (lambda d: d, dict(controls=["csat_prev"]), "used in two roles"),
        (lambda d: d.head(5), dict(outcome="revenue"), "only 5 usable customer-periods"),
    ],
)
def test_bad_input_messages(cp, mutate, kwargs, message):
    d = mutate(cp.head(2000).copy())
    args = dict(cx="csat_prev", outcome="retained") | kwargs
    with pytest.raises(ValueError, match=message):
        loyalty(d, **args)


def test_money_chain_refuses_results_without_draws(cp):
    d, panel = simulate_customer_periods(800, 40, 4, seed=2, esat_to_cx=0.3, return_panel=True)
    med = mediation(panel, "esat", ["fcr"], "csat", n_boot=0)
    rev = loyalty(d, "csat_prev", "revenue", n_boot=50, seed=1)
    with pytest.raises(ValueError, match="no bootstrap draws of 'total'"):
        money_chain(med, rev)
    med = mediation(panel, "esat", ["fcr"], "csat", n_boot=50, seed=1)
    with pytest.raises(ValueError, match="loyalty result for 'revenue' has no bootstrap draws"):
        money_chain(med, loyalty(d, "csat_prev", "revenue"))
    with pytest.raises(ValueError, match="chain must be the Result of mediation"):
        money_chain(rev, rev)
    assert isinstance(rev, Result) and isinstance(rev.fit, LoyaltyFit)


# --------------------------------------------------------------------------- the sample study
def customer_period_table(study) -> pd.DataFrame:
    """Pandas reference of the customer-period table :func:`loyalty` expects (module docstring of loyalty).

    Period of an interaction: the last wave opened at or before it started (Study.wave_openings).
    For each customer-period p with an outcome and >= 1 interaction in p-1: ``csat_prev`` (mean CSAT
    answered in p-1), ``n_interactions_prev``, ``n_csat_prev``, ``employee_id`` (the agent with most
    of the customer's p-1 interactions; ties: the agent of the latest of them) and the outcomes of
    (c, p-1) as ``retained_prev`` / ``revenue_prev`` (missing when that row does not exist).
    """
    opens = study.wave_openings()
    it = study.interactions[["interaction_id", "employee_id", "customer_id", "started_at"]]
    pos = np.searchsorted(opens.to_numpy(), it["started_at"].to_numpy(), side="right")
    it = it.loc[pos > 0].assign(period=opens.index.to_numpy()[pos[pos > 0] - 1].astype(int))
    it = it.merge(study.cx_responses[["interaction_id", "csat"]], on="interaction_id", how="left")
    agg = it.groupby(["customer_id", "period"]).agg(
        csat_prev=("csat", "mean"), n_csat_prev=("csat", "count"), n_interactions_prev=("interaction_id", "size")
    ).reset_index()
    served = it.groupby(["customer_id", "period", "employee_id"]).agg(k=("interaction_id", "size"),
                                                                      last=("started_at", "max")).reset_index()
    main = served.sort_values(["customer_id", "period", "k", "last"], ascending=[True, True, False, False])
    agg = agg.merge(main.drop_duplicates(["customer_id", "period"])[["customer_id", "period", "employee_id"]],
                    on=["customer_id", "period"])
    out = study.customer_outcomes[["customer_id", "period", "retained", "revenue"]]
    table = out.merge(agg.assign(period=agg["period"] + 1), on=["customer_id", "period"], how="inner")
    prev = out.assign(period=out["period"] + 1).rename(columns={"retained": "retained_prev", "revenue": "revenue_prev"})
    table = table.merge(prev, on=["customer_id", "period"], how="left")
    table["retained"] = table["retained"].astype(int)
    table["retained_prev"] = table["retained_prev"].astype(float)
    return table.sort_values(["customer_id", "period"]).reset_index(drop=True)


def test_sample_study_customer_periods_loyalty_and_money_chain():
    from cxex_lab.linkage import link
    from cxex_lab.report import load_segment
    from tests.conftest import SAMPLE

    study = load_segment(str(SAMPLE), "all")
    cpt = customer_period_table(study)
    assert not cpt.duplicated(["customer_id", "period"]).any()
    assert {"customer_id", "period", "retained", "revenue", "csat_prev", "employee_id", "retained_prev",
            "revenue_prev"} <= set(cpt.columns)
    # the attributed agent served the customer in the preceding period
    opens = study.wave_openings()
    it = study.interactions
    per = opens.index.to_numpy()[np.searchsorted(opens.to_numpy(), it["started_at"].to_numpy(), side="right") - 1]
    pairs = set(zip(it["customer_id"], per + 1, it["employee_id"]))
    assert all(t in pairs for t in zip(cpt["customer_id"], cpt["period"], cpt["employee_id"]))
    panel = link(study, level="employee", period="wave", ex_lag=0)
    panel["handle_minutes"] = panel["aht_seconds"] / 60
    med = mediation(panel, "esat", ["fcr_rate", "handle_minutes", "transfer_rate"], "csat", period="period",
                    n_boot=300, seed=1)
    ret = loyalty(cpt, "csat_prev", "retained", model="logit", n_boot=300, seed=2)
    rev = loyalty(cpt, "csat_prev", "revenue", n_boot=300, seed=3)
    table, fit = money_chain(med, [ret, rev])
    print(table[["term", "estimate", "ci_low", "ci_high", "unit"]].to_string())
    assert np.isfinite(table[["estimate", "se", "ci_low", "ci_high"]].to_numpy()).all()
    assert (table["ci_low"] <= table["estimate"]).all() and (table["estimate"] <= table["ci_high"]).all()
    assert ret.fit.n_agents <= study.employees.shape[0] and ret.fit.n_dropped > 0  # no CSAT answer in p-1
