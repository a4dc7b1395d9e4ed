"""The data contract: vocabulary and domain rules, each written once as an Ibis expression.

This module is the ground floor of cxex-lab. It names the tables, columns,
scales and keys of a study (the vocabulary), and it writes **once** the rules
every other part applies:

========================= ===================================================
rule                      function
========================= ===================================================
wave openings             :func:`wave_openings` (a wave opens on the calendar
                          day of its first EX answer)
period of a timestamp     :func:`wave_period`, :func:`calendar_period`,
                          :func:`period_of`; the EX wave a period links to:
                          :func:`ex_wave_of`; the wave before a wave:
                          :func:`previous_wave`
survey windows            :func:`survey_windows` (the window design)
employment                :func:`employed_at` (who could answer a wave)
attribution               :func:`attribute` (an interaction, a response or an
                          EX answer to its employee, team and site)
segments                  :func:`segment_sites`, :func:`check_segment`,
                          :func:`segment_tables`
exclusion policies        :data:`EXCLUSIONS` (what is excluded, in which
                          words the ledger says so)
========================= ===================================================

The rules are Ibis expressions: they run unchanged on DuckDB (in-process, out of
core) and on Spark. A pandas user who needs a rule on an in-memory table runs
the same expression on an in-memory DuckDB connection (:func:`on_frames`,
:func:`assign_wave_period`); the rules are never written again in pandas.

Policies
--------
*Unknown employee.* An interaction (or EX answer) whose ``employee_id`` is not
in ``employees`` is **excluded and counted** in the data-quality ledger (with
the CX responses to it), not a contract error. Real HR extracts lag the
contact-centre log (leavers purged, contractors, agents hired after the
extract), and one missing agent should not stop a study; the ledger makes the
loss visible. Only when *no* interaction's employee is known (the two tables do
not share ids, e.g. ``"E001"`` against ``"1"``) is it a contract error: then
nothing could be linked and the cause is a mapping mistake, not missing rows.
Validation, linkage, the mirror metrics and response rates all apply this one
policy (:data:`EXCLUSIONS` ``"unknown_employee_*"``).

*Orphan response.* A CX response whose ``interaction_id`` is not in
``interactions`` is excluded and counted.

*Customer outcomes* of customers with no interaction in the log are excluded
and counted.

Row numbers
-----------
Tables carry a ``_row`` column: the row number as the user sees it in the
source file, header rows counted (line 2 is the first record of a CSV file with
one header line). Parquet files have no header line; their records are
numbered as if the file were exported to CSV with one header line (the first
record is row 2), so the same record has the same number whether the study is
read by the engine or loaded into pandas first. An in-memory DataFrame's row is
its index + 2 (:func:`row_numbers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "TABLES",
    "REQUIRED_TABLES",
    "OPTIONAL_TABLES",
    "DEFAULT_TOUCHPOINTS",
    "TOUCHPOINT_SCALE",
    "SCALES",
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "KEYS",
    "NOT_NULL",
    "MINIMUM",
    "ID_COLUMNS",
    "KIND_WORDS",
    "LEVELS",
    "PERIODS",
    "CALENDAR_PERIODS",
    "EXCLUSIONS",
    "Exclusion",
    "no_unit_exclusions",
    "no_period_exclusions",
    "no_ex_wave_exclusions",
    "no_group_exclusion",
    "scale_of",
    "is_touchpoint",
    "contract_columns",
    "row_numbers",
    "wave_openings",
    "openings_frame",
    "wave_period",
    "calendar_period",
    "period_of",
    "ex_wave_of",
    "previous_wave",
    "survey_windows",
    "employed_at",
    "attribute",
    "segment_sites",
    "check_segment",
    "segment_tables",
    "canonical",
    "duckdb_connect",
    "on_frames",
    "memtable",
    "assign_wave_period",
]

# --------------------------------------------------------------------------- vocabulary

#: The canonical tables of a study, in their natural order.
TABLES: tuple[str, ...] = ("employees", "ex_responses", "interactions", "cx_responses", "customer_outcomes")
#: Tables a study must have: EX answers, the contact log and the CX answers to it.
REQUIRED_TABLES: tuple[str, ...] = ("ex_responses", "interactions", "cx_responses")
#: Tables a study may lack: ``employees`` (then derived from the ids in the EX
#: answers and the log, with no team or site) and ``customer_outcomes`` (then
#: no loyalty analysis).
OPTIONAL_TABLES: tuple[str, ...] = ("employees", "customer_outcomes")

#: The eight touchpoints of the employee journey asked by default (``tp_*`` items, 1-5).
#: A study may ask other ones: every ``tp_*`` column of ``ex_responses`` is a touchpoint item.
DEFAULT_TOUCHPOINTS: tuple[str, ...] = (
    "tp_hiring",
    "tp_training",
    "tp_post_training_support",
    "tp_daily_work",
    "tp_coaching",
    "tp_pip",
    "tp_recognition",
    "tp_promotion",
)
#: Scale of every touchpoint item.
TOUCHPOINT_SCALE: tuple[int, int] = (1, 5)

#: Allowed range of every survey scale (inclusive); answers are whole scale points.
SCALES: dict[str, tuple[int, int]] = {
    "nps": (0, 10),
    "csat": (1, 5),
    "ces": (1, 7),
    "enps": (0, 10),
    "esat": (1, 5),
    "ees": (1, 7),
    "empowerment": (1, 5),
    "cx_insight_access": (1, 5),
    **{c: TOUCHPOINT_SCALE for c in DEFAULT_TOUCHPOINTS},
}

#: Columns of each table and the kind of value they hold (required and optional).
COLUMNS: dict[str, dict[str, str]] = {
    "employees": {
        "employee_id": "id",
        "team_id": "id",
        "site_id": "id",
        "role": "text",
        "hire_date": "datetime",
        "exit_date": "datetime",
    },
    "ex_responses": {
        "employee_id": "id",
        "wave": "integer",
        "responded_at": "datetime",
        "enps": "number",
        "esat": "number",
        "ees": "number",
        **{c: "number" for c in DEFAULT_TOUCHPOINTS},
        "empowerment": "number",
        "cx_insight_access": "number",
    },
    "interactions": {
        "interaction_id": "id",
        "employee_id": "id",
        "customer_id": "id",
        "started_at": "datetime",
        "channel": "text",
        "handle_seconds": "number",
        "resolved_first_contact": "boolean",
        "transferred": "boolean",
    },
    "cx_responses": {
        "interaction_id": "id",
        "responded_at": "datetime",
        "nps": "number",
        "csat": "number",
        "ces": "number",
        "comment": "text",
    },
    "customer_outcomes": {
        "customer_id": "id",
        "period": "integer",
        "retained": "boolean",
        "revenue": "number",
    },
}

#: Columns a table may lack (a study without channels, without touchpoint items, ...).
#: Missing optional columns are added as typed missing values by :func:`canonical`.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "employees": ("role", "hire_date", "exit_date"),
    "ex_responses": (*DEFAULT_TOUCHPOINTS, "empowerment", "cx_insight_access"),
    "interactions": ("channel", "handle_seconds", "resolved_first_contact", "transferred"),
    "cx_responses": ("responded_at", "comment"),
    "customer_outcomes": (),
}

#: Required columns of each table (the contract's columns that are not optional).
REQUIRED_COLUMNS: dict[str, dict[str, str]] = {
    t: {c: k for c, k in cols.items() if c not in OPTIONAL_COLUMNS[t]} for t, cols in COLUMNS.items()
}

#: Key columns (unique together, never missing).
KEYS: dict[str, tuple[str, ...]] = {
    "employees": ("employee_id",),
    "ex_responses": ("employee_id", "wave"),
    "interactions": ("interaction_id",),
    "cx_responses": ("interaction_id",),
    "customer_outcomes": ("customer_id", "period"),
}

#: Columns that may not be missing (beyond keys), where present.
NOT_NULL: dict[str, tuple[str, ...]] = {
    "employees": ("team_id", "site_id", "hire_date"),
    "ex_responses": ("responded_at",),
    "interactions": ("employee_id", "customer_id", "started_at"),
    "cx_responses": ("responded_at",),
    "customer_outcomes": (),
}

#: Lower bounds of non-scale numbers: (minimum, rule in words).
MINIMUM: dict[str, tuple[int, str]] = {
    "wave": (1, "must be 1 or more"),
    "period": (1, "must be 1 or more"),
    "handle_seconds": (0, "must not be negative"),
}

#: Columns that identify a person, a unit or an event.
ID_COLUMNS: tuple[str, ...] = ("employee_id", "team_id", "site_id", "interaction_id", "customer_id")

#: How a kind is named in messages.
KIND_WORDS: dict[str, str] = {
    "number": "numbers",
    "integer": "whole numbers",
    "datetime": "dates/timestamps",
    "boolean": "true/false values",
    "id": "identifiers (text or whole numbers)",
    "text": "text",
}

#: Aggregation levels and the id columns that key them (unit id first).
LEVELS: dict[str, tuple[str, ...]] = {
    "employee": ("employee_id", "team_id", "site_id"),
    "team": ("team_id", "site_id"),
    "site": ("site_id",),
}
#: Calendar periods and their truncation unit.
CALENDAR_PERIODS: dict[str, str] = {"week": "W", "month": "M", "quarter": "Q"}
#: Every period choice.
PERIODS: tuple[str, ...] = ("week", "month", "quarter", "wave", "window")


def is_touchpoint(column: str) -> bool:
    """True for a touchpoint item column (``tp_*``)."""
    return column.startswith("tp_")


def scale_of(table: str, column: str) -> tuple[int, int] | None:
    """The scale (lowest, highest answer) of a survey column, or None if it is not a scale."""
    if table == "ex_responses" and is_touchpoint(column):
        return TOUCHPOINT_SCALE
    if table in ("ex_responses", "cx_responses"):
        return SCALES.get(column)
    return None


def contract_columns(table: str, present: Iterable[str] = ()) -> dict[str, str]:
    """The contract's columns of ``table`` with their kinds, plus the ``tp_*`` items present."""
    cols = dict(COLUMNS[table])
    if table == "ex_responses":
        for c in present:
            if is_touchpoint(c) and c not in cols:
                cols[c] = "number"
    return cols


