"""Refresh docs/figures/ for the README tour from a rendered report run.

Usage::

    python tools/readme_figures.py [RUN_DIR] [--screenshots]

``RUN_DIR`` defaults to ``reports/latest``. For each executed notebook of segment
``all`` (``<notebook>__all.ipynb``) the first figure is written to
``docs/figures/<notebook>.png``: a figure shown with ``cxex_lab.present.show_figure``
or a ``cxex_lab.plots`` chart (an ``<img>`` with an embedded PNG in a ``text/html``
output) or a plain ``image/png`` output. Its alt text goes beside it as
``<notebook>.txt``, for the README's image descriptions.

``--screenshots`` also writes ``docs/figures/landing.png``: the run's index page in
headless Chromium, 1280 px wide.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_IMG = re.compile(r"<img\b[^>]*>", re.I)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def first_figure(nb: dict) -> tuple[bytes, str] | None:
    """The first PNG of an executed notebook and its alt text (``""`` when it has none)."""
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            html = data.get("text/html")
            if html:
                html = "".join(html) if isinstance(html, list) else html
                for tag in _IMG.findall(html):
                    attrs = dict(_ATTR.findall(tag))
                    src = attrs.get("src", "")
                    if src.startswith("data:image/png;base64,"):
                        return base64.b64decode(src.split(",", 1)[1]), unescape(attrs.get("alt", ""))
            if "image/png" in data:
                png = data["image/png"]
                png = "".join(png) if isinstance(png, list) else png
                alt = (out.get("metadata", {}).get("image/png") or {}).get("alt", "")
                return base64.b64decode(png), alt
    return None


def screenshot(page: Path, target: Path, width: int = 1280, height: int = 1400) -> bool:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("chromium not found: no screenshot", file=sys.stderr)
        return False
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={width},{height}", f"--screenshot={target}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode == 0 and target.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", default=str(ROOT / "reports" / "latest"))
    parser.add_argument("--screenshots", action="store_true", help="also screenshot the landing page")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    args = parser.parse_args(argv)
    run, out = Path(args.run_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = 0
    for nb_path in sorted(run.glob("*__all.ipynb")):
        fig = first_figure(json.loads(nb_path.read_text(encoding="utf-8")))
        if fig is None:
            continue
        name = nb_path.stem.split("__")[0]
        png, alt = fig
        (out / f"{name}.png").write_bytes(png)
        (out / f"{name}.txt").write_text(alt + "\n", encoding="utf-8")
        found += 1
    print(f"wrote {found} figure(s) to {out}")
    if args.screenshots and (run / "index.html").exists():
        if screenshot(run / "index.html", out / "landing.png"):
            print(f"wrote {out / 'landing.png'}")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
