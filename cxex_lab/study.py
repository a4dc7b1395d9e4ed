"""The :class:`Study` container: the five canonical tables of the data contract.

A study is what every part of cxex-lab passes around: ``employees``,
``ex_responses``, ``interactions``, ``cx_responses`` and ``customer_outcomes``
(see ``DESIGN.md``), plus, for simulated studies, the ground ``truth`` and
optionally the ``latent`` (noise-free, fully observed) tables the simulator used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxex_lab import contract
from cxex_lab.contract import TABLES

__all__ = ["Study", "TABLES"]


@dataclass
class Study:
    """The five canonical tables of one study.

    Attributes
    ----------
    employees, ex_responses, interactions, cx_responses, customer_outcomes : DataFrame
        The canonical tables (one row per event, see ``DESIGN.md``).
    truth : dict or None
        For simulated studies: every parameter and derived true quantity.
    latent : dict of DataFrame
        For simulated studies with ``latent=True``: the latent employee-wave
        panel (``"employee_waves"``) and per-interaction latent CX
        (``"interactions"``). Never present for real data.
    source : str or None
        Where the study was loaded from (used in error messages and provenance).
    ledger : DataFrame or None
        The data-quality ledger produced by :func:`cxex_lab.schema.validate`.
    openings : Series or None
        Wave opening days inherited from the whole study by a segment (waves
        are study-wide events: a segment's first answer is not its wave's
        opening). None computes them from ``ex_responses``.

    ``employees`` and ``customer_outcomes`` may be None (optional tables of the
    contract, see :mod:`cxex_lab.contract`).
    """

    employees: pd.DataFrame
    ex_responses: pd.DataFrame
    interactions: pd.DataFrame
    cx_responses: pd.DataFrame
    customer_outcomes: pd.DataFrame
    truth: dict[str, Any] | None = None
    latent: dict[str, pd.DataFrame] = field(default_factory=dict)
    source: str | None = None
    ledger: pd.DataFrame | None = None
    openings: pd.Series | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        """Return the five canonical tables as a ``{name: DataFrame}`` dict."""
        return {name: getattr(self, name) for name in TABLES}

    def save(self, path: str | Path, fmt: str = "parquet", latent: bool = False) -> Path:
        """Write the study to a directory (see :func:`cxex_lab.io.save_study`)."""
        from cxex_lab.io import save_study

        return save_study(self, path, fmt=fmt, latent=latent)

    def segment(self, sites: str | list[str] | None) -> "Study":
        """The part of the study that belongs to some sites (:func:`cxex_lab.contract.segment_tables`).

        Employees of the sites, their EX answers and interactions, the CX
        responses to those interactions and the outcomes of the customers they
        served. ``None`` or ``"all"`` returns the study unchanged. The segment
        keeps the whole study's wave openings. The rule runs on an in-memory
        DuckDB connection over the id columns; the selected rows are taken from
        the DataFrames as they are (types unchanged).

        Raises
        ------
        ValueError
            If a site id is unknown (the message lists the valid ones).
        """
        wanted = contract.segment_sites(sites)
        if wanted is None:
            return self
        contract.check_segment(wanted, self.employees["site_id"].dropna().astype(str).unique())
        need = {"employees": ["employee_id", "site_id"], "ex_responses": ["employee_id"],
                "interactions": ["interaction_id", "employee_id", "customer_id"], "cx_responses": ["interaction_id"],
                "customer_outcomes": ["customer_id"]}
        frames = {n: getattr(self, n) for n in TABLES}
        tables = {n: contract.memtable(df[need[n]], pos=True) if df is not None else None for n, df in frames.items()}
        seg = contract.segment_tables(tables, wanted)
        con = contract.duckdb_connect()
        parts = {}
        for n, df in frames.items():
            if df is None:
                parts[n] = None
                continue
            pos = np.sort(con.to_pyarrow(seg[n].select("_pos")).column(0).to_numpy())
            parts[n] = df.iloc[pos].reset_index(drop=True)
        out = Study(**parts, truth=self.truth, source=f"{self.source or 'study'} [sites {', '.join(wanted)}]",
                    ledger=self.ledger, openings=self.wave_openings())
        ids = set(parts["employees"]["employee_id"])
        out.latent = {
            name: df[df["employee_id"].isin(ids)].reset_index(drop=True)
            for name, df in self.latent.items()
            if "employee_id" in df.columns
        }
        return out

    def wave_openings(self) -> pd.Series:
        """Opening day of each EX wave, indexed by wave, in opening order.

        A wave opens on the calendar day of its first answer (rounded down to the
        day, so interactions on the opening morning before the first answer
        already belong to the new wave). Period w runs from wave w's opening to
        wave w+1's. The rule is :func:`cxex_lab.contract.wave_openings`, run here
        on an in-memory DuckDB connection.
        """
        if self.openings is not None:
            return self.openings
        ex = self.ex_responses[["wave", "responded_at"]]
        w = contract.openings_frame(contract.duckdb_connect(), contract.memtable(ex))
        return pd.Series(w["opened"].to_numpy(), index=pd.Index(w["wave"].to_numpy(), name="wave"), name="opened")

    def summary(self) -> pd.DataFrame:
        """Row and column counts of each table, as a tidy DataFrame."""
        return pd.DataFrame(
            [
                {"table": name, "rows": len(df), "columns": df.shape[1]}
                for name, df in self.tables().items()
                if df is not None
            ]
        )

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        parts = ", ".join(f"{n}={len(df):,} rows" for n, df in self.tables().items() if df is not None)
        return f"Study({parts}{', simulated' if self.truth else ''})"
