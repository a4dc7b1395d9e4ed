"""The study config (version 2): how real exports map onto the data contract.

A study config is a YAML file (``study.yaml`` in the study folder, or given
with ``--config``) that says, for each canonical table, which file(s) hold it,
how the export is shaped and how its columns map onto the contract's roles.
It is validated with pydantic, and **every** problem is reported at once
(:class:`ConfigError`: file, line, key path, what is wrong, what is allowed).

A worked example (the fixture ``tests/fixtures/exports/contact_centre``)::

    version: 2
    study:
      name: Contact centre pilot
      timezone: Europe/London      # timestamps are stored as wall time in this zone
      min_group_size: 5            # 3 or more
    privacy:
      pseudonymise: true           # ids become keyed hashes (HMAC-SHA256) in everything written
      key_file: .cxex-lab/pseudonym.key
    tables:
      cx_responses:
        file: cx_export.csv
        header_rows: 3             # line 1 column names, line 2 question text, line 3 import ids
        question_row: 2
        drop: [IPAddress, RecipientEmail]
        filters:
          - {column: Status, equals: Survey Preview, reason: preview response (survey test)}
          - {column: Finished, equals: "False", reason: unfinished response}
        columns:
          interaction_id: {column: ContactRef, placeholders: ["00000000"]}
          responded_at: {column: RecordedDate, format: "%Y-%m-%d %H:%M:%S", timezone: UTC}
          nps: {column: Q1, labels: {"0 - Not at all likely": 0, "10 - Extremely likely": 10}}
          csat: {column: Q2, scale: [1, 10], out_of_range: exclude}
          ces: {column: Q3, scale: [1, 7], labels: {Strongly disagree: 1, Strongly agree: 7}}
      ...

Column mappings
---------------
``columns`` maps a contract role to a column of the file: either the column
name (``comment: Q4``) or a mapping with options, by the kind of the role:

============ ==============================================================
kind         options
============ ==============================================================
any          ``column`` (the file's column), ``missing`` (values that mean
             "no answer", e.g. ``[99, "Don't know"]``)
identifiers  ``placeholders``: values that stand for "no id" (e.g. a dummy
             contact reference ``00000000``); their rows are unlinkable and
             excluded, counted in the ledger
scales,      ``scale: [low, high]`` (the answers' native range; default the
numbers      contract's), ``labels`` (text answer -> number, e.g.
             ``"10 - Extremely likely": 10``; for SPSS/Stata columns the
             keys are the file's value labels, and ``labels: file`` takes each
             code's number from the start of its value label, e.g. code 11
             labelled ``"10 - Extremely likely"`` is 10), ``rescale`` (``round``, the
             default, ``linear``, or an explicit ``{native: contract}``
             recode), ``out_of_range`` (``error``, the default, or
             ``exclude``)
dates        ``format`` (a strptime format or a list of them, e.g.
             ``"%d/%m/%Y %H:%M"``; default ISO 8601), ``timezone`` (the zone
             of the exported wall times; default the study's)
true/false   ``true`` / ``false``: the export's words (default: true/false,
             yes/no, y/n, t/f, 1/0, any case)
handle time  ``format: "%H:%M:%S"`` or ``"%M:%S"`` for durations as text
============ ==============================================================

A role mapped to ``null`` (``ces: null``) was not asked: the column is missing
in every row. A role not listed maps to the file's column of the same name,
if there is one.

Scales (the decision)
---------------------
The contract's scales are fixed (NPS/eNPS 0-10, CSAT/eSat 1-5, CES/EES 1-7,
touchpoint items, empowerment and insight access 1-5), and every estimator
uses them: top box is 4-5 on 1-5, promoters are 9-10, and the metrics refuse
answers that are not whole scale points. An item asked on another range is
**checked on its native scale** (whole points within ``scale``; messages speak
of the native scale) and then **mapped onto the contract's scale**, by a
declared rule recorded in the workspace (``ws.study_info["scales"]``, with the
point-by-point table) and printed by ``cxex-lab validate``:

* ``rescale: round`` (the default): the linear map (native low -> contract
  low, native high -> contract high) rounded to the nearest contract point.
  eSat on 1-7 becomes 1, 2, 2, 3, 4, 4, 5 (top box 4-5 = 5-7 of the 7-point
  item); CSAT on 1-10 becomes 1, 1, 2, 2, 3, 3, 4, 4, 5, 5 (top box = 7-10).
  Every estimator works on the result; adjacent native points share a
  contract point, which costs some resolution (correlations shrink a little).
* ``rescale: linear``: the linear map without rounding (4.33 for a 6 on 1-7).
  Nothing is lost and correlations, standardised effects and tests are those
  of the native item (the map is affine), but estimators that insist on whole
  scale points (the mirror metrics) refuse it; use it for the models.
* ``rescale: {1: 1, 2: 1, 3: 2, ...}``: your own recode, one contract value per
  native point.

NPS and eNPS are never rescaled: they are defined on 0-10 (promoters 9-10,
detractors 0-6), and a config that gives them another range is refused.

Dates
-----
Dates are parsed with the declared format applied to the whole column, never
inferred row by row: a value that does not match is an error naming its rows.
Without a format, ISO 8601 (``2026-03-05``, ``2026-03-05 14:30[:00[.123]]``,
``T`` or space, optional offset) is accepted and nothing else. Timestamps are
stored as wall time in the study's time zone (``study.timezone``, default UTC);
a column's ``timezone`` says in which zone the export wrote its wall times, and
values carrying an offset (``+01:00``, ``Z``) are converted from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cxex_lab import contract as C

__all__ = [
    "ConfigError",
    "StudyConfig",
    "StudySettings",
    "PrivacySettings",
    "TableSpec",
    "ColumnSpec",
    "FilterSpec",
    "WaveSpec",
    "DeriveSpec",
    "load_config",
    "parse_config",
    "role_kind",
    "MIN_GROUP_SIZE_FLOOR",
    "DEFAULT_KEY_FILE",
    "READERS",
]

#: The smallest confidentiality minimum a study may set (see :func:`cxex_lab.privacy.check_min_group_size`).
MIN_GROUP_SIZE_FLOOR = 3
#: Where the pseudonymisation key lives, relative to the study folder (hidden: not part of the data fingerprint).
DEFAULT_KEY_FILE = ".cxex-lab/pseudonym.key"
#: File suffixes the loader reads, and how.
READERS: dict[str, str] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".xlsx": "excel", ".xlsm": "excel",
    ".sav": "spss", ".zsav": "spss", ".por": "spss",
    ".dta": "stata",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SCALE_WORDS = {"nps": "NPS", "enps": "eNPS", "csat": "CSAT", "esat": "eSat", "ces": "CES", "ees": "EES",
                "empowerment": "empowerment", "cx_insight_access": "insight access"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


Scalar = str | int | float | bool


class ColumnSpec(_Strict):
    """How one contract role is read from an export (see the module notes)."""

    column: str | None = None
    missing: list[Scalar] = Field(default_factory=list)
    placeholders: list[Scalar] = Field(default_factory=list)
    scale: tuple[int, int] | None = None
    labels: dict[str, float] | Literal["file"] | None = None
    rescale: Literal["round", "linear"] | dict[int, float] | None = None
    out_of_range: Literal["error", "exclude"] = "error"
    format: str | list[str] | None = None
    timezone: str | None = None
    true: list[Scalar] | None = None
    false: list[Scalar] | None = None
    value: Scalar | None = None  # a constant (e.g. one site), only where documented

    @property
    def formats(self) -> list[str]:
        if self.format is None:
            return []
        return [self.format] if isinstance(self.format, str) else list(self.format)


class FilterSpec(_Strict):
    """Rows excluded on purpose: one condition on one column, with the reason the ledger shows."""

    column: str
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_in: list[Scalar] | None = None
    missing: bool | None = None
    reason: str

    @property
    def values(self) -> list[Scalar]:
        if self.equals is not None:
            return [self.equals]
        return list(self.in_ or self.not_in or [])


class WaveSpec(_Strict):
    """A wave defined by dates: EX answers given from ``start`` to ``end`` (both days included)."""

    wave: int
    start: date
    end: date


class DeriveSpec(_Strict):
    """Where a derived employee's team or site comes from: a column of another table, or one value."""

    table: Literal["ex_responses", "interactions"] | None = None
    column: str | None = None
    value: str | None = None


