r"""Ground-truth simulator of a firm x year panel: employer-review ratings and a customer index.

The firm-level counterpart of :mod:`cxex_lab.simulate`: a structural model with
stated parameters that generates the panel published firm-level studies use
(an employer-review rating of 1-5 stars per firm and year, the number of
reviews behind it, and a 0-100 customer-satisfaction index), and a truth
record (``params``, ``derived``, ``derivation``, ``observed``) of what each
estimator of :func:`cxex_lab.models.firm_panel` should find. The estimators
never import this module.

Model
-----
Firms :math:`i = 1..N` belong to industries :math:`k(i)`; an industry is of
high or low customer contact :math:`c(i)` (the published high-contact sectors:
retail, food service, tourism, financial services, health care). Years
:math:`t = 0..T-1` (calendar ``start_year + t``). A firm is observed in a
contiguous window of years (all years for most firms; a random window for a
share ``unbalanced_share``, so some firms have a single year).

**Stable firm parts.** A firm confounder :math:`F_i \sim N(0,1)` (brand
strength, pay level) raises both series; industry effects
:math:`(\rho_k, \iota_k)` are jointly normal with correlation
``industry_corr``, and high-contact industries' ratings are shifted by
``contact_rating_shift`` (front-line hourly work is rated lower):

.. math::

    A_i &= \mu_R + \rho_k + s_R\,[c(i)=\text{high}] + \lambda_R F_i + a_i,
        \qquad a_i \sim N(0, \sigma_{aR}) \\
    B_i &= \mu_C + \iota_k + \lambda_C F_i + b_i, \qquad b_i \sim N(0, \sigma_{bC})

**True rating and the index.** With year effects
:math:`\tau_t = \text{trend}_R (t-\bar t) + N(0, \sigma_{\tau R})`,
:math:`\kappa_t = \text{trend}_C (t-\bar t) + N(0, \sigma_{\kappa C})`, the
firm-year's true rating (the expected star rating of one review) and the
index are

.. math::

    \xi_{it} &= A_i + \tau_t + w_{it} \\
    C_{it} &= B_i + \kappa_t + \beta_{c(i)}\,(\xi_{it} - \mu_R) + e_{it}

with the **true effect per star** :math:`\beta_{high}` (``effect_high``) or
:math:`\beta_{low}` (``effect_low``). The within-firm parts are AR(1):

.. math::

    w_{it} &= \phi_R\, w_{i,t-1} + g\, d_{i,t-1} + \varepsilon_{it},
        \qquad d_{it} = \beta_{c(i)} w_{it} + e_{it} \\
    e_{it} &= \phi_C\, e_{i,t-1} + \eta_{it}

where :math:`d_{it}` is the index's deviation from the firm's usual level and
:math:`g` (``reverse``, stars per index point) is the optional **reverse path**
(customer index -> next year's rating). Innovation SDs are
:math:`\sigma_w\sqrt{1-\phi_R^2}` and :math:`\sigma_e\sqrt{1-\phi_C^2}`, so that
without the reverse path :math:`w` and :math:`e` have stationary SDs
``within_sd_rating`` and ``index_noise_sd``; each firm starts 30 years before
its first year (burn-in).

**What is observed.** A firm-year has
:math:`n_{it} \sim \text{Poisson}(m_i\, e^{\gamma (t - T + 1)})` reviews, with
the firm's review volume :math:`m_i` log-normal (median ``reviews_median``,
log-SD ``reviews_log_sd``) and the platform's growth :math:`\gamma`
(``review_growth``): early years have few reviews. The published rating is the
mean of the :math:`n_{it}` reviews, each the true rating plus review noise of SD
:math:`\sigma_r` (``review_sd``); in the normal approximation

.. math::

    \text{employee\_rating}_{it} = \mathrm{clip}_{[1,5]}\big(\xi_{it} + \nu_{it}\big),
        \qquad \nu_{it} \sim N(0, \sigma_r^2 / n_{it}),

rounded to 2 decimals, missing when :math:`n_{it} = 0`. ``rating_sd`` is the
sample SD of the firm-year's reviews (:math:`\sigma_r \sqrt{\chi^2_{n-1}/(n-1)}`,
missing for :math:`n < 2`). ``customer_index`` is :math:`C_{it}` rounded to a
whole number and clipped to 0-100 (like the ACSI). Optionally
``market_value`` (USD bn) :math:`= \exp(v_i + \delta_V (C_{it} - \mu_C) + N(0, 0.1))`
with :math:`v_i \sim N(\log 30, 1)`.

Truth
-----
``FirmPanel.truth`` holds ``params``, ``derived`` (the true effects per star by
contact group and their difference, the reverse path, the between-firm
confounding and the within-firm reliability of the rating implied by the review
counts), ``derivation`` (how each follows) and ``observed``: for each finding
key of :func:`cxex_lab.findings.firm_level`, the value its estimator converges
to on this design (``value``), the structural value where one corresponds
(``latent``) and how it was computed. ``observed`` is computed on one very large
panel (``truth_firms`` firms, default 60,000) with the same industries (effects,
contact, firm shares) and design, by an implementation written here
independently of the estimators (two-way demeaning by alternating projections,
numpy least squares), so it can check them.

References
----------
Zhao, D., & Chamberlain, A. (2019). *Happy employees, satisfied customers: The
link between Glassdoor reviews and customer satisfaction*. Glassdoor Economic
Research. https://www.glassdoor.com/research/employee-reviews-customer-satisfaction
(293 large US employers, 13 industries, 2008-2018: +1.3 ACSI points per star,
+3.2 in high-contact industries.)

FitzGerald, M. (2018). New data: Does employee satisfaction drive customer
satisfaction? Not really! *customerstrategy.net*.
http://customerstrategy.net/employee-customer-satisfaction-2/ (ACSI against
Glassdoor for 345 large US companies: the rating explains 4.4% of the variation
in the index; 9.6% for 125 high-touch, 5.1% for 220 low-touch companies.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_PARAMS", "FAST_KEYS", "FirmPanel", "INDUSTRIES_13", "SCENARIOS",
    "simulate_firms", "firm_replicates", "summarise_replicates", "firm_scenarios",
]

#: The 13 industries used when ``n_industries=13``: the first five are high-contact
#: (the sectors Zhao & Chamberlain 2019 call high customer contact).
#: Third element: the expected share of firms (36% of firms are high-contact; the
#: last industry is small, so a 300-firm panel usually has fewer than 5 firms in it).
INDUSTRIES_13: tuple[tuple[str, str, float], ...] = (
    ("Retail", "high", 0.12),
    ("Restaurants", "high", 0.07),
    ("Travel & hotels", "high", 0.07),
    ("Banking & finance", "high", 0.06),
    ("Health care", "high", 0.04),
    ("Utilities", "low", 0.15),
    ("Telecom & cable", "low", 0.08),
    ("Internet & software", "low", 0.06),
    ("Automotive", "low", 0.07),
    ("Packaged foods", "low", 0.09),
    ("Personal care", "low", 0.06),
    ("Energy", "low", 0.115),
    ("Appliances & electronics", "low", 0.015),
)

#: Every parameter with its default; pass any as a keyword to :func:`simulate_firms`.
#: Set a path's parameter to 0 to remove it (e.g. ``confounding_index=0``).
DEFAULT_PARAMS: dict[str, Any] = {
    "start_year": 2008,
    "high_contact_share": 5 / 13,  # share of industries of high customer contact (if not the 13 above)
    "industry_concentration": 4.0,  # Dirichlet concentration of firm shares (industries other than the 13)
    # true effects: index points per star of the true rating
    "effect_high": 4.0,
    "effect_low": 0.35,
    "reverse": 0.0,  # stars of next year's rating per index point above the firm's usual level
    # levels
    "mu_rating": 3.45,
    "mu_index": 75.0,
    "industry_sd_rating": 0.15,
    "industry_sd_index": 4.0,
    "industry_corr": -0.5,
    "contact_rating_shift": -0.2,
    # stable firm-level confounding (brand, pay level): raises both series
    "confounding_rating": 0.15,  # stars per SD of the confounder
    "confounding_index": 2.0,  # index points per SD of the confounder
    "firm_sd_rating": 0.2,
    "firm_sd_index": 4.5,
    # year shocks (common to all firms)
    "rating_trend": 0.02,
    "year_sd_rating": 0.04,
    "index_trend": 0.1,
    "year_sd_index": 0.6,
    # within-firm dynamics
    "within_sd_rating": 0.25,
    "ar_rating": 0.4,
    "index_noise_sd": 1.5,
    "ar_index": 0.3,
    # reviews: the rating is the mean of n_reviews noisy reviews
    "review_sd": 1.2,
    "reviews_median": 500.0,  # median reviews per year in the last year
    "reviews_log_sd": 1.0,
    "review_growth": 0.2,  # log growth of review volume per year
    # panel shape
    "unbalanced_share": 0.2,
    # optional market value
    "market_value": False,
    "value_per_index_point": 0.02,  # log market value per index point
}

_BURN_IN = 30
_TRUTH_SEED = 20_190_807  # fixed: the observed truth depends on the design only
_TRUTH_CACHE: dict[str, dict[str, Any]] = {}


@dataclass
class FirmPanel:
    """A simulated firm x year panel with its ground truth.

    Attributes
    ----------
    data : DataFrame
        One row per firm-year: ``firm_id, industry, contact_intensity, year,
        employee_rating, n_reviews, rating_sd, customer_index`` (and
        ``market_value`` if requested).
    truth : dict
        ``params``, ``derived``, ``derivation``, ``observed`` and ``design``
        (see the module docstring).
    latent : DataFrame
        The noise-free parts: ``firm_id, year, true_rating`` (:math:`\\xi_{it}`),
        ``index_latent`` (:math:`C_{it}` before rounding), ``index_noise`` (:math:`e_{it}`), ``confounder``
        (:math:`F_i`).
    """

    data: pd.DataFrame
    truth: dict[str, Any]
    latent: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        d = self.data
        return (f"FirmPanel({d['firm_id'].nunique()} firms, {d['year'].nunique()} years, "
                f"{len(d)} firm-years, truth keys {sorted(self.truth)})")


# --------------------------------------------------------------------------- parameters
def _merge_params(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(f"simulate_firms: unknown parameter(s) {unknown}. Valid parameters: {sorted(DEFAULT_PARAMS)}")
    p = dict(DEFAULT_PARAMS)
    p.update(params)
    for k in ("industry_sd_rating", "industry_sd_index", "firm_sd_rating", "firm_sd_index", "year_sd_rating",
              "year_sd_index", "within_sd_rating", "index_noise_sd", "reviews_log_sd"):
        if not float(p[k]) >= 0:
            raise ValueError(f"simulate_firms: {k} is a standard deviation and must be >= 0, got {p[k]!r}")
    for k in ("ar_rating", "ar_index", "industry_corr"):
        if not -1 < float(p[k]) < 1:
            raise ValueError(f"simulate_firms: {k} must lie strictly between -1 and 1, got {p[k]!r}")
    for k in ("high_contact_share", "unbalanced_share"):
        if not 0 <= float(p[k]) <= 1:
            raise ValueError(f"simulate_firms: {k} is a share and must lie in [0, 1], got {p[k]!r}")
    for k in ("review_sd", "reviews_median", "industry_concentration"):
        if not float(p[k]) > 0:
            raise ValueError(f"simulate_firms: {k} must be > 0, got {p[k]!r}")
    worst = max(abs(p["ar_rating"] + p["reverse"] * b) for b in (p["effect_high"], p["effect_low"]))
    if worst >= 1:
        raise ValueError(
            "simulate_firms: ar_rating + reverse * effect must stay below 1 in absolute value "
            f"(got {worst:.3f}); the within-firm rating process would be explosive. Use a smaller reverse path."
        )
    return p


def _industries(n_industries: int, p: dict[str, Any], rng: np.random.Generator,
                industry_effects: dict | None) -> pd.DataFrame:
    """Industry names, contact intensity, firm shares and effects (drawn unless given)."""
    if n_industries == 13:
        names = [n for n, _, _ in INDUSTRIES_13]
        contact = [c for _, c, _ in INDUSTRIES_13]
        shares = np.array([s for _, _, s in INDUSTRIES_13])
    else:
        n_high = int(round(n_industries * p["high_contact_share"]))
        if n_industries >= 2:
            n_high = min(max(n_high, 1), n_industries - 1)
        names = [f"Industry {k + 1:02d}" for k in range(n_industries)]
        contact = ["high"] * n_high + ["low"] * (n_industries - n_high)
        shares = rng.dirichlet(np.full(n_industries, float(p["industry_concentration"])))
    sd_r, sd_c, r = p["industry_sd_rating"], p["industry_sd_index"], p["industry_corr"]
    z = rng.standard_normal((n_industries, 2))
    eff_r = sd_r * z[:, 0]
    eff_c = sd_c * (r * z[:, 0] + math.sqrt(1 - r * r) * z[:, 1])
    ind = pd.DataFrame({"industry": names, "contact_intensity": contact, "share": shares,
                        "effect_rating": eff_r, "effect_index": eff_c})
    if industry_effects is not None:
        for key, col in (("rating", "effect_rating"), ("index", "effect_index"), ("share", "share")):
            if key in industry_effects:
                vals = np.asarray(industry_effects[key], dtype=float)
                if vals.shape != (n_industries,):
                    raise ValueError(
                        f"simulate_firms: industry_effects[{key!r}] must have one value per industry "
                        f"({n_industries}), got shape {vals.shape}"
                    )
                ind[col] = vals
        if "share" in industry_effects:
            s = ind["share"].to_numpy()
            if np.any(s < 0) or s.sum() <= 0:
                raise ValueError("simulate_firms: industry_effects['share'] must be non-negative and not all zero")
            ind["share"] = s / s.sum()
    return ind


# --------------------------------------------------------------------------- generation
def _allocate(n_firms: int, shares: np.ndarray) -> np.ndarray:
    """Industry of each firm: counts by largest remainder (the design holds the mix fixed)."""
    raw = n_firms * shares / shares.sum()
    counts = np.floor(raw).astype(int)
    short = n_firms - counts.sum()
    counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return np.repeat(np.arange(len(shares)), counts)


def _generate(n_firms: int, n_years: int, p: dict[str, Any], ind: pd.DataFrame,
              rng: np.random.Generator, labels: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw one panel (observed rows, latent rows) for the given industries.

    ``labels=False`` (the large truth panel) keeps firm ids and industries as integer codes.
    """
    T = n_years
    k_of = rng.permutation(_allocate(n_firms, ind["share"].to_numpy()))
    high = (ind["contact_intensity"].to_numpy()[k_of] == "high")
    beta = np.where(high, p["effect_high"], p["effect_low"])
    F = rng.standard_normal(n_firms)
    A = (p["mu_rating"] + ind["effect_rating"].to_numpy()[k_of] + p["contact_rating_shift"] * high
         + p["confounding_rating"] * F + rng.normal(0, p["firm_sd_rating"], n_firms))
    B = (p["mu_index"] + ind["effect_index"].to_numpy()[k_of] + p["confounding_index"] * F
         + rng.normal(0, p["firm_sd_index"], n_firms))
    tc = np.arange(T) - (T - 1) / 2
    tau = p["rating_trend"] * tc + rng.normal(0, p["year_sd_rating"], T)
    kappa = p["index_trend"] * tc + rng.normal(0, p["year_sd_index"], T)

    # within-firm processes with burn-in (vectorised over firms)
    phi_r, phi_c, g = p["ar_rating"], p["ar_index"], p["reverse"]
    sd_eps = p["within_sd_rating"] * math.sqrt(1 - phi_r**2)
    sd_eta = p["index_noise_sd"] * math.sqrt(1 - phi_c**2)
    w = rng.normal(0, p["within_sd_rating"], n_firms)
    e = rng.normal(0, p["index_noise_sd"], n_firms)
    W = np.empty((n_firms, T))
    E = np.empty((n_firms, T))
    for step in range(_BURN_IN + T):
        if step:
            d_prev = beta * w + e
            w = phi_r * w + g * d_prev + rng.normal(0, sd_eps, n_firms)
            e = phi_c * e + rng.normal(0, sd_eta, n_firms)
        j = step - _BURN_IN
        if j >= 0:
            W[:, j], E[:, j] = w, e
    xi = A[:, None] + tau[None, :] + W
    C = B[:, None] + kappa[None, :] + beta[:, None] * (xi - p["mu_rating"]) + E

    # reviews: firm volume x platform growth
    m = p["reviews_median"] * np.exp(rng.normal(0, p["reviews_log_sd"], n_firms))
    lam = m[:, None] * np.exp(p["review_growth"] * (np.arange(T) - (T - 1)))[None, :]
    n_rev = rng.poisson(lam)
    noise = rng.standard_normal((n_firms, T)) * p["review_sd"] / np.sqrt(np.maximum(n_rev, 1))
    rating = np.where(n_rev > 0, np.clip(xi + noise, 1.0, 5.0), np.nan)
    chi = rng.chisquare(np.maximum(n_rev - 1, 1))
    rating_sd = np.where(n_rev >= 2, p["review_sd"] * np.sqrt(chi / np.maximum(n_rev - 1, 1)), np.nan)
    index = np.clip(np.round(C), 0, 100)

    # observation windows
    present = np.ones((n_firms, T), dtype=bool)
    unb = rng.random(n_firms) < p["unbalanced_share"]
    first = rng.integers(0, T, n_firms)
    length = 1 + np.floor(rng.random(n_firms) * (T - first)).astype(int)
    yrs = np.arange(T)[None, :]
    window = (yrs >= first[:, None]) & (yrs < (first + length)[:, None])
    present[unb] = window[unb]

    fi, ti = np.nonzero(present)
    firm_ids = np.array([f"F{i + 1:04d}" for i in range(n_firms)]) if labels else np.arange(n_firms)
    data = pd.DataFrame({
        "firm_id": firm_ids[fi],
        "industry": ind["industry"].to_numpy()[k_of][fi] if labels else k_of[fi],
        "contact_intensity": np.where(high, "high", "low")[fi] if labels else high[fi],
        "year": (int(p["start_year"]) + ti).astype("int64"),
        "employee_rating": np.round(rating[fi, ti], 2),
        "n_reviews": n_rev[fi, ti].astype("int64"),
        "rating_sd": np.round(rating_sd[fi, ti], 3),
        "customer_index": index[fi, ti],
    })
    if p["market_value"]:
        v = rng.normal(math.log(30.0), 1.0, n_firms)
        mv = np.exp(v[:, None] + p["value_per_index_point"] * (C - p["mu_index"])
                    + rng.normal(0, 0.1, (n_firms, T)))
        data["market_value"] = np.round(mv[fi, ti], 2)
    latent = pd.DataFrame({
        "firm_id": firm_ids[fi],
        "year": data["year"].to_numpy(),
        "true_rating": xi[fi, ti],
        "index_latent": C[fi, ti],
        "index_noise": E[fi, ti],
        "confounder": F[fi],
    })
    return data, latent


