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
