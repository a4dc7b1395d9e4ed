"""The kernel the notebooks run on, and keeping it quiet.

Notebooks run on the interpreter running the runner (``sys.executable``) through
a kernelspec written to a private temporary directory (put first on
``JUPYTER_PATH`` of the worker processes only): nothing is installed globally and
the notebook's own kernelspec metadata is ignored.

Terminal noise
    ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` comes from
    ipykernel's message handler (``kernelbase.py``) when jupyter_client's
    ``shutdown_kernel`` interrupts the kernel (it always sends SIGINT before
    asking it to stop) while the kernel is still handling a message. The kernel
    logs it to *its process's* stderr, which it inherits from the worker, which
    inherits it from the terminal. Workers therefore point their stdout and stderr
    (file descriptors 1 and 2, inherited by every kernel they start) at the run's
    log file ``<out>/.logs/<run>.log``: kernel log lines, worker tracebacks and
    library warnings of the machinery go there, never to the terminal. What a
    notebook prints reaches the notebook through the kernel's own channels, as
    before.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

__all__ = ["KERNEL_NAME", "QUIET_WARNINGS", "write_kernelspec", "worker_init"]

KERNEL_NAME = "cxex-lab-python"

#: Warnings about the *environment* (not the analysis) silenced in report kernels,
#: as ``PYTHONWARNINGS`` entries. Every other warning reaches the notebook's
#: stderr, and the runner fails a report that shows one.
QUIET_WARNINGS: tuple[str, ...] = (
    # pandera imports pyspark.pandas when pyspark is installed (the [spark] extra);
    # pyspark 4.0 then warns about pandas 3 at import, once per kernel.
    "ignore:PySpark does not yet fully support pandas:FutureWarning",
)


def write_kernelspec(base: Path) -> Path:
    """A kernelspec for the running interpreter under ``base/kernels/`` (returns ``base``)."""
    spec_dir = base / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONWARNINGS": ",".join(QUIET_WARNINGS), "PYDEVD_DISABLE_FILE_VALIDATION": "1",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": f"cxex-lab ({sys.executable})",
        "language": "python",
        "env": env,
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return base


def worker_init(jupyter_path: str, log_file: str | None = None) -> None:
    """Set up a worker process: find the private kernelspec, send noise to the log."""
    # jsonschema (imported by nbformat) optionally imports rfc3987_syntax, which builds a
    # lark grammar at import time (~1.5 s per process). Notebook validation never checks
    # IRI formats, so the workers (our own processes) go without it.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    prev = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = jupyter_path + (os.pathsep + prev if prev else "")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("papermill").setLevel(logging.ERROR)
    logging.getLogger("traitlets").setLevel(logging.ERROR)
