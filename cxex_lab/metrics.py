"""The mirror metrics: EX and CX on the same three dimensions, with confidence intervals.

=============== ============================ ============================
dimension       customer side (CX)           employee side (EX)
=============== ============================ ============================
Ease            CES, 1-7 (higher = easier)   EES, 1-7 (higher = easier)
Recommendation  NPS, 0-10 answers            eNPS, 0-10 answers
Satisfaction    CSAT, 1-5 answers            eSat, 1-5 answers
=============== ============================ ============================

Each metric function takes the raw answers of one group and returns a one-row
tidy DataFrame (``metric``, ``statistic``, ``estimate``, ``se``, ``ci_low``,
``ci_high``, ``n``, ``n_missing``, plus the shares behind the estimate).
:func:`mirror` puts both sides next to each other by group and survey wave,
with the privacy rules applied.

The interval arithmetic is exposed as vectorised functions
(:func:`net_score_ci`, :func:`proportion_ci`, :func:`mean_ci`) that work on
arrays of counts; the metric functions and :func:`mirror` both go through them,
and the coverage tests in ``tests/test_metrics.py`` exercise them on thousands
of simulated samples at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cxex_lab.ledger import Ledger
from cxex_lab.privacy import MIN_GROUP_SIZE, check_min_group_size, suppress_small_groups

__all__ = [
    "MIRROR",
    "SCALES",
    "nps",
    "enps",
    "csat",
    "esat",
    "ces",
    "ees",
    "net_score_ci",
    "proportion_ci",
    "mean_ci",
    "mirror",
]

#: dimension -> (CX metric, CX column, EX metric, EX column)
MIRROR: dict[str, tuple[str, str, str, str]] = {
    "Ease": ("CES", "ces", "EES", "ees"),
    "Recommendation": ("NPS", "nps", "eNPS", "enps"),
    "Satisfaction": ("CSAT", "csat", "eSat", "esat"),
}

#: column -> (lowest, highest) answer of its scale.
SCALES: dict[str, tuple[int, int]] = {
    "nps": (0, 10),
    "enps": (0, 10),
    "csat": (1, 5),
    "esat": (1, 5),
    "ces": (1, 7),
    "ees": (1, 7),
}

NET_METHODS: tuple[str, ...] = ("adjusted_wald", "wald")
PROPORTION_METHODS: tuple[str, ...] = ("wilson", "agresti_coull", "wald")

#: Default top box of each scale used by :func:`mirror` (None = report the mean).
_MIRROR_TOP_BOX: dict[str, int | None] = {"csat": 4, "esat": 4, "ces": None, "ees": None}


# --------------------------------------------------------------------------- input checks
def _fmt(v: Any) -> str:
    """A value as a researcher would type it: 11 rather than 11.0."""
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, str) else str(v)


def _examples(rows: Sequence, values: Sequence, limit: int = 3) -> str:
    rows, values = list(rows)[:limit], list(values)[:limit]
    return f"e.g. rows {', '.join(str(r) for r in rows)} (values {', '.join(_fmt(v) for v in values)})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number between 0 and 1 (exclusive), e.g. 0.05 for 95% intervals; got {alpha!r}")
    return float(alpha)


def _check_method(method: str, allowed: Sequence[str], what: str) -> str:
    if method not in allowed:
        raise ValueError(f"method for {what} must be one of {list(allowed)}, got {method!r}")
    return method


def _answers(scores: Any, name: str) -> tuple[np.ndarray, int]:
    """Validated answers on the scale of ``name``: (valid values as float array, number missing).

    Raises ``ValueError`` naming the column and the rule for empty, non-numeric,
    out-of-range and non-whole answers. Row labels in messages are the index
    labels of a Series, positions otherwise.
    """
    if isinstance(scores, pd.DataFrame):
        raise ValueError(f"{name}: pass one column of answers (a Series, list or array), not a DataFrame")
    if np.ndim(scores) == 0:
        raise ValueError(f"{name}: pass a sequence of answers, got a single value {scores!r}")
    if isinstance(scores, pd.Series):
        s = scores
    elif isinstance(scores, (list, tuple)):
        s = pd.Series(list(scores))
    else:
        s = pd.Series(np.asarray(scores).ravel())
    if len(s) == 0:
        raise ValueError(f"{name}: no answers (empty input); need at least one answer")
    if pd.api.types.is_bool_dtype(s):
        raise ValueError(f"{name} must be numeric answers, got booleans (True/False)")
    if pd.api.types.is_numeric_dtype(s):
        num = s.astype("float64")
    else:
        num = pd.to_numeric(s, errors="coerce").astype("float64")
        bad = num.isna() & s.notna()
        bad |= s.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool)
        if bad.any():
            raise ValueError(
                f"{name} must be numeric answers; {_plural(int(bad.sum()), 'value')} "
                f"{'is' if bad.sum() == 1 else 'are'} not numbers, {_examples(s.index[bad], s[bad])}"
            )
    missing = num.isna()
    n_missing = int(missing.sum())
    if n_missing == len(num):
        raise ValueError(f"{name}: all {_plural(n_missing, 'answer')} missing; nothing to compute")
    lo, hi = SCALES[name]
    out = ~missing & ((num < lo) | (num > hi))
    if out.any():
        raise ValueError(
            f"{name} must be {lo}-{hi}; {_plural(int(out.sum()), 'value')} out of range, {_examples(num.index[out], num[out])}"
        )
    frac = ~missing & (num != np.round(num))
    if frac.any():
        raise ValueError(
            f"{name} must be whole numbers {lo}-{hi}; {_plural(int(frac.sum()), 'value')} "
            f"{'is' if frac.sum() == 1 else 'are'} not, {_examples(num.index[frac], num[frac])}"
        )
    return num[~missing].to_numpy(), n_missing


def _top_box_points(top_box: int | Sequence[int], name: str) -> list[int]:
    """The scale points counted as the top box (an int k means every answer >= k)."""
    lo, hi = SCALES[name]
    if isinstance(top_box, (int, np.integer)) and not isinstance(top_box, bool):
        points = list(range(int(top_box), hi + 1))
    else:
        try:
            points = sorted({int(b) for b in top_box})  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(
                f"top_box for {name} must be a scale point (answers >= it count) or a list of points, got {top_box!r}"
            ) from None
    bad = [b for b in points if not lo <= b <= hi]
    if not points or bad:
        raise ValueError(f"top_box for {name} must lie on the {lo}-{hi} scale; got {top_box!r}")
    return points


# --------------------------------------------------------------------------- vectorised intervals
def net_score_ci(
    n_promoters: Any, n_detractors: Any, n: Any, alpha: float = 0.05, method: str = "adjusted_wald"
) -> tuple[np.ndarray, np.ndarray]:
    """Confidence interval of a net score (promoters minus detractors), vectorised.

    Parameters
    ----------
    n_promoters, n_detractors, n : array-like of int
        Counts of promoters, detractors and all answers (broadcast together).
    alpha : float
        1 - confidence level.
    method : {"adjusted_wald", "wald"}
        ``"adjusted_wald"`` (default) adds 3 pseudo-answers before the Wald
        interval; ``"wald"`` is the plain multinomial Wald interval.

    Returns
    -------
    (ci_low, ci_high) : tuple of ndarray
        Bounds on the -1..1 scale (multiply by 100 for the usual NPS scale),
        clipped to [-1, 1].

    Notes
    -----
    With shares :math:`p_+` (promoters) and :math:`p_-` (detractors) of a
    trinomial sample of size :math:`n`, the net score :math:`p_+ - p_-` has
    variance :math:`\\mathrm{Var} = (p_+ + p_- - (p_+ - p_-)^2) / n` (the
    variance of a difference of two multinomial proportions, using
    :math:`\\mathrm{Cov}(p_+, p_-) = -p_+ p_- / n`). The Wald interval is
    :math:`(p_+ - p_-) \\pm z_{1-\\alpha/2}\\sqrt{\\mathrm{Var}}`. The adjusted
    Wald interval applies the same formula after adding 3 pseudo-answers,
    3/4 promoter, 3/4 detractor and 3/2 passive (:math:`\\tilde n = n + 3`),
    which pulls the centre towards 0 and keeps the interval from collapsing
    when a share is near 0 or 1.

    In simulations (``tests/test_metrics.py``; 20,000 trinomial samples per
    cell) the adjusted Wald interval covered 93-96% for n from 10 to 200 and
    shares from (2%, 8%, 90%) to (50%, 30%, 20%); the plain Wald interval fell
    to 66% at n = 10 and 85% at n = 30 with 90% promoters.

    References
    ----------
    Rocks, B. (2016). Interval estimation for the "net promoter score".
    The American Statistician, 70(4), 365-372.
    Lewis, J. R., & Sauro, J. (2021). Confidence intervals for Net Promoter
    Scores. MeasuringU (the 3-pseudo-answer form of the adjusted Wald).

    Examples
    --------
    >>> lo, hi = net_score_ci(40, 30, 100)
    >>> round(float(lo), 3), round(float(hi), 3)
    (-0.063, 0.257)
    """
    z = stats.norm.ppf(1 - _check_alpha(alpha) / 2)
    _check_method(method, NET_METHODS, "a net score")
    pro, det, n = (np.asarray(a, dtype="float64") for a in (n_promoters, n_detractors, n))
    add = 3.0 if method == "adjusted_wald" else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        na = n + add
        pp, pd_ = (pro + add / 4) / na, (det + add / 4) / na
        centre = pp - pd_
        half = z * np.sqrt(np.maximum(pp + pd_ - centre**2, 0.0) / na)
    return np.clip(centre - half, -1.0, 1.0), np.clip(centre + half, -1.0, 1.0)


def proportion_ci(k: Any, n: Any, alpha: float = 0.05, method: str = "wilson") -> tuple[np.ndarray, np.ndarray]:
    """Confidence interval of a binomial proportion (e.g. a top-box share), vectorised.

    Parameters
    ----------
    k, n : array-like of int
        Successes (answers in the top box) and trials (answers).
    alpha : float
        1 - confidence level.
    method : {"wilson", "agresti_coull", "wald"}
        Wilson score interval (default), Agresti-Coull, or the plain Wald.

    Returns
    -------
    (ci_low, ci_high) : tuple of ndarray
        Bounds on the 0..1 scale.

    Notes
    -----
    With :math:`\\hat p = k/n` and :math:`z = z_{1-\\alpha/2}`, the Wilson interval is

    .. math:: \\frac{\\hat p + z^2/2n}{1 + z^2/n} \\pm
              \\frac{z}{1 + z^2/n}\\sqrt{\\frac{\\hat p(1-\\hat p)}{n} + \\frac{z^2}{4n^2}}

    It keeps near-nominal coverage close to 0 and 1, where the Wald interval
    does not (Brown, Cai & DasGupta 2001). Results match
    ``statsmodels.stats.proportion.proportion_confint`` (tested).

    References
    ----------
    Wilson, E. B. (1927). Probable inference, the law of succession, and
    statistical inference. JASA, 22, 209-212.
    Brown, L. D., Cai, T. T., & DasGupta, A. (2001). Interval estimation for a
    binomial proportion. Statistical Science, 16, 101-133.

    Examples
    --------
    >>> lo, hi = proportion_ci(8, 10)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.4902, 0.9433)
    """
    z = stats.norm.ppf(1 - _check_alpha(alpha) / 2)
    _check_method(method, PROPORTION_METHODS, "a proportion")
    k, n = np.asarray(k, dtype="float64"), np.asarray(n, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        if method == "wilson":
            denom = 1 + z**2 / n
            centre = (p + z**2 / (2 * n)) / denom
            half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        elif method == "agresti_coull":
            nt = n + z**2
            centre = (k + z**2 / 2) / nt
            half = z * np.sqrt(centre * (1 - centre) / nt)
        else:
            centre, half = p, z * np.sqrt(p * (1 - p) / n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def mean_ci(mean: Any, sd: Any, n: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Student-t confidence interval of a mean, vectorised.

    Parameters
    ----------
    mean, sd, n : array-like
        Sample means, standard deviations (ddof=1) and sizes.

    Returns
    -------
    (ci_low, ci_high) : tuple of ndarray
        NaN where n < 2.

    Notes
    -----
    :math:`\\bar x \\pm t_{1-\\alpha/2,\\,n-1}\\, s/\\sqrt n`. For a 1-7 scale the
    sampling distribution of the mean is close to normal from a few dozen
    answers on (coverage 94-96% at n = 200 in ``tests/test_metrics.py``).

    Examples
    --------
    >>> lo, hi = mean_ci(5.0, 1.0, 4)
    >>> round(float(lo), 3), round(float(hi), 3)
    (3.409, 6.591)
    """
    alpha = _check_alpha(alpha)
    mean, sd, n = (np.asarray(a, dtype="float64") for a in (mean, sd, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(n >= 2, n - 1, np.nan)
        half = stats.t.ppf(1 - alpha / 2, df) * sd / np.sqrt(n)
    return mean - half, mean + half


# --------------------------------------------------------------------------- from sufficient statistics
def _net_from_counts(n: Any, n_pro: Any, n_det: Any, alpha: float, method: str) -> dict[str, np.ndarray]:
    n, n_pro, n_det = (np.asarray(a, dtype="float64") for a in (n, n_pro, n_det))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_pro, p_det = n_pro / n, n_det / n
        se = np.sqrt(np.maximum(p_pro + p_det - (p_pro - p_det) ** 2, 0.0) / n)
    lo, hi = net_score_ci(n_pro, n_det, n, alpha, method)
    return {
        "statistic": "net score",
        "estimate": 100 * (p_pro - p_det),
        "se": 100 * se,
        "ci_low": 100 * lo,
        "ci_high": 100 * hi,
        "promoters": p_pro,
        "passives": 1 - p_pro - p_det,
        "detractors": p_det,
    }


def _share_from_counts(n: Any, k: Any, alpha: float, method: str) -> dict[str, np.ndarray]:
    n, k = np.asarray(n, dtype="float64"), np.asarray(k, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        se = np.sqrt(p * (1 - p) / n)
    lo, hi = proportion_ci(k, n, alpha, method)
    return {"statistic": "top-box %", "estimate": 100 * p, "se": 100 * se, "ci_low": 100 * lo, "ci_high": 100 * hi}


def _mean_from_moments(n: Any, mean: Any, sd: Any, alpha: float) -> dict[str, np.ndarray]:
    n, mean, sd = (np.asarray(a, dtype="float64") for a in (n, mean, sd))
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(n >= 2, sd / np.sqrt(n), np.nan)
    lo, hi = mean_ci(mean, sd, n, alpha)
    return {"statistic": "mean", "estimate": mean, "se": se, "ci_low": lo, "ci_high": hi}


def _one_row(metric: str, n: int, n_missing: int, res: dict[str, Any], extra: dict[str, Any] | None = None) -> pd.DataFrame:
    row: dict[str, Any] = {"metric": metric, "statistic": res.pop("statistic")}
    row.update({c: float(res.pop(c)) for c in ("estimate", "se", "ci_low", "ci_high")})
    row.update({"n": int(n), "n_missing": int(n_missing)})
    row.update({c: float(v) for c, v in res.items()})
    row.update(extra or {})
    return pd.DataFrame([row])


# --------------------------------------------------------------------------- metric functions
def _net_score(scores: Any, name: str, metric: str, alpha: float, method: str) -> pd.DataFrame:
    _check_alpha(alpha)
    _check_method(method, NET_METHODS, metric)
    x, n_missing = _answers(scores, name)
    res = _net_from_counts(len(x), (x >= 9).sum(), (x <= 6).sum(), alpha, method)
    return _one_row(metric, len(x), n_missing, res, {"method": method})


def nps(scores: Any, alpha: float = 0.05, method: str = "adjusted_wald") -> pd.DataFrame:
    """Net Promoter Score with a confidence interval.

    Parameters
    ----------
    scores : array-like
        0-10 answers to "How likely are you to recommend ...?". Missing values
        are dropped and counted (``n_missing``).
    alpha : float
        1 - confidence level (0.05 gives 95% intervals).
    method : {"adjusted_wald", "wald"}
        Interval method (see :func:`net_score_ci`).

    Returns
    -------
    DataFrame
        One row: ``metric`` ("NPS"), ``statistic`` ("net score"), ``estimate``
        (-100..100), ``se``, ``ci_low``, ``ci_high``, ``n`` (valid answers),
        ``n_missing``, ``promoters``, ``passives``, ``detractors`` (shares,
        0-1) and ``method``.

    Raises
    ------
    ValueError
        Empty input, all answers missing, non-numeric answers, answers outside
        0-10 or not whole numbers (the message names the rows and values).

    Notes
    -----
    NPS = 100 (p_pro - p_det), promoters answering 9-10 and detractors 0-6.
    ``se`` is the plain multinomial standard error
    100 sqrt((p_pro + p_det - (p_pro - p_det)^2) / n); the interval is by
    default the adjusted Wald interval (3 pseudo-answers: 3/4 promoter, 3/4
    detractor, 3/2 passive), chosen because it keeps 95% coverage at 93-97%
    down to small samples and extreme scores, where the plain Wald interval
    under-covers (see :func:`net_score_ci` for the formula and the measured
    coverage).

    References
    ----------
    Reichheld, F. F. (2003). The one number you need to grow. Harvard Business Review, 81(12), 46-54.
    Rocks, B. (2016). Interval estimation for the "net promoter score".
    The American Statistician, 70(4), 365-372.

    Examples
    --------
    >>> res = nps([10, 9, 9, 10, 7, 8, 8, 0, 5, 6])
    >>> res[["estimate", "ci_low", "ci_high", "n", "promoters", "detractors"]].round(1).to_dict("records")
    [{'estimate': 10.0, 'ci_low': -36.1, 'ci_high': 51.4, 'n': 10, 'promoters': 0.4, 'detractors': 0.3}]
    """
    return _net_score(scores, "nps", "NPS", alpha, method)


def enps(scores: Any, alpha: float = 0.05, method: str = "adjusted_wald") -> pd.DataFrame:
    """Employee Net Promoter Score: :func:`nps` maths on 0-10 employee answers.

    Parameters
    ----------
    scores : array-like
        0-10 answers to "How likely are you to recommend this employer ...?".
    alpha, method
        As in :func:`nps`.

    Returns
    -------
    DataFrame
        One row, as :func:`nps`, with ``metric`` "eNPS".

    Notes
    -----
    eNPS = 100 (p_pro - p_det) with the interval of :func:`net_score_ci`.

    References
    ----------
    Rocks, B. (2016). The American Statistician, 70(4), 365-372.

    Examples
    --------
    >>> enps([10, 9, 3, 7])["estimate"].item()
    25.0
    """
    return _net_score(scores, "enps", "eNPS", alpha, method)


def _scale_metric(
    scores: Any, name: str, metric: str, top_box: int | Sequence[int] | None, alpha: float, method: str
) -> pd.DataFrame:
    _check_alpha(alpha)
    if top_box is not None:
        _check_method(method, PROPORTION_METHODS, f"{metric} top-box")
        points = _top_box_points(top_box, name)
    x, n_missing = _answers(scores, name)
    n = len(x)
    mean = float(x.mean())
    if top_box is None:
        sd = float(x.std(ddof=1)) if n > 1 else np.nan
        res = _mean_from_moments(n, mean, sd, alpha)
        return _one_row(metric, n, n_missing, res, {"method": "t"})
    res = _share_from_counts(n, np.isin(x, points).sum(), alpha, method)
    return _one_row(metric, n, n_missing, res, {"mean": mean, "top_box": ",".join(map(str, points)), "method": method})


def csat(
    scores: Any, top_box: int | Sequence[int] | None = (4, 5), alpha: float = 0.05, method: str = "wilson"
) -> pd.DataFrame:
    """Customer satisfaction: the top-box share (%) of 1-5 answers, with an interval.

    Parameters
    ----------
    scores : array-like
        1-5 answers. Missing values are dropped and counted (``n_missing``).
    top_box : sequence of int, int or None
        The answers counted as satisfied: a list of scale points (default
        ``(4, 5)``, "top-2-box"), or one point k meaning every answer >= k
        (``top_box=5`` is top-1-box). ``None`` reports the mean answer with a
        t interval instead.
    alpha : float
        1 - confidence level.
    method : {"wilson", "agresti_coull", "wald"}
        Interval for the top-box share (see :func:`proportion_ci`).

    Returns
    -------
    DataFrame
        One row: ``metric`` ("CSAT"), ``statistic`` ("top-box %" or "mean"),
        ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``n``, ``n_missing``;
        for the top box also ``mean`` (the mean answer), ``top_box`` (the
        points counted, "4,5") and ``method``.

    Notes
    -----
    CSAT = 100 k / n with k the answers in the top box; ``se`` =
    100 sqrt(p(1 - p)/n); the interval is the Wilson score interval (default),
    whose 95% coverage was 93-97% in the simulation test.

    References
    ----------
    Wilson, E. B. (1927). JASA, 22, 209-212.
    Brown, L. D., Cai, T. T., & DasGupta, A. (2001). Statistical Science, 16, 101-133.

    Examples
    --------
    >>> csat([5, 4, 3, 5])["estimate"].item()
    75.0
    >>> csat([5, 4, 3, 5], top_box=5)["estimate"].item()
    50.0
    """
    return _scale_metric(scores, "csat", "CSAT", top_box, alpha, method)


def esat(
    scores: Any, top_box: int | Sequence[int] | None = (4, 5), alpha: float = 0.05, method: str = "wilson"
) -> pd.DataFrame:
    """Employee satisfaction: the top-box share (%) of 1-5 answers (the twin of :func:`csat`).

    Parameters
    ----------
    scores, top_box, alpha, method
        As in :func:`csat`.

    Returns
    -------
    DataFrame
        One row, as :func:`csat`, with ``metric`` "eSat".

    Notes
    -----
    eSat = 100 k / n with a Wilson interval (see :func:`proportion_ci`).

    References
    ----------
    Wilson, E. B. (1927). JASA, 22, 209-212.

    Examples
    --------
    >>> round(esat([5, 4, 1])["estimate"].item(), 2)
    66.67
    """
    return _scale_metric(scores, "esat", "eSat", top_box, alpha, method)


def ces(
    scores: Any, alpha: float = 0.05, top_box: int | Sequence[int] | None = None, method: str = "wilson"
) -> pd.DataFrame:
    """Customer Effort Score: the mean of 1-7 answers (higher = easier), with a t interval.

    Parameters
    ----------
    scores : array-like
        1-7 answers to "The company made it easy for me to handle my issue"
        (7 = strongly agree = easiest). Missing values are dropped and counted.
    alpha : float
        1 - confidence level.
    top_box : sequence of int, int or None
        ``None`` (default) reports the mean. A point k (answers >= k) or a
        list of points reports the top-box share (%) instead, e.g.
        ``top_box=5`` for "somewhat agree or better".
    method : {"wilson", "agresti_coull", "wald"}
        Interval of the top-box share (ignored for the mean).

    Returns
    -------
    DataFrame
        One row: ``metric`` ("CES"), ``statistic`` ("mean" or "top-box %"),
        ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``n``, ``n_missing``,
        ``method`` (and ``mean``, ``top_box`` for a top-box share).

    Notes
    -----
    Mean: :math:`\\bar x \\pm t_{1-\\alpha/2,n-1} s/\\sqrt n` (see :func:`mean_ci`);
    top box: Wilson interval (see :func:`proportion_ci`).

    References
    ----------
    Dixon, M., Freeman, K., & Toman, N. (2010). Stop trying to delight your
    customers. Harvard Business Review, 88(7/8), 116-122.

    Examples
    --------
    >>> ces([7, 6, 5])["estimate"].item()
    6.0
    >>> round(ces([7, 6, 5], top_box=6)["estimate"].item(), 2)
    66.67
    """
    return _scale_metric(scores, "ces", "CES", top_box, alpha, method)


def ees(
    scores: Any, alpha: float = 0.05, top_box: int | Sequence[int] | None = None, method: str = "wilson"
) -> pd.DataFrame:
    """Employee Effort Score: the mean of 1-7 answers (higher = easier), the twin of :func:`ces`.

    Parameters
    ----------
    scores, alpha, top_box, method
        As in :func:`ces`.

    Returns
    -------
    DataFrame
        One row, as :func:`ces`, with ``metric`` "EES".

    Notes
    -----
    Mean with a Student-t interval (see :func:`mean_ci`).

    References
    ----------
    Dixon, M., Freeman, K., & Toman, N. (2010). Harvard Business Review, 88(7/8), 116-122.

    Examples
    --------
    >>> ees([1, 7])["estimate"].item()
    4.0
    """
    return _scale_metric(scores, "ees", "EES", top_box, alpha, method)


# --------------------------------------------------------------------------- mirror
def _check_study(study: Any, by: str | None, period: str | None) -> None:
    """Each table has the columns the mirror needs (named in the message if not)."""
    required = {
        "employees": ["employee_id"] + ([by] if by else []),
        "ex_responses": ["employee_id", "enps", "esat", "ees"] + (["wave", "responded_at"] if period else []),
        "interactions": ["interaction_id", "employee_id", "customer_id"] + (["started_at"] if period else []),
        "cx_responses": ["interaction_id", "nps", "csat", "ces"],
    }
    for table, cols in required.items():
        df = getattr(study, table, None)
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"mirror: the study has no {table} table")
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"mirror: {table} lacks column(s) {missing}; see the data contract in DESIGN.md")


def _wave_of(started: pd.Series, openings: pd.Series) -> pd.Series:
    """Wave period of each timestamp: the latest wave opened at or before it (NaN before wave 1 or if missing)."""
    t = pd.to_datetime(started).to_numpy().astype("datetime64[ns]")
    o = pd.to_datetime(openings).to_numpy().astype("datetime64[ns]")
    pos = np.searchsorted(o, t, side="right")
    labels = np.r_[np.nan, openings.index.to_numpy(dtype="float64")]
    out = labels[pos]
    out[np.isnat(t)] = np.nan
    return pd.Series(out, index=started.index)


def _summarise(df: pd.DataFrame, keys: list[str], col: str, alpha: float) -> pd.DataFrame:
    """Per-group sufficient statistics and the metric of column ``col`` (vectorised)."""
    top = _MIRROR_TOP_BOX.get(col)
    v = df[col].to_numpy(dtype="float64", na_value=np.nan)
    valid = ~np.isnan(v)
    d = pd.DataFrame(
        {
            **{k: df[k].to_numpy() for k in keys},
            "_valid": valid,
            "_v": v,
            "_pro": v >= 9,
            "_det": v <= 6,
            "_top": v >= top if top is not None else np.zeros(len(v), dtype=bool),
            "_r": df["_respondent"].where(valid).to_numpy(dtype=object),
            "_e": df["employee_id"].where(valid).to_numpy(dtype=object),
        }
    )
    by = keys if keys else np.zeros(len(d), dtype=int)
    s = d.groupby(by, sort=True, dropna=False).agg(
        n=("_valid", "sum"), size=("_valid", "size"), pro=("_pro", "sum"), det=("_det", "sum"), top=("_top", "sum"),
        mean=("_v", "mean"), sd=("_v", "std"), n_respondents=("_r", "nunique"), n_employees=("_e", "nunique"),
    )
    s["n_missing"] = s["size"] - s["n"]
    if col in ("nps", "enps"):
        res = _net_from_counts(s["n"], s["pro"], s["det"], alpha, "adjusted_wald")
    elif top is not None:
        res = _share_from_counts(s["n"], s["top"], alpha, "wilson")
    else:
        res = _mean_from_moments(s["n"], s["mean"], s["sd"], alpha)
    out = pd.DataFrame({c: res[c] for c in ("statistic", "estimate", "se", "ci_low", "ci_high")}, index=s.index)
    out[["n", "n_missing", "n_respondents", "n_employees"]] = s[["n", "n_missing", "n_respondents", "n_employees"]].astype("int64")
    empty = out["n"] == 0
    out.loc[empty, ["estimate", "se", "ci_low", "ci_high"]] = np.nan
    out = out.reset_index()
    if keys:
        return out
    return out.drop(columns=out.columns[0])


def mirror(
    study: Any,
    by: str | None = None,
    period: str | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """EX beside CX on Ease, Recommendation and Satisfaction, by group and period.

    Parameters
    ----------
    study : Study
        The five canonical tables (a :class:`cxex_lab.study.Study`).
    by : {None, "site_id", "team_id"}
        Group employees, and the CX of the interactions they handled, by site or
        team. ``None`` gives one overall group.
    period : {None, "wave"}
        ``"wave"`` also splits by survey wave: the EX answers of wave w beside
        the CX of interactions started in wave w's period (see Notes).
    min_group_size : int
        Confidentiality minimum (default 5): rows resting on fewer people are
        suppressed (values blank, ``suppressed`` True).
    alpha : float
        1 - confidence level of the intervals.

    Returns
    -------
    DataFrame
        One row per (group, wave, dimension, side), in that order, with columns
        ``[by] [wave] dimension side metric statistic estimate se ci_low
        ci_high n n_missing n_respondents n_employees suppressed``.
        ``dimension`` is Ease / Recommendation / Satisfaction, ``side`` EX / CX,
        ``metric`` eNPS / NPS, eSat / CSAT, EES / CES. NPS and eNPS are on
        -100..100 (adjusted Wald interval), CSAT and eSat are top-2-box
        percentages (4-5, Wilson interval), CES and EES mean answers (t
        interval). ``n`` counts answers, ``n_respondents`` distinct people who
        answered (employees for EX, customers for CX) and ``n_employees`` the
        distinct employees the row is about (the respondents for EX, the
        employees who handled the rated interactions for CX). The table never
        contains an employee, customer or interaction id.
        ``attrs["ledger"]`` is the data-quality ledger (see
        :mod:`cxex_lab.ledger`) of every response left out and why, including
        the suppressed rows.

    Raises
    ------
    ValueError
        Unknown ``by`` / ``period``, a bad ``min_group_size``, a table without
        a column the mirror needs, or answers off their scale.

    Notes
    -----
    *Attribution.* CX answers reach a group through the interaction they rate:
    ``cx_responses.interaction_id -> interactions.employee_id ->
    employees.site_id / team_id``; EX answers through ``employee_id``. Answers
    that cannot be attributed (no matching interaction, an unknown employee,
    an employee without a site/team) are left out and counted in the ledger,
    never dropped silently. Missing answers to one item are counted in
    ``n_missing`` (and the ledger) and leave the other items of the response in.

    *Periods.* The opening date of wave w is the earliest
    ``ex_responses.responded_at`` of that wave. The CX of period w are the
    interactions started on or after wave w's opening and before the next
    wave's opening (the last wave's period is open-ended). Interactions before
    the first opening have no EX wave to compare with and go to the ledger.
    Without ``period`` all waves are pooled (an employee answering three waves
    counts three times in ``n`` and once in ``n_respondents``).

    *Privacy.* A row is suppressed when ``n_respondents`` or ``n_employees``
    is below ``min_group_size`` (via
    :func:`cxex_lab.privacy.suppress_small_groups`): its estimate, interval
    and counts are blanked. Counting employees on the CX side keeps a team of
    two agents from being reported through its customers' ratings.

    Results were checked against the single-group functions (:func:`nps`,
    :func:`csat`, :func:`ces`) on the raw joined answers of each group
    (``tests/test_metrics.py``).

    Examples
    --------
    >>> from cxex_lab.io import load_study  # doctest: +SKIP
    >>> tab = mirror(load_study("data/sample"), by="site_id")  # doctest: +SKIP
    >>> tab.pivot_table(index="site_id", columns="metric", values="estimate")  # doctest: +SKIP
    """
    if by not in (None, "site_id", "team_id"):
        raise ValueError(f"mirror: by must be None, 'site_id' or 'team_id', got {by!r}")
    if period not in (None, "wave"):
        raise ValueError(f"mirror: period must be None or 'wave', got {period!r}")
    min_group_size = check_min_group_size(min_group_size)
    alpha = _check_alpha(alpha)
    _check_study(study, by, period)
    ledger = Ledger()
    step = "mirror"

    emp = study.employees.drop_duplicates("employee_id").set_index("employee_id")
    known = emp.index

    # --- EX side: answers -> employees (index = row number in ex_responses)
    ex = study.ex_responses.reset_index(drop=True)
    unknown = pd.Series(known.get_indexer(ex["employee_id"]) < 0, index=ex.index)
    ledger.add(step, "ex_responses", "answer from an employee not in the employees table (cannot be attributed)",
               int(unknown.sum()), [f"row {i}" for i in ex.index[unknown]])
    ex = ex[~unknown].copy()
    if by:
        ex[by] = ex["employee_id"].map(emp[by])
    ex["_respondent"] = ex["employee_id"]

    # --- CX side: answers -> interactions -> employees (index = row number in cx_responses)
    cx = study.cx_responses.reset_index(drop=True)
    inter = study.interactions.drop_duplicates("interaction_id").set_index("interaction_id")
    for c in ("employee_id", "customer_id") + (("started_at",) if period else ()):
        cx[c] = cx["interaction_id"].map(inter[c])
    orphan = pd.Series(inter.index.get_indexer(cx["interaction_id"]) < 0, index=cx.index)
    ledger.add(step, "cx_responses", "response links to no interaction (cannot be attributed to an employee, site or team)",
               int(orphan.sum()), [f"row {i}" for i in cx.index[orphan]])
    cx = cx[~orphan]
    unknown = pd.Series(known.get_indexer(cx["employee_id"]) < 0, index=cx.index)
    ledger.add(step, "cx_responses", "interaction handled by an employee not in the employees table (cannot be attributed)",
               int(unknown.sum()), [f"row {i}" for i in cx.index[unknown]])
    cx = cx[~unknown].copy()
    if by:
        cx[by] = cx["employee_id"].map(emp[by])
    # the customer who answered is the respondent; without a customer id each answer counts as its own respondent
    cx["_respondent"] = cx["customer_id"].astype("object").where(cx["customer_id"].notna(), "row " + cx.index.astype(str))

    keys: list[str] = [by] if by else []
    if by:
        for name, df in (("ex_responses", ex), ("cx_responses", cx)):
            no_group = df[by].isna()
            ledger.add(step, name, f"employee has no {by} (cannot be attributed to a group)", int(no_group.sum()),
                       [f"row {i}" for i in df.index[no_group]])
        ex, cx = ex[ex[by].notna()], cx[cx[by].notna()]
    if period == "wave":
        openings = study.wave_openings()
        cx["wave"] = _wave_of(cx["started_at"], openings)
        early = cx["wave"].isna()
        ledger.add(step, "cx_responses",
                   "interaction started before the first EX wave opened, or has no start time (no wave period)",
                   int(early.sum()), [f"row {i}" for i in cx.index[early]])
        cx = cx[~early].copy()
        cx["wave"] = cx["wave"].astype(ex["wave"].dtype) if pd.api.types.is_integer_dtype(ex["wave"]) else cx["wave"]
        no_wave = ex["wave"].isna()
        ledger.add(step, "ex_responses", "answer without a wave", int(no_wave.sum()), [f"row {i}" for i in ex.index[no_wave]])
        ex = ex[~no_wave]
        keys.append("wave")

    parts = []
    for d_order, (dim, (cx_metric, cx_col, ex_metric, ex_col)) in enumerate(MIRROR.items()):
        for s_order, (side, df, col, metric) in enumerate((("EX", ex, ex_col, ex_metric), ("CX", cx, cx_col, cx_metric))):
            if df[col].notna().any():
                _answers(df[col], col)  # off-scale answers raise, naming the column, rows and values
            table = "ex_responses" if side == "EX" else "cx_responses"
            n_miss = int(df[col].isna().sum())
            ledger.add(step, table, f"{col} answer missing (left out of {metric} only)", n_miss,
                       [f"row {i}" for i in df.index[df[col].isna()]])
            res = _summarise(df, keys, col, alpha)
            res.insert(len(keys), "dimension", dim)
            res.insert(len(keys) + 1, "side", side)
            res.insert(len(keys) + 2, "metric", metric)
            res["_d"], res["_s"] = d_order, s_order
            parts.append(res)
    out = pd.concat(parts, ignore_index=True)
    if keys:  # every group appears on both sides (n = 0 where a side has no answers)
        grid = out[keys].drop_duplicates()
        frame = out[["dimension", "side", "metric", "_d", "_s"]].drop_duplicates()
        full = grid.merge(frame, how="cross")
        out = full.merge(out, on=keys + ["dimension", "side", "metric", "_d", "_s"], how="left")
        for c in ("n", "n_missing", "n_respondents", "n_employees"):
            out[c] = out[c].fillna(0).astype("int64")
        stat = {"NPS": "net score", "eNPS": "net score", "CSAT": "top-box %", "eSat": "top-box %", "CES": "mean", "EES": "mean"}
        out["statistic"] = out["statistic"].fillna(out["metric"].map(stat))
    out = out.sort_values(keys + ["_d", "_s"], kind="stable").drop(columns=["_d", "_s"]).reset_index(drop=True)
    out = suppress_small_groups(
        out, ["n_respondents", "n_employees"], ["estimate", "se", "ci_low", "ci_high", "n", "n_missing"],
        min_group_size, ledger=ledger, table="mirror", step=step,
    )
    out.attrs["ledger"] = ledger.records  # records: see cxex_lab.ledger.ledger_of
    return out
