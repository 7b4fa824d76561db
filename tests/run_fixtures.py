"""Write realistic sweep and run directories (the DESIGN.md contract) for the analysis and report tests.

Each run gets config.json, plan.json (the schedule as greenkd predicted it: assignment, per-device
loads from the cost model's seconds), tasks.csv (tasks scheduled round robin or longest-first onto
devices, back to back; with fusing each device's tasks share one pass), summary.json, and when profiled a 1 Hz-style samples.csv with the profiler's
vocabulary (msr packages and cores, procstat, nvml) plus profile.json. Power is piecewise constant
and the cumulative energy is its exact integral, so expected energies can be computed by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greenkd.schedule import Plan, TaskCost, device_loads, lower_bound

T0 = 1_760_000_000.0  # a fixed Unix time, so that every figure is reproducible

# Layer runtimes (s) of VGG16's 13 convolutions in model order, shaped like Fig. 6c: the early,
# high-resolution layers take longest.
VGG16_TASK_S = [34.0, 52.0, 27.0, 38.0, 20.0, 24.0, 24.0, 13.0, 17.0, 17.0, 7.0, 7.0, 7.0]


@dataclass
class Power:
    """Piecewise-constant powers (W) of the node's domains."""

    package_w: float = 60.0  # each CPU package
    cores_fraction: float = 0.6  # the cores' share of their package
    gpu_busy_w: float = 220.0
    gpu_idle_w: float = 20.0


@dataclass
class RunSpec:
    """One run to write; defaults give a complete, profiled 1-GPU VGG16 run."""

    name: str
    gpus: int = 1
    sched: str = "binpack"
    threads: str = "autotune"  # or "4": 4 parallel calls, intra-op 1
    model: str = "vgg16"
    repeat: int = 0
    device_kind: str = "gpu"  # or "cpu": CPU core-set workers
    cores_per_worker: int = 1  # a CPU worker's cores (cpuset k has cores k*n ... k*n + n - 1)
    node_gpus: int = 4
    packages: int = 2
    cores_per_package: int = 2
    task_seconds: list[float] = field(default_factory=lambda: list(VGG16_TASK_S))
    setup_s: float = 5.0
    assemble_s: float = 2.0
    finetune_s: float = 6.0
    total_s: float | None = None  # override the wall time (the tasks still run from setup_s on)
    node_energy_j: float | None = (
        None  # constant node power giving exactly this energy over the run
    )
    power: Power = field(default_factory=Power)
    sample_period_s: float = 1.0
    idle_s: float = 3.0  # profiler samples before the run starts (its idle baseline)
    profiled: bool = True
    energy_sensors: bool = True  # False: procstat only, as on a machine without msr and NVML
    # complete | partial | failed (summary.json says so) | killed (no summary.json) | missing (no run dir)
    status: str = "complete"
    error: str | None = None
    start_ts: float = T0
    teacher_accuracy: float = 0.8732
    student_accuracy: float = 0.8659
    plan: bool = True  # write plan.json (False: a run from before greenkd recorded its schedule)
    predicted_task_s: list[float] | None = (
        None  # the cost model's seconds per task; None: exactly task_seconds
    )
    cost_source: str = "store"
    fused: bool = False  # each device trains all its tasks in one pass: one teacher prefix, shared
    prefix_fraction: float = 0.5  # the teacher prefix's share of each task's seconds (for fusing)
    # (IDLE_W, MAX_W): `--power-model cpu:IDLE_W:MAX_W`'s estimated rows (sensor=model) per package
    power_model: tuple[float, float] | None = None
    # fused: tasks.csv has each block's own cost and the trunk's (greenkd.distill.blockcost):
    # a task's own part of its seconds, and its pass's deepest prefix
    block_costs: bool = False
    # A multi-host run (MPI --hosts node1,node2 ...): `gpus` devices split evenly over `hosts`
    # hosts node1, node2 ...; each host's sampler writes RUN/hosts/<host>/ over the task phase
    # (profilers.hosts), node1 is also the host the run's own profiler wraps (samples.csv).
    hosts: int = 1
    host_powers: dict[str, Power] = field(default_factory=dict)  # a host's own powers
    silent_host: str | None = None  # this host's sampler dies halfway through the task phase
    framework: str | None = None  # config.json `framework`; None: left out, as before it existed


