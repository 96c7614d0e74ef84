#!/usr/bin/env bash
# smart_stop.sh: stops a kvferry cluster started by smart_run.sh, gracefully.
#
#   scripts/smart_stop.sh [--timeout S] [--orchestrator-timeout S] INVENTORY
#
# SIGTERMs every agent at once (each drains its running requests, leaves the cluster and exits),
# waits up to --timeout seconds (default 45: above the agents' default 30 s drain), then SIGTERMs
# the orchestrator and waits up to --orchestrator-timeout (default 20; it drains for 10 s).
# A process still running at its deadline gets SIGKILL, and the output says so. Processes are
# found only by their PID file and checked against /proc/PID/cmdline, never by name, so a stale
# PID file never signals another program. Safe to run twice: what is not running is reported
# as such. Processes started with smart_run.sh --systemd are stopped with systemctl stop.
#
# Exit status: 0 when everything is stopped (even if some needed SIGKILL), 1 when a host could
# not be reached or a process could not be stopped.
set -euo pipefail

KVF_PROG=smart_stop
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

agent_timeout=45
orchestrator_timeout=20
inventory=""
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) agent_timeout="${2:?--timeout needs seconds}"; shift ;;
    --timeout=*) agent_timeout="${1#*=}" ;;
    --orchestrator-timeout) orchestrator_timeout="${2:?--orchestrator-timeout needs seconds}"; shift ;;
    --orchestrator-timeout=*) orchestrator_timeout="${1#*=}" ;;
    -h | --help) kvf_usage "$0"; exit 0 ;;
    -*) kvf_die "unknown option $1 (try --help)" ;;
    *) [ -z "$inventory" ] || kvf_die "one inventory only"; inventory="$1" ;;
  esac
  shift
done
[[ "$agent_timeout" =~ ^[0-9]+$ ]] || kvf_die "--timeout wants a number of seconds"
[[ "$orchestrator_timeout" =~ ^[0-9]+$ ]] || kvf_die "--orchestrator-timeout wants a number of seconds"
kvf_load_or_die "$inventory"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
problems=()
killed=()

# Reads the helper's answer for NAME (exit status in $tmp/NAME.rc) and prints it.
report() {
  local n="$1" rc
  rc="$(cat "$tmp/$n.rc")"
  printf '%s: %s: %s\n' "$KVF_PROG" "$(kvf_where "$n")" "$(tail -n 1 "$tmp/$n.out")"
  head -n -1 "$tmp/$n.out" | kvf_indent
  case "$rc" in
    0 | 4) ;;                       # stopped / not running / nothing deployed there
    5) killed+=("$n") ;;            # stopped only by SIGKILL after the deadline
    *) problems+=("$n") ;;
  esac
}

stop_one() {
  local n="$1" deadline="$2" r=0
  kvf_proc "$n" stop "$n" "$deadline" >"$tmp/$n.out" 2>&1 || r=$?
  [ -s "$tmp/$n.out" ] || echo "no answer (exit status $r)" >"$tmp/$n.out"
  echo "$r" >"$tmp/$n.rc"
}

kvf_say "stopping ${#KVF_AGENTS[@]} agents (SIGTERM; SIGKILL after $agent_timeout s)"
for n in "${KVF_AGENTS[@]}"; do stop_one "$n" "$agent_timeout" & done
wait
for n in "${KVF_AGENTS[@]}"; do report "$n"; done

kvf_say "stopping the orchestrator (SIGTERM; SIGKILL after $orchestrator_timeout s)"
stop_one orchestrator "$orchestrator_timeout"
report orchestrator

if [ "${#killed[@]}" -gt 0 ]; then
  kvf_say "WARNING: killed with SIGKILL after their deadline: ${killed[*]} (their logs say why they did not exit)"
fi
if [ "${#problems[@]}" -gt 0 ]; then
  kvf_die "could not stop (or reach) the hosts of: ${problems[*]}"
fi
kvf_say "stopped"
