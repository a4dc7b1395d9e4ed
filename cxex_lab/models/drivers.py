r"""Driver importance: which employee-journey touchpoints move an outcome.

One public estimator, :func:`drivers`, decomposes the :math:`R^2` of a linear
model of an outcome (eSat, eNPS, linked CSAT, latent EX, ...) on correlated
touchpoint items into per-aspect shares, using Johnson's (2000) relative
weights (default) or general dominance weights (Azen & Budescu 2003, all
subsets). It reports

* each weight as a **share of the outcome's variance** (the raw weight; the
  weights add up to :math:`R^2`) and as a **share of** :math:`R^2` (the
  rescaled weight, in %);
* the model :math:`R^2` itself with its interval, so a reader sees that
  "coaching 57% of :math:`R^2`" with :math:`R^2 = .06` is 3.6% of the
  outcome's variance;
* standardized regression coefficients beside them;
* percentile intervals from a **cluster bootstrap over employees** (all rows
  of one employee are resampled together: the same people answer every wave);
* the **random-reference-variable test** of Tonidandel, LeBreton & Johnson
  (2009): does a touchpoint's weight beat the weight of a pure-noise
  predictor? Relative weights are non-negative, so their percentile intervals
  never include zero and cannot say "this touchpoint may not matter"; the
  difference to a random variable's weight can.

:func:`relative_weights` and :func:`dominance_weights` give the point weights
alone (no resampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from cxex_lab.models._checks import _check_columns, _check_design, _check_frame, _complete_rows
from cxex_lab.results import Fit, Result

__all__ = ["DriversFit", "drivers", "relative_weights", "dominance_weights"]

_METHODS = ("relative_weights", "dominance")
_RANDOM = "__random_reference__"
#: Measures of the table, the unit each is expressed in, and what it means.
UNITS: dict[str, str] = {
    "relative_weight": "share of outcome variance (0-1); weights sum to R2",
    "general_dominance": "share of outcome variance (0-1); weights sum to R2",
    "pct_of_variance": "% of the outcome's variance; sums to 100 x R2",
    "rescaled_weight": "% of R2 (share of the explained variance); sums to 100",
    "std_beta": "SD of outcome per SD of touchpoint, others held fixed",
    "r2": "share of outcome variance explained by all touchpoints (0-1)",
}
_BOOT_CHUNK = 250  # bootstrap replicates per vectorised batch (at most 4M cluster counts)


@dataclass(frozen=True, kw_only=True)
class DriversFit(Fit):
    """Fit record of :func:`drivers`.

    Attributes
    ----------
    outcome : str
        The outcome column.
    predictors : tuple of str
        The touchpoint columns, in the order given.
    importance : str
        ``"relative_weights"`` (Johnson 2000) or ``"dominance"`` (general dominance).
    r2 : float
        :math:`R^2` of the OLS of the outcome on all predictors (the weights add up to it).
    r2_ci : tuple of float
        Percentile bootstrap interval of :math:`R^2` (NaN without bootstrap).
    r2_se : float
        Bootstrap standard deviation of :math:`R^2`.
    n_boot : int
        Bootstrap replicates requested.
    n_boot_failed : int
        Replicates that gave a singular correlation matrix (left out).
    random_reference : bool
        Whether the random-reference-variable test was run.
    random_weight : float
        Weight of the random reference variable in the augmented model (point estimate).
    random_weight_ci : tuple of float
        Its percentile interval: what "no importance at all" looks like at this sample size.
    """

    outcome: str
    predictors: tuple[str, ...]
    importance: str
    r2: float
    r2_ci: tuple[float, float] = (float("nan"), float("nan"))
    r2_se: float = float("nan")
    n_boot: int = 0
    n_boot_failed: int = 0
    random_reference: bool = False
    random_weight: float = float("nan")
    random_weight_ci: tuple[float, float] = (float("nan"), float("nan"))


# --------------------------------------------------------------------------- core maths (batched)
def _rw_batch(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative weights, standardized betas and R^2 for a stack of correlation matrices.

    ``r`` has shape (B, p+1, p+1): predictors first, outcome last. Returns
    arrays of shape (B, p), (B, p), (B,).
    """
    rxx, rxy = r[:, :-1, :-1], r[:, :-1, -1]
    evals, evecs = np.linalg.eigh(rxx)
    evals = np.clip(evals, 0.0, None)
    lam = (evecs * np.sqrt(evals)[:, None, :]) @ np.swapaxes(evecs, 1, 2)  # R^{1/2}: corr(X_j, Z_k)
    beta_z = np.linalg.solve(lam, rxy[..., None])[..., 0]  # regression of y on the orthogonal Z
    raw = np.einsum("bjk,bk->bj", lam**2, beta_z**2)
    std_beta = np.linalg.solve(rxx, rxy[..., None])[..., 0]
    return raw, std_beta, np.einsum("bk,bk->b", beta_z, beta_z)


