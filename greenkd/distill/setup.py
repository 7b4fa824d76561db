"""What every process of a run needs to train layer tasks: the data, the teacher, the targets.

`prepare(cfg)` loads them (training and caching a zoo teacher if needed) and
returns a `Setup`, which trains named tasks in this process (`Setup.train`).
`LayerTasks(cfg)` is the same as a worker process receives it: picklable, and
importing no framework until `load()`, so a worker can bind itself to its
device first. This module imports TensorFlow only inside functions for that reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from greenkd.config import RunConfig
from greenkd.errors import GreenkdError
from greenkd.executors.base import Progress, TaskResult

if TYPE_CHECKING:
    from greenkd import data as data_mod
    from greenkd import models
    from greenkd.distill.targets import Skipped, Target


@dataclass
class Setup:
    """A run's data, teacher and targets, loaded in this process."""

    cfg: RunConfig
    source: data_mod.Source
    teacher: models.Teacher
    targets: list[Target]  # the layer tasks
    preprocess_mode: str
    # compressible convs left as they are: their block would be larger (cfg.replace_growing)
    skipped: list[Skipped] = field(default_factory=list)
    # under --budget: what this process may still spend on tasks (train.Allowance)
    allowance: Any = field(default=None, init=False, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        """Every layer task, in model order."""
        return tuple(t.name for t in self.targets)

    @property
    def expected_epochs(self) -> float:
        """Epochs a task is expected to train: the cap, or its share of an epoch budget if less.

        Early stopping makes most tasks shorter than the cap, by an amount only a run can
        tell: the timing store records what runs measured, and plans use it from then on.
        """
        budget_epochs, _ = self.cfg.budget_limits()
        share = budget_epochs / len(self.targets) if budget_epochs else self.cfg.epochs
        return max(1.0, min(float(self.cfg.epochs), share))

    def targets_named(self, names: Iterable[str]) -> list[Target]:
        by_name = {t.name: t for t in self.targets}
        return [by_name[n] for n in names]

    def train(self, names: Sequence[str], device: str, progress: Progress) -> Iterator[TaskResult]:
        """Train the named tasks here, one after another (or in one fused pass)."""
        from greenkd.distill.train import Allowance, train_tasks

        self.allowance = self.allowance or Allowance()
        self._grant(len(names))
        yield from train_tasks(
            self.teacher.model,
            self.targets_named(names),
            self.cfg,
            self.source,
            device=device,
            progress=progress.epoch,
            preprocess_mode=self.preprocess_mode,
            teacher_accuracy=self.teacher.accuracy,
            allowance=self.allowance,
        )

    def _grant(self, n_tasks: int) -> None:
        """Add these tasks' share of --budget to this process's allowance.

        A task's share is budget / tasks in epochs, or budget x devices / tasks in seconds
        (the devices work at once); what a task leaves stays in the pool for the tasks this
        process trains after it. So under a budget a task's result may depend on which
        tasks ran before it on the same worker; without one it never does.
        """
        epochs, seconds = self.cfg.budget_limits()
        share = n_tasks / len(self.targets)
        if epochs is not None:
            self.allowance.epochs = (
                0.0 if math.isinf(self.allowance.epochs) else self.allowance.epochs
            ) + epochs * share
        if seconds is not None:
            pool = 0.0 if math.isinf(self.allowance.seconds) else self.allowance.seconds
            self.allowance.seconds = pool + seconds * max(1, self.cfg.gpus) * share


@dataclass(frozen=True)
class LayerTasks:
    """A run's layer tasks as a worker process loads them (an executor's TaskSource)."""

    cfg: RunConfig

    def cached(self) -> bool:
        """Whether the teacher is on disk, so a worker may load while the parent prepares."""
        from greenkd import models

        if self.cfg.model not in models.ZOO:
            return True  # a user's model file
        path = models.teacher_path(self.cfg)
        # the parent writes the model, then its .json: both there means the model is whole
        return path.is_file() and path.with_suffix(".json").is_file()

    def load(self) -> Setup:
        """Data, the cached teacher and the targets (a worker never trains the teacher)."""
        return prepare(self.cfg, train_teacher=False)


def prepare(cfg: RunConfig, *, train_teacher: bool = True) -> Setup:
    """Load the data and the teacher (training and caching it if needed), find the targets.

    A target whose block would be larger than its conv is skipped unless cfg.replace_growing;
    a model left with no target is a user error naming the skipped layers and the flag.
    """
    from greenkd import data as data_mod
    from greenkd import models
    from greenkd.distill.targets import find, require_targets, split
    from greenkd.distill.train import evaluate_accuracy, jit_compile

    source = data_mod.load_for(cfg)
    if not train_teacher and cfg.model in models.ZOO and not models.teacher_path(cfg).is_file():
        raise GreenkdError(f"no cached teacher at {models.teacher_path(cfg)}")
    teacher = models.get_teacher(cfg, source)
    mode = models.preprocess_mode(cfg)
    _check_compatible(teacher.model, source, cfg)
    found = require_targets(find(teacher.model, block=cfg.block), cfg.model)
    targets, skipped = split(found, block=cfg.block, replace_growing=cfg.replace_growing)
    require_targets(targets, cfg.model, skipped)
    if teacher.accuracy != teacher.accuracy:  # NaN: a user's model with no recorded accuracy
        accuracy = models.measured_accuracy(cfg)  # measured once, by whichever process came first
        if accuracy is None:
            val = data_mod.validation_batches(source, cfg, mode)
            accuracy = evaluate_accuracy(teacher.model, val, jit_compile(cfg))
            models.keep_measured_accuracy(cfg, accuracy)
        teacher = models.Teacher(teacher.model, accuracy, teacher.path, False, teacher.seconds)
    return Setup(cfg, source, teacher, targets, mode, skipped)


def _check_compatible(model: Any, source: data_mod.Source, cfg: RunConfig) -> None:
    shape = tuple(model.inputs[0].shape[1:])
    want = (cfg.image_size, cfg.image_size, 3)
    if shape != want and None not in shape:
        raise GreenkdError(
            f"the model takes inputs of shape {shape} but the data are {want}: "
            "set --image-size to match"
        )
    classes = model.outputs[0].shape[-1]
    if classes is not None and classes != source.num_classes:
        raise GreenkdError(
            f"the model predicts {classes} classes but {cfg.dataset} has {source.num_classes}"
        )
