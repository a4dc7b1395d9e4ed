"""The study workspace: prepare once, reuse, and every table it serves against an independent pandas computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxex_lab.cli import main
from cxex_lab.contract import EXCLUSIONS, LEVELS
from cxex_lab.ledger import ledger_of
from cxex_lab.linkage import link
from cxex_lab.schema import DataContractError
from cxex_lab.simulate import simulate_study
from cxex_lab.study import Study
from cxex_lab.workspace import Workspace, WorkspaceError, prepare


@pytest.fixture(scope="module")
def study():
    return simulate_study(n_sites=3, n_employees=60, n_waves=3, seed=11, orphan_responses=6)


@pytest.fixture(scope="module")
def prepared(study, tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    study.save(root / "study")
    ws = prepare(root / "study", out=root / "out")
    yield root, ws
    ws.close()


def _wave_of(ts: pd.Series, ex: pd.DataFrame) -> pd.Series:
    """Independent wave assignment: the latest wave opened (first answer's day) at or before ts; 0 before."""
    opened = ex.groupby("wave")["responded_at"].min().dt.floor("D").sort_values()
    pos = np.searchsorted(opened.to_numpy(), ts.to_numpy(), side="right") - 1
    return pd.Series(np.where(pos >= 0, opened.index.to_numpy()[np.maximum(pos, 0)], 0), index=ts.index)


# --------------------------------------------------------------------------- prepare and reuse


def test_prepare_reuses_while_data_unchanged(prepared, study):
    root, ws = prepared
    assert ws.reused is False and ws.path.parent == root / "out" and ws.path.name == f"{ws.key}.duckdb"
    again = prepare(root / "study", out=root / "out")
    assert again.reused is True and again.path == ws.path
    again.close()
    # one answer changed: a new key, a new workspace
    changed = root / "changed"
    study.save(changed)
    cx = study.cx_responses.copy()
    cx.loc[0, "nps"] = 10 - cx.loc[0, "nps"]
    cx.to_parquet(changed / "cx_responses.parquet")
    other = prepare(changed, out=root / "out")
    assert other.reused is False and other.key != ws.key
    other.close()


def test_tables_are_the_validated_ones(prepared, study):
    _, ws = prepared
    summary = ws.sizes().set_index("table")["rows"]
    assert summary["interactions"] == len(study.interactions)
    assert summary["cx_responses"] == len(study.cx_responses) - 6  # the orphans are excluded ...
    led = ws.ledger
    assert led["rule"].tolist() == [EXCLUSIONS["orphan_response"].rule] and led["rows_excluded"].tolist() == [6]
    exp = study.employees.sort_values("employee_id").reset_index(drop=True)
    exp["exit_date"] = exp["exit_date"].astype("datetime64[us]")  # timestamps are microseconds in a workspace
    pd.testing.assert_frame_equal(ws.employees, exp, check_dtype=False)
    assert ws.truth is not None and ws.truth.keys() == study.truth.keys()


def test_workspace_file_is_opened_read_only_and_by_path(prepared):
    _, ws = prepared
    again = Workspace.open(ws.path, segment="S01")
    assert set(again.employees["site_id"]) == {"S01"}
    with pytest.raises(Exception):
        again.con.raw_sql("CREATE TABLE x AS SELECT 1")
    again.close()


def test_panels_equal_link_and_account_for_every_response(prepared, study):
    _, ws = prepared
    for level in LEVELS:
        for period, lag in (("wave", 1), ("wave", 0), ("month", 1), ("window", 0)):
            got = ws.panel(level=level, period=period, ex_lag=lag)
            exp = link(study, level=level, period=period, ex_lag=lag)
            pd.testing.assert_frame_equal(got, exp, check_exact=False, rtol=1e-9)
            if period == "wave":
                led = ledger_of(got)
                excluded = led.loc[led["table"] == "cx_responses", "rows_excluded"].sum()
                assert got["n_cx"].sum() + excluded == len(study.cx_responses), (level, lag)


def test_link_accepts_a_workspace(prepared):
    _, ws = prepared
    pd.testing.assert_frame_equal(link(ws, level="team", period="month"), ws.panel(level="team", period="month"))
    with pytest.raises(ValueError, match="runs on its own connection"):
        link(ws, con=object())


def test_reporting_panel_from_the_workspace(prepared):
    _, ws = prepared
    rep = ws.panel(level="team", period="wave", reporting=True, min_group_size=10)
    assert "employee_id" not in rep.columns and rep["suppressed"].any()
    with pytest.raises(ValueError, match="individual employees"):
        ws.panel(level="employee", reporting=True)


def test_from_study_equals_prepared(prepared, study):
    _, ws = prepared
    mem = Workspace.from_study(study)
    for level in LEVELS:
        pd.testing.assert_frame_equal(mem.panel(level=level), ws.panel(level=level), check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(mem.ledger, ws.ledger)
    pd.testing.assert_frame_equal(mem.cx_cluster_stats("site_id", "wave"), ws.cx_cluster_stats("site_id", "wave"))


def test_segment_filters_through_the_contract(prepared, study):
    _, ws = prepared
    seg = ws.with_segment("S02")
    assert set(seg.employees["site_id"]) == {"S02"}
    pd.testing.assert_frame_equal(seg.panel(level="employee"), link(study, level="employee", segment="S02"),
                                  check_exact=False, rtol=1e-9)
    exp_int = study.interactions.merge(study.employees[["employee_id", "site_id"]], on="employee_id")
    assert seg.sizes().set_index("table").loc["interactions", "rows"] == (exp_int["site_id"] == "S02").sum()
    pd.testing.assert_series_equal(seg.wave_openings(), ws.wave_openings())  # waves are study-wide
    with pytest.raises(ValueError, match=r"unknown segment\(s\) \['S99'\]"):
        ws.with_segment("S99")
    assert ws.sites() == ["S01", "S02", "S03"]


# --------------------------------------------------------------------------- what models need


def test_cx_cluster_stats_match_pandas(prepared, study):
    _, ws = prepared
    s = study
    cx = s.cx_responses.merge(s.interactions[["interaction_id", "employee_id", "customer_id", "started_at"]],
                              on="interaction_id").merge(s.employees[["employee_id", "team_id", "site_id"]],
                                                         on="employee_id")
    cx["wave"] = _wave_of(cx["started_at"], s.ex_responses)
    cx = cx[cx["wave"] > 0]
    g = cx.groupby(["site_id", "wave", "employee_id"])
    exp = pd.DataFrame({
        "n_responses": g.size(), "n_customers": g["customer_id"].nunique(),
        "nps_n": g["nps"].count(), "nps_sum": g["nps"].sum(), "nps_sumsq": g["nps"].apply(lambda v: (v ** 2).sum()),
        "nps_n_promoters": g["nps"].apply(lambda v: (v >= 9).sum()),
        "nps_n_detractors": g["nps"].apply(lambda v: (v <= 6).sum()),
        "csat_n_top": g["csat"].apply(lambda v: (v >= 4).sum()), "ces_sum": g["ces"].sum(),
    }).reset_index()
    got = ws.cx_cluster_stats(by="site_id", period="wave", cluster="employee_id")
    m = got.merge(exp, on=["site_id", "wave", "employee_id"], suffixes=("", "_exp"), how="outer")
    assert len(m) == len(got) == len(exp)
    for c in ("n_responses", "n_customers", "nps_n", "nps_sum", "nps_sumsq", "nps_n_promoters", "nps_n_detractors",
              "csat_n_top", "ces_sum"):
        np.testing.assert_allclose(m[c].astype(float), m[f"{c}_exp"].astype(float), err_msg=c)
    led = ledger_of(got)
    assert led["rows_excluded"].sum() == len(s.cx_responses) - 6 - len(cx)  # responses before the first wave
    overall = ws.cx_cluster_stats(cluster=None)
    assert len(overall) == 1 and overall["n_responses"].item() == len(s.cx_responses) - 6
    assert overall["n_customers"].item() == s.interactions.loc[
        s.interactions["interaction_id"].isin(s.cx_responses["interaction_id"]), "customer_id"].nunique()


def test_ex_cluster_stats_match_pandas(prepared, study):
    _, ws = prepared
    ex = study.ex_responses.merge(study.employees[["employee_id", "team_id"]], on="employee_id")
    g = ex.groupby(["wave", "team_id"])
    got = ws.ex_cluster_stats(cluster="team_id")
    np.testing.assert_array_equal(got["enps_n"], g["enps"].count().to_numpy())
    np.testing.assert_allclose(got["esat_sumsq"], g["esat"].apply(lambda v: (v ** 2).sum()).to_numpy())
    np.testing.assert_array_equal(got["enps_n_promoters"], g["enps"].apply(lambda v: (v >= 9).sum()).to_numpy())


def test_pairs_match_pandas_shift(prepared, study):
    _, ws = prepared
    s = study
    it = s.interactions.sort_values(["employee_id", "started_at", "interaction_id"]).reset_index(drop=True)
    it = it.merge(s.cx_responses[["interaction_id", "csat"]], on="interaction_id", how="left")
    grp = it.groupby("employee_id")
    it["prev_csat"] = grp["csat"].shift(1)
    it["next_csat"] = grp["csat"].shift(-1)
    it["prev_gap_seconds"] = (it["started_at"] - grp["started_at"].shift(1)).dt.total_seconds()
    it["seq"] = grp.cumcount() + 1
    it["period"] = _wave_of(it["started_at"], s.ex_responses)
    exp = it[it["csat"].notna()].reset_index(drop=True)
    got = ws.pairs(ex_lag=0)
    assert len(got) == len(exp)
    assert (got["interaction_id"].to_numpy() == exp["interaction_id"].to_numpy()).all()
    np.testing.assert_array_equal(got["seq"], exp["seq"])
    np.testing.assert_array_equal(got["period"], exp["period"])
    np.testing.assert_allclose(got["prev_csat"].astype(float), exp["prev_csat"], equal_nan=True)
    np.testing.assert_allclose(got["next_csat"].astype(float), exp["next_csat"], equal_nan=True)
    np.testing.assert_allclose(got["prev_gap_seconds"], exp["prev_gap_seconds"].round(), atol=1.0, equal_nan=True)
    # the agent's own answer of the interaction's wave (ex_lag=0)
    row = got[got["empowerment"].notna()].iloc[0]
    ans = s.ex_responses.query("employee_id == @row.employee_id and wave == @row.period")["empowerment"].item()
    assert row["empowerment"] == ans and row["ex_wave"] == row["period"]


def test_customer_periods_match_pandas(prepared, study):
    _, ws = prepared
    s = study
    it = s.interactions.merge(s.cx_responses[["interaction_id", "csat"]], on="interaction_id", how="left")
    it["wave"] = _wave_of(it["started_at"], s.ex_responses)
    prev = it[it["wave"] > 0].groupby(["customer_id", "wave"]).agg(
        n=("interaction_id", "size"), answered=("csat", "count"), csat=("csat", "mean")).reset_index()
    prev["period"] = prev["wave"] + 1
    out = s.customer_outcomes[s.customer_outcomes["period"] >= 2].merge(prev, on=["customer_id", "period"],
                                                                         how="left")
    got = ws.customer_periods()
    assert len(got) == len(out)
    m = got.merge(out, on=["customer_id", "period"])
    np.testing.assert_array_equal(m["n_interactions_prev"], m["n"].fillna(0).astype(int))
    np.testing.assert_array_equal(m["n_answered_prev"], m["answered"].fillna(0).astype(int))
    np.testing.assert_allclose(m["csat_prev"].astype(float), m["csat"], equal_nan=True)
    # the prior period's outcome, and the agent who served most of p-1
    one = got[got["n_interactions_prev"] > 0].iloc[0]
    rows = it[(it["customer_id"] == one["customer_id"]) & (it["wave"] == one["prev_period"])]
    assert one["employee_id_prev"] in set(rows["employee_id"].mode())
    po = s.customer_outcomes.set_index(["customer_id", "period"])
    key = (one["customer_id"], one["prev_period"])
    if key in po.index:
        assert one["revenue_prev"] == pytest.approx(po.loc[key, "revenue"])

    # answered=True: the same rows with an answer in p-1, filtered in the engine, and the loyalty model
    # (which drops rows without the previous period's CX) gives the same estimates on either
    ans = ws.customer_periods(answered=True)
    pd.testing.assert_frame_equal(ans.reset_index(drop=True),
                                  got[got["n_answered_prev"] > 0].reset_index(drop=True))
    from cxex_lab.models import loyalty

    kw = dict(cx="csat_prev", outcome="revenue", agent="employee_id_prev", controls=["retained_prev", "revenue_prev"],
              model="linear", n_boot=0)
    a, b = loyalty(got, **kw).table, loyalty(ans, **kw).table
    np.testing.assert_allclose(a["estimate"], b["estimate"], rtol=1e-10)
    np.testing.assert_allclose(a["ci_low"], b["ci_low"], rtol=1e-10)


def test_split_halves(prepared, study):
    _, ws = prepared
    p = ws.panel(level="employee", period="wave", ex_lag=0, halves=True)
    assert (p["n_cx_h1"] + p["n_cx_h2"] == p["n_cx"]).all()
    assert ((p["n_cx_h1"] - p["n_cx_h2"]).between(0, 1)).all()
    both = p[(p["n_cx_h1"] > 0) & (p["n_cx_h2"] > 0)]
    pooled = (both["csat_h1"] * both["n_cx_h1"] + both["csat_h2"] * both["n_cx_h2"]) / both["n_cx"]
    np.testing.assert_allclose(pooled, both["csat"], rtol=1e-12)
    # by hand for one employee-wave: answers numbered in interaction start order
    r = both.iloc[0]
    s = study
    cx = s.cx_responses.merge(s.interactions[["interaction_id", "employee_id", "started_at"]], on="interaction_id")
    cx["wave"] = _wave_of(cx["started_at"], s.ex_responses)
    mine = cx[(cx["employee_id"] == r["employee_id"]) & (cx["wave"] == r["period"])]
    mine = mine.sort_values(["started_at", "interaction_id"])
    assert r["nps_h1"] == pytest.approx(mine["nps"].iloc[0::2].mean())
    assert r["nps_h2"] == pytest.approx(mine["nps"].iloc[1::2].mean())


def test_response_rates_and_overview(prepared, study):
    from cxex_lab.report import response_rates

    _, ws = prepared
    rr = ws.response_rates()
    cx = rr[rr["side"] == "CX"]
    assert cx["eligible"].sum() == len(study.interactions)
    pd.testing.assert_frame_equal(rr, response_rates(study), check_dtype=False)
    ov = ws.overview().set_index("what")["value"]
    assert ov["sites"] == "3" and ov["interactions"] == str(len(study.interactions))


# --------------------------------------------------------------------------- files and errors


def test_part_directories_and_nanosecond_timestamps(study, tmp_path):
    """A table split over part files (the chunked writer) with nanosecond timestamps reads like one file."""
    study.save(tmp_path / "one")
    parts = tmp_path / "parts"
    study.save(parts)
    (parts / "interactions.parquet").unlink()
    (parts / "interactions").mkdir()
    it = study.interactions.copy()
    it["started_at"] = it["started_at"].astype("datetime64[ns]")
    half = len(it) // 2
    it.iloc[:half].to_parquet(parts / "interactions" / "part-0.parquet", index=False)
    it.iloc[half:].to_parquet(parts / "interactions" / "part-1.parquet", index=False)
    a = prepare(tmp_path / "one", out=tmp_path / "out")
    b = prepare(parts, out=tmp_path / "out")
    pd.testing.assert_frame_equal(a.panel(level="team"), b.panel(level="team"))
    bad = it.iloc[half:].copy()
    bad.iloc[4, bad.columns.get_loc("handle_seconds")] = -3
    bad.to_parquet(parts / "interactions" / "part-1.parquet", index=False)
    with pytest.raises(DataContractError) as info:
        prepare(parts, out=tmp_path / "out")
    assert "must not be negative (1 row(s); e.g. part-1.parquet row 6 (value -3))" in str(info.value)


def test_memory_limit_and_spill_directory(study, tmp_path):
    study.save(tmp_path / "s")
    ws = prepare(tmp_path / "s", out=tmp_path / "out", memory_limit="256MB", temp_directory=tmp_path / "spill",
                 panels=[("employee", "week", 1)])
    pd.testing.assert_frame_equal(ws.panel(level="employee", period="week"), link(study, period="week"),
                                  check_exact=False)


def test_optional_customer_outcomes(study, tmp_path):
    s = Study(**{**study.tables(), "customer_outcomes": None})
    ws = Workspace.from_study(s)
    p = ws.panel(level="team")
    assert p["retention_rate"].isna().all() and len(p) > 0
    with pytest.raises(WorkspaceError, match="no customer_outcomes table"):
        ws.customer_periods()


def test_bad_arguments(prepared):
    _, ws = prepared
    with pytest.raises(ValueError, match="unknown level 'agent'"):
        ws.panel(level="agent")
    with pytest.raises(WorkspaceError, match="by must be None, 'site_id' or 'team_id'"):
        ws.cx_cluster_stats(by="region")
    with pytest.raises(WorkspaceError, match="unknown table"):
        ws.table("surveys")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare("/nonexistent/study")


def test_cli_prepare(study, tmp_path, capsys):
    study.save(tmp_path / "s")
    assert main(["prepare", str(tmp_path / "s"), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "workspace prepared on duckdb" in text and "orphan" not in text
    assert main(["prepare", str(tmp_path / "s"), "--out", str(tmp_path / "out")]) == 0
    assert "workspace reused" in capsys.readouterr().out
    df = study.cx_responses.copy()
    df.loc[0, "csat"] = 9
    df.to_parquet(tmp_path / "s" / "cx_responses.parquet")
    assert main(["prepare", str(tmp_path / "s"), "--out", str(tmp_path / "out")]) == 1
    assert "column 'csat': must be between 1 and 5 (1 row(s); e.g. row 2 (value 9))" in capsys.readouterr().err


def test_load_segment_reads_a_workspace_file(prepared):
    """The bridge for today's notebooks: the runner may pass the workspace file as data_dir."""
    from cxex_lab.report import load_segment

    root, ws = prepared
    a = load_segment(ws.path, "S02")
    b = load_segment(root / "study", "S02")
    assert len(a.interactions) == len(b.interactions) and len(a.cx_responses) == len(b.cx_responses)
    pd.testing.assert_frame_equal(a.ledger, b.ledger)
    assert a.truth is not None and set(a.employees["site_id"]) == {"S02"}
    facts = ws.summary().set_index("what")["value"]
    assert facts["interactions"] == str(ws.sizes().set_index("table").loc[
        "interactions", "rows"])


@pytest.mark.parametrize("kw", [{}, {"by": "site_id"}, {"by": "site_id", "period": "wave"}, {"cluster": "team_id"}],
                         ids=["overall", "site", "site-wave", "team-clusters"])
def test_mirror_stats_equal_the_pandas_mirror_statistics(prepared, study, kw):
    """The engine's per-cluster statistics are exactly metrics.mirror_cluster_stats (the pandas reference)."""
    from cxex_lab.metrics import CLUSTER_STATS_COLUMNS, mirror_cluster_stats

    ref = mirror_cluster_stats(study, **kw)
    got = prepared[1].mirror_stats(**kw)
    keys = [c for c in ref.columns if c not in CLUSTER_STATS_COLUMNS]
    ref = ref.sort_values(keys).reset_index(drop=True)
    got = got[ref.columns].sort_values(keys).reset_index(drop=True)
    assert len(ref) > 0
    pd.testing.assert_frame_equal(ref, got, check_dtype=False)
