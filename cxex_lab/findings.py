"""Findings as data: one function per report, each returning the report's findings.

Every number a report states comes from a function of this module. Each
returns a :class:`Findings`: the tidy **findings table** (one row per finding,
columns :data:`COLUMNS`), the supporting tidy tables the report shows
(``details``), interpretive notes in words (``notes``) and, on simulated data,
the truth check (``truth``).

The findings table
------------------
======================= ===========================================================
column                  meaning
======================= ===========================================================
``key``                 stable id (``"direction.fe.ex_to_cx"``): the harness and
                        ``truth.json["observed"]`` use it
``finding``             short label in words
``estimand``            what is estimated, in words
``estimate``            the number, in ``unit``
``ci_low, ci_high``     the 95% interval (or NaN where none is shown)
``unit``                survey-scale or business unit ("CSAT points (1-5) per eSat point")
``n, n_clusters``       rows and clusters the interval rests on
``method``              estimator and the level its interval resamples or pools over
``kind``                ``"effect"`` (a within-unit design that targets a causal
                        quantity), ``"association"`` or ``"descriptive"``
``causal``              True only for an ``effect`` whose interval passed the
                        replicate-study harness (``benchmarks/coverage.py``):
                        coverage 92-98% and |bias| <= 0.25 SE of its observed-scale truth
``caveat``              the main caveat, in words
======================= ===========================================================

Reports word a finding by its ``causal`` flag: "is followed by" / "goes with",
never "drives", unless the harness supports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "KINDS", "Findings", "finding", "findings_table", "verdicts", "truth_check"]

COLUMNS: tuple[str, ...] = (
    "key", "finding", "estimand", "estimate", "ci_low", "ci_high", "unit",
    "n", "n_clusters", "method", "kind", "causal", "caveat",
)
KINDS: tuple[str, ...] = ("effect", "association", "descriptive")

#: Harness targets a finding presented as an effect must meet.
COVERAGE_TARGET: tuple[float, float] = (0.92, 0.98)
BIAS_TARGET_SE: float = 0.25


@dataclass
class Findings:
    """What a findings function returns.

    Attributes
    ----------
    report : str
        The report it belongs to (``"direction"``).
    table : DataFrame
        The findings table (:data:`COLUMNS`).
    details : dict of DataFrame
        Supporting tidy tables the report shows, by name.
    notes : tuple of str
        Interpretive notes in words (estimator warnings, what could not be
        estimated and why); reports show them as "Note" boxes.
    truth : DataFrame or None
        On simulated data, each finding beside its observed-scale truth
        (:func:`truth_check`); None on real data.
    """

    report: str
    table: pd.DataFrame
    details: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    truth: pd.DataFrame | None = None

    def __getitem__(self, key: str) -> pd.Series:
        """The findings-table row with this ``key``."""
        hit = self.table[self.table["key"] == key]
        if hit.empty:
            raise KeyError(f"{self.report}: no finding {key!r}; keys are {self.table['key'].tolist()}")
        return hit.iloc[0]


@lru_cache(maxsize=1)
def verdicts() -> dict[str, dict[str, Any]]:
    """The replicate-study harness results shipped with the package, by finding key.

    Written by ``python benchmarks/coverage.py`` into ``cxex_lab/data/coverage.json``.
    """
    try:
        text = resources.files("cxex_lab").joinpath("data/coverage.json").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return dict(json.loads(text).get("findings", {}))


def _passed(v: Mapping[str, Any] | None) -> bool:
    return bool(v) and bool(v.get("passed"))


def finding(
    key: str,
    finding: str,
    estimand: str,
    estimate: float,
    ci_low: float = np.nan,
    ci_high: float = np.nan,
    *,
    unit: str,
    n: int | None,
    n_clusters: int | None = None,
    method: str,
    kind: str,
    caveat: str = "",
) -> dict[str, Any]:
    """One row of a findings table (``causal`` is filled in by :func:`findings_table`)."""
    if kind not in KINDS:
        raise ValueError(f"finding {key!r}: kind must be one of {KINDS}, got {kind!r}")
    return {
        "key": key, "finding": finding, "estimand": estimand,
        "estimate": float(estimate) if estimate is not None else np.nan,
        "ci_low": float(ci_low) if ci_low is not None else np.nan,
        "ci_high": float(ci_high) if ci_high is not None else np.nan,
        "unit": unit, "n": n, "n_clusters": n_clusters, "method": method, "kind": kind,
        "causal": False, "caveat": caveat,
    }


def findings_table(rows: Iterable[Mapping[str, Any]], harness: Mapping[str, Mapping] | None = None) -> pd.DataFrame:
    """Assemble finding rows into the findings table and set ``causal`` from the harness.

    A row is ``causal`` only if its ``kind`` is ``"effect"`` and the harness
    (:func:`verdicts`, or ``harness`` when given) records that its interval
    passed. An effect that did not pass gets a caveat saying why, and is to be
    worded as an association.
    """
    harness = verdicts() if harness is None else harness
    out = []
    for r in rows:
        r = dict(r)
        missing = [c for c in COLUMNS if c not in r]
        if missing:
            raise ValueError(f"finding {r.get('key')!r} lacks column(s) {missing}")
        v = harness.get(r["key"])
        if r["kind"] == "effect":
            r["causal"] = _passed(v)
            if not r["causal"]:
                why = _why_not(v)
                r["caveat"] = (r["caveat"] + " " if r["caveat"] else "") + why
        out.append(r)
    df = pd.DataFrame(out, columns=list(COLUMNS))
    for c in ("n", "n_clusters"):
        df[c] = pd.array(df[c], dtype="Int64")
    df["causal"] = df["causal"].astype(bool)
    return df


def _why_not(v: Mapping[str, Any] | None) -> str:
    if not v:
        return "Its interval has not been checked on replicate studies, so it is read as an association."
    cov, bias = v.get("coverage"), v.get("bias_se")
    lo, hi = COVERAGE_TARGET
    parts = []
    if cov is not None and not (lo <= cov <= hi):
        parts.append(f"its 95% interval covered the truth in {100 * cov:.0f}% of replicate studies (target {100 * lo:.0f}-{100 * hi:.0f}%)")
    if bias is not None and abs(bias) > BIAS_TARGET_SE:
        parts.append(f"its bias was {bias:+.2f} standard errors (target within ±{BIAS_TARGET_SE})")
    detail = " and ".join(parts) or "it did not pass the replicate-study check"
    return f"Read as an association: {detail}."


def truth_check(table: pd.DataFrame, truth: Mapping[str, Any] | None) -> pd.DataFrame | None:
    """Each finding beside its observed-scale truth from ``truth.json["observed"]``.

    Returns None when ``truth`` is None (real data). Columns: ``key, finding,
    estimate, ci_low, ci_high, truth, inside_ci, latent`` (the latent
    structural value where one corresponds, else NaN).
    """
    if not truth:
        return None
    observed = truth.get("observed", {})
    rows = []
    for r in table.itertuples(index=False):
        t = observed.get(r.key)
        if t is None:
            continue
        value = float(t["value"]) if isinstance(t, Mapping) else float(t)
        latent = t.get("latent", math.nan) if isinstance(t, Mapping) else math.nan
        inside = bool(r.ci_low <= value <= r.ci_high) if np.isfinite(r.ci_low) and np.isfinite(r.ci_high) else None
        rows.append({"key": r.key, "finding": r.finding, "estimate": r.estimate, "ci_low": r.ci_low,
                     "ci_high": r.ci_high, "truth": value, "inside_ci": inside,
                     "latent": float(latent) if latent is not None else math.nan})
    return pd.DataFrame(rows, columns=["key", "finding", "estimate", "ci_low", "ci_high", "truth", "inside_ci", "latent"])
