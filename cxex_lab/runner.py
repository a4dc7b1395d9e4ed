"""Batch reports: run notebooks x segments with papermill and share them as HTML.

``cxex-lab run`` (or :func:`run_reports`) executes every selected notebook once per
segment, in parallel, from a clean kernel, and writes into ``<out>/<run>/``:

* ``<notebook>__<segment>.ipynb`` - the executed notebook (outputs and code);
* ``<notebook>__<segment>.html`` - a self-contained report **without code cells**:
  images are embedded as ``data:`` URIs and no script or style is fetched from a CDN,
  so the file opens offline;
* ``index.html`` - one row per report: status (ok / cached / failed), duration, and the
  error for failures, linking every report;
* ``provenance.json`` - run and per-report parameters, a fingerprint of the data, the
  versions of the key packages, the code revision, start and end times.

Run names default to a timestamp (``reports/20261123-101500/``) and ``reports/latest``
is a symlink to the newest run.

Segments
    ``"all"`` runs each notebook once on the whole study; ``"site_id"`` runs it once per
    site found in the employees table (``employees.parquet`` / ``.csv``), *without* an
    extra ``"all"`` run (ask for ``"all,site_id"`` to get both); a comma-separated list
    (``"S01,S02"``, ``"all"`` allowed in it) runs exactly those.

Parameters
    ``-p name=value`` is checked before anything runs against the ``parameters``-tagged
    cell of every selected notebook: an unknown name or a value that does not fit the
    type of the notebook's default is an error that lists the valid choices. A parameter
    is passed only to the notebooks that declare it; ``data_dir`` and ``segment`` are set
    by the runner (``--data``, ``--segments``).

Cache
    A report is reused when its *cache key* is unchanged: the sha256 over the notebook's
    bytes, its final parameters, the data fingerprint, the versions of the key packages,
    a digest of the ``cxex_lab`` source files and the runner's render version. Successful
    reports are stored under ``<out>/.cache/<key>/``; a hit copies them into the new run
    with status ``cached``. ``--no-cache`` forces execution (and refreshes the cache).

Privacy
    Every rendered HTML is scanned for identifiers (:data:`PRIVACY_PATTERNS`: employee
    ``E#####``, customer ``C#######``, interaction ``I########``). A report that shows one
    is marked failed (reason ``privacy``) and its HTML is withheld; the identifiers are
    never written to the index or the provenance record.

Kernel
    Notebooks run on the interpreter running the runner (``sys.executable``) through a
    kernelspec written to a private temporary directory (put first on ``JUPYTER_PATH``
    of the worker processes only), so nothing has to be installed globally and the
    notebook's own kernelspec metadata is ignored. Their working directory is the
    project root (the nearest folder above the notebooks holding ``pyproject.toml``).

Example
-------
>>> from cxex_lab.runner import run_reports
>>> result = run_reports("notebooks", data="data/sample", segments="all", jobs=4)  # doctest: +SKIP
>>> result.exit_code, result.table[["report", "status", "seconds"]]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import datetime as _dt
import fnmatch
import hashlib
import html
import json
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "RunResult",
    "RunnerError",
    "PRIVACY_PATTERNS",
    "KEY_PACKAGES",
    "run_reports",
    "scan_privacy",
    "data_fingerprint",
    "notebook_parameters",
    "coerce_parameter",
    "resolve_segments",
    "render_html",
    "register_cli",
]

#: Identifier patterns that must never appear in a rendered report (name -> regex).
PRIVACY_PATTERNS: dict[str, str] = {
    "employee_id": r"\bE\d{5}\b",
    "customer_id": r"\bC\d{7}\b",
    "interaction_id": r"\bI\d{8}\b",
}

#: Packages whose versions go into the provenance record and the cache key.
KEY_PACKAGES: tuple[str, ...] = (
    "cxex-lab", "pandas", "numpy", "scipy", "statsmodels", "pingouin", "semopy",
    "linearmodels", "duckdb", "ibis-framework", "papermill", "nbconvert", "nbclient",
    "ipykernel", "matplotlib",
)

#: Bump when the rendering changes, so cached reports are rebuilt.
RENDER_VERSION = "1"

KERNEL_NAME = "cxex-lab-python"
RUNNER_PARAMS = ("data_dir", "segment")
_STATUS_ORDER = ("failed", "ok", "cached")


class RunnerError(ValueError):
    """A run cannot start: bad parameters, segments, paths. The message says what to do."""


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    table : DataFrame
        One row per report: ``notebook``, ``segment``, ``report``, ``status``
        (``ok`` / ``cached`` / ``failed``), ``reason`` (``error`` / ``privacy`` for
        failures), ``error``, ``seconds``, ``html``, ``ipynb``, ``cache_key``.
    run_dir : Path
        ``<out>/<run>/`` holding the reports, ``index.html`` and ``provenance.json``.
    exit_code : int
        0 when every report is ok or cached, 1 otherwise.
    provenance : dict
        The content of ``provenance.json``.
    """

    table: pd.DataFrame
    run_dir: Path
    exit_code: int
    provenance: dict = field(default_factory=dict, repr=False)

    @property
    def index(self) -> Path:
        return self.run_dir / "index.html"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# --------------------------------------------------------------------------- privacy

