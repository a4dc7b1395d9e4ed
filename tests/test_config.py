"""The study config (v2): every error at once, with file, line, key path, what is wrong and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxex_lab.config import ConfigError, load_config, parse_config
from cxex_lab.privacy import check_min_group_size

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "exports"

BAD = """\
version: 2
study:
  timezone: Europe/Lundon
  min_group_size: 2
tables:
  cx_responses:
    file: cx.csv
    colums: {}
    columns:
      npss: Q1
      nps: {column: Q1, scale: [1, 10]}
      csat: {column: Q2, scale: [1, 10], labels: {"Very good": 12}}
      responded_at: {column: D, format: "dd/mm/yyyy"}
    filters:
      - {column: Status, equals: x}
  interactions:
    file: log.docx
    columns:
      resolved_first_contact: {column: FCR, true: [Y]}
  custumers: {}
"""


@pytest.fixture()
def bad_config(tmp_path):
    p = tmp_path / "study.yaml"
    p.write_text(BAD)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value


def test_every_config_error_is_reported_at_once(bad_config):
    err = bad_config
    by_path = {".".join(map(str, e["path"])): e for e in err.errors}
    expected = {
        "study.timezone": (3, "unknown time zone 'Europe/Lundon'; use an IANA name such as 'Europe/London' or 'UTC'"),
        "study.min_group_size": (4, "min_group_size 2 is refused"),
        "tables.cx_responses.colums": (8, "unknown key 'colums'; allowed keys: file, files, sheet, delimiter"),
        "tables.cx_responses.columns.npss": (10, "'npss' is not a column of cx_responses; allowed: interaction_id, "
                                                 "responded_at, nps, csat, ces, comment"),
        "tables.cx_responses.columns.nps.scale": (11, "NPS is defined on 0-10 (promoters 9-10, detractors 0-6) and "
                                                      "is never rescaled"),
        "tables.cx_responses.columns.csat.labels": (12, "label 'Very good' -> 12 is not a whole point of the CSAT "
                                                        "scale 1-10"),
        "tables.cx_responses.columns.responded_at.format": (13, "'dd/mm/yyyy' has no strptime directive; e.g. "
                                                                "'%d/%m/%Y %H:%M' (day first)"),
        "tables.cx_responses.filters.0.reason": (15, "this key is required"),
        "tables.interactions.file": (17, "'log.docx': cannot read .docx files; allowed: .csv"),
        "tables.interactions.columns.resolved_first_contact.false": (19, "give both the true and the false words"),
        "tables.custumers": (20, "'custumers' is not a table of the contract; allowed: employees, ex_responses"),
    }
    assert set(by_path) == set(expected)
    for path, (line, msg) in expected.items():
        assert by_path[path]["line"] == line, path
        assert by_path[path]["message"].startswith(msg), (path, by_path[path]["message"])
    text = str(err)
    assert text.startswith(f"{err.source}: 11 problem(s) in the study config:")
    assert "  - line 10, tables.cx_responses.columns.npss: 'npss' is not a column of cx_responses" in text


def test_min_group_size_below_three_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match=r"min_group_size 2 is refused: with groups of 2 a reader who knows their "
                                          r"own answer can work out the others'"):
        parse_config({"study": {"min_group_size": 2}})
    with pytest.raises(ValueError, match=r"min_group_size=2 is refused: in a group of 2 each member can work out the "
                                         r"other's answer from the group mean and their own; use 3 or more"):
        check_min_group_size(2)
    with pytest.raises(ValueError, match="in a group of 1 the aggregate is one person's answer"):
        check_min_group_size(1)
    assert check_min_group_size(3) == 3
    assert parse_config({"study": {"min_group_size": 3}}).study.min_group_size == 3


def test_yes_no_and_true_keys_stay_words(tmp_path):
    """YAML 1.1 would read Yes/No/On/Off as booleans and the key `true:` as True."""
    p = tmp_path / "study.yaml"
    p.write_text("tables:\n  interactions:\n    file: log.csv\n    columns:\n"
                 "      transferred: {column: T, true: [Yes, On], false: [No, Off]}\n"
                 "    filters:\n      - {column: Test, equals: No, reason: not a test}\n")
    cfg = load_config(p)
    spec = cfg.tables["interactions"].mapping()["transferred"]
    assert spec.true == ["Yes", "On"] and spec.false == ["No", "Off"]
    assert cfg.tables["interactions"].filters[0].equals == "No"


def test_kind_options_are_checked():
    with pytest.raises(ConfigError) as info:
        parse_config({"tables": {"interactions": {"file": "log.csv", "columns": {
            "channel": {"column": "C", "scale": [1, 5]},
            "started_at": {"column": "S", "true": ["y"], "false": ["n"], "timezone": "Mars/Base"},
            "employee_id": {"column": "A", "labels": {"x": 1}},
            "customer_id": None,
        }}}})
    msgs = {".".join(map(str, e["path"])): e["message"] for e in info.value.errors}
    assert msgs["tables.interactions.columns.channel.scale"].startswith("scale is for survey scale items")
    assert msgs["tables.interactions.columns.started_at.true"] == ("true/false words are for true/false columns; "
                                                                    "started_at holds dates/timestamps")
    assert msgs["tables.interactions.columns.started_at.timezone"].startswith("unknown time zone 'Mars/Base'")
    assert msgs["tables.interactions.columns.employee_id.labels"].startswith("labels map text answers to numbers")
    assert msgs["tables.interactions.columns.customer_id"] == ("customer_id cannot be 'not asked' (null): "
                                                               "interactions needs it in every row")


def test_recode_must_cover_the_native_scale_and_land_on_the_contract_scale():
    with pytest.raises(ConfigError) as info:
        parse_config({"tables": {"ex_responses": {"file": "p.csv", "columns": {
            "esat": {"column": "S", "scale": [1, 4], "rescale": {1: 1, 2: 2, 4: 9}}}}}})
    msg = " | ".join(e["message"] for e in info.value.errors)
    assert "the recode must give every native point 1-4 a contract value; missing: [3]" in msg
    assert "recoded values must lie on the contract's eSat scale 1-5; got {4: 9.0}" in msg


def test_waves_by_dates_must_not_overlap():
    with pytest.raises(ConfigError, match=r"waves 1 and 2 overlap \(2025-01-01..2025-02-01 and 2025-01-20.."):
        parse_config({"tables": {"ex_responses": {"file": "p.csv", "waves": [
            {"wave": 1, "start": "2025-01-01", "end": "2025-02-01"},
            {"wave": 2, "start": "2025-01-20", "end": "2025-03-01"}]}}})


def test_the_worked_examples_parse():
    for study in ("contact_centre", "hr_excel"):
        cfg = load_config(FIXTURES / study / "study.yaml")
        assert cfg.version == 2
    cfg = load_config(FIXTURES / "contact_centre" / "study.yaml")
    m = cfg.tables["ex_responses"].mapping()
    assert m["esat"].scale == (1, 7)
    assert {"tp_training", "tp_post_training_support", "tp_daily_work", "tp_coaching", "tp_recognition"} <= set(m)
    assert cfg.tables["employees"].derive.team_id.column == "Team"


def test_not_yaml_is_a_config_error(tmp_path):
    p = tmp_path / "study.yaml"
    p.write_text("tables:\n  cx_responses:\n    file: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+, \(top level\): not valid YAML"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="study config .*nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_a_label_without_its_number_is_named():
    with pytest.raises(ConfigError, match=r"tables.ex_responses.columns.wave.labels: give each label its number; "
                                          r"'Spring 2025', 'Summer 2025' have none"):
        parse_config({"tables": {"ex_responses": {"file": "p.csv", "columns": {
            "wave": {"column": "Survey", "labels": {"Spring 2025": None, "Summer 2025": None}}}}}})
