#!/usr/bin/env bash
# Device run: TTFT of 8K prompts one at a time, disaggregated (cuda_ipc) vs colocated, 8B shape.
set -u
exec > >(tee "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/machine.txt"
t0=$(date +%s)
echo "== build $(date +%T)"
timeout 150 scripts/build_gpu.sh build/gpu > "$OUT/build.log" 2>&1 || { echo BUILD FAILED; tail -30 "$OUT/build.log"; }
echo "== model $(date +%T)"
mkdir -p /tmp/m8b
timeout 150 build/gpu/model/kvferry-make-model --shape llama-3.1-8b --out /tmp/m8b --seed 1 > "$OUT/model.log" 2>&1; echo "model rc $?"; ls -la /tmp/m8b
echo "== e2e $(date +%T)"
KVFERRY_E2E_CLUSTERS="disaggregated colocated" KVFERRY_E2E_WORKLOADS="ttft8k" \
  timeout 270 scripts/gpu_e2e.sh bench build/gpu /tmp/m8b/model.gguf /tmp/e2e; echo "e2e rc $?"
tar czf "$OUT/e2e.tgz" -C /tmp e2e
echo "== done $(date +%T), $(( $(date +%s) - t0 )) s"
