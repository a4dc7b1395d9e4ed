"""Load studies: real exports mapped onto the data contract in the engine, and canonical study folders.

A study is a folder. Either it holds the canonical tables under their own
names (``employees.parquet``, ``ex_responses.csv``, ... as the simulator
writes them; ``truth.json`` for simulated studies), or a study config
(``study.yaml``, see :mod:`cxex_lab.config`) says which export files hold
which table and how their columns map onto the contract.

How a study is loaded (:func:`load_tables`)
-------------------------------------------
1. **Read** each file into the engine (DuckDB) with ``_row``, the row as the
   researcher sees it in the file (:mod:`cxex_lab.readers`): CSV by Arrow's
   streaming reader (all columns as text), Excel, SPSS and Stata through small
   in-memory frames, Parquet where it lies. Only the columns the config uses
   are read: dropped (personal) columns never enter the engine.
2. **Exclude on purpose**, in this order, each counted in the ledger (step
   ``load``) with its reason and example rows: the config's ``filters``
   (preview, test, unfinished responses), rows whose id is a declared
   placeholder (unlinkable: e.g. 25 survey responses carrying the same dummy
   contact reference are not a duplicate key), answers outside their scale
   where the config says ``out_of_range: exclude``, EX answers outside every
   declared wave.
3. **Map** every column with Ibis expressions on the whole column: label ->
   number maps, missing-value codes, native scale checks then the map onto the
   contract's scale, true/false vocabularies, dates parsed with the declared
   format (never inferred row by row) and moved into the study's time zone,
   ids as text. A value that does not map is an error naming its rows.
4. Hand the mapped tables to the **contract's validation**
   (:func:`cxex_lab.schema.check_tables`, in the same engine);
   :meth:`Loaded.settle` merges both ledgers, lists every problem at once
   (:class:`StudyError`) and pseudonymises the ids
   (:class:`cxex_lab.privacy.Pseudonymiser`).

Without ``employees``, employees are derived from the ids in the EX answers
and the log (team and site from a column, one value, or ``"unknown"``);
without ``customer_outcomes`` the study simply has none. The raw files are
never modified.

Errors read like ``cx_export.csv, column 'Q1' (How likely are you to
recommend…), rows 14, 88 (+1 more): value '11' outside the NPS scale 0-10``.
"""

from __future__ import annotations

import difflib
import glob
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from cxex_lab import contract as C
from cxex_lab.config import READERS, ColumnSpec, ConfigError, StudyConfig, TableSpec, load_config, role_kind
from cxex_lab.ledger import Ledger
from cxex_lab.schema import DataContractError
from cxex_lab.study import TABLES, Study

__all__ = [
    "load_study",
    "save_study",
    "load_tables",
    "check_study",
    "read_table",
    "load_config",
    "Loaded",
    "StudyCheck",
    "StudyError",
    "ConfigError",
    "PARQUET_OPTIONS",
    "ISO_FORMATS",
]

#: How every Parquet file is written: microsecond timestamps (Spark cannot read
#: INT64 TIMESTAMP(NANOS); sub-microsecond digits are dropped).
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "coerce_timestamps": "us", "allow_truncated_timestamps": True}
#: What a date column without a declared format accepts (ISO 8601, in words).
ISO_FORMATS = "ISO 8601 (YYYY-MM-DD, optionally with HH:MM[:SS[.ffffff]] after a space or T, and an offset)"
_DEFAULT_TRUE = ("true", "t", "yes", "y", "1")
_DEFAULT_FALSE = ("false", "f", "no", "n", "0")
_N_EXAMPLES = 5
_QUESTION_CHARS = 60
_SCALE_WORDS = {"nps": "NPS", "enps": "eNPS", "csat": "CSAT", "esat": "eSat", "ces": "CES", "ees": "EES",
                "empowerment": "empowerment", "cx_insight_access": "insight access"}
_ENTITY = {"interaction_id": "contact", "employee_id": "employee", "customer_id": "customer"}


# --------------------------------------------------------------------------- DuckDB functions used by the mapping


@ibis.udf.scalar.builtin(name="try_strptime", signature=((dt.string, dt.Array(dt.string)), dt.timestamp))
def _try_strptime(value, formats):  # pragma: no cover - compiled to DuckDB's try_strptime
    ...


@ibis.udf.scalar.builtin(name="try_strptime", signature=((dt.string, dt.Array(dt.string)), dt.Timestamp("UTC")))
def _try_strptime_tz(value, formats):  # pragma: no cover - formats with %z give a zoned timestamp
    ...


@ibis.udf.scalar.builtin(name="timezone", signature=((dt.string, dt.timestamp), dt.Timestamp("UTC")))
def _instant_of(zone, wall):  # pragma: no cover - a wall time in ``zone`` -> the instant
    ...


@ibis.udf.scalar.builtin(name="timezone", signature=((dt.string, dt.Timestamp("UTC")), dt.timestamp))
def _wall_in(zone, instant):  # pragma: no cover - an instant -> its wall time in ``zone``
    ...


@ibis.udf.scalar.builtin(name="regexp_matches", signature=((dt.string, dt.string), dt.boolean))
def _matches(value, pattern):  # pragma: no cover
    ...


# --------------------------------------------------------------------------- errors


class StudyError(DataContractError):
    """A study cannot be loaded as its config says, or breaks the data contract.

    ``.problems`` is a tidy DataFrame (``table, file, column, rule, count,
    examples, text``); ``str(err)`` lists every problem, each naming the file,
    the column (with its question text), the rows as the researcher sees them,
    the value and the rule. A :class:`~cxex_lab.schema.DataContractError`, so
    callers that catch that catch this.
    """

    def __init__(self, problems: pd.DataFrame, source: str | None = None) -> None:
        self.problems = problems.reset_index(drop=True)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"The study{where} breaks the data contract ({len(self.problems)} problem(s)):"]
        lines += [f"  - {t}" for t in _problem_lines(self.problems)]
        ValueError.__init__(self, "\n".join(lines))


def _problem_lines(problems: pd.DataFrame) -> list[str]:
    out = []
    for r in problems.to_dict("records"):
        if r.get("text"):
            out.append(r["text"])
            continue
        col = f", column {r['column']!r}" if r.get("column") else ""
        file = f" (file {r['file']})" if r.get("file") else ""
        if r.get("count"):
            ex = f"; e.g. {r['examples']}" if r.get("examples") else ""
            out.append(f"{r['table']}{file}{col}: {r['rule']} ({r['count']} row(s){ex})")
        else:
            ex = f"; {r['examples']}" if r.get("examples") else ""
            out.append(f"{r['table']}{file}{col}: {r['rule']}{ex}")
    return out


_PROBLEM_COLUMNS = ["table", "file", "column", "rule", "count", "examples", "text"]


