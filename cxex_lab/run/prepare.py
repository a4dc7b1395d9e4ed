"""The prepare step: what happens to the data once, before any notebook runs.

A *prepare hook* receives the study path and the run's options and returns a
:class:`Prepared`: the path the notebooks get as ``data_dir``, the site ids
(for ``--segments site_id``), the id index of the privacy scan, and the study
facts of the landing page. :func:`run_reports` calls it exactly once, after the
parameters are validated and before the first notebook starts.

The default, :func:`prepare_workspace`, prepares (or reuses) the study
workspace with :func:`cxex_lab.workspace.prepare` in ``<out>/.workspace``:
loading, validation and linkage run once, in the engine, and the notebooks
receive the workspace file as ``data_dir``; the id index of the privacy scan
and the landing page's facts come from it (``_from_workspace``, the only
function that knows the workspace's API). :func:`prepare_files` reads the study
where it is instead (notebooks get the study directory, the id index looks ids
up in the files). A caller may always pass its own hook:
``run_reports(..., prepare=my_hook)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxex_lab.run.errors import RunnerError
from cxex_lab.run.idscan import IdIndex

__all__ = ["PrepareOptions", "Prepared", "PrepareHook", "prepare_files", "prepare_workspace", "default_hook"]


@dataclass(frozen=True)
class PrepareOptions:
    """What the run knows that the prepare step may need."""

    config: str | None = None        # a study config (study.yaml) beside or instead of the data
    engine: str | None = None        # "duckdb" | "spark" (None: the workspace's default)
    spark_remote: str | None = None  # sc://host:port for Spark Connect
    segments: str | Sequence[str] = "all"
    workspace_dir: str | None = None  # where the workspace is kept (the run sets <out>/.workspace)


@dataclass
class Prepared:
    """The result of the prepare step.

    Attributes
    ----------
    data : Path
        What the notebooks receive as ``data_dir`` (the study directory, or a
        prepared workspace).
    sites : list of str, optional
        The study's site ids (``--segments site_id``); None: read from ``data``.
    ids : IdIndex, optional
        The privacy scan's id index; None: built from ``data``.
    facts : dict
        Study facts for the landing page (see :mod:`cxex_lab.run.summary`).
    description : str
        One line for the terminal and the provenance ("workspace reused", ...).
    fingerprint : str, optional
        Identity of the prepared data for the cache key (None: the fingerprint of
        the study files).
    """

    data: Path
    sites: list[str] | None = None
    ids: IdIndex | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    fingerprint: str | None = None
    seconds: float = 0.0


PrepareHook = Callable[[Path, PrepareOptions], Prepared]


def prepare_files(data: Path, options: PrepareOptions) -> Prepared:
    """No workspace: notebooks read the study files themselves."""
    from cxex_lab.run.idscan import study_ids
    from cxex_lab.run.summary import file_facts

    if options.engine not in (None, "duckdb", "pandas"):
        raise RunnerError(f"--engine {options.engine} needs the study workspace (cxex_lab.workspace), which this "
                          f"installation does not have; run without --engine")
    t0 = time.perf_counter()
    try:
        ids = study_ids(data)
    except Exception as err:  # noqa: BLE001 - a run without a privacy scan must not start
        raise RunnerError(f"cannot read the study's ids for the privacy scan from {data}: {err}") from None
    return Prepared(data=data, ids=ids, facts=file_facts(data), description="",
                    seconds=time.perf_counter() - t0)


def _from_workspace(ws: Any, data: Path) -> Prepared:
    """Map a ``cxex_lab.workspace`` workspace onto :class:`Prepared` (the one place that knows its API).

    Expected (PLAN.md): ``ws.path`` (the workspace file the notebooks open with
    ``Workspace.open``), ``ws.summary()`` (study facts), ``ws.employees``
    (``site_id``), and an id index for the scan, e.g. ``ws.id_index()`` returning
    a :class:`~cxex_lab.run.idscan.HashedIds` over the pseudonymised ids.
    """
    from cxex_lab.run.summary import facts_from_summary

    sites = sorted(ws.employees["site_id"].dropna().astype(str).unique()) if hasattr(ws, "employees") else None
    ids = ws.id_index() if hasattr(ws, "id_index") else None
    facts = facts_from_summary(ws.summary()) if hasattr(ws, "summary") else {}
    return Prepared(data=Path(getattr(ws, "path", data)), sites=sites, ids=ids, facts=facts,
                    description=f"study workspace {Path(getattr(ws, 'path', data)).name}",
                    fingerprint=getattr(ws, "fingerprint", None))


def prepare_workspace(data: Path, options: PrepareOptions) -> Prepared:
    """Prepare (or reuse) the study workspace with ``cxex_lab.workspace.prepare``."""
    from cxex_lab import workspace  # type: ignore[attr-defined]

    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if options.config:
        kwargs["config"] = options.config
    if options.engine:
        kwargs["engine"] = options.engine
    if options.spark_remote:
        kwargs["spark_remote"] = options.spark_remote
    if options.workspace_dir:
        kwargs["out"] = options.workspace_dir
    try:
        ws = workspace.prepare(data, **kwargs)
    except (ValueError, FileNotFoundError) as err:
        raise RunnerError(f"prepare: {err}") from None
    prepared = _from_workspace(ws, data)
    prepared.seconds = time.perf_counter() - t0
    return prepared


def default_hook() -> PrepareHook:
    """The study workspace (:func:`prepare_workspace`): validated and linked once, then every notebook reads it.

    ``$CXEX_LAB_PREPARE=files`` runs notebooks on the study files instead (for
    notebooks that need no workspace, such as the runner's own test fixtures).
    """
    import os

    if os.environ.get("CXEX_LAB_PREPARE", "workspace") == "files":
        return prepare_files
    return prepare_workspace


def resolve_hook(prepare: PrepareHook | str | None) -> PrepareHook:
    """``None``/``"auto"`` -> :func:`default_hook`; ``"files"``/``"workspace"`` by name; a callable as is."""
    if prepare is None or prepare == "auto":
        return default_hook()
    if prepare == "files":
        return prepare_files
    if prepare == "workspace":
        return prepare_workspace
    if callable(prepare):
        return prepare
    raise RunnerError(f"prepare must be 'auto', 'files', 'workspace' or a function, got {prepare!r}")


def as_mapping(p: Prepared) -> Mapping[str, Any]:
    """The provenance record of the prepare step (no ids; the id index is described under "privacy")."""
    return {"data": str(p.data), "description": p.description, "seconds": round(p.seconds, 3),
            "sites": p.sites, "facts": dict(p.facts)}
