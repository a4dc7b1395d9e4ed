"""Within-group agreement and reliability: may individual answers be averaged to a team, site or agent?

Before answers are aggregated to a group, three questions need an answer
(Bliese 2000; LeBreton & Senter 2008):

* **Does the group matter?** ICC(1), the share of answer variance due to group
  membership. Values above about .05-.10 indicate a non-trivial group effect.
* **Are group means reliable?** ICC(2), the reliability of a group mean. Values
  above about .70 are usually taken as reliable.
* **Do members agree?** r_wg (single item) or r_wg(j) (multi-item scale) against
  a null distribution of answers without agreement: the uniform one (James,
  Demaree & Wolf 1984), a skewed one (LeBreton & Senter 2008, Table 3), or a
  null variance the user gives (R multilevel's ``ranvar``). Above .70 is the
  usual bar.

The composition model. The same employees answer every EX wave, so answers
pooled over waves count each person up to W times: the group size k, and with
it ICC(2), overstate how much information a team mean holds. :func:`agreement`
therefore works **per wave** (``wave=``): within a wave each person answers
once, in the team they belong to (direct consensus composition, Chan 1998),
and the table states the composition model it used in ``composition``.
:func:`reliability` gives the same for the CX answers an agent receives
(ICC(2) of agent-wave CX means); :func:`reliability_from_sums` computes it from
per-unit counts, sums and sums of squares (a database ``GROUP BY``, e.g.
:meth:`cxex_lab.workspace.Workspace.cx_cluster_stats`), so the answers never
need to be read into memory. When ICC(2) and r_wg point different ways
the ``reading`` column says so in words, so reports can state it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["NULLS", "NULL_VARIANCES", "null_variance", "agreement", "reliability", "reliability_from_sums",
           "icc_oneway", "icc_from_sums", "rwg"]

#: Null (no-agreement) response distributions for r_wg.
NULLS: tuple[str, ...] = ("uniform", "slight_skew", "moderate_skew", "heavy_skew", "triangular", "normal")

#: Null variances by number of scale points (LeBreton & Senter 2008, Table 3), as transcribed by
#: J. M. LeBreton in his WGA R package (github.com/james-lebreton/WGA, R/RWG.R and R/RWGJ.R, the
#: ``null.var`` matrix). The uniform column is (A^2 - 1)/12 (used exactly, not rounded). Only 5-11
#: points are tabulated; the normal and triangular columns are not monotone in A as transcribed and
#: could not be checked against the printed table here (see the module's tests).
NULL_VARIANCES: dict[int, dict[str, float]] = {
    a: dict(zip(NULLS[1:], row))
    for a, row in {
        5: (1.34, 0.90, 0.44, 1.32, 1.04),
        6: (1.85, 1.26, 0.69, 1.45, 1.25),
        7: (2.90, 2.14, 1.39, 2.10, 1.40),
        8: (3.47, 2.79, 2.35, 2.81, 1.73),
        9: (5.66, 4.73, 3.16, 3.00, 1.58),
        10: (6.30, 5.09, 3.46, 2.89, 1.45),
        11: (7.31, 6.32, 4.02, 3.32, 1.40),
    }.items()
}

#: Conventional bars for reliable group means (ICC(2)) and agreement (mean r_wg).
ICC2_BAR: float = 0.70
RWG_BAR: float = 0.70


def null_variance(scale_points: int, null: str = "uniform") -> float:
    """Variance of a no-agreement answer distribution on an A-point scale.

    Parameters
    ----------
    scale_points : int
        A, the number of answer options (5 for 1-5, 11 for 0-10).
    null : str
        One of :data:`NULLS`: ``"uniform"`` (every option equally likely,
        :math:`(A^2 - 1)/12`, any A >= 2), or a skewed, triangular or normal
        null of LeBreton & Senter (2008, Table 3), tabulated for A = 5-11.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Unknown null, A < 2, or a tabulated null for an A outside 5-11.

    References
    ----------
    LeBreton, J. M., & Senter, J. L. (2008). Answers to 20 questions about
    interrater reliability and interrater agreement. Organizational Research
    Methods, 11, 815-852 (Table 3).

    Examples
    --------
    >>> null_variance(5), null_variance(5, "slight_skew"), null_variance(7, "heavy_skew")
    (2.0, 1.34, 1.39)
    """
    if isinstance(scale_points, bool) or not isinstance(scale_points, (int, np.integer)) or scale_points < 2:
        raise ValueError(f"agreement: scale_points must be a whole number >= 2, got {scale_points!r}")
    if null not in NULLS:
        raise ValueError(f"agreement: null must be one of {list(NULLS)}, got {null!r}")
    if null == "uniform":
        return (int(scale_points) ** 2 - 1) / 12.0
    if int(scale_points) not in NULL_VARIANCES:
        raise ValueError(
            f"agreement: LeBreton & Senter (2008, Table 3) give the {null!r} null for 5-11 scale points only, "
            f"not {scale_points}; pass null_variance= for this scale"
        )
    return NULL_VARIANCES[int(scale_points)][null]


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



def _anova_icc(ssb: float, ssw: float, n: int, g: int, sizes: Any) -> dict[str, Any]:
    """ICC(1), ICC(2) and the one-way ANOVA behind them from the sums of squares (shared by
    :func:`icc_oneway` and :func:`icc_from_sums`)."""
    df_b, df_w = g - 1, n - g
    msb, msw = ssb / df_b, ssw / df_w
    k = (n - float((np.asarray(sizes, float) ** 2).sum()) / n) / df_b
    denom = msb + (k - 1) * msw
    icc1 = (msb - msw) / denom if denom > 0 else np.nan
    icc2 = (msb - msw) / msb if msb > 0 else np.nan
    f = msb / msw if msw > 0 else np.inf
    return {
        "icc1": float(icc1), "icc2": float(icc2), "msb": msb, "msw": msw, "k": float(k), "F": float(f),
        "df_between": df_b, "df_within": df_w, "p": float(stats.f.sf(f, df_b, df_w)), "n_groups": g, "n": n,
    }

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
    return _anova_icc(ssb, ssw, n, g, sizes)


def icc_from_sums(n: Any, total: Any, total_sq: Any) -> dict[str, float]:
    """ICC(1) and ICC(2) of the one-way random-effects ANOVA from per-group sufficient statistics.

    The same numbers as :func:`icc_oneway`, from one row per group instead of
    one row per answer: what a database ``GROUP BY`` returns (``count(x)``,
    ``sum(x)``, ``sum(x*x)``), so the answers themselves are never read.

    Parameters
    ----------
    n : array-like of int
        Answers per group (groups with 0 answers are left out).
    total : array-like of float
        Sum of the answers of each group.
    total_sq : array-like of float
        Sum of the squared answers of each group.

    Returns
    -------
    dict
        ``icc1, icc2, msb, msw, k, F, df_between, df_within, p, n_groups, n``
        (as :func:`icc_oneway`).

    Raises
    ------
    ValueError
        Arrays of different lengths, negative or non-whole counts, missing
        sums, fewer than 2 groups with answers, or no group with 2 or more
        answers.

    Notes
    -----
    With :math:`n_g, S_g, Q_g` the count, sum and sum of squares of group g,
    :math:`N = \\sum n_g` and :math:`S = \\sum S_g`:

    .. math::

        SSB = \\sum_g S_g^2 / n_g - S^2 / N, \\qquad
        SSW = \\sum_g Q_g - \\sum_g S_g^2 / n_g

    then MSB, MSW, k, ICC(1) and ICC(2) as in :func:`icc_oneway`. Checked
    equal to :func:`icc_oneway` on the answers themselves (balanced and
    unbalanced groups, ``tests/test_findings_linkage.py``).

    Examples
    --------
    >>> r = icc_from_sums([3, 3, 3], [13, 7, 10], [57, 17, 34])
    >>> round(r["icc1"], 4), round(r["icc2"], 4), round(r["F"], 4)
    (0.7273, 0.8889, 9.0)
    """
    n_ = np.asarray(n, dtype="float64").ravel()
    s_ = np.asarray(total, dtype="float64").ravel()
    q_ = np.asarray(total_sq, dtype="float64").ravel()
    if not (len(n_) == len(s_) == len(q_)):
        raise ValueError(f"agreement: icc_from_sums needs one count, sum and sum of squares per group; got "
                         f"{len(n_)} counts, {len(s_)} sums, {len(q_)} sums of squares")
    bad = ~np.isfinite(n_) | (n_ < 0) | (n_ != np.round(n_))
    if bad.any():
        raise ValueError(f"agreement: icc_from_sums counts must be whole numbers >= 0; {int(bad.sum())} are not "
                         f"(e.g. {n_[bad][:3].tolist()})")
    keep = n_ > 0
    if (~np.isfinite(s_[keep]) | ~np.isfinite(q_[keep])).any():
        raise ValueError("agreement: icc_from_sums got a missing sum or sum of squares for a group with answers")
    n_, s_, q_ = n_[keep], s_[keep], q_[keep]
    g, n_all = len(n_), float(n_.sum())
    if g < 2:
        raise ValueError(f"agreement: need at least 2 groups with answers, found {g}")
    if n_all - g < 1:
        raise ValueError("agreement: every group has a single answer; the within-group variance is undefined")
    between_sq = float((s_**2 / n_).sum())
    ssb = max(between_sq - float(s_.sum()) ** 2 / n_all, 0.0)
    ssw = max(float(q_.sum()) - between_sq, 0.0)
    return _anova_icc(ssb, ssw, int(n_all), g, n_)


def rwg(
    items: pd.DataFrame | pd.Series,
    groups: Any,
    scale_points: int | None = None,
    null: str = "uniform",
    null_variance: float | None = None,
) -> pd.Series:
    """r_wg (one item) or r_wg(j) (several items) per group, against a null variance.

    Parameters
    ----------
    items : DataFrame or Series
        One column per item (one column: r_wg; J > 1 columns: r_wg(j)), one row per respondent.
    groups : array-like
        The group of each respondent.
    scale_points : int, optional
        A, the number of answer options (5 for a 1-5 scale, 11 for 0-10);
        sets the null variance through ``null``.
    null : str
        The no-agreement distribution (:data:`NULLS`; see :func:`null_variance`).
    null_variance : float, optional
        The null variance itself (R multilevel's ``ranvar``); overrides
        ``scale_points`` and ``null``.

    Returns
    -------
    Series
        One value per group; NaN for groups with fewer than 2 members.

    Notes
    -----
    With null variance :math:`\\sigma^2_E` (uniform: :math:`(A^2 - 1)/12`) and
    within-group variance :math:`s^2` (ddof = 1), :math:`r_{wg} = 1 -
    s^2/\\sigma^2_E`. For J items with mean within-group item variance
    :math:`\\bar s^2`,

    .. math:: r_{wg(j)} = \\frac{J(1 - \\bar s^2/\\sigma^2_E)}
                               {J(1 - \\bar s^2/\\sigma^2_E) + \\bar s^2/\\sigma^2_E}

    When the observed variance exceeds the null variance the index is
    negative (or, for r_wg(j), can exceed 1); as in R multilevel's ``rwg`` and
    ``rwg.j`` the observed variance is truncated to the null variance, giving
    0 (no agreement; James, Demaree & Wolf 1984; LeBreton & Senter 2008, Q. 7).
    Reproduces R multilevel 2.7's ``rwg`` / ``rwg.j`` (``tests/test_agreement.py``).

    References
    ----------
    James, L. R., Demaree, R. G., & Wolf, G. (1984). Estimating within-group
    interrater reliability with and without response bias. Journal of Applied
    Psychology, 69, 85-98.
    LeBreton, J. M., & Senter, J. L. (2008). Organizational Research Methods, 11, 815-852.
    Bliese, P. D. (2022). multilevel: Multilevel Functions. R package (``rwg``, ``rwg.j``).

    Examples
    --------
    >>> rwg(pd.Series([4, 5, 4, 2, 2, 3]), list("aaabbb"), 5).round(4).tolist()
    [0.8333, 0.8333]
    >>> rwg(pd.Series([4, 5, 4, 2, 2, 3]), list("aaabbb"), null_variance=1.34).round(4).tolist()
    [0.7512, 0.7512]
    """
    frame = items.to_frame() if isinstance(items, pd.Series) else items
    if null_variance is None:
        if scale_points is None:
            raise ValueError("agreement: rwg needs scale_points (with null=) or null_variance")
        sigma2 = null_variance_of(scale_points, null)
    else:
        sigma2 = _check_null_variance(null_variance, "rwg")
    j = frame.shape[1]
    var = frame.reset_index(drop=True).groupby(np.asarray(groups, dtype=object)).var(ddof=1)
    ratio = var.mean(axis=1) / sigma2
    r = 1 - ratio if j == 1 else j * (1 - ratio) / (j * (1 - ratio) + ratio)
    r = r.where(ratio <= 1, 0.0)  # observed variance above the null: no agreement
    return r.where(ratio.notna()).rename("rwg" if j == 1 else "rwg_j")


null_variance_of = null_variance  # the function, under a name the ``null_variance=`` arguments do not shadow


def _check_null_variance(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) or v <= 0:
        raise ValueError(f"agreement: null_variance for {name!r} must be a positive number (e.g. 2.0 for a uniform 5-point null), got {v!r}")
    return float(v)


def _reading(icc2: float, rwg_mean: float) -> tuple[str, str]:
    """(aggregation verdict, one-sentence reading) from ICC(2) and mean r_wg."""
    if not (np.isfinite(icc2) and np.isfinite(rwg_mean)):
        return "undetermined", "ICC(2) or r_wg could not be estimated"
    rel, agr = icc2 >= ICC2_BAR, rwg_mean >= RWG_BAR
    nums = f"ICC(2) = {icc2:.2f}, mean r_wg = {rwg_mean:.2f}"
    if rel and agr:
        return "supported", f"{nums}: members agree and group means are reliable; aggregation is supported"
    if rel:
        return ("reliable means, members disagree",
                f"{nums}: group means are reliable but members disagree (r_wg < {RWG_BAR:.2f}); groups differ on "
                "average, yet a group mean does not describe a view its members share")
    if agr:
        return ("members agree, unreliable means",
                f"{nums}: members agree but group means are unreliable (ICC(2) < {ICC2_BAR:.2f}); groups are too "
                "small or too alike to tell apart")
    return "not supported", f"{nums}: members disagree and group means are unreliable; do not aggregate"


def _composition(group: str, wave: str | None, w: Any, person: str | None, max_per_person: int | None) -> str:
    if isinstance(w, (float, np.floating)) and float(w).is_integer():
        w = int(w)
    if wave is not None:
        return (f"person in {group} within {wave} {w}: one answer per person in this {wave}, each person in the "
                f"{group} they belong to (direct consensus)")
    if person is not None and max_per_person and max_per_person > 1:
        return (f"answers pooled over waves: the same {person} counted up to {max_per_person} times, so k and "
                f"ICC(2) overstate the information in a {group} mean; pass wave= to compute per wave")
    if person is not None:
        return f"one answer per {person} in its {group} (direct consensus)"
    return f"each row taken as one person's answer in its {group} (no person column checked; pass person=)"


def agreement(
    df: pd.DataFrame,
    group: str,
    values: str | Sequence[str] = (),
    scale_points: int | Mapping[str, int] = 5,
    items: Mapping[str, Sequence[str]] | None = None,
    wave: str | None = None,
    person: str | None = None,
    null: str | Sequence[str] = "uniform",
    null_variance: float | Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Agreement and reliability statistics that justify aggregating answers to groups, per wave.

    Parameters
    ----------
    df : DataFrame
        One row per answer (e.g. EX answers with their ``team_id`` and ``wave``).
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
    wave : str, optional
        Wave column: every statistic is computed within each wave (one row
        per wave), so no person counts twice. Without it the rows are pooled,
        and the ``composition`` column says so when ``person`` shows repeats.
    person : str, optional
        Person column (``employee_id``). Checked: with ``wave``, a person
        answers at most once per wave; without, repeats are counted and
        reported in ``composition``.
    null : str or list of str
        No-agreement distribution(s) for r_wg (:data:`NULLS`): ``"uniform"``
        (default) or the skewed, triangular and normal nulls of LeBreton &
        Senter (2008, Table 3). A list gives one row per null.
    null_variance : float or dict, optional
        The null variance itself (R multilevel's ``ranvar``), for all values or
        per value name; overrides ``null`` (``null`` column "given").

    Returns
    -------
    DataFrame
        One row per (wave,) value and null: ``[wave] value null null_variance
        icc1 icc2 rwg_mean rwg_median aggregation reading n_groups
        mean_group_size F p k msb msw df_between df_within rwg_n_groups n
        n_missing composition``. ``aggregation`` is "supported", "reliable
        means, members disagree", "members agree, unreliable means" or "not
        supported" (ICC(2) and mean r_wg against .70); ``reading`` says the
        same in a sentence with the numbers, so a report can state a
        disagreement between ICC(2) and r_wg. ``composition`` states the
        composition model (see Notes).

    Raises
    ------
    ValueError
        The group, wave, person or a value column is missing, a value column
        is not numeric, values span more points than ``scale_points``, fewer
        than 2 groups have answers (in a wave), no group has 2 answers, a
        person answers twice in one wave, an unknown null, or a bad
        ``null_variance``.

    Notes
    -----
    *Composition model.* With ``wave``, each wave is a separate
    person-in-group design: person i answers once in wave w, in group g, and
    the group mean of wave w is the aggregate (direct consensus; Chan 1998).
    ICC(1) and ICC(2) are those of the one-way ANOVA of wave w's answers on
    the groups; k is the wave's (adjusted) group size. Pooling waves of the
    same people treats repeated answers of one person as different members,
    so k and ICC(2) overstate the reliability of a group mean: on
    ``data/sample`` the team ICC(2) of eSat is .88 pooled (k = 42.6) but
    .42-.55 per wave.

    ICC(1) = (MSB - MSW) / (MSB + (k - 1) MSW) and ICC(2) = (MSB - MSW) / MSB,
    with k the adjusted mean group size (N - sum n_g^2 / N) / (G - 1)
    (:func:`icc_oneway`). r_wg = 1 - s^2 / sigma_E^2 (and r_wg(j) for
    multi-item scales) per group, truncated to 0 when the observed variance
    exceeds the null's, summarised by mean and median (:func:`rwg`).

    Thresholds in common use: ICC(1) > .05-.10; ICC(2) > .70; r_wg > .70
    (LeBreton & Senter 2008; Bliese 2000). They are conventions, not tests. A
    high ICC(2) with a low r_wg means groups differ on average while their
    members disagree; a low ICC(2) with a high r_wg usually means small
    groups or little difference between groups.

    Checked against a hand-computed one-way ANOVA, pingouin's
    ``intraclass_corr`` (ICC(1,1), ICC(1,k)), ``scipy.stats.f_oneway``, and
    R multilevel 2.7 (``rwg`` and ``rwg.j`` with ``ranvar``; ``ICC1`` /
    ``ICC2`` on balanced groups: its ICC1 uses the mean group size N/G where
    this uses the adjusted k, which differ for unbalanced groups); see
    ``tests/test_agreement.py``.

    References
    ----------
    Bliese, P. D. (2000). Within-group agreement, non-independence, and
    reliability. In K. J. Klein & S. W. J. Kozlowski (Eds.), Multilevel theory,
    research, and methods in organizations (pp. 349-381). Jossey-Bass.
    Chan, D. (1998). Functional relations among constructs in the same
    content domain at different levels of analysis: A typology of
    composition models. Journal of Applied Psychology, 83, 234-246.
    James, L. R., Demaree, R. G., & Wolf, G. (1984). Journal of Applied
    Psychology, 69, 85-98.
    LeBreton, J. M., & Senter, J. L. (2008). Answers to 20 questions about
    interrater reliability and interrater agreement. Organizational Research
    Methods, 11, 815-852.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"team": list("aaabbbccc"), "esat": [4, 5, 4, 2, 2, 3, 3, 4, 3]})
    >>> agreement(df, "team", "esat")[["icc1", "icc2", "rwg_mean", "aggregation"]].round(3).to_dict("records")
    [{'icc1': 0.727, 'icc2': 0.889, 'rwg_mean': 0.833, 'aggregation': 'supported'}]
    >>> agreement(df, "team", "esat", null_variance=2.0)["null"].item()
    'given'
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"agreement: df must be a DataFrame, got {type(df).__name__}")
    values = [values] if isinstance(values, str) else list(values)
    items = {name: [cols] if isinstance(cols, str) else list(cols) for name, cols in dict(items or {}).items()}
    if not values and not items:
        raise ValueError("agreement: name at least one value column (values=...) or multi-item scale (items=...)")
    for role, col in (("group", group), ("wave", wave), ("person", person)):
        if col is not None and col not in df.columns:
            raise ValueError(f"agreement: {role} column {col!r} not found; available columns: {list(df.columns)}")
    item_cols = [c for cols in items.values() for c in cols]
    missing = [c for c in dict.fromkeys(values + item_cols) if c not in df.columns]
    if missing:
        raise ValueError(f"agreement: value column(s) {missing} not found; available columns: {list(df.columns)}")
    empty = [name for name, cols in items.items() if not cols]
    if empty:
        raise ValueError(f"agreement: multi-item scale(s) {empty} list no item columns")
    nulls = [null] if isinstance(null, str) else list(null)
    bad = [n for n in nulls if n not in NULLS]
    if bad or not nulls:
        raise ValueError(f"agreement: null must be one or more of {list(NULLS)}, got {null!r}")
    num = pd.DataFrame({c: _numeric(df, c) for c in dict.fromkeys(values + item_cols)}, index=df.index)

    def points(name: str) -> int:
        a = scale_points.get(name, 5) if isinstance(scale_points, Mapping) else scale_points
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 2:
            raise ValueError(f"agreement: scale_points for {name!r} must be a whole number >= 2, got {a!r}")
        return int(a)

    def null_vars(name: str, a: int) -> list[tuple[str, float]]:
        if null_variance is None:
            return [(n, null_variance_of(a, n)) for n in nulls]
        v = null_variance.get(name) if isinstance(null_variance, Mapping) else null_variance
        if v is None:
            return [(n, null_variance_of(a, n)) for n in nulls]
        return [("given", _check_null_variance(v, name))]

    if person is not None and wave is not None:
        dup = df.duplicated([wave, person], keep=False) & df[person].notna() & df[wave].notna()
        if dup.any():
            rows = df.index[dup]
            raise ValueError(
                f"agreement: {int(dup.sum())} rows repeat a {person!r} within one {wave!r} (e.g. rows "
                f"{', '.join(str(r) for r in rows[:4])}); a person answers at most once per wave"
            )
    waves = [None] if wave is None else sorted(df[wave].dropna().unique())
    rows_out = []
    for w in waves:
        in_wave = pd.Series(True, index=df.index) if w is None else (df[wave] == w)
        max_rep = None
        if person is not None and w is None:
            counts = df.loc[in_wave & df[person].notna(), person].value_counts()
            max_rep = int(counts.max()) if len(counts) else None
        for name, cols in [(v, [v]) for v in values] + list(items.items()):
            a = points(name)
            keep = in_wave & df[group].notna() & num[cols].notna().all(axis=1)
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
            where = f" (group column {group!r}, value {name!r}" + (f", {wave} {w})" if w is not None else ")")
            try:
                icc = icc_oneway(d.mean(axis=1), g)
            except ValueError as err:
                raise ValueError(f"{err}{where}") from None
            sizes = g.value_counts()
            for null_name, sigma2 in null_vars(name, a):
                r = rwg(d, g, null_variance=sigma2)
                verdict, reading = _reading(icc["icc2"], float(r.mean()))
                rows_out.append(
                    {
                        **({wave: w} if wave is not None else {}),
                        "value": name,
                        "null": null_name,
                        "null_variance": sigma2,
                        "icc1": icc["icc1"],
                        "icc2": icc["icc2"],
                        "rwg_mean": float(r.mean()),
                        "rwg_median": float(r.median()),
                        "aggregation": verdict,
                        "reading": reading,
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
                        "n_missing": int((in_wave & ~keep).sum()),
                        "composition": _composition(group, wave, w, person, max_rep),
                    }
                )
    return pd.DataFrame(rows_out)


def reliability(
    df: pd.DataFrame,
    unit: str = "employee_id",
    value: str | Sequence[str] = "csat",
    wave: str | None = None,
) -> pd.DataFrame:
    """Reliability of unit means (e.g. agent-wave CX means): ICC(1), ICC(2) and answers per unit, per wave.

    Parameters
    ----------
    df : DataFrame
        One row per answer (e.g. CX answers with the ``employee_id`` of the
        agent who handled the rated interaction and the ``wave`` period).
    unit : str
        The unit whose mean is used downstream (default ``"employee_id"``: the agent).
    value : str or list of str
        Answer column(s) (``"csat"``, ``"nps"``, ``"ces"``).
    wave : str, optional
        Wave (period) column: one row per wave, the reliability of that
        wave's unit means (the agent-wave means a linked panel uses).

    Returns
    -------
    DataFrame
        One row per (wave,) value: ``[wave] value unit icc1 icc2 k
        mean_answers n_units n F p msb msw answers_for_070 reading``.
        ``icc2`` is the reliability of a unit's mean (Spearman-Brown of
        ``icc1`` at k answers), ``mean_answers`` the mean number of answers
        per unit (N / G), ``answers_for_070`` the answers per unit an ICC(2)
        of .70 would need.

    Raises
    ------
    ValueError
        A missing or non-numeric column, fewer than 2 units, or no unit with
        2 answers (in a wave).

    Notes
    -----
    One-way random-effects ANOVA of the answers on the units (see
    :func:`icc_oneway`): ICC(1) = (MSB - MSW) / (MSB + (k - 1) MSW), ICC(2)
    = (MSB - MSW) / MSB = k ICC(1) / (1 + (k - 1) ICC(1)) with k the adjusted
    mean number of answers per unit. The answers needed for a reliability of
    .70 follow from Spearman-Brown: :math:`m = .7 (1 - ICC_1) / (.3\\,ICC_1)`.
    An agent-wave CX mean with ICC(2) of .5 has as much error variance as
    signal: relations estimated with it are attenuated.

    Checked against :func:`icc_oneway` and, on data with a known agent
    effect, against the ICC(1) the data were simulated with
    (``tests/test_agreement.py``).

    References
    ----------
    Bliese, P. D. (2000). Within-group agreement, non-independence, and
    reliability. In Klein & Kozlowski (Eds.), Multilevel theory, research,
    and methods in organizations (pp. 349-381). Jossey-Bass.
    Shrout, P. E., & Fleiss, J. L. (1979). Intraclass correlations: Uses in
    assessing rater reliability. Psychological Bulletin, 86, 420-428.

    Examples
    --------
    >>> df = pd.DataFrame({"employee_id": list("aaabbbccc"), "csat": [4, 5, 4, 2, 2, 3, 3, 4, 3]})
    >>> reliability(df, value="csat")[["icc1", "icc2", "mean_answers", "n_units"]].round(3).to_dict("records")
    [{'icc1': 0.727, 'icc2': 0.889, 'mean_answers': 3.0, 'n_units': 3}]
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"reliability: df must be a DataFrame, got {type(df).__name__}")
    values = [value] if isinstance(value, str) else list(value)
    for role, col in [("unit", unit), ("wave", wave)] + [("value", v) for v in values]:
        if col is not None and col not in df.columns:
            raise ValueError(f"reliability: {role} column {col!r} not found; available columns: {list(df.columns)}")
    waves = [None] if wave is None else sorted(df[wave].dropna().unique())
    rows = []
    for w in waves:
        sub = df if w is None else df[df[wave] == w]
        for v in values:
            x = _numeric(sub, v)
            keep = x.notna() & sub[unit].notna()
            where = f"(unit column {unit!r}, value {v!r}" + (f", {wave} {w})" if w is not None else ")")
            sizes = sub.loc[keep, unit].value_counts()
            if len(sizes) < 2:
                raise ValueError(f"reliability: need at least 2 units with answers, found {len(sizes)} {where}")
            if (sizes < 2).all():
                raise ValueError(f"reliability: every unit has a single answer, so the within-unit variance is undefined {where}")
            icc = icc_oneway(x[keep], sub.loc[keep, unit])
            rows.append(_reliability_row(icc, v, unit, wave, w))
    return pd.DataFrame(rows)


