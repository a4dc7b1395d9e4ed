"""Prepare once: the study workspace that notebooks and findings read.

:func:`prepare` loads a study, validates it against the data contract (as SQL
in the engine: :func:`cxex_lab.schema.check_tables`), applies the contract's
exclusion policies and links it once. It writes a **workspace**: a DuckDB file
holding

* the validated canonical tables (``employees``, ``ex_responses``,
  ``interactions``, ``cx_responses``, ``customer_outcomes``), copied engine to
  engine (the interactions never pass through pandas);
* the data-quality ledger of the validation and the wave openings;
* the linked panels the reports use (by default every level x wave period x
  ``ex_lag`` 0 and 1), each with its ledger;
* the study's truth and latent tables when it is simulated, and a ``meta``
  table (key, source, engine, sizes, timings).

The file is keyed by the **data fingerprint** (sha256 of the study's files),
the **config** and the **package** (version and the digest of the modules that
build a workspace), and reused while these match. It lives in
``<out>/<key>.duckdb``; ``out`` defaults to ``$CXEX_LAB_WORKSPACE_DIR`` or
``~/.cache/cxex-lab/workspaces`` (``$XDG_CACHE_HOME`` respected). The study
directory itself is never written to.

:class:`Workspace` is what notebooks and findings use, whatever the study's
size: ``Workspace.open(path_or_workspace, segment="all")`` or, for a simulated
study in memory, ``Workspace.from_study(study)``. Small tables come as pandas
(``ws.employees``, ``ws.ex_responses``, ``ws.ledger``); everything built from
the interactions is computed in the engine and only its (small) result comes
back: ``ws.panel(...)``, ``ws.cx_cluster_stats(...)``, ``ws.pairs(...)``,
``ws.customer_periods()``, ``ws.response_rates()``. Segments (sites) filter
through the contract's segment rule (:func:`cxex_lab.contract.segment_tables`).

Engines
-------
``engine="duckdb"`` (default) runs in-process and out of core:
``memory_limit`` caps DuckDB's memory and ``temp_directory`` is where it
spills. ``engine="spark"`` runs validation and linkage through the same Ibis
code on Spark: a local session (``pyspark``, ``pip install cxex-lab[spark]``),
a session you pass (``spark=``) or a Spark Connect server
(``spark_remote="sc://host:port"``); the results are written to the same
DuckDB workspace file, which the notebooks then read. Parquet timestamps in
nanoseconds (which Spark cannot read) are read as integers and converted to
microseconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa

from cxex_lab import contract
from cxex_lab.contract import CALENDAR_PERIODS, EXCLUSIONS, LEVELS, PERIODS, TABLES
from cxex_lab.ledger import LEDGER_COLUMNS, Ledger, empty_ledger, ledger_of
from cxex_lab.study import Study

__all__ = ["prepare", "Workspace", "WorkspaceError", "engine_tables", "workspace_key", "default_workspace_dir",
           "DEFAULT_PANELS", "ALL_PANELS", "FORMAT"]

#: Version of the workspace file layout (part of the key).
FORMAT = 1
#: Panels prepared by default: every level x wave period x ex_lag 0 and 1 (what the reports read).
DEFAULT_PANELS: tuple[tuple[str, str, int], ...] = tuple((lv, "wave", lag) for lv in LEVELS for lag in (0, 1))
#: Every level x period at ex_lag 0 and 1.
ALL_PANELS: tuple[tuple[str, str, int], ...] = tuple((lv, p, lag) for lv in LEVELS for p in PERIODS for lag in (0, 1))
_WINDOW_DAYS = (30.0, 180.0)
#: Modules whose code decides what a workspace holds (their digest is part of the key).
_CODE = ("contract.py", "workspace.py", "linkage.py", "schema.py", "io.py", "study.py", "ledger.py", "config.py",
         "readers.py", "privacy.py")
_EX_DEFAULT = ("empowerment", "cx_insight_access", "esat", "enps", "ees")
_CX_ITEMS = ("nps", "csat", "ces")


class WorkspaceError(ValueError):
    """A workspace cannot be prepared, opened or asked for something (the message says why)."""


# --------------------------------------------------------------------------- locating a study's files


def _table_files(path: Path, name: str) -> tuple[str, list[Path]] | None:
    """The file(s) of one table in a study directory: ("parquet" | "csv", files) or None."""
    for cand in (path / f"{name}.parquet", path / f"{name}.pq", path / name):
        if cand.is_file() and cand.suffix in (".parquet", ".pq"):
            return "parquet", [cand]
        if cand.is_dir():  # a part directory (the simulator's chunked writer, Spark, ...)
            parts = sorted(p for p in cand.rglob("*") if p.is_file() and p.suffix in (".parquet", ".pq")
                           and not p.name.startswith((".", "_")))
            if parts:
                return "parquet", parts
    csv = path / f"{name}.csv"
    if csv.is_file():
        return "csv", [csv]
    return None


def _parquet_study(path: Path) -> dict[str, list[Path] | None] | None:
    """The Parquet files of each table when every present table is Parquet (else None)."""
    if not path.is_dir() or (path / "study.yaml").exists():
        return None
    found = {name: _table_files(path, name) for name in TABLES}
    if any(found[n] is None for n in contract.REQUIRED_TABLES):
        return None
    if any(f is not None and f[0] != "parquet" for f in found.values()):
        return None
    return {n: (f[1] if f else None) for n, f in found.items()}


def _sql_str(p: Path | str) -> str:
    return "'" + str(p).replace("'", "''") + "'"


def engine_tables(path: str | Path, con: Any) -> dict[str, ir.Table | None] | None:
    """A Parquet study directory's tables read by the engine, with ``_row`` (and ``_file``).

    Returns None when the directory is not a plain Parquet study (CSV tables, a
    study config): load it with :func:`cxex_lab.io.load_study` then. A table
    may be one file (``interactions.parquet``) or a directory of part files.
    ``_row`` numbers the records of each file as a CSV export with one header
    line would (the first record is row 2); ``_file`` names the part file when
    a table has several.
    """
    files = _parquet_study(Path(path))
    if files is None:
        return None
    if getattr(con, "name", None) == "pyspark":
        return _spark_tables(con, files)
    out: dict[str, ir.Table | None] = {}
    for name, paths in files.items():
        if paths is None:
            out[name] = None
            continue
        lst = "[" + ", ".join(_sql_str(p) for p in paths) + "]"
        file_col = ", parse_filename(filename) AS _file" if len(paths) > 1 else ""
        sql = (f"SELECT * EXCLUDE (file_row_number, filename), file_row_number + 2 AS _row{file_col} "
               f"FROM read_parquet({lst}, file_row_number = true, filename = true, union_by_name = true)")
        # a temporary view (Ibis 12's con.sql() calls a cursor method DuckDB 2 no longer has)
        view = f"cxex_raw_{name}_{hashlib.sha1(lst.encode()).hexdigest()[:10]}"
        con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "{view}" AS {sql}')
        out[name] = con.table(view)
    return out


def _spark_tables(con: Any, files: Mapping[str, list[Path] | None]) -> dict[str, ir.Table | None]:
    """Parquet read by Spark, with ``_row``/``_file`` from its hidden metadata and nanoseconds converted."""
    from pyspark.sql import functions as F

    spark = con._session
    out: dict[str, ir.Table | None] = {}
    for name, paths in files.items():
        if paths is None:
            out[name] = None
            continue
        df = spark.read.parquet(*[str(p) for p in paths])
        cols = [F.col(f"`{c}`") for c in df.columns]
        try:
            meta = [(F.col("_metadata.row_index") + 2).alias("_row")]
            if len(paths) > 1:
                meta.append(F.col("_metadata.file_name").alias("_file"))
            df = df.select(*cols, *meta)
        except Exception:  # noqa: BLE001 - a Spark without row_index: problems then give no row numbers
            df = df.select(*cols)
        kinds = contract.contract_columns(name, df.columns)
        for c, typ in df.dtypes:
            # spark.sql.legacy.parquet.nanosAsLong reads TIMESTAMP(NANOS) as a long: back to a timestamp (us)
            if kinds.get(c) == "datetime" and typ == "bigint":
                df = df.withColumn(c, F.timestamp_micros(F.floor(F.col(c) / 1000).cast("long")))
        view = f"cxex_{name}_{abs(hash((name, tuple(map(str, paths))))) % 10**10}"
        # read the files once: validation runs several queries on each table (spills to disk when large)
        df.persist()
        df.createOrReplaceTempView(view)
        out[name] = con.table(view)
    return out


# --------------------------------------------------------------------------- keys


def default_workspace_dir() -> Path:
    """Where workspaces live by default: ``$CXEX_LAB_WORKSPACE_DIR`` or the user's cache folder."""
    env = os.environ.get("CXEX_LAB_WORKSPACE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cxex-lab" / "workspaces"


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                         for part in p.relative_to(path).parts)),
                  key=lambda p: p.relative_to(path).as_posix())