def fused_seconds(seconds: list[float], prefix_fraction: float) -> float:
    """One fused pass: the deepest prefix once, plus every task's own part."""
    if not seconds:
        return 0.0
    return max(seconds) * prefix_fraction + sum(seconds) * (1 - prefix_fraction)


def schedule(task_seconds: list[float], n: int, sched: str) -> list[int]:
    """Device index of each task: round robin in model order, or longest task to least loaded device."""
    if sched == "rr":
        return [i % n for i in range(len(task_seconds))]
    load = [0.0] * n
    device = [0] * len(task_seconds)
    for i in sorted(range(len(task_seconds)), key=lambda i: -task_seconds[i]):
        d = min(range(n), key=lambda d: load[d])
        device[i] = d
        load[d] += task_seconds[i]
    return device


def device_names(spec: RunSpec) -> list[str]:
    """Device labels as greenkd.devices makes them: gpu0, gpu1 ... or cpuset0, cpuset1 ...

    On several hosts each host numbers its own devices (gpu0 on node1 and gpu0 on node2, told
    apart by tasks.csv `host`), as the MPI ranks record them.
    """
    per_host = spec.gpus // spec.hosts
    prefix = "gpu" if spec.device_kind == "gpu" else "cpuset"
    return [f"{prefix}{i % per_host}" for i in range(spec.gpus)]


def device_hosts(spec: RunSpec) -> list[str]:
    """The host of each device: node1 for all on one host, else gpus / hosts devices per host."""
    per_host = spec.gpus // spec.hosts
    return [f"node{i // per_host + 1}" for i in range(spec.gpus)]


def device_cores(spec: RunSpec) -> dict[str, list[int]]:
    """config.json meta `device_cores`: a CPU worker's own cores; a GPU worker may use every core."""
    n_cpus = spec.packages * spec.cores_per_package
    per = spec.cores_per_worker
    return {
        name: list(range(n_cpus))
        if spec.device_kind == "gpu"
        else list(range(k * per, (k + 1) * per))
        for k, name in enumerate(device_names(spec))
    }


def task_name(i: int) -> str:
    return f"block{i // 3 + 1}_conv{i % 3 + 1}"


def task_rows(spec: RunSpec) -> pd.DataFrame:
    """tasks.csv: each device runs its tasks back to back from the end of setup (fused: in one pass)."""
    names, hosts = device_names(spec), device_hosts(spec)
    assign = schedule(spec.task_seconds, spec.gpus, spec.sched)
    clock = [spec.start_ts + spec.setup_s] * spec.gpus
    passes = [
        fused_seconds(
            [s for s, a in zip(spec.task_seconds, assign, strict=True) if a == d],
            spec.prefix_fraction,
        )
        for d in range(spec.gpus)
    ]
    rows = []
    for i, (seconds, d) in enumerate(zip(spec.task_seconds, assign, strict=True)):
        start = clock[d]
        if spec.fused:  # every task of the pass starts and ends with it, as greenkd records them
            seconds = passes[d]
        else:
            clock[d] += seconds
        rows.append(
            {
                "task": task_name(i),
                "index": i,
                "device": names[d],
                "host": hosts[d],
                "pid": 1000 + d,
                "start": start,
                "end": start + seconds,
                "seconds": seconds,
                "seconds_setup": 0.5,
                "seconds_train": seconds - 1.0,
                "seconds_eval": 0.5,
                "epochs": 4,
                "params_before": 36928 * (i + 1),
                "params_after": 4800 * (i + 1),
                "flops_before": 37_000_000 * (i + 1),
                "flops_after": 4_900_000 * (i + 1),
                "mse_first": 0.9,
                "mse_best": 0.05,
                "accuracy": 0.87 - 0.001 * i,
                "accepted": True,
                "fused_group": names[d] if spec.fused else "",
            }
        )
        if spec.fused and spec.block_costs:
            own = spec.task_seconds[i] * (1 - spec.prefix_fraction)
            trunk = passes[d] - sum(
                s * (1 - spec.prefix_fraction)
                for s, a in zip(spec.task_seconds, assign, strict=True)
                if a == d
            )
            rows[-1].update(seconds_block=own, seconds_trunk=trunk)
    return pd.DataFrame(rows)


