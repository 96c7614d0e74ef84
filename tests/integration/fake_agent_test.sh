#!/usr/bin/env bash
# The orchestrator in front of fake_agent (a zero-compute agent speaking the real control API,
# with the cluster secret's MAC), as scripts/bench_orchestrator.sh runs them: a streamed answer
# arrives through the orchestrator and from the fake's own OpenAI endpoint, with the same text;
# benchmark_client completes its requests against both; the fake leaves the cluster on SIGTERM.
# With nginx installed, bench_orchestrator.sh itself runs one tiny round and writes its JSON.
# Checks behaviour only, never speed.
set -euo pipefail
build="${KVFERRY_BUILD_DIR:?set KVFERRY_BUILD_DIR to the build directory}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="$root/tests/data/models/stories260K/stories260K.gguf"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for log in "$work"/*.log; do
    echo "--- $log"
    tail -n 20 "$log"
  done
  exit 1
}
wait_for_file() {
  for _ in $(seq 200); do
    [ -s "$1" ] && return 0
    sleep 0.05
  done
  fail "$1 did not appear"
}

"$root/scripts/make_secrets.sh" "$work/secrets" >/dev/null
key="$(head -n 1 "$work/secrets/api_keys")"
"$build/orchestrator/orchestrator" --model "$model" --listen 127.0.0.1:0 \
  --port-file "$work/orchestrator.port" --api-keys-file "$work/secrets/api_keys" \
  --cluster-secret-file "$work/secrets/cluster.secret" >"$work/orchestrator.log" 2>&1 &
pids+=($!)
wait_for_file "$work/orchestrator.port"
orchestrator="http://127.0.0.1:$(cat "$work/orchestrator.port")"
"$build/bench/fake_agent/fake_agent" --model "$model" \
  --orchestrator "127.0.0.1:$(cat "$work/orchestrator.port")" \
  --cluster-secret-file "$work/secrets/cluster.secret" --openai-port-file "$work/backend.port" \
  >"$work/fake_agent.log" 2>&1 &
fake_pid=$!
pids+=("$fake_pid")
wait_for_file "$work/backend.port"
backend="http://127.0.0.1:$(cat "$work/backend.port")"
for _ in $(seq 200); do
  curl -sf "$orchestrator/health" >/dev/null && break
  sleep 0.05
done
curl -sf "$orchestrator/health" >/dev/null || fail "the fake agent did not register"

# A streamed 16-token answer through each path: 16 text chunks, the finish, usage, [DONE].
body='{"model":"stories260K","prompt":"Once upon a time","max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}'
curl -sfN "$orchestrator/v1/completions" -H "Authorization: Bearer $key" \
  -H 'content-type: application/json' -d "$body" >"$work/orchestrator.sse" ||
  fail "the orchestrator refused the request"
curl -sfN "$backend/v1/completions" -H 'content-type: application/json' -d "$body" \
  >"$work/backend.sse" || fail "the fake's OpenAI endpoint refused the request"
for path in orchestrator backend; do
  sse="$work/$path.sse"
  [ "$(tail -n 2 "$sse" | head -n 1)" = "data: [DONE]" ] || fail "$path: no [DONE] at the end"
  sed -n 's/^data: //p' "$sse" | grep -v '^\[DONE\]$' >"$work/$path.events"
  texts="$(jq -s '[.[] | select(.choices[0].finish_reason == null and (.choices | length) == 1)] | length' "$work/$path.events")"
  [ "$texts" = 16 ] || fail "$path: $texts text chunks, not 16"
  jq -se '[.[] | .choices[0].finish_reason // empty] == ["length"]' "$work/$path.events" >/dev/null ||
    fail "$path: the finish is not one \"length\""
  jq -se '.[-1].usage.completion_tokens == 16' "$work/$path.events" >/dev/null ||
    fail "$path: usage does not count 16 tokens"
  jq -sr '[.[] | .choices[0].text // empty] | join("")' "$work/$path.events" >"$work/$path.text"
done
cmp -s "$work/orchestrator.text" "$work/backend.text" ||
  fail "the texts differ: '$(cat "$work/orchestrator.text")' vs '$(cat "$work/backend.text")'"

# benchmark_client, the bench's load client, against both.
for target in "$orchestrator" "$backend"; do
  timeout 60 "$build/bench/benchmark_client/benchmark_client" --base-url "$target" \
    --model stories260K --api-key "$key" --tokenizer "$model" --dataset random --input-len 16 \
    --output-len 16 --max-tokens 16 --ignore-eos --num-prompts 20 --request-rate 200 \
    --result-json "$work/client.json" >"$work/client.log" 2>&1 || fail "benchmark_client against $target"
  jq -e '.completed == 20 and .failed == 0 and .total_output_tokens == 320' "$work/client.json" \
    >/dev/null || fail "benchmark_client against $target: $(jq -c '{completed, failed, errors_by_type}' "$work/client.json")"
done

# SIGTERM: the fake leaves the cluster and exits 0; the orchestrator has no node left.
kill -TERM "$fake_pid"
wait "$fake_pid" || fail "fake_agent exited with $?"
code="$(curl -s -o /dev/null -w '%{http_code}' "$orchestrator/health")"
[ "$code" = 503 ] || fail "/health answers $code after the agent left"

# The benchmark script itself, one tiny round (nginx needed; without it this part is skipped).
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  BUILD_DIR="$build" SKIP_BUILD=1 REPEAT=1 RATE=50 DURATION=1 STEP_S=1 SWEEP_START=50 \
    SWEEP_MAX=100 REFINE=0 OUT="$work/orchestrator.json" timeout 300 \
    "$root/scripts/bench_orchestrator.sh" >"$work/bench.log" 2>&1 || fail "bench_orchestrator.sh failed"
  jq -e '.targets | keys == ["direct", "nginx", "orchestrator"] and
      ([.[] | .p50_ms > 0 and .p99_ms >= .p50_ms and .max_rps >= 0] | all)' \
    "$work/orchestrator.json" >/dev/null || fail "bench_orchestrator.sh wrote $(cat "$work/orchestrator.json")"
  jq -e '[.runs[] | select(.phase == "fixed") | .failed] | add == 0' "$work/orchestrator.json" \
    >/dev/null || fail "requests failed in bench_orchestrator.sh"
else
  echo "nginx is not installed: bench_orchestrator.sh not run (scripts/install_deps.sh)"
fi
echo "PASS"
