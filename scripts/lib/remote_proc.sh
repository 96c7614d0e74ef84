#!/usr/bin/env bash
# kvferry-proc: starts, checks and stops the kvferry processes of one host, each under a PID
# file. smart_deploy.sh installs this file (scripts/lib/remote_proc.sh) as
# <install_dir>/bin/kvferry-proc; smart_run.sh and smart_stop.sh call it over ssh.
#
#   kvferry-proc start NAME WAIT_S [--systemd]  start NAME unless it runs; wait until it listens
#   kvferry-proc status NAME                    "running (pid P, port N)" (0) or "not running" (3)
#   kvferry-proc stop NAME DEADLINE_S           SIGTERM; SIGKILL only after DEADLINE_S (says so)
#   kvferry-proc tail NAME [LINES]              the end of NAME's log
#
# NAME is "orchestrator" or an agent name. A process is NAME's only if the PID in
# run/NAME.pid is alive and its /proc/PID/cmdline is exactly the command line below, so a stale
# PID file, or a PID the kernel gave to another program since, is never signalled:
#   <dir>/bin/orchestrator --config <dir>/config/orchestrator.yaml --port-file <dir>/run/orchestrator.port
#   <dir>/bin/node_agent --config <dir>/config/node_agent-NAME.yaml --port-file <dir>/run/NAME.port
# Environment for the process (CUDA_VISIBLE_DEVICES) comes from config/NAME.env. Logs are
# appended to logs/NAME.log. Exit status: 0 done, 1 failed, 2 usage, 3 not running (status),
# 5 stopped only by SIGKILL (stop).
set -euo pipefail

