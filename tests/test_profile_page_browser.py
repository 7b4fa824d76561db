"""The profile page in real headless Chromium: every plot drawn with its traces, nothing fetched."""

from __future__ import annotations

import contextlib
import shutil

from chromium import needs_chromium
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from profile_page_fixtures import make_profile

from greenkd.analysis.profile import load_profile
from greenkd.report.profile import build_profile_page, write_reports_and_pages

pytestmark = needs_chromium
pytest_plugins = ("chromium",)  # the browser fixture

# Per plot div: plotly's svg drawn, the traces plotly laid out, the lines it painted, and the shapes
# (idle baseline, marks) it drew.
DRAWN_JS = """() => [...document.querySelectorAll('.plotly-graph-div')].map(d => ({
    id: d.id,
    svg: d.querySelectorAll('svg.main-svg').length,
    traces: (d._fullData || []).length,
    lines: [...d.querySelectorAll('.scatterlayer .trace path.js-line')]
        .filter(p => (p.getAttribute('d') || '').length > 2).length,
    shapes: d.querySelectorAll('.shapelayer path').length,
}))"""


def test_profile_page_draws_every_plot_offline_in_chromium(tmp_path, browser):
    profiles = tmp_path / "profiles"
    make_profile(profiles / "train", tmp_path / "sensors")
    shutil.copytree(profiles / "train", profiles / "eval")
    out = tmp_path / "reports"
    path = write_reports_and_pages(profiles, out)[1]
    assert path == out / "train" / "report.html"
    figures = build_profile_page(load_profile(profiles / "train")).figures
    assert len(figures) >= 3

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    blocked: list[str] = []
    errors: list[str] = []

    def only_local(route):
        url = route.request.url
        if url.startswith(("file://", "data:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", only_local)
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(path.resolve().as_uri(), wait_until="load")
    with contextlib.suppress(PlaywrightTimeoutError):  # the assertions below say what is missing
        page.wait_for_function(
            "n => [...document.querySelectorAll('.plotly-graph-div')]"
            ".filter(d => d.querySelector('svg.main-svg')).length >= n",
            arg=len(figures),
            timeout=15_000,
        )
    drawn = page.evaluate(DRAWN_JS)

    assert blocked == []
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
    assert errors == []
    assert len(drawn) == len(figures)
    for div, fig in zip(drawn, figures, strict=True):
        assert div["svg"] >= 1, div["id"]
        assert div["traces"] == len(fig.data), (div["id"], fig.layout.title.text)
        assert div["lines"] >= len(fig.data), (div["id"], fig.layout.title.text)
        assert div["shapes"] >= 4, div["id"]  # idle baseline, two intervals, one point

    # The index lists both profiles, and its link opens the page.
    page.goto((out / "index.html").resolve().as_uri())
    page.click("text=train")
    page.wait_for_url(path.resolve().as_uri())
