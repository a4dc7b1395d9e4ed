r"""The vicious circle: does one customer's experience spill over to the next?

:func:`spillover` estimates, at interaction level, the effect of the CX of an
agent's *immediately preceding* interaction on the CX of the next one, with
agent x period or agent x **day** fixed effects, cluster-robust standard
errors by agent and a first-order correction of the Nickell (1981) bias of the
within estimator. Beside the carry-over it gives

* its **moderation** by several agent characteristics (empowerment, access to
  customer insight, ...), each with a raw and a **Holm**-adjusted p-value;
* its **decay** with the time gap between the two interactions (gap bins);
* **lead placebos**: the next customer's CX "predicting" the previous one's,
  and, more informative, an exogenous operational shock of the *next*
  interaction (e.g. it was transferred) "predicting" this interaction's CX,
  beside the same shock of the *previous* interaction.

:func:`spillover_pairs` fits the same models on the consecutive-interaction
pairs a study workspace computes in its engine (``ws.pairs()``: window
functions, so the interaction log never enters pandas); on the same study it
gives the same estimates as :func:`spillover` on the full interaction table
(``tests/test_spillover.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cxex_lab.models._checks import _check_columns, _check_frame
from cxex_lab.results import Fit, Result

__all__ = ["SpilloverFit", "shock_placebo_pairs", "spillover", "spillover_pairs"]

_MIN_BIN_PAIRS = 20  # a gap bin with fewer pairs is left out of the decay model
_REASONS = (
    "first_of_unit",
    "crosses_group",
    "cx_missing",
    "prev_cx_missing",
    "moderator_missing",
    "singleton_group",
)


@dataclass(frozen=True, kw_only=True)
class SpilloverFit(Fit):
    """Fit record of :func:`spillover`.

    Attributes
    ----------
    fixed_effects : tuple of str
        Columns whose combination defines a fixed-effect group (always starts with the agent).
    n_groups : int
        Fixed-effect groups with at least two usable pairs.
    mean_pairs_per_group : float
        Usable pairs per group (the T of the Nickell bias).
    n_pairs_excluded : dict
        Interactions not used as the later member of a pair, by reason.
    n_time_ties : int
        Interactions sharing their start time with the agent's previous one.
    moderators : tuple of str
        Moderators of the carry-over (one Holm family).
    centre : dict
        Value of each moderator at which ``prev_cx`` is reported.
    nickell_first_order : float
        The textbook first-order bias :math:`-(1+\\lambda)/(T-1)` at the mean T, for orientation.
    gap_bins : tuple of float
        Upper edges of the gap bins (in ``gap_unit``), or empty without a decay model.
    gap_unit : str
        Unit of the gaps ("minutes" for datetime stamps).
    shock : str or None
        The operational shock of the shock placebo.
    n_shock_obs : int
        Interactions in the shock model.
    """

    fixed_effects: tuple[str, ...]
    n_groups: int
    mean_pairs_per_group: float
    n_pairs_excluded: dict = field(default_factory=dict)
    n_time_ties: int = 0
    moderators: tuple[str, ...] = ()
    centre: dict = field(default_factory=dict)
    nickell_first_order: float = float("nan")
    gap_bins: tuple[float, ...] = ()
    gap_unit: str = "minutes"
    shock: str | None = None
    n_shock_obs: int = 0


# --------------------------------------------------------------------------- within machinery
def _demean(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Subtract group means (columns of ``values``)."""
    cnt = np.bincount(codes, minlength=n_groups).astype(float)
    out = values.astype(float).copy()
    for j in range(values.shape[1]):
        mean = np.bincount(codes, weights=values[:, j], minlength=n_groups) / cnt
        out[:, j] -= mean[codes]
    return out


def _within_ranks(codes: np.ndarray) -> np.ndarray:
    """Rank of each row within its group (rows sorted by group, then position)."""
    n = len(codes)
    first = np.r_[True, codes[1:] != codes[:-1]] if n else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def _decayed_sums(rho_row: np.ndarray, pos: np.ndarray, rank: np.ndarray) -> np.ndarray:
    r"""For each row p: :math:`S_p = \sum_{q<p,\ q \in g} \rho_g^{pos_p - 1 - pos_q}`.

    Rows are sorted by (group, pos). Recurrence over the rank r within the group:
    :math:`S_r = \rho^{\Delta_r} S_{r-1} + \rho^{\Delta_r - 1}` with
    :math:`\Delta_r = pos_r - pos_{r-1} \ge 1`; vectorised over groups, one step per rank.
    """
    s = np.zeros(len(pos))
    if len(pos) == 0:
        return s
    for r in range(1, int(rank.max()) + 1):
        at = np.flatnonzero(rank == r)
        delta = pos[at] - pos[at - 1]
        rho = rho_row[at]
        s[at] = rho**delta * s[at - 1] + rho ** (delta - 1)
    return s


def _fit_within(y, x_cols, codes, n_groups, cluster_codes):
    """Within (FE) OLS with cluster-robust SEs; returns fit and demeaned design."""
    yd = _demean(y[:, None], codes, n_groups)[:, 0]
    xd = _demean(x_cols, codes, n_groups)
    fit = sm.OLS(yd, xd).fit(cov_type="cluster", cov_kwds={"groups": cluster_codes}, use_t=True)
    return fit, yd, xd


def _nickell_correct(beta, xd, resid_var, codes, n_groups, pos, ar_index, mult, max_iter=50, yd=None, rho_codes=None):
    r"""First-order bias correction of a within-estimated AR coefficient vector.

    ``ar_index`` lists the columns of the design that are (lagged CX) x ``mult``
    columns; the AR coefficient of a pair is ``sum_k beta[ar_index[k]] * mult[:, k]``.
    Uses E[sum_i x~_i e~_i] = -(1/T_g) sum_{p,q} m_p E[y_{prev p} e_q], with
    E[y_{prev p} e_q] = sigma^2 rho_g^{d_pq}; rho_g is the mean AR coefficient over
    the rows sharing ``rho_codes`` (default: the demeaning groups ``codes``).
    ``yd`` (demeaned outcome): re-estimate sigma^2 at the corrected coefficients.
    """
    t_g = np.bincount(codes, minlength=n_groups).astype(float)
    rc = codes if rho_codes is None else rho_codes
    n_rc = int(rc.max()) + 1 if len(rc) else 0
    t_rc = np.bincount(rc, minlength=n_rc).astype(float)
    rank = _within_ranks(codes)
    xtx_inv = np.linalg.inv(xd.T @ xd)
    b_hat = beta.copy()
    b = beta.copy()
    bias = np.zeros_like(beta)
    converged = False
    for _ in range(max_iter):
        rho_pair = mult @ b[ar_index]
        rho_g = np.clip(np.bincount(rc, weights=rho_pair, minlength=n_rc) / t_rc, -0.99, 0.99)
        s_p = _decayed_sums(rho_g[rc], pos, rank)  # sum_q rho^d for each p
        if yd is not None:  # error variance at the current (corrected) coefficients
            with np.errstate(over="ignore", invalid="ignore"):
                r = yd - xd @ b
                resid_var = float(r @ r / max(len(yd) - n_groups, 1))
        e_xe = np.zeros(len(beta))
        for k, col in enumerate(ar_index):
            e_xe[col] = -resid_var * np.sum(mult[:, k] * s_p / t_g[codes])
        bias = xtx_inv @ e_xe
        b_new = b_hat - bias
        if not np.all(np.isfinite(b_new)) or np.max(np.abs(b_new)) > 10:
            break  # diverging: groups too short for a first-order correction
        if np.max(np.abs(b_new - b)) < 1e-10:
            b = b_new
            converged = True
            break
        b = b_new
    return b, bias, converged


