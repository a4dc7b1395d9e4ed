"""The data-quality ledger: every row excluded on purpose, with its reason.

Nothing in cxex-lab drops data silently. Whenever a step excludes rows (a CX
response that links to no interaction, a group suppressed for privacy, an
employee-wave without a preceding EX wave...), it records one ledger entry:

========== ==========================================================
column     meaning
========== ==========================================================
table      which table (or derived table) the rows came from
rule       the rule, in words a researcher understands
rows_excluded  how many rows the rule excluded
example    a few example row numbers or keys (never an employee or
           customer id in a *report*: reports show ``example`` only
           for keys that are not personal)
step       which step applied the rule (``validate``, ``link``, ...)
========== ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

LEDGER_COLUMNS: tuple[str, ...] = ("step", "table", "rule", "rows_excluded", "example")


def empty_ledger() -> pd.DataFrame:
    """An empty ledger with the canonical columns."""
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "rows_excluded" else "object") for c in LEDGER_COLUMNS})


def format_examples(values: Sequence | Iterable, limit: int = 5) -> str:
    """A short, readable list of example rows or keys: ``"3, 17, 42 (+9 more)"``."""
    vals = list(values)
    shown = ", ".join(str(v) for v in vals[:limit])
    return shown + (f" (+{len(vals) - limit} more)" if len(vals) > limit else "")


def ledger_of(obj) -> pd.DataFrame:
    """The data-quality ledger carried by a result, as a tidy DataFrame.

    Results (linked panels, mirror tables) carry their ledger in
    ``attrs["ledger"]`` as plain records, not as a DataFrame: pandas compares
    ``attrs`` whenever it concatenates or merges frames, and writes them as JSON
    metadata to Parquet, and a DataFrame inside ``attrs`` breaks both.

    Parameters
    ----------
    obj : DataFrame, list of dict, or Ledger
        A result with ``attrs["ledger"]``, ledger records, or a Ledger.
    """
    if isinstance(obj, Ledger):
        return obj.frame
    records = obj.attrs.get("ledger", []) if isinstance(obj, pd.DataFrame) else obj
    if isinstance(records, pd.DataFrame):
        return records
    return Ledger(pd.DataFrame(list(records), columns=list(LEDGER_COLUMNS))).frame


class Ledger:
    """Accumulates ledger entries; ``.frame`` is the tidy DataFrame.

    Examples
    --------
    >>> led = Ledger()
    >>> led.add("link", "cx_responses", "response links to no interaction", 3, ["X1", "X2", "X3"])
    >>> led.frame[["table", "rows_excluded"]].to_dict("records")
    [{'table': 'cx_responses', 'rows_excluded': 3}]
    """

    def __init__(self, frame: pd.DataFrame | None = None) -> None:
        self._rows: list[dict] = []
        if frame is not None and len(frame):
            self._rows.extend(frame[list(LEDGER_COLUMNS)].to_dict("records"))

    def add(self, step: str, table: str, rule: str, rows_excluded: int, example: Iterable = ()) -> None:
        """Record that ``rows_excluded`` rows of ``table`` were excluded by ``rule``.

        Entries with zero rows are not recorded.
        """
        n = int(rows_excluded)
        if n <= 0:
            return
        self._rows.append(
            {"step": step, "table": table, "rule": rule, "rows_excluded": n, "example": format_examples(example)}
        )

    def extend(self, other: "Ledger | pd.DataFrame | None") -> None:
        """Append the entries of another ledger (or ledger DataFrame)."""
        if other is None:
            return
        frame = other.frame if isinstance(other, Ledger) else other
        if len(frame):
            self._rows.extend(frame[list(LEDGER_COLUMNS)].to_dict("records"))

    @property
    def records(self) -> list[dict]:
        """The entries as plain dicts (what results keep in ``attrs["ledger"]``)."""
        return [dict(r, rows_excluded=int(r["rows_excluded"])) for r in self._rows]

    @property
    def frame(self) -> pd.DataFrame:
        """The ledger as a tidy DataFrame (columns :data:`LEDGER_COLUMNS`)."""
        if not self._rows:
            return empty_ledger()
        df = pd.DataFrame(self._rows, columns=list(LEDGER_COLUMNS))
        df["rows_excluded"] = df["rows_excluded"].astype("int64")
        return df

    def __len__(self) -> int:
        return len(self._rows)
