"""Report 08's findings (cxex_lab.findings.study_design): the headline report 06 quotes, its
sensitivity with the headline's own clustering, power read from the cache or simulated, and
the study shapes the report must survive (2 waves, 1 site, 1 team, few employees, no CX)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cxex_lab import findings
from cxex_lab.findings import employee_wave_panel, headline_effect, study_design
from cxex_lab.models.power import _TABLES
from cxex_lab.simulate import simulate_study
from cxex_lab.workspace import Workspace

UNIT = "CSAT points (1-5) per eSat point (1-5)"
SENS_KEYS = {"study_design.headline", "study_design.partial_r2", "study_design.rv", "study_design.rv_alpha",
             "study_design.stable_traits.share"}
#: No EX -> CX path of any kind and no feedback: the headline's observed-scale value is exactly 0.
NULL_WORLD = dict(ex_to_cx=0.0, ex_direct_cx=0.0, ex_to_ops={"fcr": 0.0, "aht": 0.0, "transfer": 0.0},
                  cx_to_ex=0.0, insight_cx_to_ex=0.0)


def _ws(**kw):
    size = dict(n_sites=4, n_employees=160, n_waves=4, seed=3) | kw
    return Workspace.from_study(simulate_study(**size))


@pytest.fixture(scope="module")
def small():
    return _ws()


def test_keys_kinds_units_and_no_nan(small):
    F = study_design(small, power=False)
    t = F.table.set_index("key")
    assert SENS_KEYS <= set(t.index), list(t.index)
    assert t.loc["study_design.headline", "kind"] == "effect"
    assert (t.drop(index="study_design.headline")["kind"] == "descriptive").all()
    assert t.loc["study_design.headline", "unit"] == UNIT
    assert (t.loc[["study_design.rv", "study_design.rv_alpha", "study_design.partial_r2"], "unit"] == "share").all()
    h = t.loc["study_design.headline"]
    assert h["ci_low"] < h["estimate"] < h["ci_high"] and h["n_clusters"] == 16  # 4 sites x 4 teams
    for k in ("study_design.rv", "study_design.rv_alpha", "study_design.stable_traits.share"):
        assert 0 <= t.loc[k, "estimate"] <= 1
    assert t.loc["study_design.rv_alpha", "estimate"] <= t.loc["study_design.rv", "estimate"]
    # the sensitivity table: no NaN anywhere; no confounder = the headline; site never moves it
    s = F.details["sensitivity"]
    assert not s[["share_of_esat", "share_of_csat", "estimate", "ci_low", "ci_high"]].isna().any().any()
    assert s.iloc[0]["estimate"] == pytest.approx(h["estimate"]) and s.iloc[0]["ci_low"] == pytest.approx(h["ci_low"])
    site = s[s["scenario"].str.contains("site")]
    assert len(site) >= 3 and np.allclose(site["estimate"], h["estimate"])
    rv = s[s["scenario"] == "At the robustness value"].iloc[0]
    assert rv["estimate"] == pytest.approx(0, abs=1e-10)
    assert set(F.details["benchmarks"]["benchmark"]) == {"Stable traits (the employee's mean eSat)", "Site"}
    assert not F.details["benchmarks"].isna().any().any()
    assert {"r2dz_x", "r2yz_dx", "estimate"} <= set(F.details["contours"].columns)
    assert "design" not in F.details  # power=False: nothing simulated


def test_headline_is_the_number_report_06_quotes(small):
    F = study_design(small, power=False)
    h = F["study_design.headline"]
    fit = headline_effect(employee_wave_panel(small))
    row = fit.table.iloc[0]
    assert (h["estimate"], h["ci_low"], h["ci_high"]) == pytest.approx((row["estimate"], row["ci_low"], row["ci_high"]))
    assert fit.fit.cluster == "team_id"
    d = findings.direction(small, multiple_indicators=False, invariance=False)["direction.fe.ex_to_cx"]
    assert (h["estimate"], h["ci_low"], h["ci_high"]) == pytest.approx((d["estimate"], d["ci_low"], d["ci_high"]))


def test_interval_covers_zero_when_ex_has_no_effect_on_cx():
    # end to end on the observed pipeline: no EX -> CX path and no feedback, so the headline's
    # observed-scale truth is 0; a large study's 99% interval covers it, and the estimate is
    # within 3 SE of it
    ws = Workspace.from_study(simulate_study(n_sites=10, n_employees=1200, n_waves=5, seed=11, tables=_TABLES,
                                             **NULL_WORLD), validate=False)
    F = study_design(ws, power=False, alpha=0.01)
    h = F["study_design.headline"]
    assert h["ci_low"] <= 0 <= h["ci_high"], h.to_dict()
    # and with the simulator's default effect, the same design finds a positive effect
    ws1 = Workspace.from_study(simulate_study(n_sites=10, n_employees=1200, n_waves=5, seed=11, tables=_TABLES),
                               validate=False)
    h1 = study_design(ws1, power=False, alpha=0.01)["study_design.headline"]
    assert h1["ci_low"] > 0


def test_power_findings_from_simulation(tmp_path):
    ws = _ws(n_sites=2, n_employees=60, n_waves=3, seed=5)
    F = study_design(ws, n_sims=4, null_sims=6, type1_halfwidth=0.5, effects=(0.0, 0.2, 0.5), grid_effects=(0.2,),
                     employees=[60], waves=[3], jobs=1, cache=tmp_path)
    t = F.table.set_index("key")
    assert {"study_design.type1", "study_design.power.headline"} <= set(t.index)
    for k in ("study_design.type1", "study_design.power.headline"):
        r = t.loc[k]
        assert r["unit"] == "share" and r["kind"] == "descriptive"
        assert 0 <= r["ci_low"] <= r["estimate"] <= r["ci_high"] <= 1
    own = F.details["power_own"]
    assert sorted(own["effect"]) == [0.0, 0.2, 0.5] and (own["n_sims"] >= 4).all()
    assert F.details["power_grid"]["this_study"].all()
    d = F.details["design"].set_index("parameter")
    assert d.loc["n_employees", "value"] == "60" and d.loc["n_employees", "source"] == "this study"
    assert d.loc["ar_ex", "source"] == "assumed (default)"
    # read back from the cache without simulating again
    again = study_design(ws, n_sims=4, null_sims=6, type1_halfwidth=0.5, effects=(0.0, 0.2, 0.5),
                         grid_effects=(0.2,), employees=[60], waves=[3], cache=tmp_path, compute=False)
    assert again["study_design.type1"]["estimate"] == t.loc["study_design.type1", "estimate"]


def test_power_over_budget_is_not_simulated_and_says_how_long(tmp_path, small):
    F = study_design(small, max_seconds=0.0, cache=tmp_path)
    assert "study_design.type1" not in set(F.table["key"])
    assert any("cxex-lab power --data" in n and "about" in n for n in F.notes)
    assert SENS_KEYS <= set(F.table["key"])  # the rest of the report is there


def test_shipped_grid_serves_the_sample_without_simulating():
    from tests.conftest import SAMPLE

    F = study_design(Workspace.open(SAMPLE), cache=False, compute=False)
    t = F.table.set_index("key")
    assert {"study_design.type1", "study_design.power.headline", "study_design.detectable"} <= set(t.index)
    t1 = t.loc["study_design.type1"]
    assert t1["ci_high"] - t1["ci_low"] <= 0.04 + 1e-9 and t1["n"] >= 460
    assert not any("not yet simulated" in n for n in F.notes)


# --------------------------------------------------------------------------- study shapes
def test_two_waves_says_what_cannot_be_estimated(tmp_path):
    ws = _ws(n_waves=2)
    F = study_design(ws, cache=tmp_path, compute=False)
    assert not {"study_design.headline", "study_design.rv"} & set(F.table["key"])
    assert any("3 or more" in n for n in F.notes)
    assert "design" in F.details  # what power rests on is still stated


def test_one_site_leaves_out_the_site_benchmark():
    F = study_design(_ws(n_sites=1, n_employees=80), power=False)
    assert set(F.details["benchmarks"]["benchmark"]) == {"Stable traits (the employee's mean eSat)"}
    assert any("Only one site" in n for n in F.notes)
    assert not F.details["sensitivity"]["scenario"].str.contains("site").any()


def test_one_team_clusters_by_employee_as_report_06():
    ws = _ws(n_sites=1, n_employees=30, teams_per_site=1)
    F = study_design(ws, power=False)
    h = F["study_design.headline"]
    assert "by employee" in h["method"] and 2 <= h["n_clusters"] <= 30
    assert any("clustered by employee" in n for n in F.notes)


def test_few_employees_notes_and_no_error():
    F = study_design(_ws(n_sites=1, n_employees=12, teams_per_site=3), power=False)
    assert any("clusters" in n.lower() for n in F.notes)
    assert "study_design.headline" in set(F.table["key"])


def test_no_cx_answers(tmp_path):
    # the contract refuses an empty CX table on validation; a study read without it (or a
    # segment whose agents have no rated interactions) must still give a report
    study = simulate_study(n_sites=2, n_employees=40, n_waves=4, seed=2)
    study.cx_responses = study.cx_responses.iloc[0:0]
    F = study_design(Workspace.from_study(study, validate=False), cache=tmp_path, compute=False)
    assert "study_design.headline" not in set(F.table["key"])
    assert any("no customer (CX) answers" in n for n in F.notes)
    assert any("No CX answers" in n for n in F.notes)


def test_no_customer_outcome_table():
    study = simulate_study(n_sites=2, n_employees=60, n_waves=4, seed=2)
    study.customer_outcomes = None
    F = study_design(Workspace.from_study(study), power=False)
    assert SENS_KEYS <= set(F.table["key"])


def test_bad_min_group_size():
    with pytest.raises(ValueError, match="min_group_size"):
        study_design(_ws(n_sites=1, n_employees=20), power=False, min_group_size=0)
