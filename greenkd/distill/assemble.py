"""Splice blocks into the teacher, assemble the student, fine-tune it (paper §3.1, §4.1.6).

Which blocks go in is `greenkd.distill.select`'s choice; the per-block threshold is `accepted`.

Splicing rewires the teacher's graph by layer identity (`clone_model` with a
function that swaps each target conv for its block), so it works on any
functional graph: VGG's chain, ResNet's residual blocks, branches and
concatenations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from greenkd.config import RunConfig
from greenkd.distill.select import passes_threshold
from greenkd.distill.targets import Target, flatten, make_block
from greenkd.framework import keras, weights_set_afterwards


def splice(
    teacher: keras.Model, replacements: Mapping[str, keras.layers.Layer], *, share: bool
) -> keras.Model:
    """The teacher with each named layer replaced by its block.

    `share=True` reuses the teacher's own layer objects (for evaluating a block
    while it trains: no copy, and the teacher is never trained); `share=False`
    builds fresh layers and copies the teacher's weights into them, so training
    the result leaves the teacher untouched.
    """
    teacher = flatten(teacher)
    missing = set(replacements) - {layer.name for layer in teacher.layers}
    if missing:
        raise KeyError(f"no layers named {sorted(missing)} in {teacher.name}")

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in replacements:
            return replacements[layer.name]
        if share:
            return layer
        return layer.__class__.from_config(layer.get_config())

    with weights_set_afterwards():  # new layers' weights are copied below; shared ones exist
        model = keras.models.clone_model(teacher, clone_function=clone)
    if not share:
        originals = {layer.name: layer for layer in teacher.layers}
        for layer in model.layers:
            if layer.name in originals and layer.name not in replacements and layer.weights:
                layer.set_weights(originals[layer.name].get_weights())
    return model


def branches(teacher: keras.Model, replacements: Mapping[str, keras.layers.Layer]) -> keras.Model:
    """One model whose i-th output is the teacher's output with the i-th named layer replaced.

    Every branch shares the teacher's own tensors up to its layer and re-runs
    only what lies downstream of it, so evaluating all blocks of a fused group
    costs one trunk pass plus the suffixes, not one whole spliced model each.
    The teacher's layers are shared, never trained here.
    """
    return set_branches(teacher, [{name: layer} for name, layer in replacements.items()])


def set_branches(
    teacher: keras.Model, sets: Sequence[Mapping[str, keras.layers.Layer]]
) -> keras.Model:
    """One model whose i-th output is the teacher's output with every layer of the i-th set
    replaced (a block may be in several sets: it is one shared layer).

    As `branches`, each branch re-runs only what lies downstream of its first replaced layer, so
    splicing k sets and measuring them is one compiled model and one pass over the data.
    """
    teacher = flatten(teacher)
    nodes = [
        node
        for depth in sorted(teacher._nodes_by_depth, reverse=True)
        for node in teacher._nodes_by_depth[depth]
    ]
    outputs = []
    for replacements in sets:
        swapped = {id(teacher.get_layer(name)): block for name, block in replacements.items()}
        moved: dict[int, object] = {}  # id(teacher tensor) -> its value in this branch
        for node in nodes:
            if node.operation is None or node.is_input:
                continue
            if id(node.operation) in swapped:
                x = node.input_tensors[0]
                moved[id(node.outputs[0])] = swapped[id(node.operation)](moved.get(id(x), x))
                continue
            if not any(id(t) in moved for t in node.input_tensors):
                continue  # upstream of the layers or beside them: the teacher's own tensor
            args, kwargs = node.arguments.fill_in(
                {id(t): moved.get(id(t), t) for t in node.input_tensors}
            )
            for old, new in zip(
                node.outputs, keras.tree.flatten(node.operation(*args, **kwargs)), strict=True
            ):
                moved[id(old)] = new
        outputs.append(moved.get(id(teacher.outputs[0]), teacher.outputs[0]))
    return keras.Model(model_inputs(teacher), outputs, name=f"{teacher.name}_branches")


def accepted(accuracy: float, teacher_accuracy: float, cfg: RunConfig) -> bool:
    """A block passes the per-block threshold on its own (paper Algorithm 1, line 13): what
    `acceptance="threshold"` keeps, and in target mode the verdict tasks.csv records."""
    return passes_threshold(
        accuracy, teacher_accuracy, cfg.accept_max_drop, cfg.accept_min_accuracy
    )


def assemble(
    teacher: keras.Model,
    targets: list[Target],
    weights: Mapping[str, list[np.ndarray]],
    block_kind: str,
) -> keras.Model:
    """A student: a fresh copy of the teacher with the given blocks (and their trained weights)."""
    teacher = flatten(teacher)
    student = splice(teacher, trained_blocks(teacher, targets, weights, block_kind), share=False)
    student.name = f"{teacher.name}_student"
    return student


def trained_blocks(
    teacher: keras.Model,
    targets: list[Target],
    weights: Mapping[str, list[np.ndarray]],
    block_kind: str,
) -> dict[str, keras.layers.Layer]:
    """Each named target's block, built for its layer, holding its trained weights."""
    by_name = {t.name: t for t in targets}
    teacher = flatten(teacher)
    blocks = {}
    for name, values in weights.items():
        with weights_set_afterwards():
            block = make_block(by_name[name], block_kind, layer=teacher.get_layer(name))
        block.set_weights(values)
        blocks[name] = block
    return blocks


