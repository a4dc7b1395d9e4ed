"""Figures for the reports. Each function draws a tidy table it is given (none
loads data or fits a model) and returns a :class:`Chart`: the matplotlib figure
plus **alt text** describing it in words.

One style for all (:data:`STYLE`), units on every value axis, and a forest plot
that never puts two units on one axis (one panel per unit).

In a notebook::

    from cxex_lab import plots
    from cxex_lab.present import show_figure

    show_figure(plots.forest(table, title="..."))   # or just `plots.forest(...)` as a cell's last line

A :class:`Chart` displays itself as ``<figure><img alt=...>`` with the PNG
embedded, so the rendered report needs no external file and every image has
alt text.

================================  ===========================================
function                          draws (report)
================================  ===========================================
:func:`response_rates`            EX / CX response rate per wave (01)
:func:`mirror`                    EX beside CX on the three mirror dimensions,
                                  by site or wave (02)
:func:`company_vs_linked`         company-level points vs the linked scatter (03)
:func:`forest`                    estimates with intervals, one panel per unit,
                                  optional truth marks and hue (04-07)
:func:`power_curves`              power by employees, one panel per number of
                                  waves, one line per effect size (08)
:func:`carry_over_by_gap`         the carry-over from one call to the next by
                                  the time between them (07)
:func:`power_by_effect`           power at one design against the effect size in
                                  survey units (08)
:func:`sensitivity_contours`      the estimate adjusted for hypothetical
                                  confounders, with benchmark points (08)
:func:`agreement_by_wave`         within-team agreement (ICC, rwg) per wave (03)
:func:`linked_views`              company-level points beside the linked
                                  answers (03)
:func:`drivers`                   touchpoint weights with the random-reference
                                  band (04)
================================  ===========================================
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd

__all__ = ["STYLE", "COLORS", "Chart", "style", "forest", "mirror", "mirror_plot", "response_rates",
           "company_vs_linked", "power_curves", "carry_over_by_gap", "power_by_effect", "sensitivity_contours",
           "agreement_by_wave", "linked_views", "drivers"]

#: The house style (matplotlib rcParams) every figure is drawn and saved with.
STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": 10.5,
    "axes.titlesize": 11.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e1e4e8",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "axes.prop_cycle": mpl.cycler(color=["#1f6feb", "#d4722a", "#2da44e", "#8250df", "#bf3989", "#6e7781"]),
}

#: Colours with a meaning.
COLORS: dict[str, str] = {"EX": "#1f6feb", "CX": "#d4722a", "truth": "#cf222e", "reference": "#6e7781"}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The house style for the duration of a ``with`` block."""
    with mpl.rc_context(STYLE):
        yield


@dataclass
class Chart:
    """A figure with its alt text.

    Attributes
    ----------
    fig : matplotlib.figure.Figure
    alt : str
        What the figure shows, in words (for screen readers and for the HTML
        ``alt`` attribute).
    """

    fig: Any
    alt: str

    @property
    def axes(self) -> list:
        return list(self.fig.axes)

    def png(self, dpi: int = 110) -> bytes:
        """The figure as PNG bytes (house style)."""
        import io

        buf = io.BytesIO()
        with style():
            self.fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return buf.getvalue()

    def savefig(self, path: Any, **kw: Any) -> None:
        with style():
            self.fig.savefig(path, **({"bbox_inches": "tight"} | kw))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from cxex_lab.present import figure_html

        with style():
            html = figure_html(self.fig, self.alt)
        self.close()
        return {"text/html": html, "text/plain": self.alt}

    def close(self) -> None:
        """Close the figure in pyplot (the inline backend then does not show it again)."""
        import matplotlib.pyplot as plt

        plt.close(self.fig)


def _figure(**kw: Any) -> Any:
    # through pyplot, so a notebook's plt.show() still shows a chart it did not display
    import matplotlib.pyplot as plt

    return plt.figure(**kw)


def _fmt(x: float) -> str:
    from cxex_lab.present import decimals_for, fmt_number

    return fmt_number(x, decimals_for(x))


# --------------------------------------------------------------------------- forest

