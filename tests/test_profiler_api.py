"""The Python API: `with Profiler(...) as p`, marks, file names, summary fields, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from profiler_fakes import FakeGpu, FakeNvml, proc_stat_text

import profilers
from greenkd.errors import GreenkdError

VOCABULARY = {
    "energy": "J",
    "power": "W",
    "utilization": "%",
    "memory_used": "MiB",
    "clock_sm": "MHz",
    "temperature": "C",
}


def _profile(tmp_path, **kwargs):
    options = {
        "out": tmp_path / "run",
        "hz": 20,
        "msr_root": tmp_path / "no-msr",
        "sysfs_root": tmp_path / "no-sys",
        "nvml": FakeNvml([FakeGpu(power_w=80.0)]),
    }
    options.update(kwargs)
    return profilers.Profiler(**options)


def test_samples_are_tidy_rows_in_the_vocabulary_under_configurable_names(tmp_path):
    with _profile(
        tmp_path, samples_name="s.csv", summary_name="profile.json", marks_name="m.csv"
    ) as p:
        p.mark("task", layer="block1_conv2", device=0)
        time.sleep(0.25)
        p.mark("task_end", layer="block1_conv2")
    run = tmp_path / "run"
    assert sorted(f.name for f in run.iterdir()) == ["m.csv", "profile.json", "s.csv"]
    with (run / "s.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ts", "sensor", "device", "metric", "value", "unit"]
    body = rows[1:]
    assert {r[1] for r in body} == {"procstat", "nvml"}
    for ts, _sensor, _device, metric, value, unit in body:
        assert VOCABULARY[metric] == unit
        float(ts), float(value)
    assert [float(r[0]) for r in body] == sorted(float(r[0]) for r in body)
    with (run / "m.csv").open() as f:
        marks = list(csv.reader(f))
    assert marks[0] == ["ts", "label", "fields"]
    assert [m[1] for m in marks[1:]] == ["task", "task_end"]
    assert json.loads(marks[1][2]) == {"device": 0, "layer": "block1_conv2"}
    summary = json.loads((run / "profile.json").read_text())
    assert summary == json.loads(json.dumps(p.summary()))
    assert summary["files"] == {"samples": "s.csv", "marks": "m.csv"}
    assert summary["marks"] == 2


def test_summary_has_the_contract_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("PMI_RANK", "3")
    with _profile(tmp_path) as p:
        time.sleep(0.15)
    s = p.summary()
    for key in (
        "status",
        "reason",
        "start_ts",
        "end_ts",
        "duration_s",
        "hz",
        "samples",
        "idle",
        "domains",
        "utilization",
        "missing",
        "carbon",
        "metadata",
    ):
        assert key in s
    assert s["status"] == "complete" and s["reason"] is None
    assert s["duration_s"] == pytest.approx(s["end_ts"] - s["start_ts"])
    assert s["samples"] >= 3
    assert s["idle"] == {"seconds": 0.0, "start_ts": s["start_ts"], "end_ts": s["start_ts"]}
    assert {
        "sensor",
        "device",
        "energy_j",
        "source",
        "avg_power_w",
        "peak_power_w",
        "idle_power_w",
        "idle_energy_j",
        "dynamic_energy_j",
    } <= set(s["domains"][0])
    assert {(u["sensor"], u["device"]) for u in s["utilization"]} >= {
        ("procstat", "cpu"),
        ("nvml", "gpu0"),
    }
    assert {m["sensor"] for m in s["missing"]} == {"msr", "powercap"}
    assert all(m["fix"] for m in s["missing"])
    meta = s["metadata"]
    assert meta["slurm"] == {"SLURM_JOB_ID": "4242"} and meta["mpi"] == {"PMI_RANK": "3"}
    assert meta["greenkd_version"] == __import__("greenkd").__version__
    assert meta["host"] and "cpu_model" in meta
    assert "command" not in s


def test_exception_in_the_block_leaves_a_partial_summary_and_propagates(tmp_path):
    with pytest.raises(ZeroDivisionError), _profile(tmp_path) as p:
        time.sleep(0.1)
        1 / 0  # noqa: B018
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "partial"
    assert "ZeroDivisionError" in summary["reason"]
    assert p.summary()["status"] == "partial"
    assert len((tmp_path / "run" / "samples.csv").read_text().splitlines()) > 1


def test_carbon_estimate_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENKD_CARBON_INTENSITY", "400")
    with _profile(tmp_path) as p:
        time.sleep(0.2)
    s = p.summary()
    assert s["carbon"]["intensity_g_per_kwh"] == 400.0
    assert s["carbon"]["g_co2e"] == pytest.approx(s["total"]["energy_j"] / 3.6e6 * 400.0)
    assert "estimate" in s["carbon"]["note"]


def test_argument_intensity_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENKD_CARBON_INTENSITY", "400")
    p = _profile(tmp_path, carbon_intensity_g_per_kwh=50.0)
    assert p.carbon_intensity_g_per_kwh == 50.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hz": 0}, "--hz must be more than zero"),
        ({"hz": "fast"}, "--hz must be a number"),
        ({"idle_seconds": -1}, "--idle-seconds must be zero or more"),
        ({"samples_name": "a/b.csv"}, "plain file name"),
        ({"summary_name": "samples.csv"}, "three different names"),
        ({"carbon_intensity_g_per_kwh": -5}, "carbon intensity"),
    ],
)
def test_bad_settings_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(GreenkdError, match=message):
        _profile(tmp_path, **kwargs)


def test_bad_intensity_in_the_environment_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENKD_CARBON_INTENSITY", "lots")
    with pytest.raises(GreenkdError, match="GREENKD_CARBON_INTENSITY"):
        _profile(tmp_path)


def test_marks_after_stop_are_refused(tmp_path):
    with _profile(tmp_path) as p:
        pass
    with pytest.raises(GreenkdError, match="only while the profiler runs"):
        p.mark("late")


def test_importing_profilers_pulls_in_no_heavy_library():
    code = (
        "import sys, profilers, profilers.cli, greenkd.cli; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'pandas', 'plotly', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_stale_summary_is_removed_while_a_new_run_is_in_progress(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "complete"}')
    with _profile(tmp_path) as p:
        assert not (run / "summary.json").exists()
        assert p.summary()["status"] == "running"
    assert json.loads((run / "summary.json").read_text())["start_ts"] == p.summary()["start_ts"]


def test_a_late_first_sample_still_ends_the_idle_baseline(tmp_path):
    """A sample that falls behind skips ticks, and the tick that ends the idle baseline may be
    among them: `start()` must return all the same (it waited forever on a loaded machine).

    /proc/stat is a FIFO here: the probe's read gets its text at once; once the probe is over
    (start() writes the samples' header after it), the first sample's read gets it only after
    0.5 s (ten ticks at 20 Hz, the baseline being two), and the path is a plain file from then on.
    """
    stat = tmp_path / "stat"
    os.mkfifo(stat)
    text = proc_stat_text({"cpu": [10, 0, 0, 90, 0, 0, 0, 0, 0, 0]})
    plain = tmp_path / "stat.plain"
    plain.write_text(text)

    def serve() -> None:
        with open(stat, "w") as probe:  # opens once the probe opens the FIFO to read
            probe.write(text)
        header = tmp_path / "run" / "samples.csv"
        while not (header.exists() and header.stat().st_size):  # the probe is over
            time.sleep(0.01)
        with open(stat, "w") as first:  # opens once the first sample opens it
            time.sleep(0.5)
            os.replace(plain, stat)
            first.write(text)

    threading.Thread(target=serve, daemon=True).start()
    started = threading.Event()
    summaries = []

    def profile() -> None:
        with _profile(tmp_path, idle_seconds=0.1, proc_stat=stat) as p:
            started.set()
        summaries.append(p.summary())

    runner = threading.Thread(target=profile, daemon=True)
    runner.start()
    assert started.wait(60), "start() never returned: the baseline's end was skipped"
    runner.join(60)
    summary = summaries[0]
    assert summary["status"] == "complete"
    assert summary["sampling"]["missed_ticks"] >= 8
