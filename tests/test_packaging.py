"""Repository hygiene: environment.yml mirrors pyproject.toml, notebooks are stripped,
estimators do not import the simulator (the oracle shares no code with them)."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ;]", req, maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in proj["dependencies"] + proj["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    have = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            have |= {_name(d) for d in dep.get("pip", [])}
        else:
            have.add(_name(dep))
    # conda-forge ships ibis as ibis-framework-core (+ the duckdb package for the backend)
    have |= {"ibis-framework"} if "ibis-framework-core" in have else set()
    assert wanted - have == set(), f"add to environment.yml: {sorted(wanted - have)}"


def test_notebooks_are_committed_without_outputs():
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        dirty = [i for i, c in enumerate(nb["cells"]) if c.get("outputs") or c.get("execution_count")]
        assert not dirty, f"{nb_path.name}: cells {dirty} carry outputs; run nbstripout on it"


def test_estimators_never_import_the_simulator():
    science = ["io.py", "schema.py", "linkage.py", "metrics.py", "agreement.py"]
    files = [ROOT / "cxex_lab" / f for f in science] + [
        p for p in (ROOT / "cxex_lab" / "models").glob("*.py") if p.name != "power.py"
    ]
    for path in files:
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                assert "simulate" not in n, f"{path.name} imports {n}: estimators must not share code with the oracle"
                assert "runner" not in n and "cli" not in n, f"{path.name} imports {n}: science must not know the runner"
