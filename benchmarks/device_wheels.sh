#!/usr/bin/env bash
# The wheels benchmarks/device_distill.sh installs on the GPU machine, which has Python 3.12, JAX
# with CUDA, numpy, pandas, typer, rich, psutil, nvidia-ml-py, absl-py, h5py, ml-dtypes,
# packaging and typing-extensions, but no Keras and no package registry. Run it here, where pip
# reaches one, from the repository root:
#
#   bash benchmarks/device_wheels.sh                       # -> .device-wheels/ (git-ignored)
#   PYTHON_VERSION=3.11 DEST=/tmp/w bash benchmarks/device_wheels.sh   # for a local dry run
#
# It fetches, with --no-deps, exactly what greenkd's local JAX distillation needs and that machine
# lacks: keras and the two of its requirements missing there (namex, pure Python; optree, a small
# compiled wheel for PYTHON_VERSION), binpacking (the schedules), and builds greenkd itself as a
# wheel from the working tree. Not fetched, because a local run never imports them: tensorflow,
# mpi4py/mpich (--backend mpi), dask/distributed (--backend dask), plotly (reports). Versions are
# the ones this checkout's environment runs (importlib.metadata), so the GPU runs the code tested
# here. About 3 MiB in all, far under the 64 MiB a device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
DEST=${DEST:-.device-wheels}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
tag=cp${PYTHON_VERSION/./}

version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

rm -rf "$DEST"  # one version of each: two would stop the install there
mkdir -p "$DEST"
pins=()
for dist in keras namex optree binpacking; do
  pins+=("$dist==$(version "$dist")")
done
echo "fetching ${pins[*]} for CPython $PYTHON_VERSION on x86-64 -> $DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: \
  --python-version "$PYTHON_VERSION" --implementation cp --abi "$tag" --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$DEST" "${pins[@]}"
echo "building greenkd from the working tree -> $DEST"
# from a copy of the files git would send (tracked and untracked-not-ignored), so that nothing
# stale in build/ or an egg-info gets into the wheel and the checkout is left untouched
src=$(mktemp -d -t greenkd-wheel-src.XXXXXX)
trap 'rm -rf "$src"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 tar --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$src"
DEST=$(realpath "$DEST")
(cd "$src" && "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" .)
ls -l "$DEST"
du -sh "$DEST"
