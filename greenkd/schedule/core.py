"""Task costs, plans and the load arithmetic every policy shares (paper §3.3, issue 7).

A device's load is the sum of its tasks' seconds when tasks run independently;
when they are fused (one teacher pass per batch up to the deepest target), the
teacher prefix is paid once: max(prefix_seconds) + sum(seconds - prefix_seconds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from greenkd.errors import GreenkdError


@dataclass(frozen=True)
class TaskCost:
    """One layer task's cost: whole seconds run alone, of which prefix_seconds is the teacher prefix."""

    name: str
    seconds: float
    prefix_seconds: float = 0.0

    @property
    def own_seconds(self) -> float:
        """The part that fusing cannot share: the block's own training and evaluation."""
        return self.seconds - self.prefix_seconds


@dataclass(frozen=True)
class Plan:
    """Which device runs which tasks, and what the cost model predicts for it."""

    policy: str
    n_devices: int
    assignment: tuple[tuple[str, ...], ...]  # per device, task names in execution order
    queue_order: tuple[str, ...]  # order tasks are offered (ws); model order for static plans
    predicted_load_s: tuple[float, ...]
    predicted_makespan_s: float
    lower_bound_s: float
    cost_source: str
    fused: bool
    optimal: bool | None  # opt only: True when proven optimal

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (tuples become lists)."""
        return {
            "policy": self.policy,
            "n_devices": self.n_devices,
            "assignment": [list(names) for names in self.assignment],
            "queue_order": list(self.queue_order),
            "predicted_load_s": list(self.predicted_load_s),
            "predicted_makespan_s": self.predicted_makespan_s,
            "lower_bound_s": self.lower_bound_s,
            "cost_source": self.cost_source,
            "fused": self.fused,
            "optimal": self.optimal,
        }


def check_costs(costs: Sequence[TaskCost]) -> None:
    """Raise GreenkdError for an empty list, duplicate names or impossible seconds."""
    if not costs:
        raise GreenkdError("no tasks to schedule: the cost list is empty")
    seen: set[str] = set()
    for c in costs:
        if c.name in seen:
            raise GreenkdError(
                f"task {c.name!r} appears twice in the cost list; names must be unique"
            )
        seen.add(c.name)
        if not (math.isfinite(c.seconds) and c.seconds >= 0):
            raise GreenkdError(
                f"task {c.name!r} has seconds={c.seconds}; need a finite number >= 0"
            )
        if not (math.isfinite(c.prefix_seconds) and 0 <= c.prefix_seconds <= c.seconds):
            raise GreenkdError(
                f"task {c.name!r} has prefix_seconds={c.prefix_seconds}; need 0 <= prefix <= "
                f"seconds ({c.seconds})"
            )


def device_load(tasks: Sequence[TaskCost], fused: bool = False) -> float:
    """Seconds one device needs for `tasks`: their sum, or with fusing one shared prefix plus the rest."""
    if not tasks:
        return 0.0
    if not fused:
        return float(sum(t.seconds for t in tasks))
    return float(max(t.prefix_seconds for t in tasks) + sum(t.own_seconds for t in tasks))


def _by_name(costs: Sequence[TaskCost] | Mapping[str, TaskCost]) -> Mapping[str, TaskCost]:
    return costs if isinstance(costs, Mapping) else {c.name: c for c in costs}


def device_loads(
    assignment: Sequence[Sequence[str]],
    costs: Sequence[TaskCost] | Mapping[str, TaskCost],
    fused: bool = False,
) -> list[float]:
    """Per-device loads of an assignment given as task names."""
    table = _by_name(costs)
    try:
        return [device_load([table[name] for name in names], fused) for names in assignment]
    except KeyError as exc:
        raise GreenkdError(f"assignment names task {exc.args[0]!r}, which has no cost") from None


def makespan(
    assignment: Sequence[Sequence[str]],
    costs: Sequence[TaskCost] | Mapping[str, TaskCost],
    fused: bool = False,
) -> float:
    """The busiest device's load: when the last device finishes."""
    return max(device_loads(assignment, costs, fused), default=0.0)


def lower_bound(costs: Sequence[TaskCost], n: int, fused: bool = False) -> float:
    """max(sum/n, max): no schedule on n devices can finish sooner.

    Fused: every task's own part plus at least one device paying the deepest prefix.
    """
    if n < 1:
        raise GreenkdError(f"number of devices must be >= 1, got {n}")
    if not costs:
        return 0.0
    longest = max(c.seconds for c in costs)
    if not fused:
        return max(sum(c.seconds for c in costs) / n, longest)
    shared = sum(c.own_seconds for c in costs) + max(c.prefix_seconds for c in costs)
    return max(shared / n, longest)
