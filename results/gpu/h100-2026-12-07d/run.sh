#!/usr/bin/env bash
# Device run: where an idle 8K prompt's TTFT goes, colocated against disaggregated (cuda_ipc),
# everything at debug level. A/B of even prefill chunks: base = without even.patch (8,193 tokens
# run as 8,192 + 1), new = the working tree (4,097 + 4,096); prompts of 8,193 tokens (two chunks)
# and 8,192 (one chunk, the same in both).
set -u
exec > >(tee "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/machine.txt"
t0=$(date +%s)
echo "== mps: $(command -v nvidia-cuda-mps-control || echo none); nsys: $(command -v nsys || ls /usr/local/cuda/bin/nsys 2>/dev/null || echo none)"
P=bench-results/ab/even.patch
patch -R -p1 < $P || { echo "PATCH -R FAILED"; exit 1; }
echo "== build base $(date +%T)"
timeout 200 scripts/build_gpu.sh build/gpu > /tmp/build.log 2>&1 || { echo BUILD FAILED; tail -40 /tmp/build.log; exit 1; }
echo "== model $(date +%T)"
mkdir -p /tmp/m8b
[ -f /tmp/m8b/model.gguf ] || timeout 150 build/gpu/model/kvferry-make-model --shape llama-3.1-8b --out /tmp/m8b --seed 1 > /tmp/model.log 2>&1
sed -e 's/--input-len 8192 --output-len 2/--input-len 8191 --output-len 2/' scripts/gpu_e2e.sh > /tmp/e2e_8191.sh
run() {  # label input-len cluster
  local s=scripts/gpu_e2e.sh d=/tmp/e2e-$1-$2-$3
  [ "$2" = 8191 ] && s=/tmp/e2e_8191.sh
  echo "== e2e $1 input $2 $3 $(date +%T)"
  KVFERRY_E2E_LOG_LEVEL=debug KVFERRY_E2E_CLUSTERS="$3" KVFERRY_E2E_WORKLOADS="ttft8k" \
    timeout 150 bash $s bench build/gpu /tmp/m8b/model.gguf $d | grep -E "P50 TTFT|P99 TTFT"
  grep -hE "request .*(first token|reserve on|tokenized)|prefill of|decoded in" $d/*.log | tail -7 | cut -c1-330
}
run base 8192 colocated
run base 8192 disaggregated
patch -p1 < $P || { echo "PATCH FAILED"; exit 1; }
echo "== build new $(date +%T)"
timeout 200 scripts/build_gpu.sh build/gpu > /tmp/build2.log 2>&1 || { echo BUILD FAILED; tail -40 /tmp/build2.log; exit 1; }
run new 8192 colocated
run new 8192 disaggregated
run new 8191 colocated
run new 8191 disaggregated
tar czf "$OUT/e2e.tgz" -C /tmp $(cd /tmp && ls -d e2e-base-* e2e-new-*)
# Then, while time is left: decode TPOT under concurrent 8K prefills, colocated against the pair
# time-sliced, under MPS, and under MPS with the prefill agent held to 60 % of the SMs.
mrun() {  # label env...
  local label="$1"; shift
  [ $(( $(date +%s) - t0 )) -gt 440 ] && { echo "== skip $label (time)"; return; }
  echo "== in8k $label $(date +%T)"
  env "$@" KVFERRY_E2E_WORKLOADS="in8k" timeout 100 bash scripts/gpu_e2e.sh bench build/gpu /tmp/m8b/model.gguf /tmp/mps-$label \
    | grep -E "(P50|P99) (TTFT|TPOT|ITL)|completed|wrote"
}
mrun colocated KVFERRY_E2E_CLUSTERS=colocated
mrun sliced KVFERRY_E2E_CLUSTERS=disaggregated
mrun mps KVFERRY_E2E_CLUSTERS=disaggregated KVFERRY_E2E_MPS=1
mrun mps60 KVFERRY_E2E_CLUSTERS=disaggregated KVFERRY_E2E_MPS=1 KVFERRY_E2E_PREFILL_SM_PERCENT=60
tar czf "$OUT/mps.tgz" --exclude=mps-pipe -C /tmp $(cd /tmp && ls -d mps-* 2>/dev/null)
echo "== done $(date +%T), $(( $(date +%s) - t0 )) s"
