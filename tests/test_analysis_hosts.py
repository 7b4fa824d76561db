"""Runs across hosts in the analysis and the report, from run directories in the real format
(run_fixtures: the run's own samples.csv on node1, RUN/hosts/<host>/ as each host's sampler
writes it, summary.json `hosts` from profilers.hosts.host_energy itself). No run is started."""

from __future__ import annotations

import json

import pytest
from run_fixtures import Power, RunSpec, write_run, write_sweep

from greenkd.analysis import load_run, load_sweep, run_table, scaling_table
from greenkd.analysis.hosts import run_energy_across_hosts, task_energy_by_host
from greenkd.executors.mpi import failed_summary
from greenkd.report import build_report

NODE2 = Power(package_w=80.0, gpu_busy_w=300.0, gpu_idle_w=30.0)  # node1 keeps 60 W, 220/20 W


def _hosts_block(run_dir):
    return json.loads((run_dir / "summary.json").read_text())["hosts"]


def test_node_energy_adds_each_host_once(tmp_path):
    spec = RunSpec(name="cpu-h2", gpus=4, hosts=2, device_kind="cpu", host_powers={"node2": NODE2})
    run_dir = write_run(tmp_path, spec)
    run = load_run(run_dir)
    block = _hosts_block(run_dir)
    start, end = run.window
    window_s = block["window_end_ts"] - block["window_start_ts"]
    energy = run_energy_across_hosts(run)
    # node1 (the run's own profiler) over the whole run, node2 (its sampler) over the task phase;
    # node1's own host sampler (hosts/node1) covers the task phase again and is not added
    node1, node2 = 2 * 60.0 * (end - start), 2 * 80.0 * window_s
    assert energy["energy_by_host"] == pytest.approx({"node1": node1, "node2": node2})
    assert energy["energy_node_j"] == pytest.approx(node1 + node2)
    assert energy["cpu_package_j"] == pytest.approx(node1 + node2)
    by_host = {h["host"]: h["node_energy_j"] for h in block["hosts"]}
    assert energy["energy_node_j"] != pytest.approx(node1 + by_host["node1"] + by_host["node2"])
    assert by_host["node2"] == pytest.approx(node2)  # the profiler's reader and ours agree
    assert (energy["n_hosts"], energy["energy_status"]) == (2, "complete")
    assert energy["energy_scope"] == "2 CPU packages"  # each host's own scope: they are alike
    assert "node2 over the task phase" in energy["energy_note"]


def test_task_energy_is_charged_from_each_tasks_own_host(tmp_path):
    run = load_run(
        write_run(tmp_path, RunSpec(name="gpu-h2", gpus=4, hosts=2, host_powers={"node2": NODE2}))
    )
    energy = task_energy_by_host(run)
    assert list(energy["task"]) == list(run.tasks["task"])
    assert set(energy["host"]) == {"node1", "node2"}
    # gpu0 of node1 and gpu0 of node2 are different GPUs: each task gets its own host's busy power
    for r in energy.itertuples():
        busy = 300.0 if r.host == "node2" else 220.0
        assert r.gpu_energy_j == pytest.approx(busy * r.seconds), r.task
    # node2's CPU side goes to node2's tasks only: its packages over the span its tasks ran
    on2 = energy[energy["host"] == "node2"]
    span = on2["end"].max() - on2["start"].min()
    assert on2["cpu_energy_j"].sum() == pytest.approx(2 * 80.0 * span)


def test_greenup_across_host_counts(tmp_path):
    specs = [
        RunSpec(name="n1", gpus=1, sched="rr"),
        RunSpec(name="n2", gpus=2, sched="rr"),
        RunSpec(name="n4-h2", gpus=4, sched="rr", hosts=2),
    ]
    runs = run_table(load_sweep(write_sweep(tmp_path, "s", specs))).set_index("run")
    scaling = scaling_table(runs.reset_index())
    [row] = scaling[scaling["hosts"] == 2].itertuples()
    assert row.label.endswith("· 2 hosts") and row.devices == 4
    assert row.greenup == pytest.approx(runs.loc["n1", "energy_node_j"] / row.energy_j)
    assert row.energy_j == pytest.approx(runs.loc["n4-h2", "energy_node_j"])
    assert "summed over 2 hosts" in row.note
    # the single-host group keeps its name and its rows; the 2-host group borrows its 1-device run
    by_label = scaling.groupby("label")["devices"].apply(list).to_dict()
    assert by_label == {"rr · autotune": [1, 2], "rr · autotune · 2 hosts": [1, 4]}