def forest(
    df: pd.DataFrame,
    *,
    term: str = "term",
    estimate: str = "estimate",
    ci: tuple[str, str] = ("ci_low", "ci_high"),
    unit: str = "unit",
    xlabel: str | None = None,
    truth: Mapping[str, float] | str | None = None,
    hue: str | None = None,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
    alt: str | None = None,
    zero: bool = True,
    width: float = 7.5,
) -> Chart:
    """Estimates with their intervals, one horizontal line each; one panel per unit.

    Parameters
    ----------
    df : DataFrame
        Tidy estimates: one row per term (and per ``hue`` level).
    unit : str
        Column with each estimate's unit; every unit gets its own panel and
        x axis, so two units never share an axis. Without such a column, give
        ``xlabel`` (the one unit of all rows).
    truth : mapping or str, optional
        ``{term: true value}`` or the name of a column holding it, drawn as red
        marks (simulated data).
    hue : str, optional
        Column whose levels are drawn side by side (e.g. the model).
    labels : mapping, optional
        Readable names of the terms (``{"esat->csat": "eSat -> next CSAT"}``).
    zero : bool
        Draw the zero line where it is inside the panel's range.

    Raises
    ------
    ValueError
        When a required column is missing.

    Warns
    -----
    UserWarning
        When neither a unit column nor ``xlabel`` says what unit the estimates
        are in (the axis then reads "estimate (unit not stated)").
    """
    missing = [c for c in (term, estimate, *ci) if c not in df.columns]
    if missing:
        raise ValueError(f"forest: column(s) {missing} missing; the table has {list(df.columns)}")
    data = df.copy()
    if unit in data.columns:
        data["_unit"] = data[unit].astype(str)
    elif xlabel:
        data["_unit"] = xlabel
    else:
        # not an error, so that older notebooks keep running; the warning reaches the notebook's
        # stderr, and the report runner refuses a report that shows one
        warnings.warn("forest: the estimates' unit is not stated; give a 'unit' column (one panel per unit) or "
                      "xlabel='CSAT points per eSat point'", UserWarning, stacklevel=2)
        data["_unit"] = "estimate (unit not stated)"
    labels = dict(labels or {})
    data["_label"] = data[term].map(lambda t: labels.get(t, str(t)))
    truth_map: dict[str, float] = {}
    if isinstance(truth, str):
        truth_map = {t: v for t, v in zip(data[term], data[truth]) if pd.notna(v)}
    elif truth:
        truth_map = dict(truth)
    units = list(dict.fromkeys(data["_unit"]))
    n_terms = [data.loc[data["_unit"] == u, "_label"].nunique() for u in units]
    levels = list(dict.fromkeys(data[hue])) if hue else [None]
    with style():
        fig = _figure(figsize=(width, 0.42 * sum(n_terms) + 0.95 * len(units) + (0.4 if title else 0.1)),
                      layout="constrained")
        axes = fig.subplots(len(units), 1, squeeze=False, gridspec_kw={"height_ratios": [max(1, n) for n in n_terms]})[:, 0]
        describe = []
        for ax, u in zip(axes, units):
            sub = data[data["_unit"] == u]
            terms = list(dict.fromkeys(sub["_label"]))
            step = 0.7 / max(1, len(levels))
            for j, level in enumerate(levels):
                part = sub if level is None else sub[sub[hue] == level]
                pos = np.array([terms.index(t) for t in part["_label"]]) + (j - (len(levels) - 1) / 2) * step
                est = part[estimate].astype(float).to_numpy()
                lo = part[ci[0]].astype(float).to_numpy()
                hi = part[ci[1]].astype(float).to_numpy()
                err = np.vstack([np.where(np.isnan(lo), 0, est - lo), np.where(np.isnan(hi), 0, hi - est)])
                ax.errorbar(est, pos, xerr=err, fmt="o", capsize=3, ms=5, lw=1.4, label=None if level is None else str(level))
            for i, (t_raw, t_lab) in enumerate(dict.fromkeys(zip(sub[term], sub["_label"]))):
                if t_raw in truth_map:
                    ax.plot([truth_map[t_raw]], [terms.index(t_lab)], marker="|", color=COLORS["truth"], ms=16, mew=2.2,
                            label="truth" if not any(h.get_label() == "truth" for h in ax.get_lines()) else None)
            if zero:
                lo_all = np.nanmin(sub[[estimate, *ci]].astype(float).to_numpy())
                hi_all = np.nanmax(sub[[estimate, *ci]].astype(float).to_numpy())
                if lo_all <= 0 <= hi_all:
                    ax.axvline(0, color=COLORS["reference"], lw=0.9)
            ax.set_yticks(range(len(terms)), terms)
            ax.set_ylim(len(terms) - 0.5, -0.5)
            ax.grid(axis="y", visible=False)
            ax.set_xlabel(u)
            if hue or truth_map:
                handles, labs = ax.get_legend_handles_labels()
                if handles:
                    ax.legend(loc="best")
            vals = sub[estimate].astype(float)
            top = sub.iloc[int(np.nanargmax(vals.to_numpy()))] if vals.notna().any() else None
            describe.append(
                f"{len(sub)} estimate{'s' if len(sub) != 1 else ''} in {u}"
                + (f", from {_fmt(vals.min())} to {_fmt(vals.max())}; highest: {top['_label']} "
                   f"{_fmt(top[estimate])}" if top is not None else ""))
        if title:
            fig.suptitle(title, fontsize=STYLE["axes.titlesize"], fontweight="bold")
    text = alt or (f"Forest plot{': ' + title if title else ''}. Each line is an estimate with its 95% interval"
                   f"{' (red marks: the true values)' if truth_map else ''}. " + ". ".join(describe) + ".")
    return Chart(fig, text)


# --------------------------------------------------------------------------- mirror

_MIRROR_AXIS = {"mean": "Mean score (1-7 scale)", "net score": "Net score (-100 to 100)",
                "top-box %": "Top-2-box share (%)"}


