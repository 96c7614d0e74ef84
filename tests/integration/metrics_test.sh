#!/usr/bin/env bash
# The metrics stack end to end with Debian's Prometheus: the rule files and the scrape config pass
# promtool; a real cluster (orchestrator + 1 prefill + 1 decode agent on 127.0.0.1) serves
# /metrics that promtool's linter accepts; Prometheus scrapes it every second while
# benchmark_client drives load; then EVERY expression of every Grafana dashboard panel (and every
# templating query) and every alert rule returns data through Prometheus' HTTP API.
#
# How expressions are checked:
#  - dashboard exprs come from dashboards/grafana/*.json (jq); Grafana's variables are replaced:
#    $__rate_interval / $__interval by 2m (a window that covers the whole load), $instance by the
#    regex .+ (every agent). Any other "$" left is a failure. Each must return at least one
#    series with a finite value.
#  - alert exprs come from Prometheus itself (GET /api/v1/rules: what it loaded from the copy of
#    dashboards/alerts.yml) and each rule must have evaluated with health "ok". Alert exprs are
#    conditions ("X > 2") that rightly return nothing on a healthy cluster, so every
#    "<op> <number literal>" is removed (alerts.yml keeps its thresholds as plain literals for
#    this) and what is left — the value the alert compares — must return at least one series.
#
# Env: KVFERRY_BIN_DIR (build dir), KVFERRY_MODEL (stories260K GGUF); KVFERRY_KEEP_LOGS=1 keeps
# the temp dir. Loopback only; every process it starts is stopped on exit.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${KVFERRY_BIN_DIR:?set KVFERRY_BIN_DIR to the build directory}"
: "${KVFERRY_MODEL:?set KVFERRY_MODEL to the GGUF model}"
orchestrator_bin="$KVFERRY_BIN_DIR/orchestrator/orchestrator"
agent_bin="$KVFERRY_BIN_DIR/node_agent/node_agent"
bench_bin="$KVFERRY_BIN_DIR/bench/benchmark_client/benchmark_client"
dashboards="$repo/dashboards"
rate_window=2m

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Exit 77 (ctest: skipped) on a host without the tools, e.g. a GPU machine that cannot install
# packages; scripts/install_deps.sh installs them everywhere CI runs.
for tool in prometheus promtool jq curl node; do
  command -v "$tool" >/dev/null || {
    echo "SKIP: '$tool' is not installed (scripts/install_deps.sh installs it)"
    exit 77
  }
