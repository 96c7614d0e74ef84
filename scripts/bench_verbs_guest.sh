#!/usr/bin/env bash
# Runs inside the Soft-RoCE VM (see bench_transfer.sh verbs). For each block size, REPEAT times
# (default 5), back to back so both see the same machine: ib_write_bw (perftest) between the two
# rxe devices for the ceiling, then transfer_bench over the same pair with scattered block ids
# and a single submitting thread. Each row is the median pair by ratio, with all ratios beside
# it (the emulated guest drifts ±30 % between runs). Writes the combined JSON to $1.
# INFLIGHT: the initiator's transport.verbs.max_inflight_bytes values to compare (default "0",
# no byte budget), each run after the same ceiling sample, one row per size and value; every row
# carries the retransmission counters the two rxe devices added during its samples.
set -euo pipefail
out="$1"
bench="$2"
duration="${DURATION:-2}"
sizes="${SIZES:-1024 4096 16384 65536 262144 1048576}"
[ -n "$sizes" ] || sizes="1024 4096 16384 65536 262144 1048576"
qps="${CONNECTIONS:-2}"  # ib_write_bw QPs = our connections per peer
work="$(mktemp -d)"
sdev="$RXE_VM_SERVER_DEV" cdev="$RXE_VM_CLIENT_DEV" sip="$RXE_VM_SERVER_IP" cip="$RXE_VM_CLIENT_IP"

cat >"$work/target.yaml" <<YAML
transport:
  kind: verbs
  listen_address: $sip:0
  verbs:
    devices: [$sdev]
YAML
inflight="${INFLIGHT:-0}"
for budget in $inflight; do
  sed -e "s/$sip/$cip/" -e "s/\[$sdev\]/[$cdev]/" "$work/target.yaml" >"$work/initiator-$budget.yaml"
  echo "    max_inflight_bytes: $budget" >>"$work/initiator-$budget.yaml"
done

# Soft-RoCE's retransmission counters, summed over both devices (absent ones count 0).
retries() {
  local total=0 dev name file
  for dev in "$sdev" "$cdev"; do
    for name in send_retry rcvd_seq_err duplicate_request out_of_seq_request; do
      file="/sys/class/infiniband/$dev/ports/1/hw_counters/$name"
      [ -r "$file" ] && total=$((total + $(cat "$file")))
    done
  done
  echo "$total"
}
"$bench" --role target --transport verbs --config "$work/target.yaml" --pool-bytes "${POOL_BYTES:-64M}" \
  --blob-file "$work/blob" >"$work/target.log" 2>&1 &
tpid=$!
trap 'kill $tpid 2>/dev/null || true; rm -rf "$work"' EXIT

ceiling() { # size → GB/s from ib_write_bw in iteration mode (-D misreports at emulated rates)
  local size="$1" iters=$((16 * 1024 * 1024 / $1))
  [ "$iters" -ge 50 ] || iters=50
  ib_write_bw -d "$sdev" -x "$RXE_VM_SERVER_GID" -s "$size" -n "$iters" -F -q "$qps" \
    >"$work/ibw-server.log" 2>&1 &
  local spid=$! ok=0
  for _ in $(seq 40); do # the server needs a moment to listen in the emulated guest
    if ib_write_bw -d "$cdev" -x "$RXE_VM_CLIENT_GID" -s "$size" -n "$iters" -F -q "$qps" \
      "$sip" >"$work/ibw-client.log" 2>&1; then
      ok=1
      break
    fi
    sleep 0.25
  done
  wait "$spid" || true
  [ $ok = 1 ] || { cat "$work/ibw-client.log" >&2; return 1; }
  # Data line: #bytes #iterations BW-peak BW-average MsgRate; perftest's MB/s is 2^20 bytes/s.
  awk -v s="$size" '$1 == s && NF >= 5 {printf "%.6f", $4 * 1048576 / 1e9}' \
    "$work/ibw-client.log" | tail -n 1
}

repeat="${REPEAT:-5}"
echo "== per size, $repeat times: ib_write_bw ($qps QPs, 16 MiB or 50 messages) then" \
  "transfer_bench (${duration}s) per max_inflight_bytes in [$inflight]; a row is the median pair"
echo "[]" >"$work/rows.json"
for size in $sizes; do
  echo "[]" >"$work/samples.json"
  for _ in $(seq "$repeat"); do
    # An ib_write_bw run in the emulated guest now and then ends without a data line (its
    # client gives up while the server is still starting): try again before giving up.
    c=""
    for attempt in 1 2 3; do
      c="$(ceiling "$size" || true)"
      [ -n "$c" ] && [ "$c" != "0.000000" ] && break
      echo "   ib_write_bw gave no rate for $size (attempt $attempt of 3)" >&2
      c=""
    done
    [ -n "$c" ] || { echo "ib_write_bw gave no rate for $size; its last client output:" >&2; cat "$work/ibw-client.log" >&2; exit 1; }
    echo "   ceiling (ib_write_bw): $c GB/s"
    for budget in $inflight; do
      before="$(retries)"
      "$bench" --role initiator --transport verbs --config "$work/initiator-$budget.yaml" \
        --pool-bytes "${POOL_BYTES:-64M}" --blob-file "$work/blob" --block-sizes "$size" \
        --duration "$duration" --queue-depth "${QUEUE_DEPTH:-8}" --max-batch-bytes 1M \
        --connections "$qps" --json "$work/bench.json" | tail -n 1
      jq --argjson c "$c" --argjson budget "$budget" --argjson retries $(($(retries) - before)) \
        --slurpfile b "$work/bench.json" \
        '. + [$b[0].rows[0] + {ceiling_gbps: $c, ratio: ($b[0].rows[0].gbps / $c),
                               max_inflight_bytes: $budget, retries: $retries}]' \
        "$work/samples.json" >"$work/samples.next" && mv "$work/samples.next" "$work/samples.json"
    done
  done
  # Per budget, the median pair by ratio, with every sample's ratio and the retries kept beside it.
  for budget in $inflight; do
    jq --slurpfile s "$work/samples.json" --argjson budget "$budget" \
      '. + [([$s[0][] | select(.max_inflight_bytes == $budget)] | sort_by(.ratio)) as $o |
            $o[($o | length) / 2 | floor] +
            {ratio_samples: [$o[].ratio], retries: ([$o[].retries] | add)}]' \
      "$work/rows.json" >"$work/rows.next" && mv "$work/rows.next" "$work/rows.json"
  done
done
kill -TERM "$tpid"
wait "$tpid" || true
tail -n 1 "$work/target.log"

jq --slurpfile meta "$work/bench.json" --argjson repeat "$repeat" '{
    ceiling_tool: "ib_write_bw (perftest), same rxe pair, same message size and QP count, run just before each transfer_bench sample; each row is the median of the pairs",
    environment: "Soft-RoCE (rdma_rxe) in an emulated QEMU guest: absolute numbers are CPU-bound and meaningless; only the ratio says anything",
    transport: $meta[0].transport, queue_depth: $meta[0].queue_depth,
    connections: $meta[0].connections, duration_s: $meta[0].duration_s,
    repeats: $repeat,
    rows: [.[] | {block_bytes, max_inflight_bytes, batch, gbps, ceiling_gbps, ratio, ratio_samples,
                  p50_us, p99_us, retries}]
  }' "$work/rows.json" >"$out"
