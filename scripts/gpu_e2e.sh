#!/usr/bin/env bash
# Disaggregated serving on one GPU, end to end: an orchestrator, a prefill agent and a decode
# agent (separate processes on GPU 0, KV moved by cuda_ipc), against an orchestrator with one
# `both` agent on the same GPU — one cluster at a time. The test also runs the prefill/decode
# pair over tcp (the agents' device pools staged through pinned host memory, as on hosts
# without RDMA).
#
#   scripts/gpu_e2e.sh test  BUILD_DIR MODEL.gguf WORK_DIR
#       (MODEL.gguf is written with kvferry-make-model --shape tiny when it does not exist)
#       greedy outputs of several prompts (some sharing a prefix, so the second hits the prefix
#       cache) must be identical token for token, disaggregated over cuda_ipc (with
#       agent.kv_checksum on: every layer's KV digested on the GPU at both ends), disaggregated
#       over tcp and on one both agent; afterwards no lease and no block in use remain on any
#       agent. Then a tcp pair whose prefill agent corrupts every batch it sends, checksums on:
#       the decode agent must refuse the KV (the orchestrator counts the corruptions) and the
#       answers still be the right tokens (the request is served again without that KV). Exit 0
#       when so, 1 otherwise, 77 (skipped) without a GPU.
#   scripts/gpu_e2e.sh bench BUILD_DIR MODEL.gguf WORK_DIR
#       benchmark_client at 1K, 4K and 8K-token prompts and a shared-prefix workload against each
#       cluster (the pair over cuda_ipc, the pair over tcp, one both agent; KVFERRY_E2E_CLUSTERS
#       names a subset); writes WORK_DIR/e2e-<cluster>-<workload>.json (vLLM bench-serve names) and a
#       table; the prefill agent's per-layer transfer timing comes from its /metrics.
#       KVFERRY_E2E_WORKLOADS names a subset of the workloads, or adds ttft8k (8K prompts one at
#       a time: the transfer's share of TTFT on an idle cluster). KVFERRY_E2E_LOG_LEVEL sets the
#       orchestrator's and the agents' log level (debug: where each request's time went).
#       KVFERRY_E2E_MPS=1 runs the clusters under an MPS daemon this script starts and stops
#       (the agents' kernels then run side by side instead of time-sliced), and
#       KVFERRY_E2E_PREFILL_SM_PERCENT=N gives the prefill agent at most N % of the SMs
#       (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE), leaving the rest to the decode agent.
set -euo pipefail
mode="${1:?usage: gpu_e2e.sh test|bench BUILD_DIR MODEL WORK_DIR}"
build="${2:?build dir}"
model="${3:?model}"
work="${4:?work dir}"
mkdir -p "$work"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: no GPU (nvidia-smi finds none)"
  exit 77
