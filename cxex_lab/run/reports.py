"""Batch reports: run notebooks x segments with papermill and share them as HTML.

:func:`run_reports` (``cxex-lab run``) validates everything first, runs the
prepare step once, then executes every selected notebook once per segment, in
parallel, each from a clean kernel, and writes into ``<out>/<run>/``:

* ``<notebook>__<segment>.html``: a self-contained report **without code**
  (images embedded, nothing fetched from a CDN), with links to the index and
  to the previous and next report;
* ``<notebook>__<segment>.ipynb``: the executed notebook (for the analyst);
* ``index.html``: the landing page (:mod:`cxex_lab.run.landing`);
* ``findings.json``: every report's key findings as data;
* ``provenance.json``: parameters, data fingerprint, package versions, code
  revision, times, the privacy scan's coverage, cache keys.

A report **fails** (no HTML; the index shows its one-line message) when the
notebook raises, when an output is an error or a stderr stream (a warning, a log
line) or raw Python output (:func:`cxex_lab.run.render.check_outputs`), or when
it shows one of the study's ids (:mod:`cxex_lab.run.idscan`).

Run names default to a timestamp (``reports/20261123-101500/``) and
``reports/latest`` points at the newest run. Kernel and worker output goes to
``<out>/.logs/<run>.log``, never to the terminal.
"""

from __future__ import annotations

import dataclasses

import concurrent.futures as cf
import datetime as _dt
import fnmatch
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxex_lab.run.cache import cache_get, cache_key, cache_put
from cxex_lab.run.errors import RunnerError
from cxex_lab.run.execute import Task, error_message, execute
from cxex_lab.run.idscan import IdIndex, IdSet, mask_ids, notebook_text, privacy_summary, scan_ids
from cxex_lab.run.kernel import KERNEL_NAME, write_kernelspec, worker_init
from cxex_lab.run.landing import write_index
from cxex_lab.run.parameters import check_parameters, notebook_parameters, notebook_values
from cxex_lab.run.prepare import PrepareHook, PrepareOptions, Prepared, as_mapping, resolve_hook
from cxex_lab.run.progress import label_of, make_progress
from cxex_lab.run.provenance import code_revision, data_files, data_fingerprint, package_versions, source_digest
from cxex_lab.run.render import insert_nav, sequence_nav
from cxex_lab.run.segments import resolve_segments, segment_slug
from cxex_lab.run.summary import emitted_facts, merge_facts

__all__ = ["RunResult", "run_reports", "notebooks_home", "summary_line"]

_STATUS_ORDER = ("failed", "ok", "cached")
_COLUMNS = ["notebook", "segment", "report", "status", "reason", "error", "seconds", "html", "ipynb", "cache_key"]


