"""Attribution: the share of the measured energy that the profiled work's processes account for.

An estimate reported beside the measured figures, never instead of them (Scaphandre's rule: by
CPU time). Over each sampling interval of the work:

- c: the work's CPU seconds (its process tree, `profilers.processes.TreeCpu`); b and n: the
  machine's busy and total CPU seconds (/proc/stat, the procstat sensor's `last_interval`, the
  same reading as its utilisation);
- each CPU energy domain of the node total (`profilers.energy.node_domains`: the MSR packages,
  or powercap's psys, or its packages and DRAM), with E its energy over the interval, dt the
  interval's length and P the domain's idle power from the `--idle-seconds` baseline (0 without
  one, so that all its energy counts as dynamic):

      attributed dynamic = (E - P dt) x c / b    the work's share of the busy CPU time
      attributed idle    = P dt x c / n          the cores its CPU time amounts to, over all cores

  (the cores it holds are counted by CPU time, not by affinity: a process allowed on every core
  that keeps one busy holds one);
- each GPU: its energy x g, g the work's share of the GPU at the interval's end: 1 if NVML lists
  only the work's processes on it, 0 if none of them, else their share of the listed processes'
  used memory (of their number where NVML cannot tell the memory); split into dynamic and idle
  with the GPU's idle power as above.

c and b come from different clocks (a process's precise run time, the machine's tick counts),
so c can exceed b in an interval; the excess is carried into the next interval rather than
dropped. Only sums are kept per domain (sum of E s, of dt s, of dt h): the idle power, known once
the summary is built, applies at the end and nothing per sample is stored.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from profilers.energy import GPU_SENSOR, Row
from profilers.naming import device_sort_key
from profilers.sensors.procstat import CpuSeconds

SCOPE_COMMAND = "command"
SCOPE_BLOCK = "python_block"

GpuProcessList = tuple[tuple[int, float | None], ...]


def gpu_share(processes: GpuProcessList, own: Collection[int]) -> tuple[float, str]:
    """The work's share of one GPU from its process list, and how it was split.

    `idle`: no process (0); `only`: every listed process is the work's (1); `none`: none is
    (0); `memory`: the work's share of the used memory; `count`: of the processes, where NVML
    cannot tell the memory.
    """
    if not processes:
        return 0.0, "idle"
    mine = [mib for pid, mib in processes if pid in own]
    if not mine:
        return 0.0, "none"
    if len(mine) == len(processes):
        return 1.0, "only"
    memory = [mib for _, mib in processes]
    if all(m is not None for m in memory) and sum(memory) > 0:  # type: ignore[arg-type]
        return sum(mine) / sum(memory), "memory"  # type: ignore[arg-type]
    return len(mine) / len(processes), "count"


@dataclass
class _Sums:
    """One domain over the work's intervals that had a share: sums of E s, dt s, dt h."""

    shared_energy_j: float = 0.0
    shared_seconds: float = 0.0
    idle_shared_seconds: float = 0.0
    seconds: float = 0.0
    # Energy of intervals without a share (no CPU reading, or no GPU process list).
    unshared_energy_j: float = 0.0
    used: bool = False


