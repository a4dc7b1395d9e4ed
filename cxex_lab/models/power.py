r"""Study design: simulated power of the report's headline test, on the observed pipeline.

How often would a study of a given design detect an EX -> CX effect of a given
size, and how often does the test cry wolf when there is none? Answered by
simulating **full studies** with :func:`cxex_lab.simulate.simulate_study`
(survey scales, the simulated nonresponse and attrition, clustering of agents
in teams) and running on each exactly what the reports run:

1. the study's workspace (:meth:`cxex_lab.workspace.Workspace.from_study`,
   without validation: simulated tables keep the contract),
2. the employee x wave panel (:func:`cxex_lab.findings.employee_wave_panel`),
3. the within-employee headline (:func:`cxex_lab.findings.headline_effect`:
   two-way fixed effects, employee and wave, of the mean CSAT of wave period w
   on the eSat answered at wave w-1, SEs clustered by team, t with G-1 df).

The test rejects when the headline's p-value is below ``alpha``, i.e. when its
``1 - alpha`` interval excludes zero: the same decision a reader makes.

This is the one estimator module allowed to drive the simulator.

What the numbers rest on
------------------------
A :class:`Design` is the study's size (employees, sites, waves) plus simulator
parameters. Measured from a study (:func:`design_of`): employees, sites, teams
per site, waves, interactions per employee and wave period, and the EX and CX
response rates. Everything else is an **assumption**: the simulator's defaults
(:data:`cxex_lab.simulate.DEFAULT_PARAMS`: how much EX and CX vary between and
within employees, how persistent they are, how noisy one answer is, the
common-method halo, who answers and who leaves). :meth:`Design.table` lists them
with their source; reports state them.

The effect
----------
``effect`` is the **latent within-employee lag** ``ex_to_cx`` of the simulator
(EX at wave w-1 -> CX in period w, latent units). The simulator's EX also acts
on CX within the same wave (``ex_direct_cx`` and the operational paths
``ex_to_ops``); these are scaled in proportion to the lag (by
``effect / ex_to_cx`` of the design's parameters), so ``effect = 0`` is a world
where EX has no effect on CX at all (CX still feeds back to EX as assumed), and
the default design at ``effect = 0.25`` is the simulator's default model. The
headline measures the total association of CSAT with last wave's eSat on the
survey scales; the **observed-scale effect** of a latent effect is the mean
headline estimate over the simulated studies (``effect_observed``, CSAT points
per eSat point).

Reproducibility and caching
---------------------------
Simulation ``i`` of a cell (design x effect) is seeded with
``numpy.random.SeedSequence(seed, spawn_key=(cell, i))``, ``cell`` a hash of the
design and the effect: a cell's results depend neither on the rest of the grid
nor on how the work is split across processes, and a cell can be extended with
more simulations later. Each cell's per-simulation estimates, SEs and p-values
are cached (keyed by the design, the effect, the seed, :data:`SCHEMA` and the
package version) in ``$CXEX_LAB_POWER_CACHE`` (default
``~/.cache/cxex-lab/power``); the grid for the simulator's default design (the
sample's) ships with the package (``cxex_lab/data/power_grid.json``, written by
``cxex-lab power --defaults --out cxex_lab/data/power_grid.json``).

Checked against: the type-I rate (effect 0) at the nominal 5% within its Monte
Carlo interval, power rising with employees, waves and effect, the stacked
linkage equal to linking each study alone, and the cached results reproducing
exactly (``tests/test_power.py``); the replicate-study harness compares the
headline test's rejection rate across replicate studies of the sample with
:func:`power` at the sample's design (``Design.from_truth``).

:func:`riclpm_power` keeps the earlier simulation of the RI-CLPM on latent,
fully observed panels (it overstates the power of the observed pipeline).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import itertools
import json
import math
import multiprocessing as mp
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cxex_lab.models.direction import cross_lagged
from cxex_lab.simulate import DEFAULT_PARAMS, simulate_panel

__all__ = [
    "SCHEMA",
    "Design",
    "PowerReport",
    "design_of",
    "power",
    "type_one",
    "power_report",
    "power_at_truth",
    "seconds_needed",
    "riclpm_power",
    "default_cache_dir",
]

#: Version of the simulation recipe; bump it when the pipeline's results change (old caches are then ignored).
SCHEMA = 1
#: Simulator parameters measured from a study by :func:`design_of` (the rest are assumptions).
MEASURED = ("teams_per_site", "interactions_per_wave", "cx_response_rate", "ex_response_rate")
#: Same-wave EX -> CX paths scaled in proportion to the latent lag.
SAME_WAVE_PATHS = ("ex_direct_cx", "ex_to_ops")
#: Latent lags of the effect sweep at a study's own design (0 = no EX -> CX effect).
SWEEP_EFFECTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
#: Latent lags of the planning grid (0.25 is the simulator's default).
GRID_EFFECTS = (0.1, 0.25)
#: Employees of the planning grid, as multiples of the study's own.
GRID_EMPLOYEES = (0.25, 0.5, 1.0, 2.0)
#: Waves of the planning grid (the study's own is added when >= 3).
GRID_WAVES = (3, 4, 6)
#: The tables a power simulation builds (customer outcomes are not needed).
_TABLES = ("employees", "ex_responses", "interactions", "cx_responses")
#: Id columns made unique per replicate when studies are linked together.
#: (customer ids may repeat across studies: the employee x wave panel never pools customers of different agents)
_IDS = {"employees": ("employee_id", "team_id", "site_id"), "ex_responses": ("employee_id",),
        "interactions": ("interaction_id", "employee_id"), "cx_responses": ("interaction_id",)}
_SEP = "|"
#: Simulated studies linked in one workspace (amortises the engine's fixed cost; same panels).
_BATCH = 12
_PARAM_HELP = {
    "n_employees": "employees (agents) in the study",
    "n_sites": "sites",
    "n_waves": "EX survey waves (each opens a CX period of wave_days days)",
    "teams_per_site": "teams per site (employees spread evenly over teams)",
    "interactions_per_wave": "interactions per employee and wave period (mean)",
    "cx_response_rate": "share of interactions with a customer survey answer",
    "ex_response_rate": "share of employees answering an EX wave (lower for low EX)",
    "ri_sd_ex": "SD of stable EX differences between employees (latent)",
    "ri_sd_cx": "SD of stable CX differences between employees (latent)",
    "ri_corr": "correlation of the stable EX and CX differences",
    "site_sd": "SD of site effects shared by EX and CX (latent)",
    "ar_ex": "persistence of EX from wave to wave (within employee)",
    "ar_cx": "persistence of CX from period to period (within employee)",
    "cx_to_ex": "CX -> EX lag (feedback, latent)",
    "insight_cx_to_ex": "CX -> EX lag per point of customer-insight access",
    "innov_sd_ex": "SD of new within-employee EX changes each wave (latent)",
    "innov_sd_cx": "SD of new within-employee CX changes each period (latent)",
    "interaction_sd": "SD of one interaction's CX around the agent's level (latent)",
    "cx_item_sd": "noise of one customer's answer (latent units)",
    "ex_item_sd": "noise of one employee's answer (latent units)",
    "cx_scale_sd": "latent spread the CSAT scale is calibrated to",
    "ex_scale_sd": "latent spread the eSat scale is calibrated to",
    "cm_halo": "common-method halo on the reported eSat (same-survey answers)",
    "cx_response_extremity": "how much more likely extreme experiences are rated",
    "ex_response_ex": "how much more likely high-EX employees answer",
    "attrition_rate": "share of employees leaving per wave period",
    "attrition_ex": "how much more likely low-EX employees leave",
    "spillover": "carry-over of one customer's experience to the agent's next",
    "ex_to_cx": "EX (wave w-1) -> CX (period w), latent: the effect varied",
    "ex_direct_cx": "same-wave EX -> CX path (scaled with the lag)",
    "ex_to_ops": "same-wave EX -> operations paths (scaled with the lag)",
}
#: Assumptions listed in reports (the rest of DEFAULT_PARAMS matters little for this test).
ASSUMPTIONS = ("ri_sd_ex", "ri_sd_cx", "ri_corr", "site_sd", "ar_ex", "ar_cx", "cx_to_ex", "innov_sd_ex",
               "innov_sd_cx", "interaction_sd", "cx_item_sd", "ex_item_sd", "cm_halo", "cx_response_extremity",
               "ex_response_ex", "attrition_rate", "attrition_ex", "ex_direct_cx", "ex_to_ops")


# =========================================================================== design
def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return v


def _canon(v: Any) -> str:
    return json.dumps(_jsonable(v), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, eq=False)
class Design:
    """A study design: size plus the simulator parameters it differs from the defaults in.

    Parameters
    ----------
    n_employees, n_waves, n_sites : int
        Study size (employees are spread evenly over ``n_sites x teams_per_site`` teams).
    params : mapping
        Simulator parameters (:data:`cxex_lab.simulate.DEFAULT_PARAMS`); values
        equal to the defaults are dropped, so equal designs have equal keys.
        ``ex_to_cx`` sets the reference for scaling the same-wave paths (see the
        module notes); the effect itself is chosen per cell.
    site_effects : sequence of float, optional
        Fixed latent site effects (as the replicate-study harness holds them);
        default drawn per simulated study.

    Examples
    --------
    >>> Design().key() == Design(400, 6, 10, {"teams_per_site": 4}).key()
    True
    >>> Design(100, 3).n_teams
    40
    """

    n_employees: int = 400
    n_waves: int = 6
    n_sites: int = 10
    params: Mapping[str, Any] = field(default_factory=dict)
    site_effects: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("n_employees", "n_waves", "n_sites"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Design: {name} must be a positive integer, got {v!r}.")
            object.__setattr__(self, name, int(v))
        params = dict(self.params or {})
        unknown = sorted(set(params) - set(DEFAULT_PARAMS))
        if unknown:
            raise ValueError(f"Design: unknown simulator parameter(s) {unknown}; valid: {sorted(DEFAULT_PARAMS)}.")
        merged = self._merged(params)
        if merged["ex_to_cx"] == 0:
            raise ValueError("Design: params['ex_to_cx'] must not be 0: it is the reference the same-wave paths are "
                             "scaled by (pass the effect to power(), not in the design).")
        tps = merged["teams_per_site"]
        if not isinstance(tps, (int, np.integer)) or tps < 1:
            raise ValueError(f"Design: teams_per_site must be a positive integer, got {tps!r}.")
        canon = {k: _jsonable(v) for k, v in params.items() if _canon(v) != _canon(DEFAULT_PARAMS[k])}
        object.__setattr__(self, "params", canon)
        if self.site_effects is not None:
            se = tuple(float(x) for x in self.site_effects)
            if len(se) != self.n_sites:
                raise ValueError(f"Design: site_effects has {len(se)} values for {self.n_sites} sites.")
            object.__setattr__(self, "site_effects", se)

    @staticmethod
    def _merged(params: Mapping[str, Any]) -> dict[str, Any]:
        out = json.loads(_canon(DEFAULT_PARAMS))
        for k, v in params.items():
            if isinstance(DEFAULT_PARAMS[k], dict) and isinstance(v, Mapping):
                out[k] = {**out[k], **_jsonable(v)}
            else:
                out[k] = _jsonable(v)
        return out

    # ---------------------------------------------------------------- facts
    @property
    def merged(self) -> dict[str, Any]:
        """Every simulator parameter (defaults with this design's values)."""
        return self._merged(self.params)

    @property
    def teams_per_site(self) -> int:
        return int(self.merged["teams_per_site"])

    @property
    def n_teams(self) -> int:
        return self.n_sites * self.teams_per_site

    @property
    def team_size(self) -> float:
        return self.n_employees / self.n_teams

    def as_dict(self) -> dict[str, Any]:
        return {"n_employees": self.n_employees, "n_waves": self.n_waves, "n_sites": self.n_sites,
                "params": dict(self.params), "site_effects": list(self.site_effects) if self.site_effects else None}

    def key(self) -> str:
        """Canonical JSON of the design (equal designs, equal keys)."""
        return _canon(self.as_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Design) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        extra = f", params={dict(self.params)}" if self.params else ""
        fixed = ", site effects fixed" if self.site_effects else ""
        return f"Design({self.n_employees} employees, {self.n_waves} waves, {self.n_sites} sites{extra}{fixed})"

    # ---------------------------------------------------------------- variants
    def with_size(self, n_employees: int | None = None, n_waves: int | None = None) -> "Design":
        """The same design with other employees (team size kept: more or fewer teams per site) or waves."""
        params = dict(self.params)
        n_emp = self.n_employees if n_employees is None else int(n_employees)
        if n_employees is not None and n_emp != self.n_employees:
            params["teams_per_site"] = max(1, int(round(n_emp / (self.n_sites * self.team_size))))
        return Design(n_emp, self.n_waves if n_waves is None else int(n_waves), self.n_sites, params,
                      self.site_effects)

    def simulator_kwargs(self, effect: float) -> dict[str, Any]:
        """Keyword arguments of :func:`cxex_lab.simulate.simulate_study` for a latent lag ``effect``."""
        p = self.merged
        m = float(effect) / float(p["ex_to_cx"])
        kw = dict(self.params)
        kw["ex_to_cx"] = float(effect)
        kw["ex_direct_cx"] = float(p["ex_direct_cx"]) * m
        kw["ex_to_ops"] = {k: float(v) * m for k, v in p["ex_to_ops"].items()}
        return {"n_sites": self.n_sites, "n_employees": self.n_employees, "n_waves": self.n_waves,
                "site_effects": list(self.site_effects) if self.site_effects else None, **kw}

    def table(self, measured: Iterable[str] = ()) -> pd.DataFrame:
        """The parameters the power rests on: ``parameter, meaning, value, source``.

        ``measured`` names the parameters taken from the study (see
        :func:`design_of`); the others read "assumed (simulator default)" or
        "assumed (set)".
        """
        measured = set(measured)
        p = self.merged
        rows = [{"parameter": "n_employees", "value": self.n_employees},
                {"parameter": "n_sites", "value": self.n_sites},
                {"parameter": "n_waves", "value": self.n_waves}]
        rows += [{"parameter": k, "value": p[k]} for k in MEASURED]
        rows += [{"parameter": k, "value": p[k]} for k in ASSUMPTIONS]
        out = []
        for r in rows:
            k = r["parameter"]
            v = r["value"]
            if isinstance(v, Mapping):
                v = ", ".join(f"{kk} {vv:g}" for kk, vv in v.items())
            elif isinstance(v, float):
                v = f"{v:g}"
            if k in measured or k in ("n_employees", "n_sites", "n_waves") and measured:
                src = "this study"
            elif k in SAME_WAVE_PATHS:
                src = "assumed, scaled with the effect"
            elif k in self.params:
                src = "assumed (set)"
            else:
                src = "assumed (default)"
            out.append({"parameter": k, "meaning": _PARAM_HELP.get(k, k), "value": str(v), "source": src})
        return pd.DataFrame(out)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_truth(cls, truth: Mapping[str, Any], fixed_sites: bool = True) -> "Design":
        """The design of a simulated study from its truth record (e.g. ``data/sample/truth.json``).

        With ``fixed_sites`` the realised site effects are held fixed (as the
        replicate-study harness does).
        """
        st = truth["study"]
        params = {k: v for k, v in dict(truth.get("params", {})).items() if k in DEFAULT_PARAMS}
        ref = float(params.get("ex_to_cx", DEFAULT_PARAMS["ex_to_cx"])) or float(DEFAULT_PARAMS["ex_to_cx"])
        params["ex_to_cx"] = ref
        se = None
        if fixed_sites and st.get("site_effects") is not None:
            raw = st["site_effects"]
            se = [float(v) for _, v in sorted(dict(raw).items())] if isinstance(raw, Mapping) else [float(v) for v in raw]
        return cls(int(st["n_employees"]), int(st["n_waves"]), int(st["n_sites"]), params, se)


def design_of(ws: Any) -> tuple[Design, dict[str, Any]]:
    """The design of a study, measured from its workspace, and the facts it was measured from.

    Measured: employees, sites and teams (``ws.employees``), EX waves,
    interactions per employee and wave period, and the EX and CX response rates
    (``ws.response_rates()``). The EX rate is turned into the simulator's
    parameter that reproduces it (low-EX employees answer less, see
    :func:`_ex_response_param`). Values are rounded (interactions to 5, rates
    to 0.05) so that studies of about the same design share a cached power
    grid. Every other parameter is the simulator's default (an assumption).

    Returns
    -------
    (Design, dict)
        The design, and ``facts``: the unrounded measurements and ``measured``
        (the parameter names taken from the study).
    """
    emp = ws.employees
    n_emp = int(emp["employee_id"].nunique())
    n_sites = int(emp["site_id"].nunique()) if "site_id" in emp.columns and emp["site_id"].notna().any() else 1
    n_teams = int(emp["team_id"].nunique()) if "team_id" in emp.columns and emp["team_id"].notna().any() else 1
    ex = ws.ex_responses
    n_waves = int(ex["wave"].nunique()) if len(ex) else 0
    rates = ws.response_rates()
    ex_r = rates[(rates["side"] == "EX") & (rates["wave"] > 0)]
    cx_r = rates[(rates["side"] == "CX") & (rates["wave"] > 0)]
    ex_rate = float(ex_r["responded"].sum() / ex_r["eligible"].sum()) if ex_r["eligible"].sum() else math.nan
    cx_rate = float(cx_r["responded"].sum() / cx_r["eligible"].sum()) if cx_r["eligible"].sum() else math.nan
    ipw = float(cx_r["eligible"].sum() / ex_r["eligible"].sum()) if ex_r["eligible"].sum() else math.nan
    facts = {"employees": n_emp, "sites": n_sites, "teams": n_teams, "waves": n_waves,
             "interactions_per_wave": ipw, "cx_response_rate": cx_rate, "ex_response_rate": ex_rate,
             "measured": list(MEASURED)}

    def r(x: float, step: float, lo: float) -> float:
        return max(lo, round(round(x / step) * step, 6)) if np.isfinite(x) else lo

    params = {"teams_per_site": max(1, int(round(n_teams / max(n_sites, 1)))),
              "interactions_per_wave": r(ipw, 5.0, 5.0),
              "cx_response_rate": min(1.0, r(cx_rate, 0.05, 0.0))}
    ex_param = _ex_response_param(ex_rate, max(n_sites, 1), max(n_waves, 1), params)
    params["ex_response_rate"] = min(0.95, r(ex_param, 0.05, 0.05))
    facts["ex_response_param"] = ex_param
    return Design(max(n_emp, 1), max(n_waves, 1), max(n_sites, 1), params), facts


def _ex_response_param(rate: float, n_sites: int, n_waves: int, params: Mapping[str, Any]) -> float:
    """The simulator's ``ex_response_rate`` at which its employees answer at ``rate``.

    The simulator's answer probability is ``expit(logit(ex_response_rate) +
    ex_response_ex * (EX - mu_ex))``: low-EX employees answer less, so the
    realised rate is below the parameter (0.82 at 0.85 by default). Solved on
    the latent EX of active employee-waves of one fixed-seed panel-only study
    of 2,000 employees (the other parameters at the design's values).
    """
    from scipy.optimize import brentq
    from scipy.special import expit, logit

    from cxex_lab.simulate import simulate_study

    if not np.isfinite(rate) or rate <= 0:
        return float(DEFAULT_PARAMS["ex_response_rate"])
    rate = min(float(rate), 0.99)
    st = simulate_study(n_sites=n_sites, n_employees=2000, n_waves=max(n_waves, 1), seed=20_260_808, latent=True,
                        tables=("employees", "ex_responses"), **dict(params))
    merged = Design._merged(params)
    lw = st.latent["employee_waves"]
    x = (lw.loc[lw["active"].astype(bool), "ex"].to_numpy(float) - float(merged["mu_ex"])) * float(merged["ex_response_ex"])

    def gap(p: float) -> float:
        return float(expit(logit(p) + x).mean()) - rate

    lo, hi = 1e-4, 1 - 1e-4
    if gap(hi) < 0:
        return hi
    if gap(lo) > 0:
        return lo
    return float(brentq(gap, lo, hi, xtol=1e-6))


# =========================================================================== cache
def default_cache_dir() -> Path:
    """Where computed cells are cached: ``$CXEX_LAB_POWER_CACHE`` or ``~/.cache/cxex-lab/power``."""
    env = os.environ.get("CXEX_LAB_POWER_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cxex-lab" / "power"


def _version() -> str:
    from cxex_lab import __version__

    return str(__version__)


def _cell_id(design: Design, effect: float, seed: int) -> str:
    """Hash of what a cell's simulations depend on (design, latent effect, seed, recipe)."""
    text = _canon({"design": design.as_dict(), "effect": round(float(effect), 10), "seed": int(seed), "schema": SCHEMA})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cache_key(cell: str) -> str:
    return f"{cell}-v{_version()}"


@dataclass
class _Cell:
    design: Design
    effect: float
    seed: int
    estimate: list[float] = field(default_factory=list)
    se: list[float] = field(default_factory=list)
    p: list[float] = field(default_factory=list)
    n_failed: int = 0
    seconds: float = 0.0
    source: str = "computed"

    @property
    def id(self) -> str:
        return _cell_id(self.design, self.effect, self.seed)

    @property
    def n_attempted(self) -> int:
        return len(self.p) + self.n_failed

    def record(self) -> dict[str, Any]:
        def r(v: float) -> float:
            return float(f"{v:.6g}")

        return {"design": self.design.as_dict(), "effect": self.effect, "seed": self.seed, "schema": SCHEMA,
                "version": _version(), "n_failed": self.n_failed, "seconds": round(self.seconds, 2),
                "estimate": [r(v) for v in self.estimate], "se": [r(v) for v in self.se],
                "p": [float(f"{v:.4g}") for v in self.p]}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], source: str) -> "_Cell":
        d = rec["design"]
        design = Design(d["n_employees"], d["n_waves"], d["n_sites"], d.get("params") or {}, d.get("site_effects"))
        return cls(design, float(rec["effect"]), int(rec["seed"]), list(rec["estimate"]), list(rec["se"]),
                   list(rec["p"]), int(rec["n_failed"]), float(rec.get("seconds", 0.0)), source)


