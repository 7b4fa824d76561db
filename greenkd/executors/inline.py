"""The inline executor: every task in this process, on the run's one device, in model order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from greenkd.devices import Device
from greenkd.executors.base import Progress, TaskResult, Work, check_plan


class InlineExecutor:
    """Trains the whole plan here: one device that is this process's GPU or all of its cores."""

    def __init__(self) -> None:
        self.lost_workers: list[dict[str, Any]] = []  # nothing to lose: no worker processes

    def __call__(
        self, work: Work, devices: list[Device], progress: Progress
    ) -> Iterator[TaskResult]:
        check_plan(work.plan, devices, "inline")
        yield from work.here.train(work.names, devices[0].label, progress)
