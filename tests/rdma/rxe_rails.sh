#!/usr/bin/env bash
# ctest rxe_rails: transport.rails over real verbs (VerbsRailsTest in rdma_tests) on two
# Soft-RoCE links per side. Boots the rxe VM with no RDMA device (--topology none), builds the
# two-rails topology inside it (rxe_two_rails.sh: rxe_a0/rxe_a1 ⇄ rxe_b0/rxe_b1 on two veth
# pairs) and runs the tests there, the initiator on side A, the target on side B, rail 1's link
# taken down mid-run. Exit 77 (skipped) without the VM harness.
#
#   tests/rdma/rxe_rails.sh RDMA_TESTS_BINARY
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ "${1:-}" = --inside ]; then  # in the VM
  binary="$2"
  bash "$here/rxe_two_rails.sh" setup >/dev/null
  eval "$(bash "$here/rxe_two_rails.sh" print-env)"
  export KVFERRY_RAILS_TARGET_DEVS="$RAILS_B_DEVS" KVFERRY_RAILS_INITIATOR_DEVS="$RAILS_A_DEVS"
  export KVFERRY_RAILS_TARGET_IP="${RAILS_B_IPS%%,*}" KVFERRY_RAILS_INITIATOR_IP="${RAILS_A_IPS%%,*}"
  export KVFERRY_RAILS_LINK_DOWN="bash $here/rxe_two_rails.sh link-down 1 >/dev/null"
  export KVFERRY_RAILS_LINK_UP="bash $here/rxe_two_rails.sh link-up 1 >/dev/null"
  exec "$binary" --gtest_filter='VerbsRailsTest.*'
fi
binary="${1:?usage: rxe_rails.sh RDMA_TESTS_BINARY}"
vm="${RXE_VM:-$here/../../../shared/tools/rxe-vm/run-in-vm.sh}"
if [ ! -x "$vm" ]; then
  echo "SKIPPED: no Soft-RoCE VM harness at $vm"
  exit 77
fi
exec "$vm" --topology none --timeout 900 -- bash "$here/rxe_rails.sh" --inside "$binary"
