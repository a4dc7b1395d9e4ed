"""The data contract: every rule gives a clear error or a counted ledger entry."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from cxex_lab.io import load_study
from cxex_lab.schema import DataContractError, validate
from cxex_lab.study import Study


def _copy(study: Study) -> Study:
    return Study(**{k: v.copy() for k, v in study.tables().items()}, truth=copy.deepcopy(study.truth))


def _problems(study: Study) -> pd.DataFrame:
    with pytest.raises(DataContractError) as info:
        validate(study)
    return info.value.problems


def test_clean_simulated_study_passes_with_empty_ledger(small_study):
    result = validate(small_study)
    assert len(result.ledger) == 0
    assert len(result.study.cx_responses) == len(small_study.cx_responses)


@pytest.mark.parametrize(
    "table, column, value, rule",
    [
        ("cx_responses", "nps", 11, "must be between 0 and 10"),
        ("cx_responses", "csat", 0, "must be between 1 and 5"),
        ("cx_responses", "ces", 8, "must be between 1 and 7"),
        ("ex_responses", "enps", -1, "must be between 0 and 10"),
        ("ex_responses", "esat", 6, "must be between 1 and 5"),
        ("ex_responses", "ees", 0, "must be between 1 and 7"),
        ("ex_responses", "tp_coaching", 9, "must be between 1 and 5"),
        ("ex_responses", "empowerment", 0, "must be between 1 and 5"),
        ("interactions", "handle_seconds", -5, "must not be negative"),
        ("ex_responses", "wave", 0, "must be 1 or more"),
    ],
)
def test_out_of_range_values_are_named_with_rows(small_study, table, column, value, rule):
    s = _copy(small_study)
    s.tables()[table].loc[[2, 5], column] = value
    probs = _problems(s)
    row = probs[(probs["table"] == table) & (probs["column"] == column)].iloc[0]
    assert row["rule"] == rule
    assert row["count"] == 2
    assert row["examples"] == f"row 2 (value {value}), row 5 (value {value})"


def test_error_message_is_plain_words(small_study):
    s = _copy(small_study)
    s.cx_responses.loc[3, "nps"] = 11
    with pytest.raises(DataContractError) as info:
        validate(s)
    assert "cx_responses, column 'nps': must be between 0 and 10 (1 row(s); e.g. row 3 (value 11))" in str(info.value)


def test_missing_column_and_wrong_type(small_study):
    s = _copy(small_study)
    s.ex_responses = s.ex_responses.drop(columns="esat")
    s.cx_responses["csat"] = s.cx_responses["csat"].astype(str)
    probs = _problems(s)
    rules = dict(zip(probs["column"], probs["rule"]))
    assert rules["esat"] == "required column is missing"
    assert rules["csat"].startswith("must hold numbers, found")


def test_fractional_scale_point_is_rejected(small_study):
    s = _copy(small_study)
    s.cx_responses["csat"] = s.cx_responses["csat"].astype(float)
    s.cx_responses.loc[4, "csat"] = 3.5
    probs = _problems(s)
    assert "must be a whole-number scale point" in set(probs["rule"])


@pytest.mark.parametrize(
    "table, keys",
    [
        ("employees", ["employee_id"]),
        ("interactions", ["interaction_id"]),
        ("cx_responses", ["interaction_id"]),
        ("ex_responses", ["employee_id", "wave"]),
        ("customer_outcomes", ["customer_id", "period"]),
    ],
)
def test_duplicate_keys(small_study, table, keys):
    s = _copy(small_study)
    df = s.tables()[table]
    df.loc[1, keys] = df.loc[0, keys].to_numpy()
    setattr(s, table, df)
    probs = _problems(s)
    row = probs[(probs["table"] == table) & probs["rule"].str.startswith("duplicate key")].iloc[0]
    assert row["rule"] == f"duplicate key: each ({', '.join(keys)}) must appear once"
    assert row["count"] == 2 and row["examples"] == "row 0, row 1"


def test_missing_key_value(small_study):
    s = _copy(small_study)
    s.interactions.loc[7, "interaction_id"] = pd.NA
    probs = _problems(s)
    row = probs[(probs["table"] == "interactions") & (probs["column"] == "interaction_id")].iloc[0]
    assert row["rule"] == "missing values are not allowed here"


def test_referential_integrity(small_study):
    s = _copy(small_study)
    s.interactions.loc[10, "employee_id"] = "E99999"
    s.ex_responses.loc[4, "employee_id"] = "E88888"
    probs = _problems(s)
    assert {
        ("interactions", "handled by an employee who is not in the employees table"),
        ("ex_responses", "answer from an employee who is not in the employees table"),
    } <= set(zip(probs["table"], probs["rule"]))


def test_timestamps_in_order(small_study):
    s = _copy(small_study)
    first = s.cx_responses.loc[0, "interaction_id"]
    started = s.interactions.set_index("interaction_id").loc[first, "started_at"]
    s.cx_responses.loc[0, "responded_at"] = started - pd.Timedelta(hours=1)
    s.employees.loc[0, "exit_date"] = s.employees.loc[0, "hire_date"] - pd.Timedelta(days=1)
    probs = _problems(s)
    rules = set(probs["rule"])
    assert "response recorded before its interaction started" in rules
    assert "exit date is before the hire date" in rules
    # the employee now 'left' before hire, so their interactions come after exit too
    assert "interaction started after the handling employee's exit date" in rules


def test_empty_table(small_study):
    s = _copy(small_study)
    s.interactions = s.interactions.iloc[0:0]
    probs = _problems(s)
    assert probs.iloc[0]["rule"].startswith("the table is empty")
    assert probs.iloc[0]["table"] == "interactions"


def test_every_problem_is_listed_at_once(small_study):
    s = _copy(small_study)
    s.cx_responses.loc[1, "nps"] = 11
    s.ex_responses.loc[1, "esat"] = 0
    s.interactions.loc[1, "employee_id"] = "E99999"
    assert len(_problems(s)) == 3


def test_orphan_responses_are_excluded_and_counted_not_fatal(small_study):
    s = _copy(small_study)
    s.cx_responses.loc[[3, 8, 9], "interaction_id"] = ["X1", "X2", "X3"]
    result = validate(s)
    led = result.ledger
    assert led.to_dict("records") == [
        {
            "step": "validate",
            "table": "cx_responses",
            "rule": "response links to no interaction in the interaction log (cannot be attributed to an employee)",
            "rows_excluded": 3,
            "example": "row 3, row 8, row 9",
        }
    ]
    assert len(result.study.cx_responses) == len(s.cx_responses) - 3
    assert result.study.ledger.equals(led)


def test_customer_outcomes_without_interactions_are_counted(small_study):
    s = _copy(small_study)
    s.customer_outcomes.loc[0, "customer_id"] = "C9999999"
    result = validate(s)
    assert result.ledger["table"].tolist() == ["customer_outcomes"]
    assert result.ledger["rows_excluded"].tolist() == [1]


def test_file_is_named_when_loaded_from_disk(small_study, tmp_path):
    s = _copy(small_study)
    s.cx_responses.loc[2, "csat"] = 0
    s.save(tmp_path, fmt="csv")
    with pytest.raises(DataContractError) as info:
        load_study(tmp_path)
    assert f"cx_responses (file {tmp_path / 'cx_responses.csv'}), column 'csat'" in str(info.value)
