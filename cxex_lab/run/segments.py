"""Segments: which parts of the study get a report of their own.

``"all"`` is the whole study; ``"site_id"`` one report per site in the employees
table (without an extra ``"all"``: ask for ``"all,site_id"``); a comma-separated
list (``"S01,S02"``, ``"all"`` allowed in it) runs exactly those. The rule that
selects a segment's rows lives with the data (``Study.segment``, later the
workspace); the runner only needs the list of site ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxex_lab.run.errors import RunnerError

__all__ = ["read_site_ids", "resolve_segments", "segment_slug"]


def read_site_ids(data: str | Path) -> list[str]:
    """Site ids in the study's employees table (``employees.parquet`` or ``.csv``).

    Other layouts (a DuckDB file, a study config) are read through
    :func:`cxex_lab.io.load_study`.
    """
    data = Path(data)
    for name in ("employees.parquet", "employees.csv"):
        path = data / name
        if path.exists():
            try:
                if name.endswith("parquet"):
                    employees = pd.read_parquet(path, columns=["site_id"])
                else:
                    employees = pd.read_csv(path, usecols=["site_id"], dtype=str)
            except (KeyError, ValueError) as err:
                raise RunnerError(f"{path}: no site_id column to make segments from ({err})") from None
            return sorted(employees["site_id"].dropna().astype(str).unique())
    try:  # other layouts (a DuckDB file, a study config): ask the io layer
        from cxex_lab.io import load_study

        study = load_study(data, validate=False)
        return sorted(study.employees["site_id"].dropna().astype(str).unique())
    except Exception as err:  # noqa: BLE001 - turned into a clear message
        raise RunnerError(f"cannot read site ids from {data}: no employees.parquet or employees.csv ({err})") from err


def resolve_segments(segments: str | Sequence[str], data: str | Path | None = None,
                     sites: Sequence[str] | None = None) -> list[str]:
    """Expand ``"all"`` / ``"site_id"`` / ``"S01,S02"`` into the list of segments to run.

    The site ids come from ``sites`` when given (e.g. from a prepared workspace),
    else from the employees table under ``data``. Unknown segments raise
    :class:`RunnerError` listing the valid ones.
    """
    items = [s.strip() for s in (segments.split(",") if isinstance(segments, str) else segments)]
    items = [s for s in items if s]
    if not items:
        raise RunnerError("no segment given: use 'all', 'site_id' or a list of site ids such as S01,S02")
    if items == ["all"]:
        return ["all"]
    if sites is None:
        if data is None:
            raise RunnerError("segments other than 'all' need the study's site ids")
        sites = read_site_ids(data)
    sites = [str(s) for s in sites]
    out: list[str] = []
    unknown = []
    for s in items:
        expanded = sites if s == "site_id" else [s]
        for e in expanded:
            if e != "all" and e not in sites:
                unknown.append(e)
            elif e not in out:
                out.append(e)
    if unknown:
        raise RunnerError(f"unknown segment(s) {', '.join(unknown)}; valid choices: all, site_id, "
                          f"{', '.join(sites)}")
    return out


def segment_slug(segment: str) -> str:
    """The segment as it appears in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", segment)
