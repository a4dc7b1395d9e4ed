"""Command-line interface: ``cxex-lab simulate | init | validate | prepare | power | run``."""

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
    """Load, map and validate a study; print the tables' sizes, every problem, the ledger and the notes.

    Exit 0: the contract holds; 1: the data have problems (all listed); 2: the
    study or its config cannot be read. Never a traceback.
    """
    from cxex_lab.config import ConfigError
    from cxex_lab.io import check_study

    try:
        check = check_study(args.path, config=args.config)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a researcher never sees a traceback; the message says what broke
        print(f"error: validating {args.path} failed unexpectedly ({type(err).__name__}: {err}); please report "
              f"this with the command you ran", file=sys.stderr)
        return 3
    info = check.info
    where = f" (study config {info.get('config')})" if info.get("config") else ""
    print(f"{args.path}{where}")
    print("\nTables (rows read from the files, excluded on purpose while loading and by the contract, kept):")
    sizes = check.sizes.copy()
    sizes = sizes.rename(columns={"rows_read": "read", "excluded_at_load": "excl. load",
                                  "excluded_by_contract": "excl. contract", "rows": "kept"})
    print(sizes.astype(object).where(sizes.notna(), "-").to_string(index=False))
    if check.ok:
        print(f"\n{args.path}: the data contract holds.")
    else:
        print(f"\n{len(check.problems)} problem(s):", file=sys.stderr)
        for line in check.problem_lines():
            print(f"  - {line}", file=sys.stderr)
    ledger = check.ledger
    if len(ledger):
        print("\nData-quality ledger (rows excluded on purpose):")
        print(f"  {'step':<9}{'table':<18}{'rows':>6}  rule")
        for r in ledger.itertuples(index=False):
            ex = f"  (e.g. {r.example})" if r.example else ""
            print(f"  {r.step:<9}{r.table:<18}{r.rows_excluded:>6}  {r.rule}{ex}")
    else:
        print("\nData-quality ledger: no rows excluded.")
    lines = list(check.notes)
    for key, sc in (info.get("scales") or {}).items():
        if sc.get("map") not in (None, "none"):
            how = {"linear": "linearly (decimals kept)", "round": "by the linear map rounded to whole points",
                   "recode": "by the recode given"}[sc["map"]]
            table = ""
            if sc.get("points"):
                table = " (" + ", ".join(f"{k}->{v}" for k, v in sc["points"].items()) + ")"
            lines.append(f"{key} ({sc.get('source')}) asked on {sc['native'][0]}-{sc['native'][1]}, mapped onto the "
                         f"contract's {sc['contract'][0]}-{sc['contract'][1]} {how}{table}")
    for item in info.get("not_asked") or []:
        lines.append(f"{item}: not asked (missing in every row)")
    dropped = {t: cols for t, cols in (info.get("dropped") or {}).items() if cols}
    if dropped:
        lines.append("dropped at load (never read): " + "; ".join(f"{t}: {', '.join(c)}" for t, c in dropped.items()))
    priv = info.get("privacy") or {}
    if priv.get("pseudonymised"):
        lines.append(f"ids ({', '.join(priv.get('columns', []))}) are pseudonymised when the study is prepared, "
                     f"with the key {priv.get('key_file')} (created on first use; keep it out of reports and "
                     f"version control)")
    else:
        lines.append("ids are kept as they are (a simulated study, or privacy.pseudonymise: false)")
    print("\nNotes:")
    for line in lines:
        print(f"  - {line}")
    return 0 if check.ok else 1


def _cmd_init(args: argparse.Namespace) -> int:
    """Draft a commented study.yaml from the exports in a folder."""
    from pathlib import Path

    from cxex_lab.scaffold import draft_config

    folder = Path(args.path)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    target = Path(args.out) if args.out else folder / "study.yaml"
    if target.exists() and not args.force:
        print(f"error: {target} exists; use --force to overwrite it (or --out another file)", file=sys.stderr)
        return 2
    try:
        text, notes = draft_config(folder)
    except Exception as err:  # noqa: BLE001 - never a traceback
        print(f"error: could not draft a config for {folder} ({type(err).__name__}: {err})", file=sys.stderr)
        return 3
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}: check every line marked CHECK, then run: cxex-lab validate {folder}")
    if notes:
        print("To decide:")
        for n in notes:
            print(f"  - {n}")
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

    ini = sub.add_parser(
        "init", help="draft a commented study.yaml from the exports in a folder",
        description="Look at the exports in a folder (CSV, Excel, SPSS, Stata, Parquet) and write a commented "
                    "study config with best guesses: which file is which table, which column plays which role, "
                    "header lines, label maps, scales, date formats (ambiguous day/month orders are flagged, not "
                    "guessed), true/false words, placeholders, filters, personal columns to drop.",
        epilog="then: cxex-lab validate DIR")
    ini.add_argument("path", help="the folder with the export files")
    ini.add_argument("--out", default=None, help="where to write the config (default DIR/study.yaml)")
    ini.add_argument("--force", action="store_true", help="overwrite an existing config")
    ini.set_defaults(func=_cmd_init)

    val = sub.add_parser(
        "validate", help="load, map and check a study against the data contract; print sizes, problems, ledger",
        description="Load a study (exports with a study.yaml, canonical tables or a DuckDB file), map it onto the "
                    "contract and validate it. Prints each table's size, every problem (file, column, rows as the "
                    "file shows them, value, rule), the data-quality ledger and notes. Exit status 0: the contract "
                    "holds; 1: problems; 2: the study or config cannot be read.")
    val.add_argument("path", help="study folder (exports + study.yaml, or Parquet/CSV tables) or DuckDB file")
    val.add_argument("--config", default=None, help="study config (default: study.yaml in the folder)")
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
