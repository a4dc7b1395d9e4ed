r"""Force pairs: which way does the effect run between EX and CX?

Two families of within-unit lagged estimators separate the directions
EX -> CX and CX -> EX from stable between-unit differences (a good manager, an
easy customer mix) that inflate naive correlations:

- :func:`cross_lagged` -- the random-intercept cross-lagged panel model
  (RI-CLPM; Hamaker, Kuiper & Grasman 2015) and, for comparison, the classic
  cross-lagged panel model (CLPM), both fitted by full-information maximum
  likelihood (FIML) so that units with missing waves are used, not dropped.
- :func:`within_effects` -- two-way (unit and period) fixed-effects regression
  of an outcome on the lagged predictor with unit-clustered standard errors
  (linearmodels ``PanelOLS``).

Both return tidy DataFrames (``term``, ``estimate``, ``se``, ``ci_low``,
``ci_high``, ``p``, ``n``) with fit details in ``df.attrs["fit"]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

__all__ = ["cross_lagged", "within_effects"]

_LOG2PI = math.log(2.0 * math.pi)
_CSTEP = 1e-20  # complex-step size: derivatives exact to machine precision


# --------------------------------------------------------------------------- input checks
def _check_panel(
    panel: object, func: str, unit: str, wave: str, values: Sequence[str], *, wave_integer: bool = False
) -> pd.DataFrame:
    """Validate a long panel; raise ValueError naming the column and the rule."""
    if not isinstance(panel, pd.DataFrame):
        raise ValueError(f"{func}: expected a pandas DataFrame, got {type(panel).__name__}.")
    needed = [unit, wave, *values]
    missing = [c for c in dict.fromkeys(needed) if c not in panel.columns]
    if missing:
        avail = ", ".join(map(str, list(panel.columns)[:20]))
        raise ValueError(
            f"{func}: column(s) {missing} not found in the data. Available columns: [{avail}]."
        )
    if len(set(needed)) != len(needed):
        raise ValueError(f"{func}: the unit, wave and variable columns must be distinct, got {needed}.")
    for col in [wave, *values]:
        s = panel[col]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            raise ValueError(
                f"{func}: column {col!r} is not numeric (dtype {s.dtype}). Convert it to numbers "
                "first (e.g. map Likert labels to 1-5, wave labels to 1, 2, 3, ...)."
            )
    for col in values:
        if panel[col].isna().all():
            raise ValueError(f"{func}: column {col!r} is entirely missing (all NaN).")
    if panel[unit].isna().any() or panel[wave].isna().any():
        raise ValueError(f"{func}: the unit column {unit!r} and wave column {wave!r} must not contain missing values.")
    if wave_integer:
        w = panel[wave].astype(float)
        if not np.all(np.isfinite(w)) or not np.all(w == np.round(w)):
            raise ValueError(
                f"{func}: column {wave!r} must hold integer period numbers (1, 2, 3, ...) so that "
                "consecutive periods can be recognised."
            )
    dup = panel.duplicated([unit, wave], keep=False)
    if dup.any():
        ex = panel.loc[dup, [unit, wave]].iloc[0]
        raise ValueError(
            f"{func}: {int(dup.sum())} rows share a duplicate ({unit!r}, {wave!r}) pair, e.g. "
            f"{unit}={ex[unit]!r}, {wave}={ex[wave]!r}. Each unit may have at most one row per "
            "wave: aggregate or de-duplicate first."
        )
    return panel


# --------------------------------------------------------------------------- model spec
@dataclass
class _Spec:
    """Parameter layout of a CLPM / RI-CLPM with T waves and q covariates."""

    T: int
    q: int
    ri: bool
    equal_lags: bool

    def __post_init__(self) -> None:
        T, q = self.T, self.q
        self.n_mu = 2 * T
        self.n_gamma = (2 * q) if self.ri else (2 * T * q)
        self.n_lagsets = 1 if self.equal_lags else T - 1
        self.n_blocks = 1 + (T - 1) + (1 if self.ri else 0)  # wave-1 within, residuals t=2..T, RI
        o = 0
        self.sl_mu = slice(o, o + self.n_mu); o += self.n_mu
        self.sl_gamma = slice(o, o + self.n_gamma); o += self.n_gamma
        self.sl_lags = slice(o, o + 4 * self.n_lagsets); o += 4 * self.n_lagsets
        self.sl_cov = slice(o, o + 3 * self.n_blocks); o += 3 * self.n_blocks
        self.n_par = o

    # log-Cholesky <-> raw (variance, covariance, variance) for each 2x2 block.
    # Optimising in log-Cholesky space keeps every covariance matrix positive
    # definite; SEs are computed in the raw (lavaan) parameterisation.
    def to_raw(self, phi: np.ndarray) -> np.ndarray:
        blocks = phi[..., self.sl_cov].reshape(*phi.shape[:-1], self.n_blocks, 3)
        l11, l21, l22 = blocks[..., 0], blocks[..., 1], blocks[..., 2]
        e1 = np.exp(l11)
        raw_b = np.stack([e1 * e1, l21 * e1, l21 * l21 + np.exp(2.0 * l22)], axis=-1)
        raw = phi.copy()
        raw[..., self.sl_cov] = raw_b.reshape(*phi.shape[:-1], 3 * self.n_blocks)
        return raw

    def to_phi(self, raw: np.ndarray) -> np.ndarray:
        b = raw[self.sl_cov].reshape(self.n_blocks, 3)
        s11 = np.maximum(b[:, 0], 1e-8)
        l21 = b[:, 1] / np.sqrt(s11)
        rest = np.maximum(b[:, 2] - l21**2, 1e-8)
        phi = raw.copy()
        phi[self.sl_cov] = np.stack([0.5 * np.log(s11), l21, 0.5 * np.log(rest)], axis=1).ravel()
        return phi

    def build(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model-implied covariance, mean-structure matrix and within covariance.

        ``raw`` has shape (K, n_par) (real or complex, for complex-step
        derivatives). Variables are ordered x_1..x_T, y_1..y_T. The mean of unit
        i is ``M @ [1, c_i]``. Returns Sigma (K, 2T, 2T), M (K, 2T, 1+q) and the
        within-component wave blocks Wb (K, T, T, 2, 2).
        """
        K, T, q = raw.shape[0], self.T, self.q
        dt = raw.dtype
        M = np.zeros((K, 2 * T, 1 + q), dtype=dt)
        M[:, :, 0] = raw[:, self.sl_mu]
        if q:
            g = raw[:, self.sl_gamma]
            if self.ri:
                g = g.reshape(K, 2, q)
                M[:, :T, 1:] = g[:, 0, None, :]
                M[:, T:, 1:] = g[:, 1, None, :]
            else:
                M[:, :, 1:] = g.reshape(K, 2 * T, q)
        lags = raw[:, self.sl_lags].reshape(K, self.n_lagsets, 2, 2)
        b = raw[:, self.sl_cov].reshape(K, self.n_blocks, 3)
        S = np.stack([np.stack([b[..., 0], b[..., 1]], -1), np.stack([b[..., 1], b[..., 2]], -1)], -2)
        Wb = np.zeros((K, T, T, 2, 2), dtype=dt)
        row = [S[:, 0]]
        Wb[:, 0, 0] = S[:, 0]
        for t in range(1, T):
            A = lags[:, 0 if self.equal_lags else t - 1]
            At = np.swapaxes(A, -1, -2)
            new = [A @ row[s] for s in range(t)]
            new.append(A @ row[t - 1] @ At + S[:, t])
            for s in range(t + 1):
                Wb[:, t, s] = new[s]
                if s < t:
                    Wb[:, s, t] = np.swapaxes(new[s], -1, -2)
            row = new
        Sig = Wb.transpose(0, 3, 1, 4, 2).reshape(K, 2 * T, 2 * T)
        if self.ri:
            Sig = Sig.reshape(K, 2, T, 2, T) + S[:, T][:, :, None, :, None]
            Sig = Sig.reshape(K, 2 * T, 2 * T)
        return Sig, M, Wb


