"""Replicate-study harness: bias and interval coverage of every finding a report shows.

Every findings function (:data:`cxex_lab.findings.REPORTS`) is run on R replicate
studies simulated at the sample's size and design, on the **observed** pipeline
(survey scales, nonresponse, clustering: exactly what a report sees), and each
finding is compared with its **observed-scale truth**: the value its estimator
converges to, computed once on a very large simulated study with the same design.

Design of the replicates
    The sample's site effects are held fixed (the sites are the company's own, the
    strata); teams, agents, customers, interactions and answers are redrawn with a
    new seed for each replicate (``seed = BASE_SEED + r``). The truth study has the
    same site effects, waves, agents per team and interactions per agent, and
    ``--scale`` times as many teams per site.

Output, per finding (``key``)
    the observed-scale truth; the mean estimate; the bias, and the bias in units of
    the estimate's standard deviation over replicates (``bias_se``); the coverage of
    the 95% interval with its Monte Carlo standard error; the mean interval width;
    and the time its findings function took. A finding **passes** when its coverage
    is within 92-98% and ``|bias_se| <= 0.25``. Findings presented as effects that do
    not pass are worded as associations by the reports (``cxex_lab.findings``).

``--write`` stores the results in ``cxex_lab/data/coverage.json`` (read by
``cxex_lab.findings.verdicts``) and the observed-scale truths in
``data/sample/truth.json["observed"]``.

Usage::

    .venv/bin/python benchmarks/coverage.py                 # R = 200, both cores
    .venv/bin/python benchmarks/coverage.py --R 20 --reports mirror,direction
    .venv/bin/python benchmarks/coverage.py --write         # refresh the verdicts and the sample's truths
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
VERDICTS = ROOT / "cxex_lab" / "data" / "coverage.json"
CACHE = ROOT / "benchmarks" / "_data"
BASE_SEED = 20_270_000
COVERAGE_TARGET = (0.92, 0.98)
BIAS_TARGET_SE = 0.25


# --------------------------------------------------------------------------- design
def sample_design(sample: Path = SAMPLE) -> dict:
    """The sample study's size, parameters and realised site effects (from its truth.json)."""
    truth = json.loads((sample / "truth.json").read_text())
    study = truth["study"]
    params = dict(truth["params"])
    return {
        "n_sites": int(study["n_sites"]),
        "n_employees": int(study["n_employees"]),
        "n_waves": int(study["n_waves"]),
        "site_effects": [float(v) for _, v in sorted(dict(study["site_effects"]).items())]
        if isinstance(study["site_effects"], dict) else [float(v) for v in study["site_effects"]],
        "params": params,
    }


def _simulate(design: dict, seed: int, scale: int = 1, latent: bool = False):
    from cxex_lab.simulate import DEFAULT_PARAMS, simulate_study

    params = {k: v for k, v in design["params"].items() if k in DEFAULT_PARAMS}
    params["teams_per_site"] = int(params.get("teams_per_site", 4)) * scale
    return simulate_study(
        n_sites=design["n_sites"], n_employees=design["n_employees"] * scale, n_waves=design["n_waves"],
        seed=seed, latent=latent, site_effects=design["site_effects"], **params,
    )


#: Units of findings that count the study itself (employees, interactions, ...): they scale with
#: the study's size, so a larger truth study has no "true value" for them; they are not checked.
COUNT_UNITS = {"employees", "interactions", "rows", "groups", "firms", "answers"}


def _rows(found) -> list[dict]:
    """Every row with a key and an estimate: the findings table and any details table with a key column."""
    frames = [found.table] + [d for d in found.details.values() if isinstance(d, pd.DataFrame) and "key" in d.columns]
    out = []
    for f in frames:
        if "estimate" not in f.columns:
            continue
        for r in f.itertuples(index=False):
            est = getattr(r, "estimate")
            if r.key is None or not isinstance(est, (int, float, np.floating)) or not np.isfinite(est):
                continue
            if str(getattr(r, "unit", "")) in COUNT_UNITS:
                continue
            out.append({"key": r.key, "estimate": float(est),
                        "ci_low": float(getattr(r, "ci_low", np.nan)), "ci_high": float(getattr(r, "ci_high", np.nan))})
    return out


def run_reports(study, reports: list[str], seed: int, harness: bool = True) -> tuple[list[dict], dict]:
    """Run the selected findings functions on one study; return finding rows and seconds per report."""
    from cxex_lab import findings
    from cxex_lab.workspace import Workspace

    ws = Workspace.from_study(study)
    rows, seconds = [], {}
    for name in reports:
        fn, kwargs = findings.REPORTS[name]
        kw = dict(kwargs.get("harness" if harness else "truth", {}))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = fn(ws, seed=seed, **kw)
        seconds[name] = time.perf_counter() - t0
        rows += [dict(r, report=name) for r in _rows(found)]
    return rows, seconds


