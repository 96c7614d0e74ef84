# shellcheck shell=bash
# common.sh — what smart_deploy.sh, smart_run.sh and smart_stop.sh share: messages, the ssh and
# rsync command lines, and calls to the per-host helper (scripts/lib/remote_proc.sh, installed as
# <install_dir>/bin/kvferry-proc by smart_deploy.sh).
#
# ssh settings come from the environment, so one inventory works from a laptop and from CI:
#   KVFERRY_SSH_KEY          identity file (-i), with IdentitiesOnly; default: ssh's own choice
#   KVFERRY_SSH_KNOWN_HOSTS  known_hosts file; default: ssh's (~/.ssh/known_hosts)
#   KVFERRY_SSH_STRICT       StrictHostKeyChecking: accept-new (default: trust a host's key on
#                            first contact, refuse it if it changes later), yes, or no
#   KVFERRY_SSH_CONFIG       ssh_config file (-F); e.g. /dev/null to ignore ~/.ssh/config
#   KVFERRY_SSH_OPTS         further ssh options, split on spaces ("-o ProxyJump=bastion")
#   KVFERRY_SSH_CONNECT_TIMEOUT  seconds (default 10)
# ssh always runs with BatchMode=yes: a host that would ask for a password fails at once.

KVF_PROG="${KVF_PROG:-kvferry}"
KVF_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
KVF_REPO="$(cd "$KVF_LIB/../.." && pwd)"
# shellcheck source=scripts/lib/inventory.sh
source "$KVF_LIB/inventory.sh"

kvf_say() { printf '%s: %s\n' "$KVF_PROG" "$*"; }
kvf_die() { printf '%s: error: %s\n' "$KVF_PROG" "$*" >&2; exit 1; }

# Indents every line of stdin by four spaces (output of remote commands under our own lines).
kvf_indent() { sed 's/^/    /'; }

kvf_ssh_init() {
  KVF_SSH=(ssh)
  [ -z "${KVFERRY_SSH_CONFIG:-}" ] || KVF_SSH+=(-F "$KVFERRY_SSH_CONFIG")
  KVF_SSH+=(-o BatchMode=yes -o LogLevel=ERROR
    -o ConnectTimeout="${KVFERRY_SSH_CONNECT_TIMEOUT:-10}"
    -o ServerAliveInterval=15 -o ServerAliveCountMax=4
    -o StrictHostKeyChecking="${KVFERRY_SSH_STRICT:-accept-new}")
  [ -z "${KVFERRY_SSH_KEY:-}" ] || KVF_SSH+=(-i "$KVFERRY_SSH_KEY" -o IdentitiesOnly=yes)
  [ -z "${KVFERRY_SSH_KNOWN_HOSTS:-}" ] || KVF_SSH+=(-o UserKnownHostsFile="$KVFERRY_SSH_KNOWN_HOSTS")
  if [ -n "${KVFERRY_SSH_OPTS:-}" ]; then
    local extra
    read -r -a extra <<<"$KVFERRY_SSH_OPTS"
    KVF_SSH+=("${extra[@]}")
  fi
  command -v ssh >/dev/null || kvf_die "ssh is missing (Debian: apt install openssh-client)"
}

# kvf_ssh TARGET ARG...: runs ARG... on TARGET's host. Each ARG is quoted with printf %q, which
# any POSIX login shell reads back as long as no ARG holds a newline or control character.
kvf_ssh() {
  local t="$1" cmd
  shift
  cmd="$(printf '%q ' "$@")"
  "${KVF_SSH[@]}" -p "${KVF_T[$t.ssh_port]}" -l "${KVF_T[$t.user]}" -- "${KVF_T[$t.host]}" "$cmd"
}

# The -e argument of rsync: our ssh command line for TARGET (rsync splits it on spaces and
# honours quotes; paths from the environment are quoted with %q).
kvf_rsync_rsh() {
  local t="$1"
  printf '%q ' "${KVF_SSH[@]}" -p "${KVF_T[$t.ssh_port]}" -l "${KVF_T[$t.user]}"
}

# user@host:dir for rsync, with IPv6 hosts in brackets.
kvf_rsync_dest() {
  local t="$1" h="${KVF_T[$1.host]}"
  case "$h" in *:*) h="[$h]" ;; esac
  printf '%s@%s:%s' "${KVF_T[$t.user]}" "$h" "${KVF_T[$t.dir]}"
}

# kvf_proc NAME ARG...: runs the host helper of process NAME (kvferry-proc ARG...). Exit status
# 4 with a message when the helper is not there (nothing was deployed to that host).
kvf_proc() {
  local name="$1" t helper
  shift
  t="${KVF_P[$name.target]}"
  helper="${KVF_T[$t.dir]}/bin/kvferry-proc"
  # shellcheck disable=SC2016 # $0 and $@ expand on the host
  kvf_ssh "$t" sh -c 'if [ -x "$0" ]; then exec "$0" "$@"; fi; echo "nothing deployed here ($0 is missing): run smart_deploy.sh first"; exit 4' \
    "$helper" "$@"
}

# "NAME@host" for messages.
kvf_where() { printf '%s@%s' "$1" "${KVF_P[$1.host]}"; }

# Loads and validates the inventory (or stops with its errors) and sets up ssh. Sets
# KVF_SECRETS: the cluster's secrets on this machine (scripts/make_secrets.sh; smart_deploy.sh
# makes them): $KVFERRY_SECRETS_DIR, else beside the inventory, INVENTORY-without-.yaml.secrets/.
kvf_load_or_die() {
  [ -n "${1:-}" ] || kvf_die "no inventory given (try --help)"
  kvf_inventory_load "$1" || kvf_die "the inventory has errors (above)"
  kvf_ssh_init
  KVF_SECRETS="${KVFERRY_SECRETS_DIR:-${KVF_INVENTORY%.y*ml}.secrets}"
}

# curl to the orchestrator as its operator: the cluster secret as Bearer (for /v1/nodes), or with
# `--api` as a client (the first API key).
kvf_orch_curl() {
  local credential="$KVF_SECRETS/cluster.secret"
  if [ "$1" = --api ]; then credential="$KVF_SECRETS/api_keys"; shift; fi
  curl -H "Authorization: Bearer $(head -n 1 "$credential" 2>/dev/null)" "$@"
}

# Prints the usage text of the calling script: its comment block after the shebang.
kvf_usage() { sed -n '2,/^[^#]/p' "$1" | sed -e '/^[^#]/d' -e 's/^# \{0,1\}//'; }
