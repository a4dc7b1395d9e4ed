"""Bring your own data: real-looking exports map, validate and prepare; bad input gives the message a researcher reads.

Expectations come from the generator of the fixtures (the simulated study it
exported, the rows it injected: tests/fixtures/exports/make_exports.py), from
independent readers of the raw files (Python's csv module, pandas, pyreadstat)
and from hand-written small files, never from the loader's own output.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import importlib.util
import json
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from cxex_lab import contract as C
from cxex_lab.cli import main
from cxex_lab.config import load_config
from cxex_lab.io import StudyError, check_study, load_study, load_tables
from cxex_lab.privacy import PSEUDONYM_HEX, Pseudonymiser
from cxex_lab.schema import DataContractError

FIX = Path(__file__).resolve().parent / "fixtures" / "exports"


def _generator():
    spec = importlib.util.spec_from_file_location("make_exports", FIX / "make_exports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen():
    return _generator()


@pytest.fixture()
def cc(tmp_path):
    """A copy of the contact-centre fixture (the pseudonymisation key is created in the copy, not the repo)."""
    return Path(shutil.copytree(FIX / "contact_centre", tmp_path / "contact_centre"))


@pytest.fixture()
def hr(tmp_path):
    return Path(shutil.copytree(FIX / "hr_excel", tmp_path / "hr_excel"))


def _plain(folder: Path) -> dict:
    """The folder's config as a mapping, with pseudonymisation off (to compare ids with the source)."""
    import yaml

    data = yaml.safe_load((folder / "study.yaml").read_text())
    data.setdefault("privacy", {})["pseudonymise"] = False
    return data


def _study(tmp_path: Path, files: dict[str, str], config: str) -> Path:
    d = tmp_path / "study"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "study.yaml").write_text(config)
    return d


def _message(folder: Path) -> str:
    with pytest.raises(DataContractError) as info:
        load_study(folder)
    assert isinstance(info.value, StudyError)
    return str(info.value)


# --------------------------------------------------------------------------- the fixture studies


def _rule_count(ledger: pd.DataFrame, table: str, words: str) -> int:
    hit = ledger[(ledger["table"] == table) & ledger["rule"].str.contains(words, regex=False)]
    return int(hit["rows_excluded"].sum())


def test_contact_centre_validates_and_the_ledger_counts_every_exclusion(cc):
    expected = json.loads((cc / "expected.json").read_text())
    check = check_study(cc)
    assert check.ok, check.problem_lines()
    led = check.ledger
    words = {"cx_responses|preview": "preview response", "cx_responses|unfinished": "unfinished response",
             "cx_responses|placeholder": "placeholder '00000000'", "cx_responses|out of range": "outside the CSAT scale",
             "cx_responses|orphan": "is not in interactions", "interactions|IVR": "placeholder 'IVR'"}
    got = {k: _rule_count(led, k.split("|")[0], w) for k, w in words.items()}
    assert got == expected["ledger"]
    assert int(led["rows_excluded"].sum()) == sum(expected["ledger"].values())  # nothing else excluded
    sizes = check.sizes.set_index("table")
    for table, n in expected["rows"].items():
        assert sizes.loc[table, "rows"] == n, table
    assert sizes.loc["employees", "status"] == "derived"
    assert sizes.loc["customer_outcomes", "status"] == "absent"
    assert not (cc / ".cxex-lab").exists(), "validating writes nothing into the study folder"


def _records_by_line(path: Path, header_lines: int, delimiter: str = ",") -> dict[int, dict]:
    """Each record of a CSV file by the line it starts on (Python's csv module: the reference)."""
    out = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        names, prev = None, 0
        for rec in reader:
            start = prev + 1
            prev = reader.line_num
            if names is None:
                names = rec
                continue
            if start <= header_lines:
                continue
            out[start] = dict(zip(names, rec))
    return out


def _expected(study_dir) -> dict:
    """What the fixture generator (make_exports.py) recorded about the study it wrote."""
    return json.loads((study_dir / "expected.json").read_text())


def test_row_numbers_are_the_lines_of_the_file_with_header_lines_and_line_breaks(cc):
    """cx_export.csv has 3 header lines and comments spanning two lines: _row is the line a text editor shows."""
    records = _records_by_line(cc / "cx_export.csv", header_lines=3)
    multi = sum("\n" in r["Q4"] for r in records.values())
    assert multi > 3, "the fixture has records spanning lines"
    con = C.duckdb_connect()
    loaded = load_tables(cc, _plain(cc), con)
    got = con.to_pyarrow(loaded.tables["cx_responses"].select("_row", "interaction_id")).to_pylist()
    excluded = {k.split("|")[1]: v for k, v in _expected(cc)["ledger"].items() if k.startswith("cx_responses|")}
    # every record but the preview, unfinished, placeholder and out-of-range ones (the generator's counts)
    assert len(got) == len(records) - sum(excluded[k] for k in ("preview", "unfinished", "placeholder", "out of range"))
    for r in got:
        assert records[r["_row"]]["ContactRef"] == r["interaction_id"]
    # the ledger's example rows are lines whose record has the excluded property
    led = loaded.ledger.frame
    preview = led[led["rule"].str.contains("preview")].iloc[0]["example"]
    for word in preview.split(", "):
        assert records[int(word.removeprefix("row "))]["Status"] == "Survey Preview"
    log = _records_by_line(cc / "contact_log.csv", header_lines=1, delimiter=";")
    ivr = led[led["rule"].str.contains("IVR")].iloc[0]["example"]
    for word in ivr.split(", "):
        assert log[int(word.removeprefix("row "))]["AgentCode"] == "IVR"


