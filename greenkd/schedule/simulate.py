"""The plan simulator behind `greenkd plan`: predicted makespan, speedup and loads per policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from greenkd.schedule.core import Plan, TaskCost, device_load
from greenkd.schedule.policies import plan

if TYPE_CHECKING:
    from rich.table import Table


@dataclass(frozen=True)
class Prediction:
    """One policy on one device count, against the same mode's 1-device makespan."""

    plan: Plan
    serial_s: float

    @property
    def speedup(self) -> float:
        return (
            self.serial_s / self.plan.predicted_makespan_s
            if self.plan.predicted_makespan_s
            else 1.0
        )

    @property
    def efficiency(self) -> float:
        return self.speedup / self.plan.n_devices

    @property
    def ratio_to_bound(self) -> float:
        bound = self.plan.lower_bound_s
        return self.plan.predicted_makespan_s / bound if bound else 1.0

    def to_dict(self) -> dict[str, object]:
        """The plan's fields plus serial_s, speedup, efficiency and makespan/bound."""
        return {
            **self.plan.to_dict(),
            "serial_s": self.serial_s,
            "speedup": self.speedup,
            "efficiency": self.efficiency,
            "makespan_over_bound": self.ratio_to_bound,
        }


def simulate(
    costs: Sequence[TaskCost],
    device_counts: Sequence[int],
    policies: Sequence[str],
    *,
    fused: bool = False,
    cost_source: str = "given",
    time_limit_s: float = 5.0,
) -> list[Prediction]:
    """Plan every (policy, device count) pair without running anything."""
    out = []
    for policy in policies:
        for n in device_counts:
            p = plan(
                costs, n, policy, fused=fused, cost_source=cost_source, time_limit_s=time_limit_s
            )
            out.append(Prediction(p, device_load(list(costs), p.fused)))
    return out


def format_seconds(seconds: float) -> str:
    """Three significant figures or whole seconds: 972, 88.5, 3.21."""
    if seconds >= 100:
        return f"{seconds:.0f}"
    return f"{seconds:.1f}" if seconds >= 10 else f"{seconds:.2f}"


def predictions_table(predictions: Sequence[Prediction], title: str = "") -> Table:
    """A rich table: one row per policy and device count, loads per device in device order."""
    from rich.table import Table

    table = Table(title=title or None)
    for header in ("policy", "devices", "makespan s", "bound s", "x bound", "speedup", "effic."):
        table.add_column(header, justify="left" if header == "policy" else "right", no_wrap=True)
    table.add_column("per-device load s")
    for pr in predictions:
        p = pr.plan
        name = p.policy if p.optimal is not False else f"{p.policy} (not proven)"
        table.add_row(
            name + (" fused" if p.fused else ""),
            str(p.n_devices),
            format_seconds(p.predicted_makespan_s),
            format_seconds(p.lower_bound_s),
            f"{pr.ratio_to_bound:.3f}",
            f"{pr.speedup:.2f}",
            f"{pr.efficiency:.2f}",
            " ".join(format_seconds(load) for load in p.predicted_load_s),
        )
    return table
