"""Screenshot a greenkd report in headless Chromium (Debian's): `python docs/screenshot.py REPORT.html OUT.png`.

The README's picture of the default sweep's report is made with it:
`greenkd sweep && python docs/screenshot.py reports/default/report.html docs/report-default.png`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def screenshot(report: Path, out: Path, *, width: int = 1400, height: int = 2200) -> Path:
    """The top `height` pixels of the report once every plot is drawn, as a PNG."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(report.resolve().as_uri(), wait_until="load")
        page.wait_for_function(
            "[...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))",
            timeout=30_000,
        )
        page.screenshot(path=str(out), full_page=False)
        browser.close()
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python docs/screenshot.py REPORT.html OUT.png")
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
