#!/usr/bin/env bash
# Two builds of the cuda_ipc transport against each other on one GPU, interleaved in one run:
#
#   scripts/ab_cuda_ipc.sh BASE_BUILD NEW_BUILD OUT_DIR [ROUNDS]
#
# Each round runs transfer_bench --transport cuda_ipc (two processes on GPU 0, scattered blocks,
# 512 per batch, 16 in flight) with BASE_BUILD's binaries, then NEW_BUILD's; OUT_DIR gets every
# sweep (<base|new>-<round>.json) and ab.json: per block size and side the median GB/s, the
# median of the contiguous copy measured beside it (walking the pool as the batches do; `hot`:
# the same window every time, L2-resident up to ~25 MiB batches), their ratio and the mean host
# time per post.
# Build a base with, e.g., `git worktree add /tmp/base <commit>` and
# `scripts/build_gpu.sh /tmp/base/build transfer_bench`.
set -euo pipefail
base="${1:?usage: ab_cuda_ipc.sh BASE_BUILD NEW_BUILD OUT_DIR [ROUNDS]}"
new="${2:?new build dir}"
out="${3:?out dir}"
rounds="${4:-3}"
sizes="${KVFERRY_AB_SIZES:-8K,32K,128K,2M}"
mkdir -p "$out"

sweep() {  # BUILD JSON
  local blob="$out/ab.blob" status=0
  rm -f "$blob"
  "$1/bench/transfer_bench" --role target --transport cuda_ipc --blob-file "$blob" \
    --pool-bytes 2G >/dev/null &
  local target=$!
  "$1/bench/transfer_bench" --role initiator --transport cuda_ipc --blob-file "$blob" \
    --pool-bytes 2G --block-sizes "$sizes" --batch 512 --max-batch-bytes 64M --queue-depth 16 \
    --duration 1 --json "$2" || status=$?
  kill -INT "$target"
  wait "$target" || true
  return $status
}

for round in $(seq "$rounds"); do
  for side in base new; do
    build="$base"
    [ "$side" = new ] && build="$new"
    echo "== round $round: $side ($build)"
    sweep "$build" "$out/$side-$round.json"
  done
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for side in ("base", "new"):
    for r in range(1, rounds + 1):
        for row in json.load(open(f"{out}/{side}-{r}.json"))["rows"]:
            rows.setdefault((row["block_bytes"], side), []).append(row)
summary = []
print(f"{'block':>8} {'side':>5} {'GB/s':>9} {'contig':>9} {'hot':>9} {'ratio':>6} {'post_us':>8}  every GB/s")
for (block, side), samples in sorted(rows.items()):
    gbps = statistics.median(s["gbps"] for s in samples)
    contig = statistics.median(s["contiguous_gbps"] for s in samples)
    hot = statistics.median(s.get("contiguous_hot_gbps", 0) for s in samples)
    post = statistics.mean(s.get("post_us", 0) for s in samples)
    summary.append({"block_bytes": block, "side": side, "gbps": gbps, "contiguous_gbps": contig,
                    "contiguous_hot_gbps": hot, "ratio": gbps / contig, "post_us": post,
                    "samples_gbps": [s["gbps"] for s in samples]})
    print(f"{block:>8} {side:>5} {gbps:9.1f} {contig:9.1f} {hot:9.1f} {gbps / contig:6.2f} {post:8.2f}  "
          + " ".join(f"{s['gbps']:.0f}" for s in samples))
json.dump({"rounds": rounds, "rows": summary}, open(f"{out}/ab.json", "w"), indent=1)
PY
