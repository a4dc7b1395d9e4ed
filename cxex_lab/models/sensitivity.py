r"""Sensitivity of an estimate to unobserved confounding (Cinelli & Hazlett 2020).

How strong would a confounder (say, a change of team leader that moves both an
agent's EX and the CX of their customers) have to be, in partial :math:`R^2`
terms, to explain an estimate away?

* :func:`sensitivity_within` runs the analysis on the **within-employee
  headline**: the two-way fixed-effects (employee and wave) estimate of
  EX(t-1) -> CX(t), rewritten as the equivalent Mundlak / correlated-random-
  effects regression so that **stable traits** (the employee's mean EX) and
  **site** can serve as benchmark covariates.
* :func:`sensitivity` takes any fitted statsmodels OLS (classical or
  cluster-robust standard errors) and supports single and grouped benchmarks.
* :func:`partial_r2`, :func:`group_partial_r2`, :func:`robustness_value` and
  :func:`benchmark_bounds` are the formulas, usable from published statistics.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, stats

from cxex_lab.models._checks import _check_columns, _check_frame
from cxex_lab.results import Fit, Result

__all__ = [
    "SensitivityFit",
    "WithinSensitivityFit",
    "sensitivity",
    "sensitivity_within",
    "partial_r2",
    "group_partial_r2",
    "robustness_value",
    "benchmark_bounds",
    "adjusted_grid",
]


@dataclass(frozen=True, kw_only=True)
class SensitivityFit(Fit):
    """Fit record of :func:`sensitivity` and :func:`sensitivity_within`.

    Attributes
    ----------
    treatment : str
        The regressor whose estimate is examined.
    estimate : float
        Its coefficient.
    se : float
        The standard error the intervals use (cluster-robust when the model is).
    se_classical : float
        Classical OLS standard error (what the Cinelli-Hazlett algebra is written in).
    se_ratio : float
        ``se / se_classical``: the design effect on the standard error, assumed
        unchanged when a confounder is added.
    t_classical : float
        Classical t-statistic (gives the partial :math:`R^2`).
    dof : float
        Residual degrees of freedom of the OLS.
    dof_inference : float
        Degrees of freedom of the t critical values (G - 1 with clustered SEs).
    partial_r2 : float
        :math:`R^2_{Y\\sim D|X}` of the treatment with the outcome.
    rv_q : float
        Robustness value: the partial :math:`R^2` with both treatment and outcome
        that brings the estimate to :math:`(1-q)` times itself.
    rv_qa : float
        The same for the (cluster-robust) ``1 - alpha`` interval to include
        :math:`(1-q)\\hat\\tau`.
    rv_qa_classical : float
        ``rv_qa`` with classical standard errors (as sensemakr reports it).
    q : float
        Share of the estimate a confounder should explain away.
    benchmarks : dict
        Per benchmark name: ``r2dxj_x`` (partial :math:`R^2` with the treatment),
        ``r2yxj_dx`` (with the outcome), ``kd_max`` (the largest possible
        ``kd``: a stronger confounder orthogonal to the benchmark cannot
        exist), ``k_explain_away`` (the multiplier k = kd = ky at which such a
        confounder would remove ``q`` of the estimate; inf = never),
        ``covariates`` (the columns of the group).
    """

    treatment: str
    estimate: float
    se: float
    se_classical: float
    se_ratio: float
    t_classical: float
    dof: float
    dof_inference: float
    partial_r2: float
    rv_q: float
    rv_qa: float
    rv_qa_classical: float
    q: float
    benchmarks: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class WithinSensitivityFit(SensitivityFit):
    """Fit record of :func:`sensitivity_within` (adds the panel facts).

    Attributes
    ----------
    unit, period : str
        Panel columns.
    lag : int
        Lag of the treatment (periods).
    n_units : int
        Units (employees) in the used rows.
    mundlak_terms : tuple of str
        Regressors of the Mundlak regression besides the treatment.
    """

    unit: str
    period: str
    lag: int
    n_units: int
    mundlak_terms: tuple[str, ...] = ()


# --------------------------------------------------------------------------- formulas
def partial_r2(t: float, dof: float) -> float:
    r"""Partial :math:`R^2` of a regressor with the outcome, from its t-statistic.

    Parameters
    ----------
    t : float
        Classical t-statistic of the coefficient.
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


def group_partial_r2(model_result, covariates: Sequence[str]) -> float:
    r"""Partial :math:`R^2` of a group of regressors (e.g. the indicators of a factor).

    Parameters
    ----------
    model_result : statsmodels RegressionResults
        A fitted OLS; its classical covariance is used whatever ``cov_type`` it has.
    covariates : sequence of str
        Regressor names forming the group.

    Returns
    -------
    float
        :math:`W/(W + \mathrm{dof})` with :math:`W = \hat b^\top V^{-1} \hat b`
        the Wald statistic of the group (classical :math:`V`); it equals
        :math:`(SSR_{without} - SSR_{with}) / SSR_{without}`, the share of the
        residual variance the group explains. As ``group_partial_r2`` in
        sensemakr (R and Python).

    Examples
    --------
    >>> import numpy as np, statsmodels.api as sm
    >>> rng = np.random.default_rng(0)
    >>> x = sm.add_constant(rng.normal(size=(200, 3)))
    >>> y = x @ [0, 1, 0.5, 0] + rng.normal(size=200)
    >>> fit = sm.OLS(y, x).fit()
    >>> round(group_partial_r2(fit, ["x1"]) - float(partial_r2(fit.tvalues[1], fit.df_resid)), 12)
    0.0
    """
    func = "group_partial_r2"
    names = list(model_result.model.exog_names)
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    missing = [c for c in covariates if c not in names]
    if missing:
        raise ValueError(f"{func}: {missing} are not regressors of the model; regressors are {names}.")
    idx = [names.index(c) for c in covariates]
    classical = _classical(model_result)
    b = np.asarray(classical.params)[idx]
    v = np.asarray(classical.cov_params())[np.ix_(idx, idx)]
    wald = float(b @ np.linalg.solve(v, b))
    return wald / (wald + float(classical.df_resid))