def _package_cells() -> dict[str, dict]:
    try:
        text = resources.files("cxex_lab").joinpath("data/power_grid.json").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    data = json.loads(text)
    if data.get("schema") != SCHEMA or data.get("version") != _version():
        return {}
    return dict(data.get("cells", {}))


_PACKAGE: dict[str, dict] | None = None


def _lookup(cell_id: str, cache_dir: Path | None) -> _Cell | None:
    """The cached cell with the most simulations (package data or the user cache), or None."""
    global _PACKAGE
    if _PACKAGE is None:
        _PACKAGE = _package_cells()
    best = None
    key = _cache_key(cell_id)
    if key in _PACKAGE:
        best = _Cell.from_record(_PACKAGE[key], "shipped with the package")
    if cache_dir is not None:
        f = cache_dir / f"{key}.json"
        if f.exists():
            try:
                c = _Cell.from_record(json.loads(f.read_text()), "cache")
            except (ValueError, KeyError, TypeError):
                c = None
            if c is not None and (best is None or c.n_attempted > best.n_attempted):
                best = c
    return best


def _store(cell: _Cell, cache_dir: Path | None) -> None:
    if cache_dir is None:
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{_cache_key(cell.id)}.json"
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(cell.record(), fh)
    os.replace(tmp, target)


