#!/usr/bin/env bash
# Device run: build, cuda_ipc GPU tests, A/B of the copy kernel's unroll (8 vs 4), full sweep.
set -u
root=$(pwd)
exec > >(tee "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/machine.txt"
t0=$(date +%s)
echo "== build base $(date +%T)"
timeout 300 scripts/build_gpu.sh build/gpu transfer_bench rdma_gpu_tests > "$OUT/build.log" 2>&1 || { echo BUILD FAILED; tail -30 "$OUT/build.log"; }
echo "== tests $(date +%T)"
(cd build/gpu && timeout 150 ctest -R "cuda_ipc|tcp_cuda" --output-on-failure) > "$OUT/tests.log" 2>&1; echo "tests rc $?"; tail -8 "$OUT/tests.log"
echo "== build u4 $(date +%T)"
mkdir -p /tmp/u4 && tar --exclude=./build --exclude=./bench-results -cf - . | (cd /tmp/u4 && tar xf -)
(cd /tmp/u4 && patch -p1 < "$root/bench-results/ab/unroll4.patch" && timeout 240 scripts/build_gpu.sh /tmp/u4/build transfer_bench) > "$OUT/build-u4.log" 2>&1 || { echo BUILD U4 FAILED; tail -20 "$OUT/build-u4.log"; }
echo "== ab $(date +%T)"
timeout 150 scripts/ab_cuda_ipc.sh build/gpu /tmp/u4/build "$OUT/ab" 3
echo "== sweep $(date +%T)"
blob=/tmp/sweep.blob
build/gpu/bench/transfer_bench --role target --transport cuda_ipc --blob-file $blob --pool-bytes 2G >/dev/null &
target=$!
timeout 90 build/gpu/bench/transfer_bench --role initiator --transport cuda_ipc --blob-file $blob \
  --pool-bytes 2G --block-sizes 2K,8K,32K,128K,512K,2M,4M --batch 512 --max-batch-bytes 64M \
  --queue-depth 16 --duration 1 --json "$OUT/transfer-cuda_ipc.json"
kill -INT $target; wait $target
echo "== digester test $(date +%T)"
timeout 200 scripts/build_gpu.sh build/gpu engine_gpu_tests > "$OUT/build-engine.log" 2>&1 || { echo BUILD ENGINE FAILED; tail -20 "$OUT/build-engine.log"; }
timeout 60 build/gpu/tests/node_agent/engine/engine_gpu_tests --gtest_filter='BlockDigester*' > "$OUT/digester.log" 2>&1; echo "digester rc $?"; tail -3 "$OUT/digester.log"
echo "== done $(date +%T), $(( $(date +%s) - t0 )) s"