class DeriveEmployees(_Strict):
    team_id: DeriveSpec | None = None
    site_id: DeriveSpec | None = None


class TableSpec(_Strict):
    """One canonical table: its file(s), the export's shape, the column mapping, filters and drops."""

    file: str | None = None
    files: list[str] | None = None
    sheet: str | int | None = None
    delimiter: str | None = None
    encoding: str = "utf-8"
    header_rows: int = Field(default=1, ge=0, le=50)
    names_row: int = Field(default=1, ge=1)
    question_row: int | None = Field(default=None, ge=1)
    columns: dict[str, str | ColumnSpec | None] = Field(default_factory=dict)
    touchpoints: dict[str, str | ColumnSpec] = Field(default_factory=dict)
    filters: list[FilterSpec] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    waves: list[WaveSpec] = Field(default_factory=list)
    derive: DeriveEmployees | None = None

    def file_list(self) -> list[str]:
        return [self.file] if self.file else list(self.files or [])

    def mapping(self) -> dict[str, ColumnSpec | None]:
        """Contract role -> column spec (touchpoints as ``tp_<name>``); None = not asked."""
        out: dict[str, ColumnSpec | None] = {}
        for role, spec in self.columns.items():
            out[role] = ColumnSpec(column=spec) if isinstance(spec, str) else spec
        for name, spec in self.touchpoints.items():
            role = name if C.is_touchpoint(name) else f"tp_{name}"
            out[role] = ColumnSpec(column=spec) if isinstance(spec, str) else spec
        return out