def row_numbers(df: pd.DataFrame) -> np.ndarray:
    """Row numbers of an in-memory table as a user sees them: a ``_row`` column, else index + 2.

    Index + 2 is the line of a CSV file with one header line (line 1) whose
    first record is the DataFrame's row 0. A non-integer index falls back to
    the position + 2.
    """
    if "_row" in df.columns:
        return df["_row"].to_numpy(dtype="int64")
    if pd.api.types.is_integer_dtype(df.index) and not df.index.hasnans:
        return df.index.to_numpy(dtype="int64") + 2
    return np.arange(len(df), dtype="int64") + 2


# --------------------------------------------------------------------------- exclusions


@dataclass(frozen=True)
class Exclusion:
    """One exclusion policy: which table's rows it excludes, and the ledger's words for it."""

    table: str
    rule: str

    def add(self, ledger: Any, step: str, rows: int, examples: Iterable = ()) -> None:
        """Record ``rows`` excluded rows in ``ledger`` (a :class:`cxex_lab.ledger.Ledger`)."""
        ledger.add(step, self.table, self.rule, rows, examples)


#: Every exclusion policy of the contract, in the words the ledger uses.
EXCLUSIONS: dict[str, Exclusion] = {
    "orphan_response": Exclusion(
        "cx_responses", "response's interaction_id is not in interactions (cannot be attributed to an employee): "
                        "excluded"),
    "unknown_employee_interaction": Exclusion(
        "interactions", "interaction's employee_id is not in employees (cannot be attributed to an employee, team "
                        "or site): excluded"),
    "unknown_employee_response": Exclusion(
        "cx_responses", "response to an interaction whose employee_id is not in employees (the employee cannot be "
                        "placed): excluded"),
    "unknown_employee_ex": Exclusion(
        "ex_responses", "EX response from an employee not in employees (cannot be attributed to a team or site): "
                        "excluded"),
    "customer_without_interaction": Exclusion(
        "customer_outcomes", "customer has no interaction in the log (outcome cannot be linked to any employee): "
                             "excluded"),
    "unattributed_outcome": Exclusion(
        "customer_outcomes", "customer-period with no interaction in that wave period: not attributable to a unit"),
}