# =========================================================================== one batch of simulated studies
def _stack(studies: Sequence[Any]) -> Any:
    """One Study holding several simulated studies, ids made unique per study (``r<j>|<id>``)."""
    from cxex_lab.study import Study

    out = {}
    for name in _TABLES:
        parts = []
        for j, s in enumerate(studies):
            t = getattr(s, name).copy()
            for c in _IDS[name]:
                t[c] = f"r{j}{_SEP}" + t[c].astype(str)
            parts.append(t)
        out[name] = pd.concat(parts, ignore_index=True)
    out["customer_outcomes"] = studies[0].customer_outcomes
    # openings=None: the workspace applies the contract's rule (a wave opens on the day of its first
    # answer) to the stacked answers; stacked studies share their opening days (see linked_panels)
    return Study(**out)


def _split(panel: pd.DataFrame) -> dict[int, pd.DataFrame]:
    rep = panel["employee_id"].str.split(_SEP, n=1, regex=False).str[0].str[1:].astype(int)
    out = {}
    for j, g in panel.groupby(rep, sort=True):
        g = g.copy()
        for c in ("employee_id", "team_id", "site_id"):
            g[c] = g[c].str.split(_SEP, n=1, regex=False).str[1]
        out[int(j)] = g.reset_index(drop=True)
    return out


