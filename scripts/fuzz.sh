#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer targets (fuzz/, the `fuzz` preset: clang + ASan + UBSan) and runs
# each for a bounded time, starting from its corpus in fuzz/corpus/<target>/. Every crash kept in
# fuzz/regressions/<target>/ is replayed first. A target that crashes (or leaks) fails the run; its
# input is left in build/fuzz/crashes/<target>/ — fix the bug, then copy the input into
# fuzz/regressions/<target>/ so it stays fixed.
#
#   scripts/fuzz.sh                    every target, 45 s each (fuzz_config: its regressions only)
#   scripts/fuzz.sh --seconds 600 fuzz_gguf
#   scripts/fuzz.sh --list
#
# fuzz_config is fuzzed only when named: it finds infinite loops of yaml-cpp 0.7 (Debian 12's)
# faster than the config loader can route around them (fuzz/known_hangs/ keeps one it cannot);
# the classes it found are refused before yaml-cpp sees them, and those inputs are replayed.
#
# Environment: KVFERRY_FUZZ_SECONDS (default 45) as --seconds. scripts/test.sh runs this after
# the test suites.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${KVFERRY_FUZZ_SECONDS:-45}"
targets=()
all=(fuzz_openai_request fuzz_config fuzz_gguf fuzz_control_wire fuzz_endpoint_blob fuzz_http_request
  fuzz_tcp_frames)
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift ;;
    --list) printf '%s\n' "${all[@]}"; exit 0 ;;
    -h | --help) sed -n '2,/^[^#]/p' "$0" | sed -e '/^[^#]/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    fuzz_*) targets+=("$1") ;;
    *) echo "fuzz.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
replay_only=()
if [ "${#targets[@]}" -eq 0 ]; then
  targets=("${all[@]}")
  replay_only=(fuzz_config)
fi
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is missing: run scripts/install_deps.sh" >&2; exit 1; }

cd "$root"
echo "== fuzz: build (${targets[*]})"
cmake --preset fuzz >/dev/null
cmake --build build/fuzz -j "$(nproc 2>/dev/null || echo 2)" --target "${targets[@]}"

failed=()
for t in "${targets[@]}"; do
  bin="build/fuzz/fuzz/$t"
  work="build/fuzz/corpus/$t"  # the run's corpus grows here; the repo's seeds stay as they are
  crashes="build/fuzz/crashes/$t"
  mkdir -p "$work" "$crashes"
  regressions=()
  if [ -d "fuzz/regressions/$t" ]; then
    mapfile -t regressions < <(find "fuzz/regressions/$t" -type f | sort)
  fi
  if [ "${#regressions[@]}" -gt 0 ]; then
    echo "== fuzz: $t: replaying ${#regressions[@]} regression inputs"
    if ! "$bin" "${regressions[@]}" >"$crashes/regressions.log" 2>&1; then
      tail -n 30 "$crashes/regressions.log"
      failed+=("$t (a regression input)")
      continue
    fi
  fi
  if [[ " ${replay_only[*]} " == *" $t "* ]]; then
    echo "== fuzz: $t: regressions only (name it to fuzz it)"
    continue
  fi
  echo "== fuzz: $t for $seconds s"
  # A fixed seed: CI runs the same mutations each time (KVFERRY_FUZZ_SEED changes it).
  if "$bin" -seed="${KVFERRY_FUZZ_SEED:-1}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$crashes/" -print_final_stats=1 "$work" "fuzz/corpus/$t" \
    >"$crashes/run.log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$crashes/run.log" |
      sed "s/^/   $t: /"
  else
    tail -n 40 "$crashes/run.log"
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in build/fuzz/crashes/)" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, $seconds s each, no crash"
