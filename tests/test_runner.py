"""The report runner (cxex_lab.run): notebooks x segments with papermill, HTML without
code, the landing page, provenance, cache, parameter validation, the output checks,
the privacy scan against the study's real ids, the prepare hook, a quiet terminal.

Uses the small notebooks in ``tests/fixtures/notebooks/`` (01_plot draws a figure,
02_fails raises on purpose, 03_leak prints an employee id, 04_present is a report
made for reading, 05_warns warns, 06_raw prints a dict, 07_noise makes the kernel log
the line ``cxex-lab run`` used to print) on 12- to 18-employee studies. Kernels take a
few seconds each, so executed runs are module-scoped and shared by several tests.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from cxex_lab import runner
from cxex_lab.cli import main as cli_main
from cxex_lab.run import (
    HashedIds,
    IdSet,
    Prepared,
    RunnerError,
    StudyFileIds,
    coerce_parameter,
    data_fingerprint,
    keyed_hash,
    notebooks_home,
    resolve_segments,
    run_reports,
    scan_ids,
)
from cxex_lab.run.cache import cache_key
from cxex_lab.run.idscan import mask_ids, report_tokens
from cxex_lab.run.kernel import KERNEL_NAME
from cxex_lab.run.parameters import notebook_parameters
from cxex_lab.run.provenance import package_versions, source_digest
from cxex_lab.run.render import check_outputs
from tests.conftest import ROOT, SAMPLE

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"
CODE_MARKERS = ("FIXTURE_CODE_MARKER", "read_csv", "plt.subplots", "groupby(")

pytestmark = pytest.mark.xdist_group("runner")


@pytest.fixture(scope="module", autouse=True)
def _notebooks_read_the_files():
    """The fixture studies here are employees tables only (no complete study to prepare a workspace from):
    the runner's file-based prepare step serves them; tests of the workspace step set it back."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXEX_LAB_PREPARE", "files")
        yield


def images(html: str) -> list[dict[str, str]]:
    """The attributes of every ``<img>`` of a page."""
    from html.parser import HTMLParser

    found = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                found.append({k: v or "" for k, v in attrs})

    P().feed(html)
    return found


