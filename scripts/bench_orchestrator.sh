#!/usr/bin/env bash
# What the orchestrator costs, against a plain reverse proxy in front of the same backend, in the
# same run, with the same client (DESIGN.md §7, issue #19).
#
#   scripts/bench_orchestrator.sh            # REPEAT=3 rounds, about 10 minutes on 2 cores
#   REPEAT=1 STEP_S=2 scripts/bench_orchestrator.sh
#
# One backend: fake_agent (bench/fake_agent/), a node agent that computes nothing. It registers
# with a real orchestrator as a `both` agent (the agent's own control API, heartbeats and the
# cluster secret's MAC) and answers /agent/generate at once with TOKENS tokens; it also serves
# the same answer itself as a streamed POST /v1/completions (SSE, rendered by the orchestrator's
# renderer: TOKENS chunks, the finish and usage chunks, [DONE]). Three targets, all on
# 127.0.0.1:
#   direct        benchmark_client → fake_agent's /v1/completions (no proxy: the baseline)
#   nginx         benchmark_client → nginx (Debian's package, NGINX_WORKERS workers, upstream
#                 keepalive, proxy_buffering off) → fake_agent's /v1/completions
#   orchestrator  benchmark_client → orchestrator (API key, tokenizer, scheduler, admission) →
#                 fake_agent's control API (/agent/generate, NDJSON, MAC-signed)
# Both proxies log one line per request (nginx's access log, the orchestrator's info line).
#
# Each round (REPEAT rounds; the targets' order rotates every round) measures, with
# benchmark_client's open-loop Poisson arrivals (the same seed, so the same schedule for every
# target) and a fresh connection per request:
#   1. each target at RATE requests/s for DURATION s: p50 and p99 of the whole streamed answer
#      (send → [DONE], "E2EL"); "added" = a proxy's figure minus direct's of the same round;
#   2. a rate sweep, the targets interleaved step by step: rates SWEEP_START, ×2, ×2, … up to
#      SWEEP_MAX, then REFINE bisection steps (geometric) between the last rate that passed and
#      the first that failed, STEP_S seconds each. A rate passes when p99 < SLO_MS, no request
#      failed and the client achieved at least 90% of the rate. The highest passing rate is the
#      target's "max req/s".
# Every figure is the median over the rounds. During the fixed-rate runs the script also reads
# the CPU time (user + system, /proc) that the orchestrator, fake_agent and nginx spent, per
# request: "server CPU" is the sum for the processes a target's requests go through (direct:
# fake_agent; nginx: nginx and fake_agent; orchestrator: orchestrator and fake_agent). With every
# process on the same cores, the highest rate follows the CPU a request costs in all of them, the
# client's included. Prints the table and writes bench-results/orchestrator.json: {"rounds",
# "config", "targets": {T: {"p50_ms", "p99_ms", "added_p50_ms", "added_p99_ms", "max_rps",
# "server_cpu_us_per_request", and each round's samples}}, "runs": [every measurement, with its
# cpu_us_per_request per process]}.
#
# Environment: BUILD_DIR (default build/release, configured with the release preset if needed;
# orchestrator, fake_agent and benchmark_client are brought up to date there with
# `nice -n 19 cmake --build … -j1` unless SKIP_BUILD=1), REPEAT (3), RATE (200), DURATION (5),
# TOKENS (16), INPUT_LEN (prompt tokens, 32), SLO_MS (50), SWEEP_START (100), SWEEP_MAX (12800),
# STEP_S (3), REFINE (3), NGINX_WORKERS (auto: one per core, as Debian's own config), MODEL
# (stories260K; only its tokenizer and identity are used), OUT (bench-results/orchestrator.json),
# KEEP_WORK=1 keeps the logs' directory.
# Needs nginx, jq and curl (scripts/install_deps.sh). Every server binds 127.0.0.1; every
# measurement is bounded in requests and time.
set -euo pipefail

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "bench_orchestrator.sh: no arguments (settings are environment variables; see --help)" >&2
    exit 2
    ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${BUILD_DIR:-build/release}"
repeat="${REPEAT:-3}"
rate="${RATE:-200}"
duration="${DURATION:-5}"
tokens="${TOKENS:-16}"
input_len="${INPUT_LEN:-32}"
slo_ms="${SLO_MS:-50}"
sweep_start="${SWEEP_START:-100}"
sweep_max="${SWEEP_MAX:-12800}"
step_s="${STEP_S:-3}"
refine="${REFINE:-3}"
workers="${NGINX_WORKERS:-auto}"
model="${MODEL:-tests/data/models/stories260K/stories260K.gguf}"
out="${OUT:-bench-results/orchestrator.json}"
for tool in nginx jq curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
    { echo "bench_orchestrator.sh: $tool missing: run scripts/install_deps.sh" >&2; exit 1; }
