r"""The chain EX -> operations -> CX (-> loyalty): parallel-mediator analysis.

:func:`mediation` estimates the a-paths (EX -> each operational mediator), the
b-paths (mediator -> CX, holding EX and the other mediators), the direct and
total effects and the indirect effect through each mediator, with percentile
bootstrap intervals for the indirect effects. The bootstrap resamples whole
clusters (e.g. employees in employee-wave data) when ``cluster`` is given, and
an optional second outcome adds the CX -> loyalty step of the chain.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm

from cxex_lab.models._checks import _check_columns, _check_design, _check_frame

__all__ = ["mediation"]

_BATCH = 256


def _listify(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return list(v)


def _solve_paths(g: np.ndarray, ix: dict, k_cov: int, mediators: int, has_y2: bool) -> np.ndarray:
    """All path coefficients from a stack of cross-product matrices ``g`` (B, p, p).

    Column layout of the underlying design Z: [1, x, covariates..., M_1..M_k, y, (y2)].
    Returns (B, n_stats) with stats: a_1..a_k, b_1..b_k, direct, total,
    and, with y2: c (y -> y2), direct_y2 (x -> y2 holding the rest), total_y2.
    """
    base = [0, 1] + list(range(2, 2 + k_cov))
    mcols = list(range(2 + k_cov, 2 + k_cov + mediators))
    ycol = ix["y"]
    out = []
    gb = g[:, base][:, :, base]
    # a-paths: M_m ~ 1 + x + cov (all mediators at once)
    a = np.linalg.solve(gb, g[:, base][:, :, mcols])[:, 1, :]
    # total: y ~ 1 + x + cov
    tot = np.linalg.solve(gb, g[:, base, ycol][..., None])[:, 1, 0]
    full = base + mcols
    gf = g[:, full][:, :, full]
    coef = np.linalg.solve(gf, g[:, full, ycol][..., None])[..., 0]
    b = coef[:, len(base):]
    direct = coef[:, 1]
    out = [a, b, direct[:, None], tot[:, None]]
    if has_y2:
        y2col = ix["y2"]
        full2 = full + [ycol]
        g2 = g[:, full2][:, :, full2]
        coef2 = np.linalg.solve(g2, g[:, full2, y2col][..., None])[..., 0]
        tot2 = np.linalg.solve(gb, g[:, base, y2col][..., None])[:, 1, 0]
        out += [coef2[:, -1:], coef2[:, 1:2], tot2[:, None]]
    return np.concatenate(out, axis=1)


def _derived(s: np.ndarray, k: int, has_y2: bool) -> np.ndarray:
    """Indirect effects from the path stats (B, n_stats) -> (B, n_derived)."""
    a, b = s[:, :k], s[:, k : 2 * k]
    direct = s[:, 2 * k]
    ind = a * b
    cols = [ind, ind.sum(axis=1, keepdims=True)]
    if has_y2:
        c = s[:, 2 * k + 2]
        cols += [ind * c[:, None], (direct * c)[:, None], (ind.sum(axis=1) * c + direct * c)[:, None]]
    return np.concatenate(cols, axis=1)


def _ols_table(y, x, names, cluster_codes, alpha):
    """Coefficients with classical or cluster-robust SEs (statsmodels)."""
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


def mediation(
    df: pd.DataFrame,
    x: str,
    mediators: str | Sequence[str],
    y: str,
    covariates: str | Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int | np.random.Generator | None = None,
    alpha: float = 0.05,
    cluster: str | None = None,
    outcome2: str | None = None,
) -> pd.DataFrame:
    r"""Parallel-mediator analysis of EX -> operations -> CX (optionally -> loyalty).

    Parameters
    ----------
    df : DataFrame
        One row per unit (or unit-wave; then pass ``cluster``).
    x : str
        The cause (e.g. latent or surveyed EX).
    mediators : str or sequence of str
        Parallel mediators (e.g. ``["fcr", "aht", "transfer"]``).
    y : str
        The outcome (e.g. CX).
    covariates : str or sequence of str, optional
        Adjusted for in every regression.
    n_boot : int
        Bootstrap resamples for the indirect effects (0 = none).
    seed : int or numpy.random.Generator, optional
        The only source of randomness.
    alpha : float
        1 - confidence level.
    cluster : str, optional
        Column identifying clusters (e.g. ``employee_id``). The bootstrap then
        resamples whole clusters and the path SEs are cluster-robust.
    outcome2 : str, optional
        A further outcome (e.g. retention or revenue) that ``y`` affects: adds the
        path ``y -> outcome2`` (holding x, mediators and covariates), the serial
        indirect effects x -> M -> y -> outcome2, x -> y -> outcome2, and the
        total effect of x on ``outcome2``.

    Returns
    -------
    DataFrame
        Columns ``term``, ``path``, ``mediator``, ``estimate``, ``se``,
        ``ci_low``, ``ci_high``, ``p``, ``n``. ``path`` is one of ``"a"``
        (``term = "x -> M"``), ``"b"`` (``"M -> y"``), ``"direct"``, ``"total"``,
        ``"indirect"`` (``"indirect M"``), ``"indirect_total"``, and with
        ``outcome2``: ``"c2"`` (``"y -> outcome2"``), ``"direct2"``, ``"total2"``,
        ``"serial"`` (``"serial M"``, x -> M -> y -> outcome2), ``"serial_direct"``
        (x -> y -> outcome2) and ``"serial_total"``.
        Regression paths (a, b, c2, direct, total, direct2, total2) carry OLS
        standard errors (cluster-robust with ``cluster``; t-based CIs and p);
        products (indirect, serial) carry bootstrap SD, percentile CIs and a
        bootstrap p-value. ``attrs``: ``n_dropped``, ``n_boot``,
        ``n_boot_failed``, ``n_clusters``, ``boot`` (the bootstrap draws of
        the products, a DataFrame).

    Notes
    -----
    With covariates :math:`C`:

    .. math::

        M_m &= i_m + a_m X + \gamma_m^\top C + e_m \quad (m = 1..k) \\
        Y &= i_y + c' X + \textstyle\sum_m b_m M_m + \gamma_y^\top C + e_y \\
        Y &= i_t + c X + \gamma_t^\top C + e_t

    indirect effect :math:`a_m b_m`, total indirect :math:`\sum_m a_m b_m`, and
    :math:`c = c' + \sum_m a_m b_m` exactly (OLS on the same rows). With
    ``outcome2`` (:math:`L`): :math:`L = i + d X + \sum_m e_m M_m + c_2 Y + \ldots`,
    serial effects :math:`a_m b_m c_2` and :math:`c' c_2`.

    The bootstrap is computed from per-cluster cross-product matrices
    :math:`Z_g^\top Z_g` of :math:`Z = [1, X, C, M, Y, L]`: a resample's
    regressions only need :math:`\sum_g w_g Z_g^\top Z_g` with the resample
    counts :math:`w_g`, which equals refitting on the resampled rows exactly and
    makes 1000 cluster resamples cheap. Percentile intervals; bootstrap p-value
    :math:`\min(1, 2\min(\#\{\theta^*\le 0\}+1, \#\{\theta^*\ge 0\}+1)/(B+1))`.

    Point estimates agree with ``pingouin.mediation_analysis`` (a-paths, direct,
    total, indirect effects; ``tests/test_mediation.py``). Pingouin is not used
    directly because it cannot resample clusters, has no serial outcome, and
    seeds the legacy global ``RandomState``; note that pingouin's ``"Y ~ M"``
    row is a regression of Y on M *without* X, whereas our b-path (the one
    entering the indirect effect, in pingouin too) holds X fixed.

    References
    ----------
    Preacher, K. J., & Hayes, A. F. (2008). Asymptotic and resampling strategies for
    assessing and comparing indirect effects in multiple mediator models. *Behavior
    Research Methods*, 40(3), 879-891.
    Field, C. A., & Welsh, A. H. (2007). Bootstrapping clustered data. *JRSS B*,
    69(3), 369-390.
    Hayes, A. F. (2018). *Introduction to Mediation, Moderation, and Conditional
    Process Analysis* (2nd ed.), chapter on serial mediation.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"ex": rng.normal(size=400)})
    >>> d["fcr"] = 0.5 * d["ex"] + rng.normal(size=400)
    >>> d["cx"] = 0.4 * d["fcr"] + 0.2 * d["ex"] + rng.normal(size=400)
    >>> res = mediation(d, "ex", ["fcr"], "cx", n_boot=200, seed=1)
    >>> row = res.set_index("term").loc["indirect fcr"]
    >>> bool(row["ci_low"] < 0.2 < row["ci_high"])  # true indirect effect 0.5 * 0.4
    True
    """
    func = "mediation"
    df = _check_frame(df, func)
    mediators = _listify(mediators)
    covariates = _listify(covariates)
    if not mediators:
        raise ValueError(f"{func}: give at least one mediator column.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if n_boot < 0:
        raise ValueError(f"{func}: n_boot must be >= 0, got {n_boot}.")
    numeric = [x, *covariates, *mediators, y] + ([outcome2] if outcome2 else [])
    if len(set(numeric)) != len(numeric):
        raise ValueError(f"{func}: a column is used in two roles ({numeric}); each of x, mediators, y, covariates, outcome2 must be distinct.")
    _check_columns(df, numeric, func)
    if cluster is not None:
        _check_columns(df, [cluster], func, numeric=False)
    cols = numeric + ([cluster] if cluster else [])
    keep = df[cols].notna().all(axis=1).to_numpy()
    n_dropped = int((~keep).sum())
    sub = df.loc[keep, cols]
    n = len(sub)
    k, kc = len(mediators), len(covariates)
    min_rows = 2 + kc + k + 3
    if n < min_rows:
        raise ValueError(
            f"{func}: only {n} complete rows (after dropping {n_dropped} with missing values in {cols}); "
            f"need at least {min_rows}. Supply more data or fewer mediators/covariates."
        )
    z_num = sub[numeric].to_numpy(dtype=float)
    _check_design(z_num[:, : 1 + kc + k], [x, *covariates, *mediators], func)
    if not z_num[:, 1 + kc + k].std() > 0:
        raise ValueError(f"{func}: outcome {y!r} is constant in the complete rows; nothing to explain.")
    z = np.column_stack([np.ones(n), z_num])
    ix = {"y": 2 + kc + k, "y2": 3 + kc + k}
    has_y2 = outcome2 is not None

    if cluster is not None:
        codes, uniq = pd.factorize(sub[cluster], sort=True)
        n_clusters = len(uniq)
        if n_clusters < 20:
            import warnings

            warnings.warn(
                f"{func}: only {n_clusters} clusters in {cluster!r}; cluster-robust SEs and the "
                "cluster bootstrap are unreliable with fewer than ~20-50 clusters.",
                stacklevel=2,
            )
    else:
        codes, n_clusters = None, n

    # ---- point estimates and regression-path inference (statsmodels OLS)
    xb = z[:, : 2 + kc]
    names_b = ["const", x, *covariates]
    tab_a = {m: _ols_table(z[:, 2 + kc + i], xb, names_b, codes, alpha)[x] for i, m in enumerate(mediators)}
    xf = z[:, : 2 + kc + k]
    tab_y = _ols_table(z[:, ix["y"]], xf, names_b + mediators, codes, alpha)
    tab_t = _ols_table(z[:, ix["y"]], xb, names_b, codes, alpha)[x]
    if has_y2:
        tab_y2 = _ols_table(z[:, ix["y2"]], z[:, : 3 + kc + k], names_b + mediators + [y], codes, alpha)
        tab_t2 = _ols_table(z[:, ix["y2"]], xb, names_b, codes, alpha)[x]

    g_full = (z.T @ z)[None]
    point_paths = _solve_paths(g_full, ix, kc, k, has_y2)
    point_der = _derived(point_paths, k, has_y2)[0]

    # ---- bootstrap of the products via per-cluster cross-products
    der_names = [f"indirect {m}" for m in mediators] + ["indirect_total"]
    if has_y2:
        der_names += [f"serial {m}" for m in mediators] + ["serial_direct", "serial_total"]
    boot = np.full((n_boot, len(der_names)), np.nan)
    n_failed = 0
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
            draws = rng.integers(0, n_clusters, size=(bsz, n_clusters))
            counts = np.zeros((bsz, n_clusters))
            np.add.at(counts, (np.repeat(np.arange(bsz), n_clusters), draws.ravel()), 1.0)
            g = (counts @ cp).reshape(bsz, p, p)
            try:
                s = _solve_paths(g, ix, kc, k, has_y2)
                boot[start : start + bsz] = _derived(s, k, has_y2)
            except np.linalg.LinAlgError:
                for i in range(bsz):
                    try:
                        s = _solve_paths(g[i : i + 1], ix, kc, k, has_y2)
                        boot[start + i] = _derived(s, k, has_y2)[0]
                    except np.linalg.LinAlgError:
                        n_failed += 1
    ok = np.isfinite(boot).all(axis=1)
    bt = boot[ok]

    rows = []

    def reg_row(term, path, med, t):
        est, se, lo, hi, pv = t
        rows.append({"term": term, "path": path, "mediator": med, "estimate": est, "se": se,
                     "ci_low": lo, "ci_high": hi, "p": pv, "n": n})

    def boot_row(term, path, med, j):
        est = float(point_der[j])
        if len(bt) >= 2:
            d = bt[:, j]
            se = float(d.std(ddof=1))
            lo, hi = (float(v) for v in np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
            nb = len(d)
            pv = min(1.0, 2 * min(((d <= 0).sum() + 1) / (nb + 1), ((d >= 0).sum() + 1) / (nb + 1)))
        else:
            se = lo = hi = pv = np.nan
        rows.append({"term": term, "path": path, "mediator": med, "estimate": est, "se": se,
                     "ci_low": lo, "ci_high": hi, "p": pv, "n": n})

    for m in mediators:
        reg_row(f"{x} -> {m}", "a", m, tab_a[m])
    for m in mediators:
        reg_row(f"{m} -> {y}", "b", m, tab_y[m])
    reg_row("direct", "direct", None, tab_y[x])
    for i, m in enumerate(mediators):
        boot_row(f"indirect {m}", "indirect", m, i)
    boot_row("indirect_total", "indirect_total", None, k)
    reg_row("total", "total", None, tab_t)
    if has_y2:
        reg_row(f"{y} -> {outcome2}", "c2", None, tab_y2[y])
        reg_row(f"direct {x} -> {outcome2}", "direct2", None, tab_y2[x])
        for i, m in enumerate(mediators):
            boot_row(f"serial {m}", "serial", m, k + 1 + i)
        boot_row("serial_direct", "serial_direct", None, 2 * k + 1)
        boot_row("serial_total", "serial_total", None, 2 * k + 2)
        reg_row(f"total {x} -> {outcome2}", "total2", None, tab_t2)
    out = pd.DataFrame(rows)
    out.attrs.update(
        {
            "n_dropped": n_dropped,
            "n_boot": n_boot,
            "n_boot_failed": int(n_boot - len(bt)),
            "n_clusters": n_clusters if cluster is not None else None,
            "cluster": cluster,
            "alpha": alpha,
            # plain lists, not a DataFrame: pandas compares attrs when concatenating
            # or merging results, and DataFrame == DataFrame has no single truth value
            "boot": pd.DataFrame(bt, columns=der_names).to_dict("list"),
        }
    )
    return out
