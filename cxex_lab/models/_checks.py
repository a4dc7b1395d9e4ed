"""Input checks shared by the estimators of :mod:`cxex_lab.models`.

Each raises ``ValueError`` with a message that names the function, the column
and what to do.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

def _check_frame(df: object, func: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{func}: expected a pandas DataFrame, got {type(df).__name__}.")
    return df


def _check_columns(df: pd.DataFrame, columns: Sequence[str], func: str, *, numeric: bool = True) -> None:
    """Raise a ValueError naming the first missing / non-numeric / all-NaN column."""
    for col in columns:
        if col not in df.columns:
            avail = ", ".join(map(str, list(df.columns)[:20]))
            raise ValueError(
                f"{func}: column {col!r} not found in the data. Available columns: [{avail}]. "
                "Pass the name of an existing column (or rename it first)."
            )
    for col in columns:
        s = df[col]
        if numeric and not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            raise ValueError(
                f"{func}: column {col!r} is not numeric (dtype {s.dtype}). Convert it to numbers "
                "first (e.g. map Likert labels to 1-5, booleans to 0/1)."
            )
        if s.isna().all():
            raise ValueError(
                f"{func}: column {col!r} is entirely missing (all NaN). Drop it from the call "
                "or supply data for it."
            )


def _complete_rows(
    df: pd.DataFrame, columns: Sequence[str], func: str, *, min_rows: int
) -> tuple[pd.DataFrame, int]:
    """Keep rows complete on ``columns`` (as float); return them and the number dropped."""
    cols = list(dict.fromkeys(columns))
    sub = df[cols].astype("float64")
    keep = sub.notna().all(axis=1).to_numpy()
    n_dropped = int((~keep).sum())
    sub = sub.loc[keep]
    if len(sub) < min_rows:
        raise ValueError(
            f"{func}: only {len(sub)} complete rows (after dropping {n_dropped} with missing "
            f"values in {cols}); need at least {min_rows}. Supply more data or fewer columns."
        )
    return sub, n_dropped


def _check_design(x: np.ndarray, names: Sequence[str], func: str) -> None:
    """Raise if a predictor is constant or the predictors are perfectly collinear."""
    sd = x.std(axis=0)
    for j, name in enumerate(names):
        if not sd[j] > 1e-12 * max(1.0, float(np.abs(x[:, j]).max())):
            raise ValueError(
                f"{func}: predictor {name!r} is constant (no variation) in the complete rows; "
                "remove it from the predictors."
            )
    z = (x - x.mean(axis=0)) / sd
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    if s[-1] < 1e-8 * s[0]:
        involved = [names[j] for j in np.flatnonzero(np.abs(vt[-1]) > 1e-6)]
        raise ValueError(
            f"{func}: singular design: predictors {involved} are perfectly collinear. "
            "Drop one of them (or combine them into a single score)."
        )


# --------------------------------------------------------------------------- core maths