def test_contact_centre_values_match_the_exported_study(cc, gen):
    src = gen.contact_centre_source()
    s = load_study(cc, config=_plain(cc))
    call, agent, cust, team = src["call"], src["agent"], src["cust"], src["team"]
    # interactions: day-first local times (first rows ambiguous: 06/01/2025), H:MM:SS, Y/N
    it = src["interactions"].assign(interaction_id=lambda d: d["interaction_id"].map(call)).set_index("interaction_id")
    got = s.interactions.set_index("interaction_id").loc[it.index]
    assert (got["started_at"] == it["started_at"]).all()
    first = s.interactions["started_at"].iloc[:5]  # the file's first lines: 06/01/2025 ..., all ambiguous
    assert first.dt.month.tolist() == [1] * 5 and first.dt.day.tolist()[0] == 6  # 6 January, not 1 June
    assert (got["employee_id"] == it["employee_id"].map(agent)).all()
    assert (got["customer_id"] == it["customer_id"].map(cust)).all()
    assert (got["handle_seconds"] == it["handle_seconds"]).all()
    assert (got["resolved_first_contact"] == it["resolved_first_contact"]).all()
    assert (got["transferred"] == it["transferred"]).all()
    assert s.interactions["resolved_first_contact"].dtype == bool
    # CX: UTC recorded dates back to London wall time; labels; CSAT 1-10 mapped linearly onto 1-5
    cx = src["cx_responses"]
    cx = cx[cx["interaction_id"].isin(src["interactions"]["interaction_id"])]
    cx = cx.assign(interaction_id=cx["interaction_id"].map(call)).set_index("interaction_id")
    got = s.cx_responses.set_index("interaction_id")
    common = got.index.intersection(cx.index)
    assert len(common) == len(got) == len(cx) - 3  # all but the 3 excluded CSAT zeros
    assert (got.loc[common, "responded_at"] == cx.loc[common, "responded_at"]).all()
    assert (got.loc[common, "nps"] == cx.loc[common, "nps"]).all()
    assert (got.loc[common, "ces"] == cx.loc[common, "ces"]).all()
    raw = pd.read_csv(cc / "cx_export.csv", skiprows=[1, 2], dtype=str, keep_default_na=False)
    raw = raw[raw["ContactRef"].isin(common)].set_index("ContactRef")
    q2 = raw.loc[common, "Q2"].astype(int)
    ten_to_five = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 4, 8: 4, 9: 5, 10: 5}  # 1 + (x-1)*4/9, rounded (by hand)
    assert (got.loc[common, "csat"] == q2.map(ten_to_five)).all()
    # EX: SPSS eSat 1-7 mapped linearly onto 1-5; code 99 ('Don't know') declared missing in the file
    import pyreadstat

    pulse, _ = pyreadstat.read_sav(str(cc / "pulse.sav"), user_missing=True)
    ex = s.ex_responses.set_index(["employee_id", "wave"]).sort_index()
    pulse = pulse.assign(Wave=pulse["Wave"].astype(int)).set_index(["AgentID", "Wave"]).sort_index()
    seven_to_five = {1: 1, 2: 2, 3: 2, 4: 3, 5: 4, 6: 4, 7: 5}  # 1 + (x-1)*2/3, rounded (by hand)
    assert (ex["esat"].to_numpy() == pulse["Q_SAT"].astype(int).map(seven_to_five).to_numpy()).all()
    assert int(ex["tp_recognition"].isna().sum()) == json.loads((cc / "expected.json").read_text())["dont_know"]
    assert s.ex_responses["tp_hiring"].isna().all()  # not asked: the contract's column, missing everywhere
    exs = src["ex_responses"].assign(employee_id=lambda d: d["employee_id"].map(agent))
    exs = exs.set_index(["employee_id", "wave"]).sort_index()
    assert (ex["responded_at"] == exs["responded_at"]).all()
    assert (ex["enps"] == exs["enps"]).all()
    # employees derived from the ids, team and site from the log
    emp = s.employees.set_index("employee_id")
    srce = src["employees"].assign(employee_id=lambda d: d["employee_id"].map(agent)).set_index("employee_id")
    assert (emp["team_id"] == srce.loc[emp.index, "team_id"].map(team)).all()
    assert (emp["site_id"] == srce.loc[emp.index, "site_id"].map(gen.SITE_NAMES)).all()
    assert emp["exit_date"].isna().all() and emp["hire_date"].isna().all()
    assert s.customer_outcomes is None


def test_hr_excel_values_match_the_exported_study(hr, gen):
    src = gen.hr_excel_source()
    check = check_study(hr)
    assert check.ok, check.problem_lines()
    assert len(check.ledger) == 0
    s = load_study(hr, config=_plain(hr))
    staff = {k: str(v) for k, v in src["staff"].items()}
    # nobody has an exit date (the shape that crashed validate with a TypeError)
    assert s.employees["exit_date"].isna().all() and len(s.employees) == 24
    emp = s.employees.set_index("employee_id")
    srce = src["employees"].assign(employee_id=lambda d: d["employee_id"].map(staff)).set_index("employee_id")
    assert (emp["hire_date"] == srce.loc[emp.index, "hire_date"].dt.normalize()).all()  # Excel date cells
    # calls.parquet: UTC timestamps back to London wall time; "Yes"/"No" text flags (pandas 3 reads them as str)
    it = src["interactions"].assign(interaction_id=lambda d: d["interaction_id"].str[1:].astype(int).astype(str))
    it = it.set_index("interaction_id")
    got = s.interactions.set_index("interaction_id").loc[it.index]
    assert (got["started_at"] == it["started_at"]).all()
    assert (got["resolved_first_contact"] == it["resolved_first_contact"]).all()
    assert (got["employee_id"] == it["employee_id"].map(staff)).all()
    # Stata survey, call ids stored as decimals: they join the log's integer ids
    cx = src["cx_responses"].assign(interaction_id=lambda d: d["interaction_id"].str[1:].astype(int).astype(str))
    cx = cx.set_index("interaction_id")
    gotc = s.cx_responses.set_index("interaction_id").loc[cx.index]
    assert (gotc["responded_at"] == cx["responded_at"]).all()
    assert (gotc["csat"] == cx["csat"]).all()
    # Excel EX survey: wave labels, eSat words, researcher-named touchpoints
    ex = s.ex_responses.set_index(["employee_id", "wave"]).sort_index()
    exs = src["ex_responses"].assign(employee_id=lambda d: d["employee_id"].map(staff))
    exs = exs.set_index(["employee_id", "wave"]).sort_index()
    assert sorted(s.ex_responses["wave"].unique()) == [1, 2]
    assert (ex["esat"] == exs["esat"]).all()
    assert (ex["tp_onboarding"] == exs["tp_hiring"]).all() and (ex["tp_team_lead"] == exs["tp_coaching"]).all()
    assert (ex["responded_at"] == exs["responded_at"].dt.floor("s")).all()
    assert s.ex_responses["cx_insight_access"].isna().all()  # not asked
    co = s.customer_outcomes
    assert co["retained"].dtype == bool and co["retained"].sum() == src["customer_outcomes"]["retained"].sum()


