"""Privacy rules: small groups, identifiers, pseudonymisation.

* No group smaller than the confidentiality minimum (``min_group_size``,
  default 5, never below 3) is shown: its values are set to missing and the
  row is flagged.
* No employee or customer identifier is shown.
* Real ids are **pseudonymised** in everything the workbench writes (the
  workspace, and through it executed notebooks and HTML): each employee,
  customer and interaction id becomes a keyed hash (:class:`Pseudonymiser`,
  HMAC-SHA256 under the study's key, the first :data:`PSEUDONYM_HEX` hex
  digits), computed in the engine. The key is a random 32-byte secret kept
  beside the study (``<study>/.cxex-lab/pseudonym.key`` unless the study config
  says ``privacy.key_file``), created on first use with owner-only
  permissions; it is never written into a workspace, a notebook or a report
  (the workspace records only a key id, a digest of the key, to detect a
  changed key). The same raw id always gives the same pseudonym under the same
  key, so tables still join; without the key a pseudonym cannot be traced back
  to the id, and a raw id cannot be recognised.
* The report runner's privacy scan looks every token of a report up among the
  study's ids: :func:`study_ids` gives it the workspace's ids (the
  pseudonyms, and the hash of a raw token under the study key), so a real agent
  id such as ``AG1046`` is caught whatever its format.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxex_lab.ledger import Ledger

#: Default confidentiality minimum: the smallest group whose aggregate may be shown.
MIN_GROUP_SIZE: int = 5
#: No study may set a confidentiality minimum below this (see :func:`check_min_group_size`).
MIN_GROUP_SIZE_FLOOR: int = 3
#: Hex digits kept of each pseudonym (80 bits: for 10^8 distinct ids the chance of any
#: two sharing a pseudonym is below 5e-9).
PSEUDONYM_HEX: int = 20

#: Columns that identify a person; never allowed in a reporting table.
ID_COLUMNS: tuple[str, ...] = ("employee_id", "customer_id", "interaction_id")


def check_min_group_size(min_group_size: int) -> int:
    """Validate a confidentiality minimum: a whole number of at least :data:`MIN_GROUP_SIZE_FLOOR` (3).

    Groups of 1 show a person's answer; in a group of 2 each member can work
    out the other's answer from the group mean and their own. Both are refused.
    """
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, (int,)) or min_group_size < 1:
        raise ValueError(f"min_group_size must be a whole number >= 1, got {min_group_size!r}")
    if min_group_size < MIN_GROUP_SIZE_FLOOR:
        raise ValueError(
            f"min_group_size={min_group_size} is refused: in a group of {min_group_size} "
            + ("the aggregate is one person's answer" if min_group_size == 1 else
               "each member can work out the other's answer from the group mean and their own")
            + f"; use {MIN_GROUP_SIZE_FLOOR} or more (default {MIN_GROUP_SIZE})")
    return int(min_group_size)


def suppress_small_groups(
    df: pd.DataFrame,
    n_col: str | Sequence[str],
    value_cols: Sequence[str],
    min_group_size: int = MIN_GROUP_SIZE,
    ledger: Ledger | None = None,
    table: str = "report",
    step: str = "privacy",
) -> pd.DataFrame:
    """Blank out aggregates computed from fewer than ``min_group_size`` people.

    Parameters
    ----------
    df : DataFrame
        One row per group, with the count(s) behind its aggregates.
    n_col : str or list of str
        Count column(s). A row is suppressed when any of them is below the
        minimum (counts of 0 mean "no data", not "small", and are left alone).
    value_cols : list of str
        Columns set to missing on suppressed rows (the count columns are too).
    min_group_size : int
        The confidentiality minimum (default 5).
    ledger : Ledger, optional
        Suppressed rows are counted here.

    Returns
    -------
    DataFrame
        A copy with a boolean ``suppressed`` column added.
    """
    min_group_size = check_min_group_size(min_group_size)
    ncols = [n_col] if isinstance(n_col, str) else list(n_col)
    out = df.copy()
    small = pd.Series(False, index=out.index)
    for c in ncols:
        n = pd.to_numeric(out[c], errors="coerce").fillna(0)
        small |= (n > 0) & (n < min_group_size)
    cols = [c for c in list(value_cols) + ncols if c in out.columns]
    for c in cols:
        if small.any():
            if pd.api.types.is_integer_dtype(out[c]) or pd.api.types.is_bool_dtype(out[c]):
                out[c] = out[c].astype("Float64" if pd.api.types.is_integer_dtype(out[c]) else "boolean")
            out.loc[small, c] = pd.NA
    out["suppressed"] = small.to_numpy()
    if ledger is not None:
        ledger.add(step, table, f"group smaller than the confidentiality minimum ({min_group_size}): values suppressed", int(small.sum()))
    return out


def drop_id_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` without any person-identifying column (see :data:`ID_COLUMNS`)."""
    return df.drop(columns=[c for c in ID_COLUMNS if c in df.columns])


