r"""Ground-truth simulator: a structural causal model of the EX -> CX chain.

This module is the **test oracle** of cxex-lab. It generates all five tables of
the data contract from stated parameters, and returns in ``Study.truth`` every
parameter together with the derived quantities each estimator targets. The
estimators (``linkage``, ``metrics``, ``models``) never import this module; only
power planning drives it.

Model
-----
Indices: site :math:`s`, team :math:`t(s)`, employee :math:`i(t)`, survey wave
:math:`w = 1..W` (waves are ``wave_days`` apart; *period* :math:`w` is the time
from wave :math:`w` to wave :math:`w+1`), interaction :math:`k` of employee
:math:`i` in period :math:`w`.

**Touchpoints.** For each of the eight journey touchpoints :math:`j` the employee's
Likert answer is :math:`tp_{jiw} = \mathrm{cut}(m_{jt} + h\,H_{iw} + \sqrt{1-h^2}\,e_{jiw})`
(1..5), with a stable team climate :math:`m_{jt} \sim N(0, \sigma_{tp})`, a halo
:math:`H_{iw}` shared by the items of one answer, and thresholds chosen for a
realistic marginal distribution. Empowerment and customer-insight access are
built the same way (1..5). The touchpoint contribution is

.. math:: T_{iw} = \sum_j \beta_j (tp_{jiw} - \bar c) + \gamma_{ins}(ins_{iw} - \bar c) + \gamma_{emp}(emp_{iw} - \bar c)

where :math:`\bar c` is the population mean of an item (so :math:`\mu_{ex}` is the mean EX), and :math:`\bar T_i = E[T_{iw} \mid \text{team}]` (computed exactly from the
normal CDF). One point more on touchpoint :math:`j` raises same-wave EX by
:math:`\beta_j` (``tp_weights``; several are exactly zero).

**Latent EX and CX (employee-wave).**

.. math::

    EX_{iw} &= \mu_{ex} + A_i + p_{iw}, \qquad
    A_i = \lambda_{ex} u_s + a_i + \bar T_i \\
    ops^m_{iw} &= base_m + \alpha_m (EX_{iw} - \mu_{ex}) + \eta^m_{iw}
        \quad (m \in \{fcr, aht, transfer\}) \\
    CX_{iw} &= \mu_{cx} + B^0_i + \delta (EX_{iw}-\mu_{ex})
        + \sum_m b_m (ops^m_{iw} - base_m) + q_{iw}

with a site effect :math:`u_s` that raises both EX and CX (``site_sd``,
loadings ``site_ex``/``site_cx``: the confounder) and employee traits
:math:`(a_i, b_i)` drawn jointly with correlation ``ri_corr``;
:math:`B^0_i = \lambda_{cx} u_s + b_i`. Attrition probability per period and
EX survey response also depend on latent EX (not missing at random).

**EX survey answers and the common-method halo.** A responding employee's
eNPS, eSat and EES are ordinal cuts of :math:`EX_{iw} - \mu_{ex} + N(0, \sigma_{ex,item})`
(scale reference spread ``ex_scale_sd`` :math:`= s_{ex}`). The *reported*
answers of one survey response share a common-method factor
:math:`h_{iw} \sim N(0, 1)` (``cm_halo`` :math:`= c`; drawn for every
employee-wave from its own random stream):

.. math::

    \widetilde{tp}_{jiw} = \mathrm{cut}(z_{jiw} + c\,h_{iw}), \qquad
    \widetilde{esat}_{iw} = \mathrm{cut}(EX_{iw} - \mu_{ex} + N(0, \sigma_{ex,item}) + c\,s_{ex}\,h_{iw})

for the eight touchpoints, empowerment and insight access, where
:math:`z_{jiw}` is the latent propensity of the *causal* item
:math:`tp_{jiw} = \mathrm{cut}(z_{jiw})` above. The causal items (which drive
EX, spillover and the moderations) and latent EX never contain :math:`h`; only
``ex_responses`` does (eNPS and EES do not). So the same person's eSat and
touchpoint answers share variance that is not causal: driver weights fitted on
reported answers absorb it. With ``cm_halo=0`` the reported items equal the causal
items (``latent["employee_waves"]``) exactly.

**Within-employee dynamics.** With :math:`d = \delta + \sum_m \alpha_m b_m`
(the total contemporaneous effect of EX on CX) the within parts
:math:`p_{iw}` and :math:`c_{iw} = d\,p_{iw} + b\cdot\eta_{iw} + q_{iw}` evolve as

.. math::

    p_{iw} &= \phi_{ex} p_{i,w-1} + g_{i,w-1}\, c_{i,w-1} + (T_{iw} - \bar T_i) + \epsilon^p_{iw} \\
    q_{iw} &= \phi_{c,i,w-1} (c_{i,w-1} - d\,p_{i,w-1}) + k_{i,w-1}\, p_{i,w-1} + \epsilon^q_{iw}

with :math:`\phi_{c,iw} = \phi_{cx} - d g_{iw}`, :math:`k_{iw} = \kappa - d(\phi_{ex}-\phi_{c,iw})`
and the CX -> EX cross-lag moderated by customer-insight access (design idea 7):

.. math:: g_{iw} = g + g_{ins}\,(ins_{iw} - \bar c)

where :math:`ins_{iw}` is the causal insight-access item of wave :math:`w` (so the
lag from wave :math:`w-1` to :math:`w` depends on the insight access reported at
wave :math:`w-1`, the same wave as the lagged CX), :math:`\bar c` its population
mean, :math:`g` = ``cx_to_ex`` and :math:`g_{ins}` = ``insight_cx_to_ex``.
Substituting shows that :math:`(p, c)` is **exactly** a VAR(1),

.. math::

    p_{iw} = \phi_{ex} p_{i,w-1} + g_{i,w-1}\, c_{i,w-1} + \ldots, \qquad
    c_{iw} = \phi_{cx} c_{i,w-1} + \kappa\, p_{i,w-1} + \ldots

so with ``insight_cx_to_ex=0`` the RI-CLPM's within-unit lagged effects are exactly
the stated parameters ``ar_ex`` (:math:`\phi_{ex}`), ``ar_cx`` (:math:`\phi_{cx}`),
``ex_to_cx`` (:math:`\kappa`) and ``cx_to_ex`` (:math:`g`). With the moderation on,
:math:`\phi_{ex}`, :math:`\phi_{cx}` and :math:`\kappa` stay exact and the
cross-lag is a coefficient that varies with :math:`ins_{i,w-1}`; its population
average is exactly :math:`g` (the moderator is centred at its population mean and
independent of the innovations), which is what an RI-CLPM without the interaction
estimates, while a model with :math:`c_{w-1} \times (ins_{w-1} - \bar c)` recovers
:math:`g_{ins}`. Meanwhile the random intercepts
:math:`A_i` and :math:`B_i = B^0_i + d A_i` are correlated (between-unit
confounding that biases the classic CLPM). The process starts 30 waves before
wave 1 (burn-in) so wave 1 is drawn from the stationary distribution.

**Interactions.** Each active employee-period has Poisson(``interactions_per_wave``)
interactions at uniform times. First-contact resolution and transfer are
Bernoulli with the employee-wave rates, handle time is log-normal around the
employee-wave mean. The latent CX of interaction :math:`k` is

.. math::

    y_k = CX_{iw} + o_k + \lambda_k\, (y_{k-1} - CX_{i,w(k-1)}) + \epsilon_k, \qquad
    \lambda_k = \lambda_0 + \lambda_{emp} (emp_{iw} - 3) + \lambda_{ins} (ins_{iw} - 3)

where :math:`o_k` is the interaction's own (mean-zero) operational deviation
:math:`b_{fcr}(fcr_k - rate) + b_{tr}(tr_k - rate) + b_{aht}(aht_k - \overline{aht})`:
the *vicious circle*, a mean-zero carry-over from the same agent's previous
interaction that shrinks with empowerment and with access to customer insight
(``spillover``, ``spillover_empowerment``, ``insight_spillover``; :math:`emp_{iw}`
and :math:`ins_{iw}` are the agent's causal items of the current wave). CSAT (1-5), NPS (0-10) and CES (1-7, higher =
easier) are ordinal cuts of :math:`y_k + N(0, \sigma_{item})`. Extremes respond
more: response probability is ``cx_response_rate`` scaled by
:math:`1 + \text{extremity}(|z_k| - E|z|)`.

**Loyalty.** Customers (a heavy-tailed mix of frequent and rare callers) have
interactions with many agents, across sites. Let :math:`\bar y_{c,p}` be the
mean latent CX (centred at :math:`\mu_{cx}`) of customer :math:`c`'s
interactions in period :math:`p` and :math:`n_{c,p}` their number. The outcome
of customer-period :math:`p` (retained at the end of :math:`p`; revenue in
:math:`p`) depends on the CX received in the **preceding** period:

.. math::

    \text{logit}\,P(\text{retained}_{c,p}) &= \text{logit}(r_0) + r_{cx}\,\bar y_{c,p-1} \\
    \text{revenue}_{c,p} &= v_0 + v_{cx}\,\bar y_{c,p-1} + \nu_c + N(0, \sigma_v),
    \qquad \nu_c \sim N(0, \sigma_\nu)

with rows for :math:`p = 2..W` whose customer had :math:`n_{c,p-1} \ge 1`
(``retention_base`` :math:`r_0`, ``retention_cx`` :math:`r_{cx}`,
``revenue_base``, ``revenue_cx``, ``revenue_sd``, ``customer_revenue_sd``).
Retention has no customer random effect, so :math:`r_{cx}` is both the
conditional and the marginal (population-averaged) logit coefficient; the stable
trait :math:`\nu_c` makes the prior period's revenue an informative control
without confounding :math:`\bar y` (customers meet agents at random). Retention is
recorded, not enacted: a customer who is not retained may still call later.
``latent["customer_periods"]`` holds :math:`\bar y_{c,p-1}` (``ybar_prev``) and
:math:`n_{c,p-1}` (``n_prev``) of every outcome row.

Truth
-----
``Study.truth`` (and ``truth.json`` in a saved study) holds ``params`` (every
parameter), ``derived`` (estimands: within-unit lags, the mediation paths and
indirect effects, the between-unit correlation of the random intercepts, the
spillover by empowerment and insight level, the CX -> EX cross-lag by insight
level, the driver weights, the common-method share, loyalty coefficients and
their timing), ``derivation`` (how each derived value follows from the
parameters), ``study`` (size, wave openings, numbers of interactions and
customers, the realised site effects) and ``observed``: empty here, it is where
the coverage harness records each finding's observed-scale truth (the value its
estimator converges to on the observed pipeline) as
``{key: {"value", "latent", "derivation"}}``.

Random streams and scale
------------------------
The seed drives one main stream (employee-wave process, employees, attrition,
EX survey) and spawned child streams for the common-method halo, the customer
population, the customer outcomes, the orphan responses and each site's
interactions. So the halo, fixed ``site_effects`` or a ``tables=`` subset change
nothing else in a study, and :func:`write_study` can generate a very large study
site by site (customers are one study-wide population; their per-period CX sums
are accumulated across sites) and write the same tables :func:`simulate_study`
returns.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.special import expit, logit, ndtr
from scipy.stats import norm

from cxex_lab.study import Study

__all__ = [
    "DEFAULT_PARAMS",
    "TOUCHPOINTS",
    "simulate_study",
    "simulate_panel",
    "derive_truth",
    "write_study",
]

#: Touchpoints of the employee journey, in journey order (column ``tp_<name>``).
TOUCHPOINTS: tuple[str, ...] = (
    "hiring",
    "training",
    "post_training_support",
    "daily_work",
    "coaching",
    "pip",
    "recognition",
    "promotion",
)

#: Every parameter of the model with its default. Pass any of them as a
#: keyword to :func:`simulate_study`; set a path's parameter to 0 to remove it.
DEFAULT_PARAMS: dict[str, Any] = {
    # structure
    "teams_per_site": 4,
    "interactions_per_wave": 50.0,  # mean interactions per active employee-period
    "customers_per_interaction": 0.3,  # n_customers = this x expected interactions
    "wave_days": 91,
    "start_date": "2025-01-06",
    # between-unit differences (the confounders)
    "mu_ex": 0.0,
    "mu_cx": 0.0,
    "site_sd": 0.35,
    "site_ex": 1.0,
    "site_cx": 1.0,
    "ri_sd_ex": 0.5,
    "ri_sd_cx": 0.5,
    "ri_corr": 0.5,
    # touchpoints -> EX (one point on the 1-5 item -> latent EX)
    "tp_weights": {
        "hiring": 0.0,
        "training": 0.15,
        "post_training_support": 0.08,
        "daily_work": 0.25,
        "coaching": 0.20,
        "pip": 0.0,
        "recognition": 0.12,
        "promotion": 0.0,
    },
    "tp_team_sd": 0.5,
    "tp_halo": 0.3,
    "insight_to_ex": 0.10,
    "empowerment_to_ex": 0.0,
    # within-employee lagged dynamics (exactly the RI-CLPM estimands)
    "ar_ex": 0.4,
    "ar_cx": 0.3,
    "ex_to_cx": 0.25,
    "cx_to_ex": 0.05,
    # CX -> EX cross-lag per point of the previous wave's insight access above its
    # population mean (3.35 at tp_team_sd=0.5): 0.003 at insight 1, 0.083 at insight 5
    "insight_cx_to_ex": 0.02,
    "innov_sd_ex": 0.4,
    "innov_sd_cx": 0.4,
    # EX -> operations -> CX (per unit of latent EX; ops in natural units)
    "ops_base": {"fcr": 0.72, "aht": 7.0, "transfer": 0.12},
    "ex_to_ops": {"fcr": 0.05, "aht": -0.5, "transfer": -0.03},
    "ops_to_cx": {"fcr": 1.5, "aht": -0.10, "transfer": -1.0},
    "ops_sd": {"fcr": 0.04, "aht": 0.6, "transfer": 0.025},
    "ex_direct_cx": 0.20,
    # interaction level
    "interaction_sd": 0.8,
    "spillover": 0.25,
    "spillover_empowerment": -0.05,
    "insight_spillover": -0.04,  # carry-over per point of insight access above 3
    "aht_log_sd": 0.35,
    "channel_probs": {"voice": 0.6, "chat": 0.3, "email": 0.1},
    # measurement (latent -> ordinal survey answers)
    "cx_item_sd": 0.5,
    "ex_item_sd": 0.35,
    "cx_scale_sd": 1.4,
    "ex_scale_sd": 1.0,
    # common-method halo: one respondent-wave factor on the *reported* eSat,
    # touchpoint, empowerment and insight answers of an EX survey response
    "cm_halo": 0.35,
    # survey response and attrition (not missing completely at random)
    "cx_response_rate": 0.2,
    "cx_response_extremity": 0.8,
    "ex_response_rate": 0.85,
    "ex_response_ex": 0.6,
    "attrition_rate": 0.05,
    "attrition_ex": -0.6,
    # loyalty
    "retention_base": 0.85,
    "retention_cx": 0.6,
    "revenue_base": 100.0,
    "revenue_cx": 15.0,
    "revenue_sd": 30.0,
    "customer_revenue_sd": 20.0,  # stable customer revenue trait nu_c (persistence)
    # data-quality realism: CX responses whose interaction is not in the log
    "orphan_responses": 0,
}

# Marginal distributions the ordinal cuts aim at when the latent score is at
# its reference mean and spread (realistic contact-centre shapes).
_SCALE_TARGETS: dict[str, list[float]] = {
    "csat": [0.07, 0.08, 0.15, 0.30, 0.40],
    "nps": [0.03, 0.02, 0.02, 0.03, 0.03, 0.05, 0.07, 0.12, 0.18, 0.20, 0.25],
    "ces": [0.04, 0.05, 0.08, 0.13, 0.22, 0.26, 0.22],
    "enps": [0.04, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.15, 0.17, 0.14, 0.14],
    "esat": [0.06, 0.12, 0.22, 0.38, 0.22],
    "ees": [0.05, 0.08, 0.12, 0.20, 0.25, 0.18, 0.12],
    "tp": [0.07, 0.15, 0.30, 0.30, 0.18],
}
_SCALE_LOW = {"csat": 1, "nps": 0, "ces": 1, "enps": 0, "esat": 1, "ees": 1, "tp": 1}
_BURN_IN = 30


def _thresholds(name: str, sd: float) -> np.ndarray:
    """Cut points (in latent units, centred at 0) giving the target marginal."""
    cum = np.cumsum(_SCALE_TARGETS[name])[:-1]
    return norm.ppf(cum) * sd


def _cut(x: np.ndarray, name: str, sd: float) -> np.ndarray:
    """Map latent scores to the ordinal scale ``name`` (integers)."""
    return np.searchsorted(_thresholds(name, sd), x).astype("int64") + _SCALE_LOW[name]


def _expected_item(m: np.ndarray) -> np.ndarray:
    """E[tp | team climate m] for a touchpoint item with unit individual spread."""
    tau = _thresholds("tp", math.sqrt(1.0))
    return 1.0 + ndtr(np.subtract.outer(m, tau)).sum(axis=-1)


def _item_centre(team_sd: float) -> float:
    """Population mean of a 1-5 item when team climates are N(0, team_sd) (Gauss-Hermite)."""
    x, w = np.polynomial.hermite_e.hermegauss(64)
    return float((_expected_item(x * team_sd) * w).sum() / w.sum())


def _item_team_variance(team_sd: float) -> float:
    """Var over team climates m ~ N(0, team_sd) of E[item | m] (Gauss-Hermite, 64 nodes)."""
    x, w = np.polynomial.hermite_e.hermegauss(64)
    e = _expected_item(x * team_sd)
    w = w / w.sum()
    return float((w * e**2).sum() - (w * e).sum() ** 2)


def _merge_params(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(
            f"simulate: unknown parameter(s) {unknown}. Valid parameters: {sorted(DEFAULT_PARAMS)}"
        )
    p = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_PARAMS.items()}
    for key, value in params.items():
        if isinstance(DEFAULT_PARAMS[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"simulate: parameter {key!r} must be a dict like {DEFAULT_PARAMS[key]}")
            bad = sorted(set(value) - set(DEFAULT_PARAMS[key]))
            if bad:
                raise ValueError(
                    f"simulate: parameter {key!r} has unknown key(s) {bad}; "
                    f"valid keys: {sorted(DEFAULT_PARAMS[key])}"
                )
            p[key].update(value)
        else:
            p[key] = value
    centre = _item_centre(p["tp_team_sd"])
    for ins in (1.0, 5.0):  # the cross-lag varies with insight access: check both ends
        g = p["cx_to_ex"] + p["insight_cx_to_ex"] * (ins - centre)
        phi = np.array([[p["ar_ex"], g], [p["ex_to_cx"], p["ar_cx"]]])
        if np.max(np.abs(np.linalg.eigvals(phi))) >= 1:
            raise ValueError(
                "simulate: the lagged effects (ar_ex, ar_cx, ex_to_cx, cx_to_ex + insight_cx_to_ex*"
                f"(insight - {centre:.3f}) at insight {ins:.0f}) make the within-employee process "
                "explosive (largest eigenvalue >= 1); use smaller values."
            )
    if not 0 <= p["cm_halo"]:
        raise ValueError(f"simulate: cm_halo must be >= 0 (0 = no common-method halo), got {p['cm_halo']}")
    if not 0 <= p["tp_halo"] < 1:
        raise ValueError(f"simulate: tp_halo must be in [0, 1), got {p['tp_halo']}")
    return p


def _total_contemporaneous(p: dict[str, Any]) -> float:
    """d = direct + sum_m alpha_m b_m: same-wave effect of latent EX on latent CX."""
    return p["ex_direct_cx"] + sum(p["ex_to_ops"][m] * p["ops_to_cx"][m] for m in p["ops_base"])


def _check_site_effects(site_effects: Sequence[float] | None, n_sites: int) -> np.ndarray | None:
    if site_effects is None:
        return None
    try:
        u = np.asarray(site_effects, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"simulate: site_effects must be a list of {n_sites} numbers, got {site_effects!r}") from err
    if u.ndim != 1 or len(u) != n_sites:
        raise ValueError(
            f"simulate: site_effects has {u.size} value(s) but the study has n_sites={n_sites}; "
            "give one latent site effect per site (S01, S02, ... in order)"
        )
    if not np.isfinite(u).all():
        raise ValueError(f"simulate: site_effects must be finite numbers, got {u.tolist()}")
    return u


def _spawn(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """Independent child streams of ``rng`` that leave its own stream untouched."""
    try:
        return rng.spawn(n)
    except (AttributeError, TypeError, ValueError):  # a bit generator without a seed sequence
        return [np.random.default_rng(s) for s in rng.integers(0, 2**63, size=n)]


# --------------------------------------------------------------------------- panel
def _draw_items(rng: np.random.Generator, climate: np.ndarray, halo: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1-5 items for one wave. climate: (n, J) team means.

    Returns the (n, J) integer items and their latent propensities ``z`` (the
    items are ``cut(z)``; the reported answers add the common-method halo to ``z``).
    """
    n, j = climate.shape
    h = rng.standard_normal((n, 1))
    e = rng.standard_normal((n, j))
    z = climate + halo * h + math.sqrt(1 - halo**2) * e
    return _cut(z, "tp", 1.0), z


