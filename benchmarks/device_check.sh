#!/usr/bin/env bash
# greenkd's profiler on a GPU machine, in one call: what the machine is, what the sensors see, a
# profile of a known GPU load checked against NVML's own figures, and the profiler's start-up.
#
#   OUT=/some/dir bash benchmarks/device_check.sh        # from the repository root
#
# Runs from the working tree (PYTHONPATH), not an installed greenkd: `greenkd profile` and
# `greenkd sensors` need only the standard library and nvidia-ml-py. About 2.5 minutes with the
# defaults; no GPU is needed for a dry run (the load then runs on the CPU and says so):
#
#   GPU_LOAD_SECONDS=5 IDLE_SECONDS=2 STARTUP_ROUNDS=2 OUT=/tmp/devcheck bash benchmarks/device_check.sh
#
# Writes under $OUT (default: a new temporary folder), 8 files at most:
#   machine.txt          nvidia-smi, CPU, Python and framework versions
#   sensors.json         `greenkd sensors --json`
#   profile/             samples.csv, marks.csv, summary.json of the profiled load
#   gpu_load.log         the load's output and greenkd's table
#   device_check.md      the checks (benchmarks/device_check_report.py) and the start-up figures
#   device_check.log     everything this script printed
# Exit code: the report's (1 if a check failed), or the first step that could not run.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$(mktemp -d -t greenkd-devcheck.XXXXXX)}
PY=${PYTHON:-python3}
GPU_LOAD_SECONDS=${GPU_LOAD_SECONDS:-60}
IDLE_SECONDS=${IDLE_SECONDS:-5}
STARTUP_ROUNDS=${STARTUP_ROUNDS:-7}
CHECK_GPU=${CHECK_GPU:-0}  # what CUDA_VISIBLE_DEVICES names for the load
mkdir -p "$OUT"
WORK=$(mktemp -d -t greenkd-devcheck-work.XXXXXX)  # scratch that does not come back
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# JAX, if the version line below loads it, must not take the GPU's memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
exec > >(tee "$OUT/device_check.log") 2>&1
tee_pid=$!
status=0
fail() { [ "$status" -ne 0 ] || status=$1; }  # the first failure's code is the script's
step() { echo; echo "== [$(date +%T), ${SECONDS} s] $*"; }

step "1. machine facts -> $OUT/machine.txt"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r)"
  lscpu 2>/dev/null | grep "Model name" || grep -m1 "model name" /proc/cpuinfo
  echo "cpus: $(nproc)"
  echo "--- nvidia-smi -L"
  timeout 30 nvidia-smi -L 2>&1 || echo "(nvidia-smi -L failed or is missing)"
  echo "--- nvidia-smi --query-gpu"
  timeout 30 nvidia-smi --format=csv --query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total,power.limit,power.draw,clocks.sm,clocks.max.sm,temperature.gpu,mig.mode.current,compute_mode 2>&1 \
    || echo "(nvidia-smi --query-gpu failed or is missing)"
  echo "--- python"
  timeout 120 "$PY" - <<'EOF' 2>&1 || echo "(python failed)"
import importlib.metadata as md, sys
print("python", sys.version.split()[0], sys.executable)
for dist in ("nvidia-ml-py", "psutil", "typer", "rich", "pandas", "numpy", "torch", "jax", "jaxlib"):
    try:
        print(dist, md.version(dist))
    except md.PackageNotFoundError:
        print(dist, "not installed")
try:
    import torch
    ok = torch.cuda.is_available()
    print("torch.cuda", ok, torch.version.cuda, torch.cuda.get_device_name(0) if ok else "")
except ImportError:
    pass
EOF
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

step "2. greenkd sensors -> $OUT/sensors.json"
timeout 60 "$PY" -m greenkd sensors || fail $?
timeout 60 "$PY" -m greenkd sensors --json > "$OUT/sensors.json" || fail $?

step "3. greenkd profile of ${GPU_LOAD_SECONDS} s of matrix products on CUDA_VISIBLE_DEVICES=$CHECK_GPU"
CUDA_VISIBLE_DEVICES=$CHECK_GPU timeout -k 10 $((GPU_LOAD_SECONDS + IDLE_SECONDS + 180)) \
  "$PY" -m greenkd profile --idle-seconds "$IDLE_SECONDS" --hz 1 -o "$OUT/profile" -- \
  "$PY" benchmarks/gpu_load.py --seconds "$GPU_LOAD_SECONDS" 2>&1 | tee "$OUT/gpu_load.log"
code=$?
[ "$code" -eq 0 ] || { echo "greenkd profile exited $code"; fail "$code"; }

step "4. start-up: greenkd profile -- sleep 2 vs sleep 2, $STARTUP_ROUNDS rounds alternating"
typer_path=()
# The same tree through the whole typer app (as before the fast path), where that app builds.
"$PY" -c "from greenkd.cli import app" 2>/dev/null && typer_path=(--typer-path)
timeout 300 "$PY" benchmarks/profiler_startup.py --rounds "$STARTUP_ROUNDS" --seconds 2 \
  --greenkd "$PY -m greenkd" "${typer_path[@]}" --json "$WORK/startup.json" \
  || echo "(the start-up benchmark failed)"

step "5. report -> $OUT/device_check.md"
timeout 60 "$PY" benchmarks/device_check_report.py "$OUT/profile" \
  --load-log "$OUT/gpu_load.log" --startup "$WORK/startup.json" \
  --cuda-visible-devices "$CHECK_GPU" --report "$OUT/device_check.md"
code=$?
[ "$code" -eq 0 ] || fail "$code"

step "done in ${SECONDS} s; files under $OUT:"
(cd "$OUT" && find . -type f | sort)
files=$(find "$OUT" -type f | wc -l)
[ "$files" -le 8 ] || echo "warning: $files files under $OUT, more than the 8 that come back"
exec >&- 2>&-
wait "$tee_pid"  # the log's last lines are written before the script ends
exit "$status"
