#!/usr/bin/env bash
# Measures the transfer engine against the raw ceiling of the same path, in the same run.
#
#   scripts/bench_transfer.sh tcp [transfer_bench options...]
#
# tcp: REPEAT (default 3) interleaved pairs of iperf3 over 127.0.0.1 (as many streams as the
# transport opens connections, the same duration) and a transfer_bench sweep, which runs as two
# processes (target and initiator) like iperf3's server and client; each sweep is divided by the
# higher iperf3 reading around it, and every figure is the median over the pairs. Prints block
# size | GB/s | ceiling | ratio | p50 | p99 | each pair's ratio, and writes
# bench-results/transfer-tcp.json:
#   {"ceiling_gbps", "ceiling_samples_gbps", "pairs", "rows": [{"block_bytes", "gbps", "ratio",
#    "ratio_samples", "p50_us", "p99_us"}], ...}
#
#   scripts/bench_transfer.sh verbs
#
# verbs: inside one run of the Soft-RoCE VM (../shared/tools/rxe-vm), ib_write_bw between the
# two rxe devices per block size, then transfer_bench over the same pair; writes
# bench-results/transfer-verbs.json with the ratio per size. Soft-RoCE in an emulated guest is
# CPU-bound: only the ratios mean anything.
# Environment: DURATION (seconds per measurement, default 3; verbs 2), CONNECTIONS (default 2),
# QUEUE_DEPTH (verbs: batches in flight, default 8), REPEAT (pairs: tcp default 3, verbs 5 per
# size),
# POOL_BYTES (verbs: each side's KV pool the blocks are scattered over, default 64M),
# INFLIGHT (verbs: transport.verbs.max_inflight_bytes values to compare, e.g. "0 1048576"; a
# row per size and value, each with the retransmissions Soft-RoCE counted),
# BUILD_DIR (default build/release: configured with the release preset if needed, and
# transfer_bench brought up to date there before every run).
set -euo pipefail

transport="${1:-}"
case "$transport" in
  tcp | verbs) shift ;;
  -h | --help | "")
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    [ -n "$transport" ] && exit 0 || exit 2
    ;;
  *)
    echo "bench_transfer.sh: unknown transport '$transport' (tcp or verbs)" >&2
    exit 2
    ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
duration="${DURATION:-3}"
connections="${CONNECTIONS:-2}"
build="${BUILD_DIR:-build/release}"
for tool in iperf3 jq; do
  command -v "$tool" >/dev/null || { echo "bench_transfer.sh: $tool missing: run scripts/install_deps.sh" >&2; exit 1; }
done
echo "== building transfer_bench in $build"
if [ "$build" = build/release ] && [ ! -f "$build/build.ninja" ]; then
  cmake --preset release >/dev/null
fi
cmake --build "$build" --target transfer_bench >/dev/null
bench="$build/bench/transfer_bench"
mkdir -p bench-results

if [ "$transport" = verbs ]; then
  vm="${RXE_VM:-$root/../shared/tools/rxe-vm/run-in-vm.sh}"
  [ -x "$vm" ] || { echo "bench_transfer.sh: no Soft-RoCE VM harness at $vm" >&2; exit 1; }
  out="$root/bench-results/transfer-verbs.json"
  DURATION="${DURATION:-2}" "$vm" --rw "$root/bench-results" --timeout 900 -- \
    env DURATION="${DURATION:-2}" SIZES="${SIZES:-}" QUEUE_DEPTH="${QUEUE_DEPTH:-8}" REPEAT="${REPEAT:-5}" POOL_BYTES="${POOL_BYTES:-64M}" INFLIGHT="${INFLIGHT:-0}" CONNECTIONS="$connections" bash "$root/scripts/bench_verbs_guest.sh" "$out" "$root/$build/bench/transfer_bench"
  echo
  printf "%10s | %10s | %5s | %8s | %8s | %6s | %10s | %10s | %7s | %s\n" "block" "inflight" "batch" "GB/s" "ceiling" "ratio" "p50_us" "p99_us" "retries" "all ratios"
  jq -r '.rows[] | [.block_bytes, .max_inflight_bytes, .batch, .gbps, .ceiling_gbps, .ratio,
      .p50_us, .p99_us, .retries, (.ratio_samples | map(. * 100 | round / 100) | join(" "))]
      | @tsv' "$out" |
    while IFS=$'\t' read -r bytes budget batch gbps ceil ratio p50 p99 retries samples; do
      printf "%10s | %10s | %5s | %8.4f | %8.4f | %6.2f | %10.1f | %10.1f | %7s | %s\n" "$bytes" "$budget" "$batch" "$gbps" "$ceil" "$ratio" "$p50" "$p99" "$retries" "$samples"
    done
  echo "wrote $out (Soft-RoCE in an emulated guest: compare ratios, not GB/s)"
  exit 0
fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

pick_port() { # a free TCP port on 127.0.0.1
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

# The ceiling is measured before and after the sweep; ratios use the higher reading, so drift
# on a shared machine can only make our ratio look worse, never better.
measure_ceiling() {
  local port json="$work/iperf-$1.json"
  port="$(pick_port)"
  iperf3 -s -1 -B 127.0.0.1 -p "$port" >"$work/iperf-server-$1.log" 2>&1 &
  pids+=($!)
  # Wait until it listens without connecting (a probe would use up the one-off server).
  for _ in $(seq 100); do
    ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && break
    sleep 0.05
  done
  iperf3 -c 127.0.0.1 -p "$port" -t "$duration" -P "$connections" -J >"$json" 2>&1 || true
  if ! jq -e '.end.sum_received.bits_per_second' "$json" >/dev/null 2>&1; then
    echo "bench_transfer.sh: iperf3 failed: $(jq -r '.error // empty' "$json" 2>/dev/null || head -3 "$json")" >&2
    return 1
  fi
  jq '.end.sum_received.bits_per_second / 8e9' "$json"
}
# REPEAT interleaved pairs: iperf3, transfer_bench, iperf3, transfer_bench, …, iperf3. Each
# transfer_bench sweep is divided by the higher of the two iperf3 readings around it (drift on a
# shared machine can only make our ratio look worse), and each figure is the median over pairs.
repeat="${REPEAT:-3}"
ceilings=()
echo "== ceiling: iperf3 127.0.0.1, $connections streams, ${duration}s"
ceilings+=("$(measure_ceiling 0)")
printf "   iperf3: %.3f GB/s\n" "${ceilings[0]}"
for i in $(seq 1 "$repeat"); do
  echo "== pair $i of $repeat: transfer_bench (target and initiator as two processes)"
  blob="$work/target-$i.blob"
  "$bench" --role target --transport tcp --blob-file "$blob" --connections "$connections" "$@" \
    >"$work/target-$i.log" 2>&1 &
  target_pid=$!
  pids+=("$target_pid")
  "$bench" --role initiator --transport tcp --blob-file "$blob" --connections "$connections" \
    --duration "$duration" --json "$work/bench-$i.json" "$@" >"$work/initiator-$i.log"
  kill -TERM "$target_pid"
  wait "$target_pid" || true
  ceilings+=("$(measure_ceiling "$i")")
  printf "   iperf3: %.3f GB/s\n" "${ceilings[$i]}"
done

out="bench-results/transfer-tcp.json"
ceiling_json="$(printf '%s\n' "${ceilings[@]}" | jq -s .)"
jq -s --argjson ceilings "$ceiling_json" '
  def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                     else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  . as $runs
  | [range(0; $runs | length) | [$ceilings[.], $ceilings[. + 1]] | max] as $pair_ceilings
  | {ceiling_tool: "iperf3 127.0.0.1 before and after each transfer_bench run",
     ceiling_samples_gbps: $ceilings,
     ceiling_gbps: ($pair_ceilings | median),
     pairs: ($runs | length),
     transport: $runs[0].transport, queue_depth: $runs[0].queue_depth,
     connections: $runs[0].connections, duration_s: $runs[0].duration_s,
     rows: [range(0; $runs[0].rows | length) as $r
       | [range(0; $runs | length) as $i | $runs[$i].rows[$r] + {ratio: ($runs[$i].rows[$r].gbps / $pair_ceilings[$i])}] as $samples
       | {block_bytes: $samples[0].block_bytes, batch: $samples[0].batch,
          gbps: ($samples | map(.gbps) | median),
          ratio: ($samples | map(.ratio) | median),
          ratio_samples: ($samples | map(.ratio)),
          p50_us: ($samples | map(.p50_us) | median),
          p99_us: ($samples | map(.p99_us) | median)}]}
  ' $(for i in $(seq 1 "$repeat"); do echo "$work/bench-$i.json"; done) >"$out"

echo
printf "%10s | %5s | %8s | %8s | %6s | %10s | %10s | %s\n" "block" "batch" "GB/s" "ceiling" "ratio" "p50_us" "p99_us" "ratio per pair"
jq -r '.ceiling_gbps as $c | .rows[] |
  [.block_bytes, .batch, .gbps, $c, .ratio, .p50_us, .p99_us,
   (.ratio_samples | map(. * 100 | round / 100) | join(" "))] | @tsv' "$out" |
  while IFS=$'\t' read -r bytes batch gbps ceil ratio p50 p99 samples; do
    printf "%10s | %5s | %8.3f | %8.3f | %6.2f | %10.1f | %10.1f | %s\n" "$bytes" "$batch" "$gbps" "$ceil" "$ratio" "$p50" "$p99" "$samples"
  done
echo "medians over $repeat interleaved pairs (ceiling: the median pair's); wrote $out"