class StudySettings(_Strict):
    name: str | None = None
    timezone: str = "UTC"
    min_group_size: int = 5

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if not _valid_zone(v):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'Europe/London' or 'UTC'")
        return v

    @field_validator("min_group_size")
    @classmethod
    def _mgs(cls, v: int) -> int:
        if v < MIN_GROUP_SIZE_FLOOR:
            raise ValueError(
                f"min_group_size {v} is refused: with groups of {v} a reader who knows their own answer can "
                f"work out the others' from a group mean, so reports would single people out; allowed: "
                f"{MIN_GROUP_SIZE_FLOOR} or more (5 is the default, many HR policies ask for 5-10)")
        return v


class PrivacySettings(_Strict):
    pseudonymise: bool = True
    id_columns: list[str] = Field(default_factory=lambda: ["employee_id", "customer_id", "interaction_id"])
    key_file: str = DEFAULT_KEY_FILE


class StudyConfig(_Strict):
    """A validated study config (version 2). Build it with :func:`load_config` or :func:`parse_config`.

    ``path`` and ``base`` (the folder file names are relative to) are set by
    the loader and excluded from the config's digest.
    """

    version: Literal[1, 2] = 2
    study: StudySettings = Field(default_factory=StudySettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    tables: dict[str, TableSpec] = Field(default_factory=dict)
    path: str | None = Field(default=None, exclude=True)
    base: str | None = Field(default=None, exclude=True)

    def table(self, name: str) -> TableSpec | None:
        return self.tables.get(name)

    def key_path(self, study_dir: str | Path | None = None) -> Path:
        """The pseudonymisation key file (relative paths are relative to the study folder)."""
        p = Path(self.privacy.key_file).expanduser()
        if p.is_absolute():
            return p
        return Path(study_dir or self.base or ".") / p


# --------------------------------------------------------------------------- errors


class ConfigError(ValueError):
    """A study config is not valid. ``.errors`` lists every problem as a dict
    (``file``, ``line``, ``path``, ``message``); ``str(err)`` prints them all."""

    def __init__(self, errors: list[dict[str, Any]], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        where = source or "study config"
        lines = [f"{where}: {len(errors)} problem(s) in the study config:"]
        for e in errors:
            loc = ".".join(str(p) for p in e["path"]) or "(top level)"
            at = f"line {e['line']}, " if e.get("line") else ""
            lines.append(f"  - {at}{loc}: {e['message']}")
        super().__init__("\n".join(lines))


def role_kind(table: str, role: str) -> str | None:
    """The kind of value a contract role holds (``id``, ``number``, ...), None if it is no role of ``table``."""
    if table == "ex_responses" and C.is_touchpoint(role):
        return "number"
    return C.COLUMNS.get(table, {}).get(role)


def _scale_word(role: str) -> str:
    if C.is_touchpoint(role):
        return f"touchpoint item {role}"
    return _SCALE_WORDS.get(role, role)




def _pydantic_errors(err: ValidationError, prefix: tuple) -> list[dict]:
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "str", "ColumnSpec"))))
        loc = tuple("in" if p == "in_" else p for p in loc)
        kind = e["type"]
        msg = e["msg"]
        if kind == "extra_forbidden":
            model = _model_at(prefix + loc[:-1])
            allowed = ", ".join(_fields(model)) if model else ""
            msg = f"unknown key {loc[-1]!r}" + (f"; allowed keys: {allowed}" if allowed else "")
        elif kind == "missing":
            msg = "this key is required"
        elif kind == "literal_error":
            msg = f"{msg.removeprefix('Input should be ')} are allowed, not {e.get('input')!r}"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            msg = f"{msg} (got {e.get('input')!r})"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        out.append({"path": prefix + loc, "message": msg})
    return _dedupe_union_noise(out)


