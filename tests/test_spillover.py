"""Interaction-level spillover (the vicious circle): pairing, Nickell correction, recovery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from cxex_lab.models.spillover import spillover
from cxex_lab.simulate import simulate_study

GROUP = ["employee_id", "wave"]


@pytest.fixture(scope="module")
def study():
    # ~42k interactions (about 1.3 s). The per-interaction latent CX is the employee-wave
    # level plus an AR(1) deviation that runs across wave boundaries, so (employee, wave)
    # fixed effects absorb the level; pairs that straddle two waves are excluded.
    # insight_spillover=0: these tests fit the empowerment moderation only, and the
    # truth they check (spillover_by_empowerment) is the carry-over at insight access 3
    return simulate_study(n_sites=5, n_employees=300, n_waves=3, seed=100, latent=True, insight_spillover=0.0)


def _ar_panel(n_agents=3000, t=10, lam=0.5, seed=0):
    """Pure AR(1) with agent effects, stationary start: lambda is known exactly."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_agents, t + 1))
    y[:, 0] = rng.normal(size=n_agents) / np.sqrt(1 - lam**2)
    for k in range(1, t + 1):
        y[:, k] = lam * y[:, k - 1] + rng.normal(size=n_agents)
    y += 2 * rng.normal(size=(n_agents, 1))
    return pd.DataFrame(
        {
            "employee_id": np.repeat(np.arange(n_agents), t + 1),
            "started_at": np.tile(np.arange(t + 1), n_agents),
            "cx": y.ravel(),
            "empowerment": np.repeat(rng.integers(1, 6, n_agents), t + 1),
        }
    )


# --------------------------------------------------------------------------- recovery
def test_recovers_spillover_and_its_shrinking_with_empowerment(study):
    it = study.latent["interactions"]
    truth = study.truth["derived"]["spillover_by_empowerment"]
    res = spillover(it, "cx_latent", group=GROUP, centre=3).set_index("term")
    main, inter = res.loc["prev_cx"], res.loc["prev_cx:empowerment"]
    assert main["ci_low"] <= truth["3"] <= main["ci_high"]  # 0.25 at empowerment 3
    assert inter["ci_high"] < 0  # empowerment breaks the circle
    assert inter["ci_low"] <= -0.05 <= inter["ci_high"]
    bins = res[res["model"] == "by_empowerment"]
    assert len(bins) == 3
    assert bins["estimate"].is_monotonic_decreasing
    # Nickell: the within estimate is biased down by about (1 + lambda)/(T - 1)
    assert main["estimate_uncorrected"] < truth["3"] - 0.015
    first_order = res.attrs["nickell_first_order"]
    assert main["bias_correction"] == pytest.approx(-first_order, rel=0.15)


