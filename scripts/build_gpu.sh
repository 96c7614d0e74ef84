#!/usr/bin/env bash
# Builds kvferry with CUDA on a GPU host — the one command for a GPU machine:
#
#   scripts/build_gpu.sh                       # Release build in build/gpu, every core
#   scripts/build_gpu.sh BUILD_DIR [TARGET...]  # elsewhere, and only those targets
#
# Needs CUDA (nvcc at /usr/local/cuda/bin or on the PATH), CMake >= 3.25, Ninja, g++ >= 12 and the
# libraries of scripts/install_deps.sh (it knows Debian 12 and Ubuntu 24.04). A host that cannot
# install packages uses the ones scripts/offline_deps.sh fetched into .deps/ (unpacked here).
# Boost is used header-only (Boost.JSON compiled into the build), so no Boost library is needed.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build/gpu}"
case "$build" in -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
[ $# -gt 0 ] && shift
targets=()
for target in "$@"; do targets+=(--target "$target"); done

nvcc="$(command -v nvcc || true)"
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -z "$nvcc" ]; then
  echo "build_gpu.sh: nvcc not found (install the CUDA toolkit, or put nvcc on the PATH)" >&2
  exit 1
fi

extra=()
if ls "$root"/.deps/*.deb >/dev/null 2>&1; then
  [ -d "$root/.deps/root" ] || "$root/scripts/offline_deps.sh" unpack
  extra+=("-DKVFERRY_DEPS_PREFIX=$root/.deps/root")
fi

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_COMPILER="$nvcc" "${extra[@]}"
cmake --build "$build" -j "$(nproc)" "${targets[@]}"
echo "build_gpu.sh: built $build (CUDA $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