# --------------------------------------------------------------------------- the workspace


def test_prepare_pseudonymises_ids_and_keeps_personal_data_out(cc, tmp_path):
    from cxex_lab.workspace import prepare

    ws = prepare(cc, out=tmp_path / "ws")
    key_file = cc / ".cxex-lab" / "pseudonym.key"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    assert ws.study_info["privacy"]["key_file"] == str(key_file.resolve())
    assert ws.study_info["privacy"]["key_id"] == Pseudonymiser(key).key_id
    # every stored id is HMAC-SHA256(key, raw id), never the raw id
    raw_agents = sorted(pd.read_csv(cc / "contact_log.csv", sep=";", dtype=str)["AgentCode"].unique())
    raw_agents = [a for a in raw_agents if a != "IVR"]
    want = {hmac.new(key, a.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX] for a in raw_agents}
    assert set(ws.employees["employee_id"]) == want
    # nothing in the workspace file holds a raw id, a name, an e-mail or an IP address
    survey = pd.read_csv(cc / "cx_export.csv", skiprows=[1, 2], dtype=str, keep_default_na=False)
    log = pd.read_csv(cc / "contact_log.csv", sep=";", dtype=str)
    secrets = set(raw_agents) | set(log["CallID"]) | set(log["CustomerRef"]) | set(log["AgentName"].dropna()) \
        | set(survey["RecipientEmail"]) | set(survey["IPAddress"]) | set(survey["RecipientLastName"])
    secrets.discard("")
    path = ws.path
    ws.close()
    con = duckdb.connect(str(path), read_only=True)
    seen = set()
    for (name,) in con.execute("select table_name from information_schema.tables").fetchall():
        for (col, typ) in con.execute(f"select column_name, data_type from information_schema.columns "
                                      f"where table_name = '{name}'").fetchall():
            if typ == "VARCHAR":
                vals = {v for (v,) in con.execute(f'select distinct "{col}" from "{name}"').fetchall() if v}
                seen |= {v for v in vals if v in secrets}
                seen |= {s for s in secrets if any(s in v for v in vals if len(v) > 40)}  # inside meta JSON
    con.close()
    assert not seen, sorted(seen)[:5]
    assert key.hex() not in path.read_bytes().hex()


def test_workspace_says_which_tables_and_columns_exist(cc, hr, tmp_path):
    from cxex_lab.workspace import prepare

    ws = prepare(cc, out=tmp_path / "ws")
    assert ws.has("employees") and ws.table_status("employees") == "derived"
    assert not ws.has("customer_outcomes") and ws.table_status("customer_outcomes") == "absent"
    assert ws.has("interactions", "channel") and not ws.has("interactions", "no_such_column")
    assert ws.touchpoints == ["tp_training", "tp_post_training_support", "tp_daily_work", "tp_coaching",
                              "tp_recognition"]
    assert not ws.has("employees", "hire_date")  # stored as missing: the HR table was not given
    assert ws.study_info["scales"]["ex_responses.esat"] == {
        "native": [1, 7], "contract": [1, 5], "source": "Q_SAT", "map": "round",
        "points": {"1": 1, "2": 2, "3": 2, "4": 3, "5": 4, "6": 4, "7": 5}}
    assert ws.study_info["columns"]["cx_responses"]["nps"]["question"].startswith("How likely are you to recommend")
    assert ws.study_info["dropped"]["cx_responses"] == ["IPAddress", "RecipientLastName", "RecipientFirstName",
                                                        "RecipientEmail"]
    led = ws.ledger
    assert int(led.loc[led["step"] == "load", "rows_excluded"].sum()) == 12 + 15 + 40 + 25 + 3
    ws.close()
    ws = prepare(hr, out=tmp_path / "ws")
    assert ws.has("customer_outcomes") and ws.table_status("employees") == "given"
    assert not ws.has("ex_responses", "cx_insight_access")
    assert ws.touchpoints == ["tp_onboarding", "tp_tools", "tp_team_lead"]
    assert not ws.has("employees", "exit_date")
    ws.close()


def test_id_index_finds_real_ids_and_pseudonyms_in_report_text(cc, tmp_path):
    """The runner's scan gets the study's ids from the workspace: a real-format agent id in a report is caught."""
    from cxex_lab.workspace import prepare

    ws = prepare(cc, out=tmp_path / "ws")
    index = ws.id_index()
    pseudo = ws.employees["employee_id"].iloc[0]
    report_tokens = {"AG1007", "CL700123", "CU000340", pseudo, "Leeds", "n", "2025", "AG9999"}
    hits = index.find(report_tokens)
    assert hits == {"AG1007": "employee_id", "CL700123": "interaction_id", "CU000340": "customer_id",
                    pseudo: "employee_id"}
    assert index.describe()["ids"] == {"employee_id": 40, "customer_id": len(set(
        pd.read_csv(cc / "contact_log.csv", sep=";", dtype=str).query("AgentCode != 'IVR'")["CustomerRef"])),
        "interaction_id": int((pd.read_csv(cc / "contact_log.csv", sep=";", dtype=str)["AgentCode"] != "IVR").sum())}
    ws.close()
    (cc / ".cxex-lab" / "pseudonym.key").write_text(os.urandom(32).hex())
    from cxex_lab.workspace import Workspace

    ws = Workspace.open(next((tmp_path / "ws").glob("*.duckdb")))
    with pytest.raises(ValueError, match="is not the key this workspace was pseudonymised with"):
        ws.id_index()
    ws.close()