def _fmt_value(v: Any, labels: Mapping | None = None) -> str:
    """A value as the researcher typed it: '11' for text, 11 for numbers, ISO dates; SPSS labels beside codes."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if isinstance(v, str):
        return "'" + v.replace("'", "\\'") + "'"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        out = str(int(v))
    elif isinstance(v, (pd.Timestamp, datetime, date)):
        out = pd.Timestamp(v).isoformat()
    else:
        out = str(v)
    if labels:
        lab = labels.get(v)
        if lab is None and isinstance(v, (int, float)) and float(v).is_integer():
            lab = labels.get(int(v), labels.get(float(v)))
        if lab is not None:
            out += f" ({lab!r})"
    return out


def _rows_words(rows: list[dict], count: int) -> str:
    """``row 14`` / ``rows 14, 88 (+1 more)``; with several files ``jan.csv row 14, ...``."""
    shown = [r for r in rows[:_N_EXAMPLES] if r.get("_row") is not None]
    if not shown:
        return f"{count} row(s)"
    files = {r.get("_file") for r in shown}
    more = count - len(shown)
    tail = f" (+{more} more)" if more > 0 else ""
    if len(files) > 1:
        return ", ".join(f"{r.get('_file')} row {r['_row']}" for r in shown) + tail
    word = "row" if count == 1 else "rows"
    prefix = f"{next(iter(files))} " if files != {None} else ""  # a table read from several files
    return f"{prefix}{word} " + ", ".join(str(r["_row"]) for r in shown) + tail


# --------------------------------------------------------------------------- the result of a load


@dataclass
class Loaded:
    """Tables read and mapped onto the contract, on an engine, before the contract's validation.

    Attributes
    ----------
    tables : dict of Ibis tables
        The mapped tables with ``_row`` (and ``_file`` for tables read from
        several files); None for an absent optional table.
    files : dict
        The file(s) of each table as the messages name them.
    truth : dict or None
        The simulator's truth of a simulated study.
    ledger : Ledger
        Rows excluded on purpose while loading (step ``load``).
    problems : list of dict
        Load problems (file missing, column absent, a value that does not map).
    notes : list of str
        What was assumed or derived, in words.
    info : dict
        What the workspace records about the study (``ws.study_info``): table
        status, the column mapping with question texts, scales and their maps,
        touchpoints, dropped columns, time zone, privacy.
    privacy : dict or None
        How the ids are pseudonymised (columns, key file); None: they are
        not. :meth:`settle` applies it (:meth:`pseudonymiser`).
    """

    tables: dict[str, ir.Table | None]
    files: dict[str, str | None]
    truth: dict | None = None
    ledger: Ledger = field(default_factory=Ledger)
    problems: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    privacy: dict | None = None
    source: str | None = None
    rescaled: dict[str, set[str]] = field(default_factory=dict)
    _config_study: bool = False

    @classmethod
    def canonical(cls, path: str | Path, tables: dict[str, ir.Table | None], files: dict[str, str | None],
                  truth: dict | None) -> "Loaded":
        """A canonical study read by the engine as it is (the workspace's Parquet path): privacy and status only."""
        path = Path(path)
        loaded = cls(tables=dict(tables), files=dict(files), truth=truth, source=str(path))
        loaded.info = _base_info(path, None, tables)
        loaded.privacy = _privacy_plan(path, None, truth, loaded.info)
        return loaded

    # ------------------------------------------------------------------ merging with the contract

    def merge(self, checked: Any) -> Any:
        """The contract's :class:`~cxex_lab.schema.Checked` with the load's problems, ledger and notes added.

        The contract's problems that repeat a load problem are left out (a
        column absent from the file is not also "missing"; a value that did not
        map is not also "missing values are not allowed"), and the whole-point
        rule does not apply to columns the loader rescaled (their native values
        were checked as whole points on the native scale).
        """
        from cxex_lab.schema import Checked

        load = pd.DataFrame(self.problems, columns=_PROBLEM_COLUMNS)
        # a table that could not be read at all: the contract's "missing table" adds nothing
        whole_tables = {p["table"] for p in self.problems if not p.get("column") and self.tables.get(p["table"]) is None}
        cols = {(p["table"], p["column"]) for p in self.problems if p.get("column")}
        keep = []
        for r in checked.problems.to_dict("records"):
            if r["table"] in whole_tables:
                continue
            if (r["table"], r["column"]) in cols:
                continue
            if r["rule"] == "must be a whole-number scale point" and r["column"] in self.rescaled.get(r["table"], ()):
                continue
            if self._config_study:
                r["text"] = self._contract_text(r)
            keep.append(r)
        contract = pd.DataFrame(keep, columns=_PROBLEM_COLUMNS)
        problems = pd.concat([load, contract], ignore_index=True) if len(load) else contract
        problems["count"] = problems["count"].fillna(0).astype("int64")
        problems = problems.fillna({"text": "", "file": "", "column": "", "examples": ""})
        ledger = Ledger(self.ledger.frame)
        ledger.extend(checked.ledger)
        notes = list(self.notes) + [n for n in checked.notes if n not in self.notes]
        return Checked(tables=checked.tables, ledger=ledger, problems=problems, rows=checked.rows, notes=notes)

    def settle(self, con: Any, checked: Any) -> Any:
        """:meth:`merge`, then raise :class:`StudyError` listing every problem, or pseudonymise the ids.

        Returns the merged :class:`~cxex_lab.schema.Checked` whose tables carry
        pseudonyms (when the study is pseudonymised). The error is also a
        :class:`cxex_lab.schema.DataContractError`.
        """
        merged = self.merge(checked)
        if not merged.ok:
            raise StudyError(merged.problems, self.source)
        merged.tables = self.pseudonymise(con, merged.tables)
        return merged

    def pseudonymiser(self) -> Any:
        """The study's :class:`~cxex_lab.privacy.Pseudonymiser` (reads or creates the key), or None."""
        if self.privacy is None:
            return None
        from cxex_lab.privacy import Pseudonymiser

        p = Pseudonymiser.from_key_file(self.privacy["key_file"], self.privacy["columns"])
        self.info.setdefault("privacy", {})["key_id"] = p.key_id
        return p

    def pseudonymise(self, con: Any, tables: Mapping[str, ir.Table | None]) -> dict[str, ir.Table | None]:
        """The tables with their id columns replaced by pseudonyms (unchanged when the study is not pseudonymised)."""
        p = self.pseudonymiser()
        if p is None:
            return dict(tables)
        return {n: (p.apply(con, t, n) if t is not None else None) for n, t in tables.items()}

    def _contract_text(self, r: dict) -> str:
        """A contract problem in the load's words: the file and the export's column behind the contract column."""
        src = (self.info.get("columns", {}).get(r["table"], {}) or {}).get(r["column"]) if r.get("column") else None
        file = r.get("file") or ""
        if src:
            q = _question(src.get("question"))
            col = f"column {src['source']!r}{q} ({r['column']})" if src["source"] != r["column"] else \
                f"column {r['column']!r}{q}"
            file = src.get("file") or file
        elif r.get("column"):
            col = f"column {r['column']!r}"
        else:
            col = ""
        head = ", ".join(x for x in (file or r["table"], col) if x) if col else \
            (f"{file} ({r['table']})" if file else r["table"])
        if r.get("count"):
            ex = f": {r['examples']}" if r.get("examples") else ""
            return f"{head}: {r['rule']} ({r['count']} row(s){ex})"
        ex = f"; {r['examples']}" if r.get("examples") else ""
        return f"{head}: {r['rule']}{ex}"


def _closest(name: str, options: Sequence[str]) -> str | None:
    """The option a misspelt or shortened name most likely means (containment first, then spelling)."""
    low = name.lower()
    contains = [o for o in options if low and (low in o.lower() or o.lower() in low) and len(o) > 1]
    if len(contains) == 1:
        return contains[0]
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.75)
    return close[0] if close else None


def _question(q: str | None) -> str:
    if not q:
        return ""
    q = " ".join(str(q).split())
    return f" ({q[:_QUESTION_CHARS].rstrip()}…)" if len(q) > _QUESTION_CHARS else f" ({q})"


# --------------------------------------------------------------------------- privacy and status


def _privacy_plan(path: Path, cfg: StudyConfig | None, truth: dict | None, info: dict) -> dict | None:
    """Whether and how the study is pseudonymised (the key is read or created only when ids are hashed).

    Real studies are pseudonymised unless the config says otherwise. A
    simulated study (``truth.json``) without a config keeps its synthetic ids
    (they identify nobody, and the truth checks join the simulator's latent
    tables on them).
    """
    on = cfg.privacy.pseudonymise if cfg is not None else truth is None
    info["privacy"] = {"pseudonymised": bool(on)}
    if not on:
        return None
    columns = list(cfg.privacy.id_columns) if cfg is not None else ["employee_id", "customer_id", "interaction_id"]
    key_path = (cfg.key_path(path) if cfg is not None else StudyConfig().key_path(path)).expanduser().resolve()
    info["privacy"].update({"columns": columns, "key_file": str(key_path)})
    return {"columns": columns, "key_file": key_path}


