"""`--sched opt` against exhaustive search: exact wherever every assignment can be enumerated."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from greenkd.schedule import TaskCost, lower_bound, makespan, plan

VGG16_SECONDS = [352, 618, 290, 327, 221, 262, 257, 201, 222, 227, 187, 193, 197]


def _half_loads(own: np.ndarray, pre: np.ndarray, n: int, first_fixed: bool):
    m = len(own)
    rows = itertools.product(range(n), repeat=m - 1 if first_fixed else m)
    digits = np.array([(0, *r) if first_fixed else r for r in rows], dtype=np.int8).reshape(-1, m)
    on = digits[:, :, None] == np.arange(n)[None, None, :]  # (assignments, tasks, devices)
    own_load = np.einsum("kmn,m->kn", on, own)
    pre_max = np.where(on, pre[None, :, None], 0.0).max(axis=1)
    return own_load, pre_max


def exhaustive_makespan(seconds, n: int, prefix=None) -> float:
    """Best makespan over all n^(m-1) assignments (task 0 pinned: relabelling devices changes nothing).

    Meet in the middle: every assignment of the first half against every one of the second.
    Written with numpy, sharing no code with greenkd's optimiser.
    """
    seconds = np.asarray(seconds, float)
    pre = np.zeros(len(seconds)) if prefix is None else np.asarray(prefix, float)
    own = seconds - pre
    split = len(seconds) // 2
    a_own, a_pre = _half_loads(own[:split], pre[:split], n, True)
    b_own, b_pre = _half_loads(own[split:], pre[split:], n, False)
    best = np.inf
    for s in range(0, len(a_own), 128):
        loads = a_own[s : s + 128, None, :] + b_own[None]
        if prefix is not None:
            loads = loads + np.maximum(a_pre[s : s + 128, None, :], b_pre[None])
        best = min(best, float(loads.max(axis=2).min()))
    return best


def _tasks(seconds, prefix=None) -> list[TaskCost]:
    prefix = prefix or [0.0] * len(seconds)
    return [
        TaskCost(f"t{i}", float(s), float(p))
        for i, (s, p) in enumerate(zip(seconds, prefix, strict=True))
    ]


def _assert_valid(p, costs) -> None:
    names = sorted(name for device in p.assignment for name in device)
    assert names == sorted(c.name for c in costs)
    assert len(p.assignment) == p.n_devices
    assert p.predicted_makespan_s == pytest.approx(makespan(p.assignment, costs, p.fused))


@pytest.mark.parametrize("seed", range(24))
def test_opt_matches_exhaustive_search_on_small_random_lists(seed):
    rng = random.Random(seed)
    m, n = rng.randint(4, 10), rng.randint(2, 4)
    seconds = [rng.choice([rng.uniform(1, 100), rng.randint(1, 20)]) for _ in range(m)]
    costs = _tasks(seconds)
    p = plan(costs, n, "opt")
    _assert_valid(p, costs)
    best = exhaustive_makespan(seconds, n)
    assert p.optimal is True
    assert best <= p.predicted_makespan_s <= best * 1.001


@pytest.mark.parametrize("seed", range(24))
def test_fused_opt_matches_exhaustive_search_with_shared_prefixes(seed):
    rng = random.Random(1000 + seed)
    m, n = rng.randint(4, 9), rng.randint(2, 4)
    # deeper tasks have longer teacher prefixes, as in a real network
    prefix = sorted(rng.uniform(0, 50) for _ in range(m))
    seconds = [p + rng.uniform(1, 40) for p in prefix]
    costs = _tasks(seconds, prefix)
    p = plan(costs, n, "opt", fused=True)
    _assert_valid(p, costs)
    best = exhaustive_makespan(seconds, n, prefix)
    assert p.fused and p.optimal is True
    assert best <= p.predicted_makespan_s <= best * 1.001
    # and fusing is worth it: never worse than the independent optimum
    assert p.predicted_makespan_s <= exhaustive_makespan(seconds, n) + 1e-9


@pytest.mark.parametrize("n", [2, 3])
def test_fused_opt_is_exact_when_some_tasks_are_all_prefix_or_free(n):
    # own seconds of 0 (a task that is all teacher prefix) and a 0-second task
    seconds = [5, 5, 0, 3, 9, 9, 4]
    prefix = [5, 5, 0, 1, 8, 9, 0]
    costs = _tasks(seconds, prefix)
    for fused in (False, True):
        p = plan(costs, n, "opt", fused=fused)
        best = exhaustive_makespan(seconds, n, prefix if fused else None)
        assert p.optimal is True and p.predicted_makespan_s == pytest.approx(best)


def test_sixteen_near_equal_tasks_on_three_devices_need_six_on_one():
    rng = random.Random(7)
    seconds = [100 + rng.uniform(-1, 1) for _ in range(16)]
    costs = _tasks(seconds)
    p = plan(costs, 3, "opt")
    best = exhaustive_makespan(seconds, 3)
    # the optimum sits ~12% above max(sum/n, max): bound-based checks would be meaningless here
    assert best > 1.1 * lower_bound(costs, 3)
    assert p.optimal is True
    assert best <= p.predicted_makespan_s <= best * 1.001
    assert max(len(d) for d in p.assignment) == 6
    assert p.predicted_makespan_s == pytest.approx(sum(sorted(seconds)[:6]))


def test_opt_on_the_vgg16_reference_times_is_the_exhaustive_897_s():
    costs = _tasks(VGG16_SECONDS)
    p = plan(costs, 4, "opt")
    assert exhaustive_makespan(VGG16_SECONDS, 4) == 897
    assert p.predicted_makespan_s == 897 and p.optimal is True


def test_opt_is_never_worse_than_the_other_policies():
    rng = random.Random(3)
    for _ in range(10):
        costs = _tasks([rng.lognormvariate(4, 0.6) for _ in range(rng.randint(8, 20))])
        for n in (2, 3, 5):
            best = plan(costs, n, "opt").predicted_makespan_s
            for policy in ("rr", "binpack", "ws"):
                assert best <= plan(costs, n, policy).predicted_makespan_s + 1e-9


def test_opt_with_more_devices_than_tasks_puts_one_task_per_device():
    costs = _tasks([5, 9, 2])
    p = plan(costs, 5, "opt")
    assert p.optimal is True and p.predicted_makespan_s == 9
    assert sorted(len(d) for d in p.assignment) == [0, 0, 1, 1, 1]


def test_opt_past_its_time_cap_returns_a_good_unproven_plan():
    rng = random.Random(11)
    # 40 tasks with real-valued times on 8 devices: no proof fits in a millisecond
    costs = _tasks([rng.uniform(10, 500) for _ in range(40)])
    p = plan(costs, 8, "opt", time_limit_s=0.001)
    _assert_valid(p, costs)
    assert p.optimal is False
    assert p.predicted_makespan_s <= plan(costs, 8, "binpack").predicted_makespan_s
    assert p.predicted_makespan_s < 1.01 * p.lower_bound_s
