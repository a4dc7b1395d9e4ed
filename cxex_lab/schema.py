"""Validate a study against the data contract, in the engine, and keep the data-quality ledger.

The contract's vocabulary (tables, columns and kinds, scales, keys) and its
exclusion policies live in :mod:`cxex_lab.contract`; this module checks tables
against them. The checks are Ibis expressions, so they run as SQL where the
data are: on an in-memory DuckDB connection for a :class:`~cxex_lab.study.Study`
(:func:`validate`), on the study workspace's DuckDB file out of core, or on
Spark (:func:`check_tables`, called by :func:`cxex_lab.workspace.prepare`).

Checks (hard violations, reported together in one :class:`DataContractError`):

* the **required tables** and **columns** are there, with the right **kind** of
  values (numbers, whole numbers, timestamps, true/false, identifiers); a
  missing join column is reported like any other missing column;
* every survey **scale** holds whole scale points within its range (NPS/eNPS
  0-10, CSAT/eSat 1-5, CES/EES 1-7, touchpoint items, empowerment and insight
  access 1-5), handle times are not negative, waves and periods are 1 or more;
* **keys** are unique and never missing; other required values are not missing;
* **timestamps in order**: exit after hire, a CX response after its interaction,
  no interaction or EX answer after the employee's exit;
* the interactions and ``employees`` share ids at all.

Each problem names the table, its file, the column, the rows as the user sees
them in the file (``_row``: header rows counted, see :mod:`cxex_lab.contract`),
example values and the rule. Rows excluded on purpose by the contract's
policies are not errors; they are counted in the ledger (see
:data:`cxex_lab.contract.EXCLUSIONS`): CX responses that link to no
interaction, interactions and EX answers of employees not in ``employees``
(with the CX responses to those interactions), and outcomes of customers with
no interaction.

Why not pandera? The checks used to be pandera schemas on pandas. Its Ibis
backend (pandera 0.35) would run on DuckDB, but it numbers failing rows with
``row_number()`` over an unordered window instead of the source file's rows, it
does not check ``unique=`` columns at all (duplicates pass; verified), it
collects every failure case into pandas (millions of rows for one bad column of
a large log), and the cross-table rules are outside its scope. The checks are
therefore plain Ibis expressions: one aggregate pass per table counts every
rule, and only the rules that fail fetch their first example rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from cxex_lab import contract as C
from cxex_lab.ledger import Ledger
from cxex_lab.study import TABLES, Study

__all__ = [
    "DataContractError",
    "ValidationResult",
    "Checked",
    "validate",
    "check_tables",
    "SCALES",
    "REQUIRED_COLUMNS",
    "TOUCHPOINT_COLUMNS",
    "KEYS",
    "NOT_NULL",
]

# the vocabulary, re-exported where it used to live
SCALES = C.SCALES
REQUIRED_COLUMNS = C.REQUIRED_COLUMNS
TOUCHPOINT_COLUMNS = C.DEFAULT_TOUCHPOINTS
KEYS = C.KEYS
NOT_NULL = C.NOT_NULL

_PROBLEM_COLUMNS = ["table", "file", "column", "rule", "count", "examples"]
_N_EXAMPLES = 5


class DataContractError(ValueError):
    """A study breaks the data contract. ``.problems`` is a tidy DataFrame
    (table, file, column, rule, count, examples); ``str(err)`` lists every problem.

    ``count`` is the number of rows breaking the rule; 0 for a problem of the
    table or column as a whole (a missing table or column, an empty table).
    """

    def __init__(self, problems: pd.DataFrame, source: str | None = None) -> None:
        self.problems = problems.reset_index(drop=True)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"The study{where} breaks the data contract ({len(self.problems)} problem(s)):"]
        for row in self.problems.itertuples(index=False):
            col = f", column {row.column!r}" if row.column else ""
            file = f" (file {row.file})" if row.file else ""
            if row.count:
                ex = f"; e.g. {row.examples}" if row.examples else ""
                lines.append(f"  - {row.table}{file}{col}: {row.rule} ({row.count} row(s){ex})")
            else:
                ex = f"; {row.examples}" if row.examples else ""
                lines.append(f"  - {row.table}{file}{col}: {row.rule}{ex}")
        super().__init__("\n".join(lines))


@dataclass
class ValidationResult:
    """What :func:`validate` returns: the study with excluded rows removed, and the ledger."""

    study: Study
    ledger: pd.DataFrame


@dataclass
class Checked:
    """What :func:`check_tables` returns.

    Attributes
    ----------
    tables : dict of Ibis tables
        The tables with the contract's exclusions applied (still with ``_row``);
        ``None`` for an absent optional table. A derived ``employees`` table
        when the study has none.
    ledger : Ledger
        Rows excluded on purpose, by rule.
    problems : DataFrame
        Hard violations (empty when the contract holds).
    rows : dict
        Row count of each table as given.
    notes : list of str
        What was derived or assumed (e.g. employees derived from the ids).
    """

    tables: dict[str, ir.Table | None]
    ledger: Ledger
    problems: pd.DataFrame
    rows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.problems) == 0


# --------------------------------------------------------------------------- formatting


def _fmt(v: Any) -> str:
    """A value as a researcher would type it: 11 rather than 11.0, text quoted, dates as ISO."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (pd.Timestamp, datetime, date)):
        return pd.Timestamp(v).isoformat()
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _examples(rows: list[dict], count: int, value: bool = True) -> str:
    """``"row 4 (value 11), row 7 (value 11) (+3 more)"`` from fetched example rows."""
    parts = []
    for r in rows[:_N_EXAMPLES]:
        where = f"row {r['_row']}" if r.get("_row") is not None else "a row"
        if r.get("_file"):
            where = f"{r['_file']} {where}"
        parts.append(f"{where} (value {_fmt(r.get('_value'))})" if value else where)
    more = count - len(parts)
    return ", ".join(parts) + (f" (+{more} more)" if more > 0 and parts else "")


