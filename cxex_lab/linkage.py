"""Link EX to CX through the interaction, and aggregate to unit x period panels.

A customer's survey answer belongs to the employee who handled the interaction it
rates; that employee's EX is taken from the survey wave that *precedes* the
period. :func:`link` builds one row per unit (employee, team or site) x period
with the EX of the linked wave, the CX and operations of the period, loyalty
outcomes where customers can be attributed, and the count behind every mean.

The joins and aggregations are Ibis expressions. They run in-process on DuckDB
by default and, unchanged, on any other Ibis backend passed as ``con`` (Spark,
a warehouse). Raw interaction rows never enter Python: only the aggregated
panel (and a handful of tiny lookups such as the wave opening dates) is
executed.

Periods
-------
``week`` / ``month`` / ``quarter``
    Calendar periods: the interaction's start time truncated to the Monday of its
    ISO week, the first of its month or of its quarter.
``wave``
    Wave period :math:`w` holds the interactions started from wave :math:`w`'s
    opening up to wave :math:`w+1`'s opening (the last wave's period is open
    ended). A wave *opens* on the calendar day of its first EX answer
    (``min(responded_at)`` truncated to the day, so interactions on the opening
    morning before the first answer still belong to the new wave).
    Interactions before the first opening have no wave period.
``window``
    The window design (Harter et al.; practitioners report that a rolling window
    of about six months after the survey links best): each employee-wave
    receives the CX of the interactions that employee started between
    ``responded_at + window_days[0]`` and ``responded_at + window_days[1]``.
    Team and site windows are anchored at the wave's opening instead. Windows of
    successive waves **overlap** when the window is longer than the wave spacing
    (the default 30-180 days with 91-day waves does), so one interaction can count
    in two rows: sum n over rows only within one wave. ``ex_lag`` is not used
    (the window itself is the lag); ``period_start`` is the wave opening.

EX lag
------
For a period starting at :math:`t`, let :math:`w_0` be the most recent wave
opened at or before :math:`t`. ``ex_lag=0`` links EX of wave :math:`w_0`,
``ex_lag=1`` (default) of the wave before it, and so on (waves in opening
order). For ``period="wave"``, period :math:`w` therefore gets EX of wave
:math:`w - \\text{ex\\_lag}`. A calendar period that starts before a wave opens
in it (e.g. the month in which wave 1 opens mid-month) has :math:`w_0` = the
previous wave.

Data-quality ledger
-------------------
``panel.attrs["ledger"]`` (records; ``cxex_lab.ledger.ledger_of(panel)`` gives the DataFrame) counts, with
its reason, every row that could not be linked:

* CX responses whose ``interaction_id`` is not in ``interactions``;
* interactions (and their CX responses) whose ``employee_id`` is not in
  ``employees`` (or whose employee has no team / site id at that level);
* interactions with no period (no start time; for ``wave``, started before the
  first wave opened; for ``window``, in no EX window);
* unit-periods with no EX wave ``ex_lag`` waves before them: excluded from the
  panel (they have no EX to link), with their interactions and CX responses;
* EX responses from employees not in ``employees``;
* customer outcomes (``wave`` / ``window`` only) that no interaction attributes
  to a unit;
* with ``reporting=True``, groups suppressed for privacy.

The rules (periods, windows, attribution, segments) and the ledger's wording
are the data contract's, written once in :mod:`cxex_lab.contract`
(:data:`~cxex_lab.contract.EXCLUSIONS`); validation, the workspace and the
mirror metrics apply the same ones. ``link`` itself does not validate: a
:class:`cxex_lab.workspace.Workspace` links validated tables (``ws.panel``).

Every CX response is therefore either behind some row's ``n_cx`` or in the
ledger (in ``window`` mode windows may overlap, so use ``period="wave"`` for
that accounting). Units that did answer no EX in the linked wave are kept with
missing EX and ``n_ex = 0``.

Loyalty
-------
``customer_outcomes.period`` is a wave period. A customer-period is attributed
to every unit that handled at least one of that customer's interactions in that
wave period (a customer served by two agents counts for both). Retention and
revenue are therefore only defined for ``period="wave"`` and ``"window"`` (for
``window``, each interaction in the window brings the outcome of its own wave
period); for calendar periods ``retention_rate``, ``revenue_mean`` and
``n_customers`` are missing. ``loyalty=False`` skips them (one pass over the
interactions less).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import ibis
import ibis.backends.duckdb  # noqa: F401  (the default engine: loaded with the module, not on the first call)
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cxex_lab import contract
from cxex_lab.contract import EXCLUSIONS, LEVELS, PERIODS
from cxex_lab.ledger import Ledger
from cxex_lab.privacy import check_min_group_size, drop_id_columns, suppress_small_groups
from cxex_lab.study import TABLES, Study

try:  # written in parallel; re-exported here once it exists
    from cxex_lab.agreement import agreement  # noqa: F401
except ImportError:  # pragma: no cover - depends on the other module
    agreement = None  # type: ignore[assignment]

__all__ = ["link", "link_interactions", "LEVELS", "PERIODS", "EX_MEASURES", "CX_MEASURES", "OPS_MEASURES", "agreement"]

# LEVELS (aggregation levels and the id columns that key them) and PERIODS (period
# choices, see the module docstring) are the contract's (cxex_lab.contract).

#: EX items averaged over a unit's respondents (``tp_*`` columns found in the data are added).
EX_MEASURES: tuple[str, ...] = ("enps", "esat", "ees", "empowerment", "cx_insight_access")
CX_MEASURES: tuple[str, ...] = ("nps", "csat", "ces")
#: Split-half columns of ``link(..., halves=True)``.
HALF_MEASURES: tuple[str, ...] = ("n_cx_h1", "n_cx_h2", "nps_h1", "nps_h2", "csat_h1", "csat_h2", "ces_h1", "ces_h2")
OPS_MEASURES: tuple[str, ...] = ("fcr_rate", "aht_seconds", "transfer_rate")
LOYALTY_MEASURES: tuple[str, ...] = ("retention_rate", "revenue_mean")

# status of an aggregated row (computed inside the Ibis expression)
_OK, _NO_UNIT, _NO_PERIOD, _NO_EX_WAVE = 0, 1, 2, 3

_NEEDED = {
    "employees": ("employee_id", "team_id", "site_id"),
    "ex_responses": ("employee_id", "wave", "responded_at"),
    "interactions": ("interaction_id", "employee_id", "customer_id", "started_at", "handle_seconds",
                     "resolved_first_contact", "transferred"),
    "cx_responses": ("interaction_id", "nps", "csat", "ces"),
    "customer_outcomes": ("customer_id", "period", "retained", "revenue"),
}


class LinkageError(ValueError):
    """A study or argument that :func:`link` cannot work with (the message says why)."""


# --------------------------------------------------------------------------- inputs


def _check_lag(ex_lag, what: str = "ex_lag must be a whole number of waves >= 0 (0 = the wave opened at or before "
                                   "the period, 1 = the one before it)") -> int:
    if isinstance(ex_lag, bool) or not isinstance(ex_lag, (int, np.integer)) or ex_lag < 0:
        raise LinkageError(f"{what}, got {ex_lag!r}")
    return int(ex_lag)


def _check_args(level, period, ex_lag, window_days, min_group_size, reporting, segment) -> tuple[float, float]:
    if level not in LEVELS:
        raise LinkageError(f"unknown level {level!r}; valid levels are {list(LEVELS)}")
    if period not in PERIODS:
        raise LinkageError(f"unknown period {period!r}; valid periods are {list(PERIODS)}")
    _check_lag(ex_lag)
    try:
        d0, d1 = (float(x) for x in window_days)
    except (TypeError, ValueError):
        raise LinkageError(f"window_days must be two numbers of days (start, end), got {window_days!r}") from None
    if not 0 <= d0 < d1:
        raise LinkageError(f"window_days must satisfy 0 <= start < end, got {window_days!r}")
    check_min_group_size(min_group_size)
    if reporting and level == "employee":
        raise LinkageError(
            "reporting=True is not allowed at level='employee': a reporting table may not show individual "
            "employees (one row per employee identifies them). Use level='team' or 'site' for a report, or "
            "reporting=False for an analysis panel that stays out of reports."
        )
    try:
        contract.segment_sites(segment)
    except ValueError as err:
        raise LinkageError(str(err)) from None
    return d0, d1


def _open(study: Study | str | Path, con) -> tuple[Any, dict[str, Any], str]:
    """Ibis tables for the five canonical tables (only the columns linkage needs), in the contract's form."""
    if con is None:
        con = contract.duckdb_connect()
    if isinstance(study, Study):
        tables = {}
        for name in TABLES:
            df = getattr(study, name)
            if df is None:
                tables[name] = None
                continue
            cols = [c for c in df.columns if c in _NEEDED[name] or (name == "ex_responses" and _is_ex_item(c))]
            tables[name] = ibis.memtable(pa.Table.from_pandas(df[cols], preserve_index=False))
        return con, _canonical(tables), study.source or "study in memory"
    if isinstance(study, (str, Path)):
        path = Path(study)
        if not path.exists():
            raise FileNotFoundError(f"study path {path} does not exist")
        from cxex_lab.workspace import engine_tables  # the loader (lazy: the workspace builds on this module)

        tables = engine_tables(path, con) if path.is_dir() and not (path / "study.yaml").exists() else None
        if tables is not None:  # Parquet read by the backend: raw rows never enter pandas
            return con, _canonical({n: t.drop(*[c for c in ("_row", "_file") if c in t.columns])
                                    if t is not None else None for n, t in tables.items()}), str(path)
        from cxex_lab.io import load_study  # CSV, DuckDB file or a study config: load, then link in memory

        return _open(load_study(path, validate=False), con)
    raise LinkageError(f"study must be a Study or the path of a study directory, got {type(study).__name__}")


