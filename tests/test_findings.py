"""The findings layer (cxex_lab.findings): the table every report renders, the harness rule that
decides what may be read as an effect, the truth check, and reports 01, 02, 05 and 06 against the
estimators they call (same numbers, the design's clustering, internal identities).

Reports 03, 04, 07 and 08 have their own files (test_findings_<name>.py); the replicate-study
coverage of every finding is benchmarks/coverage.py (tests/test_coverage_harness.py runs it small).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from cxex_lab import findings, metrics
from cxex_lab.findings import COLUMNS, REPORTS, finding, findings_table, truth_check
from cxex_lab.simulate import simulate_study
from cxex_lab.workspace import Workspace


@pytest.fixture(scope="module")
def study():
    return simulate_study(n_sites=4, n_employees=160, n_waves=4, seed=3)


@pytest.fixture(scope="module")
def ws(study):
    return Workspace.from_study(study)


def _row(**kw):
    base = dict(key="x.effect", finding="f", estimand="e", estimate=0.3, ci_low=0.1, ci_high=0.5, unit="u", n=100,
                method="m", kind="effect")
    return finding(**(base | kw))


# --------------------------------------------------------------------------- the table and the harness rule
def test_causal_only_for_an_effect_whose_interval_passed_the_harness():
    harness = {"a": {"passed": True, "coverage": 0.95, "bias_se": 0.02},
               "b": {"passed": False, "coverage": 0.81, "bias_se": 0.6},
               "c": {"passed": True, "coverage": 0.95}}
    t = findings_table([_row(key="a"), _row(key="b"), _row(key="c", kind="association"), _row(key="d")],
                       harness=harness).set_index("key")
    assert list(t.columns[:len(COLUMNS) - 1]) == [c for c in COLUMNS if c != "key"]
    assert t["causal"].tolist() == [True, False, False, False]
    assert "81%" in t.loc["b", "caveat"] and "+0.60 standard errors" in t.loc["b", "caveat"]
    assert t.loc["b", "caveat"].startswith("Read as an association")
    assert "not been checked" in t.loc["d", "caveat"]          # never checked: an association
    assert t.loc["c", "caveat"] == ""                          # an association needs no excuse
    assert str(t["n"].dtype) == "Int64"


def test_a_row_without_a_column_or_with_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        _row(kind="causal")
    row = _row()
    del row["unit"]
    with pytest.raises(ValueError, match="lacks column"):
        findings_table([row], harness={})


def test_truth_check_marks_coverage_and_leaves_out_rows_without_truth():
    t = findings_table([_row(key="a"), _row(key="b"), _row(key="c")], harness={})
    truth = {"observed": {"a": {"value": 0.4, "latent": 0.5}, "b": 0.9}}
    tc = truth_check(t, truth, latent={"c": 0.2}).set_index("key")
    assert tc.loc["a", "inside_ci"] is True and tc.loc["a", "latent"] == 0.5
    assert tc.loc["b", "inside_ci"] is False
    assert tc.loc["c", "inside_ci"] is None and tc.loc["c", "latent"] == 0.2 and math.isnan(tc.loc["c", "truth"])
    assert truth_check(t, None) is None                          # real data: no truth check
    assert len(truth_check(t, {"observed": {}})) == 0


# --------------------------------------------------------------------------- 01 data quality
def test_data_quality_counts_are_the_workspace_counts(ws, study):
    f = findings.data_quality(ws)
    assert f.report == "data_quality" and list(f.table.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert f["data_quality.employees"]["estimate"] == len(study.employees)
    assert f["data_quality.interactions"]["estimate"] == len(study.interactions)
    rate = f["data_quality.cx_response_rate"]
    assert rate["estimate"] == pytest.approx(len(study.cx_responses) / len(study.interactions))
    assert (f.table["kind"] == "descriptive").all() and not f.table["causal"].any()


# --------------------------------------------------------------------------- 02 mirror
def test_mirror_nps_is_the_metric_with_answers_clustered_by_agent(ws, study):
    f = findings.mirror(ws)
    row = f["mirror.cx.nps"]
    cx = study.cx_responses.merge(study.interactions[["interaction_id", "employee_id"]], on="interaction_id")
    ref = metrics.nps(cx["nps"], cluster=cx["employee_id"]).iloc[0]
    naive = metrics.nps(cx["nps"]).iloc[0]
    assert row["estimate"] == pytest.approx(ref["estimate"])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref["ci_low"], ref["ci_high"]), abs=1e-6)
    assert row["n"] == len(cx) and row["n_clusters"] == cx["employee_id"].nunique()
    # answers cluster within agents: the design's interval is wider than the independent-answers one
    assert row["ci_high"] - row["ci_low"] > 1.3 * (naive["ci_high"] - naive["ci_low"])
    # EX answers cluster by team
    assert f["mirror.ex.esat"]["n_clusters"] == study.employees["team_id"].nunique()


def test_mirror_never_shows_a_group_below_the_minimum(ws):
    f = findings.mirror(ws, min_group_size=40)
    for name, tab in f.details.items():
        if "n" in tab.columns and "estimate" in tab.columns:
            small = tab[pd.to_numeric(tab["n"], errors="coerce") < 40]
            assert small["estimate"].isna().all(), name


# --------------------------------------------------------------------------- 05 service-profit chain
def test_chain_identities_and_money_is_the_product_of_its_steps(ws):
    f = findings.service_profit_chain(ws, n_boot=60)
    t = f.table.set_index("key")
    ind = t.filter(like="chain.indirect.", axis=0)["estimate"]
    assert len(ind) == 3 and ind.sum() == pytest.approx(t.loc["chain.indirect_total", "estimate"], rel=1e-6)
    assert t.loc["chain.total", "estimate"] == pytest.approx(
        t.loc["chain.direct", "estimate"] + t.loc["chain.indirect_total", "estimate"], rel=1e-6)
    for key in ("retention", "revenue"):
        prod = t.loc["chain.total", "estimate"] * t.loc[f"chain.loyalty.{key}", "estimate"]
        assert t.loc[f"chain.money.{key}", "estimate"] == pytest.approx(prod, rel=1e-6)
        lo, hi = t.loc[f"chain.money.{key}", ["ci_low", "ci_high"]]
        assert lo < prod < hi
    assert "retention per eSat point" in t.loc["chain.money.retention", "unit"]
    # the within-employee estimate is the effect; pooled and between are associations and larger here
    assert t.loc["chain.total", "kind"] == "effect"
    assert (t.loc[["chain.pooled.total", "chain.between.total"], "kind"] == "association").all()
    assert t.loc["chain.pooled.total", "estimate"] > t.loc["chain.total", "estimate"]
    assert (t.loc["chain.total", "n_clusters"]) > 100                  # resampled by employee


# --------------------------------------------------------------------------- 06 direction
def test_direction_fixed_effects_row_is_the_estimator_clustered_by_team(ws):
    from cxex_lab.models.direction import within_effects

    f = findings.direction(ws, invariance=False)
    row = f["direction.fe.ex_to_cx"]
    panel = findings.employee_wave_panel(ws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab, fit = within_effects(panel, "employee_id", "wave", y="csat", x="esat", lags=1, cluster="team_id")
    ref = tab[tab["term"] == "esat->csat"].iloc[0]
    assert row["estimate"] == pytest.approx(ref["estimate"]) and row["ci_low"] == pytest.approx(ref["ci_low"])
    assert row["n_clusters"] == fit.n_clusters == 16
    keys = set(f.table["key"])
    assert {"direction.riclpm.ex_to_cx.3to6m", "direction.riclpm.cx_to_ex.0to3m", "direction.riclpm.ex_to_cx.0to3m",
            "direction.riclpm.cx_to_ex.3to6m", "direction.riclpm.resid_corr", "direction.clpm.ex_to_cx"} <= keys
    assert f["direction.clpm.ex_to_cx"]["kind"] == "association"
    assert f["direction.riclpm.resid_corr"]["kind"] == "association"
    assert {"aligned", "reconciliation"} <= set(f.details)


# --------------------------------------------------------------------------- every report survives small studies
SHAPES = {"two waves": dict(n_sites=3, n_employees=90, n_waves=2, seed=1),
          "one site": dict(n_sites=1, n_employees=60, n_waves=4, seed=2),
          "24 employees": dict(n_sites=2, n_employees=24, n_waves=3, seed=3)}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_report_survives_a_small_study(shape):
    """A real study can be too short or too small for some models: the report still comes back,
    with the findings it can support and notes saying what it could not estimate."""
    w = Workspace.from_study(simulate_study(**SHAPES[shape]))
    for name, (fn, spec) in REPORTS.items():
        f = fn(w, **(spec["harness"] | ({"n_boot": 20} if "n_boot" in spec["harness"] else {})))
        assert list(f.table.columns[:len(COLUMNS)]) == list(COLUMNS), name
        assert all(isinstance(n, str) and n for n in f.notes), name
        est = f.table[f.table["kind"] != "descriptive"].dropna(subset=["ci_low", "ci_high"])
        assert (est["ci_low"] <= est["ci_high"]).all(), name   # (a percentile interval may exclude its estimate)
        if len(f.table) == 0:
            assert f.notes, f"{name} on {shape}: no finding and no note saying why"
    w.close()
