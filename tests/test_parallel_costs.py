"""Which task costs a run plans with: a timings file, the timing store, calibration, the model."""

from __future__ import annotations

import dataclasses
import json

import pytest

from greenkd.devices import plan_devices
from greenkd.distill import planning
from greenkd.errors import GreenkdError
from greenkd.schedule import sources

pytest.register_assert_rewrite("parallel_fixtures")  # also a plugin (pytest_plugins below)
from parallel_fixtures import parallel_env, tiny_config  # noqa: E402

pytest_plugins = ("parallel_fixtures",)  # small_teacher, parallel_root

NAMES = ["conv1", "conv2", "conv3", "conv4", "conv5"]


@pytest.fixture(scope="module")
def setup(small_teacher, parallel_root, tmp_path_factory):
    """The tiny run's data, teacher and targets, loaded in this process."""
    from greenkd.distill.setup import prepare

    with pytest.MonkeyPatch.context() as mp:
        for key, value in parallel_env(parallel_root).items():
            mp.setenv(key, value)
        return prepare(tiny_config(small_teacher, tmp_path_factory.mktemp("costs") / "run"))


@pytest.fixture
def store_path(tmp_path, monkeypatch):
    path = tmp_path / "timings.json"
    monkeypatch.setenv("GREENKD_TIMINGS", str(path))
    return path


def _with(setup, **changes):
    return dataclasses.replace(setup, cfg=setup.cfg.replace(**changes))


def _result(name: str, seconds: float, fused_group: str = ""):
    from greenkd.executors.base import TaskResult

    return TaskResult(
        name=name, index=NAMES.index(name), weights=[], accuracy=0.9, best_epoch=1, epochs=1,
        mse_start=1.0, mse_history=[0.5], accuracy_history={1: 0.9}, seconds_setup=0.0,
        seconds_train=seconds, seconds_eval=0.0, start=1000.0, end=1000.0 + seconds,
        device="cpuset0", fused_group=fused_group,
    )  # fmt: skip


def test_a_timings_file_drives_the_bin_packing(setup, store_path, tmp_path):
    timings = tmp_path / "t.csv"
    timings.write_text("task,seconds\nconv1,100\nconv2,1\nconv3,1\nconv4,1\nconv5,1\nextra,9\n")
    devices = plan_devices(2, cores_per_device=1)
    plan = planning.plan_for(_with(setup, timings=str(timings), sched="binpack"), devices)
    assert plan.cost_source == "timings-file"
    assert ("conv1",) in plan.assignment  # the long task alone on its device
    assert sorted(plan.predicted_load_s) == [4.0, 100.0]


def test_a_timings_file_must_time_every_task(setup, store_path, tmp_path):
    timings = tmp_path / "t.csv"
    timings.write_text("task,seconds\nconv1,3\nconv5,2\n")
    with pytest.raises(GreenkdError, match="has no time for conv2, conv3, conv4"):
        planning.task_costs(_with(setup, timings=str(timings)), plan_devices(1))


def test_a_directory_as_timings_file_fails_before_anything_loads(tmp_path):
    from greenkd.config import RunConfig

    with pytest.raises(GreenkdError, match="cannot be read"):
        sources.check_timings_file(RunConfig(timings=str(tmp_path)).timings)


def test_finished_runs_store_their_times_and_the_next_plan_uses_them(setup, store_path):
    devices = plan_devices(2, cores_per_device=1)
    model, source = planning.task_costs(setup, devices)
    assert source == "analytic" and [c.name for c in model] == NAMES
    results = [_result(n, s) for n, s in zip(NAMES, (5.0, 9.0, 2.0, 4.0, 3.0), strict=True)]
    results.append(_result("conv1", 77.0, fused_group="conv1,conv3"))  # a fused share: not a time
    assert planning.record(setup, devices, results) == 5
    stored, source = planning.task_costs(setup, devices)
    assert source == "store"
    assert [c.seconds for c in stored] == [5.0, 9.0, 2.0, 4.0, 3.0]
    # the teacher-prefix share of a measured time is the analytic model's fraction
    for c, m in zip(stored, model, strict=True):
        assert c.prefix_seconds == pytest.approx(c.seconds * m.prefix_seconds / m.seconds)
    plan = planning.plan_for(_with(setup, sched="binpack"), devices)
    assert plan.cost_source == "store" and sorted(plan.predicted_load_s) == [11.0, 12.0]
    # the store file is keyed by hardware: a 2-core device is another configuration
    entries = json.loads(store_path.read_text())["entries"]
    assert list(entries) == [planning.store_key(setup, devices)]
    assert planning.task_costs(setup, plan_devices(1))[1] == "analytic"


def test_calibration_times_every_task_and_scales_with_the_epochs(setup, store_path):
    devices = plan_devices(1)
    short, source = planning.task_costs(_with(setup, calibrate=True, epochs=2), devices)
    assert source == "calibration" and [c.name for c in short] == NAMES
    assert all(0 < c.prefix_seconds <= c.seconds for c in short)
    long, _ = planning.task_costs(_with(setup, calibrate=True, epochs=40), devices)
    # 38 more epochs of 16 timed steps each: every task's estimate grows
    assert all(b.seconds > a.seconds for a, b in zip(short, long, strict=True))
