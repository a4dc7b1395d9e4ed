"""Tests of cxex_lab.linkage: recovery against the simulator, exact counts, ledger, privacy, bad input."""

from __future__ import annotations

from cxex_lab.ledger import ledger_of

import numpy as np
import pandas as pd
import pytest

from cxex_lab.contract import EXCLUSIONS
from cxex_lab.linkage import LinkageError, link
from cxex_lab.privacy import ID_COLUMNS, assert_reportable
from cxex_lab.simulate import simulate_study
from cxex_lab.study import Study

LAG_PARAMS = dict(ar_ex=0, ar_cx=0, cx_to_ex=0, ex_to_cx=0.6, ex_direct_cx=0,
                  ex_to_ops={"fcr": 0, "aht": 0, "transfer": 0}, site_sd=0, ri_corr=0)


@pytest.fixture(scope="module")
def full_study():
    """Every interaction surveyed, no extremity bias, 7 orphan responses."""
    return simulate_study(n_sites=3, n_employees=150, n_waves=3, seed=3, latent=True,
                          cx_response_rate=1.0, cx_response_extremity=0.0, orphan_responses=7)


@pytest.fixture(scope="module")
def study():
    return simulate_study(n_sites=3, n_employees=90, n_waves=3, seed=5)


def _wave_of(ts: pd.Series, ex: pd.DataFrame) -> pd.Series:
    """Independent pandas wave assignment: latest wave opened (first answer's day) at or before ts."""
    opened = ex.groupby("wave")["responded_at"].min().dt.floor("D").sort_values()
    pos = np.searchsorted(opened.to_numpy(), ts.to_numpy(), side="right") - 1
    return pd.Series(np.where(pos >= 0, opened.index.to_numpy()[np.maximum(pos, 0)], -1), index=ts.index)


# --------------------------------------------------------------------------- backend


def test_backend_versions(tmp_path):
    """Exactly the Ibis operations linkage uses, on the pinned ibis + duckdb pair (no create_table)."""
    import ibis

    con = ibis.duckdb.connect()
    # linkage streams results through this (private) Ibis method: Ibis 12's to_pyarrow_batches fails on DuckDB 2
    assert hasattr(con, "_to_duckdb_relation")
    a = pd.DataFrame({"k": ["a", "b", None], "t": pd.to_datetime(["2025-01-08 10:00", "2025-01-15 00:00", "2025-04-02 00:00"]),
                      "x": [1, 2, 3], "f": [True, False, True]})
    b = pd.DataFrame({"k": ["a", "z"], "y": [10, 20]})
    a.to_parquet(tmp_path / "a.parquet")
    for ta in (ibis.memtable(a), con.read_parquet(str(tmp_path / "a.parquet"))):
        tb = ibis.memtable(b).select(kb="k", y="y")
        j = ta.join(tb, ta.k == tb.kb, how="outer")
        j = j.mutate(w=j.t.truncate("W"), m=j.t.truncate("M"), q=j.t.truncate("Q"),
                     c=ibis.cases((j.t >= ibis.literal(pd.Timestamp("2025-04-01").to_pydatetime(), type="timestamp"), 2),
                                  (j.t >= ibis.literal(pd.Timestamp("2025-01-01").to_pydatetime(), type="timestamp"), 1),
                                  else_=None).cast("int64"))
        g = j.group_by(["w", "c"]).aggregate(n=j.count(), nk=j.k.count(), s=j.f.cast("int32").sum(),
                                             r=(j.x.sum().cast("float64") / j.y.count().nullif(0).cast("float64")))
        win = ibis.memtable(pd.DataFrame({"s": pd.to_datetime(["2025-01-01"]), "e": pd.to_datetime(["2025-02-01"])}))
        lj = ta.left_join(win, (ta.t >= win.s) & (ta.t < win.e))
        semi = ta.semi_join(tb, ta.k == tb.kb)
        anti = ta.anti_join(tb, ta.k == tb.kb)
        ren = g.rename({"week": "w"})
        res = con.to_pyarrow(ren).to_pandas().sort_values("week").reset_index(drop=True)
        assert list(res["week"]) == list(pd.to_datetime(["2025-01-06", "2025-01-13", "2025-03-31", "NaT"]))
        assert res["n"].sum() == 4 and res["nk"].sum() == 2  # outer join keeps the unmatched right row
        assert list(res["c"].fillna(-1)) == [1, 1, 2, -1]
        assert con.execute(lj.e.count()) == 2
        assert con.execute(semi.count()) == 1 and con.execute(anti.count()) == 2
        assert con.execute(ta.select("k").distinct().count()) == 3
        assert con.execute(ta.group_by("k").agg(m=ta.t.min()).count()) == 3


