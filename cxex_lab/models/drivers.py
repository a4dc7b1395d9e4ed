r"""Driver importance: which employee-journey touchpoints move an outcome.

One public function, :func:`drivers`, decomposes the :math:`R^2` of a linear
model of an outcome (latent EX, eSat, eNPS, ...) on correlated touchpoint
items into per-aspect shares, using Johnson's (2000) relative weights
(default) or general dominance weights (Azen & Budescu 2003, all subsets).
Standardized regression coefficients are reported beside them for comparison,
with percentile-bootstrap confidence intervals for every measure.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxex_lab.models._checks import _check_columns, _check_design, _check_frame, _complete_rows

__all__ = ["drivers", "relative_weights", "dominance_weights"]

_METHODS = ("relative_weights", "dominance")



def _corr_from_data(z: np.ndarray) -> np.ndarray:
    return np.corrcoef(z, rowvar=False)


def _rw_from_corr(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Relative weights, standardized betas and R^2 from the joint correlation matrix.

    ``r`` is the (p+1)x(p+1) correlation matrix of predictors then outcome.
    """
    rxx, rxy = r[:-1, :-1], r[:-1, -1]
    evals, evecs = np.linalg.eigh(rxx)
    evals = np.clip(evals, 0.0, None)
    lam = (evecs * np.sqrt(evals)) @ evecs.T  # R^{1/2}: corr(X_j, Z_k)
    beta_z = np.linalg.solve(lam, rxy)  # regression of y on the orthogonal Z
    raw = (lam**2) @ (beta_z**2)
    std_beta = np.linalg.solve(rxx, rxy)
    return raw, std_beta, float(beta_z @ beta_z)


def _subset_r2(r: np.ndarray, subset: tuple[int, ...]) -> float:
    if not subset:
        return 0.0
    idx = list(subset)
    rs = r[np.ix_(idx, idx)]
    ry = r[idx, -1]
    return float(ry @ np.linalg.solve(rs, ry))