def _canonical(tables: dict[str, Any]) -> dict[str, Any]:
    """The contract's column kinds (microsecond timestamps, ...) with the columns linkage uses."""
    out = {}
    for name, t in tables.items():
        if t is None:
            out[name] = None
            continue
        keep = [c for c in t.columns if name == "ex_responses" and _is_ex_item(c)]
        c = contract.canonical(t, name, keep=keep)
        out[name] = c.select(*[col for col in c.columns if col in _NEEDED[name] or col in keep])
    return out


def _is_ex_item(col: str) -> bool:
    return col in EX_MEASURES or contract.is_touchpoint(col)


def _check_columns(tables: dict[str, Any]) -> None:
    for name, need in _NEEDED.items():
        if tables.get(name) is None:
            if name in contract.REQUIRED_TABLES or name == "employees":
                raise LinkageError(f"the study has no {name!r} table, which linkage needs")
            continue
        missing = [c for c in need if c not in tables[name].columns]
        if missing:
            raise LinkageError(
                f"table {name!r} lacks column(s) {missing} needed for linkage; it has {list(tables[name].columns)}"
            )


def _ts(value) -> Any:
    return ibis.literal(pd.Timestamp(value).to_pydatetime(), type="timestamp")


# --------------------------------------------------------------------------- link