def _dedupe_union_noise(errors: list[dict]) -> list[dict]:
    """A column given as neither a name nor a mapping reports once, not once per alternative."""
    seen, out = set(), []
    for e in errors:
        key = (e["path"][:5], e["message"]) if len(e["path"]) > 4 else (e["path"], e["message"])
        if key in seen:
            continue
        seen.add(key)
        out.append(e)
    return out


def _model_at(path: tuple):
    """The pydantic model a key path points into (for the list of allowed keys)."""
    p = [x for x in path if not isinstance(x, int)]
    if not p:
        return StudyConfig
    if p[0] == "study":
        return StudySettings
    if p[0] == "privacy":
        return PrivacySettings
    if p[0] == "tables":
        rest = p[2:]
        if not rest:
            return TableSpec
        if rest[0] in ("columns", "touchpoints") and len(rest) >= 2:
            return ColumnSpec
        if rest[0] == "filters":
            return FilterSpec
        if rest[0] == "waves":
            return WaveSpec
        if rest[0] == "derive":
            return DeriveSpec if len(rest) >= 2 else DeriveEmployees
    return None


def _fields(model) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items() if name not in ("path", "base")]


# --------------------------------------------------------------------------- semantic checks


def _check_column(table: str, role: str, spec: ColumnSpec | None, where: tuple, errors: list[dict]) -> None:
    def bad(key: str, msg: str) -> None:
        errors.append({"path": (*where, key) if key else where, "message": msg})

    kind = role_kind(table, role)
    if kind is None:
        allowed = ", ".join(C.COLUMNS[table]) + (", tp_<name> (touchpoint items)" if table == "ex_responses" else "")
        bad("", f"{role!r} is not a column of {table}; allowed: {allowed}")
        return
    if table == "ex_responses" and C.is_touchpoint(role) and not _NAME.match(role):
        bad("", f"touchpoint name {role!r} must be lower-case letters, digits and _ (e.g. tp_onboarding)")
    if spec is None:
        if role in C.KEYS[table] or role in C.NOT_NULL[table]:
            bad("", f"{role} cannot be 'not asked' (null): {table} needs it in every row")
        return
    if spec.column is None and spec.value is None:
        bad("column", "say which column of the file holds this role (column: <name>)")
    if spec.value is not None and not (table == "employees" and role in ("team_id", "site_id", "role")):
        bad("value", "a constant value is allowed only for employees' team_id, site_id and role")
    scale = C.scale_of(table, role)
    numeric = kind in ("number", "integer")
    if spec.placeholders and kind != "id":
        bad("placeholders", f"placeholders are for identifier columns; {role} holds {C.KIND_WORDS[kind]}")
    for key in ("scale", "rescale"):
        if getattr(spec, key) is not None and scale is None:
            bad(key, f"{key} is for survey scale items (NPS, CSAT, CES, eNPS, eSat, EES, touchpoints, empowerment, "
                     f"insight access); {role} has no scale")
    if spec.labels is not None and not numeric:
        bad("labels", f"labels map text answers to numbers; {role} holds {C.KIND_WORDS[kind]}")
    if spec.out_of_range != "error" and scale is None:
        bad("out_of_range", f"out_of_range applies to survey scale items; {role} has no scale")
    if spec.format is not None and kind != "datetime" and role != "handle_seconds":
        bad("format", f"format is for dates (and handle times given as %H:%M:%S); {role} holds "
                      f"{C.KIND_WORDS[kind]}")
    for f in spec.formats:
        if "%" not in f:
            bad("format", f"{f!r} has no strptime directive; e.g. '%d/%m/%Y %H:%M' (day first) or "
                          f"'%m/%d/%Y' (month first)")
    if spec.timezone is not None:
        if kind != "datetime":
            bad("timezone", f"timezone is for dates; {role} holds {C.KIND_WORDS[kind]}")
        elif not _valid_zone(spec.timezone):
            bad("timezone", f"unknown time zone {spec.timezone!r}; use an IANA name such as 'Europe/London' or 'UTC'")
    if (spec.true is not None or spec.false is not None) and kind != "boolean":
        bad("true", f"true/false words are for true/false columns; {role} holds {C.KIND_WORDS[kind]}")
    if kind == "boolean" and (spec.true is None) != (spec.false is None):
        bad("true" if spec.true is None else "false", "give both the true and the false words")
    if kind == "boolean" and spec.true and spec.false:
        both = {str(v).strip().lower() for v in spec.true} & {str(v).strip().lower() for v in spec.false}
        if both:
            bad("true", f"{sorted(both)} cannot mean both true and false")
    if scale is None:
        return
    lo_c, hi_c = scale
    native = spec.scale or scale
    if spec.scale is not None:
        lo, hi = spec.scale
        if lo >= hi:
            bad("scale", f"[{lo}, {hi}] is not a range: the low end must be below the high end")
            return
    if role in ("nps", "enps"):
        if spec.scale is not None and tuple(spec.scale) != (0, 10):
            bad("scale", f"{_scale_word(role)} is defined on 0-10 (promoters 9-10, detractors 0-6) and is never "
                         f"rescaled; a recommendation item on {spec.scale[0]}-{spec.scale[1]} is not an "
                         f"{_scale_word(role)}: allowed: [0, 10]")
        if spec.rescale is not None:
            bad("rescale", f"{_scale_word(role)} is never rescaled (defined on 0-10)")
    lo, hi = native
    if isinstance(spec.rescale, dict):
        missing = [k for k in range(lo, hi + 1) if k not in spec.rescale]
        if missing:
            bad("rescale", f"the recode must give every native point {lo}-{hi} a contract value; missing: {missing}")
        off = {k: v for k, v in spec.rescale.items() if not lo_c <= v <= hi_c}
        if off:
            bad("rescale", f"recoded values must lie on the contract's {_scale_word(role)} scale {lo_c}-{hi_c}; "
                           f"got {off}")
    for label, v in (spec.labels if isinstance(spec.labels, dict) else {}).items():
        if not lo <= v <= hi or float(v) != int(v):
            bad("labels", f"label {label!r} -> {v:g} is not a whole point of the {_scale_word(role)} scale "
                          f"{lo}-{hi}")


