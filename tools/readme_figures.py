"""Copy one rendered figure per notebook into docs/figures/ for the README tour.

Usage: python tools/readme_figures.py [RUN_DIR]   (default: reports/latest)

Takes the first PNG output of each executed notebook (``*.ipynb``) in the run
directory whose segment is "all".
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(run_dir: str | None = None) -> int:
    run = Path(run_dir) if run_dir else ROOT / "reports" / "latest"
    out = ROOT / "docs" / "figures"
    out.mkdir(parents=True, exist_ok=True)
    found = 0
    for nb_path in sorted(run.rglob("*.ipynb")):
        if "all" not in nb_path.stem:
            continue
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            pngs = [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            if pngs:
                name = nb_path.stem.split("__")[0].split(".")[0]
                (out / f"{name}.png").write_bytes(base64.b64decode(pngs[0]))
                found += 1
                break
    print(f"wrote {found} figure(s) to {out}")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