def plan_dict(spec: RunSpec) -> dict[str, Any]:
    """plan.json as greenkd writes it: the fixture's own schedule, loads from the predicted seconds."""
    predicted = spec.predicted_task_s if spec.predicted_task_s is not None else spec.task_seconds
    costs = [
        TaskCost(task_name(i), s, s * spec.prefix_fraction if spec.fused else 0.0)
        for i, s in enumerate(predicted)
    ]
    assign = schedule(spec.task_seconds, spec.gpus, spec.sched)
    groups = tuple(
        tuple(task_name(i) for i, a in enumerate(assign) if a == d) for d in range(spec.gpus)
    )
    loads = tuple(device_loads(groups, costs, spec.fused))
    plan = Plan(
        policy=spec.sched,
        n_devices=spec.gpus,
        assignment=groups,
        queue_order=tuple(c.name for c in costs),
        predicted_load_s=loads,
        predicted_makespan_s=max(loads),
        lower_bound_s=lower_bound(costs, spec.gpus, spec.fused),
        cost_source=spec.cost_source,
        fused=spec.fused,
        optimal=True if spec.sched == "opt" else None,
    )
    return {**plan.to_dict(), "devices": device_names(spec)}


def run_window(spec: RunSpec, tasks: pd.DataFrame) -> tuple[float, float]:
    if spec.total_s is not None:
        return spec.start_ts, spec.start_ts + spec.total_s
    tasks_end = tasks["end"].max() if len(tasks) else spec.start_ts + spec.setup_s
    return spec.start_ts, tasks_end + spec.assemble_s + spec.finetune_s


def busy_gpus(tasks: pd.DataFrame, t: np.ndarray, gpu: str) -> np.ndarray:
    on = tasks[tasks["device"] == gpu]
    busy = np.zeros(t.shape, bool)
    for r in on.itertuples():
        busy |= (t >= r.start) & (t < r.end)
    return busy


def gpu_energy_at(
    tasks: pd.DataFrame, spec: RunSpec, gpu: str, t0: float, t: np.ndarray
) -> np.ndarray:
    """Exact integral from t0 of the GPU's power: busy while one of its tasks runs, idle otherwise."""
    p = spec.power
    energy = p.gpu_idle_w * (t - t0)
    # A fused pass's tasks share one interval: the GPU is busy once, not once per task.
    for r in tasks[tasks["device"] == gpu].drop_duplicates(["start", "end"]).itertuples():
        overlap = np.clip(np.minimum(t, r.end) - max(r.start, t0), 0, None)
        energy += (p.gpu_busy_w - p.gpu_idle_w) * overlap
    return energy


def constant_power_split(spec: RunSpec, window_s: float) -> Power:
    """Powers giving exactly `node_energy_j` over the run: 30% CPU packages, 70% the node's GPUs."""
    node_w = spec.node_energy_j / window_s
    gpus = spec.node_gpus if spec.device_kind == "gpu" else 0
    cpu_share = 0.3 if gpus else 1.0
    gpu_w = (1 - cpu_share) * node_w / gpus if gpus else 0.0
    return Power(package_w=cpu_share * node_w / spec.packages, gpu_busy_w=gpu_w, gpu_idle_w=gpu_w)