def no_unit_exclusions(level: str) -> tuple[Exclusion, Exclusion]:
    """Interactions (and responses) whose employee has no id at ``level`` (e.g. no team_id)."""
    word = LEVELS[level][0]
    return (Exclusion("interactions", f"interaction's employee has no {word} in employees: not linked"),
            Exclusion("cx_responses", f"response to an interaction whose employee has no {word}: the employee "
                                      f"cannot be placed at {level} level, not linked"))


def no_period_exclusions(period: str) -> tuple[Exclusion, Exclusion]:
    """Interactions (and responses) that fall in no period."""
    rule = {"wave": "interaction started before the first EX wave opened (or has no start time): no wave period",
            "window": "interaction falls in no EX window (no EX answer from its unit window_days before it, or no "
                      "start time)"}.get(period, "interaction has no start time: no period")
    return (Exclusion("interactions", rule),
            Exclusion("cx_responses", "response to an interaction that " + rule.removeprefix("interaction ")))


def no_ex_wave_exclusions(level: str, period: str, ex_lag: int) -> tuple[Exclusion, Exclusion, Exclusion]:
    """Unit-periods with no EX wave ``ex_lag`` waves before them (with their interactions and responses)."""
    rule = f"no EX wave opened {ex_lag} wave(s) before the period (ex_lag={ex_lag}): no EX to link, excluded"
    return (Exclusion(f"{level}-{period} panel", f"{level}-period with {rule}"),
            Exclusion("interactions", f"interaction in a {level}-period with {rule}"),
            Exclusion("cx_responses", f"response in a {level}-period with {rule}"))


