"""Spark through the same Ibis code: every level x period panel and its ledger equal DuckDB's on the sample.

CI installs the ``spark`` extra (pyspark). Spark needs Java: where it is missing these
tests **fail** with a message saying so (they are not skipped). One local Spark session
serves the whole module. The sample's Parquet holds nanosecond timestamps
(``ex_responses.responded_at``, ``employees.exit_date``), which Spark cannot read as
such: the workspace reads them as integers and converts them to microseconds.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from cxex_lab.contract import LEVELS, PERIODS
from cxex_lab.ledger import ledger_of
from cxex_lab.schema import DataContractError
from tests.conftest import SAMPLE

PANELS = [(level, period, 1) for level in LEVELS for period in PERIODS]
# one worker runs the whole module under pytest-xdist (--dist loadgroup): one Spark session, one prepare
pytestmark = pytest.mark.xdist_group("spark")


@pytest.fixture(scope="module")
def spark():
    try:
        import pyspark  # noqa: F401
    except ImportError:
        pytest.fail("pyspark is not installed: install the extra, pip install 'cxex-lab[spark]' (CI does)")
    if shutil.which("java") is None:
        pytest.fail("Spark needs Java and none is on the PATH: install a JDK (17 or 21), e.g. "
                    "apt-get install openjdk-17-jre-headless; these tests are not skipped without it")
    from cxex_lab.workspace import _spark_session

    session = _spark_session(None)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def both(spark, tmp_path_factory):
    from cxex_lab.workspace import prepare

    sp = prepare(SAMPLE, engine="spark", spark=spark, out=tmp_path_factory.mktemp("ws_spark"), panels=PANELS)
    dk = prepare(SAMPLE, engine="duckdb", out=tmp_path_factory.mktemp("ws_duckdb"), panels=PANELS)
    yield sp, dk
    sp.close()
    dk.close()


def test_panels_and_ledgers_equal_duckdb(both):
    sp, dk = both
    assert sp.meta["engine"] == "spark" and dk.meta["engine"] == "duckdb"
    # the panels were computed on Spark (stored at prepare time), not recomputed on DuckDB
    assert all(sp._stored_panel_name(*p, (30, 180), True, False) for p in PANELS)
    pd.testing.assert_frame_equal(sp.ledger, dk.ledger)
    assert sp.ledger["rows_excluded"].sum() == 25  # the sample's orphan responses
    pd.testing.assert_series_equal(sp.wave_openings(), dk.wave_openings())
    for level, period, lag in PANELS:
        a = sp.panel(level=level, period=period, ex_lag=lag)
        b = dk.panel(level=level, period=period, ex_lag=lag)
        assert len(a) > 0, (level, period)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, obj=f"{level} x {period} panel")
        pd.testing.assert_frame_equal(ledger_of(a), ledger_of(b), obj=f"{level} x {period} ledger")


def test_validated_tables_equal_duckdb(both):
    sp, dk = both
    pd.testing.assert_frame_equal(sp.sizes(), dk.sizes())
    pd.testing.assert_frame_equal(sp.summary(), dk.summary())
    for name in ("employees", "ex_responses"):
        pd.testing.assert_frame_equal(getattr(sp, name), getattr(dk, name))


def test_contract_errors_name_the_same_rows_on_spark(spark, small_study, tmp_path):
    """Validation runs on Spark: a bad value is reported at the same row as on DuckDB."""
    from cxex_lab.workspace import prepare

    df = small_study.cx_responses.copy()
    df.loc[[3, 40], "nps"] = 11
    small_study.save(tmp_path / "s")
    df.to_parquet(tmp_path / "s" / "cx_responses.parquet")
    messages = []
    for engine in ("spark", "duckdb"):
        with pytest.raises(DataContractError) as info:
            prepare(tmp_path / "s", engine=engine, spark=spark, out=tmp_path / engine)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "column 'nps': must be between 0 and 10 (2 row(s); e.g. row 5 (value 11), row 42 (value 11))" in messages[0]


def test_spark_connect_server(small_study, tmp_path):
    """The client-server route a cluster uses. Runs where a Spark Connect server is given in
    $CXEX_LAB_SPARK_REMOTE (e.g. sc://localhost:15002, started with pyspark's
    sbin/start-connect-server.sh) and the Connect client's packages (pyspark[connect]: grpcio, ...) are
    installed; skipped otherwise (they are not part of the shared environment)."""
    import os

    from cxex_lab.workspace import prepare

    remote = os.environ.get("CXEX_LAB_SPARK_REMOTE")
    if not remote:
        pytest.skip("no Spark Connect server given in CXEX_LAB_SPARK_REMOTE")
    small_study.save(tmp_path / "s")
    panels = [("employee", "wave", 1), ("team", "week", 1), ("site", "window", 1)]
    sc = prepare(tmp_path / "s", engine="spark", spark_remote=remote, out=tmp_path / "connect", panels=panels)
    dk = prepare(tmp_path / "s", out=tmp_path / "duckdb", panels=panels)
    pd.testing.assert_frame_equal(sc.ledger, dk.ledger)
    for level, period, lag in panels:
        a, b = sc.panel(level=level, period=period, ex_lag=lag), dk.panel(level=level, period=period, ex_lag=lag)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
        pd.testing.assert_frame_equal(ledger_of(a), ledger_of(b))