def _reliability_row(icc: Mapping[str, float], v: str, unit: str, wave: str | None, w: Any) -> dict[str, Any]:
    """One row of :func:`reliability` / :func:`reliability_from_sums` from a one-way ANOVA."""
    i1, i2 = icc["icc1"], icc["icc2"]
    need = 0.7 * (1 - i1) / (0.3 * i1) if i1 > 0 else np.inf
    level = "reliable" if i2 >= ICC2_BAR else "unreliable"
    return {
        **({wave: w} if wave is not None else {}),
        "value": v, "unit": unit, "icc1": i1, "icc2": i2, "k": icc["k"],
        "mean_answers": icc["n"] / icc["n_groups"], "n_units": int(icc["n_groups"]), "n": int(icc["n"]),
        "F": icc["F"], "p": icc["p"], "msb": icc["msb"], "msw": icc["msw"], "answers_for_070": need,
        "reading": (f"{unit} means of {v} are {level} (ICC(2) = {i2:.2f} at {icc['n'] / icc['n_groups']:.1f} "
                    f"answers per {unit}; about {need:.0f} answers would give .70)"
                    if np.isfinite(need) else f"{unit} means of {v} carry no {unit} signal (ICC(1) <= 0)"),
    }


def reliability_from_sums(
    stats: pd.DataFrame,
    unit: str = "employee_id",
    value: str | Sequence[str] = "csat",
    wave: str | None = "wave",
) -> pd.DataFrame:
    """:func:`reliability` from per-unit sufficient statistics (no answer is read into memory).

    Parameters
    ----------
    stats : DataFrame
        One row per unit (and wave): for each value ``v`` the columns
        ``<v>_n`` (answers), ``<v>_sum`` and ``<v>_sumsq`` (sum of squared
        answers), as :meth:`cxex_lab.workspace.Workspace.cx_cluster_stats`
        returns them with ``cluster="employee_id"`` (and ``period="wave"``).
        Rows repeating a unit (within a wave) are added up.
    unit : str
        The unit column (default the agent, ``"employee_id"``).
    value : str or list of str
        Answer item(s) (``"csat"``, ``"nps"``, ``"ces"``).
    wave : str or None
        Wave (period) column: one row per wave (None: one row overall).

    Returns
    -------
    DataFrame
        The columns of :func:`reliability` (``[wave] value unit icc1 icc2 k
        mean_answers n_units n F p msb msw answers_for_070 reading``), equal to
        :func:`reliability` on the answers themselves
        (``tests/test_findings_linkage.py``).

    Raises
    ------
    ValueError
        A missing column, fewer than 2 units with answers, or no unit with 2
        answers (in a wave).

    Examples
    --------
    >>> st = pd.DataFrame({"employee_id": list("abc"), "csat_n": [3, 3, 3], "csat_sum": [13.0, 7.0, 10.0],
    ...                    "csat_sumsq": [57.0, 17.0, 34.0]})
    >>> reliability_from_sums(st, wave=None)[["icc1", "icc2", "mean_answers", "n_units"]].round(3).to_dict("records")
    [{'icc1': 0.727, 'icc2': 0.889, 'mean_answers': 3.0, 'n_units': 3}]
    """
    if not isinstance(stats, pd.DataFrame):
        raise ValueError(f"reliability_from_sums: stats must be a DataFrame, got {type(stats).__name__}")
    values = [value] if isinstance(value, str) else list(value)
    need_cols = [unit] + ([wave] if wave is not None else []) + [f"{v}_{s}" for v in values for s in ("n", "sum", "sumsq")]
    missing = [c for c in need_cols if c not in stats.columns]
    if missing:
        raise ValueError(f"reliability_from_sums: column(s) {missing} not found; available columns: "
                         f"{list(stats.columns)} (per value v: v_n, v_sum, v_sumsq)")
    keys = [wave, unit] if wave is not None else [unit]
    d = stats[stats[unit].notna()]
    d = d.groupby(keys, sort=True, dropna=True)[need_cols[len(keys):]].sum().reset_index()
    waves = [None] if wave is None else sorted(d[wave].unique())
    rows = []
    for w in waves:
        sub = d if w is None else d[d[wave] == w]
        for v in values:
            where = f"(unit column {unit!r}, value {v!r}" + (f", {wave} {w})" if w is not None else ")")
            cnt = sub[f"{v}_n"].to_numpy(dtype="float64")
            units = int((cnt > 0).sum())
            if units < 2:
                raise ValueError(f"reliability: need at least 2 units with answers, found {units} {where}")
            if (cnt[cnt > 0] < 2).all():
                raise ValueError(f"reliability: every unit has a single answer, so the within-unit variance is undefined {where}")
            icc = icc_from_sums(cnt, sub[f"{v}_sum"], sub[f"{v}_sumsq"])
            rows.append(_reliability_row(icc, v, unit, wave, w))
    return pd.DataFrame(rows)