class _Problems:
    def __init__(self, files: Mapping[str, str | None]) -> None:
        self.rows: list[dict] = []
        self.files = files

    def add(self, table: str, column: str | None, rule: str, count: int, examples: str = "") -> None:
        self.rows.append({"table": table, "file": self.files.get(table) or "", "column": column or "",
                          "rule": rule, "count": int(count), "examples": examples})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=_PROBLEM_COLUMNS).astype({"count": "int64"})


# --------------------------------------------------------------------------- kinds


def _kind_ok(dtype, kind: str) -> bool | None:
    """True if the dtype holds the kind, False if not, None if it depends on the values (float -> whole)."""
    if dtype.is_null():
        return True  # every value missing: any kind
    if kind == "number":
        return (dtype.is_integer() or dtype.is_floating() or dtype.is_decimal()) and not dtype.is_boolean()
    if kind == "integer":
        if dtype.is_integer():
            return True
        return None if (dtype.is_floating() or dtype.is_decimal()) else False
    if kind == "datetime":
        return dtype.is_timestamp() or dtype.is_date()
    if kind == "boolean":
        return dtype.is_boolean()
    if kind == "id":
        return dtype.is_string() or dtype.is_integer()
    return True


def _n(v: Any) -> int:
    """A count from an engine: missing (None, or NaN through pandas on Spark) is 0."""
    if v is None:
        return 0
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(f) else int(f)


def _type_word(dtype) -> str:
    if dtype.is_string():
        return "text"
    if dtype.is_boolean():
        return "true/false"
    if dtype.is_floating() or dtype.is_decimal():
        return "decimal number"
    if dtype.is_integer():
        return "whole number"
    if dtype.is_timestamp() or dtype.is_date():
        return "date/timestamp"
    return str(dtype)


def _eq(a, b):
    """Join predicate on two id columns that may differ in type (text against whole numbers)."""
    if a.type().is_string() != b.type().is_string():
        return a.cast("string") == b.cast("string")
    return a == b


# --------------------------------------------------------------------------- one table


@dataclass
class _Table:
    name: str
    t: ir.Table
    usable: dict[str, str]  # column -> kind, present and of the right kind
    n: int


def _fetch_examples(con, t: ir.Table, bad, value=None, n: int = _N_EXAMPLES) -> list[dict]:
    cols = {"_row": t._row} if "_row" in t.columns else {}
    if "_file" in t.columns:
        cols["_file"] = t._file
    if value is not None:
        cols["_value"] = value
    if not cols:
        return []
    sel = t.filter(bad).select(**cols)
    if "_row" in cols:
        sel = sel.order_by("_row")
    return con.to_pyarrow(sel.limit(n)).to_pylist()