def robustness_value(
    t: float,
    dof: float,
    q: float = 1.0,
    alpha: float | None = None,
    *,
    se_ratio: float = 1.0,
    dof_inference: float | None = None,
) -> float:
    r"""Robustness value :math:`RV_q` (``alpha=None``) or :math:`RV_{q,\alpha}`.

    Parameters
    ----------
    t : float
        Classical t-statistic of the treatment coefficient.
    dof : float
        Residual degrees of freedom.
    q : float
        Fraction of the estimate to explain away (1 = bring it to zero).
    alpha : float, optional
        If given, the strength needed to make the adjusted ``1 - alpha``
        interval include :math:`(1-q)\hat\tau` instead.
    se_ratio : float, keyword-only
        Ratio of the standard error the interval uses (e.g. cluster-robust) to
        the classical one (1 = classical, as in the paper).
    dof_inference : float, keyword-only
        Degrees of freedom of the critical t value (default ``dof - 1`` as in the
        paper; G - 1 for SEs clustered in G clusters).

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
    :math:`f^* = c\,|t^*_{1-\alpha/2,\,\nu}| / \sqrt{\mathrm{dof}-1}` (:math:`c`
    = ``se_ratio``, :math:`\nu` = ``dof_inference``): 0 if
    :math:`f_{q,\alpha} < 0`; the same formula in :math:`f_{q,\alpha}`
    otherwise, except when :math:`f_q > 1/f^*`, where the constraint is not
    binding and :math:`RV = (f_q^2 - f^{*2}) / (1 + f_q^2)` (Cinelli & Hazlett
    2020, Sec. 4; as in sensemakr). With :math:`c = 1,\ \nu = \mathrm{dof}-1`
    this is the paper's formula. A cluster-robust interval excludes
    :math:`(1-q)\hat\tau` when the classical t exceeds :math:`c\,t^*_\nu`, so the
    same algebra holds with the critical value scaled by :math:`c`, assuming
    the design effect :math:`c` does not change when the confounder is added.

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
    if not se_ratio > 0:
        raise ValueError(f"{func}: se_ratio must be > 0, got {se_ratio}.")
    fq = q * abs(float(t)) / math.sqrt(dof)
    if alpha is None or alpha >= 1:
        return 0.5 * (math.sqrt(fq**4 + 4 * fq**2) - fq**2)
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    nu = dof - 1 if dof_inference is None else dof_inference
    f_crit = se_ratio * float(abs(stats.t.ppf(alpha / 2, nu)) / math.sqrt(dof - 1))
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
        Partial :math:`R^2` of the benchmark (covariate or group) with the
        treatment (treatment regressed on all covariates).
    r2yxj_dx : float
        Partial :math:`R^2` of the benchmark with the outcome (outcome model,
        i.e. given treatment and the other covariates).
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
    Both constraints (:math:`R^2_{D\sim Z|X} < 1`, :math:`f < 1`) reduce to
    :math:`k_D < (1 - R^2_{D\sim X_j|X_{-j}}) / R^2_{D\sim X_j|X_{-j}}`: an
    orthogonal confounder cannot explain more of the treatment than the
    benchmark leaves unexplained. The outcome bound is capped at 1 (as sensemakr).

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
            f"treatment (implied R2_D~Z|X = {r2dz:.3f} >= 1); use a smaller kd "
            f"(kd < {_kd_max(r2dxj_x):.3g})."
        )
    r2zxj = kd * r2dxj_x**2 / ((1 - kd * r2dxj_x) * (1 - r2dxj_x))
    if not 0 <= r2zxj < 1:
        raise ValueError(f"{func}: kd={kd} is impossible for this benchmark (implied R2_Z~Xj >= 1); use a smaller kd.")
    r2yz = ((math.sqrt(ky) + math.sqrt(r2zxj)) / math.sqrt(1 - r2zxj)) ** 2 * (r2yxj_dx / (1 - r2yxj_dx))
    return r2dz, min(r2yz, 1.0)


def adjusted_grid(fit: SensitivityFit, r2dz_x: Sequence[float] | None = None,
                  r2yz_dx: Sequence[float] | None = None, reduce: bool = True) -> pd.DataFrame:
    r"""The estimate adjusted for hypothetical confounders, over a grid of their strengths (contour data).

    Parameters
    ----------
    fit : SensitivityFit
        From :func:`sensitivity` or :func:`sensitivity_within`.
    r2dz_x, r2yz_dx : sequence of float, optional
        Partial :math:`R^2` of the confounder with the treatment and with the
        outcome (default 0 to 0.5 in steps of 0.01, or to twice the robustness
        value if larger).
    reduce : bool
        The confounder moves the estimate towards zero (as the bounds assume).

    Returns
    -------
    DataFrame
        ``r2dz_x, r2yz_dx, estimate, ci_low, ci_high`` (the adjusted estimate and
        its ``1 - alpha`` interval, with the fit's SE convention; the bias
        formula of :func:`sensitivity`). Cinelli & Hazlett's contour plot draws
        ``estimate`` over the two axes.

    Examples
    --------
    >>> import numpy as np, pandas as pd, statsmodels.formula.api as smf
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"x": rng.normal(size=300)})
    >>> d["y"] = 0.3 * d["x"] + rng.normal(size=300)
    >>> _, f = sensitivity(smf.ols("y ~ x", data=d).fit(), "x")
    >>> g = adjusted_grid(f, [0.0, 0.1], [0.0, 0.1])
    >>> bool(g.loc[0, "estimate"] == f.estimate), len(g)
    (True, 4)
    """
    top = max(0.5, min(0.95, 2 * float(fit.rv_q)))
    xs = np.round(np.arange(0, top + 1e-9, 0.01), 4) if r2dz_x is None else np.asarray(r2dz_x, float)
    ys = xs if r2yz_dx is None else np.asarray(r2yz_dx, float)
    if ((xs < 0) | (xs >= 1)).any() or ((ys < 0) | (ys > 1)).any():
        raise ValueError("adjusted_grid: partial R2 values must be in [0, 1) for the treatment and [0, 1] for the outcome.")
    a, b = (v.ravel() for v in np.meshgrid(xs, ys, indexing="ij"))
    # _adjusted, vectorised over the grid
    est, se, dof = float(fit.estimate), float(fit.se_classical), float(fit.dof)
    bias = se * math.sqrt(dof) * np.sqrt(b * a / (1 - a))
    adj = est - np.copysign(bias, est) if reduce else est + np.copysign(bias, est)
    adj_se = fit.se_ratio * se * np.sqrt((1 - b) / (1 - a)) * math.sqrt(dof / (dof - 1))
    tcrit = float(stats.t.ppf(1 - fit.alpha / 2, fit.dof_inference))
    return pd.DataFrame({"r2dz_x": a, "r2yz_dx": b, "estimate": adj, "ci_low": adj - tcrit * adj_se,
                         "ci_high": adj + tcrit * adj_se})


def _k_explain_away(est: float, se: float, dof: float, r2dxj: float, r2yxj: float, q: float) -> float:
    """Smallest k (kd = ky = k) at which a confounder k x as strong as the benchmark removes q of the estimate.

    inf when no such confounder can exist (the benchmark explains none of the treatment).
    """
    kmax = _kd_max(r2dxj)
    if not math.isfinite(kmax) or r2yxj <= 0:
        return math.inf

    def gap(k: float) -> float:
        r2dz, r2yz = benchmark_bounds(r2dxj, r2yxj, kd=k)
        return se * math.sqrt(dof) * math.sqrt(r2yz * r2dz / (1 - r2dz)) - q * abs(est)

    hi = kmax * (1 - 1e-9)
    if gap(hi) < 0:
        return math.inf
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-10))


def _kd_max(r2dxj_x: float) -> float:
    return math.inf if r2dxj_x <= 0 else (1 - r2dxj_x) / r2dxj_x


def _check_dof(dof: float, func: str) -> None:
    if not dof > 1:
        raise ValueError(f"{func}: residual degrees of freedom must be > 1, got {dof}; fit the model on more rows.")


def _adjusted(est, se, dof, r2dz, r2yz, alpha, reduce=True, *, se_ratio=1.0, dof_inference=None):
    """Adjusted estimate, se, t and CI for a confounder with the given partial R^2s.

    ``se`` is the classical SE (the bias is written in it); the returned SE and
    interval are scaled by ``se_ratio`` and use t with ``dof_inference`` df
    (default ``dof - 1``, as sensemakr).
    """
    bias = se * math.sqrt(dof) * math.sqrt(r2yz * r2dz / (1 - r2dz))
    adj = est - math.copysign(bias, est) if reduce else est + math.copysign(bias, est)
    adj_se = se_ratio * se * math.sqrt((1 - r2yz) / (1 - r2dz)) * math.sqrt(dof / (dof - 1))
    nu = dof - 1 if dof_inference is None else dof_inference
    tcrit = float(stats.t.ppf(1 - alpha / 2, nu))
    return adj, adj_se, adj / adj_se if adj_se > 0 else np.nan, adj - tcrit * adj_se, adj + tcrit * adj_se


def _classical(model_result):
    """The same OLS with classical (non-robust) covariance."""
    if getattr(model_result, "cov_type", "nonrobust") == "nonrobust":
        return model_result
    return model_result.model.fit()


# --------------------------------------------------------------------------- OLS
def sensitivity(
    model_result,
    treatment: str,
    alpha: float = 0.05,
    q: float = 1.0,
    benchmark_covariates: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    kd: float | Sequence[float] = 1.0,
    ky: float | Sequence[float] | None = None,
    *,
    se: float | None = None,
) -> Result:
    r"""Cinelli & Hazlett (2020) sensitivity statistics for an OLS estimate.

    Parameters
    ----------
    model_result : statsmodels RegressionResults
        A fitted OLS (``sm.OLS(...).fit()`` or ``smf.ols(...).fit()``) with the
        treatment among its regressors. With classical standard errors the
        statistics are those of the paper. With cluster-robust (or other
        robust) standard errors, the point-estimate statistics (partial
        :math:`R^2`, :math:`RV_q`, bias) are unchanged (they are algebra of the
        fit), and the interval-based ones (:math:`RV_{q,\alpha}`, adjusted
        intervals) use the robust SE scaled like the classical one, with the
        model's inference degrees of freedom (G - 1 for ``use_t=True``
        clustered fits). See Notes.
    treatment : str
        Name of the treatment regressor (e.g. ``"ex"``).
    alpha : float
        Significance level for :math:`RV_{q,\alpha}` and the adjusted intervals.
    q : float
        Fraction of the estimate a confounder should explain away (1 = all).
    benchmark_covariates : sequence of str, or dict of name -> list of str, optional
        Observed regressors to benchmark against ("a confounder ``kd`` times as
        strong as tenure"). A list gives one benchmark per regressor; a dict
        gives named **groups** (e.g. all site indicators), whose partial
        :math:`R^2` is that of the set (:func:`group_partial_r2`, sensemakr's
        grouped benchmark).
    kd, ky : float or sequence of float
        Strength multipliers (``ky`` defaults to ``kd``); one bound per value.
        A ``kd`` larger than possible for a benchmark (see
        :func:`benchmark_bounds`) is left out with a note in ``fit.notes``.
    se : float, keyword-only, optional
        The treatment's standard error for the intervals and
        :math:`RV_{q,\alpha}`, when it should differ from the model's own (e.g.
        the same coefficient's cluster-robust SE with another small-sample
        convention, as :func:`sensitivity_within` passes); the model's
        inference degrees of freedom are kept.

    Returns
    -------
    Result
        ``table``: first row ``term = treatment`` with the observed
        ``estimate``, ``se``, ``ci_low``/``ci_high``, ``p`` and ``n``, plus
        ``t`` (classical), ``partial_r2``, ``rv_q`` and ``rv_qa``. Then one row
        per benchmark bound, ``term = "<k>x <benchmark>"``, whose
        estimate/se/CI/p are the *adjusted* values under such a confounder,
        with ``benchmark``, ``kd``, ``ky``, ``r2dz_x`` and ``r2yz_dx`` (the
        bounds). ``fit``: :class:`SensitivityFit`.

    Notes
    -----
    With :math:`t` and :math:`\mathrm{dof}` the treatment's classical
    t-statistic and the residual degrees of freedom:
    :math:`R^2_{Y\sim D|X} = t^2/(t^2+\mathrm{dof})`; robustness values as in
    :func:`robustness_value`. A confounder :math:`Z` with partial
    :math:`R^2_{D\sim Z|X}` and :math:`R^2_{Y\sim Z|D,X}` changes the estimate by

    .. math::

        |\widehat{\text{bias}}| = \mathrm{se}(\hat\tau)\sqrt{\mathrm{dof}}
            \sqrt{\frac{R^2_{Y\sim Z|D,X}\,R^2_{D\sim Z|X}}{1-R^2_{D\sim Z|X}}},

    and the adjusted standard error is
    :math:`\mathrm{se}\sqrt{(1-R^2_{Y\sim Z|D,X})/(1-R^2_{D\sim Z|X})}\sqrt{\mathrm{dof}/(\mathrm{dof}-1)}`.
    Bias is taken to reduce the absolute value of the estimate.

    *Clustered standard errors.* The paper assumes classical OLS SEs. The bias
    formula is an identity of the OLS algebra (:math:`\mathrm{se}\sqrt{dof}` is
    the ratio of residual SDs of outcome and treatment), so the point
    statistics use the classical SE whatever the model reports. For the
    interval statistics, the cluster-robust SE is :math:`c` times the classical
    one; we assume the adjusted SE keeps that ratio (the design effect does not
    change when a confounder is added), i.e. the adjusted robust SE is
    :math:`c` times the adjusted classical SE, with t critical values on the
    model's inference df (G - 1). Computing the statistics on the clustered t
    instead would misstate the partial :math:`R^2` (a property of the sample,
    not of the SE) and thus :math:`RV_q`.

    Checked against the published Darfur example of Cinelli & Hazlett (2020) as
    reproduced by sensemakr (partial R^2 2.19%, RV 13.9%, RV_{alpha=0.05} 7.6%,
    and the 1x/2x/3x ``female`` benchmark bounds and adjusted estimates),
    against PySensemakr 0.0.8 on a grouped benchmark, the bias formula against
    the exact coefficient change when a simulated confounder is omitted, and
    the clustered :math:`RV_{q,\alpha}` against a numerical root of the adjusted
    clustered interval (``tests/test_sensitivity.py``).

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
    >>> table, sfit = sensitivity(fit, "ex", benchmark_covariates=["tenure"], kd=[1, 2])
    >>> table["term"].tolist()
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
    if isinstance(benchmark_covariates, str):
        benchmark_covariates = [benchmark_covariates]
    if benchmark_covariates is None:
        groups: dict[str, list[str]] = {}
    elif isinstance(benchmark_covariates, Mapping):
        groups = {str(k): ([v] if isinstance(v, str) else list(v)) for k, v in benchmark_covariates.items()}
    else:
        groups = {c: [c] for c in benchmark_covariates}
    for label, cols in groups.items():
        for c in cols:
            if c not in names:
                raise ValueError(
                    f"{func}: benchmark covariate {c!r} is not a regressor of the model; regressors are {names}."
                )
            if c == treatment:
                raise ValueError(f"{func}: the benchmark covariate must differ from the treatment {treatment!r}.")
        if not cols:
            raise ValueError(f"{func}: benchmark {label!r} lists no covariates.")
    kds = np.atleast_1d(np.asarray(kd, dtype=float))
    kys = kds if ky is None else np.atleast_1d(np.asarray(ky, dtype=float))
    if len(kys) != len(kds):
        raise ValueError(f"{func}: kd and ky must have the same length, got {len(kds)} and {len(kys)}.")

    classical = _classical(model_result)
    j = names.index(treatment)
    est = float(np.asarray(classical.params)[j])
    se_c = float(np.asarray(classical.bse)[j])
    dof = float(classical.df_resid)
    _check_dof(dof, func)
    if se is None:
        se = float(np.asarray(model_result.bse)[j])
    elif not (np.isfinite(se) and se > 0):
        raise ValueError(f"{func}: se must be a positive number, got {se!r}.")
    se = float(se)
    se_ratio = se / se_c
    cov_type = getattr(model_result, "cov_type", "nonrobust")
    if cov_type == "nonrobust":
        nu = dof
    else:
        nu = float(getattr(model_result, "df_resid_inference", None) or dof)
    t_c = est / se_c
    tcrit = float(stats.t.ppf(1 - alpha / 2, nu))
    r2yd = partial_r2(t_c, dof)
    rv_qa = robustness_value(t_c, dof, q=q, alpha=alpha, se_ratio=se_ratio, dof_inference=None if cov_type == "nonrobust" else nu)
    rv_qa_c = robustness_value(t_c, dof, q=q, alpha=alpha)
    n = int(classical.nobs)
    rows = [
        {
            "term": treatment,
            "estimate": est,
            "se": se,
            "ci_low": est - tcrit * se,
            "ci_high": est + tcrit * se,
            "p": float(2 * stats.t.sf(abs(est / se), nu)),
            "n": n,
            "t": t_c,
            "partial_r2": r2yd,
            "rv_q": robustness_value(t_c, dof, q=q),
            "rv_qa": rv_qa,
            "benchmark": None,
            "kd": np.nan,
            "ky": np.nan,
            "r2dz_x": np.nan,
            "r2yz_dx": np.nan,
        }
    ]
    notes: list[str] = []
    if cov_type != "nonrobust":
        notes.append(
            f"Standard errors are {cov_type} ({se_ratio:.2f} x the classical SE); the robustness value "
            f"for the interval (RV_q,alpha = {rv_qa:.3f}) and the adjusted intervals keep that ratio "
            f"(classical: {rv_qa_c:.3f}). Partial R2 and RV_q do not depend on the SE."
        )
    exog = np.asarray(classical.model.exog, dtype=float)
    others = [i for i in range(len(names)) if i != j]
    # treatment regression D ~ the other regressors (named, for the group partial R2)
    d_fit = sm.OLS(pd.Series(exog[:, j]), pd.DataFrame(exog[:, others], columns=[names[i] for i in others])).fit()
    bench_info: dict[str, dict] = {}
    for label, cols in groups.items():
        r2yxj = group_partial_r2(classical, cols)
        r2dxj = group_partial_r2(d_fit, cols)
        r2dxj = 0.0 if r2dxj < 1e-12 else r2dxj  # a benchmark spanned by the others (rounding noise)
        kmax = _kd_max(r2dxj)
        bench_info[label] = {
            "covariates": list(cols),
            "r2dxj_x": r2dxj,
            "r2yxj_dx": r2yxj,
            "kd_max": kmax,
            "k_explain_away": _k_explain_away(est, se_c, dof, r2dxj, r2yxj, q),
        }
        skipped = []
        for kd_i, ky_i in zip(kds, kys):
            if kd_i >= kmax:
                skipped.append(kd_i)
                continue
            r2dz, r2yz = benchmark_bounds(r2dxj, r2yxj, kd=kd_i, ky=ky_i)
            adj, adj_se, adj_t, lo, hi = _adjusted(
                est, se_c, dof, r2dz, r2yz, alpha, se_ratio=se_ratio, dof_inference=None if cov_type == "nonrobust" else nu
            )
            bl = f"{kd_i:g}x {label}" if kd_i == ky_i else f"{kd_i:g}x/{ky_i:g}x {label}"
            rows.append(
                {
                    "term": bl,
                    "estimate": adj,
                    "se": adj_se,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p": float(2 * stats.t.sf(abs(adj_t), dof - 1 if cov_type == "nonrobust" else nu)),
                    "n": n,
                    "t": adj_t,
                    "partial_r2": np.nan,
                    "rv_q": np.nan,
                    "rv_qa": np.nan,
                    "benchmark": label,
                    "kd": float(kd_i),
                    "ky": float(ky_i),
                    "r2dz_x": r2dz,
                    "r2yz_dx": r2yz,
                }
            )
        if skipped:
            notes.append(
                f"A confounder {', '.join(f'{k:g}x' for k in skipped)} as strong as {label} (and orthogonal "
                f"to it) cannot exist: {label} explains {r2dxj:.0%} of the residual variation of "
                f"{treatment}, so an orthogonal confounder can be at most {kmax:.2f}x as strong "
                "(it would then explain all the rest). Those bounds are left out."
            )
    table = pd.DataFrame(rows)
    fit = SensitivityFit(
        method=f"Cinelli-Hazlett (2020) sensitivity of the OLS coefficient of {treatment}"
        + ("" if cov_type == "nonrobust" else f" ({cov_type} standard errors)"),
        n_obs=n,
        n_dropped=0,
        cluster=None if cov_type == "nonrobust" else cov_type,
        n_clusters=int(nu) + 1 if cov_type == "cluster" else None,
        alpha=alpha,
        notes=tuple(notes),
        treatment=treatment,
        estimate=est,
        se=se,
        se_classical=se_c,
        se_ratio=se_ratio,
        t_classical=t_c,
        dof=dof,
        dof_inference=nu if cov_type != "nonrobust" else dof - 1,
        partial_r2=r2yd,
        rv_q=rows[0]["rv_q"],
        rv_qa=rv_qa,
        rv_qa_classical=rv_qa_c,
        q=q,
        benchmarks=bench_info,
    )
    return Result(table, fit)


