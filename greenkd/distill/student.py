"""The student: which blocks it takes (target mode runs the search in select.py with the real
splicing and fine-tuning) and its fine-tuning.

`select.py` decides over plain data; this module gives it the real, expensive steps: one branch
model that measures every candidate set spliced in, and brief fine-tunes of assembled students.
"""

from __future__ import annotations

from typing import Any

from greenkd import data as data_mod
from greenkd.config import RunConfig
from greenkd.distill import assemble as asm
from greenkd.distill import select as choose
from greenkd.distill.setup import Setup
from greenkd.distill.train import branch_accuracies, evaluate_accuracy, jit_compile
from greenkd.executors.base import Progress, TaskResult
from greenkd.tfsetup import keras

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
    tuned: dict[tuple[str, ...], tuple[Any, float]],
    reporter: Progress,
) -> choose.Selection:
    """Target mode: `select.by_target` with the real splicing and fine-tuning.

    Costs, measured on a digits VGG16 (width 1/8) on 2 CPU cores: one model with a branch per
    ranked prefix, compiled and run once over the validation split (9 s for 12 prefixes); then
    at most `select.MAX_TRIES` brief fine-tunes of BRIEF_FINETUNE_EPOCHS epochs, each an assembly,
    a traced training step and the epoch (7 s with 3 blocks, 22 s with 12, mostly tracing). A
    tried student is kept in `tuned` when its brief fine-tune is as long as the run's.
    """
    teacher = setup.teacher.model
    brief = min(BRIEF_FINETUNE_EPOCHS, cfg.finetune_epochs)

    def weights(names) -> dict[str, Any]:
        return {n: results[n].weights for n in names}

    def evaluate_sets(sets):
        every = dict.fromkeys(n for s in sets for n in s)  # one block layer, shared by its sets
        trained = asm.trained_blocks(teacher, setup.targets, weights(every), cfg.block)
        accuracies = branch_accuracies(
            asm.set_branches(teacher, [{n: trained[n] for n in s} for s in sets]),
            val,
            jit_compile(cfg),
        )
        for s, accuracy in zip(sets, accuracies, strict=True):
            reporter.phase("select", f"{len(s):>3} block(s) spliced in: top-1 {accuracy:.2%}")
        return accuracies

    def finetune_and_evaluate(names):
        student = asm.assemble(teacher, setup.targets, weights(names), cfg.block)
        accuracy = finetune(student, setup, cfg.replace(finetune_epochs=brief), val)
        if brief == cfg.finetune_epochs:
            tuned[names] = (student, accuracy)
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


def finetune(student, setup: Setup, cfg: RunConfig, val) -> float:
    """Fine-tune the assembled student with labels; return its top-1 after."""
    if cfg.finetune_layers == "blocks":
        asm.freeze_teacher_layers(student, [t.name for t in setup.targets])
    elif cfg.freeze_1x1:
        asm.freeze_for_finetune(student)
    steps = setup.source.steps("train", cfg.batch_size)
    # the data order from the run seed alone: tf.data's shuffle seed pairs with the global seed,
    # which building blocks sets to each block's own
    keras.utils.set_random_seed(cfg.seed)
    train = data_mod.training_batches(setup.source, cfg, setup.preprocess_mode, seed_offset=1)
    asm.compile_for_finetune(student, cfg, steps)
    student.fit(train, epochs=cfg.finetune_epochs, steps_per_epoch=steps, verbose=0, shuffle=False)
    return evaluate_accuracy(student, val, jit_compile(cfg))
