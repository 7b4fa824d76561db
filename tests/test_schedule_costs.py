"""Where costs come from: timing files, the timing store, the analytic model."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from greenkd.errors import GreenkdError
from greenkd.schedule import (
    TaskCost,
    TimingStore,
    analytic_costs,
    default_store_path,
    load_timings_file,
    timing_key,
)

# VGG16 (CIFAR, 32 px): (in channels, out channels, side) of its 13 3x3 convolutions.
VGG16_CONVS = [(3, 64, 32), (64, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8),
               (256, 256, 8), (256, 256, 8), (256, 512, 4), (512, 512, 4), (512, 512, 4),
               (512, 512, 2), (512, 512, 2), (512, 512, 2)]  # fmt: skip
VGG16_REFERENCE_S = [352, 618, 290, 327, 221, 262, 257, 201, 222, 227, 187, 193, 197]


def spearman(a, b) -> float:
    """Rank correlation (no ties in these lists)."""
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- timing files -------------------------------------------------------------------------


def test_task_seconds_csv_keeps_model_order_and_prefix(tmp_path):
    path = _write(
        tmp_path / "t.csv",
        "# measured on host x\ntask,seconds,prefix_seconds\nconv2,5.5,1\nconv1,7,0.5\n",
    )
    assert load_timings_file(path) == [TaskCost("conv2", 5.5, 1.0), TaskCost("conv1", 7.0, 0.5)]


def test_run_tasks_csv_uses_end_minus_start_and_seconds_prefix(tmp_path):
    path = _write(
        tmp_path / "tasks.csv",
        "task,device,host,pid,start,end,seconds_train,seconds_eval,seconds_prefix,accuracy,accepted\n"
        "block1_conv1,0,h,11,1700000000.0,1700000352.5,300,40,30.25,0.9,true\n"
        "block1_conv2,1,h,12,1700000001.0,1700000619.0,550,50,60,0.88,false\n",
    )
    costs = load_timings_file(path)
    assert [c.name for c in costs] == ["block1_conv1", "block1_conv2"]
    assert costs[0].seconds == pytest.approx(352.5) and costs[0].prefix_seconds == 30.25
    assert costs[1].seconds == pytest.approx(618.0)


@pytest.mark.parametrize("column", ["task_index", "index"])
def test_index_column_restores_model_order_of_rows_written_as_tasks_finished(tmp_path, column):
    path = _write(tmp_path / "tasks.csv", f"task,{column},start,end\nc,2,0,3\na,0,0,1\nb,1,0,2\n")
    assert [(c.name, c.seconds) for c in load_timings_file(path)] == [("a", 1), ("b", 2), ("c", 3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seconds\n1\n", "'task' column"),
        ("task,device\na,0\n", "'seconds' column or 'start' and 'end'"),
        ("task,seconds\na,fast\n", "row 2: column 'seconds' is 'fast'"),
        ("task,seconds\na,1\na,2\n", "row 3: task 'a' appears twice"),
        ("task,seconds\n", "no task rows"),
        ("task,seconds\na,-4\n", "prefix seconds"),
        ("task,seconds,prefix_seconds\na,4,5\n", "prefix seconds \\(5.0\\) <= seconds \\(4.0\\)"),
        ("task,seconds\n,4\n", "empty task name"),
        ("task,seconds\na,inf\n", "not a finite number"),
    ],
)
def test_malformed_timings_files_are_one_line_user_errors(tmp_path, text, message):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(GreenkdError, match=message) as info:
        load_timings_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_or_binary_timings_files_are_user_errors(tmp_path):
    with pytest.raises(GreenkdError, match="does not exist"):
        load_timings_file(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00task")
    with pytest.raises(GreenkdError, match="cannot be read"):
        load_timings_file(tmp_path / "bin.csv")
    with pytest.raises(GreenkdError, match="cannot be read"):
        load_timings_file(tmp_path)


# --- timing store -------------------------------------------------------------------------


def test_timing_key_ignores_settings_order_but_not_their_values():
    a = timing_key("vgg16", "cifar10", {"epochs": 2, "batch_size": 64}, "RTX 2080 Ti x1")
    assert a == timing_key("vgg16", "cifar10", {"batch_size": 64, "epochs": 2}, "RTX 2080 Ti x1")
    assert a != timing_key("vgg16", "cifar10", {"batch_size": 128, "epochs": 2}, "RTX 2080 Ti x1")
    assert a != timing_key("vgg16", "cifar10", {"epochs": 2, "batch_size": 64}, "cpu x2")
    assert a.startswith("vgg16|cifar10|RTX 2080 Ti x1|")


def test_store_round_trip_merges_tasks_and_keeps_other_keys(tmp_path):
    store = TimingStore(tmp_path / "deep" / "timings.json")
    assert store.get("k1") is None
    store.put("k1", [TaskCost("a", 10, 2), TaskCost("b", 5)])
    store.put("k2", {"z": TaskCost("z", 1)})
    store.put("k1", [TaskCost("b", 6, 1), TaskCost("c", 7)])  # newer b wins, a is kept
    reread = TimingStore(tmp_path / "deep" / "timings.json")
    assert reread.get("k1") == {
        "a": TaskCost("a", 10, 2),
        "b": TaskCost("b", 6, 1),
        "c": TaskCost("c", 7),
    }
    assert reread.get("k2") == {"z": TaskCost("z", 1)}
    assert reread.lookup("k1", ["c", "a"]) == [TaskCost("c", 7), TaskCost("a", 10, 2)]
    assert reread.lookup("k1", ["a", "missing"]) is None
    assert not list((tmp_path / "deep").glob(".timings.json.tmp"))


def test_store_path_comes_from_env_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENKD_TIMINGS", str(tmp_path / "env.json"))
    TimingStore().put("k", [TaskCost("a", 1)])
    assert (
        json.loads((tmp_path / "env.json").read_text())["entries"]["k"]["tasks"]["a"]["seconds"]
        == 1
    )
    monkeypatch.delenv("GREENKD_TIMINGS")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / ".cache" / "greenkd" / "timings.json"
    assert TimingStore(tmp_path / "arg.json").path == tmp_path / "arg.json"


@pytest.mark.parametrize(
    "text", ["{not json", '["a list"]', '{"entries": {"k": {"tasks": {"a": 3}}}}']
)
def test_corrupt_store_is_a_user_error_naming_the_file(tmp_path, text):
    path = _write(tmp_path / "timings.json", text)
    with pytest.raises(GreenkdError, match=r"timing store .*timings\.json") as info:
        TimingStore(path).get("k")
    assert "GREENKD_TIMINGS" in str(info.value)


def _put_many(path: str, worker: int, go) -> None:
    store = TimingStore(path)
    go.wait(30)  # all writers start together, so their read-merge-writes overlap
    for i in range(40):
        store.put("shared", [TaskCost(f"w{worker}_t{i}", float(i))])


def test_concurrent_runs_do_not_lose_each_others_times(tmp_path):
    path = str(tmp_path / "timings.json")
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_put_many, args=(path, w, go)) for w in range(4)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(TimingStore(path).get("shared")) == 4 * 40


# --- analytic model -----------------------------------------------------------------------


def _vgg16_targets() -> list[dict]:
    out, prefix = [], 0.0
    for i, (cin, cout, side) in enumerate(VGG16_CONVS):
        prefix += 2 * side * side * 9 * cin * cout
        out.append({
            "name": f"conv{i}",
            "prefix_flops": prefix,
            "block_flops": 2 * side * side * (9 * cin + cin * cout),
            "input_elements": side * side * cin,
            "output_elements": side * side * cout,
        })  # fmt: skip
    return out


def test_analytic_costs_rank_vgg16_like_the_reference_runs_not_like_flops():
    costs = analytic_costs(_vgg16_targets(), images=100_000)
    seconds = [c.seconds for c in costs]
    assert max(range(13), key=seconds.__getitem__) == 1  # block1_conv2: largest activations
    assert spearman(seconds, VGG16_REFERENCE_S) > 0.9
    flops_only = analytic_costs(_vgg16_targets(), element_flops=0, fixed_full_passes=0)
    assert spearman([c.seconds for c in flops_only], VGG16_REFERENCE_S) < -0.5
    # the shared part is the teacher prefix, which grows with depth
    prefixes = [c.prefix_seconds for c in costs]
    assert prefixes == sorted(prefixes) and all(0 < c.prefix_seconds < c.seconds for c in costs)


def test_analytic_costs_accept_distill_target_dicts_with_shapes():
    as_targets = [
        {
            "name": t["name"],
            "prefix_flops": t["prefix_flops"],
            "flops_after": t["block_flops"],
            "input_shape": (side, side, cin),
            "output_shape": (side, side, cout),
        }
        for t, (cin, cout, side) in zip(_vgg16_targets(), VGG16_CONVS, strict=True)
    ]
    assert analytic_costs(as_targets) == analytic_costs(_vgg16_targets())


def test_analytic_costs_scale_with_images_and_reject_missing_numbers():
    one = analytic_costs(_vgg16_targets(), images=1)
    ten = analytic_costs(_vgg16_targets(), images=10)
    assert ten[5].seconds == pytest.approx(10 * one[5].seconds)
    with pytest.raises(GreenkdError, match="prefix_flops"):
        analytic_costs([{"name": "x", "block_flops": 1, "input_elements": 1, "output_elements": 1}])
    with pytest.raises(GreenkdError, match="flops_per_s"):
        analytic_costs(_vgg16_targets(), flops_per_s=0)
