"""Small helpers that keep the notebooks thin: loading a segment, response rates,
privacy-safe tables, and the "truth check" shown on simulated data.

Notebooks call these; they hold no statistics of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxex_lab.io import load_study
from cxex_lab.ledger import Ledger
from cxex_lab.privacy import MIN_GROUP_SIZE, assert_reportable, drop_id_columns, suppress_small_groups
from cxex_lab.study import Study

__all__ = [
    "resolve_path",
    "load_segment",
    "has_truth",
    "truth_check",
    "response_rates",
    "reportable",
    "study_overview",
]


def resolve_path(path: str | Path) -> Path:
    """Resolve a project-relative path from wherever the notebook runs.

    Papermill runs notebooks from the project root; JupyterLab runs them from
    ``notebooks/``. A relative path that does not exist here is looked up in the
    parent folders (up to the one holding ``pyproject.toml``).
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    for parent in Path.cwd().resolve().parents:
        if (parent / path).exists():
            return parent / path
        if (parent / "pyproject.toml").exists():
            break
    return path


def load_segment(data_dir: str | Path, segment: str = "all", config: str | Path | None = None) -> Study:
    """Load and validate a study, then keep one segment (a site id, or ``"all"``).

    The validation ledger stays attached (``study.ledger``).
    """
    study = load_study(resolve_path(data_dir), config=config, validate=True)
    return study.segment(segment)


def has_truth(study: Study) -> bool:
    """True when the study is simulated and carries its ground truth."""
    return bool(study.truth) and "derived" in study.truth


def truth_check(estimates: pd.DataFrame, truth: Mapping[str, float], term_col: str = "term") -> pd.DataFrame:
    """Put the known true value beside each estimate (simulated data only).

    Parameters
    ----------
    estimates : DataFrame
        Tidy estimates with ``term``, ``estimate``, ``ci_low``, ``ci_high``.
    truth : mapping
        ``{term: true value}``; terms not in ``estimates`` are ignored.

    Returns
    -------
    DataFrame
        ``term, estimate, ci_low, ci_high, truth, inside_ci``.
    """
    rows = estimates[estimates[term_col].isin(list(truth))].copy()
    rows.attrs = {}  # a summary: the estimator's fit details stay with the estimates
    rows["truth"] = rows[term_col].map(dict(truth)).astype(float)
    rows["inside_ci"] = (rows["ci_low"] <= rows["truth"]) & (rows["truth"] <= rows["ci_high"])
    keep = [term_col, "estimate", "ci_low", "ci_high", "truth", "inside_ci"]
    return rows[[c for c in keep if c in rows.columns]].reset_index(drop=True)


def response_rates(study: Study) -> pd.DataFrame:
    """Survey response rates on both sides, per wave.

    EX: employees answering / employees employed when the wave opened.
    CX: surveyed interactions / interactions in the period that the wave opens
    (up to the next wave's opening); interactions before the first wave opened
    are reported as wave 0.

    Returns
    -------
    DataFrame
        ``side, wave, eligible, responded, rate``.
    """
    opens = study.wave_openings()
    emp = study.employees
    rows = []
    for wave, opened in opens.items():
        employed = (emp["hire_date"] <= opened) & (emp["exit_date"].isna() | (emp["exit_date"] > opened))
        answered = (study.ex_responses["wave"] == wave).sum()
        rows.append({"side": "EX", "wave": int(wave), "eligible": int(employed.sum()), "responded": int(answered)})
    # interactions before the first wave opened belong to no wave period: wave 0
    edges = [np.datetime64("1678-01-01")] + list(opens.to_numpy()) + [np.datetime64("2262-01-01")]
    period = pd.cut(study.interactions["started_at"], bins=pd.DatetimeIndex(edges), right=False, labels=[0] + list(opens.index))
    surveyed = study.interactions["interaction_id"].isin(set(study.cx_responses["interaction_id"]))
    counts = pd.DataFrame({"wave": period, "surveyed": surveyed}).groupby("wave", observed=False)["surveyed"].agg(["size", "sum"])
    for wave, r in counts.iterrows():
        if wave == 0 and r["size"] == 0:
            continue  # no interaction before the first wave: no wave-0 row
        rows.append({"side": "CX", "wave": int(wave), "eligible": int(r["size"]), "responded": int(r["sum"])})
    out = pd.DataFrame(rows)
    out["rate"] = out["responded"] / out["eligible"].where(out["eligible"] > 0)
    return out


def reportable(
    df: pd.DataFrame,
    n_cols: str | Sequence[str],
    value_cols: Sequence[str] | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    ledger: Ledger | None = None,
    table: str = "report",
) -> pd.DataFrame:
    """Make a table safe to show: suppress small groups, drop id columns, then check.

    Parameters
    ----------
    df : DataFrame
        One row per group with count column(s) ``n_cols``.
    value_cols : list of str, optional
        Columns to blank on suppressed rows (default: every numeric column).
    """
    ncols = [n_cols] if isinstance(n_cols, str) else list(n_cols)
    if value_cols is None:
        value_cols = [c for c in df.columns if c not in ncols and pd.api.types.is_numeric_dtype(df[c])]
    out = suppress_small_groups(drop_id_columns(df), ncols, value_cols, min_group_size, ledger=ledger, table=table)
    assert_reportable(out, ncols, min_group_size)
    return out


def study_overview(study: Study) -> pd.DataFrame:
    """What was loaded: rows per table, sites, teams, employees, waves, date range."""
    s = study
    facts = {
        "sites": s.employees["site_id"].nunique(),
        "teams": s.employees["team_id"].nunique(),
        "employees": len(s.employees),
        "EX waves": s.ex_responses["wave"].nunique(),
        "EX answers": len(s.ex_responses),
        "interactions": len(s.interactions),
        "CX responses": len(s.cx_responses),
        "customers": s.interactions["customer_id"].nunique(),
        "customer-period outcomes": len(s.customer_outcomes),
        "first interaction": s.interactions["started_at"].min().date().isoformat() if len(s.interactions) else "-",
        "last interaction": s.interactions["started_at"].max().date().isoformat() if len(s.interactions) else "-",
    }
    return pd.DataFrame({"what": list(facts), "value": [str(v) for v in facts.values()]})
