"""The report runner: notebooks x segments with papermill, HTML without code, index,
provenance, cache, parameter validation and the privacy scan.

Uses the tiny notebooks in ``tests/fixtures/notebooks/`` (01_plot draws a figure,
02_fails raises on purpose, 03_leak prints an employee id) on a 12-employee study with
two sites. Kernels take a few seconds each, so the executed runs are module-scoped and
shared by several tests.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from cxex_lab import runner
from cxex_lab.cli import main as cli_main
from cxex_lab.runner import RunnerError, coerce_parameter, data_fingerprint, resolve_segments, run_reports, scan_privacy

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"
CODE_MARKERS = ("FIXTURE_CODE_MARKER", "read_csv", "plt.subplots", "groupby(")

pytestmark = pytest.mark.xdist_group("runner")


def make_study(path: Path) -> Path:
    """employees.csv with 12 people, 6 at S01 and 6 at S02."""
    path.mkdir(parents=True, exist_ok=True)
    employees = pd.DataFrame({
        "employee_id": [f"E{i:05d}" for i in range(1, 13)],
        "site_id": ["S01"] * 6 + ["S02"] * 6,
        "team_id": ["T1"] * 6 + ["T2"] * 6,
    })
    employees.to_csv(path / "employees.csv", index=False)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("study") / "data")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def first_run(study, out_dir):
    """2 notebooks x 2 segments in parallel (jobs=2); one notebook fails on purpose."""
    lines = []
    t0 = time.perf_counter()
    result = run_reports(
        FIXTURES, data=study, pattern="0[12]_*.ipynb", segments="S01,S02", params={"bins": "4"},
        jobs=2, out=out_dir, progress=lambda done, total, row: lines.append((done, total, dict(row))),
    )
    result.elapsed = time.perf_counter() - t0
    result.lines = lines
    return result


# --------------------------------------------------------------------------- the run

def test_parallel_run_isolates_the_failing_notebook(first_run):
    t = first_run.table.set_index("report")
    assert sorted(t.index) == ["01_plot__S01", "01_plot__S02", "02_fails__S01", "02_fails__S02"]
    assert (t.loc[["01_plot__S01", "01_plot__S02"], "status"] == "ok").all()
    assert (t.loc[["02_fails__S01", "02_fails__S02"], "status"] == "failed").all()
    assert t.loc["02_fails__S02", "error"].startswith("ValueError: deliberate failure for segment S02")
    assert first_run.exit_code == 1 and not first_run.ok
    # one progress line per finished report
    assert [d for d, _, _ in first_run.lines] == [1, 2, 3, 4]
    for name in ("01_plot__S01", "01_plot__S02"):
        assert (first_run.run_dir / f"{name}.html").exists() and (first_run.run_dir / f"{name}.ipynb").exists()
    # the failing notebook still leaves its executed notebook (with the traceback) behind
    assert (first_run.run_dir / "02_fails__S01.ipynb").exists()


def test_index_links_every_report_with_status_and_error(first_run):
    index = first_run.index.read_text()
    for name in first_run.table["report"]:
        assert f'href="{name}.ipynb"' in index
    assert 'href="01_plot__S01.html"' in index
    assert index.count("failed: error") == 2
    assert "ValueError: deliberate failure for segment S01" in index
    assert index.count(">ok<") == 2
    assert re.search(r"\d+\.\d s", index)
    latest = first_run.run_dir.parent / "latest"
    assert latest.resolve() == first_run.run_dir.resolve()


def test_parameters_reach_only_the_notebooks_that_declare_them(first_run, study):
    reports = {r["report"]: r for r in first_run.provenance["reports"]}
    assert reports["01_plot__S01"]["parameters"]["bins"] == 4  # coerced to int like the default
    assert "bins" not in reports["02_fails__S01"]["parameters"]
    assert reports["02_fails__S01"]["parameters"]["segment"] == "S01"
    executed = json.loads((first_run.run_dir / "01_plot__S02.ipynb").read_text())
    stdout = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "segment=S02 bins=4" in stdout


def test_html_has_no_code_and_embeds_the_figure(first_run):
    text = (first_run.run_dir / "01_plot__S01.html").read_text()
    for marker in CODE_MARKERS:
        assert marker not in text, f"code leaked into the report: {marker}"
    assert "<title>How many employees work at each site? [S01]</title>" in text
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"', text)
    assert m, "the figure is embedded as a base64 PNG"
    png = base64.b64decode(m.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") > 0
    # self-contained: no script or stylesheet fetched from elsewhere
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=\"https?:", text)
    assert "cdnjs" not in text and "mathjax" not in text.lower()


def test_kernel_is_the_running_interpreter_without_a_global_kernelspec(first_run):
    from jupyter_client.kernelspec import KernelSpecManager

    assert runner.KERNEL_NAME not in KernelSpecManager().find_kernel_specs()
    assert first_run.provenance["kernel"]["name"] == runner.KERNEL_NAME
    assert (first_run.table["status"] == "ok").sum() == 2


def test_provenance_records_the_run(first_run, study):
    prov = json.loads((first_run.run_dir / "provenance.json").read_text())
    assert {"run", "data", "code", "packages", "reports"} <= set(prov)
    assert prov["data"]["fingerprint"] == data_fingerprint(study)
    for pkg in ("cxex-lab", "pandas", "numpy", "scipy", "statsmodels", "pingouin", "semopy", "linearmodels",
                "duckdb", "ibis-framework", "papermill", "nbconvert", "python"):
        assert pkg in prov["packages"]
    assert set(prov["code"]) == {"revision", "dirty"}
    assert prov["code"]["revision"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", prov["code"]["revision"])
    run = prov["run"]
    assert run["started_at"] <= run["finished_at"]
    assert run["params"] == {"bins": "4"} and run["resolved_segments"] == ["S01", "S02"] and run["jobs"] == 2
    assert len(prov["reports"]) == 4 and all(r["cache_key"] for r in prov["reports"])


def test_fingerprint_changes_when_data_changes(study, tmp_path):
    copy = shutil.copytree(study, tmp_path / "copy")
    assert data_fingerprint(copy) == data_fingerprint(study)
    employees = pd.read_csv(copy / "employees.csv")
    employees.loc[0, "team_id"] = "T9"
    employees.to_csv(copy / "employees.csv", index=False)
    assert data_fingerprint(copy) != data_fingerprint(study)
    (copy / "renamed.csv").write_bytes((copy / "employees.csv").read_bytes())
    (copy / "employees.csv").unlink()
    assert data_fingerprint(copy) != data_fingerprint(study)


def test_rerun_is_served_from_the_cache(first_run, study, out_dir, capsys):
    t0 = time.perf_counter()
    code = cli_main(["run", "--notebooks-dir", str(FIXTURES), "--notebooks", "01_plot.ipynb", "--data", str(study),
                     "--segments", "S01,S02", "-p", "bins=4", "--out", str(out_dir), "--jobs", "2"])
    elapsed = time.perf_counter() - t0
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("cached") >= 2 and "01_plot__S02" in printed
    assert elapsed < 5, f"a cached rerun should not start kernels ({elapsed:.1f} s)"
    latest = out_dir / "latest"
    assert latest.resolve() != first_run.run_dir.resolve()
    prov = json.loads((latest / "provenance.json").read_text())
    assert [r["status"] for r in prov["reports"]] == ["cached", "cached"]
    first_keys = set(first_run.table["cache_key"])
    assert {r["cache_key"] for r in prov["reports"]} <= first_keys
    assert (latest / "01_plot__S01.html").read_text() == (first_run.run_dir / "01_plot__S01.html").read_text()
    assert "cached" in (latest / "index.html").read_text()


def test_cache_key_follows_parameters_and_data(first_run, study, tmp_path):
    """Same notebook, other parameter or other data -> other key (checked without executing)."""
    nb = (FIXTURES / "01_plot.ipynb").read_bytes()
    import hashlib

    digest = hashlib.sha256(nb).hexdigest()
    versions, source = runner.package_versions(), runner._source_digest()
    base = {"bins": 4, "data_dir": "x", "segment": "S01", "__segment": "S01"}
    k1 = runner._cache_key(digest, base, data_fingerprint(study), versions, source)
    assert k1 == runner._cache_key(digest, dict(base), data_fingerprint(study), versions, source)
    assert k1 != runner._cache_key(digest, {**base, "bins": 5}, data_fingerprint(study), versions, source)
    assert k1 != runner._cache_key(digest, base, "0" * 64, versions, source)
    assert k1 != runner._cache_key(digest, base, data_fingerprint(study), {**versions, "pandas": "0.0"}, source)
    assert k1 != runner._cache_key("f" * 64, base, data_fingerprint(study), versions, source)


# --------------------------------------------------------------------------- privacy

def test_privacy_scan_fails_a_report_that_shows_an_id(study, tmp_path):
    result = run_reports(FIXTURES, data=study, pattern="03_leak.ipynb", segments="all", jobs=1,
                         out=tmp_path / "reports", progress=False)
    row = result.table.iloc[0]
    assert (row["status"], row["reason"]) == ("failed", "privacy")
    assert "employee_id" in row["error"]
    assert result.exit_code == 1
    assert not (result.run_dir / "03_leak__all.html").exists(), "the leaking HTML is withheld"
    index = result.index.read_text()
    assert "failed: privacy" in index
    assert "E00001" not in index and "E00001" not in (result.run_dir / "provenance.json").read_text()


def test_scan_privacy_patterns():
    found = scan_privacy("<td>E00042</td><td>C1234567</td><p>I12345678 and E00042</p>")
    assert {(f["kind"], f["match"], f["count"]) for f in found} == {
        ("employee_id", "E00042", 2), ("customer_id", "C1234567", 1), ("interaction_id", "I12345678", 1)}
    assert scan_privacy("<p>n = 12345, site S01, team T03, CE12345X, E1234, C123456789</p>") == []
    # base64 images, style sheets and CSS colours are not mistaken for ids
    assert scan_privacy('<img src="data:image/png;base64,AAAA+E12345/BBBB"><style>a{color:#E12345}</style>') == []
    assert scan_privacy('<span style="color:#E12345">x</span>') == []
    custom = scan_privacy("agent AG-0042", patterns={"agent": r"\bAG-\d{4}\b"})
    assert custom == [{"kind": "agent", "match": "AG-0042", "count": 1}]


# --------------------------------------------------------------------------- validation

def test_unknown_parameter_lists_valid_names(study, tmp_path):
    with pytest.raises(RunnerError) as err:
        run_reports(FIXTURES, data=study, pattern="0[12]_*.ipynb", params={"min_grup_size": 3}, out=tmp_path)
    msg = str(err.value)
    assert "min_grup_size" in msg and "valid names: bins, min_group_size" in msg
    assert not any(tmp_path.iterdir()), "nothing runs (and no run folder appears) when validation fails"


def test_wrongly_typed_parameter_is_rejected(study, tmp_path):
    with pytest.raises(RunnerError, match=r"min_group_size='abc' is not a valid integer in 01_plot.ipynb"):
        run_reports(FIXTURES, data=study, pattern="01_plot.ipynb", params={"min_group_size": "abc"}, out=tmp_path)
    with pytest.raises(RunnerError, match="use --segments"):
        run_reports(FIXTURES, data=study, pattern="01_plot.ipynb", params={"segment": "S01"}, out=tmp_path)


def test_unknown_segment_lists_valid_choices(study, tmp_path, capsys):
    with pytest.raises(RunnerError) as err:
        run_reports(FIXTURES, data=study, pattern="01_plot.ipynb", segments="S01,S99", out=tmp_path)
    assert "S99" in str(err.value) and "valid choices: all, site_id, S01, S02" in str(err.value)
    code = cli_main(["run", "--notebooks-dir", str(FIXTURES), "--data", str(study), "--segments", "S7",
                     "--out", str(tmp_path)])
    assert code == 2 and "valid choices: all, site_id, S01, S02" in capsys.readouterr().err


def test_unknown_notebook_pattern_lists_available(study, tmp_path):
    with pytest.raises(RunnerError, match="available: 01_plot.ipynb, 02_fails.ipynb, 03_leak.ipynb"):
        run_reports(FIXTURES, data=study, pattern="99_*.ipynb", out=tmp_path)


def test_resolve_segments(study):
    assert resolve_segments("all", study) == ["all"]
    assert resolve_segments("site_id", study) == ["S01", "S02"]
    assert resolve_segments("all,site_id", study) == ["all", "S01", "S02"]
    assert resolve_segments(["S02"], study) == ["S02"]


@pytest.mark.parametrize(
    ("raw", "type_name", "expected"),
    [("7", "int", 7), ("0.25", "float", 0.25), ("3", "float", 3.0), ("false", "bool", False), ("yes", "bool", True),
     ("esat", "str", "esat"), ("[100, 300]", "list", [100, 300]), ('{"a": 1}', "dict", {"a": 1}),
     ("12", "NoneType", 12), ("x", "NoneType", "x"), (5, "int", 5), (2, "float", 2.0)],
)
def test_coerce_parameter(raw, type_name, expected):
    value = coerce_parameter("p", raw, type_name)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("raw", "type_name"), [("1.5", "int"), ("maybe", "bool"), ("abc", "float"),
                                                ("3", "list"), (True, "int"), ("x", "dict")])
def test_coerce_parameter_rejects(raw, type_name):
    with pytest.raises(RunnerError, match="is not a valid"):
        coerce_parameter("p", raw, type_name)


def test_notebook_parameters_reads_the_tagged_cell():
    declared = runner.notebook_parameters(FIXTURES / "01_plot.ipynb")
    assert {k: (v["type"], v["default"]) for k, v in declared.items()} == {
        "data_dir": ("str", "data/sample"), "segment": ("str", "all"), "min_group_size": ("int", 5), "bins": ("int", 3)}
