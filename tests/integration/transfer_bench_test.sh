#!/usr/bin/env bash
# transfer_bench as two real processes on 127.0.0.1: the target publishes its blob, the
# initiator connects and sweeps two block sizes, and the target saw one immediate per batch.
# Checks behaviour (it runs, it reports, the data plane delivered), never speed.
set -euo pipefail
bench="${TRANSFER_BENCH:?set TRANSFER_BENCH to the transfer_bench binary}"
work="$(mktemp -d)"
target_pid=""
cleanup() {
  [ -n "$target_pid" ] && kill "$target_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

common=(--transport tcp --listen 127.0.0.1:0 --blob-file "$work/blob" --pool-bytes 8M --batch 8
  --queue-depth 4 --connections 2)
"$bench" --role target "${common[@]}" >"$work/target.out" 2>"$work/target.err" &
target_pid=$!
timeout 60 "$bench" --role initiator "${common[@]}" --block-sizes 4K,128K --duration 0.3 \
  --json "$work/result.json" >"$work/initiator.out"
kill -TERM "$target_pid"
wait "$target_pid"
target_pid=""

cat "$work/initiator.out" "$work/target.out"
rows="$(jq '.rows | length' "$work/result.json")"
[ "$rows" = 2 ] || { echo "FAIL: expected 2 rows, got $rows"; exit 1; }
jq -e '[.rows[] | .gbps > 0 and .batches > 0 and .p99_us >= .p50_us] | all' "$work/result.json" \
  >/dev/null || { echo "FAIL: a row has no throughput or inverted percentiles"; exit 1; }
# Every batch carries an immediate: the target saw at least the measured batches.
measured="$(jq '[.rows[].batches] | add' "$work/result.json")"
received="$(sed -n 's/^target: \([0-9]*\) immediates received$/\1/p' "$work/target.out")"
[ -n "$received" ] && [ "$received" -ge "$measured" ] ||
  { echo "FAIL: target received ${received:-no} immediates for $measured measured batches"; exit 1; }
# The blob file is removed on a clean target exit.
[ ! -e "$work/blob" ] || { echo "FAIL: target left its blob file"; exit 1; }
# Bad input is one clear line and a non-zero exit.
if "$bench" --batch 0 2>"$work/bad.err"; then echo "FAIL: --batch 0 accepted"; exit 1; fi
grep -q "^transfer_bench: INVALID_ARGUMENT: --batch" "$work/bad.err" ||
  { echo "FAIL: unclear error: $(cat "$work/bad.err")"; exit 1; }
echo "PASS"
