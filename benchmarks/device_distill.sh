#!/usr/bin/env bash
# greenkd's distillation on the GPU machine with JAX, in one call (issue 12, "Performance"):
# install the carried wheels, `greenkd sensors`, train and cache the JAX teacher, then, each under
# `greenkd profile` (NVML energy): VGG16 at full width on 32x32 synthetic images, fused layer tasks
# on one GPU, independent ones, and fused with two workers sharing that GPU (in that order: the
# issue's main question first); a table of time, energy and ratios.
#
# First, here (where pip reaches a registry): bash benchmarks/device_wheels.sh  (-> .device-wheels)
# Then on the device, from the repository root, with .device-wheels carried:
#
#   OUT=/some/dir bash benchmarks/device_distill.sh
#
# About 7.5 minutes at most: each step has a time limit, all of them within BUDGET_S (450 s);
# a run stopped by its limit keeps what it wrote, and the table marks it and gives its ratios as
# bounds. A dry run on a CPU machine (no GPU: --gpus counts CPU workers; width 1/16, 1 epoch,
# tiny data), with the wheels for the local Python and an interpreter that has JAX but no Keras:
#
#   PYTHON_VERSION=3.11 DEST=/tmp/w bash benchmarks/device_wheels.sh
#   DRY_RUN=1 WHEELS=/tmp/w PYTHON=/tmp/venv/bin/python OUT=/tmp/dd bash benchmarks/device_distill.sh
#
# Settings (environment): WIDTH EPOCHS N_TRAIN N_VAL BATCH TEACHER_EPOCHS FINETUNE_EPOCHS
# IDLE_SECONDS BUDGET_S; DRY_RUN=1 changes their defaults to the tiny ones.
#
# Decisions: the teacher is trained and cached first (no run pays for it); every run starts with
# an empty JAX compilation cache (each pays its own XLA compiles, reported apart in the table);
# every task trains all its epochs (--patience 0: the same work in both modes), one evaluation per
# task (--eval-every EPOCHS), the paper's threshold acceptance (no target-mode selection phase),
# a 1-epoch fine-tune. The runs use the installed wheel, from a folder outside the checkout.
#
# Writes under $OUT (default: a new temporary folder), 6 files:
#   machine.txt          nvidia-smi, CPU, Python and package versions, the wheels installed
#   sensors.json         `greenkd sensors --json`
#   device_distill.md    the table (benchmarks/device_distill_table.py)
#   device_distill.json  its figures
#   runs.tar.gz          each run's summary.json, tasks.csv, profile summary/samples/marks
#   device_distill.log   everything this script printed
# Exit code: 0, or the first step's that failed (124: stopped by its time limit).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT=${OUT:-$(mktemp -d -t greenkd-devdistill.XXXXXX)}
PY=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
WHEELS=$(realpath -m "${WHEELS:-.device-wheels}")
if [ "$DRY_RUN" = 1 ]; then
  WIDTH=${WIDTH:-0.0625} EPOCHS=${EPOCHS:-1} N_TRAIN=${N_TRAIN:-256} N_VAL=${N_VAL:-128}
  BATCH=${BATCH:-64} TEACHER_EPOCHS=${TEACHER_EPOCHS:-1} IDLE_SECONDS=${IDLE_SECONDS:-1}
else
  # 20,000 training images at batch 256: 79 steps per epoch and task (CIFAR-10's size is
  # 50,000; a smaller set keeps the independent run inside the budget)
  WIDTH=${WIDTH:-1.0} EPOCHS=${EPOCHS:-3} N_TRAIN=${N_TRAIN:-20000} N_VAL=${N_VAL:-2000}
  BATCH=${BATCH:-256} TEACHER_EPOCHS=${TEACHER_EPOCHS:-4} IDLE_SECONDS=${IDLE_SECONDS:-5}
fi
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-1}
BUDGET_S=${BUDGET_S:-450}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
WORK=$(mktemp -d -t greenkd-devdistill-work.XXXXXX)  # runs and caches; only the tarball returns
SITE=$WORK/site
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GREENKD_CACHE=$WORK/cache KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false
exec > >(tee "$OUT/device_distill.log") 2>&1
tee_pid=$!
status=0
fail() { [ "$status" -ne 0 ] || status=$1; }
step() { echo; echo "== [$(date +%T), ${SECONDS} s] $*"; }
# the seconds a step may take: its cap, or what is left of the budget (at least 10 s)
limit() { local left=$((BUDGET_S - SECONDS)); ((left < $1)) || left=$1; echo $((left > 10 ? left : 10)); }

step "0. install the carried wheels from $WHEELS into $SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
  --target "$SITE" --find-links "$WHEELS" keras namex optree binpacking greenkd
code=$?
if [ "$code" -ne 0 ]; then
  echo "pip install failed ($code): nothing else can run"
  exec >&- 2>&-
  wait "$tee_pid"
  exit "$code"
