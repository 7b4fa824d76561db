"""A whole distillation run, paper Algorithm 1, top to bottom.

1. find the targets (every non-1x1 Conv2D of the teacher);
2. plan: which device trains which layer tasks;
3. train every task (an executor runs them: inline here, processes, MPI or Dask);
4. gather the blocks and choose those to splice in (`select`): the set that best meets the
   target for the fine-tuned student, or, as the paper, each block that passes the threshold;
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
from greenkd.devices import GPU_MEMORY_ENV, Device, confined_to, run_devices
from greenkd.distill import assemble as asm
from greenkd.distill import planning
from greenkd.distill import select as choose
from greenkd.distill.setup import LayerTasks, Setup, prepare
from greenkd.distill.student import Tuned, Tuner, aim, select_blocks, selection_goal
from greenkd.distill.targets import Target, model_flops
from greenkd.distill.train import evaluate_accuracy, jit_compile
from greenkd.errors import GreenkdError
from greenkd.executors import select
from greenkd.executors.base import Executor, Progress, TaskResult, Work
from greenkd.framework import NAME as FRAMEWORK
from greenkd.framework import keras
from greenkd.rundir import RunDir
from greenkd.rundir.phases import whole_run
from greenkd.schedule.sources import check_timings_file


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
        "seconds_compile": result.seconds_compile,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "stop": result.stop,
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
        "block_step_s": result.block_step_s,
        "trunk_step_s": result.trunk_step_s,
        "seconds_block": result.seconds_block,
        "seconds_trunk": result.seconds_trunk,
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
    if cfg.framework != FRAMEWORK:
        raise GreenkdError(
            f"--framework {cfg.framework}, but Keras runs on {FRAMEWORK} in this process: "
            f"set KERAS_BACKEND={cfg.framework} before greenkd loads (greenkd distill does)"
        )
    reporter = reporter or SilentReporter()
    check_timings_file(cfg.timings)
    devices = devices or run_devices(cfg)
    source = LayerTasks(cfg)
    if executor is None:
        executor = select(cfg, devices, source)
    if devices[0].kind == "gpu":
        # this process assembles and fine-tunes beside worker 0: memory as it needs it (the CLI
        # has bound it to that GPU already; an in-process caller gets the memory policy here)
        for key, value in GPU_MEMORY_ENV.items():
            os.environ.setdefault(key, value)
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
        "jit": cfg.jit,
        "framework": cfg.framework,
        "finetune_batch_norm": cfg.finetune_batch_norm,
        "tasks_done": 0,
    }
    results: dict[str, TaskResult] = {}
    tuner: Tuner | None = None
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
            teacher_training=teacher.training_record(),  # how it stopped; None for a user's file
            n_targets=len(setup.targets),
            # convs left as they are, their block being larger (none with replace_growing)
            n_skipped=len(setup.skipped),
            skipped_targets=[s.to_dict() for s in setup.skipped],
        )
        by_name = {t.name: t for t in setup.targets}
        plan = planning.plan_for(setup, devices)
        summary["plan"] = {**plan.to_dict(), "devices": [d.label for d in devices]}
        run.write_plan(summary["plan"])

        skipped = ", ".join(s.target.name for s in setup.skipped)
        reporter.phase(
            "tasks",
            f"{len(setup.targets)} layer tasks on {len(devices)} device(s)"
            + (f"; skipped, block larger than the conv: {skipped}" if skipped else ""),
        )
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
        compiled = [
            r.seconds_compile for r in results.values() if r.seconds_compile == r.seconds_compile
        ]
        # tracing and compiling inside the task phase, estimated per pass (tasks.csv: per task)
        summary["seconds_compile_tasks"] = float(sum(compiled)) if compiled else None

        val = data_mod.validation_batches(setup.source, cfg, setup.preprocess_mode)
        # the workers, teacher and data still loaded, fine-tune every student together
        replicas = getattr(executor, "replicas", lambda: None)()
        tuner = Tuner(setup, val, replicas, reporter)
        goal = selection_goal(cfg, setup, summary)
        blocks = [
            choose.Block(
                t.name,
                t.index,
                t.params_before - t.params_after,
                t.flops_before - t.flops_after,
                results[t.name].accuracy,
            )
            for t in setup.targets
        ]
        tuned: dict[tuple[str, ...], Tuned] = {}
        if cfg.acceptance == "threshold":  # the paper's rule, block by block, as it always was
            selection = choose.by_threshold(blocks, goal)
        else:
            reporter.phase("select", aim(goal))
            t_sel = time.perf_counter()
            selection = select_blocks(
                blocks, goal, setup, cfg, results, val, tuned, reporter, tuner
            )
            seconds["select"] = time.perf_counter() - t_sel
            seconds["finetune_in_select"] = tuner.seconds
            seconds["evaluate_in_select"] = tuner.seconds_evaluate

        reporter.phase("assemble", f"splicing {len(selection.chosen)} block(s) into the teacher")
        t_asm = time.perf_counter()
        keep = {n: results[n].weights for n in selection.chosen}
        reused = tuned.pop(tuple(selection.chosen), None)
        tuned.clear()
        if reused is None:
            student = asm.assemble(teacher.model, setup.targets, keep, cfg.block)
        else:  # its brief fine-tune already was the run's whole fine-tune
            student = tuner.student(reused, keep, cfg)
        if not keep:
            before = teacher.accuracy
        elif selection.mode == "target":  # measured while choosing
            before = next(s for s in selection.sets if s.blocks == selection.chosen)
            before = before.accuracy_spliced
        else:
            before = evaluate_accuracy(student, val, jit_compile(cfg))
        seconds["assemble"] = time.perf_counter() - t_asm

        reporter.phase("finetune", f"{cfg.finetune_epochs} epoch(s), SGD + Nesterov")
        t_ft = time.perf_counter()
        after, spliced_weights = before, None
        if reused is not None:
            after = reused.accuracy
        elif keep and cfg.finetune_epochs > 0:
            if selection.mode == "target":
                spliced_weights = student.get_weights()
            after = tuner(keep, cfg, student).accuracy
        if selection.mode == "target" and keep and cfg.finetune_epochs > 0:
            # The target is on the student delivered. Fine-tuning can lower top-1 this close to
            # the teacher (on digits one epoch took a 3-block student from 96.9% to 95.5% with
            # every layer trainable): then the student keeps its spliced weights, as the
            # selection judged the sets by the better of the two.
            summary["student_accuracy_finetuned"] = after
            summary["finetune_kept"] = after >= before
            if after < before:
                if spliced_weights is None:
                    student = asm.assemble(teacher.model, setup.targets, keep, cfg.block)
                else:
                    student.set_weights(spliced_weights)
                after = before
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
            selection=selection.to_dict(),
            accepted=sorted(keep, key=lambda n: by_name[n].index),
            rejected=[t.name for t in setup.targets if t.name not in keep],
        )
        summary["compression_params"] = summary["teacher_params"] / summary["student_params"]
        summary["compression_flops"] = summary["teacher_flops"] / summary["student_flops"]
        summary["diagnosis"] = choose.diagnose(
            summary,
            n_val=setup.source.sizes["val"],
            block_accuracies=[b.accuracy for b in blocks],
            goal=goal,
            finetune_epochs=cfg.finetune_epochs,
        )
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
        if tuner is not None:
            # how many devices each fine-tune was split over (1: this process fine-tuned alone)
            summary["finetune_devices"] = tuner.devices or None
            summary["finetune_parts"] = {k: round(v, 3) for k, v in tuner.parts.items()} or None
            # the same for target-mode selection's spliced evaluations (their sets dealt out)
            summary["evaluate_devices"] = tuner.evaluate_devices or None
            # where: "workers" (data-parallel on the executor's kept workers) or "run" (this
            # process, and why: another backend, framework, or a worker lost)
            used = tuner.devices or tuner.evaluate_devices
            summary["finetune_on"] = None if not used else "run" if tuner.fallback else "workers"
            summary["finetune_fallback"] = tuner.fallback if used else None
        spread = ["tasks"]
        if tuner is not None and tuner.evaluate_devices > 1:
            spread.append("selection")  # its evaluations (whole_run counts the rest serial)
        if tuner is not None and tuner.devices > 1:
            spread.append("finetune")
        summary["whole_run"] = whole_run(seconds, len(devices), spread)
        summary["lost_workers"] = list(executor.lost_workers)
        if getattr(executor, "hosts", None) is not None:  # a multi-host run (profilers.hosts)
            summary["hosts"] = executor.hosts
        summary["end_ts"] = time.time()
        confinement.close()
        getattr(executor, "close", lambda: None)()  # workers kept for fine-tuning
        run.write_summary(summary)
