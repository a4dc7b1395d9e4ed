"""``cxex-lab run``: the command line of the report runner."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cxex_lab.run.errors import RunnerError

__all__ = ["register_cli", "cmd_run"]

DESCRIPTION = """\
Render the report set: every notebook x segment, executed from a clean kernel,
as self-contained HTML without code, with a landing page (index.html), the
findings as data and a provenance record. Reports that fail, show a warning or
raw output, or show one of the study's ids are withheld and listed with their
message."""


def cmd_run(args: argparse.Namespace) -> int:
    """Run the reports; print progress and a one-line summary. Exit code 0/1/2/130."""
    # jsonschema (imported through papermill/nbformat) optionally imports rfc3987_syntax,
    # which builds a grammar at import (~1.5 s); notebook validation never checks IRIs.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    from cxex_lab.run.parameters import parse_cli_params
    from cxex_lab.run.prepare import PrepareOptions
    from cxex_lab.run.reports import run_reports, summary_line

    try:
        params = parse_cli_params(args.param)
        data = args.data
        if data is None:
            if not Path("data/sample").exists():
                raise RunnerError("give the study with --data DIR (a folder of tables or a DuckDB file); "
                                  "for a simulated one: cxex-lab simulate --out data/sample")
            data = "data/sample"
        result = run_reports(
            notebooks_dir=args.notebooks_dir, data=data, pattern=args.notebooks, segments=args.segments,
            params=params, jobs=args.jobs, out=args.out, cache=not args.no_cache, run_name=args.run_name,
            timeout=args.timeout, headline=args.headline,
            prepare_options=PrepareOptions(config=args.config, engine=args.engine, spark_remote=args.spark_remote,
                                           segments=args.segments),
        )
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run folder is incomplete", file=sys.stderr)
        return 130
    print(summary_line(result))
    return result.exit_code


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand to ``cxex-lab``'s argparse subparsers."""
    run = subparsers.add_parser(
        "run", help="render the report set (notebooks x segments) as shareable HTML",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: cxex-lab run --data data/sample --segments all,site_id -p min_group_size=10 --jobs 4",
    )
    run.add_argument("--data", default=None,
                     help="study directory or DuckDB file (default: data/sample when it exists)")
    run.add_argument("--notebooks", default="*.ipynb", metavar="PATTERN",
                     help="glob(s) on notebook names, comma-separated (default: *.ipynb)")
    run.add_argument("--notebooks-dir", default=None, metavar="DIR",
                     help="notebook folder (default: the report notebooks installed with cxex-lab)")
    run.add_argument("--segments", default="all",
                     help="'all' (default), 'site_id' (one report per site), 'all,site_id' or a list such as S01,S02")
    run.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                     help="notebook parameter, coerced to the type of its default (JSON for lists); repeatable")
    run.add_argument("--jobs", "-j", type=int, default=None, help="parallel notebooks (default: number of CPUs)")
    run.add_argument("--out", default="reports", help="reports folder (default: reports)")
    run.add_argument("--run-name", default=None, help="run folder name (default: a timestamp)")
    run.add_argument("--no-cache", action="store_true", help="execute every notebook even if unchanged")
    run.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds (default: none)")
    run.add_argument("--headline", default=None, metavar="KEY",
                     help="finding key compared across sites on the landing page (default: the first report's headline)")
    run.add_argument("--config", default=None, help="study config (YAML) for the prepare step")
    run.add_argument("--engine", default=None, choices=["duckdb", "spark"],
                     help="engine of the prepare step (needs the study workspace)")
    run.add_argument("--spark-remote", default=None, metavar="sc://HOST:PORT", help="Spark Connect server")
    run.set_defaults(func=cmd_run)
    return run
