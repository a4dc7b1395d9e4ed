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

import pandas as pd

TABLES: tuple[str, ...] = (
    "employees",
    "ex_responses",
    "interactions",
    "cx_responses",
    "customer_outcomes",
)


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

    def tables(self) -> dict[str, pd.DataFrame]:
        """Return the five canonical tables as a ``{name: DataFrame}`` dict."""
        return {name: getattr(self, name) for name in TABLES}

    def save(self, path: str | Path, fmt: str = "parquet", latent: bool = False) -> Path:
        """Write the study to a directory (see :func:`cxex_lab.io.save_study`)."""
        from cxex_lab.io import save_study

        return save_study(self, path, fmt=fmt, latent=latent)

    def segment(self, sites: str | list[str] | None) -> "Study":
        """The part of the study that belongs to some sites.

        Employees of the sites, their EX answers and interactions, the CX
        responses to those interactions and the outcomes of the customers they
        served. ``None`` or ``"all"`` returns the study unchanged.

        Raises
        ------
        ValueError
            If a site id is unknown (the message lists the valid ones).
        """
        if sites is None or sites == "all":
            return self
        wanted = [sites] if isinstance(sites, str) else list(sites)
        valid = sorted(self.employees["site_id"].dropna().astype(str).unique())
        unknown = [s for s in wanted if s not in valid]
        if unknown:
            raise ValueError(f"unknown segment(s) {unknown}; valid site ids are {valid} (or 'all')")
        emp = self.employees[self.employees["site_id"].astype(str).isin(wanted)]
        ids = set(emp["employee_id"])
        inter = self.interactions[self.interactions["employee_id"].isin(ids)]
        seg = Study(
            employees=emp.reset_index(drop=True),
            ex_responses=self.ex_responses[self.ex_responses["employee_id"].isin(ids)].reset_index(drop=True),
            interactions=inter.reset_index(drop=True),
            cx_responses=self.cx_responses[self.cx_responses["interaction_id"].isin(set(inter["interaction_id"]))].reset_index(drop=True),
            customer_outcomes=self.customer_outcomes[
                self.customer_outcomes["customer_id"].isin(set(inter["customer_id"]))
            ].reset_index(drop=True),
            truth=self.truth,
            source=f"{self.source or 'study'} [sites {', '.join(wanted)}]",
            ledger=self.ledger,
        )
        seg.latent = {
            name: df[df["employee_id"].isin(ids)].reset_index(drop=True)
            for name, df in self.latent.items()
            if "employee_id" in df.columns
        }
        return seg

    def wave_openings(self) -> pd.Series:
        """Opening day of each EX wave, indexed by wave, in opening order.

        A wave opens on the calendar day of its first answer (rounded down to the
        day, so interactions on the opening morning before the first answer
        already belong to the new wave). Period w runs from wave w's opening to
        wave w+1's. This is the one definition every part of cxex-lab uses
        (linkage computes the same on its backend).
        """
        opened = self.ex_responses.groupby("wave")["responded_at"].min().dropna()
        return pd.to_datetime(opened).dt.floor("D").sort_values().rename("opened")

    def summary(self) -> pd.DataFrame:
        """Row and column counts of each table, as a tidy DataFrame."""
        return pd.DataFrame(
            [
                {"table": name, "rows": len(df), "columns": df.shape[1]}
                for name, df in self.tables().items()
            ]
        )

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        parts = ", ".join(f"{n}={len(df):,} rows" for n, df in self.tables().items())
        return f"Study({parts}{', simulated' if self.truth else ''})"
