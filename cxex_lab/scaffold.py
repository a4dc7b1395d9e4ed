"""``cxex-lab init``: a commented study config drafted from the files a researcher brings.

:func:`draft_config` looks at every export in a folder (CSV, Excel, SPSS,
Stata, Parquet): its header lines, column names, question texts (a header line
or SPSS/Stata variable labels) and the values each column holds (a random
sample of up to :data:`SAMPLE_ROWS` rows, drawn over the whole file). From
these it guesses which contract table each file is, which column plays which
role, and proposes:

* the export's shape: header lines (e.g. survey platforms' question-text and
  import-id lines), the delimiter;
* a label -> number map for answers exported as text (from leading numbers such
  as ``"10 - Extremely likely"``, or known agreement / satisfaction / ease
  wordings), and a scale from the range of the values (or of SPSS value labels);
* date formats, tested on every sampled value: when every value reads both day
  first and month first (no day above 12), the config says so and leaves the
  choice to the researcher instead of guessing;
* true/false words, placeholder ids (one dummy value repeated where ids should
  be unique), filters for preview and unfinished responses, personal columns
  to drop, waves (a column, or date ranges from gaps between answer dates),
  touchpoint items.

Every guess is a comment-annotated line the researcher checks; ``cxex-lab
validate`` then says what still does not fit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cxex_lab import contract as C
from cxex_lab.config import READERS

__all__ = ["draft_config", "profile_file", "FileProfile", "ColumnProfile", "SAMPLE_ROWS", "DATE_FORMATS"]

#: Rows sampled (at random, over the whole file) to profile a column.
SAMPLE_ROWS = 100_000
#: Date formats tried on a text column (besides ISO 8601, which needs no format).
DATE_FORMATS: tuple[str, ...] = tuple(
    d + t
    for d in ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y", "%Y/%m/%d", "%d/%m/%y", "%m/%d/%y")
    for t in (" %H:%M:%S", " %H:%M", "", " %I:%M:%S %p", " %I:%M %p")
)
_SWAP = {"%d/%m": "%m/%d", "%m/%d": "%d/%m", "%d-%m": "%m-%d", "%m-%d": "%d-%m"}
_ISO_RX = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
_LEADING_NUMBER = re.compile(r"^\s*(-?\d+)\s*(?:[-–—:.=)]\s*|\s+)(\S.*)$")
_PLACEHOLDER = re.compile(r"^(0+|n/?a|none|null|unknown|-+|x+|test|tbc|ivr|system|bot|\?+)$", re.I)
_DONT_KNOW = re.compile(r"don.?t know|not applicable|n/?a|prefer not|refused|no answer", re.I)

#: Known answer wordings, lowest to highest (matched ignoring case and spaces).
VOCABULARIES: tuple[tuple[str, ...], ...] = (
    ("strongly disagree", "disagree", "somewhat disagree", "neither agree nor disagree", "somewhat agree", "agree",
     "strongly agree"),
    ("strongly disagree", "disagree", "neither agree nor disagree", "agree", "strongly agree"),
    ("very dissatisfied", "dissatisfied", "somewhat dissatisfied", "neither satisfied nor dissatisfied",
     "somewhat satisfied", "satisfied", "very satisfied"),
    ("very dissatisfied", "dissatisfied", "neither satisfied nor dissatisfied", "satisfied", "very satisfied"),
    ("extremely dissatisfied", "dissatisfied", "neutral", "satisfied", "extremely satisfied"),
    ("very difficult", "difficult", "somewhat difficult", "neither easy nor difficult", "somewhat easy", "easy",
     "very easy"),
    ("very difficult", "difficult", "neither easy nor difficult", "easy", "very easy"),
    ("very poor", "poor", "fair", "good", "very good"),
    ("very poor", "poor", "fair", "good", "excellent"),
    ("never", "rarely", "sometimes", "often", "always"),
)
_BOOL_PAIRS = ((("y",), ("n",)), (("yes",), ("no",)), (("true",), ("false",)), (("t",), ("f",)), (("1",), ("0",)))

# words in a column's name or question text that hint at a role, by table
_HINTS: dict[str, tuple[str, ...]] = {
    "interaction_id": ("contactref", "contact ref", "interaction", "callid", "call id", "call_id", "ticket",
                       "case id", "caseid", "conversation", "contact id", "contactid", "session id"),
    "employee_id": ("agent", "employee", "staff", "advisor", "adviser", "empid", "emp id", "operator", "user id"),
    "customer_id": ("customer", "client", "account", "caller", "cust"),
    "team_id": ("team",),
    "site_id": ("site", "centre", "center", "location", "office", "branch"),
    "role": ("role", "job title", "position", "grade"),
    "hire_date": ("hire", "start date", "joined", "joining", "employment start"),
    "exit_date": ("exit", "leaving", "leave date", "termination", "end of employment", "left"),
    "wave": ("wave", "pulse", "round", "survey"),
    "period": ("period", "quarter", "month"),
    "responded_at": ("recorded", "submitted", "completed", "response date", "enddate", "end date", "resp_time",
                     "responded", "response time"),
    "started_at": ("start", "began", "created", "opened", "timestamp", "call time", "date"),
    "channel": ("channel", "medium", "media"),
    "handle_seconds": ("aht", "handle", "duration", "talk time", "handling"),
    "resolved_first_contact": ("fcr", "first contact", "first call", "resolved"),
    "transferred": ("transfer", "escalat"),
    "recommend": ("recommend", "nps", "likelihood"),
    "satisfaction": ("satisf", "csat", "sat"),
    "ease": ("effort", "ease", "easy", "ces", "ees"),
    "empowerment": ("empower", "without escalat", "resolve customer", "fix customer", "myself"),
    "cx_insight_access": ("insight", "what customers say", "customer feedback"),
    "comment": ("comment", "anything else", "verbatim", "free text", "tell us"),
    "retained": ("retain", "churn", "renew"),
    "revenue": ("revenue", "spend", "sales", "value"),
}
_TOUCHPOINTS: dict[str, tuple[str, ...]] = {  # the more specific first
    "post_training_support": ("after training", "post training", "support after", "support i needed"),
    "hiring": ("hiring", "recruit"),
    "onboarding": ("onboard",),
    "training": ("training", "trained"),
    "daily_work": ("tools", "systems", "daily", "workload"),
    "coaching": ("coach", "team lead", "team leader", "supervisor"),
    "pip": ("improvement plan", "pip"),
    "recognition": ("recogni", "appreciat", "reward"),
    "promotion": ("promot", "career", "progression"),
}
_PERSONAL = ("email", "e-mail", "name", "phone", "mobile", "ipaddress", "ip address", "latitude", "longitude",
             "address", "postcode", "zip", "birth", "dob", "ssn", "national insurance")


@dataclass
class ColumnProfile:
    """What a column holds (from a sample)."""

    name: str
    question: str | None = None
    n: int = 0
    n_values: int = 0
    n_distinct: int = 0
    top: list[tuple[str, int]] = field(default_factory=list)
    numeric_share: float = 0.0
    min: float | None = None
    max: float | None = None
    whole: bool = True
    iso: bool = False
    formats: list[str] = field(default_factory=list)
    value_labels: dict[Any, str] = field(default_factory=dict)
    typed: str = "text"
    zone: str | None = None  # a time zone the export's header names for this column (survey platforms' import ids)

    @property
    def key(self) -> str:
        return f"{self.name} {self.question or ''}".lower()

    def texts(self) -> list[str]:
        """Distinct non-number text values (most frequent first)."""
        return [v for v, _ in self.top if not _num(v)]


@dataclass
class FileProfile:
    path: Path
    kind: str
    columns: list[ColumnProfile]
    header_rows: int = 1
    question_row: int | None = None
    delimiter: str | None = None
    rows: int = 0
    sheet: str | None = None


def _num(v: str) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _norm(v: str) -> str:
    return " ".join(str(v).lower().split())


# --------------------------------------------------------------------------- profiling


def _detect_header(rows: list[list[str]]) -> tuple[int, int | None]:
    """(header lines, question line) from the first lines of a CSV or sheet."""
    if len(rows) >= 3 and sum('"importid"' in (c or "").lower().replace(" ", "") or "{\"importid" in
                               (c or "").lower() for c in rows[2]) >= max(1, len(rows[2]) // 2):
        return 3, 2
    if len(rows) >= 3:
        second, third = rows[1], rows[2]
        numeric_below = [i for i, v in enumerate(third) if _num(v)]
        if numeric_below:
            wordy = [i for i in numeric_below if i < len(second) and second[i] and not _num(second[i])
                     and (len(second[i]) > 12 or second[i].strip().endswith("?"))]
            if len(wordy) >= max(1, len(numeric_below) // 2):
                return 2, 2
    return 1, None


def profile_file(path: str | Path, con: Any = None, sample: int = SAMPLE_ROWS) -> FileProfile:
    """Profile one export: header shape, and per column its values (a random sample over the whole file)."""
    import csv

    import duckdb

    from cxex_lab.readers import _encoding, _sniff_delimiter, read_header

    path = Path(path)
    kind = READERS[path.suffix.lower()]
    con = con or duckdb.connect()
    delim = None
    questions: dict[str, str] = {}
    labels: dict[str, dict] = {}
    typed: dict[str, str] = {}
    if kind == "csv":
        delim = _sniff_delimiter(path, "utf-8")
        with open(path, encoding=_encoding("utf-8"), newline="") as fh:
            first = [r for _, r in zip(range(4), csv.reader(fh, delimiter=delim))]
        header_rows, question_row = _detect_header(first)
        h = read_header(path, header_rows, 1, question_row, delim)
        names, questions = h.columns, h.questions
        lit = "'" + str(path).replace("'", "''") + "'"
        cols = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(names))) + "}"
        rel = (f"read_csv({lit}, columns = {cols}, header = false, skip = {h.header_lines}, delim = "
               f"'{delim}', quote = '\"', escape = '\"')")
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE prof AS SELECT * FROM {rel} USING SAMPLE {sample} ROWS "
                        f"(reservoir, 7)")
            rows = con.execute(f"SELECT count(*) FROM {rel}").fetchall()[0][0]
        except duckdb.Error:  # ragged records or blank lines: Python's csv module reads what it can
            with open(path, encoding=_encoding("utf-8"), newline="") as fh:
                recs = list(csv.reader(fh, delimiter=delim))
            body = [r for r in recs[header_rows:] if any(r)]
            rows = len(body)
            if len(body) > sample:
                import random

                body = random.Random(7).sample(body, sample)
            _register(con, names, [[r[i] if i < len(r) and r[i] != "" else None for i in range(len(names))]
                                   for r in body])
    elif kind == "excel":
        import openpyxl

        from cxex_lab.readers import _cell_text

        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        ws = wb.worksheets[0]
        grid = [[_cell_text(v) or "" for v in r] for r in ws.iter_rows(values_only=True)]
        wb.close()
        header_rows, question_row = _detect_header(grid[:4])
        from cxex_lab.readers import _dedupe

        names = _dedupe(grid[0])
        if question_row:
            questions = {n: q for n, q in zip(names, grid[question_row - 1]) if q and q != n}
        body = [r for r in grid[header_rows:] if any(c for c in r)]
        _register(con, names, [[r[i] if i < len(r) and r[i] != "" else None for i in range(len(names))]
                               for r in body])
        rows = len(body)
    else:
        header_rows, question_row = 0, None
        if kind in ("spss", "stata"):
            from cxex_lab.readers import _readstat

            df, meta = _readstat(path, kind, apply_value_formats=False, user_missing=True)
            questions = {n: q for n, q in (meta.column_names_to_labels or {}).items() if q}
            labels = dict(meta.variable_value_labels or {})
        else:
            import pandas as pd

            df = pd.read_parquet(path)
        names = [str(c) for c in df.columns]
        for c in df.columns:
            s = df[c]
            typed[str(c)] = ("datetime" if "datetime" in str(s.dtype) else "number" if s.dtype.kind in "if"
                             else "boolean" if s.dtype.kind == "b" else "text")
        body = [[_as_text(v) for v in r] for r in df.itertuples(index=False)]
        _register(con, names, body)
        rows = len(df)
    columns = [_profile_column(con, f"c{i}", n, questions.get(n), labels.get(n, {}), typed.get(n, "text"))
               for i, n in enumerate(names)]
    if kind == "csv" and header_rows == 3 and len(first) >= 3:  # import ids may name each date column's zone
        for col, cell in zip(columns, first[2]):
            try:
                zone = json.loads(cell).get("timeZone")
            except (ValueError, AttributeError):
                zone = None
            col.zone = zone if isinstance(zone, str) else None
    return FileProfile(path, kind, columns, header_rows, question_row, delim, int(rows))


def _as_text(v: Any) -> str | None:
    import math

    import pandas as pd

    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "isoformat"):
        return pd.Timestamp(v).tz_localize(None).isoformat(sep=" ") if getattr(v, "tzinfo", None) else \
            pd.Timestamp(v).isoformat(sep=" ")
    return str(v)


def _register(con: Any, names: Sequence[str], rows: list[list[Any]]) -> None:
    import pyarrow as pa

    cols = list(zip(*rows)) if rows else [() for _ in names]
    table = pa.table({f"c{i}": pa.array([None if v in (None, "") else str(v) for v in col], type=pa.string())
                      for i, col in enumerate(cols)})
    con.register("prof_src", table)
    con.execute("CREATE OR REPLACE TEMP TABLE prof AS SELECT * FROM prof_src")
    con.unregister("prof_src")


def _profile_column(con: Any, c: str, name: str, question: str | None, labels: dict, typed: str) -> ColumnProfile:
    v = f"nullif(trim({c}), '')"
    fmt_aggs = ", ".join(f"count(try_strptime({v}, '{f}'))" for f in DATE_FORMATS)
    q = (f"SELECT count(*), count({v}), count(DISTINCT {v}), count(try_cast({v} AS DOUBLE)), "
         f"min(try_cast({v} AS DOUBLE)), max(try_cast({v} AS DOUBLE)), "
         f"bool_and(try_cast({v} AS DOUBLE) = floor(try_cast({v} AS DOUBLE))), "
         f"count(*) FILTER (WHERE regexp_full_match({v}, '{_ISO_RX}')), {fmt_aggs} FROM prof")
    r = con.execute(q).fetchall()[0]
    n, nv, nd, nnum, mn, mx, whole, iso = r[:8]
    fmt_counts = r[8:]
    top = con.execute(f"SELECT {v} AS v, count(*) AS k FROM prof WHERE {v} IS NOT NULL GROUP BY 1 "
                      f"ORDER BY k DESC, v LIMIT 40").fetchall()
    p = ColumnProfile(name, question, int(n), int(nv), int(nd), [(str(a), int(b)) for a, b in top],
                      (nnum / nv) if nv else 0.0, mn, mx, bool(whole) if whole is not None else True,
                      bool(nv) and iso == nv, [f for f, k in zip(DATE_FORMATS, fmt_counts) if nv and k == nv],
                      labels, typed)
    return p


# --------------------------------------------------------------------------- guessing


def _hint(p: ColumnProfile, role: str) -> bool:
    return _hint_rank(p, role) is not None


def _hint_rank(p: ColumnProfile, role: str, name_only: bool = False) -> int | None:
    """How strongly a column's name (then its question) hints at a role: the rank of the first hint word found."""
    for key, offset in ((p.name.lower(), 0), ((p.question or "").lower(), 100)):
        if name_only and offset:
            break
        for i, w in enumerate(_HINTS[role]):
            if w in key:
                return offset + i
    return None


