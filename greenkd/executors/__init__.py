"""Executors: where the layer tasks run (paper §3.3, Algorithm 1 lines 2-11).

- `local` (default): one worker process per device on this machine
  (`local.py`); a single device that is the whole machine runs in-process.
- `mpi`: one MPI rank per device (`mpi.py`); rank 0 broadcasts the plan and
  gathers the weights.
- `dask`: a Dask cluster (`dask.py`); a local one by default.

- `inline`: every task in this process (one device that is this process's GPU
  or all of its cores).

An executor is called as `executor(work, devices, progress)` (base.py: the
plan, a picklable task source workers load, the tasks loaded here) and yields
`TaskResult`s as tasks finish; the run writes them and assembles. Executors
know nothing of distillation, and nothing here imports TensorFlow at module
import: worker processes bind their device first.
"""

from __future__ import annotations

from greenkd.config import RunConfig, check_model_and_dataset
from greenkd.devices import Device, covers_process, run_devices
from greenkd.errors import GreenkdError
from greenkd.executors.base import Executor, TaskSource
from greenkd.schedule.sources import check_timings_file


def preflight(cfg: RunConfig) -> list[Device]:
    """The run's devices; GreenkdError for settings that cannot run, before anything loads."""
    check_model_and_dataset(cfg)
    check_timings_file(cfg.timings)
    devices = run_devices(cfg)
    if cfg.backend == "mpi":
        from greenkd.executors.mpi import check

        check(cfg)
    elif cfg.hosts or cfg.hostfile:
        from greenkd.executors.mpi import host_list

        host_list(cfg)  # says they are for MPI
    return devices


def select(cfg: RunConfig, devices: list[Device], source: TaskSource) -> Executor:
    """The executor for `cfg.backend` on `devices` (the MPI backend is entered from its ranks).

    Local workers start now, loading TensorFlow (and `source`'s data and teacher when
    cached) while the caller sets up.
    """
    if cfg.backend == "local":
        if len(devices) == 1 and covers_process(devices[0]):
            # one CPU device that is the whole machine: a worker process would only add its
            # start-up. A GPU always gets a worker, as with N GPUs, so that a 1-GPU baseline
            # runs on the same hardware the same way as the runs it is compared with.
            from greenkd.executors.inline import InlineExecutor

            return InlineExecutor()
        from greenkd.executors.local import LocalExecutor

        return LocalExecutor(source, devices, keep=True)  # kept for data-parallel fine-tuning
    if cfg.backend == "dask":
        from greenkd.executors.dask import DaskExecutor

        return DaskExecutor(cfg)
    if cfg.backend == "mpi":
        raise GreenkdError(
            "--backend mpi runs from `greenkd distill --backend mpi` (which starts mpiexec) "
            "or under `mpiexec -n N greenkd distill --backend mpi`"
        )
    raise GreenkdError(f"unknown backend {cfg.backend!r}: use one of local, mpi, dask")