def test_pseudonyms_in_sql_equal_python_hmac():
    p = Pseudonymiser(bytes(range(40)))
    con = duckdb.connect()
    for v in ["AG1046", "é √ x", "1046", "a" * 200]:
        sql = con.execute(f"select {p.sql(chr(39) + v + chr(39))}").fetchall()[0][0]
        assert sql == hmac.new(bytes(range(40)), v.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]
    assert con.execute(f"select {p.sql('NULL')}").fetchall()[0][0] is None
    assert "key" not in repr(p) or bytes(range(40)).hex() not in repr(p)


# --------------------------------------------------------------------------- the bugs of issue 12


DATES = "id,agent,when,chan\n"


def _mini(tmp_path, cx_rows: str, log_rows: str, cx_cols: str = "", log_cols: str = "", ex_cols: str = "",
          extra_tables: str = "", ex_rows: str | None = None, when_fmt: str = '"%d/%m/%Y %H:%M"') -> Path:
    """A small exported study: ex.csv, log.csv, cx.csv with a study.yaml."""
    ex_rows = ex_rows if ex_rows is not None else (
        "A1,1,01/03/2026 09:00,9,4,5\nA2,1,01/03/2026 10:00,7,3,4\nA1,2,01/06/2026 09:00,8,4,5\n"
        "A2,2,01/06/2026 10:00,6,2,3\n")
    files = {"ex.csv": "agent,wave,when,enps,esat,ees\n" + ex_rows,
             "log.csv": "call,agent,customer,start,fcr\n" + log_rows,
             "cx.csv": "ref,recorded,nps,csat,ces\n" + cx_rows}
    cfg = f"""
privacy: {{pseudonymise: false}}
tables:
  ex_responses:
    file: ex.csv
    columns:
      employee_id: agent
      wave: wave
      responded_at: {{column: when, format: "%d/%m/%Y %H:%M"}}
      enps: enps
      esat: esat
      ees: ees
{ex_cols}
  interactions:
    file: log.csv
    columns:
      interaction_id: call
      employee_id: agent
      customer_id: customer
      started_at: {{column: start, format: {when_fmt}}}
      resolved_first_contact: fcr
{log_cols}
  cx_responses:
    file: cx.csv
    columns:
      interaction_id: ref
      responded_at: {{column: recorded, format: "%d/%m/%Y %H:%M"}}
      nps: nps
      csat: csat
      ces: ces
{cx_cols}
{extra_tables}
"""
    return _study(tmp_path, files, cfg)


LOG = ("I1,A1,C1,05/03/2026 10:00,Yes\nI2,A2,C2,12/04/2026 09:00,No\nI3,A1,C3,25/04/2026 08:00,yes\n"
       "I4,A2,C1,13/06/2026 11:00,NO\n")
CX = "I1,05/03/2026 11:00,9,4,6\nI2,12/04/2026 10:00,3,2,2\nI4,14/06/2026 09:00,10,5,7\n"


def test_day_first_dates_are_parsed_as_declared_even_when_the_first_rows_are_ambiguous(tmp_path):
    """05/03/2026 and 12/04/2026 read month first would be 3 May and 4 December (the old, row-order
    dependent inference did exactly that); the declared day-first format gives 5 March and 12 April."""
    d = _mini(tmp_path, CX, LOG)
    s = load_study(d)
    started = s.interactions.set_index("interaction_id")["started_at"]
    assert started["I1"] == pd.Timestamp("2026-03-05 10:00")
    assert started["I2"] == pd.Timestamp("2026-04-12 09:00")
    assert started["I3"] == pd.Timestamp("2026-04-25 08:00")
    # the same column without a declared format is refused, not guessed
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace(
        'started_at: {column: start, format: "%d/%m/%Y %H:%M"}', "started_at: start"))
    msg = _message(d)
    assert ("log.csv, column 'start', rows 2 ('05/03/2026 10:00'), 3 ('12/04/2026 09:00'), 4 ('25/04/2026 08:00'), "
            "5 ('13/06/2026 11:00'): is not an ISO 8601 (YYYY-MM-DD") in msg
    assert "declare the column's format in the study config, e.g. format: '%d/%m/%Y %H:%M' (day first)" in msg


def test_yes_no_flags_become_booleans(tmp_path):
    """Issue 12: under pandas 3 the Yes/No conversion never ran (columns read as str)."""
    s = load_study(_mini(tmp_path, CX, LOG))
    fcr = s.interactions.set_index("interaction_id")["resolved_first_contact"]
    assert fcr.dtype == bool and fcr.to_dict() == {"I1": True, "I2": False, "I3": True, "I4": False}


def test_unknown_boolean_word_lists_the_words(tmp_path):
    msg = _message(_mini(tmp_path, CX, LOG.replace("No\n", "Maybe\n", 1)))
    assert ("log.csv, column 'fcr', row 3: value 'Maybe' is not one of the true/false words (true: ['true', 't', "
            "'yes', 'y', '1'], false: ['false', 'f', 'no', 'n', '0']); values seen: 'Maybe', 'NO', 'Yes', 'yes'") in msg


def test_mixed_date_formats_name_their_rows(tmp_path):
    log = LOG.replace("25/04/2026 08:00", "2026-04-25 08:00").replace("13/06/2026 11:00", "2026-06-13T11:00")
    msg = _message(_mini(tmp_path, CX, log))
    assert ("log.csv, column 'start', rows 4 ('2026-04-25 08:00'), 5 ('2026-06-13T11:00'): does not match the "
            "declared format '%d/%m/%Y %H:%M' (day/month/year)") in msg


