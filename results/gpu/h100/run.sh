#!/usr/bin/env bash
# The device command that made this directory (run from the repository root, with .deps/ and
# bench-results/ab/ carried; bench-results/ab/ held this script, rdma.patch = `git diff cd6fbf3
# 116e117 -- rdma/` for the base build, and nsys_gaps.py; files came back as one tarball).
# GPU call 1: build (+ a base transfer_bench without this change's rdma/ edits), gpu tests,
# cuda_ipc transfer, reference + bench for both shapes, then the cuda_ipc A/B.
set -x
root=$(pwd)
res=bench-results/gpu
rm -rf .deps/root /tmp/base && mkdir -p /tmp/base "$res"
tar --exclude=./build --exclude=./bench-results -cf - . | tar -xf - -C /tmp/base
(cd /tmp/base && patch -s -R -p1 <"$root/bench-results/ab/rdma.patch" &&
  scripts/build_gpu.sh /tmp/base/build transfer_bench >"$root/$res/base-build.log" 2>&1; echo "base build exit $?" >>"$root/$res/base-build.log") &
timeout 540 bash -c "
scripts/bench_gpu.sh --out $res --stages build
until grep -q 'base build exit' $res/base-build.log 2>/dev/null; do sleep 2; done
tail -2 $res/base-build.log
scripts/bench_gpu.sh --out $res --stages 'tests transfer reference bench'
scripts/ab_cuda_ipc.sh /tmp/base/build build/gpu $res/ab 3
"
wait
tar czf "$OUT/r1.tgz" -C bench-results gpu
