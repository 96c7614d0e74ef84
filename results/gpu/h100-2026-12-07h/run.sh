#!/usr/bin/env bash
# Device run, 2026-12-07 (sixth session): the launch-size dispatcher folded into one template
# (withSmallestBlock in rdma/cuda_ipc/batch_copy.cu; fold.patch): the cuda_ipc GPU tests, then an
# A/B against the tree before it (fold.patch reversed), 3 interleaved rounds, to show no change.
set -u
exec > >(tee "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/machine.txt"
nproc; grep -m1 "model name" /proc/cpuinfo; hostname
t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }
echo "== build new $(date +%T)"
timeout 240 scripts/build_gpu.sh build/gpu transfer_bench rdma_gpu_tests > /tmp/build.log 2>&1 || { echo BUILD FAILED; tail -60 /tmp/build.log; exit 1; }
echo "== cuda_ipc tests $(date +%T) ($(el) s)"
timeout 90 build/gpu/tests/rdma/rdma_gpu_tests --gtest_filter='CudaIpc*' 2>&1 | grep -E "^\[ +(OK|FAILED|PASSED) |tests ran" | tee "$OUT/tests.log"
echo "== build base $(date +%T) ($(el) s)"
d=/tmp/base; rm -rf $d; mkdir -p $d
tar cf - --exclude=./build --exclude=./.git . | tar xf - -C $d
(cd $d && patch -R -p1 -i bench-results/ab/fold.patch) || { echo "PATCH FAILED"; exit 1; }
timeout 200 $d/scripts/build_gpu.sh $d/build transfer_bench > /tmp/build-base.log 2>&1 || { echo "BUILD base FAILED"; tail -30 /tmp/build-base.log; exit 1; }
echo "== A/B base vs new $(date +%T) ($(el) s)"
KVFERRY_AB_SIZES=8K,32K,128K timeout 150 scripts/ab_cuda_ipc.sh /tmp/base/build build/gpu /tmp/ab-fold 3 2>&1 | grep -vE "^\[|^ *$" | tail -8
tar czf "$OUT/ab.tgz" -C /tmp ab-fold
echo "== done $(date +%T), $(el) s"