def notebooks_home() -> Path:
    """The report notebooks shipped with the package (``cxex_lab/notebooks``)."""
    from importlib import resources

    return Path(str(resources.files("cxex_lab").joinpath("notebooks")))


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    table : DataFrame
        One row per report: ``notebook``, ``segment``, ``report``, ``status``
        (``ok`` / ``cached`` / ``failed``), ``reason`` (``error`` / ``stderr`` /
        ``raw`` / ``privacy`` / ``render`` for failures), ``error`` (one line),
        ``seconds``, ``html``, ``ipynb``, ``cache_key``.
    run_dir : Path
        ``<out>/<run>/`` holding the reports, ``index.html``, ``findings.json``
        and ``provenance.json``.
    exit_code : int
        0 when every report is ok or cached, 1 otherwise.
    provenance : dict
        The content of ``provenance.json``.
    log : Path
        Kernel and worker output of the run (for the analyst; not for sharing).
    """

    table: pd.DataFrame
    run_dir: Path
    exit_code: int
    provenance: dict = field(default_factory=dict, repr=False)
    log: Path | None = None
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return self.run_dir / "index.html"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def summary_line(result: RunResult, cwd: Path | None = None) -> str:
    """``8 reports in 54 s: 7 ok, 1 failed (02_fails). Open reports/latest/index.html``."""
    t = result.table
    counts = t["status"].value_counts().to_dict()
    parts = ", ".join(f"{counts[s]} {s}" for s in ("ok", "cached", "failed") if s in counts)
    failed = [label_of(r) for r in t.to_dict("records") if r["status"] == "failed"]
    if failed:
        parts += f" ({', '.join(failed[:4])}{', …' if len(failed) > 4 else ''})"
    index = result.index
    latest = result.run_dir.parent / "latest" / "index.html"
    if latest.exists() and latest.resolve() == index.resolve():
        index = latest
    try:
        shown = index.relative_to(cwd or Path.cwd())
    except ValueError:
        shown = index
    n = len(t)
    return f"{n} report{'s' if n != 1 else ''} in {result.seconds:.0f} s: {parts}. Open {shown}"


# --------------------------------------------------------------------------- helpers

def _select_notebooks(notebooks_dir: Path, pattern: str) -> list[Path]:
    if not notebooks_dir.is_dir():
        raise RunnerError(f"notebook folder not found: {notebooks_dir}")
    globs = [g.strip() for g in pattern.split(",") if g.strip()] or ["*.ipynb"]
    found = []
    for p in sorted(notebooks_dir.glob("*.ipynb")):
        if p.name.startswith(".") or p.name.endswith("-checkpoint.ipynb"):
            continue
        if any(fnmatch.fnmatch(p.name, g) or fnmatch.fnmatch(p.stem, g) for g in globs):
            found.append(p)
    if not found:
        available = ", ".join(p.name for p in sorted(notebooks_dir.glob("*.ipynb"))) or "none"
        raise RunnerError(f"no notebook in {notebooks_dir} matches {pattern!r}; available: {available}")
    return found


def _display_path(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        return str(path.resolve())


def _new_run_dir(out: Path, run_name: str | None) -> tuple[Path, str]:
    out.mkdir(parents=True, exist_ok=True)
    if run_name:
        run_dir = out / run_name
        if run_dir.is_symlink():
            run_dir.unlink()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir()
        return run_dir, run_name
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name, i = stamp, 1
    while True:
        try:
            (out / name).mkdir()
            return out / name, name
        except FileExistsError:
            i += 1
            name = f"{stamp}-{i}"


def _point_latest(out: Path, name: str) -> None:
    latest = out / "latest"
    try:
        if latest.is_symlink() or latest.is_file():
            latest.unlink()
        elif latest.is_dir():
            shutil.rmtree(latest)
        latest.symlink_to(name, target_is_directory=True)
    except OSError:  # no symlinks (some Windows setups): leave a pointer file
        (out / "LATEST").write_text(name + "\n")


class _PatternIds(IdIndex):
    """Extra id *formats* (regexes) to scan for, beside the study's id values."""

    def __init__(self, patterns: Mapping[str, str]):
        self.patterns = {k: re.compile(v) for k, v in patterns.items()}
        self.kinds = tuple(patterns)

    def find(self, tokens):  # noqa: D102
        hits = {}
        for t in tokens:
            for kind, rx in self.patterns.items():
                if rx.fullmatch(t):
                    hits.setdefault(t, kind)
        return hits

    def describe(self):  # noqa: D102
        return {"method": "id formats", "patterns": {k: v.pattern for k, v in self.patterns.items()}}


class _Both(IdIndex):
    def __init__(self, *indexes: IdIndex):
        self.indexes = [i for i in indexes if i is not None]
        self.kinds = tuple(k for i in self.indexes for k in i.kinds)

    def find(self, tokens):  # noqa: D102
        hits: dict[str, str] = {}
        for i in self.indexes:
            for t, k in i.find(tokens).items():
                hits.setdefault(t, k)
        return hits

    def describe(self):  # noqa: D102
        return {"sources": [i.describe() for i in self.indexes]}

    def close(self):  # noqa: D102
        for i in self.indexes:
            i.close()


def _id_index(ids: IdIndex | Mapping[str, Any] | None, prepared: Prepared,
              patterns: Mapping[str, str] | None) -> IdIndex:
    if ids is None:
        index = prepared.ids
    elif isinstance(ids, IdIndex):
        index = ids
    else:
        index = IdSet(ids)
    if index is None:
        from cxex_lab.run.idscan import study_ids

        index = study_ids(prepared.data)
    if patterns:
        for kind, rx in patterns.items():
            try:
                re.compile(rx)
            except re.error as err:
                raise RunnerError(f"privacy pattern {kind}={rx!r} is not a valid regex: {err}") from None
        index = _Both(index, _PatternIds(patterns))
    return index


def _min_group_size(params: Mapping[str, Any], declared: Mapping[Path, Mapping[str, Mapping]]) -> int:
    if "min_group_size" in params:
        try:
            return int(params["min_group_size"])
        except (TypeError, ValueError):
            pass
    for d in declared.values():
        if "min_group_size" in d and isinstance(d["min_group_size"]["default"], int):
            return int(d["min_group_size"]["default"])
    from cxex_lab.privacy import MIN_GROUP_SIZE

    return MIN_GROUP_SIZE