case "$0" in
  /*) dir="$(dirname "$(dirname "$0")")" ;;
  *) dir="$(cd "$(dirname "$0")/.." && pwd)" ;;
esac

usage() { sed -n '2,/^[^#]/p' "$0" | sed -e '/^[^#]/d' -e 's/^# \{0,1\}//' >&2; exit 2; }

cmd="${1:-}"
name="${2:-}"
if [ -z "$cmd" ] || [ -z "$name" ]; then usage; fi
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || { echo "bad process name '$name'" >&2; exit 2; }

pid_file="$dir/run/$name.pid"
port_file="$dir/run/$name.port"
log_file="$dir/logs/$name.log"
env_file="$dir/config/$name.env"
if [ "$name" = orchestrator ]; then
  config="$dir/config/orchestrator.yaml"
  argv=("$dir/bin/orchestrator" --config "$config" --port-file "$port_file")
  unit=kvferry-orchestrator.service
else
  config="$dir/config/node_agent-$name.yaml"
  argv=("$dir/bin/node_agent" --config "$config" --port-file "$port_file")
  unit="kvferry-agent@$name.service"
fi

# True when PID runs our exact command line (a zombie's cmdline is empty: not ours).
is_ours() {
  local pid="$1" i
  local -a got=()
  [ -r "/proc/$pid/cmdline" ] || return 1
  mapfile -d '' -t got <"/proc/$pid/cmdline" 2>/dev/null || return 1
  [ "${#got[@]}" -eq "${#argv[@]}" ] || return 1
  for i in "${!argv[@]}"; do [ "${got[$i]}" = "${argv[$i]}" ] || return 1; done
}

# True while PID exists and is not a zombie (whatever it runs).
exists() {
  local state
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Prints the PID from the PID file when that process is ours and alive.
live_pid() {
  local pid
  [ -f "$pid_file" ] || return 1
  pid="$(cat "$pid_file" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid" || return 1
  echo "$pid"
}

log_tail() {
  local lines="${1:-20}"
  if [ -s "$log_file" ]; then
    echo "last $lines lines of $log_file:"
    tail -n "$lines" "$log_file" | sed 's/^/  | /'
  else
    echo "($log_file is empty or missing)"
  fi
}

have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }

# Copies the units smart_deploy.sh generated in <dir>/systemd into /etc/systemd/system.
install_units() {
  local f changed=0
  for f in "$dir"/systemd/*.service; do
    [ -f "$f" ] || continue
    if ! cmp -s "$f" "/etc/systemd/system/$(basename "$f")"; then
      as_root install -m 0644 "$f" /etc/systemd/system/ || return 1
      changed=1
    fi
  done
  [ "$changed" = 0 ] || as_root systemctl daemon-reload
}

# The unit's main PID when systemd runs NAME, else nothing.
unit_pid() {
  have_systemd || return 1
  local pid
  pid="$(systemctl show -p MainPID --value "$unit" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ "$pid" != 0 ] && echo "$pid"
}

now_ds() { local t="${EPOCHREALTIME/./}"; echo $((t / 100000)); }   # tenths of a second

do_start() {
  local wait_s="$1" use_systemd="$2" pid port envs=() line deadline status
  [[ "$wait_s" =~ ^[0-9]+$ ]] || usage
  if pid="$(live_pid)"; then
    port="$(cat "$port_file" 2>/dev/null || true)"
    echo "already running (pid $pid${port:+, port $port}); not restarted"
    return 0
  fi
  [ -x "${argv[0]}" ] || { echo "failed: ${argv[0]} is missing: run smart_deploy.sh"; return 1; }
  [ -f "$config" ] || { echo "failed: $config is missing: run smart_deploy.sh"; return 1; }
  mkdir -p "$dir/run" "$dir/logs"
  if [ -f "$pid_file" ]; then echo "removing a stale PID file (pid $(cat "$pid_file" 2>/dev/null) is gone)"; fi
  rm -f "$pid_file" "$port_file"
  if [ -f "$env_file" ]; then
    while IFS= read -r line; do
      [[ "$line" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] && envs+=("$line")
    done <"$env_file"
  fi
  printf '=== %s kvferry-proc: starting %s ===\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$name" >>"$log_file"

  if [ "$use_systemd" = 1 ]; then
    have_systemd || { echo "failed: --systemd, but systemd does not run this host"; return 1; }
    install_units || { echo "failed: cannot install the units (root or passwordless sudo needed)"; return 1; }
    as_root systemctl start "$unit" || { echo "failed: systemctl start $unit"; log_tail; return 1; }
    pid="$(unit_pid)" || { echo "failed: $unit has no main process"; log_tail; return 1; }
  else
    cd "$dir"
    # setsid: own session, so the ssh session ending cannot signal it; nohup for SIGHUP anyway.
    # Both exec, so $! is the PID of the process itself.
    nohup setsid env "${envs[@]}" "${argv[@]}" >>"$log_file" 2>&1 </dev/null &
    pid=$!
  fi
  echo "$pid" >"$pid_file.tmp"
  mv "$pid_file.tmp" "$pid_file"

  deadline=$(($(now_ds) + wait_s * 10))
  while :; do
    if [ -s "$port_file" ] && is_ours "$pid"; then
      echo "started (pid $pid, port $(cat "$port_file"))"
      return 0
    fi
    if ! exists "$pid"; then
      status="?"
      if [ "$use_systemd" = 0 ]; then wait "$pid" && status=0 || status=$?; fi
      rm -f "$pid_file"
      echo "failed: $name exited during start-up (exit status $status)"
      log_tail
      return 1
    fi
    if [ "$(now_ds)" -ge "$deadline" ]; then
      echo "failed: $name (pid $pid) runs but did not listen within $wait_s s; left running"
      log_tail
      return 1
    fi
    sleep 0.1
  done
}

do_stop() {
  local deadline_s="$1" pid start end killed=0
  [[ "$deadline_s" =~ ^[0-9]+$ ]] || usage
  if ! pid="$(live_pid)"; then
    if [ -f "$pid_file" ]; then
      echo "not running (removed a stale PID file: pid $(cat "$pid_file" 2>/dev/null) is gone or runs something else)"
    else
      echo "not running"
    fi
    rm -f "$pid_file" "$port_file"
    return 0
  fi
  start="$(now_ds)"
  if [ "$(unit_pid || true)" = "$pid" ]; then
    # systemd would restart a killed unit; let it stop the unit (TimeoutStopSec, then SIGKILL).
    as_root systemctl stop "$unit" || { echo "failed: systemctl stop $unit"; return 1; }
    [ "$(systemctl show -p Result --value "$unit" 2>/dev/null)" != timeout ] || killed=1
  else
    kill -TERM "$pid" 2>/dev/null || true
    end=$((start + deadline_s * 10))
    while is_ours "$pid" && [ "$(now_ds)" -lt "$end" ]; do sleep 0.1; done
    if is_ours "$pid"; then
      echo "pid $pid still running $deadline_s s after SIGTERM: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
      end=$(($(now_ds) + 50))
      while is_ours "$pid" && [ "$(now_ds)" -lt "$end" ]; do sleep 0.1; done
      if is_ours "$pid"; then echo "failed: pid $pid survived SIGKILL"; return 1; fi
    fi
  fi
  rm -f "$pid_file" "$port_file"
  local took=$(($(now_ds) - start))
  if [ "$killed" = 1 ]; then
    echo "killed (pid $pid, SIGKILL after the $deadline_s s deadline)"
    return 5
  fi
  echo "stopped (pid $pid, SIGTERM, $((took / 10)).$((took % 10)) s)"
}

case "$cmd" in
  start)
    systemd=0
    [ "${4:-}" = --systemd ] && systemd=1
    do_start "${3:-}" "$systemd"
    ;;
  stop) do_stop "${3:-}" ;;
  status)
    if pid="$(live_pid)"; then
      echo "running (pid $pid, port $(cat "$port_file" 2>/dev/null || echo '?'))"
    else
      echo "not running"
      exit 3
    fi
    ;;
  tail) log_tail "${3:-20}" ;;
  *) usage ;;
esac
