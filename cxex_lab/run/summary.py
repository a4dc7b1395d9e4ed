"""Study facts for the landing page: employees, sites, waves, interactions, how
much is linked, the ledger in one line.

Three sources, merged in this order (later ones win, missing ones are left out):

1. :func:`file_facts`: row counts from the study files' metadata (Parquet
   footers, DuckDB counts over CSV); no table is loaded and no domain rule
   applied, so nothing here can disagree with the analysis.
2. the prepare step's facts (a workspace's ``summary()``, :func:`facts_from_summary`);
3. what the notebooks emitted with :func:`cxex_lab.present.emit_study` on the
   whole study (segment ``all``): e.g. the linked share and the ledger.

:func:`facts_line` turns them into the sentence at the top of the index; a fact
that no source provided is simply not mentioned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cxex_lab.present import FACT_ORDER, study_sentences as facts_line  # noqa: F401 - the wording lives with present

__all__ = ["FACT_ORDER", "file_facts", "facts_from_summary", "merge_facts", "facts_line", "emitted_facts"]

def _sql_path(path: Path) -> str:
    return "'" + path.as_posix().replace("'", "''") + "'"


def _count_rows(path: Path) -> int | None:
    try:
        if path.suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return int(pq.read_metadata(path).num_rows)
        import duckdb

        return int(duckdb.sql(f"select count(*) from read_csv({_sql_path(path)}, all_varchar = true)").fetchall()[0][0])
    except Exception:  # noqa: BLE001 - a fact we cannot read is left out
        return None


def _distinct(path: Path, column: str) -> int | None:
    try:
        import duckdb

        reader = "read_parquet" if path.suffix in (".parquet", ".pq") else "read_csv"
        opts = "" if reader == "read_parquet" else ", all_varchar = true"
        sql = f'select count(distinct "{column}") from {reader}({_sql_path(path)}{opts})'
        return int(duckdb.sql(sql).fetchall()[0][0])
    except Exception:  # noqa: BLE001
        return None


def _table_file(data: Path, table: str) -> Path | None:
    for suffix in (".parquet", ".pq", ".csv"):
        p = data / f"{table}{suffix}"
        if p.exists():
            return p
    return None


def file_facts(data: str | Path) -> dict[str, Any]:
    """Counts read from the study files without loading them (empty for other layouts)."""
    data = Path(data)
    if not data.is_dir():
        return {}
    facts: dict[str, Any] = {}
    spec = {
        "employees": ("employees", None), "sites": ("employees", "site_id"), "teams": ("employees", "team_id"),
        "ex_answers": ("ex_responses", None), "waves": ("ex_responses", "wave"),
        "interactions": ("interactions", None), "cx_answers": ("cx_responses", None),
    }
    for fact, (table, column) in spec.items():
        path = _table_file(data, table)
        if path is None:
            continue
        value = _count_rows(path) if column is None else _distinct(path, column)
        if value is not None:
            facts[fact] = value
    return facts


def facts_from_summary(summary: Any) -> dict[str, Any]:
    """Facts from a ``summary()`` table (``what``/``value`` rows) or mapping."""
    if summary is None:
        return {}
    if hasattr(summary, "to_dict") and hasattr(summary, "columns") and {"what", "value"} <= set(summary.columns):
        summary = dict(zip(summary["what"], summary["value"]))
    if not isinstance(summary, Mapping):
        return {}
    aliases = {"EX waves": "waves", "EX answers": "ex_answers", "CX responses": "cx_answers",
               "CX answers": "cx_answers"}
    out = {}
    for k, v in summary.items():
        key = aliases.get(str(k), str(k))
        try:
            v = int(str(v).replace(",", "")) if str(v).replace(",", "").isdigit() else v
        except ValueError:
            pass
        out[key] = v
    return out


def merge_facts(*sources: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later sources win; None values do not overwrite."""
    out: dict[str, Any] = {}
    for src in sources:
        for k, v in (src or {}).items():
            if v is not None:
                out[k] = v
    return out


def emitted_facts(payloads: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge the ``present.emit_study`` payloads of the whole-study reports."""
    return merge_facts(*[p.get("facts", p) for p in payloads if isinstance(p, Mapping)])
