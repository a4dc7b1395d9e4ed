"""The contract's rules on small hand-made tables (expected values worked out by hand)."""

from __future__ import annotations

import pandas as pd
import pytest

from cxex_lab import contract as C


@pytest.fixture
def ex():
    # wave 1 opens on Mon 6 Jan 2025 (first answer 14:00 -> the day), wave 2 on 7 Apr, wave 3 on 7 Jul
    return pd.DataFrame({"employee_id": ["E1", "E2", "E1", "E2", "E1"], "wave": [1, 1, 2, 2, 3],
                         "responded_at": pd.to_datetime(["2025-01-06 14:00", "2025-01-08 09:00", "2025-04-08 10:00",
                                                         "2025-04-07 16:30", "2025-07-07 08:00"])})


def test_wave_openings_are_days_of_first_answers(ex):
    w = C.on_frames(C.wave_openings, ex=ex).sort_values("wave")
    assert w["opened"].dt.strftime("%Y-%m-%d").tolist() == ["2025-01-06", "2025-04-07", "2025-07-07"]


def test_wave_period_of_timestamps(ex):
    openings = C.on_frames(C.wave_openings, ex=ex)
    ts = pd.Series(pd.to_datetime(["2025-01-05 23:59", "2025-01-06 08:00", "2025-04-06 23:00", "2025-04-07 00:00",
                                   "2026-01-01 00:00", None]))
    got = C.assign_wave_period(ts, openings)
    # before the first opening: missing; the opening morning before the first answer already counts
    assert got.tolist() == [pd.NA, 1, 1, 2, 3, pd.NA]


def test_ex_wave_and_previous_wave(ex):
    openings = C.openings_frame(C.duckdb_connect(), C.memtable(ex))
    f = pd.DataFrame({"p": [1, 2, 3]})
    for lag, expected in ((0, [1, 2, 3]), (1, [None, 1, 2]), (2, [None, None, 1])):
        got = C.on_frames(lambda t: t.select(w=C.ex_wave_of(t.p, "wave", lag, openings)).order_by("w"), t=f)
        assert sorted(got["w"].dropna().astype(int).tolist()) == [v for v in expected if v is not None]
    got = C.on_frames(lambda t: t.mutate(q=C.previous_wave(t.p, openings)).order_by("p"), t=f)
    assert got["q"].tolist()[1:] == [1, 2] and pd.isna(got["q"].iloc[0])
    # a calendar period links the wave opened at or before its start: the month of April 2025 starts before
    # wave 2 opens (7 April), so ex_lag=0 gives wave 1
    months = pd.DataFrame({"m": pd.to_datetime(["2025-04-01", "2025-05-01"])})
    got = C.on_frames(lambda t: t.mutate(w=C.ex_wave_of(t.m, "month", 0, openings)).order_by("m"), t=months)
    assert got["w"].tolist() == [1, 2]


def test_employed_at():
    emp = pd.DataFrame({"employee_id": ["A", "B", "C", "D"],
                        "hire_date": pd.to_datetime(["2024-01-01", "2025-02-01", None, "2024-01-01"]),
                        "exit_date": pd.to_datetime([None, None, None, "2025-01-06"])})
    got = C.on_frames(lambda e: e.filter(C.employed_at(e, pd.Timestamp("2025-01-06"))).select("employee_id"), e=emp)
    assert sorted(got["employee_id"]) == ["A", "C"]  # B not yet hired, D left that day


def test_segments():
    assert C.segment_sites("all") is None and C.segment_sites(None) is None
    assert C.segment_sites("S01") == ["S01"] and C.segment_sites(["S01", "S02"]) == ["S01", "S02"]
    with pytest.raises(ValueError, match="segment must be a site id"):
        C.segment_sites(3)
    with pytest.raises(ValueError, match=r"unknown segment\(s\) \['S9'\]; valid site ids are \['S1', 'S2'\]"):
        C.check_segment(["S9"], ["S2", "S1", None])


def test_row_numbers_are_what_a_file_shows():
    df = pd.DataFrame({"x": [1, 2, 3]})
    assert C.row_numbers(df).tolist() == [2, 3, 4]  # header = line 1
    assert C.row_numbers(df.iloc[[2]]).tolist() == [4]  # a selection keeps its lines
    assert C.row_numbers(df.assign(_row=[10, 11, 12])).tolist() == [10, 11, 12]


def test_canonical_fills_optional_columns_only():
    t = C.memtable(pd.DataFrame({"interaction_id": ["I1"], "employee_id": ["E1"], "customer_id": ["C1"],
                                 "started_at": pd.to_datetime(["2025-01-06 10:00:00.123456789"])}))
    out = C.duckdb_connect().to_pyarrow(C.canonical(t, "interactions")).to_pandas()
    assert "channel" in out.columns and out["channel"].isna().all()
    assert str(out["started_at"].dtype) == "datetime64[us]"
    assert out["started_at"].iloc[0] == pd.Timestamp("2025-01-06 10:00:00.123456")
    no_ids = C.memtable(pd.DataFrame({"started_at": pd.to_datetime(["2025-01-06"])}))
    assert "employee_id" not in C.canonical(no_ids, "interactions").columns  # required columns stay missing
