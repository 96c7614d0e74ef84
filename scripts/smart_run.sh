#!/usr/bin/env bash
# smart_run.sh: starts a deployed kvferry cluster (see smart_deploy.sh) and waits until it serves.
#
#   scripts/smart_run.sh [--systemd] [--timeout S] INVENTORY
#
# Starts the orchestrator first, then every agent (in parallel), each on its host over ssh
# under a PID file (<install_dir>/run/NAME.pid, log in <install_dir>/logs/NAME.log), and waits
# until the orchestrator's /health answers 200 and its /v1/nodes lists every agent of the
# inventory alive. Processes already running (PID file + /proc/PID/cmdline) are left alone, so a
# second run restarts nothing and only starts what is missing.
#
# On failure it says which process failed and prints the end of its log (fetched over ssh), and
# exits 1; what did start is left running (smart_stop.sh stops it).
#
# --systemd    start through the units smart_deploy.sh generated (kvferry-orchestrator.service,
#              kvferry-agent@NAME.service; installed into /etc/systemd/system on first use; needs
#              root or passwordless sudo, and one install_dir per host). The default runs the
#              processes with nohup + setsid, which is what the tests use.
# --timeout S  deadline for the whole start, in seconds (default 180): listening, registering,
#              becoming alive. Raise it for large models.
# The orchestrator is polled at http://address:port (host when address is a wildcard); set
# KVFERRY_ORCHESTRATOR_URL when this machine reaches it another way.
set -euo pipefail

KVF_PROG=smart_run
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

use_systemd=0
timeout_s=180
inventory=""
while [ $# -gt 0 ]; do
  case "$1" in
    --systemd) use_systemd=1 ;;
    --timeout) timeout_s="${2:?--timeout needs seconds}"; shift ;;
    --timeout=*) timeout_s="${1#*=}" ;;
    -h | --help) kvf_usage "$0"; exit 0 ;;
    -*) kvf_die "unknown option $1 (try --help)" ;;
    *) [ -z "$inventory" ] || kvf_die "one inventory only"; inventory="$1" ;;
  esac
  shift
done
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || kvf_die "--timeout wants a number of seconds"
kvf_load_or_die "$inventory"
for tool in curl jq; do
  command -v "$tool" >/dev/null || kvf_die "$tool is missing (scripts/install_deps.sh)"
done
systemd_flag=()
if [ "$use_systemd" = 1 ]; then
  systemd_flag=(--systemd)
  declare -A dir_of_host=()
  for t in "${KVF_TARGETS[@]}"; do
    h="${KVF_T[$t.host]}"
    if [ -n "${dir_of_host[$h]-}" ] && [ "${dir_of_host[$h]}" != "${KVF_T[$t.dir]}" ]; then
      kvf_die "--systemd: host $h has two install_dirs (${dir_of_host[$h]}, ${KVF_T[$t.dir]}); the units are per host"
    fi
    dir_of_host[$h]="${KVF_T[$t.dir]}"
  done
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start_time=$SECONDS
deadline=$((SECONDS + timeout_s))
left() { local l=$((deadline - SECONDS)); [ "$l" -gt 1 ] && echo "$l" || echo 1; }

# Prints the helper's answer for NAME: its first line after NAME@host, the rest indented.
show() {
  local name="$1" file="$2"
  printf '%s: %s: %s\n' "$KVF_PROG" "$(kvf_where "$name")" "$(head -n 1 "$file")"
  tail -n +2 "$file" | kvf_indent
}

# Reports NAME's state and the end of its log, fetched from its host.
diagnose() {
  local name="$1"
  kvf_say "$(kvf_where "$name"): $(kvf_proc "$name" status "$name" 2>&1 | head -n 1)"
  kvf_proc "$name" tail "$name" 20 2>&1 | kvf_indent || true
}

# 1. The orchestrator.
rc=0
kvf_proc orchestrator start orchestrator "$(left)" "${systemd_flag[@]}" >"$tmp/orchestrator.out" 2>&1 || rc=$?
show orchestrator "$tmp/orchestrator.out"
[ "$rc" = 0 ] || kvf_die "the orchestrator did not start; agents were not started"

# 2. The agents, in parallel (each loads its model before it listens).
declare -A rcs=()
wait_s="$(left)"
for n in "${KVF_AGENTS[@]}"; do
  (
    r=0
    kvf_proc "$n" start "$n" "$wait_s" "${systemd_flag[@]}" >"$tmp/$n.out" 2>&1 || r=$?
    echo "$r" >"$tmp/$n.rc"
  ) &
done
wait
failed=()
for n in "${KVF_AGENTS[@]}"; do
  show "$n" "$tmp/$n.out"
  rcs[$n]="$(cat "$tmp/$n.rc")"
  [ "${rcs[$n]}" = 0 ] || failed+=("$n")
done
if [ "${#failed[@]}" -gt 0 ]; then
  kvf_die "agents that did not start: ${failed[*]} (the rest is left running: smart_stop.sh stops it)"
fi

# 3. Readiness: /health 200 and every agent alive in /v1/nodes.
alive_names() {
  kvf_orch_curl -sS --max-time 5 "$KVF_ORCH_URL/v1/nodes" 2>/dev/null |
    jq -r '(if type == "array" then . else (.nodes // .data // []) end)[]
           | select(.alive == true) | .name' 2>/dev/null
}
next_check=$((SECONDS + 5))
while :; do
  alive=" $(alive_names | tr '\n' ' ') "
  missing=()
  for n in "${KVF_AGENTS[@]}"; do
    [[ "$alive" == *" $n "* ]] || missing+=("$n")
  done
  health="$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "$KVF_ORCH_URL/health" || true)"
  [ "${#missing[@]}" -gt 0 ] || [ "$health" != 200 ] || break
  if [ "$SECONDS" -ge "$deadline" ]; then
    kvf_say "FAILED: not ready within $timeout_s s: /health answers ${health:-nothing}; not alive in /v1/nodes: ${missing[*]:-none}"
    for n in orchestrator "${missing[@]}"; do diagnose "$n"; done
    exit 1
  fi
  # Every few seconds, make sure the processes we wait for still run.
  if [ "$SECONDS" -ge "$next_check" ]; then
    next_check=$((SECONDS + 5))
    for n in orchestrator "${missing[@]}"; do
      if ! kvf_proc "$n" status "$n" >/dev/null 2>&1; then
        kvf_say "FAILED: $(kvf_where "$n") exited while waiting for the cluster to be ready"
        diagnose "$n"
        exit 1
      fi
    done
  fi
  sleep 0.25
done

model_id="$(kvf_orch_curl --api -sS --max-time 5 "$KVF_ORCH_URL/v1/models" 2>/dev/null | jq -r '.data[0].id // empty' 2>/dev/null || true)"
kvf_say "cluster ready in $((SECONDS - start_time)) s: $KVF_ORCH_URL/v1 (model id ${model_id:-?}), ${#KVF_AGENTS[@]} agents alive"
printf '%-20s %-8s %-24s %s\n' NAME ROLE HOST PID
for n in "${KVF_PROCS[@]}"; do
  pid="$(sed -n 's/.*(pid \([0-9]*\).*/\1/p' "$tmp/$n.out" | head -n 1)"
  printf '%-20s %-8s %-24s %s\n' "$n" "${KVF_P[$n.role]:-http}" "${KVF_P[$n.host]}" "${pid:-?}"
done
