#!/usr/bin/env bash
# Runs the verbs tests (a gtest binary and filter) on real verbs:
#  1. inside the Soft-RoCE VM (../shared/tools/rxe-vm, or $RXE_VM) when it is there;
#  2. else directly, when this host has RDMA devices and KVFERRY_VERBS_*_DEV name two of them;
#  3. else exits 77 (ctest: skipped) saying why.
set -euo pipefail
binary="$1"
filter="$2"
here="$(cd "$(dirname "$0")" && pwd)"
vm="${RXE_VM:-$here/../../../shared/tools/rxe-vm/run-in-vm.sh}"
if [ -x "$vm" ]; then
  # Writable scratch for the tests (the guest's root is a throw-away overlay, which is fine).
  exec "$vm" --timeout 1400 -- "$binary" --gtest_filter="$filter" --gtest_brief=1
fi
if [ -n "${KVFERRY_VERBS_TARGET_DEV:-}" ] && [ -n "${KVFERRY_VERBS_INITIATOR_DEV:-}" ] &&
  [ -n "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
  exec "$binary" --gtest_filter="$filter"
fi
echo "SKIPPED: no Soft-RoCE VM harness at $vm and no RDMA devices named by" \
  "KVFERRY_VERBS_TARGET_DEV/KVFERRY_VERBS_INITIATOR_DEV on this host"
exit 77