# --------------------------------------------------------------------------- within-employee headline
def _mundlak_design(
    used: pd.DataFrame, unit: str, period: str, xcol: str, site: str | None
) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """Regressors of the two-way Mundlak regression (constant, x, unit means, site and period indicators)."""
    xbar_name = f"mean {xcol} (employee)"
    des = pd.DataFrame({"const": 1.0, xcol: used[xcol].to_numpy(float)}, index=used.index)
    des[xbar_name] = used.groupby(unit)[xcol].transform("mean").to_numpy(float)
    periods = sorted(used[period].unique())
    wave_cols, share_cols = [], []
    for w in periods[1:]:
        ind = (used[period] == w).astype(float)
        des[f"{period}[{w}]"] = ind.to_numpy()
        wave_cols.append(f"{period}[{w}]")
        # unit means of the period indicators: needed for the FE equality when the panel is
        # unbalanced (Wooldridge 2021); constant (and dropped below) when it is balanced
        des[f"share of {period} {w} (employee)"] = ind.groupby(used[unit]).transform("mean").to_numpy()
        share_cols.append(f"share of {period} {w} (employee)")
    site_cols: list[str] = []
    if site is not None:
        levels = sorted(used[site].astype(str).unique())
        for s in levels[1:]:
            des[f"{site}[{s}]"] = (used[site].astype(str) == s).astype(float).to_numpy()
            site_cols.append(f"{site}[{s}]")
    # drop columns that are linear combinations of the earlier ones (e.g. shares in a balanced panel):
    # Gram-Schmidt, one pass (a column is kept when its residual on the kept ones is not ~0)
    keep: list[str] = []
    basis = np.empty((len(des), 0))
    for c in des.columns:
        v = des[c].to_numpy(float)
        r = v - basis @ (basis.T @ v)
        r = r - basis @ (basis.T @ r)  # re-orthogonalise once (numerical stability)
        norm, scale = float(np.linalg.norm(r)), float(np.linalg.norm(v))
        if scale > 0 and norm > 1e-9 * scale:
            keep.append(c)
            basis = np.column_stack([basis, r / norm])
        elif c in (xcol, xbar_name):
            raise ValueError(
                f"sensitivity_within: {c!r} is collinear with the period and site indicators; the "
                "treatment must vary within employees over periods."
            )
    des = des[keep]
    return des, [xbar_name], [c for c in site_cols if c in keep], [c for c in wave_cols + share_cols if c in keep]