def mirror(df: pd.DataFrame, x: str, *, estimate: str = "estimate", title: str | None = None,
           xlabel: str | None = None, alt: str | None = None) -> Chart:
    """EX beside CX on the three mirror dimensions, one panel per dimension.

    ``df`` is a :func:`cxex_lab.metrics.mirror` table (columns ``dimension``,
    ``side``, ``metric``, ``statistic``, ``estimate``, ``ci_low``, ``ci_high``
    and the grouping column ``x``). Each panel's y axis is in that dimension's
    unit (mean on 1-7, net score -100..100, top-2-box %); EX is blue, CX orange.
    Suppressed (missing) values are not drawn and the alt text says how many.
    """
    _check_columns(df, ("dimension", "side", "metric", estimate, "ci_low", "ci_high", x), "mirror")
    dims = [d for d in ("Ease", "Recommendation", "Satisfaction") if d in set(df["dimension"])]
    if not dims:
        raise ValueError(f"mirror: no Ease / Recommendation / Satisfaction rows in 'dimension' ({sorted(set(df['dimension']))})")
    with style():
        fig = _figure(figsize=(4.0 * len(dims), 3.6 + (0.3 if title else 0)), layout="constrained")
        axes = fig.subplots(1, len(dims), squeeze=False)[0]
        hidden = 0
        for ax, dim in zip(axes, dims):
            sub = df[df["dimension"] == dim]
            cats = list(dict.fromkeys(sub[x].astype(str)))
            for k, side in enumerate(("EX", "CX")):
                s_all = sub[sub["side"] == side]
                s = s_all.dropna(subset=[estimate])
                hidden += len(s_all) - len(s)
                pos = np.array([cats.index(str(v)) for v in s[x]]) + (k - 0.5) * 0.3
                err = np.vstack([s[estimate] - s["ci_low"], s["ci_high"] - s[estimate]])
                label = f"{side}: {s_all['metric'].iloc[0]}" if len(s_all) else side
                ax.errorbar(pos, s[estimate], yerr=err, fmt="o", capsize=3, ms=5, color=COLORS[side], label=label)
            ax.set_xticks(range(len(cats)), cats, rotation=45 if len(cats) > 6 else 0)
            stat = str(sub["statistic"].iloc[0]) if "statistic" in sub.columns and len(sub) else ""
            ax.set_ylabel(_MIRROR_AXIS.get(stat, stat or "estimate"))
            ax.set_xlabel(xlabel or {"site_id": "Site", "wave": "Survey wave"}.get(x, x))
            ax.set_title(dim)
            ax.legend(loc="best")
        if title:
            fig.suptitle(title, fontsize=STYLE["axes.titlesize"], fontweight="bold")
    text = alt or (f"{title or 'EX and CX side by side'}: for each of {', '.join(dims)}, the employee (EX, blue) and "
                   f"customer (CX, orange) score with 95% intervals by {xlabel or x}"
                   + (f"; {hidden} value(s) suppressed for privacy are not drawn" if hidden else "") + ".")
    return Chart(fig, text)


def mirror_plot(df: pd.DataFrame, x: str, estimate: str = "estimate", title: str | None = None) -> Chart:
    """Former name of :func:`mirror`."""
    return mirror(df, x, estimate=estimate, title=title)


# --------------------------------------------------------------------------- response rates

def response_rates(rates: pd.DataFrame, *, title: str | None = "Survey response rates, EX and CX",
                   alt: str | None = None) -> Chart:
    """Response rate per wave, EX and CX side by side (y in %).

    ``rates`` has ``side`` (EX/CX), ``wave`` and ``rate`` (0-1), as from
    :func:`cxex_lab.report.response_rates`. Wave 0 (interactions before the first
    EX wave) is left out.
    """
    _check_columns(rates, ("side", "wave", "rate"), "response_rates")
    r = rates[rates["wave"] > 0]
    waves = sorted(r["wave"].unique())
    with style():
        fig = _figure(figsize=(7.5, 3.4), layout="constrained")
        ax = fig.subplots()
        for k, side in enumerate(("EX", "CX")):
            s = r[r["side"] == side].set_index("wave").reindex(waves)
            ax.bar(np.arange(len(waves)) + (k - 0.5) * 0.38, 100 * s["rate"].astype(float), width=0.38,
                   color=COLORS[side], label=side)
        ax.set_xticks(range(len(waves)), [str(w) for w in waves])
        ax.set_xlabel("Survey wave (CX: the period the wave opens)")
        ax.set_ylabel("Response rate (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper right")
        if title:
            ax.set_title(title)
    desc = []
    for side in ("EX", "CX"):
        s = r[r["side"] == side]["rate"].astype(float)
        if len(s):
            desc.append(f"{side} {100 * s.min():.0f}% to {100 * s.max():.0f}%")
    text = alt or (f"Bar chart of survey response rates per wave: " + "; ".join(desc) + ".")
    return Chart(fig, text)


# --------------------------------------------------------------------------- company vs linked

def company_vs_linked(
    company: pd.DataFrame,
    linked: pd.DataFrame,
    *,
    x: str = "esat",
    y: str = "csat",
    xlabel: str = "eSat (1-5), preceding wave",
    ylabel: str = "Mean CSAT (1-5) of handled interactions",
    company_label: str = "Company level, one point per wave",
    linked_label: str = "Linked, one point per employee and wave",
    alt: str | None = None,
    seed: int = 0,
) -> Chart:
    """The naive company-level view beside the linked one, with the correlation of each.

    ``company`` has one row per period with the mean ``x`` and ``y``; ``linked``
    one row per linked unit (e.g. employee x wave). Linked points are jittered
    horizontally (survey answers are whole numbers); a least-squares line is drawn
    through them.
    """
    _check_columns(company, (x, y), "company_vs_linked (company)")
    _check_columns(linked, (x, y), "company_vs_linked (linked)")
    c = company.dropna(subset=[x, y])
    lk = linked.dropna(subset=[x, y])
    r_c = float(np.corrcoef(c[x], c[y])[0, 1]) if len(c) > 2 else float("nan")
    r_l = float(np.corrcoef(lk[x], lk[y])[0, 1]) if len(lk) > 2 else float("nan")
    rng = np.random.default_rng(seed)
    with style():
        fig = _figure(figsize=(9.5, 3.9), layout="constrained")
        a0, a1 = fig.subplots(1, 2)
        a0.scatter(c[x], c[y], color=COLORS["EX"], s=36)
        a0.set(title=f"{company_label} (r = {r_c:.2f})", xlabel=f"Mean {xlabel}", ylabel=ylabel)
        jitter = rng.uniform(-0.15, 0.15, len(lk))
        a1.scatter(lk[x] + jitter, lk[y], s=6, alpha=0.3, color=COLORS["EX"])
        if len(lk) > 2:
            slope, icept = np.polyfit(lk[x].astype(float), lk[y].astype(float), 1)
            xs = np.linspace(lk[x].min(), lk[x].max(), 50)
            a1.plot(xs, icept + slope * xs, color=COLORS["CX"], lw=2)
        a1.set(title=f"{linked_label} (r = {r_l:.2f})", xlabel=xlabel, ylabel=ylabel)
    text = alt or (f"Two scatter plots. Left: {company_label.lower()}, {len(c)} points, correlation {r_c:.2f}. "
                   f"Right: {linked_label.lower()}, {len(lk):,} points, correlation {r_l:.2f}.")
    return Chart(fig, text)


