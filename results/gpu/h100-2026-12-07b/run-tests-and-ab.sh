#!/usr/bin/env bash
# GPU call (2026-12-07, second session): (1) cuda_ipc batches raise a host-mapped flag from their
# copy kernel (change.patch, wip/cuda-ipc-done-flag) against HEAD in the same run
# (scripts/ab_cuda_ipc.sh); (2) every GPU test on the patched tree, among them the new
# BlockDigesterTest (KV checksums on GPU pools) and gpu_pipeline with checksums on and a
# corrupting tcp pair. Both trees come from head.tgz (git archive HEAD 65b66b3).
set -x
root=$(pwd)
res=$root/bench-results/gpu
mkdir -p "$res"
nvidia-smi --query-gpu=name,driver_version --format=csv > "$res/device.txt" 2>&1
for t in base new; do
  rm -rf /tmp/$t && mkdir -p /tmp/$t && tar -xzf bench-results/ab/head.tgz -C /tmp/$t && cp -r .deps /tmp/$t/
done
(cd /tmp/new && patch -s -p1 <"$root/bench-results/ab/change.patch") || echo "PATCH FAILED"
(cd /tmp/base && scripts/build_gpu.sh /tmp/base/build transfer_bench >"$res/base-build.log" 2>&1
  echo "base build exit $?" >>"$res/base-build.log") &
cd /tmp/new
timeout ${INNER:-330} bash -c "
scripts/build_gpu.sh build/gpu engine_gpu_tests rdma_gpu_tests transfer_bench node_agent orchestrator kvferry-make-model > $res/build.log 2>&1; tail -n 3 $res/build.log
ctest --test-dir build/gpu -L gpu --output-on-failure --timeout 200 > $res/tests.log 2>&1
grep -E 'tests passed|Failed|Passed|Skipped|FAILED' $res/tests.log | tail -n 30
cp -r build/gpu/tests/integration/gpu_pipeline $res/ 2>/dev/null
until grep -q 'base build exit' $res/base-build.log 2>/dev/null; do sleep 2; done
tail -n 2 $res/base-build.log
KVFERRY_AB_SIZES=8K,32K,128K scripts/ab_cuda_ipc.sh /tmp/base/build build/gpu $res/ab 2 > $res/ab.log 2>&1
tail -n 14 $res/ab.log
"
kill %1 2>/dev/null; wait
tar czf "$OUT/r8.tgz" -C "$root/bench-results" gpu
