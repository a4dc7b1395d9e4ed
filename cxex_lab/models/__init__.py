"""Estimators of cxex-lab: each takes a DataFrame and column names and returns a tidy table.

Modules
-------
drivers      relative importance of touchpoint aspects (relative weights, dominance)
mediation    EX -> operations -> CX (-> a further outcome): within-employee mediation, cluster bootstrap
loyalty      CX -> loyalty at customer level (two-way clustered) and the money translation of the chain
spillover    interaction-level carry-over of CX (the vicious circle): moderators (Holm),
             agent x day effects, decay with the gap, lead placebos
sensitivity  Cinelli & Hazlett (2020) robustness to unobserved confounding, also of the
             within-employee (two-way FE) headline
direction    RI-CLPM / CLPM by FIML and two-way fixed effects: which way the effect runs
firm_panel   firm x year panels: employer ratings against a customer-satisfaction index
power        simulated power of the direction test

The estimators never import :mod:`cxex_lab.simulate` (the oracle that checks them).
"""

from cxex_lab.models.drivers import dominance_weights, drivers, relative_weights
from cxex_lab.models.loyalty import loyalty, money_chain
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
from cxex_lab.models.firm_panel import firm_panel
