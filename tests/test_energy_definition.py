"""One definition of node energy: the profiler's total, `greenkd profile`'s printout, the analysis and
the report add up the same domains (`profilers.energy.node_domains`) to the same joules.

The run is profiled by the real profiler on fake sensor roots: powercap zones package-0 with its
DRAM sub-zone and the platform's psys zone (MSRs missing, so powercap is the CPU sensor), and two
NVML GPUs. psys covers the packages and DRAM, so the node is psys + the two GPUs, nothing on top.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from profiler_fakes import FakeGpu, FakeNvml
from run_fixtures import RunSpec, write_run

import profilers
from greenkd.analysis import Run, load_sweep, run_energy, run_table, task_energy
from greenkd.report import build_report
from profilers.cli import format_table

MAX_UJ = 262143328850  # a real max_energy_range_uj
HZ = 10.0


def _zone(sysfs: Path, zone: str, name: str, energy_uj: int) -> Path:
    path = sysfs / "class" / "powercap" / zone
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(name + "\n")
    (path / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    _set(path, energy_uj)
    return path


def _set(zone: Path, energy_uj: int) -> None:
    # In place and at a fixed width, like sysfs: the sensor keeps the file open and never reads
    # an emptied file.
    fd = os.open(zone / "energy_uj", os.O_WRONLY | os.O_CREAT)
    try:
        os.pwrite(fd, f"{energy_uj:012d}\n".encode(), 0)
    finally:
        os.close(fd)


def _add_joules(zone: Path, joules: float) -> None:
    _set(zone, int((zone / "energy_uj").read_text()) + round(joules * 1e6))


def _wait_for_sample(samples: Path, n: int) -> None:
    """Until the profiler has written its n-th sample (counted by the psys rows)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if samples.exists() and samples.read_text().count(",powercap,psys,energy,") >= n:
            return
        time.sleep(0.005)
    raise AssertionError(f"the profiler wrote fewer than {n} samples in 20 s")