def _valid_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError for odd strings
        return False
    return True


def _check_table(name: str, spec: TableSpec, errors: list[dict], columns_checked: bool = False) -> None:
    where = ("tables", name)

    def bad(path: tuple, msg: str) -> None:
        errors.append({"path": (*where, *path), "message": msg})

    files = spec.file_list()
    if spec.file and spec.files:
        bad(("files",), "give either file or files, not both")
    if not files and not (name == "employees" and spec.derive is not None):
        bad(("file",), f"which file holds {name}? (file: <name> relative to the study folder; files: [...] for "
                       f"several parts)")
    for f in files:
        suffix = Path(f).suffix.lower()
        if suffix not in READERS and "*" not in f:
            bad(("file",), f"{f!r}: cannot read {suffix or 'suffix-less'} files; allowed: "
                           + ", ".join(sorted(READERS)))
    if spec.names_row > max(spec.header_rows, 1):
        bad(("names_row",), f"line {spec.names_row} is not a header line (header_rows: {spec.header_rows})")
    if spec.question_row is not None and spec.question_row > spec.header_rows:
        bad(("question_row",), f"line {spec.question_row} is not a header line (header_rows: {spec.header_rows})")
    if spec.question_row is not None and spec.question_row == spec.names_row:
        bad(("question_row",), "the question texts cannot be on the line of the column names")
    if spec.delimiter is not None and len(spec.delimiter) != 1:
        bad(("delimiter",), f"a delimiter is one character (',', ';', '\\t', '|'), got {spec.delimiter!r}")
    if spec.touchpoints and name != "ex_responses":
        bad(("touchpoints",), "touchpoint items belong to ex_responses")
    if spec.waves and name != "ex_responses":
        bad(("waves",), "waves by dates belong to ex_responses")
    if spec.derive is not None and name != "employees":
        bad(("derive",), "only employees can be derived (from the EX answers and the log)")
    if not columns_checked:
        for role, cs in spec.columns.items():
            _check_column(name, role, ColumnSpec(column=cs) if isinstance(cs, str) else cs,
                          (*where, "columns", role), errors)
    for tp, cs in spec.touchpoints.items():
        role = tp if C.is_touchpoint(tp) else f"tp_{tp}"
        if role in spec.columns:
            bad(("touchpoints", tp), f"{role} is mapped twice (under columns and under touchpoints)")
        if not columns_checked:
            _check_column(name, role, ColumnSpec(column=cs) if isinstance(cs, str) else cs,
                          (*where, "touchpoints", tp), errors)
    mapped = {}
    for role, cs in spec.mapping().items():
        if cs is not None and cs.column:
            mapped.setdefault(cs.column, []).append(role)
            if cs.column in spec.drop:
                bad(("drop",), f"column {cs.column!r} is mapped to {role} and dropped: drop is for columns that "
                               f"must never reach any output (personal data)")
    for i, f in enumerate(spec.filters):
        given = [k for k in ("equals", "in_", "not_in", "missing") if getattr(f, k) is not None]
        if len(given) != 1:
            bad(("filters", i), "give exactly one condition: equals, in, not_in or missing: true")
        if not f.reason.strip():
            bad(("filters", i, "reason"), "say why these rows are excluded (the ledger shows it)")
    if spec.waves:
        nums = [w.wave for w in spec.waves]
        if len(set(nums)) != len(nums):
            bad(("waves",), f"wave numbers must be unique, got {nums}")
        if any(n < 1 for n in nums):
            bad(("waves",), "wave numbers are 1 or more")
        ws = sorted(spec.waves, key=lambda w: w.start)
        for w in ws:
            if w.end < w.start:
                bad(("waves",), f"wave {w.wave} ends ({w.end}) before it starts ({w.start})")
        for a, b in zip(ws, ws[1:]):
            if b.start <= a.end:
                bad(("waves",), f"waves {a.wave} and {b.wave} overlap ({a.start}..{a.end} and {b.start}..{b.end})")
        if "wave" in spec.columns and "responded_at" in spec.mapping():
            bad(("waves",), "waves come from a wave column or from dates, not both (with a wave column, waves: "
                            "only dates answers that have no responded_at)")
    if spec.derive is not None:
        for key in ("team_id", "site_id"):
            d = getattr(spec.derive, key)
            if d is None:
                continue
            if (d.value is None) == (d.column is None):
                bad(("derive", key), "give either value: <one id for everyone> or table + column")
            if d.column is not None and d.table is None:
                bad(("derive", key, "table"), "which table holds the column: ex_responses or interactions")


