r"""The chain EX -> operations -> CX (-> a further outcome): parallel-mediator analysis.

:func:`mediation` estimates the a-paths (EX -> each operational mediator), the
b-paths (mediator -> CX, holding EX and the other mediators), the direct and
total effects, the indirect effect through each mediator and, with a further
outcome, the serial chains EX -> mediator -> CX -> outcome, each with a
percentile cluster-bootstrap interval.

By default the effects are identified **within employees** (employee and wave
fixed effects): stable differences between people (a good manager, an easy
customer mix) cannot produce them. ``effects="between"`` (person means) and
``effects="pooled"`` (all rows, no fixed effects) remain for contrast.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.linalg
import statsmodels.api as sm

from cxex_lab.models._checks import _check_columns, _check_design, _check_frame
from cxex_lab.results import Fit, Result

__all__ = ["mediation", "MediationFit", "EFFECTS"]

#: The three ways :func:`mediation` can use a panel (see its docstring).
EFFECTS: tuple[str, ...] = ("within", "between", "pooled")

_BATCH = 256
_MIN_CLUSTERS = 20


@dataclass(frozen=True, kw_only=True)
class MediationFit(Fit):
    """Fit record of :func:`mediation`.

    Attributes
    ----------
    effects : {"within", "between", "pooled"}
        Which variation identified the paths.
    x, y, mediators, outcome2 : str, tuple of str, str or None
        The columns in each role.
    unit, period : str or None
        The unit (person) and period columns (``None`` where not used).
    n_units : int or None
        Units behind the estimates (``None`` when ``unit`` is None).
    n_singletons : int
        Units with a single complete row, left out of a within fit (they carry
        no within-unit variation); counted in ``n_dropped`` too.
    n_boot, n_boot_failed : int
        Bootstrap resamples asked for, and those that failed (singular design).
    boot : DataFrame
        The successful bootstrap draws, one column per term of the table (paths
        and products), one row per resample; used to combine steps of a chain
        (:func:`cxex_lab.models.loyalty.money_chain`).
    """

    effects: str
    x: str
    y: str
    mediators: tuple[str, ...]
    outcome2: str | None
    unit: str | None
    period: str | None
    n_units: int | None
    n_singletons: int = 0
    n_boot: int = 0
    n_boot_failed: int = 0
    boot: pd.DataFrame | None = field(default=None, compare=False, repr=False)


def _listify(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return list(v)


# --------------------------------------------------------------------------- core maths
def _solve_paths(g: np.ndarray, nb: int, xpos: int, k: int, has_y2: bool) -> np.ndarray:
    """All path coefficients from a stack of cross-product matrices ``g`` (B, p, p).

    Column layout of the design Z: ``[base (nb columns; x at xpos), M_1..M_k, y, (y2)]``.
    Returns (B, n_stats): a_1..a_k, b_1..b_k, direct, total and, with y2:
    c2 (y -> y2), e_1..e_k (M -> y2), direct2 (x -> y2 holding all), total2.
    """
    base = list(range(nb))
    mcols = list(range(nb, nb + k))
    ycol = nb + k
    rhs_cols = mcols + [ycol] + ([ycol + 1] if has_y2 else [])
    gb = g[:, base][:, :, base]
    # a-paths, total (and total2): regressions on the base columns only
    sol = np.linalg.solve(gb, g[:, base][:, :, rhs_cols])[:, xpos, :]
    a, tot = sol[:, :k], sol[:, k]
    full = base + mcols
    coef = np.linalg.solve(g[:, full][:, :, full], g[:, full, ycol][..., None])[..., 0]
    out = [a, coef[:, nb:], coef[:, xpos, None], tot[:, None]]
    if has_y2:
        full2 = full + [ycol]
        coef2 = np.linalg.solve(g[:, full2][:, :, full2], g[:, full2, ycol + 1][..., None])[..., 0]
        out += [coef2[:, -1:], coef2[:, nb : nb + k], coef2[:, xpos, None], sol[:, k + 1, None]]
    return np.concatenate(out, axis=1)


def _derived(s: np.ndarray, k: int, has_y2: bool) -> np.ndarray:
    """Products from the path stats (B, n_stats) -> (B, n_derived).

    indirect_1..k (a*b), indirect_total and, with y2: serial_1..k (a*b*c2),
    serial_direct (direct*c2), serial_total (total*c2), bypass_1..k (a*e),
    bypass_total, indirect2_total (total2 - direct2).
    """
    a, b = s[:, :k], s[:, k : 2 * k]
    direct, tot = s[:, 2 * k], s[:, 2 * k + 1]
    ind = a * b
    cols = [ind, ind.sum(axis=1, keepdims=True)]
    if has_y2:
        c2 = s[:, 2 * k + 2]
        e = s[:, 2 * k + 3 : 3 * k + 3]
        direct2, tot2 = s[:, 3 * k + 3], s[:, 3 * k + 4]
        byp = a * e
        cols += [ind * c2[:, None], (direct * c2)[:, None], (tot * c2)[:, None],
                 byp, byp.sum(axis=1, keepdims=True), (tot2 - direct2)[:, None]]
    return np.concatenate(cols, axis=1)


def _ols_table(y, x, names, cluster_codes, alpha):
    """Coefficients with classical or cluster-robust SEs (statsmodels; t with G-1 df)."""
    model = sm.OLS(y, x)
    if cluster_codes is None:
        fit = model.fit()
    else:
        fit = model.fit(cov_type="cluster", cov_kwds={"groups": cluster_codes}, use_t=True)
    ci = np.asarray(fit.conf_int(alpha))
    return {
        nm: (float(fit.params[i]), float(fit.bse[i]), float(ci[i, 0]), float(ci[i, 1]), float(fit.pvalues[i]))
        for i, nm in enumerate(names)
    }


def _boot_summary(d: np.ndarray, alpha: float) -> tuple[float, float, float, float]:
    """Bootstrap SD, percentile interval and two-sided bootstrap p-value of draws ``d``."""
    if len(d) < 2:
        return (np.nan,) * 4
    lo, hi = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    nb = len(d)
    pv = min(1.0, 2 * min(((d <= 0).sum() + 1) / (nb + 1), ((d >= 0).sum() + 1) / (nb + 1)))
    return float(d.std(ddof=1)), float(lo), float(hi), float(pv)


def _wave_block(period_codes: np.ndarray, unit_codes: np.ndarray, levels, period: str):
    """Person-centred wave indicators (reference = first level), redundant ones removed."""
    n_lev = len(levels)
    if n_lev < 2:
        return np.empty((len(period_codes), 0)), []
    d = np.zeros((len(period_codes), n_lev - 1))
    hit = period_codes > 0
    d[np.flatnonzero(hit), period_codes[hit] - 1] = 1.0
    d -= _unit_means(d, unit_codes)
    # In an unbalanced panel some centred indicators can be linear combinations of
    # others (or zero); they are nuisance columns, so keep a maximal independent set
    # (pivoted QR) rather than refusing the data.
    if d.shape[1]:
        _, r, piv = scipy.linalg.qr(d, mode="economic", pivoting=True)
        diag = np.abs(np.diag(r))
        tol = max(d.shape) * np.finfo(float).eps * (diag[0] if len(diag) else 0.0)
        keep = np.sort(piv[: int((diag > max(tol, 1e-10)).sum())])
    else:
        keep = np.array([], dtype=int)
    names = [f"{period}={levels[j + 1]}" for j in keep]
    return d[:, keep], names


def _unit_means(v: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-row mean of ``v`` (n, p) over the rows of the same unit."""
    n_u = int(codes.max()) + 1
    sums = np.zeros((n_u, v.shape[1]))
    np.add.at(sums, codes, v)
    cnt = np.bincount(codes, minlength=n_u).astype(float)
    return (sums / cnt[:, None])[codes]


