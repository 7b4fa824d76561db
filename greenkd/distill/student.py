"""The student: which blocks it takes (target mode runs the search in select.py with the real
splicing and fine-tuning) and its fine-tuning.

`select.py` decides over plain data; this module gives it the real, expensive steps: one branch
model that measures every candidate set spliced in, and brief fine-tunes of assembled students.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from greenkd import data as data_mod
from greenkd.config import RunConfig
from greenkd.distill import assemble as asm
from greenkd.distill import dataparallel
from greenkd.distill import select as choose
from greenkd.distill.setup import Setup
from greenkd.distill.train import evaluate_accuracy, jit_compile
from greenkd.errors import GreenkdError
from greenkd.executors.base import Progress, Replicas, TaskResult
from greenkd.framework import build_before_tracing, fast_layers, keras

# Epochs of each brief fine-tune that target-mode selection runs to judge a set of blocks, or
# the run's --finetune-epochs where that is fewer. At the default 10 a try is the run's whole
# fine-tune: what the search measures is what it delivers, and the chosen set's fine-tune is
# reused (shorter tries misjudge: on digits 12 blocks reached 92.8% after 2 epochs, about 97%
# after 6, 98.3-98.9% after 10). The cap bounds the search where fine-tuning is long.
BRIEF_FINETUNE_EPOCHS = 10


def selection_goal(cfg: RunConfig, setup: Setup, summary: dict[str, Any]) -> choose.Goal:
    """What the student should be, against this run's teacher and validation split."""
    return choose.Goal(
        mode=cfg.acceptance,
        teacher_accuracy=setup.teacher.accuracy,
        teacher_params=summary["teacher_params"],
        teacher_flops=summary["teacher_flops"],
        target_accuracy=cfg.target_accuracy,
        target_params=cfg.target_params,
        max_drop=cfg.accept_max_drop,
        min_accuracy=cfg.accept_min_accuracy,
        resolution=1 / max(1, setup.source.sizes["val"]),
    )


def select_blocks(
    blocks: list[choose.Block],
    goal: choose.Goal,
    setup: Setup,
    cfg: RunConfig,
    results: dict[str, TaskResult],
    val,
    tuned: dict[tuple[str, ...], Tuned],
    reporter: Progress,
    tuner: Tuner | None = None,
) -> choose.Selection:
    """Target mode: `select.by_target` with the real splicing and fine-tuning.

    Costs, measured on a digits VGG16 (width 1/8) on 2 CPU cores: one model with a branch per
    ranked prefix, compiled and run once over the validation split (9 s for 12 prefixes); then
    at most `select.MAX_TRIES` brief fine-tunes of BRIEF_FINETUNE_EPOCHS epochs, each an assembly,
    a traced training step and the epoch (7 s with 3 blocks, 22 s with 12, mostly tracing). A
    tried student is kept in `tuned` when its brief fine-tune is as long as the run's. Both run
    on the run's workers where the executor keeps them (`Tuner`): the sets dealt out among them,
    each fine-tune data-parallel.
    """
    brief = min(BRIEF_FINETUNE_EPOCHS, cfg.finetune_epochs)
    tuner = tuner or Tuner(setup, val)

    def weights(names) -> dict[str, Any]:
        return {n: results[n].weights for n in names}

    def evaluate_sets(sets):
        accuracies = tuner.evaluate_sets(weights(n for s in sets for n in s), sets, cfg)
        for s, accuracy in zip(sets, accuracies, strict=True):
            reporter.phase("select", f"{len(s):>3} block(s) spliced in: top-1 {accuracy:.2%}")
        return accuracies

    def finetune_and_evaluate(names):
        done = tuner(weights(names), cfg.replace(finetune_epochs=brief))
        accuracy = done.accuracy
        if brief == cfg.finetune_epochs:
            tuned[names] = done
        reporter.phase(
            "select",
            f"{len(names):>3} block(s) after a {brief}-epoch fine-tune: top-1 {accuracy:.2%} "
            f"({'meets' if accuracy >= goal.needed_accuracy - 1e-9 else 'misses'} the target)",
        )
        return accuracy

    selection = choose.by_target(
        blocks, goal, evaluate_sets, finetune_and_evaluate if brief else None
    )
    selection.finetune_epochs = brief
    reporter.phase("select", selection.why)
    return selection


def aim(goal: choose.Goal) -> str:
    if goal.target_params is not None:
        return f"the fewest blocks that make the student {goal.target_params:g}x smaller"
    return (
        f"the most blocks whose student keeps top-1 >= {goal.needed_accuracy:.2%} "
        f"(teacher - {goal.target_accuracy * 100:.2f} points) after fine-tuning"
    )


@dataclass
class Tuned:
    """One fine-tune's outcome: its top-1 and the fine-tuned student, or (data-parallel, where
    this process did not assemble it) the student's weights, for `Tuner.student`."""

    accuracy: float
    student: Any | None = None
    weights: list[np.ndarray] | None = None