def scan_privacy(html_text: str, patterns: Mapping[str, str] | None = None) -> list[dict]:
    """Find identifiers in a rendered report.

    Style sheets, embedded ``data:`` URIs (base64 images) and CSS hex colours are
    ignored so that random base64 or ``#E12345`` colours are not mistaken for ids.

    Parameters
    ----------
    html_text : str
        The report's HTML (or any text).
    patterns : mapping of name -> regex, optional
        Defaults to :data:`PRIVACY_PATTERNS`.

    Returns
    -------
    list of dict
        One finding per distinct match: ``kind`` (pattern name), ``match`` (the id)
        and ``count``. Empty when the report is clean.

    Examples
    --------
    >>> scan_privacy("<p>agent E00042 handled it</p>")
    [{'kind': 'employee_id', 'match': 'E00042', 'count': 1}]
    >>> scan_privacy("<p>n = 12 agents</p>")
    []
    """
    patterns = PRIVACY_PATTERNS if patterns is None else patterns
    text = re.sub(r"(?is)<style\b.*?</style>", " ", html_text)
    text = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+", " ", text)
    text = re.sub(r"#[0-9A-Fa-f]{3,8}\b", " ", text)
    findings = []
    for kind, pattern in patterns.items():
        counts: dict[str, int] = {}
        for m in re.finditer(pattern, text):
            counts[m.group(0)] = counts.get(m.group(0), 0) + 1
        findings += [{"kind": kind, "match": k, "count": v} for k, v in sorted(counts.items())]
    return findings


def _mask_ids(text: str, patterns: Mapping[str, str]) -> str:
    for kind, pattern in patterns.items():
        text = re.sub(pattern, f"[{kind}]", text)
    return text


def _privacy_summary(findings: list[dict]) -> str:
    by_kind: dict[str, int] = {}
    for f in findings:
        by_kind[f["kind"]] = by_kind.get(f["kind"], 0) + 1
    parts = ", ".join(f"{n} distinct {k}{'s' if n > 1 else ''}" for k, n in by_kind.items())
    return f"privacy: the report shows identifiers ({parts}); HTML withheld"


# --------------------------------------------------------------------------- fingerprints