def test_missing_file(tmp_path):
    d = _mini(tmp_path, CX, LOG)
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("file: cx.csv", "file: cx_export.csv"))
    msg = _message(d)
    assert (f"cx_export.csv: file not found in {d} (the study config's tables.cx_responses.file); data files "
            f"there: cx.csv, ex.csv, log.csv") in msg
    assert msg.count("\n  - ") == 1  # not also "the table is missing"


def test_mapped_column_absent(tmp_path):
    d = _mini(tmp_path, CX, LOG)
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("nps: nps", "nps: likelihood"))
    msg = _message(d)
    assert ("cx.csv: column 'likelihood' (mapped to nps) is not in the file; its columns are: ref, recorded, nps, "
            "csat, ces") in msg
    assert "required column is missing" not in msg


def test_unmapped_label_lists_the_labels_seen_and_the_maps_keys(tmp_path):
    cx = ("I1,05/03/2026 11:00,9,4,Easy\nI2,12/04/2026 10:00,3,2,Very difficult\n"
          "I4,14/06/2026 09:00,10,5,Very easy\n")
    d = _mini(tmp_path, cx, LOG, cx_cols="      ces: {column: ces, labels: {Very difficult: 1, Easy: 6}}")
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("      ces: ces\n", ""))
    msg = _message(d)
    assert ("cx.csv, column 'ces', row 4: value 'Very easy' is not in the label map; values seen: 'Easy', "
            "'Very difficult', 'Very easy'; the map's keys: 'Very difficult', 'Easy'") in msg


def test_scale_that_does_not_match_its_data(tmp_path):
    """eSat declared 1-5 (the default) while the pulse asked 1-7."""
    ex = "A1,1,01/03/2026 09:00,9,7,5\nA2,1,01/03/2026 10:00,7,6,4\nA1,2,01/06/2026 09:00,8,4,5\n"
    msg = _message(_mini(tmp_path, CX, LOG, ex_rows=ex))
    assert "ex.csv, column 'esat', rows 2 ('7'), 3 ('6'): outside the eSat scale 1-5" in msg


def test_out_of_range_nps_reads_like_the_issue(tmp_path):
    cx = CX.replace("I2,12/04/2026 10:00,3", "I2,12/04/2026 10:00,11")
    msg = _message(_mini(tmp_path, cx, LOG))
    assert "cx.csv, column 'nps', row 3: value '11' outside the NPS scale 0-10" in msg


def test_duplicate_keys(tmp_path):
    cx = CX + "I1,06/03/2026 09:00,8,4,5\n"
    msg = _message(_mini(tmp_path, cx, LOG))
    assert ("cx.csv, column 'interaction_id': duplicate key: each (interaction_id) must appear once (2 row(s): "
            "row 2, row 5)") in msg.replace("column 'ref' (interaction_id)", "column 'interaction_id'")


def test_missing_join_column_is_a_contract_error_not_a_traceback(tmp_path, capsys):
    """Issue 12: `validate` on interactions without employee_id ended in KeyError: 'employee_id'."""
    d = _mini(tmp_path, CX, LOG)
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("      employee_id: agent\n      customer_id",
                                                                       "      customer_id"))
    assert main(["validate", str(d)]) == 1
    err = capsys.readouterr().err
    assert "log.csv, column 'employee_id': required column is missing; columns present: interaction_id" in err
    assert "Traceback" not in err and "KeyError" not in err


def test_no_employee_with_an_exit_date(tmp_path, capsys):
    """Issue 12: validate crashed (TypeError: Cannot cast DatetimeArray to dtype float64)."""
    emp = "staff,team,site,hired,left\nA1,T1,S1,01/01/2020,\nA2,T1,S1,01/06/2021,\n"
    d = _mini(tmp_path, CX, LOG, extra_tables="""
  employees:
    file: emp.csv
    columns:
      employee_id: staff
      team_id: team
      site_id: site
      hire_date: {column: hired, format: "%d/%m/%Y"}
      exit_date: {column: left, format: "%d/%m/%Y"}
""")
    (d / "emp.csv").write_text(emp)
    assert main(["validate", str(d)]) == 0
    out = capsys.readouterr().out
    assert "the data contract holds" in out
    assert load_study(d).employees["exit_date"].isna().all()


def test_missing_wave_column_is_not_a_false_duplicate_key(tmp_path):
    d = _mini(tmp_path, CX, LOG)
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("      wave: wave\n", ""))
    (d / "ex.csv").write_text("agent,when,enps,esat,ees\nA1,01/03/2026 09:00,9,4,5\nA2,01/03/2026 10:00,7,3,4\n"
                              "A1,01/06/2026 09:00,8,4,5\n")
    msg = _message(d)
    assert "ex.csv, column 'wave': required column is missing" in msg
    assert "duplicate" not in msg


def test_empty_table_says_so(tmp_path):
    msg = _message(_mini(tmp_path, "", LOG))
    assert "cx.csv (cx_responses): the table is empty; every table of the contract needs at least one row" in msg
    assert "0 rows" not in msg and "1 row(s)" not in msg


def test_ragged_records_are_named_by_line(tmp_path):
    log = LOG.replace("I3,A1,C3,25/04/2026 08:00,yes", "I3,A1,C3,25/04/2026 08:00,yes,extra")
    msg = _message(_mini(tmp_path, CX, log))
    assert ("log.csv, line 4: 1 record(s) with 6 field(s) where the header has 5 (a stray delimiter or an unquoted "
            "line break?); these records were not loaded") in msg


def test_blank_lines_do_not_shift_row_numbers(tmp_path):
    log = LOG.replace("I3,", "\nI3,").replace("I4,A2,C1,13/06/2026 11:00,NO", "I4,A2,C1,13/13/2026 11:00,NO")
    msg = _message(_mini(tmp_path, CX, log))
    assert "log.csv, column 'start', row 6: value '13/13/2026 11:00' does not match the declared format" in msg


