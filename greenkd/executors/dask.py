"""The Dask backend: layer tasks as dask.distributed tasks (paper §3.3: Dask's work stealing).

By default a `distributed.LocalCluster` of n single-threaded worker processes,
one per device; each declares one unit of the worker resource `device`, and a
worker plugin binds it by its name (0..n-1) to its device (CPU affinity of every
thread, CUDA_VISIBLE_DEVICES, TensorFlow thread counts) before TensorFlow is
imported there; a worker the nanny restarts is bound again. With
`--scheduler-address tcp://host:8786` the tasks go to an existing cluster, whose
workers are bound by whoever started them (one per GPU, e.g. `dask worker ...
--nthreads 1 --resources device=1`).

`ws` submits every task unpinned, longest first by priority, and lets Dask
balance and steal; task keys start with the layer name, so Dask learns
durations per layer. `rr`, `binpack` and `opt` pin each task (or, with
`--fuse`, each device's task list) to its planned worker, loosely: if that
worker dies its tasks run elsewhere. Stealing is off on the local cluster for
those plans, so that pinned tasks stay put while their worker lives.

Workers load the cached teacher and the data once per process, on their first
task. A worker that dies mid-task loses that task only: the scheduler runs it
again on another worker (the run fails after Dask's allowed-failures deaths of
one task).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import time
import uuid
from collections.abc import Iterator
from typing import Any

from distributed import WorkerPlugin

from greenkd.config import RunConfig
from greenkd.devices import Device, bind
from greenkd.errors import GreenkdError
from greenkd.executors.base import (
    Progress,
    TaskResult,
    TaskSource,
    Work,
    check_plan,
    jobs,
)
from profilers.hostid import host_name, host_time
from profilers.hosts import host_energy, measure_offset

PROGRESS_TOPIC = "greenkd-progress"
RESOURCE = "device"
WORKERS_TIMEOUT_S = 120.0

# --------------------------------------------------------------------------- worker side

_STATE: dict[str, Any] = {}  # per worker process: its device, the loaded tasks and their source


class BindDevice(WorkerPlugin):
    """Worker plugin: bind worker `name` to device `name` before TensorFlow is imported."""

    name = "greenkd-bind-device"

    def __init__(self, devices: list[Device]) -> None:
        self.devices = devices

    def setup(self, worker) -> None:
        device = self.devices[int(worker.name) % len(self.devices)]
        bind(device)
        _STATE["device"] = device


def run_job(source: TaskSource, names: list[str]) -> list[TaskResult]:
    """Train `names` (one fused pass when several) in this worker; the Dask task body."""
    from distributed import get_worker

    worker = get_worker()
    device: Device | None = _STATE.get("device")
    if _STATE.get("source") != source:
        if device is not None and "trainer" not in _STATE:
            from greenkd.framework import configure  # after binding

            configure(device)
        _STATE["trainer"] = source.load()
        _STATE["source"] = source
    label = device.label if device is not None else f"dask-{worker.name}"

    class EventProgress:
        def phase(self, name: str, detail: str = "") -> None: ...

        def epoch(self, task: str, epoch: int, mse: float) -> None:
            worker.log_event(
                PROGRESS_TOPIC,
                {"task": task, "epoch": epoch, "mse": float(mse), "pid": os.getpid()},
            )

    return list(_STATE["trainer"].train(names, label, EventProgress()))


def start_host_sampler(run_dir: str, offset_s: float, hz: float) -> str:
    """Start this host's one sampler in this worker (`client.run`); returns the host's name."""
    from profilers.hosts import HostSampler

    _STATE["sampler"] = HostSampler(run_dir, offset_s, hz=hz).start()
    return host_name()


def stop_host_sampler(offset_end_s: float) -> None:
    """Stop the sampler this worker started (its last sample, profile.json)."""
    sampler = _STATE.pop("sampler", None)
    if sampler is not None:
        sampler.stop(offset_end_s)


# --------------------------------------------------------------------------- client side


def _layer(key: str) -> str:
    return key.rsplit("-", 1)[0]


class DaskExecutor:
    """Runs a plan on a Dask cluster (a local one unless cfg.scheduler_address)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.lost_workers: list[dict[str, Any]] = []
        self._names: dict[str, list[str]] = {}  # Dask key -> the layer tasks it trains
        # workers on several hosts: host -> the worker that samples it, and its clock offset
        self._samplers: dict[str, str] = {}
        self.clock_offsets: dict[str, float] = {}
        self.hosts: dict[str, Any] | None = None  # profilers.hosts.host_energy, after the run
        self._window_start: float | None = None

    def __call__(
        self, work: Work, devices: list[Device], progress: Progress
    ) -> Iterator[TaskResult]:
        import dask
        from distributed import Client, LocalCluster

        check_plan(work.plan, devices, "dask")
        static = work.plan.policy != "ws"
        n = len(devices)
        with contextlib.ExitStack() as stack:
            if self.cfg.scheduler_address:
                try:
                    client = stack.enter_context(Client(self.cfg.scheduler_address, timeout=30))
                except OSError as exc:
                    raise GreenkdError(
                        f"cannot reach the Dask scheduler at {self.cfg.scheduler_address}: {exc}"
                    ) from None
            else:
                settings = {
                    "distributed.scheduler.work-stealing": not static,
                    # the profiler measures the GPUs; Dask's own NVML monitor would open every
                    # GPU of the node from every worker, whatever the worker is bound to
                    "distributed.diagnostics.nvml": False,
                }
                with dask.config.set(settings):
                    cluster = stack.enter_context(
                        LocalCluster(
                            n_workers=n,
                            threads_per_worker=1,
                            processes=True,
                            resources={RESOURCE: 1},
                            dashboard_address=None,
                            silence_logs=logging.ERROR,
                        )
                    )
                client = stack.enter_context(Client(cluster))
                client.register_plugin(BindDevice(devices))
            yield from self._run(client, work, devices, progress, static)

    def _workers(self, client, n: int) -> list[dict[str, Any]]:
        """The first n workers by name, waiting for them to join."""
        try:
            client.wait_for_workers(n, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            have = len(client.scheduler_info()["workers"])
            raise GreenkdError(
                f"the Dask cluster has {have} worker(s) after {WORKERS_TIMEOUT_S:.0f} s; "
                f"the run needs {n} (one per device)"
            ) from None
        info = client.scheduler_info(n_workers=-1)["workers"]
        workers = sorted(
            ({"address": a, **w} for a, w in info.items()),
            key=lambda w: (str(w["name"]), w["address"]),
        )
        return workers[:n]

    def _run(
        self, client, work: Work, devices: list[Device], progress: Progress, static: bool
    ) -> Iterator[TaskResult]:
        from distributed import wait

        plan = work.plan
        workers = self._workers(client, len(devices))
        pids = client.run(os.getpid)
        label_of = {
            w["address"]: devices[i].label
            if not self.cfg.scheduler_address
            else f"dask-{w['name']}"
            for i, w in enumerate(workers)
        }
        resources = (
            {RESOURCE: 1} if all(RESOURCE in w.get("resources", {}) for w in workers) else None
        )
        self._start_samplers(client, workers, work.source.cfg.out)
        events: queue.Queue = queue.Queue()
        client.subscribe_topic(PROGRESS_TOPIC, events.put)
        client.subscribe_topic("all", events.put)
        token = uuid.uuid4().hex[:12]
        futures = []
        try:
            if static:
                for d, device_jobs in enumerate(jobs(plan)):
                    for k, job in enumerate(device_jobs):
                        key = f"{job[0]}-{token}" if len(job) == 1 else f"fused{d}-{token}"
                        self._names[key] = list(job)
                        futures.append(
                            client.submit(
                                run_job,
                                work.source,
                                job,
                                key=key,
                                workers=[workers[d]["address"]],
                                allow_other_workers=True,
                                priority=len(device_jobs) - k,
                                resources=resources,
                                pure=False,
                            )
                        )
            else:
                order = list(plan.queue_order)
                for k, name in enumerate(order):
                    self._names[f"{name}-{token}"] = [name]
                    futures.append(
                        client.submit(
                            run_job,
                            work.source,
                            [name],
                            key=f"{name}-{token}",
                            priority=len(order) - k,
                            resources=resources,
                            pure=False,
                        )
                    )
            remaining = set(futures)
            while remaining:
                try:
                    done, remaining = wait(remaining, timeout=0.5, return_when="FIRST_COMPLETED")
                except TimeoutError:  # nothing finished: draw progress and wait again
                    done = set()
                self._drain(events, progress, label_of, pids)
                for future in done:
                    try:
                        results = future.result()
                    except GreenkdError:
                        raise
                    except Exception as exc:  # the task's own error, or Dask's KilledWorker
                        raise GreenkdError(
                            f"dask task {', '.join(self._tasks(future.key))} failed: "
                            f"{type(exc).__name__}: {exc}"
                        ) from None
                    for result in results:  # task times on the first host's clock
                        offset = self.clock_offsets.get(result.host, 0.0)
                        result.start, result.end = result.start + offset, result.end + offset
                    yield from results
        finally:
            self._stop_samplers(client, work.source.cfg.out)
            self._drain(events, progress, label_of, pids)
            for topic in (PROGRESS_TOPIC, "all"):
                with contextlib.suppress(Exception):  # the client may already be closing
                    client.unsubscribe_topic(topic)
            client.cancel(futures)

    def _start_samplers(self, client, workers: list[dict[str, Any]], run_dir: str) -> None:
        """Workers on several hosts: one sampler per host, in its first worker by name, before
        the first task; its clock offset to this process's host measured first."""
        addresses = [w["address"] for w in workers]
        hosts = client.run(host_name, workers=addresses)
        if len(set(hosts.values())) < 2:
            return  # one host: the profiler around the run samples it
        for address in addresses:
            self._samplers.setdefault(hosts[address], address)
        for host, address in self._samplers.items():
            offset = -measure_offset(lambda a=address: client.run(host_time, workers=[a])[a])
            self.clock_offsets[host] = offset
            client.run(start_host_sampler, run_dir, offset, 1.0, workers=[address])
        self._window_start = host_time()

    def _stop_samplers(self, client, run_dir: str) -> None:
        """After the last task: each live host's end offset, its sampler stopped, energy summed."""
        if self._window_start is None:
            return
        end = host_time()  # before the samplers' last samples, so those cover the window
        alive = set(client.scheduler_info(n_workers=-1)["workers"])
        for address in self._samplers.values():
            if address not in alive:
                continue  # a lost host: its samples stay as it wrote them
            offset = -measure_offset(lambda a=address: client.run(host_time, workers=[a])[a])
            client.run(stop_host_sampler, offset, workers=[address], on_error="ignore")
        self.hosts = host_energy(run_dir, self._window_start, end)
        self._window_start = None

    def _tasks(self, key) -> list[str]:
        """The layer tasks of a Dask key (a fused key trains several)."""
        return self._names.get(str(key), [_layer(str(key))])

    def _drain(self, events: queue.Queue, progress: Progress, label_of, pids) -> None:
        """Progress to the progress; unexpected worker removals to lost_workers."""
        while True:
            try:
                ts, msg = events.get_nowait()
            except queue.Empty:
                return
            if "task" in msg and "epoch" in msg:
                progress.epoch(msg["task"], msg["epoch"], msg["mse"])
            elif msg.get("action") == "remove-worker" and not msg.get("expected", True):
                address = msg.get("worker", "")
                tasks = sorted(n for k in msg.get("processing-tasks", []) for n in self._tasks(k))
                reason = "lost (the process died or stopped answering)"
                label = label_of.get(address, address)
                self.lost_workers.append(
                    {
                        "device": label,
                        "pid": pids.get(address),
                        "reason": reason,
                        "ts": ts if isinstance(ts, float) else time.time(),
                        "in_flight": tasks,
                        "requeued": tasks,
                    }
                )
                progress.phase(
                    "worker-lost",
                    f"{label} (pid {pids.get(address)}) {reason}; Dask re-runs "
                    f"{', '.join(tasks) or 'nothing'} on the other workers",
                )
