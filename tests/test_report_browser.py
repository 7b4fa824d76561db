"""The report opened in real headless Chromium: every plot drawn, no request beyond the file itself."""

from __future__ import annotations

import contextlib
import json

import pytest
from chromium import needs_chromium
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from run_fixtures import VGG16_TASK_S, RunSpec, demo_specs, write_sweep

from greenkd.analysis import framework_table, load_sweep
from greenkd.report import build_report, write_report

pytestmark = needs_chromium
pytest_plugins = ("chromium",)  # the browser fixture

# Per plot div: plotly's svg drawn, the traces plotly laid out, and the marks it painted.
DRAWN_JS = """() => [...document.querySelectorAll('.plotly-graph-div')].map(d => ({
    id: d.id,
    svg: d.querySelectorAll('svg.main-svg').length,
    traces: (d._fullData || []).length,
    marks: d.querySelectorAll('.scatterlayer .trace, .barlayer .point').length,
}))"""


# Per line of a figure as Chromium holds it: its point count and its last x.
POINTS_JS = (
    """id => document.getElementById(id)._fullData.map(t => [t.x.length, t.x[t.x.length - 1]])"""
)


def test_every_plot_is_drawn_offline_in_chromium(tmp_path, browser):
    specs = [
        *demo_specs(),
        RunSpec(name="ws-autotune-n4", gpus=4, sched="ws", status="failed", error="oom"),
        # a run across two hosts whose second host went silent: a power/utilisation figure per host
        RunSpec(name="rr-autotune-n4-h2", gpus=4, sched="rr", hosts=2, silent_host="node2"),
    ]
    sweep_dir = write_sweep(tmp_path / "results", "demo", specs)
    path = write_report(sweep_dir, tmp_path / "reports")
    figures = build_report(load_sweep(sweep_dir)).figures
    assert len(figures) >= 15
    # The fixtures write plan.json, so the predicted-vs-measured figures are among those to draw.
    titles = [f.layout.title.text for f in figures]
    summary = json.loads((sweep_dir / "rr-autotune-n4-h2" / "summary.json").read_text())
    [silent] = summary["hosts"]["silent_hosts"]
    stop_s = silent["stopped_ts"] - summary["start_ts"]  # node2's last sample, since the start
    per_host = ["host node1 · run rr-autotune-n4-h2", "host node2 · run rr-autotune-n4-h2"]
    assert titles.count(per_host[0]) == 1
    assert [t for t in titles if t.startswith(per_host[1])] == [
        f"{per_host[1]} · silent from {stop_s:.0f} s"
    ]
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
    # each host's figure is drawn with its own samples: every line has points, and the silent
    # host's stop is the last x its lines reach (nothing drawn after it went silent)
    for k, title in enumerate(titles):
        if title.startswith("host node"):
            reach = page.evaluate(POINTS_JS, f"fig-{k + 1}")
            assert reach and all(n >= 10 for n, _ in reach), (title, reach)
            if "silent" in title:
                assert max(last for _, last in reach) == pytest.approx(stop_s), reach
    assert f"Energy partial: node2 silent from {stop_s:.1f} s" in page.inner_text("#hosts")

    # The index links to the report, and following the link opens it.
    page.goto((tmp_path / "reports" / "index.html").resolve().as_uri())
    page.click("text=demo")
    page.wait_for_url(path.resolve().as_uri())


# Task seconds on JAX against TensorFlow's in the fixture sweep of two frameworks
JAX_SPEED = 0.8


def framework_specs() -> list[RunSpec]:
    """`greenkd sweep --framework tensorflow,jax --gpus 1,2 --sched rr` as run directories: each
    framework's own 1-device run, JAX's tasks faster and its student a little less accurate."""
    return [
        RunSpec(
            name=f"{fw}-g{n}-rr-tauto-r0",
            gpus=n,
            sched="rr",
            framework=fw,
            task_seconds=[t * (JAX_SPEED if fw == "jax" else 1.0) for t in VGG16_TASK_S],
            student_accuracy=0.8601 if fw == "jax" else 0.8659,
        )
        for fw in ("tensorflow", "jax")
        for n in (1, 2)
    ]


def test_a_sweep_of_two_frameworks_compares_them_side_by_side_in_chromium(tmp_path, browser):
    sweep_dir = write_sweep(tmp_path / "results", "frameworks", framework_specs())
    path = write_report(sweep_dir, tmp_path / "reports")
    report = build_report(load_sweep(sweep_dir))
    wall = dict(zip(report.runs["run"], report.runs["wall_s"], strict=True))
    table = framework_table(report.runs, report.scaling).set_index(["framework", "devices"])
    # each framework's speedup is against its own 1-device run, never the other framework's
    for fw in ("tensorflow", "jax"):
        t1, t2 = wall[f"{fw}-g1-rr-tauto-r0"], wall[f"{fw}-g2-rr-tauto-r0"]
        assert table.loc[(fw, 2), "speedup"] == pytest.approx(t1 / t2)
        assert table.loc[(fw, 2), "time_s"] == pytest.approx(t2)
    for n in (1, 2):
        tf, jx = wall[f"tensorflow-g{n}-rr-tauto-r0"], wall[f"jax-g{n}-rr-tauto-r0"]
        assert table.loc[("jax", n), "time_ratio"] == pytest.approx(jx / tf)
        assert table.loc[("jax", n), "time_ratio"] < 1  # JAX's tasks are faster here
        assert table.loc[("jax", n), "energy_ratio"] < 1
    [fig] = [f for f in report.figures if f.layout.title.text == "Frameworks side by side"]
    # time, energy and top-1 panels, one bar trace per framework in each
    assert sorted((t.name, t.xaxis) for t in fig.data) == sorted(
        (fw, axis) for fw in ("tensorflow", "jax") for axis in ("x", "x2", "x3")
    )

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.resolve().as_uri(), wait_until="load")
    k = report.figures.index(fig) + 1
    page.wait_for_function(
        "id => document.getElementById(id)?.querySelector('svg.main-svg')",
        arg=f"fig-{k}",
        timeout=15_000,
    )
    assert errors == []
    assert page.is_visible("nav >> text=Frameworks")
    # Chromium holds every bar with its data: per trace the two device counts, y as the tables say
    held = page.evaluate(
        "id => document.getElementById(id)._fullData.map(t => [t.name, t.xaxis, t.y.length,"
        " t.y[t.y.length - 1]])",
        f"fig-{k}",
    )
    assert len(held) == 6
    for name, axis, count, last in held:
        assert count == 2
        if axis == "x":  # the time panel: the 2-device run's seconds
            assert last == pytest.approx(table.loc[(name, 2), "time_s"])
        if axis == "x3":  # top-1 in percent
            assert last == pytest.approx(100 * table.loc[(name, 2), "student_accuracy"])
    bars = page.evaluate(
        "id => document.getElementById(id).querySelectorAll('.barlayer .point').length",
        f"fig-{k}",
    )
    assert bars == 12  # 2 frameworks x 3 panels x 2 device counts, every one painted
    text = page.inner_text("#frameworks")
    assert "time ÷ tensorflow" in text and "86.01%" in text and "86.59%" in text
    assert f"{table.loc[('jax', 2), 'time_ratio']:.2f}×" in text


def test_a_sweep_of_one_framework_has_no_frameworks_section(tmp_path):
    sweep_dir = write_sweep(
        tmp_path / "results", "one", [s for s in framework_specs() if s.framework == "jax"]
    )
    report = build_report(load_sweep(sweep_dir))
    assert "<section id='frameworks'" not in report.html
    assert "Frameworks side by side" not in [f.layout.title.text for f in report.figures]