fi
pids=()
agent_yaml=""
prefill_flags=""
policy=kvferry
log_level="${KVFERRY_E2E_LOG_LEVEL:-info}"
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
mps_started=0
if [ "${KVFERRY_E2E_MPS:-0}" = 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY="$work/mps-pipe" CUDA_MPS_LOG_DIRECTORY="$work/mps-log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d || { echo "gpu_e2e: could not start the MPS daemon" >&2; exit 1; }
  mps_started=1
fi
stop_mps() {
  [ "$mps_started" = 1 ] && echo quit | nvidia-cuda-mps-control || true
  mps_started=0
}
trap 'stop_all; stop_mps' EXIT

wait_file() {
  for _ in $(seq 1200); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "gpu_e2e: timed out waiting for $1" >&2
  return 1
}

# cluster NAME TRANSPORT FRACTION ROLE...: an orchestrator and one agent per role on GPU 0;
# sets `port`. Called directly (not in $(...)) so the PIDs stay in this shell. Every agent's YAML
# ends with $agent_yaml; the prefill agent also gets the flags in $prefill_flags; the
# orchestrator's scheduling policy is $policy (test mode: round_robin, so that every request of a
# prefill/decode pair crosses it: kvferry's default policy serves short prompts on the decode
# agent alone).
cluster() {
  local name="$1" transport="$2" fraction="$3"
  shift 3
  "$build/orchestrator/orchestrator" --model "$model" --listen 127.0.0.1:0 --policy "$policy" \
    --log-level "$log_level" --port-file "$work/$name.port" >"$work/$name-orchestrator.log" 2>&1 &
  pids+=($!)
  wait_file "$work/$name.port"
  port="$(cat "$work/$name.port")"
  local role i=0
  for role in "$@"; do
    cat >"$work/$name-agent$i.yaml" <<YAML
transport:
  kind: $transport
engine:
  gpu: 0
  kv_blocks: 0
  gpu_memory_fraction: $fraction
  max_batch_tokens: 8192
  max_batch_sequences: 64
$agent_yaml
YAML
    local flags=() agent_env=()
    [ "$role" = prefill ] && flags=($prefill_flags)
    [ "$role" = prefill ] && [ -n "${KVFERRY_E2E_PREFILL_SM_PERCENT:-}" ] &&
      agent_env=("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$KVFERRY_E2E_PREFILL_SM_PERCENT")
    env "${agent_env[@]}" "$build/node_agent/node_agent" --config "$work/$name-agent$i.yaml" \
      --model "$model" --role "$role" --orchestrator "127.0.0.1:$port" \
      --control-address 127.0.0.1:0 --log-level "$log_level" \
      --port-file "$work/$name-agent$i.port" "${flags[@]}" >"$work/$name-agent$i.log" 2>&1 &
    pids+=($!)
    wait_file "$work/$name-agent$i.port"  # one at a time: each sizes its pools from free memory
    i=$((i + 1))
  done
  for _ in $(seq 1200); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "gpu_e2e: the $name cluster did not become healthy" >&2
  tail -n 5 "$work/$name"-*.log >&2
  return 1
}

# Greedy token ids of /v1/completions for one prompt.
complete() {
  curl -sf -m 120 "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\": \"$(basename "$model" .gguf)\", \"prompt\": \"$1\", \"max_tokens\": 32,
         \"temperature\": 0, \"return_token_ids\": true}" | jq -c '.choices[0].token_ids'
}

prompts=(
  "Once upon a time there was a little robot who lived in a big city and wanted to see the sea"
  "Once upon a time there was a little robot who lived in a big city and wanted to learn to sing"
  "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm windowsill"
  "In the beginning the universe was created. This has made a lot of people very angry"
  "Zoo"
)

# Every agent of the cluster: no lease left, no block in use.
check_clean() {
  local nodes
  nodes="$(curl -sf "http://127.0.0.1:$port/v1/nodes")"
  echo "$nodes" | jq -e '[.[] | select(.active_leases > 0 or .active_decode_seqs > 0 or
      .free_kv_blocks != .total_kv_blocks)] | length == 0' >/dev/null || {
    echo "gpu_e2e: leases or blocks left: $nodes" >&2
    return 1
  }
}

if [ "$mode" = test ]; then
  [ -f "$model" ] || "$build/model/kvferry-make-model" --shape tiny --out "$(dirname "$model")" \
    >/dev/null
  policy=round_robin
  agent_yaml=$'agent:\n  kv_checksum: true'
  cluster disaggregated cuda_ipc 0.3 prefill decode
  for p in "${prompts[@]}"; do complete "$p"; done >"$work/disaggregated.tokens"
  sleep 1
  check_clean
  stop_all
  prefill_flags="--transport-faults corrupt_rate=1,seed=4"
  cluster corrupted-tcp tcp 0.3 prefill decode
  for p in "${prompts[@]:0:2}"; do complete "$p" || true; done >"$work/corrupted-tcp.tokens"
  corruptions="$(curl -sf "http://127.0.0.1:$port/metrics" |
    awk '$1 == "kvferry_kv_corruptions_total" {print $2}')"
  stop_all
  agent_yaml=""
  prefill_flags=""
  if [ "${corruptions:-0}" = 0 ]; then
    echo "gpu_e2e: the corrupting pair's KV was never refused (corruptions: ${corruptions:-none})" >&2
    exit 1
  fi
  cluster disaggregated-tcp tcp 0.3 prefill decode
  for p in "${prompts[@]}"; do complete "$p"; done >"$work/disaggregated-tcp.tokens"
  sleep 1
  check_clean
  stop_all
  cluster colocated cuda_ipc 0.3 both
  for p in "${prompts[@]}"; do complete "$p"; done >"$work/colocated.tokens"
  sleep 1
  check_clean
  stop_all
  if ! diff <(head -n 2 "$work/colocated.tokens") "$work/corrupted-tcp.tokens"; then
    echo "gpu_e2e: with corrupted KV refused, the answers are not one both agent's" >&2
    exit 1
  fi
  for pair in disaggregated disaggregated-tcp; do
    if grep -q null "$work/$pair.tokens"; then
      echo "gpu_e2e: a request failed ($pair)" >&2
      exit 1
    fi
    if ! diff "$work/$pair.tokens" "$work/colocated.tokens"; then
      echo "gpu_e2e: $pair greedy tokens differ from one both agent's" >&2
      exit 1
    fi
  done
  echo "gpu_e2e: ${#prompts[@]} prompts, greedy tokens identical disaggregated (cuda_ipc with KV" \
    "checksums, and tcp) and colocated; $corruptions corrupted transfers refused, their answers right"
  exit 0