def no_group_exclusion(table: str, by: str) -> Exclusion:
    """Rows whose employee has no ``by`` (team or site id)."""
    return Exclusion(table, f"employee has no {by} (cannot be attributed to a group): excluded")


# --------------------------------------------------------------------------- periods


def _ts(value: Any) -> ir.TimestampScalar:
    return ibis.literal(pd.Timestamp(value).to_pydatetime(), type="timestamp")


def _cases(pairs: list[tuple[Any, Any]], type_: str):
    expr = ibis.cases(*pairs, else_=None) if pairs else ibis.null()
    return expr.cast(type_)


def wave_openings(ex: ir.Table) -> ir.Table:
    """The rule: a wave opens on the calendar day of its first EX answer.

    ``min(responded_at)`` of the wave truncated to the day, so interactions on the
    opening morning before the first answer already belong to the new wave.
    Answers without a wave or a date are ignored. Returns an Ibis table
    ``wave (int64), opened (timestamp)``.
    """
    e = ex.filter(ex.wave.notnull() & ex.responded_at.notnull())
    g = e.group_by(e.wave.cast("int64").name("wave")).aggregate(opened=e.responded_at.min())
    return g.select(wave=g.wave, opened=g.opened.truncate("D").cast("timestamp"))


def openings_frame(con: Any, ex: ir.Table) -> pd.DataFrame:
    """Execute :func:`wave_openings`: a tiny ``wave, opened`` DataFrame in opening order.

    Ties (two waves opening on the same day) are ordered by wave number.
    """
    w = con.to_pyarrow(wave_openings(ex)).to_pandas()
    w["wave"] = w["wave"].astype("int64")
    opened = pd.to_datetime(w["opened"])
    if getattr(opened.dt, "tz", None) is not None:
        opened = opened.dt.tz_convert("UTC").dt.tz_localize(None)
    w["opened"] = opened.astype("datetime64[us]")
    return w.sort_values(["opened", "wave"], kind="stable").reset_index(drop=True)


def _in_order(openings: pd.DataFrame) -> pd.DataFrame:
    """Openings in opening order (ties by wave), whatever order they were given in."""
    o = openings.assign(opened=pd.to_datetime(openings["opened"]))
    return o.sort_values(["opened", "wave"], kind="stable").reset_index(drop=True)


def wave_period(ts: ir.TimestampValue, openings: pd.DataFrame) -> ir.IntegerValue:
    """The rule: the wave period of a timestamp.

    Wave period *w* holds the times from wave *w*'s opening up to the next
    wave's opening (the last is open ended): the latest wave opened at or
    before ``ts``. Missing before the first opening and for a missing ``ts``.
    """
    openings = _in_order(openings)
    pairs = [(ts >= _ts(o), int(w)) for w, o in zip(openings["wave"][::-1], openings["opened"][::-1])]
    return _cases(pairs, "int64")


def calendar_period(ts: ir.TimestampValue, period: str) -> ir.TimestampValue:
    """The rule: the calendar period of a timestamp (Monday of its ISO week, first of its month / quarter)."""
    return ts.truncate(CALENDAR_PERIODS[period])