# --------------------------------------------------------------------------- the run

def run_reports(
    notebooks_dir: str | Path | None = None,
    data: str | Path = "data/sample",
    pattern: str = "*.ipynb",
    segments: str | Sequence[str] = "all",
    params: Mapping[str, Any] | None = None,
    jobs: int | None = None,
    out: str | Path = "reports",
    cache: bool = True,
    run_name: str | None = None,
    *,
    timeout: float | None = None,
    ids: IdIndex | Mapping[str, Any] | None = None,
    privacy_patterns: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    progress: bool | str | Callable[[int, int, Mapping], None] = True,
    prepare: PrepareHook | str | None = None,
    prepare_options: PrepareOptions | None = None,
    headline: str | None = None,
) -> RunResult:
    """Execute notebooks x segments with papermill and render shareable HTML reports.

    Parameters
    ----------
    notebooks_dir : path, optional
        Folder of parameterised notebooks (default: the report notebooks shipped
        with the package, :func:`notebooks_home`).
    data : path
        Study directory (or DuckDB file); passed to notebooks declaring ``data_dir``
        (after the prepare step, which may substitute a workspace).
    pattern : str
        Glob(s) on notebook file names, comma-separated (``"0[1-3]_*.ipynb"``).
    segments : str or list
        ``"all"``, ``"site_id"`` (every site, one report each) or ``"S01,S02"``.
    params : mapping, optional
        Notebook parameters; values may be strings (as from the CLI, coerced by the
        type of the notebook's default) or Python values (type-checked). Each goes
        only to the notebooks that declare it.
    jobs : int, optional
        Parallel notebooks (default ``os.cpu_count()``).
    out : path
        Reports folder; the run goes to ``<out>/<run_name>/``.
    cache : bool
        Reuse unchanged reports from ``<out>/.cache/``.
    run_name : str, optional
        Folder name of this run (default: a timestamp). An existing run of that
        name is replaced.
    timeout : float, optional
        Per-cell execution timeout in seconds (default: none).
    ids : IdIndex or mapping of kind -> ids, optional
        The identifiers no report may show (default: the study's own, from the
        prepare step; see :mod:`cxex_lab.run.idscan`).
    privacy_patterns : mapping of name -> regex, optional
        Extra id formats to refuse, beside the study's id values.
    cwd : path, optional
        Working directory of the notebooks (default: the current directory).
    progress : bool, "lines", "bar" or callable
        ``True``: a progress bar on a terminal, one line per report otherwise;
        a callable receives ``(done, total, row)``; ``False``: silent.
    prepare : callable, "auto", "files" or "workspace", optional
        The prepare hook (:mod:`cxex_lab.run.prepare`), called once before the
        notebooks run (default ``"auto"``).
    prepare_options : PrepareOptions, optional
        Config, engine, Spark remote for the prepare hook.
    headline : str, optional
        Key of the finding compared across sites on the landing page (default:
        the first report's headline finding).

    Returns
    -------
    RunResult

    Raises
    ------
    RunnerError
        Before anything runs, for unknown parameters or segments, badly typed
        values, missing folders, a study whose ids cannot be read.
    """
    t0 = time.perf_counter()
    started_at = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    notebooks_dir = Path(notebooks_dir).resolve() if notebooks_dir is not None else notebooks_home()
    root = Path(cwd).resolve() if cwd is not None else Path.cwd().resolve()
    data_path = Path(data)
    data_path = (data_path if data_path.is_absolute() else root / data_path).resolve()
    if not data_path.exists():
        raise RunnerError(f"data not found: {data} (give --data a study directory or a DuckDB file)")
    jobs = int(jobs) if jobs else (os.cpu_count() or 1)
    if jobs < 1:
        raise RunnerError(f"--jobs must be >= 1, got {jobs}")
    if run_name and (run_name in ("latest", ".cache", ".logs") or "/" in run_name or os.sep in run_name):
        raise RunnerError(f"run name {run_name!r} is reserved or not a plain folder name")

    # ---- validate everything before running anything
    notebooks = _select_notebooks(notebooks_dir, pattern)
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    params = dict(params or {})
    check_parameters(params, declared)
    nb_params = {nb: notebook_values(params, declared[nb], nb.name) for nb in notebooks}
    options = prepare_options or PrepareOptions(segments=segments)
    if options.workspace_dir is None:  # the workspace lives with the reports it serves
        options = dataclasses.replace(options, workspace_dir=str(Path(out).resolve() / ".workspace"))

    # ---- prepare once (the workspace, when there is one)
    hook = resolve_hook(prepare)
    prepared = hook(data_path, options)
    if not isinstance(prepared, Prepared):
        raise RunnerError(f"the prepare hook {getattr(hook, '__name__', hook)!r} returned "
                          f"{type(prepared).__name__}, not a Prepared")
    seg_list = resolve_segments(segments, prepared.data, sites=prepared.sites)
    index = _id_index(ids, prepared, privacy_patterns)
    index_info = index.describe()

    fingerprint = prepared.fingerprint or data_fingerprint(data_path)
    versions = package_versions()
    source = source_digest()
    data_arg = _display_path(prepared.data, root)
    out = Path(out) if Path(out).is_absolute() else root / out
    out = out.resolve()
    tasks: list[Task] = []
    for nb in notebooks:
        decl = declared[nb]
        base = dict(nb_params[nb])
        if "data_dir" in decl:
            base["data_dir"] = data_arg
        nb_digest = hashlib.sha256(nb.read_bytes()).hexdigest()
        for seg in seg_list:
            p = dict(base)
            if "segment" in decl:
                p["segment"] = seg
            elif seg != "all":
                raise RunnerError(f"{nb.name} declares no 'segment' parameter, so it cannot run per segment "
                                  f"({seg}); run it with --segments all or add segment to its parameters cell")
            report = f"{nb.stem}__{segment_slug(seg)}"
            key = cache_key(nb_digest, {**p, "__segment": seg}, fingerprint, versions, source)
            tasks.append(Task(str(nb), nb.stem, seg, p, report, key, "", str(root), timeout))

    # everything is valid: only now create the run folder
    run_dir, run_name = _new_run_dir(out, run_name)
    for task in tasks:
        task.run_dir = str(run_dir)
    log_dir = out / ".logs"
    log_dir.mkdir(exist_ok=True)
    log_file = log_dir / f"{run_name}.log"
    log_file.write_text("", encoding="utf-8")

    # ---- run
    cache_dir = out / ".cache"
    results: dict[str, dict] = {}
    notices = []
    short = (index_info.get("short_numeric") if isinstance(index_info, Mapping) else None) or {}
    if short:
        kinds = ", ".join(f"{n:,} {k.replace('_', ' ')}s" for k, n in short.items())
        notices.append(f"note: {kinds} are numbers of fewer than 6 digits; the privacy scan cannot tell them from "
                       f"counts, so pseudonymise them before sharing reports")
    if prepared.description:
        notices.append(f"prepared: {prepared.description} ({prepared.seconds:.1f} s)")

    def finalize(task: Task, row: dict) -> dict:
        """Scan, then cache and publish the HTML (or withhold it)."""
        row.update(notebook=task.name, segment=task.segment, cache_key=task.cache_key)
        row.setdefault("emitted", {})
        row["html_final"] = ""
        ipynb = run_dir / row["ipynb"] if row.get("ipynb") else None
        pending = run_dir / row["html"] if row.get("html") else None
        texts = []
        if pending is not None and pending.exists():
            texts.append(pending.read_text(encoding="utf-8"))
        if ipynb is not None and ipynb.exists():
            texts.append(notebook_text(ipynb))
        leaks = list({(f["kind"], f["match"]): f for text in texts for f in scan_ids(text, index)}.values())
        if leaks:
            for p in (pending, ipynb):
                if p is not None and p.exists():
                    p.unlink()
            row.update(status="failed", reason="privacy", error=privacy_summary(leaks), html="", ipynb="",
                       emitted={})
        else:
            row["error"] = mask_ids(row.get("error", ""), index)
            if row["status"] == "ok" and pending is not None:
                cache_put(cache_dir, task.cache_key, run_dir, row, run_name)
            if row["status"] in ("ok", "cached") and pending is not None:
                final = run_dir / f"{task.report}.html"
                os.replace(pending, final)
                row["html"] = row["html_final"] = final.name
        results[task.report] = row
        return row

    with make_progress(progress, len(tasks)) as bar:
        for text in notices:
            bar.note(text)
        pending_tasks = []
        for task in tasks:
            hit = cache_get(cache_dir, task.cache_key, run_dir, task.report) if cache else None
            if hit is not None:
                bar.update(finalize(task, hit))
            else:
                pending_tasks.append(task)
        if pending_tasks:
            kernel_base = Path(tempfile.mkdtemp(prefix="cxex-kernel-"))
            try:
                write_kernelspec(kernel_base)
                workers = max(1, min(jobs, len(pending_tasks)))
                ctx = multiprocessing.get_context("spawn")
                with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init,
                                            initargs=(str(kernel_base), str(log_file))) as pool:
                    futures = {pool.submit(execute, t): t for t in pending_tasks}
                    try:
                        for fut in cf.as_completed(futures):
                            task = futures[fut]
                            try:
                                row = fut.result()
                            except Exception as err:  # noqa: BLE001 - a crashed worker fails one report
                                row = {"report": task.report, "status": "failed", "reason": "error",
                                       "error": error_message(err), "html": "", "ipynb": "", "seconds": 0.0}
                            bar.update(finalize(task, row))
                    except KeyboardInterrupt:
                        # stop now: drop queued reports and end the workers (their kernels exit
                        # with their parent), instead of waiting for running notebooks to finish
                        pool.shutdown(wait=False, cancel_futures=True)
                        for proc in list((getattr(pool, "_processes", None) or {}).values()):
                            proc.terminate()
                        raise
            finally:
                shutil.rmtree(kernel_base, ignore_errors=True)
    index.close()

    # ---- navigation between the published reports, in run order
    rows = [results[t.report] for t in tasks]
    published = [(r["html_final"], r.get("title") or r["notebook"]) for r in rows if r.get("html_final")]
    titles = {}
    for (href, title), r in zip(published, [r for r in rows if r.get("html_final")]):
        titles[href] = title if r["segment"] == "all" else f"{title} [{r['segment']}]"
    seq = [(href, titles[href]) for href, _ in published]
    for (href, _), (top, bottom) in zip(seq, sequence_nav(seq)):
        path = run_dir / href
        path.write_text(insert_nav(path.read_text(encoding="utf-8"), top, bottom), encoding="utf-8")

    # ---- table, findings, provenance, index
    table = pd.DataFrame([{c: r.get(c, "") for c in _COLUMNS} for r in rows], columns=_COLUMNS)
    table["seconds"] = table["seconds"].astype(float)
    exit_code = int((table["status"] == "failed").any())
    finished_at = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    findings = [{"report": r["report"], "notebook": r["notebook"], "segment": r["segment"], "status": r["status"],
                 "findings": (r.get("emitted") or {}).get("findings", [])} for r in rows]
    (run_dir / "findings.json").write_text(json.dumps(findings, indent=1, default=str), encoding="utf-8")
    whole = [p for r in rows if r["segment"] == "all" for p in (r.get("emitted") or {}).get("study", [])]
    facts = merge_facts(prepared.facts, emitted_facts(whole))
    min_group = _min_group_size(params, declared)
    elapsed = time.perf_counter() - t0
    prov = {
        "run": {
            "name": run_name, "started_at": started_at, "finished_at": finished_at, "seconds": round(elapsed, 3),
            "notebooks_dir": str(notebooks_dir), "pattern": pattern, "data": _display_path(data_path, root),
            "segments": segments if isinstance(segments, str) else list(segments), "resolved_segments": seg_list,
            "params": dict(params), "jobs": jobs, "cache": cache, "out": str(out), "cwd": str(root),
            "timeout": timeout, "exit_code": exit_code, "argv": list(sys.argv), "log": str(log_file),
        },
        "data": {"path": _display_path(data_path, root), "fingerprint": fingerprint,
                 "n_files": len(data_files(data_path))},
        "prepare": as_mapping(prepared),
        "privacy": {"scan": index_info, "min_numeric_digits": 6},
        "code": code_revision(Path(__file__).resolve().parents[2]),
        "cxex_lab_source_sha256": source,
        "packages": versions,
        "kernel": {"name": KERNEL_NAME, "python": sys.executable},
        "study": facts,
        "reports": [
            {**{c: r.get(c, "") for c in _COLUMNS if c != "report"}, "report": t.report, "title": r.get("title", ""),
             "parameters": t.parameters, "notebook_sha256": hashlib.sha256(Path(t.notebook).read_bytes()).hexdigest(),
             **({"cached_from": r["cached_from"]} if r.get("cached_from") else {})}
            for t, r in zip(tasks, rows)
        ],
    }
    if privacy_patterns:
        prov["privacy_patterns"] = dict(privacy_patterns)
    (run_dir / "provenance.json").write_text(json.dumps(prov, indent=2, default=str), encoding="utf-8")
    write_index(run_dir, rows, prov, facts=facts, headline=headline, min_group_size=min_group)
    _point_latest(out, run_name)
    return RunResult(table=table, run_dir=run_dir, exit_code=exit_code, provenance=prov, log=log_file,
                     seconds=elapsed)