def link(
    study: Study | str | Path,
    level: str = "employee",
    period: str = "wave",
    ex_lag: int = 1,
    window_days: Sequence[float] = (30, 180),
    min_group_size: int = 5,
    reporting: bool = False,
    con: Any = None,
    segment: str | Sequence[str] | None = None,
    loyalty: bool = True,
    halves: bool = False,
) -> pd.DataFrame:
    """Link EX to the CX of the interactions each unit handled, per unit x period.

    Parameters
    ----------
    study : Study, path or Workspace
        A :class:`~cxex_lab.study.Study` (linked via ``ibis.memtable``), a study
        directory of Parquet files (read by the backend with ``read_parquet``;
        raw rows never enter pandas), or a :class:`cxex_lab.workspace.Workspace`
        (same as ``ws.panel(...)``). Other directories (CSV, a study config) and
        DuckDB files are loaded with :func:`cxex_lab.io.load_study` first.
        ``link`` does not validate: use a workspace for validated data.
    level : {"employee", "team", "site"}
        The unit of a row. Team and site rows pool the interactions of all their
        employees (membership from ``employees``).
    period : {"week", "month", "quarter", "wave", "window"}
        How interactions are grouped in time (module docstring).
    ex_lag : int
        Which wave's EX is linked: 0 = the most recent wave opened at or before
        the period start, 1 (default) = the wave before that, ...
    window_days : (float, float)
        For ``period="window"``: the window after each EX answer, in days.
    min_group_size : int
        Confidentiality minimum applied when ``reporting=True``.
    reporting : bool
        Return a reporting table: no employee / customer id columns, and groups
        with fewer than ``min_group_size`` EX or CX respondents (or customers)
        suppressed (values missing, ``suppressed=True``, counted in the
        ledger). Refused at ``level="employee"``.
    con : Ibis backend, optional
        Where to run (default: a new in-process DuckDB connection).
    segment : str or list of str, optional
        Site id(s): link only the employees of these sites (their interactions
        and the CX responses to them, :func:`cxex_lab.contract.segment_tables`).
        ``"all"`` or None links everything. Wave openings stay the whole study's.
    loyalty : bool
        Compute retention / revenue (``wave`` and ``window`` periods only).
    halves : bool
        Add split-half means of the CX items for a multiple-indicator model:
        within each unit-period the CX answers are numbered in the order of the
        interactions' start times (ties by interaction id); ``<item>_h1`` is
        the item's mean over the odd-numbered answers (1st, 3rd, ...),
        ``<item>_h2`` over the even-numbered ones, with ``n_cx_h1`` /
        ``n_cx_h2`` answers behind them.

    Returns
    -------
    DataFrame
        One row per unit x period: the unit ids, ``period`` (period start for
        calendar periods, the wave number for ``wave`` / ``window``),
        ``period_start``, ``ex_wave`` (the wave whose EX is linked), ``n_ex``
        and the EX means (``enps``, ``esat``, ``ees``, ``tp_*``,
        ``empowerment``, ``cx_insight_access``) plus ``enps_score``
        (-100..100); ``n_cx``, ``nps``, ``csat``, ``ces``, ``nps_score``
        (-100..100), ``csat_top2`` (share answering 4-5), with ``halves`` the
        split-half columns; ``n_interactions``, ``fcr_rate``, ``aht_seconds``,
        ``transfer_rate`` over all interactions; ``n_customers``,
        ``retention_rate``, ``revenue_mean``. ``attrs``: ``"ledger"``
        (records: ``ledger_of(panel)`` for a DataFrame), ``"params"``,
        ``"wave_openings"`` and, for an empty result, ``"explanation"``.

    Raises
    ------
    LinkageError (a ValueError)
        Unknown level / period, negative ``ex_lag``, ``reporting=True`` at
        employee level, an unknown segment, missing columns, or an empty
        interactions / cx_responses / ex_responses table.

    Examples
    --------
    >>> from cxex_lab.simulate import simulate_study
    >>> study = simulate_study(n_sites=2, n_employees=40, n_waves=3, seed=1)
    >>> panel = link(study, level="team", period="wave")
    >>> panel[["team_id", "period", "ex_wave", "n_ex", "n_cx"]].head(2)  # doctest: +SKIP
    """
    d0, d1 = _check_args(level, period, ex_lag, window_days, min_group_size, reporting, segment)
    ex_lag = int(ex_lag)
    if hasattr(study, "panel") and hasattr(study, "tables") and not isinstance(study, Study):
        if con is not None:
            raise LinkageError("link(workspace, con=...): a workspace runs on its own connection; omit con")
        return study.panel(level=level, period=period, ex_lag=ex_lag, window_days=(d0, d1),
                           min_group_size=min_group_size, reporting=reporting, segment=segment, loyalty=loyalty,
                           halves=halves)
    con, t, source = _open(study, con)
    _check_columns(t)
    counts = {name: t[name].count().name(name) for name in ("interactions", "cx_responses", "ex_responses")}
    counts = con.to_pyarrow(ibis.memtable({"_": [0]}).select(**counts)).to_pylist()[0]
    for name, n in counts.items():
        if n == 0:
            what = {"interactions": "no interactions to link CX through",
                    "cx_responses": "no CX responses to link",
                    "ex_responses": "no EX waves to link"}[name]
            raise LinkageError(f"cannot link {source}: table {name!r} is empty (0 rows), so there are {what}")
    waves = contract.openings_frame(con, t["ex_responses"])
    sites = contract.segment_sites(segment)
    if sites:
        emp = t["employees"]
        valid = con.to_pyarrow(emp.select(s=emp.site_id.cast("string")).distinct()).column(0).to_pylist()
        try:
            contract.check_segment(sites, valid)
        except ValueError as err:
            raise LinkageError(str(err)) from None
        t = contract.segment_tables(t, sites)
    ledger = Ledger()
    panel = link_tables(con, t, waves, ledger, level=level, period=period, ex_lag=ex_lag, window_days=(d0, d1),
                        loyalty=loyalty, halves=halves, scoped=bool(sites))
    params = dict(level=level, period=period, ex_lag=ex_lag, window_days=(d0, d1), min_group_size=min_group_size,
                  reporting=reporting, segment=segment, loyalty=loyalty, source=source)
    return finish_panel(panel, ledger, waves, params, segment=segment if sites else None)