done
for bin in "$orchestrator_bin" "$agent_bin" "$bench_bin"; do
  [ -x "$bin" ] || fail "$bin is not built"
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/kvferry-metrics-XXXXXX")"
pids=()
cleanup() {
  local status=$?
  trap - EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for log in "$tmp"/*.log; do
      [ -f "$log" ] && { echo "--- $(basename "$log") (last lines) ---"; tail -n 15 "$log"; }
    done
  fi
  if [ -n "${KVFERRY_KEEP_LOGS:-}" ]; then echo "logs kept in $tmp"; else rm -rf "$tmp"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls "$@" (a command) every 0.1 s until it succeeds or $1 seconds pass.
wait_for() {
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${seconds} s waiting for $what"
    sleep 0.1
  done
}
port_of() { [ -s "$1" ] && cat "$1"; }
free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

echo "== promtool: rules, rule unit tests, config"
promtool check rules "$dashboards/alerts.yml"
promtool test rules "$dashboards/alerts_test.yml"
promtool check config "$dashboards/prometheus.yml"

echo "== cluster: orchestrator + prefill + decode on 127.0.0.1"
# Split every request, so transfers happen: round_robin always pairs a prefill and a decode node
# (the kvferry policy, even with kvferry_colocate_max_tokens 0, serves a request on the decode
# node alone when the prefill queue is deeper than kvferry_colocate_queue_s: 9 of 60 under ASan).
cat >"$tmp/orchestrator.yaml" <<'EOF'
registry:
  heartbeat_interval_ms: 100
  heartbeat_timeout_ms: 1500
scheduler:
  policy: round_robin
EOF
"$orchestrator_bin" --config "$tmp/orchestrator.yaml" --model "$KVFERRY_MODEL" \
  --listen 127.0.0.1:0 --port-file "$tmp/orchestrator.port" >"$tmp/orchestrator.log" 2>&1 &
pids+=($!)
wait_for "the orchestrator's port file" 30 port_of "$tmp/orchestrator.port"
orchestrator_port="$(cat "$tmp/orchestrator.port")"
base="http://127.0.0.1:$orchestrator_port"
for role in prefill decode; do
  "$agent_bin" --model "$KVFERRY_MODEL" --role "$role" --name "${role}0" \
    --orchestrator "127.0.0.1:$orchestrator_port" --control-address 127.0.0.1:0 \
    --kv-blocks 256 --port-file "$tmp/$role.port" >"$tmp/$role.log" 2>&1 &
  pids+=($!)
done
wait_for "the prefill agent's port file" 30 port_of "$tmp/prefill.port"
wait_for "the decode agent's port file" 30 port_of "$tmp/decode.port"
prefill_port="$(cat "$tmp/prefill.port")"
decode_port="$(cat "$tmp/decode.port")"
wait_for "the cluster to be healthy" 30 curl -sf --max-time 2 "$base/health"

echo "== /metrics: content type and promtool's lint"
for port in "$orchestrator_port" "$prefill_port" "$decode_port"; do
  headers="$(curl -sf --max-time 5 -D - -o "$tmp/metrics-$port.txt" "http://127.0.0.1:$port/metrics")"
  grep -qi '^content-type: text/plain; version=0.0.4' <<<"$headers" ||
    fail "GET /metrics on port $port: wrong content type: $headers"
  promtool check metrics <"$tmp/metrics-$port.txt" ||
    fail "promtool check metrics rejects port $port's /metrics"
done
grep -q '^kvferry_node_up{' "$tmp/metrics-$orchestrator_port.txt" ||
  fail "the orchestrator's /metrics has no kvferry_node_up"
grep -q '^kvferry_agent_kv_blocks{' "$tmp/metrics-$decode_port.txt" ||
  fail "the agent's /metrics has no kvferry_agent_kv_blocks"

echo "== prometheus: scraping every second"
# A copy of dashboards/prometheus.yml with this cluster's ports and 1 s intervals.
mkdir -p "$tmp/prometheus"
cp "$dashboards/alerts.yml" "$tmp/prometheus/alerts.yml"
sed -e "s/\"127.0.0.1:8000\"/\"127.0.0.1:$orchestrator_port\"/" \
  -e "s/\"127.0.0.1:9101\"/\"127.0.0.1:$prefill_port\"/" \
  -e "s/\"127.0.0.1:9102\"/\"127.0.0.1:$decode_port\"/" \
  -e 's/^\(  scrape_interval:\).*/\1 1s/' -e 's/^\(  scrape_timeout:\).*/\1 1s/' \
  -e 's/^\(  evaluation_interval:\).*/\1 1s/' \
  "$dashboards/prometheus.yml" >"$tmp/prometheus/prometheus.yml"
for port in "$orchestrator_port" "$prefill_port" "$decode_port"; do
  grep -q "\"127.0.0.1:$port\"" "$tmp/prometheus/prometheus.yml" ||
    fail "could not put port $port into the copy of dashboards/prometheus.yml (its targets changed?)"
done
promtool check config "$tmp/prometheus/prometheus.yml"

prometheus_port=""
for _ in 1 2 3; do
  port="$(free_port)"
  prometheus --config.file="$tmp/prometheus/prometheus.yml" \
    --storage.tsdb.path="$tmp/prometheus/data" --web.listen-address="127.0.0.1:$port" \
    --log.level=warn >"$tmp/prometheus.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  deadline=$((SECONDS + 30))
  until curl -sf --max-time 2 "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || break
    [ "$SECONDS" -lt "$deadline" ] || fail "prometheus did not become ready in 30 s"
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    prometheus_port="$port"
    break
  fi
  echo "prometheus exited (port $port taken?); retrying"
done
[ -n "$prometheus_port" ] || fail "prometheus would not start: $(tail -n 5 "$tmp/prometheus.log")"
api="http://127.0.0.1:$prometheus_port/api/v1"

targets_up() {
  [ "$(curl -sf --max-time 2 "$api/targets?state=active" |
    jq '[.data.activeTargets[] | select(.health == "up")] | length')" = 3 ]
}
wait_for "Prometheus to scrape all 3 targets" 30 targets_up

echo "== load: benchmark_client, plus a few refused requests"
timeout 120 "$bench_bin" --base-url "$base" --tokenizer "$KVFERRY_MODEL" --dataset random \
  --input-len 40 --output-len 32 --num-prompts 60 --request-rate 20 >"$tmp/bench.log" 2>&1 ||
  fail "benchmark_client failed: $(tail -n 20 "$tmp/bench.log")"
grep -E "Successful requests|Failed requests" "$tmp/bench.log" || true
# Errors for the error panels: a malformed body (400) and an unknown model (404).
for body in '{not json' '{"model":"no-such-model","prompt":"hi","max_tokens":1}'; do
  status="$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -d "$body" "$base/v1/completions")"
  case "$status" in 4??) ;; *) fail "a bad request got HTTP $status, not 4xx" ;; esac