def _check_table(con, name: str, t: ir.Table | None, problems: _Problems) -> _Table | None:
    """Columns, kinds, values, keys of one table. Returns what the cross-table rules may use."""
    if t is None:
        if name in C.REQUIRED_TABLES:
            problems.add(name, None, "the table is missing; a study needs the tables "
                         + ", ".join(C.REQUIRED_TABLES), 0)
        return None
    present = [c for c in t.columns if c not in ("_row", "_file")]
    cols = C.contract_columns(name, present)
    schema = t.schema()
    for c, kind in cols.items():
        if c not in t.columns and c not in C.OPTIONAL_COLUMNS[name]:
            problems.add(name, c, "required column is missing", 0,
                         "columns present: " + ", ".join(present[:12]) + (" ..." if len(present) > 12 else ""))

    usable: dict[str, str] = {}
    aggs: dict[str, Any] = {"_n": t.count()}
    wrong: list[str] = []
    checks: list[tuple[str, str, Any, bool]] = []  # column, rule, bad-row predicate, show value
    for c, kind in cols.items():
        if c not in t.columns:
            continue
        dtype = schema[c]
        ok = _kind_ok(dtype, kind)
        if ok is False:
            wrong.append(c)
            aggs[f"_w_{c}"] = t[c].count()
            continue
        usable[c] = kind
        v = t[c]
        if ok is None:  # a whole-number column read as decimals: every value must be whole
            checks.append((c, f"must hold {C.KIND_WORDS[kind]}", v.notnull() & (v != v.floor()), True))
        if c in C.KEYS[name] or c in C.NOT_NULL[name]:
            checks.append((c, "missing values are not allowed here", v.isnull(), False))
        if dtype.is_null():
            continue
        scale = C.scale_of(name, c)
        if scale is not None and kind == "number":
            lo, hi = scale
            checks.append((c, f"must be between {lo} and {hi}", (v < lo) | (v > hi), True))
            if dtype.is_floating() or dtype.is_decimal():
                checks.append((c, "must be a whole-number scale point", v.notnull() & (v != v.floor()), True))
        elif c in C.MINIMUM and kind in ("number", "integer"):
            m, rule = C.MINIMUM[c]
            checks.append((c, rule, v < m, True))
    if name == "employees" and {"hire_date", "exit_date"} <= set(usable):
        hd, xd = t.hire_date, t.exit_date
        if all(schema[c].is_timestamp() or schema[c].is_date() for c in ("hire_date", "exit_date")):
            checks.append(("exit_date", "exit date is before the hire date",
                           xd.notnull() & hd.notnull() & (xd < hd), True))
    for i, (_, _, bad, _) in enumerate(checks):
        aggs[f"_c{i}"] = bad.cast("int64").sum()
    counts = con.to_pyarrow(t.aggregate(**aggs)).to_pylist()[0]
    n = _n(counts["_n"])
    if n == 0:
        problems.add(name, None, "the table is empty; every table of the contract needs at least one row", 0)
        return None
    for c in wrong:
        k = _n(counts[f"_w_{c}"])
        if k == 0:  # every value missing: usable as missing values
            usable[c] = cols[c]
            continue
        ex = _fetch_examples(con, t, t[c].notnull(), t[c].cast("string"), 3)
        problems.add(name, c, f"must hold {C.KIND_WORDS[cols[c]]}, found {_type_word(schema[c])} values", k,
                     _examples(ex, k))
    for i, (c, rule, bad, show) in enumerate(checks):
        k = _n(counts[f"_c{i}"])
        if k:
            ex = _fetch_examples(con, t, bad, t[c] if show else None)
            problems.add(name, c, rule, k, _examples(ex, k, value=show))

    keys = list(C.KEYS[name])
    if all(k in usable for k in keys):
        _check_duplicates(con, name, t, keys, problems)
    else:
        for k in keys:
            usable.pop(k, None)  # without its whole key a table cannot join its neighbours
        usable["_no_key"] = ""
    return _Table(name, t, usable, n)