def sensitivity_within(
    panel: pd.DataFrame,
    y: str,
    x: str,
    unit: str = "employee_id",
    period: str = "wave",
    site: str | None = "site_id",
    lag: int = 1,
    alpha: float = 0.05,
    q: float = 1.0,
    kd: float | Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    ky: float | Sequence[float] | None = None,
    *,
    cluster: str | None = None,
) -> Result:
    r"""Cinelli & Hazlett sensitivity of the within-employee (two-way FE) headline.

    The headline of the direction report is the two-way fixed-effects estimate
    (employee and period effects) of :math:`x_{t-lag} \to y_t`, e.g. eSat in the
    previous wave -> mean CSAT of the agent's customers. This function fits
    the equivalent **Mundlak (correlated random effects) regression**, whose
    coefficient of :math:`x` equals the fixed-effects estimate exactly, and runs
    :func:`sensitivity` on it with two benchmarks: **stable traits** (the
    employee's mean of :math:`x` over the used rows) and **site** (its
    indicators as one group).

    Parameters
    ----------
    panel : DataFrame
        Long employee-period panel (e.g. ``link(study, level="employee",
        period="wave", ex_lag=0)`` with ``period`` renamed or passed).
    y, x : str
        Outcome (e.g. ``"csat"``) and treatment (e.g. ``"esat"``) columns.
    unit, period : str
        Employee and integer period columns. Lags are taken within unit on
        *consecutive* periods (a gap gives a missing lag, as in
        :func:`cxex_lab.models.direction.within_effects`).
    site : str or None
        Site column (constant within employee), benchmark group and regressor.
    lag : int
        Periods between treatment and outcome (1 = EX of the previous wave;
        0 = ``x`` is already aligned).
    alpha : float
        1 - confidence level (intervals use SEs clustered by ``cluster``, t with G-1 df).
    q : float
        Share of the estimate a confounder should explain away.
    kd, ky : float or sequence of float
        Benchmark multipliers (``ky`` defaults to ``kd``). Multipliers a
        benchmark cannot reach are left out, with a note (see Notes).
    cluster : str, keyword-only, optional
        Column the standard errors cluster by (default ``unit``), e.g.
        ``"team_id"`` as the report's headline
        (:func:`cxex_lab.findings.headline_effect`). It may change within
        unit; used rows must not miss it.

    Returns
    -------
    Result
        ``table`` as :func:`sensitivity` (term of the treatment ``"{x}(t-{lag})"``),
        with benchmark rows ``"<k>x stable traits"`` and ``"<k>x site"``;
        ``fit``: :class:`WithinSensitivityFit` (``cluster``, ``n_clusters``:
        the clustering level and its number of clusters).

    Notes
    -----
    *Mundlak regression.* OLS of :math:`y_{it}` on :math:`x_{it}` (the lagged
    treatment), its employee mean :math:`\bar x_i` over the used rows, the
    employee means of the period indicators :math:`\bar d_i` (needed when the
    panel is unbalanced; Wooldridge 2021), site indicators and period
    indicators. Every regressor except :math:`x_{it}` is spanned by the
    employee and period indicators, and the part of :math:`x` they explain (its
    two-way fitted value :math:`a_i + b_t`, with :math:`a_i = \bar x_i - \bar
    d_i^\top b`) lies in their span, so by Frisch-Waugh-Lovell the coefficient
    of :math:`x` is the two-way fixed-effects estimate (tested against
    linearmodels ``PanelOLS``). Without :math:`\bar d_i` this fails on an
    unbalanced panel (also tested).

    *What the benchmarks mean for a within-employee estimate.* The treatment's
    residual after the covariates is its within-employee (and within-period)
    variation; a stable confounder, of the person or the site, is orthogonal
    to it and cannot bias the estimate. So:

    * **site**: its partial :math:`R^2` with the treatment, given the employee
      mean, is zero by construction; the bound therefore leaves the estimate
      unchanged. It says: "confounding by stable site differences, however
      strong, cannot explain this estimate". Site-by-period shocks could;
      they are not in this model.
    * **stable traits** (:math:`\bar x_i`): :math:`R^2_{D\sim \bar x|X_{-j}} = r`
      is the share of the (site- and period-adjusted) variation of the
      treatment that is stable between employees. A confounder :math:`k_D` times
      as strong and orthogonal to it must be a *time-varying* influence on the
      employee (a new team leader, a change in personal circumstances or in
      the customer mix) that explains :math:`k_D\, r/(1-r)` of the
      within-employee variation of EX, and, on the outcome side, up to
      :math:`k_Y` times what the stable EX level explains of CX. Because stable
      differences usually dominate EX, this is a demanding benchmark, and
      :math:`k_D` cannot exceed :math:`(1-r)/r` (such a confounder would
      explain all within-employee variation); larger multipliers are left out
      with a note. "Robust to 0.25x stable traits" is therefore already a
      strong statement.

    *Clustering.* The sensitivity algebra (partial :math:`R^2`, :math:`RV_q`,
    bias) uses the classical OLS quantities of the Mundlak regression, whose
    values do not depend on the SE. Intervals and :math:`RV_{q,\alpha}` use the
    standard error of the two-way fixed-effects fit clustered by ``cluster``
    (Arellano / Liang-Zeger) with the small-sample factor :math:`G/(G-1)`, t
    with G-1 df: the convention of
    :func:`cxex_lab.models.within_effects` (linearmodels ``PanelOLS`` with
    ``count_effects=False``: absorbed employee and period effects are not
    counted, as Stata's ``xtreg, fe vce(cluster)`` does not count the nested
    employee effects; Cameron & Miller 2015, Sec. VI), so that the
    sensitivity's estimate, SE and :math:`RV_{q,\alpha}` belong to exactly
    the interval the headline reports (tested equal). It is computed as
    statsmodels' clustered SE of the Mundlak coefficient (factor
    :math:`G/(G-1)\cdot(N-1)/(N-K)`, :math:`K` the Mundlak regressors)
    times :math:`\sqrt{(N-K)/(N-1)}`, and kept in proportion to the classical
    SE under confounding (see :func:`sensitivity`).

    References
    ----------
    Cinelli, C., & Hazlett, C. (2020). Making sense of sensitivity: extending
    omitted variable bias. *Journal of the Royal Statistical Society: Series B*,
    82(1), 39-67.
    Mundlak, Y. (1978). On the pooling of time series and cross section data.
    *Econometrica*, 46(1), 69-85.
    Wooldridge, J. M. (2021). Two-way fixed effects, the two-way Mundlak
    regression, and difference-in-differences estimators. SSRN 3906345.
    Cameron, A. C., & Miller, D. L. (2015). A practitioner's guide to
    cluster-robust inference. *Journal of Human Resources*, 50(2), 317-372.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> n, w = 300, 4
    >>> p = pd.DataFrame({"employee_id": np.repeat(np.arange(n), w), "wave": np.tile(np.arange(1, w + 1), n)})
    >>> p["site_id"] = p["employee_id"] % 5
    >>> trait = np.repeat(rng.normal(size=n), w)
    >>> p["esat"] = trait + rng.normal(size=n * w)
    >>> p["csat"] = trait + 0.3 * p.groupby("employee_id")["esat"].shift().fillna(0) + rng.normal(size=n * w)
    >>> table, fit = sensitivity_within(p, y="csat", x="esat")
    >>> table["term"].tolist()[0], sorted(fit.benchmarks)
    ('esat(t-1)', ['site', 'stable traits'])
    """
    func = "sensitivity_within"
    df = _check_frame(panel, func)
    if not isinstance(lag, (int, np.integer)) or lag < 0:
        raise ValueError(f"{func}: lag must be an integer >= 0, got {lag!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if y == x:
        raise ValueError(f"{func}: y and x are the same column {y!r}.")
    cl = cluster or unit
    _check_columns(df, list(dict.fromkeys([unit, period, cl] + ([site] if site else []))), func, numeric=False)
    if cl in (y, x, period):
        raise ValueError(f"{func}: cluster={cluster!r} must be an identifier column, not a variable of the model.")
    _check_columns(df, [y, x, period], func)
    per = df[period]
    if per.isna().any() or not np.allclose(per, np.round(per)):
        raise ValueError(
            f"{func}: period column {period!r} must hold whole numbers without gaps in the data "
            "(1, 2, 3, ...); lags are taken on consecutive periods."
        )
    cols = list(dict.fromkeys([unit, period, y, x, cl] + ([site] if site else [])))
    d = df[cols].copy()
    d.attrs = {}
    d[period] = d[period].astype("int64")
    dup = d.duplicated([unit, period])
    if dup.any():
        raise ValueError(
            f"{func}: {int(dup.sum())} rows repeat a ({unit}, {period}) pair; the panel needs one row "
            "per employee and period."
        )
    if site:
        n_sites_per_unit = d.dropna(subset=[site]).groupby(unit)[site].nunique()
        movers = n_sites_per_unit[n_sites_per_unit > 1]
        if len(movers):
            raise ValueError(
                f"{func}: site column {site!r} changes within {len(movers)} employees (e.g. "
                f"{movers.index[0]!r}); the site benchmark needs one site per employee (use, e.g., the "
                "site at the first wave)."
            )
    xcol = f"{x}(t-{lag})" if lag else x
    if lag:
        lagged = d[[unit, period, x]].assign(**{period: d[period] + lag}).rename(columns={x: xcol})
        d = d.merge(lagged, on=[unit, period], how="left")
    else:
        d = d.rename(columns={x: xcol}) if xcol != x else d
    need = [y, xcol] + ([site] if site else [])
    ok = d[need].notna().all(axis=1)
    n_dropped = int((~ok).sum())
    no_cl = ok & d[cl].isna()
    if no_cl.any():
        raise ValueError(
            f"{func}: {int(no_cl.sum())} usable row(s) have no value in the cluster column {cl!r}; fill the "
            "cluster id or drop those rows."
        )
    used = d.loc[ok].reset_index(drop=True)
    n_units = used[unit].nunique()
    if used[period].nunique() < 2 or n_units < 3:
        raise ValueError(
            f"{func}: only {len(used)} rows with {y!r} and a lagged {x!r} ({n_units} employees, "
            f"{used[period].nunique()} periods); need at least 3 employees and 2 periods."
        )
    within_sd = used[xcol] - used.groupby(unit)[xcol].transform("mean")
    if not within_sd.abs().max() > 0:
        raise ValueError(f"{func}: {xcol!r} does not vary within employees; a within-employee effect is not identified.")
    des, trait_cols, site_cols, _ = _mundlak_design(used, unit, period, xcol, site)
    groups = pd.factorize(used[cl])[0]
    n_clusters = int(groups.max()) + 1
    if n_clusters < 2:
        raise ValueError(f"{func}: the rows used fall into {n_clusters} cluster(s) of {cl!r}; clustering needs at least 2.")
    fit_cl = sm.OLS(used[y].astype(float), des).fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
    # the fixed-effects convention: statsmodels counts the K Mundlak regressors in (N-1)/(N-K); the FE fit
    # (within_effects, linearmodels count_effects=False) counts only the slope, so its factor is G/(G-1)
    n_obs, k_reg = len(used), des.shape[1]
    se_fe = float(fit_cl.bse[xcol]) * math.sqrt((n_obs - k_reg) / (n_obs - 1))
    bench: dict[str, list[str]] = {"stable traits": trait_cols}
    if site_cols:
        bench["site"] = site_cols
    res = sensitivity(fit_cl, xcol, alpha=alpha, q=q, benchmark_covariates=bench, kd=kd, ky=ky, se=se_fe)
    base: SensitivityFit = res.fit
    notes = list(base.notes)
    if n_clusters < 30:
        notes.append(f"Only {n_clusters} clusters ({cl}); clustered standard errors are approximate below about 30 "
                     f"(t with {n_clusters - 1} df and the G/(G-1) correction are used).")
    if "site" in base.benchmarks:
        notes.append(
            "Site is a stable characteristic: given the employee's mean, it explains none of the "
            "within-employee variation of the treatment, so no confounder as strong as site can move "
            "this estimate (site-by-period shocks could; they are not modelled)."
        )
    tr = base.benchmarks["stable traits"]
    notes.append(
        f"Stable traits: {tr['r2dxj_x']:.0%} of the adjusted variation of {xcol} is stable between employees. "
        f"A confounder k x as strong (and orthogonal to it) is a time-varying influence explaining "
        f"k x {tr['r2dxj_x'] / (1 - tr['r2dxj_x']):.2f} of the within-employee variation of {xcol}; "
        f"k cannot exceed {tr['kd_max']:.2f}. One {tr['k_explain_away']:.2f}x as strong would "
        + ("explain the estimate away." if q == 1 else f"remove {q:.0%} of it.")
    )
    fit = WithinSensitivityFit(
        method=(
            f"Cinelli-Hazlett (2020) sensitivity of the two-way fixed-effects ({unit}, {period}) estimate of "
            f"{xcol} -> {y}, via the Mundlak regression; SEs clustered by {cl}"
        ),
        n_obs=len(used),
        n_dropped=n_dropped,
        cluster=cl,
        n_clusters=n_clusters,
        alpha=alpha,
        notes=tuple(notes),
        treatment=xcol,
        estimate=base.estimate,
        se=base.se,
        se_classical=base.se_classical,
        se_ratio=base.se_ratio,
        t_classical=base.t_classical,
        dof=base.dof,
        dof_inference=base.dof_inference,
        partial_r2=base.partial_r2,
        rv_q=base.rv_q,
        rv_qa=base.rv_qa,
        rv_qa_classical=base.rv_qa_classical,
        q=q,
        benchmarks=base.benchmarks,
        unit=unit,
        period=period,
        lag=int(lag),
        n_units=n_units,
        mundlak_terms=tuple(c for c in des.columns if c not in ("const", xcol)),
    )
    return Result(res.table, fit)