done
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "== building orchestrator, fake_agent and benchmark_client in $build"
  if [ "$build" = build/release ] && [ ! -f "$build/build.ninja" ]; then
    cmake --preset release >/dev/null
  fi
  nice -n 19 cmake --build "$build" -j1 --target orchestrator fake_agent benchmark_client >/dev/null
fi
orchestrator="$build/orchestrator/orchestrator"
fake_agent="$build/bench/fake_agent/fake_agent"
client="$build/bench/benchmark_client/benchmark_client"
for bin in "$orchestrator" "$fake_agent" "$client"; do
  [ -x "$bin" ] || { echo "bench_orchestrator.sh: $bin is not built" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

pick_port() { # a free TCP port on 127.0.0.1
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}
wait_for_file() { # FILE SECONDS
  for _ in $(seq $(($2 * 20))); do
    [ -s "$1" ] && return 0
    sleep 0.05
  done
  echo "bench_orchestrator.sh: $1 did not appear" >&2
  return 1
}
die_with_log() { # MESSAGE LOG
  echo "bench_orchestrator.sh: $1" >&2
  tail -n 20 "$2" >&2 || true
  exit 1
}

# ---- the processes ----
"$root/scripts/make_secrets.sh" "$work/secrets" >/dev/null
api_key="$(head -n 1 "$work/secrets/api_keys")"
"$orchestrator" --model "$model" --listen 127.0.0.1:0 --port-file "$work/orchestrator.port" \
  --api-keys-file "$work/secrets/api_keys" --cluster-secret-file "$work/secrets/cluster.secret" \
  >"$work/orchestrator.log" 2>&1 &
pids+=($!)
orchestrator_pid=$!
wait_for_file "$work/orchestrator.port" 30 || die_with_log "the orchestrator did not start" "$work/orchestrator.log"
orchestrator_port="$(cat "$work/orchestrator.port")"
"$fake_agent" --model "$model" --orchestrator "127.0.0.1:$orchestrator_port" \
  --cluster-secret-file "$work/secrets/cluster.secret" --openai-port-file "$work/backend.port" \
  >"$work/fake_agent.log" 2>&1 &
pids+=($!)
fake_pid=$!
wait_for_file "$work/backend.port" 30 || die_with_log "fake_agent did not start" "$work/fake_agent.log"
backend_port="$(cat "$work/backend.port")"
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$orchestrator_port/health" >/dev/null && break
  sleep 0.05
done
curl -sf "http://127.0.0.1:$orchestrator_port/health" >/dev/null ||
  die_with_log "the fake agent did not register" "$work/fake_agent.log"

# nginx as any user: a generated config, every path in the work directory, no daemon.
nginx_port="$(pick_port)"
mkdir -p "$work/nginx"
[ "$(id -u)" -eq 0 ] && chmod 755 "$work" "$work/nginx" # root's workers run as nobody
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log $work/nginx/access.log;
  client_body_temp_path $work/nginx/client_body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream fake_backend {
    server 127.0.0.1:$backend_port;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://fake_backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
  >"$work/nginx/stdout.log" 2>&1 &
pids+=($!)
nginx_pid=$!
for _ in $(seq 200); do
  curl -s -o /dev/null "http://127.0.0.1:$nginx_port/v1/models" && break
  sleep 0.05
done
curl -sf -o /dev/null "http://127.0.0.1:$nginx_port/v1/models" ||
  die_with_log "nginx did not start" "$work/nginx/error.log"

declare -A url=(
  [direct]="http://127.0.0.1:$backend_port"
  [nginx]="http://127.0.0.1:$nginx_port"
  [orchestrator]="http://127.0.0.1:$orchestrator_port"
)
targets=(direct nginx orchestrator)
model_name="$(curl -sf -H "Authorization: Bearer $api_key" "http://127.0.0.1:$orchestrator_port/v1/models" | jq -r '.data[0].id')"
runs="$work/runs.jsonl"
: >"$runs"

# cpu_ticks PID: user + system clock ticks of PID and its children (nginx's workers) so far.
cpu_ticks() {
  local total=0 p fields
  for p in "$1" $(pgrep -P "$1" || true); do
    read -r -a fields <"/proc/$p/stat" || continue
    total=$((total + fields[13] + fields[14]))
  done
  echo "$total"
}
tick_hz="$(getconf CLK_TCK)"

# measure ROUND PHASE TARGET RATE SECONDS: one benchmark_client run; appends its figures to
# $runs (with the CPU time each server process spent per request meanwhile) and prints
# "p50 p99 rps failed".
measure() {
  local round=$1 phase=$2 target=$3 r=$4 secs=$5
  local n=$((r * secs)) json="$work/run-$round-$phase-$target-$r.json"
  [ "$n" -ge 50 ] || n=50
  local before_o before_f before_n
  before_o=$(cpu_ticks "$orchestrator_pid") before_f=$(cpu_ticks "$fake_pid") before_n=$(cpu_ticks "$nginx_pid")
  if ! timeout $((secs * 3 + 60)) "$client" --base-url "${url[$target]}" --model "$model_name" \
    --api-key "$api_key" --tokenizer "$model" --dataset random --input-len "$input_len" \
    --output-len "$tokens" --max-tokens "$tokens" --ignore-eos --num-prompts "$n" \
    --request-rate "$r" --seed 1 --warmup-requests 10 --timeout-s 10 \
    --duration-limit-s $((secs * 3 + 10)) --percentiles 50,99 --result-json "$json" \
    >"$work/client.log" 2>&1; then
    if [ ! -s "$json" ]; then
      echo "bench_orchestrator.sh: benchmark_client failed against $target:" >&2
      tail -n 5 "$work/client.log" >&2
      echo "NaN NaN 0 $n"
      return
    fi
  fi
  local cpu_o=$(($(cpu_ticks "$orchestrator_pid") - before_o)) cpu_f=$(($(cpu_ticks "$fake_pid") - before_f))
  local cpu_n=$(($(cpu_ticks "$nginx_pid") - before_n))
  jq -c --arg round "$round" --arg phase "$phase" --arg target "$target" --argjson rate "$r" \
    --argjson hz "$tick_hz" --argjson o "$cpu_o" --argjson f "$cpu_f" --argjson ng "$cpu_n" \
    '{round: ($round | tonumber), phase: $phase, target: $target, rate: $rate,
      requests: .num_prompts, completed, failed, not_sent, rps: .request_throughput,
      p50_ms: .p50_e2el_ms, p99_ms: .p99_e2el_ms, mean_ms: .mean_e2el_ms,
      tokens: .total_output_tokens,
      cpu_us_per_request: ((.completed + 10) as $done | if $done == 0 then null else
        {orchestrator: ($o * 1e6 / $hz / $done), fake_agent: ($f * 1e6 / $hz / $done),
         nginx: ($ng * 1e6 / $hz / $done)} end)}' "$json" >>"$runs"
  tail -n 1 "$runs" | jq -r '"\(.p50_ms) \(.p99_ms) \(.rps) \(.failed + .not_sent)"'
}

# passes RATE "p50 p99 rps failed": the rate is sustained under the SLO.
passes() {
  awk -v rate="$1" -v slo="$slo_ms" -v p99="$3" -v rps="$4" -v failed="$5" \
    'BEGIN { exit !(failed == 0 && p99 == p99 + 0 && p99 < slo && rps >= 0.9 * rate) }'
}

echo "== targets: direct :$backend_port, nginx :$nginx_port ($workers workers), orchestrator :$orchestrator_port; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$repeat"); do
  # The order rotates every round, so no target always runs first or last.
  shift_by=$(((round - 1) % 3))
  order=("${targets[@]:$shift_by}" "${targets[@]:0:$shift_by}")
  echo "== round $round of $repeat: ${order[*]} at $rate req/s for ${DURATION:-5} s"
  for t in "${order[@]}"; do
    read -r p50 p99 rps failed <<<"$(measure "$round" fixed "$t" "$rate" "$duration")"
    printf "   %-12s p50 %7.2f ms  p99 %7.2f ms  %7.1f req/s  failed %s\n" "$t" "$p50" "$p99" "$rps" "$failed"
  done

  echo "== round $round: sweep from $sweep_start req/s (p99 < $slo_ms ms), ${step_s} s a step"
  declare -A best=() fail=() refined=()
  for t in "${order[@]}"; do best[$t]=0; fail[$t]=0; refined[$t]=0; done
  for _ in $(seq 1 40); do # bounded: at most log2(max/start) + 1 + REFINE steps each
    active=0
    for t in "${order[@]}"; do
      b=${best[$t]} f=${fail[$t]} next=""
      if [ "$f" -eq 0 ]; then
        if [ "$b" -eq 0 ]; then next=$sweep_start; elif [ $((b * 2)) -le "$sweep_max" ]; then next=$((b * 2)); fi
      elif [ "$b" -gt 0 ] && [ "${refined[$t]}" -lt "$refine" ]; then
        next=$(awk -v b="$b" -v f="$f" 'BEGIN { m = int(sqrt(b * f) + 0.5); if (m > b && m < f) print m }')
        refined[$t]=$((refined[$t] + 1))
      fi
      [ -n "$next" ] || continue
      active=1
      read -r p50 p99 rps failed <<<"$(measure "$round" sweep "$t" "$next" "$step_s")"
      if passes "$next" "$p50" "$p99" "$rps" "$failed"; then verdict=pass; best[$t]=$next; else verdict=fail; fail[$t]=$next; fi
      printf "   %-12s %6s req/s  p50 %7.2f ms  p99 %8.2f ms  %7.1f req/s  failed %-4s %s\n" "$t" "$next" "$p50" "$p99" "$rps" "$failed" "$verdict"
    done
    [ "$active" -eq 1 ] || break
  done
  for t in "${order[@]}"; do
    jq -nc --argjson round "$round" --arg target "$t" --argjson max "${best[$t]}" \
      '{round: $round, phase: "max", target: $target, max_rps: $max}' >>"$runs"
  done
  unset best fail refined
