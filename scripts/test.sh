#!/usr/bin/env bash
# Configures, builds and runs every test that can run on this machine.
#
#   scripts/test.sh               # default preset: unit + integration tests
#   scripts/test.sh asan          # the same under ASan + UBSan (tsan: ThreadSanitizer)
#   scripts/test.sh default -L unit   # extra arguments go to ctest
#
# The default preset, run whole (no ctest arguments), then runs every unit test binary under
# ASan + UBSan, the transfer engine's, the orchestrator's and the agent's (rdma_tests,
# orchestrator_tests, node_agent_tests) under TSan, and every integration test with the
# processes it starts built with ASan + UBSan
# (KVFERRY_SANITIZER_TESTS=0 skips all that), and fuzzes every libFuzzer target for
# KVFERRY_FUZZ_SECONDS (default 45) each (scripts/fuzz.sh; 0 skips it).
#
# Labels: unit (no hardware), integration (real processes on 127.0.0.1). Tests that need a GPU
# (gpu) or Soft-RoCE (rxe) join when those exist. Uses ccache when present.
set -euo pipefail

preset="${1:-default}"
[ $# -gt 0 ] && shift
case "$preset" in
  default | asan | tsan | release) ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "test.sh: unknown preset '$preset' (default, asan, tsan or release)" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
jobs="$(nproc 2>/dev/null || echo 2)"

if command -v ccache >/dev/null; then
  export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
  export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
fi

echo "== configure ($preset)"
cmake --preset "$preset" >/dev/null
echo "== build"
cmake --build "build/$preset" -j "$jobs"
vm="${RXE_VM:-$root/../shared/tools/rxe-vm/run-in-vm.sh}"
if [ -x "$vm" ]; then
  echo "== rxe: the verbs tests run inside the Soft-RoCE VM ($vm)"
elif [ -n "${KVFERRY_VERBS_TARGET_DEV:-}" ] && [ -n "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
  echo "== rxe: the verbs tests run on this host's RDMA devices"
else
  echo "== rxe: the verbs tests will be SKIPPED: no Soft-RoCE VM harness at $vm and no RDMA" \
    "devices named by KVFERRY_VERBS_TARGET_DEV/KVFERRY_VERBS_INITIATOR_DEV"
fi
echo "== test"
cd "build/$preset"
ctest --output-on-failure -j "$jobs" --timeout 300 "$@"
cd "$root"
if [ "$preset" = default ] && [ $# -eq 0 ] && [ "${KVFERRY_SANITIZER_TESTS:-1}" != 0 ]; then
  # Every unit test binary under ASan + UBSan, and the threads of the transfer engine, the
  # orchestrator and the agent (control API, membership, batching loop, KV sender and receiver)
  # under TSan. Test binaries only: building the whole tree once more per sanitizer would not fit
  # CI's time.
  threaded=(rdma/rdma_tests orchestrator/orchestrator_tests node_agent/node_agent_tests)
  unit=("${threaded[@]}" common/common_tests common/http_tests common/control_wire_tests
    common/control_auth_tests config/config_tests model/model_tests node_agent/engine/engine_tests
    orchestrator/openai/openai_tests orchestrator/scheduler/scheduler_tests
    bench/benchmark_client_tests)
  for sanitizer in asan tsan; do
    tests=("${threaded[@]}")
    [ "$sanitizer" = asan ] && tests=("${unit[@]}")
    targets=()
    for t in "${tests[@]}"; do targets+=(--target "${t##*/}"); done
    echo "== $sanitizer: ${tests[*]##*/}"
    cmake --preset "$sanitizer" >/dev/null
    cmake --build "build/$sanitizer" -j "$jobs" "${targets[@]}"
    for t in "${tests[@]}"; do "build/$sanitizer/tests/$t" --gtest_brief=1; done
  done
  # Every integration test (the disaggregated pipeline, faults under load, the cluster scripts,
  # quickstart, ...) with the processes it starts built with ASan + UBSan. A sanitizer report
  # kills the process that found it and is written under $reports (leaks: when a process exits);
  # any report fails the run. (Processes the cluster scripts start over ssh report on stderr.)
  echo "== asan: integration tests"
  cmake --build build/asan -j "$jobs" --target orchestrator node_agent kvferry-make-model \
    kvferry-tokenize transfer_bench fake_agent benchmark_client benchmark_client_integration_tests
  reports="$(mktemp -d)"
  status=0
  (cd build/asan && ASAN_OPTIONS="log_path=$reports/asan" \
    UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1" ctest --output-on-failure \
    -L integration --timeout 600) || status=$?
  # The reports first: a failed test is often a process a sanitizer stopped.
  if [ -n "$(ls -A "$reports")" ]; then
    for report in "$reports"/*; do echo "--- $report"; cat "$report"; done
    echo "test.sh: the sanitizers reported errors in the integration tests' processes" >&2
    status=1
  fi
  rm -rf "$reports"
  [ "$status" = 0 ] || exit "$status"
fi
if [ "$preset" = default ] && [ $# -eq 0 ] && [ "${KVFERRY_FUZZ_SECONDS:-45}" != 0 ]; then
  echo "== fuzz"
  "$root/scripts/fuzz.sh"
fi