def _ar_fit(y, x, extra, codes, n_groups, u_codes, pos, mult, correct, rho_codes=None):
    """Within fit of y on [x * mult columns, extra]; Nickell-corrected AR terms.

    ``mult`` (n, k): the AR design columns are x * mult[:, j]. Returns
    (corrected beta, uncorrected beta, cluster SEs, bias); the corrected values are NaN
    when the correction does not converge (groups too short).
    """
    cols = [x * mult[:, j] for j in range(mult.shape[1])] + list(extra)
    xmat = np.column_stack(cols)
    fit, yd, xd = _fit_within(y, xmat, codes, n_groups, u_codes)
    beta = np.asarray(fit.params)
    resid = yd - xd @ beta
    s2 = float(resid @ resid / max(len(y) - n_groups - xmat.shape[1], 1))
    b_corr, bias, ok = beta, np.zeros_like(beta), True
    if correct:
        args = (beta, xd, s2, codes, n_groups, pos, list(range(mult.shape[1])), mult)
        b_corr, bias, ok = _nickell_correct(*args, yd=yd, rho_codes=rho_codes)
        if not ok:  # fall back to sigma^2 from the uncorrected fit
            b_corr, bias, ok = _nickell_correct(*args, rho_codes=rho_codes)
        if not ok:
            b_corr, bias = np.full_like(beta, np.nan), np.full_like(beta, np.nan)
    return b_corr, beta, np.asarray(fit.bse), bias


def _regroup(g_codes, keep):
    """Factorize the FE codes of the kept rows and drop groups left with one row."""
    codes = pd.factorize(g_codes[keep], sort=False)[0]
    cnt = np.bincount(codes)
    ok = cnt[codes] >= 2
    idx = np.flatnonzero(keep)[ok]
    return idx, pd.factorize(codes[ok], sort=False)[0]


def _row(term, model, est, se, dof, alpha, n, unc=np.nan, bias=np.nan, **extra):
    tcrit = stats.t.ppf(1 - alpha / 2, dof)
    return {
        "term": term,
        "estimate": float(est),
        "se": float(se),
        "ci_low": float(est - tcrit * se),
        "ci_high": float(est + tcrit * se),
        "p": float(2 * stats.t.sf(abs(est / se), dof)) if se > 0 else np.nan,
        "n": int(n),
        "model": model,
        "estimate_uncorrected": float(unc),
        "bias_correction": float(bias),
        **extra,
    }


def _gap_labels(edges: Sequence[float], unit: str) -> list[str]:
    def fmt(v: float) -> str:
        if unit == "minutes" and v >= 60 and v % 60 == 0:
            return f"{v / 60:g} h"
        return f"{v:g} {'min' if unit == 'minutes' else unit}"

    labels = [f"< {fmt(edges[0])}"]
    labels += [f"{fmt(a)} to {fmt(b)}" for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f">= {fmt(edges[-1])}")
    return labels


