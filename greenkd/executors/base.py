"""What every executor speaks: task results, progress, the work it is given and the executor protocol.

An executor runs a run's layer tasks somewhere (this process, local worker
processes, MPI ranks, a Dask cluster) and yields `TaskResult`s as they finish.
It knows nothing of distillation: it is given a `Work` — the plan, a picklable
`TaskSource` that a worker process loads once it is bound to its device, and
the same tasks already loaded in this process — and moves task names out and
results back. No framework import here: workers bind their device first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from greenkd.config import RunConfig
from greenkd.devices import Device
from greenkd.errors import GreenkdError
from greenkd.schedule import Plan
from profilers.hostid import host_name


@dataclass
class TaskResult:
    """What a worker sends back for one layer task: weights as numpy arrays plus metrics."""

    name: str
    index: int
    weights: list[np.ndarray]
    accuracy: float  # best spliced top-1 on the validation split, 0..1
    best_epoch: int
    epochs: int
    mse_start: float  # local MSE of the untrained block
    mse_history: list[float]  # mean training MSE per epoch
    accuracy_history: dict[int, float]  # epoch -> spliced top-1
    seconds_setup: float
    seconds_train: float  # training steps, tracing and compiling left out
    seconds_eval: float  # spliced evaluations, tracing and compiling left out
    start: float  # Unix seconds, the one clock shared with the profiler
    end: float
    device: str = "cpu0"
    host: str = field(default_factory=host_name)  # $GREENKD_HOST where a test plays hosts
    pid: int = field(default_factory=os.getpid)
    fused_group: str = ""  # non-empty when trained in one fused pass with others
    interrupted: bool = False  # cut short by Ctrl-C: `epochs` says how many it trained
    stop: str = ""  # why training stopped: converged, cap, budget, interrupted
    # tracing and compiling of the training and evaluation steps, estimated as the first epoch
    # (evaluation) of each segment beyond the median of the later ones; NaN: nothing to compare
    seconds_compile: float = float("nan")
    # fused passes only (greenkd.distill.blockcost): the block's own and the shared trunk's cost
    # per step, measured after the pass, and scaled to the steps trained; NaN elsewhere
    block_step_s: float = float("nan")
    trunk_step_s: float = float("nan")
    seconds_block: float = float("nan")
    seconds_trunk: float = float("nan")

    @property
    def mse_best(self) -> float:
        return min(self.mse_history) if self.mse_history else float("nan")


class Progress(Protocol):
    """What an executor tells its caller while tasks run (the CLI draws bars from it)."""

    def phase(self, name: str, detail: str = "") -> None: ...
    def epoch(self, task: str, epoch: int, mse: float) -> None: ...


class SilentProgress:
    """Progress that goes nowhere (MPI ranks other than 0, tests)."""

    def phase(self, name: str, detail: str = "") -> None: ...
    def epoch(self, task: str, epoch: int, mse: float) -> None: ...


class Trainer(Protocol):
    """Layer tasks loaded in this process (data, teacher, targets), ready to train by name."""

    def train(
        self, names: Sequence[str], device: str, progress: Progress
    ) -> Iterator[TaskResult]: ...


class TaskSource(Protocol):
    """How a worker process loads the tasks: picklable, and free of framework imports until
    `load()`, which a worker calls only once it is bound to its device."""

    cfg: RunConfig

    def cached(self) -> bool:
        """Whether `load()` can run now (the teacher is on disk), so a worker may load early."""
        ...

    def load(self) -> Trainer: ...


Reduce = Callable[[list[np.ndarray]], list[np.ndarray]]
"""Sums arrays over every worker of a collective job: each worker passes its own, in the same
order and shapes, and gets the element-wise sums back (summed rank by rank, so every run of the
same job sums in the same order)."""


class Replicas(Protocol):
    """An executor's workers, kept after the tasks, running one job together (data-parallel
    fine-tuning): `replicas(job)` calls `job(trainer, rank, size, reduce)` in every worker at once,
    with its loaded tasks, and returns what each rank returned, rank by rank. It raises
    GreenkdError when a worker fails or dies."""

    size: int

    def __call__(self, job: Callable[[Trainer, int, int, Reduce], Any]) -> list[Any]: ...


@dataclass(frozen=True)
class Work:
    """One run's layer tasks as an executor gets them."""

    names: tuple[str, ...]  # every task of the run, in model order
    plan: Plan  # who trains what (rr, binpack, opt) or in which order (ws)
    source: TaskSource  # what worker processes load
    here: Trainer  # the same tasks, already loaded in this process


class Executor(Protocol):
    """Runs `work` on `devices` and yields results as tasks finish.

    `lost_workers` lists the workers that died during the run (device, pid, reason,
    ts, tasks in flight, tasks requeued); the run's summary records it.
    """

    lost_workers: list[dict[str, Any]]

    def __call__(
        self, work: Work, devices: list[Device], progress: Progress
    ) -> Iterator[TaskResult]: ...


def check_plan(plan: Plan, devices: Sequence[Device], backend: str) -> None:
    """A plan made for another number of devices is a bug in the caller, said plainly."""
    if plan.n_devices != len(devices):
        raise GreenkdError(
            f"the {backend} backend got a plan for {plan.n_devices} device(s) "
            f"but runs on {len(devices)}"
        )


def jobs(plan: Plan) -> list[list[list[str]]]:
    """Per device, its planned jobs in order: one job of all its tasks for a fused plan (one
    teacher pass), else one job per task. Work stealing (`ws`) has no per-device jobs: its
    tasks go to whichever worker is idle, in `plan.queue_order`."""
    return [
        ([list(names)] if plan.fused and names else [[name] for name in names])
        for names in plan.assignment
    ]
