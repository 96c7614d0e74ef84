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
  # Soft-RoCE emulated under TCG, beside other tests on two cores, now and then ends a queue pair
  # with an error a real fabric does not give (seen once in CI: "remote invalid request" in the
  # middle of a batch, never reproduced in 140 runs, loaded or not). So the tests that failed run
  # once more in a fresh VM, and only a test that fails both times fails the suite. The first
  # run's output stays in the log above the rerun.
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  status=0
  "$vm" --timeout 1400 -- "$binary" --gtest_filter="$filter" --gtest_brief=1 2>&1 | tee "$log" ||
    status=$?
  [ "$status" -eq 0 ] && exit 0
  failed="$(sed -n 's/^\[  FAILED  \] \([^ ,]*\).*/\1/p' "$log" | sort -u | paste -sd: -)"
  if [ -z "$failed" ]; then
    echo "run_rxe.sh: the VM run ended with status $status and no failed test named; not rerun"
    exit "$status"
  fi
  echo "run_rxe.sh: rerunning once in a fresh VM what failed (status $status): $failed"
  "$vm" --timeout 1400 -- "$binary" --gtest_filter="$failed" --gtest_brief=1
  exit $?
fi
if [ -n "${KVFERRY_VERBS_TARGET_DEV:-}" ] && [ -n "${KVFERRY_VERBS_INITIATOR_DEV:-}" ] &&
  [ -n "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
  exec "$binary" --gtest_filter="$filter"
fi
echo "SKIPPED: no Soft-RoCE VM harness at $vm and no RDMA devices named by" \
  "KVFERRY_VERBS_TARGET_DEV/KVFERRY_VERBS_INITIATOR_DEV on this host"
exit 77