def _name_hint(p: ColumnProfile, role: str) -> bool:
    key = p.name.lower()
    return any(w in key for w in _HINTS[role])


def _is_date(p: ColumnProfile) -> bool:
    return p.typed == "datetime" or (p.n_values > 0 and (p.iso or bool(p.formats)) and p.numeric_share < 0.5)


def _is_personal(p: ColumnProfile) -> bool:
    key = p.name.lower().replace("_", " ")
    return any(w in key for w in _PERSONAL) and not any(w in key for w in ("team", "site", "centre", "center"))


def _label_map(p: ColumnProfile) -> tuple[dict[str, int] | None, str]:
    """A label -> number map for text answers: leading numbers, SPSS labels, or a known wording."""
    texts = p.texts()
    if not texts:
        return None, ""
    lead = {}
    for t in texts:
        m = _LEADING_NUMBER.match(t)
        if m:
            lead[t] = int(m.group(1))
    if lead and len(lead) == len(texts):
        return lead, "from the numbers the labels start with"
    seen = {_norm(t) for t in texts}
    for vocab in sorted(VOCABULARIES, key=len):  # the shortest wording that holds every label seen
        if seen <= set(vocab):
            return {t: vocab.index(_norm(t)) + 1 for t in sorted(texts, key=lambda x: vocab.index(_norm(x)))}, \
                f"a {len(vocab)}-point wording ({vocab[0]} .. {vocab[-1]})"
    return {t: None for t in texts}, "unknown wording: give each label its number"  # type: ignore[misc]