done

query() { # prints the JSON answer of an instant query
  curl -sf --max-time 10 "$api/query" --data-urlencode "query=$1"
}
scraped_all() {
  [ "$(query 'sum(kvferry_requests_total{status="200"})' | jq -r '.data.result[0].value[1] // 0')" -ge 60 ] &&
    [ "$(query 'sum(kvferry_requests_total{status=~"4.."})' | jq -r '.data.result[0].value[1] // 0')" -ge 2 ]
}
wait_for "Prometheus to see the 60 requests and the 2 refused ones" 30 scraped_all
sleep 3 # a few more scrapes after the load, so every rate has its last points

failures=0
checked=0
# check EXPR WHAT [finite]: the query must succeed and return at least one series (with a finite
# value when asked).
check() {
  local expr="$1" what="$2" finite="${3:-}" answer count
  checked=$((checked + 1))
  if ! answer="$(query "$expr")"; then
    echo "  FAIL $what: the query failed: $expr"
    failures=$((failures + 1))
    return
  fi
  count="$(jq '.data.result | length' <<<"$answer")"
  if [ -n "$finite" ]; then
    count="$(jq '[.data.result[] | .value[1] | select(. != "NaN" and . != "+Inf" and . != "-Inf")] | length' <<<"$answer")"
  fi
  if [ "$count" -eq 0 ]; then
    echo "  FAIL $what: no ${finite:+finite }series: $expr"
    failures=$((failures + 1))
  else
    echo "  ok   $what ($count series)"
  fi
}

