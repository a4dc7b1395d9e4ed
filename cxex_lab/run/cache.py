"""The report cache: a report is reused while nothing it depends on changed.

The *cache key* is the sha256 over the notebook's bytes, its final parameters,
the data fingerprint, the versions of the key packages, a digest of the
``cxex_lab`` sources and :data:`RENDER_VERSION`. Successful reports live under
``<out>/.cache/<key>/`` (the executed notebook, the HTML before navigation links
are added, and ``meta.json`` with what the report emitted for the landing page).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["RENDER_VERSION", "cache_key", "cache_get", "cache_put"]

#: Bump when the rendering changes, so cached reports are rebuilt.
RENDER_VERSION = "2"

#: Row fields a cache entry keeps for the landing page.
_META_FIELDS = ("title", "emitted", "seconds", "report")


def cache_key(notebook_sha256: str, parameters: Mapping, fingerprint: str, versions: Mapping, source: str) -> str:
    """The key of one report (notebook x segment x parameters x data x code)."""
    payload = {
        "notebook_sha256": notebook_sha256,
        "parameters": parameters,
        "data_fingerprint": fingerprint,
        "packages": dict(versions),
        "cxex_lab_source": source,
        "render_version": RENDER_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_get(cache_dir: Path, key: str, run_dir: Path, report: str) -> dict | None:
    """Copy a cached report into ``run_dir``; its result row, or None on a miss.

    The HTML lands under a pending name (``.<report>.html.pending``): the run scans
    it for identifiers before it becomes ``<report>.html``.
    """
    entry = cache_dir / key
    meta_path = entry / "meta.json"
    if not all(p.exists() for p in (meta_path, entry / "report.ipynb", entry / "report.html")):
        return None
    started = time.perf_counter()
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    shutil.copy2(entry / "report.ipynb", run_dir / f"{report}.ipynb")
    shutil.copy2(entry / "report.html", run_dir / f".{report}.html.pending")
    return {"report": report, "status": "cached", "reason": "", "error": "", "html": f".{report}.html.pending",
            "ipynb": f"{report}.ipynb", "seconds": time.perf_counter() - started, "title": meta.get("title", ""),
            "emitted": meta.get("emitted", {}), "cached_from": meta.get("run"),
            "original_seconds": meta.get("seconds")}


def cache_put(cache_dir: Path, key: str, run_dir: Path, row: Mapping, run_name: str) -> None:
    """Store a successful report (its pending HTML, executed notebook and emitted data)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=cache_dir))
        shutil.copy2(run_dir / row["ipynb"], tmp / "report.ipynb")
        shutil.copy2(run_dir / row["html"], tmp / "report.html")
        meta = {k: row.get(k) for k in _META_FIELDS} | {"run": run_name}
        (tmp / "meta.json").write_text(json.dumps(meta, default=str), encoding="utf-8")
        final = cache_dir / key
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except OSError:
        pass  # a cache that cannot be written only costs time next run
