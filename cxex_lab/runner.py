"""Former home of the report runner, kept so ``from cxex_lab.runner import ...`` and
``cxex_lab.cli`` keep working. The runner now lives in :mod:`cxex_lab.run`, split
by concern (parameters, segments, prepare, cache, kernel, execute, render, idscan,
landing, progress, cli).

:data:`PRIVACY_PATTERNS` and :func:`scan_privacy` are the simulator's id
*formats*; the runner itself scans reports against the study's actual id values
(:mod:`cxex_lab.run.idscan`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cxex_lab.run import (  # noqa: F401 - re-exported
    RunnerError,
    RunResult,
    coerce_parameter,
    data_fingerprint,
    notebook_parameters,
    package_versions,
    register_cli,
    render_html,
    resolve_segments,
    run_reports,
)
from cxex_lab.run.kernel import KERNEL_NAME  # noqa: F401

__all__ = [
    "RunResult", "RunnerError", "PRIVACY_PATTERNS", "run_reports", "scan_privacy", "data_fingerprint",
    "notebook_parameters", "coerce_parameter", "resolve_segments", "render_html", "register_cli",
]

#: The simulator's id formats (name -> regex); see :func:`scan_privacy`.
PRIVACY_PATTERNS: dict[str, str] = {
    "employee_id": r"\bE\d{5}\b",
    "customer_id": r"\bC\d{7}\b",
    "interaction_id": r"\bI\d{8}\b",
}


def scan_privacy(html_text: str, patterns: Mapping[str, str] | None = None) -> list[dict]:
    """Find id *formats* in a text (style sheets, ``data:`` URIs and CSS colours ignored).

    Returns one finding per distinct match: ``kind``, ``match``, ``count``. The
    runner's own scan uses the study's real ids instead
    (:func:`cxex_lab.run.idscan.scan_ids`); this is for a quick check of
    simulated data (e.g. the notebook tests).

    Examples
    --------
    >>> scan_privacy("<p>agent E00042 handled it</p>")
    [{'kind': 'employee_id', 'match': 'E00042', 'count': 1}]
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
