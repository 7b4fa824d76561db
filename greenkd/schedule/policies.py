"""The scheduling policies (paper §3.3, issue 5 and 7): rr, binpack, ws, opt -> a Plan."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import binpacking

from greenkd.errors import GreenkdError
from greenkd.schedule.core import Plan, TaskCost, check_costs, device_load, lower_bound
from greenkd.schedule.optimal import list_schedule, optimal_groups

POLICIES = ("rr", "binpack", "ws", "opt")


def _round_robin(costs: Sequence[TaskCost], n: int) -> list[list[int]]:
    """Task i on device i mod n, in model order (the paper's naive policy)."""
    return [list(range(d, len(costs), n)) for d in range(n)]


def _worst_fit_decreasing(costs: Sequence[TaskCost], n: int, fused: bool) -> list[list[int]]:
    """The paper's bin packing: the `binpacking` library's WFD over per-task seconds.

    Fused, a device's load is not the sum of its tasks' seconds (its pass runs the teacher
    prefix once, up to its deepest task), and packing whole seconds gave the default run's two
    workers passes of 48.6 s and 28.0 s: then the same decreasing order goes to the device whose
    fused load grows least (`optimal.list_schedule`), the worst fit under the fused load.
    """
    if fused:
        groups = list_schedule([c.prefix_seconds for c in costs], [c.own_seconds for c in costs], n)
        return [sorted(g) for g in groups]
    bins = binpacking.to_constant_bin_number({i: c.seconds for i, c in enumerate(costs)}, n)
    return [sorted(b) for b in bins]


def queue_order(costs: Sequence[TaskCost]) -> list[int]:
    """The order a work queue offers tasks: longest first, model order among equals."""
    return sorted(range(len(costs)), key=lambda i: (-costs[i].seconds, i))


def _greedy_list(costs: Sequence[TaskCost], n: int, order: Sequence[int]) -> list[list[int]]:
    """Simulate a shared queue: whichever device is idle first takes the next task."""
    idle = [(0.0, d) for d in range(n)]
    groups: list[list[int]] = [[] for _ in range(n)]
    for i in order:
        free_s, d = heapq.heappop(idle)
        groups[d].append(i)
        heapq.heappush(idle, (free_s + costs[i].seconds, d))
    return groups


def plan(
    costs: Sequence[TaskCost],
    n_devices: int,
    policy: str,
    *,
    fused: bool = False,
    cost_source: str = "given",
    time_limit_s: float = 5.0,
) -> Plan:
    """Assign tasks (given in model order) to n_devices with `policy` and predict the loads.

    `ws` is dynamic: the plan is the simulated outcome of a shared queue, which runs
    one task at a time per device, so its prediction never shares a teacher pass
    (its `fused` is False whatever was asked).
    """
    if policy not in POLICIES:
        raise GreenkdError(f"unknown scheduler {policy!r}: use one of {', '.join(POLICIES)}")
    if n_devices < 1:
        raise GreenkdError(f"number of devices must be >= 1, got {n_devices}")
    costs = list(costs)
    check_costs(costs)
    optimal: bool | None = None
    offered = list(range(len(costs)))
    if policy == "rr":
        groups = _round_robin(costs, n_devices)
    elif policy == "binpack":
        groups = _worst_fit_decreasing(costs, n_devices, fused)
    elif policy == "ws":
        fused = False
        offered = queue_order(costs)
        groups = _greedy_list(costs, n_devices, offered)
    else:
        groups, optimal = optimal_groups(costs, n_devices, fused, time_limit_s)
    loads = tuple(device_load([costs[i] for i in g], fused) for g in groups)
    return Plan(
        policy=policy,
        n_devices=n_devices,
        assignment=tuple(tuple(costs[i].name for i in g) for g in groups),
        queue_order=tuple(costs[i].name for i in offered),
        predicted_load_s=loads,
        predicted_makespan_s=max(loads),
        lower_bound_s=lower_bound(costs, n_devices, fused),
        cost_source=cost_source,
        fused=fused,
        optimal=optimal,
    )