def _profile_run(tmp_path: Path) -> Path:
    """A 2-GPU run directory whose samples.csv and profile.json come from the real profiler."""
    sysfs = tmp_path / "sys"
    package = _zone(sysfs, "intel-rapl:0", "package-0", 1_000_000_000)
    dram = _zone(sysfs, "intel-rapl:0:0", "dram", 200_000_000)
    psys = _zone(sysfs, "intel-rapl:1", "psys", 5_000_000_000)
    gpus = [FakeGpu(power_w=0.0), FakeGpu(power_w=0.0)]
    run_dir = tmp_path / "results" / "psys" / "g2"
    samples = run_dir / "samples.csv"
    with profilers.Profiler(
        out=run_dir,
        hz=HZ,
        sysfs_root=sysfs,
        msr_root=tmp_path / "no-msr",
        proc_stat=tmp_path / "no-stat",
        nvml=FakeNvml(gpus),
        summary_name="profile.json",
    ):
        # Nothing draws power until the second sample: the run's window starts just after the
        # first one, where every counter still reads what that sample read.
        _wait_for_sample(samples, 2)
        gpus[0].set_power(200.0)
        gpus[1].set_power(60.0)
        for n in (3, 4, 5):
            _wait_for_sample(samples, n)  # counters move between samples, as sysfs counters do
            _add_joules(package, 20.0)
            _add_joules(dram, 5.0)
            _add_joules(psys, 40.0)
        _wait_for_sample(samples, 6)
    profile = json.loads((run_dir / "profile.json").read_text())
    assert profile["status"] == "complete", profile.get("reason")
    start, end = profile["start_ts"], profile["end_ts"]
    spec = RunSpec(
        name="g2",
        gpus=2,
        profiled=False,  # the profiler's own files are there already
        start_ts=start,
        setup_s=0.0,
        task_seconds=[0.2, 0.2],
        assemble_s=0.0,
        finetune_s=0.0,
        total_s=end - start,
    )
    write_run(run_dir.parent, spec)
    summary = json.loads((run_dir / "summary.json").read_text())
    # The run's window is exactly the profile's, as when greenkd runs under the profiler.
    summary["start_ts"], summary["end_ts"] = start, end
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_profile_analysis_report_and_printout_agree_on_node_energy(tmp_path):
    run_dir = _profile_run(tmp_path)
    profile = json.loads((run_dir / "profile.json").read_text())
    by_domain = {(d["sensor"], d["device"]): d["energy_j"] for d in profile["domains"]}
    psys, gpu0, gpu1 = (
        by_domain[("powercap", "psys")],
        by_domain[("nvml", "gpu0")],
        by_domain[("nvml", "gpu1")],
    )
    package, dram = by_domain[("powercap", "package0")], by_domain[("powercap", "dram0")]
    assert package == pytest.approx(60.0) and dram == pytest.approx(15.0)
    assert psys == pytest.approx(120.0) and gpu0 > 0 and gpu1 > 0

    # (a) the profiler's total: psys and the GPUs, not the packages or DRAM psys already covers
    total = profile["total"]
    assert sorted(total["domains"]) == ["nvml:gpu0", "nvml:gpu1", "powercap:psys"]
    assert total["energy_j"] == pytest.approx(psys + gpu0 + gpu1, rel=1e-12)
    node_j = total["energy_j"]

    # (b) the analysis and the report: the same joules, named the same way
    sweep = load_sweep(run_dir.parent)
    row = run_table(sweep).set_index("run").loc["g2"]
    assert row["energy_node_j"] == pytest.approx(node_j, rel=1e-9)
    assert row["energy_scope"] == "psys + 2 GPUs"
    assert row["cpu_node_j"] == pytest.approx(psys, rel=1e-9)
    assert row["gpu_node_j"] == pytest.approx(gpu0 + gpu1, rel=1e-9)
    # the package is shown, never added
    assert row["cpu_package_j"] == pytest.approx(package, rel=1e-9)
    assert row["energy_node_j"] < node_j + package
    report = build_report(sweep)
    assert report.runs.set_index("run").loc["g2", "energy_node_j"] == pytest.approx(
        node_j, rel=1e-9
    )
    assert report.scaling["energy_j"].tolist() == pytest.approx([node_j], rel=1e-9)
    assert "psys + 2 GPUs" in report.html

    # (c) what `greenkd profile` prints for this profile
    printed = format_table(profile, run_dir / "profile.json").splitlines()
    line = next(t for t in printed if t.strip().startswith("total"))
    joules, named = line.split(maxsplit=1)[1].split(" J (")
    assert joules == f"{row['energy_node_j']:.1f}"
    assert sorted(named.rstrip(")").split(", ")) == ["nvml:gpu0", "nvml:gpu1", "powercap:psys"]


def test_without_psys_the_node_is_the_powercap_packages_and_dram():
    t0 = 1_760_000_000.0
    watts = {
        ("powercap", "package0"): 10.0,
        ("powercap", "dram0"): 2.0,
        ("powercap", "cores0"): 5.0,  # inside package0: shown, never added
        ("nvml", "gpu0"): 100.0,
    }
    samples = pd.DataFrame(
        [
            (t0 + i, sensor, device, "energy", w * i, "J")
            for (sensor, device), w in watts.items()
            for i in range(11)
        ],
        columns=["ts", "sensor", "device", "metric", "value", "unit"],
    )
    run = Run(
        name="r",
        path=Path("r"),
        status="complete",
        reason=None,
        meta={"devices": ["gpu0"]},
        summary={"start_ts": t0, "end_ts": t0 + 10},
        samples=samples,
    )
    energy = run_energy(run)
    assert energy["energy_node_j"] == pytest.approx(100.0 + 20.0 + 1000.0)
    assert energy["energy_scope"] == "1 CPU package + 1 DRAM + 1 GPU"
    assert energy["cpu_node_j"] == pytest.approx(120.0)
    assert energy["cpu_package_j"] == pytest.approx(100.0)
    assert energy["cpu_cores_j"] == pytest.approx(50.0)
    # A task is charged the same CPU side: the packages and DRAM, shared by the tasks running.
    tasks = pd.DataFrame(
        {"task": ["a"], "device": ["gpu0"], "start": [t0], "end": [t0 + 10], "seconds": [10.0]}
    )
    charged = task_energy(tasks, samples).iloc[0]
    assert charged["cpu_energy_j"] == pytest.approx(120.0)
    assert charged["gpu_energy_j"] == pytest.approx(1000.0)
