"""Predicted schedule (plan.json) against the measured one (tasks.csv), checked by hand on fixture runs.

The fixture's binpack of VGG16_TASK_S onto 2 GPUs (longest task first, to the least loaded device,
ties to the lower index) gives gpu0 tasks 1, 2, 5, 8, 7, 10, 12 (52+27+24+17+13+7+7 = 147 s) and gpu1
tasks 3, 0, 6, 4, 9, 11 (38+34+24+20+17+7 = 140 s), each device's tasks back to back from T0 + 5 s.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from run_fixtures import T0, RunSpec, write_run, write_sweep

from greenkd.analysis import (
    NO_PLAN,
    compare_plan,
    device_load,
    interval_union_s,
    load_run,
    load_sweep,
    plan_tables,
    run_table,
)

TEN_S_EACH = [10.0] * 13  # a cost model that thinks every task takes 10 s


def _run(tmp_path, **kw):
    spec = RunSpec(name=kw.pop("name", "r"), **kw)
    return load_run(write_run(tmp_path, spec))


def _rewrite_tasks(run_dir, change):
    tasks = pd.read_csv(run_dir / "tasks.csv")
    change(tasks)
    tasks.to_csv(run_dir / "tasks.csv", index=False)
    return load_run(run_dir)


def test_predicted_loads_map_to_the_devices_the_plan_names(tmp_path):
    run = _run(tmp_path, gpus=2, sched="binpack", predicted_task_s=TEN_S_EACH, cost_source="store")
    c = compare_plan(run.plan, run.tasks)
    assert (c.policy, c.cost_source, c.fused, c.reason) == ("binpack", "store", False, "")
    # 7 tasks of 10 s on gpu0, 6 on gpu1; measured 147 s and 140 s.
    assert c.predicted_makespan_s == pytest.approx(70.0)
    assert c.measured_makespan_s == pytest.approx(147.0)
    assert c.makespan_ratio == pytest.approx(2.1)
    assert c.lower_bound_s == pytest.approx(130 / 2)
    d = c.devices.set_index("device")
    assert list(d.index) == ["gpu0", "gpu1"]
    assert list(d["planned_tasks"]) == [7, 6] and list(d["measured_tasks"]) == [7, 6]
    assert list(d["predicted_load_s"]) == pytest.approx([70.0, 60.0])
    assert list(d["measured_span_s"]) == pytest.approx([147.0, 140.0])
    assert list(d["measured_busy_s"]) == pytest.approx([147.0, 140.0])
    assert list(d["span_ratio"]) == pytest.approx([2.1, 140 / 60])
    assert c.moved_tasks == 0 and c.notes == ()


def test_measured_makespan_runs_from_the_first_start_to_the_last_end(tmp_path):
    run = _run(tmp_path, gpus=2, sched="binpack")

    def late_gpu1(tasks):  # gpu1's worker started 10 s late and ran 3 s of gaps between tasks
        on = tasks["device"] == "gpu1"
        tasks.loc[on, ["start", "end"]] += 10.0
        last = tasks.loc[on, "end"].idxmax()
        tasks.loc[last, ["start", "end"]] += 3.0

    run = _rewrite_tasks(run.path, late_gpu1)
    c = compare_plan(run.plan, run.tasks)
    # Exact predictions (147 and 140 s): gpu1 ends at 10 + 140 + 3 = 153 s after the first start.
    assert c.predicted_makespan_s == pytest.approx(147.0)
    assert c.measured_makespan_s == pytest.approx(153.0)
    assert c.makespan_ratio == pytest.approx(153 / 147)
    gpu1 = c.devices.set_index("device").loc["gpu1"]
    assert gpu1["measured_span_s"] == pytest.approx(143.0)  # its own first start to its last end
    assert gpu1["measured_busy_s"] == pytest.approx(140.0)  # the gap is not task time
    assert gpu1["busy_ratio"] == pytest.approx(1.0)


def test_fused_pass_is_counted_once_and_the_plan_says_it_was_fused(tmp_path):
    # binpack of [6, 4, 3, 2] on 2 GPUs: gpu0 {6, 2}, gpu1 {4, 3}. Half of each task is teacher prefix,
    # so a fused pass takes max/2 + sum/2: gpu0 3 + 4 = 7 s, gpu1 2 + 3.5 = 5.5 s.
    run = _run(
        tmp_path,
        gpus=2,
        sched="binpack",
        task_seconds=[6.0, 4.0, 3.0, 2.0],
        fused=True,
        prefix_fraction=0.5,
        predicted_task_s=[4.0, 4.0, 4.0, 4.0],
    )
    assert set(run.tasks["seconds"]) == {7.0, 5.5}  # every row carries its whole pass
    c = compare_plan(run.plan, run.tasks)
    assert c.fused is True and any(n.startswith("fused plan") for n in c.notes)
    # Predicted with the same rule on 4 s tasks: 2 + 4 = 6 s on each device.
    assert c.predicted_makespan_s == pytest.approx(6.0)
    assert c.measured_makespan_s == pytest.approx(7.0)
    d = c.devices.set_index("device")
    assert list(d["measured_busy_s"]) == pytest.approx([7.0, 5.5])  # not 14 and 11, the rows' sum
    assert list(d["busy_ratio"]) == pytest.approx([7 / 6, 5.5 / 6])
    load = device_load(run.tasks).set_index("device")
    assert load.loc["gpu0", "busy_s"] == pytest.approx(7.0) and load.loc[
        "gpu1", "idle_s"
    ] == pytest.approx(1.5)
    # Fused rows have no separate task times: no makespan bound is drawn from them.
    assert math.isnan(run_table(load_sweep(tmp_path)).iloc[0]["makespan_lb_s"])


def test_a_run_without_a_plan_gets_nan_and_the_reason(tmp_path):
    run = _run(tmp_path, gpus=2, plan=False)
    c = compare_plan(run.plan, run.tasks)
    assert c.reason == NO_PLAN and "plan.json" in c.reason
    assert math.isnan(c.predicted_makespan_s) and math.isnan(c.measured_makespan_s)
    assert math.isnan(c.makespan_ratio) and c.devices.empty


def test_summary_json_plan_stands_in_for_a_lost_plan_json(tmp_path):
    run = _run(tmp_path, gpus=2, predicted_task_s=TEN_S_EACH)
    (run.path / "plan.json").unlink()
    c = compare_plan(load_run(run.path).plan, run.tasks)
    assert c.predicted_makespan_s == pytest.approx(70.0) and c.makespan_ratio == pytest.approx(2.1)
    (run.path / "plan.json").write_text("{not json")
    again = load_run(run.path)
    assert again.plan is not None and any("plan.json is not valid JSON" in n for n in again.notes)


def test_a_run_cut_short_has_no_measured_makespan(tmp_path):
    run = _run(tmp_path, gpus=2, status="partial", error="killed")
    c = compare_plan(run.plan, run.tasks)
    finished = len(run.tasks)
    assert 0 < finished < 13
    assert c.reason.startswith(f"tasks.csv lacks {13 - finished} of the plan's 13 tasks")
    assert c.predicted_makespan_s == pytest.approx(147.0)
    assert math.isnan(c.measured_makespan_s) and math.isnan(c.makespan_ratio)
    assert c.devices["measured_span_s"].isna().all() and (c.devices["note"] == c.reason).all()
    assert math.isnan(compare_plan(run.plan, None).measured_makespan_s)


def test_devices_the_plan_does_not_name_are_not_guessed(tmp_path):
    run = _run(tmp_path, gpus=2, predicted_task_s=TEN_S_EACH)
    run = _rewrite_tasks(
        run.path,
        lambda t: t.__setitem__("device", t["device"].map({"gpu0": "cpuset0", "gpu1": "cpuset1"})),
    )
    c = compare_plan(run.plan, run.tasks)
    assert c.measured_makespan_s == pytest.approx(147.0)  # the run as a whole still compares
    plan_rows = c.devices[c.devices["device"].isin(["gpu0", "gpu1"])]
    assert plan_rows["measured_span_s"].isna().all()
    assert plan_rows["note"].str.contains("none of tasks.csv's devices").all()
    extra = c.devices.set_index("device").loc[["cpuset0", "cpuset1"]]
    assert extra["predicted_load_s"].isna().all() and list(
        extra["measured_span_s"]
    ) == pytest.approx([147.0, 140.0])
    assert math.isnan(c.moved_tasks)


def test_work_stealing_counts_the_tasks_that_moved(tmp_path):
    run = _run(tmp_path, gpus=2, sched="ws")

    # block1_conv1 (task 0, 34 s, gpu1's first) was planned on gpu1; it ran on gpu0 after gpu0's last task.
    def steal(tasks):
        end0 = tasks.loc[tasks["device"] == "gpu0", "end"].max()
        i = tasks.index[tasks["task"] == "block1_conv1"][0]
        tasks.loc[i, ["device", "start", "end"]] = ["gpu0", end0, end0 + 34.0]

    run = _rewrite_tasks(run.path, steal)
    c = compare_plan(run.plan, run.tasks)
    assert c.moved_tasks == 1
    assert "work stealing: the plan is the initial split; 1 task(s) ran elsewhere" in c.notes
    d = c.devices.set_index("device")
    assert list(d["planned_tasks"]) == [7, 6] and list(d["measured_tasks"]) == [8, 5]
    assert d.loc["gpu0", "measured_span_s"] == pytest.approx(147 + 34)
    # gpu1 lost its first task (34 s): it ran from 34 s to 140 s.
    assert d.loc["gpu1", "measured_span_s"] == pytest.approx(106.0)
    assert d.loc["gpu1", "measured_busy_s"] == pytest.approx(106.0)
    assert c.measured_makespan_s == pytest.approx(181.0)


def test_interval_union_counts_shared_time_once():
    assert interval_union_s([0, 0, 12, 14], [10, 10, 15, 20]) == pytest.approx(18.0)
    assert interval_union_s([5, 0], [6, 10]) == pytest.approx(10.0)  # nested
    assert interval_union_s([], []) == 0.0


def test_plan_tables_cover_every_run_with_reasons(tmp_path):
    specs = [
        RunSpec(name="old-n1", gpus=1, plan=False),
        RunSpec(name="new-n2", gpus=2, predicted_task_s=TEN_S_EACH, cost_source="analytic"),
        RunSpec(name="cut-n2", gpus=2, sched="rr", status="killed"),
    ]
    runs, devices = plan_tables(load_sweep(write_sweep(tmp_path, "s", specs)))
    runs = runs.set_index("run")
    assert runs.loc["old-n1", "plan_reason"] == NO_PLAN and math.isnan(
        runs.loc["old-n1", "makespan_ratio"]
    )
    assert (
        runs.loc["new-n2", "makespan_ratio"] == pytest.approx(2.1) and runs.loc["new-n2", "usable"]
    )
    assert "analytic model" in runs.loc["new-n2", "plan_note"]
    assert not runs.loc["cut-n2", "usable"] and runs.loc["cut-n2", "plan_reason"].startswith(
        "tasks.csv lacks"
    )
    assert set(devices["run"]) == {"new-n2", "cut-n2"}
    new = devices[devices["run"] == "new-n2"]
    assert list(new["device"]) == ["gpu0", "gpu1"] and list(new["devices"]) == [2, 2]
    assert list(new["predicted_load_s"]) == pytest.approx([70.0, 60.0])


def test_plan_json_written_by_the_fixture_is_the_plans_own_format(tmp_path):
    run = _run(tmp_path, gpus=3, sched="rr", task_seconds=[3.0, 2.0, 1.0, 4.0])
    plan = json.loads((run.path / "plan.json").read_text())
    assert plan["assignment"] == [
        ["block1_conv1", "block2_conv1"],
        ["block1_conv2"],
        ["block1_conv3"],
    ]
    assert plan["predicted_load_s"] == [7.0, 2.0, 1.0] and plan["devices"] == [
        "gpu0",
        "gpu1",
        "gpu2",
    ]
    assert plan == json.loads((run.path / "summary.json").read_text())["plan"]
    assert run.tasks["start"].min() == T0 + 5.0
