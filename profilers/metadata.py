"""Run metadata for the summary: host, CPU and GPU models, driver, versions, SLURM and MPI rank variables."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from typing import Any

from greenkd import __version__  # loaded anyway: profilers raises greenkd.errors' GreenkdError
from profilers.hostid import host_name
from profilers.sensors.base import Sensor
from profilers.sensors.topology import read_cpu_model

# Rank and size variables set by Open MPI, MPICH/Hydra, Intel MPI, MVAPICH, PMIx and Cray PALS.
MPI_VARIABLES = (
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "MPI_LOCALRANKID",
    "MPI_LOCALNRANKS",
    "MV2_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_SIZE",
    "PALS_RANKID",
)


def scheduler_variables(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """SLURM_* variables and MPI rank/size variables present in the environment."""
    env = os.environ if environ is None else environ
    return {
        "slurm": {k: v for k, v in sorted(env.items()) if k.startswith("SLURM_")},
        "mpi": {k: env[k] for k in MPI_VARIABLES if k in env},
    }


def greenkd_version() -> str:
    """The version of greenkd, which profilers ships in: the running code's own (pyproject.toml
    takes it from `greenkd.__version__`), read without `importlib.metadata`, whose import and
    search of the installed distributions cost `greenkd profile` ~50 ms of start-up on a
    2-core AMD EPYC."""
    return __version__


def collect_metadata(sensors: Iterable[Sensor]) -> dict[str, Any]:
    """Everything the summary records about where and with what the run was measured."""
    meta: dict[str, Any] = {
        "host": host_name(),
        "cpu_model": read_cpu_model() or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "gpu_models": [],
        "gpu_driver": None,
        "greenkd_version": greenkd_version(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    for sensor in sensors:
        meta.update(sensor.metadata())
    meta.update(scheduler_variables())
    return meta