# --------------------------------------------------------------------------- power

def power_curves(grid: pd.DataFrame, *, target: float = 0.8, alpha: float = 0.05, alt: str | None = None,
                 title: str | None = None, x: str = "n_units", power: str = "power",
                 ci: tuple[str, str] = ("power_ci_low", "power_ci_high"),
                 effect_labels: Mapping[float, str] | None = None, observed: str | None = "effect_observed",
                 unit: str = "CSAT points per eSat point", mark: str | None = "this_study") -> Chart:
    """Power by number of employees, one panel per number of waves, one line per effect size.

    ``grid`` is a power table: ``x`` (employees: ``n_units`` of
    :func:`cxex_lab.models.power.riclpm_power`, ``n_employees`` of
    :func:`cxex_lab.models.power.power`), ``n_waves``, ``effect``, ``power``
    in 0-1 and optional interval columns ``ci``. The dashed line is the
    ``target`` power, the dotted one the false-positive rate ``alpha`` expected
    at effect 0. ``effect_labels`` names the lines; without them, when the
    table has an ``observed`` column (the mean observed slope of each cell),
    a line reads "0.10 <unit> (latent 0.25)". Rows where the boolean column
    ``mark`` is true (this study's design) are ringed.
    """
    _check_columns(grid, (x, "n_waves", "effect", power), "power_curves")
    labels = dict(effect_labels or {})
    if not labels and observed and observed in grid.columns:
        labels = {e: f"{g[observed].mean():.2f} {unit} (latent {e:g})" for e, g in grid.groupby("effect")}
    waves = sorted(grid["n_waves"].unique())
    effects = sorted(grid["effect"].unique())
    with style():
        fig = _figure(figsize=(min(3.6 * len(waves) + 0.6, 11), 3.6), layout="constrained")
        axes = fig.subplots(1, len(waves), squeeze=False, sharey=True)[0]
        for ax, w in zip(axes, waves):
            sub = grid[grid["n_waves"] == w]
            for e in effects:
                s = sub[sub["effect"] == e].sort_values(x)
                ax.plot(s[x], 100 * s[power], marker="o", label=labels.get(e, f"effect {e:g}"))
                if set(ci) <= set(s.columns):
                    ax.fill_between(s[x], 100 * s[ci[0]], 100 * s[ci[1]], alpha=0.15)
            ax.axhline(100 * target, ls="--", color=COLORS["reference"], lw=1)
            ax.axhline(100 * alpha, ls=":", color=COLORS["reference"], lw=1)
            if mark and mark in sub.columns and sub[mark].fillna(False).astype(bool).any():
                m = sub[sub[mark].fillna(False).astype(bool)]
                ax.plot(m[x], 100 * m[power], "o", mfc="none", mec=COLORS["truth"], ms=11, mew=1.5,
                        label="this study's design")
            ax.set(title=f"{w} waves", xlabel="Employees in the study", ylim=(0, 100))
        axes[0].set_ylabel("Power (% of simulated studies detecting it)")
        handles, labs = [], []
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labs:
                    handles.append(h)
                    labs.append(lab)
        fig.legend(handles, labs, loc="outside lower center", ncol=min(3, len(labs)))
        if title:
            fig.suptitle(title, fontsize=STYLE["axes.titlesize"], fontweight="bold")
    best = grid.sort_values(power, ascending=False).iloc[0] if len(grid) else None
    text = alt or (f"Power curves for {len(effects)} effect size(s) and {len(waves)} numbers of waves, "
                   f"employees from {grid[x].min()} to {grid[x].max()}; "
                   f"dashed line: {100 * target:.0f}% target, dotted: {100 * alpha:.0f}% false positives"
                   + (f"; highest power {100 * best[power]:.0f}% ({labels.get(best['effect'], f'effect {best.effect:g}')}, "
                      f"{best[x]} employees, {best['n_waves']} waves)." if best is not None else "."))
    return Chart(fig, text)


