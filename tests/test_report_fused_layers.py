"""Fig. 5c/d of fused runs from measured per-block costs, with the shared trunk as its own bar."""

from __future__ import annotations

import itertools

import pytest
from chromium import needs_chromium
from run_fixtures import RunSpec, write_sweep

from greenkd.analysis import fused_pass_segments, layer_runtimes, load_sweep
from greenkd.analysis.tasks import TRUNK_INDEX
from greenkd.report import build_report, write_report

# Layer 0's block costs 3x layer 1's and 1.5x layer 2's; a pass's trunk is half its deepest task.
TASKS_S = [30.0, 10.0, 20.0, 10.0]

pytest_plugins = ("chromium",)  # the browser fixture


def _fused_sweep(tmp_path, *, block_costs: bool = True):
    specs = [
        RunSpec(
            name=f"g{n}",
            gpus=n,
            sched="rr",
            fused=True,
            block_costs=block_costs,
            task_seconds=TASKS_S,
        )
        for n in (1, 2)
    ]
    return write_sweep(tmp_path / "results", "fused", specs)


def test_fused_layers_take_their_measured_block_costs_and_the_trunk_its_own_row(tmp_path):
    layers = layer_runtimes(load_sweep(_fused_sweep(tmp_path)))
    one = layers[layers["devices"] == 1].set_index("index")["seconds"]
    assert one[0] == pytest.approx(3 * one[1]) and one[2] == pytest.approx(2 * one[1])
    assert one[-1] == pytest.approx(max(TASKS_S) * 0.5)  # the trunk, once per pass
    two = layers[layers["devices"] == 2]
    assert (two["index"] == -1).sum() == 2  # one trunk per device's pass


def test_fused_runs_without_block_costs_say_why_instead_of_drawing(tmp_path):
    report = build_report(load_sweep(_fused_sweep(tmp_path, block_costs=False)))
    titles = [str(f.layout.title.text) for f in report.figures]
    assert not [t for t in titles if t.startswith(("Layer runtimes", "Task allocation"))]
    assert "fused passes without per-block costs in tasks.csv" in report.html
    assert "no share of a pass is known for any block, not drawn" in report.html


def test_a_fused_pass_is_split_into_its_trunk_and_blocks_by_their_measured_shares(tmp_path):
    two = next(r for r in load_sweep(_fused_sweep(tmp_path)).runs if r.devices == 2)
    segments = fused_pass_segments(two.tasks)
    for _, seg in segments.groupby("device"):
        pass_start, pass_end = seg["start"].iloc[0], seg["end"].iloc[0]
        assert seg["trunk"].iloc[0] and seg["index"].iloc[0] == TRUNK_INDEX  # the trunk first
        assert seg["seg_start"].iloc[0] == pytest.approx(pass_start)
        ends = (seg["seg_start"] + seg["seg_seconds"]).to_numpy()
        assert seg["seg_start"].iloc[1:].to_numpy() == pytest.approx(ends[:-1])  # back to back
        assert ends[-1] == pytest.approx(pass_end)  # the pass's interval, whole
        assert seg["share"].sum() == pytest.approx(1)
        assert (seg["seg_seconds"] / seg["measured_s"]).to_numpy() == pytest.approx(
            (pass_end - pass_start) / seg["measured_s"].sum()
        )
    # an independent run keeps one bar per task, its own interval
    alone = fused_pass_segments(two.tasks.assign(fused_group=""))
    assert len(alone) == 4 and not alone["trunk"].any()
    assert alone["seg_seconds"].tolist() == two.tasks["seconds"].tolist()


ALLOCATION_FIGURE_JS = """() => [...document.querySelectorAll('.plotly-graph-div')]
    .filter(d => (d.layout.title.text || '').startsWith('Task allocation'))
    .map(d => ({
        bars: d._fullData.map(t => ({y: [...t.y], x: [...t.x], base: [...t.base], text: [...t.text]})),
        drawn: d.querySelectorAll('.barlayer .point path').length,
        labels: [...d.querySelectorAll('.barlayer .point text, .barlayer text')].map(t => t.textContent),
    }))"""

LAYER_FIGURE_JS = """() => [...document.querySelectorAll('.plotly-graph-div')]
    .filter(d => (d.layout.title.text || '').startsWith('Layer runtimes'))
    .map(d => ({
        traces: d._fullData.map(t => ({type: t.type, name: t.name, x: [...t.x], y: [...t.y]})),
        ticks: [...d.querySelectorAll('.xtick text')].map(t => t.textContent),
        marks: d.querySelectorAll('.scatterlayer .trace, .barlayer .point').length,
    }))"""


@needs_chromium
def test_chromium_draws_layer_to_layer_differences_of_a_fused_sweep(tmp_path, browser):
    path = write_report(_fused_sweep(tmp_path), tmp_path / "reports")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.plotly-graph-div')].some(d => "
        "(d.layout.title.text || '').startsWith('Layer runtimes') && d.querySelector('.xtick'))"
    )
    (figure,) = page.evaluate(LAYER_FIGURE_JS)
    (allocation,) = page.evaluate(ALLOCATION_FIGURE_JS)
    assert requests == [path.resolve().as_uri()]
    assert figure["marks"] >= 4
    assert figure["ticks"][0] == "trunk"
    bars = [t for t in figure["traces"] if t["type"] == "bar"]
    lines = {
        t["name"]: dict(zip(t["x"], t["y"], strict=True))
        for t in figure["traces"]
        if t["type"] == "scatter"
    }
    assert {b["name"] for b in bars} == {"shared trunk, 1 GPU", "shared trunk, 2 GPUs"}
    assert bars[0]["x"] == [-1]
    for seconds in lines.values():  # measured per block: no flat line
        assert seconds[0] == pytest.approx(3 * seconds[1])
        assert seconds[2] == pytest.approx(2 * seconds[3])
    # Task allocation (the 2-GPU run): each device's pass is its trunk and its blocks, back to back,
    # each as wide as its measured cost (this fixture's costs fill each pass exactly)
    (bars,) = allocation["bars"]
    assert allocation["drawn"] == len(bars["x"]) == 6  # 2 trunks + 4 blocks, each a drawn bar
    by_device: dict[str, list[tuple[float, float, str]]] = {}
    for y, x, base, text in zip(bars["y"], bars["x"], bars["base"], bars["text"], strict=True):
        by_device.setdefault(y, []).append((base, x, text))
    assert sorted(by_device) == ["gpu0", "gpu1"]
    for segments in by_device.values():
        segments.sort()
        for (base, width, _), (next_base, _, _) in itertools.pairwise(segments):
            assert next_base == pytest.approx(base + width)
    gpu0 = [w for _, w, _ in sorted(by_device["gpu0"])]
    gpu1 = [w for _, w, _ in sorted(by_device["gpu1"])]
    # gpu0: trunk 15, layer 0 15, layer 2 10; gpu1: trunk 5, layers 1 and 3 5 each
    assert gpu0 == pytest.approx([15, 15, 10]) and gpu1 == pytest.approx([5, 5, 5])
    assert gpu0[1] == pytest.approx(3 * gpu1[1])  # layer 0's block: 3x layer 1's, as measured
    # labelled with the measured seconds of each block and trunk
    assert sorted(t for segs in by_device.values() for *_, t in segs) == sorted(
        ["15", "15", "10", "5", "5", "5"]
    )
    assert sorted(allocation["labels"]) == sorted(["15", "15", "10", "5", "5", "5"])