class Tuner:
    """Every fine-tune of a run and target-mode selection's spliced evaluations, timed
    (`seconds`, `seconds_evaluate`): on the run's worker processes where the executor keeps
    them (`replicas`, see dataparallel.py), else in this process. A worker lost or failing sends
    this and every later one here."""

    def __init__(
        self, setup: Setup, val, replicas: Replicas | None = None, reporter: Progress | None = None
    ) -> None:
        self.setup, self.val, self.reporter = setup, val, reporter
        self.replicas = replicas if replicas is not None and dataparallel.supported() else None
        # why this process fine-tunes (and evaluates) instead of the workers; None: it does not
        self.fallback: str | None = None
        if replicas is None:
            self.fallback = "the executor keeps no workers after the tasks"
        elif self.replicas is None:
            self.fallback = f"no data-parallel fine-tuning under {dataparallel.FRAMEWORK} yet"
        self.seconds = 0.0
        self.seconds_evaluate = 0.0
        self.devices = 0  # how many devices the last fine-tune was split over (1: this process)
        self.evaluate_devices = 0  # the same for the spliced evaluations
        # seconds of each part of the data-parallel fine-tunes (mean over workers, summed over
        # fine-tunes): where their time goes (dataparallel._Clock)
        self.parts: dict[str, float] = {}

    def _on_workers(self, job, phase: str) -> list[Any] | None:
        """What every worker returned for `job`, or None where it runs here (no workers, or
        one lost or failing now: then the rest of the run stays here too)."""
        if self.replicas is None:
            return None
        try:
            return self.replicas(job)
        except GreenkdError as exc:
            self.replicas = None
            self.fallback = str(exc)
            if self.reporter is not None:
                self.reporter.phase(phase, f"{exc}; going on in this process")
            return None

    def evaluate_sets(
        self, blocks: Mapping[str, list[np.ndarray]], sets, cfg: RunConfig
    ) -> list[float]:
        """Each set's top-1 spliced into the teacher (`dataparallel.spliced_accuracies`), the
        sets dealt out among the workers."""
        started = time.perf_counter()
        try:
            sets = tuple(tuple(s) for s in sets)
            results = self._on_workers(
                dataparallel.EvaluateSetsJob(dict(blocks), sets, cfg), "select"
            )
            if results is not None:
                merged = {i: a for r in results for i, a in r.items()}
                self.evaluate_devices = len(results)
                return [merged[i] for i in range(len(sets))]
            self.evaluate_devices = 1
            return dataparallel.spliced_accuracies(self.setup, blocks, sets, self.val, cfg)
        finally:
            self.seconds_evaluate += time.perf_counter() - started

    def __call__(
        self, blocks: Mapping[str, list[np.ndarray]], cfg: RunConfig, student=None
    ) -> Tuned:
        """Fine-tune the student of `blocks` (`student`, already assembled from them, or None)
        and return its top-1 after. On the workers this process assembles nothing unless given
        the student: `student(...)` builds it when it is wanted."""
        started = time.perf_counter()
        try:
            results = self._on_workers(dataparallel.FinetuneJob(dict(blocks), cfg), "finetune")
            if results is not None:
                self.devices = len(results)
                for r in results:
                    for part, seconds in r.get("seconds", {}).items():
                        self.parts[part] = self.parts.get(part, 0.0) + seconds / len(results)
                done = Tuned(results[0]["accuracy"], weights=results[0]["weights"])
                if student is not None:
                    done.student = self.student(done, blocks, cfg, student)
                return done
            self.devices = 1
            if student is None:
                student = asm.assemble(
                    self.setup.teacher.model, self.setup.targets, blocks, cfg.block
                )
            return Tuned(finetune(student, self.setup, cfg, self.val), student)
        finally:
            self.seconds += time.perf_counter() - started

    def student(
        self, done: Tuned, blocks: Mapping[str, list[np.ndarray]], cfg: RunConfig, student=None
    ):
        """The fine-tuned student of `done` (assembled here, into `student` if given, where the
        workers fine-tuned it)."""
        if done.student is not None:
            return done.student
        if student is None:
            student = asm.assemble(self.setup.teacher.model, self.setup.targets, blocks, cfg.block)
        asm.prepare_for_finetune(student, [t.name for t in self.setup.targets], cfg)
        student.set_weights(done.weights)
        return student


def finetune(student, setup: Setup, cfg: RunConfig, val) -> float:
    """Fine-tune the assembled student with labels; return its top-1 after."""
    asm.prepare_for_finetune(student, [t.name for t in setup.targets], cfg)
    steps = setup.source.steps("train", cfg.batch_size)
    # the data order from the run seed alone: tf.data's shuffle seed pairs with the global seed,
    # which building blocks sets to each block's own
    keras.utils.set_random_seed(cfg.seed)
    train = data_mod.training_batches(setup.source, cfg, setup.preprocess_mode, seed_offset=1)
    asm.compile_for_finetune(student, cfg, steps)
    build_before_tracing(student, train)
    with fast_layers(student):
        student.fit(
            train, epochs=cfg.finetune_epochs, steps_per_epoch=steps, verbose=0, shuffle=False
        )
    return evaluate_accuracy(student, val, jit_compile(cfg))
