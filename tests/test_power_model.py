"""`--power-model`: labelled estimates, opt-in, kept apart from measured energy everywhere.

The profiler runs on fake sensor roots (a real-format /proc/stat, sysfs topology and a powercap
package zone), so the model's reading code is the code that runs on a server; the analysis and
report tests use run fixtures whose samples carry both measured (msr) and modelled rows.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from profiler_fakes import FakeNvml, write_proc_stat, write_topology
from run_fixtures import RunSpec, write_run, write_sweep

import profilers
from greenkd.analysis import Run, load_sweep, run_energy, run_table, scaling_table
from greenkd.errors import GreenkdError
from greenkd.report import build_report
from greenkd.sweep import SweepSpec
from profilers.cli import format_table
from profilers.sensors.model import parse_power_model

MODEL = (10.0, 70.0)  # cpu:10:70


def _greenkd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenkd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "text", ["cpu:10", "gpu:10:65", "cpu:a:65", "cpu:70:65", "cpu:-1:65", "cpu:nan:65", ""]
)
def test_a_malformed_power_model_is_a_one_line_error(text):
    with pytest.raises(GreenkdError, match=r"--power-model takes cpu:IDLE_W:MAX_W"):
        parse_power_model(text)


def test_the_linear_model_goes_from_idle_to_max_watts():
    model = parse_power_model(" cpu:10:70 ")
    assert model is not None and model.spec == "cpu:10:70"
    assert [model.power_w(u) for u in (0, 50, 100)] == [10.0, 40.0, 70.0]
    assert parse_power_model(None) is None


@pytest.mark.parametrize(
    "args",
    [
        # the fast path (no typer) and typer's (an option it alone takes: `--hz 1_0`), then sweep
        ["profile", "--power-model", "cpu:70:10", "--", "true"],
        ["profile", "--hz", "1_0", "--power-model=cpu:x:1", "--", "true"],
        ["sweep", "--power-model", "watts", "--gpus", "1"],
    ],
)
def test_the_cli_rejects_a_bad_model_with_exit_code_2_before_running(tmp_path, args):
    result = _greenkd(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.count("\n") == 1 and "--power-model takes cpu:IDLE_W:MAX_W" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def test_the_sweep_spec_keeps_the_model_for_every_run_and_in_sweep_json():
    spec = SweepSpec.build(None, power_model="cpu:10.0:65")
    assert spec.power_model == "cpu:10:65"
    assert spec.to_dict()["sweep"]["power_model"] == "cpu:10:65"
    assert SweepSpec.from_mapping(spec.to_dict()).power_model == "cpu:10:65"
    assert "power_model" not in SweepSpec.build(None).to_dict()["sweep"]  # nothing changes without


def _jiffies(busy: int, idle: int) -> list[int]:
    return [busy, 0, 0, idle, 0, 0, 0, 0, 0, 0]


def _profile(tmp_path: Path, power_model: str | None) -> dict:
    """One interval profiled by the real profiler: cpu0 (package 0) 50 % busy, cpu1 (package 1) 100 %.

    /proc/stat counts 100 jiffies per CPU (1 s at USER_HZ 100) and the powercap package zone
    measures 12 J in between. The period is so long that only the first and the final sample
    are taken: nothing depends on timing.
    """
    sysfs = tmp_path / "sys"
    write_topology(sysfs, {0: (0, 0), 1: (1, 0)})
    zone = sysfs / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("000001000000\n")
    stat = tmp_path / "stat"
    write_proc_stat(stat, {"cpu": _jiffies(0, 0), "cpu0": _jiffies(0, 0), "cpu1": _jiffies(0, 0)})
    profiler = profilers.Profiler(
        out=tmp_path / "out",
        hz=0.01,
        sysfs_root=sysfs,
        msr_root=tmp_path / "no-msr",
        proc_stat=stat,
        nvml=FakeNvml([]),
        power_model=power_model,
    )
    profiler.start()
    write_proc_stat(
        stat, {"cpu": _jiffies(150, 50), "cpu0": _jiffies(50, 50), "cpu1": _jiffies(100, 0)}
    )
    (zone / "energy_uj").write_text("000013000000\n")
    return profiler.stop()


def test_profiled_estimates_are_rows_of_their_own_and_never_in_the_measured_total(tmp_path):
    summary = _profile(tmp_path, "cpu:10:70")
    # measured: the powercap package alone, 12 J
    assert summary["total"]["energy_j"] == pytest.approx(12.0)
    assert {d["sensor"] for d in summary["domains"]} == {"powercap"}
    # estimated: package0 at 50 % -> 40 W, package1 at 100 % -> 70 W, over 1 s of jiffies
    estimate = summary["estimate"]
    by_device = {d["device"]: d["energy_j"] for d in estimate["domains"]}
    assert by_device == pytest.approx({"package0": 40.0, "package1": 70.0})
    assert estimate["energy_j"] == pytest.approx(110.0)
    assert estimate["model"] == "cpu:10:70" and "not measured" in estimate["method"]
    assert all(not d["in_total"] and d["source"] == "model" for d in estimate["domains"])
    samples = pd.read_csv(tmp_path / "out" / "samples.csv")
    modelled = samples[samples["sensor"] == "model"]
    assert set(modelled["metric"]) == {"energy", "power"}
    assert modelled[modelled["metric"] == "power"]["value"].tolist() == pytest.approx([40.0, 70.0])
    table = format_table(summary, tmp_path / "out" / "summary.json")
    assert "total   12.0 J" in table and "estimate 110.0 J" in table and "ESTIMATE" in table


def test_without_the_flag_the_profile_has_no_model_rows(tmp_path):
    summary = _profile(tmp_path, None)
    assert summary["estimate"] is None
    assert "model" not in set(pd.read_csv(tmp_path / "out" / "samples.csv")["sensor"])


def _run(tmp_path: Path, spec: RunSpec) -> Run:
    from greenkd.analysis import load_run

    return load_run(write_run(tmp_path / "sweep", spec))


def test_an_estimated_energy_is_never_added_to_a_measured_one(tmp_path):
    measured = run_energy(_run(tmp_path, RunSpec("g1", device_kind="cpu")))
    both = run_energy(_run(tmp_path, RunSpec("g1m", device_kind="cpu", power_model=MODEL)))
    assert both["energy_node_j"] == pytest.approx(measured["energy_node_j"])
    assert both["cpu_package_j"] == pytest.approx(measured["cpu_package_j"])
    assert both["energy_source"] == measured["energy_source"] == "msr: counter"
    assert both["estimate_j"] > 0 and both["estimate_model"] == "cpu:10:70"
    # and an estimate never stands in for a missing measurement
    alone = run_energy(
        _run(
            tmp_path,
            RunSpec("g1e", device_kind="cpu", energy_sensors=False, power_model=MODEL),
        )
    )
    assert pd.isna(alone["energy_node_j"]) and alone["energy_note"].startswith("no energy sensor")
    assert alone["estimate_j"] == pytest.approx(both["estimate_j"])


def _estimate_sweep(tmp_path: Path) -> Path:
    """1 and 2 CPU workers on a machine without energy sensors, profiled with the power model."""
    specs = [
        RunSpec(
            f"g{n}",
            gpus=n,
            device_kind="cpu",
            energy_sensors=False,
            power_model=MODEL,
            task_seconds=[t / n for t in (40.0, 30.0, 20.0, 10.0)],
        )
        for n in (1, 2)
    ]
    return write_sweep(tmp_path, "estimated", specs)


def test_greenup_from_estimates_is_its_own_column_and_marked(tmp_path):
    sweep = load_sweep(_estimate_sweep(tmp_path))
    runs = run_table(sweep)
    scaling = scaling_table(runs)
    two = scaling[scaling["devices"] == 2].iloc[0]
    assert pd.isna(two["greenup"]) and pd.isna(two["energy_j"])  # nothing measured
    e = runs.set_index("run")["estimate_j"]
    assert two["greenup_estimate"] == pytest.approx(e["g1"] / e["g2"])
    assert two["greenup_estimate"] > 1  # the 2-worker run is shorter, at a similar power
    assert "estimated greenup: from the power model cpu:10:70, not measured" in two["notes"]


def _text(page: str) -> str:
    """The page's visible text, whitespace collapsed."""
    visible = re.sub(r"<(script|style).*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", visible)).split())


