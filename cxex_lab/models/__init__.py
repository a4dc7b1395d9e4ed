"""Estimators of cxex-lab: each takes a DataFrame and column names and returns a tidy table.

Modules
-------
drivers      relative importance of touchpoint aspects (relative weights, dominance)
mediation    EX -> operations -> CX (-> loyalty) parallel mediation, cluster bootstrap
spillover    interaction-level carry-over of CX (the vicious circle): moderators (Holm),
             agent x day effects, decay with the gap, lead placebos
sensitivity  Cinelli & Hazlett (2020) robustness to unobserved confounding, also of the
             within-employee (two-way FE) headline

The estimators never import :mod:`cxex_lab.simulate` (the oracle that checks them).
"""

from cxex_lab.models.drivers import dominance_weights, drivers, relative_weights
from cxex_lab.models.mediation import mediation
from cxex_lab.models.sensitivity import (
    benchmark_bounds,
    group_partial_r2,
    partial_r2,
    robustness_value,
    sensitivity,
    sensitivity_within,
)
from cxex_lab.models.spillover import spillover
from cxex_lab.models.direction import cross_lagged, within_effects
from cxex_lab.models.power import power
