#!/usr/bin/env bash
# One measurement of the orchestrator's own cost (issue #19), from the repository root:
#
#   ORCH=… FAKE=… CLIENT=… RATE=3000 N=9000 results/orchestrator/2026-12-07-ab/measure.sh
#
# Starts an orchestrator and a fake_agent (bench/fake_agent) on 127.0.0.1, sends N streamed
# 16-token completions of 32-token prompts at RATE req/s (benchmark_client, a new connection per
# request), and prints the orchestrator's CPU time (user + system, /proc) per request, the
# fake's, and the client's p50/p99. PSTAT="-e EVENTS" also counts perf events in the
# orchestrator for PSLEEP seconds (e.g. the uprobes `perf probe -x libc.so.6 malloc` makes,
# raw_syscalls:sys_enter), written to $WORK/pstat.txt. WORK (default /tmp/kvferry-measure) holds
# the logs.
set -u
orch=${ORCH:-build/default/orchestrator/orchestrator}
fake=${FAKE:-build/default/bench/fake_agent/fake_agent}
client=${CLIENT:-build/default/bench/benchmark_client/benchmark_client}
w=${WORK:-/tmp/kvferry-measure}
n=${N:-2000}
model=tests/data/models/stories260K/stories260K.gguf
rm -rf "$w"; mkdir -p "$w"; scripts/make_secrets.sh "$w/secrets" >/dev/null
key=$(head -n1 "$w/secrets/api_keys")
"$orch" --model $model --listen 127.0.0.1:0 --port-file "$w/o.port" --api-keys-file "$w/secrets/api_keys" \
  --cluster-secret-file "$w/secrets/cluster.secret" > "$w/orchestrator.log" 2>&1 &
op=$!
for _ in $(seq 100); do [ -s "$w/o.port" ] && break; sleep 0.05; done
port=$(cat "$w/o.port")
"$fake" --model $model --orchestrator 127.0.0.1:$port --cluster-secret-file "$w/secrets/cluster.secret" \
  --openai-port-file "$w/b.port" > "$w/fake.log" 2>&1 &
fp=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/health >/dev/null && break; sleep 0.05; done
name=$(curl -sf -H "Authorization: Bearer $key" http://127.0.0.1:$port/v1/models | jq -r '.data[0].id')
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
o0=$(ticks $op); f0=$(ticks $fp)
if [ -n "${PSTAT:-}" ]; then perf stat $PSTAT -p $op -o "$w/pstat.txt" -- sleep "${PSLEEP:-10}" & pp=$!; fi
"$client" --base-url http://127.0.0.1:$port --model "$name" --api-key "$key" --tokenizer $model \
  --dataset random --input-len 32 --output-len 16 --max-tokens 16 --ignore-eos --num-prompts "$n" \
  --request-rate "${RATE:-200}" --seed 1 --warmup-requests 10 --timeout-s 10 --duration-limit-s 60 \
  --percentiles 50,99 > "$w/client.log" 2>&1
o1=$(ticks $op); f1=$(ticks $fp)
[ -n "${PSTAT:-}" ] && wait $pp
kill $op $fp; wait 2>/dev/null
hz=$(getconf CLK_TCK)
echo "orchestrator $(( (o1 - o0) * 1000000 / hz / (n + 10) )) us/request," \
  "fake_agent $(( (f1 - f0) * 1000000 / hz / (n + 10) )) us/request," \
  "p50 $(awk '/P50 E2EL/ {print $4}' "$w/client.log") ms, p99 $(awk '/P99 E2EL/ {print $4}' "$w/client.log") ms"
