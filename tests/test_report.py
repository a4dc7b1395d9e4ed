"""Notebook helpers: response rates, truth check, privacy-safe tables."""

from __future__ import annotations

import pandas as pd
import pytest

from cxex_lab.ledger import Ledger
from cxex_lab.report import load_segment, reportable, response_rates, study_overview, truth_check
from tests.conftest import SAMPLE


def test_response_rates_match_hand_counts(small_study):
    rr = response_rates(small_study)
    ex1 = rr.query("side == 'EX' and wave == 1").iloc[0]
    assert ex1["responded"] == (small_study.ex_responses["wave"] == 1).sum()
    cx = rr[rr["side"] == "CX"]
    assert cx["eligible"].sum() == len(small_study.interactions)
    assert cx["responded"].sum() == small_study.cx_responses["interaction_id"].isin(small_study.interactions["interaction_id"]).sum()
    assert rr["rate"].between(0, 1).all()


def test_truth_check_flags_coverage():
    est = pd.DataFrame({"term": ["a", "b"], "estimate": [0.2, 0.5], "ci_low": [0.1, 0.45], "ci_high": [0.3, 0.55]})
    out = truth_check(est, {"a": 0.25, "b": 0.3})
    assert out["inside_ci"].tolist() == [True, False]


def test_reportable_suppresses_and_drops_ids():
    df = pd.DataFrame({"employee_id": ["E1", "E2"], "site_id": ["S1", "S2"], "n": [3, 12], "csat": [4.1, 3.9]})
    led = Ledger()
    out = reportable(df, "n", min_group_size=5, ledger=led)
    assert "employee_id" not in out.columns
    assert out["csat"].isna().tolist() == [True, False] and out["suppressed"].tolist() == [True, False]
    assert led.frame["rows_excluded"].tolist() == [1]


def test_load_segment_of_the_sample():
    study = load_segment(SAMPLE, "S03")
    assert set(study.employees["site_id"]) == {"S03"}
    assert study.ledger["rows_excluded"].sum() == 25
    ov = study_overview(study)
    assert ov.set_index("what").loc["sites", "value"] == "1"
    with pytest.raises(ValueError, match="valid site ids are"):
        load_segment(SAMPLE, "nowhere")