def linked_panels(studies: Sequence[Any]) -> list[pd.DataFrame]:
    """The employee x wave panel of each study, linked in one workspace per wave calendar.

    Studies with the same wave openings are stacked (ids prefixed per study)
    and linked once by the report's own path (``Workspace.from_study(...,
    validate=False)`` + :func:`cxex_lab.findings.employee_wave_panel`); the
    panel is split back by study. The linkage works per employee and period,
    so this equals linking each study alone (tested) at a fraction of the
    engine's fixed cost.
    """
    from cxex_lab.findings import employee_wave_panel
    from cxex_lab.workspace import Workspace

    groups: dict[tuple, list[int]] = {}
    for j, s in enumerate(studies):
        # group by the first answer's day per wave (what the contract's opening rule reads), so that
        # the rule applied to a group's stacked answers gives each study its own openings
        ex = s.ex_responses
        first = ex.groupby("wave")["responded_at"].min().dt.floor("D")
        groups.setdefault(tuple(first.items()), []).append(j)
    out: dict[int, pd.DataFrame] = {}
    for idx in groups.values():
        stacked = _stack([studies[j] for j in idx])
        ws = Workspace.from_study(stacked, validate=False)
        try:
            with contextlib.suppress(Exception):
                ws.con.raw_sql("SET threads = 1")
            panel = employee_wave_panel(ws)
        finally:
            ws.close()
        parts = _split(panel)
        for local, j in enumerate(idx):
            out[j] = parts.get(local, panel.iloc[0:0])
    return [out[j] for j in range(len(studies))]


def _run_batch(task: tuple) -> tuple[str, list[tuple[int, float, float, float]], int, float]:
    """Simulate, link and fit the studies ``indices`` of one cell (runs in a worker process)."""
    from cxex_lab.findings import headline_effect
    from cxex_lab.results import quietly
    from cxex_lab.simulate import simulate_study

    cell_id, design_dict, effect, seed, indices, alpha = task
    t0 = time.perf_counter()
    d = design_dict
    design = Design(d["n_employees"], d["n_waves"], d["n_sites"], d.get("params") or {}, d.get("site_effects"))
    kw = design.simulator_kwargs(effect)
    spawn = int(cell_id[:15], 16)
    results: list[tuple[int, float, float, float]] = []
    failed = 0
    with quietly():
        studies = [simulate_study(seed=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(spawn, i))),
                                  tables=_TABLES, **kw) for i in indices]
        panels = linked_panels(studies)
        for i, panel in zip(indices, panels):
            try:
                res = headline_effect(panel, alpha=alpha)
                row = res.table.iloc[0]
                est, se, p = float(row["estimate"]), float(row["se"]), float(row["p"])
            except (ValueError, np.linalg.LinAlgError, KeyError, IndexError):
                failed += 1
                continue
            if not (np.isfinite(est) and np.isfinite(se) and np.isfinite(p)):
                failed += 1
                continue
            results.append((i, est, se, p))
    return cell_id, results, failed, time.perf_counter() - t0


