"""Analysis against figures computed by hand, and against the paper's Tables 3 and 9 taken as runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from run_fixtures import T0, VGG16_TASK_S, Power, RunSpec, paper_table3_specs, write_sweep

from greenkd.analysis import (
    cumulative_at,
    device_load,
    load_run,
    load_sweep,
    makespan_lower_bound,
    run_table,
    scaling_table,
    task_energy,
    window_energy,
)
from greenkd.errors import GreenkdError


def _scaling(sweep_dir):
    return scaling_table(run_table(load_sweep(sweep_dir)))


def _row(table, **where):
    rows = table
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, f"expected one row for {where}, got {len(rows)}"
    return rows.iloc[0]


def _samples(rows):
    return pd.DataFrame(rows, columns=["ts", "sensor", "device", "metric", "value", "unit"])


# ----------------------------------------------------------------------------- the paper's tables


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # Table 3 (single AMD server, bin packing): n -> (speedup, efficiency) as printed in the paper.
        ("vgg16", {1: (1.00, 1.00), 2: (1.77, 0.89), 3: (2.45, 0.82), 4: (3.08, 0.77)}),
        # The paper prints ResNet's efficiencies for 2 and 4 GPUs swapped (0.88 and 0.96); its own times give
        # 9693.24 / 5060.97 / 2 = 0.96 and 9693.24 / 2749.81 / 4 = 0.88, which is what is asserted here.
        ("resnet50", {1: (1.00, 1.00), 2: (1.92, 0.96), 3: (2.50, 0.83), 4: (3.53, 0.88)}),
    ],
)
def test_paper_table3_times_give_its_speedup_and_efficiency(tmp_path, model, expected):
    table = _scaling(write_sweep(tmp_path, model, paper_table3_specs(model)))
    assert sorted(table["devices"]) == [1, 2, 3, 4]
    for n, (speedup, efficiency) in expected.items():
        row = _row(table, devices=n)
        assert round(row["speedup"], 2) == speedup, n
        assert round(row["efficiency"], 2) == efficiency, n
    assert _row(table, devices=4)["time_s"] == pytest.approx(
        {"vgg16": 1274.77, "resnet50": 2749.81}[model]
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("vgg16", {2: 1.12, 3: 1.14, 4: 1.19}),
        # The paper prints 1.18 for ResNet on 2 GPUs; its own energies give 1263.43 / 1106.68 = 1.14.
        ("resnet50", {2: 1.14, 3: 1.18, 4: 1.29}),
    ],
)
def test_paper_table9_energies_give_its_greenup(tmp_path, model, expected):
    table = _scaling(write_sweep(tmp_path, model, paper_table3_specs(model)))
    base = _row(table, devices=1)
    assert base["greenup"] == pytest.approx(1.0)
    assert base["energy_j"] == pytest.approx(
        {"vgg16": 1061.98e3, "resnet50": 1263.43e3}[model], rel=1e-6
    )
    for n, greenup in expected.items():
        assert round(_row(table, devices=n)["greenup"], 2) == greenup, n


def test_powerup_is_average_power_ratio_of_the_paper_runs(tmp_path):
    table = _scaling(write_sweep(tmp_path, "vgg", paper_table3_specs("vgg16")))
    row = _row(table, devices=4)
    # P4 = 893.44 kJ / 1274.77 s = 700.86 W; P1 = 1061.98 kJ / 3920.53 s = 270.88 W.
    assert row["power_w"] == pytest.approx(700.86, abs=0.01)
    assert row["powerup"] == pytest.approx(2.587, abs=0.001)


# ----------------------------------------------------------------------------- energy by domain


def test_window_energy_interpolates_the_cumulative_rows_at_the_interval_ends():
    samples = _samples(
        [(T0 + i, "msr", "package0", "energy", v, "J") for i, v in enumerate([0, 10, 30, 60, 100])]
    )
    energy = window_energy(samples, T0 + 0.5, T0 + 2.5)
    # 5 J at 0.5 s, 45 J at 2.5 s
    assert energy.set_index("device").loc["package0", "energy_j"] == pytest.approx(40.0)


def test_energy_just_past_the_samples_is_clamped_and_far_past_them_missing():
    ts, values = np.array([0.0, 1.0, 2.0]), np.array([0.0, 10.0, 20.0])
    inside, near, far = cumulative_at(ts, values, np.array([1.25, 2.5, 5.0]))
    assert inside == pytest.approx(12.5)
    assert near == pytest.approx(20.0)  # no joules invented after the last sample
    assert math.isnan(far)


def test_node_energy_sums_packages_never_cores_and_counts_idle_gpus(tmp_path):
    power = Power(package_w=60.0, cores_fraction=0.5, gpu_busy_w=200.0, gpu_idle_w=20.0)
    spec = RunSpec(
        name="n2",
        gpus=2,
        sched="rr",
        task_seconds=[10.0, 6.0, 4.0],
        power=power,
        setup_s=5.0,
        assemble_s=2.0,
        finetune_s=3.0,
    )
    sweep = write_sweep(tmp_path, "s", [spec])
    row = run_table(load_sweep(sweep)).iloc[0]
    # rr on 2 GPUs: gpu0 runs 10 s + 4 s, gpu1 runs 6 s; the run lasts 5 + 14 + 2 + 3 = 24 s.
    assert row["wall_s"] == pytest.approx(24.0)
    assert row["cpu_package_j"] == pytest.approx(2 * 60.0 * 24)
    assert row["cpu_cores_j"] == pytest.approx(0.5 * 2 * 60.0 * 24)
    gpu0 = 200.0 * 14 + 20.0 * 10
    gpu1 = 200.0 * 6 + 20.0 * 18
    idle = 20.0 * 24  # gpu2 and gpu3 are on the node but unused
    assert row["gpu_used_j"] == pytest.approx(gpu0 + gpu1)
    assert row["gpu_node_j"] == pytest.approx(gpu0 + gpu1 + 2 * idle)
    assert row["energy_node_j"] == pytest.approx(2 * 60.0 * 24 + gpu0 + gpu1 + 2 * idle)
    assert row["avg_power_w"] == pytest.approx(row["energy_node_j"] / 24)
    assert row["energy_scope"] == "2 CPU packages + 4 GPUs"
    assert row["energy_source"] == "msr: counter; nvml: counter"
    # Only the run's own window counts: the 3 s idle baseline before it is excluded.
    # 1 Hz samples at 0..24 s: gpu0 busy in 14 of 25, gpu1 in 6 of 25, at 87 %.
    assert row["gpu_util_pct"] == pytest.approx(87.0 * (14 + 6) / (2 * 25))


def test_package_read_by_msr_and_powercap_is_counted_once(tmp_path):
    sweep = write_sweep(
        tmp_path, "s", [RunSpec(name="r", device_kind="cpu", task_seconds=[4.0, 4.0])]
    )
    path = sweep / "r" / "samples.csv"
    samples = pd.read_csv(path)
    twin = samples[
        (samples["sensor"] == "msr") & samples["device"].str.startswith("package")
    ].copy()
    twin["sensor"] = "powercap"
    pd.concat([samples, twin]).to_csv(path, index=False)
    row = run_table(load_sweep(sweep)).iloc[0]
    assert row["cpu_package_j"] == pytest.approx(2 * 60.0 * row["wall_s"])


def test_gpus_without_cpu_energy_give_a_gpu_only_scope_and_say_so(tmp_path):
    specs = [RunSpec(name=f"n{n}", gpus=n, task_seconds=[8.0, 8.0]) for n in (1, 2)]
    sweep = write_sweep(tmp_path, "s", specs)
    for s in specs:
        path = sweep / s.name / "samples.csv"
        samples = pd.read_csv(path)
        samples[samples["sensor"] != "msr"].to_csv(path, index=False)
    runs = run_table(load_sweep(sweep))
    assert set(runs["energy_scope"]) == {"4 GPUs"}
    assert runs["energy_note"].str.startswith("GPUs only").all()
    assert runs["cpu_package_j"].isna().all()
    table = scaling_table(runs)
    e1, e2 = runs.set_index("devices")["energy_node_j"][[1, 2]]
    assert _row(table, devices=2)["greenup"] == pytest.approx(e1 / e2)


def test_unprofiled_and_sensorless_runs_have_no_energy_and_say_why(tmp_path):
    specs = [
        RunSpec(name="plain1", gpus=1, profiled=False),
        RunSpec(name="plain2", gpus=2, profiled=False),
        RunSpec(name="cpu1", gpus=1, sched="rr", device_kind="cpu", energy_sensors=False),
        RunSpec(name="cpu2", gpus=2, sched="rr", device_kind="cpu", energy_sensors=False),
    ]
    runs = run_table(load_sweep(write_sweep(tmp_path, "s", specs))).set_index("run")
    assert math.isnan(runs.loc["plain1", "energy_node_j"])
    assert runs.loc["plain1", "energy_note"] == "not profiled (no samples.csv)"
    assert "no /dev/cpu/0/msr" in runs.loc["cpu1", "energy_note"]
    assert runs.loc["cpu2", "cpu_util_pct"] == pytest.approx(35.0 + 10 * 2)  # procstat still works
    table = scaling_table(runs.reset_index())
    plain2 = _row(table, sched="binpack", devices=2)
    assert math.isnan(plain2["greenup"]) and plain2["speedup"] > 1
    assert "energy not measured (not profiled" in plain2["note"]
    assert "no /dev/cpu/0/msr" in _row(table, sched="rr", devices=2)["note"]


def test_samples_that_stop_before_the_run_ends_give_no_energy(tmp_path):
    sweep = write_sweep(tmp_path, "s", [RunSpec(name="r")])
    path = sweep / "r" / "samples.csv"
    samples = pd.read_csv(path)
    samples[samples["ts"] < T0 + 20].to_csv(path, index=False)  # the profiler died 20 s in
    row = run_table(load_sweep(sweep)).iloc[0]
    assert math.isnan(row["energy_node_j"])
    assert "do not cover the run window" in row["energy_note"]


def test_half_written_last_sample_line_is_dropped(tmp_path):
    sweep = write_sweep(tmp_path, "s", [RunSpec(name="r")])
    before = run_table(load_sweep(sweep)).iloc[0]["energy_node_j"]
    with open(sweep / "r" / "samples.csv", "a") as f:
        f.write(f"{T0 + 9999},msr,pack")
    run = load_run(sweep / "r")
    assert run.samples["ts"].max() < T0 + 9999
    assert run_table(load_sweep(sweep)).iloc[0]["energy_node_j"] == pytest.approx(before)


# ----------------------------------------------------------------------------- tasks


def test_makespan_lower_bound_is_the_larger_of_mean_load_and_longest_task():
    assert makespan_lower_bound([5, 3, 3, 2, 1], 2) == pytest.approx(7.0)
    assert makespan_lower_bound([5, 3, 3, 2, 1], 4) == pytest.approx(5.0)
    assert math.isnan(makespan_lower_bound([], 2))


def test_device_load_and_makespan_follow_the_schedule(tmp_path):
    spec = RunSpec(name="rr4", gpus=4, sched="rr")
    run = load_sweep(write_sweep(tmp_path, "s", [spec])).runs[0]
    load = device_load(run.tasks).set_index("device")
    # Round robin of VGG16_TASK_S over 4 GPUs: gpu0 gets tasks 0, 4, 8, 12.
    assert load.loc["gpu0", "busy_s"] == pytest.approx(34 + 20 + 17 + 7)
    assert load.loc["gpu1", "busy_s"] == pytest.approx(52 + 24 + 17)
    assert load.loc["gpu2", "idle_s"] == pytest.approx(93 - (27 + 24 + 7))
    row = run_table(load_sweep(tmp_path / "s")).iloc[0]
    assert row["makespan_lb_s"] == pytest.approx(max(sum(VGG16_TASK_S) / 4, 52))
    assert row["tasks_makespan_s"] == pytest.approx(93.0)


def test_cpu_task_energy_is_split_among_the_tasks_running_at_the_same_time():
    samples = _samples(
        [(T0 + i, "msr", "package0", "energy", 100.0 * i, "J") for i in range(21)]
        + [(T0 + i, "msr", "core0", "energy", 50.0 * i, "J") for i in range(21)]
    )
    tasks = pd.DataFrame(
        {
            "task": ["a", "b", "c"],
            "device": ["cpuset0", "cpuset1", "cpuset0"],
            "start": [T0, T0 + 4, T0 + 18],
            "end": [T0 + 10, T0 + 16, T0 + 20],
        }
    )
    tasks["seconds"] = tasks["end"] - tasks["start"]
    energy = task_energy(tasks, samples).set_index("task")
    # a: 4 s alone (400 J) + 6 s shared with b (300 J); b: 300 J + 6 s alone; c: 2 s alone. Cores unused.
    assert energy.loc["a", "cpu_energy_j"] == pytest.approx(700.0)
    assert energy.loc["b", "cpu_energy_j"] == pytest.approx(900.0)
    assert energy.loc["c", "cpu_energy_j"] == pytest.approx(200.0)
    assert energy["gpu_energy_j"].isna().all()
    assert energy.loc["b", "energy_j"] == pytest.approx(900.0)


def test_gpu_task_is_charged_its_own_gpu_and_a_share_of_the_cpu(tmp_path):
    power = Power(package_w=50.0, gpu_busy_w=200.0, gpu_idle_w=20.0)
    spec = RunSpec(
        name="r", gpus=2, sched="rr", task_seconds=[6.0, 4.0, 2.0], power=power, packages=1
    )
    run = load_sweep(write_sweep(tmp_path, "s", [spec])).runs[0]
    energy = task_energy(run.tasks, run.samples).set_index(run.tasks["task"])
    first, second, third = run.tasks["task"]
    assert energy.loc[first, "gpu_energy_j"] == pytest.approx(200.0 * 6)
    assert energy.loc[second, "gpu_energy_j"] == pytest.approx(200.0 * 4)
    assert energy.loc[third, "gpu_energy_j"] == pytest.approx(200.0 * 2)
    # rr: the first task runs 0-6 s on gpu0, the second 0-4 s on gpu1, the third 6-8 s on gpu0; the CPU
    # package (50 W) is shared by the first two for 4 s, then each runs alone.
    assert energy.loc[first, "cpu_energy_j"] == pytest.approx(50.0 * 4 / 2 + 50.0 * 2)
    assert energy.loc[second, "cpu_energy_j"] == pytest.approx(50.0 * 4 / 2)
    assert energy.loc[third, "cpu_energy_j"] == pytest.approx(50.0 * 2)
    assert energy.loc[first, "energy_j"] == pytest.approx(1200.0 + 200.0)


# ----------------------------------------------------------------------------- groups and baselines


def test_group_without_a_one_device_run_has_no_speedup_and_says_why(tmp_path):
    specs = [RunSpec(name="n2", gpus=2), RunSpec(name="n4", gpus=4)]
    table = _scaling(write_sweep(tmp_path, "s", specs))
    assert table["speedup"].isna().all() and table["greenup"].isna().all()
    assert table["note"].str.contains("no complete 1-device run").all()
    assert table["time_s"].notna().all()


def test_failed_one_device_run_leaves_its_group_without_a_baseline(tmp_path):
    specs = [
        RunSpec(name="n1", gpus=1, status="failed", error="CUDA out of memory"),
        RunSpec(name="n2", gpus=2),
    ]
    runs = run_table(load_sweep(write_sweep(tmp_path, "s", specs))).set_index("run")
    assert runs.loc["n1", "reason"] == "failed: CUDA out of memory"
    assert math.isnan(_row(scaling_table(runs.reset_index()), devices=2)["speedup"])


def test_repeats_give_the_median_and_the_best_to_worst_envelope(tmp_path):
    specs = [
        RunSpec(name=f"n{n}-r{i}", gpus=n, repeat=i, total_s=t, task_seconds=[10.0, 10.0])
        for n, times in ((1, [100.0, 110.0, 120.0]), (2, [60.0, 50.0, 55.0]))
        for i, t in enumerate(times)
    ]
    table = _scaling(write_sweep(tmp_path, "s", specs))
    row = _row(table, devices=2)
    assert row["repeats"] == 3
    assert row["time_s"] == pytest.approx(55.0)
    assert row["speedup"] == pytest.approx(110.0 / 55.0)
    assert row["speedup_lo"] == pytest.approx(100.0 / 60.0)
    assert row["speedup_hi"] == pytest.approx(120.0 / 50.0)
    assert row["efficiency"] == pytest.approx(1.0)
    assert (row["time_min_s"], row["time_max_s"]) == (50.0, 60.0)


def test_groups_split_on_every_config_field_but_device_count_and_output(tmp_path):
    specs = [
        RunSpec(name=f"{sched}-{threads}-n{n}", gpus=n, sched=sched, threads=threads)
        for sched in ("rr", "binpack")
        for threads in ("autotune", "4")
        for n in (1, 2)
    ]
    runs = run_table(load_sweep(write_sweep(tmp_path, "s", specs)))
    assert runs["group"].nunique() == 4
    assert set(runs["label"]) == {
        "rr · autotune",
        "rr · 4-intra1",
        "binpack · autotune",
        "binpack · 4-intra1",
    }
    # Each run's `out` differs, and still the 1- and 2-device runs of a setting share a group.
    for _, g in runs.groupby("group"):
        assert (
            sorted(g["devices"]) == [1, 2]
            and g["sched"].nunique() == 1
            and g["threads"].nunique() == 1
        )
    table = scaling_table(runs)
    assert len(table) == 8 and table["speedup"].notna().all()


def test_partial_killed_and_missing_runs_are_left_out_with_their_reason(tmp_path):
    specs = [
        RunSpec(name="ok1", gpus=1),
        RunSpec(name="ok2", gpus=2),
        RunSpec(name="part", gpus=3, status="partial", error="interrupted (SIGINT)"),
        RunSpec(name="killed", gpus=4, status="killed"),
        RunSpec(name="gone", gpus=4, status="missing", error="worker crashed before start"),
    ]
    sweep = load_sweep(write_sweep(tmp_path, "s", specs))
    runs = run_table(sweep).set_index("run")
    assert list(runs.index) == ["ok1", "ok2", "part", "killed", "gone"]
    assert runs.loc["part", "reason"] == "partial: interrupted (SIGINT)"
    assert runs.loc["killed", "reason"] == "partial: no summary.json (the run did not finish)"
    assert runs.loc["gone", "reason"] == "failed: worker crashed before start"
    assert list(runs.loc[runs["usable"]].index) == ["ok1", "ok2"]
    assert sorted(scaling_table(runs.reset_index())["devices"]) == [1, 2]


def test_runs_are_found_without_sweep_json_and_noted(tmp_path):
    sweep = load_sweep(
        write_sweep(tmp_path, "s", [RunSpec(name="a"), RunSpec(name="b", gpus=2)], listed=False)
    )
    assert [r.name for r in sweep.runs] == ["a", "b"]
    assert sweep.notes == ["no sweep.json; runs were found from their directories"]


def test_missing_or_empty_results_are_user_errors(tmp_path):
    with pytest.raises(GreenkdError, match="no sweep directory"):
        load_sweep(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sweep.json").write_text(json.dumps({"name": "empty", "runs": []}))
    with pytest.raises(GreenkdError, match="holds no runs"):
        load_sweep(tmp_path / "empty")