def _replicate(args: tuple) -> tuple[int, list[dict], dict, float]:
    r, design, reports = args
    t0 = time.perf_counter()
    study = _simulate(design, BASE_SEED + r)
    sim_s = time.perf_counter() - t0
    rows, seconds = run_reports(study, reports, seed=r, harness=True)
    seconds["simulate"] = sim_s
    return r, rows, seconds, time.perf_counter() - t0


# --------------------------------------------------------------------------- truth
def _truth_study(args: tuple) -> list[dict]:
    design, reports, scale, seed = args
    study = _simulate(design, seed, scale=scale)
    rows, _ = run_reports(study, reports, seed=seed, harness=False)
    del study
    return rows


def observed_truth(design: dict, reports: list[str], scale: int, studies: int = 8, jobs: int = 1) -> dict[str, dict]:
    """Each finding's value on very large studies with the sample's design (no intervals).

    ``studies`` independent studies of ``scale`` times the sample's size are
    run and each finding's values are averaged: the average has the precision
    of one study ``studies * scale`` times the sample's size (its Monte Carlo
    error, ``mc_sd``, is recorded) without holding it in memory.
    """
    t0 = time.perf_counter()
    tasks = [(design, reports, scale, 1 + k) for k in range(studies)]
    with cf.ProcessPoolExecutor(max_workers=max(1, min(jobs, studies))) as pool:
        per_study = list(pool.map(_truth_study, tasks))
    took = time.perf_counter() - t0
    values: dict[str, list[float]] = {}
    report_of: dict[str, str] = {}
    for rows in per_study:
        for r in rows:
            values.setdefault(r["key"], []).append(r["estimate"])
            report_of[r["key"]] = r["report"]
    n_emp = design["n_employees"] * scale
    how = (f"the estimator's mean value on {studies} simulated studies of {n_emp:,} agents each ({scale}x the "
           f"sample's teams per site; the same site effects, waves, agents per team and interactions per agent; "
           f"seeds 1-{studies}), i.e. the precision of one study {studies * scale}x the sample; computed by "
           f"benchmarks/coverage.py in {took / 60:.0f} min")
    out = {}
    for k, v in values.items():
        arr = np.asarray(v, float)
        out[k] = {"value": float(arr.mean()), "mc_sd": float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else None,
                  "studies": len(arr), "derivation": how, "report": report_of[k]}
    return out


# --------------------------------------------------------------------------- firm level (report 09)
#: Report 09 runs on a firm-year panel, not on a contact-centre study: its replicates are panels of the
#: firm simulator at the notebook's default design (cxex_lab.simulate_firms.firm_replicates).
FIRMS = "firm_level"


def firm_rows(R: int) -> tuple[pd.DataFrame, dict[str, dict], float]:
    """Replicate firm panels (one process, about 1-2 s each): rows as :func:`run_reports` gives them,
    the truths they were checked against, and the seconds per panel."""
    from cxex_lab.simulate_firms import firm_replicates

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reps = firm_replicates(R=R, seed=0, fast=False)
    per = (time.perf_counter() - t0) / max(1, R)
    truths = {k: {"value": float(g["truth"].iloc[0]), "report": FIRMS,
                  "derivation": "the estimator's value on one panel of 60,000 firms with the same design "
                                "(cxex_lab.simulate_firms.firm_replicates)"}
              for k, g in reps.groupby("key") if np.isfinite(g["truth"].iloc[0])}
    rows = reps.rename(columns={"replicate": "r"}).assign(report=FIRMS)
    return rows[["r", "key", "estimate", "ci_low", "ci_high", "report"]], truths, per


