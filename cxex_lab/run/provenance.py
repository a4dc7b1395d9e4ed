"""Provenance: what a run rests on (data fingerprint, code revision, package
versions), recorded in ``provenance.json`` and used for the cache key."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cxex_lab.run.errors import RunnerError

__all__ = ["KEY_PACKAGES", "data_fingerprint", "data_files", "package_versions", "source_digest", "code_revision"]

#: Packages whose versions go into the provenance record and the cache key.
KEY_PACKAGES: tuple[str, ...] = (
    "cxex-lab", "pandas", "numpy", "scipy", "statsmodels", "pingouin", "semopy",
    "linearmodels", "duckdb", "ibis-framework", "papermill", "nbconvert", "nbclient",
    "ipykernel", "matplotlib", "great-tables",
)


def _sha256_file(path: Path, h: Any | None = None) -> Any:
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def data_files(data: Path) -> list[Path]:
    """The files a study consists of (hidden files skipped), sorted by relative path."""
    if data.is_file():
        return [data]
    return sorted((p for p in data.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(data).parts)),
                  key=lambda p: p.relative_to(data).as_posix())


def data_fingerprint(data: str | Path) -> str:
    """sha256 over the data files' names and bytes (sorted by relative path).

    Hidden files and folders (``.*``) are skipped. A single file (e.g. a DuckDB
    database) is hashed on its own.
    """
    data = Path(data)
    if not data.exists():
        raise RunnerError(f"data not found: {data} (give --data a study directory or a DuckDB file)")
    h = hashlib.sha256()
    for p in data_files(data):
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


def source_digest() -> str:
    """Digest of the cxex_lab package sources (edits to the science invalidate the cache)."""
    pkg = Path(__file__).resolve().parents[1]
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
