"""What the terminal shows during a run: a progress bar over notebooks x segments
(rich, on a terminal), or one line per finished report (when the output is a
file or a pipe, e.g. CI logs), and nothing from the kernels."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Progress", "make_progress", "label_of"]


def label_of(row: Mapping[str, Any]) -> str:
    """``01_linkage [S02]`` (the segment only when it is not ``all``)."""
    return row["report"].split("__")[0] + ("" if row.get("segment", "all") == "all" else f" [{row['segment']}]")


class Progress:
    """Called once per finished report; a context manager around the run."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def note(self, text: str) -> None:
        """A line before the reports start (e.g. what the prepare step did)."""

    def update(self, row: Mapping[str, Any]) -> None:
        self.done += 1


class _Silent(Progress):
    pass


class _Callback(Progress):
    def __init__(self, total: int, fn: Callable[[int, int, Mapping], None]):
        super().__init__(total)
        self.fn = fn

    def update(self, row: Mapping[str, Any]) -> None:
        super().update(row)
        self.fn(self.done, self.total, row)


class _Lines(Progress):
    """One line per finished report (not a terminal)."""

    def note(self, text: str) -> None:
        print(text, flush=True)

    def update(self, row: Mapping[str, Any]) -> None:
        super().update(row)
        status = row["status"] if row["status"] != "failed" else f"failed: {row['reason']}"
        tail = f"  {row['error']}" if row.get("error") else ""
        print(f"[{self.done:>{len(str(self.total))}}/{self.total}] {status:<16} {row['report']:<40} "
              f"{float(row['seconds']):6.1f} s{tail}", flush=True)


class _Bar(Progress):
    """A rich progress bar on stderr; failures are printed above it as they happen."""

    def __init__(self, total: int):
        super().__init__(total)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.bar = RichProgress(TextColumn("[bold]Reports"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), console=self.console, transient=True)
        self.task = None

    def __enter__(self) -> "_Bar":
        self.bar.start()
        self.task = self.bar.add_task("starting", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def update(self, row: Mapping[str, Any]) -> None:
        super().update(row)
        if row["status"] == "failed":
            self.console.print(f"[red]✗[/red] {label_of(row)}: {row['error']}", highlight=False, markup=True)
        self.bar.update(self.task, advance=1, description=f"last: {label_of(row)} ({row['status']})")


def make_progress(progress: bool | Callable[[int, int, Mapping], None] | str, total: int) -> Progress:
    """``True``: a bar on a terminal, lines otherwise; ``"lines"`` / ``"bar"``; a callable; ``False``: nothing."""
    if progress is False or progress is None:
        return _Silent(total)
    if callable(progress):
        return _Callback(total, progress)
    if progress == "bar" or (progress is True and sys.stderr.isatty() and sys.stdout.isatty()):
        return _Bar(total)
    return _Lines(total)