def _dominance_batch(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """General dominance weights (average incremental R^2 over subset sizes), batched."""
    b, q1, _ = r.shape
    p = q1 - 1
    r2: dict[tuple[int, ...], np.ndarray] = {(): np.zeros(b)}
    for k in range(1, p + 1):
        for s in combinations(range(p), k):
            idx = list(s)
            rs = r[:, idx][:, :, idx]
            ry = r[:, idx, -1]
            r2[s] = np.einsum("bk,bk->b", ry, np.linalg.solve(rs, ry[..., None])[..., 0])
    gd = np.zeros((b, p))
    for j in range(p):
        others = [i for i in range(p) if i != j]
        by_size = []
        for k in range(p):
            inc = [r2[tuple(sorted(s + (j,)))] - r2[s] for s in combinations(others, k)]
            by_size.append(np.mean(inc, axis=0))
        gd[:, j] = np.mean(by_size, axis=0)
    std_beta = np.linalg.solve(r[:, :-1, :-1], r[:, :-1, -1][..., None])[..., 0]
    return gd, std_beta, r2[tuple(range(p))]


def _corr_from_moments(n: np.ndarray, s: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Correlation matrices from counts (B,), sums (B, q) and cross-products (B, q, q)."""
    mean = s / n[:, None]
    cov = c - n[:, None, None] * mean[:, :, None] * mean[:, None, :]
    sd = np.sqrt(np.clip(np.einsum("bii->bi", cov), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / (sd[:, :, None] * sd[:, None, :])


def _point(z: np.ndarray, core) -> tuple[np.ndarray, np.ndarray, float]:
    w, beta, r2 = core(np.corrcoef(z, rowvar=False)[None])
    return w[0], beta[0], float(r2[0])


def _prepare(df, outcome, predictors, func, extra=()):
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
    keep_cols = [*predictors, outcome]
    sub, n_dropped = _complete_rows(df, keep_cols, func, min_rows=len(predictors) + 3)
    x = sub[predictors].to_numpy()
    _check_design(x, predictors, func)
    if not sub[outcome].std() > 0:
        raise ValueError(f"{func}: outcome {outcome!r} is constant in the complete rows; nothing to explain.")
    return sub, n_dropped, predictors


def _point_result(df, outcome, predictors, method, func) -> Result:
    sub, n_dropped, predictors = _prepare(df, outcome, predictors, func)
    core = _rw_batch if method == "relative_weights" else _dominance_batch
    w, _, r2 = _point(sub[[*predictors, outcome]].to_numpy(), core)
    measure = "relative_weight" if method == "relative_weights" else "general_dominance"
    n = len(sub)
    table = pd.DataFrame(
        {
            "term": predictors,
            "estimate": w,
            "se": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p": np.nan,
            "n": n,
            "measure": measure,
            "unit": UNITS[measure],
        }
    )
    fit = DriversFit(
        method=f"{'relative weights (Johnson 2000)' if method == 'relative_weights' else 'general dominance weights'}, point estimates",
        n_obs=n,
        n_dropped=n_dropped,
        outcome=outcome,
        predictors=tuple(predictors),
        importance=method,
        r2=r2,
    )
    return Result(table, fit)


def relative_weights(df: pd.DataFrame, outcome: str, predictors: Sequence[str]) -> Result:
    """Johnson's (2000) raw relative weights (point estimates, no resampling).

    Parameters
    ----------
    df : DataFrame
        One row per respondent (or respondent-wave).
    outcome : str
        Outcome column.
    predictors : sequence of str
        Predictor columns.

    Returns
    -------
    Result
        ``table``: one row per predictor, ``estimate`` = raw relative weight
        (share of the outcome's variance; they sum to :math:`R^2`), interval
        columns NaN. ``fit``: :class:`DriversFit` with ``r2``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    >>> d["y"] = d["a"] + rng.normal(size=200)
    >>> table, fit = relative_weights(d, "y", ["a", "b"])
    >>> w = table.set_index("term")["estimate"]
    >>> bool(w["a"] > w["b"]), bool(abs(w.sum() - fit.r2) < 1e-12)
    (True, True)
    """
    return _point_result(df, outcome, predictors, "relative_weights", "relative_weights")


def dominance_weights(df: pd.DataFrame, outcome: str, predictors: Sequence[str]) -> Result:
    """General dominance weights (Azen & Budescu 2003) by brute force over all subsets.

    Exact but exponential in the number of predictors (``2**p`` regressions);
    fine up to about 15 predictors.

    Parameters
    ----------
    df : DataFrame
        One row per respondent (or respondent-wave).
    outcome : str
        Outcome column.
    predictors : sequence of str
        Predictor columns.

    Returns
    -------
    Result
        ``table``: one row per predictor, ``estimate`` = general dominance
        weight (they sum to :math:`R^2`). ``fit``: :class:`DriversFit`.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    >>> d["y"] = d["a"] + rng.normal(size=200)
    >>> table, fit = dominance_weights(d, "y", ["a", "b"])
    >>> bool(abs(table["estimate"].sum() - fit.r2) < 1e-12)
    True
    """
    return _point_result(df, outcome, predictors, "dominance", "dominance_weights")


# --------------------------------------------------------------------------- public
def drivers(
    df: pd.DataFrame,
    outcome: str,
    predictors: Sequence[str],
    n_boot: int = 1000,
    seed: int | np.random.Generator | None = None,
    alpha: float = 0.05,
    method: str = "relative_weights",
    cluster: str | None = "employee_id",
    random_reference: bool = True,
) -> Result:
    r"""Relative importance of EX touchpoint aspects for an outcome.

    Decomposes the :math:`R^2` of the linear regression of ``outcome`` on
    ``predictors`` into one share per predictor (relative weights, or general
    dominance weights), gives each share both as a share of the outcome's
    variance and as a share of :math:`R^2`, reports :math:`R^2` itself and the
    standardized regression coefficients beside them, and tests each weight
    against the weight of a random reference variable.

    Parameters
    ----------
    df : DataFrame
        One row per respondent-wave (EX answers) or employee-period (linked panel).
    outcome : str
        Outcome column (e.g. ``"esat"``, linked ``"csat"`` or latent ``"ex"``).
    predictors : sequence of str
        Touchpoint aspect columns (e.g. ``tp_hiring`` ... ``tp_promotion``).
    n_boot : int
        Bootstrap replicates (0 = point estimates only, no intervals, no test).
    seed : int or numpy.random.Generator, optional
        The only source of randomness (the bootstrap draws and the random
        reference variable).
    alpha : float
        1 - confidence level of the intervals (and the test level of ``beats_random``).
    method : {"relative_weights", "dominance"}
        Johnson's relative weights (fast, any number of predictors) or exact
        general dominance weights (``2**p`` regressions per replicate; up to
        ~10 predictors with the bootstrap).
    cluster : str or None
        Column whose rows are resampled together (default ``"employee_id"``:
        one employee's answers in every wave form one cluster). ``None``
        resamples rows as if they were independent (only for one row per person).
    random_reference : bool
        Run the random-reference-variable test (Tonidandel, LeBreton & Johnson
        2009; needs ``n_boot > 0``).

    Returns
    -------
    Result
        ``table``, one row per predictor and ``measure``, then one ``r2`` row:

        ==================== ====================================================
        measure              ``estimate``
        ==================== ====================================================
        ``relative_weight``  raw weight = share of the outcome's variance the
                             touchpoint accounts for (0-1; sums to :math:`R^2`);
                             ``general_dominance`` with ``method="dominance"``
        ``pct_of_variance``  the same in % of the outcome's variance
        ``rescaled_weight``  % of :math:`R^2` (share of the *explained* variance;
                             sums to 100)
        ``std_beta``         standardized OLS coefficient; ``p`` from
                             cluster-robust SEs (t with G-1 df)
        ``r2``               (term ``"R2"``) :math:`R^2` of all touchpoints
        ==================== ====================================================

        Columns ``term, estimate, se`` (bootstrap SD), ``ci_low, ci_high``
        (percentile), ``p, n``, then ``measure``, ``unit`` (in words), ``rank``
        (1 = most important; by ``|beta|`` for ``std_beta``), and for the weight
        rows the random-reference test: ``diff_random`` (weight minus the random
        variable's weight in the augmented model, in the row's unit),
        ``diff_ci_low``, ``diff_ci_high`` and ``beats_random`` (True when the
        lower bound of the difference's interval is above 0).
        ``p`` is NaN for the weights (read the interval and ``beats_random``).

        ``fit``: :class:`DriversFit` (``r2``, ``r2_ci``, ``cluster``,
        ``n_clusters``, the random variable's own weight and interval, notes).

    Notes
    -----
    With :math:`R_{xx} = Q \Lambda Q^\top` the predictors' correlation matrix and
    :math:`r_{xy}` their correlations with the outcome, Johnson (2000) builds the
    orthogonal counterparts :math:`Z` of the predictors that are closest to them
    in least squares. :math:`L = R_{xx}^{1/2} = Q\Lambda^{1/2}Q^\top` holds
    :math:`\mathrm{corr}(X_j, Z_k)` and :math:`\beta^* = L^{-1} r_{xy}` the
    regression of :math:`y` on :math:`Z`, so

    .. math:: RW_j = \sum_k L_{jk}^2\, \beta^{*2}_k, \qquad \sum_j RW_j = R^2 .

    :math:`RW_j` is a share of the outcome's variance; :math:`100\,RW_j/R^2` the
    share of :math:`R^2`. A large share of a small :math:`R^2` is a small effect.

    *Cluster bootstrap.* Each replicate draws G clusters (employees) with
    replacement and keeps all their rows; the correlation matrix of the
    replicate is built from per-cluster sums and cross-products, so all
    replicates are computed as a batch. Intervals are percentile intervals.
    Rows of one employee (every wave) are not independent; resampling rows
    would make the intervals too narrow.

    *Random reference variable* (Tonidandel, LeBreton & Johnson 2009). A
    standard-normal variable, drawn once per row, is added to the predictors
    (as in their procedure and in the R package rwa); in every replicate the
    weights of the augmented model are computed and the difference
    :math:`RW_j - RW_{rand}` is recorded. A touchpoint "beats random" when the
    lower percentile bound of that difference is above 0. Relative weights
    are non-negative, so their own interval never includes 0; the test asks
    the right question: is this weight larger than what pure noise earns at
    this sample size? A weight can beat random without the touchpoint
    mattering causally: a touchpoint that is correlated with the important
    ones (team climate, a rater's halo) earns a share of :math:`R^2` through
    that correlation.

    General dominance weights (``method="dominance"``) average the increase in
    :math:`R^2` when predictor :math:`j` is added to each subset of the others,
    first within subset size, then over sizes. Relative weights approximate them
    closely (Johnson 2000; LeBreton et al. 2004).

    Checked against: general dominance weights computed by brute force over
    all subsets with statsmodels OLS; squared correlations for uncorrelated
    predictors; statsmodels OLS for :math:`R^2`, standardized betas and their
    cluster-robust p-values; a row-by-row cluster bootstrap written
    independently (same draws, same intervals); and the simulator's truth
    (true-zero touchpoints do not beat random, the strong ones do, on a study
    of 200 teams without halo) in ``tests/test_drivers.py``.

    References
    ----------
    Johnson, J. W. (2000). A heuristic method for estimating the relative weight of
    predictor variables in multiple regression. *Multivariate Behavioral Research*,
    35(1), 1-19.
    Azen, R., & Budescu, D. V. (2003). The dominance analysis approach for comparing
    predictors in multiple regression. *Psychological Methods*, 8(2), 129-148.
    Tonidandel, S., LeBreton, J. M., & Johnson, J. W. (2009). Determining the
    statistical significance of relative weights. *Psychological Methods*, 14(4),
    387-399.
    Field, C. A., & Welsh, A. H. (2007). Bootstrapping clustered data. *Journal of
    the Royal Statistical Society: Series B*, 69(3), 369-390.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> d = pd.DataFrame(rng.integers(1, 6, size=(600, 3)), columns=["tp_a", "tp_b", "tp_c"])
    >>> d["employee_id"] = np.repeat(np.arange(200), 3)  # three waves per employee
    >>> d["esat"] = 0.5 * d["tp_a"] + 0.2 * d["tp_b"] + rng.normal(size=600)
    >>> table, fit = drivers(d, "esat", ["tp_a", "tp_b", "tp_c"], n_boot=200, seed=1)
    >>> w = table.query("measure == 'rescaled_weight'").sort_values("rank")
    >>> w["term"].tolist(), w["beats_random"].tolist()
    (['tp_a', 'tp_b', 'tp_c'], [True, True, False])
    >>> fit.cluster, fit.n_clusters
    ('employee_id', 200)
    """
    func = "drivers"
    if method not in _METHODS:
        raise ValueError(f"{func}: unknown method {method!r}; use one of {list(_METHODS)}.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"{func}: n_boot must be an integer >= 0, got {n_boot!r}.")
    df = _check_frame(df, func)
    if cluster is not None:
        if cluster not in df.columns:
            raise ValueError(
                f"{func}: cluster column {cluster!r} not found in the data. Pass the column that "
                "identifies the person behind each row (rows of one person are resampled together), "
                "or cluster=None if every row is a different person."
            )
        if cluster in ([outcome] + list(predictors if not isinstance(predictors, str) else [predictors])):
            raise ValueError(f"{func}: cluster column {cluster!r} is also the outcome or a predictor.")
    sub, n_dropped, predictors = _prepare(df, outcome, predictors, func)
    n, p = len(sub), len(predictors)
    if cluster is not None:
        cl = df.loc[sub.index, cluster]
        if cl.isna().any():
            bad = int(cl.isna().sum())
            raise ValueError(
                f"{func}: cluster column {cluster!r} is missing in {bad} of the {n} complete rows; "
                "every row needs the id of its cluster (drop those rows or fill the id)."
            )
        codes = pd.factorize(cl, sort=False)[0]
    else:
        codes = np.arange(n)
    n_clusters = int(codes.max()) + 1
    core = _rw_batch if method == "relative_weights" else _dominance_batch
    first = "relative_weight" if method == "relative_weights" else "general_dominance"

    z = sub[[*predictors, outcome]].to_numpy(dtype=float)
    w, beta, r2 = _point(z, core)

    # p-values of the standardized betas: OLS with cluster-robust SEs (same t as the raw coefficients)
    zs = (z - z.mean(axis=0)) / z.std(axis=0, ddof=1)
    xd = sm.add_constant(zs[:, :-1], has_constant="add")
    if cluster is not None:
        ols = sm.OLS(zs[:, -1], xd).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
    else:
        ols = sm.OLS(zs[:, -1], xd).fit()
    p_beta = np.asarray(ols.pvalues)[1:]

    rng = np.random.default_rng(seed)
    do_random = bool(random_reference and n_boot)
    notes: list[str] = []
    boots = np.full((n_boot, 4, p), np.nan)  # weight, pct of variance, pct of R2, beta
    boot_r2 = np.full(n_boot, np.nan)
    diffs = np.full((n_boot, 3, p), np.nan)  # diff in raw, pct-of-variance and pct-of-R2 units
    boot_rand = np.full(n_boot, np.nan)
    diff_point = np.full((3, p), np.nan)
    rand_point = np.nan
    if n_boot:
        if do_random:
            rvar = rng.standard_normal(n)
            za = np.column_stack([z[:, :-1], rvar, z[:, -1]])
            wa, _, r2a = _point(za, core)
            diff_point = np.array([wa[:p] - wa[p], 100 * (wa[:p] - wa[p]), 100 * (wa[:p] - wa[p]) / r2a])
            rand_point = float(wa[p])
        else:
            za = z
        q = za.shape[1]
        # per-cluster moments: counts, sums, cross-products
        cnt = np.bincount(codes, minlength=n_clusters).astype(float)
        sums = np.zeros((n_clusters, q))
        np.add.at(sums, codes, za)
        cross = np.zeros((n_clusters, q * q))
        np.add.at(cross, codes, (za[:, :, None] * za[:, None, :]).reshape(n, q * q))
        chunk = int(max(1, min(_BOOT_CHUNK, 4_000_000 // n_clusters)))
        for start in range(0, n_boot, chunk):
            bsz = min(chunk, n_boot - start)
            draws = rng.integers(0, n_clusters, size=(bsz, n_clusters))
            m = np.stack([np.bincount(dr, minlength=n_clusters) for dr in draws]).astype(float)
            nb = m @ cnt
            rb = _corr_from_moments(nb, m @ sums, (m @ cross).reshape(bsz, q, q))
            ok = np.all(np.isfinite(rb), axis=(1, 2))
            if do_random:
                # weights of the touchpoints alone, and of the augmented model
                keep = [*range(p), q - 1]
                r_tp = rb[:, keep][:, :, keep]
            else:
                r_tp = rb
            # a singular replicate (a constant item among the resampled rows) is left out
            ok &= np.linalg.matrix_rank(np.where(ok[:, None, None], r_tp, np.eye(p + 1))) == p + 1
            if not ok.any():
                continue
            wb, bb, r2b = core(r_tp[ok])
            idx = np.arange(start, start + bsz)[ok]
            boots[idx] = np.stack([wb, 100 * wb, 100 * wb / r2b[:, None], bb], axis=1)
            boot_r2[idx] = r2b
            if do_random:
                wab, _, r2ab = core(rb[ok])
                d = wab[:, :p] - wab[:, [p]]
                diffs[idx] = np.stack([d, 100 * d, 100 * d / r2ab[:, None]], axis=1)
                boot_rand[idx] = wab[:, p]
    n_failed = int(n_boot - np.isfinite(boot_r2).sum())
    if n_failed:
        notes.append(
            f"{n_failed} of {n_boot} bootstrap replicates gave a singular correlation matrix "
            "(an item constant among the resampled rows) and were left out."
        )
    if cluster is not None and n_clusters < 30:
        notes.append(
            f"Only {n_clusters} clusters ({cluster}); cluster bootstrap intervals are unreliable "
            "with fewer than about 30 clusters."
        )
    if cluster is not None and n_clusters == n:
        notes.append(f"Every row is its own cluster ({cluster}): the bootstrap resamples rows.")

    lo_q, hi_q = 100 * alpha / 2, 100 * (1 - alpha / 2)

    def _ci(a: np.ndarray) -> tuple[float, float, float]:
        a = a[np.isfinite(a)]
        if len(a) < 2:
            return np.nan, np.nan, np.nan
        return float(a.std(ddof=1)), float(np.percentile(a, lo_q)), float(np.percentile(a, hi_q))

    point = [w, 100 * w, 100 * w / r2, beta]
    rows = []
    for m_i, measure in enumerate((first, "pct_of_variance", "rescaled_weight", "std_beta")):
        est = point[m_i]
        key = np.abs(est) if measure == "std_beta" else est
        rank = stats.rankdata(-key, method="min").astype(int)
        for j, term in enumerate(predictors):
            se, lo, hi = _ci(boots[:, m_i, j])
            row = {
                "term": term,
                "estimate": float(est[j]),
                "se": se,
                "ci_low": lo,
                "ci_high": hi,
                "p": float(p_beta[j]) if measure == "std_beta" else np.nan,
                "n": n,
                "measure": measure,
                "unit": UNITS[measure],
                "rank": int(rank[j]),
                "diff_random": np.nan,
                "diff_ci_low": np.nan,
                "diff_ci_high": np.nan,
                "beats_random": pd.NA,
            }
            if do_random and measure != "std_beta":
                _, dlo, dhi = _ci(diffs[:, m_i, j])
                row.update(
                    diff_random=float(diff_point[m_i, j]),
                    diff_ci_low=dlo,
                    diff_ci_high=dhi,
                    beats_random=bool(dlo > 0) if np.isfinite(dlo) else pd.NA,
                )
            rows.append(row)
    r2_se, r2_lo, r2_hi = _ci(boot_r2)
    rows.append(
        {
            "term": "R2",
            "estimate": r2,
            "se": r2_se,
            "ci_low": r2_lo,
            "ci_high": r2_hi,
            "p": np.nan,
            "n": n,
            "measure": "r2",
            "unit": UNITS["r2"],
            "rank": pd.NA,
            "diff_random": np.nan,
            "diff_ci_low": np.nan,
            "diff_ci_high": np.nan,
            "beats_random": pd.NA,
        }
    )
    table = pd.DataFrame(rows)
    table["rank"] = table["rank"].astype("Int64")
    table["beats_random"] = table["beats_random"].astype("boolean")
    _, rand_lo, rand_hi = _ci(boot_rand)
    label = "relative weights (Johnson 2000)" if method == "relative_weights" else "general dominance weights"
    how = (
        f"cluster bootstrap over {cluster} ({n_boot} replicates, percentile intervals)"
        if cluster is not None
        else f"row bootstrap ({n_boot} replicates, percentile intervals)"
    )
    if not n_boot:
        how = "point estimates, no resampling"
    fit = DriversFit(
        method=f"{label} of {outcome} on {p} predictors; {how}"
        + ("; random-reference-variable test (Tonidandel et al. 2009)" if do_random else ""),
        n_obs=n,
        n_dropped=n_dropped,
        cluster=cluster if n_boot else None,
        n_clusters=n_clusters if n_boot else None,
        alpha=alpha,
        notes=tuple(notes),
        outcome=outcome,
        predictors=tuple(predictors),
        importance=method,
        r2=r2,
        r2_ci=(r2_lo, r2_hi),
        r2_se=r2_se,
        n_boot=int(n_boot),
        n_boot_failed=n_failed,
        random_reference=do_random,
        random_weight=rand_point,
        random_weight_ci=(rand_lo, rand_hi),
    )
    return Result(table, fit)