def _panel_process(
    rng: np.random.Generator,
    p: dict[str, Any],
    n_waves: int,
    site_of: np.ndarray,
    team_of: np.ndarray,
    n_sites: int,
    n_teams: int,
    site_effects: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Latent employee-wave process (vectorised over employees).

    Returns arrays of shape (n, W) for EX, CX, ops and items; (n,) for stable parts.
    """
    n = len(team_of)
    items = list(TOUCHPOINTS) + ["insight", "empowerment"]
    w_items = np.array(
        [p["tp_weights"][t] for t in TOUCHPOINTS] + [p["insight_to_ex"], p["empowerment_to_ex"]]
    )
    climate_team = rng.normal(0.0, p["tp_team_sd"], size=(n_teams, len(items)))
    climate = climate_team[team_of]
    centre = _item_centre(p["tp_team_sd"])  # items enter centred at their population mean
    t_bar = ((_expected_item(climate) - centre) * w_items).sum(axis=1)

    u_drawn = rng.normal(0.0, p["site_sd"], size=n_sites)  # drawn even when fixed: same stream
    u_sites = u_drawn if site_effects is None else np.asarray(site_effects, dtype=float)
    u_site = u_sites[site_of]
    cov = np.array(
        [
            [p["ri_sd_ex"] ** 2, p["ri_corr"] * p["ri_sd_ex"] * p["ri_sd_cx"]],
            [p["ri_corr"] * p["ri_sd_ex"] * p["ri_sd_cx"], p["ri_sd_cx"] ** 2],
        ]
    )
    traits = rng.multivariate_normal([0.0, 0.0], cov, size=n)
    a_between = p["site_ex"] * u_site + traits[:, 0] + t_bar
    b0_between = p["site_cx"] * u_site + traits[:, 1]

    ops = list(p["ops_base"])
    alpha = np.array([p["ex_to_ops"][m] for m in ops])
    bvec = np.array([p["ops_to_cx"][m] for m in ops])
    ops_sd = np.array([p["ops_sd"][m] for m in ops])
    d = _total_contemporaneous(p)
    phi_c = p["ar_cx"] - d * p["cx_to_ex"]
    k = p["ex_to_cx"] - d * (p["ar_ex"] - phi_c)

    ex = np.empty((n, n_waves))
    cx = np.empty((n, n_waves))
    ex_w = np.empty((n, n_waves))
    cx_w = np.empty((n, n_waves))
    ops_out = np.empty((n, n_waves, len(ops)))
    item_out = np.empty((n, n_waves, len(items)), dtype="int64")
    z_out = np.empty((n, n_waves, len(items)))
    pw = np.zeros(n)
    cw = np.zeros(n)
    g, g_ins = p["cx_to_ex"], p["insight_cx_to_ex"]
    ins_col = items.index("insight")
    ins_prev = np.full(n, centre)
    for step in range(_BURN_IN + n_waves):
        it, z_items = _draw_items(rng, climate, p["tp_halo"])
        t_now = ((it - centre) * w_items).sum(axis=1)
        eta = rng.standard_normal((n, len(ops))) * ops_sd
        if g_ins:
            # insight access of the previous wave moderates the CX -> EX cross-lag; phi_c and
            # k follow per employee so that the CX equation keeps ar_cx and ex_to_cx exactly
            g_iw = g + g_ins * (ins_prev - centre)
            phi_c_iw = p["ar_cx"] - d * g_iw
            k_iw = p["ex_to_cx"] - d * (p["ar_ex"] - phi_c_iw)
        else:
            g_iw, phi_c_iw, k_iw = g, phi_c, k
        p_new = (
            p["ar_ex"] * pw
            + g_iw * cw
            + (t_now - t_bar)
            + rng.normal(0.0, p["innov_sd_ex"], n)
        )
        q_new = phi_c_iw * (cw - d * pw) + k_iw * pw + rng.normal(0.0, p["innov_sd_cx"], n)
        c_new = q_new + d * p_new + eta @ bvec
        pw, cw = p_new, c_new
        ins_prev = it[:, ins_col]
        w = step - _BURN_IN
        if w >= 0:
            ex_dev = a_between + pw
            ex[:, w] = p["mu_ex"] + ex_dev
            ex_w[:, w] = pw
            cx_w[:, w] = cw
            ops_out[:, w, :] = np.array([p["ops_base"][m] for m in ops]) + np.outer(ex_dev, alpha) + eta
            # CX level: the contemporaneous chain on the *between* part too (B = B0 + d A)
            cx[:, w] = p["mu_cx"] + b0_between + d * a_between + cw
            item_out[:, w, :] = it
            z_out[:, w, :] = z_items
    ops_out[..., ops.index("fcr")] = np.clip(ops_out[..., ops.index("fcr")], 0.02, 0.98)
    ops_out[..., ops.index("transfer")] = np.clip(ops_out[..., ops.index("transfer")], 0.0, 0.9)
    ops_out[..., ops.index("aht")] = np.clip(ops_out[..., ops.index("aht")], 1.0, None)
    return {
        "ex": ex,
        "cx": cx,
        "ex_within": ex_w,
        "cx_within": cx_w,
        "ex_between": a_between,
        "cx_between": b0_between + d * a_between,
        "ops": ops_out,
        "items": item_out,
        "item_z": z_out,
        "item_names": np.array(items),
        "site_effects": u_sites,
    }


def simulate_panel(
    n_units: int = 500,
    n_waves: int = 5,
    seed: int | np.random.Generator | None = None,
    missing: float = 0.0,
    **params: Any,
) -> pd.DataFrame:
    """Simulate only the latent employee-wave panel (fast; for power and panel tests).

    The panel follows exactly the within-employee VAR(1) of the full model, so a
    correctly specified RI-CLPM recovers ``ar_ex``, ``ar_cx``, ``ex_to_cx`` and
    ``cx_to_ex`` (with ``insight_cx_to_ex != 0``, the default, the CX -> EX lag
    varies with insight access and ``cx_to_ex`` is its population average; pass
    ``insight_cx_to_ex=0`` for a homogeneous lag). No sites or teams structure
    beyond one team per 10 units.

    Parameters
    ----------
    n_units, n_waves : int
        Panel size.
    seed : int or numpy.random.Generator, optional
        Randomness source; the same seed gives the same panel.
    missing : float
        Share of unit-wave cells set missing completely at random (0 = complete).
    **params
        Any of :data:`DEFAULT_PARAMS`.

    Returns
    -------
    DataFrame
        Columns ``unit``, ``wave``, ``ex``, ``cx``, ``fcr``, ``aht``, ``transfer``,
        one row per unit-wave (rows of missing cells are kept with NaN values).

    Examples
    --------
    >>> panel = simulate_panel(200, 4, seed=1, ex_to_cx=0.3)
    >>> panel.shape
    (800, 7)
    """
    p = _merge_params(params)
    rng = np.random.default_rng(seed)
    n_teams = max(1, n_units // 10)
    team_of = np.arange(n_units) % n_teams
    site_of = team_of % max(1, n_teams // 4 or 1)
    n_sites = int(site_of.max()) + 1
    proc = _panel_process(rng, p, n_waves, site_of, team_of, n_sites, n_teams)
    df = pd.DataFrame(
        {
            "unit": np.repeat(np.arange(n_units), n_waves),
            "wave": np.tile(np.arange(1, n_waves + 1), n_units),
            "ex": proc["ex"].ravel(),
            "cx": proc["cx"].ravel(),
            "fcr": proc["ops"][..., 0].ravel(),
            "aht": proc["ops"][..., 1].ravel(),
            "transfer": proc["ops"][..., 2].ravel(),
        }
    )
    if missing > 0:
        drop = rng.random(len(df)) < missing
        df.loc[drop, ["ex", "cx", "fcr", "aht", "transfer"]] = np.nan
    return df


# --------------------------------------------------------------------------- truth
def derive_truth(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Derived estimands of the model, with how each was derived.

    Parameters
    ----------
    params : dict, optional
        Parameter overrides (as for :func:`simulate_study`).

    Returns
    -------
    dict
        ``{"params": ..., "derived": ..., "derivation": ...}``, JSON-serialisable.
    """
    p = _merge_params(params or {})
    d = _total_contemporaneous(p)
    ops = list(p["ops_base"])
    indirect = {m: p["ex_to_ops"][m] * p["ops_to_cx"][m] for m in ops}
    # Between-unit (random intercept) covariance. Tbar = sum_j w_j (E[item_j | m_j] - centre)
    # with independent team climates m_j, so Var(Tbar) = sum_j w_j^2 Var(E[item | m]); the
    # latter has no closed form (cuts of normals): Gauss-Hermite quadrature over m.
    w_items = np.array(
        [p["tp_weights"][t] for t in TOUCHPOINTS] + [p["insight_to_ex"], p["empowerment_to_ex"]]
    )
    var_tbar = float((w_items**2).sum() * _item_team_variance(p["tp_team_sd"]))
    var_site = p["site_sd"] ** 2
    var_a = p["site_ex"] ** 2 * var_site + p["ri_sd_ex"] ** 2 + var_tbar
    var_b0 = p["site_cx"] ** 2 * var_site + p["ri_sd_cx"] ** 2
    cov_ab0 = p["site_ex"] * p["site_cx"] * var_site + p["ri_corr"] * p["ri_sd_ex"] * p["ri_sd_cx"]
    var_b = var_b0 + 2 * d * cov_ab0 + d**2 * var_a
    cov_ab = cov_ab0 + d * var_a
    ri_corr_total = cov_ab / math.sqrt(var_a * var_b) if var_a > 0 and var_b > 0 else 0.0
    spill = {
        str(e): p["spillover"] + p["spillover_empowerment"] * (e - 3) for e in range(1, 6)
    }
    centre = _item_centre(p["tp_team_sd"])
    spill_grid = {
        str(e): {
            str(i): p["spillover"] + p["spillover_empowerment"] * (e - 3) + p["insight_spillover"] * (i - 3)
            for i in range(1, 6)
        }
        for e in range(1, 6)
    }
    derived = {
        "within_lags": {
            "ex->ex": p["ar_ex"],
            "cx->cx": p["ar_cx"],
            "ex->cx": p["ex_to_cx"],
            "cx->ex": p["cx_to_ex"],
        },
        "structural": {
            "total_contemporaneous_ex_to_cx": d,
            "phi_c": p["ar_cx"] - d * p["cx_to_ex"],
            "k": p["ex_to_cx"] - d * (p["ar_ex"] - (p["ar_cx"] - d * p["cx_to_ex"])),
        },
        "between": {
            "var_ri_ex": var_a,
            "var_ri_cx": var_b,
            "cov_ri": cov_ab,
            "corr_ri": ri_corr_total,
            "var_tbar": var_tbar,
        },
        "mediation": {
            "a": dict(p["ex_to_ops"]),
            "b": dict(p["ops_to_cx"]),
            "direct": p["ex_direct_cx"],
            "indirect": indirect,
            "indirect_total": sum(indirect.values()),
            "total": d,
        },
        "drivers": {f"tp_{t}": p["tp_weights"][t] for t in TOUCHPOINTS},
        "insight_to_ex": p["insight_to_ex"],
        "common_method": {
            "cm_halo": p["cm_halo"],
            "item_method_share": p["cm_halo"] ** 2 / (p["tp_team_sd"] ** 2 + 1.0 + p["cm_halo"] ** 2),
        },
        "spillover_by_empowerment": spill,
        "spillover_by_empowerment_insight": spill_grid,
        "spillover_average": p["spillover"]
        + (p["spillover_empowerment"] + p["insight_spillover"]) * (centre - 3),
        "insight": {
            "item_centre": centre,
            "insight_to_ex": p["insight_to_ex"],
            "cx_to_ex_per_insight_point": p["insight_cx_to_ex"],
            "cx_to_ex_by_insight": {
                str(i): p["cx_to_ex"] + p["insight_cx_to_ex"] * (i - centre) for i in range(1, 6)
            },
            "cx_to_ex_average": p["cx_to_ex"],
            "spillover_per_insight_point": p["insight_spillover"],
        },
        "loyalty": {
            "retention_logit_per_cx": p["retention_cx"],
            "revenue_per_cx": p["revenue_cx"],
            "timing": "outcome of period p (retained at the end of p, revenue in p) on the mean "
            "latent CX the customer received in period p-1; rows p = 2..W with >= 1 interaction in p-1",
            "revenue_trait_sd": p["customer_revenue_sd"],
        },
        "scales": {name: _thresholds(name, p["cx_scale_sd"] if name in ("csat", "nps", "ces") else p["ex_scale_sd"]).tolist()
                   for name in ("csat", "nps", "ces", "enps", "esat", "ees")},
    }
    derivation = {
        "within_lags": "Exactly the stated ar_ex, ar_cx, ex_to_cx, cx_to_ex: the structural "
        "within process reduces to a VAR(1) with these coefficients (module docstring). With "
        "insight_cx_to_ex != 0 the cx->ex coefficient varies with the previous wave's insight "
        "access around the mean cx_to_ex (see 'insight'); the other three stay exact.",
        "structural": "d = ex_direct_cx + sum_m ex_to_ops[m]*ops_to_cx[m]; "
        "phi_c = ar_cx - d*cx_to_ex; k = ex_to_cx - d*(ar_ex - phi_c).",
        "between": "Var/Cov of A_i = site_ex*u_s + a_i + Tbar_i and B_i = site_cx*u_s + b_i + d*A_i; "
        "Var(Tbar) = sum_j w_j^2 Var_m(E[item | m]) over independent team climates m ~ "
        "N(0, tp_team_sd) (Gauss-Hermite quadrature, 64 nodes).",
        "mediation": "a = ex_to_ops, b = ops_to_cx (CX per unit of the operational rate, "
        "holding EX), indirect_m = a_m*b_m, total = direct + sum indirect (latent units).",
        "drivers": "tp_weights: latent EX per point of the 1-5 touchpoint item (same wave).",
        "common_method": "Reported item j = cut(z_j + cm_halo*h), reported eSat = cut(EX - mu_ex + "
        "N(0, ex_item_sd) + cm_halo*ex_scale_sd*h) with one h ~ N(0,1) per survey response; causal "
        "items cut(z_j) and latent EX carry no h. item_method_share = cm_halo^2 / (tp_team_sd^2 + 1 "
        "+ cm_halo^2): the share of a reported item's latent propensity variance that is method. "
        "Driver weights on reported answers are not the structural tp_weights; the observed-scale "
        "values are in truth['observed'] (computed by the coverage harness).",
        "spillover_by_empowerment": "lambda(e) = spillover + spillover_empowerment*(e-3) at "
        "insight access 3: carry-over of the previous interaction's CX deviation to the next one, "
        "same agent (e = empowerment item of the agent's current wave).",
        "spillover_by_empowerment_insight": "lambda(e, i) = spillover + spillover_empowerment*(e-3) + "
        "insight_spillover*(i-3), e and i the empowerment and insight-access items (causal, 1-5) "
        "of the agent's current wave; keys [e][i].",
        "spillover_average": "Population average of lambda(e, i) = spillover + (spillover_empowerment "
        "+ insight_spillover)*(item_centre - 3): what a carry-over fitted without the moderators "
        "targets (items enter linearly, so only their means matter).",
        "insight": "cx->ex cross-lag from wave w-1 to wave w = cx_to_ex + insight_cx_to_ex*(insight_{w-1} "
        "- item_centre), insight_{w-1} the causal insight-access item of wave w-1 (the same wave as "
        "the lagged CX) and item_centre its population mean (Gauss-Hermite over team climates). "
        "Its population average is exactly cx_to_ex, the value an RI-CLPM without the interaction "
        "targets; the CX equation keeps ar_cx and ex_to_cx exactly (module docstring).",
        "loyalty": "logit P(retained_p) = logit(retention_base) + retention_cx*ybar_{p-1}; "
        "revenue_p = revenue_base + revenue_cx*ybar_{p-1} + nu_c + N(0, revenue_sd), nu_c ~ "
        "N(0, customer_revenue_sd) stable per customer; ybar_{p-1} = mean latent CX (centred at "
        "mu_cx) of the customer's interactions in the preceding period. No customer random effect "
        "in retention, so retention_cx is the conditional and the marginal logit coefficient.",
        "scales": "Cut points (latent units, centred at mu) of each ordinal survey scale.",
    }
    return {"params": p, "derived": derived, "derivation": derivation}


# --------------------------------------------------------------------------- loyalty
def _accumulate_cx(sums: np.ndarray, counts: np.ndarray, cust: np.ndarray, wave: np.ndarray, y: np.ndarray) -> None:
    """Add interactions' centred latent CX to the period x customer ``sums``/``counts`` (in place).

    One ``bincount`` per period (transient memory: one float per customer);
    ``np.add.at`` is 10x slower on millions of rows.
    """
    n_cust = sums.shape[1]
    for w in range(sums.shape[0]):
        at = wave == w
        if at.any():
            sums[w] += np.bincount(cust[at], weights=y[at], minlength=n_cust)
            counts[w] += np.bincount(cust[at], minlength=n_cust).astype(counts.dtype)


def _loyalty_rows(
    sums: np.ndarray, counts: np.ndarray, nu: np.ndarray, p: dict[str, Any], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Customer-period outcomes for periods 2..W of customers served in the period before.

    ``sums``/``counts``: (customers, W) sums and numbers of the centred latent CX
    of each customer's interactions per period; ``nu``: the customers' stable
    revenue traits. Rows come out ordered by customer, then period.
    """
    n_prev = counts[:, :-1]
    ci, pi = np.nonzero(n_prev)
    n_row = n_prev[ci, pi]
    ybar = sums[ci, pi] / n_row
    pr = expit(logit(p["retention_base"]) + p["retention_cx"] * ybar)
    retained = rng.random(len(ci)) < pr
    revenue = p["revenue_base"] + p["revenue_cx"] * ybar + nu[ci] + rng.normal(0.0, p["revenue_sd"], len(ci))
    return {
        "customer": ci,
        "period": (pi + 2).astype("int64"),
        "ybar_prev": ybar,
        "n_prev": n_row.astype("int64"),
        "retained": retained,
        "revenue": np.round(revenue, 2),
    }


# --------------------------------------------------------------------------- study
#: Customers per block of outcome rows. Part of the random-stream layout (the
#: outcome draws are made block by block), so it is a constant, not an option.
_LOYALTY_BLOCK = 1_000_000
_ALL_TABLES = ("employees", "ex_responses", "interactions", "cx_responses", "customer_outcomes")


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    """Ids ``prefix`` + zero-padded ``numbers`` (string column), built as one Arrow buffer.

    A Python f-string per row costs ~2 s per million rows; this is ~50x faster,
    which matters for studies of tens of millions of interactions.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    n = len(numbers)
    if n:
        width = max(width, len(str(int(numbers.max()))))
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    row = len(head) + width
    buf = np.empty((n, row), dtype=np.uint8)
    buf[:, : len(head)] = head
    rest = numbers.copy()
    for k in range(width - 1, -1, -1):
        buf[:, len(head) + k] = rest % 10 + 48
        rest //= 10
    if (n + 1) * row < 2**31:
        offsets = np.arange(0, (n + 1) * row, row, dtype=np.int32)
        arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))
    else:
        offsets = np.arange(0, (n + 1) * row, row, dtype=np.int64)
        arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))
    return arr.to_pandas()