@contextlib.contextmanager
def _single_threaded_children() -> Iterable[None]:
    """Worker processes inherit one BLAS / OpenMP thread each (the pool gives the parallelism)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    old = {n: os.environ.get(n) for n in names}
    for n in names:
        os.environ[n] = "1"
    try:
        yield
    finally:
        for n, v in old.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def _execute(tasks: list[tuple], jobs: int, progress: Callable[[int, int], None] | None) -> Iterable[tuple]:
    total = sum(len(t[4]) for t in tasks)
    done = 0
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            out = _run_batch(t)
            done += len(t[4])
            if progress:
                progress(done, total)
            yield out
        return
    # spawn: safe in a Jupyter kernel whose DuckDB threads a fork could inherit mid-lock
    with _single_threaded_children(), cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_batch, t) for t in tasks]
        for fut in cf.as_completed(futures):
            out = fut.result()
            done += len(out[1]) + out[2]
            if progress:
                progress(done, total)
            yield out


# =========================================================================== time
#: Seconds per simulated study on one core of the reference machine (2 cores, shared):
#: a fixed part plus a part proportional to employee-waves x interactions (measured, see README).
_SEC_FIXED = 0.12
_SEC_PER_UNIT = 0.45  # per default study (400 employees x 6 waves x 50 interactions)


def _study_seconds(design: Design) -> float:
    size = design.n_employees * design.n_waves * float(design.merged["interactions_per_wave"]) / (400 * 6 * 50)
    return _SEC_FIXED + _SEC_PER_UNIT * size


def seconds_needed(work: Iterable[tuple[Design, int]], jobs: int | None = None) -> float:
    """Estimated wall seconds to simulate ``n`` studies of each design, on ``jobs`` processes."""
    jobs = _jobs(jobs)
    total = sum(_study_seconds(d) * n for d, n in work)
    return total / jobs + (3.0 if jobs > 1 and total > 0 else 0.0)


def _jobs(jobs: int | None) -> int:
    if jobs is None:
        return max(1, os.cpu_count() or 1)
    if not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"power: jobs must be a positive integer, got {jobs!r}.")
    return int(jobs)


# =========================================================================== the grid
def _wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n."""
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


def _summary(cell: _Cell, alpha: float) -> dict[str, Any]:
    p = np.asarray(cell.p, float)
    est = np.asarray(cell.estimate, float)
    se = np.asarray(cell.se, float)
    n_ok = len(p)
    k = int((p < alpha).sum())
    lo, hi = _wilson(k, n_ok)
    d = cell.design
    return {
        "n_employees": d.n_employees, "n_waves": d.n_waves, "n_sites": d.n_sites, "n_teams": d.n_teams,
        "effect": cell.effect,
        "effect_observed": float(est.mean()) if n_ok else np.nan,
        "effect_observed_sd": float(est.std(ddof=1)) if n_ok > 1 else np.nan,
        "mean_se": float(se.mean()) if n_ok else np.nan,
        "power": k / n_ok if n_ok else np.nan, "power_ci_low": lo, "power_ci_high": hi,
        "n_sims": n_ok, "n_failed": cell.n_failed, "source": cell.source if n_ok or cell.n_failed else "missing",
        "seconds": cell.seconds,
    }


def _as_list(value: Any, name: str, kind: type) -> list:
    vals = list(value) if isinstance(value, (list, tuple, np.ndarray, pd.Series)) else [value]
    if not vals:
        raise ValueError(f"power: {name} must not be empty.")
    for v in vals:
        if kind is int and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)):
            raise ValueError(f"power: {name} must be an integer or a list of integers, got {v!r}.")
        if kind is float and (not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool)
                              or not np.isfinite(v)):
            raise ValueError(f"power: {name} must be a number or a list of numbers, got {v!r}.")
    return vals


def _cells(designs: Sequence[Design], effects: Sequence[float], n_sims: int | Sequence[int], seed: int,
           cache_dir: Path | None) -> list[tuple[_Cell, int]]:
    """Each (design, effect) cell as cached so far, with the number of simulations it still needs."""
    sims = list(n_sims) if isinstance(n_sims, (list, tuple)) else [n_sims] * len(effects)
    out = []
    seen = set()
    for d in designs:
        for e, n in zip(effects, sims):
            cid = _cell_id(d, e, seed)
            if cid in seen:
                continue
            seen.add(cid)
            cached = _lookup(cid, cache_dir)
            cell = cached or _Cell(d, float(e), int(seed), source="missing")
            out.append((cell, max(0, int(n) - cell.n_attempted)))
    return out


def _compute(cells: list[tuple[_Cell, int]], alpha: float, jobs: int, cache_dir: Path | None,
             progress: Callable[[int, int], None] | None) -> None:
    tasks = []
    by_id = {}
    for cell, need in cells:
        if need <= 0:
            continue
        by_id[cell.id] = cell
        start = cell.n_attempted
        idx = list(range(start, start + need))
        size = max(1, min(_BATCH, math.ceil(need / max(1, jobs))))
        for k in range(0, len(idx), size):
            tasks.append((cell.id, cell.design.as_dict(), cell.effect, cell.seed, idx[k:k + size], alpha))
    if not tasks:
        return
    # large studies first: the pool ends with small tasks and both processes stay busy
    tasks.sort(key=lambda t: -t[1]["n_employees"] * t[1]["n_waves"])
    pending: dict[str, list] = {cid: [] for cid in by_id}
    remaining = {cid: sum(len(t[4]) for t in tasks if t[0] == cid) for cid in by_id}
    for cid, results, failed, secs in _execute(tasks, jobs, progress):
        cell = by_id[cid]
        pending[cid].extend(results)
        cell.n_failed += failed
        cell.seconds += secs
        remaining[cid] -= len(results) + failed
        if remaining[cid] == 0:
            for _, est, se, p in sorted(pending[cid]):
                cell.estimate.append(est)
                cell.se.append(se)
                cell.p.append(p)
            cell.source = "computed" if cell.source == "missing" else cell.source + " + computed"
            _store(cell, cache_dir)