def _sha256_file(path: Path, h: Any | None = None) -> Any:
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def _data_files(data: Path) -> list[Path]:
    if data.is_file():
        return [data]
    return sorted((p for p in data.rglob("*") if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.relative_to(data).as_posix())


def data_fingerprint(data: str | Path) -> str:
    """sha256 over the data files' names and bytes (sorted by relative path).

    Hidden files (``.*``) are skipped. A single file (e.g. a DuckDB database) is
    hashed on its own.
    """
    data = Path(data)
    if not data.exists():
        raise RunnerError(f"data not found: {data} (give --data a study directory or a DuckDB file)")
    h = hashlib.sha256()
    for p in _data_files(data):
        rel = p.name if data.is_file() else p.relative_to(data).as_posix()
        h.update(rel.encode() + b"\0")
        _sha256_file(p, h)
        h.update(b"\0")
    return h.hexdigest()


def package_versions(names: Iterable[str] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"not installed"`` when absent) plus ``python``."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def _source_digest() -> str:
    """Digest of the cxex_lab package sources (edits to the science invalidate the cache)."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        h.update(p.relative_to(pkg).as_posix().encode() + b"\0")
        _sha256_file(p, h)
    return h.hexdigest()


def code_revision(root: str | Path) -> dict[str, Any]:
    """``{"revision": <git HEAD or "unknown">, "dirty": bool | None}`` for ``root``."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        if head.returncode != 0:
            return {"revision": "unknown", "dirty": None}
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                                text=True, timeout=20)
        return {"revision": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": "unknown", "dirty": None}


# --------------------------------------------------------------------------- parameters

def _parameters_source(path: Path) -> str | None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    return None


def notebook_parameters(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parameters declared in a notebook's ``parameters``-tagged cell.

    The cell is parsed as Python, like ``papermill.inspect_notebook`` does, but without
    importing papermill (a cached rerun then needs no Jupyter machinery at all).

    Returns name -> ``{"default": <python value or None>, "type": <type name>,
    "source": <default as written>}``. The type comes from the default's literal value
    (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``, ``NoneType``) or, when that
    is ``None`` or not a literal, from the annotation (``any`` when there is none).
    """
    path = Path(path)
    source = _parameters_source(path)
    if source is None:
        return {}
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    code = "\n".join(lines)
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise RunnerError(f"{path.name}: the parameters cell is not valid Python ({err.msg}, line {err.lineno})") from None
    out: dict[str, dict[str, Any]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value, annotation = node.targets[0].id, node.value, None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value, annotation = node.target.id, node.value, ast.get_source_segment(code, node.annotation)
        else:
            continue
        text = ast.get_source_segment(code, value) or ""
        try:
            default = ast.literal_eval(value)
            type_name = type(default).__name__
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default, type_name = None, "any"
        if annotation and type_name in ("any", "NoneType"):
            ann = annotation.replace("Optional[", "").replace("None", "").replace("|", " ").strip(" []")
            ann = ann.split("[")[0].split()[0].lower() if ann.split() else ""
            type_name = ann if ann in ("int", "float", "bool", "str", "list", "dict") else type_name
        if type_name == "tuple":
            type_name = "list"
        out[name] = {"default": default, "type": type_name, "source": text}
    return out


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def coerce_parameter(name: str, value: Any, type_name: str, notebook: str = "") -> Any:
    """Convert ``value`` (a CLI string or a Python value) to the type of the default.

    Raises
    ------
    RunnerError
        When the value does not fit, naming the parameter, the expected type and the
        notebook's default.
    """
    where = f" in {notebook}" if notebook else ""

    def bad(expected: str) -> RunnerError:
        return RunnerError(f"parameter {name}={value!r} is not a valid {expected}{where} "
                           f"(the notebook's default is of type {type_name})")

    if isinstance(value, str):
        raw = value.strip()
        if type_name == "bool":
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise bad("bool (use true/false)")
        if type_name == "int":
            try:
                return int(raw)
            except ValueError:
                raise bad("integer") from None
        if type_name == "float":
            try:
                return float(raw)
            except ValueError:
                raise bad("number") from None
        if type_name == "str":
            return value
        if type_name in ("list", "dict"):
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                example = "[1, 2]" if type_name == "list" else '{"a": 1}'
                raise bad(f"{type_name} (give JSON, e.g. {example})") from None
            if type_name == "list" and not isinstance(parsed, list):
                raise bad("list (give JSON, e.g. [1, 2])")
            if type_name == "dict" and not isinstance(parsed, dict):
                raise bad("dict (give JSON, e.g. {\"a\": 1})")
            return parsed
        # NoneType / any: JSON if it parses, else the string
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return value
    # a Python value from the API
    if type_name == "bool" and not isinstance(value, bool):
        raise bad("bool")
    if type_name == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad("integer")
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("number")
        return float(value)
    if type_name == "str" and not isinstance(value, str):
        raise bad("string")
    if type_name == "list":
        if not isinstance(value, (list, tuple)):
            raise bad("list")
        return list(value)
    if type_name == "dict" and not isinstance(value, dict):
        raise bad("dict")
    return value


def _parse_cli_params(items: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise RunnerError(f"parameter {item!r} must look like name=value")
        name, raw = item.split("=", 1)
        out[name.strip()] = raw
    return out


# --------------------------------------------------------------------------- segments

def read_site_ids(data: str | Path) -> list[str]:
    """Site ids in the study's employees table (``employees.parquet`` or ``.csv``)."""
    data = Path(data)
    for name, reader in (("employees.parquet", pd.read_parquet), ("employees.csv", pd.read_csv)):
        path = data / name
        if path.exists():
            employees = reader(path, columns=["site_id"]) if name.endswith("parquet") else reader(path, usecols=["site_id"])
            return sorted(employees["site_id"].dropna().astype(str).unique())
    try:  # other layouts (a DuckDB file, a study config): ask the io layer
        from cxex_lab.io import load_study

        study = load_study(data, validate=False)
        return sorted(study.employees["site_id"].dropna().astype(str).unique())
    except Exception as err:  # noqa: BLE001 - turned into a clear message
        raise RunnerError(f"cannot read site ids from {data}: no employees.parquet or employees.csv ({err})") from err


def resolve_segments(segments: str | Sequence[str], data: str | Path) -> list[str]:
    """Expand ``"all"`` / ``"site_id"`` / ``"S01,S02"`` into the list of segments to run.

    ``"site_id"`` means every site in the employees table (not ``"all"``; combine as
    ``"all,site_id"``). Unknown segments raise :class:`RunnerError` listing the valid ones.
    """
    items = [s.strip() for s in (segments.split(",") if isinstance(segments, str) else segments)]
    items = [s for s in items if s]
    if not items:
        raise RunnerError("no segment given: use 'all', 'site_id' or a list of site ids such as S01,S02")
    if items == ["all"]:
        return ["all"]
    sites = read_site_ids(data)
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


# --------------------------------------------------------------------------- rendering

_OFFLINE_TEMPLATE = """\
{%- extends 'lab/index.html.j2' -%}
{#- cxex-lab: a self-contained report - nothing is fetched from a CDN. -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""


def _notebook_title(nb: Any, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def render_html(nb_path: str | Path, segment: str | None = None) -> str:
    """Render an executed notebook to a self-contained HTML report without code.

    Uses nbconvert's ``lab`` template with inputs and prompts excluded, images embedded
    and the CDN scripts (require.js, MathJax, mermaid, widgets) left out. Cells tagged
    ``remove-cell`` are dropped and ``remove-output`` cells lose their outputs.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(nb_path), as_version=4)
    title = _notebook_title(nb, Path(nb_path).stem)
    if segment is not None:
        title = f"{title} [{segment}]"
    nb.metadata["title"] = title
    exporter = HTMLExporter(
        extra_loaders=[jinja2.DictLoader({"cxex_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="cxex_offline.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags={"remove-cell", "remove_cell"},
                              remove_all_outputs_tags={"remove-output", "remove_output"}),
        enabled=True,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


# --------------------------------------------------------------------------- kernel

def _write_kernelspec(base: Path) -> Path:
    """A kernelspec for the running interpreter under ``base/kernels/`` (returns ``base``)."""
    spec_dir = base / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": f"cxex-lab ({sys.executable})",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return base


def _worker_init(jupyter_path: str) -> None:
    # jsonschema (imported by nbformat) optionally imports rfc3987_syntax, which builds a
    # lark grammar at import time (~5 s per process). Notebook validation never checks
    # IRI formats, so the workers (our own processes) go without it.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    prev = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = jupyter_path + (os.pathsep + prev if prev else "")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


# --------------------------------------------------------------------------- one report

@dataclass
class _Task:
    notebook: str          # absolute path to the source notebook
    name: str              # notebook stem
    segment: str
    parameters: dict
    report: str            # "<stem>__<segment>"
    cache_key: str
    run_dir: str
    cwd: str
    timeout: float | None
    patterns: dict


def _error_message(err: BaseException) -> str:
    ename = getattr(err, "ename", None)
    if ename:  # papermill.PapermillExecutionError
        cell = getattr(err, "exec_count", None)
        where = f" (cell [{cell}])" if cell else ""
        msg = f"{ename}: {getattr(err, 'evalue', '')}{where}"
    else:
        msg = f"{type(err).__name__}: {err}"
    msg = " ".join(msg.split())
    return msg if len(msg) <= 600 else msg[:597] + "..."


def _execute(task: _Task) -> dict:
    """Run one notebook x segment (in a worker process): execute, render, scan."""
    import warnings

    import papermill as pm

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    started = time.perf_counter()
    run_dir = Path(task.run_dir)
    ipynb = run_dir / f"{task.report}.ipynb"
    html_path = run_dir / f"{task.report}.html"
    result = {"report": task.report, "status": "ok", "reason": "", "error": "", "html": "", "ipynb": ipynb.name}
    try:
        pm.execute_notebook(
            task.notebook, str(ipynb), parameters=task.parameters, kernel_name=KERNEL_NAME,
            language="python", cwd=task.cwd, progress_bar=False, log_output=False,
            execution_timeout=task.timeout, report_mode=False,
        )
    except BaseException as err:  # noqa: BLE001 - isolate every failure
        if isinstance(err, KeyboardInterrupt):
            raise
        result.update(status="failed", reason="error", error=_mask_ids(_error_message(err), task.patterns))
    if not ipynb.exists():
        result["ipynb"] = ""
        result["seconds"] = time.perf_counter() - started
        return result
    try:
        body = render_html(ipynb, segment=task.segment)
    except Exception as err:  # noqa: BLE001
        if result["status"] == "ok":
            result.update(status="failed", reason="render", error=_mask_ids(f"render: {_error_message(err)}", task.patterns))
        result["seconds"] = time.perf_counter() - started
        return result
    findings = scan_privacy(body, task.patterns)
    if findings:
        result.update(status="failed", reason="privacy", error=_privacy_summary(findings))
    else:
        html_path.write_text(body, encoding="utf-8")
        result["html"] = html_path.name
    result["seconds"] = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- cache

def _cache_key(nb_bytes_digest: str, parameters: Mapping, fingerprint: str, versions: Mapping, source: str) -> str:
    payload = {
        "notebook_sha256": nb_bytes_digest,
        "parameters": parameters,
        "data_fingerprint": fingerprint,
        "packages": dict(versions),
        "cxex_lab_source": source,
        "render_version": RENDER_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _cache_get(cache_dir: Path, key: str, run_dir: Path, report: str, patterns: Mapping[str, str]) -> dict | None:
    entry = cache_dir / key
    meta_path = entry / "meta.json"
    if not meta_path.exists() or not (entry / "report.ipynb").exists() or not (entry / "report.html").exists():
        return None
    started = time.perf_counter()
    body = (entry / "report.html").read_text(encoding="utf-8")
    if scan_privacy(body, patterns):  # patterns may have grown since it was stored
        return None
    shutil.copy2(entry / "report.ipynb", run_dir / f"{report}.ipynb")
    shutil.copy2(entry / "report.html", run_dir / f"{report}.html")
    meta = json.loads(meta_path.read_text())
    return {"report": report, "status": "cached", "reason": "", "error": "", "html": f"{report}.html",
            "ipynb": f"{report}.ipynb", "seconds": time.perf_counter() - started,
            "cached_from": meta.get("run"), "original_seconds": meta.get("seconds")}


def _cache_put(cache_dir: Path, key: str, run_dir: Path, result: Mapping, run_name: str) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=cache_dir))
        shutil.copy2(run_dir / result["ipynb"], tmp / "report.ipynb")
        shutil.copy2(run_dir / result["html"], tmp / "report.html")
        (tmp / "meta.json").write_text(json.dumps({"run": run_name, "seconds": result["seconds"],
                                                   "report": result["report"]}))
        final = cache_dir / key
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except OSError:
        pass  # a cache that cannot be written only costs time next run


# --------------------------------------------------------------------------- index

_INDEX_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem;color:#222;max-width:72rem}
h1{font-size:1.5rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f4f4f4}.ok{color:#1a7f37}.cached{color:#0969da}
.failed{color:#cf222e;font-weight:600}.err{font-family:ui-monospace,monospace;font-size:.85em;color:#6e2a2a}
.meta{color:#555;font-size:.9em}code{font-size:.9em}
"""


def _write_index(run_dir: Path, table: pd.DataFrame, prov: Mapping) -> Path:
    esc = html.escape
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    summary = ", ".join(f"{counts[s]} {s}" for s in _STATUS_ORDER if s in counts) or "no reports"
    rows = []
    for r in table.itertuples(index=False):
        label = r.status if r.status != "failed" else f"failed: {r.reason}"
        links = []
        if r.html:
            links.append(f'<a href="{esc(r.html)}">report</a>')
        if r.ipynb:
            links.append(f'<a href="{esc(r.ipynb)}">notebook</a>')
        rows.append(
            f"<tr><td>{esc(r.notebook)}</td><td>{esc(r.segment)}</td>"
            f'<td class="{esc(r.status)}">{esc(label)}</td><td>{r.seconds:.1f} s</td>'
            f"<td>{' · '.join(links) or '-'}</td><td class=\"err\">{esc(r.error)}</td></tr>"
        )
    run = prov["run"]
    code = prov["code"]
    rev = f"{code['revision'][:12]}{' (dirty)' if code.get('dirty') else ''}"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>cxex-lab reports: {esc(run['name'])}</title><style>{_INDEX_CSS}</style></head>
<body>
<h1>cxex-lab reports: {esc(run['name'])}</h1>
<p class="meta">{esc(summary)} · data <code>{esc(str(run['data']))}</code> (sha256 {esc(prov['data']['fingerprint'][:16])}…)
· code {esc(rev)} · started {esc(run['started_at'])} · finished {esc(run['finished_at'])}
· <a href="provenance.json">provenance.json</a></p>
<table>
<thead><tr><th>notebook</th><th>segment</th><th>status</th><th>duration</th><th>files</th><th>error</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""
    path = run_dir / "index.html"
    path.write_text(doc, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the run

def _project_root(start: Path) -> Path:
    for parent in [start, *start.parents]:
        if (parent / "pyproject.toml").exists():
            return parent
    return Path.cwd().resolve()


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
        return path.resolve().relative_to(root).as_posix()
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


def _default_progress(done: int, total: int, row: Mapping) -> None:
    label = row["status"] if row["status"] != "failed" else f"failed: {row['reason']}"
    tail = f"  {row['error']}" if row["error"] else ""
    print(f"[{done:>{len(str(total))}}/{total}] {label:<16} {row['report']:<40} {row['seconds']:6.1f} s{tail}",
          flush=True)


def run_reports(
    notebooks_dir: str | Path = "notebooks",
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
    privacy_patterns: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    progress: bool | Callable[[int, int, Mapping], None] = True,
) -> RunResult:
    """Execute notebooks x segments with papermill and render shareable HTML reports.

    Parameters
    ----------
    notebooks_dir : path
        Folder of parameterised notebooks.
    data : path
        Study directory (or DuckDB file); passed to notebooks declaring ``data_dir``.
    pattern : str
        Glob(s) on notebook file names, comma-separated (``"0[1-3]_*.ipynb"``).
    segments : str or list
        ``"all"``, ``"site_id"`` (every site, one report each) or ``"S01,S02"``.
    params : mapping, optional
        Notebook parameters; values may be strings (as from the CLI, coerced by the
        type of the notebook's default) or Python values (type-checked).
    jobs : int, optional
        Parallel notebooks (default ``os.cpu_count()``).
    out : path
        Reports folder; the run goes to ``<out>/<run_name>/``.
    cache : bool
        Reuse unchanged reports from ``<out>/.cache/``.
    run_name : str, optional
        Folder name of this run (default: a timestamp ``YYYYmmdd-HHMMSS``). An existing
        run of that name is replaced.
    timeout : float, optional
        Per-cell execution timeout in seconds (default: none).
    privacy_patterns : mapping, optional
        Identifier regexes for the privacy scan (default :data:`PRIVACY_PATTERNS`).
    cwd : path, optional
        Working directory of the notebooks (default: the project root above
        ``notebooks_dir``, i.e. the nearest folder with ``pyproject.toml``).
    progress : bool or callable
        Print one line per finished report (or call ``progress(done, total, row)``).

    Returns
    -------
    RunResult

    Raises
    ------
    RunnerError
        Before anything runs, for unknown parameters or segments, badly typed values,
        missing folders.
    """
    t0 = time.perf_counter()
    started_at = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    patterns = dict(PRIVACY_PATTERNS if privacy_patterns is None else privacy_patterns)
    for kind, rx in patterns.items():
        try:
            re.compile(rx)
        except re.error as err:
            raise RunnerError(f"privacy pattern {kind}={rx!r} is not a valid regex: {err}") from None

    notebooks_dir = Path(notebooks_dir).resolve()
    root = Path(cwd).resolve() if cwd is not None else _project_root(notebooks_dir)
    data_path = Path(data).resolve()
    if not data_path.exists():
        raise RunnerError(f"data not found: {data} (give --data a study directory or a DuckDB file)")
    data_arg = _display_path(data_path, root)
    jobs = int(jobs) if jobs else (os.cpu_count() or 1)
    if jobs < 1:
        raise RunnerError(f"--jobs must be >= 1, got {jobs}")

    # ---- validate everything before running anything
    notebooks = _select_notebooks(notebooks_dir, pattern)
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    params = dict(params or {})
    for reserved, flag in (("data_dir", "--data"), ("segment", "--segments")):
        if reserved in params:
            raise RunnerError(f"parameter {reserved!r} is set by the runner; use {flag} instead")
    valid = sorted(set().union(*(d.keys() for d in declared.values())) - set(RUNNER_PARAMS))
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise RunnerError(f"unknown parameter(s) {', '.join(unknown)}: not declared by any selected notebook; "
                          f"valid names: {', '.join(valid) or 'none'}")
    seg_list = resolve_segments(segments, data_path)

    fingerprint = data_fingerprint(data_path)
    versions = package_versions()
    source = _source_digest()
    tasks: list[_Task] = []
    out = Path(out).resolve()
    if run_name and (run_name in ("latest", ".cache") or "/" in run_name or os.sep in run_name):
        raise RunnerError(f"run name {run_name!r} is reserved or not a plain folder name")
    for nb in notebooks:
        decl = declared[nb]
        nb_params = {}
        for name, value in params.items():
            if name in decl:
                nb_params[name] = coerce_parameter(name, value, decl[name]["type"], nb.name)
        if "data_dir" in decl:
            nb_params["data_dir"] = data_arg
        nb_digest = hashlib.sha256(nb.read_bytes()).hexdigest()
        for seg in seg_list:
            p = dict(nb_params)
            if "segment" in decl:
                p["segment"] = seg
            elif seg != "all":
                raise RunnerError(f"{nb.name} declares no 'segment' parameter, so it cannot run per segment "
                                  f"({seg}); run it with --segments all or add segment to its parameters cell")
            report = f"{nb.stem}__{re.sub(r'[^A-Za-z0-9_.-]', '_', seg)}"
            key = _cache_key(nb_digest, {**p, "__segment": seg}, fingerprint, versions, source)
            tasks.append(_Task(str(nb), nb.stem, seg, p, report, key, "", str(root), timeout, patterns))
    # everything is valid: only now create the run folder
    run_dir, run_name = _new_run_dir(out, run_name)
    for task in tasks:
        task.run_dir = str(run_dir)

    # ---- run
    total = len(tasks)
    notify = _default_progress if progress is True else (progress or (lambda *a: None))
    cache_dir = out / ".cache"
    results: dict[str, dict] = {}
    done = 0

    def finish(task: _Task, row: dict) -> None:
        nonlocal done
        done += 1
        row.update(notebook=task.name, segment=task.segment, cache_key=task.cache_key)
        results[task.report] = row
        notify(done, total, row)

    pending = []
    for task in tasks:
        hit = _cache_get(cache_dir, task.cache_key, run_dir, task.report, patterns) if cache else None
        if hit is not None:
            finish(task, hit)
        else:
            pending.append(task)

    if pending:
        kernel_base = Path(tempfile.mkdtemp(prefix="cxex-kernel-"))
        try:
            _write_kernelspec(kernel_base)
            workers = max(1, min(jobs, len(pending)))
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                        initargs=(str(kernel_base),)) as pool:
                futures = {pool.submit(_execute, t): t for t in pending}
                try:
                    for fut in cf.as_completed(futures):
                        task = futures[fut]
                        try:
                            row = fut.result()
                        except Exception as err:  # noqa: BLE001 - a crashed worker fails one report
                            row = {"report": task.report, "status": "failed", "reason": "error",
                                   "error": _mask_ids(_error_message(err), patterns), "html": "", "ipynb": "",
                                   "seconds": 0.0}
                        if row["status"] == "ok":
                            _cache_put(cache_dir, task.cache_key, run_dir, row, run_name)
                        finish(task, row)
                except KeyboardInterrupt:
                    # stop now: drop queued reports and end the workers (their kernels exit
                    # with their parent), instead of waiting for running notebooks to finish
                    pool.shutdown(wait=False, cancel_futures=True)
                    for proc in list((getattr(pool, "_processes", None) or {}).values()):
                        proc.terminate()
                    raise
        finally:
            shutil.rmtree(kernel_base, ignore_errors=True)

    # ---- table, index, provenance
    columns = ["notebook", "segment", "report", "status", "reason", "error", "seconds", "html", "ipynb", "cache_key"]
    table = pd.DataFrame([{c: results[t.report].get(c, "") for c in columns} for t in tasks], columns=columns)
    table["seconds"] = table["seconds"].astype(float)
    exit_code = int((table["status"] == "failed").any())
    finished_at = _dt.datetime.now().astimezone().isoformat(timespec="seconds")

    prov = {
        "run": {
            "name": run_name, "started_at": started_at, "finished_at": finished_at,
            "seconds": round(time.perf_counter() - t0, 3), "notebooks_dir": _display_path(notebooks_dir, root),
            "pattern": pattern, "data": data_arg, "segments": segments if isinstance(segments, str) else list(segments),
            "resolved_segments": seg_list, "params": {k: v for k, v in params.items()}, "jobs": jobs,
            "cache": cache, "out": str(out), "cwd": str(root), "timeout": timeout, "exit_code": exit_code,
            "argv": list(sys.argv),
        },
        "data": {"path": data_arg, "fingerprint": fingerprint, "n_files": len(_data_files(data_path))},
        "code": code_revision(root),
        "cxex_lab_source_sha256": source,
        "packages": versions,
        "kernel": {"name": KERNEL_NAME, "python": sys.executable},
        "privacy_patterns": patterns,
        "reports": [
            {**{c: results[t.report].get(c, "") for c in columns if c != "report"}, "report": t.report,
             "parameters": t.parameters, "notebook_sha256": hashlib.sha256(Path(t.notebook).read_bytes()).hexdigest(),
             **({"cached_from": results[t.report]["cached_from"]} if "cached_from" in results[t.report] else {})}
            for t in tasks
        ],
    }
    (run_dir / "provenance.json").write_text(json.dumps(prov, indent=2, default=str), encoding="utf-8")
    _write_index(run_dir, table, prov)
    _point_latest(out, run_name)
    return RunResult(table=table, run_dir=run_dir, exit_code=exit_code, provenance=prov)


# --------------------------------------------------------------------------- CLI

def _cmd_run(args: argparse.Namespace) -> int:
    try:
        params = _parse_cli_params(args.param)
        result = run_reports(
            notebooks_dir=args.notebooks_dir, data=args.data, pattern=args.notebooks, segments=args.segments,
            params=params, jobs=args.jobs, out=args.out, cache=not args.no_cache, run_name=args.run_name,
            timeout=args.timeout,
        )
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run folder is incomplete", file=sys.stderr)
        return 130
    t = result.table
    counts = t["status"].value_counts().to_dict()
    summary = ", ".join(f"{counts[s]} {s}" for s in _STATUS_ORDER if s in counts)
    print(f"{summary} -> {result.index}")
    return result.exit_code


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand to ``cxex-lab``'s argparse subparsers."""
    run = subparsers.add_parser(
        "run", help="execute notebooks x segments with papermill and render HTML reports",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="example: cxex-lab run --data data/sample --segments all,site_id -p min_group_size=10 --jobs 4",
    )
    run.add_argument("--data", default="data/sample", help="study directory or DuckDB file (default: data/sample)")
    run.add_argument("--notebooks", default="*.ipynb", metavar="PATTERN",
                     help="glob(s) on notebook names, comma-separated (default: *.ipynb)")
    run.add_argument("--notebooks-dir", default="notebooks", metavar="DIR", help="notebook folder (default: notebooks)")
    run.add_argument("--segments", default="all",
                     help="'all' (default), 'site_id' (one report per site) or a list such as S01,S02")
    run.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                     help="notebook parameter, coerced to the type of its default (JSON for lists); repeatable")
    run.add_argument("--jobs", "-j", type=int, default=None, help="parallel notebooks (default: number of CPUs)")
    run.add_argument("--out", default="reports", help="reports folder (default: reports)")
    run.add_argument("--run-name", default=None, help="run folder name (default: a timestamp)")
    run.add_argument("--no-cache", action="store_true", help="execute every notebook even if unchanged")
    run.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds (default: none)")
    run.set_defaults(func=_cmd_run)
    return run