def _as_column(raw: Any, where: tuple, errors: list[dict]) -> ColumnSpec | None | bool:
    """One column mapping (a name, a mapping with options, or null); False when it does not parse."""
    if raw is None:
        return None
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        return ColumnSpec(column=str(raw))
    if not isinstance(raw, Mapping):
        errors.append({"path": where, "message": f"expected a column name or a mapping (column: ..., options), "
                                                 f"got {raw!r}"})
        return False
    raw = _bool_keys(raw)
    labels = raw.get("labels")
    if isinstance(labels, Mapping):
        blank = [str(k) for k, v in labels.items() if v is None or (isinstance(v, str) and v.strip() in ("", "?"))]
        if blank:
            errors.append({"path": (*where, "labels"), "message": "give each label its number; "
                                                                  f"{', '.join(map(repr, blank))} ha"
                                                                  f"{'s' if len(blank) == 1 else 've'} none"})
            return False
    try:
        return ColumnSpec.model_validate(raw)
    except ValidationError as err:
        errors.extend(_pydantic_errors(err, where))
        return False


def _bool_keys(raw: Mapping) -> dict:
    """YAML reads the keys ``true:`` / ``false:`` as booleans: back to their names."""
    return {("true" if k is True else "false" if k is False else k): v for k, v in raw.items()}


