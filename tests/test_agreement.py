"""Agreement statistics against hand computations, pingouin, scipy, and data with known ICC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats

from cxex_lab.agreement import agreement, icc_oneway, rwg


def test_hand_computed_balanced_anova():
    # groups a=[4,5,4] (mean 13/3), b=[2,2,3] (7/3), c=[3,4,3] (10/3); grand mean 10/3
    # SSB = 3*((1)^2 + (-1)^2 + 0^2) = 6, MSB = 6/2 = 3
    # SSW = 3 groups x (1/9 + 4/9 + 1/9) = 2, MSW = 2/6 = 1/3
    # k = 3; ICC(1) = (3 - 1/3) / (3 + 2 * 1/3) = 8/11; ICC(2) = (3 - 1/3)/3 = 8/9; F = 9
    # rwg per group: s^2 = 1/3, sigma_EU^2 = (5^2 - 1)/12 = 2 -> 1 - 1/6 = 5/6
    df = pd.DataFrame({"team": list("aaabbbccc"), "esat": [4, 5, 4, 2, 2, 3, 3, 4, 3]})
    r = agreement(df, "team", ["esat"], scale_points=5).iloc[0]
    assert r["msb"] == pytest.approx(3.0) and r["msw"] == pytest.approx(1 / 3)
    assert r["icc1"] == pytest.approx(8 / 11)
    assert r["icc2"] == pytest.approx(8 / 9)
    assert r["F"] == pytest.approx(9.0)
    assert r["p"] == pytest.approx(stats.f.sf(9.0, 2, 6))
    assert r["rwg_mean"] == pytest.approx(5 / 6) and r["rwg_median"] == pytest.approx(5 / 6)
    assert (r["n_groups"], r["mean_group_size"], r["k"], r["n"]) == (3, 3.0, 3.0, 9)


def test_hand_computed_unbalanced_anova_uses_adjusted_group_size():
    # a=[2,4] (n 2, mean 3), b=[1,2,3] (n 3, mean 2), c=[5,6,7,6] (n 4, mean 6); N = 9, grand mean 36/9 = 4
    # SSB = 2(3-4)^2 + 3(2-4)^2 + 4(6-4)^2 = 2 + 12 + 16 = 30, MSB = 30/2 = 15
    # SSW = (1+1) + (1+0+1) + (1+0+1+0) = 6, MSW = 6/(9-3) = 1
    # k = (N - sum n_g^2 / N)/(G-1) = (9 - 29/9)/2 = 26/9
    # ICC(1) = (15-1)/(15 + (26/9 - 1) * 1) = 14/(152/9) = 63/76; ICC(2) = 14/15; F = 15
    # rwg on a 1-7 scale (sigma_EU^2 = 48/12 = 4): a 1 - 2/4 = 1/2, b 1 - 1/4 = 3/4, c 1 - (2/3)/4 = 5/6
    df = pd.DataFrame({"team": list("aabbbcccc"), "ees": [2, 4, 1, 2, 3, 5, 6, 7, 6]})
    r = agreement(df, "team", "ees", scale_points=7).iloc[0]
    assert r["k"] == pytest.approx(26 / 9)
    assert r["icc1"] == pytest.approx(63 / 76)
    assert r["icc2"] == pytest.approx(14 / 15)
    assert r["F"] == pytest.approx(15.0)
    assert r["rwg_mean"] == pytest.approx((1 / 2 + 3 / 4 + 5 / 6) / 3)
    assert r["rwg_median"] == pytest.approx(3 / 4)
    assert r["mean_group_size"] == pytest.approx(3.0)
    # F and p agree with scipy's one-way ANOVA
    f, p = stats.f_oneway([2, 4], [1, 2, 3], [5, 6, 7, 6])
    assert (r["F"], r["p"]) == pytest.approx((f, p))


@pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")
def test_matches_pingouin_icc_on_balanced_data():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(30), 4)
    y = rng.normal(size=30)[g] * 0.7 + rng.normal(size=120)
    df = pd.DataFrame({"team": g, "rater": np.tile(np.arange(4), 30), "y": y})
    ours = agreement(df, "team", ["y"], scale_points=100).iloc[0]
    ref = pg.intraclass_corr(data=df, targets="team", raters="rater", ratings="y").set_index("Type")
    # pingouin's ICC(1,1) is Bliese's ICC(1); its ICC(1,k) is ICC(2); F is the same one-way F
    assert ours["icc1"] == pytest.approx(ref.loc["ICC(1,1)", "ICC"], abs=1e-10)
    assert ours["icc2"] == pytest.approx(ref.loc["ICC(1,k)", "ICC"], abs=1e-10)
    assert ours["F"] == pytest.approx(ref.loc["ICC(1,1)", "F"], abs=1e-10)


def _known_icc_data(seed, n_groups=800):
    # group-effect variance 0.2, residual variance 0.8 -> ICC(1) = 0.2; unbalanced sizes 3-14
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 15, size=n_groups)
    g = np.repeat(np.arange(n_groups), sizes)
    y = rng.normal(0, np.sqrt(0.2), n_groups)[g] + rng.normal(0, np.sqrt(0.8), len(g))
    return pd.DataFrame({"team": g, "y": y})


def test_recovers_known_icc_with_unbalanced_groups():
    r = agreement(_known_icc_data(1), "team", ["y"], scale_points=100).iloc[0]
    # sampling SD of ICC(1) here is about 0.014 (measured over 40 seeds): allow 3 SD
    assert r["icc1"] == pytest.approx(0.2, abs=0.04)
    # ICC(2) follows from ICC(1) by Spearman-Brown with the adjusted group size
    k = r["k"]
    assert r["icc2"] == pytest.approx(k * 0.2 / (1 + (k - 1) * 0.2), abs=0.04)
    # and the estimator is unbiased: the mean over 20 replicates is within 3 SE (0.003 each) of 0.2
    reps = [icc_oneway(d["y"], d["team"])["icc1"] for d in map(_known_icc_data, range(100, 120))]
    assert np.mean(reps) == pytest.approx(0.2, abs=0.01)


def test_rwg_identical_raters_is_one_and_uniform_answers_are_zero():
    same = pd.DataFrame({"team": list("aabb"), "q1": [4, 4, 2, 2], "q2": [3, 3, 5, 5]})
    r = agreement(same, "team", ["q1"], items={"scale": ["q1", "q2"]}).set_index("value")
    assert r.loc["q1", "rwg_mean"] == 1.0 and r.loc["scale", "rwg_mean"] == 1.0
    # members spread evenly over the 5 points: s^2 = 2.5 > sigma_EU^2 = 2 -> negative, truncated to 0
    spread = pd.DataFrame({"team": ["a"] * 5 + ["b"] * 5, "q1": [1, 2, 3, 4, 5] * 2})
    assert agreement(spread, "team", ["q1"]).iloc[0]["rwg_mean"] == 0.0
    # a large group answering uniformly at random: s^2 -> sigma_EU^2, so rwg -> 0
    rng = np.random.default_rng(5)
    uni = pd.DataFrame({"team": np.repeat(["a", "b"], 5000), "q": rng.integers(1, 6, 10000)})
    assert agreement(uni, "team", "q").iloc[0]["rwg_mean"] == pytest.approx(0.0, abs=0.05)


def test_rwg_j_worked_example():
    # one group, J = 2 items on a 5-point scale: item variances 0.5 and 1.5 -> mean s^2 = 1, sigma_EU^2 = 2
    # ratio = 1/2; rwg(j) = 2(1 - 1/2) / (2(1 - 1/2) + 1/2) = 1 / 1.5 = 2/3
    items = pd.DataFrame({"q1": [3, 4, 3, 4], "q2": [2, 4, 4, 2]})
    assert items.var(ddof=1).tolist() == pytest.approx([1 / 3, 4 / 3])  # mean 5/6
    ratio = (5 / 6) / 2
    expect = 2 * (1 - ratio) / (2 * (1 - ratio) + ratio)
    assert rwg(items, ["a"] * 4, 5).item() == pytest.approx(expect)
    # out-of-range rwg(j) (variance above the null) is truncated to 0
    wide = pd.DataFrame({"q1": [1, 5, 1, 5], "q2": [5, 1, 5, 1]})
    assert rwg(wide, ["a"] * 4, 5).item() == 0.0


def test_multi_item_scale_uses_item_means_for_the_icc():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(40), 6)
    base = rng.normal(3, 0.6, 40)[g]
    df = pd.DataFrame({"team": g, **{f"q{j}": np.clip(np.round(base + rng.normal(0, 0.7, len(g))), 1, 5) for j in range(3)}})
    tab = agreement(df, "team", items={"climate": ["q0", "q1", "q2"]})
    ref = icc_oneway(df[["q0", "q1", "q2"]].mean(axis=1), df["team"])
    assert tab["value"].tolist() == ["climate"]
    assert tab["icc1"].item() == pytest.approx(ref["icc1"])
    assert tab["rwg_n_groups"].item() == 40


def test_singletons_and_missing_values():
    df = pd.DataFrame({"team": ["a", "a", "b", "b", "c", None], "y": [4, 5, 2, np.nan, 3, 4]})
    r = agreement(df, "team", "y").iloc[0]
    assert r["n"] == 4 and r["n_missing"] == 2
    assert r["n_groups"] == 3 and r["rwg_n_groups"] == 1  # b and c have one answer: rwg undefined


@pytest.mark.parametrize(
    "df, kwargs, msg",
    [
        (pd.DataFrame({"t": ["a", "b"], "y": [1, 2]}), {"group": "team", "values": ["y"]},
         r"group column 'team' not found; available columns: \['t', 'y'\]"),
        (pd.DataFrame({"t": ["a", "b"], "y": [1, 2]}), {"group": "t", "values": ["z"]},
         r"value column\(s\) \['z'\] not found"),
        (pd.DataFrame({"t": ["a", "a"], "y": [1, 2]}), {"group": "t", "values": ["y"]},
         r"need at least 2 groups with answers, found 1 \(group column 't', value 'y'\)"),
        (pd.DataFrame({"t": ["a", "b"], "y": ["x", "z"]}), {"group": "t", "values": ["y"]},
         r"value column 'y' must be numeric scale answers; 2 value\(s\) are not numbers, e.g. 'x', 'z'"),
        (pd.DataFrame({"t": ["a", "b"], "y": [True, False]}), {"group": "t", "values": ["y"]},
         r"value column 'y' must be numeric scale answers, found booleans"),
        (pd.DataFrame({"t": ["a", "b"], "y": [1, 2]}), {"group": "t", "values": ["y"]},
         "every group has a single answer"),
        (pd.DataFrame({"t": list("aabb"), "y": [0, 10, 5, 5]}), {"group": "t", "values": ["y"]},
         r"answers to 'y' range from 0 to 10, more than scale_points=5 options allow"),
        (pd.DataFrame({"t": list("aabb"), "y": [1, 2, 3, 4]}), {"group": "t", "values": ["y"], "scale_points": 1},
         r"scale_points for 'y' must be a whole number >= 2, got 1"),
        (pd.DataFrame({"t": list("aabb"), "y": [1, 2, 3, 4]}), {"group": "t"},
         r"name at least one value column"),
    ],
)
def test_bad_input(df, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        agreement(df, **kwargs)


def test_on_simulated_ex_answers(small_study):
    s = small_study  # conftest: simulate_study(n_sites=3, n_employees=60, n_waves=3, seed=11)
    ex = s.ex_responses[s.ex_responses["wave"] == 1].merge(s.employees[["employee_id", "team_id"]])
    tab = agreement(ex, "team_id", ["esat", "ees"], scale_points={"esat": 5, "ees": 7},
                    items={"touchpoints": ["tp_daily_work", "tp_coaching", "tp_training"]})
    assert tab["value"].tolist() == ["esat", "ees", "touchpoints"]
    assert (tab["n_groups"] == ex["team_id"].nunique()).all()
    assert (tab["n"] == len(ex)).all()
    # team climates drive the touchpoint items: a clear group effect
    assert tab.set_index("value").loc["touchpoints", "icc1"] > 0.05
    assert tab[["rwg_mean", "rwg_median"]].apply(lambda c: c.between(0, 1)).all().all()
