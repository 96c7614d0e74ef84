#!/usr/bin/env bash
# Runs inside the Soft-RoCE VM (see bench_transfer.sh verbs): for each block size, ib_write_bw
# (perftest) between the two rxe devices for the ceiling, then transfer_bench over the same pair
# with scattered block ids, single submitting thread. Writes the combined JSON to $1.
set -euo pipefail
out="$1"
bench="$2"
duration="${DURATION:-2}"
qps="${CONNECTIONS:-2}"  # ib_write_bw QPs = our connections per peer
sizes="${SIZES:-1024 4096 16384 65536 262144 1048576}"
work="$(mktemp -d)"
sdev="$RXE_VM_SERVER_DEV" cdev="$RXE_VM_CLIENT_DEV" sip="$RXE_VM_SERVER_IP" cip="$RXE_VM_CLIENT_IP"

echo "== ceiling: ib_write_bw $cdev -> $sdev, $qps QPs, ${duration}s per size"
echo "[" >"$work/ceiling.json"
first=1
for size in $sizes; do
  ib_write_bw -d "$sdev" -x "$RXE_VM_SERVER_GID" -s "$size" -D "$duration" -F -q "$qps" \
    >"$work/ibw-server.log" 2>&1 &
  spid=$!
  # The server needs a moment to listen in the emulated guest: retry the client, bounded.
  ok=0
  for _ in $(seq 40); do
    if ib_write_bw -d "$cdev" -x "$RXE_VM_CLIENT_GID" -s "$size" -D "$duration" -F -q "$qps" \
      "$sip" >"$work/ibw-client.log" 2>&1; then
      ok=1
      break
    fi
    sleep 0.25
  done
  [ $ok = 1 ] || { cat "$work/ibw-client.log"; exit 1; }
  wait "$spid" || true
  # Data line: #bytes #iterations BW-peak BW-average MsgRate. perftest prints MB/s (2^20) and
  # Mpps with too few decimals for emulated rates (they round to 0), so the ceiling is
  # iterations × size over the -D duration, in GB/s (1e9 bytes/s).
  gbps="$(awk -v s="$size" -v d="$duration" '$1 == s && NF >= 5 {printf "%.6f", $2 * s / d / 1e9}' \
    "$work/ibw-client.log" | tail -n 1)"
  printf "   %8s B: %s GB/s\n" "$size" "$gbps"
  [ $first = 1 ] || echo "," >>"$work/ceiling.json"
  first=0
  echo "{\"block_bytes\": $size, \"gbps\": $gbps}" >>"$work/ceiling.json"
done
echo "]" >>"$work/ceiling.json"

echo "== transfer_bench --transport verbs, $cdev -> $sdev"
cat >"$work/target.yaml" <<YAML
transport:
  kind: verbs
  listen_address: $sip:0
  verbs:
    devices: [$sdev]
YAML
sed -e "s/$sip/$cip/" -e "s/\[$sdev\]/[$cdev]/" "$work/target.yaml" >"$work/initiator.yaml"
blocks="$(for s in $sizes; do printf "%s," "$s"; done)"
"$bench" --role target --transport verbs --config "$work/target.yaml" --pool-bytes 64M \
  --blob-file "$work/blob" >"$work/target.log" 2>&1 &
tpid=$!
"$bench" --role initiator --transport verbs --config "$work/initiator.yaml" --pool-bytes 64M \
  --blob-file "$work/blob" --block-sizes "${blocks%,}" --duration "$duration" --queue-depth 16 \
  --max-batch-bytes 1M --connections "$qps" --json "$work/bench.json"
kill -TERM "$tpid"
wait "$tpid" || true
tail -n 1 "$work/target.log"

jq --slurpfile ceiling "$work/ceiling.json" '{
    ceiling_tool: "ib_write_bw (perftest), same rxe pair, same message size and QP count",
    environment: "Soft-RoCE (rdma_rxe) in an emulated QEMU guest: absolute numbers are CPU-bound and meaningless; only the ratio says anything",
    transport: .transport, queue_depth: .queue_depth, connections: .connections,
    duration_s: .duration_s,
    rows: [.rows[] as $r | ($ceiling[0][] | select(.block_bytes == $r.block_bytes) | .gbps) as $c |
           {block_bytes: $r.block_bytes, batch: $r.batch, gbps: $r.gbps, ceiling_gbps: $c,
            ratio: ($r.gbps / $c), p50_us: $r.p50_us, p99_us: $r.p99_us}]
  }' "$work/bench.json" >"$out"
rm -rf "$work"
