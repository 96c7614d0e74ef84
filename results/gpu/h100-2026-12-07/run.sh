#!/usr/bin/env bash
# GPU call (2026-12-07): the 256-query, 8-warp prefill tiling as the engine's default against the
# base (HEAD: 128 queries over 4 warps) in the same run; every GPU test (cuda_ipc's rewritten
# 8 MiB-threshold test first ran here); the 8B reference and bench. Both trees come from
# head.tgz (git archive HEAD) so edits in the working tree don't travel into the build; the new
# one with change.patch applied. Carried: .deps, bench-results/ab.
set -x
root=$(pwd)
res=$root/bench-results/gpu
mkdir -p "$res"
for t in base new; do
  rm -rf /tmp/$t && mkdir -p /tmp/$t && tar -xzf bench-results/ab/head.tgz -C /tmp/$t && cp -r .deps /tmp/$t/
done
(cd /tmp/new && patch -s -p1 <"$root/bench-results/ab/change.patch") || echo "PATCH FAILED"
(cd /tmp/base && scripts/build_gpu.sh /tmp/base/build engine_bench >"$res/base-build.log" 2>&1
  echo "base build exit $?" >>"$res/base-build.log") &
cd /tmp/new
timeout 500 bash -c "
scripts/bench_gpu.sh --out $res --shapes llama-3.1-8b --stages build
until grep -q 'base build exit' $res/base-build.log 2>/dev/null; do sleep 2; done
tail -n 2 $res/base-build.log
scripts/bench_gpu.sh --out $res --shapes llama-3.1-8b --stages 'tests reference bench'
tail -n 5 $res/tests.log
build/gpu/tests/node_agent/engine/engine_gpu_tests --gtest_filter='AttentionRateTest.*' > $res/attention.log 2>&1
grep -E 'prefill attention|OK |FAILED' $res/attention.log
m=/tmp/kvferry-models/llama-3.1-8b/model.gguf
/tmp/base/build/bench/engine_bench --device cuda --model \$m --name base --batch 1 --json $res/pf-base.json > $res/pf-base.log 2>&1
build/gpu/bench/engine_bench --device cuda --model \$m --name new --batch 1 --json $res/pf-new.json > $res/pf-new.log 2>&1
grep -H 'prefill' $res/pf-base.log $res/pf-new.log $res/bench-llama-3.1-8b.log
grep -i 'prefill' $res/reference-llama-3.1-8b.log | head
"
wait
tar czf "$OUT/r5.tgz" -C "$root/bench-results" gpu
