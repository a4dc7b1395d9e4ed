"""Privacy rules shared by every reporting table.

* No group smaller than the confidentiality minimum (``min_group_size``,
  default 5) is shown: its values are set to missing and the row is flagged.
* No employee or customer identifier is shown.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from cxex_lab.ledger import Ledger

#: Default confidentiality minimum: the smallest group whose aggregate may be shown.
MIN_GROUP_SIZE: int = 5

#: Columns that identify a person; never allowed in a reporting table.
ID_COLUMNS: tuple[str, ...] = ("employee_id", "customer_id", "interaction_id")


def check_min_group_size(min_group_size: int) -> int:
    """Validate a confidentiality minimum (an integer >= 1)."""
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, (int,)) or min_group_size < 1:
        raise ValueError(f"min_group_size must be a whole number >= 1, got {min_group_size!r}")
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
