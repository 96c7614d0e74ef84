#!/usr/bin/env bash
# scripts/quickstart.sh as a user runs it: start prints a story and leaves the cluster up (a second
# start reports it), `stop` stops it, and no process of it is left behind.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${KVFERRY_BUILD_DIR:?set KVFERRY_BUILD_DIR}"
export KVFERRY_RUN_DIR="$(mktemp -d)"
# Exit 77 (ctest: skipped) without Node.js, which picks the free port.
command -v node >/dev/null || { echo "SKIP: node is not installed (scripts/install_deps.sh)"; exit 77; }
export KVFERRY_PORT="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
trap '"$repo/scripts/quickstart.sh" stop >/dev/null 2>&1 || true; rm -rf "$KVFERRY_RUN_DIR"' EXIT

out="$("$repo/scripts/quickstart.sh")"
echo "$out"
grep -q "^Once upon a time" <<<"$out" || { echo "FAIL: no story printed"; exit 1; }
grep -q "endpoint: http://127.0.0.1:$KVFERRY_PORT/v1" <<<"$out" || { echo "FAIL: no endpoint line"; exit 1; }
grep -q "scripts/quickstart.sh stop" <<<"$out" || { echo "FAIL: no stop line"; exit 1; }
pids="$(cat "$KVFERRY_RUN_DIR"/*.pid)"
curl -sf "http://127.0.0.1:$KVFERRY_PORT/health" >/dev/null || { echo "FAIL: not left running"; exit 1; }
# The API wants the key quickstart made (mode 600) and printed where it is.
grep -q "API key:  in $KVFERRY_RUN_DIR/api_key" <<<"$out" || { echo "FAIL: no API key line"; exit 1; }
[ "$(stat -c %a "$KVFERRY_RUN_DIR/api_key")" = 600 ] || { echo "FAIL: api_key is not mode 600"; exit 1; }
status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$KVFERRY_PORT/v1/models")"
[ "$status" = 401 ] || { echo "FAIL: /v1/models without a key answered $status"; exit 1; }
status="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$KVFERRY_RUN_DIR/api_key")" \
  "http://127.0.0.1:$KVFERRY_PORT/v1/models")"
[ "$status" = 200 ] || { echo "FAIL: /v1/models with the key answered $status"; exit 1; }
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
