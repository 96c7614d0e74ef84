#!/usr/bin/env bash
# soak.sh — a bounded soak of a kvferry cluster on this machine (127.0.0.1): an orchestrator and
# 2 prefill + 2 decode agents (stories260K, tcp, a cluster secret), one prefill agent's transfers
# under the fault wrapper (lost and delayed batches), steady load from benchmark_client, and
# every --chaos-s seconds one random agent killed (kill -9, then restarted) or frozen for 3 s
# (SIGSTOP, SIGCONT). Every 10 s it samples each process's RSS and open file descriptors.
# At the end it stops the chaos and the load, waits for the cluster to go idle and reports:
# requests, errors by type, RSS and descriptors of every process over time (first, last, max),
# and the KV blocks and leases still held (leaked) by the live agents, which must be 0.
#
#   scripts/soak.sh                       20 minutes
#   scripts/soak.sh --minutes 5 --out DIR
#
# Writes DIR/summary.json (the report), DIR/samples.csv (t_s,name,pid,rss_kib,fds), the rounds'
# benchmark_client JSON and the processes' logs (default DIR: bench-results/soak-<date>).
# Exit 1 when a block or lease leaked, a process of the cluster died unasked, or no request
# completed. Needs a built tree (KVFERRY_BUILD_DIR, default build/default) and jq.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
build="${KVFERRY_BUILD_DIR:-$repo/build/default}"
minutes=20
chaos_s=30
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="${2:?--minutes needs a number}"; shift ;;
    --chaos-s) chaos_s="${2:?--chaos-s needs a number}"; shift ;;
    --out) out="${2:?--out needs a folder}"; shift ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$out" ] || out="$repo/bench-results/soak-$(date -u +%Y%m%d-%H%M%S)"
for tool in jq curl; do command -v "$tool" >/dev/null || { echo "soak.sh: $tool is missing" >&2; exit 1; }; done
orch_bin="$build/orchestrator/orchestrator"
agent_bin="$build/node_agent/node_agent"
client_bin="$build/bench/benchmark_client/benchmark_client"
for b in "$orch_bin" "$agent_bin" "$client_bin"; do
  [ -x "$b" ] || { echo "soak.sh: $b is missing: build first (cmake --build --preset default)" >&2; exit 1; }
done
model="$repo/tests/data/models/stories260K/stories260K.gguf"
mkdir -p "$out"
"$repo/scripts/make_secrets.sh" "$out/secrets" >/dev/null
secret="$out/secrets/cluster.secret"
say() { printf 'soak: %s\n' "$*"; }

declare -A pid_of=()
declare -A args_of=()
cleanup() {
  for n in "${!pid_of[@]}"; do kill -CONT "${pid_of[$n]}" 2>/dev/null || true; kill -KILL "${pid_of[$n]}" 2>/dev/null || true; done
  [ -z "${load_pid:-}" ] || kill "$load_pid" 2>/dev/null || true
}
trap cleanup EXIT

# start NAME ARGS...: the process with its log and port file.
start() {
  local name="$1"; shift
  args_of[$name]="$*"
  rm -f "$out/$name.port"
  # Its own session: freezing one process (SIGSTOP) must not make the kernel hang up the others
  # (a stopped member of a process group that becomes orphaned gets the group a SIGHUP).
  setsid "$@" --port-file "$out/$name.port" >>"$out/$name.log" 2>&1 &
  pid_of[$name]=$!
  for _ in $(seq 300); do [ -s "$out/$name.port" ] && return 0; sleep 0.1; done
  say "$name did not start: $(tail -n 5 "$out/$name.log")"
  exit 1
}

cat >"$out/orchestrator.yaml" <<'EOF'
registry:
  heartbeat_interval_ms: 200
  heartbeat_timeout_ms: 1500
EOF
cat >"$out/lossy.yaml" <<'EOF'
transport:
  op_timeout_ms: 2000
  faults:
    drop_rate: 0.02
    delay_ms: 1
    delay_jitter_ms: 3
    seed: 11
EOF
start orchestrator "$orch_bin" --config "$out/orchestrator.yaml" --model "$model" \
  --listen 127.0.0.1:0 --cluster-secret-file "$secret"
port="$(cat "$out/orchestrator.port")"
url="http://127.0.0.1:$port"
agents=(prefill0 prefill1 decode0 decode1)
start_agent() {
  local name="$1" extra=()
  [ "$name" != prefill1 ] || extra=(--config "$out/lossy.yaml")
  start "$name" "$agent_bin" "${extra[@]}" --model "$model" --role "${name%[0-9]}" --name "$name" \
    --orchestrator "127.0.0.1:$port" --control-address 127.0.0.1:0 --kv-blocks 512 \
    --cluster-secret-file "$secret"
}
for a in "${agents[@]}"; do start_agent "$a"; done
nodes() { curl -sf -H "Authorization: Bearer $(cat "$secret")" "$url/v1/nodes"; }
for _ in $(seq 300); do
  [ "$(nodes | jq '[.[] | select(.alive)] | length' 2>/dev/null || echo 0)" = 4 ] && break
  sleep 0.1
done
say "cluster up on $url; ${minutes} min of load, chaos every ${chaos_s} s; results in $out"

