"""Scheduling: which device trains which layer task (paper §3.3; issues 5 and 7).

Pure Python (no TensorFlow): `plan()` turns per-task costs into a `Plan` with
rr, binpack, ws or opt; the costs come from a timing file, the timing store,
a calibration or the analytic model; `simulate()` predicts every policy at once.
"""

from greenkd.schedule.core import (
    Plan,
    TaskCost,
    device_load,
    device_loads,
    lower_bound,
    makespan,
)
from greenkd.schedule.costs import (
    TimingStore,
    analytic_costs,
    default_store_path,
    load_timings_file,
    timing_key,
)
from greenkd.schedule.policies import POLICIES, plan, queue_order
from greenkd.schedule.simulate import Prediction, predictions_table, simulate

__all__ = [
    "POLICIES",
    "Plan",
    "Prediction",
    "TaskCost",
    "TimingStore",
    "analytic_costs",
    "default_store_path",
    "device_load",
    "device_loads",
    "load_timings_file",
    "lower_bound",
    "makespan",
    "plan",
    "predictions_table",
    "queue_order",
    "simulate",
    "timing_key",
]
