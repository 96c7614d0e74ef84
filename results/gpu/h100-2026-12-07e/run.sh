#!/usr/bin/env bash
# Device run, 2026-12-07 (fifth session):
# 1. build the tree (cuda_ipc post checks and stages each op in one pass: post.patch), ctest -L gpu;
# 2. cuda_ipc A/B, interleaved rounds: base (post.patch reversed) vs new; new vs new without the
#    inline op list (noinline); new with a per-phase timer in post() (profile.patch), one sweep;
# 3. idle 8K TTFT colocated vs disaggregated with the word-by-word tokenizer (debug logs).
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
mk() {  # name patch-args...
  local d=/tmp/$1; shift
  rm -rf $d; mkdir -p $d
  tar cf - --exclude=./build --exclude=./.git . | tar xf - -C $d
  (cd $d && "$@") || { echo "PATCH FAILED for $d"; return 1; }
  timeout 200 $d/scripts/build_gpu.sh $d/build transfer_bench > /tmp/build-$(basename $d).log 2>&1 || { echo "BUILD $d FAILED"; tail -30 /tmp/build-$(basename $d).log; return 1; }
}
echo "== build variants $(date +%T) ($(el) s)"
mk base patch -R -p1 -i bench-results/ab/post.patch
mk noinline sed -i 's/constexpr uint64_t kInlineOpsBytes = 8ull << 20;/constexpr uint64_t kInlineOpsBytes = 1ull << 62;/' rdma/cuda_ipc/cuda_ipc_transport.cc
grep -c "1ull << 62" /tmp/noinline/rdma/cuda_ipc/cuda_ipc_transport.cc
mk prof patch -p1 -i bench-results/ab/profile.patch
echo "== A/B base vs new $(date +%T) ($(el) s)"
KVFERRY_AB_SIZES=8K,32K,128K timeout 200 scripts/ab_cuda_ipc.sh /tmp/base/build build/gpu /tmp/ab-post 4 2>&1 | grep -vE "^\[|^ *$" | tail -30
echo "== A/B new vs noinline $(date +%T) ($(el) s)"
KVFERRY_AB_SIZES=8K,32K,128K timeout 160 scripts/ab_cuda_ipc.sh build/gpu /tmp/noinline/build /tmp/ab-inline 3 2>&1 | grep -vE "^\[|^ *$" | tail -30
echo "== profile $(date +%T) ($(el) s)"
KVFERRY_AB_SIZES=8K,32K,128K timeout 60 scripts/ab_cuda_ipc.sh /tmp/prof/build /tmp/prof/build /tmp/ab-prof 1 2>&1 | grep -E "post profile|block|KiB" | tail -20
tar czf "$OUT/ab.tgz" -C /tmp ab-post ab-inline ab-prof
echo "== model $(date +%T) ($(el) s)"
mkdir -p /tmp/m8b
[ -f /tmp/m8b/model.gguf ] || timeout 150 build/gpu/model/kvferry-make-model --shape llama-3.1-8b --out /tmp/m8b --seed 1 > /tmp/model.log 2>&1
sed -e 's/--input-len 8192 --output-len 2/--input-len 8191 --output-len 2/' scripts/gpu_e2e.sh > /tmp/e2e_8191.sh
run() {  # input-len cluster
  local s=scripts/gpu_e2e.sh d=/tmp/e2e-$1-$2
  [ "$1" = 8191 ] && s=/tmp/e2e_8191.sh
  [ $(el) -gt 520 ] && { echo "== skip e2e $1 $2 (time)"; return; }
  echo "== e2e input $1 $2 $(date +%T) ($(el) s)"
  KVFERRY_E2E_LOG_LEVEL=debug KVFERRY_E2E_CLUSTERS="$2" KVFERRY_E2E_WORKLOADS="ttft8k" \
    timeout 60 bash $s bench build/gpu /tmp/m8b/model.gguf $d | grep -E "P50 TTFT|P99 TTFT"
  grep -hE "request .*(first token|reserve on|tokenized)" $d/*orchestrator.log | tail -2 | cut -c1-330
}
for v in 8192 8191; do run $v colocated; run $v disaggregated; done
tar czf "$OUT/e2e.tgz" -C /tmp $(cd /tmp && ls -d e2e-819* 2>/dev/null)
echo "== done $(date +%T), $(el) s"
