"""Command-line interface: ``cxex-lab simulate | validate | prepare | power | run``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_simulate(args: argparse.Namespace) -> int:
    import json

    from cxex_lab.simulate import simulate_study, write_study

    params = dict(_parse_params(args.param))
    site_effects = None
    if args.site_effects:
        try:
            site_effects = json.loads(args.site_effects)
        except json.JSONDecodeError as err:
            raise SystemExit(f"error: --site-effects must be a JSON list of numbers, e.g. [0.1,-0.2] ({err})")
    size = dict(n_sites=args.sites, n_employees=args.employees, n_waves=args.waves, seed=args.seed, latent=args.latent)
    try:
        if args.chunked:
            if args.format != "parquet":
                raise SystemExit("error: --chunked writes Parquet only (use --format parquet)")
            write_study(args.out, site_effects=site_effects, progress=print, **size, **params)
            return 0
        study = simulate_study(site_effects=site_effects, **size, **params)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = study.save(args.out, fmt=args.format, latent=args.latent)
    print(f"wrote {study!r} to {out}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from cxex_lab.io import load_study
    from cxex_lab.schema import DataContractError, validate

    try:
        study = load_study(args.path, config=args.config, validate=False)
        result = validate(study)
    except DataContractError as err:
        print(str(err), file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.path}: the data contract holds.")
    print(study.summary().to_string(index=False))
    ledger = result.ledger
    if len(ledger):
        print("\nData-quality ledger (rows excluded on purpose):")
        print(ledger.to_string(index=False))
    else:
        print("\nData-quality ledger: no rows excluded.")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    import time

    from cxex_lab.schema import DataContractError
    from cxex_lab.workspace import WorkspaceError, prepare

    t0 = time.perf_counter()
    log = (lambda msg: print(f"  {msg}", file=sys.stderr)) if args.verbose else None
    panels = args.panels if args.panels in ("default", "all", "none") else "default"
    try:
        ws = prepare(args.path, config=args.config, engine=args.engine, out=args.out, memory_limit=args.memory_limit,
                     temp_directory=args.temp_directory, spark_remote=args.spark_remote, panels=panels,
                     force=args.force, threads=args.threads, log=log)
    except DataContractError as err:
        print(str(err), file=sys.stderr)
        return 1
    except (FileNotFoundError, WorkspaceError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with ws:
        how = "reused" if ws.reused else f"prepared on {args.engine}"
        print(f"{args.path}: workspace {how} in {time.perf_counter() - t0:.1f} s")
        print(f"  {ws.path}")
        print(ws.sizes().to_string(index=False))
        ledger = ws.ledger
        if len(ledger):
            print("\nData-quality ledger (rows excluded on purpose):")
            print(ledger.to_string(index=False))
        else:
            print("\nData-quality ledger: no rows excluded.")
    return 0


def _parse_params(items: Sequence[str] | None) -> list[tuple[str, object]]:
    import json

    out = []
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: parameter {item!r} must look like name=value")
        name, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((name.strip(), value))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxex-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="simulate a study with known truth and write it to a directory")
    sim.add_argument("--out", required=True, help="output directory")
    sim.add_argument("--seed", type=int, default=20261123)
    sim.add_argument("--sites", type=int, default=10)
    sim.add_argument("--employees", type=int, default=400)
    sim.add_argument("--waves", type=int, default=6)
    sim.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    sim.add_argument("--latent", action="store_true", help="also write the latent (noise-free) tables under latent/")
    sim.add_argument(
        "--chunked", action="store_true",
        help="generate and write site by site (for very large studies; same tables as without it)",
    )
    sim.add_argument(
        "--site-effects", default=None, metavar="JSON",
        help="fixed latent site effects, one per site, e.g. '[0.3,-0.1]' (default: drawn)",
    )
    sim.add_argument(
        "-p", "--param", action="append", metavar="NAME=VALUE",
        help="simulator parameter (JSON value), e.g. -p ex_to_cx=0.3; repeatable",
    )
    sim.set_defaults(func=_cmd_simulate)

    val = sub.add_parser("validate", help="check a study directory against the data contract")
    val.add_argument("path", help="study directory (Parquet/CSV tables) or DuckDB file")
    val.add_argument("--config", default=None, help="study config (YAML) mapping real columns to roles")
    val.set_defaults(func=_cmd_validate)

    prep = sub.add_parser(
        "prepare", help="load, validate and link a study once, into a reusable workspace (DuckDB file)",
        description="Load, validate (in the engine) and link a study once, and write a workspace file keyed by "
                    "the data, the config and the package; an unchanged study reuses it.",
        epilog="example: cxex-lab prepare data/sample --memory-limit 4GB; "
               "cxex-lab prepare big_study --engine spark --spark-remote sc://localhost:15002")
    prep.add_argument("path", help="study directory (Parquet/CSV tables) or DuckDB file")
    prep.add_argument("--config", default=None, help="study config (YAML) mapping real columns to roles")
    prep.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb",
                      help="where validation and linkage run (default duckdb, in-process and out of core)")
    prep.add_argument("--spark-remote", default=None, metavar="sc://HOST:PORT", help="Spark Connect server")
    prep.add_argument("--out", default=None,
                      help="folder of workspace files (default $CXEX_LAB_WORKSPACE_DIR or ~/.cache/cxex-lab/workspaces)")
    prep.add_argument("--memory-limit", default=None, metavar="SIZE", help="DuckDB memory cap, e.g. 4GB")
    prep.add_argument("--temp-directory", default=None, metavar="DIR", help="where DuckDB spills beyond the cap")
    prep.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    prep.add_argument("--panels", choices=["default", "all", "none"], default="default",
                      help="linked panels to store: default (every level x wave x ex_lag 0/1), all periods, or none")
    prep.add_argument("--force", action="store_true", help="rebuild even if an up-to-date workspace exists")
    prep.add_argument("-v", "--verbose", action="store_true", help="print each step's time")
    prep.set_defaults(func=_cmd_prepare)

    from cxex_lab.models.power import register_cli as _register_power  # cxex-lab power (report 08)

    _register_power(sub)

    try:
        from cxex_lab import runner
    except ImportError:  # the runner is optional until its dependencies exist
        runner = None
    if runner is not None and hasattr(runner, "register_cli"):
        runner.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