def _labels(values: Sequence[str], index: np.ndarray) -> pd.Series:
    """String column ``values[index]`` (Arrow take: fast, no Python objects per row)."""
    return pa.array(list(values), type=pa.string()).take(pa.array(np.asarray(index, dtype=np.int64))).to_pandas()


def _us(start_us: int, seconds: np.ndarray) -> np.ndarray:
    """Timestamps (datetime64[us]) ``seconds`` (rounded, int) after ``start_us``."""
    return (start_us + np.asarray(seconds, dtype=np.int64) * 1_000_000).astype("datetime64[us]")


class _Plan:
    """Everything a study needs before its interactions: the employee level and the streams.

    Built once by :func:`_plan`; the interactions are then generated site by site
    (:func:`_site_chunk`), each site from its own random stream, so a study built
    in memory and one written chunk by chunk are identical for the same seed.
    """

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def _plan(
    n_sites: int,
    n_employees: int,
    n_waves: int,
    seed: int | np.random.Generator | None,
    site_effects: Sequence[float] | None,
    params: dict[str, Any],
    customers: bool = True,
) -> _Plan:
    if n_sites < 1 or n_employees < 1 or n_waves < 1:
        raise ValueError("simulate_study: n_sites, n_employees and n_waves must be at least 1")
    p = _merge_params(params)
    site_effects = _check_site_effects(site_effects, n_sites)
    rng = np.random.default_rng(seed)
    # Child streams (spawned: the main stream is untouched): the common-method halo,
    # the customer population, the customer outcomes, the orphan responses, one per site.
    halo_rng, cust_rng, outcome_rng, orphan_rng, *site_rngs = _spawn(rng, 4 + n_sites)
    start = pd.Timestamp(p["start_date"])
    wave_days = int(p["wave_days"])
    n_teams = n_sites * int(p["teams_per_site"])
    team_of = np.arange(n_employees) % n_teams
    site_of = team_of // int(p["teams_per_site"])
    proc = _panel_process(rng, p, n_waves, site_of, team_of, n_sites, n_teams, site_effects)
    n = n_employees

    # ---- employees and attrition (depends on latent EX)
    emp_ids = np.array([f"E{i + 1:05d}" for i in range(n)])
    team_ids = np.array([f"T{s + 1:02d}{chr(65 + t % int(p['teams_per_site']))}" for s, t in zip(site_of, team_of)])
    site_ids = np.array([f"S{s + 1:02d}" for s in site_of])
    roles = rng.choice(["agent", "senior agent", "adviser"], size=n, p=[0.7, 0.2, 0.1])
    hire = start - pd.to_timedelta(rng.integers(30, 2000, size=n), unit="D")
    exit_period = np.full(n, n_waves + 1)  # period in which the employee leaves
    exit_offset = rng.uniform(0.05, 0.95, size=n)
    base_logit = logit(p["attrition_rate"]) if p["attrition_rate"] > 0 else -np.inf
    for w in range(n_waves):
        alive = exit_period > w + 1
        prob = expit(base_logit + p["attrition_ex"] * (proc["ex"][:, w] - p["mu_ex"])) if p["attrition_rate"] > 0 else np.zeros(n)
        leaves = alive & (rng.random(n) < prob)
        exit_period[leaves] = w + 1
    exit_date = pd.Series(pd.NaT, index=range(n), dtype="datetime64[us]")
    left = exit_period <= n_waves
    exit_date[left] = (
        start
        + pd.to_timedelta((exit_period[left] - 1) * wave_days, unit="D")
        + pd.to_timedelta(exit_offset[left] * wave_days, unit="D").round("s")
    ).to_numpy()
    employees = pd.DataFrame(
        {
            "employee_id": emp_ids,
            "team_id": team_ids,
            "site_id": site_ids,
            "role": roles,
            "hire_date": pd.DatetimeIndex(hire).normalize().as_unit("us"),
            "exit_date": exit_date.to_numpy(),
        }
    )

    # ---- EX survey (nonresponse depends on latent EX; none after exit)
    ex_item = p["ex_item_sd"]
    rows = []
    ex_scale = p["ex_scale_sd"]
    wave_open = [start + pd.Timedelta(days=w * wave_days) for w in range(n_waves)]
    cm = float(p["cm_halo"])
    # common-method factor h_iw of every employee-wave, from its own stream so that
    # switching the halo on or off leaves every other draw of the study unchanged
    cm_h = halo_rng.standard_normal((n, n_waves))
    for w in range(n_waves):
        active = exit_period > w  # still employed when wave w+1 opens (exit in period w+1 or later)
        resp_p = expit(logit(p["ex_response_rate"]) + p["ex_response_ex"] * (proc["ex"][:, w] - p["mu_ex"]))
        responds = active & (rng.random(n) < resp_p)
        idx = np.flatnonzero(responds)
        lat = proc["ex"][idx, w] - p["mu_ex"]
        if cm:
            # reported items: cut of the causal item's propensity plus the halo
            items = _cut(proc["item_z"][idx, w, :] + cm * cm_h[idx, w, None], "tp", 1.0)
        else:
            items = proc["items"][idx, w, :]
        answered = wave_open[w] + pd.to_timedelta(rng.uniform(0, 10, size=len(idx)) * 86400, unit="s").round("s")
        rec = {
            "employee_id": emp_ids[idx],
            "wave": np.full(len(idx), w + 1, dtype="int64"),
            "responded_at": answered.as_unit("us"),
            "enps": _cut(lat + rng.normal(0, ex_item, len(idx)), "enps", ex_scale),
            "esat": _cut(lat + rng.normal(0, ex_item, len(idx)) + cm * ex_scale * cm_h[idx, w], "esat", ex_scale),
            "ees": _cut(lat + rng.normal(0, ex_item, len(idx)), "ees", ex_scale),
        }
        for j, t in enumerate(TOUCHPOINTS):
            rec[f"tp_{t}"] = items[:, j]
        rec["empowerment"] = items[:, len(TOUCHPOINTS) + 1]
        rec["cx_insight_access"] = items[:, len(TOUCHPOINTS)]
        rows.append(pd.DataFrame(rec))
    ex_responses = pd.concat(rows, ignore_index=True)
    # an employee who leaves early in a period answers before the exit date
    ex_responses = ex_responses.merge(employees[["employee_id", "exit_date"]], on="employee_id")
    late = ex_responses["exit_date"].notna() & (ex_responses["responded_at"] >= ex_responses["exit_date"])
    ex_responses = ex_responses.loc[~late].drop(columns="exit_date").reset_index(drop=True)

    # ---- customer population (drawn globally: a customer calls agents of many sites)
    lam = float(p["interactions_per_wave"])
    expected = lam * n * n_waves
    n_cust = max(1, int(round(p["customers_per_interaction"] * expected)))
    if customers:
        propensity = cust_rng.gamma(0.7, 1.0, size=n_cust)
        cust_cdf = np.cumsum(propensity)
        cust_cdf /= cust_cdf[-1]
        del propensity
        nu = cust_rng.normal(0.0, p["customer_revenue_sd"], n_cust)
    else:
        cust_cdf = nu = None
    return _Plan(
        p=p, n_sites=n_sites, n_employees=n, n_waves=n_waves, seed=seed, site_effects=site_effects,
        start=start, start_us=int(np.datetime64(start.to_datetime64(), "us").astype(np.int64)), wave_days=wave_days, wave_open=wave_open,
        site_of=site_of, members=[np.flatnonzero(site_of == s) for s in range(n_sites)],
        proc=proc, emp_ids=emp_ids, exit_period=exit_period, exit_offset=exit_offset, cm_h=cm_h,
        employees=employees, ex_responses=ex_responses,
        n_cust=n_cust, cust_cdf=cust_cdf, nu=nu,
        int_width=max(8, len(str(int(2 * expected) + 100))), cust_width=max(7, len(str(n_cust))),
        site_rngs=site_rngs, outcome_rng=outcome_rng, orphan_rng=orphan_rng,
    )


