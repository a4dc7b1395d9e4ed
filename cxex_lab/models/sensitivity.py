r"""Sensitivity of a regression estimate to unobserved confounding.

Cinelli & Hazlett's (2020) omitted-variable-bias framework for an OLS fit:
how strong would a confounder (say, an unmeasured good manager who raises both
EX and CX) have to be, in partial :math:`R^2` terms, to explain the estimate
away? :func:`sensitivity` takes a fitted statsmodels OLS results object;
:func:`partial_r2` and :func:`robustness_value` work from a t-statistic and
its residual degrees of freedom alone (e.g. for published estimates).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["sensitivity", "partial_r2", "robustness_value", "benchmark_bounds"]


def partial_r2(t: float, dof: float) -> float:
    r"""Partial :math:`R^2` of a regressor with the outcome, from its t-statistic.

    Parameters
    ----------
    t : float
        t-statistic of the coefficient.
    dof : float
        Residual degrees of freedom of the regression.

    Returns
    -------
    float
        :math:`R^2_{Y\sim D|X} = t^2 / (t^2 + \mathrm{dof})`.

    Examples
    --------
    >>> round(partial_r2(4.18445, 783), 5)  # Cinelli & Hazlett (2020), Darfur
    0.02187
    """
    _check_dof(dof, "partial_r2")
    t = float(t)
    return t * t / (t * t + dof)


def robustness_value(t: float, dof: float, q: float = 1.0, alpha: float | None = None) -> float:
    r"""Robustness value :math:`RV_q` (``alpha=None``) or :math:`RV_{q,\alpha}`.

    Parameters
    ----------
    t : float
        t-statistic of the treatment coefficient.
    dof : float
        Residual degrees of freedom.
    q : float
        Fraction of the estimate to explain away (1 = bring it to zero).
    alpha : float, optional
        If given, the strength needed to make the adjusted ``1 - alpha``
        interval include :math:`(1-q)\hat\tau` instead.

    Returns
    -------
    float
        The partial :math:`R^2` a confounder must have with both treatment and
        outcome (in [0, 1]).

    Notes
    -----
    With :math:`f_q = q\,|t|/\sqrt{\mathrm{dof}}` (Cohen's f scaled by q),

    .. math:: RV_q = \tfrac12\left(\sqrt{f_q^4 + 4 f_q^2} - f_q^2\right).

    For :math:`RV_{q,\alpha}` use :math:`f_{q,\alpha} = f_q - f^*` with
    :math:`f^* = |t^*_{1-\alpha/2,\,\mathrm{dof}-1}| / \sqrt{\mathrm{dof}-1}`:
    0 if :math:`f_{q,\alpha} < 0`; the same formula in :math:`f_{q,\alpha}`
    otherwise, except when :math:`f_q > 1/f^*`, where the constraint is not
    binding and :math:`RV = (f_q^2 - f^{*2}) / (1 + f_q^2)` (Cinelli & Hazlett
    2020, Sec. 4; as in the R package sensemakr).

    Examples
    --------
    >>> round(robustness_value(4.18445, 783), 4)  # Darfur example: 13.9%
    0.1388
    >>> round(robustness_value(4.18445, 783, alpha=0.05), 4)  # 7.6%
    0.0763
    """
    func = "robustness_value"
    _check_dof(dof, func)
    if q <= 0:
        raise ValueError(f"{func}: q must be > 0 (fraction of the estimate to explain away), got {q}.")
    fq = q * abs(float(t)) / math.sqrt(dof)
    if alpha is None or alpha >= 1:
        return 0.5 * (math.sqrt(fq**4 + 4 * fq**2) - fq**2)
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    f_crit = float(abs(stats.t.ppf(alpha / 2, dof - 1)) / math.sqrt(dof - 1))
    fqa = fq - f_crit
    if fqa < 0:
        return 0.0
    if fq > 1 / f_crit:
        return (fq**2 - f_crit**2) / (1 + fq**2)
    return 0.5 * (math.sqrt(fqa**4 + 4 * fqa**2) - fqa**2)


def benchmark_bounds(
    r2dxj_x: float, r2yxj_dx: float, kd: float = 1.0, ky: float | None = None
) -> tuple[float, float]:
    r"""Bounds on a confounder's strength, k times a benchmark covariate's.

    Parameters
    ----------
    r2dxj_x : float
        Partial :math:`R^2` of the benchmark covariate with the treatment
        (treatment regressed on all covariates).
    r2yxj_dx : float
        Partial :math:`R^2` of the benchmark covariate with the outcome (outcome
        model, i.e. given treatment and the other covariates).
    kd, ky : float
        How many times stronger the confounder is than the benchmark in explaining
        the treatment (``kd``) and the outcome (``ky``, defaults to ``kd``).

    Returns
    -------
    (r2dz_x, r2yz_dx) : tuple of float

    Notes
    -----
    Cinelli & Hazlett (2020, Sec. 6.2), for a confounder orthogonal to the benchmark:

    .. math::

        R^2_{D\sim Z|X} = k_D \frac{R^2_{D\sim X_j|X_{-j}}}{1-R^2_{D\sim X_j|X_{-j}}}, \qquad
        R^2_{Y\sim Z|D,X} \le \eta^2 \frac{R^2_{Y\sim X_j|D,X_{-j}}}{1-R^2_{Y\sim X_j|D,X_{-j}}}

    with :math:`\eta = (\sqrt{k_Y} + \sqrt{f})/\sqrt{1-f}` and
    :math:`f = k_D R^{4}_{D\sim X_j|X_{-j}} / ((1-k_D R^2_{D\sim X_j|X_{-j}})(1-R^2_{D\sim X_j|X_{-j}}))`.

    Examples
    --------
    >>> [round(v, 4) for v in benchmark_bounds(0.0091, 0.109)]
    [0.0092, 0.1246]
    """
    func = "benchmark_bounds"
    ky = kd if ky is None else ky
    if kd < 0 or ky < 0:
        raise ValueError(f"{func}: kd and ky must be >= 0, got kd={kd}, ky={ky}.")
    r2dz = kd * r2dxj_x / (1 - r2dxj_x)
    if r2dz >= 1:
        raise ValueError(
            f"{func}: a confounder {kd}x as strong as the benchmark would explain all of the "
            f"treatment (implied R2_D~Z|X = {r2dz:.3f} >= 1); use a smaller kd."
        )
    r2zxj = kd * r2dxj_x**2 / ((1 - kd * r2dxj_x) * (1 - r2dxj_x))
    if not 0 <= r2zxj < 1:
        raise ValueError(f"{func}: kd={kd} is impossible for this benchmark (implied R2_Z~Xj >= 1); use a smaller kd.")
    r2yz = ((math.sqrt(ky) + math.sqrt(r2zxj)) / math.sqrt(1 - r2zxj)) ** 2 * (r2yxj_dx / (1 - r2yxj_dx))
    return r2dz, min(r2yz, 1.0)


def _check_dof(dof: float, func: str) -> None:
    if not dof > 1:
        raise ValueError(f"{func}: residual degrees of freedom must be > 1, got {dof}; fit the model on more rows.")


def _adjusted(est, se, dof, r2dz, r2yz, alpha, reduce=True):
    """Adjusted estimate, se, t and CI for a confounder with the given partial R^2s."""
    bias = se * math.sqrt(dof) * math.sqrt(r2yz * r2dz / (1 - r2dz))
    adj = est - math.copysign(bias, est) if reduce else est + math.copysign(bias, est)
    adj_se = se * math.sqrt((1 - r2yz) / (1 - r2dz)) * math.sqrt(dof / (dof - 1))
    tcrit = stats.t.ppf(1 - alpha / 2, dof - 1)
    tcrit = float(tcrit)
    return adj, adj_se, adj / adj_se if adj_se > 0 else np.nan, adj - tcrit * adj_se, adj + tcrit * adj_se


def sensitivity(
    model_result,
    treatment: str,
    alpha: float = 0.05,
    q: float = 1.0,
    benchmark_covariates: Sequence[str] | None = None,
    kd: float | Sequence[float] = 1.0,
    ky: float | Sequence[float] | None = None,
) -> pd.DataFrame:
    r"""Cinelli & Hazlett (2020) sensitivity statistics for an OLS estimate.

    Parameters
    ----------
    model_result : statsmodels RegressionResults
        A fitted OLS (``sm.OLS(...).fit()`` or ``smf.ols(...).fit()``) with the
        treatment among its regressors. Classical (non-robust) standard errors
        are assumed, as in the paper.
    treatment : str
        Name of the treatment regressor (e.g. ``"ex"``).
    alpha : float
        Significance level for :math:`RV_{q,\alpha}` and the adjusted intervals.
    q : float
        Fraction of the estimate a confounder should explain away (1 = all).
    benchmark_covariates : sequence of str, optional
        Observed covariates of the model to benchmark against ("a confounder
        ``kd`` times as strong as site tenure"). Each must be a regressor of
        ``model_result``; the treatment regression is refitted on the other
        regressors to get its partial :math:`R^2` with the treatment.
    kd, ky : float or sequence of float
        Strength multipliers (``ky`` defaults to ``kd``); one bound per value.

    Returns
    -------
    DataFrame
        First row ``term = treatment`` with the observed ``estimate``, ``se``,
        t-based ``ci_low``/``ci_high``, ``p`` and ``n``, plus the sensitivity
        statistics as columns ``partial_r2`` (:math:`R^2_{Y\sim D|X}`), ``rv_q``
        and ``rv_qa``. Then one row per benchmark bound, ``term =
        "<k>x <covariate>"``, whose estimate/se/CI are the *adjusted* values
        under such a confounder, with ``r2dz_x`` and ``r2yz_dx`` (the bounds)
        and ``t``. ``attrs``: ``dof``, ``t``, ``q``, ``alpha``, ``f2``.

    Notes
    -----
    With :math:`t` and :math:`\mathrm{dof}` the treatment's t-statistic and the
    residual degrees of freedom:
    :math:`R^2_{Y\sim D|X} = t^2/(t^2+\mathrm{dof})`; robustness values as in
    :func:`robustness_value`. A confounder :math:`Z` with partial
    :math:`R^2_{D\sim Z|X}` and :math:`R^2_{Y\sim Z|D,X}` changes the estimate by

    .. math::

        |\widehat{\text{bias}}| = \mathrm{se}(\hat\tau)\sqrt{\mathrm{dof}}
            \sqrt{\frac{R^2_{Y\sim Z|D,X}\,R^2_{D\sim Z|X}}{1-R^2_{D\sim Z|X}}},

    and the adjusted standard error is
    :math:`\mathrm{se}\sqrt{(1-R^2_{Y\sim Z|D,X})/(1-R^2_{D\sim Z|X})}\sqrt{\mathrm{dof}/(\mathrm{dof}-1)}`.
    Bounds from benchmarks: :func:`benchmark_bounds`. Bias is taken to reduce
    the absolute value of the estimate.

    Checked against the published Darfur example of Cinelli & Hazlett (2020) as
    reproduced by the R/Python package sensemakr (partial R^2 2.19%, RV 13.9%,
    RV_{alpha=0.05} 7.6%, and the 1x/2x/3x ``female`` benchmark bounds and
    adjusted estimates), and the bias formula against the exact coefficient
    change when a simulated confounder is omitted (``tests/test_sensitivity.py``).

    References
    ----------
    Cinelli, C., & Hazlett, C. (2020). Making sense of sensitivity: extending
    omitted variable bias. *Journal of the Royal Statistical Society: Series B*,
    82(1), 39-67.

    Examples
    --------
    >>> import numpy as np, pandas as pd, statsmodels.formula.api as smf
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"tenure": rng.normal(size=500)})
    >>> d["ex"] = 0.5 * d["tenure"] + rng.normal(size=500)
    >>> d["cx"] = 0.3 * d["ex"] + 0.4 * d["tenure"] + rng.normal(size=500)
    >>> fit = smf.ols("cx ~ ex + tenure", data=d).fit()
    >>> res = sensitivity(fit, "ex", benchmark_covariates=["tenure"], kd=[1, 2])
    >>> res["term"].tolist()
    ['ex', '1x tenure', '2x tenure']
    """
    func = "sensitivity"
    if not hasattr(model_result, "params") or not hasattr(model_result, "model"):
        raise ValueError(
            f"{func}: expected a fitted statsmodels OLS results object (e.g. smf.ols(...).fit()), "
            f"got {type(model_result).__name__}."
        )
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    names = list(model_result.model.exog_names)
    if treatment not in names:
        raise ValueError(
            f"{func}: treatment {treatment!r} is not a regressor of the model; regressors are {names}."
        )
    if getattr(model_result, "cov_type", "nonrobust") != "nonrobust":
        import warnings

        warnings.warn(
            f"{func}: the model uses {model_result.cov_type} standard errors; the Cinelli-Hazlett "
            "statistics assume classical OLS standard errors and are computed from them as given.",
            stacklevel=2,
        )
    j = names.index(treatment)
    est = float(np.asarray(model_result.params)[j])
    se = float(np.asarray(model_result.bse)[j])
    dof = float(model_result.df_resid)
    _check_dof(dof, func)
    t = est / se
    tcrit = stats.t.ppf(1 - alpha / 2, dof)
    r2yd = partial_r2(t, dof)
    rows = [
        {
            "term": treatment,
            "estimate": est,
            "se": se,
            "ci_low": est - tcrit * se,
            "ci_high": est + tcrit * se,
            "p": float(2 * stats.t.sf(abs(t), dof)),
            "n": int(model_result.nobs),
            "t": t,
            "partial_r2": r2yd,
            "rv_q": robustness_value(t, dof, q=q),
            "rv_qa": robustness_value(t, dof, q=q, alpha=alpha),
            "r2dz_x": np.nan,
            "r2yz_dx": np.nan,
        }
    ]
    kds = np.atleast_1d(np.asarray(kd, dtype=float))
    kys = kds if ky is None else np.atleast_1d(np.asarray(ky, dtype=float))
    if len(kys) != len(kds):
        raise ValueError(f"{func}: kd and ky must have the same length, got {len(kds)} and {len(kys)}.")
    exog = np.asarray(model_result.model.exog, dtype=float)
    for cov in benchmark_covariates or []:
        if cov not in names:
            raise ValueError(
                f"{func}: benchmark covariate {cov!r} is not a regressor of the model; regressors are {names}."
            )
        if cov == treatment:
            raise ValueError(f"{func}: the benchmark covariate must differ from the treatment {treatment!r}.")
        k = names.index(cov)
        r2yxj = partial_r2(float(np.asarray(model_result.tvalues)[k]), dof)
        # treatment regression D ~ other regressors: partial R^2 of the benchmark
        others = [i for i in range(len(names)) if i != j]
        xo = exog[:, others]
        d = exog[:, j]
        beta, *_ = np.linalg.lstsq(xo, d, rcond=None)
        res = d - xo @ beta
        dof_d = len(d) - np.linalg.matrix_rank(xo)
        cov_b = (res @ res / dof_d) * np.linalg.pinv(xo.T @ xo)
        kk = others.index(k)
        t_dj = beta[kk] / math.sqrt(cov_b[kk, kk])
        r2dxj = partial_r2(t_dj, dof_d)
        for kd_i, ky_i in zip(kds, kys):
            r2dz, r2yz = benchmark_bounds(r2dxj, r2yxj, kd=kd_i, ky=ky_i)
            adj, adj_se, adj_t, lo, hi = _adjusted(est, se, dof, r2dz, r2yz, alpha)
            label = f"{kd_i:g}x {cov}" if kd_i == ky_i else f"{kd_i:g}x/{ky_i:g}x {cov}"
            rows.append(
                {
                    "term": label,
                    "estimate": adj,
                    "se": adj_se,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p": float(2 * stats.t.sf(abs(adj_t), dof - 1)),
                    "n": int(model_result.nobs),
                    "t": adj_t,
                    "partial_r2": np.nan,
                    "rv_q": np.nan,
                    "rv_qa": np.nan,
                    "r2dz_x": r2dz,
                    "r2yz_dx": r2yz,
                }
            )
    out = pd.DataFrame(rows)
    out.attrs.update({"dof": dof, "t": t, "q": q, "alpha": alpha, "f2": t * t / dof, "n_dropped": 0})
    return out