def make_study(path: Path, sites: dict[str, int] | None = None, id_format: str = "E{:05d}", start: int = 1) -> Path:
    """employees.csv: by default 12 people, 6 at S01 and 6 at S02."""
    sites = sites or {"S01": 6, "S02": 6}
    path.mkdir(parents=True, exist_ok=True)
    site_ids = [s for s, n in sites.items() for _ in range(n)]
    employees = pd.DataFrame({
        "employee_id": [id_format.format(start + i) for i in range(len(site_ids))],
        "site_id": site_ids,
        "team_id": [f"T{s[1:]}" for s in site_ids],
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
    assert [d for d, _, _ in first_run.lines] == [1, 2, 3, 4]  # one progress call per finished report
    for name in ("01_plot__S01", "01_plot__S02"):
        assert (first_run.run_dir / f"{name}.html").exists() and (first_run.run_dir / f"{name}.ipynb").exists()
    # a failed report gets no HTML (it would show the traceback and code); its notebook stays for the analyst
    assert not (first_run.run_dir / "02_fails__S01.html").exists()
    assert (first_run.run_dir / "02_fails__S01.ipynb").exists()
    assert not list(first_run.run_dir.glob(".*.pending"))


def test_index_shows_failures_as_one_line_messages(first_run):
    index = first_run.index.read_text()
    for name in ("01_plot__S01", "01_plot__S02"):
        assert f'href="{name}.html"' in index and f'href="{name}.ipynb"' in index
    assert 'href="02_fails__S01.html"' not in index and 'href="02_fails__S01.ipynb"' not in index
    assert index.count("failed: error") == 2
    assert "ValueError: deliberate failure for segment S01 (cell 5)" in index
    assert "Traceback" not in index and "raise ValueError" not in index and "print(" not in index
    assert index.count(">ok<") == 2
    assert re.search(r"\d+\.\d s", index)
    latest = first_run.run_dir.parent / "latest"
    assert latest.resolve() == first_run.run_dir.resolve()


def test_parameters_reach_only_the_notebooks_that_declare_them(first_run):
    reports = {r["report"]: r for r in first_run.provenance["reports"]}
    assert reports["01_plot__S01"]["parameters"]["bins"] == 4  # coerced to int like the default
    assert "bins" not in reports["02_fails__S01"]["parameters"]
    assert reports["02_fails__S01"]["parameters"]["segment"] == "S01"
    executed = json.loads((first_run.run_dir / "01_plot__S02.ipynb").read_text())
    stdout = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "segment=S02 bins=4" in stdout


def test_html_has_no_code_and_embeds_the_figure_with_alt_text(first_run):
    text = (first_run.run_dir / "01_plot__S01.html").read_text()
    for marker in CODE_MARKERS:
        assert marker not in text, f"code leaked into the report: {marker}"
    assert "<title>How many employees work at each site? [S01]</title>" in text
    (img,) = images(text)
    assert img["src"].startswith("data:image/png;base64,"), "the figure is embedded as a base64 PNG"
    png = base64.b64decode(img["src"].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") > 0
    assert img["alt"] == "Bar chart: employees at 1 site(s)"
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=\"https?:", text)
    assert "cdnjs" not in text and "mathjax" not in text.lower()


def test_reports_link_to_the_index_and_to_each_other(first_run):
    s1 = (first_run.run_dir / "01_plot__S01.html").read_text()
    s2 = (first_run.run_dir / "01_plot__S02.html").read_text()
    assert s1.count('href="index.html"') == 2 and s2.count('href="index.html"') == 2  # top and bottom
    assert 'rel="next">Next: How many employees work at each site? [S02]' in s1 and 'rel="prev"' not in s1
    assert 'href="01_plot__S01.html" rel="prev"' in s2 and 'rel="next"' not in s2  # failed reports are skipped
    assert "cxex-nav" in s1 and "<!--cxex-nav" not in s1


def test_kernel_is_the_running_interpreter_without_a_global_kernelspec(first_run):
    from jupyter_client.kernelspec import KernelSpecManager

    assert KERNEL_NAME not in KernelSpecManager().find_kernel_specs()
    assert first_run.provenance["kernel"] == {"name": KERNEL_NAME, "python": sys.executable}


def test_provenance_records_the_run(first_run, study):
    prov = json.loads((first_run.run_dir / "provenance.json").read_text())
    assert {"run", "data", "code", "packages", "reports", "prepare", "privacy", "study"} <= set(prov)
    assert prov["data"]["fingerprint"] == data_fingerprint(study)
    for pkg in ("cxex-lab", "pandas", "numpy", "scipy", "statsmodels", "pingouin", "semopy", "linearmodels",
                "duckdb", "ibis-framework", "papermill", "nbconvert", "great-tables", "python"):
        assert pkg in prov["packages"]
    assert set(prov["code"]) == {"revision", "dirty"}
    assert prov["code"]["revision"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", prov["code"]["revision"])
    run = prov["run"]
    assert run["started_at"] <= run["finished_at"]
    assert run["params"] == {"bins": "4"} and run["resolved_segments"] == ["S01", "S02"] and run["jobs"] == 2
    assert len(prov["reports"]) == 4 and all(r["cache_key"] for r in prov["reports"])
    scan = prov["privacy"]["scan"]
    assert scan["ids"] == {"employee_id": 12} and scan["short_numeric"] == {}
    assert prov["study"] == {"employees": 12, "sites": 2, "teams": 2}
    assert not re.search(r"E000\d\d", json.dumps(prov)), "no id in the provenance record"


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
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0 and captured.err == ""
    assert printed.count("cached") >= 2 and "01_plot__S02" in printed
    last = printed.strip().splitlines()[-1]
    assert re.fullmatch(r"2 reports in \d+ s: 2 cached\. Open .*latest/index\.html", last), last
    assert elapsed < 8, f"a cached rerun should not start kernels ({elapsed:.1f} s)"
    latest = out_dir / "latest"
    assert latest.resolve() != first_run.run_dir.resolve()
    prov = json.loads((latest / "provenance.json").read_text())
    assert [r["status"] for r in prov["reports"]] == ["cached", "cached"]
    assert {r["cache_key"] for r in prov["reports"]} <= set(first_run.table["cache_key"])
    # the same report, with this run's navigation
    strip = functools.partial(re.sub, r'<nav class="cxex-nav[^"]*".*?</nav>', "")
    assert strip((latest / "01_plot__S01.html").read_text(), flags=re.S) == \
        strip((first_run.run_dir / "01_plot__S01.html").read_text(), flags=re.S)
    assert "cached" in (latest / "index.html").read_text()


def test_cache_key_follows_parameters_and_data(study):
    """Same notebook, other parameter or other data -> other key (checked without executing)."""
    digest = hashlib.sha256((FIXTURES / "01_plot.ipynb").read_bytes()).hexdigest()
    versions, source = package_versions(), source_digest()
    base = {"bins": 4, "data_dir": "x", "segment": "S01", "__segment": "S01"}
    fp = data_fingerprint(study)
    k1 = cache_key(digest, base, fp, versions, source)
    assert k1 == cache_key(digest, dict(base), fp, versions, source)
    assert k1 != cache_key(digest, {**base, "bins": 5}, fp, versions, source)
    assert k1 != cache_key(digest, base, "0" * 64, versions, source)
    assert k1 != cache_key(digest, base, fp, {**versions, "pandas": "0.0"}, source)
    assert k1 != cache_key("f" * 64, base, fp, versions, source)


# --------------------------------------------------------------------------- what a reader must not see

@pytest.fixture(scope="module")
def checked_run(study, tmp_path_factory):
    """03_leak, 05_warns, 06_raw: each must fail, for its own reason."""
    return run_reports(FIXTURES, data=study, pattern="03_*,05_*,06_*", segments="all", jobs=2,
                       out=tmp_path_factory.mktemp("checked"), progress=False)


def test_privacy_scan_fails_a_report_that_shows_an_id(checked_run):
    row = checked_run.table.set_index("report").loc["03_leak__all"]
    assert (row["status"], row["reason"]) == ("failed", "privacy")
    assert row["error"] == ("privacy: the report shows identifiers of the study (1 distinct employee id); "
                            "report withheld")
    assert not (checked_run.run_dir / "03_leak__all.html").exists(), "the leaking HTML is withheld"
    assert not (checked_run.run_dir / "03_leak__all.ipynb").exists(), "and so is the executed notebook"
    for name in ("index.html", "provenance.json", "findings.json"):
        assert "E00001" not in (checked_run.run_dir / name).read_text()
    assert "failed: privacy" in checked_run.index.read_text()


def test_stderr_output_fails_a_report(checked_run):
    row = checked_run.table.set_index("report").loc["05_warns__all"]
    assert (row["status"], row["reason"]) == ("failed", "stderr")
    assert row["error"] == ("stderr output in cell 4: UserWarning: Could not infer format, so each element "
                            "will be parsed individually")
    assert not (checked_run.run_dir / "05_warns__all.html").exists()
    assert "/tmp/" not in checked_run.index.read_text()


def test_raw_output_fails_a_report(checked_run):
    row = checked_run.table.set_index("report").loc["06_raw__all"]
    assert (row["status"], row["reason"]) == ("failed", "raw")
    assert "a Python dict is shown" in row["error"] and "0.0139989" not in row["error"]


def test_real_format_id_fails_the_run(tmp_path):
    """Issue 12: an agent id such as AG1046 (not a simulator format) in a report fails the run."""
    agents = make_study(tmp_path / "agents", sites={"S01": 3, "S02": 3}, id_format="AG{}", start=1046)
    result = run_reports(FIXTURES, data=agents, pattern="03_leak.ipynb", jobs=1, out=tmp_path / "reports",
                         progress=False)
    row = result.table.iloc[0]
    assert result.exit_code == 1 and (row["status"], row["reason"]) == ("failed", "privacy")
    assert "AG1046" not in result.index.read_text() and "AG1046" not in (result.run_dir / "provenance.json").read_text()
    # the old format patterns would not have noticed
    assert runner.scan_privacy("first employee: AG1046") == []


def _nb(*outputs, tags=()):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    if tags:
        cell.metadata["tags"] = list(tags)
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), cell]
    return nb


@pytest.mark.parametrize(("output", "reason", "fragment"), [
    ({"output_type": "error", "ename": "KeyError", "evalue": "'employee_id'", "traceback": ["..."]},
     "error", "KeyError: 'employee_id' (cell 2)"),
    ({"output_type": "stream", "name": "stderr",
      "text": "/x/site-packages/cxex_lab/io.py:75: UserWarning: Parsing dates in %d/%m/%Y format\n  df = ...\n"},
     "stderr", "stderr output in cell 2: UserWarning: Parsing dates in %d/%m/%Y format"),
    ({"output_type": "stream", "name": "stdout", "text": "RI-CLPM fit: {'cfi': 0.99, 'rmsea': 0.01}\n"},
     "raw", "a Python dict"),
    ({"output_type": "execute_result", "execution_count": 1, "metadata": {},
      "data": {"text/plain": "0    1.0\n1    2.0\nName: esat, dtype: float64"}}, "raw", "a raw pandas Series"),
    ({"output_type": "stream", "name": "stdout", "text": "saved to /tmp/ipykernel_123/x.csv\n"},
     "raw", "a temporary or install path"),
    ({"output_type": "execute_result", "execution_count": 1, "metadata": {},
      "data": {"text/plain": "<cxex_lab.results.Fit object at 0x7f3a2b1c9d90>"}}, "raw", "a Python object repr"),
    ({"output_type": "execute_result", "execution_count": 1, "metadata": {},
      "data": {"text/plain": "['a', 'b']"}}, "raw", "a Python list"),
])
def test_check_outputs_names_what_a_reader_must_not_see(output, reason, fragment):
    problem = check_outputs(_nb(output))
    assert problem is not None and problem[0] == reason and fragment in problem[1], problem
    assert "/x/site-packages" not in problem[1]


def test_check_outputs_accepts_what_reports_should_show():
    ok = [{"output_type": "stream", "name": "stdout", "text": "1,046 employee x wave rows; 12% surveyed\n"},
          {"output_type": "display_data", "metadata": {},
           "data": {"text/html": "<table><tr><td>{'a': 1}</td></tr></table>", "text/plain": "{'a': 1}"}}]
    assert check_outputs(_nb(*ok)) is None  # the dict-like text/plain is not what the HTML shows
    noisy = {"output_type": "stream", "name": "stderr", "text": "warning\n"}
    assert check_outputs(_nb(noisy, tags=["remove-output"])) is None  # removed outputs never reach the HTML


# --------------------------------------------------------------------------- the id scan

def test_report_tokens_and_the_numeric_rule():
    html = ('<p>Agent AG1046, (AG-2002). n = 1046; 1,046 rows; r = 0.104623; id 104623; 48213377.</p>'
            '<img src="data:image/png;base64,QUcxMDQ2AG9999+/=="><style>.a{color:#AG3003}</style>'
            '<td style="color:#AB1234">x</td>')
    tokens = report_tokens(html)
    assert {"AG1046", "AG-2002", "AG", "104623", "48213377"} <= tokens
    assert not {"1046", "2002"} & tokens, "digit-only tokens under 6 digits are never looked up (counts, years)"
    assert "0.104623" not in tokens and "0" not in tokens  # a decimal contributes only its integer part
    assert not {"AG9999", "AG3003", "AB1234"} & tokens, "images, style sheets and inline styles are not text"


def test_id_set_scan_and_mask():
    index = IdSet({"employee_id": ["AG1046", "1046", "104623"], "customer_id": ["C-77"]})
    found = scan_ids("<p>AG1046 served C-77 twice (C-77); n = 1046; id 104623</p>", index)
    assert found == [{"kind": "customer_id", "match": "C-77", "count": 2},
                     {"kind": "employee_id", "match": "104623", "count": 1},
                     {"kind": "employee_id", "match": "AG1046", "count": 1}]
    assert index.describe()["short_numeric"] == {"employee_id": 1}
    assert mask_ids("KeyError: 'AG1046'", index) == "KeyError: '[employee_id]'"


def test_hashed_ids_need_no_raw_ids():
    h = functools.partial(keyed_hash, b"study-key")
    index = HashedIds({"employee_id": {h("AG1046")}, "interaction_id": lambda wanted: wanted & {h("I-9")}}, hasher=h)
    hits = scan_ids(f"<p>AG1046 and I-9 and AG2002 and pseudonym {h('AG1046')}</p>", index)
    assert {(f["kind"], f["match"]) for f in hits} == {("employee_id", "AG1046"), ("interaction_id", "I-9"),
                                                       ("employee_id", h("AG1046"))}
    assert h("AG1046") != keyed_hash(b"other-key", "AG1046"), "the hash is keyed"


@pytest.mark.parametrize("fmt", ["csv", "parquet", "duckdb"])
def test_study_file_ids_look_up_every_id_column(tmp_path, fmt):
    tables = {
        "employees": pd.DataFrame({"employee_id": ["AG1046", "AG1047"], "site_id": ["S1", "S1"]}),
        "interactions": pd.DataFrame({"interaction_id": [48213377, 48213378], "employee_id": ["AG1046", "AG1047"],
                                      "customer_id": ["cust-9", "cust-10"]}),
    }
    if fmt == "duckdb":
        import duckdb

        path = tmp_path / "study.duckdb"
        con = duckdb.connect(str(path))
        for name, df in tables.items():
            con.register("df", df)
            con.execute(f"create table {name} as select * from df")
            con.unregister("df")
        con.close()
    else:
        path = tmp_path / "study"
        path.mkdir()
        for name, df in tables.items():
            getattr(df, "to_csv" if fmt == "csv" else "to_parquet")(path / f"{name}.{fmt}", index=False)
    index = StudyFileIds(path)
    assert index.find({"AG1046", "48213377", "cust-10", "S1", "AG9999", "1046"}) == {
        "AG1046": "employee_id", "48213377": "interaction_id", "cust-10": "customer_id"}
    assert index.describe()["ids"] == {"employee_id": 2, "customer_id": 2, "interaction_id": 2}
    index.close()


# --------------------------------------------------------------------------- the landing page

@pytest.fixture(scope="module")
def present_run(tmp_path_factory):
    """04_present on all + 3 sites of 8, 3 and 7 employees (S02 is below the minimum of 5)."""
    base = tmp_path_factory.mktemp("present")
    data = make_study(base / "data", sites={"S01": 8, "S02": 3, "S03": 7})
    return run_reports(FIXTURES, data=data, pattern="04_present.ipynb", segments="all,site_id", jobs=2,
                       out=base / "reports", progress=False)


def test_present_reports_render(present_run):
    assert list(present_run.table["status"]) == ["ok"] * 4, present_run.table[["report", "error"]]
    text = (present_run.run_dir / "04_present__all.html").read_text()
    assert 'id="key-findings"' in text and ">Key findings</h2>" in text
    assert "about 0.20 [0.12, 0.26] CSAT points happier next quarter." in text  # k = 18: 0.198 [0.12, 0.258]
    assert 'role="note"' in text and "n &lt; 5" in text
    assert "application/vnd.cxex-lab" not in text, "the machine-readable payload stays out of the HTML"


def test_landing_page_states_the_study_and_each_reports_first_finding(present_run):
    index = present_run.index.read_text()
    assert "The study: 18 employees, 3 sites, 3 teams." in index
    assert "78% of CX answers are linked to the EX of the employee who handled the interaction." in index
    assert "Set aside on purpose: 25 CX answers whose interaction is unknown." in index
    assert re.search(r'<h3><a href="04_present__all.html">Does a report made for reading render as intended\?</a></h3>'
                     r'<p class="finding">An agent whose eSat rises one point above their usual level has customers '
                     r'about 0\.20 \[0\.12, 0\.26\] CSAT points happier next quarter\.</p>', index)


def test_landing_page_compares_the_headline_across_sites(present_run):
    index = present_run.index.read_text()
    section = index[index.index('id="across-sites"'):index.index('id="reports"')]
    # estimate 0.18 + k/1000, interval [0.12, 0.24 + k/1000], k employees in the segment (by hand)
    rows = re.findall(r'<tr><td><a href="([^"]+)">([^<]+)</a></td><td class="num">([^<]+)</td>', section)
    assert rows == [("04_present__all.html", "All sites", "0.20 [0.12, 0.26]"),
                    ("04_present__S01.html", "S01", "0.19 [0.12, 0.25]"),
                    ("04_present__S02.html", "S02", "n &lt; 5"),
                    ("04_present__S03.html", "S03", "0.19 [0.12, 0.25]")]
    assert "0.18 [0.12, 0.24]" not in section  # S02's own estimate (k = 3: 0.183) is not shown


def test_findings_json_holds_every_reports_findings(present_run):
    data = json.loads((present_run.run_dir / "findings.json").read_text())
    assert [d["segment"] for d in data] == ["all", "S01", "S02", "S03"]
    keys = [f["key"] for f in data[0]["findings"][0]["findings"]]
    assert keys == ["fixture.ex_to_cx", "fixture.cx_to_ex", "fixture.linked"]


# --------------------------------------------------------------------------- terminal, any folder, prepare

def test_terminal_is_quiet(study, tmp_path):
    """Kernel log lines (the shutdown interrupt's "KeyboardInterrupt caught in kernel.") go to the run log."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "cxex_lab.cli", "run", "--notebooks-dir", str(FIXTURES),
                           "--notebooks", "07_noise.ipynb", "--data", str(study), "--out", str(tmp_path / "r"),
                           "--jobs", "1"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and re.match(r"\[1/1\] ok +07_noise__all +\d+\.\d s$", lines[0]), lines
    assert re.fullmatch(r"1 report in \d+ s: 1 ok\. Open r/latest/index\.html", lines[1]), lines[1]
    logs = list((tmp_path / "r" / ".logs").glob("*.log"))
    assert len(logs) == 1 and "KeyboardInterrupt caught in kernel." in logs[0].read_text()


def test_packaged_notebooks_run_from_any_folder(tmp_path, monkeypatch, capsys):
    """`cxex-lab run --data DIR` from a folder that is not the repository uses the installed notebooks."""
    home = notebooks_home()
    assert home.is_dir() and home.parent.name == "cxex_lab" and (home / "01_data_quality.ipynb").exists()
    monkeypatch.chdir(tmp_path)
    code = cli_main(["run", "--data", str(SAMPLE), "--notebooks", "01_data_quality.ipynb", "--jobs", "1"])
    out = capsys.readouterr().out
    prov = json.loads((tmp_path / "reports" / "latest" / "provenance.json").read_text())
    assert prov["run"]["notebooks_dir"] == str(home) and prov["run"]["cwd"] == str(tmp_path.resolve())
    assert (tmp_path / "reports" / "latest" / "01_data_quality__all.ipynb").exists()
    assert code == 0, out
    assert (tmp_path / "reports" / "latest" / "01_data_quality__all.html").exists()


def test_without_data_the_cli_says_what_to_give(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["run"]) == 2
    assert "give the study with --data DIR" in capsys.readouterr().err


def test_prepare_hook_runs_once_before_the_notebooks(study, tmp_path):
    calls = []
    prepared_dir = shutil.copytree(study, tmp_path / "workspace")
    h = functools.partial(keyed_hash, b"k")

    def hook(data, options):
        calls.append((data, options.engine))
        return Prepared(data=prepared_dir, sites=["S01", "S02"], description="test workspace",
                        ids=HashedIds({"employee_id": {h(f"E{i:05d}") for i in range(1, 13)}}, hasher=h),
                        facts={"employees": 99, "linked_share": 0.5})

    result = run_reports(FIXTURES, data=study, pattern="01_plot.ipynb,03_leak.ipynb", segments="site_id", jobs=2,
                         out=tmp_path / "reports", prepare=hook, progress=False)
    assert calls == [(study.resolve(), None)]
    t = result.table.set_index("report")
    assert list(t["status"]) == ["ok", "ok", "failed", "failed"]
    assert set(t.loc[["03_leak__S01", "03_leak__S02"], "reason"]) == {"privacy"}  # caught through keyed hashes
    params = {r["report"]: r["parameters"] for r in result.provenance["reports"]}
    assert params["01_plot__S01"]["data_dir"] == str(prepared_dir.resolve())
    index = result.index.read_text()
    assert "The study: 99 employees." in index and "50% of CX answers are linked" in index
    assert result.provenance["prepare"]["description"] == "test workspace"


def test_spark_engine_needs_the_workspace(study, tmp_path):
    from cxex_lab.run import PrepareOptions

    with pytest.raises(RunnerError, match="--engine spark needs the study workspace"):
        run_reports(FIXTURES, data=study, pattern="01_plot.ipynb", out=tmp_path, prepare="files",
                    prepare_options=PrepareOptions(engine="spark"))


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
    assert resolve_segments("site_id", sites=["A", "B"]) == ["A", "B"]


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
    declared = notebook_parameters(FIXTURES / "01_plot.ipynb")
    assert {k: (v["type"], v["default"]) for k, v in declared.items()} == {
        "data_dir": ("str", "data/sample"), "segment": ("str", "all"), "min_group_size": ("int", 5), "bins": ("int", 3)}


def test_notebook_parameters_follow_papermill(tmp_path):
    """Annotations win over the literal (as papermill's inspect_notebook reads them); help comments kept."""
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('x: float = 1  # effect size\nflag: bool = False\ngrid = (1, 2)\n'
                                     'name = None\nlabel: str = "a"')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    path = tmp_path / "p.ipynb"
    nbformat.write(nb, path)
    declared = notebook_parameters(path)
    assert set(declared) == set(pm.inspect_notebook(str(path)))
    assert {k: (v["type"], v["default"]) for k, v in declared.items()} == {
        "x": ("float", 1), "flag": ("bool", False), "grid": ("list", [1, 2]), "name": ("NoneType", None),
        "label": ("str", "a")}
    assert declared["x"]["help"] == "effect size"
    assert coerce_parameter("x", "2", declared["x"]["type"]) == 2.0


def test_readme_figures_takes_the_first_figure_with_its_alt(tmp_path):
    """tools/readme_figures.py finds figures shown by present/plots (text/html) and plain PNG outputs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "tools" / "readme_figures.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 16
    b64 = base64.b64encode(png).decode()
    html_out = {"output_type": "display_data", "metadata": {},
                "data": {"text/html": f'<figure><img src="data:image/png;base64,{b64}" alt="EX &amp; CX by site"></figure>',
                         "text/plain": "EX & CX by site"}}
    plain_out = {"output_type": "display_data", "metadata": {}, "data": {"image/png": b64}}
    run = tmp_path / "run"
    run.mkdir()
    for name, outputs in (("01_a__all", [html_out, plain_out]), ("02_b__all", [plain_out]), ("03_c__S01", [plain_out])):
        (run / f"{name}.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": outputs}]}))
    assert tool.main([str(run), "--out", str(tmp_path / "figs")]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["01_a.png", "01_a.txt", "02_b.png", "02_b.txt"]
    assert (tmp_path / "figs" / "01_a.png").read_bytes() == png
    assert (tmp_path / "figs" / "01_a.txt").read_text() == "EX & CX by site\n"