def _carry_over(a: np.ndarray, lam: np.ndarray, agent: np.ndarray, pos: np.ndarray, n_agents: int) -> np.ndarray:
    """``dev_k = a_k + lam_k * dev_{k-1}`` along each agent's interactions (``pos`` 0, 1, ...).

    The recursion is sequential in position but independent across agents: it runs
    over positions on a (position x agent) grid, one vector step per position.
    """
    if len(a) == 0:
        return np.zeros(0)
    grid_a = np.zeros((int(pos.max()) + 1, n_agents))
    grid_l = np.zeros_like(grid_a)
    grid_a[pos, agent] = a
    grid_l[pos, agent] = lam
    for j in range(1, grid_a.shape[0]):
        grid_a[j] += grid_l[j] * grid_a[j - 1]
    return grid_a[pos, agent]


def _site_chunk(plan: _Plan, s: int, offset: int, want: set[str], latent: bool) -> dict[str, Any]:
    """Interactions and CX answers of the agents of site ``s`` (from the site's own stream).

    ``offset`` is the number of interactions of the sites before (interaction ids
    are numbered across the study). Returns the requested tables and the arrays
    the customer-level outcomes need (customer, period, centred latent CX).
    """
    p, rng = plan.p, plan.site_rngs[s]
    emp = plan.members[s]
    n_w = plan.n_waves
    counts = rng.poisson(float(p["interactions_per_wave"]), size=(len(emp), n_w))
    loc, wav = np.nonzero(counts)
    reps = counts[loc, wav]
    k_loc = np.repeat(loc, reps)
    k_wave = np.repeat(wav, reps)
    k_frac = rng.random(len(k_loc))
    k_emp = emp[k_loc]
    exit_p, exit_o = plan.exit_period[k_emp], plan.exit_offset[k_emp]
    # drop interactions after the employee's exit
    keep = (k_wave + 1 < exit_p) | ((k_wave + 1 == exit_p) & (k_frac < exit_o))
    k_loc, k_wave, k_frac = k_loc[keep], k_wave[keep], k_frac[keep]
    order = np.lexsort((k_frac, k_wave, k_loc))
    k_loc, k_wave, k_frac = k_loc[order], k_wave[order], k_frac[order]
    k_emp = emp[k_loc]
    n_int = len(k_loc)
    seconds = np.round((k_wave + k_frac) * plan.wave_days * 86400).astype(np.int64)
    ops = plan.proc["ops"]
    fcr_rate = ops[k_emp, k_wave, 0]
    aht_mean = ops[k_emp, k_wave, 1]
    tr_rate = ops[k_emp, k_wave, 2]
    fcr = rng.random(n_int) < fcr_rate
    transferred = rng.random(n_int) < tr_rate
    aht_min = aht_mean * np.exp(rng.normal(-0.5 * p["aht_log_sd"] ** 2, p["aht_log_sd"], n_int))
    handle_seconds = np.maximum(20, np.round(aht_min * 60)).astype("int64")
    own_ops = (
        p["ops_to_cx"]["fcr"] * (fcr - fcr_rate)
        + p["ops_to_cx"]["transfer"] * (transferred - tr_rate)
        + p["ops_to_cx"]["aht"] * (handle_seconds / 60.0 - aht_mean)
    )
    level = plan.proc["cx"][k_emp, k_wave]
    empowerment = plan.proc["items"][k_emp, k_wave, len(TOUCHPOINTS) + 1]
    insight = plan.proc["items"][k_emp, k_wave, len(TOUCHPOINTS)]
    lam_k = p["spillover"] + p["spillover_empowerment"] * (empowerment - 3) + p["insight_spillover"] * (insight - 3)
    noise = rng.normal(0, p["interaction_sd"], n_int)
    # vicious circle: AR(1) in deviations within agent, sequential in position
    first = np.r_[True, k_loc[1:] != k_loc[:-1]] if n_int else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    pos = np.arange(n_int) - np.repeat(starts, np.diff(np.r_[starts, n_int]))
    y = level + _carry_over(own_ops + noise, lam_k, k_loc, pos, len(emp))
    channels = list(p["channel_probs"])
    probs = np.array(list(p["channel_probs"].values()), dtype=float)
    channel = rng.choice(len(channels), size=n_int, p=probs / probs.sum())
    cust = plan.cust_cdf.searchsorted(rng.random(n_int), side="right")

    # ---- CX survey (extremes respond more)
    mu_cx = p["mu_cx"]
    z = (y - mu_cx) / p["cx_scale_sd"]
    rate = np.clip(p["cx_response_rate"] * (1 + p["cx_response_extremity"] * (np.abs(z) - math.sqrt(2 / math.pi))), 0, 1)
    responds = rng.random(n_int) < rate
    r_idx = np.flatnonzero(responds)
    yc = y[r_idx] - mu_cx
    cs = p["cx_scale_sd"]
    delay = rng.exponential(36 * 3600, len(r_idx)).round().astype(np.int64) + 60
    csat = _cut(yc + rng.normal(0, p["cx_item_sd"], len(r_idx)), "csat", cs)
    has_comment = rng.random(len(r_idx)) < 0.15
    nps = _cut(yc + rng.normal(0, p["cx_item_sd"], len(r_idx)), "nps", cs)
    ces = _cut(yc + rng.normal(0, p["cx_item_sd"], len(r_idx)), "ces", cs)

    out: dict[str, Any] = {"n": n_int, "customer": cust, "wave": k_wave, "y": y - mu_cx}
    numbers = offset + 1 + np.arange(n_int)
    int_ids = _ids("I", numbers, plan.int_width) if (want & {"interactions", "cx_responses"} or latent) else None
    started = _us(plan.start_us, seconds)
    if "interactions" in want:
        out["interactions"] = pd.DataFrame(
            {
                "interaction_id": int_ids,
                "employee_id": _labels(plan.emp_ids, k_emp),
                "customer_id": _ids("C", cust + 1, plan.cust_width),
                "started_at": started,
                "channel": _labels(channels, channel),
                "handle_seconds": handle_seconds,
                "resolved_first_contact": fcr,
                "transferred": transferred,
            }
        )
    if "cx_responses" in want:
        comments = np.full(len(r_idx), None, dtype=object)
        comments[has_comment & (csat <= 2)] = "Took too long and I had to explain twice."
        comments[has_comment & (csat == 3)] = "It was fine."
        comments[has_comment & (csat >= 4)] = "Friendly and solved it quickly."
        out["cx_responses"] = pd.DataFrame(
            {
                "interaction_id": int_ids.iloc[r_idx].reset_index(drop=True),
                "responded_at": _us(plan.start_us, seconds[r_idx] + delay),
                "nps": nps,
                "csat": csat,
                "ces": ces,
                "comment": pd.array(comments, dtype="string"),
            }
        )
    if latent:
        out["latent_interactions"] = pd.DataFrame(
            {
                "interaction_id": int_ids,
                "employee_id": _labels(plan.emp_ids, k_emp),
                "wave": k_wave + 1,
                "started_at": started,
                "cx_latent": y,
                "cx_level": level,
                "empowerment": empowerment,
                "cx_insight_access": insight,
                "spillover_lambda": lam_k,
                "responded": responds,
            }
        )
    return out