def power_by_effect(own: pd.DataFrame, *, effect: str = "effect_observed", power: str = "estimate",
                    ci: tuple[str, str] = ("ci_low", "ci_high"), latent: str | None = "effect",
                    unit: str = "CSAT points per eSat point", target: float = 0.8, alpha: float = 0.05,
                    observed: float | None = None, title: str | None = None, alt: str | None = None) -> Chart:
    """Power at one design against the size of the effect, in survey-scale units.

    ``own`` has one row per simulated effect: ``effect`` (the mean observed
    slope, x axis, in ``unit``), ``power`` (0-1) with its interval ``ci``, and
    optionally ``latent`` (the simulator's latent effect, written beside each
    point). The point at effect 0 is the false-positive rate (dotted line:
    ``alpha``); the dashed line is the ``target`` power; ``observed`` (the
    study's own estimate) is drawn as a vertical line.
    """
    _check_columns(own, (effect, power), "power_by_effect")
    d = own.sort_values(effect)
    xs = d[effect].astype(float).to_numpy()
    ys = 100 * d[power].astype(float).to_numpy()
    with style():
        fig = _figure(figsize=(7.2, 3.8), layout="constrained")
        ax = fig.subplots()
        if set(ci) <= set(d.columns):
            ax.fill_between(xs, 100 * d[ci[0]].astype(float), 100 * d[ci[1]].astype(float), alpha=0.18,
                            color=COLORS["CX"], lw=0)
        ax.plot(xs, ys, marker="o", color=COLORS["CX"], label="power (band: simulation interval)")
        if latent and latent in d.columns:
            for xv, yv, lv in zip(xs, ys, d[latent]):
                ax.annotate(f"{lv:g}", (xv, yv), xytext=(0, 7), textcoords="offset points", fontsize=8,
                            ha="center", color=COLORS["reference"])
        ax.axhline(100 * target, ls="--", color=COLORS["reference"], lw=1, label=f"{100 * target:.0f}% power")
        ax.axhline(100 * alpha, ls=":", color=COLORS["reference"], lw=1, label=f"{100 * alpha:.0f}% false alarms")
        if observed is not None and np.isfinite(observed):
            ax.axvline(abs(observed), color=COLORS["truth"], lw=1.2, label=f"this study's estimate ({_fmt(abs(observed))})")
        ax.set(xlabel=f"Size of the effect ({unit}; grey numbers: latent effect)",
               ylabel="Power (% of simulated studies)", ylim=(0, 105))
        ax.legend(loc="lower right")
        if title:
            ax.set_title(title)
    reach = d[d[power] >= target]
    text = alt or (f"Power against the effect size in {unit}, {len(d)} simulated effect sizes from {_fmt(xs.min())} "
                   f"to {_fmt(xs.max())}; at the smallest the power is {ys[0]:.0f}%"
                   + (f"; {100 * target:.0f}% power is reached at about {_fmt(float(reach[effect].iloc[0]))}"
                      if len(reach) else f"; {100 * target:.0f}% power is not reached")
                   + (f"; the study's estimate is {_fmt(abs(observed))}." if observed is not None else "."))
    return Chart(fig, text)


def sensitivity_contours(grid: pd.DataFrame, bounds: pd.DataFrame | None = None, *, estimate: str = "estimate",
                         rv: float | None = None, unit: str = "CSAT points per eSat point",
                         treatment: str = "last wave's eSat", outcome: str = "CSAT", title: str | None = None,
                         alt: str | None = None) -> Chart:
    """Cinelli & Hazlett's contour plot: the estimate adjusted for hypothetical confounders.

    ``grid`` is :func:`cxex_lab.models.sensitivity.adjusted_grid` output
    (``r2dz_x``, ``r2yz_dx`` in 0-1, ``estimate``). The x axis is how much of
    the treatment's remaining variance a confounder explains, the y axis how
    much of the outcome's, both in %; contour lines are the adjusted estimate
    in ``unit``, the red dashed line where it reaches 0. ``bounds``
    (``scenario``, ``share_of_esat``, ``share_of_csat``: the benchmark
    confounders) are drawn as labelled points; ``rv`` as a diamond on the
    diagonal. The view spans the robustness value and the benchmark points
    (up to the grid's extent).
    """
    from matplotlib.ticker import MaxNLocator

    _check_columns(grid, ("r2dz_x", "r2yz_dx", estimate), "sensitivity_contours")
    xs = np.sort(grid["r2dz_x"].unique())
    ys = np.sort(grid["r2yz_dx"].unique())
    z = grid.pivot(index="r2yz_dx", columns="r2dz_x", values=estimate).reindex(index=ys, columns=xs).to_numpy()
    pts = pd.DataFrame(columns=["scenario", "share_of_esat", "share_of_csat"])
    if bounds is not None and len(bounds):
        _check_columns(bounds, ("scenario", "share_of_esat", "share_of_csat"), "sensitivity_contours")
        keep = ((bounds["share_of_esat"] > 0) | (bounds["share_of_csat"] > 0)) & \
            ~bounds["scenario"].str.contains("robustness", case=False)
        pts = bounds[keep & (bounds["share_of_esat"] <= xs.max()) & (bounds["share_of_csat"] <= ys.max())]
    r = float(rv) if rv is not None and np.isfinite(rv) else 0.0
    x_top = min(xs.max(), max(0.05, 2.5 * r, 1.15 * float(pts["share_of_esat"].max()) if len(pts) else 0))
    y_top = min(ys.max(), max(0.05, 2.5 * r, 1.15 * float(pts["share_of_csat"].max()) if len(pts) else 0))
    # contour only what is in view, so that every line's label lands inside the axes
    sx, sy = xs <= x_top + 1e-12, ys <= y_top + 1e-12
    xs, ys, z = xs[sx], ys[sy], z[np.ix_(sy, sx)]
    levels = MaxNLocator(nbins=7).tick_values(np.nanmin(z), np.nanmax(z))
    levels = [v for v in levels if abs(v) > 1e-9 * max(1.0, np.nanmax(np.abs(z)))]
    with style():
        fig = _figure(figsize=(7.2, 5.4), layout="constrained")
        ax = fig.subplots()
        cs = ax.contour(100 * xs, 100 * ys, z, levels=levels, colors=COLORS["reference"], linewidths=0.8,
                        linestyles="solid")
        ax.clabel(cs, fontsize=8, fmt=lambda v: _fmt(v))
        if np.nanmin(z) < 0 < np.nanmax(z):
            ax.contour(100 * xs, 100 * ys, z, levels=[0.0], colors=COLORS["truth"], linewidths=1.8, linestyles="--")
        ax.plot([0], [0], marker="^", color="black", ms=8, clip_on=False, zorder=5)
        ax.annotate(f"no confounder: {_fmt(z[0, 0])}", (0, 0), xytext=(8, 8), textcoords="offset points", fontsize=9)
        shown = []
        last_y = {}
        for p in pts.sort_values("share_of_csat").itertuples(index=False):
            px, py = 100 * p.share_of_esat, 100 * p.share_of_csat
            ax.plot(px, py, "o", color=COLORS["EX"], ms=6, zorder=5, clip_on=False)
            # labels of points on the same vertical (site: 0% of eSat) are spread so they do not overlap
            dy = 3
            key = round(px, 1)
            if key in last_y and py - last_y[key] < 0.045 * 100 * y_top:
                dy = 3 + 10
            last_y[key] = py
            ax.annotate(str(p.scenario), (px, py), xytext=(7, dy), textcoords="offset points", fontsize=8.5,
                        color=COLORS["EX"])
            shown.append(str(p.scenario))
        if r > 0:
            ax.plot(100 * r, 100 * r, "D", color=COLORS["truth"], ms=7, zorder=6)
            ax.annotate(f"robustness value {100 * r:.1f}%", (100 * r, 100 * r), xytext=(8, -4),
                        textcoords="offset points", fontsize=9, color=COLORS["truth"])
        ax.set(xlabel=f"Confounder's share of {treatment}'s remaining variance (%)",
               ylabel=f"Confounder's share of {outcome}'s remaining variance (%)",
               xlim=(0, 100 * x_top), ylim=(0, 100 * y_top))
        ax.set_title(title or f"Estimate after a hypothetical confounder ({unit})")
    text = alt or (f"Contour plot of the estimate ({unit}) after adjusting for a hypothetical confounder, by the share "
                   f"of {treatment}'s remaining variance it explains (0 to {100 * x_top:.0f}%) and of {outcome}'s "
                   f"(0 to {100 * y_top:.0f}%). Without a confounder the estimate is {_fmt(z[0, 0])}; the red dashed "
                   "line marks where it reaches 0"
                   + (f"; the robustness value is {100 * r:.1f}%" if r > 0 else "")
                   + (f"; benchmark confounders drawn: {', '.join(shown)}." if shown else "."))
    return Chart(fig, text)


