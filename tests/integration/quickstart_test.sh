#!/usr/bin/env bash
# scripts/quickstart.sh as a user runs it: start prints a story and leaves the cluster up (a second
# start reports it), `stop` stops it, and no process of it is left behind. The cluster is secure by
# default: the API wants the key, the control plane the cluster secret (a copied registration or
# agent call without it is refused), and neither secret shows in logs, metrics or errors.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${KVFERRY_BUILD_DIR:?set KVFERRY_BUILD_DIR}"
export KVFERRY_RUN_DIR="$(mktemp -d)"
# Exit 77 (ctest: skipped) without Node.js, which picks the free port.
command -v node >/dev/null || { echo "SKIP: node is not installed (scripts/install_deps.sh)"; exit 77; }
export KVFERRY_PORT="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
trap '"$repo/scripts/quickstart.sh" stop >/dev/null 2>&1 || true; rm -rf "$KVFERRY_RUN_DIR"' EXIT

# Its messages go to stdout: shown whether or not it succeeds (a failed start once left nothing).
status=0
out="$("$repo/scripts/quickstart.sh")" || status=$?
echo "$out"
[ "$status" = 0 ] || { echo "FAIL: quickstart.sh exited $status"; exit 1; }
grep -q "^Once upon a time" <<<"$out" || { echo "FAIL: no story printed"; exit 1; }
grep -q "endpoint: http://127.0.0.1:$KVFERRY_PORT/v1" <<<"$out" || { echo "FAIL: no endpoint line"; exit 1; }
grep -q "scripts/quickstart.sh stop" <<<"$out" || { echo "FAIL: no stop line"; exit 1; }
pids="$(cat "$KVFERRY_RUN_DIR"/*.pid)"
curl -sf "http://127.0.0.1:$KVFERRY_PORT/health" >/dev/null || { echo "FAIL: not left running"; exit 1; }
# The API wants the key quickstart made (mode 600) and printed where it is.
grep -q "API key:  in $KVFERRY_RUN_DIR/api_keys" <<<"$out" || { echo "FAIL: no API key line"; exit 1; }
for f in api_keys cluster.secret; do
  [ "$(stat -c %a "$KVFERRY_RUN_DIR/$f")" = 600 ] || { echo "FAIL: $f is not mode 600"; exit 1; }
done
key="$(head -n 1 "$KVFERRY_RUN_DIR/api_keys")"
secret="$(cat "$KVFERRY_RUN_DIR/cluster.secret")"
base="http://127.0.0.1:$KVFERRY_PORT"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
status="$(code "$base/v1/models")"
[ "$status" = 401 ] || { echo "FAIL: /v1/models without a key answered $status"; exit 1; }
status="$(code -H "Authorization: Bearer $key" "$base/v1/models")"
[ "$status" = 200 ] || { echo "FAIL: /v1/models with the key answered $status"; exit 1; }
# The control plane: a registration copied from a real agent's (role both, our own address) and a
# call on an agent's control API, neither signed, are refused; the registry's page wants the
# cluster secret (an API key is a user's, not an operator's).
registration='{"name":"intruder","role":"both","control_address":"127.0.0.1:9","model_fingerprint":"00","tokenizer_hash":"00","hash_seed_id":"00","block_tokens":16,"kv_layout":{"dtype":"f32","layers":1,"kv_heads":1,"head_dim":1,"block_bytes":1},"transport":"tcp","transport_blob":"","kv_blocks":1,"max_sequence_tokens":1}'
status="$(code -H 'content-type: application/json' -d "$registration" "$base/v1/agents/register")"
[ "$status" = 401 ] || { echo "FAIL: an unsigned registration answered $status"; exit 1; }
agent_port="$(cat "$KVFERRY_RUN_DIR/decode0.port")"
status="$(code -d '{"blocks":1000000,"lease_ms":3600000}' "http://127.0.0.1:$agent_port/agent/reserve")"
[ "$status" = 401 ] || { echo "FAIL: an unsigned /agent/reserve answered $status"; exit 1; }
status="$(code -H "Authorization: Bearer $key" "$base/v1/nodes")"
[ "$status" = 401 ] || { echo "FAIL: /v1/nodes with an API key answered $status"; exit 1; }
nodes="$(curl -sf -H "Authorization: Bearer $secret" "$base/v1/nodes")" ||
  { echo "FAIL: /v1/nodes with the cluster secret"; exit 1; }
grep -q '"decode0"' <<<"$nodes" || { echo "FAIL: /v1/nodes: $nodes"; exit 1; }
grep -q intruder <<<"$nodes" && { echo "FAIL: the intruder registered: $nodes"; exit 1; }
# Neither secret in any log, metrics page or error body the cluster produced.
seen="$(cat "$KVFERRY_RUN_DIR"/*.log; curl -s "$base/metrics"; curl -s "http://127.0.0.1:$agent_port/metrics"
  curl -s "$base/v1/models"; curl -s -H "Authorization: Bearer wrong-$key" "$base/v1/models"
  curl -s -d '{}' "http://127.0.0.1:$agent_port/agent/cancel")"
for s in "$key" "$secret"; do
  if grep -qF -- "$s" <<<"$seen"; then echo "FAIL: a secret shows in logs, metrics or errors"; exit 1; fi
done
# Captured, not piped into grep -q: with pipefail, grep's early exit would SIGPIPE the script.
again="$("$repo/scripts/quickstart.sh")"
grep -q "already running" <<<"$again" || { echo "FAIL: second start: $again"; exit 1; }
"$repo/scripts/quickstart.sh" stop
for pid in $pids; do
  # A zombie (exited, not yet reaped by whoever adopted it) is stopped.
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  if [ -n "$state" ] && [ "$state" != Z ]; then
    echo "FAIL: pid $pid still running after stop (state $state)"
    exit 1
  fi
done
echo "PASS"