# --------------------------------------------------------------------------- recovery and exact counts


def test_recovery_employee_wave_means(full_study):
    panel = link(full_study, level="employee", period="wave", ex_lag=0)
    lat = full_study.latent["interactions"]
    truth = lat.groupby(["employee_id", "wave"]).size().rename("n_true").reset_index()
    m = panel.merge(truth, left_on=["employee_id", "period"], right_on=["employee_id", "wave"], how="outer")
    # every interaction surveyed: the linked n equals the simulator's interactions per employee-wave
    assert (m["n_cx"] == m["n_true"]).all()
    assert (m["n_interactions"] == m["n_true"]).all()
    ew = full_study.latent["employee_waves"]
    m = panel.merge(ew, left_on=["employee_id", "period"], right_on=["employee_id", "wave"])
    m = m[m["n_cx"] >= 20]
    assert len(m) > 300
    assert np.corrcoef(m["csat"], m["cx"])[0, 1] > 0.85
    assert np.corrcoef(m["nps"], m["cx"])[0, 1] > 0.85


def test_counts_and_ops_equal_pandas(full_study):
    s = full_study
    panel = link(s, level="employee", period="wave", ex_lag=0)
    it = s.interactions.assign(wave=_wave_of(s.interactions["started_at"], s.ex_responses))
    it = it[it["wave"] > 0]
    exp = it.groupby(["employee_id", "wave"]).agg(
        n=("interaction_id", "size"), fcr=("resolved_first_contact", "mean"),
        aht=("handle_seconds", "mean"), tr=("transferred", "mean")).reset_index()
    m = panel.merge(exp, left_on=["employee_id", "period"], right_on=["employee_id", "wave"], how="outer")
    assert m["n"].notna().all() and m["n_interactions"].notna().all()
    assert (m["n_interactions"] == m["n"]).all()
    np.testing.assert_allclose(m["fcr_rate"], m["fcr"], rtol=1e-12)
    np.testing.assert_allclose(m["aht_seconds"], m["aht"], rtol=1e-12)
    np.testing.assert_allclose(m["transfer_rate"], m["tr"], rtol=1e-12)
    # EX of the same wave (ex_lag=0) is the employee's own answer
    ex = s.ex_responses.set_index(["employee_id", "wave"])
    answered = panel[panel["n_ex"] == 1]
    got = answered.set_index(["employee_id", "ex_wave"])["esat"]
    np.testing.assert_array_equal(got.to_numpy(), ex.loc[got.index, "esat"].to_numpy())


def test_every_response_accounted_for(full_study):
    for lag in (0, 1):
        panel = link(full_study, level="team", period="wave", ex_lag=lag)
        led = ledger_of(panel)
        in_ledger = led.loc[led["table"] == "cx_responses", "rows_excluded"].sum()
        assert panel["n_cx"].sum() + in_ledger == len(full_study.cx_responses)


@pytest.mark.parametrize("level", ["employee", "team", "site"])
@pytest.mark.parametrize("period", ["week", "wave"])
def test_every_row_accounted_for_with_unplaceable_rows(full_study, level, period):
    """Orphans, an employee missing from employees and rows with no EX wave: each in the panel or the ledger."""
    s = full_study
    gone = s.employees["employee_id"].iloc[0]
    cut = Study(employees=s.employees[s.employees["employee_id"] != gone], ex_responses=s.ex_responses,
                interactions=s.interactions, cx_responses=s.cx_responses, customer_outcomes=s.customer_outcomes)
    panel = link(cut, level=level, period=period, ex_lag=1)
    led = ledger_of(panel)
    for table, n_col in (("cx_responses", "n_cx"), ("interactions", "n_interactions")):
        in_ledger = led.loc[led["table"] == table, "rows_excluded"].sum()
        assert panel[n_col].sum() + in_ledger == len(getattr(s, table)), (table, led)
    assert (led["rows_excluded"] > 0).any()
    gone_cx = s.cx_responses["interaction_id"].isin(
        s.interactions.loc[s.interactions["employee_id"] == gone, "interaction_id"]).sum()
    placed = led[led["rule"].str.contains("employee cannot be placed")]
    assert placed["rows_excluded"].tolist() == [gone_cx]