# --------------------------------------------------------------------------- public
def spillover(
    interactions: pd.DataFrame,
    cx: str,
    unit: str = "employee_id",
    time: str = "started_at",
    moderators: str | Sequence[str] | None = "empowerment",
    group: str | Sequence[str] | None = None,
    gap_bins: Sequence[float] | None = (10, 60, 240),
    duration: str | None = None,
    shock: str | None = None,
    lead_placebo: bool = True,
    n_bins: int | None = 3,
    alpha: float = 0.05,
    centre: float | Mapping[str, float] | None = None,
    bias_correction: bool = True,
) -> Result:
    r"""Carry-over of the previous interaction's CX to the next: moderation, decay, placebos.

    Parameters
    ----------
    interactions : DataFrame
        One row per interaction, *including* interactions without a CX response
        (they define who came immediately before whom).
    cx : str
        CX column (latent CX or a survey score joined to the interaction; NaN =
        not surveyed).
    unit : str
        Agent column; previous interaction = the agent's immediately preceding one.
    time : str
        Start time (datetime, or numeric in any unit) ordering interactions within agent.
    moderators : str or sequence of str or None
        Agent characteristics at the time of the interaction (e.g.
        ``["empowerment", "cx_insight_access"]``), each interacted with the
        previous CX in one model; their p-values form one Holm family. The first
        also gets per-bin estimates. ``None``: no moderation.
    group : str or list of str, optional
        Fixed-effect groups, always nested in ``unit``: ``"day"`` (calendar day
        of ``time``, agent x day effects: they absorb everything that is
        constant within the agent's day, such as that day's queue load or an
        outage), or period columns such as ``"wave"``. Pairs whose previous
        interaction lies in another group are excluded. Default: agent effects.
    gap_bins : sequence of float or None
        Upper edges of the gap bins for the decay model, in minutes for
        datetime ``time`` (default < 10 min, 10-60 min, 1-4 h, >= 4 h), in the
        units of ``time`` otherwise. ``None``: no decay model.
    duration : str, optional
        Handle time of each interaction in seconds (datetime ``time``) or in
        ``time`` units; the gap is then the idle time from the end of the
        previous interaction to the start of this one (clipped at 0) instead of
        start to start.
    shock : str, optional
        A 0/1 (or numeric) operational outcome of each interaction that is
        exogenous to the agent's state, e.g. ``"transferred"`` or not resolved
        at first contact. Adds the shock placebo (see Notes).
    lead_placebo : bool
        Add the lead placebo of CX (next CX -> this CX), beside the lag on the
        same pairs.
    n_bins : int or None
        Quantile bins of the first moderator for per-bin estimates (duplicate
        edges merged); ``None`` = one estimate per level; 0 = no per-bin rows.
    alpha : float
        1 - confidence level.
    centre : float or dict, optional
        Moderator value(s) at which ``prev_cx`` is reported (default: the mean
        over used pairs; pass 3 for the midpoint of 1-5 items).
    bias_correction : bool
        Apply the first-order Nickell bias correction to the carry-over
        coefficients (default). Uncorrected values are in ``estimate_uncorrected``.

    Returns
    -------
    Result
        ``table``: columns ``term, estimate, se`` (cluster-robust by ``unit``),
        ``ci_low, ci_high, p`` (t with G-1 df, G = agents), ``n`` (pairs or
        interactions), ``model``, ``p_holm``, ``estimate_uncorrected``,
        ``bias_correction``, ``moderator_mean``, ``n_clusters`` (agents behind
        the row). Rows by ``model``:

        ===================== ==================================================
        model                 rows
        ===================== ==================================================
        ``carry_over``        ``prev_cx`` (at the moderators' centres),
                              ``prev_cx:<moderator>`` (change per point;
                              ``p_holm`` over the moderators), ``<moderator>``
                              (main effect, if it varies within groups)
        ``by_<moderator>``    ``prev_cx | <moderator> in <bin>``
        ``decay``             ``prev_cx | gap <bin>``
        ``lead_placebo``      ``prev_cx (lag)`` and ``next_cx (lead)`` on the
                              same pairs, no moderators
        ``shock_placebo``     ``prev_<shock>``, ``next_<shock> (lead)`` and the
                              control ``prev2_<shock>``
        ===================== ==================================================

        ``fit``: :class:`SpilloverFit`.

    Notes
    -----
    For consecutive interactions :math:`k-1, k` of agent :math:`i` in FE group
    :math:`g`, with moderators :math:`m_k`:

    .. math:: y_k = \alpha_g + \lambda\, y_{k-1} + \sum_m \lambda_m\, y_{k-1}(m_k - c_m)
              + \sum_m \gamma_m (m_k - c_m) + \varepsilon_k

    estimated by the within transformation (group means removed) and OLS with
    cluster-robust (agent) SEs (statsmodels; the absorbed group effects are
    nested in the agent clusters and not counted, Cameron & Miller 2015,
    Sec. VI). **Holm**: the moderation p-values of one call form the family;
    pass every moderator you looked at, not only the one that "worked".

    *Fixed effects.* Agent x period effects remove the agent's level in the
    period but leave within-day states: fatigue, a day's queue load, an
    outage make consecutive customers alike without any carry-over. Agent x
    day effects (``group="day"``) absorb what is constant within the day;
    states that drift within the day (fatigue over a shift) remain, and the
    shock placebo below is the check for them. With few pairs per day the
    within estimator's Nickell bias, about :math:`-(1+\lambda)/(T-1)`, is
    large; the correction below handles it to first order (tested at T = 6).

    *Decay.* Gap bins rather than an exponential term
    :math:`\lambda_0 e^{-gap/\tau}`: the bins impose no shape, keep the model
    linear so the within estimator and the Nickell correction apply
    unchanged (the AR coefficient of a pair is :math:`\lambda_{b(k)}`), and
    show directly whether the carry-over fades, stays flat, or is confined to
    back-to-back calls. :math:`\tau` would be weakly identified when most gaps
    fall into one range. The carry-over acts on the deviation from the group's
    level, :math:`y_k = a_g + \lambda_b (y_{k-1} - a_g) + \ldots`; with
    :math:`\lambda` varying by bin inside a group the level enters as
    :math:`a_g(1-\lambda_b)`, so the decay model has group x bin fixed effects
    (with common group effects the bins' estimates are pulled towards each
    other). A bin with fewer than 20 pairs in such cells is left out (note in
    ``fit.notes``). The same holds for moderators: their moderation is clean
    when they are constant within groups (an agent's answers per period); a
    note says when one is not.

    *Lead placebos.* (1) The CX lead: regress :math:`y_{k-1}` on :math:`y_k`
    on the same pairs. Under a stationary carry-over the lead coefficient
    *mirrors* the lag (the autocorrelation is symmetric), so a non-zero lead
    does not contradict a forward carry-over; a null lead together with a null
    lag is what no dependence looks like. It is corrected for the Nickell bias
    by running the same estimator in reversed time. (2) The informative
    version uses an operational shock :math:`s` of the neighbouring
    interactions: :math:`y_k = \alpha_g + \gamma_{prev} s_{k-1} + \gamma_{next}
    s_{k+1} + \varepsilon_k`. If the previous customer's experience carries
    forward, the previous call's transfer lowers this call's CX
    (:math:`\gamma_{prev} = \lambda b_s`), while the *next* call's transfer,
    which happens after this customer left, cannot
    (:math:`\gamma_{next} = 0`). A shared state (fatigue, queue load) that
    raises transfers and lowers CX around the same time makes both non-zero:
    a non-null :math:`\gamma_{next}` says the pattern is a state, not a carry-
    over. The shock must be exogenous to the agent's state for this to work
    (if a bad call makes the agent transfer the next one, the lead fires
    too); nothing else about it is assumed. The interaction's own shock and
    the shock two interactions back are controls (``prev2_<shock>`` is shown):
    under a carry-over both enter this CX, and shocks of other rows left in
    the error bias the coefficients by O(1/T) through the group means; with
    them controlled the remainder is :math:`O(\lambda^3 b/T)`. Rows need two
    predecessors and a successor in the same group; the neighbours need no CX
    answer. Under the null (no carry-over) the shock regressors are strictly
    exogenous, so the placebo needs no Nickell correction.

    *Nickell bias.* With :math:`T` pairs per group the within estimator of an
    AR coefficient is biased by about :math:`-(1+\lambda)/(T-1)` (Nickell 1981).
    We subtract the first-order bias
    :math:`(\tilde X^\top \tilde X)^{-1} E[\tilde X^\top \tilde\varepsilon]` with
    :math:`E[\sum_{k\in g} \tilde x_k \tilde\varepsilon_k] = -\frac{\sigma^2}{T_g}
    \sum_{p,q \in g} m_p\,\lambda_g^{\,pos(p)-1-pos(q)}` (sum over pairs with
    :math:`pos(q) \le pos(p) - 1`; :math:`m_p` = 1, the centred moderator or the
    gap-bin indicator), solved as a fixed point in :math:`\lambda`. It uses the
    actual positions, so gaps from unsurveyed interactions are handled, and
    for a complete series reduces to the Hahn & Kuersteiner (2002) correction
    :math:`\hat\lambda + (1+\hat\lambda)/T`. :math:`\sigma^2` is re-estimated
    at the corrected coefficients (this removes most of the second-order
    remainder at T = 6). The SEs are those of the uncorrected fit. If the
    fixed point diverges (groups of about two pairs) the estimate is NaN with a
    note; ``estimate_uncorrected`` stays.

    With unsurveyed interactions the previous *surveyed* CX is not the previous
    interaction's; such pairs are excluded, never bridged. If surveying depends
    on CX (extremes respond more) the used pairs are a selected sample.

    Checked against statsmodels OLS with explicit group dummies (identical
    uncorrected estimates; cluster SEs equal up to the nested-FE factor), by
    recovery of the simulated carry-over by empowerment (latent CX, agent x
    wave), of a carry-over with agent x day effects and 6 pairs a day, of a
    gap-dependent carry-over, by null lead placebos on a simulation without
    spillover (latent CX and observed CSAT), and by a within-day-state
    simulation without carry-over where the lag is spurious and the shock lead
    placebo detects it (``tests/test_spillover.py``).

    References
    ----------
    Nickell, S. (1981). Biases in dynamic models with fixed effects.
    *Econometrica*, 49(6), 1417-1426.
    Hahn, J., & Kuersteiner, G. (2002). Asymptotically unbiased inference for a
    dynamic panel model with fixed effects when both n and T are large.
    *Econometrica*, 70(4), 1639-1657.
    Holm, S. (1979). A simple sequentially rejective multiple test procedure.
    *Scandinavian Journal of Statistics*, 6(2), 65-70.
    Cameron, A. C., & Miller, D. L. (2015). A practitioner's guide to
    cluster-robust inference. *Journal of Human Resources*, 50(2), 317-372.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> rows = []
    >>> for agent in range(60):
    ...     emp, y = rng.integers(1, 6), 0.0
    ...     for k in range(40):
    ...         y = (0.25 - 0.05 * (emp - 3)) * y + rng.normal()
    ...         rows.append((agent, k, emp, y))
    >>> d = pd.DataFrame(rows, columns=["employee_id", "started_at", "empowerment", "cx"])
    >>> table, fit = spillover(d, "cx", centre=3, gap_bins=None)
    >>> table["term"].tolist()[:2]
    ['prev_cx', 'prev_cx:empowerment']
    """
    func = "spillover"
    df = _check_frame(interactions, func)
    mods, groups, edges = _check_common(func, alpha, n_bins, moderators, group, gap_bins, shock, cx)
    by_day = "day" in groups
    col_groups = [g for g in groups if g != "day"]
    _check_columns(df, [unit, time, *col_groups], func, numeric=False)
    _check_columns(df, [cx, *mods] + ([shock] if shock else []) + ([duration] if duration else []), func)
    is_dt = pd.api.types.is_datetime64_any_dtype(df[time])
    if not (is_dt or pd.api.types.is_numeric_dtype(df[time])):
        raise ValueError(
            f"{func}: time column {time!r} must be datetime or numeric (dtype {df[time].dtype}); "
            "parse it first, e.g. pd.to_datetime(df[time])."
        )
    if by_day and not is_dt:
        raise ValueError(
            f"{func}: group='day' needs datetime stamps in {time!r} (dtype {df[time].dtype}); pass a "
            "day column as group instead."
        )

    base_cols = list(dict.fromkeys([unit, time, *col_groups]))
    ok = df[base_cols].notna().all(axis=1).to_numpy()
    n_dropped = int((~ok).sum())
    keep_cols = list(dict.fromkeys([*base_cols, cx, *mods] + ([shock] if shock else []) + ([duration] if duration else [])))
    d = df.loc[ok, keep_cols].copy()
    d.attrs = {}
    if by_day:
        d["__day"] = d[time].dt.normalize()
    fe_cols = [unit] + [g for g in col_groups if g != unit] + (["__day"] if by_day else [])
    d = d.sort_values([unit, time], kind="mergesort").reset_index(drop=True)
    n_rows = len(d)

    ucode = pd.factorize(d[unit], sort=False)[0]
    gcode = d.groupby(fe_cols, sort=False, observed=True).ngroup().to_numpy()
    same_unit = np.r_[False, ucode[1:] == ucode[:-1]]
    tt = d[time].to_numpy()
    n_ties = int((same_unit & np.r_[False, tt[1:] == tt[:-1]]).sum())
    notes: list[str] = []
    if n_ties:
        msg = (
            f"{n_ties} interactions share their start time with the agent's previous one; their order "
            "is the input order. Use a finer time stamp if possible."
        )
        warnings.warn(f"{func}: {msg}", stacklevel=2)
        notes.append(msg)
    pos = np.arange(n_rows) - np.maximum.accumulate(np.where(~same_unit, np.arange(n_rows), 0))
    y = d[cx].to_numpy(dtype=float)
    mvals = d[mods].to_numpy(dtype=float) if mods else np.zeros((n_rows, 0))
    prev_y = np.r_[np.nan, y[:-1]]
    same_group = same_unit & np.r_[False, gcode[1:] == gcode[:-1]]
    if is_dt:
        tnum = (d[time] - pd.Timestamp("1970-01-01", tz=d[time].dt.tz)).dt.total_seconds().to_numpy() / 60.0
        gap_unit = "minutes"
        dur = d[duration].to_numpy(float) / 60.0 if duration else None
    else:
        tnum = d[time].to_numpy(dtype=float)
        gap_unit = f"{time} units"
        dur = d[duration].to_numpy(float) if duration else None
    gap = np.r_[np.nan, np.diff(tnum)]
    if dur is not None:
        gap = np.clip(gap - np.r_[np.nan, dur[:-1]], 0.0, None)
    gap[~same_unit] = np.nan

    reason = np.full(n_rows, "", dtype=object)
    reason[~same_unit] = "first_of_unit"
    use = _assign_reasons(reason, (
        ("crosses_group", ~same_group),
        ("cx_missing", np.isnan(y)),
        ("prev_cx_missing", np.isnan(prev_y)),
        ("moderator_missing", np.isnan(mvals).any(axis=1) if mods else np.zeros(n_rows, bool)),
    ), gcode, func, cx)

    shock_data = None
    if shock:
        s = d[shock].to_numpy(dtype=float)
        prev_s = np.r_[np.nan, s[:-1]]
        prev2_s = np.r_[np.nan, np.nan, s[:-2]]
        next_s = np.r_[s[1:], np.nan]
        prev_same = np.r_[False, same_group[:-1]]  # k-2 and k-1 in the same group
        next_same = np.r_[same_group[1:], False]
        ok_s = same_group & prev_same & next_same & ~np.isnan(y)
        shock_data = _shock_sample(ok_s, y, prev_s, next_s, prev2_s, s, gcode, ucode)

    sample = _PairSample(
        y=y[use], x=prev_y[use], pos=pos[use], ucode=ucode[use], gcode=gcode[use], mvals=mvals[use], gap=gap[use],
        shock=shock_data, excluded={name: int((reason == name).sum()) for name in _REASONS}, n_dropped=n_dropped,
        n_ties=n_ties, notes=notes, gap_unit=gap_unit,
        label=" x ".join(["agent"] + [g for g in col_groups if g != unit] + (["day"] if by_day else [])),
        fixed_effects=tuple("day" if c == "__day" else c for c in fe_cols),
    )
    return _estimate(sample, func=func, cx=cx, unit=unit, mods=mods, edges=edges, shock=shock,
                     lead_placebo=lead_placebo, n_bins=n_bins, alpha=alpha, centre=centre,
                     bias_correction=bias_correction)