# --------------------------------------------------------------------------- oracle (independent of the estimators)
def _demean2(cols: np.ndarray, f: np.ndarray, t: np.ndarray, w: np.ndarray | None = None,
             tol: float = 1e-10, max_iter: int = 2000) -> np.ndarray:
    """Two-way (firm, year) demeaning by alternating projections (weighted if ``w``)."""
    x = np.array(cols, dtype=float, copy=True)
    if x.ndim == 1:
        x = x[:, None]
    w = np.ones(len(f)) if w is None else np.asarray(w, float)
    wf = np.bincount(f, w)
    wt = np.bincount(t, w)
    scale = np.abs(x).max(axis=0) + 1.0
    for _ in range(max_iter):
        change = 0.0
        for codes, tot in ((f, wf), (t, wt)):
            for j in range(x.shape[1]):
                mean = np.bincount(codes, w * x[:, j], minlength=len(tot)) / np.where(tot > 0, tot, 1)
                x[:, j] -= mean[codes]
                change = max(change, float(np.abs(mean).max() / scale[j]))
        if change < tol:
            break
    return x


def _is_high(contact: pd.Series) -> np.ndarray:
    return (contact.to_numpy() == True) if contact.dtype == bool else (contact == "high").to_numpy(float)  # noqa: E712


