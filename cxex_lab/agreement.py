"""Within-group agreement and reliability: may individual answers be averaged to a team or site?

Before EX answers are aggregated to team or site level, two questions need an
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

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["agreement", "icc_oneway", "rwg"]


def _check(df: pd.DataFrame, group: str, cols: Sequence[str]) -> None:
    missing = [c for c in [group, *cols] if c not in df.columns]
    if missing:
        raise ValueError(f"agreement: column(s) {missing} not found; available columns: {list(df.columns)}")
    for c in cols:
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            raise ValueError(f"agreement: column {c!r} must hold numbers (scale answers), found {df[c].dtype}")


def icc_oneway(values: pd.Series, groups: pd.Series) -> dict[str, float]:
    """ICC(1) and ICC(2) from a one-way random-effects ANOVA.

    Notes
    -----
    With mean squares between (MSB) and within (MSW) groups and the group size
    k (for unbalanced groups the adjusted mean size
    k = (N - sum n_g^2 / N) / (G - 1), Bliese 2000):

    ICC(1) = (MSB - MSW) / (MSB + (k - 1) MSW),  ICC(2) = (MSB - MSW) / MSB.

    Returns a dict with ``icc1, icc2, msb, msw, k, F, p, n_groups, n``.
    """
    d = pd.DataFrame({"v": values.to_numpy(dtype=float), "g": groups.to_numpy()}).dropna()
    sizes = d.groupby("g")["v"].size()
    n, g = len(d), len(sizes)
    if g < 2:
        raise ValueError(f"agreement: need at least 2 groups with answers, found {g}")
    if n - g < 1:
        raise ValueError("agreement: every group has a single answer; within-group variance is undefined")
    means = d.groupby("g")["v"].transform("mean")
    grand = d["v"].mean()
    ssb = float(((means - grand) ** 2).sum())
    ssw = float(((d["v"] - means) ** 2).sum())
    msb, msw = ssb / (g - 1), ssw / (n - g)
    k = (n - (sizes**2).sum() / n) / (g - 1)
    icc1 = (msb - msw) / (msb + (k - 1) * msw) if (msb + (k - 1) * msw) > 0 else np.nan
    icc2 = (msb - msw) / msb if msb > 0 else np.nan
    f = msb / msw if msw > 0 else np.inf
    return {"icc1": icc1, "icc2": icc2, "msb": msb, "msw": msw, "k": k, "F": f,
            "p": float(stats.f.sf(f, g - 1, n - g)), "n_groups": g, "n": n}


def rwg(items: pd.DataFrame, groups: pd.Series, scale_points: int) -> pd.Series:
    """r_wg (one item) or r_wg(j) (several items) per group, against a uniform null.

    Notes
    -----
    sigma_EU^2 = (A^2 - 1) / 12 for an A-point scale. For one item,
    r_wg = 1 - s^2 / sigma_EU^2; for J items with mean within-group variance
    s̄^2, r_wg(j) = J(1 - s̄^2/σ²) / (J(1 - s̄^2/σ²) + s̄^2/σ²). Values outside
    [0, 1] (observed variance above the null's) are set to 0, as is usual
    (LeBreton & Senter 2008). Groups with one member get NaN.
    """
    sigma2 = (scale_points**2 - 1) / 12.0
    j = items.shape[1]
    var = items.groupby(groups.to_numpy()).var(ddof=1)
    ratio = var.mean(axis=1) / sigma2
    if j == 1:
        r = 1 - ratio
    else:
        r = j * (1 - ratio) / (j * (1 - ratio) + ratio)
    r = r.where((r >= 0) & (r <= 1), 0.0).where(ratio.notna())
    return r


def agreement(
    df: pd.DataFrame,
    group: str,
    values: Sequence[str],
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
    values : list of str
        Single-item columns to check one by one.
    scale_points : int or dict
        Number of answer options of each scale (5 for 1-5; 11 for 0-10; a dict
        gives it per column or per multi-item scale name).
    items : dict, optional
        Multi-item scales, ``{"scale name": [item columns]}``: the scale score is
        the item mean for the ICCs, and r_wg(j) uses all items.

    Returns
    -------
    DataFrame
        One row per value column or scale: ``value, icc1, icc2, rwg_mean,
        rwg_median, n_groups, mean_group_size, F, p``.

    Notes
    -----
    Thresholds in common use: ICC(1) > .05-.10 (a group effect worth modelling),
    ICC(2) > .70 (reliable group means), r_wg > .70 (members agree). Checked
    against a hand-computed one-way ANOVA and against pingouin's ICC(1,1)/ICC(1,k)
    on balanced data (``tests/test_agreement.py``).

    References
    ----------
    Bliese, P. D. (2000). Within-group agreement, non-independence, and
    reliability. In Klein & Kozlowski (Eds.), Multilevel theory, research, and
    methods in organizations (pp. 349-381).
    James, L. R., Demaree, R. G., & Wolf, G. (1984). Estimating within-group
    interrater reliability with and without response bias. J. Applied Psychology, 69, 85-98.
    LeBreton, J. M., & Senter, J. L. (2008). Answers to 20 questions about
    interrater reliability and interrater agreement. Organizational Research Methods, 11, 815-852.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"team": list("aaabbbccc"), "esat": [4, 5, 4, 2, 2, 3, 3, 4, 3]})
    >>> agreement(df, "team", ["esat"])[["icc1", "icc2"]].round(3).to_dict("records")
    [{'icc1': 0.727, 'icc2': 0.889}]
    """
    items = dict(items or {})
    _check(df, group, list(values) + [c for cols in items.values() for c in cols])
    if df[group].notna().sum() == 0:
        raise ValueError(f"agreement: group column {group!r} has no values")

    def points(name: str) -> int:
        a = scale_points.get(name, 5) if isinstance(scale_points, Mapping) else scale_points
        if not isinstance(a, (int, np.integer)) or a < 2:
            raise ValueError(f"agreement: scale_points for {name!r} must be an integer >= 2, got {a!r}")
        return int(a)

    specs = [(v, [v]) for v in values] + list(items.items())
    rows = []
    for name, cols in specs:
        d = df[[group, *cols]].dropna()
        score = d[cols].mean(axis=1)
        icc = icc_oneway(score, d[group])
        r = rwg(d[cols], d[group], points(name))
        sizes = d.groupby(group).size()
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
            }
        )
    return pd.DataFrame(rows)
