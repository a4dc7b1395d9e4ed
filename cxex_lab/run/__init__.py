"""The report runner, split by concern the way papermill splits its own
execute / inspect / parameterize:

=====================  ======================================================
module                 concern
=====================  ======================================================
``parameters``         what a notebook declares (papermill's ``inspect_notebook``)
                       and checking ``-p name=value`` against it
``segments``           ``all`` / ``site_id`` / ``S01,S02`` -> segments
``prepare``            the prepare hook (once, before the notebooks run)
``provenance``         data fingerprint, package versions, code revision
``cache``              cache key, reuse of unchanged reports
``kernel``             the private kernelspec; kernel noise kept off the terminal
``execute``            one notebook x segment in a worker process
``render``             HTML without code; checks for errors, stderr, raw output;
                       what a notebook emitted; navigation links
``idscan``             the privacy scan against the study's real ids
``summary``            study facts for the landing page
``landing``            the index as a landing page
``progress``           the terminal: progress bar, one summary line
``reports``            :func:`run_reports`: the run itself
``cli``                ``cxex-lab run``
=====================  ======================================================
"""

from cxex_lab.run.cli import register_cli
from cxex_lab.run.errors import RunnerError
from cxex_lab.run.idscan import HashedIds, IdIndex, IdSet, StudyFileIds, keyed_hash, scan_ids, study_ids
from cxex_lab.run.parameters import coerce_parameter, notebook_parameters
from cxex_lab.run.prepare import PrepareOptions, Prepared, prepare_files
from cxex_lab.run.provenance import data_fingerprint, package_versions
from cxex_lab.run.render import render_html
from cxex_lab.run.reports import RunResult, notebooks_home, run_reports, summary_line
from cxex_lab.run.segments import resolve_segments

__all__ = [
    "RunResult", "RunnerError", "run_reports", "summary_line", "notebooks_home", "register_cli",
    "notebook_parameters", "coerce_parameter", "resolve_segments", "data_fingerprint", "package_versions",
    "render_html", "IdIndex", "IdSet", "HashedIds", "StudyFileIds", "keyed_hash", "scan_ids", "study_ids",
    "PrepareOptions", "Prepared", "prepare_files",
]