def test_per_level_estimates_cover_the_truth(study):
    it = study.latent["interactions"]
    truth = study.truth["derived"]["spillover_by_empowerment"]
    res = spillover(it, "cx_latent", group=GROUP, centre=3, n_tertiles=None)
    lev = res[res["model"] == "by_empowerment"]
    assert list(lev["empowerment_mean"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    for _, r in lev.iterrows():
        true = truth[f"{r['empowerment_mean']:g}"]
        assert r["ci_low"] <= true <= r["ci_high"], (r["term"], true)


def test_unsurveyed_interactions_break_pairs_but_not_the_estimate(study):
    # Half the CX missing completely at random: pairs with a missing side are excluded
    # (never bridged to an earlier surveyed interaction); the gap-aware bias correction
    # still recovers the effect.
    it = study.latent["interactions"].copy()
    miss = np.random.default_rng(1).random(len(it)) < 0.5
    it.loc[miss, "cx_latent"] = np.nan
    res = spillover(it, "cx_latent", group=GROUP, centre=3)
    main = res.set_index("term").loc["prev_cx"]
    assert main["ci_low"] <= 0.25 <= main["ci_high"]
    ex = res.attrs["n_pairs_excluded"]
    assert 0.45 * len(it) < ex["cx_missing"] <= int(miss.sum())  # first-of-agent rows are counted as such
    assert ex["prev_cx_missing"] > 0.2 * len(it)
    assert res.attrs["n_pairs_used"] + sum(ex.values()) == len(it)


def test_nickell_correction_removes_short_panel_bias():
    # T = 10, lambda = 0.5: the within estimator is biased by about -(1.5)/9 = -0.17.
    res = spillover(_ar_panel(), "cx", centre=3).set_index("term").loc["prev_cx"]
    assert res["estimate_uncorrected"] < 0.38
    assert res["estimate"] == pytest.approx(0.5, abs=0.02)
    assert res["ci_low"] <= 0.5 <= res["ci_high"]


# --------------------------------------------------------------------------- reference
def test_uncorrected_fit_matches_statsmodels_with_group_dummies():
    d = _ar_panel(n_agents=60, t=12, seed=4)
    d["wave"] = (d["started_at"] > 6).astype(int)
    res = spillover(d, "cx", group=["employee_id", "wave"], centre=3).set_index("term")
    # the same pairs built by hand, fitted with explicit dummies (statsmodels)
    d = d.sort_values(["employee_id", "started_at"])
    d["prev"] = d.groupby("employee_id")["cx"].shift()
    d["prev_wave"] = d.groupby("employee_id")["wave"].shift()
    p = d[d["prev"].notna() & (d["prev_wave"] == d["wave"])].copy()
    p["g"] = p["employee_id"].astype(str) + "_" + p["wave"].astype(str)
    p["ec"] = p["empowerment"] - 3
    fit = smf.ols("cx ~ prev + prev:ec + C(g)", data=p).fit(
        cov_type="cluster", cov_kwds={"groups": p["employee_id"]}, use_t=True
    )
    assert res.loc["prev_cx", "estimate_uncorrected"] == pytest.approx(fit.params["prev"], rel=1e-9)
    assert res.loc["prev_cx:empowerment", "estimate_uncorrected"] == pytest.approx(fit.params["prev:ec"], rel=1e-9)
    n, k, g = len(p), 2, p["g"].nunique()
    # statsmodels' small-sample factor (N-1)/(N-K) counts the dummies in K; ours does not
    # (they are nested in the agent clusters), otherwise the SEs are identical
    factor = np.sqrt((n - k - g) / (n - k))
    assert res.loc["prev_cx", "se"] == pytest.approx(fit.bse["prev"] * factor, rel=1e-8)
    assert res.loc["prev_cx:empowerment", "se"] == pytest.approx(fit.bse["prev:ec"] * factor, rel=1e-8)
    assert res.attrs["n_pairs_used"] == n


def test_pairs_use_the_immediately_preceding_interaction():
    # Rows deliberately out of time order. Agent A: cx 1, (missing), 2, 3, 4; agent B: 5, 4, 6.
    # A: (1 -> nan) cx missing, (nan -> 2) previous missing -- NOT bridged to (1 -> 2) --,
    # (2 -> 3) and (3 -> 4) used; B: (5 -> 4), (4 -> 6) used.
    one = pd.DataFrame(
        {
            "employee_id": ["A", "B", "A", "A", "B", "A", "A", "B"],
            "started_at": [4, 2, 1, 2, 1, 3, 5, 3],
            "cx": [3.0, 4.0, 1.0, np.nan, 5.0, 2.0, 4.0, 6.0],
            "empowerment": [2, 4, 2, 2, 4, 2, 2, 4],
        }
    )
    big = pd.concat([one.assign(employee_id=one["employee_id"] + str(i)) for i in range(40)], ignore_index=True)
    big["cx"] += np.random.default_rng(0).normal(0, 0.3, len(big))
    res = spillover(big, "cx", centre=3, n_tertiles=2)
    ex = res.attrs["n_pairs_excluded"]
    assert res.attrs["n_pairs_used"] == 160
    assert ex["first_of_unit"] == 80 and ex["cx_missing"] == 40 and ex["prev_cx_missing"] == 40
    assert res.attrs["n_pairs_used"] + sum(ex.values()) == len(big)
    # input order is irrelevant: the function orders by time within agent
    shuffled = spillover(big.sample(frac=1, random_state=3), "cx", centre=3, n_tertiles=2)
    pd.testing.assert_frame_equal(res, shuffled)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "mutate, kwargs, message",
    [
        (lambda d: d, dict(cx="nps"), "column 'nps' not found"),
        (lambda d: d.assign(cx=d["cx"].astype(str)), {}, "column 'cx' is not numeric"),
        (lambda d: d.assign(cx=np.nan), {}, "column 'cx' is entirely missing"),
        (lambda d: d.assign(started_at=d["started_at"].astype(str)), {}, "time column 'started_at' must be datetime"),
        (lambda d: d.assign(empowerment=3), {}, "is constant over the usable pairs"),
        (lambda d: d.head(8), {}, "only 5 usable pairs"),
        (lambda d: d, dict(group="team"), "column 'team' not found"),
    ],
)
def test_bad_input_messages(mutate, kwargs, message):
    d = mutate(_ar_panel(n_agents=50, t=5))
    with pytest.raises(ValueError, match=message):
        spillover(d, **(dict(cx="cx") | kwargs))


def test_missing_time_rows_are_counted_not_silently_dropped():
    d = _ar_panel(n_agents=50, t=8).astype({"started_at": float})
    d.loc[[3, 20, 40], "started_at"] = np.nan
    res = spillover(d, "cx", centre=3)
    assert res.attrs["n_dropped"] == 3