_SEASON = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                       "dec"), start=1)}


def _wave_order(labels: Sequence[str]) -> dict[str, int]:
    """Wave names numbered in the order they suggest: year, then month / season / quarter, then a number."""
    def key(t: str):
        low = t.lower()
        year = re.search(r"(19|20)\d{2}", low)
        month = next((m for w, m in {**_MONTHS, **_SEASON}.items() if re.search(rf"\b{w}", low)), None)
        quarter = re.search(r"\bq([1-4])\b", low)
        if month is None and quarter:
            month = 3 * int(quarter.group(1))
        num = re.findall(r"\d+", re.sub(r"(19|20)\d{2}", "", low))
        return (int(year.group(0)) if year else 0, month or 0, int(num[0]) if num else 0, low)
    return {t: k for k, t in enumerate(sorted(labels, key=key), start=1)}


def _answer_range(p: ColumnProfile, labels: dict | None) -> tuple[float | None, float | None]:
    """The range of the answers, without codes labelled "don't know" / "not applicable"."""
    vals = []
    dk = {float(k) for k, lab in p.value_labels.items() if _DONT_KNOW.search(str(lab))}
    if dk and p.n_distinct <= len(p.top):
        nums = [float(v) for v, _ in p.top if _num(v) and float(v) not in dk]
        vals += [min(nums), max(nums)] if nums else []
    elif p.min is not None:
        vals += [p.min, p.max]
    if labels:
        vals += [x for x in labels.values() if x is not None]
    if p.value_labels:
        codes = [k for k, lab in p.value_labels.items() if not _DONT_KNOW.search(str(lab))]
        vals += [min(codes), max(codes)] if codes else []
    return (min(vals), max(vals)) if vals else (None, None)


