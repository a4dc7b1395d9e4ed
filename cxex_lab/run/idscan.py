"""The privacy scan: does a report show any of the study's real identifiers?

Every report (its HTML and its executed notebook) is cut into tokens and each
token is looked up among the study's **actual** employee, customer and
interaction ids, not matched against id *formats*: an agent id ``AG1046`` is
caught whatever the export's format, and a number that only looks like an id
is not.

Tokens
    Runs of letters, digits and ``_ @ . : / + -`` in the text, with style sheets,
    inline ``style`` attributes and embedded images (``data:`` URIs, base64
    payloads) removed first. Each run is looked up whole, without leading or
    trailing punctuation, and split at ``. : / @ + - _`` into parts that are
    looked up too (``AG1046.`` and ``(AG-1046)`` are both caught). A decimal
    number (``0.104623``) contributes only its integer part.

Numeric ids (the rule)
    A token made only of digits is looked up only when it has at least
    :data:`MIN_NUMERIC_DIGITS` (6) digits. Shorter numbers cannot be told from
    the counts, years and sizes that reports are full of (``n = 1046``), so a
    study whose ids are short numbers is not protected by this scan: the run
    says so (a notice and ``provenance.json["privacy"]``) and such ids must be
    pseudonymised before reporting (the workspace does this with a keyed hash).

Where the ids come from (:func:`study_ids`)
    * a study directory with the canonical files (``<table>.parquet`` / ``.csv``):
      DuckDB looks the tokens up in the files' id columns, so nothing is loaded
      into memory and a 50M-row interaction table costs one column scan;
    * a ``.duckdb`` study file: the same, in its tables;
    * any other layout (a study config): the tables loaded by
      :func:`cxex_lab.io.load_study`, held as a set (:class:`IdSet`).

Pseudonymised ids (:class:`HashedIds`)
    When ids are stored only as keyed hashes (the workspace's pseudonyms), the
    scan hashes each token with the study key and checks membership, so no raw
    id has to be kept anywhere; a token equal to a stored pseudonym is caught
    too (a pseudonym still singles out a person).

Nothing returned to the index or the provenance record contains an id: the
summaries count distinct ids per kind.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from cxex_lab.privacy import ID_COLUMNS

__all__ = [
    "MIN_NUMERIC_DIGITS",
    "IdIndex",
    "IdSet",
    "HashedIds",
    "StudyFileIds",
    "keyed_hash",
    "report_tokens",
    "notebook_text",
    "scan_ids",
    "mask_ids",
    "privacy_summary",
    "study_ids",
]

#: Digit-only tokens shorter than this are never looked up (see the module notes).
MIN_NUMERIC_DIGITS = 6

_TOKEN = re.compile(r"[A-Za-z0-9_@.:/+\-]+")
_SPLIT = re.compile(r"[.:/@+\-_]+")
_EDGE = "._:/@+-"
_DECIMAL = re.compile(r"^\d+\.\d+$")
_DIGITS = re.compile(r"^\d+$")
_STYLE_BLOCK = re.compile(r"(?is)<style\b.*?</style>")
_STYLE_ATTR = re.compile(r"(?is)\sstyle\s*=\s*(\"[^\"]*\"|'[^']*')")
_DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+")


def _lookable(token: str) -> bool:
    if len(token) < 2:
        return False
    if _DIGITS.match(token):
        return len(token) >= MIN_NUMERIC_DIGITS
    return True


def report_tokens(text: str) -> set[str]:
    """The tokens of a report that are looked up as ids (see the module notes)."""
    text = _STYLE_BLOCK.sub(" ", text)
    text = _DATA_URI.sub(" ", text)
    text = _STYLE_ATTR.sub(" ", text)
    text = html.unescape(text)
    out: set[str] = set()
    for raw in set(_TOKEN.findall(text)):
        tok = raw.strip(_EDGE)
        if not tok:
            continue
        if _DECIMAL.match(tok):
            candidates = [tok.split(".")[0]]
        else:
            candidates = [tok, *_SPLIT.split(tok)]
        out.update(c for c in candidates if _lookable(c))
    return out


def notebook_text(nb_path: str | Path) -> str:
    """An executed notebook's text (code, markdown and outputs) without image payloads."""
    nb = json.loads(Path(nb_path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            for mime in [m for m in data if m.startswith("image/") or m == "application/pdf"]:
                data.pop(mime)
        cell.pop("attachments", None)
    return json.dumps(nb, ensure_ascii=False)


class IdIndex:
    """Something that can tell which tokens are identifiers of the study.

    Subclasses implement :meth:`find`; :meth:`describe` says what is covered
    (counts only, never ids).
    """

    kinds: tuple[str, ...] = ID_COLUMNS

    def find(self, tokens: Collection[str]) -> dict[str, str]:  # pragma: no cover - interface
        """``{token: kind}`` for the tokens that are ids (``kind`` is e.g. ``"employee_id"``)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the index covers: ``{"method", "ids": {kind: n}, "short_numeric": {kind: n}}``."""
        return {"method": type(self).__name__}

    def close(self) -> None:
        """Release resources (a database connection)."""


class IdSet(IdIndex):
    """Ids held in memory, by kind.

    Parameters
    ----------
    ids : mapping of kind -> iterable of ids
        E.g. ``{"employee_id": employees["employee_id"], ...}``. Values are
        compared as strings (an integer id 1046 is the token ``"1046"``).

    Examples
    --------
    >>> index = IdSet({"employee_id": ["AG1046", "AG2001"]})
    >>> index.find({"AG1046", "AG9999", "n"})
    {'AG1046': 'employee_id'}
    """

    def __init__(self, ids: Mapping[str, Iterable[Any]]):
        self._ids = {kind: {str(v) for v in values if v is not None and str(v) != "nan"} for kind, values in ids.items()}
        self.kinds = tuple(self._ids)

    @classmethod
    def from_tables(cls, tables: Mapping[str, Any], columns: Iterable[str] = ID_COLUMNS) -> "IdSet":
        """Every value of the id ``columns`` in any of ``tables`` (DataFrames by name)."""
        ids: dict[str, set] = {c: set() for c in columns}
        for df in tables.values():
            for c in columns:
                if df is not None and c in getattr(df, "columns", ()):
                    ids[c].update(df[c].dropna().astype(str).unique())
        return cls(ids)

    def find(self, tokens: Collection[str]) -> dict[str, str]:
        hits = {}
        for kind, values in self._ids.items():
            for t in set(tokens) & values:
                hits.setdefault(t, kind)
        return hits

    def describe(self) -> dict[str, Any]:
        short = {k: sum(1 for v in vals if _DIGITS.match(v) and len(v) < MIN_NUMERIC_DIGITS) for k, vals in self._ids.items()}
        return {"method": "id values in memory", "ids": {k: len(v) for k, v in self._ids.items()},
                "short_numeric": {k: n for k, n in short.items() if n}}


def keyed_hash(key: bytes | str, value: str, length: int = 32) -> str:
    """HMAC-SHA256 of ``value`` under the study ``key``, as ``length`` hex digits.

    A default for :class:`HashedIds`; the workspace's pseudonymisation passes
    its own function when it uses another construction.
    """
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:length]


class HashedIds(IdIndex):
    """Ids known only by their keyed hashes (pseudonyms).

    Parameters
    ----------
    digests : mapping of kind -> collection of digests, or of kind -> callable
        The pseudonyms by kind. A callable receives a set of digests and returns
        those that exist (e.g. a query against the workspace's id table), so the
        pseudonyms need not be held in memory.
    hasher : callable str -> str
        The pseudonymisation of one raw id value (e.g.
        ``functools.partial(keyed_hash, key)``).

    A token is an id when ``hasher(token)`` is a stored digest (a raw id leaked)
    or when the token itself is one (a pseudonym shown).

    Examples
    --------
    >>> from functools import partial
    >>> h = partial(keyed_hash, b"study-key")
    >>> index = HashedIds({"employee_id": {h("AG1046")}}, hasher=h)
    >>> index.find({"AG1046", "AG2002", h("AG1046")}) == {"AG1046": "employee_id", h("AG1046"): "employee_id"}
    True
    """

    def __init__(self, digests: Mapping[str, Collection[str] | Callable[[set[str]], Collection[str]]],
                 hasher: Callable[[str], str]):
        self._digests = dict(digests)
        self._hasher = hasher
        self.kinds = tuple(self._digests)

    def _existing(self, kind: str, wanted: set[str]) -> set[str]:
        store = self._digests[kind]
        if callable(store):
            return set(store(wanted))
        return wanted & set(store)

    def find(self, tokens: Collection[str]) -> dict[str, str]:
        tokens = set(tokens)
        hashed = {self._hasher(t): t for t in tokens}
        hits: dict[str, str] = {}
        for kind in self._digests:
            for d in self._existing(kind, set(hashed) | tokens):
                if d in hashed:
                    hits.setdefault(hashed[d], kind)
                if d in tokens:
                    hits.setdefault(d, kind)
        return hits

    def describe(self) -> dict[str, Any]:
        ids = {k: len(v) for k, v in self._digests.items() if not callable(v)}
        return {"method": "keyed hashes of the ids", "ids": ids, "short_numeric": {}}


_TABLE_FILES = ("employees", "ex_responses", "interactions", "cx_responses", "customer_outcomes")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class StudyFileIds(IdIndex):
    """Ids looked up in the study's files (or DuckDB database) with DuckDB.

    Tokens are registered as a small table and semi-joined with every id column
    of every table file, so nothing is loaded into memory. Columns are compared
    as text.
    """

    def __init__(self, data: str | Path, columns: Iterable[str] = ID_COLUMNS):
        import duckdb

        self.data = Path(data)
        self._con = duckdb.connect()
        self._sources: dict[str, list[str]] = {c: [] for c in columns}
        if self.data.is_file():
            self._con.execute(f"ATTACH {_sql_str(str(self.data))} AS study (READ_ONLY)")
            tables = [r[0] for r in self._con.execute(
                "select table_name from information_schema.tables where table_catalog = 'study'").fetchall()]
            relations = {t: f'study."{t}"' for t in tables}
        else:
            relations = {}
            for table in _TABLE_FILES:
                for suffix, reader in ((".parquet", "read_parquet"), (".pq", "read_parquet"), (".csv", "read_csv")):
                    p = self.data / f"{table}{suffix}"
                    if p.exists():
                        opts = ", all_varchar = true, header = true" if reader == "read_csv" else ""
                        relations[table] = f"{reader}({_sql_str(str(p))}{opts})"
                        break
        for table, rel in relations.items():
            cols = [r[0] for r in self._con.execute(f"describe select * from {rel}").fetchall()]
            for c in self._sources:
                if c in cols:
                    self._sources[c].append(f'select cast("{c}" as varchar) as v from {rel}')
        self._sources = {c: s for c, s in self._sources.items() if s}
        self.kinds = tuple(self._sources)
        if not self._sources:
            raise ValueError(f"{self.data}: no table with an id column ({', '.join(columns)}) to scan reports against")

    def find(self, tokens: Collection[str]) -> dict[str, str]:
        import pyarrow as pa

        tokens = sorted(set(tokens))
        if not tokens:
            return {}
        con = self._con.cursor()
        con.register("cxex_tokens", pa.table({"t": pa.array(tokens, pa.string())}))
        hits: dict[str, str] = {}
        try:
            for kind, selects in self._sources.items():
                union = " union all ".join(selects)
                rows = con.execute(
                    f"select distinct v from ({union}) where v in (select t from cxex_tokens)").fetchall()
                for (v,) in rows:
                    hits.setdefault(v, kind)
        finally:
            con.unregister("cxex_tokens")
            con.close()
        return hits

    def describe(self) -> dict[str, Any]:
        ids, short = {}, {}
        for kind, selects in self._sources.items():
            union = " union all ".join(selects)
            n, n_short = self._con.execute(
                f"select count(distinct v), count(distinct v) filter (where regexp_full_match(v, '[0-9]{{1,{MIN_NUMERIC_DIGITS - 1}}}')) "
                f"from ({union}) where v is not null").fetchall()[0]
            ids[kind] = int(n)
            if n_short:
                short[kind] = int(n_short)
        return {"method": "id values looked up in the study files (DuckDB)", "ids": ids, "short_numeric": short}

    def close(self) -> None:
        self._con.close()


def study_ids(data: str | Path) -> IdIndex:
    """The id index of a study (see the module notes for the layouts)."""
    data = Path(data)
    if data.is_file() or any((data / f"{t}{s}").exists() for t in _TABLE_FILES for s in (".parquet", ".pq", ".csv")):
        return StudyFileIds(data)
    from cxex_lab.io import load_study

    study = load_study(data, validate=False)
    tables = {name: getattr(study, name, None) for name in _TABLE_FILES}
    return IdSet.from_tables(tables)


def scan_ids(text: str, index: IdIndex) -> list[dict[str, Any]]:
    """The study ids a report shows: ``[{"kind", "match", "count"}]`` (empty when clean).

    ``match`` is the id itself: for the caller's eyes only, never written to the
    index or the provenance record (use :func:`privacy_summary`).
    """
    tokens = report_tokens(text)
    hits = index.find(tokens)
    if not hits:
        return []
    plain = _DATA_URI.sub(" ", _STYLE_BLOCK.sub(" ", html.unescape(text)))
    out = []
    for tok, kind in sorted(hits.items(), key=lambda kv: (kv[1], kv[0])):
        count = len(re.findall(rf"(?<![A-Za-z0-9]){re.escape(tok)}(?![A-Za-z0-9])", plain)) or 1
        out.append({"kind": kind, "match": tok, "count": count})
    return out


def mask_ids(text: str, index: IdIndex | None) -> str:
    """``text`` with every study id replaced by ``[<kind>]`` (for error messages)."""
    if index is None or not text:
        return text
    hits = index.find(report_tokens(text))
    for tok in sorted(hits, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(tok)}(?![A-Za-z0-9])", f"[{hits[tok]}]", text)
    return text


def privacy_summary(findings: list[dict]) -> str:
    """One line for the index: how many distinct ids of which kind (never the ids)."""
    by_kind: dict[str, int] = {}
    for f in findings:
        by_kind[f["kind"]] = by_kind.get(f["kind"], 0) + 1
    parts = ", ".join(f"{n} distinct {k.replace('_', ' ')}{'s' if n > 1 else ''}" for k, n in by_kind.items())
    return f"privacy: the report shows identifiers of the study ({parts}); report withheld"
