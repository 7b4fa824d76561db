"""The three backends really run the tasks on two workers, follow their plans and agree.

One tiny run per backend and scheduler (local/rr, dask/ws, mpi/binpack), each on
two 1-core CPU devices: every run must use two worker processes other than the
test's own, each bound to its device, and all three must give the same blocks,
the same spliced accuracies and the same accepted set.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from greenkd.rundir import RunDir

pytest.register_assert_rewrite("parallel_fixtures")  # also a plugin (pytest_plugins below)
from parallel_fixtures import (  # noqa: E402
    RecordingReporter,
    parallel_env,
    read_tasks,
    run_cli,
    tiny_config,
)

pytest_plugins = ("parallel_fixtures",)  # small_teacher, parallel_root
pytestmark = pytest.mark.slow


def _distill_in_process(cfg, root: Path) -> tuple[dict, RecordingReporter]:
    from greenkd.distill.run import distill

    reporter = RecordingReporter()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in parallel_env(root).items():
            mp.setenv(key, value)
        return distill(cfg, reporter=reporter), reporter


@pytest.fixture(scope="module")
def local_rr(small_teacher, parallel_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    _distill_in_process(tiny_config(small_teacher, out, sched="rr"), parallel_root)
    return out


@pytest.fixture(scope="module")
def dask_ws(small_teacher, parallel_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dask") / "run"
    cfg = tiny_config(small_teacher, out, sched="ws", backend="dask")
    _distill_in_process(cfg, parallel_root)
    return out


@pytest.fixture(scope="module")
def mpi_binpack(small_teacher, parallel_root, tmp_path_factory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("mpi")
    cfg = tiny_config(small_teacher, tmp / "run", sched="binpack", backend="mpi")
    cfg.write(tmp / "config.json")
    done = run_cli(["distill", "--config", str(tmp / "config.json")], parallel_env(parallel_root))
    return tmp / "run", done


@pytest.fixture(scope="module")
def local_binpack_fused(small_teacher, parallel_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fused") / "run"
    # no per-block costs after the passes: timing only, read by no test here
    cfg = tiny_config(small_teacher, out, sched="binpack", fuse=True, block_costs=False)
    _distill_in_process(cfg, parallel_root)
    return out


def _by_device(rows) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: float(r["start"])):
        out.setdefault(row["device"], []).append(row)
    return out


def _check_two_workers(rows) -> dict[str, list[dict]]:
    """Two devices, one process each (not this one), each running one task at a time."""
    devices = _by_device(rows)
    assert sorted(devices) == ["cpuset0", "cpuset1"]
    pids = {d: {row["pid"] for row in r} for d, r in devices.items()}
    assert all(len(p) == 1 for p in pids.values()), pids
    assert pids["cpuset0"] != pids["cpuset1"]
    assert str(os.getpid()) not in pids["cpuset0"] | pids["cpuset1"]
    for device_rows in devices.values():
        for before, after in itertools.pairwise(device_rows):
            assert float(before["end"]) <= float(after["start"]) + 1e-6
    return devices


def test_local_rr_runs_task_i_in_the_worker_of_device_i_mod_2(local_rr):
    rows = read_tasks(local_rr)
    summary = json.loads((local_rr / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["backend"] == "local"
    assert len(rows) == summary["n_targets"] == 5
    devices = _check_two_workers(rows)
    for row in rows:
        assert row["device"] == f"cpuset{int(row['index']) % 2}"
    plan = json.loads((local_rr / "plan.json").read_text())
    assert plan == summary["plan"]
    assert plan["assignment"] == [["conv1", "conv3", "conv5"], ["conv2", "conv4"]]
    # each worker ran its list in the planned order
    for d, names in enumerate(plan["assignment"]):
        assert [r["task"] for r in devices[f"cpuset{d}"]] == names


def test_dask_ws_shares_the_queue_between_two_worker_processes_longest_first(dask_ws):
    rows = read_tasks(dask_ws)
    summary = json.loads((dask_ws / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["backend"] == "dask"
    assert len(rows) == 5
    _check_two_workers(rows)
    plan = summary["plan"]
    assert plan["policy"] == "ws" and plan["cost_source"] in ("analytic", "store")
    # longest first: the head of the queue is the first task of one of the two workers. Which
    # tasks come next on which worker depends on how fast each worker loads its teacher and on
    # Dask's stealing (a worker was seen running queue positions 1, 3, 2): not asserted.
    per_worker = _by_device(rows)  # each device's rows by start time
    assert plan["queue_order"][0] in {r[0]["task"] for r in per_worker.values()}


def test_mpi_binpack_runs_two_ranks_that_follow_the_broadcast_plan(mpi_binpack):
    run_dir, done = mpi_binpack
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_tasks(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["n_devices"] == 2
    devices = _check_two_workers(rows)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["policy"] == "binpack"
    for d, names in enumerate(plan["assignment"]):
        assert {r["task"] for r in devices[f"cpuset{d}"]} == set(names)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["gpus"] == 2 and config["config"]["backend"] == "mpi"


def test_every_backend_and_scheduler_gives_the_same_blocks_and_accepted_set(
    local_rr, dask_ws, mpi_binpack
):
    runs = [local_rr, dask_ws, mpi_binpack[0]]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert all(s["status"] == "complete" for s in summaries)
    rows = [{row["task"]: row for row in read_tasks(r)} for r in runs]
    names = sorted(rows[0])
    assert all(sorted(r) == names for r in rows)
    for name in names:
        reference = RunDir(local_rr).load_block(name)
        for other in runs[1:]:
            weights = RunDir(other).load_block(name)
            assert len(weights) == len(reference)
            for a, b in zip(reference, weights, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{name} in {other}")
        assert {r[name]["accuracy"] for r in rows} == {rows[0][name]["accuracy"]}
        assert {r[name]["accepted"] for r in rows} == {rows[0][name]["accepted"]}
    assert summaries[0]["accepted"] == summaries[1]["accepted"] == summaries[2]["accepted"]
    assert 0 < len(summaries[0]["accepted"]) < len(rows[0])  # a real selection: some in, some out


def test_block_weights_do_not_depend_on_other_threads_drawing_from_python_random():
    """A Dask worker's event loop draws from `random` while a task builds its block."""
    import random
    import threading

    from greenkd.distill.targets import find, make_block
    from greenkd.models import vgg16

    target = find(vgg16(width=1 / 16))[1]
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()

    thread = threading.Thread(target=draw, daemon=True)
    thread.start()
    try:
        blocks = [make_block(target, seed=7).get_weights() for _ in range(4)]
    finally:
        stop.set()
        thread.join()
    for weights in blocks[1:]:
        for a, b in zip(blocks[0], weights, strict=True):
            np.testing.assert_array_equal(a, b)
    other = make_block(target, seed=8).get_weights()
    assert not np.array_equal(blocks[0][0], other[0])