def finish_panel(panel: pd.DataFrame, ledger: Ledger, waves: pd.DataFrame, params: dict,
                 segment: Any = None) -> pd.DataFrame:
    """The last steps of a panel: explanation of an empty segment, reporting, attrs."""
    level, period, ex_lag = params["level"], params["period"], params["ex_lag"]
    if segment is not None and (len(panel) == 0 or int(panel["n_cx"].sum()) == 0):
        explanation = (f"segment {segment!r} has no CX responses linked to its employees' interactions "
                       f"(period={period!r}, ex_lag={ex_lag}): the panel is empty")
        ledger.add("link", "panel", explanation, max(len(panel), 1), [])
        panel = panel.iloc[0:0]
        panel.attrs["explanation"] = explanation
    if params.get("reporting"):
        ex_items = [c for c in panel.columns if _is_ex_item(c)]
        panel = _reporting(panel, ledger, params["min_group_size"], ex_items)
    panel = panel.reset_index(drop=True)
    # plain records (not DataFrames) so pandas can compare and serialise attrs;
    # cxex_lab.ledger.ledger_of(panel) gives the ledger as a DataFrame
    panel.attrs["ledger"] = ledger.records
    panel.attrs["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    panel.attrs["wave_openings"] = [
        {"wave": int(w), "opened": pd.Timestamp(o).isoformat()} for w, o in zip(waves["wave"], waves["opened"])
    ]
    if len(panel) == 0 and "explanation" not in panel.attrs:
        panel.attrs["explanation"] = "no unit-period could be linked; see attrs['ledger'] for the reasons"
    return panel


def ex_items_of(ex_columns: Sequence[str]) -> list[str]:
    """The EX items of a panel, in panel order: enps, esat, ees, tp_* (as found), empowerment, insight."""
    cols = list(ex_columns)
    return [c for c in EX_MEASURES[:3] if c in cols] + [c for c in cols if contract.is_touchpoint(c)] + [
        c for c in EX_MEASURES[3:] if c in cols]


def link_tables(con, t: dict[str, Any], waves: pd.DataFrame, ledger: Ledger, *, level: str, period: str,
                ex_lag: int, window_days: tuple[float, float], loyalty: bool = True, halves: bool = False,
                scoped: bool = False, study_ledger: bool = True) -> pd.DataFrame:
    """The linked panel of tables already in the contract's form (the engine-side core of :func:`link`).

    ``t`` holds Ibis tables on ``con`` (a segment's tables when ``scoped``);
    ``waves`` the wave openings (:func:`cxex_lab.contract.openings_frame`).
    Exclusions are added to ``ledger``. ``study_ledger=False`` leaves out the
    study-wide entries that do not depend on the panel's level (EX answers of
    unknown employees, unattributable customer outcomes): a caller that counts
    them once (the workspace) passes False. Returns the panel without attrs.
    """
    d0, d1 = window_days
    emp = t["employees"].select("employee_id", "team_id", "site_id")
    keys = list(LEVELS[level])
    ex_items = ex_items_of(t["ex_responses"].columns)
    expr, pkey = _core_expression(t, emp, waves, level, period, ex_lag, d0, d1, ex_items, halves)
    has_outcomes = t.get("customer_outcomes") is not None
    if loyalty and has_outcomes and period in ("wave", "window"):
        expr = _add_loyalty(expr, t, emp, waves, level, period, d0, d1, scoped, pkey)
        if not scoped and study_ledger:
            ledger_unattributed_outcomes(con, t, waves, ledger)
    if not scoped and study_ledger:
        _ledger_ex_unknown(con, t, emp, ledger)
    expr = _final_columns(expr, keys, period, waves, ex_items, halves)
    return _collect(con, expr, [keys[0], "period"], ledger, level, period, ex_lag)


