"""A whole distillation run, paper Algorithm 1, top to bottom.

1. find the targets (every non-1x1 Conv2D of the teacher);
2. plan: which device trains which layer tasks;
3. train every task (an executor runs them: inline here, processes, MPI or Dask);
4. gather the blocks, keep those whose spliced top-1 meets the threshold;
5. assemble the student and fine-tune it;
6. write student.keras and summary.json (last, atomically).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from greenkd import data as data_mod
from greenkd import models
from greenkd.config import RunConfig
from greenkd.devices import Device, confined_to, run_devices
from greenkd.distill import assemble as asm
from greenkd.distill import costs
from greenkd.distill.targets import Target, find, model_flops, require_targets
from greenkd.distill.train import TaskResult, evaluate_accuracy, train_tasks
from greenkd.errors import GreenkdError
from greenkd.rundir import RunDir
from greenkd.schedule import Plan
from greenkd.tfsetup import keras


class Reporter(Protocol):
    """What a run tells its caller as it goes (the CLI draws progress bars from it)."""

    def phase(self, name: str, detail: str = "") -> None: ...
    def tasks_started(self, total: int, epochs: int) -> None: ...
    def epoch(self, task: str, epoch: int, mse: float) -> None: ...
    def task_done(self, result: TaskResult, target: Target, accepted: bool) -> None: ...


class SilentReporter:
    def phase(self, name: str, detail: str = "") -> None: ...
    def tasks_started(self, total: int, epochs: int) -> None: ...
    def epoch(self, task: str, epoch: int, mse: float) -> None: ...
    def task_done(self, result: TaskResult, target: Target, accepted: bool) -> None: ...


@dataclass
class Setup:
    """What every process needs to run layer tasks; rebuilt from the config in workers."""

    cfg: RunConfig
    source: data_mod.Source
    teacher: models.Teacher
    targets: list[Target]
    preprocess_mode: str
    plan: Plan | None = None  # set by distill() before the tasks run

    def targets_named(self, names: Iterable[str]) -> list[Target]:
        by_name = {t.name: t for t in self.targets}
        return [by_name[n] for n in names]


def prepare(cfg: RunConfig, *, train_teacher: bool = True) -> Setup:
    """Load the data and the teacher (training and caching it if needed), find the targets."""
    source = data_mod.load(
        cfg.dataset,
        data_dir=cfg.data_dir,
        n_train=cfg.n_train,
        n_val=cfg.n_val,
        image_size=cfg.image_size,
        seed=cfg.seed,
    )
    if not train_teacher and cfg.model in models.ZOO and not models.teacher_path(cfg).is_file():
        raise GreenkdError(f"no cached teacher at {models.teacher_path(cfg)}")
    teacher = models.get_teacher(cfg, source)
    mode = models.preprocess_mode(cfg)
    _check_compatible(teacher.model, source, cfg)
    targets = require_targets(find(teacher.model), cfg.model)
    if teacher.accuracy != teacher.accuracy:  # NaN: a user's model with no recorded accuracy
        val = data_mod.validation_batches(source, cfg, mode)
        accuracy = evaluate_accuracy(teacher.model, val)
        teacher = models.Teacher(teacher.model, accuracy, teacher.path, False, teacher.seconds)
    return Setup(cfg, source, teacher, targets, mode)


def _check_compatible(model, source: data_mod.Source, cfg: RunConfig) -> None:
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


def run_inline(
    setup: Setup, names: list[str], device: str, reporter: Reporter
) -> Iterator[TaskResult]:
    """Train the named tasks in this process, one after another (or fused)."""
    yield from train_tasks(
        setup.teacher.model,
        setup.targets_named(names),
        setup.cfg,
        setup.source,
        device=device,
        progress=reporter.epoch,
        preprocess_mode=setup.preprocess_mode,
    )


# An executor runs the planned tasks somewhere and yields results as they finish.
Executor = Callable[[Setup, list[Device], Reporter], Iterator[TaskResult]]


def inline_executor(
    setup: Setup, devices: list[Device], reporter: Reporter
) -> Iterator[TaskResult]:
    """All tasks in this process on the first device, in model order."""
    yield from run_inline(setup, [t.name for t in setup.targets], devices[0].label, reporter)


def task_row(result: TaskResult, target: Target, accepted: bool) -> dict[str, Any]:
    return {
        "task": result.name,
        "index": target.index,
        "device": result.device,
        "host": result.host,
        "pid": result.pid,
        "start": result.start,
        "end": result.end,
        "seconds": result.end - result.start,
        "seconds_setup": result.seconds_setup,
        "seconds_train": result.seconds_train,
        "seconds_eval": result.seconds_eval,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "kernel": target.kernel,
        "strides": target.strides,
        "params_before": target.params_before,
        "params_after": target.params_after,
        "flops_before": target.flops_before,
        "flops_after": target.flops_after,
        "mse_first": result.mse_start,
        "mse_best": result.mse_best,
        "accuracy": result.accuracy,
        "accepted": accepted,
        "fused_group": result.fused_group,
    }


def distill(
    cfg: RunConfig,
    *,
    reporter: Reporter | None = None,
    executor: Executor | None = None,
    devices: list[Device] | None = None,
    setup: Setup | None = None,
) -> dict[str, Any]:
    """Run Algorithm 1 end to end and return the summary written to summary.json."""
    reporter = reporter or SilentReporter()
    costs.check_timings_file(cfg)
    devices = devices or run_devices(cfg)
    if executor is None:
        from greenkd.executors import select

        executor = select(cfg, devices)
    if devices[0].kind == "gpu" and len(devices) > 1:
        # this process assembles and fine-tunes; it must not take the GPU memory workers need
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    run = RunDir(cfg.out)
    run.create(
        cfg,
        device_kind=devices[0].kind,
        devices=[d.label for d in devices],
        device_cores={d.label: list(d.cores) for d in devices},
        data_threads_label=cfg.data_threads.label,
    )
    started_ts = time.time()
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    summary: dict[str, Any] = {
        "status": "failed",
        "error": None,
        "start_ts": started_ts,
        "n_devices": len(devices),
        "device_kind": devices[0].kind,
        "devices": [d.label for d in devices],
        "backend": cfg.backend,
        "sched": cfg.sched,
        "tasks_done": 0,
    }
    results: dict[str, TaskResult] = {}
    confinement = contextlib.ExitStack()
    if cfg.backend != "mpi":  # an MPI rank is bound to its own device already
        # set-up, assembly and fine-tuning here use only the run's devices' cores
        summary["parent_cores"] = confinement.enter_context(confined_to(devices))
    try:
        reporter.phase("setup", "loading data and teacher")
        if setup is None:
            setup = prepare(cfg)
        seconds["setup"] = time.perf_counter() - clock
        teacher = setup.teacher
        summary.update(
            teacher_path=str(teacher.path),
            teacher_accuracy=teacher.accuracy,
            teacher_params=teacher.model.count_params(),
            teacher_flops=model_flops(teacher.model),
            teacher_trained_now=teacher.trained_now,
            teacher_train_seconds=teacher.seconds,
            n_targets=len(setup.targets),
        )
        by_name = {t.name: t for t in setup.targets}
        setup.plan = costs.plan_for(setup, devices)
        summary["plan"] = {**setup.plan.to_dict(), "devices": [d.label for d in devices]}
        run.write_plan(summary["plan"])

        reporter.phase("tasks", f"{len(setup.targets)} layer tasks on {len(devices)} device(s)")
        reporter.tasks_started(len(setup.targets), cfg.epochs)
        t_tasks = time.perf_counter()
        for result in executor(setup, devices, reporter):
            target = by_name[result.name]
            ok = asm.accepted(result.accuracy, teacher.accuracy, cfg)
            results[result.name] = result
            run.save_block(result.name, result.weights)
            run.append_task(task_row(result, target, ok))
            summary["tasks_done"] = len(results)
            reporter.task_done(result, target, ok)
        seconds["tasks"] = time.perf_counter() - t_tasks
        missing = [t.name for t in setup.targets if t.name not in results]
        if missing:
            raise GreenkdError(f"tasks finished without a result: {', '.join(missing)}")
        summary["timings_recorded"] = costs.record(setup, devices, results.values())

        reporter.phase("assemble", "splicing accepted blocks into the teacher")
        t_asm = time.perf_counter()
        keep = {
            n: r.weights
            for n, r in results.items()
            if asm.accepted(r.accuracy, teacher.accuracy, cfg)
        }
        student = asm.assemble(teacher.model, setup.targets, keep, cfg.block)
        val = data_mod.validation_batches(setup.source, cfg, setup.preprocess_mode)
        before = evaluate_accuracy(student, val) if keep else teacher.accuracy
        seconds["assemble"] = time.perf_counter() - t_asm

        reporter.phase("finetune", f"{cfg.finetune_epochs} epoch(s), SGD + Nesterov")
        t_ft = time.perf_counter()
        after = before
        if keep and cfg.finetune_epochs > 0:
            after = finetune(student, setup, cfg, val)
        seconds["finetune"] = time.perf_counter() - t_ft
        # an uncompiled view of the student: the file holds no optimizer state
        # that would not match the optimizer a user compiles it with
        keras.Model(student.input, student.output, name=student.name).save(run.student_keras)
        seconds["total"] = time.perf_counter() - clock
        summary.update(
            status="complete",
            student_path=str(run.student_keras),
            student_accuracy_before_finetune=before,
            student_accuracy=after,
            student_params=student.count_params(),
            student_flops=model_flops(student),
            accepted=sorted(keep, key=lambda n: by_name[n].index),
            rejected=[t.name for t in setup.targets if t.name not in keep],
        )
        summary["compression_params"] = summary["teacher_params"] / summary["student_params"]
        summary["compression_flops"] = summary["teacher_flops"] / summary["student_flops"]
        return summary
    except BaseException as exc:
        # blocks cut short by Ctrl-C in this process: their best weights so far
        for result in getattr(exc, "partial_results", []):
            if result.name in results:
                continue
            target = by_name[result.name]
            results[result.name] = result
            run.save_block(result.name, result.weights)
            run.append_task(task_row(result, target, False))
            summary.setdefault("interrupted_tasks", []).append(result.name)
        summary["tasks_done"] = sum(not r.interrupted for r in results.values())
        summary["status"] = "partial" if results else "failed"
        summary["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise
    finally:
        seconds.setdefault("total", time.perf_counter() - clock)
        summary["seconds"] = seconds
        summary["lost_workers"] = list(getattr(executor, "lost_workers", []))
        summary["end_ts"] = time.time()
        confinement.close()
        run.write_summary(summary)


def finetune(student, setup: Setup, cfg: RunConfig, val) -> float:
    """Fine-tune the assembled student with labels; return its top-1 after."""
    if cfg.freeze_1x1:
        asm.freeze_for_finetune(student)
    steps = setup.source.steps("train", cfg.batch_size)
    train = data_mod.training_batches(setup.source, cfg, setup.preprocess_mode, seed_offset=1)
    asm.compile_for_finetune(student, cfg, steps)
    student.fit(train, epochs=cfg.finetune_epochs, steps_per_epoch=steps, verbose=0, shuffle=False)
    return evaluate_accuracy(student, val)
