"""The daemon's own cost at 1 Hz over a `sleep`: CPU time as a share of one core, and sampling jitter.

Runs `greenkd profile --hz 1 -- sleep N` and reports
- the sampler thread's CPU time (`sampling.sampler_cpu_s` in the summary),
- the whole greenkd process's CPU time (rusage: interpreter start-up, imports,
  sensor probing, the summary), both as % of one core over the run,
- the lateness of each sample against its schedule t0 + k/hz (p50/p99/max),
  beside a control: a bare `time.sleep` loop on the same schedule in another
  process at the same time, which shows how much of it is the machine's load.

Twice: with the sensors of this machine, and with a FUSE fake of the msr
driver (2 packages x 8 cores, the tests' fake) so that MSR reads are in the
loop; the FUSE server runs in this process, so its CPU is not counted, but
every read's round trip through the kernel is.

    python benchmarks/profiler_overhead.py --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


CONTROL = """
import json, sys, time
seconds = float(sys.argv[1])
t0 = time.monotonic()
late = []
for k in range(1, int(seconds) + 1):
    target = t0 + k
    time.sleep(max(0.0, target - time.monotonic()))
    late.append(1000.0 * (time.monotonic() - target))
late.sort()
print(json.dumps({"p50": late[len(late) // 2], "p99": late[min(len(late) - 1, round(0.99 * (len(late) - 1)))],
                  "max": late[-1]}))
"""


def run(seconds: float, out: Path, env: dict[str, str]) -> dict[str, float]:
    """Profile `sleep seconds` and measure greenkd's CPU time, with the control loop alongside."""
    greenkd = shutil.which("greenkd") or str(Path(sys.executable).with_name("greenkd"))
    argv = [greenkd, "profile", "-q", "--hz", "1", "--out", str(out), "--", "sleep", str(seconds)]
    control = subprocess.Popen(
        [sys.executable, "-c", CONTROL, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    control_late = json.loads(control.communicate()[0])
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"greenkd profile failed with {proc.returncode}")
    summary = json.loads((out / "summary.json").read_text())
    sampling = summary["sampling"]
    duration = summary["duration_s"]
    return {
        "duration_s": duration,
        "samples": summary["samples"],
        "rows": sum(1 for _ in (out / "samples.csv").open()) - 1,
        "sampler_pct": 100.0 * sampling["sampler_cpu_s"] / duration,
        "process_pct": 100.0 * (usage.ru_utime + usage.ru_stime) / duration,
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "p50_ms": sampling["jitter_p50_ms"],
        "p99_ms": sampling["jitter_p99_ms"],
        "max_ms": sampling["jitter_max_ms"],
        "domains": len(summary["domains"]),
        "control": control_late,
    }


@contextlib.contextmanager
def msr_fake(tmp: Path) -> Iterator[dict[str, str]]:
    """Mount the tests' FUSE msr fake (2 packages x 8 cores) with a load on it; yield the env to use it."""
    from profiler_fakes import MsrMachine, mounted_msr, write_topology

    cpus = {cpu: (cpu // 8, cpu) for cpu in range(16)}
    machine = MsrMachine(cpus)
    write_topology(tmp / "sys", cpus)
    stop = threading.Event()

    def load() -> None:
        while not stop.wait(0.1):
            for package in (0, 1):
                machine.add_package_joules(package, 6.0)
            for core in range(16):
                machine.add_core_joules(core, 0.3)

    with mounted_msr(machine, tmp / "cpu") as root:
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        try:
            yield {"GREENKD_MSR_ROOT": str(root), "GREENKD_SYSFS_ROOT": str(tmp / "sys")}
        finally:
            stop.set()
            loader.join()


def main() -> None:
    """Both runs, one Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--skip-msr-fake", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results["this machine (procstat; no MSR, no GPU)"] = run(
            args.seconds, tmp / "plain", dict(os.environ)
        )
        if not args.skip_msr_fake:
            with msr_fake(tmp) as env:
                results["+ FUSE msr fake, 2 packages x 8 cores"] = run(
                    args.seconds, tmp / "msr", {**os.environ, **env}
                )
    print(
        f"| sensors (`sleep {args.seconds:g}`, 1 Hz) | samples | rows | sampler CPU % of a core "
        "| whole process CPU % (s) | jitter p50 / p99 / max ms | control sleep loop p50 / p99 / max ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['samples']} | {r['rows']} | {r['sampler_pct']:.3f} "
            f"| {r['process_pct']:.2f} ({r['process_cpu_s']:.2f}) "
            f"| {r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.2f} "
            f"| {r['control']['p50']:.2f} / {r['control']['p99']:.2f} / {r['control']['max']:.2f} |"
        )


if __name__ == "__main__":
    main()