def test_placeholder_references_are_unlinkable_not_duplicates(tmp_path):
    cx = CX + "".join(f"0000,0{k}/03/2026 12:00,5,3,4\n" for k in range(1, 8))
    d = _mini(tmp_path, cx, LOG)
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace(
        "      interaction_id: ref\n      responded_at", "      interaction_id: {column: ref, placeholders: ['0000']}\n"
                                                        "      responded_at"))
    s = load_study(d)
    led = s.ledger
    assert led.to_dict("records")[0] == {
        "step": "load", "table": "cx_responses", "rows_excluded": 7, "example": "row 5, row 6, row 7, row 8, row 9",
        "rule": "unlinkable: ref holds the placeholder '0000' instead of a real interaction_id (no contact to link "
                "to): excluded"}
    assert len(s.cx_responses) == 3


def test_filters_and_out_of_range_exclusions_reach_the_ledger(tmp_path):
    cx = "ref,status,recorded,nps,csat,ces\n" + "\n".join([
        "I1,ok,05/03/2026 11:00,9,4,6", "I2,test,12/04/2026 10:00,3,2,2", "I4,ok,14/06/2026 09:00,10,9,7"]) + "\n"
    d = _mini(tmp_path, "", LOG, cx_cols="""      csat: {column: csat, out_of_range: exclude}
    filters:
      - {column: status, equals: TEST, reason: test response}""")
    (d / "cx.csv").write_text(cx)
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("      csat: csat\n", ""))
    s = load_study(d)
    rules = dict(zip(s.ledger["rule"], s.ledger["rows_excluded"]))
    assert rules == {"test response (status = 'TEST'): excluded": 1,
                     "csat outside the CSAT scale 1-5 (out_of_range: exclude): excluded": 1}
    assert s.cx_responses["interaction_id"].tolist() == ["I1"]


def test_linear_rescale_keeps_decimals_and_a_recode_is_applied_as_given(tmp_path):
    ex = "A1,1,01/03/2026 09:00,9,7,5\nA2,1,01/03/2026 10:00,7,6,4\nA1,2,01/06/2026 09:00,8,1,5\n"
    d = _mini(tmp_path, CX, LOG, ex_rows=ex, ex_cols="""      esat: {column: esat, scale: [1, 7], rescale: linear}
      ees: {column: ees, scale: [1, 7], rescale: {1: 1, 2: 1, 3: 2, 4: 4, 5: 6, 6: 7, 7: 7}}""")
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("      esat: esat\n      ees: ees\n", ""))
    s = load_study(d).ex_responses.set_index(["employee_id", "wave"])
    np.testing.assert_allclose(s["esat"].to_numpy(), [5, 1 + 5 * 2 / 3, 1])
    assert s["ees"].tolist() == [6, 4, 6]


def test_spss_codes_map_through_the_files_value_labels(tmp_path):
    """An SPSS NPS coded 1-11 whose labels say 0-10, and an agreement item coded 1 = Strongly agree."""
    import pyreadstat

    d = _mini(tmp_path, CX, LOG)
    pulse = pd.DataFrame({"agent": ["A1", "A2", "A1", "A2"], "wave": [1.0, 1.0, 2.0, 2.0],
                          "when": pd.to_datetime(["2026-03-01 09:00", "2026-03-01 10:00", "2026-06-01 09:00",
                                                  "2026-06-01 10:00"]),
                          "enps": [11.0, 1.0, 8.0, 6.0], "esat": [1.0, 5.0, 2.0, 4.0], "ees": [5.0, 4.0, 5.0, 3.0]})
    agree = ["Strongly agree", "Agree", "Neither", "Disagree", "Strongly disagree"]
    pyreadstat.write_sav(pulse, str(d / "pulse.sav"), variable_value_labels={
        "enps": {float(k + 1): (f"{k} - Not at all likely" if k == 0 else f"{k} - Extremely likely" if k == 10
                                else str(k)) for k in range(11)},
        "esat": {float(k + 1): lab for k, lab in enumerate(agree)}})
    text = (d / "study.yaml").read_text().replace("file: ex.csv", "file: pulse.sav")
    text = text.replace('responded_at: {column: when, format: "%d/%m/%Y %H:%M"}\n      enps: enps\n      esat: esat',
                        "responded_at: when\n      enps: {column: enps, labels: file}\n      esat: {column: esat, labels: "
                        "{Strongly disagree: 1, Disagree: 2, Neither: 3, Agree: 4, Strongly agree: 5}}")
    (d / "study.yaml").write_text(text)
    ex = load_study(d).ex_responses.sort_values(["wave", "employee_id"])
    assert ex["enps"].tolist() == [10, 0, 7, 5]
    assert ex["esat"].tolist() == [5, 1, 4, 2]
    pulse.loc[3, "esat"] = 9.0  # a code without a value label
    pyreadstat.write_sav(pulse, str(d / "pulse.sav"), variable_value_labels={
        "enps": {float(k + 1): f"{k}" for k in range(11)},
        "esat": {float(k + 1): lab for k, lab in enumerate(agree)}})
    msg = _message(d)
    assert "pulse.sav, column 'esat', row 4: value 9 has a value label that is not in the label map" in msg