def spillover_pairs(
    pairs: pd.DataFrame,
    cx: str = "csat",
    unit: str = "employee_id",
    moderators: str | Sequence[str] | None = "empowerment",
    group: str | Sequence[str] | None = "day",
    gap_bins: Sequence[float] | None = (10, 60, 240),
    duration: str | None = None,
    shock: str | None = None,
    lead_placebo: bool = True,
    n_bins: int | None = 3,
    alpha: float = 0.05,
    centre: float | Mapping[str, float] | None = None,
    bias_correction: bool = True,
    seq: str = "seq",
    gap: str = "prev_gap_seconds",
) -> Result:
    r""":func:`spillover` on consecutive-interaction pairs computed in the engine (``ws.pairs()``).

    Takes exactly what :meth:`cxex_lab.workspace.Workspace.pairs` returns: one
    row per (surveyed) interaction with its CX, its immediate neighbours' CX and
    operational flags, the gap, the day, the period and its position ``seq`` in
    the agent's sequence (counted over *every* interaction, surveyed or not). So
    the raw interaction log never has to be read into pandas: the window
    functions ran in the engine. Same model, same rows and the same estimates as
    :func:`spillover` on the full interaction table (tested on simulated studies,
    latent and observed CX, agent x day and agent x period groups).

    Parameters
    ----------
    pairs : DataFrame
        ``ws.pairs(...)`` (``surveyed_only=True`` suffices: rows without
        ``cx`` cannot be the later member of a pair). Columns used: ``unit``,
        ``seq``, ``cx`` and ``prev_<cx>``; for each group column *g*
        (``"day"``, ``"period"``) the column *g* and ``prev_same_<g>`` or
        ``prev_<g>``; ``gap`` (seconds from the previous interaction's start)
        with ``gap_bins``; ``prev_<duration>`` (seconds) with ``duration``;
        with ``shock``: ``<shock>``, ``prev_<shock>``, ``next_<shock>``,
        ``prev2_<shock>`` and, per group column, ``next_same_<g>`` /
        ``next_<g>`` and ``prev2_same_<g>`` / ``prev2_<g>`` (the interaction
        two back).
    cx, unit, moderators, gap_bins, shock, lead_placebo, n_bins, alpha, centre, bias_correction
        As in :func:`spillover` (``moderators`` are columns of ``pairs``: the
        agent's EX answers that ``ws.pairs`` joins).
    group : str or list of str or None
        Fixed-effect groups nested in the agent: ``"day"`` (default, agent x
        day), ``"period"`` (agent x wave period), both, or None (agent).
    duration : str, optional
        Handle-time column (seconds); the gap becomes the idle time from the
        end of the previous interaction (``prev_<duration>``).
    seq, gap : str
        The position and gap columns (``ws.pairs`` names).

    Returns
    -------
    Result
        As :func:`spillover`. ``fit.n_pairs_excluded`` counts only the rows
        given (with ``surveyed_only=True``, unsurveyed interactions are not
        rows, so ``cx_missing`` counts surveyed rows without ``cx``).

    Notes
    -----
    Positions: the Nickell correction needs the distance, in interactions,
    between the pairs of a group (an unsurveyed interaction between two
    surveyed ones still counts); ``seq`` carries it. The CX lead placebo needs
    only the pair itself; the shock placebo needs the neighbours' flags, which
    ``ws.pairs`` gives for every surveyed interaction whether or not the
    neighbours were surveyed.
    """
    func = "spillover_pairs"
    df = _check_frame(pairs, func)
    mods, groups, edges = _check_common(func, alpha, n_bins, moderators, group, gap_bins, shock, cx)
    need = [f"prev_{cx}"] + ([gap] if edges else []) + ([f"prev_{duration}"] if duration else []) + \
        ([f"prev_{shock}", f"next_{shock}", f"prev2_{shock}"] if shock else [])
    d, n_dropped, ucode, gcode, same = _pairs_frame(df, func, cx, unit, seq, groups, mods, shock, need)
    n_rows = len(d)
    pos = d[seq].to_numpy(dtype=float)
    y = d[cx].to_numpy(dtype=float)
    prev_y = _as_float(d[f"prev_{cx}"])
    mvals = d[mods].to_numpy(dtype=float) if mods else np.zeros((n_rows, 0))
    # the agent's first interaction has no previous one: no gap (or, without a gap column, seq 1)
    raw_gap = _as_float(d[gap]) / 60.0 if gap in d.columns else np.full(n_rows, np.nan)
    has_prev = ~np.isnan(raw_gap) if gap in d.columns else pos > 1
    gmin = raw_gap
    if duration:
        gmin = np.clip(raw_gap - _as_float(d[f"prev_{duration}"]) / 60.0, 0.0, None)
    same_group = has_prev & same("prev")
    notes: list[str] = []
    n_ties = int((raw_gap == 0).sum())
    if n_ties:
        msg = (
            f"{n_ties} interactions share their start time with the agent's previous one; their order "
            "is the engine's (start time, then interaction id). Use a finer time stamp if possible."
        )
        warnings.warn(f"{func}: {msg}", stacklevel=2)
        notes.append(msg)

    reason = np.full(n_rows, "", dtype=object)
    reason[~has_prev] = "first_of_unit"
    use = _assign_reasons(reason, (
        ("crosses_group", ~same_group),
        ("cx_missing", np.isnan(y)),
        ("prev_cx_missing", np.isnan(prev_y)),
        ("moderator_missing", np.isnan(mvals).any(axis=1) if mods else np.zeros(n_rows, bool)),
    ), gcode, func, cx)

    shock_data = None
    if shock:
        shock_data = _pairs_shock(d, cx, shock, same_group & same("prev2") & same("next"), gcode, ucode)

    sample = _PairSample(
        y=y[use], x=prev_y[use], pos=pos[use], ucode=ucode[use], gcode=gcode[use], mvals=mvals[use], gap=gmin[use],
        shock=shock_data, excluded={name: int((reason == name).sum()) for name in _REASONS}, n_dropped=n_dropped,
        n_ties=n_ties, notes=notes, gap_unit="minutes",
        label=" x ".join(["agent"] + list(groups)), fixed_effects=(unit, *groups),
    )
    return _estimate(sample, func=func, cx=cx, unit=unit, mods=mods, edges=edges, shock=shock,
                     lead_placebo=lead_placebo, n_bins=n_bins, alpha=alpha, centre=centre,
                     bias_correction=bias_correction)