def test_fused_workers_train_their_lists_in_one_pass_with_the_blocks_of_independent_runs(
    local_binpack_fused, local_rr
):
    rows = read_tasks(local_binpack_fused)
    summary = json.loads((local_binpack_fused / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["n_targets"] == 5
    plan = json.loads((local_binpack_fused / "plan.json").read_text())
    assert plan["policy"] == "binpack" and plan["fused"]
    devices = _by_device(rows)
    assert sorted(devices) == ["cpuset0", "cpuset1"]
    for d, names in enumerate(plan["assignment"]):
        group = devices[f"cpuset{d}"]
        assert {r["task"] for r in group} == set(names)
        assert len({r["pid"] for r in group}) == 1  # one worker process per device
        if len(names) > 1:  # one pass for the whole list: one group, one interval
            assert {r["fused_group"] for r in group} == {",".join(names)}
            assert len({(r["start"], r["end"]) for r in group}) == 1
    assert devices["cpuset0"][0]["pid"] != devices["cpuset1"][0]["pid"]
    # the same blocks as one task at a time (tests/test_train.py: within float noise)
    independent = {r["task"]: r for r in read_tasks(local_rr)}
    for row in rows:
        name = row["task"]
        for a, b in zip(
            RunDir(local_rr).load_block(name),
            RunDir(local_binpack_fused).load_block(name),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=name)
        assert abs(float(row["accuracy"]) - float(independent[name]["accuracy"])) <= 2 / 128
