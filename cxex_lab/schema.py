"""The data contract: validate a study and keep the data-quality ledger.

:func:`validate` checks the five canonical tables against the contract in
``DESIGN.md``:

* **required columns** and their **types** (numbers, timestamps, booleans);
* **ranges** of every survey scale (NPS/eNPS 0-10, CSAT/eSat 1-5, CES/EES 1-7,
  touchpoint items, empowerment and insight access 1-5), non-negative handle
  times, waves and periods >= 1;
* **unique keys** and no missing keys;
* **referential integrity**: interactions and EX answers of unknown employees;
* **timestamps in order**: exit after hire, a CX response after its interaction,
  no interaction or EX answer after the employee's exit.

Hard violations raise one :class:`DataContractError` that lists every problem
found (table, column, rule, count, example rows) in plain words. Soft issues are
excluded from the returned study and counted in the data-quality ledger:

* CX responses whose ``interaction_id`` is not in ``interactions`` (they cannot
  be linked to the employee who handled them);
* customer outcomes of customers with no interaction in the log.

Column, range and uniqueness checks are declared as pandera schemas (one per
table) and run lazily so that every failure is collected; the referential and
ordering rules span tables and are written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from cxex_lab.ledger import Ledger, format_examples
from cxex_lab.study import TABLES, Study

__all__ = [
    "DataContractError",
    "ValidationResult",
    "validate",
    "SCALES",
    "REQUIRED_COLUMNS",
    "TOUCHPOINT_COLUMNS",
]

TOUCHPOINT_COLUMNS: tuple[str, ...] = (
    "tp_hiring",
    "tp_training",
    "tp_post_training_support",
    "tp_daily_work",
    "tp_coaching",
    "tp_pip",
    "tp_recognition",
    "tp_promotion",
)

#: Allowed range of every survey scale (inclusive).
SCALES: dict[str, tuple[int, int]] = {
    "nps": (0, 10),
    "csat": (1, 5),
    "ces": (1, 7),
    "enps": (0, 10),
    "esat": (1, 5),
    "ees": (1, 7),
    "empowerment": (1, 5),
    "cx_insight_access": (1, 5),
    **{c: (1, 5) for c in TOUCHPOINT_COLUMNS},
}

#: Required columns of each table and the kind of value they hold.
REQUIRED_COLUMNS: dict[str, dict[str, str]] = {
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
        **{c: "number" for c in TOUCHPOINT_COLUMNS},
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
    },
    "customer_outcomes": {
        "customer_id": "id",
        "period": "integer",
        "retained": "boolean",
        "revenue": "number",
    },
}

#: Key columns (unique together, never missing).
KEYS: dict[str, tuple[str, ...]] = {
    "employees": ("employee_id",),
    "ex_responses": ("employee_id", "wave"),
    "interactions": ("interaction_id",),
    "cx_responses": ("interaction_id",),
    "customer_outcomes": ("customer_id", "period"),
}

#: Columns that may not be missing (beyond keys).
NOT_NULL: dict[str, tuple[str, ...]] = {
    "employees": ("team_id", "site_id", "hire_date"),
    "ex_responses": ("responded_at",),
    "interactions": ("employee_id", "customer_id", "started_at"),
    "cx_responses": ("responded_at",),
    "customer_outcomes": (),
}

_KIND_WORDS = {
    "number": "numbers",
    "integer": "whole numbers",
    "datetime": "dates/timestamps",
    "boolean": "true/false values",
    "id": "identifiers (text or whole numbers)",
    "text": "text",
}


class DataContractError(ValueError):
    """A study breaks the data contract. ``.problems`` is a tidy DataFrame
    (table, file, column, rule, count, examples); ``str(err)`` lists every problem."""

    def __init__(self, problems: pd.DataFrame, source: str | None = None) -> None:
        self.problems = problems.reset_index(drop=True)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"The study{where} breaks the data contract ({len(self.problems)} problem(s)):"]
        for row in self.problems.itertuples(index=False):
            col = f", column {row.column!r}" if row.column else ""
            file = f" (file {row.file})" if row.file else ""
            ex = f"; e.g. {row.examples}" if row.examples else ""
            lines.append(f"  - {row.table}{file}{col}: {row.rule} ({row.count} row(s){ex})")
        super().__init__("\n".join(lines))


@dataclass
class ValidationResult:
    """What :func:`validate` returns: the study with soft issues excluded, and the ledger."""

    study: Study
    ledger: pd.DataFrame


class _Problems:
    def __init__(self, files: dict[str, str] | None = None) -> None:
        self.rows: list[dict] = []
        self.files = files or {}

    def add(self, table: str, column: str | None, rule: str, mask_or_count, examples=()) -> None:
        if isinstance(mask_or_count, pd.Series):
            count = int(mask_or_count.sum())
            examples = [f"row {i}" for i in mask_or_count.index[mask_or_count.to_numpy()][:5]]
        else:
            count = int(mask_or_count)
        if count:
            self.rows.append(
                {"table": table, "file": self.files.get(table, ""), "column": column or "", "rule": rule, "count": count, "examples": format_examples(examples, 5)}
            )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["table", "file", "column", "rule", "count", "examples"])


def _kind_ok(series: pd.Series, kind: str) -> bool:
    if kind in ("number",):
        return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if kind == "integer":
        if pd.api.types.is_integer_dtype(series):
            return True
        if pd.api.types.is_float_dtype(series):
            v = series.dropna()
            return bool((v == v.round()).all())
        return False
    if kind == "datetime":
        return pd.api.types.is_datetime64_any_dtype(series) or series.isna().all()
    if kind == "boolean":
        return pd.api.types.is_bool_dtype(series)
    if kind == "id":
        return pd.api.types.is_string_dtype(series) or pd.api.types.is_integer_dtype(series) or series.dtype == object
    return True


def _pandera_schema(table: str, df: pd.DataFrame) -> pa.DataFrameSchema:
    """Range, missing-value and uniqueness rules of one table, as a pandera schema."""
    columns = {}
    for col, kind in REQUIRED_COLUMNS[table].items():
        if col not in df.columns or not _kind_ok(df[col], kind):
            continue  # reported as missing / wrong type already
        checks = []
        if col in SCALES:
            lo, hi = SCALES[col]
            checks.append(pa.Check.in_range(lo, hi, error=f"must be between {lo} and {hi}"))
            checks.append(pa.Check(lambda s: (s.dropna() == s.dropna().round()), element_wise=False, error="must be a whole-number scale point"))
        elif col in ("wave", "period"):
            checks.append(pa.Check.ge(1, error="must be 1 or more"))
        elif col == "handle_seconds":
            checks.append(pa.Check.ge(0, error="must not be negative"))
        nullable = col not in KEYS[table] and col not in NOT_NULL[table]
        columns[col] = pa.Column(checks=checks, nullable=nullable, required=False)
    unique = [k for k in KEYS[table] if k in df.columns]
    return pa.DataFrameSchema(columns, unique=unique or None, name=table, report_duplicates="all")


def _pandera_problems(table: str, df: pd.DataFrame, problems: _Problems) -> None:
    schema = _pandera_schema(table, df)
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        for (column, check), grp in fc.groupby([fc["column"].fillna(""), fc["check"].astype(str)], sort=False):
            idx = grp["index"].dropna().tolist()
            vals = grp["failure_case"].tolist()
            if check == "not_nullable":
                rule = "missing values are not allowed here"
                ex = [f"row {i}" for i in idx]
            elif "unique" in check or "duplicates" in check.lower():
                keys = ", ".join(KEYS[table])
                rule = f"duplicate key: each ({keys}) must appear once"
                n_rows = len(set(idx)) if idx else len(grp)
                examples = [f"row {i}" for i in sorted(set(idx))]
                problems.add(table, ", ".join(KEYS[table]), rule, n_rows, examples)
                continue
            else:
                rule = check
                ex = [f"row {i} (value {v})" for i, v in zip(idx, vals)]
            problems.add(table, column, rule, len(grp), ex)


def _check_table(table: str, df: pd.DataFrame, problems: _Problems) -> bool:
    """Columns, types, ranges, keys of one table. Returns True if usable for cross-table rules."""
    if len(df) == 0:
        problems.add(table, None, "the table is empty; every table of the contract needs at least one row", 1, ["0 rows"])
        return False
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in df.columns]
    for c in missing:
        problems.add(table, c, "required column is missing", len(df), [f"columns present: {list(df.columns)[:8]}"])
    ok = not any(c in KEYS[table] for c in missing)
    for col, kind in REQUIRED_COLUMNS[table].items():
        if col in df.columns and not _kind_ok(df[col], kind):
            bad = df[col].dropna().head(3).tolist()
            problems.add(table, col, f"must hold {_KIND_WORDS[kind]}, found {df[col].dtype} values", len(df), [repr(v) for v in bad])
            if col in KEYS[table]:
                ok = False
    _pandera_problems(table, df, problems)
    return ok


def validate(study: Study) -> ValidationResult:
    """Check a study against the data contract.

    Parameters
    ----------
    study : Study
        The five canonical tables.

    Returns
    -------
    ValidationResult
        ``.study``: a copy with soft issues excluded (and ``.ledger`` attached);
        ``.ledger``: the data-quality ledger (step, table, rule, rows_excluded, example).

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
    tables = study.tables()
    problems = _Problems({name: df.attrs["source"] for name, df in tables.items() if df.attrs.get("source")})
    usable = {name: _check_table(name, df, problems) for name, df in tables.items()}
    emp, exr, inter, cxr, out = (tables[t] for t in TABLES)

    if usable["employees"]:
        known = set(emp["employee_id"].dropna())
        if usable["interactions"]:
            problems.add("interactions", "employee_id", "handled by an employee who is not in the employees table",
                         inter["employee_id"].notna() & ~inter["employee_id"].isin(known))
        if usable["ex_responses"]:
            problems.add("ex_responses", "employee_id", "answer from an employee who is not in the employees table",
                         exr["employee_id"].notna() & ~exr["employee_id"].isin(known))
        if {"hire_date", "exit_date"} <= set(emp.columns) and all(
            pd.api.types.is_datetime64_any_dtype(emp[c]) for c in ("hire_date", "exit_date")
        ):
            problems.add("employees", "exit_date", "exit date is before the hire date",
                         emp["exit_date"].notna() & (emp["exit_date"] < emp["hire_date"]))
            exits = emp.dropna(subset=["exit_date"]).drop_duplicates("employee_id").set_index("employee_id")["exit_date"]
            for tname, df, tcol, what in (
                ("interactions", inter, "started_at", "interaction started after the handling employee's exit date"),
                ("ex_responses", exr, "responded_at", "EX answer given after the employee's exit date"),
            ):
                if usable[tname] and tcol in df.columns and pd.api.types.is_datetime64_any_dtype(df[tcol]):
                    ex_date = df["employee_id"].map(exits)
                    problems.add(tname, tcol, what, ex_date.notna() & (df[tcol] > ex_date))

    ledger = Ledger()
    cx_keep = pd.Series(True, index=cxr.index)
    out_keep = pd.Series(True, index=out.index)
    if usable["interactions"] and usable["cx_responses"]:
        orphan = ~cxr["interaction_id"].isin(set(inter["interaction_id"]))
        ledger.add("validate", "cx_responses", "response links to no interaction in the interaction log (cannot be attributed to an employee)",
                   int(orphan.sum()), [f"row {i}" for i in cxr.index[orphan.to_numpy()][:5]])
        cx_keep &= ~orphan
        if all(pd.api.types.is_datetime64_any_dtype(c) for c in (cxr.get("responded_at"), inter.get("started_at")) if c is not None):
            started = cxr["interaction_id"].map(inter.drop_duplicates("interaction_id").set_index("interaction_id")["started_at"])
            problems.add("cx_responses", "responded_at", "response recorded before its interaction started",
                         started.notna() & (cxr["responded_at"] < started))
    if usable["interactions"] and usable["customer_outcomes"]:
        no_contact = ~out["customer_id"].isin(set(inter["customer_id"]))
        ledger.add("validate", "customer_outcomes", "customer has no interaction in the log (outcome cannot be linked to any employee)",
                   int(no_contact.sum()), [f"row {i}" for i in out.index[no_contact.to_numpy()][:5]])
        out_keep &= ~no_contact

    found = problems.frame()
    if len(found):
        raise DataContractError(found, source=study.source)

    clean = Study(
        employees=emp,
        ex_responses=exr,
        interactions=inter,
        cx_responses=cxr.loc[cx_keep].reset_index(drop=True),
        customer_outcomes=out.loc[out_keep].reset_index(drop=True),
        truth=study.truth,
        latent=study.latent,
        source=study.source,
        ledger=ledger.frame,
    )
    return ValidationResult(study=clean, ledger=ledger.frame)
