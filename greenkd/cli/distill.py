"""`greenkd distill`, `greenkd targets` and `greenkd teacher train`: flags -> RunConfig -> library.

TensorFlow is imported inside the commands, never at module import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from greenkd.config import RunConfig

# flag name -> RunConfig field, for the flags that map one to one
_FIELDS = (
    "model",
    "width",
    "dataset",
    "data_dir",
    "n_train",
    "n_val",
    "image_size",
    "preprocess",
    "augment",
    "batch_size",
    "teacher_epochs",
    "teacher_patience",
    "block",
    "replace_growing",
    "epochs",
    "eval_every",
    "patience",
    "budget",
    "acceptance",
    "target_accuracy",
    "target_params",
    "lr",
    "lr_end_factor",
    "finetune_epochs",
    "finetune_lr",
    "finetune_layers",
    "finetune_batch_norm",
    "freeze_1x1",
    "gpus",
    "sched",
    "backend",
    "fuse",
    "block_costs",
    "jit",
    "framework",
    "timings",
    "allow_oversubscribe",
    "cores_per_device",
    "calibrate",
    "scheduler_address",
    "hosts",
    "hostfile",
    "seed",
    "out",
)
_D = RunConfig()


def config_from_flags(ctx: typer.Context, values: dict[str, Any], config: Path | None) -> RunConfig:
    """A RunConfig from `--config FILE` (if given) overridden by every flag given explicitly."""
    from greenkd.config import DataThreads

    base = RunConfig.read(config) if config else RunConfig()
    changes: dict[str, Any] = {}
    for name in (*_FIELDS, "max_drop", "min_accuracy", "data_threads"):
        source = ctx.get_parameter_source(name)
        if config is not None and _is_default(source):
            continue
        value = values[name]
        if name == "max_drop":
            changes["accept_max_drop"] = value
        elif name == "min_accuracy":
            changes["accept_min_accuracy"] = value
            if not _is_default(source) and _is_default(ctx.get_parameter_source("max_drop")):
                changes["accept_max_drop"] = None  # an absolute floor alone
        elif name == "data_threads":
            changes["data_threads"] = DataThreads.parse(value)
        else:
            changes[name] = value
    return base.replace(**changes)


def _is_default(source: Any) -> bool:
    # typer bundles its own click (typer._click), whose ParameterSource is not
    # click.core.ParameterSource: compare by name
    return source is None or getattr(source, "name", "") == "DEFAULT"


def register(app: typer.Typer) -> None:
    """Add the distillation commands to the greenkd app."""
    app.command("distill")(distill_command)
    app.command("targets")(targets_command)
    teacher = typer.Typer(help="Train and cache teachers.", no_args_is_help=True)
    teacher.command("train")(teacher_train_command)
    app.add_typer(teacher, name="teacher")


def distill_command(
    ctx: typer.Context,
    model: str = typer.Option(_D.model, help="vgg16, resnet50, or a path to a .keras model."),
    width: float = typer.Option(_D.width, help="vgg16 channel multiplier (1.0 = the paper's)."),
    dataset: str = typer.Option(
        _D.dataset, help="synthetic, digits, cifar10, cifar100, tfds:NAME, or an image folder."
    ),
    data_dir: str | None = typer.Option(
        None, help="Where cifar/tfds files are (default: Keras's cache)."
    ),
    n_train: int | None = typer.Option(
        None, help="Training images to use (synthetic: to generate; default 4000)."
    ),
    n_val: int | None = typer.Option(None, help="Validation images (synthetic default 1000)."),
    image_size: int = typer.Option(_D.image_size, help="Input side in pixels (>= 32)."),
    preprocess: str | None = typer.Option(
        None, help="none, scale, caffe, tf, torch (default: the model's own)."
    ),
    augment: bool = typer.Option(_D.augment, help="Random flips and crops on training images."),
    batch_size: int = typer.Option(_D.batch_size),
    teacher_epochs: int = typer.Option(
        _D.teacher_epochs,
        help="Most epochs to train a zoo teacher (once; cached); it stops when val top-1 does.",
    ),
    teacher_patience: int = typer.Option(
        _D.teacher_patience, help="Teacher epochs without a val top-1 gain before it stops."
    ),
    block: str = typer.Option(
        _D.block, help="Replacement block: a (2 sep. layers), b (3), c/d (with skip)."
    ),
    replace_growing: bool = typer.Option(
        _D.replace_growing,
        "--replace-growing/--skip-growing",
        help="Replace every target, even one whose block has more params or FLOPs than its "
        "conv (the paper's); by default such a target is skipped, so the student never grows.",
    ),
    epochs: int = typer.Option(
        _D.epochs, help="Most epochs per layer task (a good-enough block stops earlier)."
    ),
    eval_every: int = typer.Option(_D.eval_every, help="Splice and evaluate every N epochs."),
    patience: int = typer.Option(
        _D.patience,
        help="Evaluations without a gain before a block that meets --max-drop stops; "
        "0: every task trains all --epochs (the paper's fixed count).",
    ),
    budget: str | None = typer.Option(
        None, help="The task phase's budget: N epochs (all tasks together), or Ns / Nm wall time."
    ),
    lr: float = typer.Option(_D.lr, help="RMSprop learning rate of the layer tasks."),
    lr_end_factor: float = typer.Option(
        _D.lr_end_factor, help="Learning rate at the end, as a fraction of --lr."
    ),
    max_drop: float | None = typer.Option(
        _D.accept_max_drop, help="Accept a block if spliced top-1 >= teacher - this (0-1)."
    ),
    min_accuracy: float | None = typer.Option(
        None, help="Accept a block if spliced top-1 >= this (0-1)."
    ),
    acceptance: str = typer.Option(
        _D.acceptance,
        help="target: the set of blocks that best meets --target-accuracy (or --target-params) "
        "after fine-tuning; threshold: every block passing --max-drop alone (the paper's).",
    ),
    target_accuracy: float = typer.Option(
        _D.target_accuracy,
        help="Target mode: student top-1 at most this below the teacher's (0-1).",
    ),
    target_params: float | None = typer.Option(
        None, help="Target mode: aim at teacher params / student params >= this instead."
    ),
    finetune_epochs: int = typer.Option(_D.finetune_epochs),
    finetune_lr: float = typer.Option(_D.finetune_lr),
    finetune_layers: str = typer.Option(
        _D.finetune_layers,
        help="blocks: fine-tune the spliced blocks only; all: every layer (the paper's).",
    ),
    finetune_batch_norm: str = typer.Option(
        _D.finetune_batch_norm,
        help="batch: batch norms train on each batch's statistics; frozen: inference mode "
        "(a data-parallel fine-tune then equals the serial one).",
    ),
    freeze_1x1: bool = typer.Option(
        _D.freeze_1x1, help="Freeze 1x1 convs and dense layers in fine-tuning (§4.1.6)."
    ),
    gpus: int = typer.Option(
        _D.gpus, help="Devices: GPUs, or CPU workers on a machine without GPUs."
    ),
    sched: str = typer.Option(_D.sched, help="rr, binpack, ws or opt."),
    backend: str = typer.Option(_D.backend, help="local, mpi or dask."),
    fuse: bool = typer.Option(
        _D.fuse,
        help="One teacher pass per batch for all of a worker's tasks (same blocks, faster); "
        "--no-fuse: the paper's independent tasks.",
    ),
    block_costs: bool = typer.Option(
        _D.block_costs,
        help="After each fused pass, time each block's own step and the shared trunk's on a few "
        "batches (tasks.csv seconds_block, seconds_trunk; the report's per-layer figures).",
    ),
    jit: str = typer.Option(
        _D.jit,
        help="XLA: off or on (the same on every device), or auto (Keras's choice: GPUs only).",
    ),
    framework: str = typer.Option(
        _D.framework,
        help="The framework under Keras: tensorflow (input through tf.data) or jax (Keras "
        "PyDataset workers).",
    ),
    data_threads: str = typer.Option(
        "autotune",
        help="Data threads: autotune, or N (tf.data: N parallel calls with intra-op 1; other "
        "frameworks: N PyDataset workers).",
    ),
    timings: str | None = typer.Option(
        None, help="Task times for scheduling: a task,seconds CSV or a tasks.csv."
    ),
    allow_oversubscribe: bool = typer.Option(
        False, help="Allow more devices than the machine has."
    ),
    cores_per_device: int | None = typer.Option(
        None, help="CPU cores per CPU device (default: the machine's cores split N ways)."
    ),
    calibrate: bool = typer.Option(
        _D.calibrate, help="With no measured task times, time a few steps of each task to plan."
    ),
    scheduler_address: str | None = typer.Option(
        None, help="--backend dask: an existing scheduler, tcp://host:8786 (default: a local one)."
    ),
    hosts: str | None = typer.Option(
        None,
        help="--backend mpi across hosts: h1,h2 (mpiexec -hosts); --gpus devices in all, "
        "split evenly; each host is sampled once (docs/multihost.md).",
    ),
    hostfile: str | None = typer.Option(
        None, help="--backend mpi across the hosts of an mpich hostfile (instead of --hosts)."
    ),
    seed: int = typer.Option(_D.seed),
    out: str = typer.Option(_D.out, help="Run directory."),
    config: Path | None = typer.Option(
        None, help="A run's config.json; flags given explicitly override it."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or tables; errors only."),
) -> None:
    """Distill a teacher into a student: one task per non-1x1 conv, then assemble and fine-tune."""
    cfg = config_from_flags(ctx, dict(ctx.params), config)
    from rich.console import Console

    from greenkd.cli.progress import RichReporter, diagnosis_lines, summary_table
    from greenkd.executors import mpi, preflight, select

    console = Console(stderr=False, quiet=quiet)
    if not console.is_terminal:  # a pipe or log file: one line per task, not wrapped at 80
        console = Console(stderr=False, quiet=quiet, width=160)
    if cfg.backend == "mpi" and not mpi.under_mpiexec():
        try:  # start mpiexec -n N; rank 0 prints the summary
            mpi.launch(cfg, quiet=quiet)
        except mpi.MpiRunFailed as exc:  # a run that failed, not bad input: exit 1
            typer.echo(f"greenkd: error: {exc}", err=True)
            raise typer.Exit(1) from None
        return
    if cfg.backend != "mpi":
        from greenkd.devices import bind_run_process
        from greenkd.distill.setup import LayerTasks  # no TensorFlow yet

        # bad settings fail before TensorFlow loads, and local workers start loading
        # TensorFlow, data and teacher now, beside this process
        devices = preflight(cfg)
        executor = select(cfg, devices, LayerTasks(cfg))
        # one GPU or none for this process, and its framework, before Keras loads
        bind_run_process(devices, cfg.framework)
    reporter = RichReporter(console)

    def run_distill(executor, devices):
        from greenkd.distill.run import distill  # TensorFlow loads here, after binding

        return distill(cfg, reporter=reporter, executor=executor, devices=devices)

    try:
        if cfg.backend == "mpi":
            summary = mpi.run_rank(cfg, run_distill)  # each rank binds itself first
            if summary is None:  # ranks other than 0 report nothing
                return
        else:
            summary = run_distill(executor, devices)
    except KeyboardInterrupt as exc:
        reporter.close()
        cut = [r.name for r in getattr(exc, "partial_results", [])]
        kept = f"; best blocks so far of the tasks cut short: {', '.join(cut)}" if cut else ""
        typer.echo(
            f"greenkd: interrupted; finished tasks and summary.json (partial) are in "
            f"{cfg.out}{kept}",
            err=True,
        )
        raise typer.Exit(130) from None
    finally:
        reporter.close()
    console.print(summary_table(summary))
    for line in diagnosis_lines(summary):
        console.print(line)
    console.print(f"run directory: {cfg.out}")


def targets_command(
    model: str = typer.Argument(..., help="vgg16, resnet50, or a path to a .keras model."),
    width: float = typer.Option(1.0, help="vgg16 channel multiplier."),
    image_size: int = typer.Option(32, help="Input side in pixels (zoo models)."),
    classes: int = typer.Option(10, help="Output classes (zoo models)."),
    block: str = typer.Option("a", help="Replacement block whose cost to report."),
    replace_growing: bool = typer.Option(
        False,
        "--replace-growing",
        help="As distill --replace-growing: count every target replaced, even one whose block "
        "is larger than its conv.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List the layers greenkd would replace, with their cost before and after (a dry run).

    Every compressible layer is listed; one whose block would be larger than it is marked
    skipped, with why (`greenkd distill` leaves it as it is unless --replace-growing).
    """
    from greenkd import models
    from greenkd.distill.targets import find, model_flops, require_targets, split

    if model in models.ZOO:
        net = models.build(model, width=width, image_size=image_size, num_classes=classes)
    else:
        net = models.load_file(model)
    found = require_targets(find(net, block=block), model)
    kept, skipped = split(found, block=block, replace_growing=replace_growing)
    why = {s.target.name: s.reason for s in skipped}
    total = {
        "model": model,
        "params": net.count_params(),
        "flops": model_flops(net),
        "n_targets": len(found),  # every compressible layer, replaced or not
        "n_replaced": len(kept),
        "n_skipped": len(skipped),
        "params_saved": sum(t.params_before - t.params_after for t in kept),
        "flops_saved": sum(t.flops_before - t.flops_after for t in kept),
    }
    if as_json:
        rows = [
            {**t.to_dict(), "replaced": t.name not in why, "skip_reason": why.get(t.name)}
            for t in found
        ]
        typer.echo(json.dumps({"model": total, "targets": rows}, indent=2))
        return
    from rich.console import Console

    from greenkd.cli.progress import targets_table

    Console().print(targets_table(found, total, why))