def period_of(ts: ir.TimestampValue, period: str, openings: pd.DataFrame):
    """Period key of a timestamp: the truncated timestamp (calendar periods) or the wave number."""
    if period in CALENDAR_PERIODS:
        return calendar_period(ts, period)
    if period == "wave":
        return wave_period(ts, openings)
    raise ValueError(f"period_of: {period!r} has no per-timestamp key (window periods come from survey_windows)")


def ex_wave_of(pkey, period: str, ex_lag: int, openings: pd.DataFrame) -> ir.IntegerValue:
    """The rule: the EX wave linked to a period.

    For a period starting at *t*, let *w0* be the most recent wave opened at or
    before *t*; ``ex_lag=0`` links wave *w0*, ``ex_lag=1`` the wave before it,
    and so on, in opening order. For wave periods, period *w* links wave
    *w - ex_lag*; for windows the window's own wave. Missing where no wave is
    that far back.
    """
    openings = _in_order(openings)
    wl, ol = list(openings["wave"]), list(openings["opened"])
    if period == "window":
        return pkey.cast("int64")
    if period == "wave":
        pairs = [(pkey == int(w), int(wl[i - ex_lag])) for i, w in enumerate(wl) if i - ex_lag >= 0]
        return _cases(pairs, "int64")
    pairs = [(pkey >= _ts(ol[i]), ibis.literal(int(wl[i - ex_lag]) if i - ex_lag >= 0 else None, type="int64"))
             for i in range(len(wl) - 1, -1, -1)]
    return _cases(pairs, "int64")


def previous_wave(wave, openings: pd.DataFrame, k: int = 1) -> ir.IntegerValue:
    """The wave opened ``k`` waves before ``wave`` (in opening order); missing for the first ones."""
    wl = list(_in_order(openings)["wave"])
    pairs = [(wave == int(w), int(wl[i - k])) for i, w in enumerate(wl) if i - k >= 0]
    return _cases(pairs, "int64")


def survey_windows(ex: ir.Table, openings: pd.DataFrame, level: str, d0: float, d1: float
                   ) -> tuple[ir.Table, Callable[[ir.Table], Any]]:
    """The window design: the windows and how a table of interactions joins them.

    Employee level: each EX answer opens its own window (``responded_at`` +
    ``[d0, d1)`` days); team / site level: each wave's opening day does. Returns
    the window table (``_p`` = wave) and a function giving the join predicate
    for a table with ``employee_id`` and ``started_at``.
    """
    if level == "employee":
        win = ex.select(_weid=ex.employee_id, _p=ex.wave.cast("int64"),
                        _ws=ex.responded_at + ibis.interval(seconds=int(d0 * 86400)),
                        _we=ex.responded_at + ibis.interval(seconds=int(d1 * 86400)))
        return win, lambda x: (x.employee_id == win._weid) & (x.started_at >= win._ws) & (x.started_at < win._we)
    win = ibis.memtable(pd.DataFrame({
        "_p": openings["wave"].astype("int64"),
        "_ws": (openings["opened"] + pd.to_timedelta(d0, unit="D")).astype("datetime64[us]"),
        "_we": (openings["opened"] + pd.to_timedelta(d1, unit="D")).astype("datetime64[us]"),
    }))
    return win, lambda x: (x.started_at >= win._ws) & (x.started_at < win._we)


def employed_at(employees: ir.Table, when: Any) -> ir.BooleanValue:
    """The rule: an employee is employed at ``when`` if hired on or before it and not exited by then.

    A missing hire date counts as hired; a missing exit date as still employed.
    """
    t = _ts(when) if not isinstance(when, ir.Expr) else when
    hired = employees.hire_date.isnull() | (employees.hire_date <= t)
    stays = employees.exit_date.isnull() | (employees.exit_date > t)
    return hired & stays


# --------------------------------------------------------------------------- attribution


def attribute(table: ir.Table, employees: ir.Table, level: str = "employee", how: str = "left",
              keys: Sequence[str] | None = None) -> ir.Table:
    """The rule: attribute rows carrying ``employee_id`` to the employee's team and site.

    Adds the unit ids of ``level`` (``team_id`` / ``site_id`` from ``employees``)
    and ``_known`` (1 when the employee is in ``employees``, missing otherwise).
    ``how="inner"`` keeps attributable rows only. A CX response is attributed
    through the interaction it rates (join ``interactions`` first). ``keys``
    overrides which unit columns are added.
    """
    cols = [k for k in (keys if keys is not None else LEVELS[level]) if k != "employee_id"]
    e = employees.select(_aeid=employees.employee_id, _known=ibis.literal(1, type="int8"),
                         **{k: employees[k] for k in cols})
    j = table.join(e, table.employee_id == e._aeid, how=how)
    return j.drop("_aeid")