done

mkdir -p "$(dirname "$out")"
jq -s --argjson rate "$rate" --argjson duration "$duration" --argjson tokens "$tokens" \
  --argjson input_len "$input_len" --argjson slo "$slo_ms" --argjson step "$step_s" \
  --argjson start "$sweep_start" --argjson max "$sweep_max" --argjson refine "$refine" \
  --arg workers "$workers" --arg nginx "$("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //')" \
  --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --argjson cores "$(nproc)" --arg build "$build" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                     else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  . as $runs
  | ([$runs[] | .round] | max) as $rounds
  | def fixed($t): [$runs[] | select(.phase == "fixed" and .target == $t)] | sort_by(.round);
    def added($t; $key): [range(0; fixed($t) | length) as $i | fixed($t)[$i][$key] - fixed("direct")[$i][$key]];
    def maxes($t): [$runs[] | select(.phase == "max" and .target == $t) | .max_rps];
  {rounds: $rounds, commit: $commit, cores: $cores, build_dir: $build,
   config: {rate_rps: $rate, duration_s: $duration, tokens: $tokens, input_tokens: $input_len,
            slo_p99_ms: $slo, sweep: {start_rps: $start, max_rps: $max, step_s: $step, refine: $refine},
            nginx: $nginx, nginx_workers: $workers,
            latency: "send to data: [DONE] of a streamed /v1/completions answer, nearest-rank percentiles, a new connection per request"},
   targets: (["direct", "nginx", "orchestrator"] | map({key: ., value: (. as $t | {
      p50_ms: (fixed($t) | map(.p50_ms) | median), p99_ms: (fixed($t) | map(.p99_ms) | median),
      p50_samples_ms: (fixed($t) | map(.p50_ms)), p99_samples_ms: (fixed($t) | map(.p99_ms)),
      added_p50_ms: (if $t == "direct" then 0 else (added($t; "p50_ms") | median) end),
      added_p99_ms: (if $t == "direct" then 0 else (added($t; "p99_ms") | median) end),
      added_p50_samples_ms: (if $t == "direct" then [] else added($t; "p50_ms") end),
      added_p99_samples_ms: (if $t == "direct" then [] else added($t; "p99_ms") end),
      max_rps: (maxes($t) | median), max_rps_samples: maxes($t),
      server_cpu_us_per_request: (fixed($t) | map(.cpu_us_per_request // {} | to_entries
        | map(.value) | add) | median)})}) | from_entries),
   runs: $runs}' "$runs" >"$out"

