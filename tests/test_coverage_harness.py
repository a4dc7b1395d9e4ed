"""The replicate-study harness (benchmarks/coverage.py): its pass rule on rows with a known answer,
a small end-to-end run (slow), and the verdicts the package ships being the harness's own output."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from cxex_lab import findings
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("coverage_harness", ROOT / "benchmarks" / "coverage.py")
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)


def _rows(truth: float, n: int, miss: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """n replicate rows whose interval misses ``truth`` in exactly ``miss`` of them."""
    rng = np.random.default_rng(seed)
    est = truth + shift + rng.normal(0, 1, n)
    lo, hi = est - 50, est + 50
    lo[:miss] = truth + 1  # these intervals sit above the truth
    hi[:miss] = truth + 2
    return pd.DataFrame({"report": "x", "key": "x.a", "estimate": est, "ci_low": lo, "ci_high": hi})


def test_pass_rule_on_rows_with_a_known_answer():
    secs = pd.DataFrame({"x": [1.0]})
    s = harness.summarise(_rows(0.0, 200, miss=10), {"x.a": {"value": 0.0}}, secs).iloc[0]
    assert s["coverage"] == pytest.approx(0.95) and s["mc_error"] == pytest.approx(np.sqrt(0.95 * 0.05 / 200))
    assert abs(s["bias_se"]) < 0.25 and bool(s["passed"])
    under = harness.summarise(_rows(0.0, 200, miss=30), {"x.a": {"value": 0.0}}, secs).iloc[0]
    assert under["coverage"] == pytest.approx(0.85) and not under["passed"]
    over = harness.summarise(_rows(0.0, 200, miss=0), {"x.a": {"value": 0.0}}, secs).iloc[0]
    assert over["coverage"] == 1.0 and not over["passed"]           # too wide fails as well
    biased = harness.summarise(_rows(0.0, 200, miss=10, shift=0.5), {"x.a": {"value": 0.0}}, secs).iloc[0]
    assert biased["bias_se"] > 0.25 and not biased["passed"]
    # a finding without an interval (a rate, a share) passes on bias alone
    no_ci = _rows(0.0, 50, miss=0).assign(ci_low=np.nan, ci_high=np.nan)
    s = harness.summarise(no_ci, {"x.a": {"value": 0.0}}, secs).iloc[0]
    assert np.isnan(s["coverage"]) and bool(s["passed"])


def test_shipped_verdicts_are_the_harness_output_and_drive_causal():
    data = json.loads((ROOT / "cxex_lab" / "data" / "coverage.json").read_text())
    v = data["findings"]
    if not v:
        pytest.fail("cxex_lab/data/coverage.json holds no verdicts: run python benchmarks/coverage.py --write")
    lo, hi = findings.COVERAGE_TARGET
    for key, rec in v.items():
        cov, bias = rec.get("coverage"), rec.get("bias_se")
        expect = (bias is not None and abs(bias) <= findings.BIAS_TARGET_SE) and (cov is None or lo <= cov <= hi)
        assert bool(rec["passed"]) == bool(expect), key
    assert data["meta"]["studies"]["R"] >= 100
    # causal follows the verdict for every effect the sample's reports show
    t = findings.findings_table([findings.finding(k, "f", "e", 0.0, -1.0, 1.0, unit="u", n=1, method="m",
                                                  kind="effect") for k in v])
    assert t.set_index("key")["causal"].to_dict() == {k: bool(r["passed"]) for k, r in v.items()}


@pytest.mark.slow
def test_small_end_to_end_run(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, str(ROOT / "benchmarks" / "coverage.py"), "--R", "3", "--reports", "data_quality,mirror",
           "--scale", "2", "--truth-studies", "2", "--jobs", "2", "--cache", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "`mirror.cx.nps`" in out.stdout and "findings pass; R = 3" in out.stdout
    assert len(list((tmp_path / "replicates").glob("*.json"))) == 3
    truths = json.loads((tmp_path / "observed_truth_x2x2.json").read_text())
    assert truths["mirror.cx.nps"]["studies"] == 2 and truths["mirror.cx.nps"]["report"] == "mirror"
    # a second run reuses the saved replicates
    again = subprocess.run(cmd[:-4] + ["--jobs", "1", "--cache", str(tmp_path)], capture_output=True, text=True,
                           cwd=ROOT, timeout=900)
    assert again.returncode == 0 and "(3 saved by an earlier run)" in again.stdout
