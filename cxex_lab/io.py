"""Load and save studies: a directory of Parquet or CSV tables, or a DuckDB file.

A study directory holds one file per canonical table (``employees.parquet``,
``ex_responses.parquet``, ... or the same names as ``.csv``), and for simulated
studies ``truth.json``. Real exports with other file or column names are mapped
onto the contract by a study config (YAML)::

    tables:
      cx_responses:
        file: survey_export.csv          # relative to the study directory
        columns:                         # contract name: name in the file
          interaction_id: ticket_ref
          nps: likelihood_to_recommend
          csat: satisfaction
          ces: ease
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cxex_lab.study import TABLES, Study

__all__ = ["load_study", "save_study", "read_table", "load_config", "DATETIME_COLUMNS"]

#: Columns parsed as timestamps when read from CSV.
DATETIME_COLUMNS: dict[str, tuple[str, ...]] = {
    "employees": ("hire_date", "exit_date"),
    "ex_responses": ("responded_at",),
    "interactions": ("started_at",),
    "cx_responses": ("responded_at",),
    "customer_outcomes": (),
}
_BOOL_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": ("resolved_first_contact", "transferred"),
    "customer_outcomes": ("retained",),
}
_ID_COLUMNS = ("employee_id", "team_id", "site_id", "interaction_id", "customer_id")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
#: How every Parquet file is written: microsecond timestamps (Spark cannot read
#: INT64 TIMESTAMP(NANOS); sub-microsecond digits are dropped).
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "coerce_timestamps": "us", "allow_truncated_timestamps": True}


def load_config(config: str | Path | dict | None) -> dict[str, Any]:
    """Read a study config (YAML file or dict); ``None`` gives the empty config."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return config
    import yaml

    path = Path(config)
    if not path.exists():
        raise FileNotFoundError(f"study config {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"study config {path}: expected a mapping at the top level")
    unknown = sorted(set(data.get("tables", {})) - set(TABLES))
    if unknown:
        raise ValueError(f"study config {path}: unknown table(s) {unknown}; the contract's tables are {list(TABLES)}")
    return data


def _coerce(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Give CSV-read columns the contract's types (ids as strings, timestamps, booleans)."""
    for col in _ID_COLUMNS:
        if col in df.columns and not pd.api.types.is_string_dtype(df[col]):
            df[col] = df[col].astype("string")
    for col in DATETIME_COLUMNS.get(table, ()):
        if col in df.columns and not pd.api.types.is_datetime64_any_dtype(df[col]):
            parsed = pd.to_datetime(df[col], errors="coerce")
            # leave unparseable values for the validator to report (it names the rows)
            if parsed.notna().sum() == df[col].notna().sum():
                df[col] = parsed
    for col in _BOOL_COLUMNS.get(table, ()):
        if col in df.columns and df[col].dtype == object:
            mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
            lowered = df[col].astype("string").str.strip().str.lower()
            if lowered.dropna().isin(list(mapping)).all():
                df[col] = lowered.map(mapping).astype("boolean")
    return df


def read_table(path: str | Path, table: str, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Read one table file (Parquet or CSV) and rename its columns onto the contract.

    Parameters
    ----------
    path : path
        The file. Its suffix decides the reader (``.parquet``/``.pq``/``.csv``).
    table : str
        Which canonical table this is (used in messages and for type coercion).
    columns : dict, optional
        ``{contract_name: name_in_file}`` renames from a study config.
    """
    path = Path(path)
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{path}: cannot read a {path.suffix or 'suffix-less'} file as table {table!r}; "
            "use Parquet (.parquet) or CSV (.csv)"
        )
    try:
        df = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path, low_memory=False)
    except Exception as err:  # pyarrow / parser errors: say which file
        raise ValueError(f"{path}: could not be read as {kind.upper()} ({type(err).__name__}: {err})") from err
    if columns:
        missing = {k: v for k, v in columns.items() if v not in df.columns}
        if missing:
            raise ValueError(
                f"{path}: the study config maps {missing} but the file has no such column(s); "
                f"its columns are {list(df.columns)}"
            )
        df = df.rename(columns={v: k for k, v in columns.items()})
    df.attrs["source"] = str(path)
    return _coerce(df, table)


def _find_file(directory: Path, table: str) -> Path | None:
    for suffix in (".parquet", ".pq", ".csv"):
        candidate = directory / f"{table}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _load_duckdb(path: Path) -> dict[str, pd.DataFrame]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        present = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        missing = [t for t in TABLES if t not in present]
        if missing:
            raise FileNotFoundError(
                f"{path}: DuckDB file has no table(s) {missing}; it has {sorted(present)}"
            )
        return {t: _coerce(con.execute(f'select * from "{t}"').df(), t) for t in TABLES}
    finally:
        con.close()


def load_study(
    path: str | Path,
    config: str | Path | dict | None = None,
    validate: bool = True,
) -> Study:
    """Load a study from a directory of tables or a DuckDB file.

    Parameters
    ----------
    path : path
        A directory with ``<table>.parquet`` / ``<table>.csv`` files (and
        ``truth.json`` if simulated), or a ``.duckdb`` file holding the five tables.
    config : path or dict, optional
        Study config mapping real file and column names onto the contract.
        A ``study.yaml`` inside the directory is used when ``config`` is None.
    validate : bool
        Run :func:`cxex_lab.schema.validate` (raises
        :class:`~cxex_lab.schema.DataContractError` on hard violations and
        attaches the data-quality ledger as ``study.ledger``).

    Returns
    -------
    Study

    Examples
    --------
    >>> study = load_study("data/sample")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"study path {path} does not exist")
    truth = None
    if path.is_file():
        if path.suffix.lower() not in (".duckdb", ".db"):
            raise ValueError(
                f"{path}: a study is a directory of tables or a DuckDB (.duckdb) file, not a {path.suffix} file"
            )
        tables = _load_duckdb(path)
    else:
        if config is None and (path / "study.yaml").exists():
            config = path / "study.yaml"
        cfg = load_config(config)
        tcfg = cfg.get("tables", {})
        tables, missing = {}, []
        for table in TABLES:
            spec = tcfg.get(table, {})
            file = path / spec["file"] if "file" in spec else _find_file(path, table)
            if file is None or not file.exists():
                missing.append(f"{table} (looked for {file.name if file else table + '.parquet / .csv'})")
                continue
            tables[table] = read_table(file, table, spec.get("columns"))
        if missing:
            raise FileNotFoundError(f"{path}: missing table file(s): {', '.join(missing)}")
        if (path / "truth.json").exists():
            truth = json.loads((path / "truth.json").read_text())
    study = Study(**tables, truth=truth, source=str(path))
    if truth is not None and (path / "latent").is_dir():
        # simulated studies may ship the simulator's latent tables (truth checks only)
        study.latent = {p.stem: pd.read_parquet(p) for p in sorted((path / "latent").glob("*.parquet"))}
    if validate:
        from cxex_lab.schema import validate as _validate

        result = _validate(study)
        study = result.study
    return study


def save_study(study: Study, path: str | Path, fmt: str = "parquet", latent: bool = False) -> Path:
    """Write a study as one file per table (and ``truth.json`` when simulated).

    Parameters
    ----------
    study : Study
    path : path
        Output directory (created if needed).
    fmt : {"parquet", "csv"}
    latent : bool
        Also write the simulator's latent tables under ``latent/``.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, df in study.tables().items():
        target = path / f"{name}.{fmt}"
        if fmt == "parquet":
            df.to_parquet(target, index=False, **PARQUET_OPTIONS)
        else:
            df.to_csv(target, index=False)
    if study.truth is not None:
        (path / "truth.json").write_text(json.dumps(study.truth, indent=2, default=str) + "\n")
    if latent and study.latent:
        (path / "latent").mkdir(exist_ok=True)
        for name, df in study.latent.items():
            df.to_parquet(path / "latent" / f"{name}.parquet", index=False, **PARQUET_OPTIONS)
    return path