echo
printf "%-13s | %8s | %8s | %9s | %9s | %22s | %s | %s\n" "target" "p50 ms" "p99 ms" "added p50" "added p99" "max req/s (p99<${slo_ms}ms)" "server CPU us/req" "max req/s per round"
jq -r '.targets | to_entries[] | [.key, .value.p50_ms, .value.p99_ms, .value.added_p50_ms,
    .value.added_p99_ms, .value.max_rps, (.value.server_cpu_us_per_request // 0),
    (.value.max_rps_samples | map(tostring) | join(" "))] | @tsv' "$out" |
  while IFS=$'\t' read -r t p50 p99 a50 a99 mx cpu samples; do
    printf "%-13s | %8.2f | %8.2f | %9.2f | %9.2f | %22s | %17.0f | %s\n" "$t" "$p50" "$p99" "$a50" "$a99" "$mx" "$cpu" "$samples"
  done
jq -r '.targets as $t | "orchestrator vs nginx: added p99 \($t.orchestrator.added_p99_ms | . * 100 | round / 100) vs \($t.nginx.added_p99_ms | . * 100 | round / 100) ms (\(if $t.orchestrator.added_p99_ms <= $t.nginx.added_p99_ms then "met" else "missed" end)), max req/s \($t.orchestrator.max_rps) vs \($t.nginx.max_rps) (\(if $t.orchestrator.max_rps >= $t.nginx.max_rps then "met" else "missed" end))"' "$out"
echo "wrote $out (medians of $repeat rounds; $rate req/s, $tokens-token streamed answers)"
