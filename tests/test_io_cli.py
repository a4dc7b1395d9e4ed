"""Loading and saving studies, study configs, and the CLI."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest

from cxex_lab.cli import main
from cxex_lab.io import load_study


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_roundtrip(small_study, tmp_path, fmt):
    small_study.save(tmp_path, fmt=fmt)
    back = load_study(tmp_path)
    for name, df in small_study.tables().items():
        got = back.tables()[name]
        assert list(got.columns) == list(df.columns)
        assert len(got) == len(df)
    pd.testing.assert_series_equal(back.cx_responses["nps"], small_study.cx_responses["nps"], check_dtype=False)
    assert back.truth == json.loads(json.dumps(small_study.truth, default=str))
    assert back.interactions["started_at"].dtype.kind == "M"
    assert back.interactions["resolved_first_contact"].dtype.kind == "b"


def test_duckdb_file(small_study, tmp_path):
    db = tmp_path / "study.duckdb"
    con = duckdb.connect(str(db))
    for name, df in small_study.tables().items():
        con.register("tmp_df", df)
        con.execute(f"create table {name} as select * from tmp_df")
        con.unregister("tmp_df")
    con.close()
    back = load_study(db)
    assert len(back.interactions) == len(small_study.interactions)


def test_missing_table_file(small_study, tmp_path):
    small_study.save(tmp_path)
    (tmp_path / "interactions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing table file\(s\): interactions"):
        load_study(tmp_path)


def test_wrong_file_type(small_study, tmp_path):
    small_study.save(tmp_path)
    (tmp_path / "employees.parquet").write_text("employee_id,team_id\nE1,T1\n")
    with pytest.raises(ValueError, match="employees.parquet: could not be read as Parquet"):
        load_study(tmp_path)
    xlsx = tmp_path / "study.xlsx"
    xlsx.write_text("x")
    with pytest.raises(ValueError, match=r"not a \.xlsx file"):
        load_study(xlsx)


def test_study_config_maps_real_column_names(small_study, tmp_path):
    small_study.save(tmp_path, fmt="csv")
    raw = pd.read_csv(tmp_path / "cx_responses.csv").rename(columns={"nps": "likelihood_to_recommend", "interaction_id": "ticket"})
    (tmp_path / "cx_responses.csv").unlink()
    raw.to_csv(tmp_path / "survey_export.csv", index=False)
    (tmp_path / "study.yaml").write_text(
        "tables:\n  cx_responses:\n    file: survey_export.csv\n    columns:\n"
        "      interaction_id: ticket\n      nps: likelihood_to_recommend\n"
    )
    back = load_study(tmp_path)
    assert back.cx_responses["nps"].tolist() == small_study.cx_responses["nps"].tolist()
    (tmp_path / "study.yaml").write_text("tables:\n  cx_responses:\n    file: survey_export.csv\n    columns:\n      nps: recommend\n")
    with pytest.raises(ValueError) as info:
        load_study(tmp_path)
    assert ("survey_export.csv: column 'recommend' (mapped to nps) is not in the file (did you mean "
            "'likelihood_to_recommend'?); its columns are: ticket, responded_at, likelihood_to_recommend") in str(info.value)


def test_cli_simulate_then_validate(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["simulate", "--out", str(out), "--sites", "2", "--employees", "20", "--waves", "2", "--seed", "3",
                 "-p", "orphan_responses=4"]) == 0
    assert (out / "truth.json").exists()
    capsys.readouterr()
    assert main(["validate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the data contract holds" in text
    assert "response's interaction_id is not in interactions" in text and " 4 " in text


def test_cli_validate_reports_violations_with_nonzero_exit(small_study, tmp_path, capsys):
    df = small_study.cx_responses.copy()
    df.loc[0, "nps"] = 11
    small_study.save(tmp_path)
    df.to_parquet(tmp_path / "cx_responses.parquet")
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "column 'nps': must be between 0 and 10 (1 row(s); e.g. row 2 (value 11))" in err  # first record = row 2


def test_cli_validate_missing_dir(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_segment_keeps_one_site_and_rejects_unknown(small_study):
    seg = small_study.segment("S02")
    assert set(seg.employees["site_id"]) == {"S02"}
    assert seg.interactions["employee_id"].isin(seg.employees["employee_id"]).all()
    assert seg.cx_responses["interaction_id"].isin(seg.interactions["interaction_id"]).all()
    assert 0 < len(seg.interactions) < len(small_study.interactions)
    assert small_study.segment("all") is small_study
    with pytest.raises(ValueError, match=r"unknown segment\(s\) \['S99'\]; valid site ids are \['S01', 'S02', 'S03'\]"):
        small_study.segment("S99")


def test_sample_is_reproducible_from_its_documented_command(tmp_path):
    """data/sample/README.md states the exact command; rerunning it gives the same tables."""
    from tests.conftest import SAMPLE

    assert main(["simulate", "--out", str(tmp_path), "--seed", "20261123", "--latent", "-p", "orphan_responses=25"]) == 0
    for name in ("employees", "ex_responses", "cx_responses"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / f"{name}.parquet"), pd.read_parquet(SAMPLE / f"{name}.parquet")
        )
    sample = load_study(SAMPLE)
    assert set(sample.latent) == {"employee_waves", "interactions", "customer_periods"}


def test_a_study_given_by_a_relative_path_loads(tmp_path, monkeypatch):
    """A relative study path (as typed on the command line) is joined with the file names once, not twice."""
    from cxex_lab.io import load_study
    from cxex_lab.simulate import simulate_study

    simulate_study(n_sites=2, n_employees=20, n_waves=3, seed=4).save(tmp_path / "studies" / "s1")
    monkeypatch.chdir(tmp_path)
    study = load_study("studies/s1")
    assert len(study.employees) == 20 and len(study.interactions) > 0
