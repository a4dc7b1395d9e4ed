r"""CX -> loyalty at customer level, and the money translation of the chain.

:func:`loyalty` models each customer-period outcome (retained at the end of the
period, revenue in the period) on the CX the customer received in the
**preceding** period, with the prior period's retention and revenue as
controls, and standard errors that are cluster-robust by customer *and* by
agent (two-way; Cameron, Gelbach & Miller 2011). Draws for products of effects
come from the estimator's sampling distribution with that two-way covariance
(Monte Carlo method), or from a pigeonhole bootstrap over customers and agents
(Owen 2007), which is markedly conservative on customer-period data.

:func:`money_chain` turns "+1 eSat point -> +x CSAT -> +y points retention /
+z revenue per customer per period" into a tidy table: each step with its
estimate, bootstrap interval, unit and identifying assumption in words.

The customer-period table
-------------------------
One row per customer and period :math:`p` that has an outcome, with the
preceding period's CX already attached (the workspace's ``customer_periods()``
provides it; column names are parameters):

=================== ==========================================================
column              content
=================== ==========================================================
``customer_id``     the customer
``period``          the period :math:`p` of the outcome (integer; waves)
``retained``        retained at the end of :math:`p` (bool or 0/1)
``revenue``         revenue in :math:`p`
``csat_prev``       mean CSAT (1-5) of the customer's surveyed interactions in
                    :math:`p-1` (missing when none answered; such rows drop out)
``employee_id``     the agent who handled most of the customer's interactions
                    in :math:`p-1` (ties: the agent of the latest of the tied
                    interactions)
``retained_prev``   ``retained`` of :math:`(c, p-1)`, missing if that row does
                    not exist
``revenue_prev``    ``revenue`` of :math:`(c, p-1)`, missing likewise
=================== ==========================================================
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.linalg
import statsmodels.api as sm
from scipy import stats
from scipy.special import expit

from cxex_lab.models._checks import _check_columns, _check_design, _check_frame
from cxex_lab.models.mediation import MediationFit, _listify
from cxex_lab.results import Fit, Result

__all__ = ["loyalty", "LoyaltyFit", "money_chain", "MoneyChainFit", "MODELS"]

#: Outcome models :func:`loyalty` fits.
MODELS: tuple[str, ...] = ("linear", "logit")

_BATCH = 64
_MIN_CLUSTERS = 20
_MAX_NEWTON = 50


@dataclass(frozen=True, kw_only=True)
class LoyaltyFit(Fit):
    """Fit record of :func:`loyalty`.

    Attributes
    ----------
    model : {"linear", "logit"}
        The outcome model.
    outcome, cx, customer, agent : str
        Columns used.
    binary : bool
        Whether the outcome is 0/1 (its effects read as probabilities).
    n_customers, n_agents, n_pairs : int
        Customers, agents and customer-agent pairs (the intersection clusters)
        behind the two-way cluster-robust covariance.
    df_t : int
        Degrees of freedom of the t intervals: min(customers, agents) - 1.
    psd_adjusted : bool
        The two-way covariance had a negative eigenvalue and was made positive
        semi-definite (Cameron, Gelbach & Miller 2011, section 2.3).
    converged : bool
        The logit converged (always True for ``linear``).
    ame : float or None
        ``logit``: the average marginal effect of ``cx`` on the probability.
    boot_method : {"normal", "pigeonhole"}
        How the draws were made (see :func:`loyalty`).
    n_boot, n_boot_failed : int
        Draws asked for, and those that failed (a pigeonhole resample with a
        singular design or no convergence).
    boot : DataFrame
        The draws, one column per coefficient (and ``"AME <cx>"`` for a logit),
        one row per successful draw.
    """

    model: str
    outcome: str
    cx: str
    customer: str
    agent: str
    binary: bool
    n_customers: int
    n_agents: int
    n_pairs: int
    df_t: int
    psd_adjusted: bool = False
    converged: bool = True
    ame: float | None = None
    boot_method: str = "normal"
    n_boot: int = 0
    n_boot_failed: int = 0
    boot: pd.DataFrame | None = field(default=None, compare=False, repr=False)


def _independent_columns(x: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """Indices of a maximal set of columns of ``x`` independent of each other and of ``base``."""
    if x.shape[1] == 0:
        return np.array([], dtype=int)
    if base is not None and base.shape[1]:
        q, _ = np.linalg.qr(base)
        x = x - q @ (q.T @ x)
    scale = np.maximum(np.abs(x).max(axis=0), 1e-300)
    _, r, piv = scipy.linalg.qr(x / scale, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > 1e-9 * max(1.0, diag[0] if len(diag) else 0.0)).sum())
    return np.sort(piv[:rank])


def _make_psd(v: np.ndarray) -> tuple[np.ndarray, bool]:
    """Zero the negative eigenvalues of a symmetric matrix (CGM 2011, section 2.3)."""
    w, u = np.linalg.eigh((v + v.T) / 2)
    if w.min() >= -1e-12 * max(1.0, abs(w).max()):
        return v, False
    return (u * np.clip(w, 0, None)) @ u.T, True


def _pigeonhole_weights(rng: np.random.Generator, cust: np.ndarray, agent: np.ndarray,
                        n_cust: int, n_agent: int, size: int) -> np.ndarray:
    """Row weights of ``size`` pigeonhole resamples: (times its customer drawn) x (times its agent drawn)."""
    wc = rng.multinomial(n_cust, np.full(n_cust, 1.0 / n_cust), size=size).astype(float)
    wa = rng.multinomial(n_agent, np.full(n_agent, 1.0 / n_agent), size=size).astype(float)
    return wc[:, cust] * wa[:, agent]


def _boot_linear(w: np.ndarray, outer: np.ndarray, k: int) -> np.ndarray:
    """Weighted OLS coefficients for each row of weights ``w`` (B, N) from row outer products of [X, y]."""
    g = (w @ outer).reshape(len(w), k + 1, k + 1)
    out = np.full((len(w), k), np.nan)
    try:
        out[:] = np.linalg.solve(g[:, :k, :k], g[:, :k, k][..., None])[..., 0]
    except np.linalg.LinAlgError:
        for i in range(len(w)):
            try:
                out[i] = np.linalg.solve(g[i, :k, :k], g[i, :k, k])
            except np.linalg.LinAlgError:
                pass
    return out


def _boot_logit(w: np.ndarray, x: np.ndarray, xx: np.ndarray, y: np.ndarray, beta0: np.ndarray,
                ame_col: int | None) -> np.ndarray:
    """Weighted logit MLE (Newton from the full-sample estimate) per row of weights; (+ AME column)."""
    b_sz, k = len(w), x.shape[1]
    beta = np.tile(beta0, (b_sz, 1))
    active = np.ones(b_sz, dtype=bool)
    ok = np.zeros(b_sz, dtype=bool)
    for _ in range(_MAX_NEWTON):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        p = expit(beta[idx] @ x.T)
        grad = (w[idx] * (y - p)) @ x
        hess = ((w[idx] * p * (1 - p)) @ xx).reshape(len(idx), k, k)
        try:
            step = np.linalg.solve(hess, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.full((len(idx), k), np.nan)
            for j, i in enumerate(idx):
                try:
                    step[j] = np.linalg.solve(hess[j], grad[j])
                except np.linalg.LinAlgError:
                    pass
        beta[idx] += step
        bad = ~np.isfinite(step).all(axis=1) | (np.abs(beta[idx]) > 50).any(axis=1)  # diverging (separation)
        done = np.abs(step).max(axis=1) < 1e-9
        ok[idx[done & ~bad]] = True
        active[idx[done | bad]] = False
    beta[~ok] = np.nan
    if ame_col is None:
        return beta
    p = expit(np.nan_to_num(beta) @ x.T)
    ame = (w * p * (1 - p)).sum(axis=1) / w.sum(axis=1) * beta[:, ame_col]
    return np.column_stack([beta, ame])


def loyalty(
    df: pd.DataFrame,
    cx: str,
    outcome: str,
    *,
    customer: str = "customer_id",
    agent: str = "employee_id",
    controls: str | Sequence[str] | None = ("retained_prev", "revenue_prev"),
    period: str | None = "period",
    model: str = "linear",
    missing_controls: str = "indicator",
    n_boot: int = 0,
    boot: str = "normal",
    seed: int | np.random.Generator | None = None,
    alpha: float = 0.05,
) -> Result:
    r"""Customer-level effect of the CX received in the preceding period on loyalty.

    Parameters
    ----------
    df : DataFrame
        The customer-period table (module docstring): one row per customer and
        period, the outcome of that period, the CX the customer received in the
        preceding period, the agent who served most of those interactions and
        the prior period's outcomes.
    cx : str
        The CX received in the preceding period (e.g. ``"csat_prev"``).
    outcome : str
        ``"retained"`` (0/1; ``model="logit"`` or a linear probability model)
        or ``"revenue"``.
    customer, agent : str
        The two cluster dimensions: customer id and the (main) agent of the
        preceding period.
    controls : str or sequence of str, optional
        Numeric controls, default the prior period's retention and revenue.
    period : str or None
        Period column: adds period fixed effects (shocks shared by all customers
        in a period) and checks one row per customer-period. ``None`` = neither.
    model : {"linear", "logit"}
        OLS (a linear probability model for a 0/1 outcome) or logistic regression.
    missing_controls : {"indicator", "drop"}
        Rows without a prior period (a customer's first period with an outcome)
        have missing controls. ``"indicator"`` (default) fills each such control
        with its observed mean and adds a 0/1 "missing" indicator (one per
        distinct missingness pattern), keeping those rows; ``"drop"`` drops them.
    n_boot : int
        Draws of the coefficients (0 = none); they (``fit.boot``) are what
        :func:`money_chain` multiplies.
    boot : {"normal", "pigeonhole"}
        How the draws are made (Notes). ``"normal"`` (default): from the
        estimator's sampling distribution, a multivariate t with the two-way
        covariance and min(G)-1 df (for a logit the AME is recomputed per draw).
        ``"pigeonhole"``: Owen's (2007) bootstrap over customers and agents;
        conservative here (Notes).
    seed : int or numpy.random.Generator, optional
        The only source of randomness.
    alpha : float
        1 - confidence level.

    Returns
    -------
    Result
        ``table``: one row per coefficient (``term`` = column name; ``const``,
        the controls, missing indicators, period effects ``"period=p"``) and,
        for a logit, ``"AME <cx>"`` (average marginal effect on the probability).
        Columns ``term, estimate, se, ci_low, ci_high, p, n, role, estimand``
        (two-way cluster-robust SEs, t intervals with min(G)-1 df; the AME by
        the delta method) and, with ``n_boot``, ``se_boot, ci_low_boot,
        ci_high_boot`` (SD and percentile interval of the draws).
        ``role`` is ``"cx"``, ``"ame"``, ``"control"``, ``"missing indicator"``,
        ``"period effect"`` or ``"intercept"``. ``fit``: :class:`LoyaltyFit`.

    Notes
    -----
    For customer :math:`c` in period :math:`p` with preceding-period CX
    :math:`\bar y_{c,p-1}`, controls :math:`L_{c,p-1}` (retained, revenue) and
    period effects :math:`\tau_p`:

    .. math::

        \text{linear:}\quad & Y_{cp} = \alpha + \beta\,\bar y_{c,p-1}
            + \gamma^\top L_{c,p-1} + \tau_p + \varepsilon_{cp} \\
        \text{logit:}\quad & \text{logit}\,P(Y_{cp}=1) = \alpha + \beta\,\bar y_{c,p-1}
            + \gamma^\top L_{c,p-1} + \tau_p, \qquad
            \text{AME} = \beta\,\tfrac{1}{N}\textstyle\sum_{cp} \hat P_{cp}(1-\hat P_{cp})

    The CX precedes the outcome, so the outcome cannot have caused it.
    Identifying assumption: given the prior period's retention and revenue and
    the period, the CX a customer received is unrelated to other causes of the
    outcome (which agent a customer got, and how it went, is as good as random
    given the customer's recent loyalty).

    **Two-way clustering.** A customer's periods share the customer, and the
    customers an agent served share the agent; scores are correlated along both.
    Each customer-period is attributed to the agent who served most of its
    preceding-period interactions (that is where its CX came from). With
    :math:`V_G = \frac{G}{G-1}\frac{N-1}{N-K}\,B^{-1}\big(\sum_g s_g s_g^\top\big)B^{-1}`
    (CR1, :math:`s_g` the summed scores of cluster :math:`g`, :math:`B` the
    Hessian),

    .. math::

        V = V_{\text{customer}} + V_{\text{agent}} - V_{\text{customer}\cap\text{agent}}

    (Cameron, Gelbach & Miller 2011), made positive semi-definite by zeroing
    negative eigenvalues if needed (``fit.psd_adjusted``). Computed with
    statsmodels (``cov_type="cluster"`` with a two-column ``groups`` array, which
    implements exactly this sum with a CR1 factor per term; the test suite checks
    it against a hand computation of the formula and against
    ``linearmodels.IV2SLS`` with two-way clusters).

    **Draws for products.** ``boot="normal"`` draws
    :math:`\beta^* = \hat\beta + \hat V^{1/2} z / \sqrt{\chi^2_{d}/d}` (multivariate
    t, :math:`d` = min(G)-1), the Monte Carlo method for indirect effects
    (Preacher & Selig 2012) and, for the AME, Krinsky & Robb (1986). Its
    percentile intervals reproduce the two-way t intervals; its validity rests
    on the two-way covariance, which the coverage tests check.
    ``boot="pigeonhole"`` (Owen 2007) draws customers and agents independently
    with replacement; a row's weight is (times its customer was drawn) x (times
    its agent was drawn) and the model is refitted with these weights (OLS normal
    equations; logit by Newton steps from the full-sample estimate). It is
    consistent for separately exchangeable arrays (Davezies, D'Haultfœuille &
    Guyonvarch 2021) but conservative: where each customer-agent pair has about
    one row, the row-level variance enters once through the customer weights,
    once through the agent weights and once through their product (a row's
    weight has variance about 3 instead of 1), and no intersection term is
    subtracted as in CGM. On the synthetic customer-period design of
    ``tests/test_loyalty.py`` (2,000 customers, 60 agents, 5 periods; 300
    replicate studies) the SD of the revenue slope was 0.93, the mean two-way SE
    0.91 and the mean pigeonhole SE 1.55 (a 67% wider interval), so it is not the
    default.

    Checked against: statsmodels OLS / Logit (coefficients, AME via
    ``get_margeff``), a hand computation of the CGM formula and linearmodels'
    two-way clustered covariance (``IV2SLS``, ``debiased=True``), weighted refits
    on duplicated rows (pigeonhole), recovery of a logit coefficient of 0.6 and
    a revenue slope of 15 on synthetic customer-period data with the
    simulator's timing, and coverage of the two-way intervals (with and without
    agent-level shocks) over replicate studies.

    References
    ----------
    Cameron, A. C., Gelbach, J. B., & Miller, D. L. (2011). Robust inference with
    multiway clustering. *Journal of Business & Economic Statistics*, 29(2), 238-249.
    Owen, A. B. (2007). The pigeonhole bootstrap. *Annals of Applied Statistics*,
    1(2), 386-411.
    Davezies, L., D'Haultfœuille, X., & Guyonvarch, Y. (2021). Empirical process
    results for exchangeable arrays. *Annals of Statistics*, 49(2), 845-862.
    Preacher, K. J., & Selig, J. P. (2012). Advantages of Monte Carlo confidence
    intervals for indirect effects. *Communication Methods and Measures*, 6(2), 77-98.
    Krinsky, I., & Robb, A. L. (1986). On approximating the statistical properties of
    elasticities. *Review of Economics and Statistics*, 68(4), 715-719.
    Heskett, J. L., Jones, T. O., Loveman, G. W., Sasser, W. E., & Schlesinger, L. A.
    (1994). Putting the service-profit chain to work. *Harvard Business Review*.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> n = 3000
    >>> d = pd.DataFrame({"customer_id": rng.integers(0, 1000, n), "employee_id": rng.integers(0, 60, n),
    ...                   "period": rng.integers(2, 5, n), "csat_prev": rng.normal(0, 1, n)})
    >>> d = d.drop_duplicates(["customer_id", "period"])
    >>> d["revenue"] = 100 + 15 * d["csat_prev"] + rng.normal(0, 30, len(d))
    >>> table, fit = loyalty(d, "csat_prev", "revenue", controls=None)
    >>> row = table.set_index("term").loc["csat_prev"]
    >>> bool(row["ci_low"] < 15 < row["ci_high"])
    True
    >>> fit.cluster
    'customer_id + employee_id (two-way)'
    """
    func = "loyalty"
    df = _check_frame(df, func)
    controls = _listify(controls)
    if model not in MODELS:
        raise ValueError(f"{func}: model must be one of {MODELS}, got {model!r}.")
    if missing_controls not in ("indicator", "drop"):
        raise ValueError(f"{func}: missing_controls must be 'indicator' or 'drop', got {missing_controls!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    if n_boot < 0:
        raise ValueError(f"{func}: n_boot must be >= 0, got {n_boot}.")
    if boot not in ("normal", "pigeonhole"):
        raise ValueError(f"{func}: boot must be 'normal' or 'pigeonhole', got {boot!r}.")
    numeric = [cx, outcome, *controls]
    if len(set(numeric)) != len(numeric):
        raise ValueError(f"{func}: a column is used in two roles ({numeric}); cx, outcome and controls must be distinct.")
    ids = [c for c in (customer, agent, period) if c is not None]
    if len(set(ids)) != len(ids) or set(ids) & set(numeric):
        raise ValueError(f"{func}: customer, agent and period ({ids}) must be distinct columns, not also cx/outcome/controls.")
    _check_columns(df, numeric, func)
    _check_columns(df, ids, func, numeric=False)
    if period is not None:
        dup = df.duplicated([customer, period], keep=False)
        if dup.any():
            ex = df.loc[dup, [customer, period]].head(3).to_dict("records")
            raise ValueError(
                f"{func}: {customer!r} x {period!r} must identify a row (one row per customer-period); "
                f"{int(dup.sum())} rows are duplicates, e.g. {ex}. Aggregate to one row per customer-period, "
                "attributing it to the agent who served most of its preceding-period interactions."
            )

    # ---- rows: the cx, outcome and ids must be present; controls per missing_controls
    need = [cx, outcome, *ids] + (controls if missing_controls == "drop" else [])
    keep = df[need].notna().all(axis=1).to_numpy()
    notes: list[str] = []
    n_dropped = int((~keep).sum())
    if n_dropped:
        notes.append(
            f"{n_dropped} customer-periods without {' / '.join(need)} (e.g. no CX answer in the preceding period"
            f"{', no prior period' if missing_controls == 'drop' else ''}) were left out."
        )
    sub = df.loc[keep]
    yv = sub[outcome].to_numpy(dtype=float)
    vals = np.unique(yv)
    binary = bool(len(vals) <= 2 and np.isin(vals, [0.0, 1.0]).all())
    if model == "logit" and not binary:
        raise ValueError(
            f"{func}: model='logit' needs a 0/1 outcome, but column {outcome!r} takes values such as "
            f"{vals[:5].tolist()}. Use model='linear' for revenue, or a retained flag (bool / 0-1)."
        )
    if not yv.std() > 0:
        raise ValueError(f"{func}: outcome {outcome!r} is constant in the {len(sub)} usable rows; nothing to explain.")

    # ---- design: const, cx, controls (+ missing indicators), period effects
    cols = {"const": np.ones(len(sub)), cx: sub[cx].to_numpy(dtype=float)}
    roles = {"const": "intercept", cx: "cx"}
    patterns: dict[bytes, list[str]] = {}
    for c in controls:
        v = sub[c].to_numpy(dtype=float)
        miss = np.isnan(v)
        if miss.all():
            raise ValueError(f"{func}: control {c!r} is missing in every usable row; drop it from controls.")
        if miss.any():
            v = np.where(miss, np.nanmean(v), v)
            patterns.setdefault(miss.tobytes(), []).append(c)
        cols[c], roles[c] = v, "control"
    for key, members in patterns.items():
        name = f"missing {', '.join(members)}"
        cols[name], roles[name] = np.frombuffer(key, dtype=bool).astype(float), "missing indicator"
    if patterns:
        notes.append(
            f"{int(max(np.frombuffer(k, dtype=bool).sum() for k in patterns))} rows have no prior period: their "
            "controls were set to the observed mean and flagged by a missing indicator."
        )
    if period is not None:
        codes, levels = pd.factorize(sub[period], sort=True)
        for j in range(1, len(levels)):
            name = f"{period}={levels[j]}"
            cols[name], roles[name] = (codes == j).astype(float), "period effect"
    names = list(cols)
    x = np.column_stack([cols[c] for c in names])
    # nuisance columns (missing indicators, period effects) that are redundant given the
    # rest are dropped rather than refused; cx and the controls must be identified
    core = [j for j, c in enumerate(names) if roles[c] in ("intercept", "cx", "control")]
    nuis = [j for j, c in enumerate(names) if j not in core]
    keep_nuis = [nuis[j] for j in _independent_columns(x[:, nuis], x[:, core])]
    dropped_nuis = [names[j] for j in nuis if j not in keep_nuis]
    if dropped_nuis:
        notes.append(f"Redundant nuisance columns {dropped_nuis} were dropped (collinear with the rest).")
    sel = core + keep_nuis
    names = [names[j] for j in sel]
    x = x[:, sel]
    n, k = x.shape
    if n < k + 3:
        raise ValueError(f"{func}: only {n} usable customer-periods for {k} coefficients; need at least {k + 3}.")
    _check_design(x[:, 1:], names[1:], func)

    cust_codes, cust_u = pd.factorize(sub[customer], sort=True)
    agent_codes, agent_u = pd.factorize(sub[agent], sort=True)
    pair_codes = pd.factorize(pd.MultiIndex.from_arrays([cust_codes, agent_codes]))[0]
    n_cust, n_agent, n_pairs = len(cust_u), len(agent_u), int(pair_codes.max()) + 1
    groups = np.column_stack([cust_codes, agent_codes])
    df_t = min(n_cust, n_agent) - 1
    if min(n_cust, n_agent) < _MIN_CLUSTERS:
        msg = (f"only {min(n_cust, n_agent)} clusters in the smaller dimension ({customer}: {n_cust}, "
               f"{agent}: {n_agent}); two-way cluster-robust SEs are unreliable with fewer than ~20-50.")
        notes.append(msg[0].upper() + msg[1:])
        warnings.warn(f"{func}: {msg}", stacklevel=2)

    # ---- fit (statsmodels) with CGM two-way cluster-robust covariance
    converged = True
    cov_kw = dict(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
    if model == "linear":
        res = sm.OLS(yv, x).fit(**cov_kw)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = sm.Logit(yv, x).fit(disp=0, maxiter=100, **cov_kw)
            except Exception as exc:  # statsmodels raises PerfectSeparationError / LinAlgError
                raise ValueError(
                    f"{func}: the logit of {outcome!r} could not be fitted ({type(exc).__name__}: {exc}); "
                    "an outcome perfectly predicted by a column (separation) is the usual cause."
                ) from exc
        converged = bool(res.mle_retvals.get("converged", True))
        if not converged:
            notes.append(f"The logit of {outcome!r} did not converge; its estimates are not reliable.")
    beta = np.asarray(res.params, dtype=float)
    cov, psd_adjusted = _make_psd(np.asarray(res.cov_params(), dtype=float))
    if psd_adjusted:
        notes.append("The two-way covariance had a negative eigenvalue and was made positive semi-definite (CGM 2011).")
    tcrit = stats.t.ppf(1 - alpha / 2, df_t)

    def infer(est, se):
        tval = est / se if se > 0 else np.nan
        return se, est - tcrit * se, est + tcrit * se, float(2 * stats.t.sf(abs(tval), df_t)) if se > 0 else np.nan

    what = {"linear": "change in" if not binary else "change in the probability of", "logit": "change in the log-odds of"}[model]
    cx_words = (f"{what} {outcome} in a period per unit of {cx} received in the preceding period, "
                f"holding {', '.join(controls) or 'nothing'}{' and the period' if period else ''} fixed")
    rows = []
    for j, nm in enumerate(names):
        se, lo, hi, pv = infer(beta[j], float(np.sqrt(cov[j, j])))
        rows.append({"term": nm, "estimate": float(beta[j]), "se": se, "ci_low": lo, "ci_high": hi, "p": pv, "n": n,
                     "role": roles[nm], "estimand": cx_words if nm == cx else ""})
    ame = None
    j_cx = names.index(cx)
    if model == "logit":
        pr = expit(x @ beta)
        dens = pr * (1 - pr)
        ame = float(dens.mean() * beta[j_cx])
        grad = beta[j_cx] * (dens * (1 - 2 * pr)) @ x / n
        grad[j_cx] += dens.mean()
        se, lo, hi, pv = infer(ame, float(np.sqrt(grad @ cov @ grad)))
        rows.append({"term": f"AME {cx}", "estimate": ame, "se": se, "ci_low": lo, "ci_high": hi, "p": pv, "n": n,
                     "role": "ame",
                     "estimand": f"change in the probability of {outcome} per unit of {cx} received in the preceding "
                                 "period, averaged over customer-periods (average marginal effect)"})
    table = pd.DataFrame(rows)

    # ---- draws for products
    boot_names = names + ([f"AME {cx}"] if model == "logit" else [])
    draws = np.full((n_boot, len(boot_names)), np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        if boot == "normal":
            w_eig, u_eig = np.linalg.eigh(cov)
            root = u_eig * np.sqrt(np.clip(w_eig, 0, None))
            z = rng.standard_normal((n_boot, k))
            scale = np.sqrt(rng.chisquare(df_t, n_boot) / df_t)
            draws[:, :k] = beta + (z @ root.T) / scale[:, None]
            if model == "logit":
                for start in range(0, n_boot, _BATCH):
                    b = draws[start : start + _BATCH, :k]
                    pr_b = expit(b @ x.T)
                    draws[start : start + _BATCH, k] = (pr_b * (1 - pr_b)).mean(axis=1) * b[:, j_cx]
        else:
            if model == "linear":
                zz = np.column_stack([x, yv])
                outer = np.einsum("ni,nj->nij", zz, zz).reshape(n, (k + 1) ** 2)
            else:
                xx = np.einsum("ni,nj->nij", x, x).reshape(n, k * k)
            for start in range(0, n_boot, _BATCH):
                bsz = min(_BATCH, n_boot - start)
                w = _pigeonhole_weights(rng, cust_codes, agent_codes, n_cust, n_agent, bsz)
                if model == "linear":
                    draws[start : start + bsz] = _boot_linear(w, outer, k)
                else:
                    draws[start : start + bsz] = _boot_logit(w, x, xx, yv, beta, j_cx)
    boot_arr = draws
    ok = np.isfinite(boot_arr).all(axis=1)
    bt = boot_arr[ok]
    n_failed = int(n_boot - len(bt))
    if n_failed:
        notes.append(f"{n_failed} of {n_boot} pigeonhole resamples failed (singular design or no convergence) and were skipped.")
    if n_boot:
        q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
        enough = len(bt) >= 2
        table["se_boot"] = bt.std(axis=0, ddof=1) if enough else np.nan
        pct = np.percentile(bt, q, axis=0) if enough else np.full((2, len(boot_names)), np.nan)
        table["ci_low_boot"], table["ci_high_boot"] = pct[0], pct[1]

    fit = LoyaltyFit(
        method=(f"customer-level {'OLS' if model == 'linear' else 'logit'} of {outcome} on the preceding period's "
                f"{cx}; two-way cluster-robust SEs by {customer} and {agent} (CGM 2011)"
                + ((f"; pigeonhole bootstrap over {customer} x {agent} ({n_boot} resamples)" if boot == "pigeonhole"
                    else f"; {n_boot} draws from the two-way sampling distribution (multivariate t)") if n_boot else "")),
        n_obs=n, n_dropped=n_dropped, cluster=f"{customer} + {agent} (two-way)", n_clusters=min(n_cust, n_agent),
        alpha=alpha, notes=tuple(notes), model=model, outcome=outcome, cx=cx, customer=customer, agent=agent,
        binary=binary, n_customers=n_cust, n_agents=n_agent, n_pairs=n_pairs, df_t=df_t,
        psd_adjusted=psd_adjusted, converged=converged, ame=ame, boot_method=boot, n_boot=n_boot, n_boot_failed=n_failed,
        boot=pd.DataFrame(bt, columns=boot_names),
    )
    return Result(table, fit)


# --------------------------------------------------------------------------- money translation
@dataclass(frozen=True, kw_only=True)
class MoneyChainFit(Fit):
    """Fit record of :func:`money_chain`.

    Attributes
    ----------
    step : str
        The term of the mediation used as the EX -> CX step (``"total"``).
    combine : str
        How the two bootstraps were combined, in words.
    n_boot_chain, n_boot_outcomes : int, tuple of int
        Draws available from the mediation and from each loyalty model.
    boot : DataFrame
        Index-paired draws of every row of the table (resample i of each
        source paired with resample i of the others, which is one valid
        independent pairing), for combining further. The table's intervals use
        all pairs of draws.
    """

    step: str
    combine: str
    n_boot_chain: int
    n_boot_outcomes: tuple[int, ...]
    boot: pd.DataFrame | None = field(default=None, compare=False, repr=False)


_ASSUME_EX = (
    "Within {unit}: given each {unit}'s stable level and the {period}, changes in a person's {x} are unrelated "
    "to other causes of changes in the {y} of the customers they serve (no time-varying confounder such as a "
    "new manager moving both, no same-{period} feedback from {y} to {x})."
)
_ASSUME_EX_OTHER = (
    "{effects} effect: assumes nothing stable differs between {unit}s with high and low {x} that also moves {y}; "
    "stable confounders (site, manager, customer mix) inflate it, so it is not a causal step."
)
_ASSUME_CX = (
    "Given the customer's prior-period retention and revenue{and_period}, the {cx} a customer received in the "
    "preceding period is unrelated to other causes of their {outcome} (which agent they got, and how it went, is "
    "as good as random given their recent loyalty); {cx} precedes {outcome}, so reverse causation is excluded."
)
_ASSUME_PRODUCT = (
    "Both steps' assumptions, plus transportability: a change in {y} caused by {x} moves {outcome} as much as "
    "any other change in {y} of the same size (one effect of {y} whatever moved it), on the same {y} scale in "
    "both tables."
)


def money_chain(
    chain: Result,
    outcomes: Result | Sequence[Result],
    *,
    step: str = "total",
    percent: bool = True,
    currency: str = "revenue units",
    alpha: float | None = None,
) -> Result:
    r"""The money translation: +1 EX point -> +x CX -> +y points retention / +z revenue.

    Parameters
    ----------
    chain : Result
        From :func:`cxex_lab.models.mediation.mediation` with ``n_boot > 0``
        (default ``effects="within"``: the employee x wave panel, resampling
        employees).
    outcomes : Result or sequence of Result
        From :func:`loyalty` with ``n_boot > 0`` (customer-period table,
        two-way clustered by customer and agent), one per outcome
        (e.g. retained and revenue). Their ``cx`` must be the same measure as
        the mediation's ``y`` (e.g. CSAT 1-5).
    step : str
        The mediation term that is the EX -> CX step: ``"total"`` (default), or
        ``"indirect_total"`` for the part carried by the operational mediators.
    percent : bool
        Show effects on a 0/1 outcome in percentage points (x 100).
    currency : str
        Unit label of revenue-type outcomes.
    alpha : float, optional
        1 - confidence level (default: the mediation's).

    Returns
    -------
    Result
        ``table``: one row per step and per product, columns ``term, estimate,
        se, ci_low, ci_high, p, n, kind, unit, assumption, resampling``
        (``kind``: ``"step"`` or ``"product"``; estimates are point estimates,
        ``se`` the bootstrap SD, intervals percentile, ``p`` the bootstrap
        p-value). ``fit``: :class:`MoneyChainFit`.

    Notes
    -----
    Rows: :math:`\hat x` (CX per EX point, the within-employee total effect),
    :math:`\hat s_o` (outcome :math:`o` per CX point: the OLS slope, or for a
    logit the average marginal effect, x 100 for a 0/1 outcome) and the
    products :math:`\hat x\,\hat s_o` (outcome per EX point via CX).

    **Combining the draws.** The two steps are estimated on different
    observations with different sampling schemes (employee-waves resampled by
    employee; customer-periods two-way clustered by customer and agent), so
    there is no joint resample of both. The product's distribution is that of
    :math:`x^* s^*` with :math:`x^*` and :math:`s^*` drawn independently from the
    two bootstrap distributions; all :math:`B_1 \times B_2` pairs are used, so no
    Monte Carlo pairing noise is added. This treats the two estimates as
    independent. They share the agents (an agent's CSAT enters both), so their
    sampling errors could covary; the coverage simulation in
    ``tests/test_loyalty.py`` generates both tables from the same agents and
    measures that correlation and the product interval's coverage. With
    independent errors, :math:`\mathrm{Var}(\hat x \hat s) \approx s^2 \mathrm{Var}(\hat x)
    + x^2 \mathrm{Var}(\hat s) + \mathrm{Var}(\hat x)\mathrm{Var}(\hat s)`, which the
    independent product of draws reproduces.

    Checked against: the products' point estimates equal the product of the
    steps; interval coverage of the product on synthetic data where both steps
    are known (``tests/test_loyalty.py``).

    References
    ----------
    Heskett, J. L., Jones, T. O., Loveman, G. W., Sasser, W. E., & Schlesinger, L. A.
    (1994). Putting the service-profit chain to work. *Harvard Business Review*.
    MacKinnon, D. P., Lockwood, C. M., & Williams, J. (2004). Confidence limits for
    the indirect effect: distribution of the product and resampling methods.
    *Multivariate Behavioral Research*, 39(1), 99-128.
    Preacher, K. J., & Selig, J. P. (2012). Advantages of Monte Carlo confidence
    intervals for indirect effects. *Communication Methods and Measures*, 6(2), 77-98.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from cxex_lab.models import mediation, loyalty, money_chain
    >>> rng = np.random.default_rng(0)
    >>> panel = pd.DataFrame({"employee_id": np.repeat(np.arange(100), 4), "wave": np.tile(np.arange(1, 5), 100),
    ...                       "esat": rng.normal(3.5, 0.7, 400)})
    >>> panel["fcr"] = 0.05 * panel["esat"] + rng.normal(0, 0.05, 400)
    >>> panel["csat"] = 2 + 0.3 * panel["esat"] + rng.normal(0, 0.3, 400)
    >>> med = mediation(panel, "esat", ["fcr"], "csat", n_boot=500, seed=1)
    >>> cp = pd.DataFrame({"customer_id": rng.integers(0, 2000, 6000), "period": rng.integers(2, 6, 6000),
    ...                    "employee_id": rng.integers(0, 100, 6000)}).drop_duplicates(["customer_id", "period"])
    >>> cp["csat_prev"] = rng.normal(4, 0.8, len(cp))
    >>> cp["revenue"] = 100 + 15 * (cp["csat_prev"] - 4) + rng.normal(0, 30, len(cp))
    >>> rev = loyalty(cp, "csat_prev", "revenue", controls=None, n_boot=500, seed=2)
    >>> table, fit = money_chain(med, rev)
    >>> table["term"].tolist()
    ['esat -> csat', 'csat -> revenue', 'esat -> csat -> revenue']
    >>> row = table.set_index("term").loc["esat -> csat -> revenue"]
    >>> bool(row["ci_low"] < 0.3 * 15 < row["ci_high"])  # the known product
    True
    """
    from cxex_lab.models.mediation import _boot_summary

    func = "money_chain"
    if not isinstance(chain, Result) or not isinstance(chain.fit, MediationFit):
        raise ValueError(f"{func}: chain must be the Result of mediation(...), got {type(chain).__name__}.")
    outs = [outcomes] if isinstance(outcomes, Result) else list(outcomes)
    if not outs:
        raise ValueError(f"{func}: give at least one loyalty(...) result in outcomes.")
    for o in outs:
        if not isinstance(o, Result) or not isinstance(o.fit, LoyaltyFit):
            raise ValueError(f"{func}: every outcome must be the Result of loyalty(...), got {type(o).__name__}.")
    mf = chain.fit
    cb = mf.boot if mf.boot is not None else pd.DataFrame()
    if step not in cb.columns or len(cb) < 2:
        raise ValueError(
            f"{func}: the mediation result has no bootstrap draws of {step!r} (n_boot={mf.n_boot}, terms "
            f"{list(cb.columns)[:6]}...). Fit mediation with n_boot >= 200 and pick step from its terms."
        )
    alpha = mf.alpha if alpha is None else alpha
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha}.")
    x, y = mf.x, mf.y
    est_x = float(chain.table.set_index("term").loc[step, "estimate"])
    draws_x = cb[step].to_numpy(float)
    notes = list(mf.notes)
    if mf.effects == "within":
        assume_x = _ASSUME_EX.format(unit=mf.unit, period=mf.period or "period", x=x, y=y)
    else:
        assume_x = _ASSUME_EX_OTHER.format(effects=mf.effects.capitalize(), unit=mf.unit or "unit", x=x, y=y)
        notes.append(f"The {x} -> {y} step uses effects={mf.effects!r}, not the within-{mf.unit or 'unit'} design: "
                     "stable confounders can inflate every money figure below.")
    res_x = f"{mf.cluster or 'row'} bootstrap ({len(draws_x)} draws)"

    rows, paired = [], {}
    n_pair = len(draws_x)

    def add(term, kind, est, d, n, unit, assumption, resampling):
        se, lo, hi, pv = _boot_summary(d, alpha)
        rows.append({"term": term, "estimate": est, "se": se, "ci_low": lo, "ci_high": hi, "p": pv, "n": n,
                     "kind": kind, "unit": unit, "assumption": assumption, "resampling": resampling})

    step_term = f"{x} -> {y}" if step == "total" else f"{x} -> {y} ({step})"
    add(step_term, "step", est_x, draws_x, mf.n_obs, f"{y} points per {x} point", assume_x, res_x)
    paired[step_term] = draws_x
    n_boot_out = []
    for o in outs:
        lf, tab = o.fit, o.table.set_index("term")
        term_s = f"AME {lf.cx}" if lf.model == "logit" else lf.cx
        ob = lf.boot if lf.boot is not None else pd.DataFrame()
        if term_s not in ob.columns or len(ob) < 2:
            raise ValueError(
                f"{func}: the loyalty result for {lf.outcome!r} has no bootstrap draws of {term_s!r} "
                f"(n_boot={lf.n_boot}). Fit loyalty with n_boot >= 200."
            )
        scale = 100.0 if (lf.binary and percent) else 1.0
        est_s = float(tab.loc[term_s, "estimate"]) * scale
        draws_s = ob[term_s].to_numpy(float) * scale
        n_boot_out.append(len(draws_s))
        n_pair = min(n_pair, len(draws_s))
        if lf.binary:
            u = "percentage points" if percent else "probability"
            unit_s, unit_p = f"{u} of {lf.outcome} per {y} point", f"{u} of {lf.outcome} per {x} point"
        else:
            unit_s = f"{currency} of {lf.outcome} per customer per period, per {y} point"
            unit_p = f"{currency} of {lf.outcome} per customer per period, per {x} point"
        res_s = (f"pigeonhole bootstrap over {lf.customer} x {lf.agent} ({len(draws_s)} draws)"
                 if lf.boot_method == "pigeonhole" else
                 f"{len(draws_s)} draws from the two-way ({lf.customer}, {lf.agent}) sampling distribution")
        assume_s = _ASSUME_CX.format(cx=lf.cx, outcome=lf.outcome, and_period=" and the period" if any(
            tab["role"].eq("period effect")) else "")
        if lf.model == "logit":
            assume_s += " Read as an average marginal effect of the logit."
        add(f"{y} -> {lf.outcome}", "step", est_s, draws_s, lf.n_obs, unit_s, assume_s, res_s)
        paired[f"{y} -> {lf.outcome}"] = draws_s
        prod = np.multiply.outer(draws_x, draws_s).ravel()  # all B1 x B2 independent pairs
        add(f"{x} -> {y} -> {lf.outcome}", "product", est_x * est_s, prod, lf.n_obs, unit_p,
            _ASSUME_PRODUCT.format(x=x, y=y, outcome=lf.outcome),
            f"independent draws of both steps multiplied ({len(draws_x)} x {len(draws_s)} pairs)")
        paired[f"{x} -> {y} -> {lf.outcome}"] = (draws_x, draws_s)
        notes.extend(n for n in lf.notes if n not in notes)
    boot = pd.DataFrame({
        k: (v[0][:n_pair] * v[1][:n_pair]) if isinstance(v, tuple) else v[:n_pair] for k, v in paired.items()
    })
    table = pd.DataFrame(rows)
    fit = MoneyChainFit(
        method=(f"money translation: {x} -> {y} ({mf.effects} mediation, {mf.cluster} bootstrap) times "
                f"{y} -> outcome (customer-level, two-way clustered); independent draws multiplied"),
        n_obs=int(mf.n_obs), n_dropped=0, cluster=f"{mf.cluster} (step 1); customer x agent (step 2)",
        n_clusters=mf.n_clusters, alpha=alpha, notes=tuple(notes), step=step,
        combine="independent bootstrap draws of the two steps multiplied, all pairs",
        n_boot_chain=len(draws_x), n_boot_outcomes=tuple(n_boot_out), boot=boot,
    )
    return Result(table, fit)
