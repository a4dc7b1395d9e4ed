"""Estimators of cxex-lab: each takes a DataFrame and column names and returns a tidy table.

Modules
-------
drivers      relative importance of touchpoint aspects (relative weights, dominance)
mediation    EX -> operations -> CX (-> a further outcome): within-employee mediation, cluster bootstrap
loyalty      CX -> loyalty at customer level (two-way clustered) and the money translation of the chain
spillover    interaction-level carry-over of CX (the vicious circle) by empowerment
sensitivity  Cinelli & Hazlett (2020) robustness to unobserved confounding

The estimators never import :mod:`cxex_lab.simulate` (the oracle that checks them).
"""

from cxex_lab.models.drivers import dominance_weights, drivers, relative_weights
from cxex_lab.models.loyalty import loyalty, money_chain
from cxex_lab.models.mediation import mediation
from cxex_lab.models.sensitivity import benchmark_bounds, partial_r2, robustness_value, sensitivity
from cxex_lab.models.spillover import spillover
from cxex_lab.models.direction import cross_lagged, within_effects
from cxex_lab.models.power import power
