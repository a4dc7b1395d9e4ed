"""Benchmark: ``link(path, level="employee", period="week")`` vs pandas vs hand-written DuckDB SQL.

Generates (cheaply, with numpy, not the full simulator) a study of 10 million
interactions, 1 million CX responses (1,000 of them orphans), 2,000 employees
and 6 quarterly EX waves, writes it as Parquet under ``benchmarks/_data/``
(kept between runs; ``--regen`` rebuilds it), then computes the same
employee x week panel three ways, each in its own subprocess so peak RSS is
honest:

* ``link``   -- :func:`cxex_lab.linkage.link` on the Parquet directory;
* ``pandas`` -- what a competent pandas user writes: read the Parquet columns
  needed, one left merge of interactions with CX responses, one groupby with
  pandas' vectorised aggregations, then the (small) EX and employee merges;
* ``duckdb`` -- hand-written DuckDB SQL over the Parquet files, with the same
  plan as ``link`` (see :func:`duckdb_sql`);
* ``spark``  -- the same :func:`cxex_lab.linkage.link` through Ibis on a local
  Spark session (``local[*]``), for information only (no target): the session's
  start-up is not timed; its peak memory is the Python process plus the JVM's
  peak RSS (sampled every 0.2 s). ``--no-spark`` leaves it out; without Java the
  column says so.

Each child times its computation (imports excluded; reading the files and
building the final pandas DataFrame included) and reports its own peak RSS
(``ru_maxrss``). Each side runs ``--repeat`` times (default 3); the best wall
time and the median peak RSS are kept (the first run after the data is written
is often slower and larger, for reasons outside the process). The parent checks
the three panels are equal (sorted, float tolerance) and prints PASS/FAIL for
the targets: link >= 2.5x faster than pandas, within 1.5x of the hand-written
SQL, peak RSS <= 1/3 of pandas'.

Shape of the data. 10M interactions over 6 waves (about 18 months) by 2,000
agents is about 13 contacts per agent per working day, a plausible contact
centre; the panel has 130,000 employee-weeks. ``--employees 20000`` gives 1.3
million employee-weeks (500 contacts per agent over 18 months). Ids are text
(``"E000042"``, ``"I000001234"``) by default, as exported by most contact-centre
platforms; ``--ids int`` writes whole-number surrogate keys instead, on which
pandas' merge and groupby are much faster. The README gives the figures for
each shape.

The panel is the core panel: EX of the preceding wave (ex_lag=1) + CX + ops +
the n behind each mean. Loyalty is not part of a weekly panel (it is only
defined for wave periods), so link() computes nothing more here.

Usage::

    .venv/bin/python benchmarks/linkage.py [--ids text|int] [--employees 2000] [--repeat 3] [--regen]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "_data" / "linkage"

N_INTERACTIONS = 10_000_000
N_CX = 1_000_000
N_ORPHANS = 1_000
N_EMPLOYEES = 2_000
N_WAVES = 6
WAVE_DAYS = 91
START = "2025-01-06"
EX_LAG = 1

TP = ("hiring", "training", "post_training_support", "daily_work", "coaching", "pip", "recognition", "promotion")
EX_ITEMS = ["enps", "esat", "ees", *(f"tp_{t}" for t in TP), "empowerment", "cx_insight_access"]
COLUMNS = ["employee_id", "team_id", "site_id", "period", "ex_wave", "n_ex", *EX_ITEMS, "enps_score",
           "n_cx", "nps", "csat", "ces", "nps_score", "csat_top2",
           "n_interactions", "fcr_rate", "aht_seconds", "transfer_rate"]


# ----------------------------------------------------------------------------- data


def generate(path: Path, seed: int = 20250106, ids: str = "text", n_employees: int = N_EMPLOYEES) -> None:
    """Write the five tables as Parquet (numpy + pyarrow, about 20 s).

    ``ids="text"`` writes ids such as ``"E000042"`` / ``"I000001234"``;
    ``ids="int"`` writes whole-number ids (warehouse surrogate keys).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)

    id_kind = ids

    def ids(prefix: str, numbers, width: int) -> pa.Array:
        if id_kind == "int":  # the prefix keeps id spaces apart (orphan responses get numbers past the last interaction)
            return pa.array(np.asarray(numbers, dtype="int64") + (N_INTERACTIONS if prefix == "X" else 0))
        s = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")
        return pc.binary_join_element_wise(prefix, s, "")

    start = np.datetime64(START, "us")
    day_us = 86_400 * 1_000_000
    e = np.arange(n_employees)
    team = e // 10
    pq.write_table(pa.table({
        "employee_id": ids("E", e + 1, 6), "team_id": ids("T", team + 1, 4), "site_id": ids("S", team // 20 + 1, 3),
        "role": pa.array(np.where(e % 5 == 0, "senior agent", "agent")),
        "hire_date": pa.array(start - rng.integers(30, 2000, n_employees) * day_us),
        "exit_date": pa.nulls(n_employees, pa.timestamp("us")),
    }), path / "employees.parquet")

    # EX: 85% response per wave, answered within 10 days of the opening
    rows = []
    for w in range(N_WAVES):
        who = np.flatnonzero(rng.random(n_employees) < 0.85)
        rows.append((who, np.full(len(who), w + 1), start + w * WAVE_DAYS * day_us
                     + (rng.uniform(0, 10, len(who)) * day_us).astype("int64")))
    who, wave, at = (np.concatenate(x) for x in zip(*rows))
    n_ex = len(who)
    ex = {"employee_id": ids("E", who + 1, 6), "wave": pa.array(wave.astype("int64")), "responded_at": pa.array(at),
          "enps": pa.array(rng.integers(0, 11, n_ex)), "esat": pa.array(rng.integers(1, 6, n_ex)),
          "ees": pa.array(rng.integers(1, 8, n_ex))}
    for c in EX_ITEMS[3:]:
        ex[c] = pa.array(rng.integers(1, 6, n_ex))
    pq.write_table(pa.table(ex), path / "ex_responses.parquet")

    # interactions: uniform over the 6 wave periods
    n = N_INTERACTIONS
    emp = rng.integers(0, n_employees, n)
    started = start + rng.integers(0, N_WAVES * WAVE_DAYS * day_us, n)
    n_cust = 1_000_000
    inter = pa.table({
        "interaction_id": ids("I", np.arange(1, n + 1), 9),
        "employee_id": ids("E", emp + 1, 6),
        "customer_id": ids("C", rng.integers(1, n_cust + 1, n), 7),
        "started_at": pa.array(started),
        "channel": pa.array(rng.choice(np.array(["voice", "chat", "email"]), n, p=[0.6, 0.3, 0.1])),
        "handle_seconds": pa.array(np.exp(rng.normal(6.0, 0.35, n)).astype("int64")),
        "resolved_first_contact": pa.array(rng.random(n) < 0.72),
        "transferred": pa.array(rng.random(n) < 0.12),
    })
    pq.write_table(inter, path / "interactions.parquet")
    del inter

    k = rng.choice(n, N_CX - N_ORPHANS, replace=False)
    k.sort()
    resp_ids = pa.concat_arrays([ids("I", k + 1, 9), ids("X", np.arange(1, N_ORPHANS + 1), 9)])
    when = np.concatenate([started[k], started[rng.integers(0, n, N_ORPHANS)]]) + (
        rng.exponential(36 * 3600, N_CX) * 1e6).astype("int64")
    pq.write_table(pa.table({
        "interaction_id": resp_ids, "responded_at": pa.array(when),
        "nps": pa.array(rng.integers(0, 11, N_CX)), "csat": pa.array(rng.integers(1, 6, N_CX)),
        "ces": pa.array(rng.integers(1, 8, N_CX)), "comment": pa.nulls(N_CX, pa.string()),
    }), path / "cx_responses.parquet")

    n_out = 300_000
    cp = rng.choice(n_cust * N_WAVES, n_out, replace=False)
    pq.write_table(pa.table({
        "customer_id": ids("C", cp // N_WAVES + 1, 7), "period": pa.array((cp % N_WAVES + 1).astype("int64")),
        "retained": pa.array(rng.random(n_out) < 0.85), "revenue": pa.array(rng.normal(100, 30, n_out).round(2)),
    }), path / "customer_outcomes.parquet")
    (path / "_complete").write_text("ok\n")


# ----------------------------------------------------------------------------- the three sides


class Clock:
    """Wall and CPU time (all threads of the process) from creation to :meth:`stop`."""

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), self._cpu()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, self._cpu() - self.cpu0


def side_link(path: Path):
    from cxex_lab.linkage import link

    clock = Clock()
    panel = link(path, level="employee", period="week", ex_lag=EX_LAG)
    return clock.stop(), panel[COLUMNS]


def side_pandas(path: Path):
    import numpy as np
    import pandas as pd

    import pyarrow.parquet as pq

    text_ids = pq.read_schema(path / "interactions.parquet").field("employee_id").type == "string"
    clock = Clock()
    # employee_id read as a categorical (a competent pandas user's first optimisation for group keys)
    inter = pd.read_parquet(path / "interactions.parquet", columns=[
        "interaction_id", "employee_id", "started_at", "handle_seconds", "resolved_first_contact", "transferred"],
        read_dictionary=["employee_id"] if text_ids else None)
    cx = pd.read_parquet(path / "cx_responses.parquet", columns=["interaction_id", "nps", "csat", "ces"])
    df = inter.merge(cx, on="interaction_id", how="left")
    del inter, cx
    df["period"] = df["started_at"].dt.to_period("W").dt.start_time
    answered = df["nps"].notna()
    df["prom"] = (df["nps"] >= 9).astype("float64").where(answered)
    df["detr"] = (df["nps"] <= 6).astype("float64").where(answered)
    df["csat_top2"] = (df["csat"] >= 4).astype("float64").where(df["csat"].notna())
    gb = df.groupby(["employee_id", "period"], sort=False, observed=True)
    g = gb[["nps", "csat", "ces", "prom", "detr", "csat_top2", "resolved_first_contact", "handle_seconds",
            "transferred"]].mean()
    g["n_interactions"] = gb.size()
    g["n_cx"] = gb["csat"].count()
    del df, gb
    g = g.rename(columns={"resolved_first_contact": "fcr_rate", "handle_seconds": "aht_seconds",
                          "transferred": "transfer_rate"}).reset_index()
    if text_ids:
        g["employee_id"] = g["employee_id"].astype("str")
    g["nps_score"] = 100 * (g.pop("prom") - g.pop("detr"))

    ex = pd.read_parquet(path / "ex_responses.parquet")
    opened = ex.groupby("wave")["responded_at"].min().dt.floor("D").sort_values()
    waves = opened.index.to_numpy()
    pos = np.searchsorted(opened.to_numpy(), g["period"].to_numpy(), side="right") - 1 - EX_LAG
    g = g[pos >= 0]
    g["ex_wave"] = waves[pos[pos >= 0]]
    ex["eprom"] = (ex["enps"] >= 9).astype("float64")
    ex["edetr"] = (ex["enps"] <= 6).astype("float64")
    exa = ex.groupby(["employee_id", "wave"]).agg(
        n_ex=("enps", "size"), **{c: (c, "mean") for c in EX_ITEMS}, eprom=("eprom", "mean"), edetr=("edetr", "mean"),
    ).reset_index().rename(columns={"wave": "ex_wave"})
    exa["enps_score"] = 100 * (exa.pop("eprom") - exa.pop("edetr"))
    emp = pd.read_parquet(path / "employees.parquet", columns=["employee_id", "team_id", "site_id"])
    panel = g.merge(emp, on="employee_id").merge(exa, on=["employee_id", "ex_wave"], how="left")
    panel["n_ex"] = panel["n_ex"].fillna(0).astype("int64")
    return clock.stop(), panel[COLUMNS]


def duckdb_sql(path: Path) -> str:
    """The panel in hand-written DuckDB SQL, the way someone who knows DuckDB writes it.

    Same plan as link(): operations aggregated over all interactions, CX over the
    responses joined to their interactions, the two joined on employee x week;
    the EX wave by an ASOF join on the wave openings.
    """
    ex_means = ",\n           ".join(f"avg({c}) AS {c}" for c in EX_ITEMS)
    return f"""
    WITH waves AS (
        SELECT wave, date_trunc('day', min(responded_at)) AS opened,
               row_number() OVER (ORDER BY min(responded_at)) AS idx
        FROM '{path}/ex_responses.parquet' GROUP BY wave
    ),
    ops AS (
        SELECT employee_id, date_trunc('week', started_at) AS period, count(*) AS n_interactions,
               avg(resolved_first_contact::double) AS fcr_rate, avg(handle_seconds::double) AS aht_seconds,
               avg(transferred::double) AS transfer_rate
        FROM '{path}/interactions.parquet' GROUP BY ALL
    ),
    cx AS (
        SELECT i.employee_id, date_trunc('week', i.started_at) AS period, count(*) AS n_cx,
               avg(c.nps) AS nps, avg(c.csat) AS csat, avg(c.ces) AS ces,
               100 * (avg((c.nps >= 9)::double) - avg((c.nps <= 6)::double)) AS nps_score,
               avg((c.csat >= 4)::double) AS csat_top2
        FROM '{path}/cx_responses.parquet' c
        JOIN (SELECT interaction_id, employee_id, started_at FROM '{path}/interactions.parquet') i
          USING (interaction_id)
        GROUP BY ALL
    ),
    cxp AS (
        SELECT o.*, coalesce(x.n_cx, 0) AS n_cx, x.nps, x.csat, x.ces, x.nps_score, x.csat_top2
        FROM ops o LEFT JOIN cx x USING (employee_id, period)
    ),
    lagged AS (
        SELECT p.*, w2.wave AS ex_wave
        FROM cxp p ASOF JOIN waves w0 ON p.period >= w0.opened
        JOIN waves w2 ON w2.idx = w0.idx - {EX_LAG}
    ),
    exa AS (
        SELECT employee_id, wave AS ex_wave, count(*) AS n_ex,
           {ex_means},
           100 * (avg((enps >= 9)::int) - avg((enps <= 6)::int)) AS enps_score
        FROM '{path}/ex_responses.parquet' GROUP BY ALL
    )
    SELECT l.employee_id, e.team_id, e.site_id, l.period, l.ex_wave, coalesce(x.n_ex, 0) AS n_ex,
           {", ".join("x." + c for c in EX_ITEMS)}, x.enps_score,
           l.n_cx, l.nps, l.csat, l.ces, l.nps_score, l.csat_top2,
           l.n_interactions, l.fcr_rate, l.aht_seconds, l.transfer_rate
    FROM lagged l
    JOIN '{path}/employees.parquet' e USING (employee_id)
    LEFT JOIN exa x ON x.employee_id = l.employee_id AND x.ex_wave = l.ex_wave
    """


def side_duckdb(path: Path):
    import duckdb

    clock = Clock()
    con = duckdb.connect()
    con.sql("SET enable_progress_bar = false")
    panel = con.sql(duckdb_sql(path)).to_arrow_table().to_pandas()
    return clock.stop(), panel[COLUMNS]


def side_spark(path: Path):
    import shutil
    import threading

    import ibis
    import psutil

    from cxex_lab.linkage import link
    from cxex_lab.workspace import _spark_session

    if shutil.which("java") is None:
        raise RuntimeError("no Java on the PATH: Spark cannot start")
    session = _spark_session(None, {"spark.driver.memory": "4g"})
    con = ibis.pyspark.connect(session)
    me = psutil.Process()
    peak = {"jvm": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss = 0
            for ch in me.children(recursive=True):
                try:
                    rss += ch.memory_info().rss
                except psutil.Error:
                    pass
            peak["jvm"] = max(peak["jvm"], rss)
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    clock = Clock()
    panel = link(path, level="employee", period="week", ex_lag=EX_LAG, con=con)
    result = clock.stop()
    stop.set()
    th.join()
    session.stop()
    global _EXTRA_RSS
    _EXTRA_RSS = peak["jvm"]
    return result, panel[COLUMNS]


_EXTRA_RSS = 0
SIDES = {"link": side_link, "pandas": side_pandas, "duckdb": side_duckdb, "spark": side_spark}


def child(side: str, path: Path, out: Path) -> None:
    (seconds, cpu), panel = SIDES[side](path)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + _EXTRA_RSS  # Linux: KiB; + Spark's JVM
    panel.attrs = {}  # the ledger DataFrame in attrs is not JSON-serialisable into Parquet metadata
    panel.to_parquet(out, index=False)
    print(json.dumps({"side": side, "seconds": seconds, "cpu": cpu, "peak_rss": rss, "rows": len(panel)}))


def run_side(side: str, data: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, __file__, "--child", side, "--data", str(data), "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} side failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(a, b, name: str) -> None:
    import numpy as np
    import pandas as pd

    keys = ["employee_id", "period"]
    a = a.sort_values(keys).reset_index(drop=True)
    b = b.sort_values(keys).reset_index(drop=True)
    if len(a) != len(b):
        raise AssertionError(f"{name}: {len(a)} vs {len(b)} rows")
    for c in COLUMNS:
        x, y = a[c], b[c]
        if c in ("employee_id", "team_id", "site_id"):
            ok = (x.astype(str).to_numpy() == y.astype(str).to_numpy()).all()
        elif c == "period":
            ok = (pd.to_datetime(x).astype("datetime64[us]").to_numpy()
                  == pd.to_datetime(y).astype("datetime64[us]").to_numpy()).all()
        else:
            ok = np.allclose(pd.to_numeric(x).astype(float), pd.to_numeric(y).astype(float),
                             rtol=1e-9, atol=1e-9, equal_nan=True)
        if not ok:
            raise AssertionError(f"{name}: column {c} differs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regen", action="store_true", help="rebuild the Parquet data")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per side (the best wall time and the median peak RSS are kept)")
    ap.add_argument("--ids", choices=["text", "int"], default="text",
                    help="id columns as text ('E000042', the default) or whole numbers (surrogate keys)")
    ap.add_argument("--employees", type=int, default=N_EMPLOYEES,
                    help=f"employees handling the interactions (default {N_EMPLOYEES:,}; see the module docstring)")
    ap.add_argument("--no-spark", action="store_true", help="leave out the Spark local-mode column")
    ap.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.data), Path(args.out))
        return
    data = DATA.with_name(f"linkage_{args.ids}_{args.employees}")

    import pandas as pd

    if args.regen or not (data / "_complete").exists():
        t0 = time.perf_counter()
        print(f"generating {N_INTERACTIONS:,} interactions, {N_CX:,} CX responses, {args.employees:,} employees x "
              f"{N_WAVES} waves ({args.ids} ids) into {data} ...", flush=True)
        generate(data, ids=args.ids, n_employees=args.employees)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    out_dir = data.with_name(data.name + "_out")
    out_dir.mkdir(exist_ok=True)
    res = {}
    for side in ("duckdb", "pandas", "link"):
        runs = [run_side(side, data, out_dir / f"{side}.parquet") for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        rss = sorted(r["peak_rss"] for r in runs)[len(runs) // 2]
        res[side] = r = dict(best, peak_rss=rss)
        print(f"{side:>7}: {r['seconds']:6.2f} s wall  {r['cpu']:6.2f} s CPU   peak RSS {r['peak_rss'] / 2**30:5.2f} GiB   rows {r['rows']:,}",
              flush=True)
        if len(runs) > 1:
            print(f"{'':>9}runs: " + ", ".join(f"{x['seconds']:.2f} s / {x['peak_rss'] / 2**30:.2f} GiB" for x in runs),
                  flush=True)
    panels = {s: pd.read_parquet(out_dir / f"{s}.parquet") for s in res}
    compare(panels["link"], panels["pandas"], "link vs pandas")
    compare(panels["link"], panels["duckdb"], "link vs duckdb")
    print("panels equal: link == pandas == hand-written DuckDB SQL (sorted, float tolerance 1e-9)")

    lk, pdx, dk = res["link"], res["pandas"], res["duckdb"]
    speed_pd = pdx["seconds"] / lk["seconds"]
    vs_sql = lk["seconds"] / dk["seconds"]
    rss_ratio = lk["peak_rss"] / pdx["peak_rss"]
    print(f"speed-up over pandas      {speed_pd:5.2f}x  (target >= 2.5x)   {'PASS' if speed_pd >= 2.5 else 'FAIL'}")
    print(f"time vs hand-written SQL  {vs_sql:5.2f}x  (target <= 1.5x)   {'PASS' if vs_sql <= 1.5 else 'FAIL'}")
    print(f"peak RSS vs pandas        {rss_ratio:5.2f}   (target <= 0.33)  {'PASS' if rss_ratio <= 1 / 3 else 'FAIL'}")
    print(f"(CPU-time ratios, robust to other load on the machine: pandas/link {pdx['cpu'] / lk['cpu']:.2f}x, "
          f"link/SQL {lk['cpu'] / dk['cpu']:.2f}x)")
    print(f"(peak RSS link / SQL      {lk['peak_rss'] / dk['peak_rss']:5.2f})")

    if not args.no_spark:  # information only: one run, no target
        try:
            sp = run_side("spark", data, out_dir / "spark.parquet")
        except RuntimeError as err:
            print(f"spark local mode: not run ({str(err).strip().splitlines()[-1]})")
            return
        compare(panels["link"], pd.read_parquet(out_dir / "spark.parquet"), "link on DuckDB vs link on Spark")
        print(f"spark local mode (information): {sp['seconds']:6.2f} s wall, peak RSS (Python + JVM) "
              f"{sp['peak_rss'] / 2**30:5.2f} GiB; panel equal to link on DuckDB; "
              f"{sp['seconds'] / lk['seconds']:.1f}x link's time")


if __name__ == "__main__":
    main()
