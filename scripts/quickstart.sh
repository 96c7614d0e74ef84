#!/usr/bin/env bash
# quickstart.sh — a kvferry cluster on this machine in one command: builds if needed, starts an
# orchestrator and one prefill + one decode agent on 127.0.0.1 serving the stories260K model over
# the TCP transport, waits until it is ready, sends one chat request, prints the story and leaves
# the cluster running. Secure by default: the first start makes (scripts/make_secrets.sh) the API
# key ($run/api_keys) and the cluster secret that signs every orchestrator ↔ agent call
# ($run/cluster.secret), both mode 600; the usage lines say where they are and how to use them.
#
#   scripts/quickstart.sh          start (or report the running cluster)
#   scripts/quickstart.sh stop     stop it (SIGTERM by PID file, then SIGKILL after 20 s)
#
# Environment: KVFERRY_PORT (default 8000), KVFERRY_BUILD_DIR (default build/default),
# KVFERRY_RUN_DIR (PID files and logs; default .kvferry-quickstart in the repository).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${KVFERRY_PORT:-8000}"
build="${KVFERRY_BUILD_DIR:-$repo/build/default}"
run="${KVFERRY_RUN_DIR:-$repo/.kvferry-quickstart}"
model="$repo/tests/data/models/stories260K/stories260K.gguf"
orchestrator="$build/orchestrator/orchestrator"
agent="$build/node_agent/node_agent"
names=(orchestrator prefill0 decode0)

say() { printf 'quickstart: %s\n' "$*"; }

# The PID in $run/NAME.pid if that process is alive and is the binary we started.
live_pid() {
  local file="$run/$1.pid" pid
  [ -f "$file" ] || return 1
  pid="$(cat "$file")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")" || return 1
  [[ "$cmdline" == *"--port-file $run/$1.port"* ]] || return 1
  echo "$pid"
}

# Whether PID is a running process (a zombie, exited but not yet reaped, does not count).
running() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

stop_all() {
  local name pid
  local -a pids=()
  for name in "${names[@]}"; do
    if pid="$(live_pid "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$name:$pid")
    fi
  done
  local entry
  for entry in "${pids[@]}"; do
    name="${entry%%:*}"
    pid="${entry#*:}"
    for _ in $(seq 200); do
      running "$pid" || break
      sleep 0.1
    done
    if running "$pid"; then
      say "$name (pid $pid) did not stop within 20 s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for name in "${names[@]}"; do rm -f "$run/$name.pid" "$run/$name.port"; done
  if [ "${#pids[@]}" -gt 0 ]; then say "stopped"; else say "nothing was running"; fi
}

print_usage_lines() {
  say "endpoint: http://127.0.0.1:$port/v1   (model id: stories260K)"
  say "API key:  in $run/api_keys; clients send it as 'Authorization: Bearer <key>'"
  say "          (OpenAI clients: export OPENAI_API_KEY=\$(cat $run/api_keys))"
  say "stream:   curl -N http://127.0.0.1:$port/v1/chat/completions -H 'content-type: application/json' \\"
  say "            -H \"Authorization: Bearer \$(cat $run/api_keys)\" \\"
  say "            -d '{\"model\":\"stories260K\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}]}'"
  say "nodes:    curl -H \"Authorization: Bearer \$(cat $run/cluster.secret)\" http://127.0.0.1:$port/v1/nodes"
  say "          (the cluster secret signs the orchestrator's and agents' calls to each other)"
  say "logs:     $run/*.log"
  say "stop:     scripts/quickstart.sh stop"
}

case "${1:-start}" in
  stop) stop_all; exit 0 ;;
  start) ;;
  -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: scripts/quickstart.sh [start|stop]" >&2; exit 2 ;;
esac

mkdir -p "$run"
if pid="$(live_pid orchestrator)"; then
  say "a cluster is already running (orchestrator pid $pid)"
  print_usage_lines
  exit 0
fi

for tool in cmake curl jq; do
  command -v "$tool" >/dev/null || { say "$tool is missing: run scripts/install_deps.sh"; exit 1; }
done
if [ ! -x "$orchestrator" ] || [ ! -x "$agent" ]; then
  say "building orchestrator and node_agent in $build (a few minutes the first time)"
  if [ "$build" = "$repo/build/default" ]; then
    cmake --preset default -S "$repo" >/dev/null
  else
    cmake -S "$repo" -B "$build" -G Ninja >/dev/null
  fi
  cmake --build "$build" --target orchestrator node_agent
fi

# Starts NAME in the background with its log, PID file and port file.
start() {
  local name="$1"; shift
  rm -f "$run/$name.port"
  nohup "$@" --port-file "$run/$name.port" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

fail() {
  say "$1"
  for name in "${names[@]}"; do
    [ -f "$run/$name.log" ] && { echo "--- $name.log (last lines) ---"; tail -n 15 "$run/$name.log"; }
  done
  stop_all >/dev/null
  exit 1
}

# Polls until CHECK succeeds or SECONDS pass.
wait_for() {
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${seconds} s waiting for $what"
    for name in "${names[@]}"; do
      if [ -f "$run/$name.pid" ] && ! live_pid "$name" >/dev/null; then
        fail "$name exited while waiting for $what"
      fi
    done
    sleep 0.1
  done
}

# The API key and the cluster secret: made once, kept between starts, readable by this user only.
"$repo/scripts/make_secrets.sh" "$run" >/dev/null
key="$(head -n 1 "$run/api_keys")"
start orchestrator "$orchestrator" --model "$model" --listen "127.0.0.1:$port" \
  --api-keys-file "$run/api_keys" --cluster-secret-file "$run/cluster.secret"
wait_for "the orchestrator to listen on 127.0.0.1:$port" 30 test -s "$run/orchestrator.port"
for role in prefill decode; do
  start "${role}0" "$agent" --model "$model" --role "$role" --name "${role}0" \
    --orchestrator "127.0.0.1:$port" --control-address 127.0.0.1:0 \
    --cluster-secret-file "$run/cluster.secret"
done
# /health turns 200 once a decode agent is up (it serves whole requests alone); wait for both.
both_registered() {
  local body
  body="$(curl -sf "http://127.0.0.1:$port/health")" || return 1
  [[ $body == *'"prefill_nodes":'[1-9]* && $body == *'"decode_nodes":'[1-9]* ]]
}
wait_for "/health (one prefill and one decode agent registered)" 60 both_registered
say "cluster ready: orchestrator + prefill0 + decode0"

request='{"model":"stories260K","max_tokens":200,"temperature":0,
  "messages":[{"role":"user","content":"Once upon a time"}]}'
response="$(curl -sS "http://127.0.0.1:$port/v1/chat/completions" \
  -H 'content-type: application/json' -H "Authorization: Bearer $key" -d "$request")" ||
  fail "the chat request failed"
story="$(jq -er '.choices[0].message.content' <<<"$response")" ||
  fail "unexpected answer: $response"
echo
echo "Once upon a time$story"
echo
jq -r '"quickstart: \(.usage.prompt_tokens) prompt + \(.usage.completion_tokens) generated tokens"' \
  <<<"$response"
print_usage_lines