@dataclass
class _Patterns:
    """Units grouped by missingness pattern with per-pattern cross-products."""

    obs: list[np.ndarray]  # observed variable indices
    ix: list[tuple[np.ndarray, np.ndarray]]  # np.ix_(obs, obs), cached
    Q: list[np.ndarray]  # sum over units of u u', u = [z_o, 1, c]
    n: np.ndarray  # units per pattern
    n_units: int


def _group_patterns(Z: np.ndarray, C: np.ndarray) -> _Patterns:
    mask = ~np.isnan(Z)
    keys, inv = np.unique(mask, axis=0, return_inverse=True)
    inv = inv.ravel()
    obs, Qs, ns = [], [], []
    V = np.column_stack([np.ones(len(Z)), C])
    for k, key in enumerate(keys):
        rows = inv == k
        o = np.flatnonzero(key)
        U = np.column_stack([Z[np.ix_(rows, o)], V[rows]])
        obs.append(o)
        Qs.append(U.T @ U)
        ns.append(int(rows.sum()))
    return _Patterns(obs, [np.ix_(o, o) for o in obs], Qs, np.asarray(ns), len(Z))


def _pattern_loglik(
    Sig: np.ndarray, M: np.ndarray, pats: _Patterns, want_grad: bool = True
) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """FIML log-likelihood summed over missingness patterns, and dLL/dSigma, dLL/dM.

    For pattern p with observed set o and residual r_i = z_io - M_o v_i,
    LL_p = -1/2 [n_p (k log 2pi + log|S_oo|) + tr(S_oo^-1 sum r r')], with
    sum r r' = D Q_p D', D = [I, -M_o].
    """
    ll = 0.0
    GS = np.zeros_like(Sig) if want_grad else None
    GM = np.zeros_like(M) if want_grad else None
    for o, ix, Q, n in zip(pats.obs, pats.ix, pats.Q, pats.n):
        k = len(o)
        So = Sig[ix]
        try:
            L = np.linalg.cholesky(So)
        except np.linalg.LinAlgError:
            return -np.inf, None, None
        D = np.concatenate([np.eye(k), -M[o]], axis=1)
        DQ = D @ Q
        R = DQ @ D.T
        Linv = np.linalg.inv(L)
        Sinv = Linv.T @ Linv
        logdet = 2.0 * np.log(np.diag(L)).sum()
        ll += -0.5 * (n * (k * _LOG2PI + logdet) + np.sum(Sinv * R))
        if want_grad:
            SR = Sinv @ R
            GS[ix] += -0.5 * (n * Sinv - SR @ Sinv)
            GM[o] += Sinv @ DQ[:, k:]
    return ll, GS, GM


