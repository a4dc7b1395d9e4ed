r"""Study design: simulation-based power of the RI-CLPM to detect EX -> CX.

This is the one estimator module allowed to drive the simulator
(:mod:`cxex_lab.simulate`): it draws panels with a known within-unit cross-lag
and counts how often :func:`cxex_lab.models.direction.cross_lagged` detects it.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxex_lab.models.direction import cross_lagged
from cxex_lab.simulate import simulate_panel

__all__ = ["power"]


def _as_list(value: Any, name: str, kind: type) -> list:
    vals = list(value) if isinstance(value, (list, tuple, np.ndarray, pd.Series)) else [value]
    if not vals:
        raise ValueError(f"power: {name} must not be empty.")
    for v in vals:
        if kind is int and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)):
            raise ValueError(f"power: {name} must be an integer or a list of integers, got {v!r}.")
        if kind is float and not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"power: {name} must be a number or a list of numbers, got {v!r}.")
    return vals


def _wilson(k: int, n: int, alpha: float) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(1 - alpha / 2)
    ph = k / n
    den = 1 + z**2 / n
    centre = (ph + z**2 / (2 * n)) / den
    half = z * math.sqrt(ph * (1 - ph) / n + z**2 / (4 * n**2)) / den
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def power(
    n_units: int | Sequence[int],
    n_waves: int | Sequence[int],
    effect: float | Sequence[float],
    cx_to_ex: float = 0.0,
    n_sims: int = 200,
    alpha: float = 0.05,
    missing: float = 0.0,
    seed: int | np.random.Generator | None = None,
    **params: Any,
) -> pd.DataFrame:
    r"""Simulated power of the RI-CLPM to detect a within-unit EX -> CX cross-lag.

    Parameters
    ----------
    n_units, n_waves : int or list of int
        Panel sizes to evaluate (units, e.g. employees; survey waves >= 3).
    effect : float or list of float
        True within-unit lagged effect of EX on CX (``ex_to_cx`` of the
        simulator; unstandardized, latent units).
    cx_to_ex : float
        True reverse lag CX -> EX (default 0).
    n_sims : int
        Simulated panels per combination.
    alpha : float
        Two-sided significance level of the Wald test of ``ex->cx``.
    missing : float
        Share of unit-waves missing completely at random (handled by FIML).
    seed : int or numpy.random.Generator, optional
        Source of all randomness; the same seed gives the same table.
    **params
        Any other parameter of :func:`cxex_lab.simulate.simulate_panel`
        (e.g. ``ar_ex=0.5``, ``ri_corr=0.8``, ``innov_sd_cx=0.6``).

    Returns
    -------
    DataFrame
        One row per combination of ``n_units`` x ``n_waves`` x ``effect``:
        ``n_units``, ``n_waves``, ``effect``, ``power`` (share of converged
        fits with p < alpha), ``power_ci_low``, ``power_ci_high`` (Wilson
        interval at 95%), ``n_sims``, ``n_failed`` (fits that raised or did not
        converge; excluded from the denominator).

    Notes
    -----
    Each panel is drawn by :func:`cxex_lab.simulate.simulate_panel` with
    ``ex_to_cx=effect`` and fitted with
    ``cross_lagged(kind="riclpm", fit_indices=False)``; the test is
    :math:`|\hat\beta / se| > z_{1-\alpha/2}`. At ``effect=0`` the power
    column estimates the type-I error rate (should be near ``alpha``).
    Child seeds come from ``numpy.random.SeedSequence(seed).spawn``, one per
    combination and simulation, so a combination's result does not depend on
    which other combinations are in the grid.

    References
    ----------
    Mulder, J. D. (2023). Power analysis for the random intercept cross-lagged
    panel model using the powRICLPM R-package. *Structural Equation Modeling*,
    30(4), 645-658.

    Examples
    --------
    >>> tab = power(n_units=[100, 300], n_waves=3, effect=0.2, n_sims=5, seed=1)
    >>> tab[["n_units", "n_waves", "effect"]].to_dict("records")
    [{'n_units': 100, 'n_waves': 3, 'effect': 0.2}, {'n_units': 300, 'n_waves': 3, 'effect': 0.2}]
    """
    units = _as_list(n_units, "n_units", int)
    waves = _as_list(n_waves, "n_waves", int)
    effects = _as_list(effect, "effect", float)
    if any(u < 10 for u in units):
        raise ValueError(f"power: n_units must be at least 10, got {units}.")
    if any(w < 3 for w in waves):
        raise ValueError(f"power: the RI-CLPM needs n_waves >= 3, got {waves}.")
    if not isinstance(n_sims, (int, np.integer)) or n_sims < 1:
        raise ValueError(f"power: n_sims must be a positive integer, got {n_sims!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"power: alpha must be between 0 and 1, got {alpha!r}.")
    if not 0 <= missing < 1:
        raise ValueError(f"power: missing must be in [0, 1), got {missing!r}.")
    for reserved in ("ex_to_cx",):
        if reserved in params:
            raise ValueError(f"power: pass the EX -> CX lag as `effect`, not {reserved!r}.")
    if isinstance(seed, np.random.Generator):
        ss = np.random.SeedSequence(int(seed.integers(2**63)))
    else:
        ss = np.random.SeedSequence(seed)
    combos = list(itertools.product(units, waves, effects))
    children = ss.spawn(len(combos))
    rows = []
    for (nu, nw, eff), child in zip(combos, children):
        hits = failed = 0
        for sim_seed in child.spawn(n_sims):
            panel = simulate_panel(
                int(nu), int(nw), seed=np.random.default_rng(sim_seed), missing=missing,
                ex_to_cx=float(eff), cx_to_ex=cx_to_ex, **params,
            )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res, fit = cross_lagged(panel, "unit", "wave", "ex", "cx", kind="riclpm", alpha=alpha, fit_indices=False)
            except (ValueError, np.linalg.LinAlgError):
                failed += 1
                continue
            if not fit.converged:
                failed += 1
                continue
            p = float(res.loc[res["term"] == "ex->cx", "p"].iloc[0])
            if not np.isfinite(p):
                failed += 1
                continue
            hits += p < alpha
        n_ok = n_sims - failed
        lo, hi = _wilson(hits, n_ok, 0.05)
        rows.append(
            {
                "n_units": int(nu),
                "n_waves": int(nw),
                "effect": float(eff),
                "power": hits / n_ok if n_ok else float("nan"),
                "power_ci_low": lo,
                "power_ci_high": hi,
                "n_sims": int(n_sims),
                "n_failed": int(failed),
            }
        )
    if all(r["n_failed"] == r["n_sims"] for r in rows):
        warnings.warn("power: every simulated fit failed; check the parameters.", RuntimeWarning, stacklevel=2)
    return pd.DataFrame(rows)
