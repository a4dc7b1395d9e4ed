"""One report: execute a notebook x segment with papermill, check and render it.

Runs in a worker process (see :mod:`cxex_lab.run.kernel`). The privacy scan and
the navigation links come later, in the run (:mod:`cxex_lab.run.reports`): the
HTML is left under a pending name until the scan has passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cxex_lab.run.kernel import KERNEL_NAME

__all__ = ["Task", "error_message", "execute"]


@dataclass
class Task:
    notebook: str          # absolute path to the source notebook
    name: str              # notebook stem
    segment: str
    parameters: dict
    report: str            # "<stem>__<segment>"
    cache_key: str
    run_dir: str
    cwd: str
    timeout: float | None


def error_message(err: BaseException) -> str:
    """The one-line message of a failed execution: ``ValueError: ... (cell 4)``, no traceback."""
    ename = getattr(err, "ename", None)
    if ename:  # papermill.PapermillExecutionError
        cell = getattr(err, "cell_index", None)
        where = f" (cell {cell + 1})" if isinstance(cell, int) else ""
        msg = f"{ename}: {getattr(err, 'evalue', '')}{where}"
    else:
        msg = f"{type(err).__name__}: {err}"
    msg = " ".join(msg.split())
    return msg if len(msg) <= 600 else msg[:597] + "..."


def execute(task: Task) -> dict:
    """Run one notebook x segment: execute, check the outputs, render (pending HTML)."""
    import nbformat
    import papermill as pm

    from cxex_lab.run.render import check_outputs, emitted, notebook_title, render_html

    started = time.perf_counter()
    run_dir = Path(task.run_dir)
    ipynb = run_dir / f"{task.report}.ipynb"
    pending = run_dir / f".{task.report}.html.pending"
    row = {"report": task.report, "status": "ok", "reason": "", "error": "", "html": "", "ipynb": ipynb.name,
           "title": task.name, "emitted": {}}

    def done(**kw) -> dict:
        row.update(kw)
        row["seconds"] = time.perf_counter() - started
        return row

    try:
        pm.execute_notebook(
            task.notebook, str(ipynb), parameters=task.parameters, kernel_name=KERNEL_NAME,
            language="python", cwd=task.cwd, progress_bar=False, log_output=False,
            execution_timeout=task.timeout, report_mode=False,
        )
    except BaseException as err:  # noqa: BLE001 - isolate every failure
        if isinstance(err, KeyboardInterrupt):
            raise
        row.update(status="failed", reason="error", error=error_message(err))
    if not ipynb.exists():
        return done(ipynb="")
    nb = nbformat.read(str(ipynb), as_version=4)
    row["title"] = notebook_title(nb, task.name)
    row["emitted"] = emitted(nb)
    if row["status"] == "failed":
        return done()  # a failed report gets no HTML: the index shows its message only
    problem = check_outputs(nb)
    if problem:
        return done(status="failed", reason=problem[0], error=problem[1])
    try:
        body = render_html(ipynb, segment=task.segment)
    except Exception as err:  # noqa: BLE001
        return done(status="failed", reason="render", error=f"render: {error_message(err)}")
    pending.write_text(body, encoding="utf-8")
    return done(html=pending.name)