def _core_expression(t, emp, waves, level, period, ex_lag, d0, d1, ex_items, halves=False):
    """The Ibis expression of the panel (before loyalty), with a ``_status`` column.

    Two aggregates are joined on the unit x period key: operations over all
    interactions, and CX over the responses (each joined to the interaction it
    rates). Aggregating the CX columns over the ~10% of interactions that were
    surveyed, instead of over an outer join of every interaction with the
    responses, took the heavy step from 3.5 s / 1.2 GB to 2.7 s / 0.6 GB on the
    20,000-agent data of ``benchmarks/linkage.py`` (both plans as hand-written
    DuckDB SQL). It also counts an interaction with two responses once in the
    operations (the join counted it twice).

    Periods come from the contract (:func:`cxex_lab.contract.period_of`,
    :func:`~cxex_lab.contract.survey_windows`, :func:`~cxex_lab.contract.ex_wave_of`),
    attribution to teams and sites from :func:`cxex_lab.contract.attribute`.
    """
    i = t["interactions"]
    c = t["cx_responses"]
    i = i.select(
        _iid=i.interaction_id, employee_id=i.employee_id, started_at=i.started_at,
        handle_seconds=i.handle_seconds, _fcr=i.resolved_first_contact.cast("float64"),
        _tr=i.transferred.cast("float64"),
    )

    keys = list(LEVELS[level])
    if level != "employee":
        i = contract.attribute(i, emp, level)
        gkeys = keys
    else:
        gkeys = ["employee_id"]

    if period == "window":
        win, on = contract.survey_windows(t["ex_responses"], waves, level, d0, d1)
        i = i.left_join(win, on(i))
        pk = i._p
    else:
        pk = contract.period_of(i.started_at, period, waves)
    i = i.mutate(_p=pk)
    gcols = [*gkeys, "_p"]

    # operations: every interaction (in every window it falls in)
    oaggs = dict(n_interactions=i.count(), fcr_rate=i._fcr.mean(),
                 aht_seconds=i.handle_seconds.cast("float64").mean(), transfer_rate=i._tr.mean())
    if level != "employee":
        oaggs["_n_known"] = i._known.count()
    ops = i.group_by(gcols).aggregate(**oaggs)

    # CX: each response joined to the interaction it rates; orphan responses (no such
    # interaction) come through with missing keys and are counted, not dropped.
    # A 1-marker is counted rather than the id string, so no string outlives the join.
    isel = dict(_iid=i._iid, _ione=ibis.literal(1, type="int8"), **{k: i[k] for k in gcols})
    if level != "employee":
        isel["_iknown"] = i._known
    if halves:
        isel["_istart"] = i.started_at
    il = i.select(**isel)
    c = c.select(_cid=c.interaction_id, nps=c.nps, csat=c.csat, ces=c.ces)
    cj = c.join(il, c._cid == il._iid, how="left")

    if halves:  # answers numbered in time order within the unit-period: odd -> h1, even -> h2
        k = ibis.row_number().over(group_by=[cj[g] for g in gcols], order_by=[cj._istart, cj._iid])
        cj = cj.mutate(_odd=(k % 2) == 0)

    def share(cond):  # share of answered rows meeting cond (a comparison with a missing answer is null: skipped)
        return cond.cast("float64").mean()

    caggs = dict(
        n_cx=cj._ione.count(), _n_orphan=cj.count() - cj._ione.count(),
        nps=cj.nps.mean(), csat=cj.csat.mean(), ces=cj.ces.mean(),
        _prom=share(cj.nps >= 9), _detr=share(cj.nps <= 6), csat_top2=share(cj.csat >= 4),
    )
    if level != "employee":
        caggs["_n_cx_known"] = cj._iknown.count()
    if halves:
        caggs.update(n_cx_h1=cj._ione.count(where=cj._odd), n_cx_h2=cj._ione.count(where=~cj._odd))
        for m in CX_MEASURES:
            caggs[f"{m}_h1"] = cj[m].mean(where=cj._odd)
            caggs[f"{m}_h2"] = cj[m].mean(where=~cj._odd)
    cxa = cj.group_by(gcols).aggregate(**caggs)
    cxa = cxa.rename({f"_c_{k}": k for k in gcols})
    # null-safe equality: rows with a missing unit or period (ledger rows) must meet their CX too
    a = ops.outer_join(cxa, [ops[k].identical_to(cxa[f"_c_{k}"]) for k in gcols])
    half_cols = list(HALF_MEASURES) if halves else []
    a = a.select(
        **{k: ibis.coalesce(a[k], a[f"_c_{k}"]) for k in gcols},
        n_interactions=a.n_interactions.fill_null(0), n_cx=a.n_cx.fill_null(0), _n_orphan=a._n_orphan.fill_null(0),
        **{m: a[m] for m in (*OPS_MEASURES, *CX_MEASURES, "_prom", "_detr", "csat_top2")},
        **{m: a[m] for m in half_cols},
        **({"_n_known": a._n_known.fill_null(0), "_n_cx_known": a._n_cx_known.fill_null(0)}
           if level != "employee" else {}),
    ).view()  # a finished relation: the joins below start a new join chain

    if level == "employee":
        a = contract.attribute(a, emp, "employee")
        a = a.mutate(_n_known=ibis.cases((a._known.notnull(), a.n_interactions), else_=0),
                     _n_cx_known=ibis.cases((a._known.notnull(), a.n_cx), else_=0))
        unit_ok = a._known.notnull()
    else:
        unit_ok = ibis.and_(*[a[k].notnull() for k in keys])

    a = a.mutate(ex_wave=contract.ex_wave_of(a._p, period, ex_lag, waves))
    a = a.mutate(_status=ibis.cases(
        (~unit_ok, _NO_UNIT), (a._p.isnull(), _NO_PERIOD), (a.ex_wave.isnull(), _NO_EX_WAVE), else_=_OK
    ).cast("int8"))

    # EX per unit x wave (means over the unit's respondents)
    ex = t["ex_responses"]
    if level != "employee":
        ex = contract.attribute(ex, emp, level, how="inner").drop("_known")
        xkeys = keys
    else:
        xkeys = ["employee_id"]
    xaggs = {"_n_ex": ex.count()}
    for m in ex_items:
        xaggs[f"_x_{m}"] = ex[m].mean()
    xaggs["_eprom"] = (ex.enps >= 9).cast("int32").sum()
    xaggs["_edetr"] = (ex.enps <= 6).cast("int32").sum()
    xaggs["_enps_n"] = ex.enps.count()
    xa = ex.group_by([*xkeys, ex.wave.cast("int64").name("_xwave")]).aggregate(**xaggs)
    xa = xa.rename({f"_xk_{k}": k for k in xkeys})
    pred = [a.ex_wave == xa._xwave] + [a[k] == xa[f"_xk_{k}"] for k in xkeys]
    a = a.left_join(xa, pred)

    def ratio(num, den, scale=1.0):
        return (num.cast("float64") * scale) / den.nullif(0).cast("float64")

    out = {k: a[k] for k in keys}
    out.update(_p=a._p, ex_wave=a.ex_wave, _status=a._status, _n_orphan=a._n_orphan, _n_known=a._n_known,
               _n_cx_known=a._n_cx_known, n_ex=a._n_ex.fill_null(0))
    for m in ex_items:
        out[m] = a[f"_x_{m}"].cast("float64")
    out["enps_score"] = ratio(a._eprom - a._edetr, a._enps_n, 100.0)
    out["n_cx"] = a.n_cx
    for m in CX_MEASURES:
        out[m] = a[m].cast("float64")
    out["nps_score"] = (a._prom - a._detr) * 100.0
    out["csat_top2"] = a.csat_top2
    for m in half_cols:
        out[m] = a[m].fill_null(0) if m.startswith("n_") else a[m].cast("float64")
    out["n_interactions"] = a.n_interactions
    for m in OPS_MEASURES:
        out[m] = a[m].cast("float64")
    return a.select(**out), gkeys