class _Objective:
    """Negative FIML log-likelihood with complex-step (exact) parameter Jacobian."""

    def __init__(self, spec: _Spec, pats: _Patterns):
        self.spec = spec
        self.pats = pats
        self.eye = np.eye(spec.n_par)

    def __call__(self, theta: np.ndarray, space: str = "phi") -> tuple[float, np.ndarray]:
        Zc = theta[None, :] + 1j * _CSTEP * self.eye
        raw = self.spec.to_raw(Zc) if space == "phi" else Zc
        Sig, M, _ = self.spec.build(raw)
        ll, GS, GM = _pattern_loglik(Sig[0].real, M[0].real, self.pats)
        if not np.isfinite(ll):
            return 1e20, np.zeros_like(theta)
        JS = Sig.imag / _CSTEP
        JM = M.imag / _CSTEP
        grad = np.einsum("pij,ij->p", JS, GS) + np.einsum("pij,ij->p", JM, GM)
        return -ll, -grad


# --------------------------------------------------------------------------- saturated / baseline
def _saturated_em(
    Z: np.ndarray, C: np.ndarray, pats: _Patterns, tol: float = 1e-10, max_iter: int = 5000
) -> tuple[float, bool]:
    """FIML log-likelihood of the unrestricted model (free means / covariate slopes
    and free covariance) by the EM algorithm (Dempster, Laird & Rubin 1977)."""
    p = Z.shape[1]
    V = np.column_stack([np.ones(len(Z)), C])
    qv = V.shape[1]
    Svv = V.T @ V
    # start: available-case means and variances, no covariances
    M = np.zeros((p, qv))
    M[:, 0] = np.nanmean(Z, axis=0)
    Sig = np.diag(np.nanvar(Z, axis=0))
    prev = -np.inf
    converged = False
    for _ in range(max_iter):
        Szz = np.zeros((p, p))
        Szv = np.zeros((p, qv))
        ll = 0.0
        for o, Q, n in zip(pats.obs, pats.Q, pats.n):
            k = len(o)
            m = np.setdiff1d(np.arange(p), o)
            So = Sig[np.ix_(o, o)]
            L = np.linalg.cholesky(So)
            Linv = np.linalg.inv(L)
            Sinv = Linv.T @ Linv
            D = np.concatenate([np.eye(k), -M[o]], axis=1)
            R = D @ Q @ D.T
            ll += -0.5 * (n * (k * _LOG2PI + 2.0 * np.log(np.diag(L)).sum()) + np.sum(Sinv * R))
            P = np.zeros((p, k + qv))
            P[o, :k] = np.eye(k)
            if len(m):
                B = Sig[np.ix_(m, o)] @ Sinv
                P[m, :k] = B
                P[m, k:] = M[m] - B @ M[o]
            Szz += P @ Q @ P.T
            if len(m):
                Szz[np.ix_(m, m)] += n * (Sig[np.ix_(m, m)] - B @ Sig[np.ix_(o, m)])
            Szv += P @ Q[:, k:]
        if ll - prev < tol * max(1.0, abs(ll)) and np.isfinite(prev):
            converged = True
            break
        prev = ll
        M = np.linalg.solve(Svv, Szv.T).T
        Sig = (Szz - M @ Szv.T) / len(Z)
        Sig = 0.5 * (Sig + Sig.T)
    return ll, converged


def _baseline_loglik(Z: np.ndarray, C: np.ndarray) -> float:
    """Independence model: each variable its own mean (and covariate slopes) and
    variance, no covariances; FIML = per-variable ML on available cases."""
    V = np.column_stack([np.ones(len(Z)), C])
    ll = 0.0
    for j in range(Z.shape[1]):
        ok = ~np.isnan(Z[:, j])
        beta, *_ = np.linalg.lstsq(V[ok], Z[ok, j], rcond=None)
        res = Z[ok, j] - V[ok] @ beta
        s2 = float(res @ res) / ok.sum()
        ll += -0.5 * ok.sum() * (_LOG2PI + math.log(s2) + 1.0)
    return ll


# --------------------------------------------------------------------------- helpers
def _start_values(spec: _Spec, Z: np.ndarray) -> np.ndarray:
    T = spec.T
    raw = np.zeros(spec.n_par)
    raw[spec.sl_mu] = np.nanmean(Z, axis=0)
    var = np.nanvar(Z, axis=0)
    lag = 0.2 if spec.ri else 0.4
    raw[spec.sl_lags] = np.tile([lag, 0.0, 0.0, lag], spec.n_lagsets)
    w = 0.6 if spec.ri else 1.0
    blocks = [[w * var[0], 0.0, w * var[T]]]
    for t in range(1, T):
        r = 0.5 if spec.ri else 0.7
        blocks.append([r * var[t], 0.0, r * var[T + t]])
    if spec.ri:
        blocks.append([0.4 * var[:T].mean(), 0.1 * math.sqrt(var[:T].mean() * var[T:].mean()), 0.4 * var[T:].mean()])
    raw[spec.sl_cov] = np.asarray(blocks).ravel()
    return raw


