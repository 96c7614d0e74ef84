#!/usr/bin/env bash
# Measures the transfer engine against the raw ceiling of the same path, in the same run.
#
#   scripts/bench_transfer.sh tcp [transfer_bench options...]
#
# tcp: the ceiling is iperf3 over 127.0.0.1 with as many streams as the transport opens
# connections, for the same duration, before and after (the higher one counts); transfer_bench runs as two processes (target and
# initiator) like iperf3's server and client. Prints block size | GB/s | ceiling | ratio and
# writes bench-results/transfer-tcp.json:
#   {"ceiling_gbps": x, "rows": [{"block_bytes", "gbps", "ratio", "p50_us", "p99_us"}], ...}
#
#   scripts/bench_transfer.sh verbs
#
# verbs: inside one run of the Soft-RoCE VM (../shared/tools/rxe-vm), ib_write_bw between the
# two rxe devices per block size, then transfer_bench over the same pair; writes
# bench-results/transfer-verbs.json with the ratio per size. Soft-RoCE in an emulated guest is
# CPU-bound: only the ratios mean anything.
# Environment: DURATION (seconds per measurement, default 3; verbs 2), CONNECTIONS (default 2),
# QUEUE_DEPTH (verbs: batches in flight, default 8), REPEAT (verbs: pairs per size, default 5),
# POOL_BYTES (verbs: each side's KV pool the blocks are scattered over, default 64M),
# BUILD_DIR (default build/release: configured with the release preset if needed, and
# transfer_bench brought up to date there before every run).
set -euo pipefail

transport="${1:-}"
case "$transport" in
  tcp | verbs) shift ;;
  -h | --help | "")
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
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
    env DURATION="${DURATION:-2}" SIZES="${SIZES:-}" QUEUE_DEPTH="${QUEUE_DEPTH:-8}" REPEAT="${REPEAT:-5}" POOL_BYTES="${POOL_BYTES:-64M}" CONNECTIONS="$connections" bash "$root/scripts/bench_verbs_guest.sh" "$out" "$root/$build/bench/transfer_bench"
  echo
  printf "%10s | %5s | %8s | %8s | %6s | %10s | %10s | %s\n" "block" "batch" "GB/s" "ceiling" "ratio" "p50_us" "p99_us" "all ratios"
  jq -r '.rows[] | [.block_bytes, .batch, .gbps, .ceiling_gbps, .ratio, .p50_us, .p99_us,
      (.ratio_samples | map(. * 100 | round / 100) | join(" "))] | @tsv' "$out" |
    while IFS=$'\t' read -r bytes batch gbps ceil ratio p50 p99 samples; do
      printf "%10s | %5s | %8.4f | %8.4f | %6.2f | %10.1f | %10.1f | %s\n" "$bytes" "$batch" "$gbps" "$ceil" "$ratio" "$p50" "$p99" "$samples"
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
echo "== ceiling: iperf3 127.0.0.1, $connections streams, ${duration}s (before)"
ceiling_before="$(measure_ceiling before)"
printf "   iperf3: %.3f GB/s\n" "$ceiling_before"

echo "== transfer_bench: target and initiator as two processes"
blob="$work/target.blob"
"$bench" --role target --transport tcp --blob-file "$blob" --connections "$connections" "$@" \
  >"$work/target.log" 2>&1 &
target_pid=$!
pids+=("$target_pid")
"$bench" --role initiator --transport tcp --blob-file "$blob" --connections "$connections" \
  --duration "$duration" --json "$work/bench.json" "$@"
kill -TERM "$target_pid"
wait "$target_pid" || true
tail -n 1 "$work/target.log"

echo "== ceiling: iperf3 (after)"
ceiling_after="$(measure_ceiling after)"
printf "   iperf3: %.3f GB/s\n" "$ceiling_after"
ceiling="$(jq -n --argjson a "$ceiling_before" --argjson b "$ceiling_after" '[$a, $b] | max')"

out="bench-results/transfer-tcp.json"
jq --argjson ceiling "$ceiling" --argjson before "$ceiling_before" --argjson after "$ceiling_after" '{
    ceiling_gbps: $ceiling, ceiling_tool: "iperf3 127.0.0.1 (max of before/after)",
    ceiling_samples_gbps: [$before, $after],
    transport: .transport, queue_depth: .queue_depth,
    connections: .connections, duration_s: .duration_s,
    rows: [.rows[] | {block_bytes, batch, gbps, ratio: (.gbps / $ceiling), p50_us, p99_us}]
  }' "$work/bench.json" >"$out"

echo
printf "%10s | %5s | %8s | %8s | %6s | %10s | %10s\n" "block" "batch" "GB/s" "ceiling" "ratio" "p50_us" "p99_us"
jq -r '.ceiling_gbps as $c | .rows[] |
  [.block_bytes, .batch, .gbps, $c, .ratio, .p50_us, .p99_us] | @tsv' "$out" |
  while IFS=$'\t' read -r bytes batch gbps ceil ratio p50 p99; do
    printf "%10s | %5s | %8.3f | %8.3f | %6.2f | %10.1f | %10.1f\n" "$bytes" "$batch" "$gbps" "$ceil" "$ratio" "$p50" "$p99"
  done
echo "wrote $out"