def test_a_silent_host_is_named_and_its_runs_energy_partial(tmp_path):
    specs = [
        RunSpec(name="n1", gpus=1, sched="rr", device_kind="cpu"),
        RunSpec(
            name="n4-h2",
            gpus=4,
            sched="rr",
            hosts=2,
            device_kind="cpu",
            silent_host="node2",
            host_powers={"node2": NODE2},
        ),
    ]
    sweep = write_sweep(tmp_path, "s", specs)
    block = _hosts_block(sweep / "n4-h2")
    [silent] = block["silent_hosts"]
    runs = run_table(load_sweep(sweep)).set_index("run")
    row = runs.loc["n4-h2"]
    start_ts = json.loads((sweep / "n4-h2" / "summary.json").read_text())["start_ts"]
    stopped = silent["stopped_ts"] - start_ts  # seconds since the run started
    assert row["energy_status"] == "partial"
    assert row["silent_hosts"] == f"node2 silent from {stopped:.1f} s"
    # node2 counts up to its last sample, nothing after
    heard = silent["stopped_ts"] - block["window_start_ts"]
    energy = run_energy_across_hosts(load_run(sweep / "n4-h2"))
    assert energy["energy_by_host"]["node2"] == pytest.approx(2 * 80.0 * heard)
    scaling = scaling_table(runs.reset_index())
    [two] = scaling[scaling["hosts"] == 2].itertuples()
    assert two.greenup != two.greenup  # NaN: a partial energy is no energy to compare
    assert f"n4-h2: energy partial (node2 silent from {stopped:.1f} s)" in two.note


def test_a_run_across_hosts_without_its_own_profile_has_no_energy(tmp_path):
    run_dir = write_run(tmp_path, RunSpec(name="h2", gpus=4, hosts=2, profiled=False))
    energy = run_energy_across_hosts(load_run(run_dir))
    assert energy["energy_node_j"] != energy["energy_node_j"]  # NaN, as on one host
    kj = _hosts_block(run_dir)["node_energy_j"] / 1e3
    assert f"task-phase energy is {kj:,.2f} kJ" in energy["energy_note"]


def test_report_has_a_hosts_section_only_for_runs_across_hosts(tmp_path):
    one = build_report(load_sweep(write_sweep(tmp_path, "one", [RunSpec(name="n1", gpus=1)])))
    assert "id='hosts'" not in one.html and "href='#hosts'" not in one.html
    specs = [RunSpec(name="n1", gpus=1), RunSpec(name="h2", gpus=4, hosts=2, silent_host="node2")]
    two = build_report(load_sweep(write_sweep(tmp_path, "two", specs)))
    assert "<section id='hosts'" in two.html and "href='#hosts'" in two.html
    host_figs = [f for f in two.figures if f.layout.title.text.startswith("host node")]
    assert [f.layout.title.text.split(" · ")[0] for f in host_figs] == ["host node1", "host node2"]
    assert "silent from" in host_figs[1].layout.title.text
    for fig in host_figs:
        assert {t.name for t in fig.data} >= {"CPU packages", "CPU (all)", "gpu0", "gpu1"}
    # the allocation chart tells gpu0 of node1 from gpu0 of node2
    [alloc] = [
        f
        for f in two.figures
        if f.layout.title.text.startswith("Task allocation · ") and "2 hosts" in f.layout.title.text
    ]
    assert set(alloc.data[0].y) == {"node1/gpu0", "node1/gpu1", "node2/gpu0", "node2/gpu1"}


def test_ranks_dying_on_a_run_across_hosts_leave_hosts_in_the_partial_summary(tmp_path):
    # what launch() finds after mpiexec reports a dead rank: no summary.json, and every host's
    # samples as far as its sampler got (node2's stop earlier: its rank died first)
    spec = RunSpec(
        name="h2",
        gpus=4,
        hosts=2,
        device_kind="cpu",
        status="killed",
        silent_host="node2",
        host_powers={"node2": NODE2},
    )
    run_dir = write_run(tmp_path, spec)
    assert not (run_dir / "summary.json").exists()
    reason = "MPI rank process 4242 on node2 ended (killed); mpiexec stopped the other ranks"
    summary = failed_summary(run_dir, 4, reason)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["status"] == "partial" and summary["error"] == reason
    hosts = summary["hosts"]
    assert (hosts["n_hosts"], hosts["energy_status"]) == (2, "partial")
    stopped = {s["host"]: s["stopped_ts"] for s in hosts["silent_hosts"]}
    # no host stopped its sampler: both named, each with its last sample; node1 was heard last
    assert stopped["node2"] < stopped["node1"] == hosts["window_end_ts"]
    by_host = {h["host"]: h for h in hosts["hosts"]}
    heard = stopped["node2"] - hosts["window_start_ts"]
    assert by_host["node2"]["node_energy_j"] == pytest.approx(2 * 80.0 * heard)
    assert by_host["node1"]["node_energy_j"] == pytest.approx(2 * 60.0 * hosts["seconds"])
    # a second look (launch() again, or rank 0's own partial summary) keeps what is there
    assert failed_summary(run_dir, 4, "again") == summary
    # the analysis names both hosts
    row = run_table(load_sweep(tmp_path)).set_index("run").loc["h2"]
    assert (
        row["silent_hosts"].startswith("node1 silent from")
        and "node2 silent from" in row["silent_hosts"]
    )