def _parse_table(name: str, raw: Any, errors: list[dict]) -> TableSpec | None:
    """Validate one table's settings piece by piece, so that one bad column does not hide the others."""
    where = ("tables", name)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append({"path": where, "message": f"expected the table's settings (file, columns, ...), got {raw!r}"})
        return None
    raw = dict(raw)
    n0 = len(errors)
    pieces: dict[str, Any] = {}
    for key in ("columns", "touchpoints"):
        sub = raw.pop(key, None) or {}
        if not isinstance(sub, Mapping):
            errors.append({"path": (*where, key), "message": "expected a mapping of roles to columns"})
            continue
        parsed = {}
        for role, spec in sub.items():
            role = str(role)
            cs = _as_column(spec, (*where, key, role), errors)
            if cs is False:
                continue
            if key == "touchpoints" and cs is None:
                errors.append({"path": (*where, key, role), "message": "a touchpoint item needs its column"})
                continue
            _check_column(name, role if key == "columns" or C.is_touchpoint(role) else f"tp_{role}", cs,
                          (*where, key, role), errors)
            parsed[role] = cs
        pieces[key] = parsed
    filters = raw.pop("filters", None) or []
    if not isinstance(filters, list):
        errors.append({"path": (*where, "filters"), "message": "expected a list of filters ({column, equals|in|"
                                                               "not_in|missing, reason})"})
        filters = []
    parsed_filters = []
    for i, f in enumerate(filters):
        try:
            parsed_filters.append(FilterSpec.model_validate(f))
        except ValidationError as err:
            errors.extend(_pydantic_errors(err, (*where, "filters", i)))
    pieces["filters"] = parsed_filters
    try:
        base = TableSpec.model_validate(raw)
    except ValidationError as err:
        errors.extend(_pydantic_errors(err, where))
        return None
    spec = base.model_copy(update=pieces)
    _check_table(name, spec, errors, columns_checked=True)
    return spec if len(errors) == n0 else None


