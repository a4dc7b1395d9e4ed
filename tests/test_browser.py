"""Rendered reports open in a real browser, offline.

Headless Chromium (Debian package ``chromium``) loads ``index.html`` and one report from
``file://`` with every host name unresolvable, so anything fetched from the network
would fail and show up as a console error. Skipped when Chromium is not installed.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from cxex_lab.runner import run_reports
from tests.test_runner import FIXTURES, make_study

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)
TIMEOUT = 60
CONSOLE_ERRORS = re.compile(r"Uncaught|ERR_NAME_NOT_RESOLVED|ERR_FILE_NOT_FOUND|Failed to load resource"
                            r"|Refused to load|net::ERR_")


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-extensions", "--disable-default-apps", "--mute-audio",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any external URL would fail loudly
        "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", *args,
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {TIMEOUT} s")


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and CONSOLE_ERRORS.search(line)
            or "Uncaught" in line]


BROWSER_SERVICES = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)[/:?]")


def external_requests(net_log: Path) -> list[str]:
    """http(s) URLs the page asked for (Chromium's own service pings left out)."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = {(e.get("params") or {}).get("url", "") for e in log["events"] if e.get("type") == start_job}
    return sorted(u for u in urls if u.startswith(("http:", "https:")) and not BROWSER_SERVICES.match(u))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    base = tmp_path_factory.mktemp("browser")
    study = make_study(base / "data")
    result = run_reports(FIXTURES, data=study, pattern="01_plot.ipynb", segments="all", jobs=1,
                         out=base / "reports", run_name="browser", progress=False)
    assert list(result.table["status"]) == ["ok"]
    return result


def test_index_renders_offline(rendered, tmp_path):
    proc = chromium(["--dump-dom", rendered.index.as_uri()], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "cxex-lab reports: browser" in dom
    assert 'href="01_plot__all.html"' in dom and ">ok<" in dom
    assert not console_errors(proc.stderr), console_errors(proc.stderr)


def test_report_renders_offline_with_its_figure(rendered, tmp_path):
    report = rendered.run_dir / "01_plot__all.html"
    net_log = tmp_path / "net.json"
    proc = chromium([f"--log-net-log={net_log}", "--dump-dom", report.as_uri()], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "How many employees work at each site?" in dom
    images = re.findall(r'<img[^>]+src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)
    assert images, "the figure is in the rendered DOM as an embedded PNG"
    width, height = png_size(base64.b64decode(images[0]))
    assert width > 0 and height > 0
    assert "FIXTURE_CODE_MARKER" not in dom
    assert not console_errors(proc.stderr), console_errors(proc.stderr)
    if net_log.exists():  # nothing is fetched from the network: the report is self-contained
        assert external_requests(net_log) == []


def test_report_screenshot_is_not_blank(rendered, tmp_path):
    shot = tmp_path / "shot.png"
    proc = chromium([f"--screenshot={shot}", "--window-size=1000,900", "--hide-scrollbars",
                     (rendered.run_dir / "01_plot__all.html").as_uri()], tmp_path / "profile")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert png_size(data) == (1000, 900)
    from PIL import Image

    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 10, "the screenshot is (almost) a single colour"
