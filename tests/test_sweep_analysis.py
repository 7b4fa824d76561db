"""The 1-device run a sweep makes once per thread setting is the baseline of every scheduler's group."""

from __future__ import annotations

import math

import pytest
from run_fixtures import RunSpec, write_sweep

from greenkd.analysis import layer_runtimes, load_sweep, run_table, scaling_table
from greenkd.report import build_report


def _shared_baseline_sweep(tmp_path):
    specs = [
        # autotune: one 1-device run (configured rr, as the sweep does), 2 devices with rr and binpack
        RunSpec(name="g1-tauto-r0", gpus=1, sched="rr", total_s=100.0, node_energy_j=10_000.0),
        RunSpec(name="g2-rr-tauto-r0", gpus=2, sched="rr", total_s=60.0, node_energy_j=8_000.0),
        RunSpec(
            name="g2-binpack-tauto-r0", gpus=2, sched="binpack", total_s=50.0, node_energy_j=6_250.0
        ),
        # 4 threads: no 1-device run at all, and autotune's is not its baseline
        RunSpec(name="g2-rr-t4-r0", gpus=2, sched="rr", threads="4", total_s=40.0),
    ]
    return load_sweep(write_sweep(tmp_path, "s", specs))


def _row(table, label, devices):
    rows = table[(table["label"] == label) & (table["devices"] == devices)]
    assert len(rows) == 1, (label, devices, table[["label", "devices"]])
    return rows.iloc[0]


def test_a_scheduler_without_its_own_one_device_run_uses_the_shared_one(tmp_path):
    table = scaling_table(run_table(_shared_baseline_sweep(tmp_path)))
    binpack2 = _row(table, "binpack · autotune", 2)
    assert binpack2["speedup"] == pytest.approx(100.0 / 50.0)
    assert binpack2["efficiency"] == pytest.approx(1.0)
    assert binpack2["greenup"] == pytest.approx(10_000.0 / 6_250.0)
    assert _row(table, "rr · autotune", 2)["speedup"] == pytest.approx(100.0 / 60.0)
    # binpack's curve starts at the shared run, at speedup 1, and says whose run it is
    binpack1 = _row(table, "binpack · autotune", 1)
    assert (binpack1["speedup"], binpack1["runs"]) == (1.0, "g1-tauto-r0")
    assert "shared by every scheduler" in binpack1["note"]
    assert "shared" not in _row(table, "rr · autotune", 1)["note"]  # rr's own run


def test_the_shared_baseline_never_crosses_thread_settings(tmp_path):
    table = scaling_table(run_table(_shared_baseline_sweep(tmp_path)))
    t4 = _row(table, "rr · 4-intra1", 2)
    assert math.isnan(t4["speedup"]) and "no complete 1-device run" in t4["note"]
    assert not ((table["label"] == "rr · 4-intra1") & (table["devices"] == 1)).any()


def test_each_schedulers_layer_runtimes_include_the_shared_one_device_run(tmp_path):
    sweep = _shared_baseline_sweep(tmp_path)
    layers = layer_runtimes(sweep)
    runs = run_table(sweep).set_index("run")
    binpack = layers[layers["group"] == runs.loc["g2-binpack-tauto-r0", "group"]]
    assert sorted(binpack["devices"].unique()) == [1, 2]
    assert set(binpack.loc[binpack["devices"] == 1, "run"]) == {"g1-tauto-r0"}
    assert len(layers[layers["run"] == "g1-tauto-r0"]) == 2 * 13  # in rr's group and in binpack's
    # and the report draws binpack's speedup line from 1 device on
    report = build_report(sweep)
    speedup = next(f for f in report.figures if f.layout.title.text == "Speedup vs devices")
    binpack_trace = next(t for t in speedup.data if t.name.startswith("bin packing"))
    assert list(binpack_trace.x) == [1, 2] and list(binpack_trace.y) == pytest.approx([1.0, 2.0])