def _estimand(path: str, x: str, y: str, y2: str | None, med: str | None, scope: str) -> str:
    words = {
        "a": f"effect of {x} on {med}",
        "b": f"effect of {med} on {y}, holding {x} and the other mediators",
        "direct": f"effect of {x} on {y} not carried by the mediators",
        "indirect": f"part of the effect of {x} on {y} carried by {med} (a*b)",
        "indirect_total": f"part of the effect of {x} on {y} carried by all mediators (sum of a*b)",
        "total": f"total effect of {x} on {y}",
        "c2": f"effect of {y} on {y2}, holding {x} and the mediators",
        "e2": f"effect of {med} on {y2}, holding {x}, {y} and the other mediators",
        "direct2": f"effect of {x} on {y2} not carried by the mediators or {y}",
        "serial": f"serial chain {x} -> {med} -> {y} -> {y2} (a*b*c2)",
        "serial_direct": f"serial chain {x} -> {y} -> {y2} bypassing the mediators (direct*c2)",
        "serial_total": f"all chains from {x} to {y2} that pass through {y} (total*c2)",
        "bypass": f"chain {x} -> {med} -> {y2} that bypasses {y} (a*e2)",
        "bypass_total": f"all chains {x} -> mediator -> {y2} that bypass {y} (sum of a*e2)",
        "indirect2_total": f"part of the effect of {x} on {y2} carried by the mediators and {y} (total2 - direct2)",
        "total2": f"total effect of {x} on {y2}",
    }[path]
    return f"{words}, {scope}"