def _ols(X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    if w is not None:
        s = np.sqrt(w)
        X, y = X * s[:, None], y * s
    return np.linalg.lstsq(X, y, rcond=None)[0]


def _oracle(data: pd.DataFrame, latent: pd.DataFrame, p: dict[str, Any]) -> dict[str, float]:
    """The estimands of every finding on one large panel (observed and true ratings)."""
    df = data.assign(true_rating=latent["true_rating"].to_numpy())
    # Outcome of the contemporaneous slopes: without the reverse path the index's own noise e is
    # independent of every rating, so removing it (and the rounding) leaves the slopes' limits
    # unchanged and cuts the Monte Carlo error of the truth about threefold.
    if p["reverse"] == 0:
        df["__y_slope"] = (latent["index_latent"] - latent["index_noise"]).to_numpy()
    else:
        df["__y_slope"] = df["customer_index"]
    out: dict[str, float] = {}
    rated = df[df["employee_rating"].notna()].copy()
    # firms with >= 2 rated years enter the fixed-effects designs
    n_years_firm = rated.groupby("firm_id")["year"].transform("size")
    fe = rated[n_years_firm >= 2]
    f = pd.factorize(fe["firm_id"])[0]
    t = pd.factorize(fe["year"])[0]
    hi = _is_high(fe["contact_intensity"])
    y = fe["__y_slope"].to_numpy(float)

    def slopes(y_d: np.ndarray, xh: np.ndarray, xl: np.ndarray, w=None) -> tuple[float, float, float]:
        # demeaning is linear: the demeaned rating is the sum of its two group parts
        overall = _ols((xh + xl)[:, None], y_d, w)[0]
        b = _ols(np.column_stack([xh, xl]), y_d, w)
        return float(overall), float(b[0]), float(b[1])

    x_obs, x_true = fe["employee_rating"].to_numpy(float), fe["true_rating"].to_numpy(float)
    Z = _demean2(np.column_stack([y, x_obs * hi, x_obs * (1 - hi), x_true * hi, x_true * (1 - hi)]), f, t)
    o, h, lo = slopes(Z[:, 0], Z[:, 1], Z[:, 2])
    out.update({"firm.fe.per_star": o, "firm.fe.per_star.high_contact": h,
                "firm.fe.per_star.low_contact": lo, "firm.fe.difference": h - lo})
    o, h, lo = slopes(Z[:, 0], Z[:, 3], Z[:, 4])
    out.update({"firm.fe_corrected.per_star": o, "firm.fe_corrected.per_star.high_contact": h,
                "firm.fe_corrected.per_star.low_contact": lo, "firm.fe_corrected.difference": h - lo})
    w = fe["n_reviews"].to_numpy(float)
    Z = _demean2(np.column_stack([y, x_obs * hi, x_obs * (1 - hi)]), f, t, w)
    o, h, lo = slopes(Z[:, 0], Z[:, 1], Z[:, 2], w)
    out.update({"firm.fe_weighted.per_star": o, "firm.fe_weighted.per_star.high_contact": h,
                "firm.fe_weighted.per_star.low_contact": lo})

    # lagged designs: consecutive years, both firms' values present, lagged outcome controlled
    lagged = rated.copy()
    prev = lagged[["firm_id", "year", "employee_rating", "customer_index"]].assign(year=lagged["year"] + 1)
    lagged = lagged.merge(prev, on=["firm_id", "year"], suffixes=("", "_prev"))
    lagged = lagged[lagged.groupby("firm_id")["year"].transform("size") >= 2]
    fl = pd.factorize(lagged["firm_id"])[0]
    tl = pd.factorize(lagged["year"])[0]
    Z = _demean2(lagged[["customer_index", "employee_rating_prev", "customer_index_prev",
                         "employee_rating"]].to_numpy(float), fl, tl)
    out["firm.lag.rating_to_index"] = float(_ols(Z[:, [1, 2]], Z[:, 0])[0])
    out["firm.lag.index_to_rating"] = float(_ols(Z[:, [2, 1]], Z[:, 3])[0])

    # pooled, between, latest-year cross-section (all rated firm-years)
    x, yy = rated["employee_rating"].to_numpy(float), rated["customer_index"].to_numpy(float)
    r = float(np.corrcoef(x, yy)[0, 1])
    out["firm.pooled.corr"] = r
    out["firm.pooled.r2"] = r * r
    ys = rated["__y_slope"].to_numpy(float)
    out["firm.pooled.per_star"] = float(np.cov(x, ys)[0, 1] / np.var(x, ddof=1))
    means = rated.groupby("firm_id")[["employee_rating", "__y_slope"]].mean()
    out["firm.between.per_star"] = float(np.cov(means.iloc[:, 0], means.iloc[:, 1])[0, 1] / np.var(means.iloc[:, 0], ddof=1))
    last = rated[rated["year"] == rated["year"].max()]
    rc = float(np.corrcoef(last["employee_rating"], last["customer_index"])[0, 1])
    out["firm.cross_section.r2"] = rc * rc
    for level in ("high", "low"):
        sub = last[_is_high(last["contact_intensity"]) == (level == "high")]
        if len(sub) > 2:
            rc = float(np.corrcoef(sub["employee_rating"], sub["customer_index"])[0, 1])
            out[f"firm.cross_section.r2.{level}_contact"] = rc * rc
    return out


_DERIVATION_OBSERVED = {
    "firm.fe": "Two-way (firm, year) fixed-effects slope of the index on the published rating (firms with "
               ">= 2 rated years), overall and by contact group (interaction model), on one panel of "
               "truth_firms firms; attenuated by rating noise (reliability < 1). Slopes (not correlations) "
               "use the index without its own noise e and rounding when reverse = 0 (same limit, smaller "
               "Monte Carlo error).",
    "firm.fe_corrected": "The same slopes on the true firm-year ratings (no review noise): what an "
                         "errors-in-variables correction converges to.",
    "firm.fe_weighted": "The same slopes weighted by the review count.",
    "firm.lag": "Two-way FE of the outcome on the other series lagged one year, controlling the lagged "
                "outcome (consecutive years only): rating_to_index = index_t on rating_(t-1); "
                "index_to_rating = rating_t on index_(t-1). Includes the Nickell (1981) small-T bias and, "
                "for index_to_rating, persistence leaking through the noisy lagged-rating control.",
    "firm.pooled": "Correlation / slope over all rated firm-years, no fixed effects.",
    "firm.between": "Slope of firm-mean index on firm-mean rating (one row per firm).",
    "firm.cross_section": "Squared correlation in the last year only (the single-snapshot design).",
}


def _latent_of(key: str, p: dict[str, Any]) -> float:
    """The structural value a key corresponds to (NaN where none does)."""
    bh, bl = p["effect_high"], p["effect_low"]
    table = {
        "firm.fe.per_star.high_contact": bh, "firm.fe.per_star.low_contact": bl, "firm.fe.difference": bh - bl,
        "firm.fe_corrected.per_star.high_contact": bh, "firm.fe_corrected.per_star.low_contact": bl,
        "firm.fe_corrected.difference": bh - bl,
        "firm.fe_weighted.per_star.high_contact": bh, "firm.fe_weighted.per_star.low_contact": bl,
        "firm.lag.index_to_rating": p["reverse"],
    }
    return float(table.get(key, math.nan))


def _observed_truth(n_years: int, p: dict[str, Any], ind: pd.DataFrame, truth_firms: int) -> dict[str, Any]:
    key = json.dumps({"p": p, "T": n_years, "ind": ind.round(12).to_dict("list"), "N": truth_firms},
                     sort_keys=True, default=str)
    if key not in _TRUTH_CACHE:
        rng = np.random.default_rng(_TRUTH_SEED)
        data, latent = _generate(truth_firms, n_years, p, ind, rng, labels=False)
        values = _oracle(data, latent, p)
        obs = {}
        for k, v in values.items():
            family = ".".join(k.split(".")[:2])
            obs[k] = {"value": v, "latent": _latent_of(k, p), "derivation": _DERIVATION_OBSERVED[family]}
        _TRUTH_CACHE[key] = obs
    return json.loads(json.dumps(_TRUTH_CACHE[key]))


def _derived(p: dict[str, Any], ind: pd.DataFrame, data: pd.DataFrame) -> tuple[dict, dict]:
    """Structural estimands and the reliability implied by the realised review counts."""
    var_w = p["within_sd_rating"] ** 2
    rated = data[data["n_reviews"] > 0]
    noise_var = float((p["review_sd"] ** 2 / rated["n_reviews"]).mean()) if len(rated) else math.nan
    var_between_r = p["confounding_rating"] ** 2 + p["firm_sd_rating"] ** 2
    cov_conf = p["confounding_rating"] * p["confounding_index"]
    derived = {
        "effect_per_star": {"high": p["effect_high"], "low": p["effect_low"],
                            "difference": p["effect_high"] - p["effect_low"]},
        "reverse_per_index_point": p["reverse"],
        "confounding": {
            "cov_rating_index_from_confounder": cov_conf,
            "between_bias_per_star_within_industry": cov_conf / var_between_r if var_between_r > 0 else 0.0,
        },
        "within_firm": {"sd_true_rating": p["within_sd_rating"], "ar_rating": p["ar_rating"],
                        "sd_index_noise": p["index_noise_sd"], "ar_index": p["ar_index"]},
        "reliability": {
            "mean_noise_variance": noise_var,
            "within_reliability_approx": var_w / (var_w + noise_var) if var_w + noise_var > 0 else math.nan,
        },
        "industries": ind.round(6).to_dict("records"),
    }
    derivation = {
        "effect_per_star": "Stated: index points per star of the true firm-year rating, by contact intensity.",
        "reverse_per_index_point": "Stated g: stars of next year's true rating per index point above the firm's usual level.",
        "confounding": "Cov(A_i, B_i) from the confounder = confounding_rating*confounding_index; within an "
                       "industry the between-firm slope exceeds the true effect by that over Var(A_i) "
                       "(= confounding_rating^2 + firm_sd_rating^2) before noise.",
        "within_firm": "Stationary SDs and autocorrelations of the within-firm parts w and e (no reverse path).",
        "reliability": "mean review_sd^2/n_reviews over rated firm-years; within reliability approx = "
                       "sd_true_rating^2 / (sd_true_rating^2 + that mean) (ignores year effects and the "
                       "finite-T demeaning; the estimator computes it exactly from the data).",
        "industries": "Industry names, contact intensity, firm shares and effects on rating (stars) and index (points).",
    }
    return derived, derivation


def simulate_firms(
    n_firms: int = 300,
    n_years: int = 11,
    n_industries: int = 13,
    seed: int | np.random.Generator | None = None,
    *,
    industry_effects: dict | None = None,
    truth_firms: int = 60_000,
    **params: Any,
) -> FirmPanel:
    """Simulate a firm x year panel of employer ratings and a customer index, with its truth.

    Parameters
    ----------
    n_firms, n_years, n_industries : int
        Panel size (defaults: the Zhao & Chamberlain 2019 design, about 300 firms,
        2008-2018, 13 industries).
    seed : int or numpy.random.Generator, optional
        The only source of randomness: the same seed gives the same panel.
    industry_effects : dict, optional
        Hold the industries fixed (for replicate panels): ``{"rating": [...],
        "index": [...], "share": [...]}``, one value per industry (any subset of
        the keys); otherwise drawn. The realised values are in
        ``truth["derived"]["industries"]``.
    truth_firms : int
        Firms in the very large panel on which the ``observed`` truths are
        computed (default 60,000; 0 skips them). Results are cached per design.
    **params
        Any of :data:`DEFAULT_PARAMS`, e.g. ``effect_high=3.0``,
        ``confounding_index=0`` (no confounding), ``reverse=0.02``,
        ``reviews_median=1e6`` (practically no rating noise).

    Returns
    -------
    FirmPanel
        ``.data`` (the panel), ``.truth`` and ``.latent`` (see the module docstring).

    Notes
    -----
    The equations are in the module docstring. With the defaults, ratings
    cluster between 3 and 4 stars, the index between about 63 and 87, and a
    two-way fixed-effects regression on the published (noisy) ratings finds
    about +1.3 index points per star overall and +3.2 in high-contact
    industries (the published pattern), while the true effects are
    ``effect_high`` = 4.0 and ``effect_low`` = 0.35 per star of the true rating.
    Checked by the tests: the simulator's parts are recovered by plain
    regressions on its latent columns, and the fixed-effects estimator of
    :func:`cxex_lab.models.firm_panel` covers ``truth["observed"]`` over
    replicate panels (``tests/test_firms.py``).

    Examples
    --------
    >>> panel = simulate_firms(n_firms=40, n_years=5, seed=1, truth_firms=0)
    >>> list(panel.data.columns)[:5]
    ['firm_id', 'industry', 'contact_intensity', 'year', 'employee_rating']
    >>> panel.truth["params"]["effect_high"]
    4.0
    """
    for name, v, lo in (("n_firms", n_firms, 2), ("n_years", n_years, 2), ("n_industries", n_industries, 1),
                        ("truth_firms", truth_firms, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"simulate_firms: {name} must be a whole number >= {lo}, got {v!r}")
    p = _merge_params(params)
    rng = np.random.default_rng(seed)
    ind = _industries(int(n_industries), p, rng, industry_effects)
    data, latent = _generate(int(n_firms), int(n_years), p, ind, rng)
    derived, derivation = _derived(p, ind, data)
    truth: dict[str, Any] = {
        "params": dict(p),
        "derived": derived,
        "derivation": derivation,
        "design": {"n_firms": int(n_firms), "n_years": int(n_years), "n_industries": int(n_industries),
                   "seed": seed if isinstance(seed, (int, type(None))) else "generator",
                   "truth_firms": int(truth_firms)},
    }
    if truth_firms:
        truth["observed"] = _observed_truth(int(n_years), p, ind, int(truth_firms))
    return FirmPanel(data=data, truth=truth, latent=latent)


# --------------------------------------------------------------------------- replicate panels and scenarios
#: Findings checked by ``firm_replicates(..., fast=True)``: the issue's acceptance keys.
FAST_KEYS: tuple[str, ...] = (
    "firm.fe.per_star.high_contact", "firm.fe.per_star.low_contact", "firm.fe.difference",
    "firm.fe_corrected.per_star.high_contact", "firm.fe_corrected.per_star.low_contact",
    "firm.fe_corrected.difference",
)


def _design_industries(n_industries: int, seed: Any, params: dict[str, Any]) -> dict[str, list[float]]:
    """The industries of the first panel (effects and shares), to hold fixed over replicates."""
    p = _merge_params(params)
    ind = _industries(int(n_industries), p, np.random.default_rng(seed), None)
    return {"rating": ind["effect_rating"].tolist(), "index": ind["effect_index"].tolist(),
            "share": ind["share"].tolist()}


def firm_replicates(
    R: int = 200,
    seed: int = 0,
    *,
    n_firms: int = 300,
    n_years: int = 11,
    n_industries: int = 13,
    fast: bool = False,
    n_boot: int = 199,
    truth_firms: int = 60_000,
    progress: bool = False,
    **params: Any,
) -> pd.DataFrame:
    """Estimates, intervals and truths of the firm-level findings over ``R`` replicate panels.

    The industries (effects on both series, firm shares, contact intensity)
    are drawn once from ``seed`` and held fixed; firms, years, reviews and
    noise are redrawn for replicate ``r`` from the seed ``(seed, r)``. The
    observed-scale truth of each finding comes from one very large panel with
    the same design (``truth["observed"]``).

    Parameters
    ----------
    R, seed : int
        Number of replicate panels and the base seed.
    n_firms, n_years, n_industries : int
        Panel size.
    fast : bool
        Only the fixed-effects slopes by contact intensity and their
        noise-corrected versions (:data:`FAST_KEYS`), through
        :func:`cxex_lab.models.firm_panel` directly (about 3x faster); otherwise
        every finding of :func:`cxex_lab.findings.firm_level`.
    n_boot : int
        Bootstrap draws for the correlation intervals (full run only).
    truth_firms : int
        Firms in the truth panel.
    progress : bool
        Show a tqdm progress bar.
    **params
        Simulator parameters (:data:`DEFAULT_PARAMS`).

    Returns
    -------
    DataFrame
        One row per replicate and finding: ``replicate, key, estimate,
        ci_low, ci_high, se, truth, latent, covered``. :func:`summarise_replicates`
        turns it into bias, coverage and interval width per finding.

    Examples
    --------
    >>> reps = firm_replicates(R=2, seed=1, n_firms=80, fast=True, truth_firms=5000)
    >>> sorted(reps["key"].unique())[:2]
    ['firm.fe.difference', 'firm.fe.per_star.high_contact']
    """
    from cxex_lab.findings import firm_level
    from cxex_lab.models.firm_panel import firm_panel
    from cxex_lab.results import quietly

    fixed = _design_industries(n_industries, seed, params)
    first = simulate_firms(n_firms, n_years, n_industries, seed=np.random.default_rng([seed, 0]),
                           industry_effects=fixed, truth_firms=truth_firms, **params)
    observed = first.truth.get("observed", {})
    it = range(R)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="firm replicates")
    rows = []
    for r in it:
        panel = first if r == 0 else simulate_firms(n_firms, n_years, n_industries,
                                                    seed=np.random.default_rng([seed, r]), industry_effects=fixed,
                                                    truth_firms=0, **params)
        if fast:
            with quietly():
                fe = firm_panel(panel.data, moderator="contact_intensity").table
                ev = firm_panel(panel.data, moderator="contact_intensity", eiv=True, n_reviews="n_reviews",
                                review_sd="rating_sd").table
            tab = []
            for prefix, t in (("firm.fe", fe), ("firm.fe_corrected", ev)):
                for x in t.itertuples(index=False):
                    key = f"{prefix}.difference" if " - " in x.group else f"{prefix}.per_star.{x.group}_contact"
                    tab.append({"key": key, "estimate": x.estimate, "ci_low": x.ci_low, "ci_high": x.ci_high,
                                "se": x.se})
            est = pd.DataFrame(tab)
        else:
            f = firm_level(panel, details=False, n_boot=n_boot, seed=r)
            est = f.table[["key", "estimate", "ci_low", "ci_high"]].assign(se=np.nan)
        for x in est.itertuples(index=False):
            t = observed.get(x.key, {})
            tv = t.get("value", math.nan)
            rows.append({"replicate": r, "key": x.key, "estimate": x.estimate, "ci_low": x.ci_low,
                         "ci_high": x.ci_high, "se": x.se, "truth": tv, "latent": t.get("latent", math.nan),
                         "covered": bool(x.ci_low <= tv <= x.ci_high) if np.isfinite(tv) and np.isfinite(x.ci_low)
                         else None})
    return pd.DataFrame(rows)


def summarise_replicates(reps: pd.DataFrame) -> pd.DataFrame:
    """Bias, bias in SE units, 95% coverage with its Monte Carlo error, and mean width, per finding.

    ``bias_se`` divides the bias by the SD of the estimates over replicates
    (the empirical SE); ``coverage_mc_se`` is sqrt(c(1-c)/R).
    """
    out = []
    for key, g in reps.groupby("key", sort=False):
        est, truth = g["estimate"].to_numpy(float), float(g["truth"].iloc[0])
        cov = g["covered"].dropna().astype(float)
        sd = float(est.std(ddof=1)) if len(est) > 1 else math.nan
        bias = float(est.mean() - truth) if np.isfinite(truth) else math.nan
        c = float(cov.mean()) if len(cov) else math.nan
        out.append({"key": key, "R": len(g), "truth": truth, "latent": float(g["latent"].iloc[0]),
                    "mean_estimate": float(est.mean()), "bias": bias,
                    "bias_se": bias / sd if sd and np.isfinite(bias) else math.nan, "empirical_se": sd,
                    "coverage": c, "coverage_mc_se": math.sqrt(c * (1 - c) / len(cov)) if len(cov) else math.nan,
                    "mean_width": float((g["ci_high"] - g["ci_low"]).mean())})
    return pd.DataFrame(out)


#: The scenarios of :func:`firm_scenarios`: label -> parameter changes.
SCENARIOS: dict[str, dict[str, Any]] = {
    "as simulated": {},
    "no firm-level confounding": {"confounding_rating": 0.0, "confounding_index": 0.0},
    "no industry differences": {"industry_sd_rating": 0.0, "industry_sd_index": 0.0, "contact_rating_shift": 0.0},
    "few reviews (median 30 a year)": {"reviews_median": 30.0},
    "noise-free ratings": {"reviews_median": 1e7},
    "contact does not matter (low = high)": {"effect_low": DEFAULT_PARAMS["effect_high"]},
}


def firm_scenarios(
    seed: int = 0,
    *,
    n_firms: int = 300,
    n_years: int = 11,
    n_industries: int = 13,
    scenarios: dict[str, dict[str, Any]] | None = None,
    **params: Any,
) -> pd.DataFrame:
    """How pooling, contact intensity, few reviews and confounding move the answer, on simulated firms.

    Simulates the same design under each scenario (same seed: common random
    numbers, so only the named mechanism differs) and runs the designs of
    :func:`cxex_lab.models.firm_panel` on each: the pooled correlation and the
    last-year R², the between-firm slope, the two-way fixed-effects slope for
    all firms and by contact intensity, and the noise-corrected slope. This is
    a demonstration driver (it calls the estimators; the estimators do not
    import it).

    Parameters
    ----------
    seed : int
        Seed shared by all scenarios.
    scenarios : dict, optional
        ``{label: parameter changes}`` (default :data:`SCENARIOS`).
    **params
        Parameters applied to every scenario.

    Returns
    -------
    DataFrame
        One row per scenario: ``scenario``, ``pooled_corr``, ``snapshot_r2``,
        ``between_per_star``, ``fe_per_star``, ``fe_high``, ``fe_low``,
        ``corrected_high``, ``corrected_low``, ``true_high``, ``true_low``,
        ``reliability`` (within-firm, all firms).

    Examples
    --------
    >>> tab = firm_scenarios(seed=1, n_firms=80, scenarios={"as simulated": {}})
    >>> float(tab.loc[0, "true_high"])
    4.0
    """
    from cxex_lab.models.firm_panel import firm_panel
    from cxex_lab.results import quietly

    rows = []
    fixed = _design_industries(n_industries, seed, params)
    for label, change in (scenarios or SCENARIOS).items():
        p = {**params, **change}
        panel = simulate_firms(n_firms, n_years, n_industries, seed=seed, industry_effects=fixed, truth_firms=0, **p)
        d = panel.data
        with quietly():
            pooled = firm_panel(d, design="pooled", n_boot=0).table.set_index("term")
            snap = firm_panel(d, design="cross_section", n_boot=0).table.set_index("term")
            between = firm_panel(d, design="between", n_boot=0).table.set_index("term")
            fe = firm_panel(d, n_reviews="n_reviews", review_sd="rating_sd")
            fec = firm_panel(d, moderator="contact_intensity").table.set_index("group")
            ev = firm_panel(d, moderator="contact_intensity", eiv=True, n_reviews="n_reviews",
                            review_sd="rating_sd").table.set_index("group")
        q = panel.truth["params"]
        rows.append({
            "scenario": label,
            "pooled_corr": pooled.loc["corr", "estimate"],
            "snapshot_r2": snap.loc["r2", "estimate"],
            "between_per_star": between.loc["rating->index", "estimate"],
            "fe_per_star": fe.table.iloc[0].estimate,
            "fe_high": fec.loc["high", "estimate"], "fe_low": fec.loc["low", "estimate"],
            "corrected_high": ev.loc["high", "estimate"], "corrected_low": ev.loc["low", "estimate"],
            "true_high": q["effect_high"], "true_low": q["effect_low"],
            "reliability": fe.fit.reliability.get("all", math.nan),
        })
    return pd.DataFrame(rows)
