#!/usr/bin/env bash
# Device run, 2026-12-07 (fifth session), second call: uniform batches (a layer's scattered blocks
# as 8-byte ops inside the launch: uniform.patch). Build, ctest -L gpu, A/B base (uniform.patch
# reversed) vs new in interleaved rounds, then the full transfer_bench sweep of the new build.
set -u
exec > >(tee "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/machine.txt"
t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }
echo "== build new $(date +%T)"
timeout 240 scripts/build_gpu.sh build/gpu > /tmp/build.log 2>&1 || { echo BUILD FAILED; tail -60 /tmp/build.log; exit 1; }
echo "== ctest -L gpu $(date +%T) ($(el) s)"
(cd build/gpu && timeout 150 ctest -L gpu --output-on-failure > /tmp/ctest-gpu.log 2>&1; echo "ctest rc $?"; grep -E "tests passed|Passed|Failed|Skipped|\*\*\*" /tmp/ctest-gpu.log | tail -15)
cp /tmp/ctest-gpu.log "$OUT/ctest-gpu.log"
grep -E "^\[ +(OK|FAILED) +\] CudaIpc" /tmp/ctest-gpu.log | head -20
echo "== build base $(date +%T) ($(el) s)"
d=/tmp/base; rm -rf $d; mkdir -p $d
tar cf - --exclude=./build --exclude=./.git . | tar xf - -C $d
(cd $d && patch -R -p1 -i bench-results/ab/uniform.patch) || { echo "PATCH FAILED"; exit 1; }
timeout 200 $d/scripts/build_gpu.sh $d/build transfer_bench > /tmp/build-base.log 2>&1 || { echo "BUILD base FAILED"; tail -30 /tmp/build-base.log; exit 1; }
echo "== A/B base vs new $(date +%T) ($(el) s)"
KVFERRY_AB_SIZES=8K,32K,128K timeout 220 scripts/ab_cuda_ipc.sh /tmp/base/build build/gpu /tmp/ab-uniform 5 2>&1 | grep -vE "^\[|^ *$" | tail -14
echo "== sweep $(date +%T) ($(el) s)"
rm -f /tmp/sweep.blob
build/gpu/bench/transfer_bench --role target --transport cuda_ipc --blob-file /tmp/sweep.blob --pool-bytes 2G >/dev/null &
tp=$!
timeout 120 build/gpu/bench/transfer_bench --role initiator --transport cuda_ipc --blob-file /tmp/sweep.blob \
  --pool-bytes 2G --block-sizes 2K,8K,32K,128K,512K,2M,4M --batch 512 --max-batch-bytes 64M --queue-depth 16 --duration 1 --json /tmp/ab-uniform/sweep.json
kill -INT $tp; wait $tp
tar czf "$OUT/ab.tgz" -C /tmp ab-uniform
echo "== done $(date +%T), $(el) s"