echo "== every dashboard panel expression"
for board in "$dashboards"/grafana/*.json; do
  name="$(basename "$board")"
  while IFS=$'\t' read -r title expr; do
    expr="${expr//\$__rate_interval/$rate_window}"
    expr="${expr//\$__interval/$rate_window}"
    expr="${expr//\$instance/.+}"
    if [[ "$expr" == *'$'* ]]; then
      echo "  FAIL $name / $title: an unknown template variable: $expr"
      failures=$((failures + 1))
      continue
    fi
    check "$expr" "$name / $title" finite
  done < <(jq -r '.panels[] | select(.type != "row") | .title as $t | .targets[] | [$t, .expr] | @tsv' "$board")
  # Templating queries: each must be label_values(METRIC, LABEL) and list values.
  while IFS=$'\t' read -r variable definition; do
    checked=$((checked + 1))
    if ! [[ "$definition" =~ ^label_values\(([^,]+),\ *([^\)]+)\)$ ]]; then
      echo "  FAIL $name / \$$variable: not a label_values(METRIC, LABEL) query: $definition"
      failures=$((failures + 1))
      continue
    fi
    metric="${BASH_REMATCH[1]}"
    label="${BASH_REMATCH[2]}"
    values="$(curl -sf --max-time 10 -G "$api/label/$label/values" --data-urlencode "match[]=$metric" |
      jq '.data | length')" || values=0
    if [ "$values" -eq 0 ]; then
      echo "  FAIL $name / \$$variable: $definition lists nothing"
      failures=$((failures + 1))
    else
      echo "  ok   $name / \$$variable: $definition ($values values)"
    fi
  done < <(jq -r '.templating.list[] | select(.type == "query") | [.name, .definition] | @tsv' "$board")
done

echo "== every alert rule (as loaded by Prometheus), its comparison removed"
rules="$(curl -sf --max-time 10 "$api/rules")"
expected="$(promtool check rules "$dashboards/alerts.yml" | sed -n 's/.*SUCCESS: \([0-9]*\) rules found.*/\1/p')"
loaded="$(jq '[.data.groups[].rules[]] | length' <<<"$rules")"
[ "$loaded" = "$expected" ] || fail "Prometheus loaded $loaded rules, alerts.yml has $expected"
while IFS=$'\t' read -r alert health expr; do
  if [ "$health" != "ok" ]; then
    echo "  FAIL $alert: rule health is '$health'"
    failures=$((failures + 1))
  fi
  value="$(sed -E 's/ *(==|!=|>=|<=|>|<) *(bool +)?-?[0-9][0-9.eE+-]*//g' <<<"$expr")"
  [ "$value" != "$expr" ] || echo "  note $alert: no comparison with a literal to remove"
  check "$value" "alert $alert"
done < <(jq -r '.data.groups[].rules[] | [.name, .health, .query] | @tsv' <<<"$rules")

echo "== the numbers agree with the load (60 split requests, 2 refused)"
# expect EXPR JQ_TEST: every series of EXPR must satisfy JQ_TEST (on its value as a number).
expect() {
  local expr="$1" test="$2" answer
  checked=$((checked + 1))
  answer="$(query "$expr")" || answer='{"data":{"result":[]}}'
  if jq -e "(.data.result | length) > 0 and all(.data.result[]; .value[1] | tonumber | $test)" \
    <<<"$answer" >/dev/null; then
    echo "  ok   $expr: $(jq -c '[.data.result[].value[1]]' <<<"$answer")"
  else
    echo "  FAIL $expr should be $test: $(jq -c '[.data.result[] | [.metric, .value[1]]]' <<<"$answer")"
    failures=$((failures + 1))
  fi
}
expect 'sum(kvferry_requests_total{status="200"})' '. == 60'
expect 'sum(kvferry_requests_total{status=~"4.."})' '. == 2'
expect 'sum(kvferry_request_ttft_seconds_count)' '. == 60'
expect 'sum by (phase) (kvferry_request_phase_seconds_count)' '. == 60'
expect 'sum(kvferry_agent_requests_total{kind="prefill", outcome="ok"})' '. == 60'
expect 'sum(kvferry_agent_requests_total{kind="reserve", outcome="ok"})' '. == 60'
expect 'sum(kvferry_agent_transfer_bytes_total)' '. > 0'
expect 'sum(kvferry_agent_transfer_errors_total)' '. == 0'
expect 'sum(kvferry_generated_tokens_total)' '. >= 60'
expect 'sum(kvferry_node_up)' '. == 2'
expect 'sum by (instance) (kvferry_agent_kv_blocks)' '. == 256'

echo "== $checked checks, $failures failed"
[ "$failures" -eq 0 ] || fail "$failures of $checked metric checks failed"
echo "PASS"