def _check_duplicates(con, name: str, t: ir.Table, keys: list[str], problems: _Problems) -> None:
    nn = t.filter(ibis.and_(*[t[k].notnull() for k in keys]))
    dup = nn.group_by(keys).aggregate(_k=nn.count()).filter(lambda g: g._k > 1)
    k = _n(con.execute(dup._k.sum()))
    if k:
        d = dup.select(**{f"_d_{c}": dup[c] for c in keys})
        rows = t.semi_join(d, [t[c] == d[f"_d_{c}"] for c in keys])
        ex = _fetch_examples(con, rows, ibis.literal(True))
        problems.add(name, ", ".join(keys), f"duplicate key: each ({', '.join(keys)}) must appear once", k,
                     _examples(ex, k, value=False))


# --------------------------------------------------------------------------- across tables


def _derive_employees(tables: Mapping[str, ir.Table | None]) -> ir.Table:
    """Employees from the ids in the EX answers and the log, with no team or site."""
    parts = [tables[n].select(employee_id=tables[n].employee_id.cast("string"))
             for n in ("ex_responses", "interactions")
             if tables.get(n) is not None and "employee_id" in tables[n].columns]
    ids = parts[0].union(parts[1], distinct=True) if len(parts) == 2 else parts[0].distinct()
    ids = ids.filter(ids.employee_id.notnull())
    return ids.select(employee_id=ids.employee_id, team_id=ibis.null("string"), site_id=ibis.null("string"))