def _base_info(path: Path, cfg: StudyConfig | None, tables: Mapping[str, Any]) -> dict[str, Any]:
    status = {n: ("given" if tables.get(n) is not None else "absent") for n in TABLES}
    tps = []
    ex = tables.get("ex_responses")
    if ex is not None:
        tps = [c for c in ex.columns if C.is_touchpoint(c)]
    return {"config": cfg.path if cfg else None, "name": cfg.study.name if cfg else None,
            "tables": status, "timezone": cfg.study.timezone if cfg else "UTC",
            "min_group_size": cfg.study.min_group_size if cfg else None, "touchpoints": tps,
            "columns": {}, "scales": {}, "not_asked": [], "dropped": {}, "rows_read": {}}


# --------------------------------------------------------------------------- locating a study's files


def _canonical_files(path: Path, name: str) -> list[Path] | None:
    for cand in (path / f"{name}.parquet", path / f"{name}.pq", path / f"{name}.csv"):
        if cand.is_file():
            return [cand]
    part_dir = path / name
    if part_dir.is_dir():
        parts = sorted(p for p in part_dir.rglob("*") if p.is_file() and p.suffix in (".parquet", ".pq")
                       and not p.name.startswith((".", "_")))
        if parts:
            return parts
    return None


def _implicit_config(path: Path) -> tuple[StudyConfig, dict[str, list[Path]]]:
    """A canonical study folder as a config: each table's own file(s), every column under its own name."""
    found = {n: _canonical_files(path, n) for n in TABLES}
    missing = [n for n in C.REQUIRED_TABLES if found[n] is None]
    if missing:
        raise FileNotFoundError(
            f"{path}: missing table file(s): " + ", ".join(f"{n} (looked for {n}.parquet / .csv)" for n in missing)
            + "; for exports with other names write a study config (cxex-lab init " + str(path) + ")")
    # file names relative to the study folder (the loader joins them with it)
    tables = {n: TableSpec(files=[str(p.relative_to(path)) if p.is_relative_to(path) else str(p) for p in f])
              for n, f in found.items() if f is not None}
    return StudyConfig(tables=tables, base=str(path)), {n: f for n, f in found.items() if f is not None}


# --------------------------------------------------------------------------- expressions


def _clean_text(v: ir.Value) -> ir.StringValue:
    """Text trimmed, empty text missing."""
    s = v if v.type().is_string() else v.cast("string")
    return s.strip().nullif("")


def _norm_expr(s: ir.StringValue) -> ir.StringValue:
    return s.lower().re_replace(r"\s+", " ").strip()