def teacher_train_command(
    model: str = typer.Option(_D.model, help="vgg16 or resnet50."),
    width: float = typer.Option(_D.width),
    dataset: str = typer.Option(_D.dataset),
    data_dir: str | None = typer.Option(None),
    n_train: int | None = typer.Option(None),
    n_val: int | None = typer.Option(None),
    image_size: int = typer.Option(_D.image_size),
    batch_size: int = typer.Option(_D.batch_size),
    teacher_epochs: int = typer.Option(
        _D.teacher_epochs, "--epochs", help="Most epochs; it stops earlier when val top-1 does."
    ),
    teacher_patience: int = typer.Option(
        _D.teacher_patience, "--patience", help="Epochs without a val top-1 gain before it stops."
    ),
    seed: int = typer.Option(_D.seed),
    framework: str = typer.Option(_D.framework, help="tensorflow or jax (cached apart)."),
    retrain: bool = typer.Option(False, help="Train again even if a cached teacher exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a zoo teacher and cache it by its settings (distill reuses it)."""
    import os

    from greenkd.config import FRAMEWORKS
    from greenkd.devices import framework_env
    from greenkd.errors import GreenkdError

    if framework not in FRAMEWORKS:
        raise GreenkdError(f"--framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    os.environ.update(framework_env(framework))  # before Keras loads, on the next line
    from greenkd import models

    if model not in models.ZOO:
        raise GreenkdError(f"unknown model {model!r}: teacher train knows {', '.join(models.ZOO)}")
    cfg = RunConfig(
        model=model,
        width=width,
        dataset=dataset,
        data_dir=data_dir,
        n_train=n_train,
        n_val=n_val,
        image_size=image_size,
        batch_size=batch_size,
        teacher_epochs=teacher_epochs,
        teacher_patience=teacher_patience,
        seed=seed,
        framework=framework,
    )
    teacher = models.get_teacher(cfg, retrain=retrain, verbose=0 if quiet else 2)
    if not quiet:
        state = f"trained in {teacher.seconds:.1f} s" if teacher.trained_now else "cached"
        typer.echo(f"{teacher.path} ({state}); top-1 {teacher.accuracy:.4f}")
        if teacher.training is not None:
            t = teacher.training
            typer.echo(
                f"trained {t.epochs_run} epochs in {t.seconds:.1f} s, stopped: {t.stopped}; "
                f"kept epoch {t.best_epoch} (val top-1 {t.accuracy:.4f})"
            )
