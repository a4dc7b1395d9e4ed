"""Check that the linked panels are unchanged against an earlier revision of ``cxex_lab/linkage.py``.

Loads ``cxex_lab/linkage.py`` as it was at a git revision (default ``b065b6e``, the
start of round 2) into a module of its own, and compares, on a study directory
(default ``data/sample``), for every level x period x ex_lag (0, 1, 2): the panel of
the old ``link(path)``, of today's ``link(path)`` and of a prepared workspace's
``ws.panel(...)``. Rows, columns, dtypes and values must be equal (floats to 1e-9
relative); the old and new ``link`` ledgers must hold the same counts (the rules'
wording may differ); the workspace ledger must account for the same rows (its
validation step excludes the orphan responses that ``link`` counts itself).

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/linkage_parity.py [--rev b065b6e] [--data data/sample]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def old_linkage(rev: str):
    src = subprocess.run(["git", "show", f"{rev}:cxex_lab/linkage.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    f = Path(tempfile.mkdtemp()) / f"linkage_{rev}.py"
    f.write_text(src)
    spec = importlib.util.spec_from_file_location(f"linkage_{rev}", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="b065b6e")
    ap.add_argument("--data", default=str(ROOT / "data" / "sample"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import pandas as pd

    from cxex_lab.ledger import ledger_of
    from cxex_lab.linkage import LEVELS, PERIODS, link
    from cxex_lab.workspace import prepare

    old = old_linkage(args.rev)
    with tempfile.TemporaryDirectory() as out:
        ws = prepare(args.data, out=out, panels="all")
        failures, n = [], 0
        for level in LEVELS:
            for period in PERIODS:
                for lag in (0, 1, 2):
                    n += 1
                    a = old.link(args.data, level=level, period=period, ex_lag=lag)
                    b = link(args.data, level=level, period=period, ex_lag=lag)
                    c = ws.panel(level=level, period=period, ex_lag=lag)
                    tag = f"{level} x {period} x ex_lag={lag}"
                    try:
                        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
                        pd.testing.assert_frame_equal(a, c, check_exact=False, rtol=1e-9)
                        la, lb, lc = (ledger_of(x) for x in (a, b, c))
                        for t in ("interactions", "cx_responses", f"{level}-{period} panel"):
                            na = la.loc[la["table"] == t, "rows_excluded"].sum()
                            nb = lb.loc[lb["table"] == t, "rows_excluded"].sum()
                            nc = lc.loc[lc["table"] == t, "rows_excluded"].sum()
                            assert na == nb == nc, (t, na, nb, nc)
                    except AssertionError as err:
                        failures.append(f"{tag}: {err}")
                        continue
                    print(f"equal  {tag:<36} {len(a):>6} rows")
        ws.close()
    print(f"\n{n - len(failures)} of {n} panels equal to {args.rev} (link by path and workspace panel)")
    for f in failures:
        print("DIFFERENT", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