def test_the_report_marks_estimate_based_greenup(tmp_path):
    report = build_report(load_sweep(_estimate_sweep(tmp_path)))
    page = report.html
    text = _text(page)
    # the header: energy not measured, and a greenup card that says it is an estimate
    assert "not measured" in text
    assert re.search(r"greenup \(estimate\)\s+[\d.]+× estimate", text)
    assert "best greenup" not in text
    # the energy section: an estimate block with its badge, figure and table
    block = page[page.index("id='energy-estimate'") :]
    assert "class='badge estimate'" in page[page.index("Estimated energy and greenup") - 200 :]
    assert "ESTIMATE: greenup" in block and "estimated greenup" in block
    assert "cpu:10:70" in _text(block)


def test_a_report_without_the_model_has_no_estimates(tmp_path):
    specs = [RunSpec(f"g{n}", gpus=n, device_kind="cpu", energy_sensors=False) for n in (1, 2)]
    page = build_report(load_sweep(write_sweep(tmp_path, "plain", specs))).html
    assert "class='badge estimate'" not in page and "id='energy-estimate'" not in page
    assert "greenup (estimate)" not in _text(page)


def test_the_profile_page_badges_the_estimate_and_keeps_it_out_of_the_node_total(tmp_path):
    from greenkd.analysis.profile import load_profile
    from greenkd.report.profile.build import build_profile_page

    _profile(tmp_path, "cpu:10:70")
    page = build_profile_page(load_profile(tmp_path / "out"))
    text = _text(page.html)
    assert "node energy 12.0 J" in text  # the measured card: powercap alone
    assert "energy (estimate) 110.0 J estimate" in text
    block = page.html[page.html.index("<div id='estimate'>") :]
    assert "class='badge estimate'" in block and "Not measured" in block
    traces = {t.name: t for fig in page.figures for t in fig.data if t.name}
    modelled = [name for name in traces if "ESTIMATE (power model)" in name]
    assert sorted(modelled) == [
        "package0 ESTIMATE (power model)",
        "package1 ESTIMATE (power model)",
    ]
    assert all(traces[name].line.dash == "dash" for name in modelled)
    node = [t for fig in page.figures for t in fig.data if t.name == "node total"]
    assert node and max(node[0].y) == pytest.approx(12.0)
