"""Simulation-based power of the RI-CLPM (cxex_lab.models.power)."""

from __future__ import annotations

import pytest

from cxex_lab.models.power import power

COLUMNS = ["n_units", "n_waves", "effect", "power", "power_ci_low", "power_ci_high", "n_sims", "n_failed"]


def test_type_one_error_near_alpha():
    # effect 0: the rejection rate estimates the test's size (nominal 0.05)
    tab = power(150, 4, 0.0, n_sims=120, seed=1)
    assert list(tab.columns) == COLUMNS and len(tab) == 1
    row = tab.iloc[0]
    assert row["n_failed"] <= 2
    assert 0.01 <= row["power"] <= 0.11, row.to_dict()


def test_power_rises_with_n_and_effect():
    tab = power([100, 400], 4, [0.1, 0.2], n_sims=30, seed=2).set_index(["n_units", "effect"])
    p = tab["power"]
    assert len(tab) == 4 and (tab["n_sims"] == 30).all()
    assert p[(400, 0.1)] > p[(100, 0.1)] + 0.2
    assert p[(100, 0.2)] > p[(100, 0.1)] + 0.2
    assert p[(400, 0.2)] >= p[(400, 0.1)] and p[(400, 0.2)] >= 0.9
    assert (tab["power_ci_low"] <= p).all() and (p <= tab["power_ci_high"]).all()


def test_reproducible_with_seed_and_missing_data():
    a = power(120, 3, 0.25, n_sims=4, seed=7, missing=0.1)
    b = power(120, 3, 0.25, n_sims=4, seed=7, missing=0.1)
    assert a.equals(b)


def test_power_bad_input():
    with pytest.raises(ValueError, match="n_waves >= 3"):
        power(100, 2, 0.2, n_sims=2)
    with pytest.raises(ValueError, match="pass the EX -> CX lag as `effect`"):
        power(100, 4, 0.2, n_sims=2, ex_to_cx=0.3)
    with pytest.raises(ValueError, match="n_sims must be a positive integer"):
        power(100, 4, 0.2, n_sims=0)
    with pytest.raises(ValueError, match="unknown parameter"):
        power(100, 4, 0.2, n_sims=1, not_a_param=1.0)