def test_panel_order_is_sorted_and_repeatable(study):
    a = link(study, level="employee", period="week")
    b = link(study, level="employee", period="week")
    pd.testing.assert_frame_equal(a, b)
    keys = a[["employee_id", "period"]]
    assert keys.equals(keys.sort_values(["employee_id", "period"]).reset_index(drop=True))
    assert not keys.duplicated().any()


def test_week_periods_and_lag(study):
    panel = link(study, level="employee", period="week", ex_lag=1)
    assert (panel["period"].dt.day_of_week == 0).all()
    opened = pd.DataFrame(panel.attrs["wave_openings"]).set_index("wave")["opened"].map(pd.Timestamp)
    # EX of the wave before the latest wave opened at or before the week's Monday
    w0 = _wave_of(panel["period"], study.ex_responses)
    assert (panel["ex_wave"] == w0 - 1).all()
    assert panel["period"].min() >= opened[2]
    led = ledger_of(panel)
    assert led["rule"].str.contains("no EX wave opened 1 wave").any()


def test_lag_alignment():
    """EX drives only the next period's CX: positive at ex_lag=1, ~0 at ex_lag=0."""
    s = simulate_study(n_sites=4, n_employees=500, n_waves=4, seed=21, interactions_per_wave=15, **LAG_PARAMS)
    r = {}
    for lag in (0, 1):
        p = link(s, period="wave", ex_lag=lag, loyalty=False)
        p = p[(p["n_ex"] > 0) & (p["n_cx"] > 0)]
        ex = sum((p[c] - p[c].mean()) / p[c].std() for c in ("enps", "esat", "ees"))
        r[lag] = (np.corrcoef(ex, p["csat"])[0, 1], len(p))
    # Fisher-z 99.9% intervals (rows are ~independent: no lagged EX/CX autocorrelation, uncorrelated intercepts)
    for lag, (rho, n) in r.items():
        half = 3.29 / np.sqrt(n - 3)
        lo, hi = np.tanh(np.arctanh(rho) - half), np.tanh(np.arctanh(rho) + half)
        if lag == 1:
            assert lo > 0.1, (rho, n)
        else:
            assert lo < 0 < hi, (rho, n)


def test_window_counts(study):
    s = study
    panel = link(s, level="employee", period="window", window_days=(30, 180), loyalty=False)
    assert (panel["n_ex"] == 1).all() and (panel["ex_wave"] == panel["period"]).all()
    ex = s.ex_responses[["employee_id", "wave", "responded_at"]]
    m = s.interactions.merge(ex, on="employee_id")
    m = m[(m["started_at"] >= m["responded_at"] + pd.Timedelta(days=30))
          & (m["started_at"] < m["responded_at"] + pd.Timedelta(days=180))]
    exp = m.groupby(["employee_id", "wave"]).size()
    got = panel.set_index(["employee_id", "period"])["n_interactions"]
    got.index.names = exp.index.names
    pd.testing.assert_series_equal(got.sort_index(), exp.sort_index(), check_names=False, check_dtype=False)


def test_loyalty_wave_only(study):
    wave = link(study, level="site", period="wave")
    assert wave["n_customers"].gt(0).all() and wave["retention_rate"].between(0, 1).all()
    week = link(study, level="site", period="month")
    assert week["retention_rate"].isna().all() and week["n_customers"].isna().all()
    # site-wave retention equals pandas attribution of customer-periods to the site
    s = study
    it = s.interactions.merge(s.employees[["employee_id", "site_id"]], on="employee_id")
    it["period"] = _wave_of(it["started_at"], s.ex_responses)
    cp = it[["site_id", "period", "customer_id"]].drop_duplicates().merge(s.customer_outcomes,
                                                                           on=["customer_id", "period"])
    exp = cp.groupby(["site_id", "period"]).agg(n=("customer_id", "size"), r=("retained", "mean")).reset_index()
    m = wave.merge(exp, on=["site_id", "period"])
    assert len(m) == len(wave)
    assert (m["n_customers"] == m["n"]).all()
    np.testing.assert_allclose(m["retention_rate"], m["r"])