def power(
    design: Design | None = None,
    *,
    n_employees: int | Sequence[int] | None = None,
    n_waves: int | Sequence[int] | None = None,
    effect: float | Sequence[float] = 0.25,
    n_sims: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    jobs: int | None = None,
    cache: bool | str | Path = True,
    compute: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> pd.DataFrame:
    r"""Simulated power of the within-employee headline test, on the observed pipeline.

    Parameters
    ----------
    design : Design, optional
        The base design (default: the simulator's default study, 400 employees
        in 10 sites of 4 teams, 6 waves; ``**params`` are added to it).
    n_employees, n_waves : int or list of int, optional
        Sizes to evaluate (default: the design's). Other employee counts keep
        the design's team size (more or fewer teams per site).
    effect : float or list of float
        Latent within-employee lag EX (wave w-1) -> CX (period w); the same-wave
        paths are scaled with it (module notes). 0 = no EX -> CX effect.
    n_sims : int
        Simulated studies per cell (at least; a cached cell with more is used
        in full).
    alpha : float
        Two-sided level of the headline test (its interval excludes 0).
    seed : int
        Base seed (simulation i of a cell: ``SeedSequence(seed, spawn_key=(cell, i))``).
    jobs : int, optional
        Worker processes (default: all cores).
    cache : bool or path
        True: the user cache (:func:`default_cache_dir`); a path: that folder;
        False: no user cache (the package's shipped grid is still read).
    compute : bool
        False: only what is cached; missing cells come back with ``n_sims`` 0
        (see :func:`seconds_needed` for what computing them would take).
    progress : callable, optional
        ``progress(done, total)`` after each batch of studies.
    **params
        Simulator parameters for the default design (ignored with ``design``).

    Returns
    -------
    DataFrame
        One row per ``n_employees x n_waves x effect``: ``n_employees,
        n_waves, n_sites, n_teams, effect`` (latent), ``effect_observed`` (mean
        headline estimate, CSAT points per eSat point), ``effect_observed_sd``
        (its SD over studies), ``mean_se``, ``power`` with its 95% Wilson
        interval ``power_ci_low, power_ci_high`` (Monte Carlo), ``n_sims``
        (successful fits), ``n_failed``, ``source`` (shipped with the package,
        cache, computed, missing) and ``seconds`` (compute time of the cell).

    Notes
    -----
    At ``effect=0`` the power column is the test's type-I error rate (nominal
    ``alpha``): its interval is within about ±2 points with 460 simulations
    (:func:`type_one` adds simulations until it is).

    Examples
    --------
    >>> tab = power(Design(60, 3, 2), effect=[0.0, 0.4], n_sims=4, jobs=1, cache=False)
    >>> tab[["n_employees", "n_waves", "effect", "n_sims"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'n_employees': 60, 'n_waves': 3, 'effect': 0.0, 'n_sims': 4},
     {'n_employees': 60, 'n_waves': 3, 'effect': 0.4, 'n_sims': 4}]
    """
    base = design if design is not None else Design(params=params)
    if design is not None and params:
        raise ValueError(f"power: pass simulator parameters in the Design, not as keywords ({sorted(params)}).")
    emps = _as_list(base.n_employees if n_employees is None else n_employees, "n_employees", int)
    waves = _as_list(base.n_waves if n_waves is None else n_waves, "n_waves", int)
    effects = [float(e) for e in _as_list(effect, "effect", float)]
    if any(w < 3 for w in waves):
        raise ValueError(f"power: the headline (one lag with wave effects) needs n_waves >= 3, got {waves}.")
    if any(e < 2 for e in emps):
        raise ValueError(f"power: n_employees must be at least 2, got {emps}.")
    if not isinstance(n_sims, (int, np.integer)) or isinstance(n_sims, bool) or n_sims < 1:
        raise ValueError(f"power: n_sims must be a positive integer, got {n_sims!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"power: alpha must be between 0 and 1, got {alpha!r}.")
    cache_dir = _cache_dir(cache)
    designs = [base.with_size(n, w) for n, w in itertools.product(emps, waves)]
    cells = _cells(designs, effects, int(n_sims), int(seed), cache_dir)
    if compute:
        _compute(cells, alpha, _jobs(jobs), cache_dir, progress)
    by_id = {c.id: c for c, _ in cells}
    rows = [_summary(by_id[_cell_id(d, e, seed)], alpha) for d in designs for e in effects]
    out = pd.DataFrame(rows)
    if compute and len(out) and (out["n_sims"] == 0).all():
        warnings.warn("power: every simulated fit failed; check the design.", RuntimeWarning, stacklevel=2)
    return out


def _cache_dir(cache: bool | str | Path) -> Path | None:
    if cache is True:
        return default_cache_dir()
    if cache is False or cache is None:
        return None
    return Path(cache)


def _missing_work(design: Design, tab: pd.DataFrame, n_sims: int) -> list[tuple[Design, int]]:
    work = []
    for r in tab.itertuples(index=False):
        need = n_sims - int(r.n_sims) - int(r.n_failed)
        if need > 0:
            work.append((design.with_size(int(r.n_employees), int(r.n_waves)), need))
    return work


def type_one(design: Design | None = None, *, n_sims: int = 500, halfwidth: float = 0.02, max_sims: int = 4000,
             alpha: float = 0.05, seed: int = 0, jobs: int | None = None, cache: bool | str | Path = True,
             compute: bool = True, progress: Callable[[int, int], None] | None = None) -> pd.Series:
    """The headline test's type-I error rate at a design (effect 0), to within ±``halfwidth``.

    Runs ``n_sims`` studies without an EX -> CX effect, then adds simulations
    until the 95% Wilson interval of the rejection rate is within
    ±``halfwidth`` (about 460 at a rate of 5%, more when it is higher), at
    most ``max_sims``. Returns the :func:`power` row (``power`` = the rate).
    """
    design = design or Design()
    n = int(n_sims)
    while True:
        row = power(design, effect=0.0, n_sims=n, alpha=alpha, seed=seed, jobs=jobs, cache=cache, compute=compute,
                    progress=progress).iloc[0]
        if not compute or row["n_sims"] == 0:
            return row
        half = (row["power_ci_high"] - row["power_ci_low"]) / 2
        if half <= halfwidth or n >= max_sims:
            return row
        rate = max(float(row["power"]), alpha)
        need = math.ceil(1.1 * stats.norm.ppf(0.975) ** 2 * rate * (1 - rate) / halfwidth**2)
        n = min(max_sims, max(need, n + 50))


def power_at_truth(truth: Mapping[str, Any], *, n_sims: int = 200, alpha: float = 0.05, seed: int = 0,
                   jobs: int | None = None, cache: bool | str | Path = True,
                   progress: Callable[[int, int], None] | None = None) -> pd.Series:
    """Simulated power of the headline test for a simulated study's own design and true effect.

    What the replicate-study harness compares with the headline's rejection rate
    across replicate studies of the sample (``benchmarks/coverage.py``: site
    effects fixed, everything else redrawn): :func:`power` at
    ``Design.from_truth(truth)`` and the study's latent ``ex_to_cx``.

    Returns
    -------
    Series
        The :func:`power` row: ``power`` with its 95% Wilson interval
        ``power_ci_low, power_ci_high`` (Monte Carlo), ``effect_observed`` (the
        mean headline estimate), ``n_sims``.
    """
    design = Design.from_truth(truth, fixed_sites=True)
    effect = float(dict(truth.get("params", {})).get("ex_to_cx", DEFAULT_PARAMS["ex_to_cx"]))
    return power(design, effect=effect, n_sims=n_sims, alpha=alpha, seed=seed, jobs=jobs, cache=cache,
                 progress=progress).iloc[0]


# =========================================================================== what a report needs
@dataclass
class PowerReport:
    """Power at a study's own design and for planning the next one (see :func:`power_report`).

    Attributes
    ----------
    design : Design
        The study's own design.
    own : DataFrame
        The effect sweep at the design (a :func:`power` table; effect 0 is the
        type-I rate).
    type_one : Series or None
        The effect-0 row, with at least enough simulations for ±2 points.
    grid : DataFrame
        The planning grid: employees x waves x effects.
    missing_studies : int
        Simulated studies still to run (0 when everything was computed or cached).
    seconds_needed : float
        Estimated wall time to run them.
    notes : list of str
    """

    design: Design
    own: pd.DataFrame
    type_one: pd.Series | None
    grid: pd.DataFrame
    missing_studies: int = 0
    seconds_needed: float = 0.0
    notes: list[str] = field(default_factory=list)

    def mapping(self) -> tuple[float, float]:
        """``(a, b)``: the observed slope a latent effect produces, ``a + b * effect``.

        Least squares of the cells' mean headline estimates on their latent
        effects (weighted by their simulations): the mean is linear in the
        effect, and the fit smooths the Monte Carlo noise of each cell.
        """
        if self.own.empty:
            return math.nan, math.nan
        own = self.own[self.own["n_sims"] > 0]
        if own["effect"].nunique() < 2:
            return math.nan, math.nan
        w = own["n_sims"].to_numpy(float)
        x, y = own["effect"].to_numpy(float), own["effect_observed"].to_numpy(float)
        xm, ym = np.average(x, weights=w), np.average(y, weights=w)
        b = float(np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2))
        return float(ym - b * xm), b

    def at_observed(self, slope: float) -> dict[str, float]:
        """Power at the design to detect an effect whose mean observed slope is ``slope``.

        The latent effect giving that slope (:meth:`mapping`, sign ignored: the
        test is two-sided), then power and its interval interpolated linearly
        between the sweep's latent effects. Returns ``power, power_ci_low,
        power_ci_high, effect`` (latent) and ``beyond`` (True when the effect
        is larger than the sweep's largest: its power is then a lower bound).
        """
        nan = {"power": np.nan, "power_ci_low": np.nan, "power_ci_high": np.nan, "effect": np.nan, "beyond": False}
        if self.own.empty:
            return nan
        own = self.own[self.own["n_sims"] > 0].sort_values("effect")
        a, b = self.mapping()
        if len(own) < 2 or not np.isfinite(slope) or not np.isfinite(b) or b <= 0:
            return nan
        latent = max(0.0, (abs(float(slope)) - a) / b)
        x = own["effect"].to_numpy(float)
        out = {c: float(np.interp(latent, x, own[c].to_numpy(float))) for c in ("power", "power_ci_low",
                                                                                "power_ci_high")}
        out["effect"] = latent
        out["beyond"] = bool(latent > x.max())
        return out

    def detectable(self, target: float = 0.8) -> dict[str, float]:
        """The smallest effect detected with power ``target``: latent (interpolated) and observed (:meth:`mapping`)."""
        if self.own.empty:
            return {"effect": np.nan, "effect_observed": np.nan, "at_most": False}
        own = self.own[(self.own["n_sims"] > 0) & (self.own["effect"] > 0)].sort_values("effect")
        pw = own["power"].to_numpy(float)
        a, b = self.mapping()
        if len(own) < 1 or not (pw >= target).any() or not np.isfinite(b):
            return {"effect": np.nan, "effect_observed": np.nan, "at_most": False}
        i = int(np.argmax(pw >= target))
        if i == 0:
            e = float(own["effect"].iloc[0])
            return {"effect": e, "effect_observed": a + b * e, "at_most": True}
        e = float(np.interp(target, pw[i - 1:i + 1], own["effect"].to_numpy(float)[i - 1:i + 1]))
        return {"effect": e, "effect_observed": a + b * e, "at_most": False}


def _grid_sizes(design: Design, employees: Sequence[int] | None, waves: Sequence[int] | None) -> tuple[list, list]:
    if employees is None:
        emps = sorted({max(2, int(round(design.n_employees * f))) for f in GRID_EMPLOYEES})
        emps = [n for n in emps if n >= 10 and design.with_size(n).n_teams >= 2] or [design.n_employees]
    else:
        emps = [int(n) for n in employees]
    if waves is None:
        ws = sorted(set(GRID_WAVES) | ({design.n_waves} if design.n_waves >= 3 else set()))
    else:
        ws = [int(w) for w in waves]
    return emps, [w for w in ws if w >= 3]


def power_report(design: Design, *, n_sims: int = 200, null_sims: int = 500, effects: Sequence[float] = SWEEP_EFFECTS,
                 grid_effects: Sequence[float] = GRID_EFFECTS, employees: Sequence[int] | None = None,
                 waves: Sequence[int] | None = None, alpha: float = 0.05, seed: int = 0, jobs: int | None = None,
                 cache: bool | str | Path = True, compute: bool = True, max_seconds: float | None = None,
                 type1_halfwidth: float = 0.02, progress: Callable[[int, int], None] | None = None,
                 grid_sims: int = 100) -> PowerReport:
    """Everything report 08 shows about power, read from the cache and computed where missing.

    * the **effect sweep** at the study's own design (``effects``, ``n_sims``
      each; effect 0 with at least ``null_sims`` and enough for a type-I
      interval within ±``type1_halfwidth``, 2 points by default);
    * the **planning grid**: employees (default 0.25x, 0.5x, 1x, 2x the
      study's, same team size) x waves (3, 4, 6 and the study's) x
      ``grid_effects``, ``grid_sims`` each (100 by default: the grid is for
      planning, and each cell's power carries its Wilson interval; a cell
      of the grid that is also in the sweep uses the sweep's simulations).

    With ``compute=False``, or when the missing simulations would take longer
    than ``max_seconds`` (estimated by :func:`seconds_needed`), nothing is
    simulated: the report holds what is cached and says what is missing, how
    long it would take, and the command that computes it
    (``cxex-lab power --data DIR``).
    """
    notes: list[str] = []
    kw = dict(alpha=alpha, seed=seed, jobs=jobs, cache=cache)
    own_ok = design.n_waves >= 3
    emps, ws = _grid_sizes(design, employees, waves)
    effects = [float(e) for e in effects]
    if 0.0 not in effects:
        effects = [0.0, *effects]
    # what is cached
    own = power(design, effect=effects, n_sims=n_sims, compute=False, **kw) if own_ok else pd.DataFrame()
    grid = power(design, n_employees=emps, n_waves=ws, effect=list(grid_effects), n_sims=grid_sims, compute=False,
                 **kw) if ws else pd.DataFrame()
    work = []
    if own_ok:
        work += _missing_work(design, own[own["effect"] != 0], n_sims)
        work += _missing_work(design, own[own["effect"] == 0], null_sims)
    if len(grid):
        work += _missing_work(design, grid, grid_sims)
    n_missing = int(sum(n for _, n in work))
    secs = seconds_needed(work, jobs)
    run = compute and n_missing > 0 and (max_seconds is None or secs <= max_seconds)
    if run:
        if own_ok:
            type_one(design, n_sims=null_sims, halfwidth=type1_halfwidth, progress=progress, **kw)
            own = power(design, effect=effects, n_sims=n_sims, progress=progress, **kw)
        if ws:
            grid = power(design, n_employees=emps, n_waves=ws, effect=list(grid_effects), n_sims=grid_sims,
                         progress=progress, **kw)
        n_missing, secs = 0, 0.0
    elif n_missing:
        notes.append(
            f"Power not yet simulated for {n_missing:,} of this design's studies (about {_minutes(secs)} on "
            f"{_jobs(jobs)} core(s)); `cxex-lab power --data <study folder>` computes and caches them, and the next "
            "run of this report reads them.")
    t1 = None
    if own_ok:
        t1 = type_one(design, n_sims=null_sims, halfwidth=type1_halfwidth, compute=False, **kw)
        if t1["n_sims"] == 0:
            t1 = None
    else:
        notes.append(f"With {design.n_waves} wave(s), the headline (EX at wave w-1 -> CX in period w, with employee "
                     "and wave effects) cannot be estimated, so its power at this design is not simulated; the "
                     "planning grid shows designs with 3 or more waves.")
    return PowerReport(design, own, t1, grid, n_missing, secs, notes)


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds)):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# =========================================================================== command line
def register_cli(sub: Any) -> None:
    """Add ``cxex-lab power`` to the command-line parser."""
    p = sub.add_parser(
        "power", help="simulate the power of the headline test for a study's design and cache it",
        description="Simulate full studies of a design (survey scales, nonresponse, clustering), fit the report's "
                    "within-employee headline on each, and cache power and type-I rate for report 08.",
        epilog="examples: cxex-lab power --data my_study; cxex-lab power --defaults --out cxex_lab/data/power_grid.json")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="study folder or workspace file: its own design")
    src.add_argument("--defaults", action="store_true", help="the simulator's default design (the sample's)")
    p.add_argument("--segment", default="all", help="a site id or all (default)")
    p.add_argument("--config", default=None, help="study config (YAML)")
    p.add_argument("--sims", type=int, default=200, help="simulated studies per cell (default 200)")
    p.add_argument("--null-sims", type=int, default=500, help="studies without an effect, at least (default 500)")
    p.add_argument("--grid-sims", type=int, default=100, help="simulated studies per planning-grid cell (default 100)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the cells as a grid file (package-data format)")
    p.set_defaults(func=_cmd_power)