def shock_placebo_pairs(
    pairs: pd.DataFrame,
    cx: str = "csat",
    shock: str = "transferred",
    unit: str = "employee_id",
    group: str | Sequence[str] | None = "day",
    alpha: float = 0.05,
    seq: str = "seq",
) -> Result:
    r"""The shock version of the carry-over and its lead placebo, on ``ws.pairs()``.

    The ``shock_placebo`` model of :func:`spillover` on its own: this
    interaction's CX on the operational shock (e.g. a transfer) of the
    *previous* and of the *next* interaction of the agent's group (day), with
    the interaction's own shock and the shock two back as controls, group
    fixed effects and SEs clustered by agent. Unlike the carry-over it needs no
    CX answer from the neighbours, so it rests on every answered interaction
    with two predecessors and a successor in its group (many more rows than
    the pairs of consecutive answers), and it has no lagged outcome (no Nickell
    bias). Same estimates as the ``shock_placebo`` rows of :func:`spillover`
    and :func:`spillover_pairs` (``tests/test_spillover.py``).

    Parameters
    ----------
    pairs : DataFrame
        ``ws.pairs()``: columns ``unit``, ``seq``, ``cx``, ``<shock>``,
        ``prev_<shock>``, ``next_<shock>``, ``prev2_<shock>`` and, per group
        column *g*, ``prev_same_<g>`` / ``next_same_<g>`` / ``prev2_same_<g>``
        (or ``prev_<g>`` ...). ``prev_gap_seconds`` tells the agent's first
        interaction (without it, ``seq == 1``).
    cx, shock, unit, group, alpha, seq
        As in :func:`spillover_pairs`.

    Returns
    -------
    Result
        ``table``: rows ``prev_<shock>`` (the shock's carry-over to this CX),
        ``next_<shock> (lead)`` (the placebo: zero unless a state shared within
        the group moves both), ``prev2_<shock>`` (control), with the columns of
        :func:`spillover`; ``fit``: :class:`cxex_lab.results.Fit` (``n_obs`` =
        interactions, clusters = agents; a note when the lead placebo is
        significant or the shock cannot be estimated).

    Raises
    ------
    ValueError
        When a column is missing or ``cx`` / ``shock`` is entirely missing.
    """
    func = "shock_placebo_pairs"
    df = _check_frame(pairs, func)
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if shock == cx:
        raise ValueError(f"{func}: shock {shock!r} is the CX column; pass an operational outcome such as 'transferred'.")
    groups = [group] if isinstance(group, str) else list(group or [])
    d, n_dropped, ucode, gcode, same = _pairs_frame(
        df, func, cx, unit, seq, groups, [], shock, [f"prev_{shock}", f"next_{shock}", f"prev2_{shock}"])
    pos = d[seq].to_numpy(dtype=float)
    has_prev = ~np.isnan(_as_float(d["prev_gap_seconds"])) if "prev_gap_seconds" in d.columns else pos > 1
    ok = has_prev & same("prev") & same("prev2") & same("next")
    data = _pairs_shock(d, cx, shock, ok, gcode, ucode)
    rows, notes, n_shock = _shock_rows(data, shock, alpha)
    table = pd.DataFrame(rows, columns=["term", "estimate", "se", "ci_low", "ci_high", "p", "n", "model",
                                        "estimate_uncorrected", "bias_correction", "n_clusters"])
    table.insert(8, "p_holm", np.nan)
    table["moderator_mean"] = np.nan
    table = table[["term", "estimate", "se", "ci_low", "ci_high", "p", "n", "model", "p_holm",
                   "estimate_uncorrected", "bias_correction", "moderator_mean", "n_clusters"]]
    n_cl = int(len(np.unique(data[6])))
    if rows and n_cl < 30:
        notes.append(f"Only {n_cl} agents (clusters); cluster-robust SEs are unreliable with fewer than ~30-50 clusters.")
    fit = Fit(
        method=(f"within ({' x '.join(['agent', *groups])} fixed effects) regression of {cx} on the previous and "
                f"next interaction's {shock} (controls: this and the second previous interaction's {shock}); "
                f"SEs clustered by {unit}"),
        n_obs=n_shock, n_dropped=n_dropped, cluster=unit, n_clusters=n_cl, alpha=alpha, notes=tuple(notes),
    )
    return Result(table, fit)


