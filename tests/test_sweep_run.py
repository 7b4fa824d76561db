"""Real sweeps through the CLI: interrupted with SIGINT and resumed, a run killed mid-way, the teacher once."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sweep_fixtures
from sweep_fixtures import TINY_RUN, Terminal, greenkd, snapshot, start_greenkd, write_experiment

from greenkd.analysis import load_sweep, run_table, scaling_table

pytestmark = pytest.mark.slow
sweep_cache = sweep_fixtures.sweep_cache  # fixtures, found by pytest under these names
tiny_teacher = sweep_fixtures.tiny_teacher


def _wait_for(check, *, timeout_s: float, proc=None, what: str):
    """Poll `check()` until it returns something truthy; fail if the sweep ends or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _task_rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


# ----------------------------------------------------------------------------- interrupt and resume


@pytest.fixture(scope="module")
def interrupted_sweep(tmp_path_factory, sweep_cache, tiny_teacher):
    """A 1- and 2-device sweep in a terminal, Ctrl-C while its second run is mid-way, then `--resume`."""
    root = tmp_path_factory.mktemp("interrupted")
    experiment = write_experiment(
        root / "tiny.toml",
        name="tiny",
        sweep={"gpus": "1-2", "sched": "rr", "data_threads": "autotune"},
        run={"model": str(tiny_teacher), **TINY_RUN},
    )
    args = (
        "sweep",
        "--experiment",
        str(experiment),
        "--name",
        "t",
        "--out",
        "res",
        "--reports",
        "rep",
    )
    sweep = root / "res" / "t"
    first, second = sweep / "g1-tauto-r0", sweep / "g2-rr-tauto-r0"
    terminal = Terminal(*args, cache=sweep_cache, cwd=root)
    _wait_for(
        lambda: (_json(first / "summary.json") or {}).get("status") == "complete",
        timeout_s=120,
        proc=terminal.proc,
        what="the first run completes",
    )
    _wait_for(
        lambda: _task_rows(second / "tasks.csv") >= 1,
        timeout_s=120,
        proc=terminal.proc,
        what="the second run finishes a layer task",
    )
    terminal.ctrl_c()
    code, shown = terminal.wait(timeout=60)
    state = {
        "code": code,
        "stderr": shown,
        "sweep_json": _json(sweep / "sweep.json"),
        "second_summary": _json(second / "summary.json"),
        "second_profile": _json(second / "profile.json"),
        "second_samples": pd.read_csv(second / "samples.csv"),
        "second_tasks": pd.read_csv(second / "tasks.csv"),
        "first_files": snapshot(first),
        "second_files": snapshot(second),
    }
    time.sleep(0.05)  # a rewrite on resume would show as a later mtime
    state["resume"] = greenkd(*args, "--resume", "--quiet", cache=sweep_cache, cwd=root)
    return root, sweep, state


def test_ctrl_c_stops_the_sweep_with_130_and_marks_the_run_it_cut(interrupted_sweep):
    _, _, state = interrupted_sweep
    assert state["code"] == 130, state["stderr"]
    assert "interrupted" in state["stderr"] and "--resume --name t" in state["stderr"]
    record = {r["run"]: r for r in state["sweep_json"]["runs"]}
    assert state["sweep_json"]["status"] == "interrupted"
    assert record["g1-tauto-r0"]["status"] == "complete"
    cut = record["g2-rr-tauto-r0"]
    assert cut["status"] == "partial" and cut["interrupted"] is True
    assert "SIGINT" in cut["error"]


def test_the_cut_run_keeps_its_samples_tasks_and_a_partial_summary(interrupted_sweep):
    _, _, state = interrupted_sweep
    assert state["second_summary"]["status"] == "partial"
    done = sorted(state["second_tasks"]["task"])
    assert state["second_summary"]["tasks_done"] == len(done) >= 1
    assert state["second_profile"]["status"] == "partial"
    assert "SIGINT" in state["second_profile"]["reason"]
    samples = state["second_samples"]
    assert (samples["metric"] == "utilization").sum() >= 1  # procstat kept sampling until the end
    # every finished task's block weights are on disk, and only those
    blocks = sorted(
        f.removeprefix("blocks/").removesuffix(".npz")
        for f in state["second_files"]
        if f.startswith("blocks/")
    )
    assert blocks == done


def test_resume_finishes_without_redoing_or_touching_finished_runs(interrupted_sweep):
    root, sweep, state = interrupted_sweep
    resume = state["resume"]
    assert resume.returncode == 0, resume.stderr
    report = Path(resume.stdout.strip())
    assert (root / report).is_file() and report == Path("rep/t/report.html")
    # the run finished before the interrupt is untouched: same files, same bytes, same mtimes
    assert snapshot(sweep / "g1-tauto-r0") == state["first_files"]
    payload = _json(sweep / "sweep.json")
    assert payload["status"] == "complete"
    record = {r["run"]: r for r in payload["runs"]}
    assert record["g1-tauto-r0"]["attempts"] == 1
    assert record["g2-rr-tauto-r0"]["attempts"] == 2
    assert {r["status"] for r in payload["runs"]} == {"complete"}
    # the cut attempt is kept aside whole, not overwritten
    kept = sweep / ".attempts" / "g2-rr-tauto-r0.1"
    assert snapshot(kept) == state["second_files"]
    assert _json(kept / "summary.json")["status"] == "partial"


