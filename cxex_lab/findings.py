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
import re
from collections.abc import Callable, Iterable, Mapping
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


def _finish(report: str, ws: Any, rows: list[dict], details: Mapping[str, pd.DataFrame] | None = None,
            notes: Iterable[str] = (), latent: Mapping[str, float] | None = None) -> Findings:
    """Assemble a report's Findings (table, details, notes, truth check)."""
    table = findings_table(rows)
    return Findings(report=report, table=table, details=dict(details or {}), notes=tuple(_notes(list(notes))),
                    truth=truth_check(table, getattr(ws, "truth", None), latent))


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
    panel = ws.panel("employee", "wave", ex_lag=0)
    n_cx = int(ws.table("cx_responses").count().execute())
    linked = int(panel.loc[panel["n_ex"] > 0, "n_cx"].sum())
    ledger = pd.concat([ws.ledger, _ledger_frame(panel)], ignore_index=True).drop_duplicates()
    ex = ws.ex_responses.merge(ws.employees[["employee_id", "team_id", "site_id"]], on="employee_id", how="left")
    groups = ex.groupby(["site_id", "team_id", "wave"], dropna=False).size().rename("respondents").reset_index()
    small = groups[(groups["respondents"] > 0) & (groups["respondents"] < min_group_size)]
    by_site = groups.assign(suppressed=groups.index.isin(small.index)).groupby("site_id", as_index=False).agg(
        team_waves=("team_id", "size"), suppressed=("suppressed", "sum"))
    n_emp = int(len(ws.employees))
    n_int = int(str(facts.get("interactions", "0")).replace(",", "") or 0)
    rows = [
        finding("data_quality.employees", "Employees in the study", "employees in the employees table (or derived)",
                n_emp, unit="employees", n=n_emp, method="count", kind="descriptive"),
        finding("data_quality.interactions", "Interactions in the log", "interactions handled by these employees",
                n_int, unit="interactions", n=n_int, method="count", kind="descriptive"),
        finding("data_quality.ex_response_rate", "EX response rate", "EX answers / employees employed when each wave opened, over all waves",
                ex_rate, unit="share", n=int(ex_r["eligible"].sum()), method="census count", kind="descriptive",
                sentence="About {value} of the employees answered each EX survey wave.", headline=True),
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
    rr = rr.rename(columns={"rate": "estimate"})
    details = {"overview": overview, "ledger": ledger, "response_rates": rr, "suppression_by_site": by_site}
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

    def side_stats(by: str | None, period: str | None) -> pd.DataFrame:
        cxs = ws.mirror_stats(by=by, period=period, cluster=cluster)
        exs = ws.mirror_stats(by=by, period=period, cluster=ex_cluster)
        return pd.concat([cxs[cxs["side"] == "CX"], exs[exs["side"] == "EX"]], ignore_index=True)

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
        small_sites = set(by_site.loc[by_site["suppressed"], "site_id"])
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
# (findings.linkage: written on track `reports-a`)


# =========================================================================== 04 drivers
# (findings.drivers: written on track `reports-a`)


# =========================================================================== 05 service-profit chain
# (findings.service_profit_chain: written by the lead)


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
                          f"{item} point more from the previous customer {{link}} {{value}} {item} points more from "
                          f"the next ({{n}} pairs of answers)."),
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
                      f"{{value}} {item} points, " + ("consistent with no shared within-day state."
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
# (findings.study_design: written on track `reports-c`)


# =========================================================================== firm level (issue 15)
_FIRM_UNIT = "index points (0-100) per star (1-5)"


def _contact_key(level: Any) -> str:
    import re

    slug = re.sub(r"[^0-9a-z]+", "_", str(level).strip().lower()).strip("_") or "level"
    return slug if slug.endswith("contact") else f"{slug}_contact"


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
        caveat=f"Attenuated by the noise of ratings averaged over few reviews{rel_txt}.",
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
            cav = "Attenuated by rating noise" + (f" (reliability {r.reliability:.2f})" if np.isfinite(r.reliability) else "") + "."
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
                caveat="Assumes reviews are independent draws around the firm-year's true rating."))
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
                                        caveat="Assumes reviews are independent draws around the firm-year's true rating."))
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
                        caveat="Confounded by stable firm differences that raise both series."))
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
    rows.append(finding("firm.fe.share_of_spread", "Within-firm effect of one star, in % of the index's spread between firms",
                        "firm.fe.per_star divided by the SD of the firms' mean index, in percent",
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
    "service_profit_chain": {"harness": {"n_boot": 300}, "truth": {"n_boot": 0}},
    "direction": {"harness": {}, "truth": {}},
    "vicious_circle": {"harness": {}, "truth": {}},
    "study_design": {"harness": {"power": False}, "truth": {"power": False}},
}
REPORTS: dict[str, tuple[Callable[..., Findings], dict[str, dict[str, Any]]]] = {
    name: (globals()[name], spec) for name, spec in _REPORT_SPECS.items() if callable(globals().get(name))
}