end=$((SECONDS + minutes * 60))
# Load: rounds of at most 60 s until the end.
(
  round=0
  while [ "$SECONDS" -lt "$end" ]; do
    round=$((round + 1))
    left=$((end - SECONDS)); [ "$left" -lt 60 ] || left=60
    "$client_bin" --base-url "$url" --tokenizer "$model" --num-prompts 100000 --input-len 64 \
      --range-ratio 0.5 --output-len 32 --ignore-eos --request-rate 20 --max-concurrency 16 \
      --timeout-s 60 --duration-limit-s "$left" --seed "$round" \
      --result-json "$out/round-$round.json" >>"$out/load.log" 2>&1 || true
  done
) &
load_pid=$!

echo "t_s,name,pid,rss_kib,fds" >"$out/samples.csv"
sample() {
  local t=$((SECONDS - start_s)) n p rss fds
  for n in orchestrator "${agents[@]}"; do
    p="${pid_of[$n]}"
    rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
    fds="$(ls "/proc/$p/fd" 2>/dev/null | wc -l)"
    echo "$t,$n,$p,${rss:-0},$fds" >>"$out/samples.csv"
  done
}
start_s=$SECONDS
next_sample=0
next_chaos=$chaos_s
kills=0
stalls=0
unasked=()
while [ "$SECONDS" -lt "$end" ]; do
  now=$((SECONDS - start_s))
  if [ "$now" -ge "$next_sample" ]; then sample; next_sample=$((now + 10)); fi
  for n in orchestrator "${agents[@]}"; do
    if ! kill -0 "${pid_of[$n]}" 2>/dev/null; then unasked+=("$n@${now}s"); [ "$n" = orchestrator ] && break 2; start_agent "$n"; fi
  done
  if [ "$now" -ge "$next_chaos" ]; then
    next_chaos=$((now + chaos_s))
    victim="${agents[$((RANDOM % ${#agents[@]}))]}"
    if [ $((RANDOM % 2)) = 0 ]; then
      kill -KILL "${pid_of[$victim]}" 2>/dev/null || true
      wait "${pid_of[$victim]}" 2>/dev/null || true
      kills=$((kills + 1))
      echo "t=${now}s kill -9 $victim" >>"$out/chaos.log"
      start_agent "$victim"
    else
      kill -STOP "${pid_of[$victim]}" 2>/dev/null || true
      sleep 3
      kill -CONT "${pid_of[$victim]}" 2>/dev/null || true
      stalls=$((stalls + 1))
      echo "t=${now}s SIGSTOP 3 s $victim" >>"$out/chaos.log"
    fi
  fi
  sleep 1
done
wait "$load_pid" || true
load_pid=""
sample

# Idle: every live agent with all blocks free (or cached) and no lease, within 30 s.
idle=""
for _ in $(seq 300); do
  idle="$(nodes | jq '[.[] | select(.alive)] | {alive: length,
    leaked_blocks: (map(.total_kv_blocks - .free_kv_blocks) | add // 0),
    leases: (map(.active_leases) | add // 0), sequences: (map(.active_decode_seqs) | add // 0)}')"
  [ "$(jq '.leaked_blocks + .leases + .sequences' <<<"$idle")" = 0 ] && break
  sleep 0.1
done
jq -s --argjson idle "$idle" --argjson kills "$kills" --argjson stalls "$stalls" \
  --arg unasked "${unasked[*]:-}" --arg minutes "$minutes" '
  {minutes: ($minutes | tonumber), agent_kills: $kills, agent_stalls: $stalls,
   unasked_deaths: ($unasked | split(" ") | map(select(. != ""))),
   requests: (map(.completed + .failed) | add), completed: (map(.completed) | add),
   failed: (map(.failed) | add),
   errors_by_type: (map(.errors_by_type // {} | to_entries) | add // [] | group_by(.key)
                    | map({key: .[0].key, value: (map(.value) | add)}) | from_entries),
   after: $idle}' "$out"/round-*.json >"$out/summary.json"
# RSS and descriptors per process name: first, last, max (a restarted agent starts again).
jq -R -s 'split("\n")[1:] | map(select(length > 0) | split(",")) |
  group_by(.[1]) | map({key: .[0][1], value: {
    rss_kib_first: (.[0][3] | tonumber), rss_kib_last: (.[-1][3] | tonumber),
    rss_kib_max: (map(.[3] | tonumber) | max),
    fds_first: (.[0][4] | tonumber), fds_last: (.[-1][4] | tonumber)}}) | from_entries' \
  "$out/samples.csv" >"$out/processes.json"
jq --slurpfile p "$out/processes.json" '. + {processes: $p[0]}' "$out/summary.json" \
  >"$out/summary.tmp" && mv "$out/summary.tmp" "$out/summary.json"
cat "$out/summary.json"
leaked="$(jq '.after.leaked_blocks + .after.leases + .after.sequences' "$out/summary.json")"
if [ "$leaked" != 0 ] || [ "${#unasked[@]}" -gt 0 ] || [ "$(jq '.completed' "$out/summary.json")" = 0 ]; then
  say "FAILED: leaked blocks/leases/sequences $leaked, unasked deaths: ${unasked[*]:-none}"
  exit 1
fi
say "ok: $(jq -r '"\(.completed) of \(.requests) requests completed, \(.agent_kills) kills, \(.agent_stalls) stalls, nothing leaked"' "$out/summary.json")"