def freeze_teacher_layers(student: keras.Model, blocks: list[str]) -> list[str]:
    """Fine-tune the blocks only: every layer that is not part of a spliced block (named
    `<target>_kd_...`) stops training; return their names."""
    prefixes = tuple(f"{name}_kd" for name in blocks)
    frozen = []
    for layer in student.layers:
        if layer.weights and not layer.name.startswith(prefixes):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def freeze_for_finetune(student: keras.Model) -> list[str]:
    """§4.1.6: freeze the teacher's 1x1 convolutions and dense layers; return their names."""
    frozen = []
    for layer in student.layers:
        is_1x1 = isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)
        if is_1x1 or isinstance(layer, keras.layers.Dense):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def freeze_batch_norms(student: keras.Model) -> list[str]:
    """Every batch norm, in the student and inside its blocks, in inference mode (its statistics,
    scale and shift as distillation left them); return their names.

    `--finetune-batch-norm frozen` (not the default): a batch's gradient is then the sum of its
    rows' and a fine-tune split over devices (`dataparallel.py`) takes the serial run's steps, up
    to floating-point noise. The default ("batch") leaves batch norms training: moving statistics
    from block training do not fit the activations once many blocks are spliced (the default run's
    12-block student fine-tuned to 7-10% frozen, 99.8% training).
    """
    frozen = []
    for layer in student._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def training_batch_norms(student: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The batch norms a fine-tune trains (training mode: batch statistics, moving statistics
    updated), in a fixed order: none under `--finetune-batch-norm frozen`."""
    return [
        layer
        for layer in student._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def prepare_for_finetune(student: keras.Model, target_names: list[str], cfg: RunConfig) -> None:
    """Freeze what fine-tuning leaves as it is: `--finetune-layers blocks` every teacher layer,
    else (with --freeze-1x1) the teacher's 1x1 convolutions and dense layers; with
    `--finetune-batch-norm frozen` every batch norm (the default trains those left trainable)."""
    if cfg.finetune_layers == "blocks":
        freeze_teacher_layers(student, target_names)
    elif cfg.freeze_1x1:
        freeze_for_finetune(student)
    if cfg.finetune_batch_norm == "frozen":
        freeze_batch_norms(student)


FINETUNE_MOMENTUM = 0.9


def finetune_schedule(cfg: RunConfig, steps_per_epoch: int):
    """The fine-tune's learning rate: cosine decay from --finetune-lr over its epochs."""
    return keras.optimizers.schedules.CosineDecay(
        cfg.finetune_lr, decay_steps=max(1, steps_per_epoch * cfg.finetune_epochs)
    )


def finetune_optimizer(cfg: RunConfig, steps_per_epoch: int):
    """SGD with Nesterov momentum and cosine decay over the fine-tuning epochs."""
    return keras.optimizers.SGD(
        finetune_schedule(cfg, steps_per_epoch), momentum=FINETUNE_MOMENTUM, nesterov=True
    )


def compile_for_finetune(student: keras.Model, cfg: RunConfig, steps_per_epoch: int) -> None:
    """The student compiled for fine-tuning (`finetune_optimizer`, cross-entropy, top-1)."""
    student.compile(
        optimizer=finetune_optimizer(cfg, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=cfg.keras_jit(),
    )


def model_inputs(model: keras.Model):
    """A model's input tensor, or its list when it has several (as Keras expects them back)."""
    return model.inputs if len(model.inputs) > 1 else model.inputs[0]