# --------------------------------------------------------------------------- ledger


def test_orphans_and_unknown_employees_in_ledger(full_study):
    led = ledger_of(link(full_study, level="employee", period="wave"))
    orphan = led[led["rule"].str.contains("not in interactions")]
    assert orphan["rows_excluded"].tolist() == [7] and orphan["table"].tolist() == ["cx_responses"]

    s = full_study
    gone = s.employees["employee_id"].iloc[0]
    cut = Study(employees=s.employees[s.employees["employee_id"] != gone], ex_responses=s.ex_responses,
                interactions=s.interactions, cx_responses=s.cx_responses, customer_outcomes=s.customer_outcomes)
    for level in ("employee", "team"):
        panel = link(cut, level=level, period="wave", ex_lag=0)
        led = ledger_of(panel)
        unk = led[led["rule"] == EXCLUSIONS["unknown_employee_interaction"].rule]
        assert unk["rows_excluded"].tolist() == [(s.interactions["employee_id"] == gone).sum()]
        assert (led["rule"] == EXCLUSIONS["unknown_employee_ex"].rule).any()
        assert gone not in set(panel.get("employee_id", []))


# --------------------------------------------------------------------------- privacy


def test_reporting_tables_are_reportable(study):
    for level, period in (("team", "week"), ("team", "wave"), ("site", "month")):
        for k in (5, 12):
            rep = link(study, level=level, period=period, reporting=True, min_group_size=k)
            assert not [c for c in ID_COLUMNS if c in rep.columns]
            assert_reportable(rep, ["n_ex", "n_cx", "n_customers"], min_group_size=k)
            for c in ("n_ex", "n_cx"):
                n = pd.to_numeric(rep[c], errors="coerce")
                assert not ((n > 0) & (n < k)).any()
            if rep["suppressed"].any():
                assert rep.loc[rep["suppressed"], "csat"].isna().all()
                assert ledger_of(rep)["rule"].str.contains("confidentiality minimum").any()
    rep = link(study, level="team", period="wave", reporting=True, min_group_size=12)
    assert rep["suppressed"].any()  # 7-8 employees per team: EX groups below 12 are suppressed


def test_reporting_refused_at_employee_level(study):
    with pytest.raises(LinkageError, match="individual employees"):
        link(study, level="employee", reporting=True)


# --------------------------------------------------------------------------- parity


def test_memory_and_parquet_give_equal_panels(study, tmp_path):
    study.save(tmp_path / "s")
    for level, period in (("employee", "week"), ("team", "wave")):
        a = link(study, level=level, period=period)
        b = link(tmp_path / "s", level=level, period=period)
        pd.testing.assert_frame_equal(a, b)
        pd.testing.assert_frame_equal(ledger_of(a), ledger_of(b))


def test_segment_is_a_subset(study):
    full = link(study, level="employee", period="wave")
    seg = link(study, level="employee", period="wave", segment="S02")
    exp = full[full["site_id"] == "S02"].reset_index(drop=True)
    pd.testing.assert_frame_equal(seg, exp)


# --------------------------------------------------------------------------- bad input


def test_bad_arguments(study):
    with pytest.raises(ValueError, match=r"unknown level 'agent'; valid levels are \['employee', 'team', 'site'\]"):
        link(study, level="agent")
    with pytest.raises(ValueError, match=r"unknown period 'day'; valid periods are \['week', 'month'"):
        link(study, period="day")
    with pytest.raises(ValueError, match="ex_lag must be a whole number of waves >= 0"):
        link(study, ex_lag=-1)
    with pytest.raises(ValueError, match="window_days must satisfy 0 <= start < end"):
        link(study, period="window", window_days=(180, 30))
    with pytest.raises(ValueError, match=r"unknown segment\(s\) \['S99'\]; valid site ids are \['S01', 'S02', 'S03'\]"):
        link(study, segment="S99")
    with pytest.raises(ValueError, match="must be a Study or the path"):
        link(42)


def test_empty_tables(study):
    for name in ("interactions", "cx_responses", "ex_responses"):
        tables = study.tables()
        tables[name] = tables[name].iloc[0:0]
        with pytest.raises(ValueError, match=f"table '{name}' is empty"):
            link(Study(**tables))


