#!/usr/bin/env bash
# GPU call 1 (2026-12-06 night): the prefill attention tilings (two 16-row m-tiles a warp) and
# the cuda_ipc copy ops as launch parameters, each against the base (HEAD without change.patch),
# plus a kTurnBytes = 16 MiB variant of the new transport. Carried: .deps, bench-results/ab.
set -x
root=$(pwd)
res=bench-results/gpu
mkdir -p "$res"
rm -rf .deps/root /tmp/base /tmp/t16 && mkdir -p /tmp/base /tmp/t16
tar --exclude=./build --exclude=./bench-results -cf - . | tar -xf - -C /tmp/base
tar --exclude=./build --exclude=./bench-results -cf - . | tar -xf - -C /tmp/t16
(cd /tmp/base && patch -s -R -p1 <"$root/bench-results/ab/change.patch" &&
  scripts/build_gpu.sh /tmp/base/build transfer_bench engine_bench >"$root/$res/base-build.log" 2>&1
  echo "base build exit $?" >>"$root/$res/base-build.log") &
(cd /tmp/t16 && sed -i 's/constexpr uint64_t kTurnBytes = 32ull << 20;/constexpr uint64_t kTurnBytes = 16ull << 20;/' rdma/cuda_ipc/cuda_ipc_transport.cc &&
  grep -n 'kTurnBytes =' rdma/cuda_ipc/cuda_ipc_transport.cc >"$root/$res/t16-build.log" &&
  scripts/build_gpu.sh /tmp/t16/build transfer_bench >>"$root/$res/t16-build.log" 2>&1
  echo "t16 build exit $?" >>"$root/$res/t16-build.log") &
timeout 570 bash -c "
scripts/bench_gpu.sh --out $res --shapes llama-3.1-8b --stages build
until grep -q 'base build exit' $res/base-build.log 2>/dev/null && grep -q 't16 build exit' $res/t16-build.log 2>/dev/null; do sleep 2; done
tail -n 2 $res/base-build.log $res/t16-build.log
scripts/bench_gpu.sh --out $res --shapes llama-3.1-8b --stages 'tests reference bench'
m=/tmp/kvferry-models/llama-3.1-8b/model.gguf
for r in 1 2; do
  /tmp/base/build/bench/engine_bench --device cuda --model \$m --name base --batch 1 --json $res/pf-base-\$r.json > $res/pf-base-\$r.log 2>&1
  build/gpu/bench/engine_bench --device cuda --model \$m --name new --batch 1 --json $res/pf-new-\$r.json > $res/pf-new-\$r.log 2>&1
done
grep -h 'prefill' $res/pf-*.log
KVFERRY_AB_SIZES=8K,32K,128K scripts/ab_cuda_ipc.sh /tmp/base/build build/gpu $res/ab-params 3
KVFERRY_AB_SIZES=8K,32K,128K scripts/ab_cuda_ipc.sh build/gpu /tmp/t16/build $res/ab-turn16 3
"
wait
build/gpu/tests/node_agent/engine/engine_gpu_tests --gtest_filter="AttentionRateTest.*:AttentionTest.*" 2>&1 | tee $res/attention.log | grep -E "prefill attention|OK |FAIL"
tar czf "$OUT/r1.tgz" -C bench-results gpu