def _orphans(plan: _Plan, cx_first_site: pd.DataFrame) -> pd.DataFrame:
    """CX responses whose interaction is not in the log: copies of site 1's answers."""
    k = min(int(plan.p["orphan_responses"]), len(cx_first_site))
    pick = plan.orphan_rng.choice(len(cx_first_site), size=k, replace=False)
    src = cx_first_site.iloc[pick].reset_index(drop=True)
    return src.assign(interaction_id=_ids("X", np.arange(1, k + 1), 8))


def _loyalty_blocks(plan: _Plan, sums: np.ndarray, counts: np.ndarray, latent: bool):
    """Customer outcomes (and their latent customer_periods), block by block of customers."""
    for c0 in range(0, plan.n_cust, _LOYALTY_BLOCK):
        c1 = min(plan.n_cust, c0 + _LOYALTY_BLOCK)
        rows = _loyalty_rows(sums[:, c0:c1].T, counts[:, c0:c1].T, plan.nu[c0:c1], plan.p, plan.outcome_rng)
        ids = _ids("C", rows["customer"] + c0 + 1, plan.cust_width)
        outcomes = pd.DataFrame(
            {"customer_id": ids, "period": rows["period"], "retained": rows["retained"], "revenue": rows["revenue"]}
        )
        cp = None
        if latent:
            cp = pd.DataFrame(
                {"customer_id": ids, "period": rows["period"], "ybar_prev": rows["ybar_prev"], "n_prev": rows["n_prev"]}
            )
        yield outcomes, cp


