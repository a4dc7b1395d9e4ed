"""Agreement statistics against hand computations, pingouin, scipy, and data with known ICC."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats

from cxex_lab.agreement import NULL_VARIANCES, NULLS, agreement, icc_oneway, null_variance, reliability, rwg


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
        (pd.DataFrame({"t": list("aabb"), "y": [1, 2, 3, 4]}), {"group": "t", "values": "y", "wave": "w"},
         r"wave column 'w' not found"),
        (pd.DataFrame({"t": list("aabb"), "y": [1, 2, 3, 4]}), {"group": "t", "values": "y", "null": "skewed"},
         r"null must be one or more of \['uniform', 'slight_skew', 'moderate_skew', 'heavy_skew', 'triangular', 'normal'\]"),
        (pd.DataFrame({"t": list("aabb"), "y": [1, 2, 3, 4]}), {"group": "t", "values": "y", "null_variance": 0},
         r"null_variance for 'y' must be a positive number"),
        (pd.DataFrame({"t": list("aabb"), "y": [1, 2, 3, 4]}), {"group": "t", "values": "y", "scale_points": 4,
                                                                 "null": "slight_skew"},
         r"LeBreton & Senter \(2008, Table 3\) give the 'slight_skew' null for 5-11 scale points only, not 4"),
        (pd.DataFrame({"t": list("aabb"), "w": 1, "e": list("xxyz"), "y": [1, 2, 3, 4]}),
         {"group": "t", "values": "y", "wave": "w", "person": "e"},
         r"2 rows repeat a 'e' within one 'w' \(e\.g\. rows 0, 1\); a person answers at most once per wave"),
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


# --------------------------------------------------------------------------- null distributions (LeBreton & Senter 2008)
# Issue 10 acceptance: agreement(..., null_variance=2.0) reproduces R multilevel's rwg.
# Example: four teams answering a 5-point item (q1) and a second item (q2); team 3 has one member.
EXAMPLE = pd.DataFrame({
    "team": [1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, 4, 4, 4],
    "q1": [4, 5, 4, 4, 5, 1, 5, 2, 4, 3, 2, 3, 3, 2, 3, 4],
    "q2": [4, 4, 5, 4, 4, 2, 4, 1, 5, 2, 3, 3, 2, 2, 3, 3],
})
# R 4.2.2, multilevel 2.7 (Debian r-cran-multilevel 2.7-1), print(..., digits = 15):
#   grp <- c(1,1,1,1,1, 2,2,2,2, 3, 4,4,4,4,4,4)
#   q1  <- c(4,5,4,4,5, 1,5,2,4, 3, 2,3,3,2,3,4);  q2 <- c(4,4,5,4,4, 2,4,1,5, 2, 3,3,2,2,3,3)
#   rwg(q1, grp, ranvar=2)$rwg                -> 0.850000000000000 0 NA 0.716666666666667
#   rwg.j(cbind(q1, q2), grp, ranvar=2)$rwg.j -> 0.933333333333333 0 NA 0.883720930232558
#   rwg(q1, grp, ranvar=1.34)$rwg             -> 0.776119402985075 0 NA 0.577114427860697
# Hand check: team 1 q1 variance 0.3 -> 1 - 0.3/2 = 0.85; team 2 variance 10/3 > 2 -> truncated to 0;
# team 4 variance 0.5667 -> 0.71667. No published small example with both its data and its rwg could be
# found (see the README); the values are R multilevel's own output on this example.
R_RWG = [0.850000000000000, 0.0, np.nan, 0.716666666666667]
R_RWG_J = [0.933333333333333, 0.0, np.nan, 0.883720930232558]
R_RWG_134 = [0.776119402985075, 0.0, np.nan, 0.577114427860697]


def test_null_variance_reproduces_r_multilevel_rwg():
    tab = agreement(EXAMPLE, "team", "q1", null_variance=2.0).iloc[0]
    assert tab["null"] == "given" and tab["null_variance"] == 2.0
    assert tab["rwg_mean"] == pytest.approx(np.nanmean(R_RWG), abs=1e-12)
    assert tab["rwg_median"] == pytest.approx(np.nanmedian(R_RWG), abs=1e-12)
    assert tab["rwg_n_groups"] == 3
    per_group = rwg(EXAMPLE["q1"], EXAMPLE["team"], null_variance=2.0)
    np.testing.assert_allclose(per_group.to_numpy(), R_RWG, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rwg(EXAMPLE[["q1", "q2"]], EXAMPLE["team"], null_variance=2.0).to_numpy(), R_RWG_J, atol=1e-12)
    np.testing.assert_allclose(rwg(EXAMPLE["q1"], EXAMPLE["team"], null_variance=1.34).to_numpy(), R_RWG_134, atol=1e-12)
    # the multi-item scale through agreement(): rwg(j) against the same null
    scale = agreement(EXAMPLE, "team", items={"scale": ["q1", "q2"]}, null_variance={"scale": 2.0}).iloc[0]
    assert scale["rwg_mean"] == pytest.approx(np.nanmean(R_RWG_J), abs=1e-12)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_matches_r_multilevel_on_random_data():
    # live cross-check against the reference implementation, where R and multilevel are installed
    probe = subprocess.run(["Rscript", "-e", "library(multilevel)"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("R package multilevel is not installed")
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(12), 6)
    base = rng.integers(1, 6, 12)[g]
    x = np.clip(base + rng.integers(-1, 2, len(g)), 1, 5)
    y = np.clip(base + rng.integers(-2, 3, len(g)), 1, 5)
    script = f"""suppressMessages(library(multilevel))