def _norm(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return " ".join(str(v).lower().split())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scale_word(role: str) -> str:
    if C.is_touchpoint(role):
        return f"touchpoint {role.removeprefix('tp_')}"
    return _SCALE_WORDS.get(role, role)


def _format_words(fmt: str) -> str:
    order = [(d, w) for d, w in (("%d", "day"), ("%m", "month"), ("%b", "month"), ("%B", "month"), ("%Y", "year"),
                                 ("%y", "year")) if d in fmt]
    order.sort(key=lambda x: fmt.index(x[0]))
    return "/".join(w for _, w in order)


@dataclass
class _Check:
    """A rule every mapped value must keep: counted in one pass, examples fetched when it fails."""

    role: str
    source: str
    bad: Any
    value: Any
    what: str  # e.g. "outside the NPS scale 0-10"
    labels_of: str | None = None  # list the labels seen in this raw column (unmapped labels)
    known: list[str] | None = None  # the map's keys / the vocabulary


@dataclass
class _Exclusion:
    rule: str
    cond: Any


class _TableLoad:
    """Loads one table: files onto the engine, exclusions, the mapped columns, their checks."""

    def __init__(self, loader: "_Loader", name: str, spec: TableSpec) -> None:
        self.L = loader
        self.name = name
        self.spec = spec
        self.checks: list[_Check] = []
        self.exclusions: list[_Exclusion] = []
        self.sources: dict[str, dict] = {}
        self.questions: dict[str, str] = {}
        self.value_labels: dict[str, dict] = {}
        self.file_label = ""
        self.temp: list[str] = []  # the raw files' temporary tables (dropped once the mapped table is stored)

    # -- problems

    def problem(self, column: str | None, rule: str, text: str, count: int = 0, examples: str = "",
                plain: bool = False) -> None:
        """Record a load problem; ``plain`` ones of a canonical folder read like the contract's (no ``text``)."""
        if plain and not self.L.config_study:
            text = ""
        self.L.problems.append({"table": self.name, "file": self.file_label, "column": column or "", "rule": rule,
                                "count": int(count), "examples": examples, "text": text})

    def where(self, src: str | None) -> str:
        col = f"column {src!r}{_question(self.questions.get(src))}" if src else ""
        return ", ".join(x for x in (self.file_label, col) if x)

    # -- the files

    def run(self) -> ir.Table | None:
        from cxex_lab.readers import read_header, read_part

        spec, L = self.spec, self.L
        paths = self._paths()
        if paths is None:
            return None
        self.file_label = ", ".join(L.show(p) for p in paths) if len(paths) <= 3 else \
            f"{L.show(paths[0])} (+{len(paths) - 1} more files)"
        headers = {}
        for p in paths:
            try:
                headers[p] = read_header(p, spec.header_rows, spec.names_row, spec.question_row, spec.delimiter,
                                         spec.encoding, spec.sheet)
            except (ValueError, OSError) as err:
                self.problem(None, "file cannot be read", f"{L.show(p)}: {err}")
        if len(headers) != len(paths):
            return None
        first = headers[paths[0]]
        for h in headers.values():
            self.questions.update({k: v for k, v in h.questions.items() if k not in self.questions})
            self.value_labels.update({k: v for k, v in h.value_labels.items() if k not in self.value_labels})
        roles = self._roles(first)
        need = self._needed(roles, headers)
        if need is None:
            return None
        date_formats = {}
        for role, cs in roles.items():
            if cs is not None and cs.column and role_kind(self.name, role) == "datetime" and cs.formats:
                date_formats[cs.column] = cs.formats[0]
        parts = []
        for i, p in enumerate(paths):
            try:
                part = read_part(L.con, p, headers[p], need, header_rows=spec.header_rows, delimiter=spec.delimiter,
                                 encoding=spec.encoding, sheet=spec.sheet, date_formats=date_formats,
                                 tag=f"{self.name}_{i}")
            except (ValueError, OSError) as err:
                self.problem(None, "file cannot be read", f"{L.show(p)}: {err}")
                continue
            self.temp.extend(part.temp)
            if part.ragged:
                lines = ", ".join(str(r[0]) for r in part.ragged[:_N_EXAMPLES])
                more = len(part.ragged) - _N_EXAMPLES
                found = sorted({r[1] for r in part.ragged})
                self.problem(None, "records with the wrong number of fields",
                             f"{L.show(p)}, line{'s' if len(part.ragged) > 1 else ''} {lines}"
                             + (f" (+{more} more)" if more > 0 else "")
                             + f": {len(part.ragged)} record(s) with {', '.join(map(str, found))} field(s) where the "
                               f"header has {part.ragged[0][2]} (a stray delimiter or an unquoted line break?); "
                               f"these records were not loaded", len(part.ragged))
            t = part.table
            if len(paths) > 1:
                t = t.mutate(_file=ibis.literal(p.name))
            parts.append((t, part.rows))
        if not parts:
            return None
        raw = parts[0][0]
        for t, _ in parts[1:]:
            raw = raw.union(t)
        self.L.info["rows_read"][self.name] = int(sum(n for _, n in parts))
        return self._map(raw, roles)

    def _paths(self) -> list[Path] | None:
        L, spec = self.L, self.spec
        out: list[Path] = []
        for f in spec.file_list():
            p = Path(f)
            p = p if p.is_absolute() else L.base / p
            if any(ch in f for ch in "*?["):
                hits = sorted(Path(x) for x in glob.glob(str(p)))
                if not hits:
                    self.problem(None, "file not found", f"{self.name}: no file matches {f!r} in {L.base}")
                out.extend(hits)
                continue
            if not p.is_file():
                present = sorted(x.name for x in L.base.iterdir() if x.is_file() and not x.name.startswith(".")
                                 and x.suffix.lower() in READERS)
                close = _closest(Path(f).name, present)
                hint = f" (did you mean {close!r}?)" if close else ""
                self.file_label = f
                self.problem(None, "file not found",
                             f"{f}: file not found in {L.base} (the study config's tables.{self.name}.file){hint}; "
                             f"data files there: {', '.join(present[:12]) or 'none'}")
                return None
            out.append(p)
        return out or None

    def _roles(self, header) -> dict[str, ColumnSpec | None]:
        """Contract role -> spec: the config's mapping, then columns named like a role."""
        roles = self.spec.mapping()
        cols = set(header.columns)
        mapped_sources = {cs.column for cs in roles.values() if cs is not None and cs.column}
        for role in C.contract_columns(self.name, header.columns):
            if role not in roles and role in cols and role not in mapped_sources:
                roles[role] = ColumnSpec(column=role)
        return roles

    def _needed(self, roles: Mapping[str, ColumnSpec | None], headers: Mapping[Path, Any]) -> list[str] | None:
        L = self.L
        first = next(iter(headers.values()))
        cols = list(first.columns)
        need: list[str] = []
        ok = True
        for role, cs in roles.items():
            if cs is None or not cs.column:
                continue
            self.sources[role] = {"source": cs.column, "question": self.questions.get(cs.column),
                                  "file": self.file_label}
            if cs.column not in cols:
                close = _closest(cs.column, cols)
                hint = f" (did you mean {close!r}?)" if close else ""
                self.problem(role, "mapped column is absent",
                             f"{self.file_label}: column {cs.column!r} (mapped to {role}) is not in the file{hint}; "
                             f"its columns are: {', '.join(cols[:30])}" + (" ..." if len(cols) > 30 else ""))
                continue
            need.append(cs.column)
        for f in self.spec.filters:
            if f.column not in cols:
                self.problem(None, "filter column is absent",
                             f"{self.file_label}: the filter column {f.column!r} is not in the file; its columns "
                             f"are: {', '.join(cols[:30])}")
                ok = False
            else:
                need.append(f.column)
        for d in L.derive_columns(self.name):
            if d not in cols:
                self.problem(None, "column for the employees is absent",
                             f"{self.file_label}: column {d!r} (employees.derive) is not in the file; its columns "
                             f"are: {', '.join(cols[:30])}")
            else:
                need.append(d)
        for p, h in headers.items():
            absent = [c for c in dict.fromkeys(need) if c not in h.columns]
            if absent:
                self.problem(None, "files differ",
                             f"{L.show(p)}: lacks column(s) {absent} that the table's other files have")
                ok = False
        return list(dict.fromkeys(need)) if ok else None

    # -- the mapping

    def _map(self, raw: ir.Table, roles: Mapping[str, ColumnSpec | None]) -> ir.Table | None:
        name, spec = self.name, self.spec
        for f in spec.filters:
            self.exclusions.append(_Exclusion(self._filter_words(f), self._filter_cond(raw, f)))
        out: dict[str, Any] = {}
        for role, cs in roles.items():
            kind = role_kind(name, role)
            if cs is None:
                out[role] = C._null_of(kind)
                self.L.info["not_asked"].append(f"{name}.{role}")
                continue
            if not cs.column or cs.column not in raw.columns:
                continue
            out[role] = self._column(raw, role, kind, cs)
        if name == "ex_responses" and spec.waves:
            self._waves(raw, out, roles)
        keep = self._exclude(raw)
        extra = {}
        for key, col in self.L.derive_sources(name).items():
            if col in raw.columns:
                extra[f"_derive_{key}"] = _clean_text(raw[col])
        sel = {**out, **extra, "_row": raw._row}
        if "_file" in raw.columns:
            sel["_file"] = raw._file
        kept = raw.filter(keep) if keep is not None else raw
        self._count_checks(kept)
        mapped = kept.select(**sel)
        self.L.info["columns"][name] = self.sources
        return mapped

    def _filter_cond(self, raw: ir.Table, f) -> Any:
        v = raw[f.column]
        if f.missing is not None:
            empty = v.isnull() if not v.type().is_string() else _clean_text(v).isnull()
            return empty if f.missing else ~empty
        vals = f.values
        if not v.type().is_string() and all(_is_number(x) for x in vals):
            hit = v.cast("float64").isin([float(x) for x in vals])
        else:
            hit = _norm_expr(_clean_text(v)).isin([_norm(x) for x in vals])
        hit = hit.fill_null(False)
        return ~hit if f.not_in is not None else hit

    def _filter_words(self, f) -> str:
        vals = f.values
        show = ", ".join(repr(str(x)) for x in vals)
        if f.missing is not None:
            cond = "is empty" if f.missing else "is not empty"
        elif f.equals is not None:
            cond = f"= {show}"
        elif f.in_ is not None:
            cond = f"is one of {show}"
        else:
            cond = f"is none of {show}"
        return f"{f.reason} ({f.column} {cond}): excluded"

    def _exclude(self, raw: ir.Table):
        """Count the rows each exclusion takes (the first that applies), record them, return the keep predicate."""
        if not self.exclusions:
            return None
        code = ibis.cases(*[(e.cond, i + 1) for i, e in enumerate(self.exclusions)], else_=0).cast("int16")
        t = raw.mutate(_x=code)
        con = self.L.con
        counts = con.to_pyarrow(t.group_by("_x").aggregate(_n=t.count())).to_pylist()
        for r in counts:
            i = int(r["_x"])
            if i == 0:
                continue
            ex = t.filter(t._x == i).select("_row", *(["_file"] if "_file" in t.columns else []))
            rows = con.to_pyarrow(ex.order_by("_row").limit(_N_EXAMPLES)).to_pylist()
            words = [(f"{r2['_file']} " if r2.get("_file") else "") + f"row {r2['_row']}" for r2 in rows]
            self.L.ledger.add("load", self.name, self.exclusions[i - 1].rule, int(r["_n"]), words)
        return ibis.and_(*[~e.cond.fill_null(False) for e in self.exclusions])

    def _column(self, raw: ir.Table, role: str, kind: str, cs: ColumnSpec) -> Any:
        v = raw[cs.column]
        if kind == "id":
            return self._id(v, role, cs)
        if kind in ("number", "integer"):
            return self._number(v, role, kind, cs)
        if kind == "datetime":
            return self._datetime(v, role, cs)
        if kind == "boolean":
            return self._boolean(v, role, cs)
        s = _clean_text(v)
        return self._missing_text(s, cs)

    def _missing_text(self, s, cs: ColumnSpec):
        texts = [_norm(m) for m in cs.missing]
        if texts:
            s = ibis.cases((_norm_expr(s).isin(texts), ibis.null("string")), else_=s)
        return s

    def _wrong_kind(self, v, role: str, cs: ColumnSpec, words: str):
        from cxex_lab.schema import _type_word

        self.checks.append(_Check(role, cs.column, v.notnull(), v.cast("string"),
                                  f"is {_type_word(v.type())}, not {words}"))

    def _id(self, v, role: str, cs: ColumnSpec):
        t = v.type()
        if t.is_string():
            s = _clean_text(v)
        elif t.is_integer():
            s = v.cast("string")
        elif t.is_floating() or t.is_decimal():
            s = ibis.cases((v == v.floor(), v.cast("int64").cast("string")), else_=v.cast("string"))
        else:
            s = v.cast("string")
        s = self._missing_text(s, cs)
        if cs.placeholders:
            vals = [_norm(x) for x in cs.placeholders]
            show = ", ".join(repr(str(x)) for x in cs.placeholders)
            what = _ENTITY.get(role, role.removesuffix("_id"))
            rule = (f"unlinkable: {cs.column} holds the placeholder {show} instead of a real {role} (no {what} to "
                    f"link to): excluded")
            self.exclusions.append(_Exclusion(rule, _norm_expr(s).isin(vals).fill_null(False)))
        return s

    def _number(self, v, role: str, kind: str, cs: ColumnSpec):
        """A number: label map, missing codes, native scale checks, the map onto the contract's scale.

        In a canonical folder (no config) numbers keep their type and the
        contract's own range and whole-number rules apply; with a config the
        native scale is checked here, in the export's words.
        """
        t = v.type()
        scale = C.scale_of(self.name, role)
        config = self.L.config_study
        if role == "handle_seconds" and cs.formats and t.is_string():
            s = self._missing_text(_clean_text(v), cs)
            ts = _try_strptime(s, ibis.literal(cs.formats, type="array<string>"))
            self.checks.append(_Check(role, cs.column, s.notnull() & ts.isnull(), s,
                                      f"does not match the declared duration format {cs.formats[0]!r}"))
            return (ts.epoch_seconds() - ts.truncate("D").epoch_seconds()).cast("float64")
        if t.is_string():
            s = self._missing_text(_clean_text(v), cs)
            key = _norm_expr(s)
            num = s.try_cast("float64")
            if cs.labels == "file":
                self.problem(role, "labels: file needs value labels",
                             f"{self.where(cs.column)}: labels: file takes numbers from the value labels of an SPSS "
                             f"or Stata column; this column holds text: give a labels map {{text: number}}")
                return ibis.null("float64")
            if cs.labels:
                lab = ibis.cases(*[(key == _norm(k), float(x)) for k, x in cs.labels.items()], else_=None)
                val = lab.cast("float64").coalesce(num)
                self.checks.append(_Check(role, cs.column, s.notnull() & val.isnull(), s,
                                          "is not in the label map", labels_of=cs.column, known=list(cs.labels)))
            else:
                val = num
                hint = " (answers given as text need a label map: labels: {text: number})" if scale else ""
                self.checks.append(_Check(role, cs.column, s.notnull() & num.isnull(), s, f"is not a number{hint}",
                                          labels_of=cs.column if scale else None))
        elif t.is_numeric() and not t.is_boolean():
            codes = [float(m) for m in cs.missing if _is_number(m)]
            if not config and not codes and cs.scale is None and cs.rescale is None:
                return v  # typed numbers of a canonical table: as they are
            val = v.cast("float64")
            if codes:
                val = ibis.cases((val.isin(codes), ibis.null("float64")), else_=val)
            if cs.labels is not None:
                val = self._coded(val, role, cs)
        else:
            self._wrong_kind(v, role, cs, "numbers")
            return ibis.null("float64")
        whole = val == val.floor()
        if scale is not None and (config or cs.scale is not None or cs.rescale is not None):
            lo_c, hi_c = scale
            lo, hi = cs.scale or scale
            word = _scale_word(role)
            out = val.notnull() & ((val < lo) | (val > hi))
            if cs.out_of_range == "exclude":
                self.exclusions.append(_Exclusion(
                    f"{cs.column} outside the {word} scale {lo}-{hi} (out_of_range: exclude): excluded",
                    out.fill_null(False)))
            else:
                self.checks.append(_Check(role, cs.column, out, self._shown(v, val),
                                          f"outside the {word} scale {lo}-{hi}"))
            self.checks.append(_Check(role, cs.column, val.notnull() & ~whole & ~out, self._shown(v, val),
                                      f"is not a whole point of the {word} scale {lo}-{hi}"))
            if (lo, hi) != (lo_c, hi_c) or cs.rescale is not None:
                return self._rescale(val, role, cs, (lo, hi), (lo_c, hi_c))
            if cs.scale is not None:
                self.L.info["scales"][f"{self.name}.{role}"] = {"native": [lo, hi], "contract": [lo_c, hi_c],
                                                                "map": "none", "source": cs.column}
            return ibis.cases((whole, val), else_=None).cast("int64")
        if kind == "integer" and config:
            self.checks.append(_Check(role, cs.column, val.notnull() & ~whole, self._shown(v, val),
                                      "is not a whole number"))
            return ibis.cases((whole, val), else_=None).cast("int64")
        return val

    def _coded(self, val, role: str, cs: ColumnSpec):
        """SPSS/Stata codes -> numbers through the file's value labels (a label map, or ``labels: file``)."""
        import re

        vl = {float(k): str(x) for k, x in (self.value_labels.get(cs.column) or {}).items()}
        if not vl:
            self.problem(role, "no value labels",
                         f"{self.where(cs.column)}: the column has no value labels in the file, so labels cannot "
                         f"map its codes; leave labels out (the codes are the answers) or give them in the file")
            return val
        if cs.labels == "file":
            lead = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\b")
            points = {code: float(m.group(1)) for code, lab in vl.items() if (m := lead.match(lab))}
            known = [f"{k:g} ({vl[k]!r})" for k in points]
            what = "has a value label that does not start with a number (labels: file)"
        else:
            by_text = {_norm(k): float(x) for k, x in cs.labels.items()}
            points = {code: by_text[_norm(lab)] for code, lab in vl.items() if _norm(lab) in by_text}
            known = list(cs.labels)
            what = "has a value label that is not in the label map"
        mapped = ibis.cases(*[(val == code, x) for code, x in points.items()], else_=None).cast("float64")
        self.checks.append(_Check(role, cs.column, val.notnull() & mapped.isnull(), val, what,
                                  known=known if cs.labels != "file" else None))
        self.L.info.setdefault("coded", {})[f"{self.name}.{role}"] = {f"{k:g}": x for k, x in points.items()}
        return mapped

    def _rescale(self, val, role: str, cs: ColumnSpec, native: tuple[int, int], contract: tuple[int, int]):
        """Native answers onto the contract's scale: rounded linear map (default), linear, or a recode."""
        lo, hi = native
        lo_c, hi_c = contract
        info: dict[str, Any] = {"native": [lo, hi], "contract": [lo_c, hi_c], "source": cs.column}
        if cs.rescale == "linear":
            info["map"] = "linear"
            self.L.rescaled.setdefault(self.name, set()).add(role)
            self.L.info["scales"][f"{self.name}.{role}"] = info
            return (lo_c + (val - lo) * ((hi_c - lo_c) / (hi - lo))).cast("float64")
        if isinstance(cs.rescale, dict):
            points = {int(k): float(x) for k, x in cs.rescale.items()}
            info["map"] = "recode"
        else:  # round: the linear map to the nearest contract point (half up)
            points = {k: float(math.floor(lo_c + (k - lo) * (hi_c - lo_c) / (hi - lo) + 0.5)) for k in range(lo, hi + 1)}
            info["map"] = "round"
        info["points"] = {str(k): (int(x) if x.is_integer() else x) for k, x in points.items()}
        self.L.info["scales"][f"{self.name}.{role}"] = info
        mapped = ibis.cases(*[(val == float(k), x) for k, x in points.items()], else_=None)
        if all(x.is_integer() for x in points.values()):
            return mapped.cast("int64")
        self.L.rescaled.setdefault(self.name, set()).add(role)
        return mapped.cast("float64")

    def _shown(self, v, val):
        return v if v.type().is_string() else val

    def _datetime(self, v, role: str, cs: ColumnSpec):
        t = v.type()
        study_tz = self.L.timezone
        col_tz = cs.timezone or study_tz
        if t.is_string():
            s = self._missing_text(_clean_text(v), cs)
            if cs.formats:
                fmts = ibis.literal(cs.formats, type="array<string>")
                if any("%z" in f or "%Z" in f for f in cs.formats):
                    return self._checked_ts(s, role, cs, _try_strptime_tz(s, fmts), zoned=True)
                return self._checked_ts(s, role, cs, _try_strptime(s, fmts), zoned=False, col_tz=col_tz)
            zoned = _matches(s, r"(Z|z|[+-]\d\d(:?\d\d)?)$")
            naive = s.try_cast("timestamp")
            inst = s.try_cast(dt.Timestamp("UTC"))
            wall_naive = self._to_study(naive, col_tz)
            wall_zoned = _wall_in(ibis.literal(study_tz), inst)
            ts = ibis.cases((zoned, wall_zoned), else_=wall_naive)
            bad = s.notnull() & ts.isnull()
            self.checks.append(_Check(role, cs.column, bad, s, f"is not an {ISO_FORMATS}; declare the column's "
                                                               f"format in the study config, e.g. format: "
                                                               f"'%d/%m/%Y %H:%M' (day first)"))
            return ts
        if t.is_timestamp():
            if t.timezone is not None:
                return _wall_in(ibis.literal(study_tz), v.cast(dt.Timestamp("UTC")))
            return self._to_study(v, col_tz)
        if t.is_date():
            return v.cast("timestamp")
        self._wrong_kind(v, role, cs, "dates")
        return ibis.null("timestamp")

    def _checked_ts(self, s, role, cs: ColumnSpec, parsed, zoned: bool, col_tz: str | None = None):
        study_tz = self.L.timezone
        fmts = " or ".join(repr(f) for f in cs.formats)
        words = "/".join(dict.fromkeys(_format_words(f) for f in cs.formats))
        self.checks.append(_Check(role, cs.column, s.notnull() & parsed.isnull(), s,
                                  f"does not match the declared format {fmts}" + (f" ({words})" if words else "")))
        if zoned:
            return _wall_in(ibis.literal(study_tz), parsed)
        return self._to_study(parsed, col_tz)

    def _to_study(self, ts, zone: str):
        if zone == self.L.timezone:
            return ts
        return _wall_in(ibis.literal(self.L.timezone), _instant_of(ibis.literal(zone), ts))

    def _boolean(self, v, role: str, cs: ColumnSpec):
        t = v.type()
        if t.is_boolean():
            return v
        true = [_norm(x) for x in (cs.true if cs.true is not None else _DEFAULT_TRUE)]
        false = [_norm(x) for x in (cs.false if cs.false is not None else _DEFAULT_FALSE)]
        if t.is_numeric():
            val = ibis.cases((v == 1, True), (v == 0, False), else_=None).cast("boolean")
            self.checks.append(_Check(role, cs.column, v.notnull() & val.isnull(), v, "is not 1 or 0 (true/false)"))
            return val
        s = self._missing_text(_clean_text(v), cs)
        key = _norm_expr(s)
        val = ibis.cases((key.isin(true), True), (key.isin(false), False), else_=None).cast("boolean")
        vocab = f"true: {list(cs.true if cs.true is not None else _DEFAULT_TRUE)}, " \
                f"false: {list(cs.false if cs.false is not None else _DEFAULT_FALSE)}"
        self.checks.append(_Check(role, cs.column, s.notnull() & val.isnull(), s,
                                  f"is not one of the true/false words ({vocab})", labels_of=cs.column))
        return val

    def _waves(self, raw: ir.Table, out: dict, roles: Mapping[str, ColumnSpec | None]) -> None:
        waves = sorted(self.spec.waves, key=lambda w: w.start)
        if "wave" in out and "responded_at" not in out:
            w = out["wave"]
            out["responded_at"] = ibis.cases(*[(w == x.wave, ibis.literal(datetime.combine(x.start, datetime.min.time()),
                                                                        type="timestamp")) for x in waves], else_=None)
            self.L.notes.append("ex_responses: no answer dates in the export; each answer is dated on its wave's "
                                "first day (waves: in the study config)")
            return
        if "responded_at" not in out:
            self.problem("wave", "waves need dates", "ex_responses: waves by dates need the answers' dates: map "
                                                     "responded_at (or a wave column)")
            return
        day = out["responded_at"].truncate("D")
        cases = [(day.between(ibis.literal(datetime.combine(x.start, datetime.min.time()), type="timestamp"),
                              ibis.literal(datetime.combine(x.end, datetime.min.time()), type="timestamp")), x.wave)
                 for x in waves]
        wave = ibis.cases(*cases, else_=None).cast("int64")
        out["wave"] = wave
        spans = ", ".join(f"wave {x.wave} {x.start}..{x.end}" for x in waves)
        self.exclusions.append(_Exclusion(f"EX answer given outside every declared wave ({spans}): excluded",
                                          out["responded_at"].notnull() & wave.isnull()))
        self.L.info["waves"] = {str(x.wave): [str(x.start), str(x.end)] for x in waves}

    # -- the checks

    def _count_checks(self, t: ir.Table) -> None:
        if not self.checks:
            return
        con = self.L.con
        aggs = {f"_c{i}": c.bad.fill_null(False).cast("int64").sum() for i, c in enumerate(self.checks)}
        counts = con.to_pyarrow(t.aggregate(**aggs)).to_pylist()[0]
        for i, c in enumerate(self.checks):
            k = int(counts[f"_c{i}"] or 0)
            if not k:
                continue
            cols = {"_row": t._row, "_value": c.value}
            if "_file" in t.columns:
                cols["_file"] = t._file
            rows = con.to_pyarrow(t.filter(c.bad.fill_null(False)).select(**cols).order_by("_row")
                                  .limit(_N_EXAMPLES)).to_pylist()
            labels = self.value_labels.get(c.source)
            vals = [_fmt_value(r["_value"], labels) for r in rows]
            where = self.where(c.source)
            rows_w = _rows_words(rows, k)
            if len(set(vals)) == 1:
                text = f"{where}, {rows_w}: value {vals[0]} {c.what}"
            else:
                inline = _rows_words([dict(r, _row=f"{r['_row']} ({v})") for r, v in zip(rows, vals)], k)
                text = f"{where}, {inline}: {c.what}"
            if c.labels_of:
                seen = self._seen(t, c)
                text += f"; values seen: {seen}"
            if c.known is not None:
                text += "; the map's keys: " + ", ".join(repr(x) for x in c.known)
            examples = ", ".join(f"row {r['_row']} (value {v})" for r, v in zip(rows, vals))
            if k > len(rows):
                examples += f" (+{k - len(rows)} more)"
            self.problem(c.role, f"value {c.what}", text, k, examples, plain=True)

    def _seen(self, t: ir.Table, c: _Check) -> str:
        """The distinct text answers of a column, most frequent first (numbers left out), for unmapped labels."""
        s = _clean_text(t[c.source]) if c.source in t.columns else None
        if s is None:
            return ""
        g = t.select(_v=s).filter(lambda x: x._v.notnull() & x._v.try_cast("float64").isnull())
        g = g.group_by("_v").aggregate(_n=g.count()).order_by([ibis.desc("_n"), "_v"]).limit(21)
        vals = [r["_v"] for r in self.L.con.to_pyarrow(g).to_pylist()]
        more = " ..." if len(vals) > 20 else ""
        return ", ".join(repr(v) for v in vals[:20]) + more


class _Loader:
    """Loads every table of a study config onto one DuckDB connection."""

    def __init__(self, con: Any, base: Path, cfg: StudyConfig, implicit: bool, show_full: bool) -> None:
        self.con = con
        self.base = base
        self.cfg = cfg
        self.implicit = implicit
        self.show_full = show_full
        self.timezone = cfg.study.timezone
        self.ledger = Ledger()
        self.problems: list[dict] = []
        self.notes: list[str] = []
        self.rescaled: dict[str, set[str]] = {}
        self.info: dict[str, Any] = {}
        self.config_study = not implicit

    def show(self, p: Path) -> str:
        if self.show_full:
            return str(p)
        try:
            return p.relative_to(self.base).as_posix()
        except ValueError:
            return str(p)

    def _derive(self) -> dict[str, Any]:
        emp = self.cfg.table("employees")
        if emp is None or emp.file_list() or emp.derive is None:
            return {}
        return {k: getattr(emp.derive, k) for k in ("team_id", "site_id") if getattr(emp.derive, k) is not None}

    def derive_sources(self, table: str) -> dict[str, str]:
        return {k: d.column for k, d in self._derive().items() if d.table == table and d.column}

    def derive_columns(self, table: str) -> list[str]:
        return list(self.derive_sources(table).values())

    def load(self) -> dict[str, ir.Table | None]:
        out: dict[str, ir.Table | None] = {}
        files: dict[str, str | None] = {}
        for name in TABLES:
            spec = self.cfg.table(name)
            if spec is None or not spec.file_list():
                out[name] = None
                files[name] = None
                if name in C.REQUIRED_TABLES:
                    self.problems.append({
                        "table": name, "file": "", "column": "", "rule": "table missing", "count": 0, "examples": "",
                        "text": f"{name}: no file is given for this table; a study needs "
                                f"{', '.join(C.REQUIRED_TABLES)} (add tables.{name}.file to the study config)"})
                continue
            tl = _TableLoad(self, name, spec)
            t = tl.run()
            files[name] = tl.file_label or None
            if t is not None:
                t = self._materialise(name, t)
                from cxex_lab.readers import drop_temp

                drop_temp(self.con, tl.temp)  # the raw text copy is no longer needed
            out[name] = t
            self.info.setdefault("dropped", {})[name] = list(spec.drop)
        self.files = files
        return out

    def _materialise(self, name: str, t: ir.Table) -> ir.Table:
        """Store a mapped table (temporary): the contract's checks then read it, not the mapping again."""
        tmp = f"cxex_mapped_{name}"
        self.con.raw_sql(f'DROP TABLE IF EXISTS "{tmp}"')
        return self.con.create_table(tmp, t, temp=True)

    def derive_employees(self, tables: dict[str, ir.Table | None]) -> None:
        """Employees from the ids in the EX answers and the log, when the study has no employees table."""
        if tables.get("employees") is not None:
            return
        src = {k: v for k, v in self._derive().items()}
        parts = [tables[n] for n in ("ex_responses", "interactions")
                 if tables.get(n) is not None and "employee_id" in tables[n].columns]
        if not parts:
            return
        ids = None
        for p in parts:
            sel = p.select(employee_id=p.employee_id)
            ids = sel if ids is None else ids.union(sel)
        ids = ids.distinct()
        ids = ids.filter(ids.employee_id.notnull())
        cols: dict[str, Any] = {}
        words = []
        multi_notes = []
        for key in ("team_id", "site_id"):
            d = src.get(key)
            unit = key.removesuffix("_id")
            if d is None:
                cols[key] = None
                words.append(f"{unit} 'unknown'")
                continue
            if d.value is not None:
                cols[key] = ibis.literal(str(d.value))
                words.append(f"{unit} {d.value!r} for everyone")
                continue
            t = tables.get(d.table)
            col = f"_derive_{key}"
            if t is None or col not in t.columns:
                cols[key] = None
                words.append(f"{unit} 'unknown'")
                continue
            f = t.filter(t[col].notnull() & t.employee_id.notnull())
            g = f.group_by([f.employee_id.name("_e"), f[col].name("_g")]).aggregate(_n=f.count())
            w = ibis.window(group_by=g._e, order_by=[ibis.desc(g._n), g._g])
            top = g.mutate(_r=ibis.row_number().over(w)).filter(lambda x: x._r == 0).select("_e", "_g")
            many = g.group_by("_e").aggregate(_k=g.count()).filter(lambda x: x._k > 1).count()
            k = int(self.con.execute(many))
            if k:
                multi_notes.append(f"{k} employee(s) appear with more than one {unit} in {d.table}.{d.column}: the "
                                   f"most frequent is used")
            cols[key] = top
            words.append(f"{unit} from {d.table}.{d.column} (the most frequent per employee)")
        emp = ids
        for key, val in cols.items():
            if val is None:
                emp = emp.mutate(**{key: ibis.literal("unknown")})
            elif isinstance(val, ir.Table):
                j = emp.left_join(val, emp.employee_id == val._e)
                emp = j.select(*[c for c in emp.columns], **{key: j._g.fill_null("unknown")})
            else:
                emp = emp.mutate(**{key: val})
        # no role, hire or exit date columns: absent optional columns (the contract adds them as missing)
        tables["employees"] = self._materialise("employees", emp.select("employee_id", "team_id", "site_id"))
        n = int(self.con.execute(tables["employees"].count()))
        self.notes.append(f"no employees table: {n} employees derived from the ids in ex_responses and interactions; "
                          + ", ".join(words) + "; no hire or exit dates")
        self.notes.extend(multi_notes)
        self.info["tables"]["employees"] = "derived"
        self.files["employees"] = None


def load_tables(path: str | Path, config: Any = None, con: Any = None) -> Loaded:
    """Read a study's files into the engine and map them onto the contract (not yet validated).

    Parameters
    ----------
    path : path
        The study folder (a ``study.yaml`` in it is used when ``config`` is
        None), or a DuckDB study file.
    config : path, mapping or StudyConfig, optional
        The study config (:mod:`cxex_lab.config`).
    con : Ibis backend, optional
        Where the tables go (default: a new in-memory DuckDB). Files are read
        by DuckDB; on another engine (Spark) the mapped tables are handed over
        through Arrow, which suits small and medium studies.

    Returns
    -------
    Loaded
        Hand ``loaded.tables`` to :func:`cxex_lab.schema.check_tables`, then
        :meth:`Loaded.settle`.

    Raises
    ------
    FileNotFoundError
        No such study, or a canonical folder without its required tables.
    ConfigError
        The study config is not valid (every problem listed).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"study path {path} does not exist")
    con = con if con is not None else C.duckdb_connect()
    if getattr(con, "name", "duckdb") != "duckdb":
        return _via_duckdb(path, config, con)
    if path.is_file():
        return _duckdb_file(path, con)
    if config is None and (path / "study.yaml").exists():
        config = path / "study.yaml"
    cfg = load_config(config, base=path)
    implicit = cfg is None
    if implicit:
        cfg, _ = _implicit_config(path)
    else:  # a table the config does not name may sit in the folder under its own name
        extra = {n: TableSpec(files=[str(p.relative_to(path)) if p.is_relative_to(path) else str(p) for p in f])
                 for n in TABLES if n not in cfg.tables and (f := _canonical_files(path, n)) is not None}
        if extra:
            cfg = cfg.model_copy(update={"tables": {**cfg.tables, **extra}})
    truth = json.loads((path / "truth.json").read_text()) if (path / "truth.json").exists() else None
    loader = _Loader(con, path, cfg, implicit=implicit, show_full=implicit)
    loader.info = _base_info(path, None if implicit else cfg, {})
    tables = loader.load()
    loader.derive_employees(tables)
    for name in ("ex_responses", "interactions"):
        t = tables.get(name)
        if t is not None:
            extra = [c for c in t.columns if c.startswith("_derive_")]
            if extra:
                tables[name] = t.drop(*extra)
    info = loader.info
    for n in TABLES:
        if info["tables"].get(n) != "derived":
            info["tables"][n] = "given" if tables.get(n) is not None else "absent"
    ex = tables.get("ex_responses")
    info["touchpoints"] = [c for c in (ex.columns if ex is not None else []) if C.is_touchpoint(c)]
    if tables.get("customer_outcomes") is None:
        loader.notes.append("no customer_outcomes table: the loyalty analyses (retention, revenue) have no data")
    loaded = Loaded(tables=tables, files=loader.files, truth=truth, ledger=loader.ledger, problems=loader.problems,
                    notes=loader.notes, info=info, source=str(path), rescaled=loader.rescaled,
                    _config_study=not implicit)
    loaded.privacy = _privacy_plan(path, None if implicit else cfg, truth, info)
    return loaded


def _duckdb_file(path: Path, con: Any) -> Loaded:
    """A DuckDB study file: its canonical tables, read as they are."""
    if path.suffix.lower() not in (".duckdb", ".db"):
        raise ValueError(f"{path}: a study is a directory of tables or a DuckDB (.duckdb) file, not a {path.suffix} "
                         f"file")
    lit = "'" + str(path).replace("'", "''") + "'"
    alias = "cxex_study_file"
    try:
        con.raw_sql(f"ATTACH IF NOT EXISTS {lit} AS {alias} (READ_ONLY)")
    except Exception as err:  # noqa: BLE001 - not a DuckDB file
        raise ValueError(f"{path}: could not be opened as a DuckDB file ({err})") from None
    present = {r[0] for r in con.con.execute(
        f"select table_name from information_schema.tables where table_catalog = '{alias}'").fetchall()}
    missing = [t for t in C.REQUIRED_TABLES if t not in present]
    if missing:
        raise FileNotFoundError(f"{path}: DuckDB file has no table(s) {missing}; it has {sorted(present)}")
    tables = {}
    for n in TABLES:
        if n in present:
            view = f"cxex_file_{n}"
            con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "{view}" AS SELECT *, row_number() OVER () + 1 AS _row '
                        f'FROM {alias}."{n}"')
            tables[n] = con.table(view)
        else:
            tables[n] = None
    return _plain(path, tables)


def _plain(path: Path, tables: dict) -> Loaded:
    loaded = Loaded(tables=tables, files={n: f"{path} (table {n})" for n in TABLES if tables[n] is not None},
                    source=str(path))
    loaded.info = _base_info(path, None, tables)
    loaded.info["privacy"] = {"pseudonymised": False}
    return loaded


def _via_duckdb(path: Path, config: Any, con: Any) -> Loaded:
    """Load on a private DuckDB, then hand the mapped tables to another engine through Arrow."""
    duck = C.duckdb_connect()
    loaded = load_tables(path, config, duck)
    tables = {}
    for n, t in loaded.tables.items():
        tables[n] = ibis.memtable(duck.to_pyarrow(t)) if t is not None else None
    loaded.tables = tables
    return loaded


# --------------------------------------------------------------------------- checking a study


@dataclass
class StudyCheck:
    """What :func:`check_study` found: sizes, problems, the ledger, notes and what was recorded."""

    source: str
    sizes: pd.DataFrame
    problems: pd.DataFrame
    ledger: pd.DataFrame
    notes: list[str]
    info: dict[str, Any]

    @property
    def ok(self) -> bool:
        return len(self.problems) == 0

    def problem_lines(self) -> list[str]:
        return _problem_lines(self.problems)


def check_study(path: str | Path, config: Any = None) -> StudyCheck:
    """Load, map and validate a study (in an in-memory DuckDB) and report; never raises for bad data.

    Returns
    -------
    StudyCheck
        ``sizes`` per table (rows read from the files, excluded while loading,
        excluded by the contract, kept), every problem (load and contract),
        the data-quality ledger and the notes.

    Raises
    ------
    FileNotFoundError, ConfigError
        No such study; an invalid study config.
    """
    from cxex_lab.schema import check_tables

    con = C.duckdb_connect()
    loaded = load_tables(path, config, con)
    checked = check_tables(con, loaded.tables, loaded.files)
    merged = loaded.merge(checked)
    led = merged.ledger.frame
    rows = []
    for n in TABLES:
        status = loaded.info["tables"].get(n, "absent")
        t = merged.tables.get(n)
        kept = int(con.execute(t.count())) if t is not None and merged.ok else None
        read = loaded.info["rows_read"].get(n)
        x_load = int(led.loc[(led["table"] == n) & (led["step"] == "load"), "rows_excluded"].sum())
        x_val = int(led.loc[(led["table"] == n) & (led["step"] == "validate"), "rows_excluded"].sum())
        rows.append({"table": n, "status": status, "file": loaded.files.get(n) or "",
                     "rows_read": read, "excluded_at_load": x_load if t is not None else None,
                     "excluded_by_contract": x_val if t is not None else None, "rows": kept})
    sizes = pd.DataFrame(rows)
    for c in ("rows_read", "excluded_at_load", "excluded_by_contract", "rows"):
        sizes[c] = sizes[c].astype("Int64")
    return StudyCheck(str(path), sizes, merged.problems, led, merged.notes, loaded.info)


# --------------------------------------------------------------------------- pandas API


def load_study(
    path: str | Path,
    config: str | Path | dict | None = None,
    validate: bool = True,
) -> Study:
    """Load a study into pandas: a folder of tables or exports (with a study config), or a DuckDB file.

    The files are read and mapped in an in-memory DuckDB (:func:`load_tables`)
    and validated there against the contract; the validated tables come back
    as pandas (for small studies; large ones go through
    :func:`cxex_lab.workspace.prepare`).

    Parameters
    ----------
    path : path
        A folder with ``<table>.parquet`` / ``<table>.csv`` files (and
        ``truth.json`` if simulated), a folder of exports with a
        ``study.yaml``, or a ``.duckdb`` file holding the tables.
    config : path or dict, optional
        The study config (default: ``study.yaml`` in the folder, if any).
    validate : bool
        Validate against the contract (raises :class:`StudyError`, also a
        :class:`~cxex_lab.schema.DataContractError`, listing every problem)
        and attach the data-quality ledger as ``study.ledger``. With False only
        the load's own problems raise.

    Returns
    -------
    Study
        Ids pseudonymised when the study is (see :mod:`cxex_lab.privacy`).

    Examples
    --------
    >>> study = load_study("data/sample")  # doctest: +SKIP
    """
    from cxex_lab.schema import Checked, check_tables

    con = C.duckdb_connect()
    loaded = load_tables(path, config, con)
    if validate:
        checked = loaded.settle(con, check_tables(con, loaded.tables, loaded.files))
    else:
        if loaded.problems:
            raise StudyError(pd.DataFrame(loaded.problems, columns=_PROBLEM_COLUMNS), loaded.source)
        checked = Checked(tables=dict(loaded.tables), ledger=Ledger(loaded.ledger.frame), problems=pd.DataFrame(),
                          notes=list(loaded.notes))
        checked.tables = loaded.pseudonymise(con, checked.tables)
    frames = {}
    for n in TABLES:
        t = checked.tables.get(n)
        if t is None:
            frames[n] = None
            continue
        keep = [c for c in t.columns if n == "ex_responses" and C.is_touchpoint(c)]
        c = C.canonical(t, n, keep=keep)
        df = con.to_pyarrow(c.order_by(t._row) if "_row" in t.columns and "_row" in c.columns else c).to_pandas()
        df = _pandas_types(df)
        df.attrs["source"] = loaded.files.get(n) or str(path)
        frames[n] = df.reset_index(drop=True)
    truth = loaded.truth
    study = Study(**frames, truth=truth, source=str(path), ledger=checked.ledger.frame if validate else None)
    p = Path(path)
    if truth is not None and p.is_dir() and (p / "latent").is_dir():
        # simulated studies may ship the simulator's latent tables (truth checks only)
        study.latent = {q.stem: pd.read_parquet(q) for q in sorted((p / "latent").glob("*.parquet"))}
    return study


_BOOLEAN_COLUMNS = {c for cols in C.COLUMNS.values() for c, k in cols.items() if k == "boolean"}


def _pandas_types(df: pd.DataFrame) -> pd.DataFrame:
    """Microsecond timestamps without zone; true/false columns with missing values as nullable booleans."""
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_datetime64_any_dtype(s):
            if getattr(s.dt, "tz", None) is not None:
                s = s.dt.tz_localize(None)
            df[c] = s.astype("datetime64[us]")
        elif c in _BOOLEAN_COLUMNS and s.dtype == object:
            df[c] = s.astype("boolean")
    return df


def read_table(path: str | Path, table: str, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Read one table file (CSV, Parquet, Excel, SPSS, Stata) and map its columns onto the contract.

    Parameters
    ----------
    path : path
        The file.
    table : str
        Which canonical table it is.
    columns : dict, optional
        ``{contract_role: name_in_file}``.

    Returns
    -------
    DataFrame
        The mapped columns (not validated against the contract).
    """
    path = Path(path)
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; the contract's tables are {list(TABLES)}")
    cfg = StudyConfig(tables={table: TableSpec(file=str(path.resolve()), columns=dict(columns or {}))},
                      privacy={"pseudonymise": False}, base=str(path.parent))
    con = C.duckdb_connect()
    loader = _Loader(con, path.parent, cfg, implicit=True, show_full=True)
    loader.info = _base_info(path.parent, None, {})
    tl = _TableLoad(loader, table, cfg.tables[table])
    t = tl.run()
    if loader.problems:
        raise StudyError(pd.DataFrame(loader.problems, columns=_PROBLEM_COLUMNS), str(path))
    df = con.to_pyarrow(t.order_by("_row").drop("_row")).to_pandas()
    df.attrs["source"] = str(path)
    return _pandas_types(df)


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
        if df is None:
            continue
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

