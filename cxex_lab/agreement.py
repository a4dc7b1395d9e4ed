"""Within-group agreement and reliability: may individual answers be averaged to a team or site?

Before EX answers are aggregated to team or site level, three questions need an
answer (Bliese 2000; LeBreton & Senter 2008):

* **Does the group matter?** ICC(1), the share of answer variance due to group
  membership. Values above about .05-.10 indicate a non-trivial group effect.
* **Are group means reliable?** ICC(2), the reliability of a group mean. Values
  above about .70 are usually taken as reliable.
* **Do members agree?** r_wg (single item) or r_wg(j) (multi-item scale) against a
  uniform null distribution (James, Demaree & Wolf 1984). Above .70 is the usual bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["agreement", "icc_oneway", "rwg"]


def _numeric(df: pd.DataFrame, col: str) -> pd.Series:
    """Column ``col`` as float, or a ValueError naming it and showing the offending values."""
    s = df[col]
    if pd.api.types.is_bool_dtype(s):
        raise ValueError(f"agreement: value column {col!r} must be numeric scale answers, found booleans")
    if pd.api.types.is_numeric_dtype(s):
        return s.astype("float64")
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() & s.notna()
    if bad.any():
        examples = ", ".join(repr(v) for v in s[bad].head(3))
        raise ValueError(
            f"agreement: value column {col!r} must be numeric scale answers; {int(bad.sum())} value(s) are not "
            f"numbers, e.g. {examples}"
        )
    return num.astype("float64")


def icc_oneway(values: Any, groups: Any) -> dict[str, float]:
    """ICC(1) and ICC(2) from a one-way random-effects ANOVA.

    Parameters
    ----------
    values : array-like of float
        One answer (or scale score) per respondent.
    groups : array-like
        The group of each respondent. Pairs with a missing value or group are dropped.

    Returns
    -------
    dict
        ``icc1, icc2, msb, msw, k, F, df_between, df_within, p, n_groups, n``.

    Raises
    ------
    ValueError
        Fewer than 2 groups, or no group with 2 or more answers.

    Notes
    -----
    With G groups of sizes :math:`n_g` (N answers in all), group means
    :math:`\\bar y_g` and grand mean :math:`\\bar y`:

    .. math::

        MSB = \\frac{\\sum_g n_g(\\bar y_g - \\bar y)^2}{G - 1}, \\qquad
        MSW = \\frac{\\sum_g \\sum_i (y_{gi} - \\bar y_g)^2}{N - G}

        ICC(1) = \\frac{MSB - MSW}{MSB + (k - 1)MSW}, \\qquad
        ICC(2) = \\frac{MSB - MSW}{MSB}

    with k the group size; for unbalanced groups the adjusted mean group size
    :math:`k = (N - \\sum_g n_g^2 / N)/(G - 1)` (Bliese 2000), which equals the
    common size for balanced groups. F = MSB / MSW on (G - 1, N - G) degrees
    of freedom. ICC(1) can be negative (MSB < MSW); it is reported as is.

    References
    ----------
    Bliese, P. D. (2000). Within-group agreement, non-independence, and
    reliability. In K. J. Klein & S. W. J. Kozlowski (Eds.), Multilevel theory,
    research, and methods in organizations (pp. 349-381). Jossey-Bass.

    Examples
    --------
    >>> r = icc_oneway([4, 5, 4, 2, 2, 3, 3, 4, 3], list("aaabbbccc"))
    >>> round(r["icc1"], 4), round(r["icc2"], 4), round(r["F"], 4)
    (0.7273, 0.8889, 9.0)
    """
    d = pd.DataFrame({"v": np.asarray(values, dtype="float64"), "g": np.asarray(groups, dtype=object)})
    d = d[d["v"].notna() & d["g"].notna()]
    sizes = d.groupby("g")["v"].size()
    n, g = len(d), len(sizes)
    if g < 2:
        raise ValueError(f"agreement: need at least 2 groups with answers, found {g}")
    if n - g < 1:
        raise ValueError("agreement: every group has a single answer; the within-group variance is undefined")
    means = d.groupby("g")["v"].transform("mean")
    grand = d["v"].mean()
    ssb = float(((means - grand) ** 2).sum())
    ssw = float(((d["v"] - means) ** 2).sum())
    df_b, df_w = g - 1, n - g
    msb, msw = ssb / df_b, ssw / df_w
    k = (n - float((sizes**2).sum()) / n) / df_b
    denom = msb + (k - 1) * msw
    icc1 = (msb - msw) / denom if denom > 0 else np.nan
    icc2 = (msb - msw) / msb if msb > 0 else np.nan
    f = msb / msw if msw > 0 else np.inf
    return {
        "icc1": float(icc1), "icc2": float(icc2), "msb": msb, "msw": msw, "k": float(k), "F": float(f),
        "df_between": df_b, "df_within": df_w, "p": float(stats.f.sf(f, df_b, df_w)), "n_groups": g, "n": n,
    }


def rwg(items: pd.DataFrame | pd.Series, groups: Any, scale_points: int) -> pd.Series:
    """r_wg (one item) or r_wg(j) (several items) per group, against the uniform null.

    Parameters
    ----------
    items : DataFrame or Series
        One column per item (one column: r_wg; J > 1 columns: r_wg(j)), one row per respondent.
    groups : array-like
        The group of each respondent.
    scale_points : int
        A, the number of answer options (5 for a 1-5 scale, 11 for 0-10).

    Returns
    -------
    Series
        One value per group; NaN for groups with fewer than 2 members.

    Notes
    -----
    The expected variance of answers spread uniformly over A options is
    :math:`\\sigma^2_{EU} = (A^2 - 1)/12`. For one item with within-group
    variance :math:`s^2` (ddof = 1), :math:`r_{wg} = 1 - s^2/\\sigma^2_{EU}`.
    For J items with mean within-group item variance :math:`\\bar s^2`,

    .. math:: r_{wg(j)} = \\frac{J(1 - \\bar s^2/\\sigma^2_{EU})}
                               {J(1 - \\bar s^2/\\sigma^2_{EU}) + \\bar s^2/\\sigma^2_{EU}}

    When the observed variance exceeds the null variance
    (:math:`s^2 > \\sigma^2_{EU}`) the index is negative (or, for r_wg(j),
    can exceed 1); as is usual these values are truncated to 0, meaning no
    agreement (James, Demaree & Wolf 1984; LeBreton & Senter 2008, Q. 7).

    References
    ----------
    James, L. R., Demaree, R. G., & Wolf, G. (1984). Estimating within-group
    interrater reliability with and without response bias. Journal of Applied
    Psychology, 69, 85-98.
    LeBreton, J. M., & Senter, J. L. (2008). Answers to 20 questions about
    interrater reliability and interrater agreement. Organizational Research
    Methods, 11, 815-852.

    Examples
    --------
    >>> rwg(pd.Series([4, 5, 4, 2, 2, 3]), list("aaabbb"), 5).round(4).tolist()
    [0.8333, 0.8333]
    """
    frame = items.to_frame() if isinstance(items, pd.Series) else items
    sigma2 = (scale_points**2 - 1) / 12.0
    j = frame.shape[1]
    var = frame.reset_index(drop=True).groupby(np.asarray(groups, dtype=object)).var(ddof=1)
    ratio = var.mean(axis=1) / sigma2
    r = 1 - ratio if j == 1 else j * (1 - ratio) / (j * (1 - ratio) + ratio)
    r = r.where(ratio <= 1, 0.0)  # observed variance above the uniform null: no agreement
    return r.where(ratio.notna()).rename("rwg" if j == 1 else "rwg_j")


def agreement(
    df: pd.DataFrame,
    group: str,
    values: str | Sequence[str] = (),
    scale_points: int | Mapping[str, int] = 5,
    items: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Agreement and reliability statistics that justify aggregating answers to groups.

    Parameters
    ----------
    df : DataFrame
        One row per respondent (e.g. EX answers with their ``team_id``).
    group : str
        Grouping column (``team_id``, ``site_id``).
    values : str or list of str
        Single-item columns, each checked on its own (r_wg).
    scale_points : int or dict
        A, the number of answer options of each scale (5 for 1-5, 7 for 1-7,
        11 for 0-10). A dict gives it per column or per multi-item scale name
        (missing names default to 5).
    items : dict, optional
        Multi-item scales, ``{"scale name": [item columns]}``. The scale score
        (the mean of the items) is used for the ICCs and the ANOVA, and all
        items for r_wg(j). Respondents missing any item of the scale are left out.

    Returns
    -------
    DataFrame
        One row per value column or scale: ``value, icc1, icc2, rwg_mean,
        rwg_median, n_groups, mean_group_size, F, p`` and, to show the working,
        ``k`` (the adjusted group size), ``msb, msw, df_between, df_within``,
        ``rwg_n_groups`` (groups of 2 or more, over which the r_wg summaries
        run), ``n`` (answers used) and ``n_missing`` (rows left out for a
        missing value or group).

    Raises
    ------
    ValueError
        The group or a value column is missing, a value column is not numeric,
        values span more points than ``scale_points``, fewer than 2 groups have
        answers, or no group has 2 answers.

    Notes
    -----
    ICC(1) = (MSB - MSW) / (MSB + (k - 1) MSW) and ICC(2) = (MSB - MSW) / MSB
    from the one-way ANOVA of the answers on the groups, with k the adjusted
    mean group size (N - sum n_g^2 / N) / (G - 1) for unbalanced groups
    (:func:`icc_oneway`). r_wg = 1 - s^2 / sigma_EU^2 with
    sigma_EU^2 = (A^2 - 1) / 12, and r_wg(j) for multi-item scales, are
    computed per group, truncated to 0 when the observed variance exceeds the
    null's, and summarised by their mean and median (:func:`rwg`).

    Thresholds in common use: ICC(1) > .05-.10 signals a non-trivial group
    effect; ICC(2) > .70 reliable group means; r_wg > .70 members agree
    (LeBreton & Senter 2008; Bliese 2000; James, Demaree & Wolf 1984). They are
    conventions, not tests: a low ICC(2) with a high r_wg usually means small
    groups, not disagreement.

    Results were checked against a hand-computed one-way ANOVA, against
    pingouin's ``intraclass_corr`` (ICC(1,1) and ICC(1,k) on balanced data)
    and against ``scipy.stats.f_oneway`` (F and p on unbalanced data); see
    ``tests/test_agreement.py``.

    References
    ----------
    Bliese, P. D. (2000). Within-group agreement, non-independence, and
    reliability. In K. J. Klein & S. W. J. Kozlowski (Eds.), Multilevel theory,
    research, and methods in organizations (pp. 349-381). Jossey-Bass.
    James, L. R., Demaree, R. G., & Wolf, G. (1984). Estimating within-group
    interrater reliability with and without response bias. Journal of Applied
    Psychology, 69, 85-98.
    LeBreton, J. M., & Senter, J. L. (2008). Answers to 20 questions about
    interrater reliability and interrater agreement. Organizational Research
    Methods, 11, 815-852.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"team": list("aaabbbccc"), "esat": [4, 5, 4, 2, 2, 3, 3, 4, 3]})
    >>> agreement(df, "team", "esat")[["icc1", "icc2", "rwg_mean"]].round(3).to_dict("records")
    [{'icc1': 0.727, 'icc2': 0.889, 'rwg_mean': 0.833}]
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"agreement: df must be a DataFrame, got {type(df).__name__}")
    values = [values] if isinstance(values, str) else list(values)
    items = {name: [cols] if isinstance(cols, str) else list(cols) for name, cols in dict(items or {}).items()}
    if not values and not items:
        raise ValueError("agreement: name at least one value column (values=...) or multi-item scale (items=...)")
    if group not in df.columns:
        raise ValueError(f"agreement: group column {group!r} not found; available columns: {list(df.columns)}")
    item_cols = [c for cols in items.values() for c in cols]
    missing = [c for c in dict.fromkeys(values + item_cols) if c not in df.columns]
    if missing:
        raise ValueError(f"agreement: value column(s) {missing} not found; available columns: {list(df.columns)}")
    empty = [name for name, cols in items.items() if not cols]
    if empty:
        raise ValueError(f"agreement: multi-item scale(s) {empty} list no item columns")
    num = pd.DataFrame({c: _numeric(df, c) for c in dict.fromkeys(values + item_cols)}, index=df.index)

    def points(name: str) -> int:
        a = scale_points.get(name, 5) if isinstance(scale_points, Mapping) else scale_points
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 2:
            raise ValueError(f"agreement: scale_points for {name!r} must be a whole number >= 2, got {a!r}")
        return int(a)

    rows = []
    for name, cols in [(v, [v]) for v in values] + list(items.items()):
        a = points(name)
        keep = df[group].notna() & num[cols].notna().all(axis=1)
        d = num.loc[keep, cols]
        g = df.loc[keep, group]
        if len(d):
            span = float(d.max().max() - d.min().min())
            if span > a - 1:
                raise ValueError(
                    f"agreement: answers to {name!r} range from {d.min().min():g} to {d.max().max():g}, "
                    f"more than scale_points={a} options allow; pass the scale's number of options "
                    f"(e.g. scale_points={{{name!r}: {int(span) + 1}}})"
                )
        try:
            icc = icc_oneway(d.mean(axis=1), g)
        except ValueError as err:
            raise ValueError(f"{err} (group column {group!r}, value {name!r})") from None
        r = rwg(d, g, a)
        sizes = g.value_counts()
        rows.append(
            {
                "value": name,
                "icc1": icc["icc1"],
                "icc2": icc["icc2"],
                "rwg_mean": float(r.mean()),
                "rwg_median": float(r.median()),
                "n_groups": int(icc["n_groups"]),
                "mean_group_size": float(sizes.mean()),
                "F": icc["F"],
                "p": icc["p"],
                "k": icc["k"],
                "msb": icc["msb"],
                "msw": icc["msw"],
                "df_between": int(icc["df_between"]),
                "df_within": int(icc["df_within"]),
                "rwg_n_groups": int(r.notna().sum()),
                "n": int(icc["n"]),
                "n_missing": int((~keep).sum()),
            }
        )
    return pd.DataFrame(rows)
