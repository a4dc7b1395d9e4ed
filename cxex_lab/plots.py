"""Figures for the notebooks. Each function draws a tidy table it is given; none
loads data or fits a model."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["forest", "mirror_plot"]


def forest(
    df: pd.DataFrame,
    term: str = "term",
    estimate: str = "estimate",
    ci: tuple[str, str] = ("ci_low", "ci_high"),
    truth: Mapping[str, float] | None = None,
    hue: str | None = None,
    ax: plt.Axes | None = None,
    title: str | None = None,
    xlabel: str = "estimate (95% CI)",
) -> plt.Axes:
    """Horizontal estimate-and-interval plot, with the true values as red marks.

    Parameters
    ----------
    df : DataFrame
        Tidy estimates: one row per term (and per ``hue`` level).
    truth : mapping, optional
        ``{term: true value}``, drawn as red ``|`` marks (simulated data).
    hue : str, optional
        Column whose levels are drawn side by side (e.g. the estimator).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * df[term].nunique() + 1.2))
    terms = list(dict.fromkeys(df[term]))
    levels = list(dict.fromkeys(df[hue])) if hue else [None]
    width = 0.7 / max(1, len(levels))
    for j, level in enumerate(levels):
        sub = df if level is None else df[df[hue] == level]
        pos = np.array([terms.index(t) for t in sub[term]]) + (j - (len(levels) - 1) / 2) * width
        err = np.vstack([sub[estimate] - sub[ci[0]], sub[ci[1]] - sub[estimate]])
        ax.errorbar(sub[estimate], pos, xerr=err, fmt="o", capsize=3, label=level)
    if truth:
        for i, t in enumerate(terms):
            if t in truth:
                ax.plot([truth[t]], [i], marker="|", color="crimson", markersize=18, mew=2,
                        label="truth" if i == 0 else None)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(terms)), terms)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    if hue or truth:
        ax.legend(loc="best", fontsize="small")
    return ax


def mirror_plot(df: pd.DataFrame, x: str, estimate: str = "estimate", title: str | None = None) -> plt.Figure:
    """EX beside CX on the three mirror dimensions, one panel per dimension.

    ``df`` is a :func:`cxex_lab.metrics.mirror` table with columns ``dimension``,
    ``side``, ``metric``, ``estimate``, ``ci_low``, ``ci_high`` and the grouping
    column ``x``. Suppressed (missing) values are simply not drawn.
    """
    dims = [d for d in ("Ease", "Recommendation", "Satisfaction") if d in set(df["dimension"])]
    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.6), squeeze=False)
    for ax, dim in zip(axes[0], dims):
        sub = df[df["dimension"] == dim]
        cats = list(dict.fromkeys(sub[x].astype(str)))
        for k, (side, color) in enumerate((("EX", "tab:blue"), ("CX", "tab:orange"))):
            s = sub[sub["side"] == side].dropna(subset=[estimate])
            pos = np.array([cats.index(str(v)) for v in s[x]]) + (k - 0.5) * 0.3
            err = np.vstack([s[estimate] - s["ci_low"], s["ci_high"] - s[estimate]])
            label = f"{side}: {s['metric'].iloc[0]}" if len(s) else side
            ax.errorbar(pos, s[estimate], yerr=err, fmt="o", capsize=3, color=color, label=label)
        ax.set_xticks(range(len(cats)), cats, rotation=45 if len(cats) > 6 else 0)
        ax.set_title(dim)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