def check_tables(
    con: Any,
    tables: Mapping[str, ir.Table | None],
    files: Mapping[str, str | None] | None = None,
    step: str = "validate",
) -> Checked:
    """Check tables against the data contract in the engine ``con`` runs on.

    Parameters
    ----------
    con : Ibis backend
        The connection the tables live on (DuckDB, Spark, ...).
    tables : dict of Ibis tables
        The canonical tables by name (absent optional tables may be missing or
        None). Each should carry ``_row`` (the row number as the user sees it
        in the source file) and may carry ``_file`` (for tables read from
        several files); without ``_row`` problems give no row numbers.
    files : dict, optional
        The source file (or directory) of each table, named in problems.
    step : str
        The ledger's step name.

    Returns
    -------
    Checked
        Hard problems (not raised: the caller raises :class:`DataContractError`),
        the ledger of excluded rows, and the tables with exclusions applied.
    """
    files = dict(files or {})
    problems = _Problems(files)
    ledger = Ledger()
    notes: list[str] = []
    raw = {name: tables.get(name) for name in TABLES}
    info = {name: _check_table(con, name, raw[name], problems) for name in TABLES}
    rows = {name: i.n for name, i in info.items() if i is not None}

    emp_info, ex_info, it_info, cx_info, co_info = (info[n] for n in TABLES)
    clean: dict[str, ir.Table | None] = {n: raw[n] for n in TABLES}
    if raw["employees"] is None and (ex_info or it_info):
        clean["employees"] = _derive_employees(raw)
        notes.append("no employees table: employees derived from the ids in ex_responses and interactions "
                     "(team and site unknown)")
        emp = clean["employees"]
        emp_usable = {"employee_id": "id", "team_id": "id", "site_id": "id"}
    else:
        emp = raw["employees"]
        emp_usable = emp_info.usable if emp_info else {}
    E = "employee_id" in emp_usable

    # --- interactions: known employees, no interaction after its employee's exit
    it = raw["interactions"]
    it_ok = it_info is not None and "employee_id" in it_info.usable
    unknown_it = 0
    if it_ok and E:
        e = emp.select(_eid=emp.employee_id, _exit=_when(emp, "exit_date", emp_usable))
        j = it.left_join(e, _eq(it.employee_id, e._eid))
        unknown = j.employee_id.notnull() & j._eid.isnull()
        aggs = dict(_u=unknown.cast("int64").sum(), _nn=j.employee_id.count())
        after = None
        if _is_time(it, "started_at", it_info.usable):
            after = j._exit.notnull() & (j.started_at > j._exit)
            aggs["_a"] = after.cast("int64").sum()
        c = con.to_pyarrow(j.aggregate(**aggs)).to_pylist()[0]
        unknown_it, n_nn = _n(c["_u"]), _n(c["_nn"])
        if unknown_it and unknown_it == n_nn:
            ex = _fetch_examples(con, j, unknown, j.employee_id, 3)
            problems.add("interactions", "employee_id",
                         "no interaction's employee_id is in employees: the two tables share no ids (check that "
                         "both hold the same ids, e.g. 'E001' in both and not '1' in one)", unknown_it,
                         _examples(ex, unknown_it))
        elif unknown_it:
            ex = _fetch_examples(con, j, unknown)
            C.EXCLUSIONS["unknown_employee_interaction"].add(ledger, step, unknown_it, _row_words(ex))
            clean["interactions"] = it.semi_join(emp, _eq(it.employee_id, emp.employee_id))
        if after is not None and _n(c.get("_a")):
            k = _n(c["_a"])
            ex = _fetch_examples(con, j, after, j.started_at)
            problems.add("interactions", "started_at", "interaction started after the handling employee's exit date",
                         k, _examples(ex, k))

    # --- EX answers: known employees, not after the exit
    ex_t = raw["ex_responses"]
    if ex_info is not None and "employee_id" in ex_info.usable and E:
        e = emp.select(_eid=emp.employee_id, _exit=_when(emp, "exit_date", emp_usable))
        j = ex_t.left_join(e, _eq(ex_t.employee_id, e._eid))
        unknown = j.employee_id.notnull() & j._eid.isnull()
        aggs = dict(_u=unknown.cast("int64").sum())
        after = None
        if _is_time(ex_t, "responded_at", ex_info.usable):
            after = j._exit.notnull() & (j.responded_at > j._exit)
            aggs["_a"] = after.cast("int64").sum()
        c = con.to_pyarrow(j.aggregate(**aggs)).to_pylist()[0]
        if _n(c["_u"]):
            ex = _fetch_examples(con, j, unknown)
            C.EXCLUSIONS["unknown_employee_ex"].add(ledger, step, _n(c["_u"]), _row_words(ex))
            clean["ex_responses"] = ex_t.semi_join(emp, _eq(ex_t.employee_id, emp.employee_id))
        if after is not None and _n(c.get("_a")):
            k = _n(c["_a"])
            ex = _fetch_examples(con, j, after, j.responded_at)
            problems.add("ex_responses", "responded_at", "EX answer given after the employee's exit date", k,
                         _examples(ex, k))

    # --- CX responses: to an interaction in the log, of a known employee, after it started
    cx = raw["cx_responses"]
    if cx_info is not None and "interaction_id" in cx_info.usable and it_info is not None \
            and "interaction_id" in it_info.usable:
        sel = {"_iid": it.interaction_id, "_one": ibis.literal(1, type="int8")}
        if _is_time(it, "started_at", it_info.usable):
            sel["_started"] = it.started_at
        if unknown_it:  # _one: 1 = the interaction's employee is unknown, 2 = known
            k_emp = emp.select(_keid=emp.employee_id, _known=ibis.literal(2, type="int8"))
            it_k = it.left_join(k_emp, _eq(it.employee_id, k_emp._keid))
            fields = {"_iid": it_k.interaction_id, "_one": it_k._known.fill_null(1).cast("int8")}
            if "_started" in sel:
                fields["_started"] = it_k.started_at
            it_s = it_k.select(**fields)
        else:
            it_s = it.select(**sel)
        j = cx.left_join(it_s, _eq(cx.interaction_id, it_s._iid))
        orphan = j.interaction_id.notnull() & j._one.isnull()
        aggs = dict(_o=orphan.cast("int64").sum())
        unknown_r = None
        if unknown_it:
            unknown_r = j._one == 1
            aggs["_u"] = unknown_r.cast("int64").sum()
        before = None
        if "_started" in sel and _is_time(cx, "responded_at", cx_info.usable):
            before = j._started.notnull() & (j.responded_at < j._started)
            aggs["_b"] = before.cast("int64").sum()
        c = con.to_pyarrow(j.aggregate(**aggs)).to_pylist()[0]
        dropped = False
        if _n(c["_o"]):
            ex = _fetch_examples(con, j, orphan)
            C.EXCLUSIONS["orphan_response"].add(ledger, step, _n(c["_o"]), _row_words(ex))
            dropped = True
        if unknown_r is not None and _n(c.get("_u")):
            ex = _fetch_examples(con, j, unknown_r)
            C.EXCLUSIONS["unknown_employee_response"].add(ledger, step, _n(c["_u"]), _row_words(ex))
            dropped = True
        if dropped:
            ci = clean["interactions"]
            clean["cx_responses"] = cx.semi_join(ci, _eq(cx.interaction_id, ci.interaction_id))
        if before is not None and _n(c.get("_b")):
            k = _n(c["_b"])
            ex = _fetch_examples(con, j, before, j.responded_at)
            problems.add("cx_responses", "responded_at", "response recorded before its interaction started", k,
                         _examples(ex, k))

    # --- customer outcomes: of customers with an interaction in the (attributable) log
    co = raw["customer_outcomes"]
    if co_info is not None and "customer_id" in co_info.usable and it_info is not None \
            and "customer_id" in it_info.usable:
        ci = clean["interactions"]
        cust = ci.select(_cid=ci.customer_id).distinct()
        j = co.left_join(cust, _eq(co.customer_id, cust._cid))
        none = j.customer_id.notnull() & j._cid.isnull()
        k = _n(con.execute(none.cast("int64").sum()))
        if k:
            ex = _fetch_examples(con, j, none)
            C.EXCLUSIONS["customer_without_interaction"].add(ledger, step, k, _row_words(ex))
            clean["customer_outcomes"] = co.semi_join(cust, _eq(co.customer_id, cust._cid))

    return Checked(tables=clean, ledger=ledger, problems=problems.frame(), rows=rows, notes=notes)