def _latent_employee_waves(plan: _Plan) -> pd.DataFrame:
    proc, n, n_w = plan.proc, plan.n_employees, plan.n_waves
    ops = proc["ops"]
    ew = pd.DataFrame(
        {
            "employee_id": np.repeat(plan.emp_ids, n_w),
            "wave": np.tile(np.arange(1, n_w + 1), n),
            "active": (plan.exit_period[:, None] > np.arange(n_w)[None, :]).ravel(),
            "ex": proc["ex"].ravel(),
            "cx": proc["cx"].ravel(),
            "ex_within": proc["ex_within"].ravel(),
            "cx_within": proc["cx_within"].ravel(),
            "ex_between": np.repeat(proc["ex_between"], n_w),
            "cx_between": np.repeat(proc["cx_between"], n_w),
            "fcr_rate": ops[..., 0].ravel(),
            "aht_minutes": ops[..., 1].ravel(),
            "transfer_rate": ops[..., 2].ravel(),
        }
    )
    for j, t in enumerate(TOUCHPOINTS):
        ew[f"tp_{t}"] = proc["items"][:, :, j].ravel()
    ew["cx_insight_access"] = proc["items"][:, :, len(TOUCHPOINTS)].ravel()
    ew["empowerment"] = proc["items"][:, :, len(TOUCHPOINTS) + 1].ravel()
    ew["cm_factor"] = plan.cm_h.ravel()
    return ew


