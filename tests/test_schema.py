"""The data contract: every rule gives a clear error or a counted ledger entry.

Row numbers are the rows a user sees in the file: for an in-memory table the
index + 2 (the line of a CSV file with one header line), see cxex_lab.contract.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from cxex_lab.contract import EXCLUSIONS
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
    assert row["examples"] == f"row 4 (value {value}), row 7 (value {value})"  # index 2 and 5 + header + 1


def test_error_message_is_plain_words(small_study):
    s = _copy(small_study)
    s.cx_responses.loc[3, "nps"] = 11
    with pytest.raises(DataContractError) as info:
        validate(s)
    assert "cx_responses, column 'nps': must be between 0 and 10 (1 row(s); e.g. row 5 (value 11))" in str(info.value)


def test_missing_column_and_wrong_type(small_study):
    s = _copy(small_study)
    s.ex_responses = s.ex_responses.drop(columns="esat")
    s.cx_responses["csat"] = s.cx_responses["csat"].astype(str)
    probs = _problems(s)
    rules = dict(zip(probs["column"], probs["rule"]))
    assert rules["esat"] == "required column is missing"
    assert rules["csat"] == "must hold numbers, found text values"


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
    assert row["count"] == 2 and row["examples"] == "row 2, row 3"


def test_missing_key_value(small_study):
    s = _copy(small_study)
    s.interactions.loc[7, "interaction_id"] = pd.NA
    probs = _problems(s)
    row = probs[(probs["table"] == "interactions") & (probs["column"] == "interaction_id")].iloc[0]
    assert row["rule"] == "missing values are not allowed here"


def test_unknown_employees_are_excluded_and_counted(small_study):
    """The one policy: an unknown employee's interactions (with their responses) and EX answers are excluded."""
    s = _copy(small_study)
    s.interactions.loc[10, "employee_id"] = "E99999"
    s.ex_responses.loc[4, "employee_id"] = "E88888"
    answered = s.cx_responses["interaction_id"].eq(s.interactions.loc[10, "interaction_id"]).sum()
    result = validate(s)
    led = result.ledger.set_index("rule")
    rule_i = EXCLUSIONS["unknown_employee_interaction"].rule
    assert led.loc[rule_i, "rows_excluded"] == 1 and led.loc[rule_i, "example"] == "row 12"
    assert led.loc[EXCLUSIONS["unknown_employee_ex"].rule, "example"] == "row 6"
    assert led["rows_excluded"].get(EXCLUSIONS["unknown_employee_response"].rule, 0) == answered
    assert len(result.study.interactions) == len(s.interactions) - 1
    assert len(result.study.ex_responses) == len(s.ex_responses) - 1
    assert len(result.study.cx_responses) == len(s.cx_responses) - answered
    assert result.study.interactions["employee_id"].isin(result.study.employees["employee_id"]).all()


def test_no_shared_employee_ids_is_an_error(small_study):
    s = _copy(small_study)
    s.interactions["employee_id"] = "X" + s.interactions["employee_id"]
    probs = _problems(s)
    row = probs[probs["column"] == "employee_id"].iloc[0]
    assert row["rule"].startswith("no interaction's employee_id is in employees")
    assert row["count"] == len(s.interactions)


def test_missing_join_column_is_a_contract_error_not_a_traceback(small_study):
    s = _copy(small_study)
    s.interactions = s.interactions.drop(columns="employee_id")
    with pytest.raises(DataContractError) as info:
        validate(s)
    msg = str(info.value)
    assert "interactions, column 'employee_id': required column is missing; columns present: interaction_id" in msg
    assert "KeyError" not in msg


def test_no_exit_dates_at_all(small_study):
    """An HR extract where nobody left: exit_date is all missing (object or float dtype), and that is valid."""
    for empty in (pd.Series([None] * len(small_study.employees), dtype=object),
                  pd.Series([float("nan")] * len(small_study.employees))):
        s = _copy(small_study)
        s.employees["exit_date"] = empty
        assert len(validate(s).ledger) == 0


def test_optional_columns_and_tables(small_study):
    """No channel, no touchpoint items, no customer outcomes: the contract holds."""
    s = _copy(small_study)
    s.interactions = s.interactions.drop(columns="channel")
    s.ex_responses = s.ex_responses.drop(columns=[c for c in s.ex_responses if c.startswith("tp_")])
    s.customer_outcomes = None
    result = validate(s)
    assert result.study.customer_outcomes is None
    s.ex_responses = None
    probs = _problems(s)
    assert probs.iloc[0]["rule"].startswith("the table is missing")


def test_researcher_named_touchpoints_are_checked_on_their_scale(small_study):
    s = _copy(small_study)
    s.ex_responses["tp_onboarding_buddy"] = 3
    s.ex_responses.loc[0, "tp_onboarding_buddy"] = 6
    probs = _problems(s)
    assert probs.set_index("column").loc["tp_onboarding_buddy", "rule"] == "must be between 1 and 5"


def test_mixed_types_in_a_column_are_reported(small_study):
    s = _copy(small_study)
    s.cx_responses["nps"] = s.cx_responses["nps"].astype(object)
    s.cx_responses.loc[3, "nps"] = "ten"
    probs = _problems(s)
    row = probs.set_index("column").loc["nps"]
    assert row["rule"] == "must hold numbers, found text values"
    assert "row 2 (value '" in row["examples"]


def test_rows_are_file_lines_of_a_csv(small_study, tmp_path):
    """A bad value is reported at the line a text editor shows for it (header = line 1)."""
    s = _copy(small_study)
    s.cx_responses.loc[6, "csat"] = 9
    s.save(tmp_path, fmt="csv")
    lines = (tmp_path / "cx_responses.csv").read_text().splitlines()
    bad_line = next(i + 1 for i, line in enumerate(lines) if line.startswith(s.cx_responses.loc[6, "interaction_id"] + ","))
    with pytest.raises(DataContractError) as info:
        load_study(tmp_path)
    assert f"row {bad_line} (value 9)" in str(info.value)


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
    with pytest.raises(DataContractError) as info:
        validate(s)
    assert "  - interactions: the table is empty; every table of the contract needs at least one row\n" in str(info.value) + "\n"
    assert "0 rows" not in str(info.value)


def test_every_problem_is_listed_at_once(small_study):
    s = _copy(small_study)
    s.cx_responses.loc[1, "nps"] = 11
    s.ex_responses.loc[1, "esat"] = 0
    s.interactions.loc[1, "handle_seconds"] = -1
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
            "rule": EXCLUSIONS["orphan_response"].rule,
            "rows_excluded": 3,
            "example": "row 5, row 10, row 11",
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