def _is_time(t: ir.Table, col: str, usable: Mapping[str, str]) -> bool:
    """The column is usable and holds timestamps (not only missing values of another type)."""
    return col in usable and col in t.columns and (t[col].type().is_timestamp() or t[col].type().is_date())


def _when(t: ir.Table, col: str, usable: Mapping[str, str]):
    """A timestamp column, or a typed missing timestamp when it is absent or all missing."""
    return t[col].cast("timestamp") if _is_time(t, col, usable) else ibis.null("timestamp")


def _row_words(rows: list[dict]) -> list[str]:
    return [(f"{r['_file']} " if r.get("_file") else "") + f"row {r['_row']}" for r in rows if r.get("_row") is not None]


# --------------------------------------------------------------------------- pandas studies


def validate(study: Study) -> ValidationResult:
    """Check a study against the data contract (in an in-memory DuckDB).

    Parameters
    ----------
    study : Study
        The canonical tables (``employees`` and ``customer_outcomes`` may be None).

    Returns
    -------
    ValidationResult
        ``.study``: a copy with the rows the contract's policies exclude removed
        (and ``.ledger`` attached); ``.ledger``: the data-quality ledger (step,
        table, rule, rows_excluded, example).

    Raises
    ------
    DataContractError
        Listing every hard violation found (all tables are checked before raising).

    Examples
    --------
    >>> from cxex_lab.io import load_study
    >>> result = validate(load_study("data/sample", validate=False))  # doctest: +SKIP
    >>> result.ledger  # doctest: +SKIP
    """
    con = C.duckdb_connect()
    frames = {name: getattr(study, name, None) for name in TABLES}
    tables = {name: C.memtable(df, pos=True) if df is not None else None for name, df in frames.items()}
    files = {name: df.attrs.get("source") for name, df in frames.items() if df is not None}
    checked = check_tables(con, tables, files)
    if not checked.ok:
        raise DataContractError(checked.problems, source=study.source)
    kept = {}
    for name, df in frames.items():
        t = checked.tables[name]
        if df is None or t is tables[name]:
            kept[name] = df
            continue
        pos = np.sort(con.to_pyarrow(t.select("_pos")).column(0).to_numpy())
        kept[name] = df.iloc[pos].reset_index(drop=True)
        kept[name].attrs = dict(df.attrs)
    ledger = checked.ledger.frame
    prior = getattr(study, "ledger", None)
    if prior is not None and len(prior):
        ledger = pd.concat([prior, ledger], ignore_index=True) if len(ledger) else prior
    clean = Study(**kept, truth=study.truth, latent=study.latent, source=study.source, ledger=ledger)
    return ValidationResult(study=clean, ledger=checked.ledger.frame)