def parse_config(data: Mapping[str, Any] | None, source: str | None = None, text: str | None = None,
                 base: str | Path | None = None) -> StudyConfig:
    """Validate a config mapping; raise :class:`ConfigError` listing every problem.

    ``text`` (the YAML source) gives line numbers; ``base`` is the folder file
    names are relative to.
    """
    data = dict(data or {})
    errors: list[dict] = []
    unknown = sorted(set(data) - set(_fields(StudyConfig)), key=str)
    for k in unknown:
        errors.append({"path": (k,), "message": f"unknown key {k!r}; allowed keys: {', '.join(_fields(StudyConfig))}"})
    parts: dict[str, Any] = {}
    for key, model in (("study", StudySettings), ("privacy", PrivacySettings)):
        if key in data and data[key] is not None:
            try:
                parts[key] = model.model_validate(data[key])
            except ValidationError as err:
                errors.extend(_pydantic_errors(err, (key,)))
    version = data.get("version", 2)
    if version not in (1, 2):
        errors.append({"path": ("version",), "message": f"version {version!r} is not known; allowed: 2"})
    tables: dict[str, TableSpec] = {}
    raw_tables = data.get("tables") or {}
    if not isinstance(raw_tables, Mapping):
        errors.append({"path": ("tables",), "message": "expected a mapping of table names to table settings"})
        raw_tables = {}
    for name, raw in raw_tables.items():
        if name not in C.TABLES:
            errors.append({"path": ("tables", name), "message": f"{name!r} is not a table of the contract; allowed: "
                                                                 + ", ".join(C.TABLES)})
            continue
        spec = _parse_table(name, raw, errors)
        if spec is not None:
            tables[name] = spec
    if "privacy" in parts:
        bad_ids = [c for c in parts["privacy"].id_columns if c not in C.ID_COLUMNS]
        if bad_ids:
            errors.append({"path": ("privacy", "id_columns"),
                           "message": f"{bad_ids} are not id columns; allowed: {', '.join(C.ID_COLUMNS)}"})
    if errors:
        if text:
            for e in errors:
                e["line"] = _line_of(text, e["path"])
        for e in errors:
            e["file"] = source
        errors.sort(key=lambda e: (e.get("line") or 0))
        raise ConfigError(errors, source)
    return StudyConfig(version=2, study=parts.get("study", StudySettings()),
                       privacy=parts.get("privacy", PrivacySettings()), tables=tables,
                       path=source, base=str(base) if base is not None else None)


def load_config(config: str | Path | Mapping | StudyConfig | None, base: str | Path | None = None
                ) -> StudyConfig | None:
    """Read and validate a study config: a YAML file, a mapping, a :class:`StudyConfig`, or None.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ConfigError
        Every problem of the config at once (file, line, key path, what is
        wrong, what is allowed).

    Examples
    --------
    >>> cfg = load_config({"tables": {"cx_responses": {"file": "cx.csv", "columns": {"nps": "Q1"}}}})
    >>> cfg.tables["cx_responses"].mapping()["nps"].column
    'Q1'
    """
    if config is None:
        return None
    if isinstance(config, StudyConfig):
        return config if base is None or config.base else config.model_copy(update={"base": str(base)})
    if isinstance(config, Mapping):
        return parse_config(config, base=base)
    import yaml

    path = Path(config)
    if not path.exists():
        raise FileNotFoundError(f"study config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader (see _Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([{"path": (), "line": line, "file": str(path),
                            "message": f"not valid YAML: {getattr(err, 'problem', None) or err}"}], str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([{"path": (), "line": 1, "file": str(path),
                            "message": "expected a mapping (version, study, privacy, tables) at the top level"}],
                          str(path))
    return parse_config(data, source=str(path), text=text, base=base if base is not None else path.parent)


def _yaml_loader():
    """A SafeLoader where only true/false are booleans: ``Yes``, ``No``, ``on``, ``off`` stay words.

    YAML 1.1 (PyYAML's default) reads ``Yes``/``No``/``On``/``Off`` as booleans,
    which would turn a boolean vocabulary ``true: [Yes]`` or a filter value into
    ``True``; YAML 1.2 reads only true/false as booleans, and so does this loader.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return Loader


_Loader = _yaml_loader()


def _line_of(text: str, path: tuple) -> int | None:
    """The line of the YAML node at ``path`` (the deepest existing key), 1-based."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in path:
        if node is None:
            break
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if str(k.value) == str(key):
                    line = k.start_mark.line + 1
                    nxt = v
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line