def _add_loyalty(expr, t, emp, waves, level, period, d0, d1, scoped, gkeys):
    """Left-join retention / revenue of the customers each unit served (wave periods)."""
    i = t["interactions"]
    i = i.select(employee_id=i.employee_id, customer_id=i.customer_id, started_at=i.started_at)
    if scoped or level != "employee":
        keys = [k for k in LEVELS[level] if k != "employee_id"]
        i = contract.attribute(i, emp, level, how="inner", keys=keys).drop("_known")
    i = i.mutate(_cp=contract.wave_period(i.started_at, waves))
    if period == "window":
        win, on = contract.survey_windows(t["ex_responses"], waves, level, d0, d1)
        i = i.join(win, on(i))
    else:
        i = i.mutate(_p=i._cp)
    cust = i.select(*gkeys, "_p", "customer_id", "_cp").distinct()
    o = t["customer_outcomes"]
    o = o.select(_ocid=o.customer_id, _op=o.period.cast("int64"), _ret=o.retained.cast("float64"),
                 _rev=o.revenue.cast("float64"))
    cj = cust.join(o, (cust.customer_id == o._ocid) & (cust._cp == o._op))
    la = cj.group_by([*gkeys, "_p"]).aggregate(
        n_customers=cj.count(), retention_rate=cj._ret.mean(), revenue_mean=cj._rev.mean()
    )
    la = la.rename({f"_l_{k}": k for k in [*gkeys, "_p"]})
    pred = [expr[k] == la[f"_l_{k}"] for k in [*gkeys, "_p"]]
    j = expr.left_join(la, pred)
    return j.select(*expr.columns, "n_customers", "retention_rate", "revenue_mean")


def ledger_unattributed_outcomes(con, t, waves, ledger: Ledger, step: str = "link") -> None:
    """Count customer-periods that no interaction of that wave period attributes to a unit."""
    i = t["interactions"]
    cp = i.select(_c=i.customer_id, _cp=contract.wave_period(i.started_at, waves)).distinct()
    o = t["customer_outcomes"]
    n = int(con.execute(o.anti_join(cp, (o.customer_id == cp._c) & (o.period.cast("int64") == cp._cp)).count()))
    EXCLUSIONS["unattributed_outcome"].add(ledger, step, n)


def _ledger_ex_unknown(con, t, emp, ledger: Ledger) -> None:
    ex = t["ex_responses"]
    n = int(con.execute(ex.anti_join(emp, ex.employee_id == emp.employee_id).count()))
    EXCLUSIONS["unknown_employee_ex"].add(ledger, "link", n)