# --------------------------------------------------------------------------- carry-over by gap (07)

def carry_over_by_gap(
    df: pd.DataFrame,
    *,
    gap: str = "gap",
    estimate: str = "estimate",
    ci: tuple[str, str] = ("ci_low", "ci_high"),
    n: str | None = "n",
    truth: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    alt: str | None = None,
) -> Chart:
    """The carry-over from one call to the next by the time between them (report 07).

    One point with its 95% interval per gap bin, in the table's order (shortest
    gap first), on one axis in the unit of the estimates (``ylabel``, or the
    table's ``unit`` column); the zero line; the number of pairs under each bin
    (``n``). ``truth`` names a column of true values drawn as red marks
    (simulated data).

    Parameters
    ----------
    df : DataFrame
        One row per gap bin: ``gap`` (its label), ``estimate``, ``ci_low``,
        ``ci_high``, optionally ``n`` and ``unit`` (one unit for all rows).

    Raises
    ------
    ValueError
        When a column is missing, the rows mix units, or no unit is given.
    """
    _check_columns(df, (gap, estimate, *ci), "carry_over_by_gap")
    if ylabel is None:
        units = list(dict.fromkeys(df["unit"].astype(str))) if "unit" in df.columns else []
        if len(units) != 1:
            raise ValueError("carry_over_by_gap: give ylabel= or one 'unit' for all rows "
                             f"(the table has units {units or 'none'})")
        ylabel = units[0]
    labels = [str(v) for v in df[gap]]
    est = df[estimate].astype(float).to_numpy()
    lo = df[ci[0]].astype(float).to_numpy()
    hi = df[ci[1]].astype(float).to_numpy()
    x = np.arange(len(df))
    with style():
        fig = _figure(figsize=(max(4.8, 1.7 * len(df) + 2.2), 3.7 + (0.3 if title else 0)), layout="constrained")
        ax = fig.subplots()
        err = np.vstack([np.where(np.isnan(lo), 0, est - lo), np.where(np.isnan(hi), 0, hi - est)])
        ax.errorbar(x, est, yerr=err, fmt="o", capsize=4, ms=6, lw=1.6, color=COLORS["CX"], label="estimate (95% CI)")
        if truth is not None and truth in df.columns:
            tv = df[truth].astype(float).to_numpy()
            ok = np.isfinite(tv)
            ax.plot(x[ok], tv[ok], marker="_", ls="none", color=COLORS["truth"], ms=22, mew=2.4, label="truth")
        ax.axhline(0, color=COLORS["reference"], lw=0.9)
        ticks = labels
        if n is not None and n in df.columns:
            ticks = [f"{lab}\n{int(k):,} pairs" if pd.notna(k) else lab for lab, k in zip(labels, df[n])]
        ax.set_xticks(x, ticks)
        ax.set_xlim(-0.6, len(df) - 0.4)
        ax.set_xlabel("Time since the agent's previous call started")
        ax.set_ylabel(ylabel if len(ylabel) <= 24 else ylabel.replace(" per ", "\nper ", 1))
        ax.grid(axis="x", visible=False)
        if truth is not None and truth in df.columns:
            ax.legend(loc="best")
        if title:
            ax.set_title(title)
    from cxex_lab.present import fmt_estimate

    parts = [f"{lab}: {fmt_estimate(e, a, b)}" for lab, e, a, b in zip(labels, est, lo, hi)]
    text = alt or (f"{title + '. ' if title else ''}Carry-over from one call to the next by the time since the "
                   f"previous call started, in {ylabel}, with 95% intervals: " + "; ".join(parts) + ".")
    return Chart(fig, text)


def _check_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: column(s) {missing} missing; the table has {list(df.columns)}")


