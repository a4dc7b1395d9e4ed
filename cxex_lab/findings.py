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

Reports word a finding by its ``causal`` flag: "goes with", never "drives" or
"leads to", unless the harness supports it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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
#: Optional columns a row may carry (read by :mod:`cxex_lab.present`).
OPTIONAL_COLUMNS: tuple[str, ...] = ("sentence", "headline")

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
    sentence: str | None = None,
    headline: bool = False,
) -> dict[str, Any]:
    """One row of a findings table (``causal`` is filled in by :func:`findings_table`).

    ``sentence`` is an optional template for the report's key-finding sentence
    (placeholders in :mod:`cxex_lab.present`: ``{value}``, ``{interval}``,
    ``{unit}``, ``{link}``, ``{sign:up|down}``, ...); ``headline`` marks the rows
    the "Key findings" section and the landing page state first.
    """
    if kind not in KINDS:
        raise ValueError(f"finding {key!r}: kind must be one of {KINDS}, got {kind!r}")
    return {
        "key": key, "finding": finding, "estimand": estimand,
        "estimate": float(estimate) if estimate is not None else np.nan,
        "ci_low": float(ci_low) if ci_low is not None else np.nan,
        "ci_high": float(ci_high) if ci_high is not None else np.nan,
        "unit": unit, "n": n, "n_clusters": n_clusters, "method": method, "kind": kind,
        "causal": False, "caveat": caveat, "sentence": sentence, "headline": bool(headline),
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
    extra = [c for c in OPTIONAL_COLUMNS if any(c in r for r in out)]
    df = pd.DataFrame(out, columns=list(COLUMNS) + extra)
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


def truth_check(table: pd.DataFrame, truth: Mapping[str, Any] | None,
                latent: Mapping[str, float] | None = None) -> pd.DataFrame | None:
    """Each finding beside its observed-scale truth (``truth.json["observed"]``) and latent value.

    Parameters
    ----------
    table : DataFrame
        A findings table.
    truth : mapping or None
        The simulator's truth record; None on real data (then None is returned).
    latent : mapping, optional
        ``{key: latent structural value}`` for findings that correspond to a
        parameter of the simulator (e.g. a within-employee lag).

    Returns
    -------
    DataFrame or None
        ``key, finding, estimate, ci_low, ci_high, truth, inside_ci, latent``:
        ``truth`` is the observed-scale truth (the value the estimator converges
        to on the observed pipeline, NaN where none is recorded), ``inside_ci``
        whether the interval covers it. Rows with neither an observed nor a
        latent truth are left out.
    """
    if not truth:
        return None
    observed = truth.get("observed", {}) or {}
    latent = dict(latent or {})
    rows = []
    for r in table.itertuples(index=False):
        t = observed.get(r.key)
        lat = latent.get(r.key, math.nan)
        if t is None and not np.isfinite(lat):
            continue
        value = (float(t["value"]) if isinstance(t, Mapping) else float(t)) if t is not None else math.nan
        if not np.isfinite(lat) and isinstance(t, Mapping) and t.get("latent") is not None:
            lat = float(t["latent"])
        has_ci = np.isfinite(r.ci_low) and np.isfinite(r.ci_high) and np.isfinite(value)
        inside = bool(r.ci_low <= value <= r.ci_high) if has_ci else None
        rows.append({"key": r.key, "finding": r.finding, "estimate": r.estimate, "ci_low": r.ci_low,
                     "ci_high": r.ci_high, "truth": value, "inside_ci": inside, "latent": float(lat)})
    return pd.DataFrame(rows, columns=["key", "finding", "estimate", "ci_low", "ci_high", "truth", "inside_ci", "latent"])


# =========================================================================== shared by the report functions
def _workspace(obj: Any, segment: Any = "all"):
    """A :class:`cxex_lab.workspace.Workspace` from a workspace, a Study or a study / workspace path."""
    from cxex_lab.workspace import Workspace

    if isinstance(obj, Workspace):
        return obj if segment in (None, "all") else obj.with_segment(segment)
    return Workspace.open(obj, segment=segment)


def _notes(*sources: Any) -> list[str]:
    """Interpretive notes from fit records, lists of strings or strings, without repeats."""
    out: list[str] = []
    for src in sources:
        if src is None:
            continue
        items = getattr(src, "notes", src)
        if isinstance(items, str):
            items = [items]
        for n in items or ():
            n = " ".join(str(n).split())
            if n and n not in out:
                out.append(n)
    return out


#: Estimator notes that only keep the books (rows without a value left out, and the like): the
#: counts behind each finding are in its ``n``, so reports do not repeat them as "Note" boxes.
_BOOKKEEPING = re.compile(r"were left out|left out of the within fit|have no prior period|rows? with a missing value",
                          re.IGNORECASE)


def _finish(report: str, ws: Any, rows: list[dict], details: Mapping[str, pd.DataFrame] | None = None,
            notes: Iterable[str] = (), latent: Mapping[str, float] | None = None) -> Findings:
    """Assemble a report's Findings (table, details, notes, truth check).

    Notes that only keep the books (see ``_BOOKKEEPING``) are dropped; notes that
    matter for interpretation (non-convergence, few clusters, an estimate at the
    edge of what the data support, what could not be estimated) are kept.
    """
    table = findings_table(rows)
    kept = [n for n in _notes(list(notes)) if not _BOOKKEEPING.search(n)]
    return Findings(report=report, table=table, details={k: v for k, v in dict(details or {}).items() if v is not None},
                    notes=tuple(kept), truth=truth_check(table, getattr(ws, "truth", None), latent))


def _derived(ws: Any, *path: str, default: float = math.nan) -> float:
    """A value of the simulator's ``truth["derived"]`` (NaN on real data or when absent)."""
    node: Any = (getattr(ws, "truth", None) or {}).get("derived", {})
    for p in path:
        if not isinstance(node, Mapping) or p not in node:
            return default
        node = node[p]
    try:
        return float(node)
    except (TypeError, ValueError):
        return default


def _attempt(notes: list[str], what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` quietly; on a data problem (ValueError, a singular matrix) None and a note saying why.

    A real study can be too small or too short for one model while the rest of
    the report stands: the report then says, in words, what it could not
    estimate instead of ending in a traceback.
    """
    from cxex_lab.results import quietly

    try:
        with quietly():
            return fn(*args, **kwargs)
    except (ValueError, np.linalg.LinAlgError, ZeroDivisionError) as err:
        reason = " ".join(str(err).split())
        notes.append(f"{what} could not be estimated on this study: {reason}")
        return None


def _has(ws: Any, table: str) -> bool:
    """Whether the study has a table (optional tables may be absent in real studies)."""
    if hasattr(ws, "has"):
        return bool(ws.has(table))
    t = getattr(ws, "tables", {}).get(table)
    return t is not None


def _row(table: pd.DataFrame, **where: Any) -> pd.Series | None:
    """The first row of ``table`` matching ``column == value`` for every keyword (None if absent)."""
    m = pd.Series(True, index=table.index)
    for col, val in where.items():
        if col not in table.columns:
            return None
        m &= table[col].isna() if val is None else (table[col] == val)
    hit = table[m]
    return None if hit.empty else hit.iloc[0]


def _est(r: pd.Series | None) -> tuple[float, float, float]:
    if r is None:
        return math.nan, math.nan, math.nan
    return float(r["estimate"]), float(r.get("ci_low", math.nan)), float(r.get("ci_high", math.nan))


def _keyed(df: pd.DataFrame, key: Callable[[pd.Series], str]) -> pd.DataFrame:
    """``df`` with a ``key`` column first (detail rows the harness checks too)."""
    out = df.copy()
    out.insert(0, "key", [key(r) for _, r in out.iterrows()] if len(out) else [])
    return out


# =========================================================================== 01 data quality
def data_quality(ws: Any, *, segment: Any = "all", min_group_size: int = 5, seed: int = 0) -> Findings:
    """Findings of report 01: what was loaded, what was set aside, who answered.

    Parameters
    ----------
    ws : Workspace, Study or path
        The study (see :class:`cxex_lab.workspace.Workspace`).
    segment : str
        A site id or ``"all"``.
    min_group_size : int
        Confidentiality minimum; team x wave groups below it are counted.
    seed : int
        Unused (every report function takes it).

    Returns
    -------
    Findings
        Keys ``data_quality.employees``, ``.interactions``, ``.ex_response_rate``
        (mean over waves), ``.cx_response_rate``, ``.linked_share`` (share of CX
        answers that reach a linked employee-wave row), ``.rows_excluded``,
        ``.suppressed_groups``; per-wave response rates in ``details
        ["response_rates"]`` (keys ``data_quality.response_rate.<side>.<wave>``).
        All are counts or shares of the whole study (a census, not a sample): no
        intervals.
    """
    from cxex_lab.privacy import check_min_group_size

    check_min_group_size(min_group_size)
    ws = _workspace(ws, segment)
    overview = ws.summary()
    facts = dict(zip(overview["what"], overview["value"]))
    rates = ws.response_rates()
    ex_r = rates[(rates["side"] == "EX") & (rates["wave"] > 0)]
    cx_r = rates[(rates["side"] == "CX") & (rates["wave"] > 0)]
    ex_rate = float(ex_r["responded"].sum() / ex_r["eligible"].sum()) if ex_r["eligible"].sum() else math.nan
    cx_rate = float(cx_r["responded"].sum() / cx_r["eligible"].sum()) if cx_r["eligible"].sum() else math.nan
    panel = ws.panel("employee", "wave", ex_lag=0, loyalty=False)
    n_cx = int(ws.table("cx_responses").count().execute())
    linked = int(panel.loc[panel["n_ex"] > 0, "n_cx"].sum())
    ledger = _ledger_frame(panel).drop_duplicates().reset_index(drop=True)  # validation's entries, then linkage's
    overview = overview.assign(value=[int(v) if str(v).isdigit() else v for v in overview["value"]])
    ex = ws.ex_responses.merge(ws.employees[["employee_id", "team_id", "site_id"]], on="employee_id", how="left")
    groups = ex.groupby(["site_id", "team_id", "wave"], dropna=False).size().rename("respondents").reset_index()
    small = groups[(groups["respondents"] > 0) & (groups["respondents"] < min_group_size)]
    by_site = groups.assign(suppressed=groups.index.isin(small.index)).groupby("site_id", as_index=False).agg(
        team_waves=("team_id", "size"), below_minimum=("suppressed", "sum"))
    n_emp = int(len(ws.employees))
    n_int = int(str(facts.get("interactions", "0")).replace(",", "") or 0)
    rows = [
        finding("data_quality.employees", "Employees in the study", "employees in the employees table (or derived)",
                n_emp, unit="employees", n=n_emp, method="count", kind="descriptive"),
        finding("data_quality.interactions", "Interactions in the log", "interactions handled by these employees",
                n_int, unit="interactions", n=n_int, method="count", kind="descriptive"),
        finding("data_quality.ex_response_rate", "EX response rate", "EX answers / employees employed when each wave opened, over all waves",
                ex_rate, unit="share", n=int(ex_r["eligible"].sum()), method="census count", kind="descriptive",
                sentence="Over all waves, about {value} of the employees employed when a wave opened answered it.", headline=True),
        finding("data_quality.cx_response_rate", "CX response rate", "surveyed interactions / interactions in the wave periods",
                cx_rate, unit="share", n=int(cx_r["eligible"].sum()), method="census count", kind="descriptive",
                sentence="About {value} of the interactions have a customer survey answer.", headline=True),
        finding("data_quality.linked_share", "CX answers linked", "share of CX answers that reach an employee-wave with the employee's EX answer",
                linked / n_cx if n_cx else math.nan, unit="share", n=n_cx, method="linkage (employee x wave, EX of the same wave)",
                kind="descriptive", sentence="{value} of the CX answers could be linked to the EX answer of the agent who handled the interaction.",
                headline=True),
        finding("data_quality.rows_excluded", "Rows set aside on purpose", "rows excluded by validation and linkage, each with its reason in the ledger",
                int(ledger["rows_excluded"].sum()) if len(ledger) else 0, unit="rows", n=None, method="data-quality ledger",
                kind="descriptive"),
        finding("data_quality.suppressed_groups", "Team x wave groups suppressed for privacy",
                f"team x wave groups with fewer than {min_group_size} EX respondents", int(len(small)),
                unit="groups", n=int(len(groups)), method=f"confidentiality minimum {min_group_size}", kind="descriptive"),
    ]
    rr = _keyed(rates, lambda r: f"data_quality.response_rate.{str(r['side']).lower()}.{int(r['wave'])}")
    rr["estimate"] = rr["rate"]
    details = {"overview": overview, "ledger": ledger[["table", "rule", "rows_excluded"]],
               "response_rates": rr, "suppression_by_site": by_site}
    return _finish("data_quality", ws, rows, details)


def _ledger_frame(obj: Any) -> pd.DataFrame:
    from cxex_lab.ledger import ledger_of

    return ledger_of(obj)


# =========================================================================== 02 mirror
_MIRROR_LABEL = {"NPS": "NPS", "CSAT": "CSAT top-2-box", "CES": "CES", "eNPS": "eNPS", "eSat": "eSat top-2-box", "EES": "EES"}
_MIRROR_UNIT = {"net score": "points (-100..100)", "top-box %": "% answering 4-5", "mean": "mean answer (1-7, higher = easier)"}


def _metric_rows(stats: pd.DataFrame, by: list[str], cluster: str | None, alpha: float) -> pd.DataFrame:
    """Every metric of a mirror_stats table, by group: estimate, interval, n, clusters."""
    from cxex_lab.metrics import METRIC_STATISTIC, metric_from_cluster_stats

    parts = []
    for (side, metric), g in stats.groupby(["side", "metric"], sort=False):
        res = metric_from_cluster_stats(g, METRIC_STATISTIC[metric], by=by or None, cluster=cluster, alpha=alpha)
        res.insert(0, "metric", metric)
        res.insert(0, "side", side)
        parts.append(res)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def mirror(ws: Any, *, segment: Any = "all", cluster: str = "employee_id", ex_cluster: str = "team_id",
           min_group_size: int = 5, alpha: float = 0.05, seed: int = 0) -> Findings:
    """Findings of report 02: EX beside CX on Ease, Recommendation and Satisfaction.

    Parameters
    ----------
    ws : Workspace, Study or path
    segment : str
        A site id or ``"all"``.
    cluster : {"employee_id", "team_id"}
        The level CX intervals cluster over (default the agent who handled the
        rated interaction).
    ex_cluster : {"employee_id", "team_id"}
        The level EX intervals cluster over (default the team: within one wave
        every employee answers once, and employees of a team share their
        climate).
    min_group_size : int
        Sites (or waves) resting on fewer respondents or employees are suppressed.
    alpha : float
        1 - confidence level.
    seed : int
        Unused.

    Returns
    -------
    Findings
        Keys ``mirror.cx.<nps|csat|ces>`` (all interactions) and
        ``mirror.ex.<enps|esat|ees>`` (the latest EX wave: waves of the same
        people are never pooled); ``details``: ``by_site`` (keys
        ``mirror.site.<site>.<side>.<item>``), ``by_wave`` (keys
        ``mirror.wave.<w>.<side>.<item>``), ``site_vs_rest`` and
        ``wave_change`` (design-based differences, Holm-adjusted).

    Notes
    -----
    Intervals are the linearisation (ratio-estimator) intervals of
    :func:`cxex_lab.metrics.metric_from_cluster_stats`: answers cluster within
    agents (and agents within teams), so the interval resamples clusters, not
    answers. Sites are the company's own (fixed); site and wave differences use
    :func:`cxex_lab.metrics.compare` (waves share their agents, so the change
    between waves nets each agent's contributions).
    """
    from cxex_lab.metrics import compare
    from cxex_lab.privacy import check_min_group_size

    check_min_group_size(min_group_size)
    ws = _workspace(ws, segment)
    ex_item = {"eNPS": "enps", "eSat": "esat", "EES": "ees", "NPS": "nps", "CSAT": "csat", "CES": "ces"}

    memo: dict[tuple, pd.DataFrame] = {}
    site_col = "site_id"

    def side_stats(by: str | None, period: str | None) -> pd.DataFrame:
        """CX statistics clustered by ``cluster``, EX by ``ex_cluster``, each query run once.

        The whole-study statistics are the site-level ones added up over sites
        (an agent and a team belong to one site, so their cluster rows just
        add), which saves the engine a pass over the answers.
        """
        if (by, period) in memo:
            return memo[(by, period)]
        if by is None and period is None:
            st = side_stats(site_col, None)
            groups = [c for c in st.columns if c not in (site_col, "n", "sum", "sum_sq", "n_promoters",
                                                         "n_detractors", "n_top")]
            out = st.groupby(groups, sort=False, dropna=False)[["n", "sum", "sum_sq", "n_promoters", "n_detractors",
                                                                 "n_top"]].sum(min_count=1).reset_index()
        else:
            out = pd.concat([ws.mirror_stats(by=by, period=period, cluster=cluster, side="CX"),
                             ws.mirror_stats(by=by, period=period, cluster=ex_cluster, side="EX")], ignore_index=True)
        memo[(by, period)] = out
        return out

    overall_stats = side_stats(None, None)
    latest = int(ws.ex_responses["wave"].max())
    overall = _metric_rows(overall_stats[overall_stats["side"] == "CX"], [], cluster, alpha)
    overall = pd.concat([overall, _metric_rows(overall_stats[overall_stats["side"] == "EX"], [], ex_cluster, alpha)],
                        ignore_index=True)
    rows = []
    order = ["CSAT", "NPS", "CES", "eSat", "eNPS", "EES"]
    for metric in order:
        r = _row(overall, metric=metric)
        if r is None:
            continue
        side = "cx" if metric in ("NPS", "CSAT", "CES") else "ex"
        unit = _MIRROR_UNIT[r["statistic"]]
        basis = "all interactions" if side == "cx" else f"EX wave {latest}"
        lvl = cluster if side == "cx" else ex_cluster
        what = {"cx": "customers' answers about the interactions the agents handled", "ex": "employees' answers"}[side]
        rows.append(finding(
            f"mirror.{side}.{ex_item[metric]}", f"{_MIRROR_LABEL[metric]} ({basis})",
            f"{_MIRROR_LABEL[metric]} of the {what} ({basis})", r["estimate"], r["ci_low"], r["ci_high"],
            unit=unit, n=int(r["n"]), n_clusters=int(r["n_clusters"]),
            method=f"linearisation interval, answers clustered by {lvl.replace('_id', '')} (t, {int(r['n_clusters'])} clusters)",
            kind="descriptive", headline=metric in ("CSAT", "eSat"),
            sentence=("Customers: {value} " + unit + f" ({_MIRROR_LABEL[metric]}, {basis}).") if side == "cx"
            else ("Employees: {value} " + unit + f" ({_MIRROR_LABEL[metric]}, {basis})."),
        ))

    def grouped(by: str | None, period: str | None, key_of) -> pd.DataFrame:
        st = side_stats(by, period)
        keys = [k for k in (by, "wave" if period else None) if k]
        cx = _metric_rows(st[st["side"] == "CX"], keys, cluster, alpha)
        ex = _metric_rows(st[st["side"] == "EX"], keys, ex_cluster, alpha)
        tab = pd.concat([cx, ex], ignore_index=True)
        # privacy: respondents and employees behind each group (CX: customers / agents rated; EX: employees)
        counts = ws.cx_cluster_stats(by=by, period=period, cluster=None)
        cnt_cx = counts[keys + ["n_customers", "n_employees"]].rename(columns={"n_customers": "n_respondents"})
        exr = ws.ex_responses.merge(ws.employees[["employee_id", "site_id", "team_id"]], on="employee_id", how="left")
        if not period:
            exr = exr[exr["wave"] == latest]
        cnt_ex = exr.groupby(keys, dropna=False)["employee_id"].nunique().rename("n_respondents").reset_index() \
            if keys else pd.DataFrame({"n_respondents": [exr["employee_id"].nunique()]})
        cnt_ex["n_employees"] = cnt_ex["n_respondents"]
        parts = []
        for side, cnt in (("CX", cnt_cx), ("EX", cnt_ex)):
            t = tab[tab["side"] == side]
            t = t.merge(cnt, on=keys, how="left") if keys else t.assign(**cnt.iloc[0].to_dict())
            parts.append(t)
        tab = pd.concat(parts, ignore_index=True)
        small = (tab["n_respondents"].fillna(0) < min_group_size) | (tab["n_employees"].fillna(0) < min_group_size)
        for c in ("estimate", "se", "ci_low", "ci_high"):
            tab[c] = tab[c].astype("float64").where(~small)
        tab["suppressed"] = small
        tab["item"] = tab["metric"].map(ex_item)
        tab["dimension"] = tab["metric"].map({"NPS": "Recommendation", "eNPS": "Recommendation", "CSAT": "Satisfaction",
                                              "eSat": "Satisfaction", "CES": "Ease", "EES": "Ease"})
        tab["unit"] = tab["statistic"].map(_MIRROR_UNIT)
        tab = _keyed(tab, key_of)
        cols = ["key", *keys, "side", "dimension", "metric", "statistic", "estimate", "ci_low", "ci_high", "unit", "n",
                "n_clusters", "suppressed"]
        return tab[cols].sort_values([*keys, "dimension", "side"], kind="stable").reset_index(drop=True)

    by_site = grouped("site_id", None, lambda r: f"mirror.site.{r['site_id']}.{r['side'].lower()}.{r['item']}")
    by_wave = grouped(None, "wave", lambda r: f"mirror.wave.{int(r['wave'])}.{r['side'].lower()}.{r['item']}")
    overall = overall.assign(unit=overall["statistic"].map(_MIRROR_UNIT))[
        ["side", "metric", "estimate", "ci_low", "ci_high", "unit", "n", "n_clusters"]]
    details: dict[str, pd.DataFrame] = {"overall": overall, "by_site": by_site, "by_wave": by_wave}
    notes: list[str] = []

    # design-based comparisons (the site and wave views are where false alarms came from)
    site_stats = side_stats("site_id", None)
    n_sites = site_stats["site_id"].nunique()
    if n_sites >= 2:
        parts = []
        for side, lvl in (("CX", cluster), ("EX", ex_cluster)):
            st = site_stats[site_stats["side"] == side]
            if len(st):
                parts.append(compare(st, between="site_id", cluster=lvl, reference="rest", alpha=alpha))
        svr = pd.concat(parts, ignore_index=True)
        small_sites = {str(s) for s in by_site.loc[by_site["suppressed"], "site_id"]}
        svr = svr[~svr.apply(lambda r: any(str(s) in small_sites for s in (r.get("level"),)), axis=1)] if "level" in svr.columns else svr
        svr = svr.assign(p=svr["p_adj"])[["side", "metric", "contrast", "estimate", "ci_low", "ci_high", "p",
                                            "n_clusters"]].reset_index(drop=True)
        sig = svr[svr["p"] < alpha].sort_values(["side", "metric", "estimate"], kind="stable").reset_index(drop=True)
        details["site_vs_rest_all"] = svr
        details["site_differences"] = sig
        notes.append(f"{len(sig)} of {len(svr)} site-versus-rest differences stay significant after the Holm correction "
                     f"for {len(svr)} comparisons; the others are within what chance produces." if len(svr) else "")
    else:
        notes.append("Only one site: no site comparison.")
    wave_stats = side_stats(None, "wave")
    waves = sorted(wave_stats["wave"].dropna().unique())
    if len(waves) >= 2:
        parts = []
        for side, lvl in (("CX", cluster), ("EX", ex_cluster)):
            st = wave_stats[wave_stats["side"] == side]
            if len(st):
                parts.append(compare(st, between="wave", cluster=lvl, reference="previous", alpha=alpha))
        wc = pd.concat(parts, ignore_index=True)
        wc = wc.assign(p=wc["p_adj"])
        details["wave_change_all"] = wc[["side", "metric", "contrast", "level", "estimate", "ci_low", "ci_high", "p",
                                         "n_clusters"]].reset_index(drop=True)
        latest_change = wc[wc["level"].astype(str) == str(int(waves[-1]))]
        details["wave_change"] = latest_change[["side", "metric", "contrast", "estimate", "ci_low", "ci_high", "p",
                                                "n_clusters"]].reset_index(drop=True)
        last = wc[wc.get("level", pd.Series(dtype=object)).astype(str) == str(int(waves[-1]))] if "level" in wc.columns else wc.iloc[0:0]
        r = _row(last, side="CX", metric="CSAT") if len(last) else None
        if r is not None:
            rows.append(finding(
                "mirror.change.cx.csat", f"CSAT top-2-box change, wave {int(waves[-2])} to {int(waves[-1])}",
                "change in the share of customers answering 4-5 between the last two wave periods",
                r["estimate"], r["ci_low"], r["ci_high"], unit="percentage points", n=int(r.get("n", 0) or 0) or None,
                n_clusters=int(r["n_clusters"]) if "n_clusters" in r and pd.notna(r["n_clusters"]) else None,
                method=f"design-based difference, agents shared by both waves (clustered by {cluster.replace('_id', '')})",
                kind="descriptive"))
    return _finish("mirror", ws, rows, details, notes)


# =========================================================================== 03 linkage
_EX_LABEL = {"esat": "eSat", "enps": "eNPS", "ees": "EES"}
_CX_LABEL = {"csat": "CSAT", "nps": "NPS", "ces": "CES"}
_LEVEL_WORD = {"team_id": ("team", "teams"), "site_id": ("site", "sites")}
#: Short readings of :func:`cxex_lab.agreement.agreement`'s verdicts (table cells).
_AGG_SHORT = {
    "supported": "supported: agree, reliable",
    "reliable means, members disagree": "disagree: means reliable, members differ",
    "members agree, unreliable means": "disagree: members agree, means unreliable",
    "not supported": "not supported: differ, unreliable",
    "undetermined": "could not be determined",
}
_NULL_WORD = {"uniform": "a uniform null", "slight_skew": "a slightly skewed null",
              "moderate_skew": "a moderately skewed null", "heavy_skew": "a heavily skewed null",
              "triangular": "a triangular null", "normal": "a normal null"}
#: Fewest clusters for a bootstrap interval (below it the interval is left out, with a note).
_MIN_BOOT_CLUSTERS = 10


def _scale_points(item: str) -> int:
    from cxex_lab.contract import SCALES

    lo, hi = SCALES.get(item, (1, 5))
    return int(hi - lo + 1)


def _agreement_by_wave(ex: pd.DataFrame, level: str, items: list[str], nulls: list[str]
                       ) -> tuple[pd.DataFrame, list[str]]:
    """Per-wave agreement rows for one grouping level, and why waves could not be computed."""
    from cxex_lab.agreement import agreement

    parts, why = [], []
    for w, sub in ex.groupby("wave", sort=True):
        present = [c for c in items if sub[c].notna().any()]
        if not present:
            continue
        try:
            parts.append(agreement(sub, level, values=present, scale_points={c: _scale_points(c) for c in present},
                                   wave="wave", person="employee_id", null=nulls))
        except ValueError as exc:
            why.append(str(exc))
    tab = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(tab):
        tab.insert(0, "level", level)
    return tab, why


def _agreement_summary(tab: pd.DataFrame, nulls: list[str]) -> pd.DataFrame:
    """Per level x item: medians over waves of ICC(1), ICC(2), mean r_wg per null, and the verdict."""
    from cxex_lab.agreement import _reading

    rows = []
    for (level, value), g in tab.groupby(["level", "value"], sort=False):
        first = g[g["null"] == nulls[0]]
        rec = {"level": _LEVEL_WORD.get(level, (level, level))[0], "item": _EX_LABEL.get(value, value),
               "waves": int(first["wave"].nunique()), "groups": int(first["n_groups"].median()),
               "answers_per_group": float(first["k"].median()),
               "icc1": float(first["icc1"].median()), "icc2": float(first["icc2"].median()),
               "icc2_min": float(first["icc2"].min()), "icc2_max": float(first["icc2"].max())}
        for nl in nulls:
            rec[f"rwg_{nl}"] = float(g.loc[g["null"] == nl, "rwg_mean"].mean())
        verdict, _ = _reading(rec["icc2"], rec[f"rwg_{nulls[0]}"])
        rec["reading"] = _AGG_SHORT.get(verdict, verdict)
        rows.append(rec)
    return pd.DataFrame(rows)


def _cluster_multiplicities(codes: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, G) multiplicities of G units when their clusters (``codes`` 0..C-1) are resampled."""
    n_cl = int(codes.max()) + 1
    draws = rng.integers(0, n_cl, size=(n_boot, n_cl))
    counts = np.stack([np.bincount(d, minlength=n_cl) for d in draws]).astype(float)
    return counts[:, codes]


def _corr_parts(m: np.ndarray, s: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pooled, between-unit and within-unit correlations and slopes from per-unit sums.

    ``m`` (B, G) are unit multiplicities (a row of ones: the sample itself);
    ``s`` holds per-unit ``n, sx, sy, sxx, syy, sxy``. Exact for any panel:
    the pooled scatter of x and y is the within-unit scatter plus the
    row-weighted scatter of the unit means, so ``share_between`` (the share
    of the pooled covariance carried by stable differences between units) and
    the within share add up to 1.
    """
    n, sx, sy, sxx, syy, sxy = (s[k] for k in ("n", "sx", "sy", "sxx", "syy", "sxy"))
    with np.errstate(invalid="ignore", divide="ignore"):
        N, X, Y = m @ n, m @ sx, m @ sy
        cxx, cyy, cxy = m @ sxx - X * X / N, m @ syy - Y * Y / N, m @ sxy - X * Y / N
        wxx, wyy, wxy = m @ (sxx - sx**2 / n), m @ (syy - sy**2 / n), m @ (sxy - sx * sy / n)
        mx, my = sx / n, sy / n
        M = m.sum(axis=1)
        bx, by = (m @ mx) / M, (m @ my) / M
        bxx, byy, bxy = m @ mx**2 - M * bx**2, m @ my**2 - M * by**2, m @ (mx * my) - M * bx * by
        return {
            "total": cxy / np.sqrt(cxx * cyy), "between": bxy / np.sqrt(bxx * byy),
            "within": wxy / np.sqrt(wxx * wyy), "share_between": (cxy - wxy) / cxy,
            "slope_total": cxy / cxx, "slope_between": bxy / bxx, "slope_within": wxy / wxx,
        }


def _unit_sums(df: pd.DataFrame, x: str, y: str, unit: str) -> pd.DataFrame:
    d = df[[unit, x, y]].assign(_xx=df[x] ** 2, _yy=df[y] ** 2, _xy=df[x] * df[y])
    g = d.groupby(unit, sort=True)
    return pd.DataFrame({"n": g.size().astype(float), "sx": g[x].sum(), "sy": g[y].sum(), "sxx": g["_xx"].sum(),
                         "syy": g["_yy"].sum(), "sxy": g["_xy"].sum()})


def _boot_parts(df: pd.DataFrame, x: str, y: str, unit: str, cluster: str, n_boot: int, seed: Any,
                alpha: float) -> tuple[dict[str, float], dict[str, tuple[float, float]], int, int]:
    """Point values of :func:`_corr_parts` and their cluster-bootstrap percentile intervals.

    Returns (estimates, intervals, number of clusters, failed replicates).
    """
    sums = _unit_sums(df, x, y, unit)
    s = {k: sums[k].to_numpy(float) for k in sums.columns}
    point = {k: float(v[0]) for k, v in _corr_parts(np.ones((1, len(sums))), s).items()}
    cl = df.groupby(unit, sort=True)[cluster].first().reindex(sums.index) if cluster != unit else sums.index.to_series()
    codes = pd.factorize(cl, sort=True)[0]
    n_cl = int(codes.max()) + 1 if len(codes) else 0
    ci = {k: (math.nan, math.nan) for k in point}
    failed = 0
    if n_boot and n_cl >= _MIN_BOOT_CLUSTERS:
        rng = np.random.default_rng(seed)
        reps = {k: [] for k in point}
        for start in range(0, n_boot, 500):
            m = _cluster_multiplicities(codes, min(500, n_boot - start), rng)
            for k, v in _corr_parts(m, s).items():
                reps[k].append(v)
        q = (100 * alpha / 2, 100 * (1 - alpha / 2))
        for k, parts in reps.items():
            a = np.concatenate(parts)
            ok = np.isfinite(a)
            if k == "total":
                failed = int((~ok).sum())
            if ok.sum() >= 0.9 * n_boot:
                lo, hi = np.percentile(a[ok], q)
                ci[k] = (float(lo), float(hi))
    return point, ci, n_cl, failed


def _critical_r(k: int, alpha: float) -> float:
    """|r| a correlation of k independent points must exceed to differ from 0 at level alpha (two-sided)."""
    from scipy import stats

    df = k - 2
    t = stats.t.ppf(1 - alpha / 2, df)
    return float(t / math.sqrt(df + t * t))


def _fisher_ci(r: float, k: int, alpha: float) -> tuple[float, float]:
    from scipy import stats

    if k <= 3 or not np.isfinite(r) or abs(r) >= 1:
        return math.nan, math.nan
    z, half = math.atanh(r), stats.norm.ppf(1 - alpha / 2) / math.sqrt(k - 3)
    return math.tanh(z - half), math.tanh(z + half)


def linkage(ws: Any, *, segment: Any = "all", min_group_size: int = 5, seed: int = 0, alpha: float = 0.05,
            n_boot: int = 1000, cluster: str = "team_id", ex: str = "esat", cx: str = "csat",
            nulls: Iterable[str] = ("uniform", "slight_skew")) -> Findings:
    """Findings of report 03: how do we link what employees feel to what their customers experience?

    Parameters
    ----------
    ws : Workspace, Study or path
        The study (see :class:`cxex_lab.workspace.Workspace`).
    segment : str
        A site id or ``"all"``.
    min_group_size : int
        Confidentiality minimum: team x wave rows with fewer EX respondents or
        CX answers are suppressed in the team-level view ("n < 5").
    seed : int
        Seed of the cluster bootstrap.
    alpha : float
        1 - confidence level.
    n_boot : int
        Cluster-bootstrap replicates of the correlation intervals (0: no
        intervals).
    cluster : {"team_id", "employee_id"}
        The level the bootstrap of the linked correlations resamples (default
        the team, with all its employees and waves: employees of a team share
        its climate; with fewer than 10 teams it falls back to employees, with
        a note). On 60 replicate studies of the sample's design the team
        bootstrap's intervals of the linked correlation had a width matching
        the replicates' spread (0.099 against 2 x 1.96 x SD = 0.098), the
        employee bootstrap's were narrower (0.093).
    ex, cx : str
        The EX item (``"esat"``) and the CX item (``"csat"``) that are linked.
    nulls : list of str
        No-agreement distributions for r_wg (:data:`cxex_lab.agreement.NULLS`):
        the uniform one and at least one skewed one.

    Returns
    -------
    Findings
        Keys (all associations or descriptive):

        * ``linkage.linked.corr``: the linked correlation (employee x wave: an
          employee's EX answer of wave w against the mean CX of the
          interactions that employee handled in wave period w, i.e. after the
          survey opened), cluster-bootstrap interval;
        * ``linkage.linked.between_corr`` (employee means),
          ``linkage.linked.within_corr`` (deviations from the employee's own
          mean) and ``linkage.linked.between_share`` (share of the pooled
          covariance carried by stable differences between employees);
        * ``linkage.company.corr``: the naive company-level correlation of
          wave means (no interval below 10 waves);
        * ``linkage.team.corr``: team x wave means (privacy applied), team
          bootstrap;
        * ``linkage.agreement.team.<ex>.icc1`` / ``.icc2`` / ``.rwg`` /
          ``.rwg_<skewed null>``: per-wave agreement for averaging EX to
          teams (medians / means over waves);
        * ``linkage.cx_reliability.<cx>.icc2`` / ``.icc1`` / ``.answers``:
          reliability of agent-wave CX means.

        ``details``: ``agreement_summary`` (level x EX item), ``agreement_by_wave``
        (the EX item at team level, per wave), ``agreement_all`` (every wave,
        item, level and null), ``cx_reliability`` (per wave and CX item),
        ``correlations`` (the views side by side), ``decomposition`` (slopes,
        keys ``linkage.linked.slope.<total|between|within>``), ``company``
        (wave means), ``by_answer`` (mean CX by EX answer),
        ``teams`` (latest wave, small teams suppressed).

    Notes
    -----
    *Agreement* is computed per wave (:func:`cxex_lab.agreement.agreement`
    with ``wave=`` and ``person=``): within a wave each employee answers once,
    in their team (direct-consensus composition); pooling waves would count
    each person up to W times and overstate ICC(2). *Reliability of agent-wave
    CX means* comes from the per-agent-wave counts, sums and sums of squares
    computed in the engine (:func:`cxex_lab.agreement.reliability_from_sums`,
    checked equal to :func:`~cxex_lab.agreement.reliability` on the answers).
    *The linked correlation and its parts* come from per-employee sums; the
    cluster bootstrap resamples teams (or employees) with all their waves,
    vectorised over replicates. The pooled scatter of EX and CX is exactly the
    within-employee scatter plus the scatter of employee means, so the
    between share and the within share add up to 1.
    """
    from cxex_lab.agreement import _reading, reliability_from_sums
    from cxex_lab.privacy import check_min_group_size, suppress_small_groups

    check_min_group_size(min_group_size)
    nulls = [nulls] if isinstance(nulls, str) else list(nulls)
    if cluster not in ("employee_id", "team_id"):
        raise ValueError(f"linkage: cluster must be 'employee_id' or 'team_id', got {cluster!r}")
    ws = _workspace(ws, segment)
    exl, cxl = _EX_LABEL.get(ex, ex), _CX_LABEL.get(cx, cx)
    rows: list[dict] = []
    notes: list[str] = []
    details: dict[str, pd.DataFrame] = {}

    # ------------------------------------------------------------------ the linked panel and the views
    panel = employee_wave_panel(ws, ex=ex, cx=cx)
    linked = panel.dropna(subset=[ex, cx])
    n_emp = int(linked["employee_id"].nunique())
    exr = ws.ex_responses.merge(ws.employees[["employee_id", "team_id", "site_id"]], on="employee_id", how="left")
    cx_wave = ws.cx_cluster_stats(period="wave", cluster=None)
    company = (exr.dropna(subset=[ex]).groupby("wave").agg(ex_mean=(ex, "mean"), n_ex=(ex, "size"))
               .join(cx_wave.set_index("wave").assign(cx_mean=lambda d: d[f"{cx}_sum"] / d[f"{cx}_n"],
                                                      n_cx=lambda d: d[f"{cx}_n"])[["cx_mean", "n_cx"]], how="inner")
               .dropna().reset_index())
    company = company[(company["n_ex"] > 0) & (company["n_cx"] > 0)].reset_index(drop=True)
    details["company"] = company.rename(columns={"ex_mean": f"{ex}_mean", "cx_mean": f"{cx}_mean"})

    # linked: pooled, between, within (cluster bootstrap)
    corr_rows = []
    corr_caveat = ("An association, not an effect: stable differences between employees, teams and sites move "
                   "EX and CX together (report 06 separates within-employee change).")
    if n_emp >= 3 and len(linked) >= 4:
        use = cluster
        n_teams_linked = int(linked["team_id"].nunique())
        if cluster == "team_id" and n_boot and n_teams_linked < _MIN_BOOT_CLUSTERS and n_emp >= _MIN_BOOT_CLUSTERS:
            use = "employee_id"
            notes.append(f"Only {n_teams_linked} team(s): the linked correlations' intervals resample employees "
                         "instead of teams, and are too narrow if teams differ (employees of a team share its climate).")
        point, ci, n_cl, failed = _boot_parts(linked, ex, cx, "employee_id", use, n_boot, seed, alpha)
        lvl = use.replace("_id", "")
        boot_txt = (f"cluster bootstrap over {lvl}s ({n_boot} replicates, percentile interval)" if n_boot else
                    "no interval (n_boot=0)")
        if n_boot and n_cl < _MIN_BOOT_CLUSTERS:
            boot_txt = f"no interval: only {n_cl} {lvl}s (a cluster bootstrap needs at least {_MIN_BOOT_CLUSTERS})"
            notes.append(f"The linked correlations have no interval: they rest on only {n_cl} {lvl}s, too few for "
                         f"a cluster bootstrap (at least {_MIN_BOOT_CLUSTERS}; about 30 for a reliable one).")
        elif n_boot and n_cl < 30:
            notes.append(f"The linked correlations' intervals rest on only {n_cl} {lvl}s; cluster-bootstrap "
                         "intervals are unreliable with fewer than about 30 clusters.")
        if failed:
            notes.append(f"{failed} of {n_boot} bootstrap replicates gave no correlation (no variation among the "
                         "resampled employees) and were left out.")
        n_rows = len(linked)
        multi = int((linked.groupby("employee_id").size() >= 2).sum())
        comp_txt = ""
        if len(company) >= 3:
            r_c = float(np.corrcoef(company["ex_mean"], company["cx_mean"])[0, 1])
            if np.isfinite(r_c):
                comp_txt = (f" The naive company-level correlation of wave means is {r_c:.2f}, from only "
                            f"{len(company)} points.")
        rows.append(finding(
            "linkage.linked.corr", f"Linked correlation of {exl} and next-period {cxl} (employee x wave)",
            f"Pearson correlation, over employee-waves, of an employee's {exl} answer and the mean {cxl} of the "
            f"interactions that employee handled in the period after the survey opened",
            point["total"], *ci["total"], unit="correlation (r)", n=n_rows, n_clusters=n_cl,
            method=f"Pearson r over linked employee-waves; {boot_txt}", kind="association", caveat=corr_caveat,
            sentence=(f"Linked employee by employee, an employee's {exl} goes with the {cxl} of the interactions "
                      f"that employee handles in the following period: r = {{value}}.{comp_txt}"),
            headline=True))
        share_sentence = ("Stable differences between employees carry {value} of this linked association: the "
                          f"correlation of employee means is {point['between']:.2f}, that of an employee's changes "
                          f"from their own usual level {point['within']:.2f}." if np.isfinite(point["within"]) else
                          "Stable differences between employees carry {value} of this linked association.")
        if multi >= 3 and np.isfinite(point["share_between"]):
            rows.append(finding(
                "linkage.linked.between_share", "Share of the linked association due to stable differences between employees",
                f"share of the covariance of {exl} and next-period {cxl} over employee-waves that lies between employee "
                "means (the rest is within-employee change)", point["share_between"], *ci["share_between"],
                unit="share", n=n_rows, n_clusters=n_cl, method=f"exact covariance decomposition; {boot_txt}",
                kind="descriptive", sentence=share_sentence, headline=True,
                caveat="Only within-employee change can speak to an effect of an employee's EX on their customers; the "
                       "between part mixes in stable traits, teams and sites."))
        rows.append(finding(
            "linkage.linked.between_corr", "Between employees: correlation of employee means",
            f"Pearson correlation, over employees, of the employee's mean {exl} and mean next-period {cxl}",
            point["between"], *ci["between"], unit="correlation (r)", n=n_emp, n_clusters=n_cl,
            method=f"Pearson r of employee means; {boot_txt}", kind="association",
            caveat="Stable differences (traits, team climate, site) are confounded with any effect."))
        if multi >= 3 and np.isfinite(point["within"]):
            rows.append(finding(
                "linkage.linked.within_corr", "Within employees: correlation of changes from the employee's own mean",
                f"Pearson correlation, over employee-waves, of {exl} and next-period {cxl} as deviations from the "
                "employee's own means", point["within"], *ci["within"], unit="correlation (r)", n=n_rows,
                n_clusters=n_cl, method=f"Pearson r of within-employee deviations; {boot_txt}", kind="association",
                caveat="Deviations still share wave-wide changes; report 06 estimates the within-employee effect "
                       "with employee and wave fixed effects."))
        else:
            notes.append(f"The within-employee correlation, and the split of the linked association into stable "
                         f"differences and change, need at least 3 employees with two or more linked waves; this study "
                         f"has {multi}.")
        views = [("Linked: employee x wave", "total", n_rows), ("Between employees (employee means)", "between", n_emp),
                 ("Within employees (change from own mean)", "within", n_rows)]
        for label, k, n_ in views:
            if k == "within" and multi < 3:
                continue
            corr_rows.append({"view": label, "estimate": point[k], "ci_low": ci[k][0], "ci_high": ci[k][1],
                              "unit": "correlation (r)", "n": n_, "n_clusters": n_cl})
        dec = []
        for k, label, n_ in (("slope_total", "Linked: employee x wave", n_rows),
                             ("slope_between", "Between employees (employee means)", n_emp),
                             ("slope_within", "Within employees (change from own mean)", n_rows)):
            if k == "slope_within" and multi < 3:
                continue
            dec.append({"key": f"linkage.linked.slope.{k.split('_')[1]}", "view": label, "estimate": point[k],
                        "ci_low": ci[k][0], "ci_high": ci[k][1], "unit": f"{cxl} points per {exl} point",
                        "n": n_, "n_clusters": n_cl})
        details["decomposition"] = pd.DataFrame(dec)
    else:
        notes.append(f"The linked correlation needs at least 3 employees with both an {exl} answer and {cxl} answers "
                     f"about their interactions in the following period; this study has {n_emp}.")

    # company level: wave means
    k_w = len(company)
    if k_w >= 3:
        r_c = float(np.corrcoef(company["ex_mean"], company["cx_mean"])[0, 1])
        lo, hi = (_fisher_ci(r_c, k_w, alpha) if k_w >= 10 else (math.nan, math.nan))
        cav = (f"Rests on only {k_w} points (waves): too few for an interval; with {k_w} points a correlation must "
               f"exceed {_critical_r(k_w, alpha):.2f} in size to be told apart from zero, and wave means share every "
               "company-wide change." if k_w < 10 else
               "Fisher-z interval treating the waves as independent; wave means share every company-wide change.")
        rows.append(finding(
            "linkage.company.corr", f"Company-level correlation of wave means ({exl} vs {cxl})",
            f"Pearson correlation of the mean {exl} of each wave and the mean {cxl} of that wave's period",
            r_c, lo, hi, unit="correlation (r)", n=k_w, method="Pearson r of wave means (one point per wave)"
            + ("; Fisher-z interval" if k_w >= 10 else "; no interval below 10 points"), kind="association",
            caveat=cav))
        corr_rows.insert(0, {"view": "Company level: wave means", "estimate": r_c, "ci_low": lo, "ci_high": hi,
                             "unit": "correlation (r)", "n": k_w, "n_clusters": pd.NA})
    else:
        notes.append(f"The company-level correlation of wave means needs at least 3 waves with EX and CX answers; "
                     f"this study has {k_w}.")

    # ------------------------------------------------------------------ team level, privacy applied
    team_ex = (panel[panel["n_ex"] > 0].dropna(subset=[ex]).groupby(["team_id", "wave"])
               .agg(site_id=("site_id", "first"), respondents=(ex, "size"), ex_mean=(ex, "mean")))
    cx_team = ws.cx_cluster_stats(by="team_id", period="wave", cluster=None)
    cx_team = cx_team.assign(cx_mean=cx_team[f"{cx}_sum"] / cx_team[f"{cx}_n"].where(cx_team[f"{cx}_n"] > 0),
                             cx_answers=cx_team[f"{cx}_n"]).set_index(["team_id", "wave"])[["cx_answers", "cx_mean"]]
    teams = team_ex.join(cx_team, how="outer").reset_index()
    teams["site_id"] = teams["site_id"].fillna(teams["team_id"].map(ws.employees.groupby("team_id")["site_id"].first()))
    teams["respondents"] = teams["respondents"].fillna(0).astype("int64")
    teams["n_cx"] = teams.pop("cx_answers").fillna(0).astype("int64")
    teams = suppress_small_groups(teams, ["respondents", "n_cx"], ["ex_mean", "cx_mean"],
                                  min_group_size=min_group_size)
    shown = teams[~teams["suppressed"]].dropna(subset=["ex_mean", "cx_mean"])
    n_sup = int(teams["suppressed"].sum())
    if n_sup:
        notes.append(f"{n_sup} of {len(teams)} team x wave rows have fewer than {min_group_size} EX respondents or CX "
                     f"answers: their means are suppressed (shown as n < {min_group_size}) and left out of the "
                     "team-level correlation.")
    n_teams = int(shown["team_id"].nunique())
    if n_teams >= 3 and len(shown) >= 4:
        tpoint, tci, t_cl, _ = _boot_parts(shown, "ex_mean", "cx_mean", "team_id",
                                           "team_id", n_boot, None if seed is None else seed + 1, alpha)
        how = (f"cluster bootstrap over teams ({n_boot} replicates)" if n_boot and t_cl >= _MIN_BOOT_CLUSTERS
               else f"no interval: only {t_cl} teams" if n_boot else "no interval (n_boot=0)")
        rows.append(finding(
            "linkage.team.corr", f"Team-level correlation of mean {exl} and mean next-period {cxl}",
            f"Pearson correlation, over team x wave rows not suppressed for privacy, of the team's mean {exl} and the "
            f"mean {cxl} of its interactions in the period after the survey", tpoint["total"], *tci["total"],
            unit="correlation (r)", n=len(shown), n_clusters=t_cl, method=f"Pearson r of team x wave means; {how}",
            kind="association", caveat="Team means mix team climate, site and who happened to answer."))
        corr_rows.append({"view": "Team level: team x wave means", "estimate": tpoint["total"], "ci_low": tci["total"][0],
                          "ci_high": tci["total"][1], "unit": "correlation (r)", "n": len(shown), "n_clusters": t_cl})
    else:
        notes.append(f"The team-level correlation needs at least 3 teams with team x wave rows above the "
                     f"confidentiality minimum ({min_group_size}); this study has {n_teams}.")
    latest = int(teams["wave"].max()) if len(teams) else None
    if latest is not None:
        t_last = teams[teams["wave"] == latest].sort_values(["site_id", "team_id"])
        details["teams"] = t_last[["site_id", "team_id", "respondents", "ex_mean", "n_cx", "cx_mean",
                                   "suppressed"]].rename(columns={"ex_mean": f"{ex}_mean", "cx_mean": f"{cx}_mean"}
                                                          ).reset_index(drop=True)
    details["correlations"] = pd.DataFrame(corr_rows, columns=["view", "estimate", "ci_low", "ci_high", "unit", "n",
                                                               "n_clusters"])

    # mean CX by EX answer (linked rows; bins with fewer employees than the minimum suppressed)
    if len(linked):
        from cxex_lab.metrics import metric_from_cluster_stats

        st = (linked.assign(_sq=linked[cx] ** 2).groupby([ex, "employee_id"])
              .agg(n=(cx, "size"), sum=(cx, "sum"), sum_sq=("_sq", "sum")).reset_index())
        with _quiet():
            ba = metric_from_cluster_stats(st, "mean", by=ex, cluster="employee_id", alpha=alpha)
        emp_per = linked.groupby(ex)["employee_id"].nunique()
        ba = ba.assign(employees=ba[ex].map(emp_per).astype("int64"))
        ba = suppress_small_groups(ba, "employees", ["estimate", "ci_low", "ci_high"], min_group_size=min_group_size)
        details["by_answer"] = ba[[ex, "estimate", "ci_low", "ci_high", "n", "employees", "suppressed"]].assign(
            unit=f"mean {cxl} (1-5)")

    # ------------------------------------------------------------------ agreement (EX to teams, per wave)
    items = [c for c in ("esat", "enps", "ees") if c in exr.columns and exr[c].notna().any()]
    if ex not in items and ex in exr.columns and exr[ex].notna().any():
        items.insert(0, ex)
    all_agree = []
    for level in ("team_id", "site_id"):
        one, many = _LEVEL_WORD[level]
        n_groups = int(exr[level].nunique())
        if n_groups < 2:
            notes.append(f"Agreement across {many} needs at least 2 {many}; this study has {n_groups} {one if n_groups == 1 else many}, "
                         f"so whether EX may be averaged to {one} level cannot be assessed.")
            continue
        tab, why = _agreement_by_wave(exr, level, items, nulls)
        if why and tab.empty:
            notes.append(f"Agreement across {many} could not be computed in any wave: {why[0]}")
        elif why:
            notes.append(f"Agreement across {many} could not be computed in {len(why)} wave(s): {why[0]}")
        if len(tab):
            all_agree.append(tab)
    agree = pd.concat(all_agree, ignore_index=True) if all_agree else pd.DataFrame()
    if len(agree):
        details["agreement_summary"] = _agreement_summary(agree, nulls)
        keep = ["level", "wave", "value", "null", "icc1", "icc2", "rwg_mean", "aggregation", "reading", "n_groups", "k",
                "n", "composition"]
        details["agreement_all"] = agree[keep].reset_index(drop=True)
        team = agree[(agree["level"] == "team_id") & (agree["value"] == ex)]
        if len(team):
            by_w = team[team["null"] == nulls[0]][["wave", "n_groups", "k", "icc1", "icc2"]].reset_index(drop=True)
            for nl in nulls:
                by_w[f"rwg_{nl}"] = team.loc[team["null"] == nl, "rwg_mean"].to_numpy()
            by_w["reading"] = team.loc[team["null"] == nulls[0], "aggregation"].map(_AGG_SHORT).to_numpy()
            details["agreement_by_wave"] = by_w
            i1, i2 = float(by_w["icc1"].median()), float(by_w["icc2"].median())
            rw = {nl: float(by_w[f"rwg_{nl}"].mean()) for nl in nulls}
            verdict, reading = _reading(i2, rw[nulls[0]])
            k_med = float(by_w["k"].median())
            n_ans, n_groups = int(team[team["null"] == nulls[0]]["n"].sum()), int(by_w["n_groups"].max())
            word = {"supported": "supported",
                    "reliable means, members disagree": "only partly supported (team means are reliable, but members "
                                                        "do not share one view)",
                    "members agree, unreliable means": "only partly supported (members agree, but team means are "
                                                       "unreliable)",
                    "not supported": "not supported"}.get(verdict, "undetermined")
            rwg_txt = ", ".join(f"{rw[nl]:.2f} against {_NULL_WORD.get(nl, nl)}" for nl in nulls)
            method = (f"one-way ANOVA per wave ({len(by_w)} waves), person in team within wave (direct consensus); "
                      "median over waves")
            rows.append(finding(
                f"linkage.agreement.team.{ex}.icc2", f"Reliability of a team's mean {exl} (ICC(2), per wave)",
                f"median over waves of ICC(2), the reliability of a team mean of one wave's {exl} answers",
                i2, unit="reliability (0-1)", n=n_ans, n_clusters=n_groups, method=method, kind="descriptive",
                sentence=(f"Averaging employees' {exl} to team level is {word}: per survey wave, a team mean rests on "
                          f"about {k_med:.0f} answers and has a median reliability ICC(2) of {{value}}, and members' "
                          f"agreement r_wg is {rwg_txt} (.70 is the usual bar for both)."),
                headline=True,
                caveat="Computed per wave: pooling waves would count each employee up to once per wave and "
                       "overstate the reliability."))
            rows.append(finding(
                f"linkage.agreement.team.{ex}.icc1", f"Share of {exl} variance between teams (ICC(1), per wave)",
                f"median over waves of ICC(1), the share of the variance of one wave's {exl} answers that lies "
                "between teams", i1, unit="share of variance (0-1)", n=n_ans, n_clusters=n_groups, method=method,
                kind="descriptive"))
            for nl in nulls:
                suffix = "" if nl == "uniform" else f"_{nl}"
                rows.append(finding(
                    f"linkage.agreement.team.{ex}.rwg{suffix}", f"Agreement within teams on {exl} (r_wg, {_NULL_WORD.get(nl, nl)})",
                    f"mean over waves of the mean r_wg of the teams (1 - within-team variance / the variance of "
                    f"{_NULL_WORD.get(nl, nl)})", rw[nl], unit="agreement index (0-1)", n=n_ans,
                    n_clusters=n_groups, method=f"r_wg against {_NULL_WORD.get(nl, nl)}, per wave; mean over waves",
                    kind="descriptive"))
            notes.append("Agreement composition model: one answer per employee per wave, in the team the employee "
                         "belongs to (direct consensus), computed wave by wave; waves of the same people are never "
                         "pooled, which would count each employee once per wave and overstate ICC(2).")

    # ------------------------------------------------------------------ reliability of agent-wave CX means
    cx_items = [c for c in (cx, "nps", "csat", "ces") if f"{c}_n" in cx_wave.columns]
    cx_items = list(dict.fromkeys(cx_items))
    agent_stats = ws.cx_cluster_stats(period="wave", cluster="employee_id")
    rel_parts, rel_why = [], []
    for w, sub in agent_stats.groupby("wave", sort=True):
        for c in cx_items:
            if sub[f"{c}_n"].sum() == 0:
                continue
            try:
                rel_parts.append(reliability_from_sums(sub, "employee_id", c, wave="wave"))
            except ValueError as exc:
                rel_why.append(str(exc))
    if rel_parts:
        rel = pd.concat(rel_parts, ignore_index=True)
        details["cx_reliability"] = rel[["wave", "value", "n_units", "mean_answers", "icc1", "icc2", "answers_for_070"]
                                        ].assign(item=lambda d: d["value"].map(_CX_LABEL)).drop(columns="value")[
            ["wave", "item", "n_units", "mean_answers", "icc1", "icc2", "answers_for_070"]]
        rc = rel[rel["value"] == cx]
        if len(rc):
            i2, i1 = float(rc["icc2"].median()), float(rc["icc1"].median())
            ans = float(rc["n"].sum() / rc["n_units"].sum())
            meth = f"one-way ANOVA of the {cxl} answers on the agent, per wave period, from per-agent sums; median over waves"
            n_ans, n_ag = int(rc["n"].sum()), int(rc["n_units"].max())
            rows.append(finding(
                f"linkage.cx_reliability.{cx}.icc2", f"Reliability of an agent's mean {cxl} over one wave period (ICC(2))",
                f"median over wave periods of ICC(2), the reliability of the mean {cxl} an agent receives in one period",
                i2, unit="reliability (0-1)", n=n_ans, n_clusters=n_ag, method=meth, kind="descriptive",
                sentence=(f"An agent's mean {cxl} over one wave period rests on about {ans:.0f} answers and has a median "
                          "reliability ICC(2) of {value}: correlations with it are weakened by that noise."),
                caveat="A reliability below .70 attenuates every correlation and slope that uses agent-wave means."))
            rows.append(finding(
                f"linkage.cx_reliability.{cx}.icc1", f"Share of {cxl} variance between agents (ICC(1), per period)",
                f"median over wave periods of ICC(1), the share of the variance of {cxl} answers that lies between agents",
                i1, unit="share of variance (0-1)", n=n_ans, n_clusters=n_ag, method=meth, kind="descriptive"))
            rows.append(finding(
                f"linkage.cx_reliability.{cx}.answers", f"{cxl} answers per agent and wave period",
                f"mean number of {cxl} answers about one agent's interactions in one wave period", ans,
                unit="answers", n=n_ans, n_clusters=n_ag, method="count", kind="descriptive"))
            if i2 < 0.7:
                need = float(rc["answers_for_070"].median())
                notes.append(f"Agent-wave {cxl} means are noisy (median ICC(2) {i2:.2f} at about {ans:.0f} answers per "
                             f"agent and period; about {need:.0f} would give .70): linked correlations are attenuated "
                             "toward zero.")
    if rel_why:
        notes.append(f"The reliability of agent-wave CX means could not be computed for {len(rel_why)} wave x item "
                     f"combination(s): {rel_why[0]}")
    notes.append("All correlations here are associations: none of them is an effect of EX on CX.")
    order = ["linkage.linked.corr", "linkage.linked.between_share", f"linkage.agreement.team.{ex}.icc2"]
    rows.sort(key=lambda r: order.index(r["key"]) if r["key"] in order else len(order))
    return _finish("linkage", ws, rows, details, notes)


def _quiet():
    from cxex_lab.results import quietly

    return quietly()


# =========================================================================== 04 drivers
_TP_LABEL = {"tp_pip": "Improvement plan (PIP)", "tp_post_training_support": "Post-training support"}


def _tp_label(col: str) -> str:
    """A touchpoint column as a reader says it (``tp_daily_work`` -> "Daily work")."""
    if col in _TP_LABEL:
        return _TP_LABEL[col]
    s = str(col).removeprefix("tp_").replace("_", " ").strip()
    return s[:1].upper() + s[1:]


def _waves_text(waves: Iterable[Any]) -> str:
    w = sorted(int(x) for x in waves)
    if not w:
        return "no wave"
    if w == list(range(w[0], w[-1] + 1)) and len(w) > 2:
        return f"waves {w[0]}-{w[-1]}"
    return ("wave " if len(w) == 1 else "waves ") + ", ".join(str(x) for x in w)


def _touchpoint_items(ex: pd.DataFrame, touchpoints: Iterable[str] | None) -> tuple[list[str], pd.DataFrame, list[str]]:
    """The touchpoint items to use, a table of what was asked in which wave, and notes.

    Items never answered were not asked. An item asked in only some of the
    waves in which touchpoints were asked is left out (keeping it would drop
    every answer of the other waves), unless no item was asked in every such
    wave; then all asked items are used on the waves they share.
    """
    from cxex_lab.contract import is_touchpoint

    cols = [c for c in ex.columns if is_touchpoint(c)] if touchpoints is None else list(touchpoints)
    missing = [c for c in cols if c not in ex.columns]
    cols = [c for c in cols if c in ex.columns]
    notes = []
    if missing:
        notes.append(f"Touchpoint item(s) {', '.join(_tp_label(c) for c in missing)} are not in the EX answers.")
    asked_in = {c: sorted(ex.loc[ex[c].notna(), "wave"].unique()) for c in cols}
    asked = [c for c in cols if asked_in[c]]
    tp_waves = sorted(set().union(*[set(v) for v in asked_in.values()])) if asked else []
    full = [c for c in asked if len(asked_in[c]) == len(tp_waves)]
    partial = [c for c in asked if c not in full]
    use = full if full else asked
    if partial and full:
        notes.append("Touchpoint item(s) asked in only some waves are left out, so that every wave with touchpoint "
                     "items counts: " + "; ".join(f"{_tp_label(c)} ({_waves_text(asked_in[c])} of "
                                                 f"{_waves_text(tp_waves)})" for c in partial) + ".")
    elif partial:
        notes.append("No touchpoint item was asked in every wave; the analysis uses the answers that have all of "
                     "them, i.e. only the waves in which all were asked.")
    info = pd.DataFrame({
        "touchpoint": [_tp_label(c) for c in cols],
        "waves_asked": [_waves_text(asked_in[c]) if asked_in[c] else "not asked" for c in cols],
        "answers": [int(ex[c].notna().sum()) for c in cols],
        "used": [c in use for c in cols],
    })
    return use, info, notes


def _ranking_check(weights: pd.DataFrame, true_w: Mapping[str, float], side: str) -> tuple[pd.DataFrame, list[str], dict]:
    """Estimated ranking of one side against the simulator's per-point weights (compare orders, not values)."""
    from scipy import stats

    w = weights[weights["term"].isin(list(true_w))].copy()
    w["true_weight"] = w["term"].map(true_w).astype(float)
    w["true_rank"] = stats.rankdata(-w["true_weight"], method="min").astype(int)
    w["est_rank"] = stats.rankdata(-w["estimate"], method="min").astype(int)
    zeros = w[w["true_weight"] == 0]
    nonzero = w[w["true_weight"] != 0]
    swaps, neighbours = [], []
    distinct = sorted(set(nonzero["true_weight"]), reverse=True)
    for a in nonzero.itertuples():
        for b in nonzero.itertuples():
            if a.true_weight > b.true_weight and a.estimate < b.estimate:
                pair = (a.term, b.term, a.true_weight, b.true_weight)
                swaps.append(pair)
                if abs(distinct.index(a.true_weight) - distinct.index(b.true_weight)) == 1:
                    neighbours.append(pair)
    below_zero = [(a.term, z.term) for a in nonzero.itertuples() for z in zeros.itertuples() if a.estimate <= z.estimate]
    rho = float(stats.spearmanr(w["estimate"], w["true_weight"]).statistic) if len(w) >= 3 else math.nan
    has_test = "beats_random" in w.columns and w["beats_random"].notna().any()
    false_pos = zeros.loc[zeros["beats_random"].fillna(False).astype(bool), "term"].tolist() if has_test else []
    missed = nonzero.loc[~nonzero["beats_random"].fillna(False).astype(bool), "term"].tolist() if has_test else []
    recovered = not swaps and not below_zero
    notes = []
    lab = {"EX": "EX side (eSat)", "CX": "CX side (next-period CSAT)"}[side]
    if not recovered and side == "CX":
        parts = []
        if neighbours:
            parts.append("neighbouring weights swap: " + "; ".join(
                f"{_tp_label(a)} (true {wa:.2f}) ranks below {_tp_label(b)} (true {wb:.2f})" for a, b, wa, wb in neighbours))
        others = [s for s in swaps if s not in neighbours]
        if others:
            parts.append(f"{len(others)} {'more pair is' if len(others) == 1 else 'more pairs are'} out of order "
                         "further apart")
        if below_zero:
            parts.append("touchpoints with an effect rank at or below one without: " + "; ".join(
                f"{_tp_label(a)} ranks at or below {_tp_label(z)} (true 0)" for a, z in below_zero))
        notes.append(f"Truth check (simulated data), {lab}: the order of the true touchpoint effects is not "
                     f"recovered (Spearman correlation {rho:.2f}): " + "; ".join(parts)
                     + ". With an R² this small the CX-side weights are noisy: read the ranking in broad groups.")
    if false_pos:
        notes.append(f"Truth check (simulated data), {lab}: touchpoint(s) with a true weight of 0 beat the random "
                     f"variable: {', '.join(_tp_label(t) for t in false_pos)}"
                     + (" (the common-method halo credits them on the EX side)." if side == "EX" else "."))
    table = w.assign(side=side, touchpoint=w["term"].map(_tp_label))[
        ["side", "touchpoint", "true_weight", "true_rank", "estimate", "est_rank"]
        + (["beats_random"] if "beats_random" in w.columns else [])]
    summary = {"side": side, "spearman": rho, "ranking_recovered": recovered, "swaps": len(swaps),
               "neighbour_swaps": len(neighbours), "zeros_beating_random": len(false_pos),
               "nonzero_not_beating_random": len(missed), "has_test": has_test}
    return table, notes, summary


def _weights_wide(weights: pd.DataFrame) -> pd.DataFrame:
    """One row per touchpoint (largest CX-side share first): each side's share with its interval, and the test."""
    from cxex_lab.present import fmt_estimate

    out = pd.DataFrame({"touchpoint": list(dict.fromkeys(weights["touchpoint"]))})
    for side in ("CX", "EX"):
        w = weights[weights["side"] == side].set_index("touchpoint")
        if not len(w):
            continue
        s = side.lower()
        out[f"{s}_share"] = out["touchpoint"].map(
            {t: fmt_estimate(r.estimate, r.ci_low, r.ci_high) for t, r in w.iterrows()})
        out[f"{s}_pct_of_r2"] = out["touchpoint"].map(w["pct_of_r2"]).astype(float)
        out[f"{s}_beats_random"] = out["touchpoint"].map(w["beats_random"]).astype("boolean")
        out[f"_{s}"] = out["touchpoint"].map(w["estimate"]).astype(float)
    by = "_cx" if "_cx" in out.columns else "_ex"
    return out.sort_values(by, ascending=False).drop(columns=[c for c in ("_cx", "_ex") if c in out.columns]
                                                     ).reset_index(drop=True)


def drivers(ws: Any, *, segment: Any = "all", min_group_size: int = 5, seed: int = 0, alpha: float = 0.05,
            n_boot: int = 1000, outcome: str = "esat", cx_outcome: str = "csat",
            touchpoints: Iterable[str] | None = None, cluster: str = "employee_id") -> Findings:
    """Findings of report 04: which moments of the employee journey go with a better experience?

    Parameters
    ----------
    ws : Workspace, Study or path
        The study (see :class:`cxex_lab.workspace.Workspace`).
    segment : str
        A site id or ``"all"``.
    min_group_size : int
        Confidentiality minimum (checked; the findings are study-wide).
    seed : int
        Seed of the bootstrap and of the random reference variable.
    alpha : float
        1 - confidence level (and the level of the random-reference test).
    n_boot : int
        Cluster-bootstrap replicates (0: point estimates only, no intervals
        and no random-reference test; what the truth study uses).
    outcome : str
        The EX outcome rated in the same survey as the touchpoints (``"esat"``).
    cx_outcome : str
        The CX outcome linked to the employee for the period after the survey
        (``"csat"``).
    touchpoints : list of str, optional
        Touchpoint item columns (default every ``tp_*`` column with answers).
    cluster : str
        The level the bootstrap resamples (default the employee: all waves of
        one employee are drawn together).

    Returns
    -------
    Findings
        Keys ``drivers.<side>.r2`` (R² of all touchpoints, in % of the
        outcome's variance) and ``drivers.<side>.share.<tp column>`` (each
        touchpoint's relative weight in % of the outcome's variance), for
        ``side`` ``ex`` (eSat on the touchpoint items of the same survey
        answer; rows are employee-waves) and ``cx`` (the mean CSAT of the
        interactions the employee handled in the period after the survey, on
        the same items; employee x wave panel). All descriptive.
        ``details``: ``weights`` (tidy, both sides: % of variance with its
        interval, % of R², ``beats_random``), ``by_touchpoint`` (the same for
        reading: one row per touchpoint, both sides), ``r2`` (R² in % and the
        random variable's weight), ``items`` (which touchpoint items were
        asked in which waves), ``truth_ranking`` (true effect and rank beside
        each side's estimated rank) and ``truth_summary`` (simulated data).

    Notes
    -----
    Relative weights (Johnson 2000) with a cluster bootstrap over employees and
    the random-reference-variable test of Tonidandel, LeBreton & Johnson
    (2009) (:func:`cxex_lab.models.drivers`). Relative weights are never
    negative, so their interval never contains zero: the rule a reader gets is
    the random-reference test (``beats_random``). The EX side shares a rater
    (the same person rates the touchpoints and eSat), so its weights absorb
    common-method variance; the CX side (touchpoints against the CSAT that
    customers give) shares none. On simulated data the truth check compares
    the *ranking* of the estimated weights with the ranking of the simulator's
    per-point touchpoint weights (``truth["derived"]["drivers"]``: effects on
    latent EX, not variance shares) and says in a note when it fails;
    observed-scale truths of the shares come from ``truth["observed"]``.
    """
    from cxex_lab.models.drivers import drivers as fit_drivers
    from cxex_lab.privacy import check_min_group_size
    from cxex_lab.results import quietly

    check_min_group_size(min_group_size)
    ws = _workspace(ws, segment)
    exr = ws.ex_responses.merge(ws.employees[["employee_id", "team_id", "site_id"]], on="employee_id", how="left")
    rows: list[dict] = []
    notes: list[str] = []
    details: dict[str, pd.DataFrame] = {}
    tps, info, tp_notes = _touchpoint_items(exr, touchpoints)
    details["items"] = info
    notes += tp_notes
    if not tps:
        notes.insert(0, "The EX survey did not ask the touchpoint items (no answers to any tp_ item), so which moments "
                        "of the employee journey go with a better experience cannot be estimated. Add the touchpoint "
                        "questions (1-5 ratings of hiring, training, coaching, ...) to the EX survey.")
        return _finish("drivers", ws, rows, details, notes)
    olab = {outcome: _EX_LABEL.get(outcome, outcome), cx_outcome: _CX_LABEL.get(cx_outcome, cx_outcome)}

    # the two sides: (side, frame, outcome, what the rows are)
    sides = []
    if outcome in exr.columns and exr[outcome].notna().any():
        sides.append(("ex", exr, outcome, "employee-waves (the EX answers)"))
    else:
        notes.append(f"{olab[outcome]} was not asked in the EX survey: the EX-side drivers cannot be estimated.")
    try:
        panel = employee_wave_panel(ws, ex=outcome if outcome in exr.columns else "esat", cx=cx_outcome, extra=tps)
        if panel[cx_outcome].notna().any():
            sides.append(("cx", panel, cx_outcome, "employee-waves linked to the next period's CX"))
        else:
            notes.append(f"No {olab[cx_outcome]} answer could be linked to an employee-wave: the CX-side drivers cannot "
                         "be estimated.")
    except ValueError as exc:
        notes.append(f"The CX-side drivers cannot be estimated: {exc}")

    fits: dict[str, Any] = {}
    weight_rows = []
    r2_rows = []
    for side, df, y, what in sides:
        d = df.dropna(subset=[y, *tps])
        ylab = olab[y]
        if len(d) < len(tps) + 3:
            notes.append(f"{side.upper()} side: only {len(d)} {what} have {ylab} and every touchpoint item; at least "
                         f"{len(tps) + 3} are needed for {len(tps)} touchpoints.")
            continue
        try:
            with quietly():
                res = fit_drivers(d, y, tps, n_boot=n_boot, seed=seed, alpha=alpha, cluster=cluster)
        except ValueError as exc:
            notes.append(f"{side.upper()} side ({ylab}): the driver analysis could not be estimated: {exc}")
            continue
        fits[side] = res
        tab, fit = res
        notes += [f"{side.upper()} side: {n}" for n in fit.notes]
        pv = tab[tab["measure"] == "pct_of_variance"].set_index("term")
        rs = tab[tab["measure"] == "rescaled_weight"].set_index("term")
        n_cl = fit.n_clusters if fit.n_clusters is not None else int(d[cluster].nunique())
        unit = f"% of the variance of {ylab}"
        boot = (f"relative weights (Johnson 2000); cluster bootstrap over {cluster.replace('_id', '')}s "
                f"({n_boot} replicates, percentile interval); random-reference test" if n_boot else
                "relative weights (Johnson 2000); point estimate")
        r2 = tab[tab["measure"] == "r2"].iloc[0]
        side_word = {"ex": f"employees' own {ylab}, rated in the same survey",
                     "cx": f"the {ylab} customers gave about the employee's interactions in the following period"}[side]
        rows.append(finding(
            f"drivers.{side}.r2", f"{side.upper()} side: variance of {ylab} accounted for by all touchpoints (R²)",
            f"R² of the linear regression of {side_word} on the {len(tps)} touchpoint ratings",
            r2["estimate"], r2["ci_low"], r2["ci_high"], unit="share", n=len(d), n_clusters=n_cl,
            method=boot.split("; random")[0], kind="association",
            caveat=("The same person rates the touchpoints and eSat: common-method variance inflates this R² and "
                    "every EX-side weight." if side == "ex" else
                    "An association across employee-waves, not the effect of improving a touchpoint; the touchpoints "
                    "share no rater with the customers' CSAT, so a small R² is expected."),
            sentence=({"ex": f"On the employees' side, touchpoint ratings account for {{value}} of the variance of "
                             f"their own {ylab} in the same survey, an upper bound because the same person rates both.",
                       "cx": f"All touchpoint ratings together account for {{value}} of the variance of the {ylab} "
                             f"that customers give the employee in the following period."}[side]),
            headline=True))
        r2_rows.append({"side": side.upper(), "outcome": ylab, "estimate": 100 * r2["estimate"],
                        "ci_low": 100 * r2["ci_low"], "ci_high": 100 * r2["ci_high"], "unit": unit,
                        "random_weight": 100 * fit.random_weight, "random_ci_low": 100 * fit.random_weight_ci[0],
                        "random_ci_high": 100 * fit.random_weight_ci[1], "n": len(d), "n_clusters": n_cl})
        for tp in tps:
            p, s_ = pv.loc[tp], rs.loc[tp]
            beats = p["beats_random"]
            beats = None if pd.isna(beats) else bool(beats)
            cav = ("Beats the random reference variable." if beats else
                   "Does not beat a random reference variable: it may not matter at all." if beats is False else
                   "Not tested against a random variable (no bootstrap).")
            if side == "ex":
                cav += " EX-side weights absorb common-method variance (same rater)."
            rows.append(finding(
                f"drivers.{side}.share.{tp}", f"{_tp_label(tp)}: share of {ylab} variance ({side.upper()} side)",
                f"relative weight of the {_tp_label(tp).lower()} rating: the part of the variance of {side_word} it "
                "accounts for", p["estimate"] / 100, p["ci_low"] / 100, p["ci_high"] / 100, unit="share", n=len(d),
                n_clusters=n_cl,
                method=boot, kind="association", caveat=cav))
            weight_rows.append({"side": side.upper(), "outcome": ylab, "term": tp, "touchpoint": _tp_label(tp),
                                "estimate": p["estimate"], "ci_low": p["ci_low"], "ci_high": p["ci_high"],
                                "unit": unit, "pct_of_r2": s_["estimate"], "rank": int(p["rank"]),
                                "beats_random": beats})
    weights = pd.DataFrame(weight_rows, columns=["side", "outcome", "term", "touchpoint", "estimate", "ci_low",
                                                 "ci_high", "unit", "pct_of_r2", "rank", "beats_random"])
    if len(weights):
        weights["beats_random"] = weights["beats_random"].astype("boolean")
    details["weights"] = weights
    r2_tab = pd.DataFrame(r2_rows)
    if len(r2_tab):
        from cxex_lab.present import fmt_estimate

        r2_tab["noise"] = [fmt_estimate(e, lo, hi, 2) for e, lo, hi in
                           zip(r2_tab["random_weight"], r2_tab["random_ci_low"], r2_tab["random_ci_high"])]
    details["r2"] = r2_tab
    if len(weights):
        details["by_touchpoint"] = _weights_wide(weights)

    # the key finding: the top CX-side touchpoints that beat random
    cxw = weights[weights["side"] == "CX"].sort_values("estimate", ascending=False)
    winners = cxw[cxw["beats_random"].fillna(False).astype(bool)]
    if len(winners):
        top = winners.iloc[0]
        others = [t.lower() for t in winners["touchpoint"].iloc[1:]]
        also = (f"; {', '.join(others[:-1]) + ' and ' + others[-1] if len(others) > 1 else others[0]} also beat"
                f"{'s' if len(others) == 1 else ''} a random variable" if others else "")
        for r in rows:
            if r["key"] == f"drivers.cx.share.{top['term']}":
                r["headline"] = True
                r["caveat"] = ("An association across employee-waves, not the effect of improving the touchpoint. "
                               + r["caveat"])
                r["sentence"] = (f"Of the touchpoints, {top['touchpoint'].lower()} goes with the largest share of the "
                                 f"{top['outcome']} customers give in the following period: {{value}} of its variance"
                                 f"{also}.")
    elif "cx" in fits and n_boot:
        notes.append("On the CX side no touchpoint beats a random reference variable: no moment of the employee journey "
                     "is distinguishable from noise in the customers' CSAT at this sample size.")
    if "ex" in fits:
        n_ex_beat = int(weights.loc[weights["side"] == "EX", "beats_random"].fillna(False).astype(bool).sum())
        n_cx_beat = int(winners.shape[0])
        cm = _derived(ws, "common_method", "cm_halo")
        notes.insert(0, "EX-side weights absorb common-method variance: the same person rates the touchpoints and eSat "
                        "in the same survey, so a passing mood or answering style raises all of them together and is "
                        "credited to every touchpoint, including ones that do not matter. The CX-side drivers "
                        "(touchpoints against the CSAT customers give, which shares no rater) are free of it: read the "
                        "EX side as an upper bound and act first on touchpoints that also beat random on the CX side"
                        + (f" ({n_ex_beat} of {len(tps)} beat random on the EX side, {n_cx_beat} on the CX side)."
                           if n_boot and "cx" in fits else "."))
        if np.isfinite(cm) and cm > 0:
            notes.insert(1, f"This simulated study has a common-method halo (cm_halo = {cm:g}): one factor per survey "
                            "answer raises the reported eSat and every reported touchpoint rating, but not the ratings "
                            "that act on experience.")
    notes.append("Relative weights are never negative, so their intervals never contain zero and sit above zero even "
                 "for a touchpoint that does not matter; whether a touchpoint may not matter at all is read from the "
                 "random-reference test (beats random: yes / no), not from its interval.")

    # ------------------------------------------------------------------ truth check (simulated data): rankings
    truth = getattr(ws, "truth", None) or {}
    true_w = {k: float(v) for k, v in (truth.get("derived", {}).get("drivers", {}) or {}).items() if k in tps}
    if true_w and len(weights):
        tabs, summ = [], []
        for side in ("CX", "EX"):
            w = weights[weights["side"] == side]
            if not len(w):
                continue
            t, n_, s_ = _ranking_check(w, true_w, side)
            tabs.append(t)
            summ.append(s_)
            notes += n_
        long = pd.concat(tabs, ignore_index=True)
        wide = long[long["side"] == long["side"].iloc[0]][["touchpoint", "true_weight", "true_rank"]].reset_index(drop=True)
        for side in ("CX", "EX"):
            part = long[long["side"] == side].set_index("touchpoint")
            if len(part):
                wide[f"{side.lower()}_rank"] = wide["touchpoint"].map(part["est_rank"])
                if "beats_random" in part.columns:
                    wide[f"{side.lower()}_beats_random"] = wide["touchpoint"].map(part["beats_random"]).astype("boolean")
        details["truth_ranking"] = wide.sort_values(["true_rank", "touchpoint"]).reset_index(drop=True)
        details["truth_summary"] = pd.DataFrame(summ)
    first = [r["key"] for r in rows if r["key"].startswith("drivers.cx.share.") and r.get("headline")]
    order = first + ["drivers.cx.r2", "drivers.ex.r2"]
    rows.sort(key=lambda r: order.index(r["key"]) if r["key"] in order else len(order))
    return _finish("drivers", ws, rows, details, notes)


#: Survey items as a reader knows them.
_ITEM_WORDS = {"esat": "eSat", "enps": "eNPS", "ees": "EES", "csat": "CSAT", "nps": "NPS", "ces": "CES",
               "empowerment": "empowerment", "cx_insight_access": "customer-insight access"}


# =========================================================================== 05 service-profit chain
_MEDIATORS = {"fcr_rate": "first-contact resolution (share)", "handle_minutes": "handle time (minutes)",
              "transfer_rate": "transfers (share)"}


def service_profit_chain(ws: Any, *, segment: Any = "all", ex: str = "esat", cx: str = "csat", n_boot: int = 500,
                         seed: int = 0, alpha: float = 0.05, min_group_size: int = 5) -> Findings:
    """Findings of report 05: does better EX pay off through operations, customers and revenue?

    Parameters
    ----------
    ws : Workspace, Study or path
    segment : str
        A site id or ``"all"``.
    ex, cx : str
        The EX item (default eSat) and the CX item (default CSAT).
    n_boot : int
        Bootstrap draws of every indirect effect, loyalty step and product.
    seed : int
        Seed of the bootstraps.
    alpha : float
        1 - confidence level.
    min_group_size : int
        Unused here (no group table is shown); kept for a uniform signature.

    Returns
    -------
    Findings
        Keys ``chain.total`` (the within-employee total effect of the EX answer
        on the mean CX of the interactions the employee handles in the following
        wave period), ``chain.direct``, ``chain.indirect.<mediator>``,
        ``chain.indirect_total``; ``chain.pooled.total`` and
        ``chain.between.total`` (the same regression across employees, for
        contrast: associations); ``chain.loyalty.retention`` and
        ``chain.loyalty.revenue`` (customer level: the outcome of period p on
        the CX the customer received in p-1, with p-1's retention and revenue
        as controls, two-way clustered by customer and agent);
        ``chain.money.retention`` and ``chain.money.revenue`` (the products:
        per EX point, through CX). ``details``: ``mediation``, ``contrast``,
        ``loyalty``, ``money_chain``.

    Notes
    -----
    The mediation is within employee (employee and wave fixed effects by
    person-mean centring; :func:`cxex_lab.models.mediation`), so stable
    differences between employees and sites (the confounding that inflated the
    pooled figure of round 1) cannot produce it; time-varying confounders still
    can. Each step of the money chain carries its own bootstrap interval and
    identifying assumption (:func:`cxex_lab.models.money_chain`).
    """
    from cxex_lab.models import loyalty, mediation, money_chain
    from cxex_lab.results import quietly

    ws = _workspace(ws, segment)
    notes: list[str] = []
    rows: list[dict] = []
    details: dict[str, pd.DataFrame] = {}
    panel = ws.panel("employee", "wave", ex_lag=0, loyalty=False)
    panel["handle_minutes"] = panel["aht_seconds"] / 60.0
    mediators = [m for m in _MEDIATORS if m in panel.columns and panel[m].notna().any()]
    n_waves = int(panel["period"].nunique())
    x_lab, y_lab = {"esat": "eSat", "enps": "eNPS answer", "ees": "EES"}.get(ex, ex), {"csat": "CSAT", "nps": "NPS answer", "ces": "CES"}.get(cx, cx)
    unit = f"{y_lab} points per {x_lab} point"
    med = None
    if panel[[ex, cx]].dropna().empty or n_waves < 2:
        notes.append(f"The within-employee chain needs employees observed in at least two wave periods with both "
                     f"{x_lab} and {y_lab}; this study has {n_waves} wave period(s) with linked answers, so the chain "
                     "cannot be estimated.")
    else:
        with quietly():
            med = mediation(panel, ex, mediators, cx, unit="employee_id", period="period", effects="within",
                            n_boot=n_boot, seed=seed, alpha=alpha)
            contrasts = {eff: mediation(panel, ex, mediators, cx, unit="employee_id", period="period", effects=eff,
                                        n_boot=0, alpha=alpha) for eff in ("pooled", "between")}
        t, fit = med
        notes += _notes(fit)
        method = (f"within-employee mediation (employee and wave fixed effects); products by a bootstrap over "
                  f"employees ({fit.n_clusters} employees, {n_boot} draws)")
        tot = _row(t, path="total")
        est, lo, hi = _est(tot)
        rows.append(finding(
            "chain.total", f"{x_lab} -> {y_lab}, within employee",
            f"change in the mean {y_lab} of the interactions an employee handles in the following wave period, "
            f"per {x_lab} point above that employee's usual level (all paths)", est, lo, hi, unit=unit,
            n=fit.n_obs, n_clusters=fit.n_clusters, method=method, kind="effect", headline=True,
            caveat="Stable differences between employees cannot produce it; a change that moves EX and CX together "
                   "within the same quarter (a new team lead, a new tool) still could, and so could earlier CX "
                   "that lifted EX while CX itself persists.",
            sentence=f"A one-point rise in an employee's {x_lab} above their usual level {{link}} a mean {y_lab} about "
                     f"{{abs_value}} points {{sign:higher|lower}} among the customers they serve in the following quarter."))
        d = _row(t, path="direct")
        rows.append(finding("chain.direct", f"{x_lab} -> {y_lab} not through the operations measured",
                            f"the part of the within-employee effect not carried by {', '.join(_MEDIATORS[m] for m in mediators)}",
                            *_est(d), unit=unit, n=fit.n_obs, n_clusters=fit.n_clusters, method=method, kind="effect",
                            caveat=_MEDIATION_ASSUMPTION))
        for m in mediators:
            r = _row(t, path="indirect", mediator=m)
            rows.append(finding(f"chain.indirect.{m}", f"{x_lab} -> {_MEDIATORS[m]} -> {y_lab}",
                                f"the part of the within-employee effect carried by {_MEDIATORS[m]}", *_est(r),
                                unit=unit, n=fit.n_obs, n_clusters=fit.n_clusters, method=method, kind="effect",
                                caveat=_MEDIATION_ASSUMPTION))
        it = _row(t, path="indirect_total")
        rows.append(finding("chain.indirect_total", f"{x_lab} -> operations -> {y_lab}",
                            "the part of the within-employee effect carried by the operations measured", *_est(it),
                            unit=unit, n=fit.n_obs, n_clusters=fit.n_clusters, method=method, kind="effect",
                            caveat=_MEDIATION_ASSUMPTION,
                            sentence=f"The part that goes through operations (first-contact resolution, handle time, "
                                     f"transfers) is about {{value}} {unit}."))
        fig_rows = [r for r in rows if r["key"].startswith(("chain.total", "chain.direct", "chain.indirect"))]
        details["decomposition"] = pd.DataFrame(fig_rows)[["key", "finding", "estimate", "ci_low", "ci_high", "unit"]]
        details["mediation"] = _keyed(
            t[t["path"].isin(["a", "b", "direct", "indirect", "indirect_total", "total"])][
                ["term", "path", "estimate", "ci_low", "ci_high", "p", "n"]].reset_index(drop=True),
            lambda r: f"chain.path.{r['term'].replace(' -> ', '_to_').replace(' ', '_')}")
        crow = [{"design": "within employee (fixed effects)", "estimate": est, "ci_low": lo, "ci_high": hi,
                 "compares": "each employee with themself"}]
        for eff, label, what in (("pooled", "pooled (all employee-quarters)", "everyone with everyone"),
                                 ("between", "between employees (employee means)", "employees with each other")):
            ct, cf = contrasts[eff]
            r = _row(ct, path="total")
            e2, l2, h2 = _est(r)
            crow.append({"design": label, "estimate": e2, "ci_low": l2, "ci_high": h2, "compares": what})
            rows.append(finding(f"chain.{eff}.total", f"{x_lab} -> {y_lab}, {label}",
                                f"the same regression {'across' if eff == 'pooled' else 'between'} employees: "
                                f"stable differences between employees and sites included", e2, l2, h2, unit=unit,
                                n=cf.n_obs, n_clusters=cf.n_clusters,
                                method=f"{eff} regression, SE clustered by employee", kind="association"))
        details["contrast"] = pd.DataFrame(crow)
    # ---- customer level: CX received in p-1 -> loyalty of p
    loy = []
    if not _has(ws, "customer_outcomes"):
        notes.append("There is no customer-outcome table: the loyalty and money steps cannot be estimated.")
    else:
        cp = ws.customer_periods(answered=True)  # the rows the loyalty models can use (CX answered in p-1)
        cx_prev = f"{cx}_prev"
        if cp.empty or cx_prev not in cp.columns or cp[cx_prev].notna().sum() < 50:
            notes.append("Too few customers answered a CX survey in a period before an outcome period: the loyalty "
                         "steps cannot be estimated.")
        else:
            controls = [c for c in ("retained_prev", "revenue_prev") if c in cp.columns and cp[c].notna().any()]
            if len(controls) < 2:
                notes.append("No customer has an outcome in two consecutive periods: the loyalty steps are estimated "
                             "without the prior-period controls.")
            labelled = []
            for outcome, key, unit_l, scale in (("retained", "retention", "percentage points of retention", 100.0),
                                                ("revenue", "revenue", "revenue per customer per period", 1.0)):
                res = _attempt(notes, f"The {key} step", loyalty, cp, cx=cx_prev, outcome=outcome,
                               agent="employee_id_prev", controls=controls or None, model="linear", n_boot=n_boot,
                               seed=seed, alpha=alpha)
                if res is None:
                    continue
                loy.append(res)
                labelled.append(("retention (share)" if key == "retention" else "revenue", res))
                lt, lf = res
                notes += _notes(lf)
                e, l, h = (v * scale for v in _est(_row(lt, term=cx_prev)))
                rows.append(finding(
                    f"chain.loyalty.{key}", f"{y_lab} received -> {key} in the next period",
                    f"change in the next period's {key} of a customer per {y_lab} point received in the preceding "
                    f"period, given the customer's own prior retention and revenue", e, l, h,
                    unit=f"{unit_l} per {y_lab} point", n=lf.n_obs, n_clusters=lf.n_clusters,
                    method="customer-level regression with period effects, SE two-way clustered by customer and "
                           "by the agent who served most of the preceding period's contacts", kind="effect",
                    caveat="Assumes that, given the customer's own prior retention and revenue and the period, the "
                           "CX a customer received is as good as random; customers are not assigned to experiences "
                           "at random, and one who had an unusually good quarter may differ in ways these controls "
                           "do not capture."))
            if labelled:
                lt_all = pd.concat([res.table.assign(outcome=o) for o, res in labelled], ignore_index=True)
                details["loyalty"] = lt_all[lt_all["term"] == cx_prev][["outcome", "estimate", "ci_low", "ci_high",
                                                                        "p", "n"]].reset_index(drop=True)
                details["loyalty_models"] = lt_all[["outcome", "term", "estimate", "ci_low", "ci_high", "p", "n"]]
    if med is not None and len(loy) == 2 and n_boot > 0:
        with quietly():
            mc_t, mc_f = money_chain(med, loy)
        notes += _notes(mc_f)
        for r in mc_t.itertuples(index=False):
            if r.kind != "product":
                continue
            key = "retention" if "retain" in r.term else "revenue"
            scale = 1.0
            rows.append(finding(
                f"chain.money.{key}", f"+1 {x_lab} point -> {key} per customer, through {y_lab}",
                f"{key} per customer per period that one {x_lab} point above the employee's usual level brings through "
                f"the {y_lab} of the customers served", r.estimate * scale, r.ci_low * scale, r.ci_high * scale,
                unit=(f"percentage points of retention per {x_lab} point" if key == "retention"
                      else f"revenue per customer per period, per {x_lab} point"), n=int(r.n), n_clusters=None,
                method="product of the within-employee step and the customer-level step; independent bootstrap draws "
                       "of the two multiplied", kind="effect", caveat=str(r.assumption), headline=True,
                sentence=(f"If both steps are effects, one {x_lab} point above an employee's usual level is worth "
                          f"about {{abs_value}} "
                          + ("percentage points of retention" if key == "retention"
                             else "revenue units per customer per period")
                          + f" {{sign:more|less}}, by way of the {y_lab} of the customers served.")))
        details["money_chain"] = mc_t[["term", "kind", "estimate", "ci_low", "ci_high", "unit", "assumption"]]
    latent = {}
    if getattr(ws, "truth", None):
        latent = {"chain.loyalty.retention": math.nan, "chain.loyalty.revenue": _derived(ws, "loyalty", "revenue_per_cx"),
                  "chain.total": _derived(ws, "mediation", "total"), "chain.direct": _derived(ws, "mediation", "direct"),
                  "chain.indirect_total": _derived(ws, "mediation", "indirect_total")}
        for m, sm in (("fcr_rate", "fcr"), ("handle_minutes", "aht"), ("transfer_rate", "transfer")):
            latent[f"chain.indirect.{m}"] = _derived(ws, "mediation", "indirect", sm)
    return _finish("service_profit_chain", ws, rows, details, notes, latent)


# =========================================================================== 06 direction
# (findings.direction: written by the lead)

#: The within-employee headline every report quotes (06 direction, 08 sensitivity): two-way
#: fixed effects (employee, wave) of CX in wave period w on EX answered at wave w-1, standard
#: errors clustered by team (:func:`cxex_lab.models.within_effects`).
HEADLINE = {"unit": "employee_id", "period": "wave", "lags": 1, "cluster": "team_id"}


def employee_wave_panel(ws: Any, ex: str = "esat", cx: str = "csat", extra: Iterable[str] = ()) -> pd.DataFrame:
    """The employee x wave panel the within-employee models use.

    One row per employee and wave period ``wave``: the EX answer of wave w
    (``ex`` and ``extra`` EX columns) beside the mean ``cx`` of the interactions
    the employee handled in wave period w (from wave w's opening to the next),
    with ``team_id``, ``site_id`` and the answer counts ``n_ex``, ``n_cx``.
    """
    panel = ws.panel("employee", "wave", ex_lag=0, loyalty=False)
    cols = ["employee_id", "team_id", "site_id", "period", "n_ex", "n_cx", ex, cx, *extra]
    missing = [c for c in cols if c not in panel.columns]
    if missing:
        raise ValueError(f"the linked employee x wave panel has no column(s) {missing}; "
                         f"it has {list(panel.columns)}")
    return panel[list(dict.fromkeys(cols))].rename(columns={"period": "wave"}).reset_index(drop=True)


def _lag_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The headline rows of a cross_lagged table (``wave`` missing: the lags and summaries)."""
    return table[table["wave"].isna()] if "wave" in table.columns else table


def direction(ws: Any, *, segment: Any = "all", ex: str = "esat", cx: str = "csat", cluster: str = "team_id",
              multiple_indicators: bool = True, invariance: bool = True, seed: int = 0, alpha: float = 0.05,
              min_group_size: int = 5) -> Findings:
    """Findings of report 06: does EX lead CX, or follow it?

    Parameters
    ----------
    ws : Workspace, Study or path
    segment : str
        A site id or ``"all"``.
    ex, cx : str
        The EX and CX items of the single-indicator models (default eSat, CSAT).
    cluster : str
        The level every interval clusters over (default the team: employees of a
        team share their lead and climate).
    multiple_indicators : bool
        Also fit the multiple-indicator RI-CLPM (EX: eSat, eNPS, EES; CX: the
        CSAT means over the odd- and the even-numbered answers of each
        employee-wave, whose sampling noise is independent).
    invariance : bool
        Test measurement invariance of the multiple-indicator model
        (configural, metric, scalar).
    seed : int
        Unused (no resampling).
    alpha : float
        1 - confidence level.
    min_group_size : int
        Unused (no group table); kept for a uniform signature.

    Returns
    -------
    Findings
        Keys ``direction.fe.ex_to_cx`` (the within-employee headline: two-way
        fixed effects of CX in wave period w on EX answered at wave w-1;
        :data:`HEADLINE`), ``direction.fe.cx_to_ex`` (EX at wave w on CX of
        the wave period before it); the RI-CLPM lags
        ``direction.riclpm.<ex_to_cx|cx_to_ex>.<0to3m|3to6m>`` (two time
        pairings, so both directions are estimated over the same span),
        ``direction.riclpm.ex_ar`` / ``cx_ar`` (within-employee persistence),
        ``direction.riclpm.resid_corr`` (the within-wave association),
        ``direction.ri_corr`` (stable differences: between employees),
        ``direction.clpm.ex_to_cx`` (the classic model, for contrast);
        ``direction.mi.*`` (the multiple-indicator model);
        ``direction.insight.to_ex`` and ``direction.insight.moderates_cx_to_ex``
        (design idea 7: CX insight lifts EX). ``details``: ``aligned`` (both
        directions over the same span), ``reconciliation`` (FE, RI-CLPM and CLPM:
        what each estimates), ``riclpm``, ``mi``, ``invariance``, ``insight``.

    Notes
    -----
    *Timing.* EX is answered at the opening of wave w; the CX of wave period w
    is the mean over the interactions of the following quarter. Paired this
    way (pairing "after"), the EX -> CX cross-lag (EX at w-1 -> CX of period
    w) spans 3-6 months while the CX -> EX cross-lag (CX of period w-1 -> EX
    at w) spans 0-3 months. Pairing EX at w with the CX of the quarter
    *before* it (pairing "before") swaps the spans. Taking each direction from
    the pairing where it spans the same interval compares like with like.

    *What each model estimates.* Two-way fixed effects: how CX moves with an
    employee's EX of the wave before, relative to that employee's usual level,
    all paths included (not holding the previous CX). RI-CLPM: the within-person
    cross-lag holding the previous wave's own level, with stable differences
    between employees in random intercepts. CLPM: the same without random
    intercepts, so stable differences leak into the lags.
    """
    from cxex_lab.models import cross_lagged, cross_lagged_mi, measurement_invariance, within_effects
    from cxex_lab.results import quietly

    ws = _workspace(ws, segment)
    notes: list[str] = []
    rows: list[dict] = []
    details: dict[str, pd.DataFrame] = {}
    panel = employee_wave_panel(ws, ex, cx, extra=[c for c in ("enps", "ees", "cx_insight_access")
                                                    if c not in (ex, cx)])
    x_lab = {"esat": "eSat", "enps": "eNPS answer", "ees": "EES"}.get(ex, ex)
    y_lab = {"csat": "CSAT", "nps": "NPS answer", "ces": "CES"}.get(cx, cx)
    n_waves = int(panel.dropna(subset=[ex, cx], how="all")["wave"].nunique())
    n_teams = int(panel[cluster].nunique()) if cluster in panel.columns else 0
    if n_teams < 2:
        notes.append(f"Only {n_teams} {cluster.replace('_id', '')}: intervals are clustered by employee instead.")
        cluster = "employee_id"
    lvl = cluster.replace("_id", "")
    latent_lags = {k: _derived(ws, "within_lags", k) for k in ("ex->cx", "cx->ex", "ex->ex", "cx->cx")}
    latent: dict[str, float] = {}
    if n_waves < 3:
        notes.append(f"The study has {n_waves} wave period(s) with linked EX and CX: a lagged within-employee design "
                     "needs at least 3 (two-way fixed effects with a lag, and the RI-CLPM, which separates stable "
                     "differences from wave-to-wave change). Only the classic cross-lagged model (CLPM), which cannot "
                     "separate them, is shown below as an association." if n_waves == 2 else
                     f"The study has {n_waves} wave period(s) with linked EX and CX: the direction of the effect "
                     "cannot be studied without repeated waves.")
        if n_waves == 2:
            with quietly():
                cl, clf = cross_lagged(panel, "employee_id", "wave", ex, cx, kind="clpm", cluster=cluster)
            notes += _notes(clf)
            r = _row(_lag_rows(cl), term=f"{ex}->{cx}")
            rows.append(finding("direction.clpm.ex_to_cx", f"{x_lab} -> {y_lab}, classic cross-lagged model",
                                "lagged association of EX with later CX, stable differences between employees "
                                "included", *_est(r), unit=f"{y_lab} points per {x_lab} point", n=clf.n_obs,
                                n_clusters=clf.n_clusters, method=f"CLPM by FIML, robust SE clustered by {lvl}",
                                kind="association", headline=True))
        return _finish("direction", ws, rows, details, notes, latent)

    unit = f"{y_lab} points per {x_lab} point"
    runit = f"{x_lab} points per {y_lab} point"
    # ---- the headline: two-way FE (the same spec the study-design report uses)
    fe_res = _attempt(notes, "The fixed-effects lag (EX -> CX)", within_effects, panel, HEADLINE["unit"],
                      HEADLINE["period"], y=cx, x=ex, lags=HEADLINE["lags"], cluster=cluster)
    fer_res = _attempt(notes, "The fixed-effects lag (CX -> EX)", within_effects, panel, HEADLINE["unit"],
                       HEADLINE["period"], y=ex, x=cx, lags=1, cluster=cluster)
    fe = fer = None
    if fe_res is not None:
        fe, fef = fe_res
        notes += _notes(fef)
        rows.append(finding(
            "direction.fe.ex_to_cx", f"{x_lab} -> {y_lab} in the following quarter (within employee)",
            f"change in the mean {y_lab} of an employee's interactions in wave period w per {x_lab} point above that "
            f"employee's usual level at wave w-1 (3-6 months earlier), all paths included", *_est(_row(fe, lag=1)),
            unit=unit, n=fef.n_obs, n_clusters=fef.n_clusters,
            method=f"two-way fixed effects (employee, wave), SE clustered by {lvl} ({fef.n_clusters} clusters)",
            kind="effect",
            caveat="Stable differences between employees and common shocks to all employees in a wave cannot produce "
                   "it; feedback from earlier CX to EX can bias a fixed-effects lag, which the RI-CLPM below models.",
            sentence=f"A one-point rise in an employee's {x_lab} above their usual level {{link}} a mean {y_lab} about "
                     f"{{abs_value}} points {{sign:higher|lower}} among their customers a quarter later."))
    if fer_res is not None:
        fer, ferf = fer_res
        notes += _notes(ferf)
        rows.append(finding(
            "direction.fe.cx_to_ex", f"{y_lab} -> {x_lab} at the next survey (within employee)",
            f"change in an employee's {x_lab} at wave w per {y_lab} point above the employee's usual level in the "
            f"quarter before (0-3 months earlier)", *_est(_row(fer, lag=1)), unit=runit, n=ferf.n_obs,
            n_clusters=ferf.n_clusters, method=f"two-way fixed effects (employee, wave), SE clustered by {lvl}",
            kind="effect", caveat="Feedback from EX to later CX can bias a fixed-effects lag."))

    # ---- RI-CLPM on two time pairings
    before = panel[["employee_id", "wave", cx]].assign(wave=panel["wave"] + 1).rename(columns={cx: f"{cx}_before"})
    pb = panel.drop(columns=[cx]).merge(before, on=["employee_id", "wave"], how="left")
    # the first wave has no quarter before it in the log: pairing "before" starts at wave 2
    pb = pb[pb["wave"] > panel["wave"].min()]
    after_fit = _attempt(notes, "The RI-CLPM", cross_lagged, panel, "employee_id", "wave", ex, cx, kind="riclpm",
                         cluster=cluster)
    if pb["wave"].nunique() >= 3:
        before_fit = _attempt(notes, "The RI-CLPM with EX paired with the CX of the quarter before the survey",
                              cross_lagged, pb, "employee_id", "wave", ex, f"{cx}_before", kind="riclpm",
                              cluster=cluster)
    else:
        before_fit = None
        notes.append("Pairing EX with the CX of the quarter before each survey leaves fewer than 3 waves, so the "
                     "EX -> CX lag over 0-3 months and the CX -> EX lag over 3-6 months cannot be estimated.")
    cl = _attempt(notes, "The classic cross-lagged model", cross_lagged, panel, "employee_id", "wave", ex, cx,
                  kind="clpm", cluster=cluster)
    for res in (after_fit, before_fit, cl):
        if res is not None:
            notes += _notes(res.fit)
    ri_method = f"RI-CLPM by FIML (missing waves used), robust sandwich SE clustered by {lvl}"
    la = _lag_rows(after_fit.table) if after_fit is not None else None
    spans = []
    if after_fit is not None:
        fa = after_fit.fit
        spans += [("direction.riclpm.ex_to_cx.3to6m", la, f"{ex}->{cx}", "3-6 months", "EX -> CX", fa, unit, "after"),
                  ("direction.riclpm.cx_to_ex.0to3m", la, f"{cx}->{ex}", "0-3 months", "CX -> EX", fa, runit, "after")]
    if before_fit is not None:
        lb, fb = _lag_rows(before_fit.table), before_fit.fit
        spans += [("direction.riclpm.ex_to_cx.0to3m", lb, f"{ex}->{cx}_before", "0-3 months", "EX -> CX", fb, unit,
                   "before"),
                  ("direction.riclpm.cx_to_ex.3to6m", lb, f"{cx}_before->{ex}", "3-6 months", "CX -> EX", fb, runit,
                   "before")]
    aligned = []
    for key, tab, term, span, arrow, fit, u, pairing in spans:
        r = _row(tab, term=term)
        e, l, h = _est(r)
        src, dst = (x_lab, y_lab) if arrow == "EX -> CX" else (y_lab, x_lab)
        rows.append(finding(
            key, f"{src} -> {dst}, {span} later (RI-CLPM)",
            f"within-employee cross-lag over {span}: {dst} per {src} point above the employee's usual level, holding "
            f"the previous wave's own level", e, l, h, unit=u, n=fit.n_units, n_clusters=fit.n_clusters,
            method=f"{ri_method}; EX paired with the CX of the quarter {pairing} the survey", kind="effect",
            headline=key in ("direction.riclpm.ex_to_cx.0to3m", "direction.riclpm.cx_to_ex.0to3m"),
            caveat=_RICLPM_ASSUMPTION,
            sentence=_RICLPM_SENTENCE.get(key, "").format(x=x_lab, y=y_lab) or None))
        aligned.append({"span": span, "direction": f"{src} -> {dst}", "label": f"{src} -> {dst}, {span}",
                        "estimate": e, "ci_low": l, "ci_high": h,
                        "std_estimate": float(r["std_estimate"]) if r is not None else math.nan,
                        "unit": u, "key": key})
    if aligned:
        details["aligned"] = pd.DataFrame(aligned)[["key", "label", "span", "direction", "estimate", "ci_low",
                                                    "ci_high", "std_estimate", "unit"]].sort_values(
            ["span", "direction"], kind="stable").reset_index(drop=True)
    names = {ex: x_lab, cx: y_lab, "ex": x_lab, "cx": y_lab}

    def readable(term: str) -> str:
        """RI-CLPM term names as a reader says them (internal column names never reach a report)."""
        m = re.fullmatch(r"(\w+)->(\w+)", term)
        if m:
            a, b = names.get(m.group(1), m.group(1)), names.get(m.group(2), m.group(2))
            return f"{a} persistence" if a == b else f"{a} -> {b}"
        m = re.fullmatch(r"(resid_cov|resid_corr|wave1_cov|wave1_corr)\((\w+),(\w+)\)", term)
        if m:
            what = {"resid_cov": "same-quarter covariance", "resid_corr": "same-quarter correlation",
                    "wave1_cov": "wave-1 covariance", "wave1_corr": "wave-1 correlation"}[m.group(1)]
            return f"{what} of {names.get(m.group(2), m.group(2))} and {names.get(m.group(3), m.group(3))}"
        m = re.fullmatch(r"corr\(RI_(\w+),RI_(\w+)\)", term)
        if m:
            return f"correlation of stable levels ({names.get(m.group(1), m.group(1))}, {names.get(m.group(2), m.group(2))})"
        m = re.fullmatch(r"loading\((\w+)\)", term)
        if m:
            item = m.group(1)
            half = {"h1": ", odd-numbered answers", "h2": ", even-numbered answers"}
            base, _, h = item.rpartition("_")
            if h in half:
                return f"loading of {names.get(base, base.upper())}{half[h]}"
            return f"loading of {_ITEM_WORDS.get(item, item)}"
        return term

    if after_fit is not None:
        for key, term, label, lat in (("direction.riclpm.ex_ar", f"{ex}->{ex}", f"{x_lab} persistence", "ex->ex"),
                                      ("direction.riclpm.cx_ar", f"{cx}->{cx}", f"{y_lab} persistence", "cx->cx")):
            rows.append(finding(key, f"{label} (within employee)", f"how much of a within-employee deviation carries "
                                f"to the next wave ({label})", *_est(_row(la, term=term)),
                                unit="share carried to the next wave", n=fa.n_units, n_clusters=fa.n_clusters,
                                method=ri_method, kind="descriptive"))
            latent[key] = latent_lags[lat]
        latent["direction.riclpm.ex_to_cx.3to6m"] = latent_lags["ex->cx"]
        latent["direction.riclpm.cx_to_ex.0to3m"] = latent_lags["cx->ex"]
        rows.append(finding("direction.riclpm.resid_corr", f"{x_lab} and {y_lab} within the same quarter",
                            f"correlation of the within-employee deviations of {x_lab} at a survey and {y_lab} in the "
                            "quarter that follows, after the lagged effects (mean over waves 2-T)",
                            *_est(_row(la, term=f"resid_corr({ex},{cx})")), unit="correlation", n=fa.n_units,
                            n_clusters=fa.n_clusters, method=ri_method, kind="association",
                            caveat="A same-quarter association: EX at the survey precedes the quarter's CX, but a "
                                   "shock hitting both in the same quarter produces it as well."))
        rows.append(finding("direction.ri_corr", "Stable differences: employees usually higher on EX, usually higher on CX",
                            f"correlation of employees' stable levels (random intercepts) of {x_lab} and {y_lab}",
                            *_est(_row(la, term=f"corr(RI_{ex},RI_{cx})")), unit="correlation", n=fa.n_units,
                            n_clusters=fa.n_clusters, method=ri_method, kind="association", headline=True,
                            sentence="Across employees, a usually higher EX goes with usually {sign:happier|less happy} "
                                     "customers (correlation of the stable levels {value})."))
        latent["direction.ri_corr"] = _derived(ws, "between", "corr_ri")
        rt = la[la["component"].isin(["lag", "within-wave", "between"])][
            ["term", "component", "estimate", "ci_low", "ci_high", "std_estimate"]].reset_index(drop=True)
        details["riclpm"] = _keyed(rt, lambda r: f"direction.riclpm_table.{r['term']}").assign(
            term=rt["term"].map(readable))
    if cl is not None:
        ct, cf = cl
        rows.append(finding("direction.clpm.ex_to_cx", f"{x_lab} -> {y_lab}, classic cross-lagged model",
                            "the same lag without random intercepts: stable differences between employees leak into it",
                            *_est(_row(_lag_rows(ct), term=f"{ex}->{cx}")), unit=unit, n=cf.n_units,
                            n_clusters=cf.n_clusters, method=f"CLPM by FIML, robust SE clustered by {lvl}",
                            kind="association"))
    recon = []
    if fe is not None and fer is not None:
        recon.append({"model": "Two-way fixed effects", "estimates": "how an employee's CX a quarter later moves with "
                      "their EX relative to their own usual level; all paths included; no random intercepts needed",
                      "EX -> CX": _est(_row(fe, lag=1))[0], "CX -> EX": _est(_row(fer, lag=1))[0]})
    if la is not None:
        recon.append({"model": "RI-CLPM", "estimates": "the within-employee cross-lag, holding last wave's own level; "
                      "stable differences in random intercepts (EX -> CX spans 3-6 months, CX -> EX 0-3 months)",
                      "EX -> CX": _est(_row(la, term=f"{ex}->{cx}"))[0],
                      "CX -> EX": _est(_row(la, term=f"{cx}->{ex}"))[0]})
    if cl is not None:
        recon.append({"model": "CLPM", "estimates": "the same cross-lag without random intercepts: stable differences "
                      "between employees are mixed into it (for contrast only)",
                      "EX -> CX": _est(_row(_lag_rows(ct), term=f"{ex}->{cx}"))[0],
                      "CX -> EX": _est(_row(_lag_rows(ct), term=f"{cx}->{ex}"))[0]})
    if recon:
        details["reconciliation"] = pd.DataFrame(recon)[["model", "EX -> CX", "CX -> EX", "estimates"]]

    # ---- multiple indicators: EX items, CX split halves
    if multiple_indicators:
        ph = ws.panel("employee", "wave", ex_lag=0, halves=True, loyalty=False).rename(columns={"period": "wave"})
        x_items = [c for c in dict.fromkeys([ex, "enps", "ees", "esat"]) if c in ph.columns and ph[c].notna().any()][:3]
        y_items = [f"{cx}_h1", f"{cx}_h2"]
        if len(x_items) >= 2 and all(c in ph.columns for c in y_items):
            if cluster not in ph.columns:
                ph[cluster] = ph["employee_id"]
            mi_res = _attempt(notes, "The multiple-indicator RI-CLPM", cross_lagged_mi, ph, "employee_id", "wave",
                              x_items, y_items, names=("ex", "cx"), cluster=cluster)
        else:
            mi_res = None
            notes.append("The multiple-indicator model needs at least two EX items and CX answers split in halves; "
                         "they are not available in this study.")
        if mi_res is not None:
            mt, mf = mi_res
            notes += _notes(mf)
            ml = _lag_rows(mt)
            mi_method = (f"multiple-indicator RI-CLPM by FIML (EX: {', '.join(x_items)}; CX: {y_lab} over odd- and "
                         f"even-numbered answers), loadings equal over waves, robust SE clustered by {lvl}")
            for key, term, label, u, lat in (
                    ("direction.mi.ex_to_cx", "ex->cx", f"{x_lab} -> {y_lab}, 3-6 months later", unit, "ex->cx"),
                    ("direction.mi.cx_to_ex", "cx->ex", f"{y_lab} -> {x_lab}, 0-3 months later", runit, "cx->ex"),
                    ("direction.mi.ex_ar", "ex->ex", f"{x_lab} persistence", "share carried to the next wave", "ex->ex"),
                    ("direction.mi.cx_ar", "cx->cx", f"{y_lab} persistence", "share carried to the next wave", "cx->cx")):
                rows.append(finding(key, f"{label} (multiple indicators)",
                                    f"the same within-employee lag between factors measured by several items, so item "
                                    f"noise does not attenuate it", *_est(_row(ml, term=term)), unit=u, n=mf.n_units,
                                    n_clusters=mf.n_clusters, method=mi_method,
                                    kind="effect" if "ar" not in key else "descriptive",
                                    caveat=(_RICLPM_ASSUMPTION + " Also assumes the items measure the same construct "
                                            "in every wave (equal loadings).") if "ar" not in key else ""))
                latent[key] = latent_lags[lat]
            mt2 = ml[["term", "component", "estimate", "ci_low", "ci_high", "std_estimate"]].reset_index(drop=True)
            details["mi"] = mt2.assign(term=mt2["term"].map(readable))
            if invariance:
                with quietly():
                    try:
                        details["invariance"] = measurement_invariance(ph, "employee_id", "wave", x_items, y_items,
                                                                       names=("ex", "cx"))
                    except (ValueError, np.linalg.LinAlgError) as err:
                        notes.append(f"Measurement invariance could not be tested: {err}")

    # ---- design idea 7: CX insight lifts EX
    if "cx_insight_access" in panel.columns and panel["cx_insight_access"].notna().sum() > 50:
        pi = panel.copy()
        pi["insight"] = pi["cx_insight_access"]
        prev = pi[["employee_id", "wave", cx, "insight"]].assign(wave=pi["wave"] + 1).rename(
            columns={cx: "_cx_prev", "insight": "insight_prev"})
        pm = pi.merge(prev, on=["employee_id", "wave"], how="left").dropna(subset=["insight_prev"])
        # CX of the quarter before x insight access at the survey before it (both centred): the moderation term
        pm["cx_prev_x_insight_prev"] = ((pm["_cx_prev"] - pm["_cx_prev"].mean())
                                        * (pm["insight_prev"] - pm["insight_prev"].mean()))
        same = mod = samef = modf = None
        try:
            with quietly():
                same, samef = within_effects(pi.assign(insight_now=pi["insight"]), "employee_id", "wave", y=ex,
                                             x="insight", lags=1, controls=["insight_now"], cluster=cluster)
        except ValueError as err:
            notes.append(f"Insight access and {x_lab} (same survey) could not be estimated: {err}")
        try:
            with quietly():
                mod, modf = within_effects(pm, "employee_id", "wave", y=ex, x=cx, lags=1,
                                           controls=["insight_prev", "cx_prev_x_insight_prev"], cluster=cluster)
        except ValueError as err:
            notes.append(f"The moderation of CX -> EX by insight access could not be estimated: {err}")
        if same is not None:
            notes += _notes(samef)
            r = _row(same, term="insight_now")
            rows.append(finding(
                "direction.insight.to_ex", f"Customer-insight access and {x_lab} (within employee, same survey)",
                f"change in {x_lab} per point of customer-insight access (1-5) reported in the same survey, relative to "
                "the employee's usual levels (the previous wave's insight access held)", *_est(r),
                unit=f"{x_lab} points per insight-access point", n=samef.n_obs, n_clusters=samef.n_clusters,
                method=f"two-way fixed effects, SE clustered by {lvl}", kind="association",
                caveat="Both are reported by the same person in the same survey: a mood that colours every answer "
                       "(common-method variance) inflates it."))
            latent["direction.insight.to_ex"] = _derived(ws, "insight_to_ex") if np.isfinite(
                _derived(ws, "insight_to_ex")) else (getattr(ws, "truth", None) or {}).get("params", {}).get(
                "insight_to_ex", math.nan)
        if mod is not None:
            notes += _notes(modf)
            r = _row(mod, term="cx_prev_x_insight_prev")
            rows.append(finding(
                "direction.insight.moderates_cx_to_ex", "Does insight access change the CX -> EX path?",
                f"change in the within-employee CX -> EX lag ({x_lab} per {y_lab} point of the quarter before the "
                "survey) per point of insight access at the previous survey", *_est(r),
                unit=f"{x_lab} points per {y_lab} point, per insight-access point", n=modf.n_obs,
                n_clusters=modf.n_clusters, method=f"two-way fixed effects with an interaction, SE clustered by {lvl}",
                kind="effect",
                caveat="Insight access is reported by the employee, not assigned: employees who report more access "
                       "may differ in other ways that change how customer feedback reaches them."))
            latent["direction.insight.moderates_cx_to_ex"] = (getattr(ws, "truth", None) or {}).get(
                "params", {}).get("insight_cx_to_ex", math.nan)
        words = {"insight_now": "insight access, same survey", f"insight->{ex}": "insight access, previous survey",
                 f"{cx}->{ex}": f"{y_lab} of the quarter before the survey",
                 "insight_prev": "insight access, previous survey",
                 "cx_prev_x_insight_prev": f"{y_lab} before x insight access (the moderation)"}
        parts = [t.assign(model=m) for t, m in ((same, "insight access and EX"),
                                                 (mod, "CX -> EX, moderated by insight access")) if t is not None]
        if parts:
            ins = pd.concat(parts, ignore_index=True)[["model", "term", "estimate", "ci_low", "ci_high", "p", "n"]]
            ins = ins.assign(term=ins["term"].map(lambda t: words.get(t, t)))
            if same is not None:
                details["insight"] = ins[ins["model"] == "insight access and EX"].drop(
                    columns="model").reset_index(drop=True)
            if mod is not None:
                details["insight_moderation"] = ins[ins["model"] != "insight access and EX"].drop(
                    columns="model").reset_index(drop=True)
    else:
        notes.append("Customer-insight access was not asked: design idea 7 (sharing customer insight lifts EX) "
                     "cannot be tested.")
    # the like-for-like pair reads EX -> CX first (the row order is the order of "Key findings")
    order = {"direction.riclpm.ex_to_cx.0to3m": 0}
    rows.sort(key=lambda r: order.get(r["key"], 1) if r["key"].startswith("direction.riclpm.") else 1)
    return _finish("direction", ws, rows, details, notes, latent)


#: The identifying assumption of the within-employee mediation paths (report 05).
_MEDIATION_ASSUMPTION = ("Splitting the effect into paths also assumes that nothing else that changes within an "
                         "employee moves both the operational measure and CX (no unmeasured mediator-outcome "
                         "confounding), a stronger assumption than the total effect's.")
#: The identifying assumption of the RI-CLPM lags (report 06).
_RICLPM_ASSUMPTION = ("Assumes linear lags that are the same in every wave, no influence that changes within an "
                      "employee and moves both EX and CX, and a lag length that matches the time between waves.")
#: Key-finding sentences of the like-for-like RI-CLPM pair (both span the 0-3 months after the survey).
_RICLPM_SENTENCE = {
    "direction.riclpm.ex_to_cx.0to3m": "A one-point rise in an employee's {x} above their usual level {{link}} a mean "
                                       "{y} about {{abs_value}} points {{sign:higher|lower}} among their customers "
                                       "in the quarter after the survey (RI-CLPM, own previous level held).",
    "direction.riclpm.cx_to_ex.0to3m": "In the other direction over the same span, a quarter of {y} one point above "
                                       "the employee's usual level {{link}} {x} about {{abs_value}} points "
                                       "{{sign:higher|lower}} at the next survey.",
}


# =========================================================================== 07 vicious circle
#: Scale of each CX item the vicious-circle report can run on (its unit in words).
_VC_UNIT = {"csat": "CSAT points (1-5)", "nps": "NPS answer points (0-10)", "ces": "CES points (1-7)"}
_VC_ITEM = {"csat": "CSAT", "nps": "NPS answer", "ces": "CES"}
#: Operational shocks of the shock version: (flag in ws.pairs, its sign, label, phrase).
_VC_SHOCKS = {
    "transferred": ("transferred", 1.0, "transferred", "was transferred"),
    "unresolved": ("resolved_first_contact", -1.0, "not resolved at first contact", "was not resolved at first contact"),
}
_VC_MOD_SHORT = {"empowerment": "empowerment", "cx_insight_access": "insight"}
_VC_AFTER = {"transferred": "a transferred call", "unresolved": "an unresolved call"}
_VC_SHORT = {"transferred": "transferred", "unresolved": "not resolved"}
_VC_MODERATOR = {"empowerment": "empowerment", "cx_insight_access": "access to customer insight"}


def _vc_bin_key(label: str) -> str:
    """'< 10 min' -> 'under_10min', '10 min to 1 h' -> '10min_to_1h', '>= 4 h' -> 'over_4h'."""
    s = label.replace(">=", "over ").replace("<", "under ")
    s = re.sub(r"(\d)\s+(min|h)\b", r"\1\2", s)
    return re.sub(r"[^0-9a-z]+", "_", s.lower()).strip("_")


def _vc_bin_words(label: str) -> str:
    """'< 10 min' -> 'less than 10 minutes after', used as 'calls that start ... the previous one'."""
    w = label.replace(" min", " minutes").replace(" h", " hours").replace("1 hours", "1 hour")
    if w.startswith("< "):
        return f"less than {w[2:]} after"
    if w.startswith(">= "):
        return f"{w[3:]} or more after"
    m = re.match(r"(.+) to (.+)", w)
    return f"between {m.group(1)} and {m.group(2)} after" if m else w


def _vc_frame(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """A details table whose ``key`` stays None (not NaN) on rows the harness does not check."""
    df = pd.DataFrame(rows, columns=columns)
    if "key" in df.columns:
        df["key"] = pd.Series([r.get("key") for r in rows], dtype=object, index=df.index)
    return df


def vicious_circle(
    ws: Any,
    *,
    segment: Any = "all",
    cx: str = "csat",
    gap_bins: tuple[float, ...] = (10, 60, 240),
    shocks: Iterable[str] = ("transferred", "unresolved"),
    moderators: Iterable[str] = ("empowerment", "cx_insight_access"),
    min_pairs: int = 500,
    min_pairs_per_group: float = 3.0,
    latent_check: bool = True,
    min_group_size: int = 5,
    alpha: float = 0.05,
    seed: int = 0,
) -> Findings:
    """Findings of report 07: does one bad call make the next one worse?

    Every model runs on the consecutive interactions the workspace computes in
    its engine (:meth:`cxex_lab.workspace.Workspace.pairs`; the interaction log
    never enters pandas) with **agent x day** fixed effects
    (:func:`cxex_lab.models.spillover.spillover_pairs`,
    :func:`cxex_lab.models.spillover.shock_placebo_pairs`): everything constant
    within an agent's day (that day's queue load, an outage, the agent's form)
    is removed, and pairs never span two days.

    Parameters
    ----------
    ws : Workspace, Study or path
    segment : str
        A site id or ``"all"``.
    cx : {"csat", "nps", "ces"}
        The customer answer (default CSAT, 1-5).
    gap_bins : tuple of float
        Upper edges (minutes, start to start) of the gap bins of the decay
        model; the first bin is the headline ("calls that start less than 10
        minutes after the previous one").
    shocks : iterable of {"transferred", "unresolved"}
        Operational shocks of the shock version: the previous call was
        transferred / not resolved at first contact.
    moderators : iterable of str
        EX items that may change the carry-over (one Holm family); those the
        study did not ask are left out with a note.
    min_pairs, min_pairs_per_group : float
        Below these (usable pairs; pairs per agent-day) a note says that the
        carry-over rows rest on too few pairs for the correction of the
        short-series (Nickell) bias.
    latent_check : bool
        On simulated data with latent tables (and at most 500,000
        interactions), also run the estimator on the latent CX of every
        interaction against the simulator's truth (``details["latent_check"]``).
        The harness passes False.
    min_group_size : int
        Confidentiality minimum (checked; every table here pools many agents).
    alpha : float
        1 - confidence level.
    seed : int
        Unused (no resampling).

    Returns
    -------
    Findings
        Keys (findings table): ``vicious_circle.carry_over.<first gap bin>``
        (headline, e.g. ``.under_10min``), ``.carry_over.within_day``,
        ``.shock.<shock>`` (kind ``effect``), ``.placebo.next_<shock>``,
        ``.moderation.<item>`` (Holm over the items),
        ``.pairs.per_agent_day`` (each row's ``n`` says how many pairs or
        answered calls it rests on). ``details``: ``pairs`` (how many calls and
        pairs each model rests on, step by step), ``decay`` (keys
        ``vicious_circle.carry_over.<bin>`` for the other bins), ``shocks``
        (keys ``vicious_circle.shock.<shock>.two_back`` for the control rows),
        ``placebos`` (key ``vicious_circle.placebo.cx_lead``), ``moderation``,
        ``designs`` (key ``vicious_circle.design.agent_period``: the old
        report's agent x quarter design), ``latent_check`` (simulated only).

    Notes
    -----
    *What the design identifies.* The carry-over rows regress this customer's
    answer on the previous customer's answer: an **association**. The previous
    answer is one noisy reading of the previous customer's experience, given by
    a self-selected minority of customers, and anything that drifts within
    the day (fatigue) makes neighbouring customers alike without any carry-over.
    The **shock version** regresses this customer's answer on whether the
    previous call of the agent's day was transferred (not resolved): the
    previous customer's problem is settled before this customer arrives, and
    agent x day effects remove the day's level, so the remaining threat is a
    state that drifts within the day and raises transfers while lowering
    CX. The **lead placebo** tests exactly that threat: the *next* call's
    transfer cannot reach this customer, so it must not "predict" this answer.
    With a null lead, the shock row targets a causal quantity (kind
    ``effect``; the replicate-study harness decides ``causal``); when the lead
    placebo fails the row is reported as an association. The CX lead placebo
    (next customer's answer -> this one) is *not* informative: under a real
    carry-over the correlation of neighbouring answers is symmetric, so the
    lead mirrors the lag whether or not a state is at work.

    Checked against the simulator (``tests/test_findings_vicious_circle.py``):
    on latent CX the estimates cover the realised carry-over by gap bin and
    the moderation; on observed CSAT the shock row's latent counterpart is the
    transfer's effect on CX times the within-day carry-over.
    """
    from cxex_lab.models.spillover import _as_float, shock_placebo_pairs, spillover_pairs
    from cxex_lab.privacy import check_min_group_size
    from cxex_lab.results import quietly

    check_min_group_size(min_group_size)
    if cx not in _VC_UNIT:
        raise ValueError(f"vicious_circle: cx must be one of {sorted(_VC_UNIT)}, got {cx!r}")
    unknown = sorted(set(shocks) - set(_VC_SHOCKS))
    if unknown:
        raise ValueError(f"vicious_circle: unknown shock(s) {unknown}; choose from {sorted(_VC_SHOCKS)}")
    ws = _workspace(ws, segment)
    unit = _VC_UNIT[cx]
    item = _VC_ITEM[cx]
    rows: list[dict] = []
    notes: list[str] = []
    details: dict[str, pd.DataFrame] = {}
    latent: dict[str, float] = {}

    # --- the pairs, computed in the engine (with the EX items the study asked)
    ex = ws.ex_responses
    mods = [m for m in moderators if m in ex.columns and ex[m].notna().any()]
    for m in moderators:
        if m not in mods:
            notes.append(f"The EX survey did not ask about {_VC_MODERATOR.get(m, m)}: its moderation of the "
                         "carry-over cannot be estimated.")
    pairs = ws.pairs(ex_lag=0, ex_columns=mods)
    for name in shocks:
        flag, sign, _, _ = _VC_SHOCKS[name]
        if name != flag:
            for pre in ("", "prev_", "next_", "prev2_"):
                pairs[f"{pre}{name}"] = 0.5 + sign * (_as_float(pairs[f"{pre}{flag}"]) - 0.5)
    answered = pairs[cx].notna() if cx in pairs.columns else pd.Series(False, index=pairs.index)
    n_answered = int(answered.sum())
    if n_answered == 0:
        notes.append(f"No customer answered the {item} question: nothing in this report can be estimated.")
        return _finish("vicious_circle", ws, rows, {}, _notes(notes), latent)
    same_day = answered & (pairs["prev_same_day"] == True)  # noqa: E712 - nullable booleans
    both = same_day & pairs[f"prev_{cx}"].notna()
    n_agents_answered = int(pairs.loc[answered, "employee_id"].nunique())
    funnel = [
        ("Calls with a customer answer", n_answered),
        ("... whose previous call was the same agent's, the same day", int(same_day.sum())),
        ("... and whose previous customer answered too (pairs of answers)", int(both.sum())),
    ]

    def run(fn, *args, **kw):
        with quietly():
            return fn(pairs, *args, **kw)

    # --- the carry-over within the day, by gap (headline: the first gap bin)
    main = None
    try:
        main = run(spillover_pairs, cx, moderators=None, group="day", gap_bins=gap_bins, lead_placebo=True, n_bins=0)
    except ValueError as exc:
        if "usable pairs" in str(exc):
            notes.append(f"Only {int(both.sum())} pairs of consecutive answered calls fall on the same agent's day, "
                         "and fewer than 10 of them in agent-days with at least two such pairs: the carry-over of "
                         f"one customer's {item} to the next cannot be estimated on these data.")
        else:
            notes.append(f"The carry-over of one customer's {item} to the next cannot be estimated: "
                         f"{str(exc).split(': ', 1)[-1]}")
    truth = ws.truth or {}
    realised = (truth.get("study") or {}).get("spillover_realised") or {}
    gap_truth = realised.get("carry_over_by_gap") or ((truth.get("derived") or {}).get("spillover_gap") or {}).get(
        "carry_over_by_gap") or {}
    within_truth = realised.get("carry_over_within_day", _derived(ws, "spillover_gap", "carry_over_within_day"))
    mean_decay = _derived(ws, "spillover_gap", "mean_decay_within_day")
    few = False
    if main is not None:
        t, fit = main
        per_day = fit.mean_pairs_per_group
        funnel.append(("... in agent-days with at least two such pairs (usable pairs)", int(fit.n_obs)))
        few = fit.n_obs < min_pairs or per_day < min_pairs_per_group
        for n in fit.notes:
            if few and "pairs per fixed-effect group" in n:
                continue
            if n.startswith("Gap bin(s)"):
                bins = re.findall(r"'([^']+)'", n)
                n = (f"Calls {' and '.join(_vc_bin_words(b) for b in bins)} the previous one: too few pairs (fewer "
                     "than 20 in agent-days with another such pair) to estimate their carry-over.")
            notes.append(n)
        if few:
            notes.append(
                f"The carry-over rests on {fit.n_obs:,} usable pairs of consecutive answered calls, {per_day:.1f} "
                "per agent-day. With so few pairs per day, the regression of one answer on the previous one is "
                "strongly biased downwards (the Nickell bias of short series); the correction applied is reliable "
                f"only with about {min_pairs_per_group:g} or more pairs per agent-day and {min_pairs:,} or more pairs "
                "in all. Read the carry-over rows as indications; the shock version does not have this problem.")
        caveat = (f"Rests on {fit.n_obs:,} pairs of consecutive answered calls, {per_day:.1f} per agent-day"
                  + (": too few for a reliable correction of the short-series bias, so read it as an indication."
                     if few else "; an association: the previous answer is one noisy reading, and a state that "
                     "drifts within the day would look the same."))
        dec = t[t["model"] == "decay"].copy()
        dec["label"] = dec["term"].str.replace("prev_cx | gap ", "", regex=False)
        co = _row(t, term="prev_cx")
        head = dec.iloc[0] if len(dec) else None
        if head is not None and np.isfinite(head["estimate"]):
            hk = f"vicious_circle.carry_over.{_vc_bin_key(head['label'])}"
            rows.append(finding(
                hk, f"{item} carry-over, gap {head['label']}",
                f"Change in this customer's {item} per point of the previous customer's {item}, for calls that start "
                f"{_vc_bin_words(head['label'])} the agent's previous call (same agent and day; agent x day "
                "effects; Nickell-corrected)", head["estimate"], head["ci_low"], head["ci_high"],
                unit=f"{unit} per {item} point of the previous customer", n=int(head["n"]),
                n_clusters=int(head["n_clusters"]), method="within (agent x day, by gap bin) regression on the "
                "previous answer, first-order Nickell correction; SEs clustered by agent (t, G-1 df)",
                kind="association", caveat=caveat, headline=True,
                sentence=(f"For calls that start {_vc_bin_words(head['label'])} the agent's previous one, each "
                          f"{item} point more from the previous customer {{link}} {{abs_value}} {item} points "
                          f"{{sign:more|fewer}} from the next ({{n}} pairs of answers)."),
            ))
            if head["label"] in gap_truth and gap_truth[head["label"]] is not None:
                latent[hk] = float(gap_truth[head["label"]])
        if co is not None and np.isfinite(co["estimate"]):
            rows.append(finding(
                "vicious_circle.carry_over.within_day", f"{item} carry-over, same day",
                f"Change in this customer's {item} per point of the previous customer's {item}, consecutive calls "
                "of the same agent and day (agent x day effects; Nickell-corrected)",
                co["estimate"], co["ci_low"], co["ci_high"], unit=f"{unit} per {item} point of the previous customer",
                n=int(co["n"]), n_clusters=int(co["n_clusters"]),
                method="within (agent x day) regression on the previous answer, first-order Nickell correction; "
                       "SEs clustered by agent (t, G-1 df)", kind="association", caveat=caveat))
            if np.isfinite(within_truth):
                latent["vicious_circle.carry_over.within_day"] = float(within_truth)
        drows = []
        for i, r in enumerate(dec.itertuples(index=False)):
            key = f"vicious_circle.carry_over.{_vc_bin_key(r.label)}"
            drows.append({"key": None if i == 0 else key, "gap": r.label,
                          "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high,
                          "unit": f"{unit} per {item} point", "n": int(r.n), "n_clusters": int(r.n_clusters)})
            if i > 0 and r.label in gap_truth and gap_truth[r.label] is not None:
                latent[key] = float(gap_truth[r.label])
        details["decay"] = _vc_frame(drows, columns=["key", "gap", "estimate", "ci_low", "ci_high", "unit", "n",
                                                        "n_clusters"])
        lead = _row(t, term="next_cx (lead)")
        lag = _row(t, term="prev_cx (lag)")
        placebo_rows = []
        if lead is not None and lag is not None:
            placebo_rows += [
                {"key": None, "check": f"Previous customer's {item} (the lag)",
                 "estimate": lag["estimate"], "ci_low": lag["ci_low"], "ci_high": lag["ci_high"], "n": int(lag["n"]),
                 "informative": "(compare)"},
                {"key": "vicious_circle.placebo.cx_lead", "check": f"Next customer's {item} (CX lead)",
                 "estimate": lead["estimate"], "ci_low": lead["ci_low"], "ci_high": lead["ci_high"],
                 "n": int(lead["n"]), "informative": "no"}]
        # the old report's design for comparison: agent x quarter effects
        try:
            per = run(spillover_pairs, cx, moderators=None, group="period", gap_bins=None, lead_placebo=False, n_bins=0)
            pr = _row(per.table, term="prev_cx")
            des = []
            for label, res, r in (("agent x quarter (old report)", per, pr), ("agent x day (this report)", main, co)):
                if r is None:
                    continue
                des.append({"key": "vicious_circle.design.agent_period" if res is per else None, "design": label,
                            "estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                            "n": int(r["n"]), "groups": int(res.fit.n_groups),
                            "pairs_per_group": float(res.fit.mean_pairs_per_group)})
            details["designs"] = _vc_frame(des)
        except ValueError:
            pass
    else:
        placebo_rows = []

    # --- the shock version and its lead placebo
    shock_rows: list[dict] = []
    lead_rows: list[dict] = []
    for name in shocks:
        flag, _, label, phrase = _VC_SHOCKS[name]
        if flag not in pairs.columns or pairs[flag].isna().all():
            notes.append(f"The contact log has no '{flag}' flag: the shock version (previous call {label} -> this "
                         f"{item}) cannot be estimated.")
            continue
        try:
            res = run(shock_placebo_pairs, cx, shock=name, group="day", alpha=alpha)
        except ValueError as exc:
            notes.append(f"Shock version ({label}) not estimated: {exc}")
            continue
        for n in res.fit.notes:
            if "does not vary" in n:
                notes.append(f"Whether a call was {label} does not vary within the agents' days: no shock version "
                             "for it.")
            elif n.startswith("Only ") and "interactions have CX" in n:
                notes.append(f"Only {res.fit.n_obs} answered calls have two earlier calls and a later one on the "
                             f"same agent's day: the shock version (previous call {label}) cannot be estimated.")
            elif "'predicts'" not in n:
                notes.append(n)
        sp = res.table
        prev, nxt, two = (_row(sp, term=f"prev_{name}"), _row(sp, term=f"next_{name} (lead)"),
                          _row(sp, term=f"prev2_{name}"))
        if prev is None or nxt is None:
            continue
        if name == "transferred":
            funnel.append(("Answered calls with two earlier calls and a later one that day (shock version)",
                           int(res.fit.n_obs)))
        lead_fails = bool(nxt["p"] < alpha)
        kind = "association" if lead_fails else "effect"
        cav = ("Its lead placebo fails (the next call's flag 'predicts' this answer, p = "
               f"{nxt['p']:.3f}): a state shared within the day may produce the pattern, so it is read as an "
               "association." if lead_fails else
               f"Assumes that whether a call is {label} does not depend on a state of the agent that drifts within "
               "the day; the lead placebo (next call) checks this, but detects only a drift strong enough for the "
               "data at hand.")
        key = f"vicious_circle.shock.{name}"
        rows.append(finding(
            key, f"{item} after {_VC_AFTER[name]}",
            f"Difference in this customer's {item} when the agent's previous call that day {phrase} (agent x day "
            f"effects; this call's and the call two back's flags held constant)",
            prev["estimate"], prev["ci_low"], prev["ci_high"], unit=unit, n=int(prev["n"]),
            n_clusters=int(prev["n_clusters"]),
            method="within (agent x day) regression on the previous and next call's flag; SEs clustered by agent "
                   "(t, G-1 df)", kind=kind, caveat=cav, headline=name == "transferred",
            sentence=(f"A previous call that {phrase} {{link}} {{abs_value}} {item} points {{sign:more|less}} "
                      f"from the agent's next customer that day ({{n}} answered calls).")))
        pkey = f"vicious_circle.placebo.next_{name}"
        covers = nxt["ci_low"] <= 0 <= nxt["ci_high"]
        rows.append(finding(
            pkey, f"Placebo: next call {_VC_SHORT[name]}",
            f"Difference in this customer's {item} when the agent's *next* call that day {phrase}: it happens after "
            "this customer has left, so it should be zero unless a state shared within the day moves both",
            nxt["estimate"], nxt["ci_low"], nxt["ci_high"], unit=unit, n=int(nxt["n"]),
            n_clusters=int(nxt["n_clusters"]), method="same regression as the shock version (lead term)",
            kind="association", headline=name == "transferred",
            caveat="The informative placebo: a non-zero value says a within-day state, not a carry-over, may "
                   "produce the pattern.",
            sentence=(f"The check: the next call's flag ({label}), which this customer never saw, {{link}} "
                      f"{{value}} {item} points, " + ("so this check does not detect a state shared within the day (it detects only "
                                                      "drift strong enough for these data)."
                                                      if covers else
                                                      "so a state shared within the day may be at work.")),
        ))
        if lead_fails:
            notes.append(f"The lead placebo of the shock version fails (previous call {label}): the next call's "
                         f"flag 'predicts' this customer's {item} (p = {nxt['p']:.3f}). A state that drifts within "
                         "the agent's day (fatigue, queue load) may produce the pattern; the shock version is read "
                         "as an association.")
        for which, r, k in (("previous (carry-over)", prev, key), ("next (placebo)", nxt, pkey),
                            ("two back (control)", two, f"{key}.two_back")):
            if r is None:
                continue
            shock_rows.append({"key": k if which.startswith("two") else None, "flag": _VC_SHORT[name], "call": which,
                               "estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "unit": unit,
                               "p": r["p"], "n": int(r["n"]), "n_clusters": int(r["n_clusters"])})
        lead_rows.append({"key": None, "check": f"Next call {_VC_SHORT[name]} (shock lead)",
                          "estimate": nxt["estimate"], "ci_low": nxt["ci_low"], "ci_high": nxt["ci_high"],
                          "n": int(nxt["n"]), "informative": "yes"})
        # the simulator: the flag moves the call's own latent CX by ops_to_cx; the next call carries
        # lambda * decay of it (within the day on average: the realised carry-over)
        b = ((truth.get("params") or {}).get("ops_to_cx") or {}).get("transfer" if name == "transferred" else "fcr")
        if b is not None and np.isfinite(within_truth):
            latent[key] = float(b) * float(within_truth) * (1.0 if name == "transferred" else -1.0)
        ds = (truth.get("derived") or {}).get("day_state") or {}
        if ds and (name != "transferred" or not (ds.get("drift_sd_per_sqrt_hour") and ds.get("transfer_per_state"))):
            latent[pkey] = 0.0
    if shock_rows:
        details["shocks"] = _vc_frame(shock_rows)
    if lead_rows or placebo_rows:
        details["placebos"] = _vc_frame(lead_rows + placebo_rows)

    # --- moderation by EX items (one Holm family)
    if mods and main is not None:
        try:
            mres = run(spillover_pairs, cx, moderators=mods, group="day", gap_bins=None, lead_placebo=False, n_bins=0)
        except ValueError as exc:
            mres = None
            notes.append(f"The moderation of the carry-over by {', '.join(_VC_MODERATOR.get(m, m) for m in mods)} "
                         f"could not be estimated: {exc}")
        if mres is not None:
            at = next((i + 1 for i, (w, _) in enumerate(funnel) if "(usable pairs)" in w), len(funnel))
            funnel.insert(at, ("... with the agent's EX answer of that wave (moderation model)", int(mres.fit.n_obs)))
            mrows = []
            for m in mods:
                r = _row(mres.table, term=f"prev_cx:{m}")
                if r is None or not np.isfinite(r["estimate"]):
                    continue
                word = _VC_MODERATOR.get(m, m)
                ph = r["p_holm"]
                rows.append(finding(
                    f"vicious_circle.moderation.{m}", f"Carry-over per {_VC_MOD_SHORT[m]} point",
                    f"Change in the within-day {item} carry-over per point of the agent's {word} (1-5) answered in the "
                    "wave that opened the quarter (agent x day effects)", r["estimate"], r["ci_low"], r["ci_high"],
                    unit=f"carry-over ({item} per {item} point) per point of {word}", n=int(r["n"]),
                    n_clusters=int(r["n_clusters"]),
                    method=f"within (agent x day) regression with the previous answer x {len(mods)} EX item(s); Holm "
                           "over the items; SEs clustered by agent",
                    kind="association",
                    caveat=(f"Holm-adjusted p = {ph:.3f} over the {len(mods)} items tested (unadjusted p = "
                            f"{r['p']:.3f}); agents who answer higher on {word} differ in other ways too.")))
                mrows.append({"moderator": word, "estimate": r["estimate"], "ci_low": r["ci_low"],
                              "ci_high": r["ci_high"], "p": r["p"], "p_holm": ph, "n": int(r["n"]),
                              "n_clusters": int(r["n_clusters"])})
                par = {"empowerment": "spillover_empowerment", "cx_insight_access": "insight_spillover"}.get(m)
                pv = (truth.get("params") or {}).get(par) if par else None
                if pv is not None and np.isfinite(mean_decay):
                    latent[f"vicious_circle.moderation.{m}"] = float(pv) * mean_decay
            details["moderation"] = pd.DataFrame(mrows)
            notes += [n for n in mres.fit.notes if "pairs per fixed-effect group" not in n]
            if mrows and not (pd.DataFrame(mrows)["p_holm"] < alpha).any():
                notes.append(f"No EX item changes the carry-over detectably once the {len(mrows)} tests are "
                             "adjusted for multiplicity (Holm).")

    # --- counts the estimates rest on
    if main is not None:
        fit = main.fit
        rows.append(finding("vicious_circle.pairs.per_agent_day", "Usable pairs per agent-day",
                            "mean number of usable pairs per agent-day (the T of the short-series bias)",
                            fit.mean_pairs_per_group, unit="pairs per agent-day", n=fit.n_groups,
                            n_clusters=fit.n_clusters, method="count", kind="descriptive"))
    if n_agents_answered < 30 and n_answered and not any("agents (clusters)" in n for n in notes):
        notes.append(f"Only {n_agents_answered} agent{' has' if n_agents_answered == 1 else 's have'} answered "
                     "calls: intervals that cluster by agent are unreliable with fewer than about 30.")
    details["pairs"] = pd.DataFrame(funnel, columns=["what", "n"])

    # --- simulated data: the same estimator on the latent CX of every call, against the truth
    lc = None
    if latent_check and ws.truth:
        lc = _vc_latent_check(ws, gap_bins, alpha, realised, gap_truth, within_truth, mean_decay, truth)
        if lc is not None:
            details["latent_check"] = lc

    # one "few agents" note (each model counts the agents of its own rows)
    few_agents = [n for n in notes if "agents (clusters)" in n]
    notes = [n for n in notes if "agents (clusters)" not in n or n == few_agents[0]]
    out = _finish("vicious_circle", ws, rows, details, _notes(notes), latent)
    if lc is not None and out.truth is not None:
        # the truth check shows both: the latent-CX check (estimate against the simulator's truth on the
        # same scale) first, then the report's findings beside their observed-scale and latent values
        lrows = pd.DataFrame({"key": None, "finding": "Latent: " + lc["quantity"],
                              "estimate": lc["estimate"], "ci_low": lc["ci_low"], "ci_high": lc["ci_high"],
                              "truth": lc["truth"], "inside_ci": lc["inside_ci"], "latent": lc["truth"]})
        out.truth = pd.concat([lrows, out.truth], ignore_index=True)
    return out


def _vc_latent_check(ws, gap_bins, alpha, realised, gap_truth, within_truth, mean_decay, truth) -> pd.DataFrame | None:
    """The carry-over models on the latent CX of every interaction (simulated data) beside the truth."""
    from cxex_lab.models.spillover import spillover
    from cxex_lab.results import quietly

    try:
        n_int = int(ws.table("interactions").count().execute())
    except Exception:  # noqa: BLE001 - a workspace without the table has no latent check either
        return None
    if n_int > 500_000:
        return None
    lat = ws.latent.get("interactions")
    need = {"employee_id", "started_at", "cx_latent"}
    if lat is None or not need <= set(lat.columns) or len(lat) < 100:
        return None
    recs = []
    try:
        with quietly():
            t, _ = spillover(lat, "cx_latent", moderators=None, group="day", gap_bins=gap_bins, lead_placebo=False,
                             n_bins=0, alpha=alpha)
    except ValueError:
        return None

    def add(what, r, true):
        if r is None or true is None or not np.isfinite(true):
            return
        recs.append({"quantity": what, "estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                     "truth": float(true), "inside_ci": bool(r["ci_low"] <= true <= r["ci_high"]), "n": int(r["n"])})

    add("carry-over, same day", _row(t, term="prev_cx"), within_truth)
    for r in t[t["model"] == "decay"].itertuples(index=False):
        label = r.term.replace("prev_cx | gap ", "")
        add(f"carry-over, gap {label}", r._asdict(), gap_truth.get(label))
    mods = [m for m in ("empowerment", "cx_insight_access") if m in lat.columns]
    params = truth.get("params") or {}
    if mods and np.isfinite(mean_decay):
        try:
            with quietly():
                tm, _ = spillover(lat, "cx_latent", moderators=mods, group="day", gap_bins=None, lead_placebo=False,
                                  n_bins=0, centre=3, alpha=alpha)
            at33 = ((truth.get("derived") or {}).get("spillover_gap") or {}).get("by_empowerment_insight_within_day", {})
            add("carry-over at items 3 and 3", _row(tm, term="prev_cx"),
                (at33.get("3") or {}).get("3"))
            for m, par in (("empowerment", "spillover_empowerment"), ("cx_insight_access", "insight_spillover")):
                if m in mods and params.get(par) is not None:
                    add(f"carry-over per {_VC_MOD_SHORT[m]} point", _row(tm, term=f"prev_cx:{m}"),
                        float(params[par]) * mean_decay)
        except ValueError:
            pass
    return pd.DataFrame(recs) if recs else None


# =========================================================================== 08 study design
def headline_effect(panel: pd.DataFrame, *, ex: str = "esat", cx: str = "csat", alpha: float = 0.05,
                    cluster: str | None = None):
    """The within-employee headline (:data:`HEADLINE`) fitted on an employee x wave panel.

    :func:`cxex_lab.models.within_effects` with the unit, period, lag and
    cluster of :data:`HEADLINE`: two-way fixed effects (employee, wave) of the
    mean ``cx`` of wave period w on the ``ex`` answered at wave w-1, standard
    errors clustered by team (t with G-1 df). As in :func:`direction`, a panel
    with fewer than 2 teams clusters by employee instead (``fit.cluster`` says
    which). Reports 06 and 08 and the power simulation
    (:mod:`cxex_lab.models.power`) fit the same model, so they quote the same
    numbers.

    Returns
    -------
    Result
        As :func:`~cxex_lab.models.within_effects` (one row, term ``"esat->csat"``).

    Raises
    ------
    ValueError
        When the panel cannot support it (fewer than 3 waves, no lagged pairs);
        the message says why.
    """
    from cxex_lab.models import within_effects

    h = HEADLINE
    cluster = cluster or h["cluster"]
    if cluster != h["unit"] and (cluster not in panel.columns or panel[cluster].nunique() < 2):
        cluster = h["unit"]
    return within_effects(panel, unit=h["unit"], period=h["period"], y=cx, x=ex, lags=h["lags"], alpha=alpha,
                          cluster=cluster)


_SD_UNIT = "CSAT points (1-5) per eSat point (1-5)"
_SD_METHOD = ("two-way fixed effects (employee, wave), eSat of wave w-1 -> mean CSAT of period w; "
              "SEs clustered by team (t, {g} clusters)")


def _sd_cannot(exc: Exception) -> str:
    """Why the headline cannot be estimated, in words, from the estimator's message."""
    msg = str(exc)
    if "distinct periods" in msg or "need at least 3" in msg:
        return ("The within-employee headline is not estimated: it compares each employee's CSAT in a wave period "
                "with their eSat one wave earlier, removing each employee's own average and each wave's common "
                "shift. With fewer than 3 waves every employee has at most one such pair, and once their own "
                "average is removed nothing is left to compare: it needs 3 or more EX waves "
                f"(estimator: {msg})")
    if "cluster" in msg:
        return ("The within-employee headline is not estimated: its interval clusters employees by team and the "
                f"usable rows fall into fewer than 2 teams ({msg})")
    return f"The within-employee headline is not estimated: {msg}"


def study_design(ws: Any, *, segment: Any = "all", min_group_size: int = 5, seed: int = 0, alpha: float = 0.05,
                 q: float = 1.0, kd: Sequence[float] = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0), power: bool = True,
                 n_sims: int = 200, null_sims: int = 500, employees: Sequence[int] | None = None,
                 waves: Sequence[int] | None = None, effects: Sequence[float] | None = None,
                 grid_effects: Sequence[float] | None = None, compute: bool = True, max_seconds: float | None = None,
                 jobs: int | None = None, cache: Any = True, contours: bool = True,
                 type1_halfwidth: float = 0.02, grid_sims: int = 100) -> Findings:
    """Findings of report 08: how sure can we be, and how big must the next study be?

    Parameters
    ----------
    ws : Workspace, Study or path
    segment : str
        A site id or ``"all"``.
    min_group_size : int
        Confidentiality minimum (checked; no group table is shown).
    seed : int
        Base seed of the power simulations.
    alpha : float
        1 - confidence level, and the level of the headline test.
    q : float
        Share of the estimate a confounder should explain away (1 = all of it).
    kd : sequence of float
        Benchmark multipliers: confounders ``k`` times as strong as stable
        traits and as site. Multipliers a benchmark cannot reach are left out
        with a note.
    power : bool
        Also the power findings (False for replicate studies: the harness
        checks power differently, see Notes).
    n_sims, null_sims, grid_sims : int
        Simulated studies per power cell of the effect sweep, at least this
        many without an effect for the type-I rate (more until its interval is
        within ±``type1_halfwidth``, 2 points by default), and per cell of the
        planning grid.
    employees, waves, effects, grid_effects : sequence, optional
        The planning grid's employees and waves, the latent effects of the
        sweep at the study's own design and of the planning grid (defaults in
        :mod:`cxex_lab.models.power`).
    compute : bool
        Simulate what is not cached (False: only read the cache).
    max_seconds : float, optional
        Simulate only when the missing studies would take at most this long
        (estimated); otherwise a note says how long and which command computes
        them.
    jobs : int, optional
        Worker processes of the simulation (default: all cores).
    cache : bool or path
        The power cache (see :func:`cxex_lab.models.power.power`).
    contours : bool
        Also the sensitivity contour grid (``details["contours"]``).

    Returns
    -------
    Findings
        Keys:

        * ``study_design.headline`` (effect): the within-employee headline
          (:func:`headline_effect`), the number report 06 quotes;
        * ``study_design.partial_r2``, ``.rv``, ``.rv_alpha`` (descriptive):
          how much of CSAT's remaining variance last wave's eSat explains, and
          the robustness values (Cinelli & Hazlett 2020) of the estimate and of
          its interval, with the headline's team-clustered SE;
        * ``study_design.stable_traits.share``, ``.stable_traits.k_explain_away``
          (descriptive): the stable-traits benchmark;
        * with ``power``: ``study_design.power.headline`` (power at the study's
          design to detect an effect of the headline's size),
          ``study_design.type1`` (the test's false-positive rate without any
          EX -> CX effect, ±2 points), ``study_design.detectable`` (the
          smallest effect detected 80% of the time, CSAT points per eSat point).

        ``details``: ``sensitivity`` (the estimate under confounders k x as
        strong as each benchmark), ``benchmarks``, ``contours``,
        ``power_own`` (the effect sweep at the study's design), ``power_grid``
        (planning), ``design`` (the parameters the power rests on, with their
        source) and ``headline_data`` (rows, employees, teams and waves behind
        the headline).

    Notes
    -----
    The sensitivity runs on the headline itself:
    :func:`cxex_lab.models.sensitivity_within` (the Mundlak form of the same
    two-way fixed-effects regression, whose coefficient is the headline
    estimate exactly) with ``cluster="team_id"``, so the robustness value of the
    interval belongs to the headline's own team-clustered interval (the SEs are
    equal; checked here and in the tests).

    For the replicate-study harness (``power=False``), power is checked by the
    headline test's rejection rate across the replicates, compared with
    :func:`cxex_lab.models.power.power` at the sample's design and latent
    effect (``Design.from_truth``).
    """
    from cxex_lab.models import sensitivity_within
    from cxex_lab.models.sensitivity import adjusted_grid
    from cxex_lab.privacy import check_min_group_size
    from cxex_lab.results import quietly

    check_min_group_size(min_group_size)
    ws = _workspace(ws, segment)
    rows: list[dict] = []
    details: dict[str, pd.DataFrame] = {}
    notes: list[str] = []

    panel = None
    try:
        panel = employee_wave_panel(ws)
    except ValueError as exc:
        notes.append(f"The employee x wave panel could not be built, so neither the headline nor its sensitivity "
                     f"is estimated: {exc}")
    n_sites = int(ws.employees["site_id"].nunique()) if "site_id" in ws.employees.columns else 0
    head = sens = None
    if panel is not None:
        if panel["csat"].notna().sum() == 0:
            notes.append("There are no customer (CX) answers linked to employee-waves, so the EX -> CX headline and "
                         "its sensitivity cannot be estimated; the power section still shows what a study with CX "
                         "answers would need.")
        else:
            try:
                with quietly():
                    head = headline_effect(panel, alpha=alpha)
            except ValueError as exc:
                notes.append(_sd_cannot(exc))
    if head is not None:
        t = head.table.iloc[0]
        g = head.fit.n_clusters
        if head.fit.cluster != HEADLINE["cluster"]:
            notes.append("Fewer than 2 teams: the headline's interval is clustered by employee instead of team "
                         "(as in report 06).")
        rows.append(finding(
            "study_design.headline", "EX -> next wave's CX, within employees",
            "Change in the mean CSAT of an agent's customers in a wave period when the agent's eSat one wave "
            "earlier was one point above the agent's own average (two-way fixed effects: stable differences "
            "between agents and shifts common to a wave removed)",
            t["estimate"], t["ci_low"], t["ci_high"], unit=_SD_UNIT, n=int(t["n"]), n_clusters=g,
            method=_SD_METHOD.format(g=g).replace("by team", f"by {head.fit.cluster.replace('_id', '')}"),
            kind="effect", headline=True,
            caveat="Time-varying influences that move both eSat and the next CSAT (a new team leader, a change in "
                   "the customer mix) are not removed; the sensitivity analysis says how strong they would have to be.",
            sentence="A one-point rise in an agent's eSat above their own usual level {link} customers' CSAT "
                     "about {abs_value} points {sign:higher|lower} in the next wave period."))
        notes.extend(n_.replace("(team_id)", "(teams)").replace("(employee_id)", "(employees)")
                     for n_ in _notes(head.fit))
        used = head.fit
        details["headline_data"] = pd.DataFrame([
            {"what": "employee-waves with CSAT and the previous wave's eSat", "value": int(used.n_obs)},
            {"what": "employees", "value": int(used.n_units)},
            {"what": f"{head.fit.cluster.replace('_id', '')}s (the clusters of the interval)", "value": int(g)},
            {"what": "wave periods with a previous wave", "value": int(used.n_periods)},
            {"what": "employee-waves without a usable pair (no answer, no lag)", "value": int(used.n_dropped)},
        ])
        if n_sites < 2:
            notes.append("Only one site: the site benchmark of the sensitivity analysis needs two or more sites, so "
                         "it is left out (a stable site difference cannot bias a within-employee estimate anyway).")
        try:
            with quietly():
                sens = sensitivity_within(panel, y="csat", x="esat", unit=HEADLINE["unit"], period=HEADLINE["period"],
                                          site="site_id" if n_sites >= 2 else None, lag=HEADLINE["lags"], alpha=alpha,
                                          q=q, kd=tuple(kd), cluster=head.fit.cluster)
        except ValueError as exc:
            notes.append(f"The sensitivity analysis could not be run: {exc}")
    if sens is not None:
        rows, details = _sd_sensitivity(sens, head, rows, details, notes, alpha, q, contours, adjusted_grid)

    if power:
        _sd_power(ws, head, rows, details, notes, n_sims=n_sims, null_sims=null_sims, employees=employees,
                  waves=waves, effects=effects, grid_effects=grid_effects, compute=compute, max_seconds=max_seconds,
                  jobs=jobs, cache=cache, seed=seed, alpha=alpha, type1_halfwidth=type1_halfwidth,
                  grid_sims=grid_sims)
    return _finish("study_design", ws, rows, details, notes)


def _sd_sensitivity(sens, head, rows, details, notes, alpha, q, contours, adjusted_grid):
    """The sensitivity findings and tables of :func:`study_design`."""
    f = sens.fit
    t = head.table.iloc[0]
    if abs(f.estimate - float(t["estimate"])) > 1e-8 * max(1.0, abs(f.estimate)) or \
            abs(f.se - float(t["se"])) > 1e-6 * max(1e-12, float(t["se"])):
        notes.append(f"Internal check: the sensitivity model's estimate {f.estimate:.6f} (SE {f.se:.6f}) differs "
                     f"from the headline's {float(t['estimate']):.6f} (SE {float(t['se']):.6f}).")
    n, g = int(f.n_obs), int(f.n_clusters)
    what = "share of the variance of CSAT and of last wave's eSat left after the model"
    rows.append(finding(
        "study_design.partial_r2", "How much of CSAT's remaining variance last wave's eSat explains",
        "Partial R² of last wave's eSat with CSAT, given stable traits, wave and site (Mundlak form of the headline)",
        f.partial_r2, unit="share", n=n, n_clusters=g, method="Cinelli-Hazlett (2020), Mundlak regression",
        kind="descriptive"))
    pct = "to explain the estimate away" if q == 1 else f"to remove {q:.0%} of the estimate"
    rows.append(finding(
        "study_design.rv", "Robustness value of the estimate",
        f"Strength (partial R² with both eSat and CSAT) an unobserved confounder needs {pct}",
        f.rv_q, unit="share", n=n, n_clusters=g, method="Cinelli-Hazlett (2020) robustness value RV_q",
        kind="descriptive", headline=True,
        sentence="An unmeasured time-varying influence would have to explain {value} of the remaining variance of "
                 "both eSat and CSAT to explain the estimate away (robustness value)."))
    rows.append(finding(
        "study_design.rv_alpha", f"Robustness value of the {100 * (1 - alpha):.0f}% interval",
        f"Strength (partial R² with both) an unobserved confounder needs for the {100 * (1 - alpha):.0f}% interval "
        "to include zero, with the headline's team-clustered standard error",
        f.rv_qa, unit="share", n=n, n_clusters=g,
        method=f"Cinelli-Hazlett (2020) RV_q,alpha; SE clustered by team as the headline (t, {g - 1} df)",
        kind="descriptive"))
    tr = f.benchmarks.get("stable traits")
    bench_rows = []
    if tr is not None:
        rows.append(finding(
            "study_design.stable_traits.share", "Share of last wave's eSat that is stable between employees",
            "Partial R² of the employee's mean eSat with last wave's eSat, given wave and site: how much of the "
            "variation of eSat is a stable trait of the person", tr["r2dxj_x"], unit="share", n=n, n_clusters=g,
            method="Mundlak regression (the stable-traits benchmark)", kind="descriptive"))
        k = tr["k_explain_away"]
        if np.isfinite(k):
            rows.append(finding(
                "study_design.stable_traits.k_explain_away",
                "Strength, relative to stable traits, of a time-varying confounder that explains the estimate away",
                "Multiple k of the stable-traits benchmark (k times its partial R² with eSat, up to k times with "
                "CSAT) at which a confounder orthogonal to stable traits removes the estimate",
                k, unit="times the strength of stable traits", n=n, n_clusters=g,
                method="Cinelli-Hazlett (2020) benchmark bounds", kind="descriptive",
                sentence="A time-varying confounder {estimate} times as strong as the employees' stable traits "
                         "would explain the estimate away."))
    labels = {"stable traits": "Stable traits (the employee's mean eSat)", "site": "Site"}
    for name, b in f.benchmarks.items():
        kmax, kaw = b["kd_max"], b["k_explain_away"]
        bench_rows.append({
            "benchmark": labels.get(name, name),
            "share_of_esat": b["r2dxj_x"], "share_of_csat": b["r2yxj_dx"],
            "strongest_possible": "no limit" if not np.isfinite(kmax) else f"{kmax:.2f}x",
            "explains_estimate_away_at": "never" if not np.isfinite(kaw) else f"{kaw:.2f}x",
        })
    details["benchmarks"] = pd.DataFrame(bench_rows)
    tab = sens.table
    short = {"stable traits": "stable traits", "site": "site"}
    srows = [{"scenario": "No confounder (the headline)", "share_of_esat": 0.0, "share_of_csat": 0.0,
              "estimate": f.estimate, "ci_low": float(tab.iloc[0]["ci_low"]), "ci_high": float(tab.iloc[0]["ci_high"])}]
    for r in tab.iloc[1:].itertuples(index=False):
        if f.benchmarks[r.benchmark]["r2dxj_x"] == 0 and r.kd < 1:
            continue  # a benchmark that cannot move the estimate (site): its multiples from 1x make the point
        srows.append({"scenario": f"{r.kd:g}x {short.get(r.benchmark, r.benchmark)}",
                      "share_of_esat": r.r2dz_x, "share_of_csat": r.r2yz_dx, "estimate": r.estimate,
                      "ci_low": r.ci_low, "ci_high": r.ci_high})
    rv_row = adjusted_grid(f, [f.rv_q], [f.rv_q]).iloc[0]
    srows.append({"scenario": "At the robustness value", "share_of_esat": f.rv_q, "share_of_csat": f.rv_q,
                  "estimate": float(rv_row["estimate"]), "ci_low": float(rv_row["ci_low"]),
                  "ci_high": float(rv_row["ci_high"])})
    details["sensitivity"] = pd.DataFrame(srows).assign(unit=_SD_UNIT)
    if contours:
        details["contours"] = adjusted_grid(f)
    # the estimator's notes name model terms; the reader gets the same facts in words
    if tr is not None:
        kmax, kaw = tr["kd_max"], tr["k_explain_away"]
        notes.append(
            f"Stable traits: {tr['r2dxj_x']:.0%} of the variation in last wave's eSat (after wave and site) is each "
            f"agent's stable level, which the estimate already removes. A confounder that changes within agents can "
            f"therefore be at most {kmax:.2f} times as strong as stable traits"
            + (f"; one {kaw:.2f} times as strong would explain the estimate away." if np.isfinite(kaw) else "."))
    if "site" in f.benchmarks:
        notes.append("Site cannot confound this estimate, however strong: it does not change within an agent. Shocks "
                     "that hit one site in one wave could; the wave effects remove only shocks common to all sites.")
    return rows, details


def _sd_power(ws, head, rows, details, notes, *, n_sims, null_sims, employees, waves, effects, grid_effects,
              compute, max_seconds, jobs, cache, seed, alpha, type1_halfwidth, grid_sims) -> None:
    """The power findings and tables of :func:`study_design`."""
    from importlib import import_module

    pw = import_module("cxex_lab.models.power")  # the module (cxex_lab.models.power is also a function's name)

    design, facts = pw.design_of(ws)
    details["design"] = design.table(facts["measured"])
    if not facts["cx_response_rate"] or not np.isfinite(facts["cx_response_rate"]) or facts["cx_response_rate"] <= 0:
        notes.append("No CX answers: power is not simulated for this design (a study needs customer answers to "
                     "detect an EX -> CX effect).")
        return
    kw = {k: v for k, v in dict(effects=effects, grid_effects=grid_effects).items() if v is not None}
    rep = pw.power_report(design, n_sims=n_sims, null_sims=null_sims, employees=employees, waves=waves,
                          alpha=alpha, seed=seed, jobs=jobs, cache=cache, compute=compute, max_seconds=max_seconds,
                          type1_halfwidth=type1_halfwidth, grid_sims=grid_sims, **kw)
    notes.extend(rep.notes)
    cols = ["n_employees", "n_waves", "n_teams", "effect", "effect_observed", "power", "power_ci_low",
            "power_ci_high", "n_sims"]
    if len(rep.own) and (rep.own["n_sims"] > 0).any():
        own = rep.own[rep.own["n_sims"] > 0]
        details["power_own"] = own[cols].rename(columns={"power_ci_low": "ci_low", "power_ci_high": "ci_high"}) \
            .rename(columns={"power": "estimate"}).assign(unit="share")
    if len(rep.grid) and (rep.grid["n_sims"] > 0).any():
        grid = rep.grid[rep.grid["n_sims"] > 0]
        own_size = (grid["n_employees"] == design.n_employees) & (grid["n_waves"] == design.n_waves)
        details["power_grid"] = grid[cols].rename(columns={"power_ci_low": "ci_low", "power_ci_high": "ci_high",
                                                           "power": "estimate"}).assign(unit="share",
                                                                                        this_study=own_size.to_numpy())
    where = f"{design.n_employees} employees in {design.n_teams} teams, {design.n_waves} waves"
    t1 = rep.type_one
    if t1 is not None:
        rows.append(finding(
            "study_design.type1", "False alarms: how often the headline test rejects when EX has no effect on CX",
            f"Share of simulated studies of this design ({where}) without any EX -> CX effect whose headline "
            f"interval excludes zero (nominal {alpha:.0%})", t1["power"], t1["power_ci_low"], t1["power_ci_high"],
            unit="share", n=int(t1["n_sims"]), method="simulated studies on the observed pipeline (Wilson interval "
            "of the simulation)", kind="descriptive",
            caveat="Rests on the simulator's assumptions (see the design table)."))
    complete = len(rep.own) > 0 and bool((rep.own["n_sims"] > 0).all())
    if head is not None and complete:
        est = float(head.table.iloc[0]["estimate"])
        at = rep.at_observed(est)
        if np.isfinite(at["power"]):
            rows.append(finding(
                "study_design.power.headline", "Power to detect an effect of the headline's size at this design",
                f"Share of simulated studies of this design ({where}) whose headline interval excludes zero when the "
                f"true effect gives the headline's observed size ({abs(est):.2f} {_SD_UNIT.split(' per')[0]} per eSat "
                "point on average)", at["power"], at["power_ci_low"], at["power_ci_high"], unit="share",
                n=int(rep.own["n_sims"].min()), method="simulated studies on the observed pipeline, interpolated "
                "between latent effects; the Wilson interval is simulation error only, not the uncertainty of the "
                "headline's size)", kind="descriptive",
                caveat=("The headline is larger than the largest simulated effect: this is a lower bound. "
                        if at["beyond"] else "") + "Rests on the simulator's assumptions (see the design table).",
                sentence="With this design, an effect of the headline's size would be detected in "
                         + ("at least {estimate}" if at["beyond"] else "about {value}") + " of studies."))
    det = rep.detectable(0.8) if complete else {}
    if np.isfinite(det.get("effect_observed", np.nan)):
        rows.append(finding(
            "study_design.detectable", "Smallest effect detected in 80% of studies at this design",
            f"Observed-scale effect (mean headline estimate) that this design ({where}) detects with 80% power",
            det["effect_observed"], unit=_SD_UNIT, n=int(rep.own["n_sims"].min()),
            method="simulated studies, interpolated between latent effects", kind="descriptive", headline=True,
            caveat=("At most this: the smallest simulated effect already reaches 80%. " if det.get("at_most") else "")
            + "Rests on the simulator's assumptions (see the design table).",
            sentence="A study of this design detects an effect of about {estimate} CSAT points per eSat point (or "
                     "larger) in 80% of studies."))


# =========================================================================== firm level (issue 15)
_FIRM_UNIT = "index points (0-100) per star (1-5)"


def _contact_key(level: Any) -> str:
    import re

    slug = re.sub(r"[^0-9a-z]+", "_", str(level).strip().lower()).strip("_") or "level"
    return slug if slug.endswith("contact") else f"{slug}_contact"


#: The identifying assumption of the within-firm slopes (report 09), appended to their caveats.
_FIRM_ASSUMPTION = (" Read as an effect only if no change within a firm moves its rating and its index in the same "
                    "year (a merger, a scandal) and the index does not move the rating.")


def firm_level(
    panel: Any,
    *,
    firm: str = "firm_id",
    industry: str | None = "industry",
    contact: str | None = "contact_intensity",
    year: str = "year",
    rating: str = "employee_rating",
    index: str = "customer_index",
    n_reviews: str | None = "n_reviews",
    review_sd: float | str | None = "rating_sd",
    min_group_size: int = 5,
    few_reviews: int = 50,
    truth: Mapping[str, Any] | None = None,
    details: bool = True,
    n_boot: int = 499,
    seed: int | None = 0,
    source: str | None = None,
) -> Findings:
    """Findings of the firm-level report: do firms whose employees rate them higher have happier customers?

    Parameters
    ----------
    panel : DataFrame or FirmPanel
        A firm x year panel (one row per firm and year), or an object with
        ``.data`` (the panel) and ``.truth`` (a simulated panel from
        :func:`cxex_lab.simulate_firms.simulate_firms`).
    firm, industry, contact, year, rating, index, n_reviews : str
        Column names. ``industry``, ``contact`` (values such as ``high`` /
        ``low``) and ``n_reviews`` are optional: a name that is not a column
        is treated as absent and the findings that need it are left out.
    review_sd : float or str
        The SD of one review in stars, or a column of per-firm-year review SDs
        (default ``"rating_sd"``); with ``n_reviews`` it gives the rating's
        reliability and the noise-corrected slopes.
    min_group_size : int
        Industries (and contact groups) with fewer firms are suppressed in the
        report tables (they stay in the estimates), counted in the ledger.
    few_reviews : int
        The ``designs`` table compares the within-firm slope on firm-years
        with fewer reviews than this against the rest (default 50).
    truth : mapping, optional
        The simulator's truth record (taken from ``panel.truth`` if absent).
    details : bool
        Also compute the supporting tables (False: only the findings table,
        for replicate studies).
    n_boot, seed : int
        Firm-bootstrap draws for correlation intervals, and their seed.
    source : str, optional
        File name for error messages.

    Returns
    -------
    Findings
        ``report="firm_level"``; keys ``firm.fe.per_star`` (two-way fixed
        effects, all firms), ``firm.fe.per_star.<level>_contact`` and
        ``firm.fe.difference`` (by contact intensity), ``firm.fe_corrected.*``
        (review-noise corrected), ``firm.lag.rating_to_index`` /
        ``firm.lag.index_to_rating`` (direction), ``firm.pooled.corr``,
        ``firm.pooled.per_star``, ``firm.between.per_star``,
        ``firm.cross_section.r2`` (the contrasts) and
        ``firm.fe.share_of_spread`` (the effect in % of the index's spread
        between firms). ``details``: ``by_industry`` (small industries
        suppressed), ``by_contact``, ``designs`` (how pooling, contact
        intensity, few reviews and confounding move the answer),
        ``direction``, ``noise``, ``effect_size``, ``ledger``.

    Notes
    -----
    Fixed-effects rows are ``kind="effect"``: within-firm designs that remove
    stable firm differences and common year shocks (their ``causal`` flag comes
    from the replicate-study harness); pooled, between and cross-sectional rows
    and the lagged direction diagnostics are associations. See
    :func:`cxex_lab.models.firm_panel` for the estimators and what they were
    checked against.

    Examples
    --------
    >>> from cxex_lab.simulate_firms import simulate_firms
    >>> f = firm_level(simulate_firms(n_firms=120, seed=2, truth_firms=0), details=False, n_boot=99)
    >>> "firm.fe.per_star.high_contact" in set(f.table["key"])
    True
    """
    from cxex_lab.ledger import Ledger
    from cxex_lab.models.firm_panel import firm_panel, validate_firm_panel
    from cxex_lab.privacy import check_min_group_size
    from cxex_lab.results import quietly

    min_group_size = check_min_group_size(min_group_size)
    data = panel.data if hasattr(panel, "data") and isinstance(getattr(panel, "data"), pd.DataFrame) else panel
    if truth is None:
        truth = getattr(panel, "truth", None)
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"firm_level: expected a DataFrame or a FirmPanel, got {type(panel).__name__}.")
    source = source or data.attrs.get("source")
    cols = set(data.columns)
    industry = industry if industry in cols else None
    contact = contact if contact in cols else None
    n_reviews = n_reviews if n_reviews in cols else None
    if isinstance(review_sd, str) and review_sd not in cols:
        review_sd = None
    if n_reviews is None:
        review_sd = None
    validate_firm_panel(data, firm=firm, year=year, x=rating, y=index, n_reviews=n_reviews, source=source,
                        func="firm_level")
    ledger = Ledger()
    notes: list[str] = []
    rows: list[dict] = []
    common = dict(firm=firm, year=year, x=rating, y=index, source=source)
    noise_kw = dict(n_reviews=n_reviews, review_sd=review_sd) if review_sd is not None else {}

    def run(**kw):
        with quietly():
            return firm_panel(data, **common, **kw)

    # contact groups that may be shown (privacy: at least min_group_size firms)
    levels: list = []
    if contact is not None:
        firms_per = data.dropna(subset=[contact]).groupby(contact)[firm].nunique()
        small = firms_per[firms_per < min_group_size]
        if len(small):
            ledger.add("privacy", "firm panel", f"contact group with fewer than {min_group_size} firms: "
                       "its per-group findings are not shown", int(data[contact].isin(small.index).sum()))
            notes.append(f"Contact group(s) {list(map(str, small.index))} have fewer than {min_group_size} firms; "
                         "their per-group estimates are not shown.")
        levels = [lv for lv in firms_per.index if lv not in small.index]

    # --- two-way fixed effects: all firms
    fe_all = run(design="fe", ledger=ledger, **noise_kw)
    t = fe_all.table.iloc[0]
    rel = fe_all.fit.reliability.get("all")
    rel_txt = f" (within-firm reliability of the rating {rel:.2f})" if rel is not None and np.isfinite(rel) else ""
    rows.append(finding(
        "firm.fe.per_star", "Index points per star, within firms (all firms)",
        "Change in a firm's customer index when its own employer rating is one star higher, net of stable firm "
        "differences and shocks common to a year (two-way fixed effects)",
        t.estimate, t.ci_low, t.ci_high, unit=_FIRM_UNIT, n=int(t.n), n_clusters=fe_all.fit.n_clusters,
        method="two-way FE (firm, year), PanelOLS; intervals clustered by firm", kind="effect",
        caveat=f"Attenuated by the noise of ratings averaged over few reviews{rel_txt}." + _FIRM_ASSUMPTION,
    ))
    notes.extend(fe_all.fit.notes)

    fe_c = None
    if len(levels) >= 2:
        sub = data[data[contact].isin(levels)]
        with quietly():
            fe_c = firm_panel(sub, **common, design="fe", moderator=contact, **noise_kw)
        for r in fe_c.table.itertuples(index=False):
            if " - " in r.group:
                key, label = "firm.fe.difference", f"Difference in index points per star, {r.group} contact"
                estimand = f"Within-firm slope in {r.group.split(' - ')[0]}-contact firms minus that in {r.group.split(' - ')[1]}-contact firms"
            else:
                key = f"firm.fe.per_star.{_contact_key(r.group)}"
                label = f"Index points per star, within firms ({r.group} contact)"
                estimand = (f"Change in the index when a {r.group}-contact firm's own rating is one star higher "
                            "(two-way fixed effects, slope by contact intensity)")
            cav = ("Attenuated by rating noise" + (f" (reliability {r.reliability:.2f})" if np.isfinite(r.reliability)
                                                  else "") + "." + _FIRM_ASSUMPTION)
            rows.append(finding(key, label, estimand, r.estimate, r.ci_low, r.ci_high, unit=_FIRM_UNIT, n=int(r.n),
                                n_clusters=int(r.n_firms), method="two-way FE with contact interaction, PanelOLS; "
                                "clustered by firm", kind="effect", caveat=cav))
        notes.extend(n_ for n_ in fe_c.fit.notes if n_ not in notes)

    # --- review-noise corrected
    fe_eiv = fe_eiv_c = None
    if review_sd is not None:
        try:
            fe_eiv = run(design="fe", eiv=True, **noise_kw)
            t = fe_eiv.table.iloc[0]
            rows.append(finding(
                "firm.fe_corrected.per_star", "Index points per star, within firms, corrected for rating noise",
                "The within-firm slope per star of the true (noise-free) rating: errors-in-variables correction "
                "with review noise variance review_sd^2 / n_reviews", t.estimate, t.ci_low, t.ci_high,
                unit=_FIRM_UNIT, n=int(t.n), n_clusters=fe_eiv.fit.n_clusters,
                method="two-way FE, errors-in-variables corrected; clustered by firm", kind="effect",
                caveat="Assumes reviews are independent draws around the firm-year's true rating." + _FIRM_ASSUMPTION))
            if len(levels) >= 2:
                with quietly():
                    fe_eiv_c = firm_panel(data[data[contact].isin(levels)], **common, design="fe", moderator=contact,
                                          eiv=True, **noise_kw)
                for r in fe_eiv_c.table.itertuples(index=False):
                    key = ("firm.fe_corrected.difference" if " - " in r.group
                           else f"firm.fe_corrected.per_star.{_contact_key(r.group)}")
                    rows.append(finding(key, f"Index points per star, within firms, corrected ({r.group} contact)",
                                        "Noise-corrected within-firm slope by contact intensity", r.estimate, r.ci_low,
                                        r.ci_high, unit=_FIRM_UNIT, n=int(r.n), n_clusters=int(r.n_firms),
                                        method="two-way FE with contact interaction, errors-in-variables corrected; "
                                        "clustered by firm", kind="effect",
                                        caveat="Assumes reviews are independent draws around the firm-year's true "
                                               "rating." + _FIRM_ASSUMPTION))
        except ValueError as exc:
            notes.append(f"The rating-noise correction could not be computed: {exc}")

    # --- direction (lagged, both ways)
    lag_rows = {}
    for key, rev, label, unit in (("firm.lag.rating_to_index", False, "Last year's rating -> this year's index",
                                   _FIRM_UNIT),
                                  ("firm.lag.index_to_rating", True, "Last year's index -> this year's rating",
                                   "stars per index point")):
        try:
            res = run(design="fe", lag=1, reverse=rev)
        except ValueError as exc:
            notes.append(f"{label}: not estimated ({exc})")
            continue
        lag_rows[key] = res
        t = res.table.iloc[0]
        rows.append(finding(key, label, f"{label}, within firms, controlling the outcome's previous value "
                            "(two-way FE, consecutive years)", t.estimate, t.ci_low, t.ci_high, unit=unit,
                            n=int(t.n), n_clusters=res.fit.n_clusters,
                            method="two-way FE, lagged predictor and lagged outcome; clustered by firm",
                            kind="association",
                            caveat="Direction diagnostic: Nickell (1981) bias of order 1/T and persistence leaking "
                                   "through a noisy lagged rating; not an effect."))

    # --- contrasts: pooled, between, snapshot
    pooled = run(design="pooled", n_boot=n_boot, seed=seed)
    between = run(design="between", n_boot=n_boot, seed=seed)
    snap = run(design="cross_section", n_boot=n_boot, seed=seed)
    tp = pooled.table.set_index("term")
    rows.append(finding("firm.pooled.corr", "Correlation of rating and index, pooled over firm-years",
                        "Pearson correlation of the employer rating and the customer index across all firm-years",
                        tp.loc["corr", "estimate"], tp.loc["corr", "ci_low"], tp.loc["corr", "ci_high"],
                        unit="correlation", n=int(tp.loc["corr", "n"]), n_clusters=pooled.fit.n_clusters,
                        method="Pearson r; firm-cluster bootstrap interval", kind="association",
                        caveat="Mixes stable differences between firms and industries (brand, pay, industry) "
                               "into the association."))
    rows.append(finding("firm.pooled.per_star", "Index points per star, pooled over firm-years",
                        "OLS slope of the index on the rating across all firm-years (no fixed effects)",
                        tp.loc["rating->index", "estimate"], tp.loc["rating->index", "ci_low"],
                        tp.loc["rating->index", "ci_high"], unit=_FIRM_UNIT, n=int(tp.loc["rating->index", "n"]),
                        n_clusters=pooled.fit.n_clusters, method="pooled OLS; clustered by firm", kind="association",
                        caveat="Confounded by stable firm differences that move both series together."))
    tb = between.table.set_index("term")
    rows.append(finding("firm.between.per_star", "Index points per star, between firms (firm means)",
                        "OLS slope of the firm's mean index on its mean rating (one row per firm)",
                        tb.loc["rating->index", "estimate"], tb.loc["rating->index", "ci_low"],
                        tb.loc["rating->index", "ci_high"], unit=_FIRM_UNIT, n=int(tb.loc["rating->index", "n"]),
                        n_clusters=between.fit.n_firms, method="OLS on firm means; HC1 intervals", kind="association",
                        caveat="Uses only stable differences between firms: confounded by brand, pay and industry."))
    ts = snap.table.set_index("term")
    snap_year = int(data.loc[data[[rating, index]].notna().all(axis=1), year].max())
    rows.append(finding("firm.cross_section.r2", f"Share of the index's variance the rating explains ({snap_year})",
                        "R² (squared correlation) of index on rating across firms in the last year: the single-snapshot "
                        "design", ts.loc["r2", "estimate"], ts.loc["r2", "ci_low"], ts.loc["r2", "ci_high"],
                        unit="share of variance", n=int(ts.loc["r2", "n"]), n_clusters=snap.fit.n_firms,
                        method="squared Pearson r; firm bootstrap interval", kind="association",
                        caveat="A small R² can hide a sizeable slope: ratings vary little between firms compared with "
                               "everything else that moves the index."))

    # --- effect size in plain words
    rated = data.dropna(subset=[rating, index])
    firm_means = rated.groupby(firm)[[rating, index]].mean()
    sd_between = float(firm_means[index].std(ddof=1))
    fe_row = fe_all.table.iloc[0]
    share = 100 * fe_row.estimate / sd_between if sd_between > 0 else np.nan
    rows.append(finding("firm.fe.share_of_spread", "Within-firm slope of one star, in % of the index's spread between firms",
                        "the within-firm index points per star divided by the standard deviation of the firms' mean "
                        "index, in percent",
                        share, 100 * fe_row.ci_low / sd_between, 100 * fe_row.ci_high / sd_between,
                        unit="% of the between-firm SD of the index", n=int(fe_row.n),
                        n_clusters=fe_all.fit.n_clusters, method="ratio (SD treated as fixed)", kind="descriptive",
                        caveat="Interval treats the between-firm SD as known."))
    table = findings_table(rows)

    # --- truth check
    tcheck = None
    if truth:
        if truth.get("observed"):
            tcheck = truth_check(table, truth)
        else:
            eff = truth.get("derived", {}).get("effect_per_star", {})
            lat = {f"firm.fe_corrected.per_star.{_contact_key(k)}": v for k, v in eff.items() if k in ("high", "low")}
            if "difference" in eff:
                lat["firm.fe_corrected.difference"] = eff["difference"]
            recs = []
            for r in table.itertuples(index=False):
                if r.key in lat:
                    v = float(lat[r.key])
                    recs.append({"key": r.key, "finding": r.finding, "estimate": r.estimate, "ci_low": r.ci_low,
                                 "ci_high": r.ci_high, "truth": v, "inside_ci": bool(r.ci_low <= v <= r.ci_high),
                                 "latent": v})
            tcheck = pd.DataFrame(recs, columns=["key", "finding", "estimate", "ci_low", "ci_high", "truth",
                                                 "inside_ci", "latent"])
            notes.append("The truth record has no observed-scale section: the noise-corrected slopes are compared with "
                         "the structural effects per star (the uncorrected slopes are attenuated and have no latent match).")

    out_details: dict[str, pd.DataFrame] = {}
    if details:
        out_details = _firm_details(data, fe_all, fe_c, fe_eiv, fe_eiv_c, lag_rows, pooled, between, snap,
                                    firm=firm, industry=industry, contact=contact, year=year, rating=rating,
                                    index=index, n_reviews=n_reviews, review_sd=review_sd, levels=levels,
                                    min_group_size=min_group_size, ledger=ledger, notes=notes,
                                    sd_between=sd_between, snap_year=snap_year, few_reviews=few_reviews)
        out_details["ledger"] = ledger.frame
    return Findings(report="firm_level", table=table, details=out_details, notes=tuple(dict.fromkeys(notes)),
                    truth=tcheck)


def _firm_details(data, fe_all, fe_c, fe_eiv, fe_eiv_c, lag_rows, pooled, between, snap, *, firm, industry,
                  contact, year, rating, index, n_reviews, review_sd, levels, min_group_size, ledger, notes,
                  sd_between, snap_year, few_reviews) -> dict[str, pd.DataFrame]:
    """The supporting tables of the firm-level report (see :func:`firm_level`)."""
    from cxex_lab.models.firm_panel import firm_panel
    from cxex_lab.privacy import suppress_small_groups
    from cxex_lab.results import quietly

    det: dict[str, pd.DataFrame] = {}
    rated = data.dropna(subset=[rating, index])

    # --- by industry (small industries suppressed)
    if industry is not None:
        keys = [industry] + ([contact] if contact is not None else [])
        g = rated.groupby(keys, dropna=False)
        by = g.agg(n_firms=(firm, "nunique"), n_firm_years=(year, "size"), mean_rating=(rating, "mean"),
                   mean_index=(index, "mean")).reset_index()
        by["corr"] = [
            float(np.corrcoef(s[rating], s[index])[0, 1]) if len(s) > 2 and s[rating].std() > 0 and s[index].std() > 0
            else np.nan for _, s in g]
        big = by.loc[by["n_firms"] >= min_group_size, industry].tolist()
        fe_cols = {"fe_per_star": np.nan, "fe_ci_low": np.nan, "fe_ci_high": np.nan}
        for c, v in fe_cols.items():
            by[c] = v
        eligible = [ind for ind in big if
                    (rated[rated[industry] == ind].groupby(firm)[year].size() >= 2).sum() >= 2]
        if len(eligible) >= 2:
            try:
                with quietly():
                    res = firm_panel(rated[rated[industry].isin(eligible)], firm=firm, year=year, x=rating, y=index,
                                     moderator=industry)
                slopes = res.table[~res.table["group"].str.contains(" - ", regex=False)].set_index("group")
                for i, ind in by[industry].items():
                    if str(ind) in slopes.index:
                        by.loc[i, ["fe_per_star", "fe_ci_low", "fe_ci_high"]] = \
                            slopes.loc[str(ind), ["estimate", "ci_low", "ci_high"]].to_numpy(float)
            except ValueError as exc:
                notes.append(f"Per-industry fixed-effects slopes not estimated: {exc}")
        by = suppress_small_groups(by, "n_firms", ["n_firm_years", "mean_rating", "mean_index", "corr",
                                                  "fe_per_star", "fe_ci_low", "fe_ci_high"],
                                   min_group_size=min_group_size, ledger=ledger, table="by_industry")
        n_sup = int(by["suppressed"].sum())
        if n_sup:
            notes.append(f"{n_sup} industr{'y has' if n_sup == 1 else 'ies have'} fewer than {min_group_size} firms: "
                         "suppressed in the by-industry table (the firms stay in the overall estimates).")
        sort = [contact, industry] if contact is not None else [industry]
        det["by_industry"] = by.sort_values(sort).reset_index(drop=True)

    # --- by contact intensity
    if contact is not None:
        g = rated.groupby(contact)
        bc = g.agg(n_firms=(firm, "nunique"), n_firm_years=(year, "size"), mean_rating=(rating, "mean"),
                   mean_index=(index, "mean")).reset_index()
        bc["share_of_firms"] = bc["n_firms"] / rated[firm].nunique()
        if n_reviews is not None:
            bc["median_reviews"] = g[n_reviews].median().to_numpy()
        if fe_c is not None:
            rel = fe_c.fit.reliability
            bc["reliability"] = [rel.get(str(v), np.nan) for v in bc[contact]]
        det["by_contact"] = suppress_small_groups(bc, "n_firms", [c for c in bc.columns if c not in (contact, "n_firms")],
                                                  min_group_size=min_group_size)

    # --- what moves the answer
    rows = []

    def add(step, label, res, term, group="all", kind="association", reading=""):
        t = res.table
        hit = t[(t["term"] == term) & (t["group"] == str(group))]
        if hit.empty:
            return
        r = hit.iloc[0]
        rows.append({"step": step, "analysis": label, "group": str(group), "estimate": r.estimate, "ci_low": r.ci_low,
                     "ci_high": r.ci_high, "unit": r.unit, "n_firms": int(r.n_firms), "kind": kind,
                     "reliability": r.reliability, "reading": reading})

    add(1, "Pooled correlation, all firm-years", pooled, "corr",
        reading="how tightly the two series move together across firms and years")
    add(1, "Pooled R², all firm-years", pooled, "r2", reading="share of the index's variance the rating explains")
    add(2, f"Snapshot R², {snap_year} only", snap, "r2", reading="the single-year design: most variation is between firms")
    with quietly():
        snap_c = firm_panel(rated[rated[contact].isin(levels)], firm=firm, year=year, x=rating, y=index,
                            design="cross_section", moderator=contact, n_boot=199) if len(levels) >= 2 else None
    if snap_c is not None:
        for lv in levels:
            add(2, f"Snapshot R², {snap_year} only", snap_c, "r2", lv)
    add(3, "Pooled slope, all firm-years", pooled, "rating->index",
        reading="mixes stable differences (brand, pay, industry) into the slope")
    add(4, "Between firms (firm means)", between, "rating->index", reading="only stable differences: confounded")
    add(5, "Within firms (two-way FE)", fe_all, "rating->index", kind="effect",
        reading="the published design: a firm's own rating moving, year shocks removed")
    if fe_c is not None:
        for lv in levels:
            add(6, "Within firms, by contact intensity", fe_c, "rating->index", lv, kind="effect",
                reading="the effect depends on how much customers meet employees")
    if n_reviews is not None:
        by_group = len(levels) >= 2
        try:
            with quietly():
                fe_w = firm_panel(rated[rated[contact].isin(levels)] if by_group else rated, firm=firm, year=year,
                                  x=rating, y=index, weights=n_reviews, moderator=contact if by_group else None)
            for lv in (levels if by_group else ["all"]):
                add(7, "Within firms, weighted by review count", fe_w, "rating->index", lv, kind="effect",
                    reading="ratings resting on more reviews count more: less attenuation")
        except ValueError as exc:
            notes.append(f"Within firms, weighted by review count: not estimated ({exc})")
        # firm-years resting on few vs many reviews: the within-firm slope on each subset
        noise_kw = dict(n_reviews=n_reviews, review_sd=review_sd) if review_sd is not None else {}
        for label, sub in ((f"Within firms, firm-years with fewer than {few_reviews} reviews",
                            rated[rated[n_reviews] < few_reviews]),
                           (f"Within firms, firm-years with {few_reviews} or more reviews",
                            rated[rated[n_reviews] >= few_reviews])):
            try:
                with quietly():
                    if len(levels) >= 2:
                        res = firm_panel(sub[sub[contact].isin(levels)], firm=firm, year=year, x=rating, y=index,
                                         moderator=contact, **noise_kw)
                    else:
                        res = firm_panel(sub, firm=firm, year=year, x=rating, y=index, **noise_kw)
            except ValueError as exc:
                notes.append(f"{label}: not estimated ({exc})")
                continue
            for lv in (levels if len(levels) >= 2 else ["all"]):
                add(8, label, res, "rating->index", lv, kind="effect",
                    reading="ratings averaged over few reviews are noisy: the slope is attenuated")
    if fe_eiv is not None:
        src = fe_eiv_c if fe_eiv_c is not None else fe_eiv
        for lv in (levels if fe_eiv_c is not None else ["all"]):
            add(9, "Within firms, corrected for rating noise", src, "rating->index", lv, kind="effect",
                reading="errors-in-variables correction: the slope per star of the true rating")
    det["designs"] = pd.DataFrame(rows)
    if len(det["designs"]):
        d = det["designs"]
        d.insert(2, "label", d["analysis"] + " [" + d["group"].astype(str) + "]")

    # --- direction
    drows = []
    for key, res in lag_rows.items():
        for r in res.table.itertuples(index=False):
            drows.append({"key": key, "term": r.term, "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high,
                          "p": r.p, "unit": r.unit, "n": r.n, "n_firms": r.n_firms})
    det["direction"] = pd.DataFrame(drows)

    # --- rating noise
    if fe_c is not None or fe_eiv is not None:
        nrows = []
        groups = levels if fe_c is not None else ["all"]
        for lv in groups:
            rec = {"group": str(lv)}
            src = fe_c if fe_c is not None else fe_all
            rec["reliability"] = src.fit.reliability.get(str(lv), np.nan)
            for name, res in (("fe", src), ("corrected", fe_eiv_c if fe_c is not None else fe_eiv)):
                if res is None:
                    continue
                hit = res.table[(res.table["term"] == "rating->index") & (res.table["group"] == str(lv))]
                if len(hit):
                    rec[f"{name}_per_star"] = float(hit.iloc[0].estimate)
                    rec[f"{name}_ci_low"] = float(hit.iloc[0].ci_low)
                    rec[f"{name}_ci_high"] = float(hit.iloc[0].ci_high)
            nrows.append(rec)
        det["noise"] = pd.DataFrame(nrows)

    # --- effect size
    within_sd = float(rated.groupby(firm)[rating].transform(lambda s: s - s.mean()).std(ddof=1))
    est = float(fe_all.table.iloc[0].estimate)
    eff = [{"group": "all", "per_star": est, "between_firm_sd_index": sd_between,
            "share_of_spread_pct": 100 * est / sd_between if sd_between > 0 else np.nan,
            "within_firm_sd_rating": within_sd, "typical_move": est * within_sd}]
    if fe_c is not None:
        for lv in levels:
            hit = fe_c.table[(fe_c.table["term"] == "rating->index") & (fe_c.table["group"] == str(lv))]
            if len(hit):
                e = float(hit.iloc[0].estimate)
                eff.append({"group": str(lv), "per_star": e, "between_firm_sd_index": sd_between,
                            "share_of_spread_pct": 100 * e / sd_between if sd_between > 0 else np.nan,
                            "within_firm_sd_rating": within_sd, "typical_move": e * within_sd})
    ef = pd.DataFrame(eff)
    ef["sentence"] = [
        (f"{'All firms' if r.group == 'all' else r.group.capitalize() + '-contact firms'}: one more star goes with "
         f"about {r.per_star:+.1f} index points, about {r.share_of_spread_pct:.0f}% of the index's spread between "
         f"firms (SD {r.between_firm_sd_index:.1f} points); a typical year-to-year move of a firm's rating "
         f"({r.within_firm_sd_rating:.2f} stars) goes with {r.typical_move:+.2f} points.")
        for r in ef.itertuples(index=False)]
    det["effect_size"] = ef
    return det


# =========================================================================== the registry
#: Report functions the harness (``benchmarks/coverage.py``) runs on replicate studies, with the
#: keyword arguments it uses there (``harness``: with intervals; ``truth``: on the very large
#: truth study, where intervals are not needed). Reports whose function is not defined yet
#: are left out.
_REPORT_SPECS: dict[str, dict[str, dict[str, Any]]] = {
    "data_quality": {"harness": {}, "truth": {}},
    "mirror": {"harness": {}, "truth": {}},
    "linkage": {"harness": {}, "truth": {}},
    "drivers": {"harness": {"n_boot": 200}, "truth": {"n_boot": 0}},
    # the truth study needs a few draws only so that the money chain's products exist
    "service_profit_chain": {"harness": {"n_boot": 300}, "truth": {"n_boot": 20}},
    "direction": {"harness": {"invariance": False}, "truth": {"invariance": False}},
    "vicious_circle": {"harness": {}, "truth": {}},
    "study_design": {"harness": {"power": False}, "truth": {"power": False}},
}
REPORTS: dict[str, tuple[Callable[..., Findings], dict[str, dict[str, Any]]]] = {
    name: (globals()[name], spec) for name, spec in _REPORT_SPECS.items() if callable(globals().get(name))
}
