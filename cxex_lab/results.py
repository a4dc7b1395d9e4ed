"""One result shape for every estimator: a tidy table plus one small, typed fit record.

Every estimator in :mod:`cxex_lab.models` returns a :class:`Result`:

* ``result.table``: a tidy DataFrame, one row per estimate, with at least
  ``term, estimate, se, ci_low, ci_high, p, n`` (like pingouin);
* ``result.fit``: a frozen dataclass (:class:`Fit` or an estimator-specific
  subclass) that says what was fitted, on how many rows and clusters, **which
  level the intervals resample or pool over** (``cluster``), and the warnings
  that matter for interpretation (``notes``, in words a reader understands).

``table, fit = estimator(...)`` unpacks it. An estimator with more to say
(fit indices, bootstrap draws) declares a subclass of :class:`Fit` with typed
fields for it (fields holding a DataFrame are declared with ``compare=False``). Fit records replace the nested
``DataFrame.attrs`` dictionaries whose keys differed per estimator: their fields
are declared, typed and documented, and a report turns ``fit.notes`` into a
visible "Note" box instead of a warning printed to stderr.

Estimators still emit :mod:`warnings` for interactive use; :func:`quietly`
silences them where a caller (a findings function) reads ``fit.notes`` instead.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields

import pandas as pd

__all__ = ["Fit", "Result", "quietly", "TABLE_COLUMNS"]

#: Columns every estimator table has (estimators may add more after them).
TABLE_COLUMNS: tuple[str, ...] = ("term", "estimate", "se", "ci_low", "ci_high", "p", "n")


@dataclass(frozen=True, kw_only=True)
class Fit:
    """What every estimator can say beyond its table.

    Attributes
    ----------
    method : str
        What was fitted, in words (e.g. "two-way fixed effects (employee, wave), PanelOLS").
    n_obs : int
        Rows (observations) the estimates rest on.
    n_dropped : int
        Rows left out (missing values, no lag, ...); the reason is in ``notes`` or the ledger.
    cluster : str or None
        The level the intervals resample or pool over (``"employee_id"``,
        ``"team_id"``); ``None`` means rows are treated as independent.
    n_clusters : int or None
        Number of clusters behind the intervals.
    alpha : float
        1 - confidence level of the intervals.
    notes : tuple of str
        Interpretive warnings in words (non-convergence, few clusters, a
        singular information matrix). Reports show them as "Note" boxes.
    """

    method: str
    n_obs: int
    n_dropped: int = 0
    cluster: str | None = None
    n_clusters: int | None = None
    alpha: float = 0.05
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The record as a plain dict (JSON-friendly scalars, lists and dicts)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Result:
    """An estimator's tidy ``table`` and its typed ``fit`` record.

    Examples
    --------
    >>> import pandas as pd
    >>> res = Result(pd.DataFrame({"term": ["x"], "estimate": [1.0]}), Fit(method="demo", n_obs=10))
    >>> table, fit = res
    >>> fit.n_obs
    10
    """

    table: pd.DataFrame
    fit: Fit

    def __iter__(self) -> Iterator:
        yield self.table
        yield self.fit

    def summary(self) -> str:
        """A short plain-text summary: method, n, clusters, notes, and the table."""
        f = self.fit
        head = f"{f.method}: n = {f.n_obs:,}"
        if f.cluster:
            head += f", intervals clustered by {f.cluster} ({f.n_clusters} clusters)"
        lines = [head, *(f"Note: {n}" for n in f.notes), self.table.to_string(index=False)]
        return "\n".join(lines)


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Silence warnings inside the block (their content reaches the reader through ``fit.notes``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