def test_time_zones_move_wall_times_into_the_study_zone(tmp_path):
    """Local log times (Europe/Berlin) and UTC survey times, stored as Europe/London wall time."""
    log = "I1,A1,C1,2026-07-01 12:00,Y\nI2,A2,C2,2026-01-15 12:00,N\n"
    cx = "I1,2026-07-01T10:30:00Z,9,4,6\nI2,2026-01-15 11:30:00+00:00,3,2,2\n"
    d = _mini(tmp_path, cx, log, when_fmt='"%Y-%m-%d %H:%M"', log_cols="", cx_cols="")
    text = (d / "study.yaml").read_text()
    text = text.replace('started_at: {column: start, format: "%Y-%m-%d %H:%M"}',
                        'started_at: {column: start, format: "%Y-%m-%d %H:%M", timezone: Europe/Berlin}')
    text = text.replace('responded_at: {column: recorded, format: "%d/%m/%Y %H:%M"}', "responded_at: recorded")
    text = "study: {timezone: Europe/London}\n" + text
    (d / "study.yaml").write_text(text)
    s = load_study(d)
    it = s.interactions.set_index("interaction_id")["started_at"]
    assert it["I1"] == pd.Timestamp("2026-07-01 11:00")  # 12:00 CEST = 10:00 UTC = 11:00 BST
    assert it["I2"] == pd.Timestamp("2026-01-15 11:00")  # 12:00 CET = 11:00 UTC = 11:00 GMT
    cx = s.cx_responses.set_index("interaction_id")["responded_at"]
    assert cx["I1"] == pd.Timestamp("2026-07-01 11:30") and cx["I2"] == pd.Timestamp("2026-01-15 11:30")


def test_waves_by_dates(tmp_path):
    ex = "A1,,01/03/2026 09:00,9,4,5\nA2,,03/03/2026 10:00,7,3,4\nA1,,02/06/2026 09:00,8,4,5\nA2,,20/12/2026 10:00,6,2,3\n"
    d = _mini(tmp_path, CX, LOG, ex_rows=ex, ex_cols="""    waves:
      - {wave: 1, start: 2026-03-01, end: 2026-03-14}
      - {wave: 2, start: 2026-06-01, end: 2026-06-14}""")
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("      wave: wave\n", ""))
    s = load_study(d)
    assert s.ex_responses.sort_values(["wave", "employee_id"])[["employee_id", "wave"]].values.tolist() == [
        ["A1", 1], ["A2", 1], ["A1", 2]]
    assert s.ledger["rule"].iloc[0] == ("EX answer given outside every declared wave (wave 1 2026-03-01..2026-03-14, "
                                        "wave 2 2026-06-01..2026-06-14): excluded")


def test_canonical_csv_folder_without_config_keeps_the_contracts_messages(small_study, tmp_path):
    s = small_study
    cx = s.cx_responses.copy()
    cx.loc[3, "nps"] = 12
    s2 = s.__class__(**{**s.tables(), "cx_responses": cx}, truth=s.truth)
    s2.save(tmp_path, fmt="csv")
    with pytest.raises(DataContractError) as info:
        load_study(tmp_path)
    assert f"cx_responses (file {tmp_path / 'cx_responses.csv'}), column 'nps': must be between 0 and 10 (1 " \
           f"row(s); e.g. row 5 (value 12))" in str(info.value)


# --------------------------------------------------------------------------- init


def test_init_drafts_a_config_that_validates_the_fixture(tmp_path, capsys):
    d = tmp_path / "exports"
    d.mkdir()
    for f in ("cx_export.csv", "pulse.sav", "contact_log.csv"):
        shutil.copy(FIX / "contact_centre" / f, d / f)
    assert main(["init", str(d)]) == 0
    text = (d / "study.yaml").read_text()
    cfg = load_config(d / "study.yaml")
    cx = cfg.tables["cx_responses"]
    assert cx.header_rows == 3 and cx.question_row == 2
    assert set(cx.drop) == {"IPAddress", "RecipientLastName", "RecipientFirstName", "RecipientEmail"}
    m = cx.mapping()
    assert m["interaction_id"].column == "ContactRef" and m["interaction_id"].placeholders == ["00000000"]
    assert m["nps"].labels == {"0 - Not at all likely": 0, "10 - Extremely likely": 10}
    assert m["ces"].labels["Strongly agree"] == 7 and m["ces"].labels["Neither agree nor disagree"] == 4
    assert m["responded_at"].column == "RecordedDate" and m["responded_at"].timezone == "UTC"
    assert [f.reason for f in cx.filters] == ["preview or test response", "unfinished response"]
    log = cfg.tables["interactions"]
    assert log.delimiter == ";" and log.drop == ["AgentName"]
    lm = log.mapping()
    assert lm["started_at"].format == "%d/%m/%Y %H:%M:%S"  # a day above 12 settles the order
    assert lm["employee_id"].placeholders == ["IVR"] and lm["resolved_first_contact"].true == ["Y"]
    ex = cfg.tables["ex_responses"].mapping()
    assert ex["esat"].scale == (1, 7) and ex["tp_recognition"].missing == [99]
    assert cfg.tables["employees"].derive.site_id.column == "Centre"
    assert "# CHECK" in text
    # with the study's time zone set, the draft validates as it is
    (d / "study.yaml").write_text(text.replace("timezone: UTC                 # CHECK", "timezone: Europe/London  #"))
    check = check_study(d)
    assert check.ok, check.problem_lines()
    assert main(["init", str(d)]) == 2
    assert "exists; use --force" in capsys.readouterr().err