def _truth(plan: _Plan, params: dict[str, Any], n_interactions: int | None, n_orphans: int) -> dict[str, Any]:
    truth = derive_truth(params)
    truth["study"] = {
        "n_sites": plan.n_sites,
        "n_employees": plan.n_employees,
        "n_waves": plan.n_waves,
        "seed": plan.seed if isinstance(plan.seed, (int, type(None))) else "generator",
        "wave_open": [d.isoformat() for d in plan.wave_open],
        "period_definition": "period w runs from wave w's opening date for wave_days days",
        "n_interactions": n_interactions,
        "n_customers": plan.n_cust,
        "cx_responses_orphaned": n_orphans,
        "site_effects": {f"S{i + 1:02d}": float(u) for i, u in enumerate(plan.proc["site_effects"])},
        "site_effects_fixed": plan.site_effects is not None,
    }
    # Observed-scale truths (what each finding's estimator converges to on the observed
    # pipeline) are computed by the coverage harness on one very large study with the
    # same site effects and design, and stored here as
    # {key: {"value": ..., "latent": ..., "derivation": ...}}.
    truth["observed"] = {}
    return truth


def _want(tables: Sequence[str] | None) -> set[str]:
    if tables is None:
        return set(_ALL_TABLES)
    if isinstance(tables, str):
        tables = [tables]
    bad = sorted(set(tables) - set(_ALL_TABLES))
    if bad:
        raise ValueError(f"simulate: unknown table(s) {bad} in tables=; the study's tables are {list(_ALL_TABLES)}")
    return set(tables)


@functools.lru_cache(maxsize=1)
def _empty_tables() -> dict[str, pd.DataFrame]:
    tiny = simulate_study(n_sites=1, n_employees=1, n_waves=2, seed=0, interactions_per_wave=5.0)
    return {name: df.iloc[:0].reset_index(drop=True) for name, df in tiny.tables().items()}


def _empty_like_contract(name: str) -> pd.DataFrame:
    """A zero-row table with the simulator's columns and types (for tables not built)."""
    return _empty_tables()[name].copy()


