r"""The vicious circle: does one customer's experience spill over to the next?

:func:`spillover` estimates, at interaction level, the effect of the CX of an
agent's *immediately preceding* interaction on the CX of the next one, with
agent (or agent-period) fixed effects, cluster-robust standard errors by
agent, a first-order correction of the Nickell (1981) bias of the within
estimator, and how the carry-over varies with the agent's empowerment
(interaction term and per-tertile / per-level estimates).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from cxex_lab.models._checks import _check_columns, _check_frame

__all__ = ["spillover"]

_DMAX = 200  # lags beyond this contribute < rho**200 to the bias term


def _demean(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Subtract group means (columns of ``values``)."""
    cnt = np.bincount(codes, minlength=n_groups).astype(float)
    out = values.copy()
    for j in range(values.shape[1]):
        mean = np.bincount(codes, weights=values[:, j], minlength=n_groups) / cnt
        out[:, j] -= mean[codes]
    return out


def _lag_structure(codes: np.ndarray, pos: np.ndarray):
    """Pairs (p, q) in the same FE group with q earlier than p's predecessor.

    Rows are sorted by (group, pos). Returns flat arrays p_idx, q_idx and the
    distance d = pos_p - 1 - pos_q >= 0 (number of AR steps from e_q to y_{p-1}).
    """
    n = len(codes)
    p_all, q_all, d_all = [], [], []
    for lag in range(1, n):
        p = np.arange(lag, n)
        q = p - lag
        d = pos[p] - 1 - pos[q]
        ok = (codes[p] == codes[q]) & (d <= _DMAX)
        if not ok.any():  # d grows with lag inside a group: no later lag qualifies
            break
        p_all.append(p[ok])
        q_all.append(q[ok])
        d_all.append(d[ok])
    if not p_all:
        return np.array([], int), np.array([], int), np.array([], int)
    return np.concatenate(p_all), np.concatenate(q_all), np.concatenate(d_all)


def _fit_within(y, x_cols, codes, n_groups, cluster_codes):
    """Within (FE) OLS with cluster-robust SEs; returns fit and demeaned design."""
    yd = _demean(y[:, None], codes, n_groups)[:, 0]
    xd = _demean(x_cols, codes, n_groups)
    fit = sm.OLS(yd, xd).fit(cov_type="cluster", cov_kwds={"groups": cluster_codes}, use_t=True)
    return fit, yd, xd


def _nickell_correct(beta, xd, resid_var, codes, n_groups, pos, ar_index, mult, max_iter=50):
    r"""First-order bias correction of a within-estimated AR coefficient vector.

    ``ar_index`` lists the columns of the design that are (lagged CX) x ``mult``
    columns; the AR coefficient of a pair is ``sum_k beta[ar_index[k]] * mult[:, k]``.
    Uses E[sum_i x~_i e~_i] = -(1/T_g) sum_{p,q} m_p E[y_{prev p} e_q], with
    E[y_{prev p} e_q] = sigma^2 rho_g^{d_pq}.
    """
    t_g = np.bincount(codes, minlength=n_groups).astype(float)
    p_idx, q_idx, d = _lag_structure(codes, pos)
    xtx_inv = np.linalg.inv(xd.T @ xd)
    b_hat = beta.copy()
    b = beta.copy()
    bias = np.zeros_like(beta)
    for _ in range(max_iter):
        rho_pair = mult @ b[ar_index]
        rho_g = np.bincount(codes, weights=rho_pair, minlength=n_groups) / t_g
        rho_g = np.clip(rho_g, -0.99, 0.99)
        w = rho_g[codes[p_idx]] ** d
        s_p = np.bincount(p_idx, weights=w, minlength=len(codes))  # sum_q rho^d for each p
        e_xe = np.zeros(len(beta))
        for k, col in enumerate(ar_index):
            e_xe[col] = -resid_var * np.sum(mult[:, k] * s_p / t_g[codes])
        bias = xtx_inv @ e_xe
        b_new = b_hat - bias
        if np.max(np.abs(b_new - b)) < 1e-10:
            b = b_new
            break
        b = b_new
    return b, bias


