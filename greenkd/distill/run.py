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
from typing import Any, Protocol

from greenkd import data as data_mod
from greenkd.config import RunConfig
from greenkd.devices import Device, confined_to, run_devices
from greenkd.distill import assemble as asm
from greenkd.distill import planning
from greenkd.distill.setup import LayerTasks, Setup, prepare
from greenkd.distill.targets import Target, model_flops
from greenkd.distill.train import evaluate_accuracy
from greenkd.errors import GreenkdError
from greenkd.executors import select
from greenkd.executors.base import Executor, Progress, TaskResult, Work
from greenkd.rundir import RunDir
from greenkd.schedule.sources import check_timings_file
from greenkd.tfsetup import keras


class Reporter(Progress, Protocol):
    """What a run tells its caller as it goes (the CLI draws progress bars from it)."""

    def tasks_started(self, total: int, epochs: int) -> None: ...
    def task_done(self, result: TaskResult, target: Target, accepted: bool) -> None: ...


class SilentReporter:
    def phase(self, name: str, detail: str = "") -> None: ...
    def tasks_started(self, total: int, epochs: int) -> None: ...
    def epoch(self, task: str, epoch: int, mse: float) -> None: ...
    def task_done(self, result: TaskResult, target: Target, accepted: bool) -> None: ...


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
    check_timings_file(cfg.timings)
    devices = devices or run_devices(cfg)
    source = LayerTasks(cfg)
    if executor is None:
        executor = select(cfg, devices, source)
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
        plan = planning.plan_for(setup, devices)
        summary["plan"] = {**plan.to_dict(), "devices": [d.label for d in devices]}
        run.write_plan(summary["plan"])

        reporter.phase("tasks", f"{len(setup.targets)} layer tasks on {len(devices)} device(s)")
        reporter.tasks_started(len(setup.targets), cfg.epochs)
        t_tasks = time.perf_counter()
        for result in executor(Work(setup.names, plan, source, setup), devices, reporter):
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
        summary["timings_recorded"] = planning.record(setup, devices, results.values())

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
        summary["lost_workers"] = list(executor.lost_workers)
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
