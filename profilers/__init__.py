"""greenkd's profiler: AMD RAPL MSRs, powercap, /proc/stat and NVML at 1 Hz, importable without TensorFlow.

    with profilers.Profiler(out="run1") as p:
        p.mark("epoch", n=1)
        ...
    p.summary()["domains"]

or `profilers.run_command(["python", "train.py"], out="run1")` for a command.
"""

from profilers.command import CommandError, CommandInterrupted, run_command
from profilers.energy import interpolate_energy_j, interval_energy_j
from profilers.sampler import Profiler

__all__ = [
    "CommandError",
    "CommandInterrupted",
    "Profiler",
    "interpolate_energy_j",
    "interval_energy_j",
    "run_command",
]
