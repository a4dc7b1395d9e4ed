"""Power of the headline test on the observed pipeline (cxex_lab.models.power), and the
earlier RI-CLPM power on latent panels (riclpm_power)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import cxex_lab
from cxex_lab.models import power as pw_func
from cxex_lab.models.power import (
    SCHEMA,
    Design,
    _cell_id,
    _TABLES,
    _wilson,
    design_of,
    linked_panels,
    power,
    power_report,
    riclpm_power,
    seconds_needed,
    type_one,
)
from cxex_lab.simulate import DEFAULT_PARAMS, simulate_study
from tests.conftest import SAMPLE

SMALL = Design(60, 3, 2)  # 2 sites x 4 teams of 7-8 employees, 3 waves: ~0.1 s a study


# --------------------------------------------------------------------------- design
def test_models_package_exports_the_observed_power():
    assert pw_func is power


def test_design_key_drops_defaults_and_keeps_team_size():
    assert Design().key() == Design(400, 6, 10, {"teams_per_site": 4, "ex_to_cx": 0.25}).key()
    assert Design() == Design(params={"cm_halo": 0.35}) and Design() != Design(params={"cm_halo": 0.0})
    d = Design()  # 40 teams of 10
    assert d.n_teams == 40 and d.team_size == 10
    small = d.with_size(100)
    assert small.n_teams == 10 and small.team_size == 10 and small.n_waves == 6
    assert d.with_size(800, 3).n_teams == 80 and d.with_size(800, 3).n_waves == 3


def test_same_wave_paths_scale_with_the_effect():
    d = Design()
    kw = d.simulator_kwargs(0.25)  # the simulator's default model
    assert kw["ex_to_cx"] == 0.25 and kw["ex_direct_cx"] == pytest.approx(DEFAULT_PARAMS["ex_direct_cx"])
    assert kw["ex_to_ops"] == pytest.approx(DEFAULT_PARAMS["ex_to_ops"])
    null = d.simulator_kwargs(0.0)  # no EX -> CX effect at all
    assert null["ex_to_cx"] == 0 and null["ex_direct_cx"] == 0 and all(v == 0 for v in null["ex_to_ops"].values())
    half = d.simulator_kwargs(0.125)
    assert half["ex_direct_cx"] == pytest.approx(DEFAULT_PARAMS["ex_direct_cx"] / 2)


def test_design_from_the_sample_truth_and_from_its_workspace():
    truth = json.loads((SAMPLE / "truth.json").read_text())
    d = Design.from_truth(truth)
    assert (d.n_employees, d.n_waves, d.n_sites) == (400, 6, 10)
    assert d.site_effects == pytest.approx([v for _, v in sorted(truth["study"]["site_effects"].items())])
    assert d.params == {"orphan_responses": 25}  # every other parameter is the default
    from cxex_lab.workspace import Workspace

    with Workspace.open(SAMPLE) as ws:
        measured, facts = design_of(ws)
    # the sample is the simulator's default design; its EX answer rate (82%) is below the
    # parameter (85%) because low-EX employees answer less: design_of inverts that
    assert measured == Design(), measured
    assert 0.80 < facts["ex_response_rate"] < 0.84 and facts["ex_response_param"] == pytest.approx(0.85, abs=0.02)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_employees=0), "n_employees must be a positive integer"),
    (dict(params={"not_a_param": 1}), "unknown simulator parameter"),
    (dict(params={"ex_to_cx": 0.0}), "must not be 0"),
    (dict(n_sites=2, site_effects=[0.1]), "site_effects has 1 values for 2 sites"),
])
def test_design_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Design(**kwargs)


def test_power_bad_input():
    with pytest.raises(ValueError, match="needs n_waves >= 3"):
        power(SMALL, n_waves=2, n_sims=1, cache=False)
    with pytest.raises(ValueError, match="n_sims must be a positive integer"):
        power(SMALL, n_sims=0, cache=False)
    with pytest.raises(ValueError, match="in the Design, not as keywords"):
        power(SMALL, n_sims=1, cache=False, cm_halo=0.0)
    with pytest.raises(ValueError, match="effect must be a number"):
        power(SMALL, effect="big", n_sims=1, cache=False)


# --------------------------------------------------------------------------- the pipeline
def test_stacked_linkage_equals_linking_each_study_alone():
    from cxex_lab.findings import employee_wave_panel
    from cxex_lab.workspace import Workspace

    studies = [simulate_study(n_sites=2, n_employees=40, n_waves=4, seed=s, tables=_TABLES) for s in range(3)]
    stacked = linked_panels(studies)
    for study, got in zip(studies, stacked):
        with Workspace.from_study(study, validate=False) as ws:
            alone = employee_wave_panel(ws)
        key = ["employee_id", "wave"]
        pd.testing.assert_frame_equal(alone.sort_values(key).reset_index(drop=True),
                                      got.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_cells_are_reproducible_extendable_and_independent_of_the_grid(tmp_path):
    a = power(SMALL, effect=0.3, n_sims=3, jobs=1, cache=tmp_path / "a")
    both = power(SMALL, effect=[0.0, 0.3], n_sims=3, jobs=1, cache=tmp_path / "b")
    row = both[both["effect"] == 0.3].iloc[0]
    assert row["effect_observed"] == a.iloc[0]["effect_observed"] and row["power"] == a.iloc[0]["power"]
    # extending a cached cell adds simulations 3 and 4; the first three are reused, not redrawn
    more = power(SMALL, effect=0.3, n_sims=5, jobs=1, cache=tmp_path / "a")
    assert more.iloc[0]["n_sims"] + more.iloc[0]["n_failed"] == 5 and "cache" in more.iloc[0]["source"]
    fresh = power(SMALL, effect=0.3, n_sims=5, jobs=1, cache=False)
    assert more.iloc[0]["effect_observed"] == pytest.approx(fresh.iloc[0]["effect_observed"], rel=1e-5)
    # read back without computing; a missing cell comes back empty
    got = power(SMALL, effect=[0.3, 0.15], n_sims=5, cache=tmp_path / "a", compute=False)
    assert got["n_sims"].tolist()[0] + got["n_failed"].tolist()[0] == 5
    assert got.iloc[1]["n_sims"] == 0 and got.iloc[1]["source"] == "missing" and np.isnan(got.iloc[1]["power"])


def test_two_processes_give_the_same_cell_as_one(tmp_path):
    one = power(SMALL, effect=0.2, n_sims=4, jobs=1, cache=False)
    two = power(SMALL, effect=0.2, n_sims=4, jobs=2, cache=False)
    cols = ["effect_observed", "effect_observed_sd", "mean_se", "power", "n_sims"]
    pd.testing.assert_frame_equal(one[cols], two[cols])


@pytest.mark.slow
def test_type_one_rate_is_near_alpha_and_power_rises_with_effect_and_size(tmp_path):
    # No EX -> CX effect and no feedback: the headline's true value is 0, so its rejection rate
    # is the test's size. 300 studies: the Wilson interval must contain 5%.
    d = Design(80, 4, 2, {"cx_to_ex": 0.0, "insight_cx_to_ex": 0.0})
    null = power(d, effect=0.0, n_sims=300, cache=tmp_path)
    r = null.iloc[0]
    assert r["n_failed"] == 0
    assert r["power_ci_low"] <= 0.05 <= r["power_ci_high"], r.to_dict()
    assert abs(r["effect_observed"]) < 3 * r["effect_observed_sd"] / math.sqrt(r["n_sims"])
    tab = power(d, n_employees=[40, 160], effect=[0.15, 0.4], n_sims=60, cache=tmp_path).set_index(
        ["n_employees", "effect"])
    p = tab["power"]
    assert p[(160, 0.4)] > p[(40, 0.4)] and p[(160, 0.4)] > p[(160, 0.15)]
    # the observed-scale slope grows with the latent effect (attenuated by the survey scales)
    assert 0 < tab.loc[(160, 0.15), "effect_observed"] < tab.loc[(160, 0.4), "effect_observed"] < 0.4


def test_type_one_adds_simulations_until_the_interval_is_narrow(tmp_path):
    row = type_one(SMALL, n_sims=10, halfwidth=0.15, max_sims=60, jobs=1, cache=tmp_path)
    half = (row["power_ci_high"] - row["power_ci_low"]) / 2
    assert half <= 0.15 or row["n_sims"] + row["n_failed"] >= 60
    assert row["n_sims"] + row["n_failed"] >= 10


def test_wilson_interval_matches_the_formula():
    # Wilson (1927): 5 of 100 at 95%: centre (0.05 + 1.96^2/200) / (1 + 1.96^2/100)
    z = 1.959963984540054
    c = (0.05 + z**2 / 200) / (1 + z**2 / 100)
    h = z * math.sqrt(0.05 * 0.95 / 100 + z**2 / 40000) / (1 + z**2 / 100)
    assert _wilson(5, 100) == pytest.approx((c - h, c + h))
    assert _wilson(0, 10)[0] == 0.0 and _wilson(10, 10)[1] == 1.0


def test_seconds_needed_grows_with_the_design():
    assert seconds_needed([(Design(), 100)], jobs=2) > seconds_needed([(Design(100, 3), 100)], jobs=2) > 0
    assert seconds_needed([], jobs=1) == 0


def test_power_report_without_computing_says_what_is_missing(tmp_path):
    rep = power_report(SMALL, n_sims=5, null_sims=10, cache=tmp_path, compute=False)
    assert rep.missing_studies > 0 and rep.seconds_needed > 0
    assert any("cxex-lab power --data" in n for n in rep.notes)
    assert (rep.own["n_sims"] == 0).all() and rep.type_one is None
    two = power_report(Design(60, 2, 2), n_sims=5, null_sims=10, cache=tmp_path, compute=False)
    assert len(two.own) == 0 and any("3 or more waves" in n for n in two.notes)
    assert set(two.grid["n_waves"]) == {3, 4, 6}


def test_power_report_interpolates_power_at_an_observed_slope(tmp_path):
    rep = power_report(SMALL, n_sims=4, null_sims=4, effects=(0.0, 0.2, 0.4), grid_effects=(0.2,),
                       employees=[60], waves=[3], jobs=1, cache=tmp_path, type1_halfwidth=0.5)
    own = rep.own.sort_values("effect")
    a, b = rep.mapping()  # least squares of the cells' mean estimates on the latent effects
    ref = np.polyfit(own["effect"], own["effect_observed"], 1)
    assert (b, a) == pytest.approx(tuple(ref))
    at = rep.at_observed(a + b * 0.2)
    assert at["effect"] == pytest.approx(0.2) and at["power"] == pytest.approx(own["power"].iloc[1])
    assert rep.at_observed(-(a + b * 0.2))["effect"] == pytest.approx(0.2)  # two-sided: the sign is ignored
    assert rep.at_observed(10.0)["beyond"] is True
    assert rep.missing_studies == 0 and len(rep.grid) == 1


# --------------------------------------------------------------------------- the shipped grid
def _shipped():
    from importlib import resources

    return json.loads(resources.files("cxex_lab").joinpath("data/power_grid.json").read_text())


def test_shipped_grid_is_for_this_package_and_the_default_design():
    grid = _shipped()
    assert grid["schema"] == SCHEMA and grid["version"] == cxex_lab.__version__, \
        "regenerate: cxex-lab power --defaults --out cxex_lab/data/power_grid.json"
    assert Design(**{k: v for k, v in grid["design"].items()}) == Design()
    rep = power_report(Design(), cache=False, compute=False)
    assert rep.missing_studies == 0, "the shipped grid lacks cells report 08 reads for the sample"
    t1 = rep.type_one
    assert t1["power_ci_high"] - t1["power_ci_low"] <= 0.04 + 1e-9  # the type-I rate to within ±2 points


def test_shipped_grid_reproduces_on_this_code():
    # the first simulations of a shipped cell, recomputed now, give the same estimates: the
    # simulator, the linkage and the estimator have not changed since the grid was written
    from cxex_lab.models.power import _Cell, _run_batch

    grid = _shipped()
    d = Design()
    cid = _cell_id(d, 0.25, grid["seed"])
    cell = _Cell.from_record(grid["cells"][f"{cid}-v{cxex_lab.__version__}"], "shipped")
    _, res, failed, _ = _run_batch((cid, d.as_dict(), 0.25, grid["seed"], [0, 1], 0.05))
    assert failed == 0
    np.testing.assert_allclose([r[1] for r in sorted(res)], cell.estimate[:2], rtol=1e-5)


# --------------------------------------------------------------------------- RI-CLPM on latent panels
RICLPM_COLUMNS = ["n_units", "n_waves", "effect", "power", "power_ci_low", "power_ci_high", "n_sims", "n_failed"]


def test_riclpm_type_one_error_near_alpha():
    tab = riclpm_power(150, 4, 0.0, n_sims=120, seed=1)
    assert list(tab.columns) == RICLPM_COLUMNS and len(tab) == 1
    row = tab.iloc[0]
    assert row["n_failed"] <= 2
    assert 0.01 <= row["power"] <= 0.11, row.to_dict()


def test_riclpm_power_rises_with_n_and_effect():
    tab = riclpm_power([100, 400], 4, [0.1, 0.2], n_sims=30, seed=2).set_index(["n_units", "effect"])
    p = tab["power"]
    assert len(tab) == 4 and (tab["n_sims"] == 30).all()
    assert p[(400, 0.1)] > p[(100, 0.1)] + 0.2
    assert p[(100, 0.2)] > p[(100, 0.1)] + 0.2
    assert p[(400, 0.2)] >= p[(400, 0.1)] and p[(400, 0.2)] >= 0.9
    assert (tab["power_ci_low"] <= p).all() and (p <= tab["power_ci_high"]).all()


def test_riclpm_reproducible_with_seed_and_missing_data():
    a = riclpm_power(120, 3, 0.25, n_sims=4, seed=7, missing=0.1)
    b = riclpm_power(120, 3, 0.25, n_sims=4, seed=7, missing=0.1)
    assert a.equals(b)


def test_riclpm_power_bad_input():
    with pytest.raises(ValueError, match="n_waves >= 3"):
        riclpm_power(100, 2, 0.2, n_sims=2)
    with pytest.raises(ValueError, match="pass the EX -> CX lag as `effect`"):
        riclpm_power(100, 4, 0.2, n_sims=2, ex_to_cx=0.3)
    with pytest.raises(ValueError, match="n_sims must be a positive integer"):
        riclpm_power(100, 4, 0.2, n_sims=0)
    with pytest.raises(ValueError, match="unknown parameter"):
        riclpm_power(100, 4, 0.2, n_sims=1, not_a_param=1.0)


@pytest.mark.slow
def test_power_at_truth_matches_the_rejection_rate_of_replicate_studies(tmp_path):
    # what the harness does: replicate studies with the site effects held fixed, the report's
    # findings function on each (validated workspace, all tables), the share whose headline
    # interval excludes zero; against power_at_truth (independent seeds): the two rates agree
    # within their Monte Carlo errors
    from cxex_lab.findings import study_design
    from cxex_lab.models.power import power_at_truth
    from cxex_lab.workspace import Workspace

    base = simulate_study(n_sites=2, n_employees=60, n_waves=3, seed=1, ex_to_cx=0.4)
    truth = base.truth
    sites = [v for _, v in sorted(truth["study"]["site_effects"].items())]
    hits = []
    for r in range(60):
        st = simulate_study(n_sites=2, n_employees=60, n_waves=3, seed=1000 + r, site_effects=sites, ex_to_cx=0.4)
        h = study_design(Workspace.from_study(st), power=False, contours=False)["study_design.headline"]
        hits.append(h["ci_low"] > 0 or h["ci_high"] < 0)
    rate = float(np.mean(hits))
    sim = power_at_truth(truth, n_sims=120, jobs=1, cache=tmp_path)
    se = math.sqrt(rate * (1 - rate) / 60 + sim["power"] * (1 - sim["power"]) / sim["n_sims"])
    assert abs(rate - sim["power"]) <= 3 * max(se, 0.02), (rate, sim.to_dict())