@contextmanager
def _batches(con, expr, chunk: int) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """Stream an expression's result as Arrow record batches: ``with _batches(...) as (schema, batches)``.

    Ibis 12's DuckDB ``to_pyarrow_batches`` calls ``fetch_record_batch`` on a
    cursor, which DuckDB 2 no longer has. On DuckDB 2 the expression is
    therefore streamed through the DuckDB relation Ibis builds for it (which
    also registers in-memory tables); other backends use Ibis' own method. The
    stream is closed on leaving the block, also on an error: an open result
    would block the connection for every later query.
    """
    rel = con._to_duckdb_relation(expr) if getattr(con, "name", None) == "duckdb" else None
    # backends may narrow types Ibis declared (DuckDB: a CASE of small integer literals comes
    # back as int32) or add a time zone (Spark: timestamps in the session's zone): cast to the declaration
    schema = expr.schema().to_pyarrow()
    if hasattr(rel, "to_arrow_reader"):  # DuckDB 2 (on DuckDB 1, Ibis' own method works)
        reader = rel.to_arrow_reader(chunk)
    else:
        reader = con.to_pyarrow_batches(expr, chunk_size=chunk)
    batches = (b if b.schema.equals(schema) else _conform(b, schema) for b in reader)
    try:
        yield schema, batches
    finally:
        reader.close()


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A record batch with the declared schema (zoned timestamps become UTC wall times)."""
    cols = []
    for field in schema:
        col = batch.column(field.name)
        if pa.types.is_timestamp(col.type) and col.type.tz is not None:
            col = pc.cast(col, pa.timestamp(col.type.unit))  # the UTC instant without its zone
        cols.append(col.cast(field.type) if not col.type.equals(field.type) else col)
    return pa.RecordBatch.from_arrays(cols, schema=schema)


_TALLY = ("n_interactions", "n_cx", "_n_known", "_n_orphan", "_n_cx_known")


def _collect(con, expr, order: list[str], ledger: Ledger, level, period, ex_lag) -> pd.DataFrame:
    """Execute the panel expression and split its rows into the panel and the ledger.

    The result is streamed in record batches: each adds the counts of its
    ledger rows (status != OK) to a tally and keeps its linked rows. These are
    then put in ``order`` (the unit id, then period) one column at a time,
    releasing each original column as it goes: a deterministic order for one
    column of extra memory, instead of the second full copy that an ORDER BY in
    the backend or ``DataFrame.sort_values`` would hold.
    """
    tally: dict[int, np.ndarray] = {}
    kept = []
    dropped = ("_status", *_TALLY[2:])
    with _batches(con, expr, 128_000) as (schema, batches):
        kept_schema = pa.schema([f for f in schema if f.name not in dropped])
        for batch in batches:
            sums = pa.table(batch.select(["_status", *_TALLY])).group_by("_status").aggregate(
                [("_status", "count"), *[(c, "sum") for c in _TALLY]])
            for row in sums.to_pylist():
                vals = np.array([row["_status_count"], *[row[f"{c}_sum"] or 0 for c in _TALLY]], dtype="int64")
                tally[row["_status"]] = tally.get(row["_status"], 0) + vals
            # the filter copies the linked rows into buffers of their own, so the backend's
            # batch (whose columns are freed only all together) is released at once
            kept.append(batch.filter(pc.equal(batch.column("_status"), _OK)).drop_columns(list(dropped)))
            del batch
    _ledger_tally(tally, ledger, level, period, ex_lag)

    table = pa.Table.from_batches(kept, schema=kept_schema)  # the schema: a result may have no batch at all
    del kept
    idx = _order_index(table, order)
    cols = {}
    for name in table.column_names:
        cols[name] = table.column(name).take(idx)
        table = table.drop_columns([name])
    table = pa.table(cols)
    del cols, idx
    # split_blocks + self_destruct: the Arrow buffers are released as pandas takes them over
    df = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    if "n_customers" in df.columns and df["n_customers"].notna().any():
        df["n_customers"] = df["n_customers"].astype("Int64").fillna(0)
    else:
        df["n_customers"] = df["n_customers"].astype("Int64")
    return df


def _order_index(table: pa.Table, order: list[str]) -> pa.Array:
    """Indices that sort ``table`` by the ``order`` columns (ascending, missing last).

    Each column is replaced by the rank of its value among its distinct values
    and the ranks are combined into one integer key: ranking a few thousand
    distinct ids and periods and sorting one integer column is several times
    faster than comparing millions of strings and timestamps.
    """
    if table.num_rows == 0:
        return pa.array([], type=pa.uint64())
    key = pa.scalar(0, pa.int64())
    for c in order:
        enc = pc.dictionary_encode(table.column(c)).combine_chunks()  # missing values stay missing
        rank = pc.take(pc.rank(enc.dictionary, sort_keys="ascending", tiebreaker="first"), enc.indices)
        # checked arithmetic: an overflow (beyond ~3e9 rows) raises instead of wrapping
        key = pc.add_checked(pc.multiply_checked(key, len(enc.dictionary) + 1), pc.cast(rank, pa.int64()))
    # a missing value in any key column sorts the row last (linked rows have no missing unit or period)
    return pc.array_sort_indices(key, order="ascending", null_placement="at_end")


def _ledger_tally(tally: dict[int, np.ndarray], ledger: Ledger, level, period, ex_lag) -> None:
    """Ledger entries from the per-status counts (the contract's exclusion policies and their words).

    Each tally holds: rows, interactions, CX responses, interactions of known
    employees, orphan responses, CX responses to interactions of known employees.
    """
    zero = np.zeros(1 + len(_TALLY), dtype="int64")
    orphans = int(sum(v[4] for v in tally.values()))
    EXCLUSIONS["orphan_response"].add(ledger, "link", orphans)

    rows, ni, ncx, nk, _, ncxk = (int(x) for x in tally.get(_NO_UNIT, zero))
    EXCLUSIONS["unknown_employee_interaction"].add(ledger, "link", ni - nk)
    EXCLUSIONS["unknown_employee_response"].add(ledger, "link", ncx - ncxk)
    no_unit_i, no_unit_c = contract.no_unit_exclusions(level)
    no_unit_i.add(ledger, "link", nk)
    no_unit_c.add(ledger, "link", ncxk)
    rows, ni, ncx, nk, _, _ = (int(x) for x in tally.get(_NO_PERIOD, zero))
    no_period_i, no_period_c = contract.no_period_exclusions(period)
    no_period_i.add(ledger, "link", ni)
    no_period_c.add(ledger, "link", ncx)
    rows, ni, ncx, nk, _, _ = (int(x) for x in tally.get(_NO_EX_WAVE, zero))
    for exclusion, n in zip(contract.no_ex_wave_exclusions(level, period, ex_lag), (rows, ni, ncx)):
        exclusion.add(ledger, "link", n)


def _final_columns(expr, keys, period, waves, ex_items, halves=False):
    """Rename and order the columns in the expression (so pandas needs no reshuffling copy)."""
    if period in ("wave", "window"):
        pairs = [(expr._p == int(w), _ts(o)) for w, o in zip(waves["wave"], waves["opened"])]
        pstart = (ibis.cases(*pairs, else_=None) if pairs else ibis.null()).cast("timestamp")
    else:
        pstart = expr._p.cast("timestamp")
    extra = {}
    if "n_customers" not in expr.columns:
        extra = dict(n_customers=ibis.null("int64"), retention_rate=ibis.null("float64"),
                     revenue_mean=ibis.null("float64"))
    cols = {k: expr[k] for k in keys}
    cols.update(period=expr._p, period_start=pstart, ex_wave=expr.ex_wave, n_ex=expr.n_ex)
    for c in [*ex_items, "enps_score", "n_cx", *CX_MEASURES, "nps_score", "csat_top2",
              *(HALF_MEASURES if halves else ()), "n_interactions", *OPS_MEASURES, "n_customers",
              *LOYALTY_MEASURES]:
        cols[c] = extra[c] if c in extra else expr[c]
    cols.update(_status=expr._status, _n_orphan=expr._n_orphan, _n_known=expr._n_known,
                _n_cx_known=expr._n_cx_known)
    return expr.select(**cols)


def _reporting(panel: pd.DataFrame, ledger: Ledger, min_group_size: int, ex_items) -> pd.DataFrame:
    """Reporting table: no person ids, small groups suppressed (see :mod:`cxex_lab.privacy`)."""
    out = drop_id_columns(panel)
    n_cols = ["n_ex", "n_cx"] + (["n_customers"] if out["n_customers"].notna().any() else [])
    values = [*ex_items, "enps_score", *CX_MEASURES, "nps_score", "csat_top2", "n_interactions",
              *OPS_MEASURES, *LOYALTY_MEASURES, "n_customers"]
    values = [c for c in values if c not in n_cols]
    out = suppress_small_groups(out, n_cols, values, min_group_size=min_group_size, ledger=ledger,
                                table="linked panel (reporting)", step="link")
    return out


# --------------------------------------------------------------------------- interactions


def link_interactions(
    study: Study | str | Path,
    ex_lag: int = 0,
    ex_columns: Sequence[str] = ("empowerment", "cx_insight_access", "esat", "enps", "ees"),
    con: Any = None,
) -> pd.DataFrame:
    """Interaction-level linkage: each interaction with its CX answer and the agent's EX.

    One row per interaction (in the log), with the CX response if it was
    surveyed (``nps``, ``csat``, ``ces``; missing otherwise), the wave ``period``
    it falls in, and the handling employee's answers (``ex_columns``) from the
    EX wave that precedes that period by ``ex_lag`` waves (missing when the
    employee did not answer that wave). Used for interaction-level analyses such
    as :func:`cxex_lab.models.spillover`.

    Unlike :func:`link`, this returns one row per interaction, so it brings raw
    rows into pandas: meant for a study or a segment that fits in memory.
    Interactions before the first EX wave have ``period`` 0 and no EX.

    Returns
    -------
    DataFrame
        ``interaction_id, employee_id, started_at, period, ex_wave,
        resolved_first_contact, transferred, handle_seconds, nps, csat, ces``
        plus ``ex_columns``, sorted by employee and time. ``attrs["n_surveyed"]``
        and ``attrs["n_with_ex"]`` count what could be linked.
    """
    ex_lag = _check_lag(ex_lag, "ex_lag must be a whole number >= 0 (waves back)")
    con, t, _ = _open(study, con)
    _check_columns(t)
    ex = t["ex_responses"]
    missing = [c for c in ex_columns if c not in ex.columns]
    if missing:
        raise LinkageError(f"ex_responses lacks column(s) {missing}; it has {list(ex.columns)}")
    waves = contract.openings_frame(con, ex)
    if waves.empty:
        raise LinkageError("no EX wave has an answer with a date: nothing to link interactions to")
    i, c = t["interactions"], t["cx_responses"]
    i = i.select("interaction_id", "employee_id", "started_at", "resolved_first_contact", "transferred", "handle_seconds")
    i = i.mutate(period=contract.wave_period(i.started_at, waves).fill_null(0))
    i = i.mutate(ex_wave=contract.ex_wave_of(i.period, "wave", ex_lag, waves))
    c = c.select(_cid=c.interaction_id, nps=c.nps, csat=c.csat, ces=c.ces)
    j = i.left_join(c, i.interaction_id == c._cid).drop("_cid")
    e = ex.select(_eid=ex.employee_id, _wave=ex.wave.cast("int64"), **{k: ex[k] for k in ex_columns})
    j = j.left_join(e, (j.employee_id == e._eid) & (j.ex_wave == e._wave)).drop("_eid", "_wave")
    out = con.to_pyarrow(j.order_by(["employee_id", "started_at"])).to_pandas()
    out.attrs["n_surveyed"] = int(out["csat"].notna().sum())
    out.attrs["n_with_ex"] = int(out[list(ex_columns)[0]].notna().sum()) if ex_columns else 0
    return out
