"""The sampler: reads every sensor on a fixed schedule in its own thread and writes the run's files.

Sample k is taken at t0 + k/hz on the monotonic clock, so the schedule never
drifts; a sample that overruns its period skips the ticks it covered instead
of bunching reads. Rows carry Unix time (`time.time()`, the one clock) taken
at the middle of each sensor's read. Every sample's rows are appended to
samples.csv and flushed, so a killed run keeps everything up to its last
sample; the summary (`profilers.summary`) is written last, atomically.

Timeline: [idle baseline: `idle_seconds`, nothing else running] then the
work (the `with` block, or a command: `profilers.command`) until `stop()`, which takes one final
sample so the energy covers the work to its end.
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from greenkd.errors import GreenkdError
from greenkd.fileio import write_json_atomic
from profilers import energy
from profilers.attribution import SCOPE_BLOCK, SCOPE_COMMAND, Attribution, GpuProcessList
from profilers.hostid import host_time
from profilers.processes import OwnProcesses, TreeCpu
from profilers.sensors import SensorRoots, open_sensors
from profilers.sensors.base import (
    Fault,
    GpuProcess,
    GpuProcesses,
    Observation,
    Problem,
    Sensor,
    SensorError,
    Status,
)
from profilers.sensors.model import PowerModel, parse_power_model
from profilers.sensors.procstat import CpuSeconds, ProcStatSensor
from profilers.summary import RunFacts, SummaryBuilder, build_summary

MARK_FIELDS = ("ts", "label", "fields")


def _positive_float(name: str, value: float, *, allow_zero: bool) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise GreenkdError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise GreenkdError(f"{name} must be {bound}, got {value!r}")
    return number


def carbon_intensity(value: float | None) -> float | None:
    """The grid intensity in gCO2e/kWh: the argument, else `$GREENKD_CARBON_INTENSITY`, else None."""
    if value is None:
        text = os.environ.get("GREENKD_CARBON_INTENSITY", "").strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError as exc:
            raise GreenkdError(
                f"GREENKD_CARBON_INTENSITY must be gCO2e per kWh, got {text!r}"
            ) from exc
    return _positive_float("the carbon intensity (gCO2e/kWh)", value, allow_zero=True)


class Profiler:
    """Profile a Python block: `with Profiler(out=DIR) as p: ...; p.mark("task", layer=3)`; then `p.summary()`.

    The work's own processes are this process and its descendants (a profiled command is a
    child); GPU compute processes outside them are reported in `gpu_foreign_processes`.
    The summary's `attribution` estimates the energy of the block's process tree (this process,
    its sampler thread excepted, and its children) or, once `command_started` names it, of the
    command's (`profilers.attribution`).
    `warnings`: lines the caller wants in the summary's `warnings` (e.g. how the GPUs were chosen).
    `clock`: the Unix time of rows and marks (default this host's, `profilers.hostid.host_time`).
    `power_model`: `cpu:IDLE_W:MAX_W` (or a PowerModel) adds estimated CPU package energy, rows
    `sensor=model`, the summary's `estimate` block, never its measured `total`.
    """

    def __init__(
        self,
        out: str | os.PathLike[str] = ".",
        *,
        hz: float = 1.0,
        idle_seconds: float = 0.0,
        gpus: Sequence[int] | None = None,
        samples_name: str = "samples.csv",
        summary_name: str = "summary.json",
        carbon_intensity_g_per_kwh: float | None = None,
        marks_name: str = "marks.csv",
        msr_root: str | os.PathLike[str] | None = None,
        proc_stat: str | os.PathLike[str] | None = None,
        sysfs_root: str | os.PathLike[str] | None = None,
        nvml: Any = None,
        warnings: Sequence[str] = (),
        clock: Callable[[], float] = host_time,
        power_model: str | PowerModel | None = None,
    ) -> None:
        self.hz = _positive_float("--hz", hz, allow_zero=False)
        if self.hz > 1000:
            raise GreenkdError(f"--hz must be at most 1000 samples per second, got {hz!r}")
        self.idle_seconds = _positive_float("--idle-seconds", idle_seconds, allow_zero=True)
        names = {"samples": samples_name, "summary": summary_name, "marks": marks_name}
        for what, name in names.items():
            if not name or Path(name).name != name:
                raise GreenkdError(f"the {what} file name must be a plain file name, got {name!r}")
        if len(set(names.values())) != len(names):
            raise GreenkdError(
                f"samples, summary and marks need three different names, got {names}"
            )
        self.out = Path(out)
        self.samples_path = self.out / samples_name
        self.summary_path = self.out / summary_name
        self.marks_path = self.out / marks_name
        self.gpus = None if gpus is None else [int(g) for g in gpus]
        self.carbon_intensity_g_per_kwh = carbon_intensity(carbon_intensity_g_per_kwh)
        self.roots = SensorRoots(msr_root, proc_stat, sysfs_root)
        self._nvml = nvml
        self._warnings = [str(w) for w in warnings]
        # Unix seconds of every row and mark: this host's clock (a host sampler of a multi-host
        # run passes it corrected to the run's first host, `profilers.hosts`).
        self._clock = clock
        # Opt-in estimate (`--power-model`): its rows are sensor=model, the summary's `estimate`.
        self.power_model = (
            power_model if isinstance(power_model, PowerModel) else parse_power_model(power_model)
        )
        self.own_processes = OwnProcesses()
        # The processes the energy is attributed to: set in start() (this process's tree) or by
        # command_started (the command's).
        self._tree = TreeCpu()
        self._attribution = Attribution(SCOPE_BLOCK, self.hz)
        self._procstat: ProcStatSensor | None = None
        self.command: list[str] | None = None
        self.exit_code: int | None = None

        self._state = "new"
        self._lock = threading.Lock()
        self._marks_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._work_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None
        self._reasons: list[str] = []
        self._runtime_missing: list[Problem] = []
        self._failed: set[tuple[str, str]] = set()
        self._sensors: list[Sensor] = []
        self._all_sensors: list[Sensor] = []
        self._statuses: list[Status] = []
        self._accountants: dict[str, energy.EnergyAccountant] = {}
        self._builder = SummaryBuilder()
        self._samples_file: IO[str] | None = None
        self._marks_file: IO[str] | None = None
        self._writer: Any = None
        self._marks_writer: Any = None
        self._marks = 0
        self._ticks = 0
        self._lateness_s: list[float] = []
        self._missed_ticks = 0
        self._cpu_s: float | None = None
        self._first_ts: float | None = None
        self._work_start_ts: float | None = None
        self._last_ts: float | None = None
        self._summary: dict[str, Any] | None = None

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> Profiler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        reason = None
        if exc_type is not None:
            if issubclass(exc_type, KeyboardInterrupt):
                reason = "interrupted (KeyboardInterrupt)"
            else:
                reason = f"the profiled block raised {exc_type.__name__}: {exc}"
        self.stop(reason=reason)

    def start(self) -> Profiler:
        """Open the sensors and files, start sampling, and return once the idle baseline is taken."""
        if self._state != "new":
            raise GreenkdError("a Profiler runs once; create a new one for the next run")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            # A summary left by an earlier run would mark this one finished while it runs.
            self.summary_path.unlink(missing_ok=True)
            self._samples_file = open(self.samples_path, "w", newline="")  # noqa: SIM115 (closed in stop)
            self._marks_file = open(self.marks_path, "w", newline="")  # noqa: SIM115
        except OSError as exc:
            raise GreenkdError(
                f"cannot write the profile to {self.out}: {exc.strerror or exc}"
            ) from exc
        self._sensors, self._statuses = open_sensors(
            self.roots, self.gpus, self._nvml, self.own_processes, self.power_model
        )
        self._all_sensors = list(self._sensors)
        self._procstat = next((s for s in self._sensors if isinstance(s, ProcStatSensor)), None)
        if self.command is None:
            self._tree.members = self.own_processes
        else:
            self._attribution.scope = SCOPE_COMMAND  # no members until the command starts
        # Counter power over less than a fifth of a period is mostly update granularity.
        self._accountants = {
            s.name: energy.EnergyAccountant(s.name, 0.2 / self.hz) for s in self._sensors
        }
        self._writer = csv.writer(self._samples_file, lineterminator="\n")
        self._writer.writerow(energy.SAMPLE_FIELDS)
        self._samples_file.flush()
        self._marks_writer = csv.writer(self._marks_file, lineterminator="\n")
        self._marks_writer.writerow(MARK_FIELDS)
        self._marks_file.flush()
        self._state = "running"
        self._thread = threading.Thread(target=self._run, name="greenkd-profiler", daemon=True)
        self._thread.start()
        self._work_event.wait()
        if self._crash is not None:
            self.stop()
        return self

    @property
    def running(self) -> bool:
        """Whether the profiler has started and not yet stopped."""
        return self._state == "running"

    def record_command(self, argv: Sequence[str]) -> None:
        """Note the profiled command for the summary (before `start`)."""
        self.command = list(argv)

    def command_started(self, pid: int) -> None:
        """Attribute energy to the process `pid` and its descendants from now on."""
        self._attribution.scope = SCOPE_COMMAND
        self._tree.members = OwnProcesses([pid])

    def command_exited(self) -> None:
        """Read the command's tree once more: call it while the exited command is a zombie.

        The CPU time its process used since the last sample is then counted (once reaped, it
        is gone).
        """
        self._tree.read()

    def mark(self, label: str, **fields: Any) -> None:
        """Append a labelled time point to marks.csv (`ts,label,fields` with the fields as JSON)."""
        if not isinstance(label, str) or not label:
            raise GreenkdError(f"a mark needs a non-empty text label, got {label!r}")
        payload = json.dumps(fields, sort_keys=True, default=str)
        with self._marks_lock:
            if self._state != "running" or self._marks_writer is None:
                raise GreenkdError("marks can be added only while the profiler runs")
            self._marks_writer.writerow([repr(self._clock()), label, payload])
            self._marks_file.flush()  # type: ignore[union-attr]
            self._marks += 1

    def fail(self, reason: str) -> None:
        """Mark the run partial with a reason (the caller's own failure, e.g. a crashed task)."""
        with self._lock:
            self._reasons.append(reason)

    def stop(self, *, reason: str | None = None, exit_code: int | None = None) -> dict[str, Any]:
        """Take a final sample, stop sampling, write the summary atomically, and return it."""
        if self._state == "stopped":
            assert self._summary is not None
            return self._summary
        if reason:
            self.fail(reason)
        if exit_code is not None:
            self.exit_code = exit_code
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join()
        with self._marks_lock:
            self._state = "stopped"
            if self._marks_file is not None:
                self._marks_file.close()
        for sensor in self._sensors:
            sensor.close()
        if self._samples_file is not None:
            self._samples_file.close()
        if self._crash is not None:
            self._reasons.append(
                f"the sampler crashed: {self._crash.__class__.__name__}: {self._crash}"
            )
        self._summary = self._build_summary(final=True)
        write_json_atomic(self.summary_path, self._summary)
        if self._crash is not None:
            raise self._crash
        return self._summary

    def summary(self) -> dict[str, Any]:
        """The summary: final after stop, else a snapshot with status `running`."""
        if self._summary is not None:
            return self._summary
        if self._state != "running":
            raise GreenkdError("the profiler has not started yet")
        return self._build_summary(final=False)

    # -- sampling -----------------------------------------------------------

    def _run(self) -> None:
        cpu_start = time.thread_time()
        try:
            period = 1.0 / self.hz
            idle_ticks = math.ceil(self.idle_seconds * self.hz - 1e-9)
            t0 = time.monotonic()
            k = 0
            while True:
                target = t0 + k * period
                delay = target - time.monotonic()
                if (delay > 0 and self._stop_event.wait(delay)) or self._stop_event.is_set():
                    break
                self._lateness_s.append(time.monotonic() - target)
                self._sample()
                # `>=`: a late sample skips ticks, and the one ending the baseline may be skipped.
                if k >= idle_ticks and not self._work_event.is_set():
                    self._begin_work()
                    # The command starts now: import psutil here rather than in its way.
                    self._tree.prepare()
                k += 1
                behind = time.monotonic() - (t0 + k * period)
                if behind > 0:
                    skip = math.floor(behind / period) + 1
                    self._missed_ticks += skip
                    k += skip
            # The final sample closes the last interval at the moment of stopping.
            self._sample()
            if self._work_start_ts is None:
                self._begin_work()
        except (
            BaseException
        ) as exc:  # surfaced by stop(): the summary says so, then it is re-raised
            self._crash = exc
        finally:
            self._cpu_s = time.thread_time() - cpu_start
            self._work_event.set()

    def _begin_work(self) -> None:
        with self._lock:
            self._work_start_ts = self._last_ts
            self._builder.work_start_ts = self._last_ts
        self._work_event.set()

    def _read_tree(self) -> float | None:
        """The attributed tree's CPU seconds so far (the sampler's own excepted), None if unknown."""
        cpu_s = self._tree.read()
        if cpu_s is not None and self._tree.members is self.own_processes:
            cpu_s -= time.thread_time()  # this thread's: profiling is not the work
        return cpu_s

    def _sample(self) -> None:
        reads: list[tuple[str, float, list[Observation]]] = []
        processes: list[tuple[str, float, GpuProcess]] = []
        gpu_lists: dict[str, GpuProcessList] = {}
        machine_cpu: CpuSeconds | None = None
        tree_cpu_s: float | None = None
        tree_read = False
        start = self._clock()
        for sensor in list(self._sensors):
            before = self._clock()
            try:
                observations = sensor.read()
            except SensorError as exc:
                self._sensors.remove(sensor)
                sensor.close()
                self._record_fault(sensor.name, None, exc.reason, exc.fix)
                continue
            ts = (before + self._clock()) / 2
            if sensor is self._procstat:
                # The work's CPU time right after the machine's, so both cover one interval.
                machine_cpu = self._procstat.last_interval
                tree_cpu_s, tree_read = self._read_tree(), True
            kept = []
            for obs in observations:
                if isinstance(obs, Fault):
                    self._record_fault(sensor.name, obs.device, obs.reason, obs.fix)
                elif isinstance(obs, GpuProcess):
                    processes.append((sensor.name, ts, obs))
                elif isinstance(obs, GpuProcesses):
                    gpu_lists[obs.device] = obs.processes
                else:
                    kept.append(obs)
            reads.append((sensor.name, ts, kept))
        if not tree_read:
            tree_cpu_s = self._read_tree()
        with self._lock:
            rows = [
                row for name, ts, kept in reads for row in self._accountants[name].rows(ts, kept)
            ]
            for row in rows:
                self._writer.writerow(row.as_csv())
                self._builder.add(row)
            for name, ts, process in processes:
                self._builder.add_process(name, ts, process)
            self._attribution.add_sample(
                in_work=self._work_start_ts is not None,
                rows=rows,
                cpu=machine_cpu,
                work_cpu_s=tree_cpu_s,
                gpu_processes=gpu_lists,
                own_pids=self._tree.pids,
            )
            self._samples_file.flush()  # type: ignore[union-attr]
            self._ticks += 1
            if self._first_ts is None:
                self._first_ts = start
            self._last_ts = self._clock()

    def _record_fault(self, sensor: str, device: str | None, reason: str, fix: str) -> None:
        with self._lock:
            self._reasons.append(f"{sensor}: {reason}")
            self._runtime_missing.append(Problem(sensor, reason, fix))
            if device is None:
                self._failed.update((sensor, d) for d in self._accountants[sensor].tracks)
            else:
                self._failed.add((sensor, device))

    # -- summary ------------------------------------------------------------

    def _build_summary(self, *, final: bool) -> dict[str, Any]:
        with self._lock:
            sources: dict[tuple[str, str], str] = {}
            used: dict[tuple[str, str], bool] = {}
            resets: dict[tuple[str, str], list[float]] = {}
            for sensor in self._all_sensors:
                accountant = self._accountants[sensor.name]
                for device, source in accountant.sources().items():
                    sources[(sensor.name, device)] = source
                    used[(sensor.name, device)] = sensor.is_used(device)
                for device, times in accountant.resets.items():
                    resets[(sensor.name, device)] = list(times)
            in_total = set(energy.node_domains(sources))
            domains = self._builder.domains(sources, used, in_total, self._failed, resets)
            gpu_processes = self._builder.foreign_processes(
                {s.name: s.is_used for s in self._all_sensors}
            )
            utilization = self._builder.utilizations()
            attribution = self._attribution.summary(
                domains,
                idle_baseline=self.idle_seconds > 0,
                processes_seen=self._tree.seen,
                processes_exited=self._tree.exited,
                tree_error=self._tree.error,
                unreadable=len(self._tree.unreadable),
            )
            reasons = list(self._reasons)
            ticks = self._ticks
            lateness_s = list(self._lateness_s)
        return build_summary(
            RunFacts(
                final=final,
                reasons=reasons,
                hz=self.hz,
                samples=ticks,
                idle_seconds=self.idle_seconds,
                first_ts=self._first_ts,
                work_start_ts=self._work_start_ts,
                last_ts=self._last_ts,
                domains=domains,
                utilization=utilization,
                gpus=self.gpus,
                statuses=self._statuses,
                runtime_missing=list(self._runtime_missing),
                carbon_intensity_g_per_kwh=self.carbon_intensity_g_per_kwh,
                lateness_s=lateness_s,
                missed_ticks=self._missed_ticks,
                sampler_cpu_s=self._cpu_s,
                samples_file=self.samples_path.name,
                marks_file=self.marks_path.name,
                marks=self._marks,
                sensors=self._all_sensors,
                command=self.command,
                exit_code=self.exit_code,
                counter_resets=resets,
                gpu_processes=gpu_processes,
                warnings=list(self._warnings),
                attribution=attribution,
            )
        )