def _scale_for(lo: float | None, hi: float | None) -> tuple[int, int] | None:
    if lo is None:
        return None
    for s in ((1, 5), (1, 7), (0, 10), (1, 10), (0, 5), (0, 6), (1, 4), (1, 6), (1, 9), (0, 100)):
        if s[0] <= lo and hi <= s[1]:
            return s
    return None


def _guess_table(cols: list[ColumnProfile]) -> str | None:
    has = {r: any(_hint(p, r) for p in cols) for r in _HINTS}
    answers = any(_hint(p, r) and (p.numeric_share > 0.5 or p.texts()) for p in cols
                  for r in ("recommend", "satisfaction", "ease"))
    dates = any(_is_date(p) for p in cols)
    if has["interaction_id"] and answers:
        return "cx_responses"
    if has["interaction_id"] and dates:
        return "interactions"
    if has["employee_id"] and answers:
        return "ex_responses"
    if has["customer_id"] and (has["retained"] or has["revenue"]):
        return "customer_outcomes"
    if has["employee_id"] and (has["team_id"] or has["site_id"] or has["hire_date"]):
        return "employees"
    return None


# --------------------------------------------------------------------------- writing


def _q(v: Any) -> str:
    """A YAML scalar, quoted when needed."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(int(v)) if float(v).is_integer() else str(v)
    s = str(v)
    if s == "" or (len(s) == 1 and not s.isalnum()) or re.search(r"[:#\[\]{},&*!|>'\"%@`]", s) or s.strip() != s or _num(s) or \
            s.lower() in ("true", "false", "null", "yes", "no", "on", "off", "~"):
        return json.dumps(s, ensure_ascii=False)
    return s


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str = "", indent: int = 0) -> None:
        self.lines.append(" " * indent + text if text else "")

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"


def _question_comment(p: ColumnProfile) -> str:
    if not p.question:
        return ""
    q = " ".join(p.question.split())
    return f"  # {q[:70]}{'…' if len(q) > 70 else ''}"


_ROLE_HINT = {"nps": "recommend", "enps": "recommend", "csat": "satisfaction", "esat": "satisfaction", "ces": "ease",
              "ees": "ease"}


def _role_for(table: str, p: ColumnProfile, taken: set[str]) -> str | None:
    """The contract role a column most likely plays in ``table``."""
    ex = table == "ex_responses"
    order: list[tuple[str, str]] = {
        "cx_responses": [("interaction_id", "interaction_id"), ("recommend", "nps"), ("satisfaction", "csat"),
                         ("ease", "ces"), ("responded_at", "responded_at"), ("comment", "comment")],
        "ex_responses": [("employee_id", "employee_id"), ("wave", "wave"), ("recommend", "enps"),
                         ("empowerment", "empowerment"), ("cx_insight_access", "cx_insight_access"),
                         ("satisfaction", "esat"), ("ease", "ees"), ("responded_at", "responded_at")],
        "interactions": [("interaction_id", "interaction_id"), ("employee_id", "employee_id"),
                         ("customer_id", "customer_id"), ("started_at", "started_at"), ("channel", "channel"),
                         ("handle_seconds", "handle_seconds"), ("resolved_first_contact", "resolved_first_contact"),
                         ("transferred", "transferred")],
        "employees": [("employee_id", "employee_id"), ("team_id", "team_id"), ("site_id", "site_id"),
                      ("role", "role"), ("hire_date", "hire_date"), ("exit_date", "exit_date")],
        "customer_outcomes": [("customer_id", "customer_id"), ("period", "period"), ("retained", "retained"),
                              ("revenue", "revenue")],
    }[table]
    scale_roles = {"nps", "csat", "ces", "enps", "esat", "ees", "empowerment", "cx_insight_access"}
    for hint, role in order:
        if role in taken:
            continue
        if role in C.COLUMNS[table] and p.name == role:
            return role
        match = _name_hint(p, hint) if hint in ("satisfaction", "ease", "recommend") and not p.question \
            else _hint(p, hint)
        if not match:
            continue
        kind = C.COLUMNS[table][role]
        if kind == "datetime" and not _is_date(p) and not (p.n_values == 0 and _hint_rank(p, hint, True) is not None):
            continue
        if role in scale_roles and not (p.numeric_share > 0.8 or p.texts()) :
            continue
        if role in scale_roles and _is_date(p):
            continue
        if kind == "id" and _is_date(p):
            continue
        if role == "started_at" and ex:
            continue
        return role
    return None


def _column_block(w: _Writer, table: str, role: str, p: ColumnProfile, indent: int, notes: list[str],
                  key: str | None = None) -> None:
    key = key or role
    kind = "number" if C.is_touchpoint(role) else C.COLUMNS[table][role]
    opts: list[str] = []
    comments: list[str] = []
    scale = C.scale_of(table, role)
    if kind == "id":
        reps = [(v, k) for v, k in p.top if k > 1 and _PLACEHOLDER.match(v)]
        unique = table in ("cx_responses",) and role == "interaction_id" or (table == "interactions" and role ==
                                                                               "interaction_id")
        if reps and (unique or role == "employee_id"):
            opts.append(f"placeholders: [{', '.join(_q(v) for v, _ in reps)}]")
            comments.append("placeholder id(s) found: " + ", ".join(f"{v!r} x{k}" for v, k in reps)
                            + " (rows excluded as unlinkable and counted)")
    elif kind == "datetime":
        if p.zone:
            opts.append(f"timezone: {_q(p.zone)}")
            comments.append(f"the export's header says its times are in {p.zone}")
        if p.n_values == 0:
            comments.append("empty in every row")
        elif p.typed == "datetime":
            comments.append("stored as dates: no format needed")
        elif p.iso:
            comments.append("ISO dates: no format needed")
        elif p.formats:
            day = [f for f in p.formats if "%d" in f and f.index("%d") < f.index("%m")]
            month = [f for f in p.formats if "%m" in f and "%d" in f and f.index("%m") < f.index("%d")]
            if day and month:
                w.add(f"{key}:", indent)
                w.add(f"column: {_q(p.name)}{_question_comment(p)}", indent + 2)
                w.add("# AMBIGUOUS: every value reads both day first and month first (no day above 12 in the data).",
                      indent + 2)
                w.add("# Keep the line that is right for this export (cxex-lab never guesses it):", indent + 2)
                w.add(f"# format: {_q(day[0])}    # day first", indent + 2)
                w.add(f"# format: {_q(month[0])}    # month first", indent + 2)
                w.add("# timezone: UTC            # the zone the export's times are in (default: the study's)",
                      indent + 2)
                notes.append(f"{table}.{role} ({p.name}): day/month order is ambiguous; choose a format")
                return
            opts.append(f"format: {_q(p.formats[0])}")
            comments.append("day first" if day else "month first" if month else "format read from every value")
        else:
            comments.append("CHECK: no date format fits every value")
            notes.append(f"{table}.{role} ({p.name}): no single date format fits every value")
    elif kind == "boolean":
        seen = {_norm(v) for v, _ in p.top}
        for t, f in _BOOL_PAIRS:
            if seen <= set(t) | set(f):
                tv = [v for v, _ in p.top if _norm(v) in t]
                fv = [v for v, _ in p.top if _norm(v) in f]
                opts.append(f"true: [{', '.join(_q(v) for v in tv) or _q(t[0])}]")
                opts.append(f"false: [{', '.join(_q(v) for v in fv) or _q(f[0])}]")
                break
        else:
            vals = [v for v, _ in p.top][:6]
            opts.append(f"true: [{_q(vals[0]) if vals else 'yes'}]")
            opts.append(f"false: [{', '.join(_q(v) for v in vals[1:]) if len(vals) > 1 else 'no'}]")
            comments.append("CHECK: which words mean true and which false? seen: " + ", ".join(map(repr, vals)))
    elif role == "handle_seconds" and p.numeric_share < 0.5 and p.texts():
        sample = p.texts()[0]
        fmt = "%H:%M:%S" if sample.count(":") == 2 else "%M:%S"
        opts.append(f"format: {_q(fmt)}")
        comments.append(f"durations as text, e.g. {sample!r}")
    elif kind in ("number", "integer"):
        labels, how = _label_map(p) if p.texts() else (None, "")
        if role == "wave" and labels and any(v is None for v in labels.values()):
            labels, how = _wave_order(list(labels)), "CHECK: waves numbered in the order their names suggest"
        lead = {k: _LEADING_NUMBER.match(str(lab)) for k, lab in p.value_labels.items()
                if not _DONT_KNOW.search(str(lab))}
        if lead and all(lead.values()) and any(float(m.group(1)) != float(k) for k, m in lead.items()):
            opts.append("labels: file")
            comments.append("the codes are not the answers: each code's number comes from its value label, e.g. "
                            + ", ".join(f"{k:g} = {p.value_labels[k]!r}" for k in list(lead)[:2]))
        lo, hi = _answer_range(p, labels)
        if labels:
            if any(v is None for v in labels.values()):
                w.add(f"{key}:  # CHECK: answers given as words cxex-lab does not know: give each its number", indent)
                w.add(f"column: {_q(p.name)}{_question_comment(p)}", indent + 2)
                w.add("# labels: {" + ", ".join(f"{_q(k)}: <number>" for k in labels) + "}", indent + 2)
                notes.append(f"{table}.{role} ({p.name}): give each label its number (labels: ...)")
                return
            entries = ", ".join(f"{_q(k)}: {v}" for k, v in labels.items())
            opts.append(f"labels: {{{entries}}}")
            comments.append(f"label map {how}" if not how.startswith("CHECK") else how)
        dk = [k for k, lab in p.value_labels.items() if _DONT_KNOW.search(str(lab))]
        if dk:
            opts.append(f"missing: [{', '.join(_q(k) for k in dk)}]")
            comments.append("codes labelled don't know / not applicable")
        if scale is not None:
            if role in ("nps", "enps"):
                if hi is not None and hi <= 7:
                    comments.append(f"CHECK: answers only go up to {hi:g}; NPS/eNPS must be asked on 0-10")
                    notes.append(f"{table}.{role} ({p.name}): values only reach {hi:g}; is it a 0-10 item?")
            else:
                native = _scale_for(lo, hi)
                if native is None:
                    comments.append(f"CHECK: values {lo} .. {hi} fit no usual scale")
                    notes.append(f"{table}.{role} ({p.name}): values {lo}..{hi} fit no usual scale")
                elif native != tuple(scale):
                    opts.append(f"scale: [{native[0]}, {native[1]}]")
                    comments.append(f"values {lo:g}..{hi:g}: asked on {native[0]}-{native[1]}, mapped onto the "
                                    f"contract's {scale[0]}-{scale[1]} (rounded linear map; rescale: linear keeps "
                                    f"decimals)")
                    if lo == 0 and native[0] == 0 and role in ("csat", "esat"):
                        comments.append("0 is unusual for satisfaction: if it is an error, use scale: [1, 10] and "
                                        "out_of_range: exclude")
        if p.numeric_share > 0.5 and not p.whole and role not in ("revenue", "handle_seconds"):
            comments.append("CHECK: some values are not whole numbers")
    tail = ("  # " + "; ".join(comments)) if comments else ""
    if not opts:
        w.add(f"{key}: {_q(p.name)}{tail or _question_comment(p)}", indent)
        return
    w.add(f"{key}:{tail}", indent)
    w.add(f"column: {_q(p.name)}{_question_comment(p)}", indent + 2)
    for o in opts:
        w.add(o, indent + 2)


def _filters(p_list: list[ColumnProfile]) -> list[tuple[str, str, str]]:
    out = []
    for p in p_list:
        key = p.name.lower()
        for v, _ in p.top:
            if re.search(r"preview|\btest\b|spam", v, re.I) and key in ("status", "response type",
                                                                          "distributionchannel",
                                                                          "distribution channel", "responsetype"):
                out.append((p.name, v, "preview or test response"))
        if key == "finished":
            vals = {_norm(v) for v, _ in p.top}
            for false in ("false", "0", "no"):
                if false in vals:
                    orig = next(v for v, _ in p.top if _norm(v) == false)
                    out.append((p.name, orig, "unfinished response"))
    seen, uniq = set(), []
    for f in out:  # one filter per reason
        if f[2] not in seen:
            seen.add(f[2])
            uniq.append(f)
    return uniq


def _wave_ranges(con: Any, p: ColumnProfile) -> list[tuple[date, date]]:
    """Waves from gaps of 3 weeks or more between answer dates."""
    import pandas as pd

    vals = pd.to_datetime(pd.Series([v for v, _ in p.top]), errors="coerce", format="ISO8601").dropna()
    if vals.empty:
        return []
    days = sorted(set(vals.dt.normalize()))
    out, start, prev = [], days[0], days[0]
    for d in days[1:]:
        if (d - prev).days >= 21:
            out.append((start.date(), prev.date()))
            start = d
        prev = d
    out.append((start.date(), prev.date()))
    return out


def draft_config(folder: str | Path, sample: int = SAMPLE_ROWS) -> tuple[str, list[str]]:
    """A commented ``study.yaml`` for the exports in ``folder``, and the points the researcher must check.

    Returns
    -------
    text : str
        The YAML (valid for :func:`cxex_lab.config.load_config`; entries it
        cannot decide are comments).
    notes : list of str
        What needs a decision (ambiguous date orders, labels without numbers,
        files that match no table).
    """
    import duckdb

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in READERS and p.name not in ("study.yaml",))
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    notes: list[str] = []
    by_table: dict[str, FileProfile] = {}
    unknown: list[Path] = []
    for f in files:
        try:
            prof = profile_file(f, con, sample)
        except Exception as err:  # noqa: BLE001 - a file init cannot read is listed, not fatal
            notes.append(f"{f.name}: could not be read ({type(err).__name__}: {err})")
            continue
        table = _guess_table(prof.columns)
        if table is None or table in by_table:
            unknown.append(f)
            continue
        by_table[table] = prof
    w = _Writer()
    w.add("# cxex-lab study config (version 2), drafted by `cxex-lab init` from the files in this folder.")
    w.add("# Every guess is marked; check each one, then run `cxex-lab validate <folder>`.")
    w.add("# Reference: the module docstring of cxex_lab.config, and the README section 'Bring your own data'.")
    w.add("version: 2")
    w.add()
    w.add("study:")
    w.add(f"name: {_q(folder.resolve().name)}", 2)
    w.add("timezone: UTC                 # CHECK: the zone timestamps are stored in (e.g. Europe/London)", 2)
    w.add("min_group_size: 5             # no group below this size is shown (3 or more)", 2)
    w.add()
    w.add("privacy:")
    w.add("pseudonymise: true            # employee, customer and contact ids become keyed hashes", 2)
    w.add("key_file: .cxex-lab/pseudonym.key   # created on first use; never share or commit it", 2)
    w.add()
    w.add("tables:")
    for table in C.TABLES:
        prof = by_table.get(table)
        if prof is None:
            if table == "employees":
                w.add("employees:                    # no HR extract found: employees from the ids in the EX answers "
                      "and the log", 2)
                src = by_table.get("interactions") or by_table.get("ex_responses")
                tname = "interactions" if src is not None and by_table.get("interactions") is src else "ex_responses"
                found = {}
                for key in ("team_id", "site_id"):
                    if src is not None:
                        col = next((p.name for p in src.columns if _hint(p, key) and not _is_personal(p)), None)
                        if col:
                            found[key] = col
                w.add("derive:" if found else "derive: {}                 # team and site 'unknown'", 4)
                for key in ("team_id", "site_id"):
                    if key in found:
                        w.add(f"{key}: {{table: {tname}, column: {_q(found[key])}}}", 6)
                    else:
                        w.add(f"# {key}: {{value: <one id for everyone>}}   # none found: 'unknown'", 6)
            elif table == "customer_outcomes":
                w.add("# customer_outcomes: none found (the loyalty analyses will say so)", 2)
            else:
                w.add(f"# {table}: no file found for this table (a study needs it)", 2)
                notes.append(f"{table}: no file looks like it; add tables.{table}.file")
            w.add()
            continue
        _table_block(w, con, table, prof, notes)
        w.add()
    for f in unknown:
        w.add(f"# {f.name}: matches no table (or a second file for one); add it under a table's files: if it is one")
        notes.append(f"{f.name}: not assigned to a table")
    con.close()
    return w.text(), notes


def _table_block(w: _Writer, con: Any, table: str, prof: FileProfile, notes: list[str]) -> None:
    w.add(f"{table}:", 2)
    w.add(f"file: {_q(prof.path.name)}                # {prof.rows:,} rows", 4)
    if prof.kind == "csv" and prof.delimiter and prof.delimiter != ",":
        w.add(f"delimiter: {_q(prof.delimiter)}", 4)
    if prof.header_rows > 1:
        w.add(f"header_rows: {prof.header_rows}               # line 1: column names"
              + (f", line {prof.question_row}: question texts" if prof.question_row else "")
              + (", line 3: import ids" if prof.header_rows == 3 else ""), 4)
        if prof.question_row:
            w.add(f"question_row: {prof.question_row}", 4)
    taken: set[str] = set()
    roles: dict[str, ColumnProfile] = {}
    personal = [p for p in prof.columns if _is_personal(p)]
    rest = [p for p in prof.columns if p not in personal]
    # each column's most likely role; where two columns want the same role, the stronger hint wins
    wants: dict[str, list[tuple[int, int, ColumnProfile]]] = {}
    for i, p in enumerate(rest):
        role = _role_for(table, p, set())
        if role:
            hint = _ROLE_HINT.get(role, role)
            rank = 0 if p.name == role else (_hint_rank(p, hint) if hint in _HINTS else 50)
            wants.setdefault(role, []).append((rank if rank is not None else 99, i, p))
    for role, cands in wants.items():
        roles[role] = min(cands, key=lambda x: (x[0], x[1]))[2]
        taken.add(role)
    if personal:
        w.add("drop: [" + ", ".join(_q(p.name) for p in personal) + "]   # personal data: never loaded", 4)
    filters = _filters(prof.columns)
    if filters:
        w.add("filters:                     # rows excluded on purpose (counted in the ledger)", 4)
        for col, val, reason in filters:
            w.add(f"- {{column: {_q(col)}, equals: {_q(val)}, reason: {_q(reason)}}}", 6)
    w.add("columns:", 4)
    for role in C.COLUMNS[table]:
        if role in roles:
            _column_block(w, table, role, roles[role], 6, notes)
        elif role in C.REQUIRED_COLUMNS[table] and not (table == "ex_responses" and role == "wave"):
            w.add(f"# {role}: <column>            # CHECK: no column found for this required role", 6)
            notes.append(f"{table}.{role}: no column found")
    if table == "ex_responses":
        if "wave" not in roles:
            when = roles.get("responded_at")
            ranges = _wave_ranges(con, when) if when is not None else []
            if ranges:
                w.add("waves:                       # no wave column: waves from gaps of 3+ weeks between answer "
                      "dates (CHECK)", 4)
                for k, (a, b) in enumerate(ranges, start=1):
                    w.add(f"- {{wave: {k}, start: {a}, end: {b}}}", 6)
            else:
                w.add("# wave: <column>               # CHECK: no wave column and no dates to define waves", 6)
                notes.append("ex_responses: no wave column and no dates")
        tps = []
        for p in rest:
            if p in roles.values() or p.numeric_share < 0.8 and not p.texts() or _is_date(p):
                continue
            name = next((n for n, words in _TOUCHPOINTS.items()
                         if any(x in p.key for x in words) and n not in {t for t, _ in tps}), None)
            tps.append((name, p))
        if tps:
            w.add("touchpoints:                 # touchpoint items, named by you (stored as tp_<name>)", 4)
            for name, p in tps:
                if name is None:
                    slug = re.sub(r"[^a-z0-9]+", "_", p.name.lower()).strip("_") or "item"
                    w.add(f"# {slug}: {_q(p.name)}{_question_comment(p)}   # CHECK: a touchpoint item?", 6)
                    continue
                _column_block(w, table, f"tp_{name}", p, 6, notes, key=name)
    left = [p for p in rest if p not in roles.values()]
    if table != "ex_responses" and left:
        w.add("# not used: " + ", ".join(p.name for p in left), 4)