def _cmd_power(args: Any) -> int:
    import sys

    if args.defaults:
        design, measured = Design(), []
    else:
        from cxex_lab.report import open_workspace

        ws = open_workspace(args.data, args.segment, config=args.config)
        design, facts = design_of(ws)
        measured = facts["measured"]
        ws.close()
    print(f"design: {design!r}")
    plan = power_report(design, n_sims=args.sims, null_sims=args.null_sims, seed=args.seed, jobs=args.jobs,
                        compute=False, grid_sims=args.grid_sims)
    print(f"{plan.missing_studies:,} simulated studies to run (about {_minutes(plan.seconds_needed)})", flush=True)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(f"  {done:,}/{total:,} studies ({now - t0:.0f} s)", file=sys.stderr, flush=True)

    rep = power_report(design, n_sims=args.sims, null_sims=args.null_sims, seed=args.seed, jobs=args.jobs,
                       progress=progress, grid_sims=args.grid_sims)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    if rep.type_one is not None:
        t = rep.type_one
        print(f"type-I rate {100 * t['power']:.1f}% [{100 * t['power_ci_low']:.1f}, {100 * t['power_ci_high']:.1f}] "
              f"({int(t['n_sims'])} studies)")
    cols = ["n_employees", "n_waves", "effect", "effect_observed", "power", "power_ci_low", "power_ci_high", "n_sims"]
    if len(rep.own):
        print(rep.own[cols].round(3).to_string(index=False))
    if len(rep.grid):
        print(rep.grid[cols].round(3).to_string(index=False))
    if args.out:
        write_grid(args.out, design, rep, args.seed, args.sims)
        print(f"wrote {args.out}")
    del measured
    return 0


