"""Agreement statistics against hand computations, pingouin, and data with known ICC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest

from cxex_lab.agreement import agreement


def test_hand_computed_oneway_anova():
    # groups a=[4,5,4] (mean 13/3), b=[2,2,3] (7/3), c=[3,4,3] (10/3); grand mean 10/3
    # SSB = 3*(1 + 1 + 0) = 6, MSB = 6/2 = 3
    # SSW = 3 groups x (1/9 + 4/9 + 1/9) = 2, MSW = 2/6 = 1/3
    # ICC(1) = (3 - 1/3) / (3 + 2/3) = 8/11 ; ICC(2) = (3 - 1/3)/3 = 8/9 ; F = 9
    df = pd.DataFrame({"team": list("aaabbbccc"), "esat": [4, 5, 4, 2, 2, 3, 3, 4, 3]})
    r = agreement(df, "team", ["esat"], scale_points=5).iloc[0]
    assert r["icc1"] == pytest.approx(8 / 11)
    assert r["icc2"] == pytest.approx(8 / 9)
    assert r["F"] == pytest.approx(9.0)
    # rwg per group: s^2 = 1/3, sigma_EU^2 = (25-1)/12 = 2 -> 1 - 1/6
    assert r["rwg_mean"] == pytest.approx(1 - (1 / 3) / 2)
    assert r["n_groups"] == 3 and r["mean_group_size"] == 3


def test_matches_pingouin_icc_on_balanced_data():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(30), 4)
    y = rng.normal(size=30)[g] * 0.7 + rng.normal(size=120)
    df = pd.DataFrame({"team": g, "rater": np.tile(np.arange(4), 30), "y": y})
    ours = agreement(df, "team", ["y"]).iloc[0]
    ref = pg.intraclass_corr(data=df, targets="team", raters="rater", ratings="y").set_index("Type")
    assert ours["icc1"] == pytest.approx(ref.loc["ICC(1,1)", "ICC"], abs=1e-10)
    assert ours["icc2"] == pytest.approx(ref.loc["ICC(1,k)", "ICC"], abs=1e-10)


def test_recovers_known_icc_with_unbalanced_groups():
    rng = np.random.default_rng(1)
    sizes = rng.integers(3, 15, size=600)
    g = np.repeat(np.arange(600), sizes)
    y = rng.normal(0, np.sqrt(0.2), 600)[g] + rng.normal(0, np.sqrt(0.8), len(g))
    r = agreement(pd.DataFrame({"team": g, "y": y}), "team", ["y"]).iloc[0]
    assert r["icc1"] == pytest.approx(0.2, abs=0.03)


def test_rwg_extremes_and_multi_item():
    same = pd.DataFrame({"team": list("aabb"), "q1": [4, 4, 2, 2], "q2": [3, 3, 5, 5]})
    r = agreement(same, "team", ["q1"], items={"scale": ["q1", "q2"]}).set_index("value")
    assert r.loc["q1", "rwg_mean"] == 1.0 and r.loc["scale", "rwg_mean"] == 1.0
    # members spread uniformly over the 5 points: no agreement (truncated at 0)
    spread = pd.DataFrame({"team": ["a"] * 5 + ["b"] * 5, "q1": [1, 2, 3, 4, 5] * 2})
    assert agreement(spread, "team", ["q1"]).iloc[0]["rwg_mean"] == 0.0


@pytest.mark.parametrize(
    "df, kwargs, msg",
    [
        (pd.DataFrame({"t": ["a", "b"], "y": [1, 2]}), {"group": "team", "values": ["y"]}, r"column\(s\) \['team'\] not found"),
        (pd.DataFrame({"t": ["a", "a"], "y": [1, 2]}), {"group": "t", "values": ["y"]}, "need at least 2 groups"),
        (pd.DataFrame({"t": ["a", "b"], "y": ["x", "z"]}), {"group": "t", "values": ["y"]}, "column 'y' must hold numbers"),
    ],
)
def test_bad_input(df, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        agreement(df, **kwargs)
