"""The report's predicted-vs-measured section: figures and table from plan.json against tasks.csv."""

from __future__ import annotations

import html
import re

import pytest
from run_fixtures import RunSpec, write_sweep

from greenkd.analysis import NO_PLAN, load_sweep
from greenkd.report import SCHED_COLOURS, build_report

TEN_S_EACH = [10.0] * 13  # a cost model that thinks every task takes 10 s


def _report(tmp_path, specs):
    return build_report(load_sweep(write_sweep(tmp_path, "s", specs)))


def _figure(report, title):
    return next(f for f in report.figures if f.layout.title.text == title)


def _section_text(page: str, sid: str) -> str:
    section = page.split(f"<section id='{sid}'>", 1)[1].split("</section>", 1)[0]
    section = re.sub(r"<script.*?</script>", " ", section, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", section))


def test_predicted_and_measured_makespans_are_plotted_against_the_ideal(tmp_path):
    specs = [
        RunSpec(name=f"{sched}-n{n}", gpus=n, sched=sched, predicted_task_s=TEN_S_EACH)
        for sched in ("rr", "binpack")
        for n in (1, 2)
    ]
    report = _report(tmp_path, specs)
    scatter = _figure(report, "Predicted vs measured makespan")
    ideal = scatter.data[0]
    assert list(ideal.x) == list(ideal.y)  # y = x
    points = {t.name: t for t in scatter.data[1:]}
    assert set(points) == {"round robin · autotune", "bin packing · autotune"}
    # 13 tasks of 10 s predicted; 287 s measured on one GPU. Two GPUs: binpack 70 vs 147 s (see
    # test_analysis_plan); round robin: gpu0 tasks 0, 2, ..., 12 (136 s), gpu1 the other six (151 s).
    binpack = points["bin packing · autotune"]
    assert list(binpack.x) == pytest.approx([130.0, 70.0]) and list(binpack.y) == pytest.approx(
        [287.0, 147.0]
    )
    assert list(points["round robin · autotune"].y) == pytest.approx([287.0, 151.0])
    # Colours are the scheduler's, as in the speedup figure.
    speedup = {t.name: t.line.color for t in report.figures[0].data}
    assert binpack.marker.color == speedup["bin packing · autotune"] == SCHED_COLOURS["binpack"]
    ratio = _figure(report, "Measured / predicted makespan vs devices")
    line = next(t for t in ratio.data if t.name == "bin packing · autotune")
    assert list(line.y) == pytest.approx([287 / 130, 2.1])


def test_per_device_bars_for_the_largest_device_count(tmp_path):
    specs = [RunSpec(name=f"n{n}", gpus=n, predicted_task_s=TEN_S_EACH) for n in (1, 2)]
    report = _report(tmp_path, specs)
    bars = _figure(report, "Predicted vs measured load · bin packing · autotune · 2 GPUs")
    predicted, measured = bars.data
    assert (predicted.name, measured.name) == ("predicted load", "measured span")
    assert list(predicted.x) == list(measured.x) == ["gpu0", "gpu1"]
    assert list(predicted.y) == pytest.approx([70.0, 60.0])
    assert list(measured.y) == pytest.approx([147.0, 140.0])
    assert list(measured.text) == ["2.10×", "2.33×"]
    assert not [
        f
        for f in report.figures
        if f.layout.title.text.endswith("· 1 GPU")
        and f.layout.title.text.startswith("Predicted vs measured load")
    ]
    text = _section_text(report.html, "prediction")
    assert re.search(r"n2\s+store\s+independent\s+70\.0\s+147\.0\s+2\.10×", text)


def test_runs_without_a_plan_say_why_and_draw_nothing(tmp_path):
    specs = [RunSpec(name=f"old-n{n}", gpus=n, plan=False) for n in (1, 2)]
    report = _report(tmp_path, specs)
    titles = [f.layout.title.text for f in report.figures]
    assert not [t for t in titles if "predicted" in t.lower()]
    assert f"No prediction to compare: {NO_PLAN}." in _section_text(report.html, "prediction")


def test_an_older_run_beside_newer_ones_keeps_its_reason_in_the_table(tmp_path):
    specs = [RunSpec(name="old-n1", gpus=1, plan=False), RunSpec(name="new-n2", gpus=2)]
    report = _report(tmp_path, specs)
    scatter = _figure(report, "Predicted vs measured makespan")
    assert [len(t.x) for t in scatter.data[1:]] == [1]  # only the run with a plan
    text = _section_text(report.html, "prediction")
    assert re.search(rf"old-n1\s+(—\s+)+{re.escape(NO_PLAN)}", text)


def test_analytic_costs_far_from_the_measured_seconds_get_log_axes(tmp_path):
    specs = [
        RunSpec(name=f"n{n}", gpus=n, cost_source="analytic", predicted_task_s=[0.01] * 13)
        for n in (1, 2)
    ]
    report = _report(tmp_path, specs)
    scatter = _figure(report, "Predicted vs measured makespan")
    assert scatter.layout.xaxis.type == scatter.layout.yaxis.type == "log"
    lo, hi = scatter.layout.xaxis.range
    assert 10**lo < 0.07 and 10**hi > 287  # both the 0.13 / 0.07 s predictions and 287 s in view
    assert "analytic model" in _section_text(report.html, "prediction")


def test_a_fused_run_has_no_task_makespan_bound_in_its_allocation_chart(tmp_path):
    specs = [
        RunSpec(
            name=f"n{n}", gpus=n, fused=True, block_costs=True, task_seconds=[6.0, 4.0, 3.0, 2.0]
        )
        for n in (1, 2)
    ]
    report = _report(tmp_path, specs)
    gantt = _figure(report, "Task allocation · bin packing · autotune · 2 GPUs")
    assert not gantt.layout.shapes  # no bound line: fused tasks have no separate times
    text = _section_text(report.html, "allocation")
    assert "n2: fused passes" in text and "busy time per device: gpu0: 7 s, gpu1: 6 s" in text
    assert "fused" in _section_text(report.html, "prediction")


def test_runs_planned_on_different_cost_sources_are_not_one_median(tmp_path):
    # A sweep's first run finds no stored times (analytic costs); its repeat and later runs use the store.
    specs = [
        RunSpec(name="n1-r0", gpus=1, cost_source="analytic", predicted_task_s=[0.01] * 13),
        RunSpec(name="n1-r1", gpus=1, repeat=1),
        RunSpec(name="n2-r0", gpus=2),
    ]
    ratio = _figure(_report(tmp_path, specs), "Measured / predicted makespan vs devices")
    lines = {t.name: list(t.y) for t in ratio.data}
    assert lines.keys() == {
        "bin packing · autotune · analytic costs",
        "bin packing · autotune · store costs",
    }
    assert lines["bin packing · autotune · analytic costs"] == pytest.approx([287 / 0.13])
    assert lines["bin packing · autotune · store costs"] == pytest.approx(
        [1.0, 1.0]
    )  # exact predictions
    assert ratio.layout.yaxis.type == "log"