def _dominance_from_corr(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """General dominance weights (average incremental R^2 over subset sizes)."""
    p = r.shape[0] - 1
    r2 = {(): 0.0}
    for k in range(1, p + 1):
        for s in combinations(range(p), k):
            r2[s] = _subset_r2(r, s)
    gd = np.zeros(p)
    for j in range(p):
        others = [i for i in range(p) if i != j]
        by_size = []
        for k in range(p):
            inc = [r2[tuple(sorted(s + (j,)))] - r2[s] for s in combinations(others, k)]
            by_size.append(np.mean(inc))
        gd[j] = np.mean(by_size)
    std_beta = np.linalg.solve(r[:-1, :-1], r[:-1, -1])
    return gd, std_beta, r2[tuple(range(p))]


def relative_weights(df: pd.DataFrame, outcome: str, predictors: Sequence[str]) -> pd.Series:
    """Johnson's (2000) raw relative weights (no bootstrap); they sum to the model R^2.

    Parameters
    ----------
    df : DataFrame
    outcome : str
    predictors : sequence of str

    Returns
    -------
    Series
        Raw relative weight per predictor (``attrs["r2"]`` holds the R^2).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    >>> d["y"] = d["a"] + rng.normal(size=200)
    >>> w = relative_weights(d, "y", ["a", "b"])
    >>> bool(w["a"] > w["b"])
    True
    """
    sub, _ = _prepare(df, outcome, predictors, "relative_weights")
    raw, _, r2 = _rw_from_corr(_corr_from_data(sub.to_numpy()))
    out = pd.Series(raw, index=list(predictors), name="relative_weight")
    out.attrs["r2"] = r2
    return out


def dominance_weights(df: pd.DataFrame, outcome: str, predictors: Sequence[str]) -> pd.Series:
    """General dominance weights (Azen & Budescu 2003) by brute force over all subsets.

    Exact but exponential in the number of predictors (``2**p`` regressions);
    fine up to about 15 predictors.

    Parameters
    ----------
    df : DataFrame
    outcome : str
    predictors : sequence of str

    Returns
    -------
    Series
        General dominance weight per predictor; they sum to the model R^2.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    >>> d["y"] = d["a"] + rng.normal(size=200)
    >>> round(float(dominance_weights(d, "y", ["a", "b"]).sum()), 3) > 0
    True
    """
    sub, _ = _prepare(df, outcome, predictors, "dominance_weights")
    gd, _, r2 = _dominance_from_corr(_corr_from_data(sub.to_numpy()))
    out = pd.Series(gd, index=list(predictors), name="general_dominance")
    out.attrs["r2"] = r2
    return out


def _prepare(df, outcome, predictors, func):
    df = _check_frame(df, func)
    if isinstance(predictors, str):
        predictors = [predictors]
    predictors = list(predictors)
    if not predictors:
        raise ValueError(f"{func}: give at least one predictor column.")
    if outcome in predictors:
        raise ValueError(f"{func}: outcome {outcome!r} is also listed as a predictor; remove it from predictors.")
    if len(set(predictors)) != len(predictors):
        raise ValueError(f"{func}: predictors contain duplicates {predictors}; list each column once.")
    _check_columns(df, [outcome, *predictors], func)
    sub, n_dropped = _complete_rows(df, [*predictors, outcome], func, min_rows=len(predictors) + 3)
    x = sub[predictors].to_numpy()
    _check_design(x, predictors, func)
    if not sub[outcome].std() > 0:
        raise ValueError(f"{func}: outcome {outcome!r} is constant in the complete rows; nothing to explain.")
    return sub, n_dropped


# --------------------------------------------------------------------------- public
def drivers(
    df: pd.DataFrame,
    outcome: str,
    predictors: Sequence[str],
    n_boot: int = 1000,
    seed: int | np.random.Generator | None = None,
    alpha: float = 0.05,
    method: str = "relative_weights",
) -> pd.DataFrame:
    r"""Relative importance of EX touchpoint aspects for an outcome.

    Decomposes the :math:`R^2` of the linear regression of ``outcome`` on
    ``predictors`` into one share per predictor (relative weights, or general
    dominance weights), rescales them to % of :math:`R^2`, and reports the plain
    standardized regression coefficients beside them. Confidence intervals are
    percentile bootstrap intervals (rows resampled with replacement).

    Parameters
    ----------
    df : DataFrame
        One row per respondent (or respondent-wave).
    outcome : str
        Outcome column (e.g. ``"esat"`` or latent ``"ex"``).
    predictors : sequence of str
        Touchpoint aspect columns (e.g. ``tp_hiring`` ... ``tp_promotion``).
    n_boot : int
        Bootstrap resamples (0 = no intervals).
    seed : int or numpy.random.Generator, optional
        The only source of randomness.
    alpha : float
        1 - confidence level of the intervals.
    method : {"relative_weights", "dominance"}
        Johnson's relative weights (fast, any number of predictors) or exact
        general dominance weights (``2**p`` regressions; up to ~12 predictors
        with the bootstrap).

    Returns
    -------
    DataFrame
        One row per predictor and ``measure``: ``"relative_weight"`` (raw
        weight, sums to :math:`R^2`; ``"general_dominance"`` with
        ``method="dominance"``), ``"rescaled_weight"`` (% of :math:`R^2`, sums
        to 100) and ``"std_beta"``. Columns ``term``, ``measure``, ``estimate``,
        ``se`` (bootstrap SD), ``ci_low``, ``ci_high``, ``p``, ``n``, ``rank``
        (1 = most important; by ``|beta|`` for ``std_beta``). ``p`` is the OLS
        t-test p-value for ``std_beta`` and NaN for the weights (they are
        non-negative by construction; read the interval instead).
        ``attrs``: ``r2``, ``r2_ci``, ``n_dropped`` (rows with missing values),
        ``n_boot``, ``method``, ``alpha``.

    Notes
    -----
    With :math:`R_{xx} = Q \Lambda Q^\top` the predictors' correlation matrix and
    :math:`r_{xy}` their correlations with the outcome, Johnson (2000) builds the
    orthogonal counterparts :math:`Z` of the predictors that are closest to them
    in least squares. :math:`L = R_{xx}^{1/2} = Q\Lambda^{1/2}Q^\top` holds
    :math:`\mathrm{corr}(X_j, Z_k)` and :math:`\beta^* = L^{-1} r_{xy}` the
    regression of :math:`y` on :math:`Z`, so

    .. math:: RW_j = \sum_k L_{jk}^2\, \beta^{*2}_k, \qquad \sum_j RW_j = R^2 .

    General dominance weights (``method="dominance"``) average the increase in
    :math:`R^2` when predictor :math:`j` is added to each subset of the others,
    first within subset size, then over sizes. Relative weights approximate them
    closely (Johnson 2000; LeBreton et al. 2004), usually within 0.01 of
    :math:`R^2`. Standardized betas: :math:`\beta = R_{xx}^{-1} r_{xy}`.

    Results have been checked against general dominance weights computed by brute
    force over all subsets with statsmodels OLS (``tests/test_drivers.py``), and
    are exactly the squared correlations when the predictors are uncorrelated.

    References
    ----------
    Johnson, J. W. (2000). A heuristic method for estimating the relative weight of
    predictor variables in multiple regression. *Multivariate Behavioral Research*,
    35(1), 1-19.
    Azen, R., & Budescu, D. V. (2003). The dominance analysis approach for comparing
    predictors in multiple regression. *Psychological Methods*, 8(2), 129-148.
    Tonidandel, S., & LeBreton, J. M. (2011). Relative importance analysis: a useful
    supplement to regression analysis. *Journal of Business and Psychology*, 26, 1-9.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> d = pd.DataFrame(rng.integers(1, 6, size=(300, 3)), columns=["tp_a", "tp_b", "tp_c"])
    >>> d["esat"] = 0.5 * d["tp_a"] + 0.2 * d["tp_b"] + rng.normal(size=300)
    >>> res = drivers(d, "esat", ["tp_a", "tp_b", "tp_c"], n_boot=200, seed=1)
    >>> res.query("measure == 'rescaled_weight'").sort_values("rank")["term"].tolist()
    ['tp_a', 'tp_b', 'tp_c']
    """
    func = "drivers"
    if method not in _METHODS:
        raise ValueError(f"{func}: unknown method {method!r}; use one of {list(_METHODS)}.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if n_boot < 0:
        raise ValueError(f"{func}: n_boot must be >= 0, got {n_boot}.")
    if isinstance(predictors, str):
        predictors = [predictors]
    predictors = list(predictors)
    sub, n_dropped = _prepare(df, outcome, predictors, func)
    z = sub[[*predictors, outcome]].to_numpy()
    n, p = len(z), len(predictors)
    core = _rw_from_corr if method == "relative_weights" else _dominance_from_corr

    w, beta, r2 = core(_corr_from_data(z))

    # OLS p-values of the standardized betas (same t as the raw coefficients)
    zs = (z - z.mean(axis=0)) / z.std(axis=0, ddof=1)
    xd = np.column_stack([np.ones(n), zs[:, :-1]])
    coef, *_ = np.linalg.lstsq(xd, zs[:, -1], rcond=None)
    resid = zs[:, -1] - xd @ coef
    dof = n - p - 1
    cov = (resid @ resid / dof) * np.linalg.inv(xd.T @ xd)
    t_beta = coef[1:] / np.sqrt(np.diag(cov)[1:])
    p_beta = 2 * stats.t.sf(np.abs(t_beta), dof)

    boots = np.full((n_boot, 3, p), np.nan)
    boot_r2 = np.full(n_boot, np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            with np.errstate(invalid="ignore", divide="ignore"):
                rb = _corr_from_data(z[idx])
            if not np.all(np.isfinite(rb)):
                continue
            try:
                wb, bb, r2b = core(rb)
            except np.linalg.LinAlgError:
                continue
            boots[b] = [wb, 100 * wb / r2b, bb]
            boot_r2[b] = r2b

    first = "relative_weight" if method == "relative_weights" else "general_dominance"
    point = [w, 100 * w / r2, beta]
    rows = []
    lo_q, hi_q = 100 * alpha / 2, 100 * (1 - alpha / 2)
    for m, measure in enumerate((first, "rescaled_weight", "std_beta")):
        est = point[m]
        key = np.abs(est) if measure == "std_beta" else est
        rank = stats.rankdata(-key, method="min").astype(int)
        for j, term in enumerate(predictors):
            bj = boots[:, m, j]
            bj = bj[np.isfinite(bj)]
            ok = len(bj) >= 2
            rows.append(
                {
                    "term": term,
                    "measure": measure,
                    "estimate": float(est[j]),
                    "se": float(bj.std(ddof=1)) if ok else np.nan,
                    "ci_low": float(np.percentile(bj, lo_q)) if ok else np.nan,
                    "ci_high": float(np.percentile(bj, hi_q)) if ok else np.nan,
                    "p": float(p_beta[j]) if measure == "std_beta" else np.nan,
                    "n": n,
                    "rank": int(rank[j]),
                }
            )
    out = pd.DataFrame(rows)
    br = boot_r2[np.isfinite(boot_r2)]
    out.attrs.update(
        {
            "r2": r2,
            "r2_ci": (float(np.percentile(br, lo_q)), float(np.percentile(br, hi_q))) if len(br) > 1 else (np.nan, np.nan),
            "n_dropped": n_dropped,
            "n_boot": n_boot,
            "n_boot_failed": int(n_boot - len(br)),
            "method": method,
            "alpha": alpha,
            "outcome": outcome,
        }
    )
    return out
