"""Shared fixtures: small simulated studies (module-level caching keeps the suite fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxex_lab.simulate import simulate_study

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def small_study():
    """A small but complete study (3 sites, 60 employees, 3 waves)."""
    return simulate_study(n_sites=3, n_employees=60, n_waves=3, seed=11)


@pytest.fixture(scope="session")
def big_panel_study():
    """Many employees, few interactions: for recovering employee-wave parameters."""
    return simulate_study(n_sites=20, n_employees=4000, n_waves=4, seed=7, latent=True, interactions_per_wave=2.0)
