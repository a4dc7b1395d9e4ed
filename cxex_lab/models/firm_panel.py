r"""Firm-level panels: does a firm's employer rating go with its customer index?

Published firm-level studies regress a customer-satisfaction index (0-100,
e.g. the ACSI) on an employer-review rating (1-5 stars, e.g. Glassdoor) across
firms and years. :func:`firm_panel` fits that design and the contrasts that
explain why such studies disagree, all in index points per star:

* ``design="fe"`` -- the index on the rating with **firm and year fixed
  effects**, intervals clustered by firm (linearmodels ``PanelOLS``): how a
  firm's index moves when *its own* rating moves, net of stable firm
  differences (brand, pay level) and of shocks common to a year. Optional:
  per-group slopes by a moderator (contact intensity) and their difference,
  a lagged rating (``lag=1``) and the reverse direction (index -> next year's
  rating, ``reverse=True``), weights (the review count), and an
  **errors-in-variables correction** for the noise of ratings averaged over few
  reviews (``eiv=True``).
* ``design="pooled"`` -- one regression and correlation over all firm-years
  (no fixed effects): mixes stable differences between firms and industries
  into the slope.
* ``design="between"`` -- firm means on firm means: only the stable
  differences.
* ``design="cross_section"`` -- one year's snapshot (the single-year design).

:func:`read_firm_panel` loads a researcher's CSV / Parquet file onto the
canonical column names and validates it; :func:`find_firm_panel` locates one.
The estimators never import :mod:`cxex_lab.simulate_firms` (the oracle that
checks them).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxex_lab.ledger import Ledger
from cxex_lab.results import Fit, Result

__all__ = [
    "CANONICAL",
    "FirmPanelFit",
    "firm_panel",
    "read_firm_panel",
    "find_firm_panel",
    "validate_firm_panel",
]

#: Canonical column names of a firm panel (what :func:`read_firm_panel` renames to).
CANONICAL: dict[str, str] = {
    "firm": "firm_id",
    "industry": "industry",
    "contact": "contact_intensity",
    "year": "year",
    "rating": "employee_rating",
    "n_reviews": "n_reviews",
    "rating_sd": "rating_sd",
    "index": "customer_index",
}

_DESIGNS = ("fe", "pooled", "between", "cross_section")
_FILE_NAMES = ("firm_panel.parquet", "firm_panel.csv")


@dataclass(frozen=True, kw_only=True)
class FirmPanelFit(Fit):
    """Fit record of :func:`firm_panel` (adds to :class:`~cxex_lab.results.Fit`).

    Attributes
    ----------
    design : str
        ``"fe"``, ``"pooled"``, ``"between"`` or ``"cross_section"``.
    n_firms, n_years : int
        Firms and distinct years behind the estimates.
    r2_within : float or None
        Within (two-way demeaned) R² of the fixed-effects model.
    review_variance : float or None
        Variance of one review (stars²) used for the reliability and the
        correction (given, or pooled from the per-firm-year review SDs).
    reliability : dict
        Within-firm reliability of the rating per group (share of the
        demeaned rating's variance that is not review noise); empty when the
        review count or review variance is unknown.
    ledger : tuple of dict
        Data-quality ledger entries (rows excluded and why); see
        :func:`cxex_lab.ledger.ledger_of`.
    """

    design: str = "fe"
    n_firms: int = 0
    n_years: int = 0
    r2_within: float | None = None
    review_variance: float | None = None
    reliability: dict = field(default_factory=dict, compare=False)
    ledger: tuple = field(default=(), compare=False)


# --------------------------------------------------------------------------- validation
def _where(source: str | None, func: str) -> str:
    return f"{func} ({source})" if source else func


def _examples(df: pd.DataFrame, mask: pd.Series, firm: str, year: str, col: str | None = None, limit: int = 3) -> str:
    rows = df.loc[mask]
    parts = []
    for idx, r in rows.head(limit).iterrows():
        s = f"row {idx} ({firm}={r[firm]!r}, {year}={r[year]!r}"
        s += f": {r[col]!r})" if col is not None else ")"
        parts.append(s)
    more = len(rows) - limit
    return "; ".join(parts) + (f" and {more} more" if more > 0 else "")


def validate_firm_panel(
    df: pd.DataFrame,
    *,
    firm: str = "firm_id",
    year: str = "year",
    x: str = "employee_rating",
    y: str = "customer_index",
    n_reviews: str | None = None,
    moderator: str | None = None,
    weights: str | None = None,
    extra: Sequence[str] = (),
    x_range: tuple[float, float] | None = (1.0, 5.0),
    y_range: tuple[float, float] | None = (0.0, 100.0),
    source: str | None = None,
    func: str = "firm_panel",
) -> pd.DataFrame:
    """Check a firm x year panel; raise ``ValueError`` naming the column, rows, value and rule.

    Rules: the named columns exist; the rating ``x``, the index ``y``, the year,
    the review count and the weights are numeric; years are whole numbers and
    never missing, firms never missing; a rating lies in ``x_range`` (1-5 stars)
    and an index in ``y_range`` (0-100); a review count is a whole number >= 0;
    weights are > 0; each (firm, year) occurs at most once. Missing ratings or
    index values are allowed (the estimators drop them and count them in the
    ledger).

    Returns
    -------
    DataFrame
        ``df`` itself (unchanged) when it passes.
    """
    where = _where(source, func)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}.")
    needed = [c for c in dict.fromkeys([firm, year, x, y, n_reviews, moderator, weights, *extra]) if c is not None]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        avail = ", ".join(map(str, list(df.columns)[:25]))
        raise ValueError(
            f"{where}: column(s) {missing} not found. Available columns: [{avail}]. Pass the right "
            "names (firm=, year=, x=, y=, ...) or rename the columns first."
        )
    if len(df) == 0:
        raise ValueError(f"{where}: the panel has no rows.")
    for col in [c for c in (year, x, y, n_reviews, weights) if c is not None]:
        s = df[col]
        if not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
            bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
            ex = _examples(df, bad, firm, year, col) if bad.any() else ""
            raise ValueError(
                f"{where}: column {col!r} must be numeric (dtype {s.dtype}); rule: numbers only. "
                + (f"Non-numeric values in {ex}." if ex else "")
            )
    for col, what in ((firm, "firm"), (year, "year")):
        bad = df[col].isna()
        if bad.any():
            raise ValueError(
                f"{where}: column {col!r} ({what}) is missing in {int(bad.sum())} row(s), e.g. row(s) "
                f"{list(df.index[bad][:5])}; rule: every row names its {what}."
            )
    yr = df[year].astype(float)
    bad = ~np.isfinite(yr) | (yr != np.round(yr))
    if bad.any():
        raise ValueError(
            f"{where}: column {year!r} must hold whole years (2008, 2009, ...); "
            f"{int(bad.sum())} row(s) do not: {_examples(df, bad, firm, year, year)}."
        )
    for col, rng, rule in ((x, x_range, "an employer rating is between {lo:g} and {hi:g} stars"),
                           (y, y_range, "a customer index is between {lo:g} and {hi:g}")):
        if rng is None:
            continue
        lo, hi = rng
        v = df[col]
        bad = v.notna() & ((v < lo) | (v > hi))
        if bad.any():
            raise ValueError(
                f"{where}: column {col!r} has {int(bad.sum())} value(s) outside {lo:g}-{hi:g} "
                f"(rule: {rule.format(lo=lo, hi=hi)}): {_examples(df, bad, firm, year, col)}. "
                "Fix or remove these rows, or check that the column is on the stated scale."
            )
    if n_reviews is not None:
        v = df[n_reviews]
        bad = v.notna() & ((v < 0) | (v != np.round(v)))
        if bad.any():
            raise ValueError(
                f"{where}: column {n_reviews!r} (review count) has {int(bad.sum())} value(s) that are not "
                f"whole numbers >= 0: {_examples(df, bad, firm, year, n_reviews)}."
            )
    if weights is not None:
        v = df[weights]
        bad = v.notna() & ~(v >= 0)
        if bad.any():
            raise ValueError(
                f"{where}: column {weights!r} (weights) has {int(bad.sum())} negative value(s) "
                f"(rule: weights are >= 0; rows with weight 0 are left out): {_examples(df, bad, firm, year, weights)}."
            )
    dup = df.duplicated([firm, year], keep=False)
    if dup.any():
        raise ValueError(
            f"{where}: {int(dup.sum())} rows share a (firm, year) pair ({firm!r}, {year!r}); rule: one row "
            f"per firm and year. Duplicates: {_examples(df, dup, firm, year)}. Aggregate or de-duplicate first."
        )
    return df


def find_firm_panel(data_dir: str | Path | None = None, firm_data: str | Path | None = "") -> Path | None:
    """The firm-panel file to use: ``firm_data`` if given, else ``data_dir/firm_panel.{parquet,csv}``.

    Returns None when neither exists (the caller then falls back, e.g. to a
    simulated panel). A ``firm_data`` path that does not exist raises ``ValueError``.
    """
    if firm_data:
        path = Path(firm_data)
        if not path.is_file():
            raise ValueError(f"firm_data: file {str(path)!r} not found.")
        return path
    if data_dir:
        for name in _FILE_NAMES:
            path = Path(data_dir) / name
            if path.is_file():
                return path
    return None


def read_firm_panel(
    path: str | Path,
    *,
    firm: str = "firm_id",
    industry: str | None = "industry",
    contact: str | None = "contact_intensity",
    year: str = "year",
    rating: str = "employee_rating",
    n_reviews: str | None = "n_reviews",
    rating_sd: str | None = None,
    index: str = "customer_index",
    **read_kwargs: Any,
) -> pd.DataFrame:
    """Read a researcher's firm x year panel (CSV or Parquet) onto the canonical column names.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` (read with :func:`pandas.read_csv`) or ``.parquet`` file.
    firm, industry, contact, year, rating, n_reviews, rating_sd, index : str
        The file's column names for the firm id, industry, contact intensity
        (values ``high`` / ``low``), year, employer rating (1-5), review count,
        SD of the firm-year's reviews and customer index (0-100). ``industry``,
        ``contact``, ``n_reviews`` and ``rating_sd`` may be None (absent).
    **read_kwargs
        Passed to the pandas reader (e.g. ``sep=";"``).

    Returns
    -------
    DataFrame
        Columns renamed to :data:`CANONICAL`, validated with
        :func:`validate_firm_panel`; contact intensity lower-cased.
        ``attrs["source"]`` holds the file name.

    Raises
    ------
    ValueError
        Unreadable file, missing columns, out-of-range values, duplicate
        firm-years -- naming the file, column, rows, value and rule.
    """
    path = Path(path)
    src = path.name
    try:
        if path.suffix.lower() == ".parquet":
            raw = pd.read_parquet(path, **read_kwargs)
        elif path.suffix.lower() in (".csv", ".txt"):
            raw = pd.read_csv(path, **read_kwargs)
        else:
            raise ValueError(f"{src}: unsupported file type {path.suffix!r}; use .csv or .parquet.")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{src}: could not be read ({type(exc).__name__}: {exc}).") from exc
    mapping = {firm: "firm_id", year: "year", rating: "employee_rating", index: "customer_index"}
    for src_col, canon in ((industry, "industry"), (contact, "contact_intensity"), (n_reviews, "n_reviews"),
                           (rating_sd, "rating_sd")):
        if src_col is not None:
            mapping[src_col] = canon
    missing = [c for c in mapping if c not in raw.columns]
    if missing:
        avail = ", ".join(map(str, list(raw.columns)[:25]))
        raise ValueError(
            f"{src}: column(s) {missing} not found. Available columns: [{avail}]. Pass the file's names as "
            "firm=, year=, rating=, index=, industry=, contact=, n_reviews=, rating_sd=."
        )
    df = raw[list(mapping)].rename(columns=mapping)
    if "contact_intensity" in df:
        df["contact_intensity"] = df["contact_intensity"].astype("string").str.strip().str.lower()
    validate_firm_panel(df, n_reviews="n_reviews" if "n_reviews" in df else None, source=src, func="read_firm_panel")
    df.attrs["source"] = src
    return df


# --------------------------------------------------------------------------- two-way FE algebra
class _TwoWay:
    """Exact two-way (firm, year) within transformation of an unbalanced panel.

    By Frisch-Waugh-Lovell: demean by firm, then partial out the year dummies
    demeaned by firm, :math:`\\tilde D`. :math:`\\tilde D'\\tilde D =
    \\mathrm{diag}(n_t) - \\sum_f p_f p_f' / T_f` (``p_f`` the firm's year
    indicator vector) is only years x years, so nothing of size rows x years is
    built. ``diag_m`` is the diagonal of the annihilator
    :math:`M = I - P_{[F, D]}`: :math:`M_{rr} = 1 - 1/T_f - \\tilde d_r' G \\tilde d_r`.
    """

    def __init__(self, f: np.ndarray, t: np.ndarray):
        self.f, self.t = f, t
        self.nf, self.nt = int(f.max()) + 1, int(t.max()) + 1
        self.Tf = np.bincount(f, minlength=self.nf).astype(float)
        P = np.zeros((self.nf, self.nt))
        P[f, t] = 1.0
        self.P = P
        dtd = np.diag(np.bincount(t, minlength=self.nt).astype(float)) - (P / self.Tf[:, None]).T @ P
        self.G = np.linalg.pinv(dtd)

    def demean(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, float)
        cols = v[:, None] if v.ndim == 1 else v
        out = np.empty_like(cols)
        for j in range(cols.shape[1]):
            c = cols[:, j]
            c = c - (np.bincount(self.f, c, minlength=self.nf) / self.Tf)[self.f]
            gamma = self.G @ np.bincount(self.t, c, minlength=self.nt)
            out[:, j] = c - (gamma[self.t] - (self.P @ gamma / self.Tf)[self.f])
        return out[:, 0] if v.ndim == 1 else out

    def diag_m(self) -> np.ndarray:
        Gp = self.P @ self.G  # (nf, nt): row f = (G p_f)'
        pGp = np.einsum("ft,ft->f", Gp, self.P)
        f, t = self.f, self.t
        h = np.diag(self.G)[t] - 2 * Gp[f, t] / self.Tf[f] + pGp[f] / self.Tf[f] ** 2
        return 1.0 - 1.0 / self.Tf[f] - h


# --------------------------------------------------------------------------- helpers
def _t_ci(est: np.ndarray, se: np.ndarray, df_t: int, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = stats.t.ppf(1 - alpha / 2, df_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(est / se), df_t)
    return est - q * se, est + q * se, p


def _levels(values: pd.Series, reference: str | None, func: str, moderator: str) -> list:
    levels = sorted(pd.unique(values.dropna()), key=str)
    if len(levels) < 2:
        raise ValueError(f"{func}: moderator {moderator!r} has {len(levels)} level(s) in the usable rows; need at least 2.")
    if reference is None:
        low = [lv for lv in levels if str(lv).strip().lower().startswith("low")]
        reference = low[0] if len(low) == 1 else levels[0]
    if reference not in levels:
        raise ValueError(f"{func}: reference level {reference!r} is not a level of {moderator!r} ({levels}).")
    others = [lv for lv in levels if lv != reference]
    return [*others, reference]  # compared levels first, the reference last


def _review_variance(df: pd.DataFrame, review_sd: float | str | None, n_reviews: str | None, func: str) -> float | None:
    """The variance of a single review: given (float) or pooled from a column of per-firm-year review SDs."""
    if review_sd is None:
        return None
    if isinstance(review_sd, str):
        if review_sd not in df.columns:
            raise ValueError(f"{func}: review_sd column {review_sd!r} not found.")
        if n_reviews is None:
            raise ValueError(f"{func}: review_sd given as a column needs n_reviews= (the review count column).")
        s, n = df[review_sd].astype(float), df[n_reviews].astype(float)
        ok = s.notna() & (n >= 2)
        if not ok.any():
            raise ValueError(f"{func}: column {review_sd!r} has no usable value (needs firm-years with >= 2 reviews).")
        if (s[ok] < 0).any():
            raise ValueError(f"{func}: column {review_sd!r} holds a negative standard deviation.")
        return float(((n[ok] - 1) * s[ok] ** 2).sum() / (n[ok] - 1).sum())
    v = float(review_sd)
    if not v > 0:
        raise ValueError(f"{func}: review_sd must be a positive number of stars (the SD of one review), got {review_sd!r}.")
    return v * v


# --------------------------------------------------------------------------- the estimator
def firm_panel(
    df: pd.DataFrame,
    *,
    firm: str = "firm_id",
    year: str = "year",
    x: str = "employee_rating",
    y: str = "customer_index",
    moderator: str | None = None,
    reference: Any = None,
    design: str = "fe",
    lag: int = 0,
    reverse: bool = False,
    control_lagged: bool = True,
    weights: str | None = None,
    eiv: bool = False,
    n_reviews: str | None = None,
    review_sd: float | str | None = None,
    at_year: int | None = None,
    min_years: int = 2,
    x_range: tuple[float, float] | None = (1.0, 5.0),
    y_range: tuple[float, float] | None = (0.0, 100.0),
    alpha: float = 0.05,
    n_boot: int = 999,
    seed: int | None = 0,
    ledger: Ledger | None = None,
    source: str | None = None,
) -> Result:
    r"""Customer index on employer rating across firms and years: fixed effects and contrasts.

    Parameters
    ----------
    df : DataFrame
        One row per firm and year.
    firm, year : str
        Firm id and (whole-number) year columns.
    x, y : str
        The employer rating (1-5 stars) and the customer index (0-100). The
        roles are fixed: with ``reverse=True`` the rating becomes the outcome.
    moderator : str, optional
        A grouping column (``"contact_intensity"``): one slope per level and
        each level's difference from ``reference`` (default: the one level
        whose name starts with "low", else the first level in sort order).
    design : {"fe", "pooled", "between", "cross_section"}
        Two-way fixed effects (default); pooled over firm-years; firm means;
        one year (``at_year``, default the last).
    lag : int
        ``design="fe"`` only: use the predictor ``lag`` years earlier
        (consecutive years only; a gap leaves the row out).
    reverse : bool
        ``design="fe"`` only: the rating on the (lagged) index -- the reverse
        direction, in stars per index point.
    control_lagged : bool
        With ``lag >= 1``, also control the outcome's own value ``lag`` years
        earlier (default True): a cross-lagged within-firm regression.
    weights : str, optional
        Column of weights >= 0 (e.g. ``"n_reviews"``: firm-years whose
        rating rests on more reviews count more; weight 0 leaves the row out).
        Not with ``eiv``.
    eiv : bool
        ``design="fe"``, ``reverse=False``: correct the slopes for the
        attenuation by rating noise (see Notes). Needs ``n_reviews`` and
        ``review_sd``.
    n_reviews : str, optional
        Review-count column (the rating is the mean of that many reviews).
    review_sd : float or str, optional
        The SD of a single review in stars (e.g. 1.2), or a column holding the
        SD of each firm-year's reviews (pooled over firm-years, weighted by
        n - 1). With ``n_reviews`` it also gives the within-firm
        **reliability** of the rating (reported even without ``eiv``).
    at_year : int, optional
        The year of ``design="cross_section"`` (default: the last year).
    min_years : int
        Firms with fewer usable years are left out of the fixed-effects
        estimate (they carry no within-firm information) and counted in the
        ledger (default 2).
    x_range, y_range : (float, float) or None
        Valid ranges of the rating and the index; a value outside raises
        ``ValueError`` (None: no check).
    alpha : float
        Intervals cover 1 - alpha.
    n_boot, seed : int
        Firm-cluster bootstrap draws and seed for the correlation's interval
        (pooled, between, cross-section).
    ledger : Ledger, optional
        Rows excluded are also recorded here.
    source : str, optional
        A file name to put in error messages.

    Returns
    -------
    Result
        ``table``: ``term, estimate, se, ci_low, ci_high, p, n`` then ``group``
        (``"all"``, a level, or ``"high - low"``), ``lag``, ``n_firms``,
        ``unit``, ``design``, ``reliability``. Terms: ``"rating->index"``
        (index points per star), ``"index->rating"`` (stars per index point,
        ``reverse=True``), ``"lagged outcome"`` (the control), ``"corr"`` and
        ``"r2"`` (pooled / between / cross-section). ``fit``:
        :class:`FirmPanelFit` (``cluster`` is the firm column; the ledger of
        excluded rows is in ``fit.ledger``).

    Notes
    -----
    **Fixed effects.** :math:`y_{it} = \alpha_i + \tau_t + \sum_g \beta_g\,
    x_{i,t-\ell}\,[g(i)=g] + \rho\, y_{i,t-\ell} + e_{it}` by linearmodels
    ``PanelOLS`` (``entity_effects``, ``time_effects``), covariance clustered
    by firm with the small-sample factor :math:`G/(G-1)\cdot(n-1)/(n-k)`
    (Stata's ``vce(cluster)``) and intervals from *t* with G - 1 degrees of
    freedom. Firm effects remove stable differences (brand, pay, industry),
    year effects shocks common to all firms. Interactions with a moderator
    that is constant within firm need no main effect (the firm effects absorb
    it). Clustering by firm allows any correlation of a firm's errors over
    years, not between firms in the same industry-year.

    **Rating noise.** A published rating is the mean of :math:`n_{it}`
    reviews, so :math:`x_{it} = \xi_{it} + \nu_{it}` with
    :math:`\mathrm{Var}(\nu_{it}) = \sigma_r^2 / n_{it}` (:math:`\sigma_r` the
    SD of one review). Within firms the true rating moves little, so the noise
    is a large share of the demeaned rating and attenuates the slope by the
    within-firm reliability

    .. math:: \lambda = 1 - \frac{\sum_r M_{rr}\,\sigma_r^2/n_r}{\ddot x'\ddot x},

    where :math:`\ddot x = Mx` is the two-way demeaned rating and :math:`M_{rr}`
    the diagonal of the fixed-effects annihilator (:math:`1 - 1/T_i` minus the
    year dummies' leverage): :math:`E[\ddot x'\ddot x] = \ddot\xi'\ddot\xi +
    \mathrm{tr}(M \Sigma_\nu)` because the noise is independent across rows.
    ``eiv=True`` solves the corrected normal equations
    :math:`(\ddot X'\ddot X - \Omega)\,\beta = \ddot X'\ddot y` with
    :math:`\Omega = \sum_r M_{rr}\,\sigma_r^2/n_r\, z_r z_r'` (:math:`z_r` the
    multipliers of the noisy rating in each regressor, e.g. the group
    indicators), a method-of-moments (Fuller 1987) estimator, with a
    firm-clustered sandwich covariance of its estimating equations. It assumes
    classical noise: reviews of a firm-year are independent draws around the
    firm-year's true rating (no herding, no campaigns of fake reviews),
    independent of the index and of other years' noise; one review variance
    for all firm-years (pooled if given as a column; its own sampling error,
    small with thousands of reviews, is ignored); and clipping at 1 or 5
    stars is rare. It leaves the slope unbiased for the true rating's effect,
    at the price of a wider interval; with a reliability below about 0.3 it is
    unstable (a note says so). Weighting by the review count instead
    (``weights="n_reviews"``) reduces but does not remove the attenuation and
    changes the weighting of firms.

    **Contrasts.** The pooled slope and correlation mix in stable differences
    between firms and industries (confounding by brand and pay, industry
    levels); the between-firm slope uses nothing else. The correlation's
    interval is a percentile bootstrap over firms (stratified by the
    moderator), its p-value that of the slope. R² is the squared correlation:
    a small R² with a sizeable slope means the rating varies little relative
    to everything else that moves the index.

    **Direction.** ``lag=1`` regresses this year's index on last year's
    rating; ``reverse=True`` this year's rating on last year's index; both
    control the outcome's previous value by default. With firm effects and a
    lagged outcome the coefficients carry the Nickell (1981) bias of order
    1/T, and a noisy lagged-rating control lets persistence leak into the
    reverse coefficient; read them as direction diagnostics, not effects.

    Checked against: ``PanelOLS`` itself for the uncorrected slopes, whose
    point estimates and clustered SEs the hand-written two-way algebra behind
    ``eiv`` reproduces to 1e-8 when the noise variance is zero
    (``tests/test_firms.py``); the firm simulator's truth
    (:mod:`cxex_lab.simulate_firms`), which the fixed-effects intervals cover
    for both contact groups over replicate panels, the correction removing the
    attenuation and the pooled correlation shown biased under firm-level
    confounding.

    References
    ----------
    Zhao, D., & Chamberlain, A. (2019). *Happy employees, satisfied customers:
    The link between Glassdoor reviews and customer satisfaction*. Glassdoor
    Economic Research.

    FitzGerald, M. (2018). New data: Does employee satisfaction drive customer
    satisfaction? Not really! customerstrategy.net.

    Fuller, W. A. (1987). *Measurement Error Models*. Wiley.

    Nickell, S. (1981). Biases in dynamic models with fixed effects.
    *Econometrica*, 49(6), 1417-1426.

    Cameron, A. C., & Miller, D. L. (2015). A practitioner's guide to
    cluster-robust inference. *Journal of Human Resources*, 50(2), 317-372.

    Examples
    --------
    >>> from cxex_lab.simulate_firms import simulate_firms
    >>> panel = simulate_firms(n_firms=120, seed=3, truth_firms=0).data
    >>> table, fit = firm_panel(panel, moderator="contact_intensity")
    >>> table["group"].tolist()
    ['high', 'low', 'high - low']
    >>> fit.cluster
    'firm_id'
    """
    func = "firm_panel"
    if design not in _DESIGNS:
        raise ValueError(f"{func}: design must be one of {_DESIGNS}, got {design!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"{func}: alpha must be between 0 and 1, got {alpha!r}.")
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 0:
        raise ValueError(f"{func}: lag must be a whole number >= 0, got {lag!r}.")
    if isinstance(min_years, bool) or not isinstance(min_years, (int, np.integer)) or min_years < 2:
        raise ValueError(f"{func}: min_years must be a whole number >= 2, got {min_years!r}.")
    if design != "fe" and (lag or reverse or eiv):
        raise ValueError(f"{func}: lag, reverse and eiv apply to design='fe' only (got design={design!r}).")
    if eiv and weights is not None:
        raise ValueError(
            f"{func}: choose either weights= or eiv=True: the correction is derived for the unweighted "
            "fixed-effects estimator."
        )
    if eiv and reverse:
        raise ValueError(
            f"{func}: eiv=True corrects a noisy rating used as a predictor; with reverse=True the noisy rating "
            "is the outcome and (lagged) control, whose noise is shared across rows, which this correction does not cover."
        )
    if eiv and (n_reviews is None or review_sd is None):
        raise ValueError(f"{func}: eiv=True needs n_reviews= (review-count column) and review_sd= (SD of one review, or a column).")
    extra = [c for c in (review_sd if isinstance(review_sd, str) else None,) if c is not None]
    validate_firm_panel(df, firm=firm, year=year, x=x, y=y, n_reviews=n_reviews, moderator=moderator,
                        weights=weights, extra=extra, x_range=x_range, y_range=y_range, source=source, func=func)
    led = Ledger()
    table_name = source or "firm panel"
    sigma2 = _review_variance(df, review_sd, n_reviews, func)

    cols = list(dict.fromkeys(c for c in (firm, year, x, y, moderator, weights, n_reviews, *extra) if c is not None))
    data = df[cols].copy()
    data.attrs = {}
    data[year] = data[year].astype("int64")
    for col, what in ((x, "employee rating"), (y, "customer index")):
        miss = data[col].isna()
        led.add(func, table_name, f"firm-year without a {what} ({col!r} missing)", int(miss.sum()),
                data.loc[miss, [firm, year]].astype(str).agg(" ".join, axis=1).head(5))
    if moderator is not None:
        miss = data[moderator].isna()
        led.add(func, table_name, f"firm-year without a value of the moderator {moderator!r}", int(miss.sum()))
    if weights is not None:
        miss = data[weights].isna()
        led.add(func, table_name, f"firm-year without a weight ({weights!r} missing)", int(miss.sum()))
        zero = (data[weights] == 0) & data[[x, y]].notna().all(axis=1)
        led.add(func, table_name, f"firm-year with weight 0 ({weights!r})", int(zero.sum()))
        data.loc[data[weights] == 0, weights] = np.nan

    # roles: predictor and outcome
    pred, out = (y, x) if reverse else (x, y)
    pname, oname = ("index", "rating") if reverse else ("rating", "index")
    unit = "stars per index point" if reverse else "index points per star"

    if design == "fe":
        res = _fit_fe(data, led, func=func, table_name=table_name, firm=firm, year=year, x=x, pred=pred, out=out,
                      pname=pname, oname=oname, unit=unit, moderator=moderator, reference=reference, lag=lag,
                      reverse=reverse, control_lagged=control_lagged, weights=weights, eiv=eiv,
                      n_reviews=n_reviews, sigma2=sigma2, min_years=min_years, alpha=alpha)
    else:
        res = _fit_contrast(data, led, func=func, design=design, firm=firm, year=year, x=x, y=y, moderator=moderator,
                            reference=reference, weights=weights, at_year=at_year, alpha=alpha, n_boot=n_boot,
                            seed=seed)
    if ledger is not None:
        ledger.extend(led)
    return res


def _complete(data: pd.DataFrame, needed: Sequence[str]) -> pd.DataFrame:
    return data.loc[data[list(needed)].notna().all(axis=1)]


def _fit_fe(data, led, *, func, table_name, firm, year, x, pred, out, pname, oname, unit, moderator, reference, lag,
            reverse, control_lagged, weights, eiv, n_reviews, sigma2, min_years, alpha) -> Result:
    from linearmodels.panel import PanelOLS

    base = [c for c in (moderator, weights) if c is not None]
    noisy_rows_n = None
    if lag:
        # this year's outcome (and moderator, weight) with the predictor (and outcome) `lag` years earlier
        cur = _complete(data, [out, *base])
        prev_cols = list(dict.fromkeys([pred, out] + ([n_reviews] if n_reviews is not None else [])))
        prev = _complete(data, [pred] + ([out] if control_lagged else []))[[firm, year, *prev_cols]].copy()
        prev[year] = prev[year] + lag
        prev = prev.rename(columns={c: f"__prev_{c}" for c in prev_cols})
        d = cur.merge(prev, on=[firm, year], how="inner")
        led.add(func, table_name, f"firm-year without the values of {lag} year(s) earlier (lagged design)",
                len(cur) - len(d))
        d["__pred"] = d[f"__prev_{pred}"]
        if control_lagged:
            d["__ylag"] = d[f"__prev_{out}"]
        if n_reviews is not None:
            noisy_rows_n = d[f"__prev_{n_reviews}"].to_numpy(float)
    else:
        d = _complete(data, [pred, out, *base]).copy()
        d["__pred"] = d[pred]
        if n_reviews is not None:
            noisy_rows_n = d[n_reviews].to_numpy(float)
    # firms with too few usable years carry no within-firm information
    n_f = d.groupby(firm)[year].transform("size")
    few = n_f < min_years
    few_firms = pd.unique(d.loc[few, firm])
    led.add(func, table_name,
            f"firm with fewer than {min_years} usable years: excluded from the fixed-effects estimate "
            f"({len(few_firms)} firm(s))", int(few.sum()), few_firms[:5])
    if noisy_rows_n is not None:
        noisy_rows_n = noisy_rows_n[~few.to_numpy()]
    d = d.loc[~few].reset_index(drop=True)
    n_firms = d[firm].nunique()
    if n_firms < 2 or d[year].nunique() < 2:
        raise ValueError(
            f"{func}: the fixed-effects design needs at least 2 firms with >= {min_years} usable years and 2 "
            f"distinct years; found {n_firms} firm(s) and {d[year].nunique()} year(s)."
        )
    if eiv and (noisy_rows_n is None or np.any(~(noisy_rows_n >= 1))):
        bad = int(np.sum(~(noisy_rows_n >= 1))) if noisy_rows_n is not None else len(d)
        raise ValueError(
            f"{func}: eiv=True needs a review count >= 1 for every rating used; {bad} usable firm-year(s) have "
            f"{n_reviews!r} missing or 0. Remove them or set their rating to missing."
        )

    # regressors: the predictor (per moderator level), the lagged outcome
    names: list[tuple[str, str, str]] = []  # (column, term, group)
    mult: dict[str, np.ndarray] = {}
    groups: list = ["all"]
    if moderator is not None:
        groups = _levels(d[moderator], reference, func, moderator)
        for g in groups:
            firms_g = d.loc[d[moderator] == g, firm].nunique()
            if firms_g < 2:
                raise ValueError(
                    f"{func}: level {g!r} of {moderator!r} has {firms_g} firm(s) with >= {min_years} usable years; "
                    "need at least 2 to estimate its slope."
                )
            col = f"__pred_{g}"
            ind = (d[moderator] == g).to_numpy(float)
            d[col] = d["__pred"] * ind
            names.append((col, f"{pname}->{oname}", str(g)))
            mult[col] = ind
        varies = d.groupby(firm)[moderator].nunique().max() > 1
        if varies:  # level main effects are then not absorbed by the firm effects
            for g in groups[:-1]:
                d[f"__lvl_{g}"] = (d[moderator] == g).astype(float)
                names.append((f"__lvl_{g}", f"level {g}", str(g)))
    else:
        names.append(("__pred", f"{pname}->{oname}", "all"))
        mult["__pred"] = np.ones(len(d))
    if lag and control_lagged:
        names.append(("__ylag", "lagged outcome", "all"))
    regs = [c for c, _, _ in names]
    X = d[regs].astype(float)
    for c in regs:
        if X[c].std() == 0:
            raise ValueError(f"{func}: regressor for {c.replace('__', '')!r} has no variation in the usable rows.")
    ix = pd.MultiIndex.from_arrays([d[firm].to_numpy(), d[year].to_numpy()], names=[firm, year])
    Xp = X.set_axis(ix)
    yp = d[out].astype(float).set_axis(ix)
    w = d[weights].astype(float).set_axis(ix) if weights is not None else None
    G = int(n_firms)
    fitres = None
    if not eiv:  # the corrected fit replaces PanelOLS' normal equations (same algebra with Omega = 0)
        mod = PanelOLS(yp, Xp, entity_effects=True, time_effects=True, weights=w)
        fitres = mod.fit(cov_type="clustered", cluster_entity=True, group_debias=True, debiased=True,
                         auto_df=False, count_effects=False)
        beta = fitres.params[regs].to_numpy()
        V = fitres.cov.loc[regs, regs].to_numpy()
    notes: list[str] = []

    # two-way algebra: reliability, and the errors-in-variables correction
    f_codes = pd.factorize(d[firm])[0]
    t_codes = pd.factorize(d[year])[0]
    tw = None
    reliability: dict = {}
    noise = None
    if sigma2 is not None and noisy_rows_n is not None and not reverse and np.all(noisy_rows_n >= 1):
        tw = _TwoWay(f_codes, t_codes)
        noise = sigma2 / noisy_rows_n
        mdiag = tw.diag_m()
        Xd = tw.demean(X.to_numpy())
        for c, _, g in names:
            if c in mult:
                j = regs.index(c)
                om = float(np.sum(mdiag * noise * mult[c] ** 2))
                reliability[g] = 1.0 - om / float(Xd[:, j] @ Xd[:, j])
    if eiv:
        beta, V = _eiv(tw, X.to_numpy(), d[out].to_numpy(float), regs, mult, noise, f_codes, G)
        worst = min(reliability.values()) if reliability else 1.0
        if worst < 0.3:
            notes.append(
                f"The within-firm reliability of the rating is low ({worst:.2f}): most of its year-to-year "
                "movement is review noise, so the corrected slope is unstable and its interval wide."
            )
    se = np.sqrt(np.diag(V))
    lo, hi, p = _t_ci(beta, se, G - 1, alpha)
    rows = []
    for j, (c, term, g) in enumerate(names):
        in_g = (d[moderator] == g) if moderator is not None and g != "all" else pd.Series(True, index=d.index)
        rows.append({"term": term, "estimate": beta[j], "se": se[j], "ci_low": lo[j], "ci_high": hi[j], "p": p[j],
                     "n": int(in_g.sum()), "group": g, "lag": int(lag), "n_firms": int(d.loc[in_g, firm].nunique()),
                     "unit": unit if c in mult else ("per point of the lagged outcome" if term == "lagged outcome" else "index points"),
                     "design": "fe", "reliability": reliability.get(g, np.nan) if c in mult else np.nan})
    if moderator is not None:
        ref = groups[-1]
        jr = regs.index(f"__pred_{ref}")
        for g in groups[:-1]:
            jg = regs.index(f"__pred_{g}")
            c = np.zeros(len(regs))
            c[jg], c[jr] = 1.0, -1.0
            est, s = float(c @ beta), float(math.sqrt(c @ V @ c))
            l_, h_, p_ = _t_ci(np.array([est]), np.array([s]), G - 1, alpha)
            rows.append({"term": f"{pname}->{oname}", "estimate": est, "se": s, "ci_low": l_[0], "ci_high": h_[0],
                         "p": p_[0], "n": len(d), "group": f"{g} - {ref}", "lag": int(lag), "n_firms": G,
                         "unit": unit, "design": "fe", "reliability": np.nan})
    table = pd.DataFrame(rows)
    table = table[~table["term"].str.startswith("level ")].reset_index(drop=True)
    if G < 30:
        notes.append(f"Only {G} firms (clusters): firm-clustered intervals are unreliable with fewer than about 30.")
    if moderator is not None:
        for g in groups:
            k = d.loc[d[moderator] == g, firm].nunique()
            if k < 30:
                notes.append(f"Only {k} firms in group {g!r}: its interval rests on few clusters.")
    for n_ in notes:  # data-dependent warnings, for interactive use
        warnings.warn(f"{func}: {n_}", RuntimeWarning, stacklevel=3)
    if lag and control_lagged:
        notes.append(
            "With firm effects and the lagged outcome as control, coefficients carry the Nickell (1981) bias of "
            "order 1/T; read the lagged slopes as direction diagnostics."
        )
    method = ("two-way fixed effects (firm, year), review-noise corrected (errors in variables)" if eiv
              else "two-way fixed effects (firm, year), PanelOLS") \
        + (f", weighted by {weights}" if weights else "") + (f", predictor lagged {lag} year(s)" if lag else "")
    fit = FirmPanelFit(
        method=method, n_obs=len(d), n_dropped=int(len(data) - len(d)), cluster=firm, n_clusters=G, alpha=alpha,
        notes=tuple(notes), design="fe", n_firms=G, n_years=int(d[year].nunique()),
        r2_within=float(fitres.rsquared_within) if fitres is not None else None, review_variance=sigma2,
        reliability=reliability, ledger=tuple(led.records),
    )
    return Result(table, fit)


def _eiv(tw: _TwoWay | None, X: np.ndarray, y: np.ndarray, regs: list[str], mult: dict[str, np.ndarray],
         noise: np.ndarray | None, f_codes: np.ndarray, G: int) -> tuple[np.ndarray, np.ndarray]:
    """Errors-in-variables corrected two-way FE slopes and their firm-clustered covariance.

    Solves (X''X'' - Omega) b = X''y'' with Omega = sum_r M_rr s2_r z_r z_r'; the
    covariance is the sandwich A^-1 (sum_i psi_i psi_i') A^-1 of the per-firm
    estimating equations psi_i = sum_r [x''_r (y''_r - x''_r'b) + M_rr s2_r z_r z_r' b],
    scaled by G/(G-1) (n-1)/(n-k) like PanelOLS' clustered covariance.
    """
    if tw is None or noise is None:
        raise ValueError("firm_panel: eiv=True needs the review counts and review variance of every used rating.")
    n, k = X.shape
    Z = np.column_stack([mult.get(c, np.zeros(n)) for c in regs])
    mdiag = tw.diag_m()
    Xd = tw.demean(X)
    yd = tw.demean(y)
    wr = mdiag * noise
    Omega = (Z * wr[:, None]).T @ Z
    A = Xd.T @ Xd - Omega
    if np.any(np.linalg.eigvalsh((A + A.T) / 2) <= 0):
        raise ValueError(
            "firm_panel: the errors-in-variables correction is not identified on these data: the review noise "
            "accounts for all of the rating's within-firm variation (reliability <= 0). Use weights= instead."
        )
    b = np.linalg.solve(A, Xd.T @ yd)
    resid = yd - Xd @ b
    psi_rows = Xd * resid[:, None] + (Z * wr[:, None]) * (Z @ b)[:, None]
    psi = np.zeros((G, k))
    np.add.at(psi, f_codes, psi_rows)
    Ainv = np.linalg.inv(A)
    V = Ainv @ (psi.T @ psi) @ Ainv.T * (G / (G - 1)) * ((n - 1) / (n - k))
    return b, V


def _fit_contrast(data, led, *, func, design, firm, year, x, y, moderator, reference, weights, at_year, alpha,
                  n_boot, seed) -> Result:
    import statsmodels.api as sm

    base = [c for c in (moderator, weights) if c is not None]
    d = _complete(data, [x, y, *base]).reset_index(drop=True)
    if design == "cross_section":
        yr = int(d[year].max()) if at_year is None else int(at_year)
        if yr not in set(d[year]):
            raise ValueError(f"{func}: at_year={yr} has no usable rows; years with data: {sorted(set(d[year]))}.")
        d = d[d[year] == yr].reset_index(drop=True)
        label = f"cross-section of {yr}"
    elif design == "between":
        if moderator is not None and d.groupby(firm)[moderator].nunique().max() > 1:
            raise ValueError(f"{func}: design='between' needs a moderator that is constant within firm ({moderator!r} is not).")
        agg = {x: "mean", y: "mean"}
        if moderator is not None:
            agg[moderator] = "first"
        wsum = d.groupby(firm)[weights].sum() if weights is not None else None
        d = d.groupby(firm, sort=False).agg(agg).reset_index()
        if wsum is not None:
            d[weights] = wsum.reindex(d[firm]).to_numpy()
        label = "between firms (firm means)"
    else:
        label = "pooled over firm-years"
    groups = ["all"] if moderator is None else _levels(d[moderator], reference, func, moderator)
    if len(d) < 3:
        raise ValueError(f"{func}: design={design!r} has only {len(d)} usable row(s); need at least 3.")
    # design matrix: level intercepts and level slopes
    if moderator is None:
        Xm = np.column_stack([np.ones(len(d)), d[x].to_numpy(float)])
        slope_cols = {"all": 1}
    else:
        cols, slope_cols = [], {}
        for i, g in enumerate(groups):
            ind = (d[moderator] == g).to_numpy(float)
            cols.append(ind)
        for i, g in enumerate(groups):
            ind = (d[moderator] == g).to_numpy(float)
            slope_cols[g] = len(cols)
            cols.append(ind * d[x].to_numpy(float))
        Xm = np.column_stack(cols)
    yv = d[y].to_numpy(float)
    w = d[weights].to_numpy(float) if weights is not None else None
    model = sm.WLS(yv, Xm, weights=w) if w is not None else sm.OLS(yv, Xm)
    if design == "pooled":
        codes = pd.factorize(d[firm])[0]
        res = model.fit(cov_type="cluster", cov_kwds={"groups": codes})
        G = int(codes.max()) + 1
        df_t, cluster = G - 1, firm
    else:
        res = model.fit(cov_type="HC1")
        G = len(d)
        df_t, cluster = len(d) - Xm.shape[1], None
    beta, V = np.asarray(res.params), np.asarray(res.cov_params())
    rows = []
    rng = np.random.default_rng(seed)
    firm_codes = pd.factorize(d[firm])[0]
    for g in groups:
        j = slope_cols[g]
        in_g = np.ones(len(d), bool) if g == "all" else (d[moderator] == g).to_numpy()
        se = math.sqrt(V[j, j])
        lo, hi, p = _t_ci(np.array([beta[j]]), np.array([se]), df_t, alpha)
        nf = int(d.loc[in_g, firm].nunique())
        common = {"n": int(in_g.sum()), "group": str(g), "lag": 0, "n_firms": nf, "design": design}
        rows.append({"term": "rating->index", "estimate": beta[j], "se": se, "ci_low": lo[0], "ci_high": hi[0],
                     "p": p[0], **common, "unit": "index points per star", "reliability": np.nan})
        xs, ys = d.loc[in_g, x].to_numpy(float), d.loc[in_g, y].to_numpy(float)
        r = float(np.corrcoef(xs, ys)[0, 1]) if in_g.sum() > 2 and xs.std() > 0 and ys.std() > 0 else np.nan
        r_lo, r_hi, r_se = _boot_corr(xs, ys, firm_codes[in_g], n_boot, alpha, rng)
        rows.append({"term": "corr", "estimate": r, "se": r_se, "ci_low": r_lo, "ci_high": r_hi, "p": p[0],
                     **common, "unit": "correlation", "reliability": np.nan})
        rows.append({"term": "r2", "estimate": r * r, "se": np.nan,
                     "ci_low": (0.0 if r_lo <= 0 <= r_hi else min(r_lo**2, r_hi**2)) if np.isfinite(r_lo) else np.nan,
                     "ci_high": max(r_lo**2, r_hi**2) if np.isfinite(r_hi) else np.nan, "p": p[0],
                     **common, "unit": "share of variance", "reliability": np.nan})
    if moderator is not None:
        ref = groups[-1]
        for g in groups[:-1]:
            c = np.zeros(len(beta))
            c[slope_cols[g]], c[slope_cols[ref]] = 1.0, -1.0
            est, s = float(c @ beta), float(math.sqrt(c @ V @ c))
            lo, hi, p = _t_ci(np.array([est]), np.array([s]), df_t, alpha)
            rows.append({"term": "rating->index", "estimate": est, "se": s, "ci_low": lo[0], "ci_high": hi[0],
                         "p": p[0], "n": len(d), "group": f"{g} - {ref}", "lag": 0, "n_firms": int(d[firm].nunique()),
                         "design": design, "unit": "index points per star", "reliability": np.nan})
    table = pd.DataFrame(rows)
    notes = []
    if design == "pooled" and G < 30:
        notes.append(f"Only {G} firms (clusters): firm-clustered intervals are unreliable with fewer than about 30.")
    if design in ("between", "cross_section") and len(d) < 30:
        notes.append(f"Only {len(d)} firms: intervals rest on few observations.")
    fit = FirmPanelFit(
        method=f"OLS {label}" + (f", weighted by {weights}" if weights else "")
        + ("; intervals clustered by firm" if cluster else "; HC1 robust intervals")
        + "; correlation interval: firm bootstrap",
        n_obs=len(d), n_dropped=int(len(data) - len(d)) if design == "pooled" else 0, cluster=cluster,
        n_clusters=G if cluster else None, alpha=alpha, notes=tuple(notes), design=design,
        n_firms=int(d[firm].nunique()), n_years=int(d[year].nunique()) if year in d else 0,
        ledger=tuple(led.records),
    )
    return Result(table, fit)


def _boot_corr(x: np.ndarray, y: np.ndarray, codes: np.ndarray, n_boot: int, alpha: float,
               rng: np.random.Generator) -> tuple[float, float, float]:
    """Percentile interval and SE of a correlation, resampling firms (clusters) with replacement."""
    if n_boot < 1 or len(x) < 3:
        return np.nan, np.nan, np.nan
    _, codes = np.unique(codes, return_inverse=True)
    G = int(codes.max()) + 1
    S = np.column_stack([np.bincount(codes, v, minlength=G) for v in (np.ones_like(x), x, y, x * x, y * y, x * y)])
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=n_boot).astype(float)
    T = counts @ S
    n, sx, sy, sxx, syy, sxy = T.T
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (sxy - sx * sy / n) / np.sqrt((sxx - sx**2 / n) * (syy - sy**2 / n))
    r = r[np.isfinite(r)]
    if len(r) < 10:
        return np.nan, np.nan, np.nan
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi), float(r.std(ddof=1))
