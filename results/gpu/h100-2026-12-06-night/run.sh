#!/usr/bin/env bash
# GPU call (2026-12-06 night), the run whose results are committed (lean: the device budget was
# nearly spent on refused starts): the prefill attention with two 16-row m-tiles a warp (128
# queries over 4 warps, 64 keys a step) and ex2.approx.ftz, and the cuda_ipc copy ops as launch
# parameters, each against the base (HEAD without change.patch) in the same run.
# Carried: .deps, bench-results/ab (this script, change.patch).
set -x
root=$(pwd)
res=bench-results/gpu
mkdir -p "$res"
rm -rf .deps/root /tmp/base && mkdir -p /tmp/base
tar --exclude=./build --exclude=./bench-results -cf - . | tar -xf - -C /tmp/base
(cd /tmp/base && patch -s -R -p1 <"$root/bench-results/ab/change.patch" &&
  scripts/build_gpu.sh /tmp/base/build transfer_bench engine_bench >"$root/$res/base-build.log" 2>&1
  echo "base build exit $?" >>"$root/$res/base-build.log") &
timeout 380 bash -c "
scripts/bench_gpu.sh --out $res --shapes llama-3.1-8b --stages build
until grep -q 'base build exit' $res/base-build.log 2>/dev/null; do sleep 2; done
tail -n 2 $res/base-build.log
scripts/bench_gpu.sh --out $res --shapes llama-3.1-8b --stages 'tests reference bench'
build/gpu/tests/node_agent/engine/engine_gpu_tests --gtest_filter='AttentionRateTest.*:AttentionTest.*' > $res/attention.log 2>&1
grep -E 'prefill attention|OK |FAILED' $res/attention.log
m=/tmp/kvferry-models/llama-3.1-8b/model.gguf
/tmp/base/build/bench/engine_bench --device cuda --model \$m --name base --batch 1 --json $res/pf-base.json > $res/pf-base.log 2>&1
grep -H 'prefill' $res/pf-base.log $res/bench-llama-3.1-8b.log
KVFERRY_AB_SIZES=8K,32K,128K scripts/ab_cuda_ipc.sh /tmp/base/build build/gpu $res/ab-params 3 > $res/ab-params.log 2>&1
tail -n 7 $res/ab-params.log
"
wait
tar czf "$OUT/r3.tgz" -C bench-results gpu