def assert_reportable(df: pd.DataFrame, n_cols: Sequence[str], min_group_size: int = MIN_GROUP_SIZE) -> None:
    """Raise ``ValueError`` if ``df`` shows an id column or a group below the minimum."""
    ids = [c for c in ID_COLUMNS if c in df.columns]
    if ids:
        raise ValueError(f"reporting table contains identifier column(s) {ids}")
    for c in n_cols:
        n = pd.to_numeric(df[c], errors="coerce")
        bad = n.notna() & (n > 0) & (n < min_group_size)
        if bad.any():
            raise ValueError(f"reporting table shows {int(bad.sum())} group(s) with {c} < {min_group_size}")


# --------------------------------------------------------------------------- pseudonymisation


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class Pseudonymiser:
    """Keyed hashes of ids: HMAC-SHA256 (RFC 2104) under the study key, first :data:`PSEUDONYM_HEX` hex digits.

    The same function runs in Python (:meth:`__call__`, e.g. to look a report's
    token up) and in the engine (:meth:`sql`, :meth:`apply`: DuckDB's
    ``sha256`` / ``unhex`` on blobs, Spark's ``sha2``); tests check that both
    give :func:`hmac.new` 's digest. Ids are hashed as text (an integer id 1046
    and the text ``"1046"`` give the same pseudonym); missing ids stay missing.

    Parameters
    ----------
    key : bytes
        The study key (32 random bytes by default, see :meth:`from_key_file`).
    columns : sequence of str
        The id columns pseudonymised (default employee, customer and
        interaction ids; team and site ids stay as they are: they are units
        that reports name, protected by the confidentiality minimum).

    Examples
    --------
    >>> p = Pseudonymiser(b"0" * 32)
    >>> p("AG1046") == hmac.new(b"0" * 32, b"AG1046", hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]
    True
    """

    def __init__(self, key: bytes, columns: Sequence[str] = ("employee_id", "customer_id", "interaction_id"),
                 key_file: str | Path | None = None) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("a pseudonymisation key is at least 16 bytes")
        self._key = key
        self.columns = tuple(columns)
        self.key_file = str(key_file) if key_file is not None else None
        block = key if len(key) <= 64 else hashlib.sha256(key).digest()
        block = block.ljust(64, b"\0")
        self._ipad = bytes(b ^ 0x36 for b in block).hex()
        self._opad = bytes(b ^ 0x5C for b in block).hex()

    @property
    def key_id(self) -> str:
        """A digest of the key that reveals nothing about it (to notice a changed key)."""
        return hashlib.sha256(b"cxex-lab key id\0" + self._key).hexdigest()[:16]

    def __call__(self, value: Any) -> str:
        """The pseudonym of one id value."""
        return hmac.new(self._key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]

    def __repr__(self) -> str:  # never show the key
        return f"Pseudonymiser(key id {self.key_id}, columns {list(self.columns)})"

    @classmethod
    def from_key_file(cls, path: str | Path, columns: Sequence[str] = ("employee_id", "customer_id",
                                                                     "interaction_id"),
                      create: bool = True) -> "Pseudonymiser":
        """The study's pseudonymiser, reading (or creating) its key file.

        A new key is 32 random bytes (:func:`secrets.token_bytes`) written as hex,
        readable by the owner only. Keep the file with the study and out of
        version control and reports: with it, anyone can test whether a given
        id is in the study; without it, pseudonyms are not reversible.

        Raises
        ------
        ValueError
            The file cannot be created (read-only study folder: set
            ``privacy.key_file`` in the study config), or holds no key.
        """
        path = Path(path)
        if not path.exists():
            if not create:
                raise ValueError(f"pseudonymisation key {path} does not exist")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_bytes(32).hex() + "\n")
                ignore = path.parent / ".gitignore"
                if path.parent.name == ".cxex-lab" and not ignore.exists():
                    ignore.write_text("# the pseudonymisation key: never commit or share it\n*\n")
            except FileExistsError:
                pass  # another process created it meanwhile: read theirs
            except OSError as err:
                raise ValueError(
                    f"cannot create the pseudonymisation key {path} ({err.strerror}); set privacy.key_file in "
                    f"the study config to a writable place, e.g. key_file: ~/.cxex-lab/<study>.key") from None
        text = path.read_text().strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{path} is not a pseudonymisation key (expected hex digits)") from None
        if len(key) < 16:
            raise ValueError(f"{path} holds a key of {len(key)} bytes; at least 16 are needed")
        return cls(key, columns, key_file=path)

    def sql(self, expr: str, dialect: str = "duckdb") -> str:
        """The pseudonym of a SQL expression, in SQL (``dialect``: ``"duckdb"`` or ``"pyspark"``)."""
        if dialect == "duckdb":
            inner = f"sha256(unhex('{self._ipad}') || encode(CAST({expr} AS VARCHAR)))"
            return f"left(sha256(unhex('{self._opad}') || unhex({inner})), {PSEUDONYM_HEX})"
        if dialect in ("pyspark", "spark"):
            inner = f"sha2(concat(unhex('{self._ipad}'), encode(CAST({expr} AS STRING), 'UTF-8')), 256)"
            return f"left(sha2(concat(unhex('{self._opad}'), unhex({inner})), 256), {PSEUDONYM_HEX})"
        raise ValueError(f"pseudonymisation in SQL is written for duckdb and pyspark, not {dialect!r}")

    def apply(self, con: Any, table: Any, name: str = "t") -> Any:
        """An Ibis table with its id columns replaced by their pseudonyms (a temporary view on ``con``).

        The view's SQL holds key material; it is temporary (never stored in a
        workspace file) and only its result is written.
        """
        cols = [c for c in table.columns if c in self.columns]
        if not cols:
            return table
        dialect = getattr(con, "name", "duckdb")
        body = con.compile(table)
        sel = ", ".join(
            (f"{self.sql(_quote(c), dialect)} AS {_quote(c)}" if c in cols else _quote(c)) for c in table.columns)
        view = f"cxex_pseudo_{name}_{secrets.token_hex(5)}"
        if dialect == "duckdb":
            con.raw_sql(f"CREATE OR REPLACE TEMP VIEW {_quote(view)} AS SELECT {sel} FROM ({body}) AS _s")
        else:
            con._session.sql(f"SELECT {sel.replace(chr(34), '`')} FROM ({body}) AS _s").createOrReplaceTempView(view)
        return con.table(view)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- ids for the report scan


