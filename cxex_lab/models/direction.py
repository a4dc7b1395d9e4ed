r"""Force pairs: which way does the effect run between EX and CX?

Three within-unit lagged estimators separate the directions EX -> CX and
CX -> EX from stable between-unit differences (a good manager, an easy customer
mix) that inflate naive correlations:

- :func:`cross_lagged` -- the random-intercept cross-lagged panel model
  (RI-CLPM; Hamaker, Kuiper & Grasman 2015) on one score per construct and
  wave, and, for comparison, the classic cross-lagged panel model (CLPM).
- :func:`cross_lagged_mi` -- the multiple-indicator RI-CLPM (Mulder & Hamaker
  2021): one factor per construct and wave measured by its items, so the lags
  are not attenuated by item-level measurement error;
  :func:`measurement_invariance` compares its configural, metric and scalar
  versions.
- :func:`within_effects` -- two-way (unit and period) fixed-effects regression
  of an outcome on the lagged predictor (linearmodels ``PanelOLS``).

The SEMs are fitted by full-information maximum likelihood (FIML; every
observed value of every unit is used, missing at random assumed) by the engine
in :mod:`cxex_lab.models._fiml`, with ML or robust (Huber-White sandwich,
MLR-type) standard errors, optionally clustered (e.g. employees in teams).

Every function returns a :class:`cxex_lab.results.Result` ``(table, fit)``:
``fit`` is a :class:`SEMFit` (SEMs) or :class:`FEFit` (fixed effects).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxex_lab.models import _fiml
from cxex_lab.models._fiml import Layout, within_cov
from cxex_lab.results import Fit, Result

__all__ = [
    "cross_lagged",
    "cross_lagged_mi",
    "measurement_invariance",
    "within_effects",
    "SEMFit",
    "FEFit",
]

_FEW_CLUSTERS = 30
_LAG_NAMES = ("{x}->{x}", "{y}->{x}", "{x}->{y}", "{y}->{y}")  # A[0,0], A[0,1], A[1,0], A[1,1]
_LAG_ORDER = ("{x}->{y}", "{y}->{x}", "{x}->{x}", "{y}->{y}")


# --------------------------------------------------------------------------- fit records
@dataclass(frozen=True, kw_only=True)
class SEMFit(Fit):
    """Fit record of a (multiple-indicator) RI-CLPM / CLPM fitted by FIML.

    Attributes
    ----------
    kind : str
        ``"riclpm"``, ``"clpm"`` or ``"mi-riclpm"``.
    se : str
        ``"ml"`` (inverse information) or ``"robust"`` (sandwich; clustered when
        ``cluster`` is not the unit column).
    information : str
        ``"observed"`` (numerical Hessian; valid under MAR) or ``"expected"``.
    loglik, n_par, aic, bic : float, int, float, float
        FIML log-likelihood (original units, constants included), number of
        free parameters, AIC and BIC (BIC with N = units).
    chi2, df, p_chi2, cfi, rmsea : float, int, float, float, float
        Likelihood-ratio test against the saturated model (free means,
        covariate slopes and covariances, by EM), CFI against the
        independence model, RMSEA with N = units. ``None`` with
        ``fit_indices=False``.
    loglik_saturated, chi2_baseline, df_baseline : float, float, int
        The pieces behind them.
    converged, information_ok : bool
        Optimiser converged; information matrix positive definite.
    n_units, n_units_complete, n_units_one_wave : int
        Units used (any observed value), units observed on every variable at
        every wave (what complete-case analysis would keep), units observed in
        one wave only (they inform means and variances, not lags).
    n_units_dropped : int
        Units left out because a time-invariant covariate or the cluster id is
        missing.
    n_cells, n_cells_dropped : int
        Observed values used; unit-wave values treated as missing because a
        time-varying covariate of that unit-wave was missing.
    n_patterns : int
        Missingness patterns.
    waves : tuple
        The waves, in order.
    equal_lags, equal_residuals : bool
        Lags / within-wave residual (co)variances constrained equal over waves.
    invariance, random_intercepts : str or None
        Multiple-indicator model only: ``"configural"``, ``"metric"`` or
        ``"scalar"``; ``"indicator"`` or ``"factor"``.
    items : tuple or None
        Multiple-indicator model: the x items, then the y items.
    optimizer_iterations : int
        L-BFGS-B iterations.
    saturated_converged : bool or None
        EM for the saturated model converged.
    """

    kind: str
    se: str
    information: str
    loglik: float
    n_par: int
    aic: float
    bic: float
    converged: bool
    information_ok: bool
    n_units: int
    n_units_complete: int
    n_units_one_wave: int
    n_units_dropped: int
    n_cells: int
    n_cells_dropped: int
    n_patterns: int
    waves: tuple
    equal_lags: bool
    equal_residuals: bool
    optimizer_iterations: int
    estimator: str = "FIML"
    chi2: float | None = None
    df: int | None = None
    p_chi2: float | None = None
    cfi: float | None = None
    rmsea: float | None = None
    loglik_saturated: float | None = None
    chi2_baseline: float | None = None
    df_baseline: int | None = None
    saturated_converged: bool | None = None
    invariance: str | None = None
    random_intercepts: str | None = None
    items: tuple | None = None


@dataclass(frozen=True, kw_only=True)
class FEFit(Fit):
    """Fit record of :func:`within_effects` (two-way fixed effects, PanelOLS).

    Attributes
    ----------
    n_units, n_periods : int
        Units and periods behind the estimates.
    r2_within : float
        Within R-squared.
    cov_type : str
        How the standard errors were computed, in words.
    """

    n_units: int
    n_periods: int
    r2_within: float
    cov_type: str


# --------------------------------------------------------------------------- input checks
def _py(v: Any) -> Any:
    """A numpy scalar as the Python value (readable in messages)."""
    return v.item() if hasattr(v, "item") else v


def _check_panel(
    panel: object, func: str, unit: str, wave: str, values: Sequence[str], *, wave_integer: bool = False,
    extra: Sequence[str] = (),
) -> pd.DataFrame:
    """Validate a long panel; raise ValueError naming the column and the rule."""
    if not isinstance(panel, pd.DataFrame):
        raise ValueError(f"{func}: expected a pandas DataFrame, got {type(panel).__name__}.")
    needed = [unit, wave, *values]
    missing = [c for c in dict.fromkeys([*needed, *extra]) if c not in panel.columns]
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
            f"{unit}={_py(ex[unit])!r}, {wave}={_py(ex[wave])!r}. Each unit may have at most one row per "
            "wave: aggregate or de-duplicate first."
        )
    return panel


def _check_options(func: str, alpha: float, se: str, information: str) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha!r}.")
    if se not in ("ml", "robust"):
        raise ValueError(f"{func}: se must be 'ml' or 'robust', got {se!r}.")
    if information not in ("observed", "expected"):
        raise ValueError(f"{func}: information must be 'observed' or 'expected', got {information!r}.")


def _cluster_of_units(panel: pd.DataFrame, unit: str, cluster: str, units: pd.Index, func: str) -> pd.Series:
    """The cluster id of each unit; it must be constant within unit."""
    sub = panel[[unit, cluster]]
    na = sub[cluster].isna()
    g = sub.loc[~na].groupby(unit)[cluster]
    n_distinct = g.nunique()
    bad = n_distinct[n_distinct > 1]
    if len(bad):
        u = bad.index[0]
        vals = sorted(map(str, sub.loc[sub[unit] == u, cluster].dropna().unique()))[:5]
        raise ValueError(
            f"{func}: the cluster column {cluster!r} must be constant within each {unit!r} (units nest in "
            f"clusters); {len(bad)} unit(s) have several values, e.g. {unit}={_py(u)!r} has {vals}. "
            "Assign each unit to one cluster (e.g. its team at wave 1)."
        )
    return g.first().reindex(units)


def _wide(panel: pd.DataFrame, unit: str, wave: str, cols: Sequence[str], waves: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """Units x (col, wave) array, column c*T + t."""
    wide = panel.pivot(index=unit, columns=wave, values=list(cols))
    wide = wide.reindex(columns=pd.MultiIndex.from_product([list(cols), waves]))
    return np.array(wide.to_numpy(dtype=float), copy=True), wide.index


# --------------------------------------------------------------------------- model specs
class _WithinPart:
    """Parameters of the bivariate within-unit VAR(1) shared by both specs."""

    def _add_within(self, L: Layout, T: int, equal_lags: bool, equal_resid: bool) -> None:
        self.T = T
        self.equal_lags = equal_lags
        self.equal_resid = equal_resid
        self.n_lagsets = 1 if equal_lags else T - 1
        self.sl_lags = L.add("lags", 4 * self.n_lagsets)
        self.sl_w1 = L.add_cov("wave1", 2)
        self.n_res = 1 if equal_resid else T - 1
        self.sl_res = [L.add_cov(f"resid{t}", 2) for t in range(self.n_res)]

    def _within(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        K = raw.shape[0]
        A = raw[:, self.sl_lags].reshape(K, self.n_lagsets, 2, 2)
        S1 = self.layout.cov_block(raw, self.sl_w1)
        Sr = np.stack([self.layout.cov_block(raw, s) for s in self.sl_res], axis=1)
        return within_cov(A, S1, Sr, self.T)

    def _within_start(self, raw: np.ndarray, lag: float, w1: float, res: float) -> None:
        raw[self.sl_lags] = np.tile([lag, 0.0, 0.0, lag], self.n_lagsets)
        raw[self.sl_w1] = [w1, 0.0, w1]
        for s in self.sl_res:
            raw[s] = [res, 0.0, res]


class _PanelSpec(_WithinPart):
    """RI-CLPM / CLPM on one score per construct and wave (variables x_1..x_T, y_1..y_T).

    Mean of unit i: ``M @ v_i`` with ``v_i = [1, c_i (q), cbar_i (qm), d_i1 (qt), ..., d_iT (qt)]``:
    time-invariant covariates c, unit means cbar of the time-varying covariates
    (RI-CLPM only) and the time-varying covariates d of every wave.
    """

    def __init__(self, T: int, ri: bool, equal_lags: bool, equal_resid: bool, q: int, qm: int, qt: int):
        self.ri, self.q, self.qm, self.qt = ri, q, qm, qt
        self.p = 2 * T
        self.qv = 1 + q + qm + T * qt
        L = self.layout = Layout()
        self.sl_mu = L.add("mean", 2 * T)
        self.sl_g = L.add("gamma", 2 * (q + qm) if ri else 2 * T * q)
        self.sl_tv = L.add("gamma_tv", 2 * qt)
        self._add_within(L, T, equal_lags, equal_resid)
        if ri:
            self.sl_ri = L.add_cov("ri", 2)
        L.finish()
        self.n_par = L.n

    def build(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        K, T, q, qm, qt = raw.shape[0], self.T, self.q, self.qm, self.qt
        M = np.zeros((K, 2 * T, self.qv), dtype=raw.dtype)
        M[:, :, 0] = raw[:, self.sl_mu]
        if self.ri and q + qm:
            g = raw[:, self.sl_g].reshape(K, 2, q + qm)
            M[:, :T, 1 : 1 + q + qm] = g[:, 0, None, :]
            M[:, T:, 1 : 1 + q + qm] = g[:, 1, None, :]
        elif q:
            M[:, :, 1 : 1 + q] = raw[:, self.sl_g].reshape(K, 2 * T, q)
        if qt:
            g = raw[:, self.sl_tv].reshape(K, 2, qt)
            base = 1 + q + qm
            for t in range(T):
                M[:, t, base + t * qt : base + (t + 1) * qt] = g[:, 0]
                M[:, T + t, base + t * qt : base + (t + 1) * qt] = g[:, 1]
        W, _ = self._within(raw)
        if self.ri:
            R = self.layout.cov_block(raw, self.sl_ri)
            W = (W.reshape(K, 2, T, 2, T) + R[:, :, None, :, None]).reshape(K, 2 * T, 2 * T)
        return W, M

    def start(self, Z: np.ndarray) -> np.ndarray:
        T = self.T
        raw = np.zeros(self.n_par)
        raw[self.sl_mu] = np.nanmean(Z, axis=0)
        if self.ri:
            self._within_start(raw, 0.2, 0.6, 0.5)
            raw[self.sl_ri] = [0.4, 0.1, 0.4]
        else:
            self._within_start(raw, 0.4, 1.0, 0.7)
        return raw


class _MISpec(_WithinPart):
    """Multiple-indicator RI-CLPM (Mulder & Hamaker 2021, extension 3).

    Observed variables: item j at wave t, index j*T + t (x items first).
    Within factors: construct c at wave t, index c*T + t.
    """

    def __init__(self, T: int, n_items: tuple[int, int], invariance: str, ri: str, equal_lags: bool, equal_resid: bool):
        self.n_items = n_items
        J = sum(n_items)
        self.J = J
        self.construct = np.array([0] * n_items[0] + [1] * n_items[1])
        self.marker = {0: 0, 1: n_items[0]}
        self.invariance = invariance
        self.ri = ri
        self.p = J * T
        self.qv = 1
        L = self.layout = Layout()
        if invariance == "scalar":
            self.sl_nu = L.add("intercept", J)
            self.sl_alpha = L.add("factor_mean", 2 * (T - 1))
        else:
            self.sl_nu = L.add("intercept", J * T)
        free = [j for j in range(J) if j not in self.marker.values()]
        self.free_items = free
        n_lam = len(free) * (T if invariance == "configural" else 1)
        self.sl_lam = L.add("loading", n_lam)
        self.sl_theta = [L.add_cov(f"theta{i}", 1) for i in range(J * T)]
        self._add_within(L, T, equal_lags, equal_resid)
        self.sl_ri = L.add_cov("ri", J if ri == "indicator" else 2)
        L.finish()
        self.n_par = L.n
        self.theta_idx = np.array([s.start for s in self.sl_theta])
        # loading matrix assembly: entries (row, col, source) where source indexes sl_lam or -1 (fixed 1)
        rows, cols, src = [], [], []
        for j in range(J):
            c = self.construct[j]
            for t in range(T):
                rows.append(j * T + t)
                cols.append(c * T + t)
                if j in self.marker.values():
                    src.append(-1)
                else:
                    k = free.index(j)
                    src.append(k * T + t if invariance == "configural" else k)
        self.lam_rows, self.lam_cols, self.lam_src = np.array(rows), np.array(cols), np.array(src)
        self.fac_of = np.empty(self.p, dtype=int)
        self.fac_of[self.lam_rows] = self.lam_cols
        self.item_of = np.repeat(np.arange(J), T)

    def loadings(self, raw: np.ndarray) -> np.ndarray:
        """(K, p) loading of each observed variable on its within factor."""
        lam = raw[:, self.sl_lam]
        out = np.ones((raw.shape[0], self.p), dtype=raw.dtype)
        fr = self.lam_src >= 0
        out[:, self.lam_rows[fr]] = lam[:, self.lam_src[fr]]
        return out

    def build(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        K, T, J = raw.shape[0], self.T, self.J
        lam = self.loadings(raw)
        W, _ = self._within(raw)
        R = self.layout.cov_block(raw, self.sl_ri)
        if self.ri == "factor":
            W = (W.reshape(K, 2, T, 2, T) + R[:, :, None, :, None]).reshape(K, 2 * T, 2 * T)
        # each item loads on one factor: (Lambda W Lambda')_ab = lam_a lam_b W[f(a), f(b)]
        Sig = lam[:, :, None] * lam[:, None, :] * W[:, self.fac_of[:, None], self.fac_of[None, :]]
        if self.ri == "indicator":
            Sig = Sig + R[:, self.item_of[:, None], self.item_of[None, :]]
        d = np.arange(self.p)
        Sig[:, d, d] += raw[:, self.theta_idx]
        M = np.zeros((K, self.p, 1), dtype=raw.dtype)
        if self.invariance == "scalar":
            nu = np.repeat(raw[:, self.sl_nu], T, axis=1)  # item j -> j*T + t
            alpha = np.zeros((K, 2, T), dtype=raw.dtype)
            alpha[:, :, 1:] = raw[:, self.sl_alpha].reshape(K, 2, T - 1)
            fac_mean = alpha.reshape(K, 2 * T)[:, self.lam_cols]  # per observed row (in row order)
            mean = nu.copy()
            mean[:, self.lam_rows] = nu[:, self.lam_rows] + lam[:, self.lam_rows] * fac_mean
            M[:, :, 0] = mean
        else:
            M[:, :, 0] = raw[:, self.sl_nu]
        return Sig, M

    def start(self, Z: np.ndarray) -> np.ndarray:
        T, J = self.T, self.J
        raw = np.zeros(self.n_par)
        mu = np.nanmean(Z, axis=0)
        if self.invariance == "scalar":
            raw[self.sl_nu] = mu.reshape(J, T).mean(axis=1)
        else:
            raw[self.sl_nu] = mu
        raw[self.sl_lam] = 1.0
        raw[self.theta_idx] = 0.3
        self._within_start(raw, 0.2, 0.3, 0.25)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(Z.reshape(len(Z), J, T), axis=2)  # unit means of each item
        if self.ri == "indicator":
            C = pd.DataFrame(means).cov().to_numpy()
            C = np.where(np.isfinite(C), C, 0.0) * 0.6
            C[np.diag_indices(J)] = np.maximum(np.diag(C), 0.05)
        else:
            mk = [self.marker[0], self.marker[1]]
            C = pd.DataFrame(means[:, mk]).cov().to_numpy() * 0.6
            C[np.diag_indices(2)] = np.maximum(np.diag(C), 0.05)
        r, c = np.tril_indices(len(C))
        raw[self.sl_ri] = C[r, c]
        return raw


# --------------------------------------------------------------------------- reporting helpers
@dataclass
class _Row:
    term: str
    component: str
    value: np.ndarray  # (K,) complex: f(raw + i h e_a)
    std: Any = None  # (K,) complex or float or None
    wave: Any = None
    fixed: bool = False


def _within_rows(spec: _WithinPart, raw: np.ndarray, x: str, y: str, sd: tuple[float, float], waves: np.ndarray) -> list[_Row]:
    """Lags, within-wave residual (co)variance and wave-1 covariance, in original units."""
    K, T = raw.shape[0], spec.T
    _, V = spec._within(raw)  # (K, T, 2, 2) per-wave within variance
    A = raw[:, spec.sl_lags].reshape(K, spec.n_lagsets, 2, 2)
    rows: list[_Row] = []
    names = [n.format(x=x, y=y) for n in _LAG_NAMES]
    order = [n.format(x=x, y=y) for n in _LAG_ORDER]
    for ls in range(spec.n_lagsets):
        t_out = range(1, T) if spec.equal_lags else [ls + 1]
        recs = {}
        for j, name in enumerate(names):
            r, c = divmod(j, 2)
            a = A[:, ls, r, c]
            std = sum(a * np.sqrt(V[:, t - 1, c, c]) / np.sqrt(V[:, t, r, r]) for t in t_out) / len(t_out)
            recs[name] = _Row(name, "lag", a * sd[r] / sd[c], std, None if spec.equal_lags else waves[ls + 1])
        rows += [recs[n] for n in order]
    # within-wave residual (innovation) covariance: the contemporaneous association
    covs, cors = [], []
    for b, s in enumerate(spec.sl_res):
        S = spec.layout.cov_block(raw, s)
        cov = S[:, 0, 1] * sd[0] * sd[1]
        cor = S[:, 0, 1] / np.sqrt(S[:, 0, 0] * S[:, 1, 1])
        covs.append(cov)
        cors.append(cor)
    if spec.n_res == 1:
        rows.append(_Row(f"resid_cov({x},{y})", "within-wave", covs[0], cors[0]))
        rows.append(_Row(f"resid_corr({x},{y})", "within-wave", cors[0], cors[0]))
    else:
        mc, mr = sum(covs) / len(covs), sum(cors) / len(cors)
        rows.append(_Row(f"resid_cov({x},{y})", "within-wave", mc, mr))
        rows.append(_Row(f"resid_corr({x},{y})", "within-wave", mr, mr))
        for b in range(spec.n_res):
            rows.append(_Row(f"resid_cov({x},{y})", "within-wave", covs[b], cors[b], waves[b + 1]))
            rows.append(_Row(f"resid_corr({x},{y})", "within-wave", cors[b], cors[b], waves[b + 1]))
    S1 = spec.layout.cov_block(raw, spec.sl_w1)
    c1 = S1[:, 0, 1] / np.sqrt(S1[:, 0, 0] * S1[:, 1, 1])
    rows.append(_Row(f"wave1_cov({x},{y})", "wave-1", S1[:, 0, 1] * sd[0] * sd[1], c1))
    rows.append(_Row(f"wave1_corr({x},{y})", "wave-1", c1, c1))
    return rows


def _interval(est: np.ndarray, se: np.ndarray, alpha: float, df: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wald interval and p-value: normal, or t with ``df`` (cluster-robust: G - 1)."""
    dist = stats.norm if df is None else stats.t(df)
    q = dist.ppf(1 - alpha / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 2 * dist.sf(np.abs(est / se))
    return est - q * se, est + q * se, p


def _table(rows: list[_Row], cov: np.ndarray, alpha: float, df: int | None, n: int) -> pd.DataFrame:
    recs = []
    for r in rows:
        v = np.asarray(r.value)
        est = float(v[0].real)
        g = v.imag / _fiml.CSTEP
        var = float(g @ cov @ g) if np.all(np.isfinite(cov)) else np.nan
        se = math.sqrt(var) if var > 0 and not r.fixed else np.nan
        std = r.std
        std = float(np.asarray(std)[0].real) if std is not None and np.ndim(std) else (np.nan if std is None else float(std))
        wave = r.wave.item() if hasattr(r.wave, "item") else r.wave
        recs.append({"term": r.term, "wave": wave, "component": r.component, "estimate": est, "se": se, "std_estimate": std})
    out = pd.DataFrame(recs)
    lo, hi, p = _interval(out["estimate"].to_numpy(float), out["se"].to_numpy(float), alpha, df)
    out["ci_low"], out["ci_high"], out["p"] = lo, hi, p
    out["n"] = n
    w = out["wave"]
    if w.notna().any() and pd.api.types.is_numeric_dtype(w) and np.all(w.dropna() == np.round(w.dropna())):
        out["wave"] = w.astype("Int64")
    return out[["term", "estimate", "se", "ci_low", "ci_high", "p", "n", "std_estimate", "wave", "component"]]


def _notes_and_warn(func: str, label: str, est: _fiml.Estimate, n_clusters: int | None, cluster: str | None, extra: list[str]) -> list[str]:
    notes = list(extra)
    if not est.converged:
        msg = (
            f"The {label} did not converge ({est.message}); estimates and standard errors may be "
            "unreliable. Check the data (too few units or waves, near-zero variances)."
        )
        notes.append(msg)
        warnings.warn(f"{func}: {msg}", RuntimeWarning, stacklevel=3)
    elif not est.info_ok:
        msg = (
            f"The information matrix of the {label} is singular or not positive definite; standard "
            "errors are unreliable (the model may be empirically under-identified, e.g. a "
            "random-intercept or residual variance near zero)."
        )
        notes.append(msg)
        warnings.warn(f"{func}: {msg}", RuntimeWarning, stacklevel=3)
    if n_clusters is not None and n_clusters < _FEW_CLUSTERS:
        msg = (
            f"Only {n_clusters} clusters ({cluster}): cluster-robust intervals are approximate with "
            f"fewer than about {_FEW_CLUSTERS} clusters (a t distribution with {n_clusters - 1} df and the "
            "G/(G-1) correction are used)."
        )
        notes.append(msg)
        warnings.warn(f"{func}: {msg}", RuntimeWarning, stacklevel=3)
    return notes


def _boundary_notes(spec: Any, raw: np.ndarray, labels: dict[str, str]) -> list[str]:
    """Notes for covariance blocks estimated outside the positive-definite cone.

    The Newton stage works in the raw (variance / covariance) space, like
    lavaan: an estimate may be a negative variance or a correlation beyond
    +-1 (a Heywood case), which is reported rather than hidden at a bound.
    """
    notes = []
    for name, sl in labels.items():
        C = spec.layout.cov_block(raw[None, :], sl)[0]
        if np.linalg.eigvalsh(C).min() <= 0:
            notes.append(
                f"The estimated {name} is not positive definite (a negative variance or a correlation "
                "beyond +-1): the model sits at the edge of what the data support (often a variance "
                "that is truly near zero); read the terms that depend on it with care."
            )
    return notes


def _missing_info_note(information: str, Z: np.ndarray) -> list[str]:
    if information == "expected" and np.isnan(Z).any():
        return ["information='expected' assumes values are missing completely at random; the default "
                "'observed' information is valid when they are missing at random."]
    return []


def _fit_indices(pats: _fiml.Patterns, loglik: float, jac_adj: float, n_par: int, N: float) -> dict[str, Any]:
    p, qv = pats.p, pats.qv
    p_sat = p * (p + 1) // 2 + p * qv
    ll_sat, em_ok = _fiml.saturated_em(pats)
    ll_sat += jac_adj
    ll_base = _fiml.baseline_loglik(pats) + jac_adj
    df_m = p_sat - n_par
    df_b = p_sat - p * qv - p
    chi2 = max(0.0, 2 * (ll_sat - loglik))
    chi2_b = max(0.0, 2 * (ll_sat - ll_base))
    d_m = max(chi2 - df_m, 0.0)
    denom = max(chi2_b - df_b, d_m)
    return {
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


def _cluster_setup(panel, unit, cluster, units, func) -> tuple[np.ndarray | None, np.ndarray, int | None]:
    """Cluster codes per unit (None without a cluster column), the units to keep, G."""
    if cluster is None or cluster == unit:
        return None, np.ones(len(units), bool), None
    cl = _cluster_of_units(panel, unit, cluster, units, func)
    keep = cl.notna().to_numpy()
    codes = pd.factorize(cl[keep])[0]
    G = int(codes.max()) + 1 if len(codes) else 0
    if G < 2:
        raise ValueError(f"{func}: the cluster column {cluster!r} has {G} distinct value(s); clustering needs at least 2.")
    return codes, keep, G


# --------------------------------------------------------------------------- cross_lagged
def _sem_record(*, label: str, kind: str, se: str, cluster: str | None, unit: str, clustered: bool,
                n_clusters: int | None, alpha: float, notes: list[str], information: str, loglik: float, spec: Any,
                N: int, est: Any, pats: Any, waves: Sequence[Any], equal_lags: bool, equal_residuals: bool,
                fit_indices: bool, jac_adj: Any, n_units: int, **counts: Any) -> "SEMFit":
    """The fit record of a FIML panel model (shared by :func:`cross_lagged` and :func:`cross_lagged_mi`):
    method, clustering, likelihood and information criteria, convergence and, with ``fit_indices``,
    chi-square, CFI and RMSEA against the saturated model; ``counts`` are the model's own row counts."""
    extra: dict[str, Any] = {}
    if fit_indices:
        extra = _fit_indices(pats, loglik, jac_adj, spec.n_par, N)
        if not extra["saturated_converged"]:
            notes.append("The EM fit of the saturated model did not converge: chi-square, CFI and RMSEA are approximate.")
    return SEMFit(
        method=f"{label} by FIML ({'robust sandwich' if se == 'robust' else 'ML'} standard errors"
        + (f", clustered by {cluster}" if clustered else "") + ")",
        cluster=cluster if clustered else unit,
        n_clusters=n_clusters if clustered else n_units,
        alpha=alpha,
        notes=tuple(notes),
        kind=kind,
        se=se,
        information=information,
        loglik=float(loglik),
        n_par=spec.n_par,
        aic=float(-2 * loglik + 2 * spec.n_par),
        bic=float(-2 * loglik + math.log(N) * spec.n_par),
        converged=bool(est.converged),
        information_ok=bool(est.info_ok),
        n_units=n_units,
        n_patterns=pats.n_patterns,
        waves=tuple(w.item() if hasattr(w, "item") else w for w in waves),
        equal_lags=equal_lags,
        equal_residuals=equal_residuals,
        optimizer_iterations=est.n_iter,
        **counts,
        **extra,
    )


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
    time_varying: Sequence[str] | None = None,
    equal_residuals: bool = False,
    se: str = "robust",
    cluster: str | None = None,
    information: str = "observed",
    fit_indices: bool = True,
) -> Result:
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
        The two numeric variables (e.g. ``"esat"`` and ``"csat"``).
    kind : {"riclpm", "clpm"}
        ``"riclpm"`` (default) separates stable between-unit differences
        (random intercepts) from within-unit dynamics; ``"clpm"`` is the
        classic model without random intercepts, shown for comparison only:
        it mixes between- and within-unit variance and is biased when units
        differ stably.
    covariates : list of str, optional
        Time-invariant numeric unit characteristics (constant within unit;
        units with a missing value are excluded and counted in
        ``fit.n_units_dropped``). RI-CLPM: they predict the two random
        intercepts (terms ``"{c}->RI_{x}"``, ``"{c}->RI_{y}"``). CLPM: they
        predict every observed variable with a wave-specific slope (controls;
        not reported).
    equal_lags : bool
        Constrain the four lagged effects to be equal across waves (default).
        With ``False`` each wave's lags are free and reported with their
        ``wave`` (the wave of the outcome).
    alpha : float
        Intervals cover ``1 - alpha``.
    time_varying : list of str, keyword-only, optional
        Covariates observed per unit-wave (tenure, workload). Each enters
        :math:`x_t` and :math:`y_t` of the same wave with one slope per
        outcome, equal over waves (terms ``"{c}->{x}"``, ``"{c}->{y}"``).
        In the RI-CLPM the unit's mean of the covariate also predicts the
        random intercepts (``"mean({c})->RI_{x}"``; Mundlak 1978), so the
        slopes use within-unit variation only. A unit-wave whose covariate
        value is missing has its ``x`` and ``y`` of that wave treated as
        missing (FIML conditions on covariates); the unit's other waves are
        still used, and the values set aside are counted in
        ``fit.n_cells_dropped`` and in a note.
    equal_residuals : bool, keyword-only
        Constrain the within-wave residual (innovation) variances and
        covariance of waves 2..T to be equal over waves. Default ``False``
        (free per wave, as in Hamaker et al. 2015 and the lavaan code of
        Mulder & Hamaker 2021): the lags do not need the constraint, and
        measurement noise that changes over waves (response rates, number of
        CX answers behind a mean) would make it misfit. With ``False`` the
        table gives each wave's residual covariance and correlation and, as
        the headline row (``wave`` missing), their mean over waves 2..T with
        a delta-method interval; with ``True`` the headline row is the one
        common value. Compare the two with a likelihood-ratio test.
    se : {"robust", "ml"}, keyword-only
        ``"robust"`` (default): Huber-White sandwich :math:`H^{-1} B H^{-1}`
        from the per-unit FIML scores (MLR-type; valid for non-normal data
        such as Likert means); ``"ml"``: inverse information.
    cluster : str, keyword-only, optional
        Column holding a cluster id constant within unit (e.g. ``"team_id"``).
        With ``se="robust"`` the scores are summed within clusters, multiplied
        by :math:`G/(G-1)`, and intervals and p-values use a t distribution
        with :math:`G-1` df. Default: units are independent (``fit.cluster``
        is the unit column). Units with a missing cluster id are dropped and
        counted.
    information : {"observed", "expected"}, keyword-only
        The information matrix :math:`H`: observed (numerical Hessian of the
        exact gradient; valid under MAR, lavaan's default with
        ``missing="ml"``) or expected (per-pattern Fisher information).
    fit_indices : bool, keyword-only
        Fit the saturated and baseline models for chi-square, CFI and RMSEA
        (default). ``False`` skips them (faster; used by :func:`power`).

    Returns
    -------
    Result
        ``table``: one row per term with ``term, estimate, se, ci_low,
        ci_high, p, n`` (units), ``std_estimate``, ``wave`` (missing for
        terms that hold over all waves) and ``component``:

        * ``"lag"``: ``"{x}->{y}"``, ``"{y}->{x}"``, ``"{x}->{x}"``,
          ``"{y}->{y}"``, the within-unit lagged effects (original units;
          for the CLPM, lagged effects between the observed scores);
          ``std_estimate`` divides by the model-implied within-unit SDs;
        * ``"within-wave"``: ``"resid_cov({x},{y})"`` and
          ``"resid_corr({x},{y})"``, the covariance and correlation of the
          within-wave residuals (innovations) of waves 2..T: the
          contemporaneous association of x and y within unit beyond what the
          lags carry (e.g. EX and CX moving together inside a quarter);
        * ``"wave-1"``: ``"wave1_cov({x},{y})"``, ``"wave1_corr({x},{y})"``,
          the within-unit covariance at wave 1 (not an innovation: it holds
          the history before the panel, hence kept apart);
        * ``"between"``: ``"corr(RI_{x},RI_{y})"`` (RI-CLPM), the correlation
          of the stable unit levels;
        * ``"covariate"``: covariate effects.

        ``fit``: a :class:`SEMFit`.

    Notes
    -----
    Model (Hamaker et al. 2015; lavaan code of Mulder & Hamaker 2021). For unit
    :math:`i` and wave :math:`t`,

    .. math::

        x_{it} &= \mu_{xt} + \gamma_x d_{it} + RI^x_i + w^x_{it}, \qquad
        y_{it} = \mu_{yt} + \gamma_y d_{it} + RI^y_i + w^y_{it} \\
        w^x_{it} &= \alpha_{xx} w^x_{i,t-1} + \beta_{yx} w^y_{i,t-1} + u^x_{it} \\
        w^y_{it} &= \beta_{xy} w^x_{i,t-1} + \alpha_{yy} w^y_{i,t-1} + u^y_{it}

    with free wave means :math:`\mu`, time-varying covariates :math:`d`,
    free random-intercept variances and covariance (which time-invariant
    covariates and :math:`\bar d_i` predict), free wave-1 within variances and
    covariance, residuals :math:`(u^x_t, u^y_t)` correlated within wave
    (:math:`\psi_{xy,t}`: the ``resid_cov`` term), and random intercepts
    uncorrelated with the wave-1 within components. The CLPM fixes the random
    intercepts to zero.

    The Gaussian log-likelihood is summed over missingness patterns (FIML)
    and maximised with L-BFGS-B over a log-Cholesky parameterisation of the
    2x2 covariance blocks, with exact complex-step gradients. Standard errors
    are computed in the variance / covariance parameterisation; those of
    derived terms (correlations, original-unit rescaling, means over waves)
    by the delta method with complex-step gradients. Robust standard errors:
    :math:`H^{-1} B H^{-1}` with :math:`B = \sum_i s_i s_i'` (per-unit scores
    of the FIML log-likelihood, computed per missingness pattern) or, with
    ``cluster``, :math:`B = \frac{G}{G-1} \sum_g s_g s_g'`,
    :math:`s_g = \sum_{i \in g} s_i`.

    Fit indices: chi-square against the saturated model (free means,
    covariate slopes and covariance by EM), CFI against the independence
    model, :math:`RMSEA = \sqrt{\max(\chi^2 - df, 0) / (df\,N)}`, N = units.
    Non-convergence, a singular information matrix and few clusters are
    written to ``fit.notes`` (and warned).

    Checked against: semopy 2.3.11 on complete panels (estimates to about
    1e-5, ML standard errors, and robust standard errors against semopy's
    ``inspect(se_robust=True)`` with expected information;
    ``tests/test_direction.py``), the simulator's known lags on complete and
    incomplete panels, and coverage of the team-clustered intervals in a
    simulation where units share team shocks.

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

    Mundlak, Y. (1978). On the pooling of time series and cross section data.
    *Econometrica*, 46(1), 69-85.

    White, H. (1982). Maximum likelihood estimation of misspecified models.
    *Econometrica*, 50(1), 1-25.

    Examples
    --------
    >>> from cxex_lab.simulate import simulate_panel
    >>> panel = simulate_panel(300, 4, seed=1, missing=0.1)
    >>> table, fit = cross_lagged(panel, unit="unit", wave="wave", x="ex", y="cx")
    >>> list(table.loc[table["component"] == "lag", "term"])
    ['ex->cx', 'cx->ex', 'ex->ex', 'cx->cx']
    >>> fit.n_units, fit.se
    (300, 'robust')
    """
    func = "cross_lagged"
    if kind not in ("riclpm", "clpm"):
        raise ValueError(f"{func}: kind must be 'riclpm' or 'clpm', got {kind!r}.")
    _check_options(func, alpha, se, information)
    covariates = list(covariates or [])
    time_varying = list(time_varying or [])
    overlap = set(covariates) & set(time_varying)
    if overlap:
        raise ValueError(f"{func}: column(s) {sorted(overlap)} are given as both covariates and time_varying.")
    _check_panel(panel, func, unit, wave, [x, y, *covariates, *time_varying], extra=[cluster] if cluster else [])
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
    df = panel[[unit, wave, x, y, *covariates, *time_varying]]
    Z, units = _wide(df, unit, wave, [x, y], waves)
    n_rows_with_data = int((~(np.isnan(Z[:, :T]) & np.isnan(Z[:, T:]))).sum())
    notes: list[str] = []
    n_units_dropped = 0
    keep = np.ones(len(units), bool)
    C = np.empty((len(units), 0))
    if covariates:
        g = df.groupby(unit)
        varies = [c for c in covariates if (g[c].nunique(dropna=True) > 1).any()]
        if varies:
            raise ValueError(
                f"{func}: covariate(s) {varies} vary within unit; covariates must be time-invariant "
                "unit characteristics (one value per unit). Pass covariates that change over waves "
                "as time_varying=[...]."
            )
        C = g[covariates].first().reindex(units).to_numpy(dtype=float)
        bad = np.isnan(C).any(axis=1) & ~np.all(np.isnan(Z), axis=1)
        if bad.any():
            msg = (
                f"{int(bad.sum())} unit(s) have a missing value of a time-invariant covariate "
                f"({', '.join(covariates)}) and are left out (FIML conditions on covariates, which must be observed)."
            )
            notes.append(msg)
            warnings.warn(f"{func}: {msg}", UserWarning, stacklevel=2)
        keep &= ~np.isnan(C).any(axis=1)
    n_cells_dropped = 0
    D = np.empty((len(units), 0))
    Dm = np.empty((len(units), 0))
    if time_varying:
        Dw, _ = _wide(df, unit, wave, time_varying, waves)  # (N, qt*T), column c*T + t
        qt = len(time_varying)
        D3 = Dw.reshape(len(units), qt, T)
        miss = np.isnan(D3).any(axis=1)  # (N, T): covariate missing at wave t
        had = ~np.isnan(Z[:, :T]) | ~np.isnan(Z[:, T:])
        lost = miss & had
        n_cells_dropped = int(lost.sum())
        if n_cells_dropped:
            msg = (
                f"{n_cells_dropped} unit-wave(s) with an observed {x!r} or {y!r} have a missing value of a "
                f"time-varying covariate ({', '.join(time_varying)}); their {x!r} and {y!r} of that wave are "
                "treated as missing (the units' other waves are used)."
            )
            notes.append(msg)
            warnings.warn(f"{func}: {msg}", UserWarning, stacklevel=2)
        Z[:, :T][miss] = np.nan
        Z[:, T:][miss] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            Dm = np.nanmean(D3, axis=2)  # (N, qt) unit mean over observed waves
        D = np.where(np.isnan(D3), np.nan, D3).transpose(0, 2, 1).reshape(len(units), T * qt)  # wave-major
    codes, keep_cl, G = _cluster_setup(panel, unit, cluster, units, func)
    if codes is not None:
        n_nocl = int((~keep_cl & keep & ~np.all(np.isnan(Z), axis=1)).sum())
        if n_nocl:
            notes.append(f"{n_nocl} unit(s) have no value in the cluster column {cluster!r} and are left out.")
        # codes index the units with a cluster id; align with `keep`
        full_codes = np.full(len(units), -1)
        full_codes[keep_cl] = codes
        keep &= keep_cl
    any_obs = ~np.all(np.isnan(Z), axis=1)
    n_units_dropped = int((~keep & any_obs).sum())
    sel = keep & any_obs
    Z, C, D, Dm = Z[sel], C[sel], D[sel], Dm[sel]
    if codes is not None:
        codes = pd.factorize(full_codes[sel])[0]
        G = int(codes.max()) + 1
        if G < 2:
            raise ValueError(f"{func}: the units used fall into {G} cluster(s) of {cluster!r}; clustering needs at least 2.")
    n_units = len(Z)
    if n_units == 0:
        raise ValueError(f"{func}: no unit has an observed value of {x!r} or {y!r}.")
    for j in range(2 * T):
        if np.all(np.isnan(Z[:, j])):
            var, w = (x, y)[j // T], waves[j % T]
            raise ValueError(f"{func}: column {var!r} has no observed value at {wave}={_py(w)!r}; drop that wave.")
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
    parts, csd = [], []
    if covariates:
        s = C.std(axis=0)
        if np.any(s == 0):
            raise ValueError(f"{func}: a covariate has no variation across units: {[c for c, v in zip(covariates, s) if v == 0]}.")
        parts.append((C - C.mean(axis=0)) / s)
        csd += list(s)
    qm = 0
    tsd = np.empty(0)
    if time_varying:
        qt = len(time_varying)
        D3 = D.reshape(n_units, T, qt)
        tmu = np.nanmean(D3.reshape(-1, qt), axis=0)
        tsd = np.nanstd(D3.reshape(-1, qt), axis=0)
        if np.any(tsd == 0):
            raise ValueError(f"{func}: a time-varying covariate has no variation: {[c for c, v in zip(time_varying, tsd) if v == 0]}.")
        if ri:
            qm = qt
            parts.append((Dm - tmu) / tsd)
            csd += list(tsd)
        parts.append(np.nan_to_num((D3 - tmu) / tsd).reshape(n_units, T * qt))
    Cs = np.column_stack(parts) if parts else np.empty((n_units, 0))
    csd = np.asarray(csd)

    spec = _PanelSpec(T, ri, equal_lags, equal_residuals, len(covariates), qm, len(time_varying))
    pats = _fiml.group_patterns(Zs, Cs)
    est = _fiml.fit(spec, pats, spec.start(Zs), se=se, information=information, cluster_codes=codes)

    # ---- table (original units)
    Zc = est.raw[None, :] + 1j * _fiml.CSTEP * np.eye(spec.n_par)
    rows = _within_rows(spec, Zc, x, y, (sc[0], sc[1]), waves)
    if ri:
        R = spec.layout.cov_block(Zc, spec.sl_ri)
        r_ri = R[:, 0, 1] / np.sqrt(R[:, 0, 0] * R[:, 1, 1])
        rows.append(_Row(f"corr(RI_{x},RI_{y})", "between", r_ri, r_ri))
        names = [f"{c}->RI_{{v}}" for c in covariates] + [f"mean({c})->RI_{{v}}" for c in time_varying[:qm]]
        if names:
            g = Zc[:, spec.sl_g].reshape(-1, 2, len(names))
            for v_i, var in enumerate((x, y)):
                v_ri = R[:, v_i, v_i]
                for c_i, nm in enumerate(names):
                    gg = g[:, v_i, c_i]
                    rows.append(_Row(nm.format(v=var), "covariate", gg * sc[v_i] / csd[c_i], gg / np.sqrt(v_ri + gg**2)))
    if time_varying:
        g = Zc[:, spec.sl_tv].reshape(-1, 2, len(time_varying))
        for v_i, var in enumerate((x, y)):
            for c_i, c in enumerate(time_varying):
                gg = g[:, v_i, c_i]
                rows.append(_Row(f"{c}->{var}", "covariate", gg * sc[v_i] / tsd[c_i], gg))
    df_t = (G - 1) if (codes is not None and se == "robust") else None
    table = _table(rows, est.cov, alpha, df_t, n_units)

    # ---- fit record
    n_cells_x = int((~np.isnan(Z[:, :T])).sum())
    n_cells_y = int((~np.isnan(Z[:, T:])).sum())
    jac_adj = -(n_cells_x * math.log(sc[0]) + n_cells_y * math.log(sc[1]))
    loglik = -est.nll + jac_adj
    N = float(n_units)
    label = {"riclpm": "RI-CLPM", "clpm": "CLPM"}[kind]
    if se == "ml":
        if cluster and cluster != unit:
            notes.append(f"se='ml' ignores cluster={cluster!r}: use se='robust' for cluster-robust intervals.")
    blocks = {"wave-1 within covariance": spec.sl_w1}
    blocks.update({f"within-wave residual covariance{'' if spec.n_res == 1 else f' of wave {_py(waves[b + 1])}'}": s_
                   for b, s_ in enumerate(spec.sl_res)})
    if ri:
        blocks["random-intercept covariance"] = spec.sl_ri
    notes += _boundary_notes(spec, est.raw, blocks) + _missing_info_note(information, Z)
    notes = _notes_and_warn(func, label, est, G if (codes is not None and se == "robust") else None, cluster, notes)
    clustered = codes is not None and se == "robust"
    fit = _sem_record(
        label=label, kind=kind, se=se, cluster=cluster, unit=unit, clustered=clustered, n_clusters=G,
        alpha=alpha, notes=notes, information=information, loglik=loglik, spec=spec, N=N, est=est, pats=pats,
        waves=waves, equal_lags=equal_lags, equal_residuals=equal_residuals, fit_indices=fit_indices,
        jac_adj=jac_adj,
        n_obs=int(wave_obs.sum()),
        n_dropped=n_rows_with_data - int(wave_obs.sum()),
        n_units=n_units,
        n_units_complete=n_units_complete,
        n_units_one_wave=int((n_waves_unit == 1).sum()),
        n_units_dropped=n_units_dropped,
        n_cells=n_cells_x + n_cells_y,
        n_cells_dropped=n_cells_dropped,
    )
    return Result(table, fit)


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
    cluster: str | None = None,
) -> Result:
    r"""Two-way fixed-effects regression of ``y`` on lagged ``x`` with clustered SEs.

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
        Intervals cover ``1 - alpha``.
    lagged_y : bool, keyword-only
        Also include ``y`` lagged one period. Off by default: with unit fixed
        effects and few periods the lagged outcome is biased (Nickell 1981;
        roughly :math:`-(1+\rho)/(T-1)` for autoregression :math:`\rho`).
    cluster : str, keyword-only, optional
        Column to cluster the standard errors by (e.g. ``"team_id"``). It may
        change within unit (an employee who moves team); rows used must not
        miss it. Default: the unit.

    Returns
    -------
    Result
        ``table``: ``term, estimate, se, ci_low, ci_high, p, n``
        (observations used), ``lag``. The lagged predictor's term is
        ``"{x}->{y}"`` (``lag`` says which lag); controls keep their names
        (lag 0); the lagged outcome is ``"{y}->{y}"``. ``fit``: a
        :class:`FEFit` (``n_obs``, ``n_dropped`` = rows without a consecutive
        lag or with a missing value, ``cluster``, ``n_clusters``,
        ``n_units``, ``n_periods``, ``r2_within``, ``cov_type``, ``notes``).

    Notes
    -----
    :math:`y_{it} = \alpha_i + \tau_t + \sum_{k=1}^{K} \beta_k x_{i,t-k} +
    \gamma' c_{it} + e_{it}`, estimated with linearmodels ``PanelOLS``
    (``entity_effects=True, time_effects=True``). Unit effects remove stable
    between-unit confounding; period effects remove shocks common to all
    units. Standard errors are cluster-robust (Liang-Zeger) by ``cluster``
    with the small-sample factor :math:`\frac{G}{G-1}\frac{n-1}{n-k}`
    (linearmodels ``group_debias=True, debiased=True``, absorbed effects not
    counted in k), and intervals and p-values use a t distribution with
    :math:`G-1` df.

    What it estimates, beside the RI-CLPM: :math:`\beta_1` is the total
    within-unit association of :math:`y_t` with :math:`x_{t-1}`, holding the
    unit's average and the period's shock. When ``y`` (or ``x``) is
    autoregressive it absorbs the path through :math:`y_{t-1}` (so it is not
    the RI-CLPM cross-lag); with ``lagged_y`` Nickell bias enters. The two
    agree when there is no autoregression and no feedback (tested on
    simulated data). Within-unit (fixed-effects) estimators also carry a
    small-T bias when :math:`x` responds to past :math:`y` (feedback), of
    order :math:`1/T`.

    Checked against: the simulator's cross-lag when there is no
    autoregression or feedback, the RI-CLPM on the same panel, and
    linearmodels' own clustered covariance (it is linearmodels).

    References
    ----------
    Allison, P. D. (2009). *Fixed Effects Regression Models*. SAGE.

    Cameron, A. C., & Miller, D. L. (2015). A practitioner's guide to
    cluster-robust inference. *Journal of Human Resources*, 50(2), 317-372.

    Nickell, S. (1981). Biases in dynamic models with fixed effects.
    *Econometrica*, 49(6), 1417-1426.

    Examples
    --------
    >>> from cxex_lab.simulate import simulate_panel
    >>> panel = simulate_panel(300, 5, seed=2)
    >>> table, fit = within_effects(panel, unit="unit", period="wave", y="cx", x="ex")
    >>> table["term"].tolist(), fit.cluster
    (['ex->cx'], 'unit')
    """
    from linearmodels.panel import PanelOLS

    func = "within_effects"
    controls = list(controls or [])
    if not isinstance(lags, (int, np.integer)) or lags < 1:
        raise ValueError(f"{func}: lags must be a positive integer, got {lags!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha!r}.")
    _check_panel(panel, func, unit, period, [y, x, *controls], wave_integer=True, extra=[cluster] if cluster else [])
    cl_col = cluster if cluster and cluster != unit else None
    if cl_col in (y, x, period, *controls):
        raise ValueError(f"{func}: cluster={cluster!r} must be an identifier column, not a variable of the model.")
    cols = [unit, period, y, x, *controls] + ([cl_col] if cl_col else [])
    df = panel[cols].copy()
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
    if cl_col:
        no_cl = ok & df[cl_col].isna()
        if no_cl.any():
            ex = df.loc[no_cl, [unit, period]].iloc[0]
            raise ValueError(
                f"{func}: {int(no_cl.sum())} usable row(s) have no value in the cluster column {cluster!r}, "
                f"e.g. {unit}={_py(ex[unit])!r}, {period}={_py(ex[period])!r}. Fill the cluster id or drop those rows."
            )
    used = df.loc[ok]
    if len(used) == 0:
        raise ValueError(f"{func}: no rows have {y!r} and a lagged {x!r} from the consecutive period.")
    n_units = used[unit].nunique()
    if n_units < 2:
        raise ValueError(f"{func}: need at least 2 units with usable rows, found {n_units}.")
    data = used.set_index([unit, period])
    mod = PanelOLS(data[y].astype(float), data[regs].astype(float), entity_effects=True, time_effects=True)
    if cl_col:
        codes = pd.Series(pd.factorize(data[cl_col])[0], index=data.index, name="cluster")
        fitres = mod.fit(cov_type="clustered", clusters=codes.to_frame(), group_debias=True, debiased=True,
                         auto_df=False, count_effects=False)
        G = int(codes.nunique())
    else:
        fitres = mod.fit(cov_type="clustered", cluster_entity=True, group_debias=True, debiased=True,
                         auto_df=False, count_effects=False)
        G = int(n_units)
    cl_name = cl_col or unit
    if G < 2:
        raise ValueError(f"{func}: the rows used fall into {G} cluster(s) of {cl_name!r}; clustering needs at least 2.")
    notes: list[str] = []
    if G < _FEW_CLUSTERS:
        msg = (
            f"Only {G} clusters ({cl_name}): cluster-robust intervals are approximate with "
            f"fewer than about {_FEW_CLUSTERS} clusters (a t distribution with {G - 1} df and the "
            "G/(G-1) correction are used)."
        )
        notes.append(msg)
        warnings.warn(f"{func}: {msg}", RuntimeWarning, stacklevel=2)
    est = fitres.params[regs].to_numpy()
    se_ = fitres.std_errors[regs].to_numpy()
    lo, hi, p = _interval(est, se_, alpha, G - 1)
    out = pd.DataFrame(
        {
            "term": [t for _, t, _ in names],
            "estimate": est,
            "se": se_,
            "ci_low": lo,
            "ci_high": hi,
            "p": p,
            "n": int(fitres.nobs),
            "lag": [k for _, _, k in names],
        }
    )
    fit = FEFit(
        method="two-way fixed effects (unit and period), linearmodels PanelOLS",
        n_obs=int(fitres.nobs),
        n_dropped=int((~ok).sum()),
        cluster=cl_name,
        n_clusters=G,
        alpha=alpha,
        notes=tuple(notes),
        n_units=int(n_units),
        n_periods=int(used[period].nunique()),
        r2_within=float(fitres.rsquared_within),
        cov_type=f"cluster-robust by {cl_name} (G/(G-1)(n-1)/(n-k) correction, t with G-1 df)",
    )
    return Result(out, fit)


# --------------------------------------------------------------------------- multiple indicators
_INVARIANCE = ("configural", "metric", "scalar")


def _mi_prepare(panel, unit, wave, x_items, y_items, cluster, func):
    """Validate and lay out the item panel: Z (units x items*waves), scales, clusters."""
    x_items, y_items = list(x_items), list(y_items)
    for name, items in (("x_items", x_items), ("y_items", y_items)):
        if isinstance(items, str) or len(items) < 2:
            raise ValueError(
                f"{func}: {name} must list at least 2 item columns per construct, got {items!r} "
                "(with one item per construct use cross_lagged)."
            )
    items = x_items + y_items
    if len(set(items)) != len(items):
        raise ValueError(f"{func}: an item column appears twice in x_items + y_items: {items}.")
    _check_panel(panel, func, unit, wave, items, extra=[cluster] if cluster else [])
    waves = np.sort(panel[wave].unique())
    T = len(waves)
    if T < 3:
        raise ValueError(f"{func}: the multiple-indicator RI-CLPM needs at least 3 waves in column {wave!r}, found {T}.")
    df = panel[[unit, wave, *items]]
    Z, units = _wide(df, unit, wave, items, waves)
    notes: list[str] = []
    codes, keep_cl, G = _cluster_setup(panel, unit, cluster, units, func)
    any_obs = ~np.all(np.isnan(Z), axis=1)
    sel = any_obs & keep_cl
    n_dropped_units = int((any_obs & ~keep_cl).sum())
    dropped = ~keep_cl & any_obs
    n_rows_dropped = int((~np.isnan(Z[dropped])).reshape(int(dropped.sum()), len(x_items) + len(y_items), T).any(axis=1).sum())
    if n_dropped_units:
        notes.append(f"{n_dropped_units} unit(s) have no value in the cluster column {cluster!r} and are left out.")
    if codes is not None:
        full = np.full(len(units), -1)
        full[keep_cl] = codes
        codes = pd.factorize(full[sel])[0]
        G = int(codes.max()) + 1
        if G < 2:
            raise ValueError(f"{func}: the units used fall into {G} cluster(s) of {cluster!r}; clustering needs at least 2.")
    Z = Z[sel]
    if len(Z) == 0:
        raise ValueError(f"{func}: no unit has an observed item value.")
    J = len(items)
    for j in range(J * T):
        if np.all(np.isnan(Z[:, j])):
            raise ValueError(f"{func}: item column {items[j // T]!r} has no observed value at {wave}={_py(waves[j % T])!r}; drop that wave.")
    Z3 = Z.reshape(len(Z), J, T)
    loc = np.nanmean(Z3, axis=(0, 2))
    sd = np.nanstd(Z3, axis=(0, 2))
    if np.any(sd == 0):
        raise ValueError(f"{func}: item(s) {[i for i, s in zip(items, sd) if s == 0]} have no variation.")
    Zs = ((Z3 - loc[None, :, None]) / sd[None, :, None]).reshape(len(Z), J * T)
    return dict(Z=Z, Zs=Zs, loc=loc, sd=sd, waves=waves, T=T, J=J, items=items, codes=codes, G=G,
                notes=notes, n_dropped_units=n_dropped_units, n_rows_dropped=n_rows_dropped,
                x_items=x_items, y_items=y_items)


def _mi_fit(d: dict, invariance: str, random_intercepts: str, equal_lags: bool, equal_residuals: bool,
            se: str, information: str, alpha: float, fit_indices: bool, names: tuple[str, str],
            cluster: str | None, unit: str, func: str) -> Result:
    T, J, Z, Zs, sd, waves = d["T"], d["J"], d["Z"], d["Zs"], d["sd"], d["waves"]
    x, y = names
    nx = len(d["x_items"])
    spec = _MISpec(T, (nx, J - nx), invariance, random_intercepts, equal_lags, equal_residuals)
    pats = _fiml.group_patterns(Zs, np.empty((len(Zs), 0)))
    codes = d["codes"] if se == "robust" else None
    est = _fiml.fit(spec, pats, spec.start(Zs), se=se, information=information, cluster_codes=codes)
    n_units = len(Z)
    Zc = est.raw[None, :] + 1j * _fiml.CSTEP * np.eye(spec.n_par)
    sd_m = (sd[spec.marker[0]], sd[spec.marker[1]])
    rows = _within_rows(spec, Zc, x, y, sd_m, waves)
    R = spec.layout.cov_block(Zc, spec.sl_ri)
    if random_intercepts == "factor":
        r_ri = R[:, 0, 1] / np.sqrt(R[:, 0, 0] * R[:, 1, 1])
    else:
        # stable part of each construct: the mean of its items' random intercepts
        # (each item in its original units)
        s = np.asarray(sd)
        Rs = R * s[None, :, None] * s[None, None, :]
        ix, iy = np.arange(nx), np.arange(nx, J)
        cxy = Rs[:, ix][:, :, iy].sum(axis=(1, 2))
        vx = Rs[:, ix][:, :, ix].sum(axis=(1, 2))
        vy = Rs[:, iy][:, :, iy].sum(axis=(1, 2))
        r_ri = cxy / np.sqrt(vx * vy)
    rows.append(_Row(f"corr(RI_{x},RI_{y})", "between", r_ri, r_ri))
    lam = spec.loadings(Zc)
    for j, item in enumerate(d["items"]):
        c = spec.construct[j]
        marker = j == spec.marker[c]
        t_list = range(T) if invariance == "configural" else [0]
        for t in t_list:
            v = lam[:, j * T + t] * sd[j] / sd_m[c]
            rows.append(_Row(f"loading({item})", "loading", v, None, waves[t] if invariance == "configural" else None, fixed=marker))
    theta = Zc[:, spec.theta_idx]
    # standardised loading (within part): lambda^2 var(factor) / (lambda^2 var(factor) + theta), mean over waves
    _, V = spec._within(Zc)
    for r in rows:
        if r.component == "loading":
            j = d["items"].index(r.term[len("loading("):-1])
            c = spec.construct[j]
            ts = range(T) if r.wave is None else [list(waves).index(r.wave)]
            rel = sum(lam[:, j * T + t] ** 2 * V[:, t, c, c] / (lam[:, j * T + t] ** 2 * V[:, t, c, c] + theta[:, j * T + t]) for t in ts) / len(ts)
            r.std = np.sqrt(rel)
    df_t = (d["G"] - 1) if (codes is not None) else None
    table = _table(rows, est.cov, alpha, df_t, n_units)
    jac_adj = -float(sum((~np.isnan(Z[:, j * T:(j + 1) * T])).sum() * math.log(sd[j]) for j in range(J)))
    loglik = -est.nll + jac_adj
    N = float(n_units)
    label = f"multiple-indicator RI-CLPM ({invariance})"
    notes = list(d["notes"])
    if se == "ml" and cluster and cluster != unit:
        notes.append(f"se='ml' ignores cluster={cluster!r}: use se='robust' for cluster-robust intervals.")
    th = est.raw[spec.theta_idx]
    if np.any(th < 1e-4):
        bad = sorted({d["items"][i // T] for i in np.flatnonzero(th < 1e-4)})
        notes.append(
            f"The residual variance of item(s) {bad} is about zero or negative at some wave (a Heywood "
            "case): the model leaves the item no measurement error; check its loading."
        )
    blocks = {"wave-1 within covariance": spec.sl_w1, "random-intercept covariance": spec.sl_ri}
    blocks.update({f"within-wave residual covariance{'' if spec.n_res == 1 else f' of wave {_py(waves[b + 1])}'}": s_
                   for b, s_ in enumerate(spec.sl_res)})
    notes += _boundary_notes(spec, est.raw, blocks) + _missing_info_note(information, Z)
    notes = _notes_and_warn(func, label, est, d["G"] if codes is not None else None, cluster, notes)
    obs = ~np.isnan(Z)
    wave_obs = obs.reshape(len(Z), J, T).any(axis=1)
    fit = _sem_record(
        label=label, kind="mi-riclpm", se=se, cluster=cluster, unit=unit, clustered=codes is not None,
        n_clusters=d["G"], alpha=alpha, notes=notes, information=information, loglik=loglik, spec=spec, N=N,
        est=est, pats=pats, waves=waves, equal_lags=equal_lags, equal_residuals=equal_residuals,
        fit_indices=fit_indices, jac_adj=jac_adj,
        n_obs=int(wave_obs.sum()),
        n_dropped=d["n_rows_dropped"],
        n_units=n_units,
        n_units_complete=int(obs.all(axis=1).sum()),
        n_units_one_wave=int((wave_obs.sum(axis=1) == 1).sum()),
        n_units_dropped=d["n_dropped_units"],
        n_cells=int(obs.sum()),
        n_cells_dropped=0,
        invariance=invariance,
        random_intercepts=random_intercepts,
        items=tuple(d["items"]),
    )
    return Result(table, fit)


def cross_lagged_mi(
    panel: pd.DataFrame,
    unit: str,
    wave: str,
    x_items: Sequence[str],
    y_items: Sequence[str],
    names: tuple[str, str] = ("x", "y"),
    *,
    invariance: str = "metric",
    random_intercepts: str = "indicator",
    equal_lags: bool = True,
    equal_residuals: bool = False,
    se: str = "robust",
    cluster: str | None = None,
    information: str = "observed",
    alpha: float = 0.05,
    fit_indices: bool = True,
) -> Result:
    r"""Multiple-indicator RI-CLPM by FIML: lags between factors measured by items.

    One within-unit factor per construct and wave, measured by the
    construct's items with loadings invariant over waves; random intercepts
    and the lagged structure of :func:`cross_lagged` on the factors (Mulder &
    Hamaker 2021, extension 3). Item-level measurement error, which
    attenuates the lags of a model on one score per construct, goes to the
    item residuals.

    Parameters
    ----------
    panel : DataFrame
        Long panel, one row per unit-wave, one column per item (NaN allowed:
        FIML uses every observed item value).
    unit, wave : str
        Unit identifier and wave columns (waves sorted, equally spaced).
    x_items, y_items : list of str
        Item columns of the two constructs (at least 2 each), e.g.
        ``["enps", "esat", "ees"]`` and ``["nps", "csat", "ces"]``. The first
        item of each list is the marker: its loading is fixed to 1, so the
        factor (and the lags) are in the marker item's units.
    names : (str, str)
        Names of the two constructs in the term labels (``"ex->cx"``).
    invariance : {"metric", "configural", "scalar"}, keyword-only
        ``"metric"`` (default): loadings equal over waves, item intercepts
        free per wave; ``"configural"``: loadings free per wave;
        ``"scalar"``: loadings and item intercepts equal over waves, factor
        means free from wave 2. Lags are comparable over waves only from
        metric invariance up; :func:`measurement_invariance` tests it.
    random_intercepts : {"indicator", "factor"}, keyword-only
        ``"indicator"`` (default): a random intercept per item (their
        covariance matrix free); ``"factor"``: one random intercept per
        construct on the factor, with the within loadings. See Notes.
    equal_lags, equal_residuals, se, cluster, information, alpha, fit_indices
        As in :func:`cross_lagged` (``equal_residuals`` for the within
        factors' residual (co)variances; default free per wave).

    Returns
    -------
    Result
        ``table``: the terms of :func:`cross_lagged` (``component`` ``"lag"``,
        ``"within-wave"``, ``"wave-1"``, ``"between"``), in the marker items'
        units, plus ``"loading({item})"`` (``component`` ``"loading"``,
        original units relative to the marker, marker fixed at 1 with no
        SE; ``std_estimate`` = standardised within-unit loading, the square
        root of the item's within-unit reliability). ``"corr(RI_{x},RI_{y})"``
        with per-item random intercepts is the correlation of the construct
        means of the item random intercepts. ``fit``: a :class:`SEMFit` with
        ``kind="mi-riclpm"``, ``invariance``, ``random_intercepts``,
        ``items``.

    Notes
    -----
    For item :math:`j` of construct :math:`c` at wave :math:`t`,

    .. math::

        z_{jit} = \nu_{jt} + RI_{ji} + \lambda_j \eta^c_{it} + \epsilon_{jit}, \qquad
        \epsilon_{jit} \sim N(0, \theta_{jt})

    with the within factors :math:`\eta^x_t, \eta^y_t` following the
    bivariate VAR(1) of :func:`cross_lagged` (lags, wave-1 covariance,
    within-wave residual covariances), random intercepts uncorrelated with
    the wave-1 factors and free item residual variances per wave. Scalar
    invariance sets :math:`\nu_{jt} = \nu_j + \lambda_j \kappa^c_t` with
    :math:`\kappa^c_1 = 0`. The model-implied covariance is
    :math:`\Sigma = \Lambda \Psi_W \Lambda' + \Sigma_{RI} + \Theta`; the
    FIML likelihood and its per-pattern machinery are those of
    :func:`cross_lagged`.

    *Random intercept per indicator or on the factor.* The default follows
    Mulder & Hamaker's steps 1-3: each item has its own random intercept,
    free covariance matrix. An item's stable part then need not be the
    construct's stable part times the loading: a person's lasting tendency
    to answer eNPS (0-10) differently from eSat (1-5), or an item-specific
    trait, stays in that item's random intercept. With one random intercept
    on the factor (their step 4, ``random_intercepts="factor"``) such
    item-specific stable variance has nowhere to go but the item residuals,
    which are assumed independent over waves; the model then reads it as
    within-unit carry-over and biases the autoregressions upward. The
    factor version is nested in the indicator version (fewer parameters) and
    can be preferred when a likelihood-ratio test does not reject it.

    Checked against: semopy 2.3.11 on complete data (the metric model with
    per-item random intercepts, estimates to 1e-3; ``tests/test_direction.py``)
    and the simulator's latent lags recovered from observed survey items
    (see the README).

    References
    ----------
    Mulder, J. D., & Hamaker, E. L. (2021). Three extensions of the random
    intercept cross-lagged panel model. *Structural Equation Modeling*,
    28(4), 638-648.

    Hamaker, E. L., Kuiper, R. M., & Grasman, R. P. P. P. (2015). A critique
    of the cross-lagged panel model. *Psychological Methods*, 20(1), 102-116.

    Meredith, W. (1993). Measurement invariance, factor analysis and
    factorial invariance. *Psychometrika*, 58(4), 525-543.

    Examples
    --------
    >>> import numpy as np
    >>> from cxex_lab.simulate import simulate_panel
    >>> panel = simulate_panel(300, 4, seed=1)
    >>> rng = np.random.default_rng(0)
    >>> for k, lam in enumerate([1.0, 0.8, 1.2]):
    ...     panel[f"ex{k}"] = lam * panel["ex"] + rng.normal(0, 0.3, len(panel))
    ...     panel[f"cx{k}"] = lam * panel["cx"] + rng.normal(0, 0.3, len(panel))
    >>> table, fit = cross_lagged_mi(panel, "unit", "wave", ["ex0", "ex1", "ex2"],
    ...                              ["cx0", "cx1", "cx2"], names=("ex", "cx"), fit_indices=False)
    >>> list(table.loc[table["component"] == "lag", "term"])
    ['ex->cx', 'cx->ex', 'ex->ex', 'cx->cx']
    >>> fit.invariance, fit.random_intercepts
    ('metric', 'indicator')
    """
    func = "cross_lagged_mi"
    _check_options(func, alpha, se, information)
    if invariance not in _INVARIANCE:
        raise ValueError(f"{func}: invariance must be one of {_INVARIANCE}, got {invariance!r}.")
    if random_intercepts not in ("indicator", "factor"):
        raise ValueError(f"{func}: random_intercepts must be 'indicator' or 'factor', got {random_intercepts!r}.")
    if not (isinstance(names, (tuple, list)) and len(names) == 2 and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{func}: names must be two strings, e.g. ('ex', 'cx'), got {names!r}.")
    d = _mi_prepare(panel, unit, wave, x_items, y_items, cluster, func)
    return _mi_fit(d, invariance, random_intercepts, equal_lags, equal_residuals, se, information, alpha,
                   fit_indices, tuple(names), cluster, unit, func)


def measurement_invariance(
    panel: pd.DataFrame,
    unit: str,
    wave: str,
    x_items: Sequence[str],
    y_items: Sequence[str],
    names: tuple[str, str] = ("x", "y"),
    *,
    random_intercepts: str = "indicator",
    equal_lags: bool = True,
    equal_residuals: bool = False,
) -> pd.DataFrame:
    r"""Longitudinal measurement invariance of the multiple-indicator RI-CLPM.

    Fits :func:`cross_lagged_mi` with configural (loadings free per wave),
    metric (loadings equal over waves) and scalar (loadings and item
    intercepts equal over waves) measurement models and compares them.

    Parameters
    ----------
    panel, unit, wave, x_items, y_items, names
        As in :func:`cross_lagged_mi`.
    random_intercepts, equal_lags, equal_residuals : keyword-only
        As in :func:`cross_lagged_mi`, held fixed across the three fits.

    Returns
    -------
    DataFrame
        One row per model (``configural``, ``metric``, ``scalar``):
        ``model, n_par, loglik, chi2, df, p_chi2, cfi, rmsea, aic, bic``, the
        likelihood-ratio test against the previous (less constrained) model
        ``delta_chi2, delta_df, p_delta``, the changes ``delta_cfi`` and
        ``delta_rmsea``, and ``converged``. This is a model-comparison table,
        not an estimate table, hence not a :class:`~cxex_lab.results.Result`.

    Notes
    -----
    :math:`\Delta\chi^2 = 2(\ell_{free} - \ell_{constrained})` on
    :math:`\Delta df` = the difference in free parameters (Meredith 1993;
    the usual steps of Vandenberg & Lance 2000). With large samples the LR
    test rejects trivial differences; the changes in CFI (a drop of more than
    .01) and RMSEA (a rise of more than .015) are the common practical
    criteria (Chen 2007). The test statistics are normal-theory
    (ML); with strongly non-normal items they are liberal.

    Checked against: the nesting (each constrained model's log-likelihood is
    at most the freer one's, the df differences count the constraints), and
    a simulation with invariant loadings where the metric test does not
    reject while it does reject for loadings that drift over waves
    (``tests/test_direction.py``).

    References
    ----------
    Chen, F. F. (2007). Sensitivity of goodness of fit indexes to lack of
    measurement invariance. *Structural Equation Modeling*, 14(3), 464-504.

    Meredith, W. (1993). Measurement invariance, factor analysis and
    factorial invariance. *Psychometrika*, 58(4), 525-543.

    Vandenberg, R. J., & Lance, C. E. (2000). A review and synthesis of the
    measurement invariance literature. *Organizational Research Methods*,
    3(1), 4-70.

    Examples
    --------
    >>> import numpy as np
    >>> from cxex_lab.simulate import simulate_panel
    >>> panel = simulate_panel(300, 4, seed=1)
    >>> rng = np.random.default_rng(0)
    >>> for k, lam in enumerate([1.0, 0.8, 1.2]):
    ...     panel[f"ex{k}"] = lam * panel["ex"] + rng.normal(0, 0.3, len(panel))
    ...     panel[f"cx{k}"] = lam * panel["cx"] + rng.normal(0, 0.3, len(panel))
    >>> tab = measurement_invariance(panel, "unit", "wave", ["ex0", "ex1", "ex2"], ["cx0", "cx1", "cx2"])
    >>> tab["model"].tolist()
    ['configural', 'metric', 'scalar']
    """
    func = "measurement_invariance"
    if random_intercepts not in ("indicator", "factor"):
        raise ValueError(f"{func}: random_intercepts must be 'indicator' or 'factor', got {random_intercepts!r}.")
    d = _mi_prepare(panel, unit, wave, x_items, y_items, None, func)
    recs = []
    prev = None
    for inv in _INVARIANCE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            _, f = _mi_fit(d, inv, random_intercepts, equal_lags, equal_residuals, "ml", "observed", 0.05,
                           True, tuple(names), None, unit, func)
        rec = {
            "model": inv, "n_par": f.n_par, "loglik": f.loglik, "chi2": f.chi2, "df": f.df, "p_chi2": f.p_chi2,
            "cfi": f.cfi, "rmsea": f.rmsea, "aic": f.aic, "bic": f.bic,
            "delta_chi2": np.nan, "delta_df": pd.NA, "p_delta": np.nan, "delta_cfi": np.nan, "delta_rmsea": np.nan,
            "converged": f.converged,
        }
        if prev is not None:
            dchi = max(0.0, 2 * (prev.loglik - f.loglik))
            ddf = prev.n_par - f.n_par
            rec.update(delta_chi2=dchi, delta_df=ddf, p_delta=float(stats.chi2.sf(dchi, ddf)),
                       delta_cfi=f.cfi - prev.cfi, delta_rmsea=f.rmsea - prev.rmsea)
        recs.append(rec)
        prev = f
    out = pd.DataFrame(recs)
    out["delta_df"] = out["delta_df"].astype("Int64")
    return out
