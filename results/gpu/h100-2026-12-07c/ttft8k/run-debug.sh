#!/usr/bin/env bash
# Device run: where the disaggregated 8K TTFT tail goes (agents at debug level), prompts of 8193
# tokens (two chunks: 8192 + 1) and of 8192 (one chunk).
set -u
exec > >(tee "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/machine.txt"
t0=$(date +%s)
echo "== build $(date +%T)"
timeout 150 scripts/build_gpu.sh build/gpu > "$OUT/build.log" 2>&1 || { echo BUILD FAILED; tail -30 "$OUT/build.log"; }
echo "== model $(date +%T)"
mkdir -p /tmp/m8b
[ -f /tmp/m8b/model.gguf ] || timeout 150 build/gpu/model/kvferry-make-model --shape llama-3.1-8b --out /tmp/m8b --seed 1 > "$OUT/model.log" 2>&1
sed -e 's/^agent_yaml=""$/agent_yaml=$'"'"'logging:\\n  level: debug'"'"'/' scripts/gpu_e2e.sh > /tmp/e2e_debug.sh
sed -e 's/--input-len 8192 --output-len 2/--input-len 8191 --output-len 2/' /tmp/e2e_debug.sh > /tmp/e2e_debug_8191.sh
grep -n "^agent_yaml=" /tmp/e2e_debug.sh | head -2
for v in 8192 8191; do
  s=/tmp/e2e_debug.sh; [ $v = 8191 ] && s=/tmp/e2e_debug_8191.sh
  echo "== e2e input $v $(date +%T)"
  KVFERRY_E2E_CLUSTERS="disaggregated" KVFERRY_E2E_WORKLOADS="ttft8k" \
    timeout 130 bash $s bench build/gpu /tmp/m8b/model.gguf /tmp/e2e-$v | grep -E "TTFT|wrote"; echo "e2e rc $?"
  grep "KV sent" /tmp/e2e-$v/disaggregated-agent0.log | tail -6
done
tar czf "$OUT/e2e.tgz" -C /tmp e2e-8192 e2e-8191
echo "== done $(date +%T), $(( $(date +%s) - t0 )) s"