def sample_rows(spec: RunSpec, tasks: pd.DataFrame, window: tuple[float, float]) -> pd.DataFrame:
    """samples.csv in the profiler's vocabulary, from idle_s before the run to one period after."""
    t0 = window[0] - spec.idle_s
    t = t0 + np.arange(0, window[1] - t0 + spec.sample_period_s + 1e-9, spec.sample_period_s)
    frames = []

    def add(sensor: str, device: str, metric: str, unit: str, values: np.ndarray) -> None:
        frames.append(
            pd.DataFrame(
                {
                    "ts": t,
                    "sensor": sensor,
                    "device": device,
                    "metric": metric,
                    "value": np.round(values, 6),
                    "unit": unit,
                }
            )
        )

    in_run = (t >= window[0]) & (t <= window[1])
    n_cpus = spec.packages * spec.cores_per_package
    add("procstat", "cpu", "utilization", "%", np.where(in_run, 35.0 + 10 * spec.gpus, 3.0))
    cpu_util = [np.where(in_run, 30.0 + 5 * (c % 3), 2.0) for c in range(n_cpus)]
    for c in range(n_cpus):
        add("procstat", f"cpu{c}", "utilization", "%", cpu_util[c])
    if spec.power_model is not None:
        # The model's rows: each package's power from its CPUs' utilisation, energy its integral
        # over each interval (the power of an interval is stamped at its end, as the profiler does).
        idle_w, max_w = spec.power_model
        for p in range(spec.packages):
            util = np.mean(
                cpu_util[p * spec.cores_per_package : (p + 1) * spec.cores_per_package], 0
            )
            power = idle_w + (max_w - idle_w) * util / 100
            energy = np.concatenate([[0.0], np.cumsum(power[1:] * np.diff(t))])
            add("model", f"package{p}", "energy", "J", energy)
            add("model", f"package{p}", "power", "W", power)
    if spec.energy_sensors:
        for p in range(spec.packages):
            add("msr", f"package{p}", "energy", "J", spec.power.package_w * (t - t0))
            add("msr", f"package{p}", "power", "W", np.full(t.shape, spec.power.package_w))
            core_w = spec.power.package_w * spec.power.cores_fraction / spec.cores_per_package
            for c in range(spec.cores_per_package):
                core = p * spec.cores_per_package + c
                add("msr", f"core{core}", "energy", "J", core_w * (t - t0))
                add("msr", f"core{core}", "power", "W", np.full(t.shape, core_w))
        if spec.device_kind == "gpu":
            for g in range(spec.node_gpus):
                gpu = f"gpu{g}"
                busy = busy_gpus(tasks, t, gpu)
                add("nvml", gpu, "energy", "J", gpu_energy_at(tasks, spec, gpu, t0, t))
                add(
                    "nvml",
                    gpu,
                    "power",
                    "W",
                    np.where(busy, spec.power.gpu_busy_w, spec.power.gpu_idle_w),
                )
                add("nvml", gpu, "utilization", "%", np.where(busy, 87.0, 0.0))
                add("nvml", gpu, "memory_used", "MiB", np.where(busy, 5120.0, 300.0))
                add("nvml", gpu, "clock_sm", "MHz", np.where(busy, 1800.0, 300.0))
                add("nvml", gpu, "temperature", "C", np.where(busy, 71.0, 35.0))
    return pd.concat(frames, ignore_index=True).sort_values(
        ["ts", "sensor", "device"], kind="stable"
    )