# --------------------------------------------------------------------------- reports 03 and 04 (track reports-a)


_SERIES_LABEL = {"icc1": "ICC(1): share of variance between groups", "icc2": "ICC(2): reliability of a group mean",
                 "rwg_uniform": "r_wg, uniform null", "rwg_slight_skew": "r_wg, slightly skewed null",
                 "rwg_moderate_skew": "r_wg, moderately skewed null", "rwg_heavy_skew": "r_wg, heavily skewed null",
                 "rwg_triangular": "r_wg, triangular null", "rwg_normal": "r_wg, normal null"}


def agreement_by_wave(df: pd.DataFrame, *, wave: str = "wave", series: Sequence[str] | None = None,
                      bar: float = 0.70, group: str = "team", item: str = "eSat", title: str | None = None,
                      alt: str | None = None) -> Chart:
    """Agreement and reliability indices per survey wave, against the usual bar.

    ``df`` has one row per wave with the index columns (``icc1``, ``icc2``,
    ``rwg_<null>``, all 0-1), as ``findings.linkage(...).details
    ["agreement_by_wave"]``. One line per index; a dashed line marks ``bar``
    (.70, the usual threshold for ICC(2) and r_wg). The y axis is the index
    value (0-1).
    """
    cols = list(series) if series is not None else [c for c in df.columns if c in _SERIES_LABEL]
    _check_columns(df, (wave, *cols), "agreement_by_wave")
    if not cols:
        raise ValueError(f"agreement_by_wave: no index column (icc1, icc2, rwg_<null>) in {list(df.columns)}")
    d = df.sort_values(wave)
    with style():
        fig = _figure(figsize=(7.5, 3.6 + (0.3 if title else 0)), layout="constrained")
        ax = fig.subplots()
        styles = {"icc1": ":", "icc2": "-"}
        for c in cols:
            ax.plot(d[wave].astype(int), d[c].astype(float), marker="o", ls=styles.get(c, "--"), label=_SERIES_LABEL.get(c, c))
        ax.axhline(bar, color=COLORS["reference"], ls="--", lw=1)
        ax.annotate(f"usual bar ({bar:.2f})", (d[wave].astype(int).min(), bar), xytext=(2, 3), textcoords="offset points",
                    fontsize=8.5, color=COLORS["reference"])
        ax.set_xticks(sorted(d[wave].astype(int).unique()))
        ax.set_xlabel("Survey wave")
        ax.set_ylabel("Index value (0-1)")
        ax.set_ylim(min(0.0, float(np.nanmin(d[cols].astype(float).to_numpy())) - 0.05), 1.0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if title:
            ax.set_title(title)
    rng_txt = "; ".join(f"{_SERIES_LABEL.get(c, c)} from {_fmt(d[c].min())} to {_fmt(d[c].max())}" for c in cols)
    text = alt or (f"Line chart of agreement indices for averaging {item} to {group} level, per survey wave "
                   f"({len(d)} waves), with the usual bar of {bar:.2f} dashed: {rng_txt}.")
    return Chart(fig, text)


def linked_views(company: pd.DataFrame, by_answer: pd.DataFrame, *, x: str = "esat", y: str = "csat",
                 wave: str = "wave", company_x: str | None = None, company_y: str | None = None,
                 xlabel: str = "eSat answer (1-5)", ylabel: str = "Mean CSAT (1-5), following period",
                 r_company: float | None = None, r_linked: float | None = None,
                 correlations: pd.DataFrame | None = None, alt: str | None = None) -> Chart:
    """The naive company-level view beside the linked one, without showing any individual.

    Left: one point per wave, the wave's mean EX against the mean CX of its
    period (labelled with the wave). Right: the linked view, the mean CX of
    the employee-waves that gave each EX answer, with its 95% interval
    (``by_answer``: columns ``x``, ``estimate``, ``ci_low``, ``ci_high``;
    suppressed answers, with a missing estimate, are not drawn). ``r_company``
    and ``r_linked`` (the correlations from the findings) go into the titles;
    or ``correlations`` (``findings.linkage(...).details["correlations"]``:
    ``view``, ``estimate``) gives them (views starting "Company" and "Linked").
    """
    if correlations is not None and {"view", "estimate"} <= set(correlations.columns):
        views = correlations.assign(_v=correlations["view"].astype(str))
        comp = views[views["_v"].str.startswith("Company")]
        link = views[views["_v"].str.startswith("Linked")]
        r_company = float(comp["estimate"].iloc[0]) if r_company is None and len(comp) else r_company
        r_linked = float(link["estimate"].iloc[0]) if r_linked is None and len(link) else r_linked
    cx_, cy_ = company_x or f"{x}_mean", company_y or f"{y}_mean"
    _check_columns(company, (wave, cx_, cy_), "linked_views (company)")
    _check_columns(by_answer, (x, "estimate", "ci_low", "ci_high"), "linked_views (by_answer)")
    c = company.dropna(subset=[cx_, cy_])
    b = by_answer.dropna(subset=["estimate"])
    hidden = len(by_answer) - len(b)

    def r_txt(r: float | None) -> str:
        return "" if r is None or not np.isfinite(r) else f" (r = {r:.2f})"

    with style():
        fig = _figure(figsize=(9.5, 3.9), layout="constrained")
        a0, a1 = fig.subplots(1, 2)
        a0.scatter(c[cx_], c[cy_], color=COLORS["EX"], s=40)
        for _, row in c.iterrows():
            a0.annotate(f"wave {int(row[wave])}", (row[cx_], row[cy_]), xytext=(4, 3), textcoords="offset points",
                        fontsize=8.5)
        a0.set(title=f"Company level: {len(c)} wave means{r_txt(r_company)}", xlabel=f"Mean {xlabel}",
               ylabel=ylabel)
        err = np.vstack([b["estimate"] - b["ci_low"], b["ci_high"] - b["estimate"]])
        a1.errorbar(b[x].astype(float), b["estimate"], yerr=err, fmt="o", capsize=3, ms=6, color=COLORS["CX"])
        a1.plot(b[x].astype(float), b["estimate"], color=COLORS["CX"], lw=1, alpha=0.6)
        a1.set(title=f"Linked: employee x wave{r_txt(r_linked)}", xlabel=xlabel, ylabel=ylabel)
        a1.set_xticks(sorted(b[x].astype(float).unique()))
    text = alt or (f"Two panels. Left: company level, {len(c)} points (one per wave), mean {xlabel} against "
                   f"{ylabel}{', correlation ' + format(r_company, '.2f') if r_company is not None and np.isfinite(r_company) else ''}. "
                   f"Right: linked view, {ylabel} for each {xlabel} with 95% intervals, from "
                   f"{_fmt(b['estimate'].min()) if len(b) else '–'} to {_fmt(b['estimate'].max()) if len(b) else '–'}"
                   f"{', correlation ' + format(r_linked, '.2f') if r_linked is not None and np.isfinite(r_linked) else ''}"
                   + (f"; {hidden} answer level(s) suppressed for privacy" if hidden else "") + ".")
    return Chart(fig, text)


def drivers(weights: pd.DataFrame, *, random: pd.DataFrame | None = None, side: str = "side",
            label: str = "touchpoint", title: str | None = None, alt: str | None = None) -> Chart:
    """Touchpoint weights with their intervals, one panel per side (EX, CX), random-reference test marked.

    ``weights`` is ``findings.drivers(...).details["weights"]``: per side and
    touchpoint ``estimate``, ``ci_low``, ``ci_high`` (% of the outcome's
    variance), ``unit`` and ``beats_random``. Each side gets its own panel and
    x axis (its unit: eSat and CSAT variance are different quantities). Filled
    markers beat the random reference variable, hollow ones do not. With
    ``random`` (``details["r2"]``: ``side``, ``random_ci_low``,
    ``random_ci_high``) the interval of the random variable's own weight is
    shaded: what pure noise earns at this sample size. Touchpoints are in the
    same order in every panel (by the last side's estimate).
    """
    _check_columns(weights, (side, label, "estimate", "ci_low", "ci_high", "unit"), "drivers")
    sides = list(dict.fromkeys(weights[side]))
    if not sides:
        raise ValueError("drivers: the weights table is empty")
    order_side = weights[weights[side] == sides[-1]].sort_values("estimate", ascending=False)
    order = list(dict.fromkeys(list(order_side[label]) + list(weights[label])))
    with style():
        fig = _figure(figsize=(4.6 * len(sides) + 1.6, 0.42 * len(order) + 1.5 + (0.3 if title else 0)),
                      layout="constrained")
        axes = fig.subplots(1, len(sides), squeeze=False, sharey=True)[0]
        describe = []
        for ax, s in zip(axes, sides):
            w = weights[weights[side] == s].set_index(label).reindex(order)
            pos = np.arange(len(order))
            est = w["estimate"].astype(float).to_numpy()
            lo, hi = w["ci_low"].astype(float).to_numpy(), w["ci_high"].astype(float).to_numpy()
            err = np.vstack([np.where(np.isnan(lo), 0, est - lo), np.where(np.isnan(hi), 0, hi - est)])
            color = COLORS.get(s, COLORS["EX"])
            beats = w["beats_random"].fillna(False).astype(bool).to_numpy() if "beats_random" in w.columns \
                else np.zeros(len(order), bool)
            ax.errorbar(est, pos, xerr=err, fmt="none", ecolor=color, capsize=3, lw=1.4)
            ax.scatter(est[beats], pos[beats], s=42, color=color, zorder=3, label="beats a random variable")
            ax.scatter(est[~beats], pos[~beats], s=42, facecolors="white", edgecolors=color, zorder=3,
                       label="does not beat a random variable")
            if random is not None and {side, "random_ci_low", "random_ci_high"} <= set(random.columns):
                rr = random[random[side] == s]
                if len(rr) and np.isfinite(float(rr["random_ci_high"].iloc[0])):
                    ax.axvspan(float(rr["random_ci_low"].iloc[0]), float(rr["random_ci_high"].iloc[0]),
                               color=COLORS["reference"], alpha=0.15, lw=0, label="weight of a random variable (95%)")
            ax.set_yticks(pos, order)
            ax.set_ylim(len(order) - 0.5, -0.5)
            ax.grid(axis="y", visible=False)
            unit = str(w["unit"].dropna().iloc[0]) if w["unit"].notna().any() else "estimate"
            ax.set_xlabel(unit)
            ax.set_xlim(left=0)
            ax.set_title(f"{s} side")
            n_beat = int(beats.sum())
            top = w["estimate"].astype(float).idxmax() if np.isfinite(est).any() else None
            describe.append(f"{s} side ({unit}): {n_beat} of {int(np.isfinite(est).sum())} touchpoints beat a random "
                            f"variable" + (f"; largest: {top} {_fmt(w.loc[top, 'estimate'])}" if top is not None else ""))
        axes[-1].legend(loc="lower right", fontsize=8.5)
        if title:
            fig.suptitle(title, fontsize=STYLE["axes.titlesize"], fontweight="bold")
    text = alt or (f"Touchpoint weights with 95% intervals, one panel per side (filled: beats a random reference "
                   f"variable; hollow: does not). " + ". ".join(describe) + ".")
    return Chart(fig, text)