def spillover(
    interactions: pd.DataFrame,
    cx: str,
    unit: str = "employee_id",
    time: str = "started_at",
    empowerment: str = "empowerment",
    group: str | list[str] | None = None,
    n_tertiles: int | None = 3,
    alpha: float = 0.05,
    centre: float | None = None,
    bias_correction: bool = True,
) -> pd.DataFrame:
    r"""Carry-over of the previous interaction's CX to the next, by empowerment.

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
        Start time (datetime or numeric) ordering interactions within agent.
    empowerment : str
        The agent's empowerment (1-5) at the time of the interaction.
    group : str or list of str, optional
        Fixed-effect groups nested in ``unit``: ``"wave"`` (or
        ``["employee_id", "wave"]``) gives agent-period effects; the unit is
        always part of the group. Pairs whose previous interaction lies in
        another group are excluded (its level would not be absorbed). Default:
        agent fixed effects.
    n_tertiles : int or None
        Number of quantile bins of empowerment for the per-bin estimates
        (duplicate edges merged); ``None`` = one estimate per empowerment level.
    alpha : float
        1 - confidence level.
    centre : float, optional
        Empowerment value at which the main ``prev_cx`` term is reported
        (default: the mean over used pairs; pass 3 for the scale midpoint).
    bias_correction : bool
        Apply the first-order Nickell bias correction (default). The
        uncorrected within estimates are kept in ``estimate_uncorrected``.

    Returns
    -------
    DataFrame
        Rows: ``prev_cx`` (carry-over at empowerment = ``centre``),
        ``prev_cx:empowerment`` (change per empowerment point), ``empowerment``
        (only if it varies within the fixed-effect groups), then one
        ``prev_cx | empowerment in <bin>`` row per bin (``model =
        "by_empowerment"``). Columns ``term``, ``model``, ``estimate``, ``se``
        (cluster-robust by ``unit``), ``ci_low``, ``ci_high``, ``p`` (t with
        G-1 df, G = agents), ``n`` (pairs), ``estimate_uncorrected``,
        ``bias_correction``, ``empowerment_mean`` (bins).
        ``attrs``: ``n_pairs_used``, ``n_pairs_excluded`` (dict by reason:
        ``first_of_unit``, ``crosses_group``, ``cx_missing``, ``prev_cx_missing``,
        ``empowerment_missing``, ``singleton_group``), ``n_dropped`` (rows
        without unit or time), ``n_time_ties``, ``n_clusters``, ``n_groups``,
        ``mean_pairs_per_group``, ``centre``, ``nickell_first_order``.

    Notes
    -----
    For consecutive interactions :math:`k-1, k` of agent :math:`i` in FE group
    :math:`g`, with empowerment :math:`e_k`:

    .. math:: y_k = \alpha_g + \lambda\, y_{k-1} + \lambda_e\, y_{k-1}(e_k - c) + \varepsilon_k

    estimated by the within transformation (group means removed) and OLS with
    cluster-robust (agent) SEs (statsmodels). Per-bin estimates fit
    :math:`y_k = \alpha_{g} + \lambda_b y_{k-1} + \varepsilon_k` within each
    empowerment bin.

    *Nickell bias.* With :math:`T` pairs per group the within estimator of an
    AR coefficient is biased by about :math:`-(1+\lambda)/(T-1)` (Nickell 1981),
    e.g. -0.026 for :math:`\lambda = 0.25, T = 50`: 10% of the effect, not
    negligible. We subtract the first-order bias
    :math:`(\tilde X^\top \tilde X)^{-1} E[\tilde X^\top \tilde\varepsilon]` with
    :math:`E[\sum_{k\in g} \tilde x_k \tilde\varepsilon_k] = -\frac{\sigma^2}{T_g}
    \sum_{p,q \in g} m_p\,\lambda_g^{\,pos(p)-1-pos(q)}` (sum over pairs with
    :math:`pos(q) \le pos(p) - 1`; :math:`m_p = 1` or :math:`e_p - c`), solved
    as a fixed point in :math:`\lambda`. It uses the actual positions, so gaps
    from unsurveyed interactions are handled, and for a complete series reduces
    to the Hahn & Kuersteiner (2002) correction
    :math:`\hat\lambda + (1+\hat\lambda)/T`. The SEs are those of the
    uncorrected fit (the correction is a deterministic shift to first order).

    With unsurveyed interactions the previous *surveyed* CX is not the previous
    interaction's; such pairs are excluded, never bridged. If surveying depends
    on CX (extremes respond more) the used pairs are a selected sample:
    prefer latent or fully observed measures for recovery.

    Checked by recovery of the simulated carry-over (``tests/test_spillover.py``)
    and against statsmodels OLS with explicit group dummies: identical
    uncorrected estimates, and cluster-robust SEs equal up to the small-sample
    factor :math:`\sqrt{(N-K-G)/(N-K)}` — the absorbed group effects are not
    counted here because they are nested in the agent clusters (Cameron & Miller
    2015, Sec. VI).

    References
    ----------
    Nickell, S. (1981). Biases in dynamic models with fixed effects.
    *Econometrica*, 49(6), 1417-1426.
    Hahn, J., & Kuersteiner, G. (2002). Asymptotically unbiased inference for a
    dynamic panel model with fixed effects when both n and T are large.
    *Econometrica*, 70(4), 1639-1657.
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
    >>> res = spillover(d, "cx", centre=3)
    >>> res["term"].tolist()[:2]
    ['prev_cx', 'prev_cx:empowerment']
    """
    func = "spillover"
    df = _check_frame(interactions, func)
    groups = [group] if isinstance(group, str) else list(group or [])
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if n_tertiles is not None and n_tertiles < 1:
        raise ValueError(f"{func}: n_tertiles must be >= 1 (or None for one estimate per level), got {n_tertiles}.")
    _check_columns(df, [unit, time, *groups], func, numeric=False)
    _check_columns(df, [cx, empowerment], func)
    if not (pd.api.types.is_datetime64_any_dtype(df[time]) or pd.api.types.is_numeric_dtype(df[time])):
        raise ValueError(
            f"{func}: time column {time!r} must be datetime or numeric (dtype {df[time].dtype}); "
            "parse it first, e.g. pd.to_datetime(df[time])."
        )
    # fixed-effect groups are always nested in the agent: group="wave" means agent x wave
    # (a bare wave group would pool all agents and blow up the lag structure)
    fe_cols = [unit] + [g for g in groups if g != unit]

    base_cols = list(dict.fromkeys([unit, time, *fe_cols]))
    ok = df[base_cols].notna().all(axis=1).to_numpy()
    n_dropped = int((~ok).sum())
    d = df.loc[ok, list(dict.fromkeys([*base_cols, cx, empowerment]))].copy()
    d = d.sort_values([unit, time], kind="mergesort").reset_index(drop=True)

    ucode = pd.factorize(d[unit], sort=False)[0]
    gcode = d.groupby(fe_cols, sort=False, observed=True).ngroup().to_numpy()
    same_unit = np.r_[False, ucode[1:] == ucode[:-1]]
    tt = d[time].to_numpy()
    n_ties = int((same_unit & np.r_[False, tt[1:] == tt[:-1]]).sum())
    if n_ties:
        warnings.warn(
            f"{func}: {n_ties} interactions share their start time with the agent's previous one; "
            "their order is the input order. Use a finer time stamp if possible.",
            stacklevel=2,
        )
    pos = np.arange(len(d)) - np.maximum.accumulate(np.where(~same_unit, np.arange(len(d)), 0))
    y = d[cx].to_numpy(dtype=float)
    e = d[empowerment].to_numpy(dtype=float)
    prev_y = np.r_[np.nan, y[:-1]]
    same_group = same_unit & np.r_[False, gcode[1:] == gcode[:-1]]

    excluded: dict[str, int] = {}
    reason = np.full(len(d), "", dtype=object)
    reason[~same_unit] = "first_of_unit"
    rest = reason == ""
    for name, bad in (
        ("crosses_group", ~same_group),
        ("cx_missing", np.isnan(y)),
        ("prev_cx_missing", np.isnan(prev_y)),
        ("empowerment_missing", np.isnan(e)),
    ):
        hit = rest & bad
        reason[hit] = name
        rest &= ~bad
    use = reason == ""
    # singleton FE groups carry no within information
    cnt = np.bincount(gcode[use], minlength=gcode.max() + 1 if len(gcode) else 0)
    single = use & (cnt[gcode] < 2)
    reason[single] = "singleton_group"
    use &= ~single
    for name in ("first_of_unit", "crosses_group", "cx_missing", "prev_cx_missing", "empowerment_missing", "singleton_group"):
        excluded[name] = int((reason == name).sum())
    n_used = int(use.sum())
    if n_used < 10:
        raise ValueError(
            f"{func}: only {n_used} usable pairs of consecutive interactions with CX observed in both "
            f"(excluded: {excluded}). Supply more interactions with {cx!r} observed, or fewer/larger "
            "fixed-effect groups."
        )

    yy, xx, ee = y[use], prev_y[use], e[use]
    g_codes, g_uniq = pd.factorize(gcode[use], sort=False)
    n_groups = len(g_uniq)
    u_codes = ucode[use]
    n_clusters = len(np.unique(u_codes))
    if n_clusters < 30:
        warnings.warn(
            f"{func}: only {n_clusters} agents (clusters); cluster-robust SEs are unreliable with "
            "fewer than ~30-50 clusters.",
            stacklevel=2,
        )
    pp = pos[use]
    # rows are sorted by unit then time; FE groups nested in unit are contiguous
    # only if the group does not interleave — sort by (group, pos) to be safe
    order = np.lexsort((pp, g_codes))
    yy, xx, ee, g_codes, u_codes, pp = (a[order] for a in (yy, xx, ee, g_codes, u_codes, pp))
    c = float(np.mean(ee)) if centre is None else float(centre)
    ec = ee - c
    if np.std(ee) == 0:
        raise ValueError(
            f"{func}: empowerment column {empowerment!r} is constant over the usable pairs; the "
            "moderation cannot be estimated. Check the column or use a sample with varied empowerment."
        )
    within_e = _demean(ec[:, None], g_codes, n_groups)[:, 0]
    has_emp_main = bool(np.std(within_e) > 1e-9)

    cols = [xx, xx * ec] + ([ec] if has_emp_main else [])
    names = ["prev_cx", "prev_cx:empowerment"] + (["empowerment"] if has_emp_main else [])
    xmat = np.column_stack(cols)
    fit, yd, xd = _fit_within(yy, xmat, g_codes, n_groups, u_codes)
    beta = np.asarray(fit.params)
    k = xd.shape[1]
    resid = yd - xd @ beta
    s2 = float(resid @ resid / (n_used - n_groups - k))
    if bias_correction:
        b_corr, bias = _nickell_correct(beta, xd, s2, g_codes, n_groups, pp, [0, 1], np.column_stack([np.ones(n_used), ec]))
    else:
        b_corr, bias = beta, np.zeros_like(beta)
    tcrit = stats.t.ppf(1 - alpha / 2, n_clusters - 1)
    se = np.asarray(fit.bse)
    rows = []
    for j, nm in enumerate(names):
        tval = b_corr[j] / se[j]
        rows.append({
            "term": nm, "model": "interaction", "estimate": float(b_corr[j]), "se": float(se[j]),
            "ci_low": float(b_corr[j] - tcrit * se[j]), "ci_high": float(b_corr[j] + tcrit * se[j]),
            "p": float(2 * stats.t.sf(abs(tval), n_clusters - 1)), "n": n_used,
            "estimate_uncorrected": float(beta[j]), "bias_correction": float(-bias[j]),
            "empowerment_mean": np.nan,
        })

    # ---- per-bin (tertile or level) estimates
    if n_tertiles is None:
        bins = pd.Series(pd.Categorical(ee))
        labels = [f"{v:g}" for v in bins.cat.categories]
    else:
        bins = pd.Series(pd.qcut(ee, n_tertiles, duplicates="drop"))
        labels = [str(iv) for iv in bins.cat.categories]
    bcode = bins.cat.codes.to_numpy()
    for bi, lab in enumerate(labels):
        sel = bcode == bi
        fe_b, fe_u = pd.factorize(g_codes[sel], sort=False)
        cnt_b = np.bincount(fe_b)
        keep = cnt_b[fe_b] >= 2
        if keep.sum() < 10:
            continue
        yb, xb, ub, pb = yy[sel][keep], xx[sel][keep], u_codes[sel][keep], pp[sel][keep]
        fe_b = pd.factorize(fe_b[keep], sort=False)[0]
        ng = int(fe_b.max()) + 1
        ob = np.lexsort((pb, fe_b))
        yb, xb, ub, pb, fe_b = yb[ob], xb[ob], ub[ob], pb[ob], fe_b[ob]
        ecb = ec[sel][keep][ob]
        wb = _demean(ecb[:, None], fe_b, ng)[:, 0]
        extra = [ecb] if np.std(wb) > 1e-9 else []
        xm = np.column_stack([xb, *extra])
        try:
            fb, ybd, xbd = _fit_within(yb, xm, fe_b, ng, ub)
        except (np.linalg.LinAlgError, ValueError):
            continue
        bb = np.asarray(fb.params)
        rb = ybd - xbd @ bb
        nb = len(yb)
        s2b = float(rb @ rb / max(nb - ng - xm.shape[1], 1))
        if bias_correction:
            bcb, biasb = _nickell_correct(bb, xbd, s2b, fe_b, ng, pb, [0], np.ones((nb, 1)))
        else:
            bcb, biasb = bb, np.zeros_like(bb)
        gb = len(np.unique(ub))
        tcb = stats.t.ppf(1 - alpha / 2, max(gb - 1, 1))
        seb = float(fb.bse[0])
        rows.append({
            "term": f"prev_cx | {empowerment} in {lab}", "model": "by_empowerment",
            "estimate": float(bcb[0]), "se": seb, "ci_low": float(bcb[0] - tcb * seb),
            "ci_high": float(bcb[0] + tcb * seb), "p": float(2 * stats.t.sf(abs(bcb[0] / seb), max(gb - 1, 1))),
            "n": nb, "estimate_uncorrected": float(bb[0]), "bias_correction": float(-biasb[0]),
            "empowerment_mean": float(np.mean(ee[sel][keep])),
        })
    out = pd.DataFrame(rows)
    mean_t = n_used / n_groups
    out.attrs.update({
        "n_pairs_used": n_used,
        "n_pairs_excluded": excluded,
        "n_dropped": n_dropped,
        "n_time_ties": n_ties,
        "n_clusters": n_clusters,
        "n_groups": n_groups,
        "mean_pairs_per_group": mean_t,
        "centre": c,
        "fixed_effects": fe_cols,
        "nickell_first_order": float(-(1 + b_corr[0]) / (mean_t - 1)) if mean_t > 1 else np.nan,
        "alpha": alpha,
    })
    return out