def data_fingerprint(path: str | Path, cache_dir: Path | None = None) -> str:
    """sha256 over the study's file names and bytes (hidden files skipped).

    The digest of a file set is remembered in ``cache_dir/fingerprints.json``
    against each file's size and modification time, so a warm open of a large
    study does not read its gigabytes again.
    """
    path = Path(path).resolve()
    files = _data_files(path)
    stats = [[p.relative_to(path).as_posix() if path.is_dir() else p.name, p.stat().st_size, p.stat().st_mtime_ns]
             for p in files]
    memo_file = cache_dir / "fingerprints.json" if cache_dir else None
    memo = {}
    if memo_file and memo_file.exists():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
    hit = memo.get(str(path))
    if hit and hit.get("stats") == stats:
        return hit["sha256"]
    h = hashlib.sha256()
    for (rel, _, _), p in zip(stats, files):
        h.update(rel.encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    digest = h.hexdigest()
    if memo_file:
        memo[str(path)] = {"stats": stats, "sha256": digest}
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo))
            tmp.replace(memo_file)
        except OSError:
            pass
    return digest


def _config_digest(config: Any) -> str:
    if config is None:
        return "none"
    if isinstance(config, (str, Path)):
        p = Path(config)
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else f"missing:{p}"
    if hasattr(config, "model_dump_json"):  # a typed (pydantic) config
        return hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _code_digest() -> str:
    import cxex_lab

    h = hashlib.sha256(str(getattr(cxex_lab, "__version__", "")).encode())
    here = Path(__file__).resolve().parent
    for name in _CODE:
        f = here / name
        if f.exists():
            h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def workspace_key(data: str | Path, config: Any = None, cache_dir: Path | None = None) -> str:
    """The key of a study's workspace: data fingerprint + config + package (version and code) + format."""
    parts = [data_fingerprint(data, cache_dir), _config_digest(config), _code_digest(), str(FORMAT)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- engines


def _spark_session(spark_remote: str | None, conf: Mapping[str, str] | None = None):
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise WorkspaceError("engine='spark' needs pyspark: pip install 'cxex-lab[spark]'") from err
    settings = {"spark.sql.session.timeZone": "UTC", "spark.sql.legacy.parquet.nanosAsLong": "true",
                "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS"}
    if spark_remote:
        builder = SparkSession.builder.remote(spark_remote)
    else:
        if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
            raise WorkspaceError("engine='spark' in local mode needs Java (a JDK 17 or 21) on the PATH or in "
                                 "JAVA_HOME; install one, or give spark_remote='sc://host:port' for a Spark "
                                 "Connect server")
        builder = SparkSession.builder.master(f"local[{os.cpu_count() or 2}]").appName("cxex-lab")
        settings.update({"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                         "spark.sql.shuffle.partitions": str(max(2, os.cpu_count() or 2))})
    settings.update(conf or {})
    for k, v in settings.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    for k in ("spark.sql.session.timeZone", "spark.sql.legacy.parquet.nanosAsLong"):
        session.conf.set(k, settings[k])
    if not spark_remote:
        session.sparkContext.setLogLevel("ERROR")
    return session


def _connect_engine(engine: str, path: Path | None, memory_limit, temp_directory, threads, spark, spark_remote,
                    spark_conf):
    if engine == "duckdb":
        return contract.duckdb_connect(str(path) if path else None, memory_limit=memory_limit,
                                       temp_directory=temp_directory, threads=threads)
    if engine == "spark":
        session = spark or _spark_session(spark_remote, spark_conf)
        for k, v in (("spark.sql.session.timeZone", "UTC"), ("spark.sql.legacy.parquet.nanosAsLong", "true")):
            session.conf.set(k, v)
        return ibis.pyspark.connect(session)
    raise WorkspaceError(f"unknown engine {engine!r}; use 'duckdb' or 'spark'")


# --------------------------------------------------------------------------- prepare


def _parse_panels(panels: Any) -> list[tuple[str, str, int]]:
    if panels is None or panels == "none":
        return []
    if panels == "default":
        return list(DEFAULT_PANELS)
    if panels == "all":
        return list(ALL_PANELS)
    out = []
    for p in panels:
        try:
            level, period, lag = p
        except (TypeError, ValueError):
            raise WorkspaceError(f"panels: each panel is (level, period, ex_lag), got {p!r}") from None
        if level not in LEVELS or period not in PERIODS or not isinstance(lag, (int, np.integer)) or lag < 0:
            raise WorkspaceError(f"panels: {p!r} is not a (level, period, ex_lag) of {list(LEVELS)} x "
                                 f"{list(PERIODS)} x a whole number >= 0")
        out.append((level, period, int(lag)))
    return out


def prepare(
    data: str | Path | Study,
    config: Any = None,
    engine: str = "duckdb",
    out: str | Path | None = None,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
    spark_remote: str | None = None,
    spark: Any = None,
    spark_conf: Mapping[str, str] | None = None,
    panels: Any = "default",
    force: bool = False,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> "Workspace":
    """Load, validate and link a study once, into a reusable workspace file.

    Parameters
    ----------
    data : path or Study
        A study directory (Parquet files or part directories are read by the
        engine; CSV tables and a study config are loaded with
        :func:`cxex_lab.io.load_study`), or a DuckDB study file. A
        :class:`~cxex_lab.study.Study` in memory gives
        :meth:`Workspace.from_study` (nothing is written).
    config : path, dict or typed config, optional
        The study config mapping exports onto the contract (part of the key).
    engine : {"duckdb", "spark"}
        Where validation and linkage run (module docstring).
    out : path, optional
        Folder of workspace files (default :func:`default_workspace_dir`). The
        report runner passes ``<reports>/.workspace``.
    memory_limit : str, optional
        DuckDB's memory cap, e.g. ``"4GB"`` (DuckDB's default: 80% of RAM).
    temp_directory : path, optional
        Where DuckDB spills beyond its memory limit (default: a folder beside
        the workspace file).
    spark_remote : str, optional
        ``"sc://host:port"``: run on a Spark Connect server.
    spark : SparkSession, optional
        Run on this session (any master).
    spark_conf : dict, optional
        Extra settings for the Spark session cxex-lab builds.
    panels : "default", "all", None or list of (level, period, ex_lag)
        Which linked panels to store (default: every level x ``wave`` x lag 0
        and 1). Others are computed on request from the stored tables. When
        an existing workspace lacks some requested panels, they are added to
        it, computed on DuckDB from its tables (whatever ``engine`` says).
    force : bool
        Rebuild even if a workspace with the same key exists.
    threads : int, optional
        DuckDB threads (default: all cores).
    log : callable, optional
        Receives one line per step with its time (the CLI prints them).

    Returns
    -------
    Workspace
        Opened read-only on the workspace file.

    Raises
    ------
    cxex_lab.schema.DataContractError
        The study breaks the data contract (every problem listed).
    FileNotFoundError, WorkspaceError
        No such study; a bad argument; Spark without Java.
    """
    if isinstance(data, Study):
        return Workspace.from_study(data)
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"study path {path} does not exist")
    wanted = _parse_panels(panels)
    out_dir = Path(out) if out is not None else default_workspace_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    key = workspace_key(path, config, out_dir)
    say(f"key {key} (fingerprint {time.perf_counter() - t0:.1f} s)")
    target = out_dir / f"{key}.duckdb"
    with _lock(out_dir / f"{key}.lock"):
        if target.exists() and not force:
            try:
                ws = Workspace.open(target)
            except Exception:  # noqa: BLE001 - a damaged file is rebuilt
                ws = None
            if ws is not None:
                missing = [p for p in wanted if ws._stored_panel_name(*p, _WINDOW_DAYS, True, False) is None]
                if not missing:
                    say(f"reused {target}")
                    ws.reused = True
                    return ws
                ws.close()
                _add_panels(target, missing, memory_limit, temp_directory, threads, say)
                ws = Workspace.open(target)
                ws.reused = True
                return ws
        tmp = out_dir / f".{key}.{os.getpid()}.building.duckdb"
        for f in (tmp, Path(str(tmp) + ".wal")):
            f.unlink(missing_ok=True)
        spill = Path(temp_directory) if temp_directory else out_dir / f".{key}.spill"
        try:
            _build(path, config, engine, tmp, key, wanted, memory_limit, str(spill), threads, spark, spark_remote,
                   spark_conf, say)
            tmp.replace(target)
        finally:
            for f in (tmp, Path(str(tmp) + ".wal")):
                f.unlink(missing_ok=True)
            if not temp_directory:
                shutil.rmtree(spill, ignore_errors=True)
    say(f"prepared {target} in {time.perf_counter() - t0:.1f} s")
    ws = Workspace.open(target)
    ws.reused = False
    return ws


def _load_raw(path: Path, config: Any, con: Any):
    """Raw tables on the engine (with ``_row``), their files, the truth of a simulated study: a
    :class:`cxex_lab.io.Loaded` (exports with a study config, CSV tables and DuckDB files are read and mapped
    by :func:`cxex_lab.io.load_tables`)."""
    from cxex_lab.io import Loaded, load_tables

    tables = engine_tables(path, con) if config is None else None
    if tables is not None:
        files = {n: str(_table_files(path, n)[1][0] if len(_table_files(path, n)[1]) == 1 else path / n)
                 if _table_files(path, n) else None for n in TABLES}
        truth = json.loads((path / "truth.json").read_text()) if (path / "truth.json").exists() else None
        return Loaded.canonical(path, tables, files, truth)
    return load_tables(path, config, con)


def _ex_keep(t: ir.Table) -> list[str]:
    return [c for c in t.columns if contract.is_touchpoint(c)]


def _build(path, config, engine, tmp, key, wanted, memory_limit, spill, threads, spark, spark_remote, spark_conf,
           say) -> None:
    from cxex_lab.schema import DataContractError, check_tables

    timings = {}
    t0 = time.perf_counter()
    duck = _connect_engine("duckdb", tmp, memory_limit, spill, threads, None, None, None)
    duck.raw_sql("SET preserve_insertion_order = false")  # tables need no order: less memory while copying
    eng = duck if engine == "duckdb" else _connect_engine(engine, None, memory_limit, spill, threads, spark,
                                                          spark_remote, spark_conf)
    try:
        loaded = _load_raw(path, config, eng)
        raw, files, truth = loaded.tables, loaded.files, loaded.truth
        checked = loaded.settle(eng, check_tables(eng, raw, files))  # raises io.StudyError (a DataContractError)
        timings["validate"] = time.perf_counter() - t0
        say(f"validated in {timings['validate']:.1f} s ({engine})")
        if not checked.ok:
            raise DataContractError(checked.problems, source=str(path))
        clean = {n: (contract.canonical(t, n, keep=_ex_keep(t) if n == "ex_responses" else ())
                     if t is not None else None) for n, t in checked.tables.items()}
        t1 = time.perf_counter()
        if engine == "duckdb":
            for n, t in clean.items():
                if t is not None:
                    duck.create_table(n, t)
            stored = {n: duck.table(n) if clean[n] is not None else None for n in TABLES}
            work, work_tables = duck, stored
        else:
            work_tables = {n: t.cache() if t is not None else None for n, t in clean.items()}
            work = eng
            _copy_from_spark(eng, work_tables, duck, tmp.parent, spark_remote or spark)
            stored = {n: duck.table(n) if clean[n] is not None else None for n in TABLES}
        timings["tables"] = time.perf_counter() - t1
        say(f"stored the validated tables in {timings['tables']:.1f} s")

        waves = contract.openings_frame(work, work_tables["ex_responses"])
        _put(duck, "wave_openings", waves)
        ledger = checked.ledger.frame
        _put(duck, "ledger", _ledger_frame(ledger))
        link_ledger = Ledger()
        if work_tables.get("customer_outcomes") is not None:
            from cxex_lab.linkage import ledger_unattributed_outcomes

            ledger_unattributed_outcomes(work, work_tables, waves, link_ledger)
        if truth is not None and (path / "latent").is_dir():
            for f in sorted((path / "latent").glob("*.parquet")):
                duck.raw_sql(f'CREATE TABLE "latent__{f.stem}" AS SELECT * FROM read_parquet({_sql_str(f)})')
        t2 = time.perf_counter()
        index = _store_panels(work, work_tables, duck, waves, wanted, link_ledger.records)
        timings["panels"] = time.perf_counter() - t2
        say(f"linked {len(wanted)} panel(s) in {timings['panels']:.1f} s")
        import cxex_lab

        rows = {n: int(duck.execute(stored[n].count())) for n in TABLES if stored[n] is not None}
        meta = {"key": key, "format": FORMAT, "version": getattr(cxex_lab, "__version__", ""),
                "source": str(path), "engine": engine, "created": pd.Timestamp.now("UTC").isoformat(),
                "config": None if config is None else str(config) if isinstance(config, (str, Path)) else "given",
                "rows": rows, "raw_rows": checked.rows, "files": files, "notes": checked.notes,
                "truth": truth, "link_ledger": link_ledger.records, "timings": timings,
                "spark_remote": spark_remote, "study": loaded.info}
        _write_meta(duck, meta)
        _write_panel_index(duck, index)
    finally:
        duck.disconnect()


def _copy_from_spark(scon, tables, duck, workdir: Path, remote) -> None:
    """Validated tables from Spark into the DuckDB workspace: via Parquet (local session) or Arrow (remote)."""
    session = scon._session
    local = not remote and hasattr(session, "sparkContext") and str(session.sparkContext.master).startswith("local")
    for n, t in tables.items():
        if t is None:
            continue
        sdf = session.sql(scon.compile(t))
        if local:  # engine to engine, out of core: Spark writes Parquet (microseconds), DuckDB reads it
            d = Path(tempfile.mkdtemp(prefix=f".{n}.", dir=workdir))
            try:
                sdf.write.mode("overwrite").parquet(str(d / "data"))
                duck.raw_sql(f'CREATE TABLE "{n}" AS SELECT * FROM read_parquet({_sql_str(d / "data" / "*.parquet")})')
            finally:
                shutil.rmtree(d, ignore_errors=True)
        else:
            _put(duck, n, _naive(sdf.toArrow()))


def _naive(table: pa.Table) -> pa.Table:
    """Zoned timestamps as UTC wall times."""
    cols = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type) and col.type.tz is not None:
            col = col.cast(pa.timestamp(col.type.unit))
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def _put(duck, name: str, data: pd.DataFrame | pa.Table) -> None:
    """Store a small table in the workspace, replacing any table of that name.

    Through the DuckDB connection itself: Ibis 12's ``create_table`` with
    in-memory data or ``overwrite=True`` emits a ``DROP ... IF EXISTS`` without a
    name under the installed sqlglot.
    """
    arrow = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    raw = duck.con
    tmp = f"_cxex_put_{abs(hash(name)) % 10**8}"
    raw.register(tmp, arrow)
    try:
        raw.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM "{tmp}"')
    finally:
        raw.unregister(tmp)


def _ledger_frame(ledger: pd.DataFrame) -> pd.DataFrame:
    led = ledger.copy() if len(ledger) else empty_ledger()
    led["rows_excluded"] = led["rows_excluded"].astype("int64")
    for c in ("step", "table", "rule", "example"):
        led[c] = led[c].astype(str)
    return led[list(LEDGER_COLUMNS)]


def _write_meta(duck, meta: Mapping[str, Any]) -> None:
    frame = pd.DataFrame({"name": list(meta), "value": [json.dumps(v, default=str) for v in meta.values()]})
    _put(duck, "meta", frame)


def _write_panel_index(duck, index: list[dict]) -> None:
    cols = ["name", "level", "period", "ex_lag", "d0", "d1", "loyalty", "halves", "ledger"]
    frame = pd.DataFrame(index, columns=cols)
    frame = frame.astype({"name": str, "level": str, "period": str, "ex_lag": "int64", "d0": "float64",
                          "d1": "float64", "loyalty": bool, "halves": bool, "ledger": str})
    _put(duck, "panels", frame)


def _store_panels(work, work_tables, duck, waves, wanted, link_records, index: list[dict] | None = None
                  ) -> list[dict]:
    from cxex_lab.linkage import link_tables

    index = list(index or [])
    for level, period, lag in wanted:
        led = Ledger()
        panel = link_tables(work, work_tables, waves, led, level=level, period=period, ex_lag=lag,
                            window_days=_WINDOW_DAYS, loyalty=True, halves=False, study_ledger=False)
        name = f"panel__{level}__{period}__{lag}"
        _put(duck, name, panel)
        index = [r for r in index if r["name"] != name]
        index.append({"name": name, "level": level, "period": period, "ex_lag": lag, "d0": _WINDOW_DAYS[0],
                      "d1": _WINDOW_DAYS[1], "loyalty": True, "halves": False, "ledger": json.dumps(led.records)})
    return index


def _add_panels(target: Path, missing, memory_limit, temp_directory, threads, say) -> None:
    duck = contract.duckdb_connect(str(target), memory_limit=memory_limit,
                                   temp_directory=str(temp_directory) if temp_directory else None, threads=threads)
    try:
        tables = {n: duck.table(n) if n in _list_tables(duck) else None for n in TABLES}
        waves = _read_waves(duck)
        index = duck.table("panels").to_pyarrow().to_pylist()
        t0 = time.perf_counter()
        index = _store_panels(duck, tables, duck, waves, missing, [], index)
        _write_panel_index(duck, index)
        say(f"added {len(missing)} panel(s) in {time.perf_counter() - t0:.1f} s")
    finally:
        duck.disconnect()


def _read_waves(con) -> pd.DataFrame:
    w = con.table("wave_openings").to_pyarrow().to_pandas()
    w["opened"] = pd.to_datetime(w["opened"]).astype("datetime64[us]")
    return w


# --------------------------------------------------------------------------- the workspace


def _frame(con, expr) -> pd.DataFrame:
    return con.to_pyarrow(expr).to_pandas()


class Workspace:
    """A prepared study: validated tables in an engine, the ledger, wave openings and the linked panels.

    Do not build one directly: use :func:`prepare`, :meth:`open` or
    :meth:`from_study`. Every method that reads the interactions runs in the
    engine (DuckDB on the workspace file, or in memory for a study in memory)
    and returns a small pandas result. A workspace may be limited to a
    segment (site ids): then every table and result is the segment's
    (:func:`cxex_lab.contract.segment_tables`), while wave openings and the
    validation ledger stay the whole study's.

    Attributes
    ----------
    con : Ibis backend
        The connection the tables live on.
    tables : dict of Ibis tables
        The validated canonical tables (the segment's, if any); None for an
        absent optional table.
    path : Path or None
        The workspace file (None in memory).
    segment : list of str or None
        The site ids of the segment (None = all).
    reused : bool or None
        After :func:`prepare`: whether an existing file was reused.
    """

    def __init__(self, con: Any, tables: dict[str, ir.Table | None], waves: pd.DataFrame, ledger: pd.DataFrame,
                 meta: dict[str, Any], *, path: Path | None = None, study: Study | None = None,
                 stored: dict[tuple, dict] | None = None, segment: list[str] | None = None,
                 base: "Workspace | None" = None) -> None:
        self.con = con
        self._all_tables = tables if base is None else base._all_tables
        self.tables = contract.segment_tables(tables, segment) if segment else dict(tables)
        self._waves = waves
        self._ledger = ledger
        self.meta = meta
        self.path = path
        self._study = study
        self._stored = stored or {}
        self.segment = segment
        self._base = base
        self._cache: dict[str, Any] = {}
        self.reused: bool | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, obj: "str | Path | Study | Workspace", segment: Any = "all", **prepare_kwargs: Any) -> "Workspace":
        """Open a workspace: a workspace file, a study (prepared first, or reused), a Study, or a Workspace.

        ``segment``: a site id, a list of them or ``"all"``. A study directory is
        passed to :func:`prepare` (with ``prepare_kwargs``), which reuses its
        workspace when the key matches; the report runner prepares before the
        notebooks run, so they only open.
        """
        if isinstance(obj, Workspace):
            ws = obj
        elif isinstance(obj, Study):
            ws = cls.from_study(obj)
        else:
            path = Path(obj)
            if path.is_file() and path.suffix == ".duckdb" and _is_workspace_file(path):
                ws = cls._open_file(path)
            else:
                ws = prepare(path, **prepare_kwargs)
        return ws.with_segment(segment)

    @classmethod
    def _open_file(cls, path: Path) -> "Workspace":
        spill = Path(tempfile.gettempdir()) / "cxex-lab-spill" / str(os.getpid())  # one per process
        con = contract.duckdb_connect(str(path), read_only=True, temp_directory=str(spill))
        names = set(_list_tables(con))
        meta = {r["name"]: json.loads(r["value"]) for r in con.table("meta").to_pyarrow().to_pylist()}
        if meta.get("format") != FORMAT:
            raise WorkspaceError(f"{path} is a workspace of format {meta.get('format')}, this cxex-lab reads "
                                 f"format {FORMAT}: prepare it again")
        tables = {n: con.table(n) if n in names else None for n in TABLES}
        ledger = Ledger(con.table("ledger").to_pyarrow().to_pandas()).frame
        stored = {}
        for r in con.table("panels").to_pyarrow().to_pylist():
            stored[(r["level"], r["period"], int(r["ex_lag"]), float(r["d0"]), float(r["d1"]), bool(r["loyalty"]),
                    bool(r["halves"]))] = r
        return cls(con, tables, _read_waves(con), ledger, meta, path=path, stored=stored)

    @classmethod
    def from_study(cls, study: Study, segment: Any = "all", validate: bool = True) -> "Workspace":
        """A workspace in memory for a study in memory (e.g. a simulated replicate study).

        The tables are validated (in an in-memory DuckDB) unless
        ``validate=False``, the contract's exclusions applied, and the clean
        tables materialised in memory; nothing is written to disk. Fast enough
        to call once per replicate study.

        Raises
        ------
        cxex_lab.schema.DataContractError
            The study breaks the data contract.
        """
        from cxex_lab.schema import DataContractError, check_tables

        con = contract.duckdb_connect()
        raw = {n: contract.memtable(getattr(study, n)) if getattr(study, n, None) is not None else None
               for n in TABLES}
        files = {n: getattr(study, n).attrs.get("source") for n in TABLES if getattr(study, n, None) is not None}
        if validate:
            checked = check_tables(con, raw, files)
            if not checked.ok:
                raise DataContractError(checked.problems, source=study.source)
            clean, led = checked.tables, checked.ledger.frame
        else:
            clean, led = raw, empty_ledger()
        tables = {}
        for n, t in clean.items():
            if t is None:
                tables[n] = None
                continue
            c = contract.canonical(t, n, keep=_ex_keep(t) if n == "ex_responses" else ())
            tables[n] = con.create_table(f"ws_{n}", c, temp=True)
        prior = study.ledger if study.ledger is not None else empty_ledger()
        ledger = pd.concat([prior, led], ignore_index=True) if len(prior) and len(led) else (led if len(led)
                                                                                              else prior)
        waves = (contract.openings_frame(con, tables["ex_responses"]) if study.openings is None else
                 pd.DataFrame({"wave": study.openings.index.astype("int64"),
                               "opened": pd.to_datetime(study.openings.values).astype("datetime64[us]")}))
        meta = {"source": study.source or "study in memory", "engine": "duckdb (in memory)", "truth": study.truth,
                "link_ledger": None, "notes": []}
        ws = cls(con, tables, waves, Ledger(ledger).frame, meta, study=study)
        return ws.with_segment(segment)

    def with_segment(self, segment: Any) -> "Workspace":
        """The same workspace limited to a segment (site ids; ``"all"`` = everything)."""
        sites = contract.segment_sites(segment)
        base = self._base or self
        if sites == (self.segment or None):
            return self
        if sites is None:
            return base
        emp = base._all_tables["employees"]
        valid = base.con.to_pyarrow(emp.select(s=emp.site_id.cast("string")).distinct()).column(0).to_pylist()
        contract.check_segment(sites, valid)
        ws = Workspace(base.con, base._all_tables, base._waves, base._ledger, base.meta, path=base.path,
                       study=base._study, stored=base._stored, segment=sites, base=base)
        return ws

    def close(self) -> None:
        """Close the connection (a segment shares its parent's: closing either closes both)."""
        try:
            self.con.disconnect()
        except Exception:  # noqa: BLE001 - already closed
            pass

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        where = str(self.path) if self.path else "in memory"
        seg = f", segment {self.segment}" if self.segment else ""
        return f"Workspace({self.meta.get('source')}, {where}{seg})"

    # ------------------------------------------------------------------ small tables

    @property
    def key(self) -> str | None:
        """The workspace key (None in memory)."""
        return self.meta.get("key")

    @property
    def source(self) -> str:
        """Where the study came from."""
        return str(self.meta.get("source"))

    @property
    def employees(self) -> pd.DataFrame:
        """The employees (the segment's), as pandas."""
        if "employees" not in self._cache:
            self._cache["employees"] = self._small("employees")
        return self._cache["employees"]

    @property
    def ex_responses(self) -> pd.DataFrame:
        """The EX answers (the segment's), as pandas."""
        if "ex_responses" not in self._cache:
            self._cache["ex_responses"] = self._small("ex_responses")
        return self._cache["ex_responses"]

    def _small(self, name: str) -> pd.DataFrame:
        t = self.tables[name]
        keys = list(contract.KEYS[name])
        return _frame(self.con, t.order_by(keys)).reset_index(drop=True)

    @property
    def ledger(self) -> pd.DataFrame:
        """The validation's data-quality ledger (the whole study's, also for a segment)."""
        return self._ledger.copy()

    @property
    def truth(self) -> dict | None:
        """The simulator's truth (None for real data)."""
        return self.meta.get("truth")

    @property
    def latent(self) -> dict[str, pd.DataFrame]:
        """The simulator's latent tables (the segment's employees), or an empty dict."""
        if "latent" in self._cache:
            return self._cache["latent"]
        if self._study is not None:
            lat = dict(self._study.latent)
        elif self.path is not None:
            lat = {n.removeprefix("latent__"): self.con.table(n).to_pyarrow().to_pandas()
                   for n in _list_tables(self.con) if n.startswith("latent__")}
        else:
            lat = {}
        if self.segment:
            ids = set(self.employees["employee_id"])
            lat = {n: df[df["employee_id"].isin(ids)].reset_index(drop=True) for n, df in lat.items()
                   if "employee_id" in df.columns}
        self._cache["latent"] = lat
        return lat

    def table(self, name: str) -> ir.Table:
        """The Ibis table of a canonical table (the segment's): for queries in the engine."""
        if name not in TABLES:
            raise WorkspaceError(f"unknown table {name!r}; the tables are {list(TABLES)}")
        t = self.tables[name]
        if t is None:
            raise WorkspaceError(f"this study has no {name} table")
        return t

    # ------------------------------------------------------------------ what the study has (track io)

    @property
    def study_info(self) -> dict[str, Any]:
        """What loading recorded (:func:`cxex_lab.io.load_tables`): table status (given / derived / absent),
        the column mapping with question texts, native scales and their maps, touchpoints, dropped columns,
        time zone, privacy. Empty for a study in memory."""
        return dict(self.meta.get("study") or {})

    def table_status(self, name: str) -> str:
        """``"given"`` (from a file), ``"derived"`` (employees built from the ids) or ``"absent"``."""
        if name not in TABLES:
            raise WorkspaceError(f"unknown table {name!r}; the tables are {list(TABLES)}")
        status = (self.meta.get("study") or {}).get("tables", {}).get(name)
        if status:
            return status
        return "given" if self.tables.get(name) is not None else "absent"

    def has(self, name: str, column: str | None = None) -> bool:
        """Whether the study has a table (given or derived) or, with ``column``, a column holding any value.

        ``ws.has("customer_outcomes")``; ``ws.has("interactions", "channel")``
        is False when the export had no channel (the contract's optional
        columns are stored as missing values). The whole study's answer, also
        for a segment.
        """
        t = (self._base or self)._all_tables.get(name) if name in TABLES else None
        if t is None:
            return False
        if column is None:
            return True
        if column not in t.columns:
            return False
        key = f"has:{name}.{column}"
        if key not in self._cache:
            self._cache[key] = int(self.con.execute(t[column].count())) > 0
        return self._cache[key]

    @property
    def touchpoints(self) -> list[str]:
        """The touchpoint items (``tp_*`` columns of ex_responses) that hold answers, in column order."""
        ex = (self._base or self)._all_tables.get("ex_responses")
        if ex is None:
            return []
        return [c for c in ex.columns if contract.is_touchpoint(c) and self.has("ex_responses", c)]

    def id_index(self):
        """The study's ids for the report runner's privacy scan (:func:`cxex_lab.privacy.study_ids`)."""
        from cxex_lab.privacy import study_ids

        return study_ids(self)

    def sites(self) -> list[str]:
        """The site ids (valid segments)."""
        emp = (self._base or self)._all_tables["employees"]
        return sorted(str(s) for s in self.con.to_pyarrow(emp.select("site_id").distinct()).column(0).to_pylist()
                      if s is not None)

    @property
    def fingerprint(self) -> str | None:
        """Identity of the prepared data (the workspace key: data, config and code); None in memory."""
        return self.meta.get("key")

    def summary(self) -> pd.DataFrame:
        """Study facts as ``what, value`` rows (the segment's): the same as :meth:`overview`."""
        return self.overview()

    def sizes(self) -> pd.DataFrame:
        """Rows and columns of each table (the segment's)."""
        rows = []
        counts = {n: t.count().name(n) for n, t in self.tables.items() if t is not None}
        got = self.con.to_pyarrow(ibis.memtable({"_": [0]}).select(**counts)).to_pylist()[0] if counts else {}
        for n in TABLES:
            t = self.tables[n]
            if t is not None:
                rows.append({"table": n, "rows": int(got[n]), "columns": len(t.columns)})
        return pd.DataFrame(rows, columns=["table", "rows", "columns"])

    def overview(self) -> pd.DataFrame:
        """What was loaded: sites, teams, employees, waves, answers, interactions, dates (``what, value``)."""
        emp, ex, it, cx = (self.tables[n] for n in ("employees", "ex_responses", "interactions", "cx_responses"))
        co = self.tables.get("customer_outcomes")
        q = {"sites": emp.site_id.nunique(), "teams": emp.team_id.nunique(), "employees": emp.count(),
             "EX waves": ex.wave.nunique(), "EX answers": ex.count(), "interactions": it.count(),
             "CX responses": cx.count(), "customers": it.customer_id.nunique(),
             "first interaction": it.started_at.min(), "last interaction": it.started_at.max()}
        if co is not None:
            q["customer-period outcomes"] = co.count()
        got = {k: self.con.execute(v) for k, v in q.items()}
        order = ["sites", "teams", "employees", "EX waves", "EX answers", "interactions", "CX responses",
                 "customers", "customer-period outcomes", "first interaction", "last interaction"]
        vals = {}
        for k in order:
            if k not in got:
                continue
            v = got[k]
            vals[k] = "-" if v is None or (isinstance(v, float) and np.isnan(v)) else (
                pd.Timestamp(v).date().isoformat() if "interaction" in k and k.endswith("interaction") else str(v))
        return pd.DataFrame({"what": list(vals), "value": list(vals.values())})

    def wave_openings(self) -> pd.Series:
        """Opening day of each EX wave (the whole study's), indexed by wave, in opening order."""
        w = self._waves
        return pd.Series(w["opened"].to_numpy(), index=pd.Index(w["wave"].to_numpy(), name="wave"), name="opened")

    def to_study(self, max_interactions: int = 2_000_000) -> Study:
        """The workspace's tables as a pandas :class:`Study` (small studies only; refused above the limit)."""
        n = int(self.con.execute(self.tables["interactions"].count()))
        if n > max_interactions:  # noqa: SIM102
            raise WorkspaceError(f"to_study: {n:,} interactions are more than max_interactions="
                                 f"{max_interactions:,}; use the workspace's methods, which run in the engine")
        parts = {nm: (_frame(self.con, t) if t is not None else None) for nm, t in self.tables.items()}
        return Study(**parts, truth=self.truth, latent=self.latent, source=self.source, ledger=self.ledger,
                     openings=self.wave_openings())

    # ------------------------------------------------------------------ panels

    def _stored_panel_name(self, level, period, ex_lag, window_days, loyalty, halves) -> str | None:
        d0, d1 = (float(x) for x in window_days)
        if period not in ("window",):
            d0, d1 = _WINDOW_DAYS  # window_days matter only for window periods
        r = self._stored.get((level, period, int(ex_lag), d0, d1, bool(loyalty), bool(halves)))
        return r["name"] if r else None

    def panel(self, level: str = "employee", period: str = "wave", ex_lag: int = 1,
              window_days: Sequence[float] = _WINDOW_DAYS, min_group_size: int = 5, reporting: bool = False,
              loyalty: bool = True, halves: bool = False, segment: Any = None) -> pd.DataFrame:
        """The linked panel: :func:`cxex_lab.linkage.link` on the workspace (same arguments and result).

        Stored panels (see :func:`prepare`) are read, others computed in the
        engine. ``attrs["ledger"]`` holds the validation ledger followed by the
        linkage's own entries, so that every CX response is either behind a
        row's ``n_cx`` or in the ledger (for the whole study; a segment's
        panel carries the study's validation ledger). ``segment`` overrides
        the workspace's segment.
        """
        from cxex_lab.linkage import _check_args, finish_panel, link_tables

        if segment is not None:
            return self.with_segment(segment).panel(level, period, ex_lag, window_days, min_group_size, reporting,
                                                    loyalty, halves)
        d0, d1 = _check_args(level, period, ex_lag, window_days, min_group_size, reporting, None)
        ex_lag = int(ex_lag)
        ledger = Ledger(self._ledger)
        link_records = self.meta.get("link_ledger")
        name = None if self.segment else self._stored_panel_name(level, period, ex_lag, (d0, d1), loyalty, halves)
        if name is not None:
            tab = self.con.table(name).to_pyarrow()
            panel = tab.to_pandas()
            panel["n_customers"] = panel["n_customers"].astype("Int64")
            if panel["n_customers"].notna().any():
                panel["n_customers"] = panel["n_customers"].fillna(0)
            stored_ledger = json.loads(self._stored_for(name)["ledger"])
            if loyalty and period in ("wave", "window"):
                ledger.extend(ledger_of(link_records or []))
            ledger.extend(ledger_of(stored_ledger))
        else:
            scoped = bool(self.segment)
            if link_records is not None and not scoped:
                if loyalty and period in ("wave", "window"):
                    ledger.extend(ledger_of(link_records))
                study_ledger = False
            else:
                study_ledger = not scoped and self.tables.get("customer_outcomes") is not None
            panel = link_tables(self.con, self.tables, self._waves, ledger, level=level, period=period,
                                ex_lag=ex_lag, window_days=(d0, d1), loyalty=loyalty, halves=halves, scoped=scoped,
                                study_ledger=study_ledger)
        params = dict(level=level, period=period, ex_lag=ex_lag, window_days=(d0, d1), min_group_size=min_group_size,
                      reporting=reporting, segment=self.segment, loyalty=loyalty, source=self.source)
        return finish_panel(panel, ledger, self._waves, params, segment=self.segment)

    def _stored_for(self, name: str) -> dict:
        return next(r for r in self._stored.values() if r["name"] == name)

    # ------------------------------------------------------------------ sufficient statistics

    def _attributed_responses(self, with_time: bool = True) -> ir.Table:
        """CX responses with the employee, team, site and customer of the interaction they rate."""
        it, cx, emp = self.tables["interactions"], self.tables["cx_responses"], self.tables["employees"]
        i = it.select(_iid=it.interaction_id, employee_id=it.employee_id, customer_id=it.customer_id,
                      started_at=it.started_at)
        i = contract.attribute(i, emp, keys=("team_id", "site_id"))
        c = cx.select(_cid=cx.interaction_id, nps=cx.nps, csat=cx.csat, ces=cx.ces)
        return c.left_join(i, c._cid == i._iid)

    def cx_cluster_stats(self, by: str | None = None, period: str | None = None,
                         cluster: str | None = "employee_id") -> pd.DataFrame:
        """Per-cluster sufficient statistics of the CX answers, for cluster-robust metrics.

        A response is attributed through the interaction it rates to the
        employee who handled it, and that employee's team and site
        (:func:`cxex_lab.contract.attribute`); with ``period="wave"`` to the
        wave period the interaction started in
        (:func:`cxex_lab.contract.wave_period`). Responses that cannot be
        attributed are counted in ``attrs["ledger"]``.

        Parameters
        ----------
        by : {None, "site_id", "team_id"}
            Group (one overall group when None).
        period : {None, "wave"}
            Split by wave period.
        cluster : {"employee_id", "team_id", None}
            The cluster of a row; None gives one row per group x period.

        Returns
        -------
        DataFrame
            One row per ``[by] x [wave] x [cluster]`` (sorted by them) with
            ``n_responses`` (responses), ``n_customers`` (distinct customers who
            answered), ``n_employees`` (distinct employees rated) and, for each
            item of nps, csat, ces: ``<item>_n`` (answers), ``<item>_sum``,
            ``<item>_sumsq`` (sum of squared answers); ``nps_n_promoters``
            (answers 9-10), ``nps_n_detractors`` (0-6); ``csat_n_top``
            (answers >= 4). Checked against pandas group sums on simulated
            studies (``tests/test_workspace.py``).
        """
        if by not in (None, "site_id", "team_id"):
            raise WorkspaceError(f"cx_cluster_stats: by must be None, 'site_id' or 'team_id', got {by!r}")
        if period not in (None, "wave"):
            raise WorkspaceError(f"cx_cluster_stats: period must be None or 'wave', got {period!r}")
        if cluster not in (None, "employee_id", "team_id"):
            raise WorkspaceError(f"cx_cluster_stats: cluster must be 'employee_id', 'team_id' or None, "
                                 f"got {cluster!r}")
        j = self._attributed_responses()
        led = Ledger()
        step = "cx_cluster_stats"
        status = [(j._iid.isnull(), EXCLUSIONS["orphan_response"]),
                  (j._known.isnull(), EXCLUSIONS["unknown_employee_response"])]
        for col in dict.fromkeys(c for c in (by, cluster) if c and c != "employee_id"):
            status.append((j[col].isnull(), contract.no_group_exclusion("cx_responses", col)))
        if period == "wave":
            j = j.mutate(wave=contract.wave_period(j.started_at, self._waves))
            status.append((j.wave.isnull(), contract.no_period_exclusions("wave")[1]))
        code = ibis.cases(*[(cond, k + 1) for k, (cond, _) in enumerate(status)], else_=0).cast("int8")
        j = j.mutate(_st=code)
        counts = _frame(self.con, j.group_by("_st").aggregate(n=j.count()))
        for st, n in zip(counts["_st"], counts["n"]):
            if st > 0:
                status[int(st) - 1][1].add(led, step, int(n))
        ok = j.filter(j._st == 0)
        keys = [k for k in (by, "wave" if period == "wave" else None, cluster) if k]
        keys = list(dict.fromkeys(keys))
        aggs: dict[str, Any] = dict(n_responses=ok.count(), n_customers=ok.customer_id.nunique(),
                                    n_employees=ok.employee_id.nunique())
        for m in _CX_ITEMS:
            v = ok[m].cast("float64")
            aggs[f"{m}_n"] = v.count()
            aggs[f"{m}_sum"] = v.sum()
            aggs[f"{m}_sumsq"] = (v * v).sum()
            if m == "nps":
                aggs["nps_n_promoters"] = (v >= 9).cast("int64").sum()
                aggs["nps_n_detractors"] = (v <= 6).cast("int64").sum()
            if m == "csat":
                aggs["csat_n_top"] = (v >= 4).cast("int64").sum()
        expr = ok.group_by(keys).aggregate(**aggs) if keys else ok.aggregate(**aggs)
        out = _frame(self.con, expr.order_by(keys) if keys else expr)
        for c in out.columns:
            if c.endswith(("_n", "n_responses", "n_customers", "n_employees", "_promoters", "_detractors", "_top")):
                out[c] = out[c].fillna(0).astype("int64")
            elif c.endswith(("_sum", "_sumsq")):
                out[c] = out[c].fillna(0.0).astype("float64")
        if "wave" in out.columns:
            out["wave"] = out["wave"].astype("int64")
        out.attrs["ledger"] = led.records
        return out

    def ex_cluster_stats(self, by: str | None = None, cluster: str | None = "team_id") -> pd.DataFrame:
        """Per-cluster sufficient statistics of the EX answers, per wave (waves are never pooled).

        One row per ``[by] x wave x [cluster]`` with ``n_responses`` and, for
        enps, esat, ees: ``<item>_n``, ``<item>_sum``, ``<item>_sumsq``;
        ``enps_n_promoters`` (9-10), ``enps_n_detractors`` (0-6), ``esat_n_top``
        (>= 4). Answers of employees without the ``by`` / ``cluster`` id are
        counted in ``attrs["ledger"]``.
        """
        if by not in (None, "site_id", "team_id"):
            raise WorkspaceError(f"ex_cluster_stats: by must be None, 'site_id' or 'team_id', got {by!r}")
        if cluster not in (None, "employee_id", "team_id"):
            raise WorkspaceError(f"ex_cluster_stats: cluster must be 'employee_id', 'team_id' or None, "
                                 f"got {cluster!r}")
        ex, emp = self.tables["ex_responses"], self.tables["employees"]
        j = contract.attribute(ex, emp, keys=("team_id", "site_id"))
        led = Ledger()
        keep = j._known.notnull()
        for col in dict.fromkeys(c for c in (by, cluster) if c and c != "employee_id"):
            n = int(self.con.execute((keep & j[col].isnull()).cast("int64").sum()) or 0)
            contract.no_group_exclusion("ex_responses", col).add(led, "ex_cluster_stats", n)
            keep = keep & j[col].notnull()
        ok = j.filter(keep)
        keys = list(dict.fromkeys(k for k in (by, "wave", cluster) if k))
        aggs: dict[str, Any] = dict(n_responses=ok.count())
        for m in ("enps", "esat", "ees"):
            v = ok[m].cast("float64")
            aggs.update({f"{m}_n": v.count(), f"{m}_sum": v.sum(), f"{m}_sumsq": (v * v).sum()})
        aggs["enps_n_promoters"] = (ok.enps >= 9).cast("int64").sum()
        aggs["enps_n_detractors"] = (ok.enps <= 6).cast("int64").sum()
        aggs["esat_n_top"] = (ok.esat >= 4).cast("int64").sum()
        out = _frame(self.con, ok.group_by(keys).aggregate(**aggs).order_by(keys))
        for c in out.columns:
            if c.endswith(("_n", "n_responses", "_promoters", "_detractors", "_top")) or c == "wave":
                out[c] = out[c].fillna(0).astype("int64")
        out.attrs["ledger"] = led.records
        return out

    def mirror_stats(self, by: str | None = None, period: str | None = None, cluster: str = "employee_id",
                     ex_wave: int | str = "latest", side: str | None = None) -> pd.DataFrame:
        """Per-cluster sufficient statistics of both sides, in the long format of the mirror metrics.

        The engine-side twin of :func:`cxex_lab.metrics.mirror_cluster_stats`
        (same columns, same rows): CX from :meth:`cx_cluster_stats`, EX from
        :meth:`ex_cluster_stats`, reshaped to one row per side x metric x
        group x cluster with ``n, sum, sum_sq, n_promoters, n_detractors,
        n_top``, ready for :func:`cxex_lab.metrics.metric_from_cluster_stats`
        and :func:`cxex_lab.metrics.compare`. EX waves are never pooled:
        without ``period`` only wave ``ex_wave`` (default the latest) is kept.
        Checked equal to ``mirror_cluster_stats`` on the sample
        (``tests/test_workspace.py``). ``side="CX"`` or ``"EX"`` computes one
        side only.
        """
        from cxex_lab.metrics import MIRROR

        if period not in (None, "wave"):
            raise WorkspaceError(f"mirror_stats: period must be None or 'wave', got {period!r}")
        if side not in (None, "CX", "EX"):
            raise WorkspaceError(f"mirror_stats: side must be None, 'CX' or 'EX', got {side!r}")
        keys = [k for k in (by, "wave" if period == "wave" else None, cluster) if k]
        keys = list(dict.fromkeys(keys))
        empty = pd.DataFrame(columns=keys)
        cx = self.cx_cluster_stats(by=by, period=period, cluster=cluster) if side != "EX" else empty
        ex = self.ex_cluster_stats(by=by, cluster=cluster) if side != "CX" else empty.assign(wave=pd.Series(dtype="int64"))
        if period is None and len(ex):
            waves = sorted(ex["wave"].unique())
            keep = waves[-1] if ex_wave == "latest" else int(ex_wave)
            if keep not in waves:
                raise WorkspaceError(f"mirror_stats: ex_wave={ex_wave!r} is not a wave of the study; waves are {waves}")
            ex = ex[ex["wave"] == keep].drop(columns="wave")
        parts = []
        for dim, (cx_metric, cx_col, ex_metric, ex_col) in MIRROR.items():
            for s_name, frame, col, metric in (("EX", ex, ex_col, ex_metric), ("CX", cx, cx_col, cx_metric)):
                if side not in (None, s_name):
                    continue
                d = frame[keys].copy()
                d.insert(0, "item", col)
                d.insert(0, "metric", metric)
                d.insert(0, "dimension", dim)
                d.insert(0, "side", s_name)
                d["n"] = frame[f"{col}_n"].to_numpy()
                d["sum"] = frame[f"{col}_sum"].to_numpy(dtype="float64")
                d["sum_sq"] = frame[f"{col}_sumsq"].to_numpy(dtype="float64")
                for name, src in (("n_promoters", f"{col}_n_promoters"), ("n_detractors", f"{col}_n_detractors"),
                                  ("n_top", f"{col}_n_top")):
                    d[name] = frame[src].to_numpy(dtype="float64") if src in frame.columns else np.nan
                parts.append(d[d["n"] > 0])
        out = pd.concat(parts, ignore_index=True)
        out.attrs["ledger"] = list(cx.attrs.get("ledger", [])) + list(ex.attrs.get("ledger", []))
        return out

    # ------------------------------------------------------------------ interaction-level inputs

    def pairs(self, ex_lag: int = 0, ex_columns: Sequence[str] = _EX_DEFAULT, surveyed_only: bool = True
              ) -> pd.DataFrame:
        """Consecutive interactions of the same agent, for spillover models (window functions in the engine).

        Each interaction (with ``surveyed_only``, each surveyed one) with the
        CX answers and operational flags of the agent's immediately preceding
        and following interaction (ordered by start time, ties by interaction
        id), the time gaps, the day, and the agent's EX from the wave
        :func:`cxex_lab.contract.ex_wave_of` links to its wave period
        (``ex_lag`` waves back; missing when the agent did not answer it).

        Returns
        -------
        DataFrame
            ``interaction_id, employee_id, team_id, site_id, started_at, day,
            period`` (wave period; 0 before the first wave), ``seq`` (the
            interaction's number in the agent's sequence, from 1),
            ``surveyed, nps, csat, ces, resolved_first_contact, transferred,
            handle_seconds``; the same with ``prev_`` and ``next_`` prefixes
            for the neighbours (missing for an agent's first / last);
            ``prev_gap_seconds``, ``next_gap_seconds``, ``prev_same_day``,
            ``next_same_day``, ``prev_period``, ``next_period``; the interaction
            two back (for the shock placebo of
            :func:`cxex_lab.models.spillover.spillover_pairs`):
            ``prev2_resolved_first_contact``, ``prev2_transferred``,
            ``prev2_same_day``, ``prev2_period``; ``ex_wave`` and
            ``ex_columns``. Sorted by employee and time.
        """
        from cxex_lab.linkage import _check_lag

        ex_lag = _check_lag(ex_lag, "ex_lag must be a whole number >= 0 (waves back)")
        ex = self.tables["ex_responses"]
        missing = [c for c in ex_columns if c not in ex.columns]
        if missing:
            raise WorkspaceError(f"pairs: ex_responses lacks column(s) {missing}; it has {list(ex.columns)}")
        it, cx, emp = self.tables["interactions"], self.tables["cx_responses"], self.tables["employees"]
        i = it.select("interaction_id", "employee_id", "started_at", "resolved_first_contact", "transferred",
                      "handle_seconds")
        c = cx.select(_cid=cx.interaction_id, nps=cx.nps, csat=cx.csat, ces=cx.ces)
        j = i.left_join(c, i.interaction_id == c._cid)
        j = j.mutate(surveyed=j._cid.notnull()).drop("_cid")
        j = contract.attribute(j, emp, keys=("team_id", "site_id")).drop("_known")
        j = j.mutate(day=j.started_at.truncate("D"),
                     period=contract.wave_period(j.started_at, self._waves).fill_null(0))
        w = ibis.window(group_by=j.employee_id, order_by=[j.started_at, j.interaction_id])
        flags = ("surveyed", "nps", "csat", "ces", "resolved_first_contact", "transferred", "handle_seconds")
        new = {"seq": ibis.row_number().over(w) + 1}
        for f in (*flags, "started_at", "day", "period"):
            new[f"prev_{f}"] = j[f].lag().over(w)
            new[f"next_{f}"] = j[f].lead().over(w)
        for f in ("resolved_first_contact", "transferred", "day", "period"):
            new[f"prev2_{f}"] = j[f].lag(2).over(w)
        j = j.mutate(**new)
        secs = j.started_at.epoch_seconds()
        j = j.mutate(prev_gap_seconds=(secs - j.prev_started_at.epoch_seconds()).cast("float64"),
                     next_gap_seconds=(j.next_started_at.epoch_seconds() - secs).cast("float64"),
                     prev_same_day=j.prev_day == j.day, next_same_day=j.next_day == j.day,
                     prev2_same_day=j.prev2_day == j.day)
        if surveyed_only:
            j = j.filter(j.surveyed)
        j = j.mutate(ex_wave=contract.ex_wave_of(j.period, "wave", ex_lag, self._waves))
        e = ex.select(_eid=ex.employee_id, _wave=ex.wave.cast("int64"), **{k: ex[k] for k in ex_columns})
        j = j.left_join(e, (j.employee_id == e._eid) & (j.ex_wave == e._wave)).drop("_eid", "_wave")
        cols = ["interaction_id", "employee_id", "team_id", "site_id", "started_at", "day", "period", "seq",
                *flags, *[f"prev_{f}" for f in flags], "prev_gap_seconds", "prev_same_day", "prev_period",
                *[f"next_{f}" for f in flags], "next_gap_seconds", "next_same_day", "next_period",
                "prev2_resolved_first_contact", "prev2_transferred", "prev2_same_day", "prev2_period",
                "ex_wave", *ex_columns]
        out = _frame(self.con, j.select(*cols).order_by(["employee_id", "started_at", "interaction_id"]))
        out.attrs["n_with_ex"] = int(out[list(ex_columns)[0]].notna().sum()) if ex_columns else 0
        return out

    def customer_periods(self, answered: bool = False) -> pd.DataFrame:
        """The customer-level loyalty table: one row per customer x wave period *p* with an outcome.

        ``answered=True`` keeps only the rows whose customer answered a CX survey in
        *p-1* (``n_answered_prev > 0``), filtered in the engine: the rows a model of
        the outcome on the previous period's CX can use, without the (often much
        larger) rest.

        The outcome of *p* (``retained``, ``revenue``) beside what the customer
        experienced in the preceding wave period *p-1* (the wave opened before
        *p*, :func:`cxex_lab.contract.previous_wave`): the number of their
        interactions started in *p-1* and of those answered, their mean
        NPS / CSAT / CES answers, the prior period's retention and revenue,
        and the agent who served most of their *p-1* interactions (ties: the
        earlier first contact, then the smaller id) with that agent's team and
        site. Rows: outcomes of periods that have a previous wave (customers
        with no interaction in *p-1* have ``n_interactions_prev = 0``).

        Returns
        -------
        DataFrame
            ``customer_id, period, retained, revenue, prev_period,
            n_interactions_prev, n_answered_prev, nps_prev, csat_prev,
            ces_prev, retained_prev, revenue_prev, employee_id_prev,
            team_id_prev, site_id_prev``, sorted by customer and period.
        """
        co = self.tables.get("customer_outcomes")
        if co is None:
            raise WorkspaceError("customer_periods: this study has no customer_outcomes table")
        it, cx, emp = self.tables["interactions"], self.tables["cx_responses"], self.tables["employees"]
        waves = self._waves
        i = it.select("interaction_id", "employee_id", "customer_id", "started_at")
        i = i.mutate(_p=contract.wave_period(i.started_at, waves))
        i = i.filter(i._p.notnull())
        c = cx.select(_cid=cx.interaction_id, nps=cx.nps, csat=cx.csat, ces=cx.ces, _ans=ibis.literal(1, "int8"))
        ic = i.left_join(c, i.interaction_id == c._cid)
        exp = ic.group_by([ic.customer_id.name("_xc"), ic._p.name("_xp")]).aggregate(
            n_interactions_prev=ic.count(), n_answered_prev=ic._ans.count(),
            nps_prev=ic.nps.cast("float64").mean(), csat_prev=ic.csat.cast("float64").mean(),
            ces_prev=ic.ces.cast("float64").mean())
        per = i.group_by([i.customer_id.name("_ac"), i._p.name("_ap"), i.employee_id.name("_ae")]).aggregate(
            _k=i.count(), _first=i.started_at.min())
        rank = ibis.row_number().over(group_by=[per._ac, per._ap], order_by=[ibis.desc(per._k), per._first, per._ae])
        per = per.mutate(_r=rank)
        top = per.filter(per._r == 0)
        top = contract.attribute(top.select(_ac=top._ac, _ap=top._ap, employee_id=top._ae), emp,
                                 keys=("team_id", "site_id"))
        top = top.select(_ac=top._ac, _ap=top._ap, employee_id_prev=top.employee_id, team_id_prev=top.team_id,
                         site_id_prev=top.site_id)
        # retention as 0/1 numbers (missing where the outcome row is absent): what the models take
        o = co.select("customer_id", period=co.period.cast("int64"), retained=co.retained.cast("float64"),
                      revenue=co.revenue.cast("float64"))
        o = o.mutate(prev_period=contract.previous_wave(o.period, waves))
        o = o.filter(o.prev_period.notnull())
        po = co.select(_pc=co.customer_id, _pp=co.period.cast("int64"), retained_prev=co.retained.cast("float64"),
                       revenue_prev=co.revenue.cast("float64"))
        r = o.left_join(exp, (o.customer_id == exp._xc) & (o.prev_period == exp._xp))
        r = r.left_join(po, (r.customer_id == po._pc) & (r.prev_period == po._pp))
        r = r.left_join(top, (r.customer_id == top._ac) & (r.prev_period == top._ap))
        cols = ["customer_id", "period", "retained", "revenue", "prev_period", "n_interactions_prev",
                "n_answered_prev", "nps_prev", "csat_prev", "ces_prev", "retained_prev", "revenue_prev",
                "employee_id_prev", "team_id_prev", "site_id_prev"]
        r = r.select(*cols)
        r = r.mutate(n_interactions_prev=r.n_interactions_prev.fill_null(0),
                     n_answered_prev=r.n_answered_prev.fill_null(0))
        if answered:
            r = r.filter(r.n_answered_prev > 0)
        out = _frame(self.con, r.order_by(["customer_id", "period"]))
        for col in ("n_interactions_prev", "n_answered_prev", "period", "prev_period"):
            out[col] = out[col].astype("int64")
        return out

    def response_rates(self) -> pd.DataFrame:
        """Survey response rates on both sides, per wave (the segment's).

        EX: employees answering / employees employed when the wave opened
        (:func:`cxex_lab.contract.employed_at`). CX: surveyed interactions /
        interactions in the wave period (:func:`cxex_lab.contract.wave_period`);
        interactions before the first wave opened are reported as wave 0.

        Returns
        -------
        DataFrame
            ``side, wave, eligible, responded, rate``.
        """
        emp, ex, it, cx = (self.tables[n] for n in ("employees", "ex_responses", "interactions", "cx_responses"))
        return response_rates_of(self.con, emp, ex, it, cx, self._waves)


def response_rates_of(con, emp: ir.Table, ex: ir.Table, it: ir.Table, cx: ir.Table, waves: pd.DataFrame
                      ) -> pd.DataFrame:
    """Response rates from tables on an engine (see :meth:`Workspace.response_rates`)."""
    aggs = {}
    for k, (w, opened) in enumerate(zip(waves["wave"], waves["opened"])):
        aggs[f"e{k}"] = contract.employed_at(emp, opened).cast("int64").sum()
    elig = con.to_pyarrow(emp.aggregate(**aggs)).to_pylist()[0] if aggs else {}
    answered = _frame(con, ex.group_by(w=ex.wave.cast("int64")).aggregate(n=ex.count()))
    answered = dict(zip(answered["w"], answered["n"]))
    rows = [{"side": "EX", "wave": int(w), "eligible": int(elig[f"e{k}"] or 0), "responded": int(answered.get(w, 0))}
            for k, w in enumerate(waves["wave"])]
    c = cx.select(_cid=cx.interaction_id).distinct()
    i = it.select("interaction_id", "started_at")
    j = i.left_join(c, i.interaction_id == c._cid)
    j = j.mutate(wave=contract.wave_period(j.started_at, waves).fill_null(0))
    counts = _frame(con, j.group_by("wave").aggregate(size=j.count(), surveyed=j._cid.count()))
    counts = counts.set_index("wave")
    for w in [0, *waves["wave"]]:
        if w in counts.index:
            r = counts.loc[w]
            rows.append({"side": "CX", "wave": int(w), "eligible": int(r["size"]), "responded": int(r["surveyed"])})
        elif w != 0:
            rows.append({"side": "CX", "wave": int(w), "eligible": 0, "responded": 0})
    out = pd.DataFrame(rows, columns=["side", "wave", "eligible", "responded"])
    out["rate"] = out["responded"] / out["eligible"].where(out["eligible"] > 0)
    return out


def _list_tables(con) -> list[str]:
    """Table names of a DuckDB connection (Ibis 12's list_tables calls a method DuckDB 2 no longer has)."""
    rows = con.con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()
    return sorted(r[0] for r in rows)


def _is_workspace_file(path: Path) -> bool:
    try:
        con = contract.duckdb_connect(str(path), read_only=True)
    except Exception:  # noqa: BLE001 - not a DuckDB file we can open
        return False
    try:
        names = _list_tables(con)
        return "meta" in names and "panels" in names
    finally:
        con.disconnect()