def test_resumed_sweep_has_every_run_file_and_a_speedup_against_the_shared_baseline(
    interrupted_sweep,
):
    _, sweep, _ = interrupted_sweep
    for run in ("g1-tauto-r0", "g2-rr-tauto-r0"):
        files = set(os.listdir(sweep / run))
        assert {
            "config.json",
            "tasks.csv",
            "samples.csv",
            "profile.json",
            "summary.json",
            "student.keras",
            "distill.log",
        } <= files
        meta = _json(sweep / run / "config.json")["meta"]
        assert (meta["sweep"], meta["run"], meta["repeat"]) == ("t", run, 0)
        assert meta["device_kind"] == "cpu"
    two = _json(sweep / "g2-rr-tauto-r0" / "config.json")
    assert len(two["meta"]["devices"]) == 2 and two["config"]["cores_per_device"] >= 1
    tasks = pd.read_csv(sweep / "g2-rr-tauto-r0" / "tasks.csv")
    assert sorted(tasks["task"]) == ["conv0", "conv1", "conv2"]
    assert tasks["device"].nunique() == 2  # round robin over two workers
    data = load_sweep(sweep)
    table = scaling_table(run_table(data))
    row = table[table["devices"] == 2].iloc[0]
    one = data.runs[0].wall_s
    assert row["speedup"] == pytest.approx(one / data.runs[1].wall_s)


def test_the_fused_sweeps_report_draws_layers_and_allocation_from_measured_block_costs(
    interrupted_sweep,
):
    from greenkd.report import build_report

    root, sweep, _ = interrupted_sweep
    one = pd.read_csv(sweep / "g1-tauto-r0" / "tasks.csv")
    assert one["fused_group"].nunique() == 1  # the default: one fused pass of the three tasks
    assert (one["seconds_block"] > 0).all() and one["seconds_trunk"].nunique() == 1
    two = pd.read_csv(sweep / "g2-rr-tauto-r0" / "tasks.csv").set_index("task")
    # round robin: conv0 and conv2 in one pass on one worker, conv1 alone (no trunk to split off)
    assert two.loc["conv1", "fused_group"] != two.loc["conv1", "fused_group"]  # empty: NaN
    assert two.loc[["conv0", "conv2"], "seconds_block"].gt(0).all()
    assert pd.isna(two.loc["conv1", "seconds_block"])
    assert "Layer runtimes" in (root / "rep" / "t" / "report.html").read_text()
    report = build_report(load_sweep(sweep))
    (layers,) = [f for f in report.figures if f.layout.title.text.startswith("Layer runtimes")]
    lines = {t.name: dict(zip(t.x, t.y, strict=True)) for t in layers.data if t.type == "scatter"}
    trunks = {t.name: list(t.y) for t in layers.data if t.type == "bar"}
    expected = dict(zip(one["index"], one["seconds_block"], strict=True))
    assert lines["1 CPU worker"] == pytest.approx(expected)  # each layer its own measured cost
    assert trunks["shared trunk, 1 CPU worker"] == pytest.approx([one["seconds_trunk"].iloc[0]])
    assert lines["2 CPU workers"][1] == pytest.approx(
        two.loc["conv1", "seconds"], abs=1e-4
    )  # independent (tasks.csv keeps 4 decimals)
    (gantt,) = [f for f in report.figures if f.layout.title.text.startswith("Task allocation")]
    bars = gantt.data[0]
    assert len(bars.x) == 4  # the pass's trunk and its two blocks, and conv1 on its own
    pass_s = two.loc["conv0", "end"] - two.loc["conv0", "start"]
    in_pass = [w for w, y in zip(bars.x, bars.y, strict=True) if y == two.loc["conv0", "device"]]
    assert len(in_pass) == 3 and sum(in_pass) == pytest.approx(pass_s)


