#!/usr/bin/env bash
# Run a command as on a slower machine: its process tree in a cgroup whose CPU quota is this
# machine's cores divided by FACTOR (Linux CFS bandwidth control, cgroup v1 or v2; needs root).
#
#   bash benchmarks/slow_machine.sh [FACTOR] -- pytest
#
# FACTOR defaults to 2.75: the suite took 21 min 50 s on a 2-core AMD EPYC (AVX2 only) against
# about 8 min on the 2-vCPU Intel Xeon it was written on. The quota comes in 100 ms periods, so
# a throttled process also stalls for tens of milliseconds at a time, as one on a loaded machine
# does: a test that waits for a timing window instead of an event fails here first (two did on
# 2026-12-01: docs/performance.md). Add a busy loop beside a single test (`python3 -c "while 1:
# pass" &` inside the same command) to stand in for the other xdist worker.
#
# The quota is the whole group's, so it slows work that keeps every core busy (the test suite on
# two xdist workers) by FACTOR, but a lone thread only once it needs more than the quota: for the
# latency of one thread (a command's start-up) on a machine FACTOR times slower, pass FACTOR times
# the number of cores (5.5 here for 2.75: `greenkd profile`'s start-up through typer then costs
# +0.50 s, what the AMD machine measured).
set -euo pipefail
factor=2.75
if [[ $# -gt 0 && $1 != "--" ]]; then factor=$1; shift; fi
[[ ${1:-} == "--" ]] && shift
if [[ $# -eq 0 ]]; then
  echo "usage: bash benchmarks/slow_machine.sh [FACTOR] -- COMMAND..." >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "slow_machine.sh: needs root to create a cgroup" >&2
  exit 2
fi
period=100000
quota=$(python3 -c "import os; print(int(os.cpu_count() * $period / $factor))")
name="greenkd-slow-$$"
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then  # cgroup v2
  group=/sys/fs/cgroup/$name
  echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
  mkdir "$group"
  echo "$quota $period" >"$group/cpu.max"
else  # cgroup v1
  group=/sys/fs/cgroup/cpu/$name
  mkdir "$group"
  echo "$period" >"$group/cpu.cfs_period_us"
  echo "$quota" >"$group/cpu.cfs_quota_us"
fi
trap 'rmdir "$group" 2>/dev/null || true' EXIT
echo "slow_machine.sh: $(nproc) CPUs at 1/$factor: quota ${quota} us per ${period} us ($group)" >&2
set +e
bash -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' _ "$group" "$@"
code=$?
exit $code