# --------------------------------------------------------------------------- summary
def summarise(rows: pd.DataFrame, truths: dict[str, dict], seconds: pd.DataFrame) -> pd.DataFrame:
    out = []
    for key, g in rows.groupby("key", sort=False):
        truth = truths.get(key, {}).get("value", np.nan)
        est = g["estimate"].to_numpy(float)
        has_ci = np.isfinite(g["ci_low"]).all() and np.isfinite(g["ci_high"]).all()
        sd = float(est.std(ddof=1)) if len(est) > 1 else np.nan
        bias = float(est.mean() - truth) if np.isfinite(truth) else np.nan
        cov = float(((g["ci_low"] <= truth) & (truth <= g["ci_high"])).mean()) if has_ci and np.isfinite(truth) else np.nan
        mc = math.sqrt(cov * (1 - cov) / len(g)) if np.isfinite(cov) else np.nan
        bias_se = bias / sd if sd and np.isfinite(sd) and sd > 0 else np.nan
        lo, hi = COVERAGE_TARGET
        unbiased = bool(np.isfinite(bias_se) and abs(bias_se) <= BIAS_TARGET_SE)
        # a finding with an interval must cover; one without (a rate, a share) need only be unbiased
        passed = unbiased and (bool(np.isfinite(cov) and lo <= cov <= hi) if has_ci else True)
        report = g["report"].iloc[0]
        out.append({
            "report": report, "key": key, "R": len(g), "truth": truth, "mean_estimate": float(est.mean()),
            "bias": bias, "bias_se": bias_se, "coverage": cov, "mc_error": mc,
            "mean_width": float((g["ci_high"] - g["ci_low"]).mean()) if has_ci else np.nan,
            "seconds": float(seconds[report].mean()) if report in seconds else np.nan,
            "passed": passed,
        })
    return pd.DataFrame(out)


