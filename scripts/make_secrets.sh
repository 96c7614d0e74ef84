#!/usr/bin/env bash
# make_secrets.sh — the secrets of one kvferry cluster, in DIR (made mode 700), each file mode 600:
#
#   DIR/cluster.secret  the control plane's shared secret (64 hex characters): the orchestrator
#                       and every agent read it (auth.cluster_secret_file, --cluster-secret-file)
#                       and sign every control call with it; operators send it as
#                       'Authorization: Bearer <secret>' to read GET /v1/nodes
#   DIR/api_keys        the OpenAI API's key (auth.api_keys_file): clients send
#                       'Authorization: Bearer <key>'; add lines for more keys
#
#   scripts/make_secrets.sh DIR
#
# A file that exists is kept (so a cluster keeps its secrets across deploys); delete it and run
# again to rotate. Prints nothing secret, only the paths. quickstart.sh and smart_deploy.sh call
# this themselves.
set -euo pipefail

case "${1:-}" in
  -h | --help | "")
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "${1:-}" ] || exit 2
    exit 0
    ;;
esac
dir="$1"

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 -v | tr -d ' \n'; }

mkdir -p "$dir"
chmod 700 "$dir"
umask 077
made=()
if [ ! -s "$dir/cluster.secret" ]; then
  random_hex 32 >"$dir/cluster.secret.tmp"
  echo >>"$dir/cluster.secret.tmp"
  mv "$dir/cluster.secret.tmp" "$dir/cluster.secret"
  made+=(cluster.secret)
fi
if [ ! -s "$dir/api_keys" ]; then
  echo "sk-kvferry-$(random_hex 24)" >"$dir/api_keys.tmp"
  mv "$dir/api_keys.tmp" "$dir/api_keys"
  made+=(api_keys)
fi
chmod 600 "$dir/cluster.secret" "$dir/api_keys"
if [ "${#made[@]}" -gt 0 ]; then
  echo "make_secrets.sh: made ${made[*]} in $dir"
else
  echo "make_secrets.sh: $dir already holds cluster.secret and api_keys (kept)"
fi