def test_segment_without_responses_is_empty_and_explained(study):
    s = study
    s2_int = s.interactions.merge(s.employees, on="employee_id").query("site_id == 'S02'")["interaction_id"]
    tables = s.tables()
    tables["cx_responses"] = s.cx_responses[~s.cx_responses["interaction_id"].isin(s2_int)]
    panel = link(Study(**tables), level="team", period="wave", segment="S02")
    assert len(panel) == 0
    assert "no CX responses" in panel.attrs["explanation"]
    assert ledger_of(panel)["rule"].str.contains("no CX responses").any()
    assert "csat" in panel.columns


@pytest.mark.parametrize("level", ["employee", "team"])
def test_segment_without_interactions_is_empty_and_explained(study, level):
    """A site whose employees handled nothing: the query returns no rows at all."""
    s = study
    extra = pd.DataFrame({"employee_id": ["E_NEW1", "E_NEW2", "E_NEW3"], "team_id": "T_NEW", "site_id": "S_EMPTY"})
    tables = s.tables()
    tables["employees"] = pd.concat([s.employees, extra], ignore_index=True)
    panel = link(Study(**tables), level=level, period="wave", segment="S_EMPTY")
    assert len(panel) == 0 and "no CX responses" in panel.attrs["explanation"]
    assert list(panel.columns) == list(link(s, level=level, period="wave").columns)


@pytest.mark.parametrize("period", ["week", "wave"])
def test_no_ex_wave_far_enough_back_is_empty_and_explained(study, period):
    panel = link(study, level="employee", period=period, ex_lag=5)
    assert len(panel) == 0 and "explanation" in panel.attrs
    led = ledger_of(panel)
    rows = led.loc[led["table"] == "interactions", "rows_excluded"].sum()
    assert rows == len(study.interactions)
    assert panel["period"].dtype == link(study, level="employee", period=period)["period"].dtype


def test_failure_mid_stream_leaves_connection_usable(study, monkeypatch):
    import ibis

    import cxex_lab.linkage as linkage

    con = ibis.duckdb.connect()

    class FailingCompute:  # the per-batch filter in linkage._collect fails on the first batch
        def __getattr__(self, name):
            if name == "equal":
                raise RuntimeError("boom")
            return getattr(linkage.pa.compute, name)

    monkeypatch.setattr(linkage, "pc", FailingCompute())
    with pytest.raises(RuntimeError, match="boom") as failure:  # kept alive, as Jupyter keeps the last error
        link(study, con=con)
    monkeypatch.undo()
    assert len(link(study, con=con)) > 0
    del failure


def test_link_interactions_attaches_cx_and_preceding_ex():
    from cxex_lab.linkage import link_interactions

    s = simulate_study(n_sites=2, n_employees=30, n_waves=3, seed=21)
    out = link_interactions(s, ex_lag=1)
    assert len(out) == len(s.interactions)
    assert out["csat"].notna().sum() == s.cx_responses["interaction_id"].isin(s.interactions["interaction_id"]).sum()
    # the EX attached to a period-3 interaction is the agent's wave-2 answer (ex_lag=1)
    row = out[(out["period"] == 3) & out["empowerment"].notna()].iloc[0]
    ans = s.ex_responses.query("employee_id == @row.employee_id and wave == 2")["empowerment"].item()
    assert row["empowerment"] == ans and row["ex_wave"] == 2
    # period 1 has no wave before it at ex_lag=1
    assert out.loc[out["period"] == 1, "empowerment"].isna().all()
    with pytest.raises(ValueError, match="ex_lag must be a whole number >= 0"):
        link_interactions(s, ex_lag=-1)


def test_linked_panel_survives_ordinary_pandas_work(tmp_path):
    """attrs hold plain records, so describe/concat/merge/to_parquet all work."""
    s = simulate_study(n_sites=2, n_employees=20, n_waves=3, seed=5, orphan_responses=2)
    panel = link(s, level="employee", period="wave", ex_lag=0)
    panel.select_dtypes("number").describe()
    pd.concat([panel, panel.iloc[:3]])
    panel.merge(panel[["employee_id", "period"]].iloc[:5], on=["employee_id", "period"])
    panel.to_parquet(tmp_path / "panel.parquet")
    assert ledger_of(panel)["rows_excluded"].sum() >= 2