def _numerical_hessian(fun, theta: np.ndarray, g0: np.ndarray) -> np.ndarray:
    """Forward differences of the exact (complex-step) gradient, symmetrised."""
    P = len(theta)
    H = np.empty((P, P))
    for i in range(P):
        h = 1e-6 * max(1.0, abs(theta[i]))
        tp = theta.copy()
        tp[i] += h
        H[:, i] = (fun(tp)[1] - g0) / h
    return 0.5 * (H + H.T)


def _wald(est: np.ndarray, se: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = stats.norm.ppf(1 - alpha / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 2 * stats.norm.sf(np.abs(est / se))
    return est - z * se, est + z * se, p


# --------------------------------------------------------------------------- cross_lagged
def cross_lagged(
    panel: pd.DataFrame,
    unit: str,
    wave: str,
    x: str,
    y: str,
    kind: str = "riclpm",
    covariates: Sequence[str] | None = None,
    equal_lags: bool = True,
    alpha: float = 0.05,
    *,
    fit_indices: bool = True,
) -> pd.DataFrame:
    r"""Random-intercept (RI-CLPM) or classic (CLPM) cross-lagged panel model by FIML.

    Parameters
    ----------
    panel : DataFrame
        Long panel, one row per unit-wave (rows with NaN values are allowed:
        missing waves are handled by full-information maximum likelihood).
    unit, wave : str
        Unit identifier (employee, team, site) and wave columns. Waves are
        taken in sorted order and assumed equally spaced.
    x, y : str
        The two numeric variables (e.g. ``"ex"`` and ``"cx"``).
    kind : {"riclpm", "clpm"}
        ``"riclpm"`` (default) separates stable between-unit differences
        (random intercepts) from within-unit dynamics; ``"clpm"`` is the
        classic model without random intercepts, shown for comparison only:
        it mixes between- and within-unit variance and is biased when units
        differ stably.
    covariates : list of str, optional
        Time-invariant numeric unit characteristics (constant within unit;
        units with a missing covariate are excluded with a warning). RI-CLPM:
        they predict the two random intercepts (reported as
        ``"{c}->RI_{x}"``, ``"{c}->RI_{y}"``). CLPM: they predict every
        observed variable with a wave-specific slope (controls; not reported).
    equal_lags : bool
        Constrain the four lagged effects to be equal across waves (default).
        With ``False`` each wave's lags are free and reported with a ``wave``
        column (the wave of the outcome).
    alpha : float
        Confidence intervals cover ``1 - alpha``.
    fit_indices : bool, keyword-only
        Fit the saturated and baseline models for chi-square, CFI and RMSEA
        (default). ``False`` skips them (faster; used by :func:`power`).

    Returns
    -------
    DataFrame
        One row per term: ``term``, ``estimate``, ``se``, ``ci_low``,
        ``ci_high``, ``p``, ``n`` (units used), ``std_estimate`` (and
        ``wave`` when ``equal_lags=False``). Terms: ``"{x}->{y}"``,
        ``"{y}->{x}"``, ``"{x}->{x}"``, ``"{y}->{y}"`` (within-unit lagged
        effects, unstandardized; for the CLPM, lagged effects between the
        observed scores), ``"corr(RI_{x},RI_{y})"`` (RI-CLPM only) and the
        covariate effects. ``df.attrs["fit"]`` is a dict with ``chi2``,
        ``df``, ``p_chi2``, ``cfi``, ``rmsea``, ``loglik``,
        ``loglik_saturated``, ``aic``, ``bic``, ``n_par``, ``n_units`` (units
        with any observed value, all used), ``n_obs`` (unit-wave rows with
        at least one observed value), ``n_cells`` (observed values),
        ``n_units_complete`` (units observed on both variables at every
        wave: what complete-case analysis would keep), ``n_patterns``,
        ``n_waves``, ``converged``, ``estimator`` ("FIML") and ``kind``.

    Notes
    -----
    Model (Hamaker et al. 2015; lavaan code of Mulder & Hamaker 2021). For unit
    :math:`i` and wave :math:`t`,

    .. math::

        x_{it} &= \mu_{xt} + RI^x_i + w^x_{it}, \qquad
        y_{it} = \mu_{yt} + RI^y_i + w^y_{it} \\
        w^x_{it} &= \alpha_{xx} w^x_{i,t-1} + \beta_{yx} w^y_{i,t-1} + u^x_{it} \\
        w^y_{it} &= \beta_{xy} w^x_{i,t-1} + \alpha_{yy} w^y_{i,t-1} + u^y_{it}

    with free wave means :math:`\mu` (saturated mean structure), free
    random-intercept variances and covariance, free wave-1 within variances and
    covariance, residuals :math:`(u^x_t, u^y_t)` correlated within wave with
    variances free per wave, and random intercepts uncorrelated with the wave-1
    within components. The CLPM fixes the random intercepts to zero.

    The model-implied covariance :math:`\Sigma(\theta)` and means are built
    from the parameters and the Gaussian log-likelihood is summed over the
    missingness patterns (FIML: every observed value of every unit is used;
    missing at random is assumed). It is maximised with L-BFGS-B over a
    log-Cholesky parameterisation of the 2x2 covariance blocks (always
    positive definite) with exact complex-step gradients; standard errors come
    from the inverse observed information (numerical Hessian of the analytic
    gradient) in the usual (variance/covariance) parameterisation, like
    lavaan's ``missing = "ml"`` default. The data are centred and scaled
    internally; estimates are returned in the original units.

    ``std_estimate`` divides a lag by the model-implied within-unit standard
    deviations, :math:`\beta_{xy}\,sd(w^x_{t-1})/sd(w^y_t)`; with equal lags
    these differ by wave and the reported value is their mean over waves
    2..T. The chi-square compares the model with the saturated model (free
    means and covariance fitted by FIML via EM), CFI uses the independence
    model, :math:`RMSEA = \sqrt{\max(\chi^2 - df, 0) / (df\,N)}` with
    :math:`N` the number of units.

    A warning is raised (and ``attrs["fit"]["converged"]`` is ``False``)
    when the optimiser does not converge or the information matrix is
    singular; the estimates are still returned so the reader can see them.

    Results have been tested against semopy 2.3.11 (which matches lavaan) on
    complete panels (``tests/test_direction.py``) and against the simulator's
    known truth on complete and incomplete panels.

    References
    ----------
    Hamaker, E. L., Kuiper, R. M., & Grasman, R. P. P. P. (2015). A critique
    of the cross-lagged panel model. *Psychological Methods*, 20(1), 102-116.

    Mulder, J. D., & Hamaker, E. L. (2021). Three extensions of the random
    intercept cross-lagged panel model. *Structural Equation Modeling*,
    28(4), 638-648.

    Enders, C. K., & Bandalos, D. L. (2001). The relative performance of full
    information maximum likelihood estimation for missing data in structural
    equation models. *Structural Equation Modeling*, 8(3), 430-457.

    Examples
    --------
    >>> from cxex_lab.simulate import simulate_panel
    >>> panel = simulate_panel(300, 4, seed=1, missing=0.1)
    >>> res = cross_lagged(panel, unit="unit", wave="wave", x="ex", y="cx")
    >>> list(res["term"])
    ['ex->cx', 'cx->ex', 'ex->ex', 'cx->cx', 'corr(RI_ex,RI_cx)']
    >>> res.attrs["fit"]["n_units"]
    300
    """
    func = "cross_lagged"
    if kind not in ("riclpm", "clpm"):
        raise ValueError(f"{func}: kind must be 'riclpm' or 'clpm', got {kind!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha!r}.")
    covariates = list(covariates or [])
    _check_panel(panel, func, unit, wave, [x, y, *covariates])
    ri = kind == "riclpm"
    waves = np.sort(panel[wave].unique())
    T = len(waves)
    min_t = 3 if ri else 2
    if T < min_t:
        raise ValueError(
            f"{func}: kind={kind!r} needs at least {min_t} waves in column {wave!r}, found {T}"
            + (" (the random intercepts are not identified with 2 waves; use kind='clpm' or more waves)." if ri else ".")
        )

    # ---- wide layout: rows = units, columns x_1..x_T, y_1..y_T
    df = panel[[unit, wave, x, y, *covariates]]
    wide = df.pivot(index=unit, columns=wave, values=[x, y]).reindex(columns=pd.MultiIndex.from_product([[x, y], waves]))
    Z = wide.to_numpy(dtype=float)
    units = wide.index
    C = np.empty((len(units), 0))
    n_dropped_cov = 0
    if covariates:
        g = df.groupby(unit)
        varies = [c for c in covariates if (g[c].nunique(dropna=True) > 1).any()]
        if varies:
            raise ValueError(
                f"{func}: covariate(s) {varies} vary within unit; covariates must be time-invariant "
                "unit characteristics (one value per unit)."
            )
        C = g[covariates].first().reindex(units).to_numpy(dtype=float)
        bad = np.isnan(C).any(axis=1)
        n_dropped_cov = int(bad.sum())
        if n_dropped_cov:
            warnings.warn(
                f"{func}: {n_dropped_cov} unit(s) have a missing covariate value and are excluded "
                "(FIML conditions on covariates, which must be observed).",
                UserWarning,
                stacklevel=2,
            )
            Z, C, units = Z[~bad], C[~bad], units[~bad]
    any_obs = ~np.all(np.isnan(Z), axis=1)
    Z, C = Z[any_obs], C[any_obs]
    n_units = len(Z)
    if n_units == 0:
        raise ValueError(f"{func}: no unit has an observed value of {x!r} or {y!r}.")
    for j in range(2 * T):
        if np.all(np.isnan(Z[:, j])):
            var, w = (x, y)[j // T], waves[j % T]
            raise ValueError(f"{func}: column {var!r} has no observed value at {wave}={w!r}; drop that wave.")
    wave_obs = ~(np.isnan(Z[:, :T]) & np.isnan(Z[:, T:]))
    n_waves_unit = wave_obs.sum(axis=1)
    if n_waves_unit.max() < 2:
        raise ValueError(
            f"{func}: every unit is observed in only one wave; lagged effects need units observed "
            "in at least two waves."
        )
    n_units_complete = int((~np.isnan(Z)).all(axis=1).sum())

    # ---- scale (optimisation is better conditioned on standardised variables)
    loc = np.array([np.nanmean(Z[:, :T]), np.nanmean(Z[:, T:])])
    sc = np.array([np.nanstd(Z[:, :T]), np.nanstd(Z[:, T:])])
    if np.any(sc == 0) or not np.all(np.isfinite(sc)):
        raise ValueError(f"{func}: {x!r} or {y!r} has no variation.")
    Zs = Z.copy()
    Zs[:, :T] = (Z[:, :T] - loc[0]) / sc[0]
    Zs[:, T:] = (Z[:, T:] - loc[1]) / sc[1]
    if covariates:
        csd = C.std(axis=0)
        if np.any(csd == 0):
            raise ValueError(f"{func}: a covariate has no variation across units: {[c for c, s in zip(covariates, csd) if s == 0]}.")
        Cs = (C - C.mean(axis=0)) / csd
    else:
        csd = np.empty(0)
        Cs = C

    spec = _Spec(T=T, q=len(covariates), ri=ri, equal_lags=equal_lags)
    pats = _group_patterns(Zs, Cs)
    obj = _Objective(spec, pats)

    # Why not semopy: semopy 2.3.11 fits the RI-CLPM correctly on complete
    # panels, but its FIML on incomplete panels was reported to give degenerate
    # estimates (autoregressions stuck at 1.0), in our own trial took ~6 s for
    # 800 units x 5 waves (far over budget for 2,000 x 6), and semopy's
    # ModelMeans (mean structure) has no FIML. So the FIML likelihood is
    # written here: per-pattern sufficient statistics make it O(patterns).
    raw0 = _start_values(spec, Zs)
    phi0 = spec.to_phi(raw0)
    N = float(n_units)

    def f_phi(phi: np.ndarray) -> tuple[float, np.ndarray]:
        v, g_ = obj(phi, "phi")
        return v / N, g_ / N

    res = optimize.minimize(
        f_phi, phi0, jac=True, method="L-BFGS-B",
        options={"maxiter": 5000, "maxfun": 10000, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 30},
    )
    raw_hat = spec.to_raw(res.x[None, :])[0]
    f_raw = lambda th: obj(th, "raw")  # noqa: E731
    nll, grad = f_raw(raw_hat)
    grad_ok = np.max(np.abs(grad / N)) < 1e-4
    converged = bool(res.success or grad_ok) and np.isfinite(nll) and nll < 1e19
    H = _numerical_hessian(f_raw, raw_hat, grad)
    try:
        evals = np.linalg.eigvalsh(H)
        info_ok = bool(evals.min() > 1e-8 * max(1.0, evals.max()))
        cov = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        info_ok = False
        cov = np.full_like(H, np.nan)
    if not converged:
        warnings.warn(
            f"{func}: the {kind} model did not converge ({res.message}); estimates and standard "
            "errors may be unreliable. Check the data (too few units or waves, near-zero variances).",
            RuntimeWarning,
            stacklevel=2,
        )
    elif not info_ok:
        warnings.warn(
            f"{func}: the information matrix of the {kind} model is singular or not positive "
            "definite; standard errors are unreliable (the model may be empirically "
            "under-identified, e.g. a random-intercept variance near zero).",
            RuntimeWarning,
            stacklevel=2,
        )
    se_raw = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))

    # ---- tidy table (rescale to original units)
    Sig, Mm, Wb = spec.build(raw_hat[None, :])
    Wb = Wb[0]
    lag_names = [(f"{x}->{x}", 0, 0), (f"{y}->{x}", 0, 1), (f"{x}->{y}", 1, 0), (f"{y}->{y}", 1, 1)]
    order = [f"{x}->{y}", f"{y}->{x}", f"{x}->{x}", f"{y}->{y}"]
    rows: list[dict[str, Any]] = []
    for ls in range(spec.n_lagsets):
        base = spec.sl_lags.start + 4 * ls
        recs = {}
        for j, (name, r, c) in enumerate(lag_names):
            # w^r_t = a w^c_{t-1}: original-unit coefficient scales by sd_r / sd_c
            f = sc[r] / sc[c]
            a = raw_hat[base + j]
            t_out = range(1, T) if equal_lags else [ls + 1]
            std = np.mean([a * math.sqrt(Wb[t - 1, t - 1, c, c]) / math.sqrt(Wb[t, t, r, r]) for t in t_out])
            recs[name] = {"term": name, "estimate": a * f, "se": se_raw[base + j] * f, "std_estimate": std}
            if not equal_lags:
                recs[name]["wave"] = waves[ls + 1]
        rows += [recs[nm] for nm in order]
    if ri:
        i0 = spec.sl_cov.start + 3 * (spec.n_blocks - 1)
        vx, cxy, vy = raw_hat[i0 : i0 + 3]
        r_ri = cxy / math.sqrt(vx * vy)
        gr = np.array([-0.5 * r_ri / vx, 1.0 / math.sqrt(vx * vy), -0.5 * r_ri / vy])
        V3 = cov[i0 : i0 + 3, i0 : i0 + 3]
        se_r = float(math.sqrt(gr @ V3 @ gr)) if np.all(np.isfinite(V3)) and gr @ V3 @ gr > 0 else np.nan
        rows.append({"term": f"corr(RI_{x},RI_{y})", "estimate": r_ri, "se": se_r, "std_estimate": r_ri})
        if covariates:
            for v_i, var in enumerate((x, y)):
                v_ri = raw_hat[i0 + (0 if v_i == 0 else 2)]
                for c_i, cname in enumerate(covariates):
                    k = spec.sl_gamma.start + v_i * spec.q + c_i
                    f = sc[v_i] / csd[c_i]
                    g_ = raw_hat[k]
                    # standardised: per SD of the covariate, in SDs of the total RI
                    sd_ri_total = math.sqrt(v_ri + g_**2)
                    rows.append({"term": f"{cname}->RI_{var}", "estimate": g_ * f, "se": se_raw[k] * f, "std_estimate": g_ / sd_ri_total})
    out = pd.DataFrame(rows)
    lo, hi, p = _wald(out["estimate"].to_numpy(float), out["se"].to_numpy(float), alpha)
    out["ci_low"], out["ci_high"], out["p"] = lo, hi, p
    out["n"] = n_units
    cols = ["term", "estimate", "se", "ci_low", "ci_high", "p", "n", "std_estimate"]
    if not equal_lags:
        cols.insert(1, "wave")
        if pd.api.types.is_integer_dtype(panel[wave]):
            out["wave"] = out["wave"].astype("Int64")
    out = out[cols]

    # ---- fit
    loglik = -nll  # includes the 2*pi constants
    # back to original units: the Jacobian of the scaling adds -sum(log sc) per observed value
    n_cells_x = int((~np.isnan(Z[:, :T])).sum())
    n_cells_y = int((~np.isnan(Z[:, T:])).sum())
    jac_adj = -(n_cells_x * math.log(sc[0]) + n_cells_y * math.log(sc[1]))
    loglik += jac_adj
    n_par = spec.n_par
    p_sat = 2 * T * (2 * T + 1) // 2 + 2 * T * (1 + spec.q)
    fit: dict[str, Any] = {
        "kind": kind,
        "estimator": "FIML",
        "loglik": float(loglik),
        "n_par": n_par,
        "aic": float(-2 * loglik + 2 * n_par),
        "bic": float(-2 * loglik + math.log(N) * n_par),
        "n_units": n_units,
        "n_obs": int(wave_obs.sum()),
        "n_cells": n_cells_x + n_cells_y,
        "n_units_complete": n_units_complete,
        "n_units_one_wave": int((n_waves_unit == 1).sum()),
        "n_units_dropped_missing_covariate": n_dropped_cov,
        "n_patterns": len(pats.n),
        "n_waves": T,
        "waves": [w.item() if hasattr(w, "item") else w for w in waves],
        "equal_lags": equal_lags,
        "converged": bool(converged),
        "information_ok": bool(info_ok),
        "optimizer_iterations": int(res.nit),
    }
    if fit_indices:
        ll_sat, em_ok = _saturated_em(Zs, Cs, pats)
        ll_sat += jac_adj
        ll_base = _baseline_loglik(Zs, Cs) + jac_adj
        df_m = p_sat - n_par
        df_b = p_sat - 2 * T * (1 + spec.q) - 2 * T
        chi2 = max(0.0, 2 * (ll_sat - loglik))
        chi2_b = max(0.0, 2 * (ll_sat - ll_base))
        d_m = max(chi2 - df_m, 0.0)
        denom = max(chi2_b - df_b, d_m)
        fit.update(
            {
                "chi2": float(chi2),
                "df": int(df_m),
                "p_chi2": float(stats.chi2.sf(chi2, df_m)) if df_m > 0 else float("nan"),
                "cfi": float(1.0 - d_m / denom) if denom > 0 else 1.0,
                "rmsea": float(math.sqrt(d_m / (df_m * N))) if df_m > 0 else 0.0,
                "loglik_saturated": float(ll_sat),
                "chi2_baseline": float(chi2_b),
                "df_baseline": int(df_b),
                "saturated_converged": bool(em_ok),
            }
        )
    out.attrs["fit"] = fit
    return out


# --------------------------------------------------------------------------- within_effects
def within_effects(
    panel: pd.DataFrame,
    unit: str,
    period: str,
    y: str,
    x: str,
    lags: int = 1,
    controls: Sequence[str] | None = None,
    alpha: float = 0.05,
    *,
    lagged_y: bool = False,
) -> pd.DataFrame:
    r"""Two-way fixed-effects regression of ``y`` on lagged ``x`` (unit-clustered SEs).

    Parameters
    ----------
    panel : DataFrame
        Long panel, one row per unit-period.
    unit, period : str
        Unit identifier and integer period columns. Lags are taken within unit
        on *consecutive* periods: the lag of period t is the unit's value at
        period t - k; if that row is absent (a gap) the lag is missing, never
        the previous available row.
    y, x : str
        Outcome and predictor columns (numeric).
    lags : int
        Include ``x`` lagged 1..``lags`` periods (default 1).
    controls : list of str, optional
        Contemporaneous time-varying controls (numeric columns).
    alpha : float
        Confidence intervals cover ``1 - alpha``.
    lagged_y : bool, keyword-only
        Also include ``y`` lagged one period. Off by default: with unit fixed
        effects and few periods the lagged outcome is biased (Nickell 1981;
        roughly :math:`-(1+\rho)/(T-1)` for autoregression :math:`\rho`).

    Returns
    -------
    DataFrame
        ``term``, ``lag``, ``estimate``, ``se``, ``ci_low``, ``ci_high``,
        ``p``, ``n`` (observations used). The lagged predictor's term is
        ``"{x}->{y}"`` (``lag`` says which lag); controls keep their names
        (lag 0); the lagged outcome is ``"{y}->{y}"``. ``df.attrs["fit"]``
        holds ``n_obs``, ``n_units``, ``n_periods``, ``n_rows_dropped`` (rows
        without a consecutive lag or with a missing value), ``r2_within``
        and ``cov_type``.

    Notes
    -----
    :math:`y_{it} = \alpha_i + \tau_t + \sum_{k=1}^{K} \beta_k x_{i,t-k} +
    \gamma' c_{it} + e_{it}`, estimated with linearmodels ``PanelOLS``
    (``entity_effects=True, time_effects=True``) and standard errors clustered
    by unit. Unit effects remove stable between-unit confounding; period effects
    remove shocks common to all units.

    The estimand differs from the RI-CLPM cross-lag when ``y`` (or ``x``) is
    autoregressive: without the lagged outcome, :math:`\beta_1` absorbs the
    path through :math:`y_{t-1}`; with it, Nickell bias enters. The two agree
    when there is no autoregression and no feedback (tested on simulated data).
    Within-unit (fixed-effects) estimators also carry a small-T bias when
    :math:`x` responds to past :math:`y` (feedback), of order :math:`1/T`.

    References
    ----------
    Allison, P. D. (2009). *Fixed Effects Regression Models*. SAGE.

    Nickell, S. (1981). Biases in dynamic models with fixed effects.
    *Econometrica*, 49(6), 1417-1426.

    Examples
    --------
    >>> from cxex_lab.simulate import simulate_panel
    >>> panel = simulate_panel(300, 5, seed=2)
    >>> res = within_effects(panel, unit="unit", period="wave", y="cx", x="ex")
    >>> res["term"].tolist()
    ['ex->cx']
    """
    from linearmodels.panel import PanelOLS

    func = "within_effects"
    controls = list(controls or [])
    if not isinstance(lags, (int, np.integer)) or lags < 1:
        raise ValueError(f"{func}: lags must be a positive integer, got {lags!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha!r}.")
    _check_panel(panel, func, unit, period, [y, x, *controls], wave_integer=True)
    df = panel[[unit, period, y, x, *controls]].copy()
    # pandas compares attrs when merging; a caller's attrs (e.g. a ledger DataFrame
    # from linkage) would make that comparison ambiguous, and are not needed here.
    df.attrs = {}
    df[period] = df[period].astype("int64")
    n_periods = df[period].nunique()
    if n_periods < lags + 2:
        raise ValueError(
            f"{func}: need at least {lags + 2} distinct periods in column {period!r} for {lags} lag(s) "
            f"with period effects, found {n_periods}."
        )
    names: list[tuple[str, str, int]] = []
    for k in range(1, lags + 1):
        lag = df[[unit, period, x]].assign(**{period: df[period] + k}).rename(columns={x: f"__x_l{k}"})
        df = df.merge(lag, on=[unit, period], how="left")
        names.append((f"__x_l{k}", f"{x}->{y}", k))
    if lagged_y:
        lag = df[[unit, period, y]].assign(**{period: df[period] + 1}).rename(columns={y: "__y_l1"})
        df = df.merge(lag, on=[unit, period], how="left")
        names.append(("__y_l1", f"{y}->{y}", 1))
    for c in controls:
        names.append((c, c, 0))
    regs = [n for n, _, _ in names]
    ok = df[[y, *regs]].notna().all(axis=1)
    used = df.loc[ok]
    if len(used) == 0:
        raise ValueError(f"{func}: no rows have {y!r} and a lagged {x!r} from the consecutive period.")
    n_units = used[unit].nunique()
    if n_units < 2:
        raise ValueError(f"{func}: need at least 2 units with usable rows, found {n_units}.")
    data = used.set_index([unit, period])
    mod = PanelOLS(data[y].astype(float), data[regs].astype(float), entity_effects=True, time_effects=True)
    fitres = mod.fit(cov_type="clustered", cluster_entity=True)
    if n_units < 30:
        warnings.warn(
            f"{func}: only {n_units} clusters (units); clustered standard errors are unreliable with "
            "fewer than about 30 clusters.",
            RuntimeWarning,
            stacklevel=2,
        )
    ci = fitres.conf_int(level=1 - alpha)
    out = pd.DataFrame(
        {
            "term": [t for _, t, _ in names],
            "lag": [k for _, _, k in names],
            "estimate": fitres.params[regs].to_numpy(),
            "se": fitres.std_errors[regs].to_numpy(),
            "ci_low": ci.loc[regs, "lower"].to_numpy(),
            "ci_high": ci.loc[regs, "upper"].to_numpy(),
            "p": fitres.pvalues[regs].to_numpy(),
            "n": int(fitres.nobs),
        }
    )
    out.attrs["fit"] = {
        "n_obs": int(fitres.nobs),
        "n_units": int(n_units),
        "n_periods": int(used[period].nunique()),
        "n_rows_dropped": int((~ok).sum()),
        "r2_within": float(fitres.rsquared_within),
        "cov_type": "clustered by unit",
        "estimator": "PanelOLS two-way fixed effects",
    }
    return out
