"""Sweep analysis: time, energy and utilisation per run; speedup, efficiency, greenup, powerup per group.

Definitions (paper §4.2 and §4.5), all on whole runs (setup, layer tasks, assembly, fine-tuning):

- wall time T: `summary.json` seconds.total, else end_ts - start_ts.
- energy E of a domain: its cumulative energy samples (J) interpolated at the run's start and end.
  Node energy = the domains `profilers.energy.node_domains` names (CPU packages, or powercap psys,
  or powercap packages + DRAM; plus every GPU of the node: idle GPUs burn energy too, §4.5), the
  same sum as the profiler's `total.energy_j`; CPU cores are a sub-domain of their package and are
  reported, never added.
- average power P = E_node / T.
- speedup_n = T_1 / T_n, efficiency_n = speedup_n / n, greenup_n = E_1 / E_n (eq. 7),
  powerup_n = P_n / P_1, where n is the device count and 1 the same group's 1-device run.
  With repeats, medians; the spread is the envelope (best against worst repeat).
- makespan lower bound = max(sum of task seconds / n, longest task).
- across hosts (summary.json `hosts`): E_node = the run's own host over the whole run + every
  other host over its sampler's window, each host once (`hosts`, the one statement of it); a
  host that went silent makes the energy partial, left out of greenup.
- per-task energy: between consecutive task starts and ends, a domain's energy is split equally
  among the tasks running on it then; a GPU task is charged its GPU, and every task its share of
  the node's CPU domains (the CPU feeds every worker).
- predicted vs measured schedule (plan.json against tasks.csv): measured makespan = last task end -
  first task start; per device, span = its last end - its first start and busy = its task seconds
  (a fused pass counted once); ratios are measured / predicted, so above 1 the run was slower.

A group is every config field except `gpus` and `out`; the repeat index lives in `meta`.

Modules: `energy` (window, run and per-task energy), `tasks` (busy time, makespan bound, the
blocks inside a fused pass by their measured costs),
`timeline` (rates over time, CPU workers' cores), `tables` (per run and per group tables),
`plan` (predicted against measured), `hosts` (runs across hosts), `frameworks` (frameworks
side by side), `machine` (machines and sensors), `selection` (the block
sets a run tried and why it chose one). Run and sweep directories
are read by `greenkd.rundir.read`, beside their writer; its names are re-exported here.
"""

from __future__ import annotations

from greenkd.analysis.energy import (
    CPU_ENERGY_SENSORS,
    EDGE_TOLERANCE_S,
    GPU_SENSOR,
    cpu_core_domains,
    cpu_package_domains,
    cumulative_at,
    energy_series,
    node_energy_domains,
    node_scope,
    run_energy,
    split_energy,
    task_energy,
    window_energy,
)
from greenkd.analysis.frameworks import framework_table, frameworks_in
from greenkd.analysis.hosts import run_energy_across_hosts, run_hosts, task_energy_by_host
from greenkd.analysis.machine import (
    gpu_models,
    machines,
    profiled_runs,
    sensors_missing,
    sensors_used,
)
from greenkd.analysis.plan import (
    NO_PLAN,
    PLAN_DEVICE_COLUMNS,
    PlanComparison,
    compare_plan,
    makespan_ratio_medians,
    plan_tables,
)
from greenkd.analysis.selection import goal_text, no_sets_reason, selection_tables
from greenkd.analysis.tables import (
    NOT_BASELINE_FIELDS,
    NOT_GROUP_FIELDS,
    PHASES,
    accuracy_table,
    baseline_key,
    best_row,
    energy_table,
    group_key,
    group_labels,
    largest_runs,
    layer_medians,
    layer_runtimes,
    median_accuracy,
    run_table,
    scaling_table,
    shared_baselines,
    shared_notes,
    threads_label,
)
from greenkd.analysis.tasks import (
    device_load,
    fused_pass_segments,
    has_fused_passes,
    interval_union_s,
    makespan_lower_bound,
)
from greenkd.analysis.timeline import mean_in_window, power_lines, utilisation_lines, worker_cpus
from greenkd.rundir.read import (
    PLAN_FILE,
    REQUIRED_TASK_COLUMNS,
    Run,
    SweepData,
    find_sweeps,
    load_run,
    load_sweep,
    read_samples,
    read_tasks,
)
from profilers.energy import SAMPLE_FIELDS

SAMPLE_COLUMNS = SAMPLE_FIELDS  # the old name of the tidy sample columns

__all__ = [
    "CPU_ENERGY_SENSORS",
    "EDGE_TOLERANCE_S",
    "GPU_SENSOR",
    "NOT_BASELINE_FIELDS",
    "NOT_GROUP_FIELDS",
    "NO_PLAN",
    "PHASES",
    "PLAN_DEVICE_COLUMNS",
    "PLAN_FILE",
    "REQUIRED_TASK_COLUMNS",
    "SAMPLE_COLUMNS",
    "PlanComparison",
    "Run",
    "SweepData",
    "accuracy_table",
    "baseline_key",
    "best_row",
    "compare_plan",
    "cpu_core_domains",
    "cpu_package_domains",
    "cumulative_at",
    "device_load",
    "energy_series",
    "energy_table",
    "find_sweeps",
    "framework_table",
    "frameworks_in",
    "fused_pass_segments",
    "goal_text",
    "gpu_models",
    "group_key",
    "group_labels",
    "has_fused_passes",
    "interval_union_s",
    "largest_runs",
    "layer_medians",
    "layer_runtimes",
    "load_run",
    "load_sweep",
    "machines",
    "makespan_lower_bound",
    "makespan_ratio_medians",
    "mean_in_window",
    "median_accuracy",
    "no_sets_reason",
    "node_energy_domains",
    "node_scope",
    "plan_tables",
    "power_lines",
    "profiled_runs",
    "read_samples",
    "read_tasks",
    "run_energy",
    "run_energy_across_hosts",
    "run_hosts",
    "run_table",
    "scaling_table",
    "selection_tables",
    "sensors_missing",
    "sensors_used",
    "shared_baselines",
    "shared_notes",
    "split_energy",
    "task_energy",
    "task_energy_by_host",
    "threads_label",
    "utilisation_lines",
    "window_energy",
    "worker_cpus",
]