def profile_summary(spec: RunSpec, samples: pd.DataFrame) -> dict[str, Any]:
    """profile.json as the profiler writes it for these samples."""
    domains = []
    energy = samples[(samples["metric"] == "energy") & (samples["sensor"] != "model")]
    for (sensor, device), g in energy.groupby(["sensor", "device"]):
        power = samples[
            (samples["metric"] == "power")
            & (samples["sensor"] == sensor)
            & (samples["device"] == device)
        ]
        idle_w = float(power["value"].iloc[0])
        duration = float(g["ts"].iloc[-1] - g["ts"].iloc[0])
        domains.append(
            {
                "sensor": sensor,
                "device": device,
                "energy_j": float(g["value"].iloc[-1] - g["value"].iloc[0]),
                "source": "counter",
                "avg_power_w": float(power["value"].mean()),
                "peak_power_w": float(power["value"].max()),
                "idle_power_w": idle_w,
                "idle_energy_j": idle_w * duration,
                "dynamic_energy_j": float(g["value"].iloc[-1] - g["value"].iloc[0])
                - idle_w * duration,
            }
        )
    missing = []
    if not spec.energy_sensors:
        missing = [
            {
                "sensor": "msr",
                "reason": "no /dev/cpu/0/msr",
                "fix": "load the msr module (`modprobe msr`) as root; reading needs root or CAP_SYS_RAWIO",
            },
            {
                "sensor": "powercap",
                "reason": "no /sys/class/powercap/intel-rapl:0",
                "fix": "needs a kernel with the powercap RAPL driver",
            },
        ]
    if spec.device_kind != "gpu" or not spec.energy_sensors:
        missing.append(
            {
                "sensor": "nvml",
                "reason": "NVML: no NVIDIA driver",
                "fix": "install the NVIDIA driver",
            }
        )
    util = samples[samples["metric"] == "utilization"]
    gpu_models = (
        ["NVIDIA GeForce RTX 2080 Ti"] * spec.node_gpus if spec.device_kind == "gpu" else []
    )
    estimate = None
    if spec.power_model is not None:
        modelled = samples[(samples["metric"] == "energy") & (samples["sensor"] == "model")]
        estimate = {
            "sensor": "model",
            "model": f"cpu:{spec.power_model[0]:g}:{spec.power_model[1]:g}",
            "energy_j": float(
                sum(g["value"].iloc[-1] - g["value"].iloc[0] for _, g in modelled.groupby("device"))
            ),
        }
    return {
        "status": "complete",
        "estimate": estimate,
        "duration_s": float(samples["ts"].max() - samples["ts"].min()),
        "start_ts": float(samples["ts"].min()),
        "end_ts": float(samples["ts"].max()),
        "domains": domains,
        "utilization": [
            {"sensor": s, "device": d, "avg_pct": float(g["value"].mean())}
            for (s, d), g in util.groupby(["sensor", "device"])
        ],
        "missing": missing,
        "metadata": {
            "host": "node1",
            "cpu_model": "AMD Ryzen Threadripper 2950X 16-Core Processor",
            "gpu_models": gpu_models,
            "gpu_driver": "550.54.15" if gpu_models else None,
            "gpus": [
                {"index": i, "name": name, "energy_counter": True}
                for i, name in enumerate(gpu_models)
            ],
            "greenkd_version": "0.1.0",
        },
    }