def test_resuming_with_other_run_settings_is_refused(interrupted_sweep, sweep_cache, tiny_teacher):
    root, sweep, _ = interrupted_sweep
    changed = write_experiment(
        root / "changed.toml",
        name="tiny",
        sweep={"gpus": "1-2", "sched": "rr", "data_threads": "autotune"},
        run={"model": str(tiny_teacher), **{**TINY_RUN, "epochs": 3}},
    )
    before = snapshot(sweep)
    proc = greenkd(
        "sweep",
        "--experiment",
        str(changed),
        "--name",
        "t",
        "--out",
        "res",
        "--reports",
        "rep",
        "--resume",
        cache=sweep_cache,
        cwd=root,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "was run with other settings (epochs 2 instead of 3)" in proc.stderr
    assert snapshot(sweep) == before


# ----------------------------------------------------------------------------- failures and the teacher


def test_a_killed_run_is_recorded_failed_and_the_sweep_goes_on(tmp_path, sweep_cache, tiny_teacher):
    experiment = write_experiment(
        tmp_path / "two.toml",
        name="two",
        sweep={"gpus": "1", "sched": "rr", "data_threads": ["autotune", "1"]},
        run={
            "model": str(tiny_teacher),
            # no per-block costs after the fused pass: timing only, read by no test here
            **{**TINY_RUN, "epochs": 1, "eval_every": 1, "finetune_epochs": 0},
            "block_costs": False,
        },
    )
    sweep = tmp_path / "res" / "two"
    proc = start_greenkd(
        "sweep",
        "--experiment",
        str(experiment),
        "--out",
        "res",
        "--reports",
        "rep",
        cache=sweep_cache,
        cwd=tmp_path,
    )
    try:
        # the first run's distill process writes its pid into config.json once it has started
        pid = _wait_for(
            lambda: ((_json(sweep / "g1-tauto-r0" / "config.json") or {}).get("meta") or {}).get(
                "pid"
            ),
            timeout_s=120,
            proc=proc,
            what="the first run starts",
        )
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err
    assert "1 of 2 runs did not complete: g1-tauto-r0 (failed)" in err
    assert "report: rep/two/report.html" in out
    payload = _json(sweep / "sweep.json")
    record = {r["run"]: r for r in payload["runs"]}
    assert record["g1-tauto-r0"]["status"] == "failed"
    assert record["g1-tauto-r0"]["exit_code"] == 128 + signal.SIGKILL
    assert record["g1-tauto-r0"]["error"].startswith("killed by SIGKILL")
    assert record["g1-t1-r0"]["status"] == "complete"
    assert _json(sweep / "g1-t1-r0" / "summary.json")["status"] == "complete"
    assert payload["status"] == "complete"
    # the report lists the failed run with its reason
    html = (tmp_path / "rep" / "two" / "report.html").read_text()
    assert "g1-tauto-r0" in html and "killed by SIGKILL" in html


def test_the_teacher_is_trained_once_before_the_runs_then_loaded(tmp_path, sweep_cache):
    from rich.console import Console

    from greenkd.config import RunConfig
    from greenkd.sweep import prepare_teacher

    cfg = RunConfig(
        model="vgg16", width=0.0625, n_train=128, n_val=64, teacher_epochs=1, batch_size=64,
        replace_growing=True,  # all 13 (at width 1/16 the first three blocks are larger)
    )  # fmt: skip
    env = os.environ.get("GREENKD_CACHE")
    os.environ["GREENKD_CACHE"] = str(sweep_cache / "teacher-once")
    try:
        first = prepare_teacher(cfg, tmp_path, Console(quiet=True), sys.executable)
        again = prepare_teacher(
            cfg.replace(gpus=2, sched="binpack"), tmp_path, Console(quiet=True), sys.executable
        )
    finally:
        if env is None:
            os.environ.pop("GREENKD_CACHE")
        else:
            os.environ["GREENKD_CACHE"] = env
    assert first["source"] == "trained" and first["train_seconds"] > 0
    assert Path(first["path"]).is_file() and Path(first["path"]).is_relative_to(
        sweep_cache / "teacher-once"
    )
    assert first["n_targets"] == 13 and first["targets"][0] == "block1_conv1"
    # a run with other grid settings has the same teacher: loaded, not trained again
    assert again["source"] == "cached" and again["path"] == first["path"]
    assert again["accuracy"] == pytest.approx(first["accuracy"])
    assert _json(tmp_path / "teacher.json") == again


def test_settings_only_the_teacher_step_can_check_are_one_line_and_exit_2(tmp_path, sweep_cache):
    experiment = write_experiment(
        tmp_path / "bad.toml",
        name="bad",
        sweep={"gpus": "1", "data_threads": "autotune"},
        run={"dataset": "no-such-data", "n_train": 64},
    )
    proc = greenkd(
        "sweep",
        "--experiment",
        str(experiment),
        "--out",
        "res",
        "--quiet",
        cache=sweep_cache,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert proc.stderr.startswith("greenkd: error: unknown dataset 'no-such-data'")
    payload = _json(tmp_path / "res" / "bad" / "sweep.json")
    assert payload["status"] == "failed" and "unknown dataset" in payload["error"]
    assert {r["status"] for r in payload["runs"]} == {"pending"}  # no run was started
    assert not (tmp_path / "res" / "bad" / "g1-tauto-r0").exists()
