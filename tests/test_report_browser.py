"""The report opened in real headless Chromium: every plot drawn, no request beyond the file itself."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from run_fixtures import RunSpec, demo_specs, write_sweep

from greenkd.analysis import load_sweep
from greenkd.report import build_report, write_report

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Per plot div: plotly's svg drawn, the traces plotly laid out, and the marks it painted.
DRAWN_JS = """() => [...document.querySelectorAll('.plotly-graph-div')].map(d => ({
    id: d.id,
    svg: d.querySelectorAll('svg.main-svg').length,
    traces: (d._fullData || []).length,
    marks: d.querySelectorAll('.scatterlayer .trace, .barlayer .point').length,
}))"""


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_every_plot_is_drawn_offline_in_chromium(tmp_path, browser):
    specs = [
        *demo_specs(),
        RunSpec(name="ws-autotune-n4", gpus=4, sched="ws", status="failed", error="oom"),
    ]
    sweep_dir = write_sweep(tmp_path / "results", "demo", specs)
    path = write_report(sweep_dir, tmp_path / "reports")
    figures = build_report(load_sweep(sweep_dir)).figures
    assert len(figures) >= 15
    # The fixtures write plan.json, so the predicted-vs-measured figures are among those to draw.
    titles = [f.layout.title.text for f in figures]
    assert {
        "Predicted vs measured makespan",
        "Measured / predicted makespan vs devices",
        "Predicted vs measured load · bin packing · 4-intra1 · 4 GPUs",
    } <= set(titles)

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(path.resolve().as_uri(), wait_until="load")
    # On a timeout the assertions below say which plot is missing and what the page tried to load.
    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_function(
            "n => [...document.querySelectorAll('.plotly-graph-div')]"
            ".filter(d => d.querySelector('svg.main-svg')).length >= n",
            arg=len(figures),
            timeout=15_000,
        )
    drawn = page.evaluate(DRAWN_JS)

    assert requests == [path.resolve().as_uri()]
    assert errors == []
    assert len(drawn) == len(figures)
    for div, fig in zip(drawn, figures, strict=True):
        assert div["svg"] >= 1, div["id"]
        assert div["traces"] == len(fig.data), (div["id"], fig.layout.title.text)
        assert div["marks"] >= 1, div["id"]

    # The index links to the report, and following the link opens it.
    page.goto((tmp_path / "reports" / "index.html").resolve().as_uri())
    page.click("text=demo")
    page.wait_for_url(path.resolve().as_uri())
