"""A real profile made by `profilers.Profiler` on stand-in sensors, for the profile page's tests.

The sensors are faked at the OS boundary only (profiler_fakes): the FUSE msr driver (one package
of two cores) where FUSE works, a /proc/stat file, and FakeNvml with two GPUs at known powers,
one of them shared with a process the work did not start. A load thread feeds the counters
while the block runs; marks are added during the block.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from profiler_fakes import (
    FakeGpu,
    FakeNvml,
    MsrMachine,
    fuse_unavailable_reason,
    mounted_msr,
    write_proc_stat,
    write_topology,
)

import profilers

GPU0_BUSY_W = 250.0
GPU1_W = 50.0
GPU_IDLE_W = 60.0
PACKAGE_IDLE_W = 40.0
PACKAGE_BUSY_W = 120.0
FOREIGN_PID = 1  # init: never a descendant of the test, so NVML's process list names a stranger


@dataclass
class StandIn:
    """Package power and CPU busy share over real time: the counters integrate them from the
    time they were set, however late the feeding thread runs on a loaded machine."""

    machine: MsrMachine | None
    stat: Path
    package_w: float = PACKAGE_IDLE_W
    busy_share: float = 0.1
    _last: float = field(default_factory=time.monotonic)
    _busy: float = 0.0  # jiffies per CPU
    _idle: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self) -> None:
        """The package's joules and /proc/stat's jiffies at the current load up to now."""
        with self._lock:
            now = time.monotonic()
            seconds, self._last = now - self._last, now
            if self.machine is not None:
                self.machine.add_package_joules(0, self.package_w * seconds)
                self.machine.add_core_joules(0, self.package_w * 0.4 * seconds)
                self.machine.add_core_joules(1, self.package_w * 0.2 * seconds)
            self._busy += self.busy_share * seconds * 100  # USER_HZ: 100 jiffies a second
            self._idle += (1 - self.busy_share) * seconds * 100
            write_proc_stat(self.stat, _stat(int(self._busy), int(self._idle)))

    def set_load(self, package_w: float, busy_share: float) -> None:
        """From now on: the time so far is counted at the old load first."""
        self.advance()
        with self._lock:
            self.package_w, self.busy_share = package_w, busy_share


def _feed(rig: StandIn, stop: threading.Event) -> None:
    """Every 10 ms (or later, on a loaded machine): the counters brought up to now."""
    while not stop.wait(0.01):
        rig.advance()


def _stat(busy: int, idle: int) -> dict[str, list[int]]:
    """Two CPUs at the same load, and the node line (their sum)."""
    cpu = [busy, 0, 0, idle, 0, 0, 0, 0, 0, 0]
    return {"cpu": [2 * v for v in cpu], "cpu0": cpu, "cpu1": list(cpu)}


@contextlib.contextmanager
def stand_in_sensors(tmp: Path) -> Iterator[tuple[StandIn, dict]]:
    """Mounted msr fake (if FUSE works), a /proc/stat file fed by a thread, two fake GPUs."""
    tmp.mkdir(parents=True, exist_ok=True)
    stat = tmp / "stat"
    write_proc_stat(stat, _stat(0, 0))
    gpus = [
        FakeGpu(power_w=GPU_IDLE_W, utilization_pct=0, temperature_c=38, clock_sm_mhz=210),
        FakeGpu(
            power_w=GPU1_W,
            utilization_pct=0,
            temperature_c=35,
            clock_sm_mhz=210,
            processes={FOREIGN_PID: 512.0},
        ),
    ]
    options = {"proc_stat": stat, "nvml": FakeNvml(gpus), "sysfs_root": tmp / "sys"}
    with contextlib.ExitStack() as stack:
        machine = None
        if fuse_unavailable_reason() is None:
            cpus = {0: (0, 0), 1: (0, 1)}
            machine = MsrMachine(cpus)
            write_topology(tmp / "sys", cpus)
            options["msr_root"] = stack.enter_context(mounted_msr(machine, tmp / "cpu"))
        else:
            options["msr_root"] = tmp / "no-msr"
        rig = StandIn(machine, stat)
        if machine is not None:
            machine.before_read = rig.advance
        stop = threading.Event()
        feeder = threading.Thread(target=_feed, args=(rig, stop), daemon=True)
        feeder.start()
        try:
            yield rig, {**options, "gpus_fake": gpus}
        finally:
            stop.set()
            feeder.join()


def make_profile(out: Path, tmp: Path, *, hz: float = 20.0, scale: float = 1.0) -> Path:
    """A profile of about 1.3 s (times `scale`) after a 0.3 s idle baseline: warmup, a busy
    epoch with a checkpoint in it, then idle again; marks added as it goes."""
    with stand_in_sensors(tmp) as (rig, options):
        gpus = options.pop("gpus_fake")
        with profilers.Profiler(out=out, hz=hz, idle_seconds=0.3 * scale, gpus=[0], **options) as p:
            p.mark("warmup")
            time.sleep(0.2 * scale)
            p.mark("warmup_end")
            p.mark("epoch", n=1)
            rig.set_load(PACKAGE_BUSY_W, 0.9)
            gpus[0].set_power(GPU0_BUSY_W)
            gpus[0].utilization_pct, gpus[0].clock_sm_mhz, gpus[0].temperature_c = 97, 1410, 71
            time.sleep(0.6 * scale)
            p.mark("checkpoint", path="ckpt-1")
            time.sleep(0.2 * scale)
            p.mark("epoch_end", n=1)
            rig.set_load(PACKAGE_IDLE_W, 0.1)
            gpus[0].set_power(GPU_IDLE_W)
            gpus[0].utilization_pct, gpus[0].clock_sm_mhz = 0, 210
            time.sleep(0.2 * scale)
    return out