fi

run_load() {  # NAME WORKLOAD benchmark_client flags...
  local name="$1" workload="$2"
  shift 2
  "$build/bench/benchmark_client/benchmark_client" --base-url "http://127.0.0.1:$port" \
    --tokenizer "$model" --seed 1 --ignore-eos --result-json "$work/e2e-$name-$workload.json" \
    --goodput ttft:2000 tpot:50 "$@" >"$work/e2e-$name-$workload.txt" 2>&1 ||
    echo "gpu_e2e: benchmark_client failed for $name $workload (see $work/e2e-$name-$workload.txt)"
  tail -n 25 "$work/e2e-$name-$workload.txt"
}

# KVFERRY_E2E_WORKLOADS picks the workloads (default in1k in4k in8k shared). ttft8k: 8K-token
# prompts one at a time, two output tokens: on an otherwise idle cluster, what the KV transfer
# adds to TTFT over the prefill itself (the colocated agent's TTFT is the prefill alone).
workloads() {
  local name="$1" workload
  for workload in ${KVFERRY_E2E_WORKLOADS:-in1k in4k in8k shared}; do
    case "$workload" in
      in1k) run_load "$name" in1k --dataset random --input-len 1024 --output-len 128 \
        --num-prompts 64 --request-rate 8 --warmup-requests 4 ;;
      in4k) run_load "$name" in4k --dataset random --input-len 4096 --output-len 128 \
        --num-prompts 48 --request-rate 4 --warmup-requests 2 ;;
      in8k) run_load "$name" in8k --dataset random --input-len 8192 --output-len 128 \
        --num-prompts 32 --request-rate 2 --warmup-requests 2 ;;
      ttft8k) run_load "$name" ttft8k --dataset random --input-len 8192 --output-len 2 \
        --num-prompts 16 --max-concurrency 1 --warmup-requests 2 ;;
      shared) run_load "$name" shared --dataset shared-prefix --num-groups 4 --prefix-len 2048 \
        --prompts-per-group 12 --suffix-len 128 --output-len 128 --request-rate 8 ;;
      *) echo "gpu_e2e: unknown workload '$workload' in KVFERRY_E2E_WORKLOADS" >&2; exit 2 ;;
    esac
  done
}

# KVFERRY_E2E_CLUSTERS picks the clusters (default all three, in this order).
for name in ${KVFERRY_E2E_CLUSTERS:-disaggregated disaggregated-tcp colocated}; do
  case "$name" in
    disaggregated) cluster "$name" cuda_ipc 0.42 prefill decode ;;
    disaggregated-tcp) cluster "$name" tcp 0.42 prefill decode ;;
    colocated) cluster "$name" cuda_ipc 0.85 both ;;
    *) echo "gpu_e2e: unknown cluster '$name' in KVFERRY_E2E_CLUSTERS" >&2; exit 2 ;;
  esac
  workloads "$name"
  curl -sf "http://127.0.0.1:$port/metrics" >"$work/orchestrator-$name.metrics" || true
  if [ "$name" != colocated ]; then  # the prefill agent's per-layer transfer timing
    curl -sf "http://127.0.0.1:$(cat "$work/$name-agent0.port")/metrics" \
      >"$work/prefill-agent-$name.metrics" || true
  fi
  stop_all
done
