"""rr, binpack and ws plans, the load arithmetic and the VGG16 reference figures (issue 7)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import binpacking
import pytest

from greenkd.errors import GreenkdError
from greenkd.schedule import (
    Plan,
    TaskCost,
    device_load,
    load_timings_file,
    lower_bound,
    makespan,
    plan,
)

VGG16_CSV = Path(__file__).resolve().parents[1] / "benchmarks" / "schedule_vgg16_times.csv"


def _tasks(seconds, prefix=None) -> list[TaskCost]:
    prefix = prefix or [0.0] * len(seconds)
    return [
        TaskCost(f"t{i}", float(s), float(p))
        for i, (s, p) in enumerate(zip(seconds, prefix, strict=True))
    ]


def test_vgg16_reference_times_give_the_issue_figures_on_four_devices():
    costs = load_timings_file(VGG16_CSV)
    assert len(costs) == 13 and costs[0].name == "block1_conv1"
    assert sum(c.seconds for c in costs) == 3554
    assert lower_bound(costs, 4) == pytest.approx(888.5)
    rr = plan(costs, 4, "rr")
    wfd = plan(costs, 4, "binpack")
    opt = plan(costs, 4, "opt")
    assert rr.predicted_makespan_s == 1107
    assert wfd.predicted_makespan_s == 972
    assert opt.predicted_makespan_s == 897 and opt.optimal is True
    assert opt.predicted_makespan_s < 1.01 * opt.lower_bound_s
    # the paper's Fig. 6c: round robin overloads GPU0 and GPU1
    assert min(rr.predicted_load_s[:2]) > max(rr.predicted_load_s[2:]) + 200


def test_vgg16_reference_times_put_the_early_layers_first():
    costs = load_timings_file(VGG16_CSV)
    early = min(c.seconds for c in costs[:2])
    assert all(c.seconds < early for c in costs[2:])


def test_round_robin_gives_task_i_to_device_i_mod_n_in_model_order():
    costs = _tasks(range(1, 14))
    p = plan(costs, 4, "rr")
    assert p.assignment[0] == ("t0", "t4", "t8", "t12")
    assert p.assignment[3] == ("t3", "t7", "t11")
    assert p.predicted_load_s == (1 + 5 + 9 + 13, 2 + 6 + 10, 3 + 7 + 11, 4 + 8 + 12)
    assert p.optimal is None and p.queue_order == tuple(c.name for c in costs)


def test_binpack_uses_the_binpacking_library_worst_fit_decreasing():
    rng = random.Random(5)
    costs = _tasks([rng.uniform(1, 50) for _ in range(17)])
    p = plan(costs, 3, "binpack")
    bins = binpacking.to_constant_bin_number([c.seconds for c in costs], 3)
    assert sorted(p.predicted_load_s) == pytest.approx(sorted(sum(b) for b in bins))
    # each device runs its tasks in model order
    for device in p.assignment:
        assert list(device) == sorted(device, key=lambda name: int(name[1:]))


def test_work_stealing_simulates_a_shared_queue_longest_first():
    # model order 3,3,3,4,5: a queue in model order would end at 11 s; longest-first ends at 10 s
    costs = _tasks([3, 3, 3, 4, 5])
    p = plan(costs, 2, "ws")
    assert p.queue_order == ("t4", "t3", "t0", "t1", "t2")
    assert p.assignment == (("t4", "t1"), ("t3", "t0", "t2"))
    assert p.predicted_load_s == (8, 10) and p.predicted_makespan_s == 10
    assert plan(costs, 2, "opt").predicted_makespan_s == 9


def test_work_stealing_never_shares_a_teacher_pass():
    costs = _tasks([10, 10], [8, 8])
    p = plan(costs, 1, "ws", fused=True)
    assert p.fused is False and p.predicted_makespan_s == 20
    assert plan(costs, 1, "rr", fused=True).predicted_makespan_s == 12


@pytest.mark.parametrize("policy", ["rr", "binpack", "ws", "opt"])
def test_every_policy_respects_the_lower_bound_and_graham_limits(policy):
    rng = random.Random(["rr", "binpack", "ws", "opt"].index(policy))
    for _ in range(15):
        costs = _tasks([rng.lognormvariate(3, 0.8) for _ in range(rng.randint(3, 18))])
        for n in (1, 2, 3, 4, 7):
            p = plan(costs, n, policy)
            names = sorted(t for d in p.assignment for t in d)
            assert names == sorted(c.name for c in costs)
            assert p.predicted_makespan_s >= p.lower_bound_s - 1e-9
            assert p.lower_bound_s == lower_bound(costs, n)
            if n == 1:
                assert p.predicted_makespan_s == pytest.approx(sum(c.seconds for c in costs))
            if policy in (
                "binpack",
                "ws",
            ):  # LPT: at most (4/3 - 1/3n) of the optimum (Graham 1969)
                best = plan(costs, n, "opt").predicted_makespan_s
                assert p.predicted_makespan_s <= (4 / 3 - 1 / (3 * n)) * best + 1e-9


def test_fused_device_load_pays_the_deepest_prefix_once():
    tasks = [TaskCost("a", 10, 6), TaskCost("b", 8, 5), TaskCost("c", 3, 0)]
    assert device_load(tasks) == 21
    assert device_load(tasks, fused=True) == 6 + 4 + 3 + 3
    assert device_load([]) == 0
    assert makespan([("a",), ("b", "c")], tasks, fused=True) == 11
    assert lower_bound(tasks, 2, fused=True) == pytest.approx(max(10, (4 + 3 + 3 + 6) / 2))


def test_plan_to_dict_is_json_and_maps_tasks_to_devices():
    p = plan(_tasks([4, 3, 2]), 2, "opt", cost_source="store")
    d = json.loads(json.dumps(p.to_dict()))
    assert d["assignment"] == [["t0"], ["t1", "t2"]] and d["cost_source"] == "store"
    assert d["predicted_makespan_s"] == 5 and d["optimal"] is True
    device_of = {name: k for k, names in enumerate(p.assignment) for name in names}
    assert device_of == {"t0": 0, "t1": 1, "t2": 1}
    assert isinstance(p, Plan)


@pytest.mark.parametrize(
    ("costs", "n", "policy", "message"),
    [
        (_tasks([1, 2]), 2, "lpt", "unknown scheduler 'lpt'"),
        (_tasks([1, 2]), 0, "rr", "devices must be >= 1"),
        ([], 2, "rr", "no tasks"),
        ([TaskCost("a", 1), TaskCost("a", 2)], 2, "rr", "appears twice"),
        ([TaskCost("a", -1)], 1, "rr", "seconds=-1"),
        ([TaskCost("a", 1, 2)], 1, "rr", "prefix_seconds=2"),
        ([TaskCost("a", float("nan"))], 1, "opt", "finite"),
    ],
)
def test_bad_plan_requests_are_user_errors(costs, n, policy, message):
    with pytest.raises(GreenkdError, match=message):
        plan(costs, n, policy)