def _pairs_frame(df, func, cx, unit, seq, groups, mods, shock, need):
    """Check and sort a ``ws.pairs()`` frame; its agent and group codes and a same-group test."""
    _check_columns(df, [unit, seq, *groups], func, numeric=False)
    _check_columns(df, [cx, *mods] + ([shock] if shock else []), func)
    for c in need:
        if c not in df.columns:
            raise ValueError(
                f"{func}: column {c!r} not found in the pairs; it has {list(df.columns)[:40]}. Pass the "
                "frame ws.pairs() returns (or add the neighbour's column)."
            )
    base_cols = list(dict.fromkeys([unit, seq, *groups]))
    ok = df[base_cols].notna().all(axis=1).to_numpy()
    n_dropped = int((~ok).sum())
    d = df.loc[ok].reset_index(drop=True)
    if d.duplicated([unit, seq]).any():
        dup = d.loc[d.duplicated([unit, seq], keep=False), [unit, seq]].head(3).to_dict("records")
        raise ValueError(f"{func}: ({unit}, {seq}) must identify a row; duplicates such as {dup}.")
    d = d.sort_values([unit, seq], kind="mergesort").reset_index(drop=True)
    ucode = pd.factorize(d[unit], sort=False)[0]
    gcode = d.groupby([unit, *groups], sort=False, observed=True).ngroup().to_numpy() if len(d) else np.zeros(0, int)

    def same(side: str) -> np.ndarray:
        """Rows whose neighbour (prev / next / prev2) is in the same fixed-effect group."""
        out = np.ones(len(d), bool)
        for g in groups:
            flag, other = f"{side}_same_{g}", f"{side}_{g}"
            if flag in d.columns:
                out &= _as_float(d[flag]) == 1
            elif other in d.columns:
                out &= (d[other] == d[g]).fillna(False).to_numpy(bool)
            else:
                raise ValueError(
                    f"{func}: group {g!r} needs column {flag!r} or {other!r} (is the {side} interaction in the "
                    f"same {g}?); the pairs have {list(d.columns)[:40]}."
                )
        return out

    return d, n_dropped, ucode, gcode, same


def _pairs_shock(d, cx, shock, ok, gcode, ucode):
    y = d[cx].to_numpy(dtype=float)
    return _shock_sample(ok & ~np.isnan(y), y, _as_float(d[f"prev_{shock}"]), _as_float(d[f"next_{shock}"]),
                         _as_float(d[f"prev2_{shock}"]), _as_float(d[shock]), gcode, ucode)


# --------------------------------------------------------------------------- shared by both inputs
@dataclass
class _PairSample:
    """The usable pairs (later member's row), whichever input they were built from."""

    y: np.ndarray  # CX of the later interaction
    x: np.ndarray  # CX of the immediately preceding interaction
    pos: np.ndarray  # position of the later interaction in the agent's sequence
    ucode: np.ndarray  # agent (cluster) codes
    gcode: np.ndarray  # fixed-effect group codes
    mvals: np.ndarray  # moderators (n, k)
    gap: np.ndarray  # gap to the previous interaction (gap_unit)
    shock: tuple | None  # (y, prev, next, prev2, own, gcode, ucode) of the shock rows, or None
    excluded: dict
    n_dropped: int
    n_ties: int
    notes: list
    gap_unit: str
    label: str
    fixed_effects: tuple