# --------------------------------------------------------------------------- segments


def segment_sites(segment: Any) -> list[str] | None:
    """Normalise a segment: None / ``"all"`` -> None (everything), a site id or a list -> list of site ids."""
    if segment is None or (isinstance(segment, str) and segment == "all"):
        return None
    if isinstance(segment, str):
        return [segment]
    if isinstance(segment, (list, tuple)) and all(isinstance(s, str) for s in segment):
        return [str(s) for s in segment]
    raise ValueError(f"segment must be a site id, a list of site ids or 'all', got {segment!r}")


def check_segment(sites: Sequence[str] | None, valid: Iterable[Any]) -> None:
    """Raise ValueError naming the unknown site ids and the valid ones."""
    if not sites:
        return
    valid_ids = sorted(str(s) for s in valid if s is not None and not (isinstance(s, float) and np.isnan(s)))
    unknown = [s for s in sites if s not in valid_ids]
    if unknown:
        raise ValueError(f"unknown segment(s) {unknown}; valid site ids are {valid_ids} (or 'all')")


def segment_tables(tables: Mapping[str, ir.Table | None], sites: Sequence[str] | None) -> dict[str, ir.Table | None]:
    """The rule: the part of a study that belongs to some sites.

    The employees of the sites, their EX answers and the interactions they
    handled, the CX responses to those interactions and the outcomes of the
    customers they served. ``sites=None`` returns the tables unchanged.
    """
    out = dict(tables)
    if not sites:
        return out
    emp = tables["employees"]
    emp = emp.filter(emp.site_id.cast("string").isin(list(sites)))
    out["employees"] = emp
    ex = tables["ex_responses"]
    out["ex_responses"] = ex.semi_join(emp, ex.employee_id == emp.employee_id)
    it = tables["interactions"]
    it = it.semi_join(emp, it.employee_id == emp.employee_id)
    out["interactions"] = it
    cx = tables["cx_responses"]
    out["cx_responses"] = cx.semi_join(it, cx.interaction_id == it.interaction_id)
    co = tables.get("customer_outcomes")
    if co is not None:
        out["customer_outcomes"] = co.semi_join(it, co.customer_id == it.customer_id)
    return out


# --------------------------------------------------------------------------- canonical form


def _null_of(kind: str):
    return ibis.null({"id": "string", "text": "string", "datetime": "timestamp", "boolean": "boolean",
                      "integer": "int64", "number": "float64"}[kind])


def canonical(t: ir.Table, table: str, keep: Iterable[str] = ()) -> ir.Table:
    """A validated table in the contract's form: its columns in order, kinds cast, optional ones filled.

    Timestamps become microsecond timestamps without time zone (nanosecond
    inputs are truncated to microseconds), whole-number columns int64,
    booleans boolean; ids keep their type (text or whole numbers). Absent
    optional columns are added as typed missing values, so every later step may
    rely on them (absent required ones stay absent). Columns outside the contract are dropped, except ``tp_*``
    items of ``ex_responses`` and the names in ``keep``.
    """
    cols = contract_columns(table, t.columns)
    out = {}
    for c, kind in cols.items():
        if c not in t.columns:
            if c in OPTIONAL_COLUMNS[table]:
                out[c] = _null_of(kind)
            continue  # a missing required column stays missing: the caller names it
        v = t[c]
        dtype = v.type()
        if dtype.is_null():
            out[c] = _null_of(kind)
        elif kind == "datetime":
            # a zoned timestamp becomes its wall time in the session's zone (UTC on cxex-lab's connections)
            out[c] = v.cast("timestamp")
        elif kind == "integer":
            out[c] = v.cast("int64")
        elif kind == "boolean":
            out[c] = v.cast("boolean")
        elif kind == "id" and not (dtype.is_string() or dtype.is_integer()):
            out[c] = v.cast("string")
        else:
            out[c] = v
    for c in keep:
        if c in t.columns and c not in out:
            out[c] = t[c]
    return t.select(**out)


# --------------------------------------------------------------------------- pandas users