def test_init_drafts_an_excel_parquet_stata_study_that_validates_as_written(tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    for f in ("roster.xlsx", "engagement.xlsx", "calls.parquet", "csat_survey.dta", "outcomes.csv"):
        shutil.copy(FIX / "hr_excel" / f, d / f)
    assert main(["init", str(d)]) == 0
    cfg = load_config(d / "study.yaml")
    ex = cfg.tables["ex_responses"]
    assert ex.header_rows == 2 and ex.question_row == 2
    m = ex.mapping()
    assert m["wave"].labels == {"Spring 2025": 1, "Summer 2025": 2}
    assert m["esat"].labels["Satisfied"] == 4 and m["esat"].scale is None  # the 5-point wording, not the 7-point
    assert m["tp_onboarding"].column == "Onboarding"
    assert cfg.tables["employees"].mapping()["exit_date"].column == "Leaving date"  # empty, still its role
    assert cfg.tables["interactions"].mapping()["resolved_first_contact"].true == ["Yes"]
    check = check_study(d)
    assert check.ok, check.problem_lines()


def test_init_flags_ambiguous_day_month_order_instead_of_guessing(tmp_path, capsys):
    d = tmp_path / "exports"
    d.mkdir()
    (d / "log.csv").write_text("CallID,AgentID,CustomerID,Start,AHT\n" + "".join(
        f"C{k},A{k % 3},K{k},{k % 12 + 1:02d}/{k % 9 + 1:02d}/2026 10:00,300\n" for k in range(40)))
    assert main(["init", str(d)]) == 0
    out = capsys.readouterr().out
    assert "interactions.started_at (Start): day/month order is ambiguous; choose a format" in out
    text = (d / "study.yaml").read_text()
    assert "# AMBIGUOUS: every value reads both day first and month first" in text
    assert '# format: "%d/%m/%Y %H:%M"    # day first' in text and '# format: "%m/%d/%Y %H:%M"    # month first' in text
    assert load_config(d / "study.yaml").tables["interactions"].mapping()["started_at"].format is None


def test_validate_prints_sizes_problems_and_ledger(cc, capsys):
    assert main(["validate", str(cc)]) == 0
    out = capsys.readouterr().out
    exp = _expected(cc)
    records = len(_records_by_line(cc / "cx_export.csv", header_lines=3))
    at_load = sum(v for k, v in exp["ledger"].items() if k.startswith("cx_responses|") and not k.endswith("orphan"))
    orphan = exp["ledger"]["cx_responses|orphan"]
    assert (f"cx_responses   given   cx_export.csv  {records}         {at_load}              {orphan}  "
            f"{records - at_load - orphan}") in out
    assert "load     cx_responses          40  unfinished response (Finished = 'False'): excluded" in out
    assert ("ex_responses.esat (Q_SAT) asked on 1-7, mapped onto the contract's 1-5 by the linear map rounded to "
            "whole points (1->1, 2->2, 3->2, 4->3, 5->4, 6->4, 7->5)") in out
    assert "dropped at load (never read): ex_responses: FullName" in out


def test_validate_never_prints_a_traceback(tmp_path, capsys):
    d = _mini(tmp_path, CX, LOG)
    (d / "cx.csv").write_bytes(b"\xff\xfe\x00garbage\x00\x00")
    code = main(["validate", str(d)])
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err
    assert "cx.csv" in err
    (d / "study.yaml").write_text("tables: [")
    assert main(["validate", str(d)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_spark_loads_a_config_study_and_hashes_ids_like_python(hr, tmp_path):
    """The mapped tables reach Spark through Arrow; Spark SQL's HMAC (sha2/unhex) equals Python's hmac."""
    if shutil.which("java") is None:
        pytest.fail("Spark needs Java (a JDK 17 or 21) on the PATH; this test is not skipped without it")
    from cxex_lab.workspace import _spark_session, prepare

    session = _spark_session(None)
    try:
        ws = prepare(hr, engine="spark", spark=session, out=tmp_path / "ws", panels=[("employee", "wave", 0)])
        key = bytes.fromhex((hr / ".cxex-lab" / "pseudonym.key").read_text().strip())
        staff = pd.read_excel(hr / "roster.xlsx")["Staff No"].astype(str)
        want = {hmac.new(key, s.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX] for s in staff}
        assert set(ws.employees["employee_id"]) == want
        expected = json.loads((hr / "expected.json").read_text())["rows"]
        sizes = ws.sizes()
        assert dict(zip(sizes["table"], sizes["rows"])) == expected
        ws.close()
    finally:
        session.stop()


def test_a_table_in_several_files_names_the_file_of_each_row(tmp_path):
    d = _mini(tmp_path, CX, "I1,A1,C1,05/03/2026 10:00,Yes\nI2,A2,C2,12/04/2026 09:00,No\n")
    (d / "log_b.csv").write_text("call,agent,customer,start,fcr\nI3,A1,C3,25/04/2026 08:00,yes\n"
                                 "I4,A2,C1,31/06/2026 11:00,NO\n")
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("file: log.csv", "files: [log.csv, log_b.csv]"))
    msg = _message(d)
    assert ("log.csv, log_b.csv, column 'start', log_b.csv row 3: value '31/06/2026 11:00' does not match the "
            "declared format '%d/%m/%Y %H:%M'") in msg


def test_a_windows_1252_export(tmp_path):
    d = _mini(tmp_path, CX, LOG)
    (d / "cx.csv").write_bytes("ref,recorded,nps,csat,ces,comment\nI1,05/03/2026 11:00,9,4,6,Très bien\n"
                               "I2,12/04/2026 10:00,3,2,2,\n".encode("cp1252"))
    text = (d / "study.yaml").read_text().replace("    file: cx.csv\n", "    file: cx.csv\n    encoding: cp1252\n")
    (d / "study.yaml").write_text(text.replace("      ces: ces\n", "      ces: ces\n      comment: comment\n"))
    s = load_study(d)
    assert s.cx_responses.set_index("interaction_id").loc["I1", "comment"] == "Très bien"


# --------------------------------------------------------------------------- the report set on the exports
@pytest.mark.slow
@pytest.mark.parametrize("name", ["contact_centre", "hr_excel"])
def test_report_set_runs_on_the_fixture_exports(name, tmp_path):
    """init -> validate -> run: every report notebook renders on each fixture export (no failure, no id
    shown); what a study cannot support (no customer outcomes, one site, two waves) is said in a note."""
    from cxex_lab.run import run_reports

    study = Path(shutil.copytree(FIX / name, tmp_path / name))
    nbs = [p.name for p in sorted((Path(__file__).resolve().parents[1] / "cxex_lab" / "notebooks").glob("0*.ipynb"))
           if not p.name.startswith("09_")]  # 09 reads a firm panel, not a contact-centre study
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXEX_LAB_WORKSPACE_DIR", str(tmp_path / "ws"))
        result = run_reports(data=study, pattern=",".join(nbs), jobs=2, out=tmp_path / "reports",
                             run_name="byod", progress=False)
    table = result.table
    assert len(table) == len(nbs)
    bad = table[table["status"] != "ok"]
    assert bad.empty, bad[["report", "status", "error"]].to_string()