def _as_float(s: pd.Series) -> np.ndarray:
    """Numbers, booleans or nullable booleans (True/False/None) as float with NaN."""
    if pd.api.types.is_bool_dtype(s) or s.dtype == object:
        return pd.to_numeric(s.map({True: 1.0, False: 0.0, 1: 1.0, 0: 0.0}, na_action="ignore")
                             if s.dtype == object else s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _check_common(func, alpha, n_bins, moderators, group, gap_bins, shock, cx):
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if n_bins is not None and n_bins < 0:
        raise ValueError(f"{func}: n_bins must be >= 0 (0: no per-bin rows; None: one estimate per level), got {n_bins}.")
    mods = [moderators] if isinstance(moderators, str) else list(moderators or [])
    if len(set(mods)) != len(mods):
        raise ValueError(f"{func}: moderators contain duplicates {mods}; list each column once.")
    groups = [group] if isinstance(group, str) else list(group or [])
    if gap_bins is not None:
        edges = [float(v) for v in gap_bins]
        if not edges or any(b <= a for a, b in zip(edges[:-1], edges[1:])) or edges[0] <= 0:
            raise ValueError(f"{func}: gap_bins must be increasing positive edges, got {list(gap_bins)}.")
    else:
        edges = []
    if shock and shock == cx:
        raise ValueError(f"{func}: shock {shock!r} is the CX column; pass an operational outcome such as 'transferred'.")
    return mods, groups, edges


def _assign_reasons(reason, checks, gcode, func, cx):
    """Fill the exclusion reason of each row (first failing check wins); drop groups with one pair."""
    rest = reason == ""
    for name, bad in checks:
        hit = rest & bad
        reason[hit] = name
        rest &= ~bad
    use = reason == ""
    cnt = np.bincount(gcode[use], minlength=gcode.max() + 1 if len(gcode) else 0)
    single = use & (cnt[gcode] < 2)
    reason[single] = "singleton_group"
    use &= ~single
    n_used = int(use.sum())
    if n_used < 10:
        excluded = {name: int((reason == name).sum()) for name in _REASONS}
        raise ValueError(
            f"{func}: only {n_used} usable pairs of consecutive interactions with {cx!r} observed in both "
            f"(excluded: {excluded}). Supply more interactions with {cx!r} observed, or fewer/larger "
            "fixed-effect groups."
        )
    return use


def _shock_sample(ok_s, y, prev_s, next_s, prev2_s, s, gcode, ucode):
    """Rows of the shock placebo: CX observed, all four shocks known, two such rows in the group."""
    ok_s = ok_s & ~np.isnan(prev_s) & ~np.isnan(prev2_s) & ~np.isnan(next_s) & ~np.isnan(s)
    cnt_s = np.bincount(gcode[ok_s], minlength=gcode.max() + 1 if len(gcode) else 0)
    ok_s &= cnt_s[gcode] >= 2
    return (y[ok_s], prev_s[ok_s], next_s[ok_s], prev2_s[ok_s], s[ok_s], gcode[ok_s], ucode[ok_s])


def _estimate(p: _PairSample, *, func, cx, unit, mods, edges, shock, lead_placebo, n_bins, alpha, centre,
              bias_correction) -> Result:
    """Every model of :func:`spillover` on a pair sample."""
    notes = list(p.notes)
    n_used = len(p.y)
    # ---- the pair sample, ordered by (group, position)
    g_codes, g_uniq = pd.factorize(p.gcode, sort=False)
    n_groups = len(g_uniq)
    order = np.lexsort((p.pos, g_codes))
    g_codes = g_codes[order]
    yy, xx, pp, uu = p.y[order], p.x[order], p.pos[order], p.ucode[order]
    mm = p.mvals[order]
    n_clusters = len(np.unique(uu))
    if n_clusters < 2:
        raise ValueError(
            f"{func}: the usable pairs come from {n_clusters} agent; intervals clustered by agent need at least "
            "2 agents (and about 30 to be reliable)."
        )
    if n_clusters < 30:
        msg = f"only {n_clusters} agents (clusters); cluster-robust SEs are unreliable with fewer than ~30-50 clusters."
        warnings.warn(f"{func}: {msg}", stacklevel=3)
        notes.append(msg[0].upper() + msg[1:])
    dof = max(n_clusters - 1, 1)
    mean_t = n_used / n_groups
    if mean_t < 5:
        notes.append(
            f"Only {mean_t:.1f} pairs per fixed-effect group on average: the within estimator's Nickell bias "
            f"is large (about -(1 + lambda)/{mean_t - 1:.1f}) and corrected to first order only"
            + ("; below about 3 pairs per group the correction itself is unreliable." if mean_t < 3 else ".")
        )

    # ---- carry-over with moderators
    if isinstance(centre, Mapping):
        missing_c = [m for m in mods if m not in centre]
        if missing_c:
            raise ValueError(f"{func}: centre gives no value for moderator(s) {missing_c}.")
        centres = {m: float(centre[m]) for m in mods}
    else:
        centres = {m: (float(np.mean(mm[:, j])) if centre is None else float(centre)) for j, m in enumerate(mods)}
    for j, m in enumerate(mods):
        if np.std(mm[:, j]) == 0:
            raise ValueError(
                f"{func}: moderator column {m!r} is constant over the usable pairs; the moderation cannot "
                "be estimated. Check the column or drop it from moderators."
            )
    ec = mm - np.array([centres[m] for m in mods]) if mods else mm
    mains = []
    for j, m in enumerate(mods):
        within = _demean(ec[:, [j]], g_codes, n_groups)[:, 0]
        if np.std(within) > 1e-9:
            mains.append(j)
    mult = np.column_stack([np.ones(n_used), ec])
    b, b_unc, se, bias = _ar_fit(yy, xx, [ec[:, j] for j in mains], g_codes, n_groups, uu, pp, mult, bias_correction)
    out_rows = [_row("prev_cx", "carry_over", b[0], se[0], dof, alpha, n_used, b_unc[0], -bias[0], n_clusters=n_clusters)]
    for j, m in enumerate(mods):
        out_rows.append(_row(f"prev_cx:{m}", "carry_over", b[1 + j], se[1 + j], dof, alpha, n_used, b_unc[1 + j],
                             -bias[1 + j], n_clusters=n_clusters))
    for k, j in enumerate(mains):
        c = 1 + len(mods) + k
        out_rows.append(_row(mods[j], "carry_over", b[c], se[c], dof, alpha, n_used, b_unc[c], -bias[c],
                             n_clusters=n_clusters))
    if mods:
        raw_p = [r["p"] for r in out_rows[1 : 1 + len(mods)]]
        adj_p = multipletests(raw_p, alpha=alpha, method="holm")[1]
        for r, pa in zip(out_rows[1 : 1 + len(mods)], adj_p):
            r["p_holm"] = float(pa)

    # ---- per-bin (quantile or level) estimates of the first moderator
    if mods and n_bins != 0:
        first = mods[0]
        e0 = mm[:, 0]
        if n_bins is None:
            bins = pd.Series(pd.Categorical(e0))
            labels = [f"{v:g}" for v in bins.cat.categories]
        else:
            bins = pd.Series(pd.qcut(e0, n_bins, duplicates="drop"))
            labels = [str(iv) for iv in bins.cat.categories]
        bcode = bins.cat.codes.to_numpy()
        for bi, lab in enumerate(labels):
            sel_idx, fe_b = _regroup(g_codes, bcode == bi)
            if len(sel_idx) < 10:
                continue
            ng = int(fe_b.max()) + 1
            ob = np.lexsort((pp[sel_idx], fe_b))
            sel_idx, fe_b = sel_idx[ob], fe_b[ob]
            ecb = ec[sel_idx][:, [0]]
            extra = [ecb[:, 0]] if np.std(_demean(ecb, fe_b, ng)) > 1e-9 else []
            try:
                bb, bb_unc, seb, biasb = _ar_fit(
                    yy[sel_idx], xx[sel_idx], extra, fe_b, ng, uu[sel_idx], pp[sel_idx],
                    np.ones((len(sel_idx), 1)), bias_correction,
                )
            except (np.linalg.LinAlgError, ValueError):
                continue
            gb = len(np.unique(uu[sel_idx]))
            out_rows.append(
                _row(
                    f"prev_cx | {first} in {lab}", f"by_{first}", bb[0], seb[0], max(gb - 1, 1), alpha,
                    len(sel_idx), bb_unc[0], -biasb[0], moderator_mean=float(np.mean(e0[sel_idx])), n_clusters=gb,
                )
            )

    # ---- decay with the time gap
    if edges:
        gg = p.gap[order]
        gbin = np.searchsorted(np.asarray(edges), gg, side="right")  # 0 .. len(edges)
        labels = _gap_labels(edges, p.gap_unit)
        # fixed effects per group x gap bin: the carry-over acts on the deviation from the
        # group's level, y_k = a_g + lambda_b (y_{k-1} - a_g) + ..., so with lambda varying by
        # bin within a group the level enters as a_g (1 - lambda_b): a group x bin effect.
        # A bin keeps its place if it has enough pairs in cells of two or more pairs.
        cell = pd.factorize(pd.MultiIndex.from_arrays([g_codes, gbin]), sort=False)[0]
        present = list(range(len(labels)))
        while True:
            sel_idx, fe_d = _regroup(cell, np.isin(gbin, present))
            counts = np.bincount(gbin[sel_idx], minlength=len(labels))
            short = [bi for bi in present if counts[bi] < _MIN_BIN_PAIRS]
            if not short:
                break
            present = [bi for bi in present if bi not in short]
        small = [labels[bi] for bi in range(len(labels)) if bi not in present and (gbin == bi).any()]
        if small:
            notes.append(
                f"Gap bin(s) {small} have fewer than {_MIN_BIN_PAIRS} pairs that share their agent's "
                "group and bin with another pair; they are left out of the decay model."
            )
        if present:
            ob = np.lexsort((pp[sel_idx], fe_d))
            sel_idx, fe_d = sel_idx[ob], fe_d[ob]
            if len(sel_idx) >= 10:
                ng = int(fe_d.max()) + 1
                gsel = gbin[sel_idx]
                dmat = np.column_stack([(gsel == bi).astype(float) for bi in present])
                try:
                    bd, bd_unc, sed, biasd = _ar_fit(
                        yy[sel_idx], xx[sel_idx], [], fe_d, ng, uu[sel_idx], pp[sel_idx], dmat, bias_correction,
                        # the AR path from an earlier error crosses pairs of every bin: average by group
                        rho_codes=pd.factorize(g_codes[sel_idx], sort=False)[0],
                    )
                    for k, bi in enumerate(present):
                        in_bin = gsel == bi
                        out_rows.append(
                            _row(
                                f"prev_cx | gap {labels[bi]}", "decay", bd[k], sed[k], dof, alpha,
                                int(in_bin.sum()), bd_unc[k], -biasd[k],
                                n_clusters=len(np.unique(uu[sel_idx][in_bin])),
                            )
                        )
                except np.linalg.LinAlgError:
                    notes.append("The decay model is singular (a gap bin does not vary within groups); left out.")

    # ---- lead placebo of CX: the same pairs, roles swapped; Nickell in reversed time
    if lead_placebo:
        b_lag, b_lag_unc, se_lag, bias_lag = _ar_fit(yy, xx, [], g_codes, n_groups, uu, pp, np.ones((n_used, 1)), bias_correction)
        # reversed time: the later interaction becomes the "previous" one. Only distances between
        # positions within a group enter the correction, so any reversal (max - pos) will do.
        rpos = pp.max() - pp + 1
        o = np.lexsort((rpos, g_codes))
        b_lead, b_lead_unc, se_lead, bias_lead = _ar_fit(
            xx[o], yy[o], [], g_codes[o], n_groups, uu[o], rpos[o], np.ones((n_used, 1)), bias_correction
        )
        out_rows.append(_row("prev_cx (lag)", "lead_placebo", b_lag[0], se_lag[0], dof, alpha, n_used, b_lag_unc[0],
                             -bias_lag[0], n_clusters=n_clusters))
        out_rows.append(_row("next_cx (lead)", "lead_placebo", b_lead[0], se_lead[0], dof, alpha, n_used,
                             b_lead_unc[0], -bias_lead[0], n_clusters=n_clusters))

    # ---- shock placebo: previous and next interaction's operational shock -> this CX
    n_shock = 0
    if shock:
        rows_s, notes_s, n_shock = _shock_rows(p.shock, shock, alpha)
        out_rows += rows_s
        notes += notes_s

    failed = [r["term"] for r in out_rows if np.isnan(r["estimate"]) and not np.isnan(r["estimate_uncorrected"])]
    if failed:
        notes.append(
            f"The Nickell correction did not converge for {failed} (fixed-effect groups too short); their "
            "estimate is NaN and estimate_uncorrected is the within estimate, biased towards "
            "-1/(T-1). Use larger groups (e.g. agent x period instead of agent x day)."
        )
    for j, m in enumerate(mods):
        if j in mains:
            notes.append(
                f"Moderator {m!r} varies within the fixed-effect groups; the carry-over acts on deviations "
                "from the group's level, so its moderation is cleanest with moderators that are constant "
                "within groups (an agent's survey answers per period)."
            )
    table = pd.DataFrame(out_rows)
    for c in ("p_holm", "moderator_mean"):
        if c not in table:
            table[c] = np.nan
    first_cols = ["term", "estimate", "se", "ci_low", "ci_high", "p", "n", "model", "p_holm",
                  "estimate_uncorrected", "bias_correction", "moderator_mean", "n_clusters"]
    table = table[first_cols]
    fit = SpilloverFit(
        method=(
            f"within ({p.label} fixed effects) regression of {cx} on the previous interaction's {cx}"
            + (", Nickell-corrected" if bias_correction else "")
            + f"; SEs clustered by {unit}"
        ),
        n_obs=n_used,
        n_dropped=p.n_dropped,
        cluster=unit,
        n_clusters=n_clusters,
        alpha=alpha,
        notes=tuple(notes),
        fixed_effects=p.fixed_effects,
        n_groups=n_groups,
        mean_pairs_per_group=float(mean_t),
        n_pairs_excluded=p.excluded,
        n_time_ties=p.n_ties,
        moderators=tuple(mods),
        centre=centres,
        nickell_first_order=float(-(1 + b[0]) / (mean_t - 1)) if mean_t > 1 else float("nan"),
        gap_bins=tuple(edges),
        gap_unit=p.gap_unit,
        shock=shock,
        n_shock_obs=n_shock,
    )
    return Result(table, fit)


def _shock_rows(data: tuple, shock: str, alpha: float) -> tuple[list[dict], list[str], int]:
    """The shock placebo on its rows: (table rows, notes, number of interactions)."""
    sy, s_prev, s_next, s_prev2, s_own, s_g, s_u = data
    n_shock = len(sy)
    rows: list[dict] = []
    notes: list[str] = []
    if n_shock < 10:
        notes.append(
            f"Only {n_shock} interactions have CX, two predecessors and a successor in the same group; "
            "no shock placebo."
        )
        return rows, notes, n_shock
    if len(np.unique(s_u)) < 2:
        notes.append("The shock placebo's interactions come from one agent; intervals clustered by agent need at "
                     "least 2 agents. No shock placebo.")
        return rows, notes, n_shock
    gs = pd.factorize(s_g, sort=False)[0]
    # Controls: the interaction's own shock (it enters its own CX) and the shock two
    # interactions back (under a carry-over it enters this CX with lambda^2 b). Left in
    # the error, shocks of other rows of the group bias the neighbours' coefficients by
    # O(1/T) through the group means; with both controlled the remainder is O(lambda^3 / T).
    xs = np.column_stack([s_prev, s_next, s_prev2, s_own])
    xsd = _demean(xs, gs, int(gs.max()) + 1)
    if not np.all(xsd.std(axis=0) > 1e-12):
        notes.append(f"The shock {shock!r} does not vary within fixed-effect groups; no shock placebo.")
        return rows, notes, n_shock
    fit_s, _, _ = _fit_within(sy, xs, gs, int(gs.max()) + 1, s_u)
    gss = len(np.unique(s_u))
    for k, term in enumerate((f"prev_{shock}", f"next_{shock} (lead)", f"prev2_{shock}")):
        rows.append(_row(term, "shock_placebo", fit_s.params[k], fit_s.bse[k], max(gss - 1, 1), alpha, n_shock,
                         n_clusters=gss))
    lead_row = rows[1]
    if lead_row["p"] < alpha:
        notes.append(
            f"The next interaction's {shock} 'predicts' this interaction's CX (p = {lead_row['p']:.3f}): "
            "a shared within-group state (fatigue, queue load, an outage) may produce the carry-over "
            "pattern, or the shock is not exogenous to the agent's state."
        )
    return rows, notes, n_shock