def write_grid(path: str | Path, design: Design, rep: PowerReport, seed: int, n_sims: int) -> None:
    """Write the cells behind a :class:`PowerReport` as a grid file (the package-data format)."""
    cache_dir = default_cache_dir()
    cells = {}
    for tab in (rep.own, rep.grid):
        for r in tab.itertuples(index=False):
            d = design.with_size(int(r.n_employees), int(r.n_waves))
            cid = _cell_id(d, float(r.effect), seed)
            c = _lookup(cid, cache_dir)
            if c is not None:
                cells[_cache_key(cid)] = c.record()
    data = {"schema": SCHEMA, "version": _version(), "design": design.as_dict(), "seed": seed, "n_sims": n_sims,
            "written": time.strftime("%Y-%m-%d"), "cells": cells}
    Path(path).write_text(json.dumps(data, separators=(",", ":")) + "\n")


# =========================================================================== the earlier latent RI-CLPM power
def riclpm_power(
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
    r"""Simulated power of the RI-CLPM on **latent, fully observed** panels (a best case).

    Kept to show how much the observed pipeline loses: on latent panels the
    EX -> CX z-statistic is much larger than on survey answers with
    nonresponse (issue 10: about 10.9 against 6.2 on the sample's design).
    Plan studies with :func:`power`.

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
        Any other parameter of :func:`cxex_lab.simulate.simulate_panel`.

    Returns
    -------
    DataFrame
        ``n_units, n_waves, effect, power, power_ci_low, power_ci_high`` (Wilson,
        95%), ``n_sims``, ``n_failed`` (excluded from the denominator).

    References
    ----------
    Mulder, J. D. (2023). Power analysis for the random intercept cross-lagged
    panel model using the powRICLPM R-package. *Structural Equation Modeling*,
    30(4), 645-658.

    Examples
    --------
    >>> tab = riclpm_power(n_units=[100, 300], n_waves=3, effect=0.2, n_sims=5, seed=1)
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
    if "ex_to_cx" in params:
        raise ValueError("power: pass the EX -> CX lag as `effect`, not 'ex_to_cx'.")
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
            panel = simulate_panel(int(nu), int(nw), seed=np.random.default_rng(sim_seed), missing=missing,
                                   ex_to_cx=float(eff), cx_to_ex=cx_to_ex, **params)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res, fit = cross_lagged(panel, "unit", "wave", "ex", "cx", kind="riclpm", alpha=alpha,
                                            fit_indices=False)
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
        rows.append({"n_units": int(nu), "n_waves": int(nw), "effect": float(eff),
                     "power": hits / n_ok if n_ok else float("nan"), "power_ci_low": lo, "power_ci_high": hi,
                     "n_sims": int(n_sims), "n_failed": int(failed)})
    if all(r["n_failed"] == r["n_sims"] for r in rows):
        warnings.warn("power: every simulated fit failed; check the parameters.", RuntimeWarning, stacklevel=2)
    return pd.DataFrame(rows)
