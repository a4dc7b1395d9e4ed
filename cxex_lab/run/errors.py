"""The runner's own exception."""

from __future__ import annotations

__all__ = ["RunnerError"]


class RunnerError(ValueError):
    """A run cannot start: bad parameters, segments, paths. The message says what to do."""