def memtable(df: pd.DataFrame, pos: bool = False) -> ir.Table:
    """An in-memory table as an Ibis memtable with ``_row`` (index + 2, or its own ``_row``).

    Columns pyarrow cannot convert as they are (mixed types in one object
    column) are passed as text, so the kind check reports them instead of a
    conversion traceback. Nanosecond timestamps become microseconds. ``pos=True``
    adds ``_pos`` (the position, 0-based) so a selection can be applied back to
    the DataFrame with ``iloc``.
    """
    arrays, names = [], []
    for c in df.columns:
        if c == "_row":
            continue
        s = df[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype(s.cat.categories.dtype)
        try:
            arr = pa.Array.from_pandas(s)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            arr = pa.array([None if pd.isna(v) else str(v) for v in s], type=pa.string())
        if pa.types.is_timestamp(arr.type) and arr.type.unit == "ns":
            arr = arr.cast(pa.timestamp("us", arr.type.tz), safe=False)
        arrays.append(arr)
        names.append(str(c))
    arrays.append(pa.array(row_numbers(df)))
    names.append("_row")
    if pos:
        arrays.append(pa.array(np.arange(len(df), dtype="int64")))
        names.append("_pos")
    return ibis.memtable(pa.Table.from_arrays(arrays, names=names))


def duckdb_connect(path: str | None = None, read_only: bool = False, memory_limit: str | None = None,
                   temp_directory: str | None = None, threads: int | None = None):
    """An Ibis DuckDB connection set up the way cxex-lab uses it.

    No progress bar (it would print into logs and reports), time zone UTC (a
    zoned timestamp is read as its UTC wall time), and optionally a memory
    limit and a spill directory for out-of-core work.
    """
    kwargs = {"read_only": True} if read_only else {}
    con = ibis.duckdb.connect(path or ":memory:", **kwargs)
    settings = {"enable_progress_bar": "false", "TimeZone": "'UTC'"}
    if memory_limit:
        settings["memory_limit"] = f"'{memory_limit}'"
    if temp_directory:
        settings["temp_directory"] = f"'{temp_directory}'"
    if threads:
        settings["threads"] = str(int(threads))
    for name, value in settings.items():
        try:
            con.raw_sql(f"SET {name} = {value}")
        except Exception:  # noqa: BLE001 - Jupyter without ipywidgets refuses the progress-bar setting
            if name not in ("enable_progress_bar", "TimeZone"):
                raise
    return con


def _duckdb():
    return duckdb_connect()


def on_frames(build: Callable[..., ir.Expr], **frames: pd.DataFrame) -> pd.DataFrame:
    """Run a contract rule on in-memory DataFrames (an in-memory DuckDB connection).

    ``build`` receives one Ibis table per keyword (same names) and returns an
    Ibis expression; the result comes back as a DataFrame. This is how a pandas
    user applies a rule without writing it again in pandas.

    Examples
    --------
    >>> ex = pd.DataFrame({"wave": [1, 1, 2], "responded_at": pd.to_datetime(["2025-01-06 14:00",
    ...                    "2025-01-07", "2025-04-07 09:30"])})
    >>> on_frames(wave_openings, ex=ex).sort_values("wave")["opened"].dt.strftime("%Y-%m-%d").tolist()
    ['2025-01-06', '2025-04-07']
    """
    con = _duckdb()
    tables = {k: ibis.memtable(v) for k, v in frames.items()}
    return con.to_pyarrow(build(**tables)).to_pandas()


def assign_wave_period(ts: pd.Series, openings: pd.DataFrame | pd.Series) -> pd.Series:
    """The wave period of each timestamp of a pandas Series (:func:`wave_period`, run in DuckDB).

    ``openings``: a ``wave, opened`` DataFrame or a Series of opening days indexed
    by wave (:meth:`cxex_lab.study.Study.wave_openings`). Returns a nullable
    Int64 Series aligned with ``ts``; missing before the first opening.
    """
    if isinstance(openings, pd.Series):
        openings = pd.DataFrame({"wave": openings.index.astype("int64"), "opened": pd.to_datetime(openings.values)})
    frame = pd.DataFrame({"_pos": np.arange(len(ts), dtype="int64"),
                          "ts": pd.to_datetime(ts).to_numpy().astype("datetime64[us]")})
    res = on_frames(lambda f: f.select(f._pos, w=wave_period(f.ts, openings)).order_by("_pos"), f=frame)
    return pd.Series(res["w"].to_numpy(), index=ts.index, name="wave").astype("Int64")
