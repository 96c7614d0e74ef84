#!/usr/bin/env bash
# bench_e2e.sh — end to end, aggregated vs disaggregated, in one run: the same benchmark_client
# workload against (a) one `both` agent and (b) one prefill + one decode agent over TCP, each
# behind its own orchestrator on 127.0.0.1. The aggregated run is the reference the
# disaggregated one is read against (same machine, same model, same prompts, same seed).
#
#   scripts/bench_e2e.sh [BUILD_DIR] [-- extra benchmark_client flags]
#
# BUILD_DIR defaults to build/release (the release preset: -O3), configured here if needed; the
# three binaries are brought up to date there before every run, so the numbers are the tree's.
# Defaults: stories260K, random dataset 256 input / 64 output tokens, 200 prompts at 20 req/s.
# Writes bench-results/e2e-{aggregated,disaggregated}.json (vLLM bench-serve field names) and
# prints a side-by-side table.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$repo/build/release}"
shift || true
[ "${1:-}" = "--" ] && shift
extra=("$@")
model="$repo/tests/data/models/stories260K/stories260K.gguf"
out="$repo/bench-results"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
# (pids is reset by stop_all below; cleanup covers whatever is running when the script ends.)
trap cleanup EXIT
if [ "$build" = "$repo/build/release" ] && [ ! -f "$build/build.ninja" ]; then
  (cd "$repo" && cmake --preset release >/dev/null)
fi
echo "bench_e2e: building orchestrator, node_agent and benchmark_client in $build" >&2
cmake --build "$build" --target orchestrator node_agent benchmark_client >/dev/null
for bin in orchestrator/orchestrator node_agent/node_agent bench/benchmark_client/benchmark_client; do
  [ -x "$build/$bin" ] || { echo "bench_e2e: $build/$bin is missing" >&2; exit 1; }
done
mkdir -p "$out"

wait_file() {
  for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "bench_e2e: timed out waiting for $1" >&2
  exit 1
}

# Starts an orchestrator and agents with the given roles; sets `port` to the orchestrator's.
# (Not called in $(...): the PIDs must reach the cleanup in this shell.)
cluster() {
  local name="$1"; shift
  "$build/orchestrator/orchestrator" --model "$model" --listen 127.0.0.1:0 \
    --port-file "$work/$name.port" >"$work/$name-orchestrator.log" 2>&1 &
  pids+=($!)
  wait_file "$work/$name.port"
  local role i=0
  port="$(cat "$work/$name.port")"
  for role in "$@"; do
    "$build/node_agent/node_agent" --model "$model" --role "$role" --kv-blocks 1024 \
      --orchestrator "127.0.0.1:$port" --control-address 127.0.0.1:0 \
      --port-file "$work/$name-agent$i.port" >"$work/$name-agent$i.log" 2>&1 &
    pids+=($!)
    i=$((i + 1))
  done
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "bench_e2e: $name cluster did not become healthy" >&2
  exit 1
}

run() {
  local name="$1" port="$2"
  "$build/bench/benchmark_client/benchmark_client" --base-url "http://127.0.0.1:$port" \
    --tokenizer "$model" --dataset random --input-len 256 --output-len 64 --num-prompts 200 \
    --request-rate 20 --seed 1 --ignore-eos --result-json "$out/e2e-$name.json" "${extra[@]}" \
    >"$work/$name.txt" 2>&1
}

# One cluster at a time, so the two never share the machine.
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
port=""
cluster aggregated both
run aggregated "$port"
stop_all
cluster disaggregated prefill decode
run disaggregated "$port"
stop_all

jq -rn --slurpfile a "$out/e2e-aggregated.json" --slurpfile d "$out/e2e-disaggregated.json" '
  def row($k; $name): "\($name)\t\($a[0][$k] * 100 | round / 100)\t\($d[0][$k] * 100 | round / 100)";
  "metric\taggregated (1 both)\tdisaggregated (1P+1D, tcp)",
  row("completed"; "completed"),
  row("request_throughput"; "requests/s"),
  row("output_throughput"; "output tok/s"),
  row("median_ttft_ms"; "TTFT p50 ms"),
  row("p99_ttft_ms"; "TTFT p99 ms"),
  row("median_tpot_ms"; "TPOT p50 ms"),
  row("p99_tpot_ms"; "TPOT p99 ms"),
  row("median_itl_ms"; "ITL p50 ms"),
  row("median_e2el_ms"; "E2E p50 ms")' | column -t -s $'\t'
