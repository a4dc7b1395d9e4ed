"""Small helpers that keep the notebooks thin: opening a study's workspace (or loading a
segment), response rates, privacy-safe tables, and the "truth check" shown on simulated data.

Notebooks call these; they hold no statistics of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from pathlib import Path

import pandas as pd

from cxex_lab.io import load_study
from cxex_lab.ledger import Ledger
from cxex_lab.privacy import MIN_GROUP_SIZE, assert_reportable, drop_id_columns, suppress_small_groups
from cxex_lab.study import Study

__all__ = [
    "resolve_path",
    "open_workspace",
    "open_firm_panel",
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


def open_workspace(data_dir: str | Path, segment: str = "all", config: str | Path | None = None, **kwargs):
    """The one call a notebook makes: the study's workspace, limited to a segment.

    ``data_dir`` is a study directory (prepared once by
    :func:`cxex_lab.workspace.prepare`, then reused: the report runner prepares
    before the notebooks run) or a workspace file. Keyword arguments go to
    :func:`~cxex_lab.workspace.prepare` (e.g. ``out``, ``engine``).

    Returns
    -------
    cxex_lab.workspace.Workspace
    """
    from cxex_lab.workspace import Workspace

    path = resolve_path(data_dir)
    if config is not None:
        kwargs["config"] = resolve_path(config)
    return Workspace.open(path, segment=segment, **kwargs)


def load_segment(data_dir: str | Path, segment: str = "all", config: str | Path | None = None) -> Study:
    """Load and validate a study, then keep one segment (a site id, or ``"all"``).

    The validation ledger stays attached (``study.ledger``). ``data_dir`` may
    also be a prepared workspace file (what the report runner passes once it
    prepares a workspace): its validated tables, ledger, truth and latent tables
    are read back as a Study (small studies only; notebooks that read the
    workspace use :func:`open_workspace` instead).
    """
    path = resolve_path(data_dir)
    if path.is_file() and path.suffix == ".duckdb":
        from cxex_lab.workspace import Workspace, _is_workspace_file

        if _is_workspace_file(path):
            return Workspace.open(path, segment=segment).to_study()
    study = load_study(path, config=config, validate=True)
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


def response_rates(study) -> pd.DataFrame:
    """Survey response rates on both sides, per wave.

    EX: employees answering / employees employed when the wave opened
    (:func:`cxex_lab.contract.employed_at`). CX: surveyed interactions /
    interactions in the period that the wave opens (up to the next wave's
    opening, :func:`cxex_lab.contract.wave_period`); interactions before the
    first wave opened are reported as wave 0. The rules run in the engine: on
    the workspace's, or on an in-memory DuckDB for a :class:`Study`.

    Parameters
    ----------
    study : Study or Workspace

    Returns
    -------
    DataFrame
        ``side, wave, eligible, responded, rate``.
    """
    from cxex_lab import contract
    from cxex_lab.workspace import response_rates_of

    if hasattr(study, "response_rates") and not isinstance(study, Study):
        return study.response_rates()
    emp = study.employees
    if emp is None:
        emp = pd.DataFrame({"employee_id": pd.Series(dtype=str)})
    emp = emp.reindex(columns=["employee_id", "hire_date", "exit_date"])
    for c in ("hire_date", "exit_date"):
        if not pd.api.types.is_datetime64_any_dtype(emp[c]):
            emp[c] = pd.to_datetime(emp[c])
    opens = study.wave_openings()
    waves = pd.DataFrame({"wave": opens.index.astype("int64"), "opened": pd.to_datetime(opens.values)})
    con = contract.duckdb_connect()
    return response_rates_of(con, contract.memtable(emp), contract.memtable(study.ex_responses[["wave"]]),
                             contract.memtable(study.interactions[["interaction_id", "started_at"]]),
                             contract.memtable(study.cx_responses[["interaction_id"]]), waves)


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


def study_overview(study) -> pd.DataFrame:
    """What was loaded: rows per table, sites, teams, employees, waves, date range (a Study or a Workspace)."""
    if hasattr(study, "overview") and not isinstance(study, Study):
        return study.overview()
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
        "customer-period outcomes": len(s.customer_outcomes) if s.customer_outcomes is not None else 0,
        "first interaction": s.interactions["started_at"].min().date().isoformat() if len(s.interactions) else "-",
        "last interaction": s.interactions["started_at"].max().date().isoformat() if len(s.interactions) else "-",
    }
    return pd.DataFrame({"what": list(facts), "value": [str(v) for v in facts.values()]})


def open_firm_panel(data_dir: str | Path | None = None, firm_data: str | Path | None = "", *, seed: int = 0,
                    n_firms: int = 300, n_years: int = 11, truth_firms: int = 60_000, **columns: Any):
    """The firm x year panel report 09 analyses, and where it came from.

    ``firm_data`` (a CSV or Parquet file), else ``data_dir/firm_panel.{parquet,csv}``
    (read with :func:`cxex_lab.models.firm_panel.read_firm_panel`; ``columns`` give
    the file's column names), else a simulated panel with a known truth
    (:func:`cxex_lab.simulate_firms.simulate_firms`: ``seed``, ``n_firms``,
    ``n_years``; ``truth_firms`` sizes the panel its observed-scale truth is
    computed on).

    Returns
    -------
    (panel, description) : (DataFrame or FirmPanel, str)
    """
    from cxex_lab.models.firm_panel import find_firm_panel, read_firm_panel

    source = find_firm_panel(resolve_path(data_dir) if data_dir else None, resolve_path(firm_data) if firm_data else "")
    if source is not None:
        panel = read_firm_panel(source, **{k: (v or None) if k not in ("firm", "year", "rating", "index") else v
                                           for k, v in columns.items()})
        return panel, f"{source.name}: {panel['firm_id'].nunique():,} firms, {panel['year'].nunique()} years"
    from cxex_lab.simulate_firms import simulate_firms

    panel = simulate_firms(n_firms=n_firms, n_years=n_years, seed=seed, truth_firms=truth_firms)
    return panel, f"a simulated panel: {n_firms:,} firms, {n_years} years (seed {seed})"
