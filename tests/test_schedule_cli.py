"""`greenkd plan`, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VGG16_CSV = Path(__file__).resolve().parents[1] / "benchmarks" / "schedule_vgg16_times.csv"


def greenkd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "greenkd", *args], capture_output=True, text=True, timeout=120
    )


def test_plan_json_has_one_record_per_policy_and_device_count():
    run = greenkd(
        "plan", "--timings", str(VGG16_CSV), "--gpus", "1-4", "--sched", "rr,binpack,opt", "--json"
    )
    assert run.returncode == 0, run.stderr
    records = json.loads(run.stdout)
    assert [(r["policy"], r["n_devices"]) for r in records] == [
        (p, n) for p in ("rr", "binpack", "opt") for n in (1, 2, 3, 4)
    ]
    by = {(r["policy"], r["n_devices"]): r for r in records}
    assert by["rr", 4]["predicted_makespan_s"] == 1107
    assert by["binpack", 4]["predicted_makespan_s"] == 972
    opt4 = by["opt", 4]
    assert opt4["predicted_makespan_s"] == 897 and opt4["optimal"] is True
    assert opt4["lower_bound_s"] == pytest.approx(888.5)
    assert opt4["speedup"] == pytest.approx(3554 / 897)
    assert opt4["cost_source"] == "timings-file"
    assert sorted(t for device in opt4["assignment"] for t in device) == sorted(_seconds())
    assert opt4["predicted_load_s"] == [
        sum(s for t, s in _seconds().items() if t in device) for device in opt4["assignment"]
    ]


def _seconds() -> dict[str, float]:
    lines = [ln for ln in VGG16_CSV.read_text().splitlines() if ln and not ln.startswith("#")][1:]
    return {ln.split(",")[0]: float(ln.split(",")[1]) for ln in lines}


def test_plan_table_shows_each_policy_with_its_makespan_and_loads():
    run = greenkd("plan", "--timings", str(VGG16_CSV), "--gpus", "4", "--sched", "rr,opt")
    assert run.returncode == 0, run.stderr
    rows = {
        line.split("│")[1].strip(): line for line in run.stdout.splitlines() if line.startswith("│")
    }
    assert "1107" in rows["rr"] and "992 1107 734 721" in rows["rr"]
    assert "897" in rows["opt"] and "3.96" in rows["opt"]


def test_plan_reads_a_run_tasks_csv_and_fuses_prefixes(tmp_path):
    tasks = tmp_path / "tasks.csv"
    tasks.write_text(
        "task,device,start,end,seconds_prefix,accepted\n"
        "a,0,100,110,2,true\nb,0,110,130,8,true\nc,1,100,124,9,false\n"
    )
    base = greenkd("plan", "--timings", str(tasks), "--gpus", "1", "--sched", "rr", "--json")
    fused = greenkd(
        "plan", "--timings", str(tasks), "--gpus", "1", "--sched", "rr", "--fused", "--json"
    )
    assert json.loads(base.stdout)[0]["predicted_makespan_s"] == 10 + 20 + 24
    # one teacher pass up to the deepest prefix (9 s) instead of 2 + 8 + 9
    assert json.loads(fused.stdout)[0]["predicted_makespan_s"] == 9 + 8 + 12 + 15
    assert json.loads(fused.stdout)[0]["fused"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sched", "rr,lpt"], "unknown scheduler 'lpt'"),
        (["--gpus", "0"], "devices must be >= 1"),
        (["--gpus", "4-1"], "runs backwards"),
        (["--gpus", "two"], "not a number"),
        (["--time-limit", "0"], "--time-limit must be > 0"),
    ],
)
def test_bad_plan_flags_exit_2_with_one_line(args, message):
    run = greenkd("plan", "--timings", str(VGG16_CSV), *args)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr
    assert "Traceback" not in run.stderr


def test_unreadable_timings_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("task,accuracy\na,0.9\n")
    for path in (tmp_path / "missing.csv", bad):
        run = greenkd("plan", "--timings", str(path))
        assert run.returncode == 2
        assert run.stderr.startswith("greenkd: error: timings file") and run.stderr.count("\n") == 1


def test_schedule_module_loads_without_tensorflow_or_keras():
    code = "import sys, greenkd.schedule; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