def write_run(sweep_dir: Path, spec: RunSpec) -> Path:
    """Write one run directory; returns it."""
    run_dir = Path(sweep_dir) / spec.name
    if spec.status == "missing":
        return run_dir  # failed before its directory was made: only sweep.json knows of it
    run_dir.mkdir(parents=True, exist_ok=True)
    data_threads = (
        {"parallel_calls": None, "max_intra_op_parallelism": None, "private_threadpool_size": None}
        if spec.threads == "autotune"
        else {
            "parallel_calls": int(spec.threads),
            "max_intra_op_parallelism": 1,
            "private_threadpool_size": None,
        }
    )
    label = "autotune" if spec.threads == "autotune" else f"{spec.threads}-intra1"
    config = {
        "model": spec.model,
        "width": 1.0,
        "dataset": "cifar10",
        "image_size": 32,
        "batch_size": 64,
        "epochs": 30,
        "block": "a",
        "gpus": spec.gpus,
        "hosts": ",".join(dict.fromkeys(device_hosts(spec))) if spec.hosts > 1 else None,
        "sched": spec.sched,
        "backend": "mpi",
        "fuse": spec.fused,
        "data_threads": data_threads,
        "seed": 0,
        "out": str(run_dir),
    }
    if spec.framework is not None:
        config["framework"] = spec.framework
    meta = {
        "version": "0.1.0",
        "host": "node1",
        "device_kind": spec.device_kind,
        "devices": device_names(spec),
        "device_cores": device_cores(spec),
        "sweep": Path(sweep_dir).name,
        "run": spec.name,
        "repeat": spec.repeat,
        "data_threads_label": label,
    }
    (run_dir / "config.json").write_text(json.dumps({"config": config, "meta": meta}, indent=2))
    plan = plan_dict(spec) if spec.plan else None
    if plan is not None:  # written before any task runs, so a killed run has it too
        (run_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    tasks = task_rows(spec)
    window = run_window(spec, tasks)
    if spec.node_energy_j is not None:
        spec.power = constant_power_split(spec, window[1] - window[0])
    if spec.status in ("partial", "killed"):
        # Interrupted halfway through the task phase: only the tasks that ended are on disk.
        cut = spec.start_ts + spec.setup_s + (tasks["end"].max() - spec.start_ts - spec.setup_s) / 2
        tasks = tasks[tasks["end"] <= cut]
        window = (window[0], cut)
    tasks.to_csv(run_dir / "tasks.csv", index=False)
    if spec.profiled:
        # the run's own profiler samples its first host (on one host: every task's)
        samples = sample_rows(spec, tasks[tasks["host"] == "node1"], window)
        samples.to_csv(run_dir / "samples.csv", index=False)
        (run_dir / "profile.json").write_text(json.dumps(profile_summary(spec, samples), indent=2))
    hosts = write_hosts(run_dir, spec, tasks)
    if spec.status == "killed":
        return run_dir
    total = window[1] - window[0]
    task_phase = (tasks["end"].max() - tasks["start"].min()) if len(tasks) else 0.0
    summary = {
        "status": spec.status,
        "error": spec.error,
        "teacher_accuracy": spec.teacher_accuracy,
        "student_accuracy": spec.student_accuracy,
        "student_accuracy_before_finetune": spec.student_accuracy - 0.02,
        "teacher_params": 14_719_818,
        "student_params": 2_083_914,
        "teacher_flops": 313_478_154,
        "student_flops": 47_120_394,
        "seconds": {
            "setup": spec.setup_s,
            "tasks": task_phase,
            "assemble": spec.assemble_s,
            "finetune": spec.finetune_s,
            "total": total,
        },
        "start_ts": window[0],
        "end_ts": window[1],
        "n_devices": spec.gpus,
        "device_kind": spec.device_kind,
    }
    if plan is not None:
        summary["plan"] = plan
    if hosts is not None:
        summary["hosts"] = hosts
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir


def write_hosts(run_dir: Path, spec: RunSpec, tasks: pd.DataFrame) -> dict[str, Any] | None:
    """RUN/hosts/<host>/ as each host's sampler writes it (profilers.hosts), and summary.json's
    `hosts` from the real reader (`profilers.hosts.host_energy`); None on one host.

    Every host is sampled over the task phase (a period either side), on node1's clock.
    The silent host's samples stop halfway through it, and it has no profile.json; nor has any
    host of a killed run (its ranks died with their samplers).
    """
    if spec.hosts < 2 or tasks.empty:
        return None
    from profilers.hosts import CLOCK_FILE, PROFILE_FILE, host_dir, host_energy

    start = tasks["start"].min() - spec.sample_period_s
    end = tasks["end"].max() + spec.sample_period_s
    for k, host in enumerate(dict.fromkeys(device_hosts(spec))):
        own = replace(spec, idle_s=0.0, power=spec.host_powers.get(host, spec.power))
        samples = sample_rows(own, tasks[tasks["host"] == host], (start, end))
        folder = host_dir(run_dir, host)
        folder.mkdir(parents=True, exist_ok=True)
        silent = host == spec.silent_host
        if silent:
            samples = samples[samples["ts"] <= start + (end - start) / 2]
        samples.to_csv(folder / "samples.csv", index=False)
        (folder / "marks.csv").write_text("ts,label,fields\n")
        offset = -0.004 * k  # node1 is the reference: its offset is 0
        clock = {
            "host": host,
            "pid": 2000 + k,
            "offset_start_s": offset,
            "offset_end_s": None if silent else offset + 0.001 * k,
            "clock_shift_s": None,
        }
        (folder / CLOCK_FILE).write_text(json.dumps(clock))
        if not silent and spec.status != "killed":
            profile = profile_summary(own, samples)
            profile["metadata"]["host"] = host
            (folder / PROFILE_FILE).write_text(json.dumps(profile, indent=2))
    return host_energy(run_dir, start, end)


def write_sweep(
    root: Path,
    name: str,
    specs: list[RunSpec],
    *,
    spec: dict[str, Any] | None = None,
    listed: bool = True,
) -> Path:
    """Write sweep.json and every run; `listed=False` leaves sweep.json out."""
    sweep_dir = Path(root) / name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for s in specs:
        write_run(sweep_dir, s)
    if listed:
        status = {"killed": "partial", "missing": "failed"}
        runs = [
            {"run": s.name, "status": status.get(s.status, s.status), "error": s.error}
            for s in specs
        ]
        payload = {
            "name": name,
            "created_ts": T0 - 60,
            "spec": spec or {"gpus": sorted({s.gpus for s in specs})},
            "runs": runs,
        }
        (sweep_dir / "sweep.json").write_text(json.dumps(payload, indent=2))
    return sweep_dir


def paper_table3_specs(model: str) -> list[RunSpec]:
    """Runs with the paper's Table 3 wall times (single AMD server, bin packing) and Table 9 energies."""
    times = {
        "vgg16": {1: 3920.53, 2: 2214.57, 3: 1603.12, 4: 1274.77},
        "resnet50": {1: 9693.24, 2: 5060.97, 3: 3876.03, 4: 2749.81},
    }[model]
    energy_kj = {
        "vgg16": {1: 1061.98, 2: 950.70, 3: 929.30, 4: 893.44},
        "resnet50": {1: 1263.43, 2: 1106.68, 3: 1067.82, 4: 977.39},
    }[model]
    return [
        RunSpec(
            name=f"{model}-n{n}",
            gpus=n,
            model=model,
            total_s=times[n],
            node_energy_j=energy_kj[n] * 1e3,
            sample_period_s=10.0,
            task_seconds=[t * 6 / n for t in VGG16_TASK_S],
        )
        for n in (1, 2, 3, 4)
    ]


def demo_specs() -> list[RunSpec]:
    """A small sweep shaped like the paper's: rr vs binpack, autotune vs 4 threads, 1, 2 and 4 GPUs.

    With autotune every layer slows as devices are added (Fig. 5c); with 4 threads it does not (5d).
    """
    specs = []
    for sched in ("rr", "binpack"):
        for threads in ("autotune", "4"):
            for n in (1, 2, 4):
                slow = 1 + 0.12 * (n - 1) if threads == "autotune" else 1.0
                specs.append(
                    RunSpec(
                        name=f"{sched}-{threads}-n{n}",
                        gpus=n,
                        sched=sched,
                        threads=threads,
                        task_seconds=[t * slow for t in VGG16_TASK_S],
                    )
                )
    return specs