# --------------------------------------------------------------------------- estimator
def mediation(
    df: pd.DataFrame,
    x: str,
    mediators: str | Sequence[str],
    y: str,
    *,
    unit: str | None = "employee_id",
    period: str | None = "wave",
    effects: str = "within",
    covariates: str | Sequence[str] | None = None,
    lags: str | Sequence[str] | None = None,
    cluster: str | None = None,
    outcome2: str | None = None,
    n_boot: int = 1000,
    seed: int | np.random.Generator | None = None,
    alpha: float = 0.05,
) -> Result:
    r"""Parallel-mediator analysis of EX -> operations -> CX (-> a further outcome).

    Parameters
    ----------
    df : DataFrame
        One row per unit-period (e.g. the employee x wave panel of
        :func:`cxex_lab.linkage.link`), or one row per unit with
        ``effects="pooled", unit=None``.
    x : str
        The cause (e.g. ``"esat"``).
    mediators : str or sequence of str
        Parallel mediators (e.g. ``["fcr_rate", "handle_minutes", "transfer_rate"]``).
    y : str
        The outcome (e.g. ``"csat"``).
    unit : str or None
        The unit (person) column, default ``"employee_id"``. ``None`` only with
        ``effects="pooled"`` (rows are then independent unless ``cluster`` is given).
    period : str or None
        The period column (e.g. ``"wave"``; the linked panel calls it ``"period"``).
        With ``effects="within"`` it adds period fixed effects; ``None`` drops them.
        Not used by ``"between"`` and ``"pooled"``.
    effects : {"within", "between", "pooled"}
        Which variation identifies the paths (Notes):

        * ``"within"`` (default): unit and period fixed effects. Estimates how a
          unit's outcome moves when its own ``x`` (and mediators) move away from
          its own average, net of what all units share in a period.
        * ``"between"``: regressions on unit means. Estimates how units with a
          higher average ``x`` differ in average outcome (an association between
          people, open to every stable confounder).
        * ``"pooled"``: all rows, no fixed effects (the pre-round-2 behaviour), a
          blend of the two that stable confounders inflate.
    covariates : str or sequence of str, optional
        Numeric columns adjusted for in every regression (centred with the rest
        under ``"within"``; a column constant within every unit is absorbed by the
        unit effect and refused; averaged under ``"between"``).
    lags : str or sequence of str, optional
        Columns whose value in the unit's previous period (the preceding level of
        ``period`` in the data) enters every regression as a covariate named
        ``"<col>_lag1"`` (e.g. ``lags=["esat", "csat"]`` adjusts for last wave's
        EX and CX, the time-varying confounders of a panel where EX and CX carry
        over). Rows without a previous period drop out (counted in
        ``fit.n_dropped``). Needs ``unit`` and ``period``; not with ``"between"``.
    cluster : str, optional
        The level the bootstrap resamples and the path SEs are clustered on.
        Default: ``unit`` (or independent rows when ``unit`` is None). Under
        ``"within"`` / ``"between"`` each unit must lie in one cluster (e.g.
        ``"team_id"``), so a resampled cluster brings whole units.
    outcome2 : str, optional
        A further outcome that ``y`` affects (e.g. next wave's retention rate):
        adds ``y -> outcome2``, the serial chains ``x -> M -> y -> outcome2`` and
        ``x -> y -> outcome2``, the chains bypassing ``y`` and the total effect of
        ``x`` on ``outcome2``.
    n_boot : int
        Cluster-bootstrap resamples (0 = none; product rows then have no interval).
    seed : int or numpy.random.Generator, optional
        The only source of randomness.
    alpha : float
        1 - confidence level.

    Returns
    -------
    Result
        ``table``: one row per path or product, columns ``term, estimate, se,
        ci_low, ci_high, p, n, path, mediator, estimand, ci_method``. ``path``
        codes: ``a`` (term ``"x -> M"``), ``b`` (``"M -> y"``), ``direct``,
        ``total``, ``indirect`` (``"indirect M"``), ``indirect_total``; with
        ``outcome2``: ``c2`` (``"y -> outcome2"``), ``e2`` (``"M -> outcome2"``),
        ``direct2`` (``"direct x -> outcome2"``), ``total2`` (``"total x ->
        outcome2"``), ``serial`` (``"x -> M -> y -> outcome2"``),
        ``serial_direct`` (``"x -> y -> outcome2"``), ``serial_total``,
        ``bypass`` (``"x -> M -> outcome2"``), ``bypass_total``,
        ``indirect2_total``. Regression paths carry cluster-robust OLS SEs with
        t(G-1) intervals (classical OLS when rows are independent); products
        carry the bootstrap SD, percentile interval and bootstrap p-value.
        ``fit``: :class:`MediationFit` (``fit.boot`` holds the draws of every
        term, paths included).

    Notes
    -----
    **Paths.** With base regressors :math:`W` (a constant and covariates; under
    ``"within"`` the centred covariates and centred period indicators):

    .. math::

        M_m &= a_m X + \gamma_m^\top W + e_m \quad (m = 1..k) \\
        Y &= c' X + \textstyle\sum_m b_m M_m + \gamma_y^\top W + e_y \\
        Y &= c X + \gamma_t^\top W + e_t \\
        L &= d X + \textstyle\sum_m e_m M_m + c_2 Y + \gamma_L^\top W + e_L

    indirect :math:`a_m b_m`; :math:`c = c' + \sum_m a_m b_m` exactly (OLS on the
    same rows); serial :math:`a_m b_m c_2`, :math:`c' c_2`, through-:math:`Y`
    total :math:`c\,c_2`; bypass :math:`a_m e_m`; and the total effect on
    :math:`L` decomposes exactly as
    :math:`d + \sum_m a_m e_m + c\,c_2`.

    **Within** (default). Every variable :math:`V` is centred on its unit mean,
    :math:`\tilde V_{it} = V_{it} - \bar V_i`, and the period indicators (less a
    reference period) are centred the same way and added as regressors. By the
    Frisch-Waugh-Lovell theorem this is exactly OLS with unit and period dummies
    (two-way fixed effects) on any panel, balanced or not (checked against
    ``linearmodels.PanelOLS(entity_effects=True, time_effects=True)`` in
    ``tests/test_mediation.py``). Identifying assumption: given the unit's stable
    level and the period, a unit's deviations in :math:`X` (and, for the
    b-paths, in :math:`M`) are unrelated to the other causes of its deviations in
    the outcome (sequential ignorability within unit; no unmeasured
    time-varying confounder, no same-period feedback from :math:`Y` to :math:`X`,
    effects that are the same for everyone). Stable confounders of any size
    are removed. Past EX or CX that drives both today's EX and today's CX is a
    time-varying confounder: adjust for it with ``lags`` (a lagged outcome inside
    a fixed-effects model carries Nickell bias of order 1/T). On the simulator's
    latent panel with its default dynamics (EX persistence 0.4, lagged EX -> CX),
    the within total effect without lags converges to 0.343 / 0.375 / 0.410 with
    4 / 6 / 10 waves against the structural 0.355, and with
    ``lags=["ex"]`` to 0.335 / 0.339 / 0.350 (20,000 employees). Units with a single complete row carry no
    within-unit variation and are left out (``fit.n_singletons``).

    **Between**. OLS on unit means :math:`\bar V_i`: the association between
    units, identified only if nothing stable differs between units with high
    and low :math:`\bar X` (rarely credible for people and sites).

    **Pooled**. OLS on all rows: a variance-weighted blend of within and between
    variation (Zhang, Zyphur & Preacher 2009), kept to show how pooling inflates
    the chain when stable confounders exist.

    **Bootstrap.** Computed from per-cluster cross-product matrices
    :math:`Z_g^\top Z_g` of :math:`Z = [W, X, M, Y, L]` (after centring): a
    resample's regressions only need :math:`\sum_g w_g Z_g^\top Z_g` with the
    resample counts :math:`w_g`. Centring is done once per unit, and a resampled
    unit brings its centred rows unchanged, so this equals two-way FE on the
    resampled panel (a unit drawn twice counts as two units) exactly
    (``tests/test_mediation.py`` refits resampled rows). Percentile intervals;
    bootstrap p-value
    :math:`\min(1, 2\min(\#\{\theta^*\le 0\}+1, \#\{\theta^*\ge 0\}+1)/(B+1))`.

    Checked against: ``pingouin.mediation_analysis`` (pooled point estimates and
    SEs), ``linearmodels.PanelOLS`` two-way FE (within point estimates and
    cluster-robust SEs), statsmodels OLS on unit means (between), refits on
    resampled rows (bootstrap), and recovery / coverage of the simulator's
    mediation paths. Pingouin is not used directly because it cannot resample
    clusters, has no fixed effects or serial outcome, and seeds the legacy global
    ``RandomState``.

    References
    ----------
    Preacher, K. J., & Hayes, A. F. (2008). Asymptotic and resampling strategies for
    assessing and comparing indirect effects in multiple mediator models. *Behavior
    Research Methods*, 40(3), 879-891.
    Zhang, Z., Zyphur, M. J., & Preacher, K. J. (2009). Testing multilevel mediation
    using hierarchical linear models. *Organizational Research Methods*, 12(4), 695-719.
    Lovell, M. C. (1963). Seasonal adjustment of economic time series and multiple
    regression analysis. *JASA*, 58(304), 993-1010 (the FWL theorem).
    Imai, K., Keele, L., & Tingley, D. (2010). A general approach to causal mediation
    analysis. *Psychological Methods*, 15(4), 309-334 (sequential ignorability).
    Field, C. A., & Welsh, A. H. (2007). Bootstrapping clustered data. *JRSS B*,
    69(3), 369-390.
    Hayes, A. F. (2018). *Introduction to Mediation, Moderation, and Conditional
    Process Analysis* (2nd ed.), chapter on serial mediation.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> n_emp, n_wave = 200, 4
    >>> d = pd.DataFrame({"employee_id": np.repeat(np.arange(n_emp), n_wave),
    ...                   "wave": np.tile(np.arange(1, n_wave + 1), n_emp)})
    >>> stable = np.repeat(rng.normal(size=n_emp), n_wave)  # confounds EX and CX
    >>> d["ex"] = stable + rng.normal(size=len(d))
    >>> d["fcr"] = 0.5 * d["ex"] + rng.normal(size=len(d))
    >>> d["cx"] = 0.4 * d["fcr"] + 0.2 * d["ex"] + stable + rng.normal(size=len(d))
    >>> table, fit = mediation(d, "ex", ["fcr"], "cx", n_boot=200, seed=1)
    >>> row = table.set_index("term").loc["indirect fcr"]
    >>> bool(row["ci_low"] < 0.2 < row["ci_high"])  # true indirect effect 0.5 * 0.4
    True
    >>> fit.effects, fit.cluster, fit.n_clusters
    ('within', 'employee_id', 200)
    >>> pooled, _ = mediation(d, "ex", ["fcr"], "cx", effects="pooled", n_boot=0)
    >>> round(float(table.set_index("term").loc["total", "estimate"]), 2)  # truth 0.2 + 0.5 * 0.4 = 0.4
    0.38
    >>> round(float(pooled.set_index("term").loc["total", "estimate"]), 2)  # the stable trait inflates it
    0.85
    """
    func = "mediation"
    df = _check_frame(df, func)
    mediators = _listify(mediators)
    covariates = _listify(covariates)
    if effects not in EFFECTS:
        raise ValueError(f"{func}: effects must be one of {EFFECTS}, got {effects!r}.")
    if not mediators:
        raise ValueError(f"{func}: give at least one mediator column.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if n_boot < 0:
        raise ValueError(f"{func}: n_boot must be >= 0, got {n_boot}.")
    if unit is None and effects != "pooled":
        raise ValueError(
            f"{func}: effects={effects!r} needs the unit column (unit=None is allowed only with "
            "effects='pooled'). Pass unit='employee_id' (or your person id column)."
        )
    numeric = [x, *covariates, *mediators, y] + ([outcome2] if outcome2 else [])
    if len(set(numeric)) != len(numeric):
        raise ValueError(
            f"{func}: a column is used in two roles ({numeric}); each of x, mediators, y, covariates, "
            "outcome2 must be distinct."
        )
    _check_columns(df, numeric, func)
    use_period = period if effects == "within" else None
    lags = _listify(lags)
    if lags:
        if effects == "between":
            raise ValueError(f"{func}: lags are for panels of unit-periods; effects='between' averages them away.")
        if unit is None or period is None:
            raise ValueError(f"{func}: lags={lags} need both the unit and the period column (got unit={unit!r}, period={period!r}).")
        _check_columns(df, lags, func)
        _check_columns(df, [unit, period], func, numeric=False)
        if df.duplicated([unit, period]).any():
            dup = df.loc[df.duplicated([unit, period], keep=False), [unit, period]].head(3)
            raise ValueError(
                f"{func}: {unit!r} x {period!r} must identify a row (one row per unit and period); "
                f"duplicates e.g. {dup.to_dict('records')}. Aggregate to one row per unit-period first."
            )
        pcodes_all = pd.factorize(df[period], sort=True)[0]
        here = pd.MultiIndex.from_arrays([df[unit].to_numpy(), pcodes_all])
        before = pd.MultiIndex.from_arrays([df[unit].to_numpy(), np.where(pcodes_all >= 0, pcodes_all - 1, -2)])
        new = {}
        for c in lags:
            name = f"{c}_lag1"
            if name in df.columns or name in numeric:
                raise ValueError(f"{func}: lag column {name!r} already exists in the data; rename it or drop it from lags.")
            new[name] = pd.Series(df[c].to_numpy(dtype=float), index=here).reindex(before).to_numpy()
        df = df.assign(**new)
        covariates = covariates + list(new)
        numeric = [x, *covariates, *mediators, y] + ([outcome2] if outcome2 else [])
    if cluster is None:
        cluster = unit
    ids = list(dict.fromkeys(c for c in (unit, use_period, cluster) if c is not None))
    if set(ids) & set(numeric):
        raise ValueError(f"{func}: the unit / period / cluster columns {ids} must not also be x, a mediator, y or a covariate.")
    _check_columns(df, ids, func, numeric=False)
    if unit is not None and use_period is not None and df.duplicated([unit, use_period]).any():
        dup = df.loc[df.duplicated([unit, use_period], keep=False), [unit, use_period]].head(3)
        raise ValueError(
            f"{func}: {unit!r} x {use_period!r} must identify a row (one row per unit and period); "
            f"duplicates e.g. {dup.to_dict('records')}. Aggregate to one row per unit-period first."
        )

    cols = numeric + ids
    keep = df[cols].notna().all(axis=1).to_numpy()
    n_dropped = int((~keep).sum())
    sub = df.loc[keep, cols]
    notes: list[str] = []
    if n_dropped:
        notes.append(f"{n_dropped} rows with a missing value in {cols} were left out.")

    if unit is not None and cluster != unit and effects != "pooled":
        per_unit = sub.groupby(unit, sort=False)[cluster].nunique()
        bad = per_unit[per_unit > 1]
        if len(bad):
            raise ValueError(
                f"{func}: with effects={effects!r} every {unit!r} must lie in one {cluster!r} cluster "
                f"(a resampled cluster must bring whole units); {len(bad)} units are in several, "
                f"e.g. {list(bad.index[:3])}. Cluster on {unit!r} or on a level that nests it."
            )

    n_singletons = 0
    if effects == "within":
        counts = sub.groupby(unit, sort=False)[unit].transform("size").to_numpy()
        single = counts < 2
        n_singletons = int(sub.loc[single, unit].nunique())
        if n_singletons:
            sub = sub.loc[~single]
            n_dropped += int(single.sum())
            notes.append(
                f"{n_singletons} {unit} with a single complete row carry no within-{unit} variation "
                "and were left out of the within fit."
            )

    k, kc = len(mediators), len(covariates)
    has_y2 = outcome2 is not None
    unit_codes = pd.factorize(sub[unit], sort=True)[0] if unit is not None else None
    n_units = int(unit_codes.max()) + 1 if unit_codes is not None and len(sub) else 0
    scope = {
        "within": f"within {unit} (unit{' and ' + use_period if use_period else ''} fixed effects)",
        "between": f"between {unit} (regression on {unit} means)",
        "pooled": "pooled over all rows (no fixed effects)",
    }[effects]

    if effects == "within":
        v = sub[numeric].to_numpy(dtype=float)
        if len(sub):
            vc = v - _unit_means(v, unit_codes)
        else:
            vc = v
        for j, col in enumerate(numeric):
            if len(sub) and not np.abs(vc[:, j]).max() > 1e-12 * max(1.0, float(np.abs(v[:, j]).max())):
                raise ValueError(
                    f"{func}: column {col!r} does not vary within any {unit!r} (over {n_units} units "
                    f"with two or more complete rows). Under effects='within' a column constant within "
                    "each unit is absorbed by the unit fixed effect: drop it, or use effects='between'."
                )
        if use_period is not None and len(sub):
            pcodes, plevels = pd.factorize(sub[use_period], sort=True)
            wave, wave_names = _wave_block(pcodes, unit_codes, list(plevels), use_period)
        else:
            wave, wave_names = np.empty((len(sub), 0)), []
        base_names = [x, *covariates, *wave_names]
        xpos = 0
        z = np.column_stack([vc[:, : 1 + kc], wave, vc[:, 1 + kc :]])
        row_units = unit_codes
    elif effects == "between":
        means = sub.groupby(unit, sort=True)[numeric].mean()
        z_num = means.to_numpy(dtype=float)
        z = np.column_stack([np.ones(len(means)), z_num])
        base_names = ["const", x, *covariates]
        xpos = 1
        row_units = np.arange(len(means))
        if cluster == unit:
            cl_of_row = means.index.to_numpy()
        else:
            cl_of_row = sub.drop_duplicates(unit).set_index(unit)[cluster].loc[means.index].to_numpy()
    else:
        z = np.column_stack([np.ones(len(sub)), sub[numeric].to_numpy(dtype=float)])
        base_names = ["const", x, *covariates]
        xpos = 1
        row_units = unit_codes
    nb = len(base_names)
    n = z.shape[0]
    min_rows = nb + k + 3
    if n < min_rows:
        what = "units" if effects == "between" else "complete rows"
        raise ValueError(
            f"{func}: only {n} {what} (after dropping {n_dropped} rows with missing values in {cols}"
            f"{' or single rows per unit' if n_singletons else ''}); need at least {min_rows}. "
            "Supply more data or fewer mediators/covariates."
        )
    all_names = base_names + mediators
    pred = [c for c in range(nb + k) if all_names[c] != "const"]
    _check_design(z[:, pred], [all_names[c] for c in pred], func)
    if not z[:, nb + k].std() > 0:
        raise ValueError(f"{func}: outcome {y!r} is constant in the complete rows; nothing to explain.")
    if has_y2 and not z[:, nb + k + 1].std() > 0:
        raise ValueError(f"{func}: outcome2 {outcome2!r} is constant in the complete rows; nothing to explain.")

    # ---- clusters (the level the bootstrap resamples)
    if cluster is None:
        codes, n_clusters = None, n
    elif effects == "between":
        codes = pd.factorize(cl_of_row, sort=True)[0]
        n_clusters = int(codes.max()) + 1
    elif cluster == unit:
        codes, n_clusters = row_units, n_units
    else:
        codes = pd.factorize(sub[cluster], sort=True)[0]
        n_clusters = int(codes.max()) + 1
    if cluster is not None and n_clusters < _MIN_CLUSTERS:
        msg = (f"only {n_clusters} clusters in {cluster!r}; cluster-robust SEs and the cluster "
               "bootstrap are unreliable with fewer than ~20-50 clusters.")
        notes.append(msg[0].upper() + msg[1:])
        warnings.warn(f"{func}: {msg}", stacklevel=2)

    # ---- point estimates and regression-path inference (statsmodels OLS)
    xb = z[:, :nb]
    tab_a = {m: _ols_table(z[:, nb + i], xb, base_names, codes, alpha)[x] for i, m in enumerate(mediators)}
    tab_y = _ols_table(z[:, nb + k], z[:, : nb + k], base_names + mediators, codes, alpha)
    tab_t = _ols_table(z[:, nb + k], xb, base_names, codes, alpha)[x]
    if has_y2:
        tab_y2 = _ols_table(z[:, nb + k + 1], z[:, : nb + k + 1], base_names + mediators + [y], codes, alpha)
        tab_t2 = _ols_table(z[:, nb + k + 1], xb, base_names, codes, alpha)[x]

    point_paths = _solve_paths((z.T @ z)[None], nb, xpos, k, has_y2)
    point = np.concatenate([point_paths, _derived(point_paths, k, has_y2)], axis=1)[0]

    # ---- names of every stat (paths then products), in _solve_paths/_derived order
    names = ([f"{x} -> {m}" for m in mediators] + [f"{m} -> {y}" for m in mediators] + ["direct", "total"])
    if has_y2:
        names += ([f"{y} -> {outcome2}"] + [f"{m} -> {outcome2}" for m in mediators]
                  + [f"direct {x} -> {outcome2}", f"total {x} -> {outcome2}"])
    names += [f"indirect {m}" for m in mediators] + ["indirect_total"]
    if has_y2:
        names += ([f"{x} -> {m} -> {y} -> {outcome2}" for m in mediators] + [f"{x} -> {y} -> {outcome2}", "serial_total"]
                  + [f"{x} -> {m} -> {outcome2}" for m in mediators] + ["bypass_total", "indirect2_total"])

    # ---- cluster bootstrap via per-cluster cross-products
    boot = np.full((n_boot, len(names)), np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        p = z.shape[1]
        outer = np.einsum("ni,nj->nij", z, z).reshape(n, p * p)
        if codes is not None:
            cp = np.zeros((n_clusters, p * p))
            np.add.at(cp, codes, outer)
        else:
            cp = outer
        for start in range(0, n_boot, _BATCH):
            bsz = min(_BATCH, n_boot - start)
            g = (_resample_counts(rng, n_clusters, bsz) @ cp).reshape(bsz, p, p)
            boot[start : start + bsz] = _boot_batch(g, nb, xpos, k, has_y2, len(names))
    ok = np.isfinite(boot).all(axis=1)
    bt = boot[ok]
    n_failed = int(n_boot - len(bt))
    if n_failed:
        notes.append(f"{n_failed} of {n_boot} bootstrap resamples had a singular design and were skipped.")

    # ---- the table
    col = {nm: j for j, nm in enumerate(names)}
    boot_label = f"percentile bootstrap over {cluster}" if cluster else "percentile bootstrap over rows"
    reg_label = f"cluster-robust OLS by {cluster}, t({n_clusters - 1} df)" if cluster else "OLS (independent rows)"
    rows = []

    def reg_row(term, path, med, t):
        est, se, lo, hi, pv = t
        rows.append({"term": term, "estimate": est, "se": se, "ci_low": lo, "ci_high": hi, "p": pv, "n": n,
                     "path": path, "mediator": med, "estimand": _estimand(path, x, y, outcome2, med, scope),
                     "ci_method": reg_label})

    def boot_row(term, path, med):
        se, lo, hi, pv = _boot_summary(bt[:, col[term]], alpha)
        rows.append({"term": term, "estimate": float(point[col[term]]), "se": se, "ci_low": lo, "ci_high": hi,
                     "p": pv, "n": n, "path": path, "mediator": med,
                     "estimand": _estimand(path, x, y, outcome2, med, scope), "ci_method": boot_label})

    for m in mediators:
        reg_row(f"{x} -> {m}", "a", m, tab_a[m])
    for m in mediators:
        reg_row(f"{m} -> {y}", "b", m, tab_y[m])
    reg_row("direct", "direct", None, tab_y[x])
    for m in mediators:
        boot_row(f"indirect {m}", "indirect", m)
    boot_row("indirect_total", "indirect_total", None)
    reg_row("total", "total", None, tab_t)
    if has_y2:
        reg_row(f"{y} -> {outcome2}", "c2", None, tab_y2[y])
        for m in mediators:
            reg_row(f"{m} -> {outcome2}", "e2", m, tab_y2[m])
        reg_row(f"direct {x} -> {outcome2}", "direct2", None, tab_y2[x])
        for m in mediators:
            boot_row(f"{x} -> {m} -> {y} -> {outcome2}", "serial", m)
        boot_row(f"{x} -> {y} -> {outcome2}", "serial_direct", None)
        boot_row("serial_total", "serial_total", None)
        for m in mediators:
            boot_row(f"{x} -> {m} -> {outcome2}", "bypass", m)
        boot_row("bypass_total", "bypass_total", None)
        boot_row("indirect2_total", "indirect2_total", None)
        reg_row(f"total {x} -> {outcome2}", "total2", None, tab_t2)
    table = pd.DataFrame(rows)

    method = {
        "within": f"within-{unit} mediation: {unit}{' and ' + use_period if use_period else ''} fixed effects "
                  "(unit-mean centring, centred period indicators), OLS paths",
        "between": f"between-{unit} mediation: OLS on {unit} means",
        "pooled": "pooled mediation: OLS on all rows, no fixed effects",
    }[effects]
    method += f"; products by {boot_label} ({n_boot} resamples)" if n_boot else "; no bootstrap"
    fit = MediationFit(
        method=method, n_obs=n, n_dropped=n_dropped, cluster=cluster,
        n_clusters=n_clusters if cluster is not None else None, alpha=alpha, notes=tuple(notes),
        effects=effects, x=x, y=y, mediators=tuple(mediators), outcome2=outcome2, unit=unit, period=use_period, n_units=n_units if unit is not None else None,
        n_singletons=n_singletons, n_boot=n_boot, n_boot_failed=n_failed,
        boot=pd.DataFrame(bt, columns=names),
    )
    return Result(table, fit)


def _resample_counts(rng: np.random.Generator, n_clusters: int, size: int) -> np.ndarray:
    """How often each of ``n_clusters`` clusters is drawn in ``size`` resamples (size, n_clusters)."""
    draws = rng.integers(0, n_clusters, size=(size, n_clusters))
    counts = np.zeros((size, n_clusters))
    np.add.at(counts, (np.repeat(np.arange(size), n_clusters), draws.ravel()), 1.0)
    return counts


def _boot_batch(g: np.ndarray, nb: int, xpos: int, k: int, has_y2: bool, width: int) -> np.ndarray:
    """Paths and products for a batch of resamples; a singular resample gives a NaN row."""
    try:
        s = _solve_paths(g, nb, xpos, k, has_y2)
        return np.concatenate([s, _derived(s, k, has_y2)], axis=1)
    except np.linalg.LinAlgError:
        out = np.full((len(g), width), np.nan)
        for i in range(len(g)):
            try:
                s = _solve_paths(g[i : i + 1], nb, xpos, k, has_y2)
                out[i] = np.concatenate([s, _derived(s, k, has_y2)], axis=1)[0]
            except np.linalg.LinAlgError:
                pass
        return out