@dataclass
class Attribution:
    """Streams each sample's energy rows, CPU seconds and GPU process lists into the sums above."""

    scope: str
    hz: float = 1.0
    work_cpu_s: float = 0.0
    busy_cpu_s: float = 0.0
    total_cpu_s: float = 0.0
    intervals: int = 0
    intervals_without_cpu: int = 0
    sums: dict[tuple[str, str], _Sums] = field(default_factory=dict)
    gpu_splits: dict[str, set[str]] = field(default_factory=dict)
    gpus_unlisted: set[str] = field(default_factory=set)
    _last_energy: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    _last_work_cpu_s: float | None = None
    _carry_s: float = 0.0

    def _cpu_shares(
        self, cpu: CpuSeconds | None, work_s: float | None
    ) -> tuple[float, float] | None:
        """(share of the busy CPU time, share of all CPU time) for one interval of the work."""
        if cpu is None or work_s is None:
            self.intervals_without_cpu += 1
            return None
        self.intervals += 1
        self.work_cpu_s += work_s
        self.busy_cpu_s += cpu.busy_s
        self.total_cpu_s += cpu.total_s
        pending = work_s + self._carry_s
        used = min(max(pending, 0.0), cpu.busy_s)
        self._carry_s = pending - used
        busy = used / cpu.busy_s if cpu.busy_s > 0 else 0.0
        idle = used / cpu.total_s if cpu.total_s > 0 else 0.0
        return busy, idle

    def add_sample(
        self,
        *,
        in_work: bool,
        rows: Iterable[Row],
        cpu: CpuSeconds | None,
        work_cpu_s: float | None,
        gpu_processes: Mapping[str, GpuProcessList],
        own_pids: Collection[int],
    ) -> None:
        """Account one sample: the interval since the previous one, if it belongs to the work.

        `cpu`: the machine's CPU seconds over the interval; `work_cpu_s`: the work's cumulative
        CPU seconds (None where they cannot be read); `gpu_processes`: each GPU's process list.
        """
        work_s = None
        if work_cpu_s is not None and self._last_work_cpu_s is not None:
            work_s = work_cpu_s - self._last_work_cpu_s
        if work_cpu_s is not None:
            self._last_work_cpu_s = work_cpu_s
        shares = self._cpu_shares(cpu, work_s) if in_work else None
        gpus: dict[str, float] = {}
        if in_work:
            for device, processes in gpu_processes.items():
                gpus[device], split = gpu_share(processes, own_pids)
                self.gpu_splits.setdefault(device, set()).add(split)
        for row in rows:
            if row.metric != "energy":
                continue
            key = (row.sensor, row.device)
            previous = self._last_energy.get(key)
            self._last_energy[key] = (row.ts, row.value)
            if not in_work or previous is None:
                continue
            energy_j, seconds = row.value - previous[1], row.ts - previous[0]
            sums = self.sums.setdefault(key, _Sums())
            if row.sensor == GPU_SENSOR:
                share = gpus.get(row.device)
                if share is None:
                    self.gpus_unlisted.add(row.device)
                busy, idle = (share, share) if share is not None else (None, None)
            else:
                busy, idle = shares if shares is not None else (None, None)
            if busy is None or idle is None:
                sums.unshared_energy_j += energy_j
                continue
            sums.shared_energy_j += energy_j * busy
            sums.shared_seconds += seconds * busy
            sums.idle_shared_seconds += seconds * idle
            sums.seconds += seconds
            sums.used = sums.used or busy > 0

    # -- the summary's `attribution` -------------------------------------------

    def _who(self) -> str:
        return "the command" if self.scope == SCOPE_COMMAND else "this Python process's tree"

    def method(self, idle_baseline: bool) -> str:
        """The rule, in one sentence."""
        who = self._who()
        idle = (
            "idle power from the --idle-seconds baseline"
            if idle_baseline
            else "idle power taken as 0 without an --idle-seconds baseline, so all of it counts "
            "as dynamic"
        )
        return (
            f"Estimated by CPU time, not measured: over each sampling interval, each CPU energy "
            f"domain's dynamic energy (its energy minus its idle power times the interval, {idle}) "
            f"times {who}'s share of the machine's busy CPU time (/proc/stat), plus its idle energy "
            f"times {who}'s CPU time over all the machine's CPU time (the cores it keeps busy "
            f"over all cores); each GPU's energy times {who}'s share of that GPU (1 if NVML "
            "lists only its processes there, else their share of the used memory)."
        )

    def _notes(
        self, idle_baseline: bool, gpus: list[str], tree_error: str | None, unreadable: int
    ) -> list[str]:
        period = 1.0 / self.hz
        who = self._who()
        notes = [
            "an estimate, not a measurement: RAPL and NVML measure whole packages and GPUs; "
            "the split assumes every busy CPU second costs the same energy, whatever its "
            "instructions, clock frequency or memory traffic",
            f"a child process that starts and exits between two samples ({period:g} s apart) "
            "is never seen and its CPU time is missing; a process that exits keeps the CPU "
            "time last read, so what it used after its last sample is missing too"
            + (
                " (the command's own process is read once more when it exits)"
                if self.scope == SCOPE_COMMAND
                else ""
            ),
            "a process that leaves the tree before a sample sees it (a daemon that forks "
            "twice) is not counted; members are found by pid (the children of an unrelated "
            "process that reuses an exited member's pid within the run would count)",
            f"{who} is given the idle energy of the cores its CPU time amounts to, not the "
            "whole machine's; the idle energy of cores nobody uses is attributed to no one",
        ]
        if self.scope == SCOPE_BLOCK:
            notes.append(
                "the tree is this Python process, all its threads but the profiler's sampler, "
                "and its children"
            )
        if not idle_baseline:
            notes.append(
                "no idle baseline (--idle-seconds 0): idle power is taken as 0, so all of a "
                "domain's energy is shared by busy CPU time and attributed_idle_j is 0; give "
                "--idle-seconds for the idle/dynamic split"
            )
        if tree_error:
            notes.append(f"the work's CPU time could not be read: {tree_error}")
        if unreadable:
            notes.append(
                f"{unreadable} process(es) of the tree could not be read (access denied); "
                "their CPU time is missing"
            )
        if self.intervals_without_cpu and self.intervals:
            notes.append(
                f"{self.intervals_without_cpu} interval(s) of the work had no CPU reading; "
                "their energy is not attributed"
            )
        for (sensor, device), sums in sorted(self.sums.items()):
            if sums.unshared_energy_j and (sensor != GPU_SENSOR or device in gpus):
                notes.append(
                    f"{sensor}:{device}: {sums.unshared_energy_j:.3g} J over intervals "
                    "without a share were not attributed"
                )
        for device in gpus:
            splits = self.gpu_splits.get(device, set())
            if "memory" in splits:
                notes.append(
                    f"nvml:{device} was shared with other processes: split by used GPU memory"
                )
            if "count" in splits:
                notes.append(
                    f"nvml:{device} was shared with other processes whose memory NVML does "
                    "not report: split by the number of processes"
                )
        for device in sorted(self.gpus_unlisted, key=device_sort_key):
            notes.append(
                f"nvml:{device}: NVML did not list its processes, so its energy is not attributed"
            )
        others = sorted(
            (d for d, splits in self.gpu_splits.items() if "none" in splits),
            key=device_sort_key,
        )
        if others and not gpus:
            notes.append(
                f"NVML listed only other processes on {', '.join(others)}, none of {who}'s, so "
                "no GPU energy is attributed (NVML lists host pids: inside a container the "
                "work's own processes are not recognised)"
            )
        return notes

    def summary(
        self,
        domains: list[dict[str, Any]],
        *,
        idle_baseline: bool,
        processes_seen: int,
        processes_exited: int,
        tree_error: str | None = None,
        unreadable: int = 0,
    ) -> dict[str, Any]:
        """The summary's `attribution`: the rule, the CPU share, and the attributed joules per domain.

        `domains`: the summary's domains (their idle power and whether they are in the total).
        """
        entries = []
        measured = False
        for d in domains:
            if not d["in_total"]:
                continue
            sums = self.sums.get((d["sensor"], d["device"]))
            if sums is None or sums.seconds <= 0:
                continue
            measured = True
            if d["sensor"] == GPU_SENSOR and not sums.used:
                continue  # only GPUs the work's processes use
            idle_power_w = d["idle_power_w"] if d["idle_power_w"] is not None else 0.0
            dynamic_j = sums.shared_energy_j - idle_power_w * sums.shared_seconds
            idle_j = idle_power_w * sums.idle_shared_seconds
            entries.append(
                {
                    "sensor": d["sensor"],
                    "device": d["device"],
                    "attributed_energy_j": dynamic_j + idle_j,
                    "attributed_dynamic_j": dynamic_j,
                    "attributed_idle_j": idle_j,
                }
            )
        gpus = [e["device"] for e in entries if e["sensor"] == GPU_SENSOR]
        has_cpu = self.intervals > 0
        return {
            "method": self.method(idle_baseline),
            "scope": self.scope,
            "idle_baseline": idle_baseline,
            "cpu_share": min(1.0, self.work_cpu_s / self.busy_cpu_s)
            if has_cpu and self.busy_cpu_s > 0
            else None,
            "core_share": min(1.0, self.work_cpu_s / self.total_cpu_s)
            if has_cpu and self.total_cpu_s > 0
            else None,
            "command_cpu_s": self.work_cpu_s if has_cpu else None,
            "machine_busy_cpu_s": self.busy_cpu_s if has_cpu else None,
            "machine_cpu_s": self.total_cpu_s if has_cpu else None,
            "processes": {"seen": processes_seen, "exited": processes_exited},
            "domains": entries,
            "attributed_total_j": sum(e["attributed_energy_j"] for e in entries)
            if measured
            else None,
            "notes": self._notes(idle_baseline, gpus, tree_error, unreadable),
        }
