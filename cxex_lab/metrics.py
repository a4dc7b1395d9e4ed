"""The mirror metrics: EX and CX on the same three dimensions.

=============== ======================== ==========================
dimension       customer side (CX)       employee side (EX)
=============== ======================== ==========================
Ease            CES, 1-7 (higher=easier) EES, 1-7 (higher=easier)
Recommendation  NPS, 0-10 answers        eNPS, 0-10 answers
Satisfaction    CSAT, 1-5 answers        eSat, 1-5 answers
=============== ======================== ==========================

Each metric function takes the raw answers and returns a one-row tidy DataFrame
(``metric``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``n``, ``n_missing`` and
the shares behind the estimate). :func:`mirror` puts both sides next to each other
by group and period.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxex_lab.ledger import Ledger, format_examples
from cxex_lab.privacy import MIN_GROUP_SIZE, check_min_group_size, suppress_small_groups

__all__ = ["nps", "enps", "csat", "esat", "ces", "ees", "mirror", "MIRROR"]

#: dimension -> (CX metric, CX column, EX metric, EX column)
MIRROR: dict[str, tuple[str, str, str, str]] = {
    "Ease": ("CES", "ces", "EES", "ees"),
    "Recommendation": ("NPS", "nps", "eNPS", "enps"),
    "Satisfaction": ("CSAT", "csat", "eSat", "esat"),
}
_RANGES = {"nps": (0, 10), "enps": (0, 10), "csat": (1, 5), "esat": (1, 5), "ces": (1, 7), "ees": (1, 7)}


def _clean(scores, name: str) -> tuple[np.ndarray, int]:
    """Numeric answers without missing values; checks the scale range."""
    s = pd.Series(scores)
    if len(s) and not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
        raise ValueError(f"{name} must hold numbers, found {s.dtype} values such as {s.dropna().head(3).tolist()}")
    s = s.astype("float64")
    n_missing = int(s.isna().sum())
    lo, hi = _RANGES[name]
    bad = s.notna() & ((s < lo) | (s > hi) | (s != s.round()))
    if bad.any():
        idx = s.index[bad.to_numpy()]
        raise ValueError(
            f"{name} must be whole numbers {lo}-{hi}; {int(bad.sum())} value(s) out of range, "
            f"e.g. rows {format_examples(list(idx), 3)} (values {format_examples(s[bad].astype(float).tolist(), 3)})"
        )
    x = s.dropna().to_numpy()
    if len(x) == 0:
        raise ValueError(f"{name}: no answers to compute from ({n_missing} missing, 0 valid)")
    return x, n_missing


def _row(metric: str, estimate: float, se: float, lo: float, hi: float, n: int, n_missing: int, **extra) -> pd.DataFrame:
    return pd.DataFrame(
        [{"metric": metric, "estimate": estimate, "se": se, "ci_low": lo, "ci_high": hi, "n": n, "n_missing": n_missing, **extra}]
    )


def _net_score(scores, name: str, metric: str, alpha: float) -> pd.DataFrame:
    x, n_missing = _clean(scores, name)
    n = len(x)
    n_pro = int((x >= 9).sum())
    n_det = int((x <= 6).sum())
    p_pro, p_det = n_pro / n, n_det / n
    est = 100 * (p_pro - p_det)
    se = 100 * np.sqrt(max(p_pro + p_det - (p_pro - p_det) ** 2, 0.0) / n)
    # Adjusted Wald (Rocks 2016): add 3 pseudo-answers (0.75 promoter, 0.75
    # detractor, 1.5 passive) before applying the multinomial variance, which
    # keeps coverage near nominal for small n and extreme scores.
    na = n + 3
    pa, da = (n_pro + 0.75) / na, (n_det + 0.75) / na
    centre = pa - da
    half = stats.norm.ppf(1 - alpha / 2) * np.sqrt((pa + da - centre**2) / na)
    lo, hi = 100 * max(centre - half, -1.0), 100 * min(centre + half, 1.0)
    return _row(metric, est, se, lo, hi, n, n_missing, promoters=p_pro, passives=1 - p_pro - p_det, detractors=p_det)


def nps(scores, alpha: float = 0.05) -> pd.DataFrame:
    """Net Promoter Score with a confidence interval.

    Parameters
    ----------
    scores : array-like
        0-10 answers to "How likely are you to recommend...". Missing values are
        dropped and counted (``n_missing``).
    alpha : float
        1 - confidence level.

    Returns
    -------
    DataFrame
        One row: ``metric, estimate, se, ci_low, ci_high, n, n_missing,
        promoters, passives, detractors`` (estimate on the -100..100 scale).

    Notes
    -----
    NPS = 100 (p_pro - p_det) with promoters 9-10 and detractors 0-6. Its
    variance is that of a difference of two multinomial proportions,
    Var = (p_pro + p_det - (p_pro - p_det)^2) / n (reported as ``se``). The
    interval is the adjusted Wald interval of Rocks (2016): the same variance
    after adding 3 pseudo-answers (0.75 promoter, 0.75 detractor, 1.5 passive),
    which keeps 95% coverage between 93% and 97% in the simulation test
    (``tests/test_metrics.py``) for samples of 30 and more.

    References
    ----------
    Rocks, B. (2016). Interval estimation for the "net promoter score".
    The American Statistician, 70(4), 365-372.

    Examples
    --------
    >>> nps([10, 9, 8, 6, 10])[["estimate", "n"]].to_dict("records")
    [{'estimate': 40.0, 'n': 5}]
    """
    return _net_score(scores, "nps", "NPS", alpha)


def enps(scores, alpha: float = 0.05) -> pd.DataFrame:
    """Employee Net Promoter Score (same maths as :func:`nps`, 0-10 answers)."""
    return _net_score(scores, "enps", "eNPS", alpha)


def _top_box(scores, name: str, metric: str, top_box: Sequence[int] | None, alpha: float) -> pd.DataFrame:
    x, n_missing = _clean(scores, name)
    lo_s, hi_s = _RANGES[name]
    box = list(top_box) if top_box is not None else [hi_s - 1, hi_s]
    bad = [b for b in box if not lo_s <= b <= hi_s]
    if bad:
        raise ValueError(f"top_box values {bad} are outside the {name} scale {lo_s}-{hi_s}")
    n = len(x)
    k = int(np.isin(x, box).sum())
    p = k / n
    z = stats.norm.ppf(1 - alpha / 2)
    # Wilson score interval (good coverage near 0 and 1, unlike the Wald interval)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return _row(metric, 100 * p, 100 * np.sqrt(p * (1 - p) / n), 100 * (centre - half), 100 * (centre + half), n, n_missing,
                mean=float(x.mean()), top_box=",".join(str(b) for b in box))


def csat(scores, top_box: Sequence[int] | None = (4, 5), alpha: float = 0.05) -> pd.DataFrame:
    """Customer satisfaction: share (%) of answers in the top box, with a Wilson interval.

    Parameters
    ----------
    scores : array-like
        1-5 answers.
    top_box : sequence of int
        Scale points counted as satisfied (default 4 and 5, "top-2-box").

    Returns
    -------
    DataFrame
        One row: ``metric, estimate`` (percent), ``se, ci_low, ci_high, n,
        n_missing, mean, top_box``.

    Notes
    -----
    Wilson (1927) score interval for a binomial proportion, reported in percent.

    Examples
    --------
    >>> csat([5, 4, 3, 5])["estimate"].item()
    75.0
    """
    return _top_box(scores, "csat", "CSAT", top_box, alpha)


def esat(scores, top_box: Sequence[int] | None = (4, 5), alpha: float = 0.05) -> pd.DataFrame:
    """Employee satisfaction: top-box share (%) of 1-5 answers (see :func:`csat`)."""
    return _top_box(scores, "esat", "eSat", top_box, alpha)


def _mean_score(scores, name: str, metric: str, alpha: float) -> pd.DataFrame:
    x, n_missing = _clean(scores, name)
    n = len(x)
    m = float(x.mean())
    se = float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
    t = stats.t.ppf(1 - alpha / 2, n - 1) if n > 1 else np.nan
    return _row(metric, m, se, m - t * se, m + t * se, n, n_missing)


def ces(scores, alpha: float = 0.05) -> pd.DataFrame:
    """Customer Effort Score: mean of 1-7 answers (higher = easier), t interval.

    Examples
    --------
    >>> ces([7, 6, 5])["estimate"].item()
    6.0
    """
    return _mean_score(scores, "ces", "CES", alpha)


def ees(scores, alpha: float = 0.05) -> pd.DataFrame:
    """Employee Effort Score: mean of 1-7 answers (higher = easier), t interval."""
    return _mean_score(scores, "ees", "EES", alpha)


_FUNCS = {"nps": nps, "enps": enps, "csat": csat, "esat": esat, "ces": ces, "ees": ees}


def _wave_period(started: pd.Series, openings: pd.Series) -> pd.Series:
    """Wave period of each timestamp: the latest wave opened at or before it (0 = before wave 1)."""
    pos = np.searchsorted(openings.to_numpy(), started.to_numpy(), side="right")
    labels = np.r_[0, openings.index.to_numpy()]
    return pd.Series(labels[pos], index=started.index)


def mirror(study, by: str | None = None, period: str | None = None, min_group_size: int = MIN_GROUP_SIZE,
           alpha: float = 0.05) -> pd.DataFrame:
    """EX and CX side by side on Ease, Recommendation and Satisfaction.

    Parameters
    ----------
    study : Study
        A validated study.
    by : {None, "site_id", "team_id"}
        Group employees (and the CX of the interactions they handled).
    period : {None, "wave"}
        Also split by survey wave: EX of wave w beside the CX of interactions
        from wave w's opening (its first answer) to wave w+1's.
    min_group_size : int
        Groups with fewer respondents on a side are suppressed (values blank,
        ``suppressed`` True).

    Returns
    -------
    DataFrame
        One row per (group, period, dimension, side): ``dimension, side,
        metric, estimate, se, ci_low, ci_high, n, suppressed``. NPS/eNPS on
        -100..100, CSAT/eSat in % top-2-box, CES/EES as means. No id columns.
        ``attrs["ledger"]``: CX responses that could not be attributed.

    Examples
    --------
    >>> from cxex_lab.io import load_study
    >>> mirror(load_study("data/sample"), by="site_id").shape  # doctest: +SKIP
    (60, 11)
    """
    min_group_size = check_min_group_size(min_group_size)
    if by not in (None, "site_id", "team_id"):
        raise ValueError(f"mirror: by must be None, 'site_id' or 'team_id', got {by!r}")
    if period not in (None, "wave"):
        raise ValueError(f"mirror: period must be None or 'wave', got {period!r}")
    ledger = Ledger()
    emp = study.employees[["employee_id", "site_id", "team_id"]]
    ex = study.ex_responses.merge(emp, on="employee_id", how="inner")
    cx = study.cx_responses.merge(study.interactions[["interaction_id", "employee_id", "started_at"]], on="interaction_id", how="left")
    orphan = cx["employee_id"].isna()
    ledger.add("mirror", "cx_responses", "response links to no interaction (cannot be attributed to a site or team)",
               int(orphan.sum()), [f"row {i}" for i in cx.index[orphan.to_numpy()][:5]])
    cx = cx[~orphan].merge(emp, on="employee_id", how="inner")
    keys: list[str] = [by] if by else []
    if period == "wave":
        openings = study.ex_responses.groupby("wave")["responded_at"].min().sort_index()
        cx["wave"] = _wave_period(cx["started_at"], openings)
        early = cx["wave"] == 0
        ledger.add("mirror", "cx_responses", "interaction before the first EX wave opened (no wave period to compare with)",
                   int(early.sum()))
        cx = cx[~early]
        keys.append("wave")
    rows = []
    for dim, (cx_name, cx_col, ex_name, ex_col) in MIRROR.items():
        for side, df, col, name in (("EX", ex, ex_col, ex_name), ("CX", cx, cx_col, cx_name)):
            groups = df.groupby(keys, sort=True) if keys else [((), df)]
            for key, g in groups:
                key = key if isinstance(key, tuple) else (key,)
                vals = g[col].dropna()
                base = dict(zip(keys, key)) | {"dimension": dim, "side": side, "metric": name}
                if len(vals) == 0:
                    rows.append(base | {"estimate": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0})
                    continue
                res = _FUNCS[col](vals, alpha=alpha).iloc[0]
                rows.append(base | {c: res[c] for c in ("estimate", "se", "ci_low", "ci_high", "n")})
    out = pd.DataFrame(rows)
    out = suppress_small_groups(out, "n", ["estimate", "se", "ci_low", "ci_high"], min_group_size, ledger=ledger,
                                table="mirror", step="mirror")
    out.attrs["ledger"] = ledger.frame
    return out
