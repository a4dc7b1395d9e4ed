"""Every notebook runs top to bottom on the sample data (papermill, fresh kernel),
and its outputs never show an employee/customer id.

Heavier knobs (bootstrap draws, power simulations) are turned down here to keep CI
fast; the notebooks' defaults are used by ``make reports``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import papermill as pm
import pytest

from cxex_lab.runner import PRIVACY_PATTERNS
from tests.conftest import ROOT, SAMPLE

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FAST = {"n_boot": 60, "n_sims": 12, "invariance": False}
ID_PATTERN = re.compile("|".join(f"(?:{p})" for p in PRIVACY_PATTERNS.values()))


def _declared(nb_path: Path) -> set[str]:
    return set(pm.inspect_notebook(str(nb_path)))


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_sample(nb_path, tmp_path):
    declared = _declared(nb_path)
    assert {"data_dir", "segment", "min_group_size", "seed"} <= declared, "every notebook takes the common parameters"
    params = {"data_dir": str(SAMPLE)} | {k: v for k, v in FAST.items() if k in declared}
    out = tmp_path / nb_path.name
    pm.execute_notebook(str(nb_path), str(out), parameters=params, cwd=str(ROOT), kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    outputs = json.dumps([o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" not in o.get("data", {})])
    leaked = ID_PATTERN.findall(outputs)
    assert not leaked, f"{nb_path.name} shows identifiers in its output: {leaked[:5]}"


def test_every_notebook_has_a_question_title_and_how_to_read():
    for nb_path in NOTEBOOKS:
        nb = json.loads(nb_path.read_text())
        md = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
        first = "".join(md[0]["source"])
        assert first.startswith("# ") and "?" in first.splitlines()[0], f"{nb_path.name}: title should be a question"
        assert any("How to read this" in "".join(c["source"]) for c in md), f"{nb_path.name}: needs a 'How to read this'"
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: exactly one cell tagged 'parameters'"