#: Where each kind of id lives in a validated workspace (every id of the kind is in that table).
_ID_HOME: dict[str, tuple[str, str]] = {
    "employee_id": ("employees", "employee_id"),
    "customer_id": ("interactions", "customer_id"),
    "interaction_id": ("interactions", "interaction_id"),
}


class StudyIds:
    """The study's ids for the report runner's privacy scan (an id index: ``find``, ``describe``, ``close``).

    ``find(tokens)`` returns ``{token: kind}`` for the tokens of a report that
    are ids of the study: a stored id or pseudonym shown as it is, or (when the
    workspace is pseudonymised) a raw id whose keyed hash is a stored
    pseudonym. Lookups run in the workspace's engine (a semi-join with the
    tokens), so a 50M-row interaction table is never loaded into memory.

    Build it with :func:`study_ids`. It matches the runner's id-index
    interface (:class:`cxex_lab.run.idscan.IdIndex`); with the runner's
    :class:`~cxex_lab.run.idscan.HashedIds` use ``lookup`` and ``hasher``.

    Attributes
    ----------
    lookup : dict of kind -> callable
        ``lookup[kind](candidates)`` returns the candidates stored as ids of that kind.
    hasher : callable or None
        The pseudonymisation of a raw token (None when ids are stored as they are).
    """

    def __init__(self, lookup: Mapping[str, Callable[[set[str]], set[str]]],
                 hasher: Callable[[str], str] | None, counts: Callable[[], dict[str, int]] | None = None) -> None:
        self.lookup = dict(lookup)
        self.hasher = hasher
        self.kinds = tuple(self.lookup)
        self._counts = counts

    def find(self, tokens: Collection[str]) -> dict[str, str]:
        tokens = {str(t) for t in tokens}
        hashed = {self.hasher(t): t for t in tokens} if self.hasher else {}
        candidates = tokens | set(hashed)
        hits: dict[str, str] = {}
        for kind, look in self.lookup.items():
            for v in look(candidates):
                if v in hashed:
                    hits.setdefault(hashed[v], kind)
                if v in tokens:
                    hits.setdefault(v, kind)
        return hits

    def describe(self) -> dict[str, Any]:
        method = "keyed hashes of the ids in the workspace" if self.hasher else "id values in the workspace"
        return {"method": method, "ids": self._counts() if self._counts else {}, "short_numeric": {}}

    def close(self) -> None:
        """Nothing to release: the workspace owns the connection."""