def markdown(summary: pd.DataFrame) -> str:
    def f(v, fmt):
        return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    lines = ["| report | finding (key) | truth | bias | bias / SD | coverage (± MC) | mean width | s / study | pass |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples(index=False):
        cov = f"{100 * r.coverage:.1f}% ± {100 * r.mc_error:.1f}" if np.isfinite(r.coverage) else "no interval"
        lines.append(f"| {r.report} | `{r.key}` | {f(r.truth, '.3f')} | {f(r.bias, '+.3f')} | {f(r.bias_se, '+.2f')} "
                     f"| {cov} | {f(r.mean_width, '.3f')} | {f(r.seconds, '.2f')} | {'yes' if r.passed else 'no'} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    from cxex_lab import findings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--R", type=int, default=200, help="replicate studies (default 200)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes (default: all cores)")
    ap.add_argument("--reports", default="all", help="comma-separated findings functions (default: all)")
    ap.add_argument("--scale", type=int, default=25, help="size of each truth study, in samples (default 25)")
    ap.add_argument("--truth-studies", type=int, default=8, help="truth studies averaged (default 8)")
    ap.add_argument("--refresh-truth", action="store_true", help="recompute the observed-scale truths")
    ap.add_argument("--sample", type=Path, default=SAMPLE,
                    help="simulated study whose design (truth.json) the replicates copy (default data/sample)")
    ap.add_argument("--cache", type=Path, default=CACHE,
                    help="folder for the truths and the saved replicates (default benchmarks/_data)")
    ap.add_argument("--fresh", action="store_true",
                    help="ignore replicate results saved by earlier runs (benchmarks/_data/replicates/)")
    ap.add_argument("--write", action="store_true",
                    help="write the verdicts into cxex_lab/data/coverage.json and the truths into data/sample/truth.json")
    args = ap.parse_args(argv)

    reports = [*findings.REPORTS, FIRMS] if args.reports == "all" else [s.strip() for s in args.reports.split(",")]
    firms = FIRMS in reports
    reports = [r for r in reports if r != FIRMS]
    unknown = sorted(set(reports) - set(findings.REPORTS))
    if unknown:
        ap.error(f"unknown report(s) {unknown}; choose from {[*findings.REPORTS, FIRMS]}")
    design = sample_design(args.sample)
    t_start = time.perf_counter()

    args.cache.mkdir(parents=True, exist_ok=True)
    summaries, meta_new, truths = [], {}, {}
    if reports:
        summary, truths, meta_new["studies"] = study_harness(args, design, reports, t_start)
        summaries.append(summary)
    if firms:
        t0 = time.perf_counter()
        print(f"{args.R} replicate firm panels (report 09) ...", flush=True)
        frows, ftruths, per = firm_rows(args.R)
        fsum = summarise(frows, ftruths, pd.DataFrame({FIRMS: [per]}))
        summaries.append(fsum)
        meta_new["firms"] = {"R": args.R, "minutes": round((time.perf_counter() - t0) / 60, 1), "jobs": 1,
                             "design": "cxex_lab.simulate_firms defaults (300 firms x 11 years, 13 industries)"}
        print(markdown(fsum))
        print(f"\n{int(fsum['passed'].sum())} of {len(fsum)} firm-level findings pass; R = {args.R}; "
              f"{meta_new['firms']['minutes']:.1f} min.")

    if args.write:
        summary = pd.concat(summaries, ignore_index=True)
        done = set(reports) | ({FIRMS} if firms else set())
        old_all = json.loads(VERDICTS.read_text()) if VERDICTS.exists() else {}
        old = {k: v for k, v in old_all.get("findings", {}).items() if v.get("report") not in done}
        meta = {k: v for k, v in dict(old_all.get("meta", {})).items() if k in ("studies", "firms")}
        meta.update({k: dict(v, date=dt.date.today().isoformat()) for k, v in meta_new.items()})
        meta["targets"] = {"coverage": list(COVERAGE_TARGET), "abs_bias_se": BIAS_TARGET_SE}
        new = {r["key"]: {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
               for r in summary.to_dict("records")}
        VERDICTS.write_text(json.dumps({"meta": meta, "findings": {**old, **new}}, indent=1) + "\n")
        print(f"wrote {VERDICTS.relative_to(ROOT)}")
        if truths:
            sample_truth = json.loads((args.sample / "truth.json").read_text())
            sample_truth.setdefault("observed", {}).update(
                {k: {kk: vv for kk, vv in v.items() if kk != "report"} for k, v in truths.items()})
            (args.sample / "truth.json").write_text(json.dumps(sample_truth, indent=2, default=str) + "\n")
            print(f"wrote {args.sample / 'truth.json'}['observed']")
    return 0


def study_harness(args: Any, design: dict, reports: list[str], t_start: float) -> tuple[pd.DataFrame, dict, dict]:
    """Replicate contact-centre studies: the summary, the observed-scale truths and the run's record."""
    truth_file = args.cache / f"observed_truth_x{args.scale}x{args.truth_studies}.json"
    truths = json.loads(truth_file.read_text()) if truth_file.exists() and not args.refresh_truth else {}
    missing = [r for r in reports if not any(v.get("report") == r for v in truths.values())]
    if missing:
        print(f"observed-scale truths for {missing} on {args.truth_studies} studies of {args.scale}x the sample ...",
              flush=True)
        new = observed_truth(design, missing, args.scale, args.truth_studies, args.jobs)
        truths.update(new)
        truth_file.write_text(json.dumps(truths, indent=1))

    # each replicate's rows are saved as it finishes (benchmarks/_data/replicates/<r>.json), so a run can be
    # stopped and resumed, or extended to a larger R, without recomputing; --fresh starts over
    saved_dir = args.cache / "replicates"
    saved_dir.mkdir(parents=True, exist_ok=True)
    all_rows, times, todo = [], [], []
    for r in range(args.R):
        f = saved_dir / f"{r:05d}.json"
        rec = json.loads(f.read_text()) if f.exists() and not args.fresh else None
        if rec and set(reports) <= set(rec["reports"]):
            all_rows += [dict(x, r=r) for x in rec["rows"] if x["report"] in reports]
            times.append(dict(rec["seconds"]))
        else:
            todo.append(r)
    print(f"{args.R} replicate studies x {len(reports)} reports on {args.jobs} process(es) "
          f"({args.R - len(todo)} saved by an earlier run) ...", flush=True)
    tasks = [(r, design, reports) for r in todo]
    with cf.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for i, (r, rows, seconds, total) in enumerate(pool.map(_replicate, tasks, chunksize=1), 1):
            all_rows += [dict(x, r=r) for x in rows]
            times.append(dict(seconds, total=total))
            (saved_dir / f"{r:05d}.json").write_text(json.dumps(
                {"reports": reports, "rows": rows, "seconds": dict(seconds, total=total)}, default=float))
            if i % max(1, len(todo) // 20) == 0 or i == len(todo):
                print(f"  {i}/{len(todo)} studies ({time.perf_counter() - t_start:.0f} s)", flush=True)
    rows = pd.DataFrame(all_rows)
    seconds = pd.DataFrame(times)
    summary = summarise(rows, truths, seconds)
    took = time.perf_counter() - t_start
    print()
    print(markdown(summary))
    n_pass = int(summary["passed"].sum())
    print(f"\n{n_pass} of {len(summary)} findings pass; R = {args.R}; {took / 60:.1f} min on {args.jobs} process(es); "
          f"per study {seconds['total'].mean():.1f} s (simulation {seconds['simulate'].mean():.1f} s).")
    record = {"R": args.R, "base_seed": BASE_SEED, "scale": args.scale, "truth_studies": args.truth_studies,
              "minutes": round(took / 60, 1), "jobs": args.jobs, "reports": reports,
              "seconds_per_study": round(float(seconds["total"].mean()), 1),
              "design": {k: v for k, v in design.items() if k != "params"}}
    return summary, truths, record


if __name__ == "__main__":
    sys.exit(main())
