#!/usr/bin/env bash
# verify_gpudirect.sh's gpu-reg-path check, fed by fake kvferry-gpudirect-probe binaries (one per
# outcome), then by the real probe when one is given ($1): the line names the working path, says
# FAIL when none works, and says which of GPU / RDMA device / probe is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
script="$here/../../scripts/verify_gpudirect.sh"
real_probe="${1:-}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# fake NAME RC OUTPUT: a probe that prints OUTPUT and exits RC.
fake() {
  printf '#!/bin/sh\ncat <<"OUT"\n%s\nOUT\nexit %s\n' "$3" "$2" >"$tmp/$1"
  chmod +x "$tmp/$1"
}
# line PROBE: the gpu-reg-path line (and its detail lines) of a run with that probe.
line() {
  KVFERRY_GPUDIRECT_PROBE="$1" bash "$script" >"$tmp/out" 2>&1 || true
  sed -n '/^[A-Z]*  *gpu-reg-path/,/^[A-Z]/p' "$tmp/out" | sed '$d'
}

fake works 0 "GPU 0: 2097152 bytes at 0x7f0000000000
device mlx5_0: dmabuf OK
device mlx5_0: peermem FAIL (IO_ERROR: ibv_reg_mr(device pointer, 2097152 bytes): Bad address)
summary: works: mlx5_0 dmabuf"
out="$(line "$tmp/works")"
grep -q "^PASS  gpu-reg-path  GPU memory registers through: mlx5_0 dmabuf$" <<<"$out" || fail "works: $out"
grep -q "peermem FAIL (IO_ERROR" <<<"$out" || fail "works: the failed path's cause is not shown: $out"

fake none 1 "device mlx5_0: dmabuf FAIL (cuMemGetHandleForAddressRange: CUresult 801)
device mlx5_0: peermem FAIL (Bad address)
summary: no registration path works on any device"
out="$(line "$tmp/none")"
grep -q "^FAIL  gpu-reg-path  no registration path works (neither dma-buf nor peermem)" <<<"$out" || fail "none: $out"
grep -q "CUresult 801" <<<"$out" || fail "none: causes missing: $out"

fake nogpu 3 "no GPU: no CUDA device"
out="$(line "$tmp/nogpu")"
grep -q "^SKIP  gpu-reg-path  no GPU: no CUDA device$" <<<"$out" || fail "nogpu: $out"

fake nordma 4 "no RDMA device: ibv_get_device_list is empty"
out="$(line "$tmp/nordma")"
grep -q "^SKIP  gpu-reg-path  no RDMA device: ibv_get_device_list is empty$" <<<"$out" || fail "nordma: $out"

out="$(line "$tmp/missing")"
grep -q "^SKIP  gpu-reg-path  kvferry-gpudirect-probe not found" <<<"$out" || fail "missing: $out"

if [ -n "$real_probe" ]; then
  out="$(line "$real_probe")"
  echo "real probe: $out"
  grep -Eq "^(PASS|FAIL|SKIP)  gpu-reg-path  " <<<"$out" || fail "real probe: $out"
  if ! ls /proc/driver/nvidia/gpus/* >/dev/null 2>&1; then
    grep -q "^SKIP  gpu-reg-path  no GPU: " <<<"$out" || fail "real probe without a GPU: $out"
  fi
fi
echo PASS