g <- c({','.join(map(str, g))}); x <- c({','.join(map(str, x))}); y <- c({','.join(map(str, y))})
cat(rwg(x, g, ranvar=1.34)$rwg, sep=" "); cat("\\n")
cat(rwg.j(cbind(x, y), g, ranvar=2)$rwg.j, sep=" "); cat("\\n")
m <- aov(x ~ as.factor(g)); cat(ICC1(m), ICC2(m), "\\n")"""
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=True).stdout.split("\n")
    r_rwg, r_rwgj, r_icc = (np.array(line.split(), dtype=float) for line in out[:3])
    np.testing.assert_allclose(rwg(pd.Series(x), g, null_variance=1.34).to_numpy(), r_rwg, atol=1e-6)
    np.testing.assert_allclose(rwg(pd.DataFrame({"x": x, "y": y}), g, null_variance=2.0).to_numpy(), r_rwgj, atol=1e-6)
    ours = icc_oneway(x, g)  # balanced groups: R's mean group size N/G equals the adjusted k
    assert (ours["icc1"], ours["icc2"]) == pytest.approx(tuple(r_icc), abs=1e-6)


def test_null_variances_of_lebreton_and_senter():
    # LeBreton & Senter (2008, Table 3), 5-point scale: uniform 2.00, slight skew 1.34, moderate skew 0.90,
    # heavy skew 0.44, triangular 1.32, normal 1.04
    assert [null_variance(5, n) for n in NULLS] == pytest.approx([2.0, 1.34, 0.90, 0.44, 1.32, 1.04])
    # the uniform column is (A^2 - 1)/12: the table prints it rounded (6: 2.92, 9: 6.67, 10: 8.25, 11: 10.00)
    assert [round(null_variance(a), 2) for a in (6, 7, 8, 9, 10, 11)] == [2.92, 4.0, 5.25, 6.67, 8.25, 10.0]
    assert null_variance(3) == pytest.approx(8 / 12)  # the uniform null exists for any scale
    assert set(NULL_VARIANCES) == set(range(5, 12))
    # every skewed null has less variance than the uniform one, and more skew means less variance
    for a, row in NULL_VARIANCES.items():
        assert null_variance(a) > row["slight_skew"] > row["moderate_skew"] > row["heavy_skew"] > 0, a


def test_agreement_against_several_nulls():
    tab = agreement(EXAMPLE, "team", "q1", null=["uniform", "slight_skew", "heavy_skew"]).set_index("null")
    assert list(tab.index) == ["uniform", "slight_skew", "heavy_skew"]
    assert tab.loc["slight_skew", "rwg_mean"] == pytest.approx(np.nanmean(R_RWG_134))
    # heavy skew (0.44): team 1 variance 0.3 -> 1 - 0.3/0.44; team 4 variance 0.5667 > 0.44 -> 0
    assert tab.loc["heavy_skew", "rwg_mean"] == pytest.approx((1 - 0.3 / 0.44 + 0 + 0) / 3)
    # the ICCs do not depend on the null
    assert tab["icc1"].nunique() == 1 and tab["icc2"].nunique() == 1


# --------------------------------------------------------------------------- per wave
def _panel(seed=0, teams=12, size=6, waves=4):
    # the same people in every wave: stable team (SD .5) and person (SD .6) effects, wave noise (SD .8)
    rng = np.random.default_rng(seed)
    team = np.repeat(np.arange(teams), size)
    person = np.arange(teams * size)
    t_eff, p_eff = rng.normal(0, 0.5, teams)[team], rng.normal(0, 0.6, teams * size)
    rows = [pd.DataFrame({"team": team, "person": person, "wave": w,
                          "y": np.clip(np.round(3 + t_eff + p_eff + rng.normal(0, 0.8, len(person))), 1, 5)})
            for w in range(1, waves + 1)]
    return pd.concat(rows, ignore_index=True)


def test_per_wave_counts_each_person_once():
    df = _panel()
    per_wave = agreement(df, "team", "y", wave="wave", person="person")
    assert per_wave["wave"].tolist() == [1, 2, 3, 4]
    assert (per_wave["k"] == 6).all() and (per_wave["n"] == 72).all()
    for w, row in per_wave.set_index("wave").iterrows():
        ref = icc_oneway(df.loc[df["wave"] == w, "y"], df.loc[df["wave"] == w, "team"])
        assert (row["icc1"], row["icc2"]) == pytest.approx((ref["icc1"], ref["icc2"]))
        assert row["composition"].startswith(f"person in team within wave {w}: one answer per person")
    pooled = agreement(df, "team", "y", person="person").iloc[0]
    # pooling four waves of the same people counts each person four times: k = 24 and a higher ICC(2)
    assert pooled["k"] == 24 and pooled["icc2"] > per_wave["icc2"].max()
    assert "counted up to 4 times" in pooled["composition"] and "pass wave=" in pooled["composition"]


def test_reading_says_when_icc2_and_rwg_disagree():
    rng = np.random.default_rng(1)
    # large teams far apart, members spread widely: reliable means, no agreement
    g = np.repeat(np.arange(8), 40)
    wide = pd.DataFrame({"team": g, "y": np.clip(np.round(rng.normal(np.linspace(1.8, 4.2, 8)[g], 1.4)), 1, 5)})
    r = agreement(wide, "team", "y").iloc[0]
    assert r["icc2"] >= 0.7 and r["rwg_mean"] < 0.7
    assert r["aggregation"] == "reliable means, members disagree"
    assert r["reading"].startswith(f"ICC(2) = {r['icc2']:.2f}, mean r_wg = {r['rwg_mean']:.2f}: group means are reliable but members disagree")
    # pairs who agree, teams alike: agreement, unreliable means
    g2 = np.repeat(np.arange(30), 2)
    close = pd.DataFrame({"team": g2, "y": np.where(rng.random(60) < 0.8, 4, 3)})
    r2 = agreement(close, "team", "y").iloc[0]
    assert r2["rwg_mean"] >= 0.7 and r2["icc2"] < 0.7 and r2["aggregation"] == "members agree, unreliable means"


def test_reliability_of_agent_wave_means():
    # answers within agents with a known agent effect: ICC(1) = 0.25, 12 answers per agent per wave
    rng = np.random.default_rng(2)
    agents, m = 400, 12
    rows = []
    for w in (1, 2):
        a = np.repeat(np.arange(agents), m)
        rows.append(pd.DataFrame({"employee_id": a, "wave": w,
                                  "csat": rng.normal(0, np.sqrt(0.25), agents)[a] + rng.normal(0, np.sqrt(0.75), agents * m)}))
    df = pd.concat(rows, ignore_index=True)
    tab = reliability(df, "employee_id", "csat", wave="wave")
    assert tab["wave"].tolist() == [1, 2] and (tab["mean_answers"] == 12).all() and (tab["n_units"] == agents).all()
    expect_icc2 = 12 * 0.25 / (1 + 11 * 0.25)  # Spearman-Brown: 0.8
    for _, row in tab.iterrows():
        assert row["icc1"] == pytest.approx(0.25, abs=0.04)  # sampling SD about 0.015
        assert row["icc2"] == pytest.approx(expect_icc2, abs=0.04)
        ref = icc_oneway(df.loc[df["wave"] == row["wave"], "csat"], df.loc[df["wave"] == row["wave"], "employee_id"])
        assert row["icc2"] == pytest.approx(ref["icc2"])
        # answers_for_070: Spearman-Brown at that many answers gives .70
        mneed, i1 = row["answers_for_070"], row["icc1"]
        assert mneed * i1 / (1 + (mneed - 1) * i1) == pytest.approx(0.70)
        assert row["reading"].startswith("employee_id means of csat are reliable")


def test_reliability_bad_input():
    df = pd.DataFrame({"employee_id": ["a", "b"], "csat": [4, 5]})
    with pytest.raises(ValueError, match=r"reliability: every unit has a single answer"):
        reliability(df)
    with pytest.raises(ValueError, match=r"reliability: value column 'nps' not found"):
        reliability(df, value="nps")
    with pytest.raises(ValueError, match=r"reliability: need at least 2 units with answers, found 1"):
        reliability(pd.DataFrame({"employee_id": ["a", "a"], "csat": [4, 5]}))


def test_per_wave_on_simulated_ex_answers(small_study):
    s = small_study
    ex = s.ex_responses.merge(s.employees[["employee_id", "team_id"]], on="employee_id")
    tab = agreement(ex, "team_id", ["esat", "enps"], scale_points={"esat": 5, "enps": 11}, wave="wave",
                    person="employee_id", null=["uniform", "slight_skew"])
    assert len(tab) == 3 * 2 * 2  # waves x values x nulls
    for w, sub in tab.groupby("wave"):
        assert (sub["n"] <= (ex["wave"] == w).sum()).all()
    assert tab["aggregation"].isin(["supported", "reliable means, members disagree",
                                    "members agree, unreliable means", "not supported"]).all()
