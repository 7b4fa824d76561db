"""A sweep on CPU workers (`cpuset0`, `cpuset1` ...): every figure is drawn with data, and each
worker's utilisation comes from its own cores, which config.json's meta `device_cores` names."""

from __future__ import annotations

import math
from numbers import Real

import pytest
from run_fixtures import RunSpec, write_sweep

from greenkd.analysis import load_sweep, utilisation_lines, worker_cpus
from greenkd.report import build_report

# 4 CPUs (2 packages x 2 cores); the fixture's per-core utilisation during a run is 30 + 5 * (c % 3)
# percent: cpu0 30, cpu1 35, cpu2 40, cpu3 30. With 2 cores a worker, cpuset0 has cpu0 and cpu1
# (mean 32.5 %), cpuset1 cpu2 and cpu3 (mean 35 %).
RUNNING_PCT = {"cpuset0": 32.5, "cpuset1": 35.0}


def _cpu_sweep(tmp_path):
    specs = [
        RunSpec(
            name=f"{sched}-n{n}",
            gpus=n,
            sched=sched,
            device_kind="cpu",
            cores_per_worker=2,
            task_seconds=[6.0, 4.0, 3.0, 5.0],
        )
        for sched in ("rr", "binpack")
        for n in (1, 2)
    ]
    return load_sweep(write_sweep(tmp_path, "cpu", specs))


def _drawn(value) -> bool:
    """A coordinate plotly can place: a finite number or a non-empty category."""
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, Real) and math.isfinite(value)


def _has_a_point(trace) -> bool:
    columns = [
        list(getattr(trace, attr))
        for attr in ("x", "y", "values")
        if getattr(trace, attr, None) is not None
    ]
    return bool(columns) and any(all(_drawn(c[i]) for c in columns) for i in range(len(columns[0])))


def test_each_cpu_worker_is_mapped_to_its_own_cores(tmp_path):
    runs = {r.name: r for r in _cpu_sweep(tmp_path).runs}
    assert worker_cpus(runs["rr-n2"].meta) == {
        "cpuset0": ["cpu0", "cpu1"],
        "cpuset1": ["cpu2", "cpu3"],
    }
    gpu_run = load_sweep(write_sweep(tmp_path, "gpu", [RunSpec(name="g2", gpus=2)])).runs[0]
    assert gpu_run.meta["device_cores"] and worker_cpus(gpu_run.meta) == {}  # GPUs do the work


@pytest.mark.parametrize(
    ("run", "workers"), [("rr-n1", ["cpuset0"]), ("rr-n2", ["cpuset0", "cpuset1"])]
)
def test_utilisation_has_one_line_per_worker_core_set(tmp_path, run, workers):
    sweep = _cpu_sweep(tmp_path)
    lines = utilisation_lines(next(r for r in sweep.runs if r.name == run))
    assert list(lines) == ["CPU (all)", *workers]
    for worker in workers:
        _, values = lines[worker]
        assert max(values) == pytest.approx(RUNNING_PCT[worker])  # the mean of its own cores
        assert min(values) == pytest.approx(2.0)  # idle before the run


def test_every_figure_of_a_cpu_worker_sweep_is_drawn_with_data(tmp_path):
    report = build_report(_cpu_sweep(tmp_path))
    titles = [f.layout.title.text for f in report.figures]
    assert len(report.figures) >= 10, titles
    for fig in report.figures:
        assert fig.data, f"empty axes: {fig.layout.title.text}"
        for trace in fig.data:
            assert _has_a_point(trace), (fig.layout.title.text, trace.name)
    timelines = [f for f in report.figures if " · run " in f.layout.title.text]
    assert [f.layout.title.text.rsplit(" ", 1)[1] for f in timelines] == ["rr-n2", "binpack-n2"]
    for fig in timelines:
        util = [t for t in fig.data if t.yaxis == "y2"]  # the utilisation panel, under power
        assert [t.name for t in util] == ["CPU (all)", "cpuset0", "cpuset1"]
        for trace in util[1:]:
            assert max(trace.y) == pytest.approx(RUNNING_PCT[trace.name])