fi
cd "$WORK"  # the installed greenkd, not the checkout's source
# Keras on this JAX, before any minute goes to a run that could not start
timeout 120 "$PY" -c "import keras, greenkd; print('keras', keras.__version__, 'on', keras.backend.backend(), 'with greenkd from', greenkd.__file__)"
code=$?
if [ "$code" -ne 0 ]; then
  echo "Keras does not load here ($code): nothing else can run"
  exec >&- 2>&-
  wait "$tee_pid"
  exit "$code"
fi

step "1. machine facts -> $OUT/machine.txt"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r)"
  lscpu 2>/dev/null | grep "Model name" || grep -m1 "model name" /proc/cpuinfo
  echo "cpus: $(nproc)"
  echo "--- nvidia-smi --query-gpu"
  timeout 30 nvidia-smi --format=csv --query-gpu=index,name,driver_version,memory.total,power.limit,clocks.max.sm,mig.mode.current 2>&1 \
    || echo "(nvidia-smi failed or is missing)"
  echo "--- wheels carried"
  ls -l "$WHEELS"
  echo "--- python"
  timeout 120 "$PY" - <<'EOF' 2>&1 || echo "(python failed)"
import importlib.metadata as md, importlib.util, sys
print("python", sys.version.split()[0], sys.executable)
for dist in ("greenkd", "keras", "optree", "namex", "binpacking", "jax", "jaxlib", "numpy",
             "pandas", "typer", "rich", "psutil", "nvidia-ml-py"):
    try:
        print(dist, md.version(dist))
    except md.PackageNotFoundError:
        print(dist, "not installed")
for mod in ("tensorflow", "dask", "mpi4py", "plotly"):
    print(mod, "importable" if importlib.util.find_spec(mod) else "absent")
import jax
print("jax devices", jax.devices())
EOF
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

step "2. greenkd sensors -> $OUT/sensors.json"
timeout 60 "$PY" -m greenkd sensors || fail $?
timeout 60 "$PY" -m greenkd sensors --json > "$OUT/sensors.json" || fail $?

data=(--width "$WIDTH" --n-train "$N_TRAIN" --n-val "$N_VAL" --batch-size "$BATCH")
step "3. the JAX teacher: VGG16 width $WIDTH, $N_TRAIN images, at most $TEACHER_EPOCHS epochs (cached)"
teacher_ok=1
timeout -k 10 "$(limit 120)" "$PY" -m greenkd teacher train --framework jax "${data[@]}" \
  --epochs "$TEACHER_EPOCHS" || { fail $?; teacher_ok=0; }

distill() {  # name cap distill-flags...: one profiled run under $WORK/name
  local name=$1 cap=$2
  shift 2
  mkdir -p "$WORK/$name"
  rm -rf "$GREENKD_CACHE/jax-compile"  # each run compiles its own programs
  local t
  t=$(limit "$cap")
  step "$name: greenkd profile -- greenkd distill $* (at most $t s)"
  # SIGINT at the limit: greenkd profile passes it on, distill stops as on Ctrl-C (its partial
  # summary.json and tasks.csv written), then the profile writes its summary, marked partial
  timeout -s INT -k 30 "$t" "$PY" -m greenkd profile --idle-seconds "$IDLE_SECONDS" --hz 2 \
    -o "$WORK/$name/profile" -- \
    "$PY" -m greenkd distill --framework jax "${data[@]}" --teacher-epochs "$TEACHER_EPOCHS" \
    --epochs "$EPOCHS" \
    --eval-every "$EPOCHS" --patience 0 --acceptance threshold \
    --finetune-epochs "$FINETUNE_EPOCHS" --no-block-costs --out "$WORK/$name/run" "$@"
  local code=$?
  echo "$code" > "$WORK/$name/exit"
  [ "$code" -eq 0 ] || { echo "$name exited $code"; fail "$code"; }
}
if [ "$teacher_ok" = 0 ]; then
  echo "no cached teacher: each run would train its own inside its profile; runs skipped"
else
  # the issue's main question first (fused against independent), the 2-worker run last
  distill fused 120 --gpus 1 --fuse
  distill independent 220 --gpus 1 --no-fuse
  distill workers2 120 --gpus 2 --allow-oversubscribe --fuse
fi

[ -d "$WORK/fused" ] || { echo "no run to tabulate"; exec >&- 2>&-; wait "$tee_pid"; exit "$status"; }
step "4. table -> $OUT/device_distill.md"
header="## VGG16 width $WIDTH, $N_TRAIN synthetic 32x32 images, batch $BATCH, $EPOCHS epochs per task, JAX"
[ "$DRY_RUN" = 1 ] && header="$header (DRY RUN: CPU, tiny settings)"
"$PY" "$ROOT/benchmarks/device_distill_table.py" "$WORK" --header "$header" \
  --report "$OUT/device_distill.md" --json "$OUT/device_distill.json" || fail $?
tar -czf "$OUT/runs.tar.gz" -C "$WORK" --exclude='*.keras' --exclude='*.weights.h5' \
  --exclude='*.npz' fused independent workers2 2>/dev/null
ls -l "$OUT/runs.tar.gz"

step "done in ${SECONDS} s (budget $BUDGET_S s); files under $OUT:"
(cd "$OUT" && find . -type f | sort)
exec >&- 2>&-
wait "$tee_pid"
exit "$status"