def simulate_study(
    n_sites: int = 10,
    n_employees: int = 400,
    n_waves: int = 6,
    seed: int | np.random.Generator | None = None,
    latent: bool = False,
    site_effects: Sequence[float] | None = None,
    tables: Sequence[str] | None = None,
    **params: Any,
) -> Study:
    """Simulate a full study: the five canonical tables and their ground truth.

    Parameters
    ----------
    n_sites, n_employees, n_waves : int
        Study size. Employees are spread evenly over ``n_sites * teams_per_site``
        teams. Each wave opens a period of ``wave_days`` days of interactions.
    seed : int or numpy.random.Generator, optional
        The only source of randomness: the same seed gives identical tables.
    latent : bool
        Also return the latent (noise-free, fully observed) tables in
        ``Study.latent``: ``employee_waves`` (latent EX and CX, their between and
        within parts, operational rates, the *causal* items, the common-method
        factor ``cm_factor``), ``interactions`` (each interaction's latent CX,
        level, moderators and carry-over) and ``customer_periods`` (the mean
        latent CX each outcome row's customer received in the preceding period).
    site_effects : sequence of float, optional
        Fixed site effects :math:`u_s` (length ``n_sites``, latent units) instead of
        drawn ones. The draw still happens and is then overridden, so every other
        random quantity of the study is the same as with ``site_effects=None`` and
        the same seed. Replicate studies hold the site effects fixed this way. The
        realised values are recorded in ``truth["study"]["site_effects"]``.
    tables : sequence of str, optional
        Build only these tables (default: all five); the others are empty with
        the same columns. The values of a built table do not depend on this
        choice (every part of the study has its own random stream). Leaving out
        ``interactions``, ``cx_responses`` and ``customer_outcomes`` skips the
        interaction level entirely (a panel-only study costs ~0.1 s).
    **params
        Any of :data:`DEFAULT_PARAMS` (e.g. ``ex_to_cx=0.3``,
        ``tp_weights={"coaching": 0.0}``, ``site_sd=0``).

    Returns
    -------
    Study
        With ``truth`` from :func:`derive_truth` plus study-specific facts
        (``truth["study"]``: size, wave openings, realised site effects) and an
        empty ``truth["observed"]`` for the harness's observed-scale truths.

    Notes
    -----
    Interactions are generated site by site, each site from its own random
    stream (customers are drawn from one study-wide population, so a customer
    calls agents of many sites). :func:`write_study` runs the same steps and
    writes each site's rows as it goes: for the same arguments both give the
    same tables. Rows of ``interactions`` are ordered by site, agent and time.

    Examples
    --------
    >>> study = simulate_study(n_sites=2, n_employees=20, n_waves=3, seed=1)
    >>> sorted(study.tables())
    ['customer_outcomes', 'cx_responses', 'employees', 'ex_responses', 'interactions']
    """
    want = _want(tables)
    need_int = bool(want & {"interactions", "cx_responses", "customer_outcomes"})
    plan = _plan(n_sites, n_employees, n_waves, seed, site_effects, params, customers=need_int)
    built: dict[str, list[pd.DataFrame]] = {"interactions": [], "cx_responses": [], "latent_interactions": []}
    n_int, n_orphans = 0, 0
    orphans = None
    if "customer_outcomes" in want:
        sums = np.zeros((n_waves, plan.n_cust))
        counts = np.zeros((n_waves, plan.n_cust), dtype=np.int32)
    if need_int:
        for s in range(n_sites):
            ch = _site_chunk(plan, s, n_int, want, latent)
            n_int += ch["n"]
            for name in built:
                if name in ch:
                    built[name].append(ch[name])
            if "customer_outcomes" in want:
                _accumulate_cx(sums, counts, ch["customer"], ch["wave"], ch["y"])
            if s == 0 and "cx_responses" in want and plan.p["orphan_responses"]:
                orphans = _orphans(plan, ch["cx_responses"])
                n_orphans = len(orphans)
    if orphans is not None:
        built["cx_responses"].append(orphans)
    out = {"employees": plan.employees, "ex_responses": plan.ex_responses}
    for name in ("interactions", "cx_responses"):
        if name in want:
            out[name] = pd.concat(built[name], ignore_index=True)
    cps = []
    if "customer_outcomes" in want:
        blocks = list(_loyalty_blocks(plan, sums, counts, latent))
        out["customer_outcomes"] = pd.concat([b[0] for b in blocks], ignore_index=True)
        cps = [b[1] for b in blocks]
    for name in _ALL_TABLES:
        if name not in want:
            out[name] = _empty_like_contract(name)
    truth = _truth(plan, params, n_int if need_int else None, n_orphans)
    study = Study(**out, truth=truth)
    if latent:
        study.latent = {"employee_waves": _latent_employee_waves(plan)}
        if need_int:
            study.latent["interactions"] = pd.concat(built["latent_interactions"], ignore_index=True)
        if cps:
            study.latent["customer_periods"] = pd.concat(cps, ignore_index=True)
    return study


# --------------------------------------------------------------------------- chunked writer
class _TableWriter:
    """Append DataFrames to one Parquet file (one row group per call), same schema throughout."""

    def __init__(self, path: Path) -> None:
        self.path, self.writer, self.schema, self.rows = path, None, None, 0

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow.parquet as pq

        from cxex_lab.io import PARQUET_OPTIONS

        table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False)
        if self.writer is None:
            self.schema = table.schema
            # near-unique id columns: dictionary encoding only costs time (2x faster write)
            dictionary = [c for c in self.schema.names if c not in ("interaction_id", "customer_id")]
            self.writer = pq.ParquetWriter(self.path, self.schema, use_dictionary=dictionary, **PARQUET_OPTIONS)
        self.writer.write_table(table)
        self.rows += len(df)

    def close(self, table: str | None = None) -> None:
        """Close the file; a table never written gets its zero-row version (``table`` names it)."""
        if self.writer is None and table is not None:
            self.write(_empty_like_contract(table))
        if self.writer is not None:
            self.writer.close()


def write_study(
    path: str | Path,
    n_sites: int = 10,
    n_employees: int = 400,
    n_waves: int = 6,
    seed: int | np.random.Generator | None = None,
    latent: bool = False,
    site_effects: Sequence[float] | None = None,
    progress: Callable[[str], None] | None = None,
    **params: Any,
) -> Path:
    """Simulate a study and write it site by site, for studies too large for memory.

    The result is the study :func:`simulate_study` returns for the same
    arguments, saved as :func:`cxex_lab.io.save_study` would save it (one
    Parquet file per table, ``truth.json``, ``latent/`` when ``latent=True``),
    but only one site's interactions are held in memory at a time: each site's
    rows are appended to ``interactions.parquet`` / ``cx_responses.parquet``
    as one row group. Customers span sites, so their per-period sums of
    received latent CX are accumulated across sites in two small arrays
    (customers x waves) and ``customer_outcomes.parquet`` is written at the end,
    block by block of customers.

    Parameters
    ----------
    path : path
        Output directory (created if needed; existing table files are replaced).
    n_sites, n_employees, n_waves, seed, latent, site_effects, **params
        As for :func:`simulate_study`.
    progress : callable, optional
        Called with a short message after each site (e.g. ``print``).

    Returns
    -------
    Path
        The study directory; ``cxex_lab.io.load_study`` reads it like any other.

    Notes
    -----
    Memory: the employee level (small), one site's interactions and, per
    customer, one float and one int32 per wave plus two floats (propensity
    CDF, revenue trait): about 60 bytes per customer with 6 waves.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    from cxex_lab.io import PARQUET_OPTIONS

    plan = _plan(n_sites, n_employees, n_waves, seed, site_effects, params)
    want = set(_ALL_TABLES)
    plan.employees.to_parquet(path / "employees.parquet", index=False, **PARQUET_OPTIONS)
    plan.ex_responses.to_parquet(path / "ex_responses.parquet", index=False, **PARQUET_OPTIONS)
    if latent:
        (path / "latent").mkdir(exist_ok=True)
        _latent_employee_waves(plan).to_parquet(path / "latent" / "employee_waves.parquet", index=False, **PARQUET_OPTIONS)
    writers = {
        "interactions": _TableWriter(path / "interactions.parquet"),
        "cx_responses": _TableWriter(path / "cx_responses.parquet"),
        "customer_outcomes": _TableWriter(path / "customer_outcomes.parquet"),
    }
    if latent:
        writers["latent_interactions"] = _TableWriter(path / "latent" / "interactions.parquet")
        writers["customer_periods"] = _TableWriter(path / "latent" / "customer_periods.parquet")
    sums = np.zeros((n_waves, plan.n_cust))
    counts = np.zeros((n_waves, plan.n_cust), dtype=np.int32)
    n_int, orphans = 0, None
    try:
        for s in range(n_sites):
            ch = _site_chunk(plan, s, n_int, want, latent)
            n_int += ch["n"]
            for name in ("interactions", "cx_responses", "latent_interactions"):
                if name in ch:
                    writers[name].write(ch[name])
            _accumulate_cx(sums, counts, ch["customer"], ch["wave"], ch["y"])
            if s == 0 and plan.p["orphan_responses"]:
                orphans = _orphans(plan, ch["cx_responses"])
            del ch
            if progress is not None:
                progress(f"site S{s + 1:02d}: {n_int:,} interactions so far")
        if orphans is not None and len(orphans):
            writers["cx_responses"].write(orphans)
        for outcomes, cp in _loyalty_blocks(plan, sums, counts, latent):
            writers["customer_outcomes"].write(outcomes)
            if latent:
                writers["customer_periods"].write(cp)
    finally:
        for name, w in writers.items():
            w.close(name if name in _ALL_TABLES else None)
    truth = _truth(plan, params, n_int, 0 if orphans is None else len(orphans))
    (path / "truth.json").write_text(json.dumps(truth, indent=2, default=str) + "\n")
    if progress is not None:
        progress(f"wrote {n_int:,} interactions, {writers['customer_outcomes'].rows:,} customer-periods to {path}")
    return path