def study_ids(ws: Any, key_file: str | Path | None = None) -> StudyIds:
    """The ids of a prepared study, for the report runner's privacy scan.

    Parameters
    ----------
    ws : cxex_lab.workspace.Workspace
        The prepared study (``Workspace.id_index()`` calls this).
    key_file : path, optional
        The pseudonymisation key (default: where the workspace was built from,
        ``ws.study_info["privacy"]["key_file"]``). Read, never created here.

    Returns
    -------
    StudyIds
        Looks tokens up among the workspace's employee, customer and
        interaction ids (pseudonyms when the study is pseudonymised).

    Raises
    ------
    ValueError
        The workspace is pseudonymised and its key is missing or is not the
        key the workspace was built with.
    """
    import ibis

    info = (getattr(ws, "meta", None) or {}).get("study") or {}
    priv = info.get("privacy") or {}
    hasher = None
    if priv.get("pseudonymised"):
        path = key_file or priv.get("key_file")
        if not path:
            raise ValueError("the workspace is pseudonymised but does not say where its key is; pass key_file=")
        p = Pseudonymiser.from_key_file(path, create=False)
        if p.key_id != priv.get("key_id"):
            raise ValueError(f"{path} is not the key this workspace was pseudonymised with (key id {p.key_id}, "
                             f"workspace {priv.get('key_id')}); prepare the study again (--force)")
        hasher = p
    tables = getattr(ws, "tables", {})
    con = ws.con

    def make(table: str, col: str) -> Callable[[set[str]], set[str]]:
        def look(candidates: set[str]) -> set[str]:
            t = tables.get(table)
            if t is None or col not in t.columns or not candidates:
                return set()
            cand = ibis.memtable({"_tok": sorted(candidates)})
            v = t.select(_v=t[col].cast("string")).distinct()
            hit = v.semi_join(cand, v._v == cand._tok)
            return {r for r in con.to_pyarrow(hit).column(0).to_pylist() if r is not None}
        return look

    def counts() -> dict[str, int]:
        out = {}
        for kind, (table, col) in _ID_HOME.items():
            t = tables.get(table)
            if t is not None and col in t.columns:
                out[kind] = int(con.execute(t[col].nunique()))
        return out

    lookup = {kind: make(table, col) for kind, (table, col) in _ID_HOME.items()
              if tables.get(table) is not None and col in tables[table].columns}
    return StudyIds(lookup, hasher, counts)

