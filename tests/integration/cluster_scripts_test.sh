#!/usr/bin/env bash
# cluster_scripts_test.sh: smart_deploy.sh, smart_run.sh, smart_stop.sh and verify_gpudirect.sh
# as an operator uses them, on loopback, with real ssh.
#
# Four sshd (Debian's openssh-server) play four hosts, 127.0.0.2 .. 127.0.0.5, each on its own
# port with its own host key, run as the current user and accepting a fresh key; each host gets
# its own install directory under a temporary root. The inventory: the orchestrator on .2,
# prefill0 on .3, prefill1 + decode1 on .4, decode0 on .5; every port is chosen at run time
# (bound to port 0 by perl, which Debian always has). The test checks:
#   - bad inventories are refused with FILE:LINE: what (unknown key, missing role, duplicate port);
#   - deploy puts binaries, model and generated configs where they belong;
#   - run brings the cluster up; chat requests get 200 and text; every agent is reached on the
#     address the inventory gave it;
#   - run again restarts nothing (same PIDs); deploy again copies nothing (rsync's itemized
#     output, and the inode + mtime of every deployed file);
#   - stop is graceful (every agent leaves the orchestrator before it stops), safe twice, and a
#     stale PID file (naming another live process) is removed without signalling it;
#   - a process that cannot start (its port is taken) is named, with its log tail;
#   - a process that ignores SIGTERM gets SIGKILL after the deadline, and the output says so;
#   - verify_gpudirect.sh reports per check and, here without RDMA, exits 1;
#   - no process of the cluster and no sshd is left (by recorded PIDs).
# Exit 77 (ctest: skipped) when sshd, rsync or another tool is missing.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${KVFERRY_BUILD_DIR:-$repo/build/default}"
model="$repo/tests/data/models/stories260K/stories260K.gguf"
scripts="$repo/scripts"

step() { printf '\n=== %s (t=%ss)\n' "$*" "$SECONDS"; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }

sshd_bin="$(command -v sshd || echo /usr/sbin/sshd)"
[ -x "$sshd_bin" ] || { echo "SKIP: sshd is missing (apt install openssh-server)"; exit 77; }
for tool in ssh ssh-keygen rsync curl jq perl setsid timeout; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is missing (scripts/install_deps.sh)"; exit 77; }
done
for f in "$build/orchestrator/orchestrator" "$build/node_agent/node_agent"; do
  [ -x "$f" ] || fail "$f is missing (set KVFERRY_BUILD_DIR)"
done

root="$(mktemp -d /tmp/kvferry-cluster-test.XXXXXX)"
inventory="$root/inventory.yaml"
# A snapshot of the binaries: the build directory may be rebuilt while the test runs, and the
# second deploy must then still find nothing new.
mkdir -p "$root/build/orchestrator" "$root/build/node_agent"
cp -p "$build/orchestrator/orchestrator" "$root/build/orchestrator/"
cp -p "$build/node_agent/node_agent" "$root/build/node_agent/"
build="$root/build"
hosts=(127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5)
sshd_pids=()
cluster_pids=()

# True while PID exists and is not a zombie.
alive() {
  local state
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ "$state" != Z ] && [ "$state" != X ]
}

cleanup() {
  local rc=$? pid f
  set +e
  trap - EXIT
  if [ "$rc" != 0 ]; then
    echo "--- logs of the failed run (last lines) ---"
    for f in "$root"/h*/kvferry/logs/*.log "$root"/sshd-*.log; do
      [ -s "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }
    done
    # Stop what the scripts started, by the PID files (every "host" is this machine).
    for f in "$root"/h*/kvferry/run/*.pid; do
      [ -f "$f" ] || continue
      pid="$(cat "$f")"
      if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "^$root/"; then
        kill -KILL "$pid" 2>/dev/null
      fi
    done
  fi
  for pid in "${sshd_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${sshd_pids[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$root"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# Every step runs under `timeout`, and all of them within 480 s, so the cleanup above still runs
# before ctest's TIMEOUT (600) could kill this script and leave daemons behind.
test_deadline=$((SECONDS + 480))
bounded() {
  local s="$1" left=$((test_deadline - SECONDS))
  shift
  [ "$left" -gt 0 ] || fail "out of time (the whole test is bounded to 480 s)"
  [ "$s" -le "$left" ] || s="$left"
  timeout "$s" "$@"
}

# Free ports, one per address given: all bound at once to port 0 (so they are distinct), then
# released.
free_ports() {
  perl -MIO::Socket::INET -e '
    my @s;
    for my $a (@ARGV) {
      my $s = IO::Socket::INET->new(LocalAddr => $a, LocalPort => 0, Listen => 1) or die "$a: $!\n";
      push @s, $s;
      print $s->sockport, "\n";
    }' "$@"
}

step "four sshd on ${hosts[*]}"
mapfile -t ports < <(free_ports "${hosts[@]}" 127.0.0.2 127.0.0.3 127.0.0.3 127.0.0.4 127.0.0.4 \
  127.0.0.4 127.0.0.4 127.0.0.5 127.0.0.5)
[ "${#ports[@]}" = 13 ] || fail "could not find free ports"
ssh-keygen -q -t ed25519 -N '' -C kvferry-test -f "$root/id_ed25519"
cp "$root/id_ed25519.pub" "$root/authorized_keys"
# sshd running as root needs its privilege-separation directory (the package's unit creates it).
if [ "$(id -u)" = 0 ] && [ ! -d /run/sshd ]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
for i in "${!hosts[@]}"; do
  h="$root/h$i"
  mkdir -p "$h"
  ssh-keygen -q -t ed25519 -N '' -f "$h/ssh_host_ed25519_key"
  cat >"$h/sshd_config" <<EOF
ListenAddress ${hosts[$i]}:${ports[$i]}
HostKey $h/ssh_host_ed25519_key
PidFile $h/sshd.pid
AuthorizedKeysFile $root/authorized_keys
AllowUsers $(id -un)
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PrintMotd no
LogLevel ERROR
EOF
  "$sshd_bin" -D -f "$h/sshd_config" -E "$root/sshd-$i.log" &
  sshd_pids+=($!)
done

export KVFERRY_SSH_CONFIG=/dev/null
export KVFERRY_SSH_KEY="$root/id_ed25519"
export KVFERRY_SSH_KNOWN_HOSTS="$root/known_hosts"
export KVFERRY_SSH_STRICT=accept-new
ssh_to() {
  ssh -F /dev/null -i "$KVFERRY_SSH_KEY" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o UserKnownHostsFile="$KVFERRY_SSH_KNOWN_HOSTS" -o StrictHostKeyChecking=accept-new \
    -o LogLevel=ERROR -o ConnectTimeout=5 -p "$2" "$(id -un)@$1" "${@:3}"
}
for i in "${!hosts[@]}"; do
  for attempt in $(seq 100); do
    ssh_to "${hosts[$i]}" "${ports[$i]}" true 2>/dev/null && break
    alive "${sshd_pids[$i]}" || fail "sshd ${hosts[$i]} exited: $(cat "$root/sshd-$i.log")"
    [ "$attempt" -lt 100 ] || fail "sshd on ${hosts[$i]}:${ports[$i]} does not answer"
    sleep 0.1
  done
done
echo "sshd up: ${hosts[*]} on ports ${ports[*]:0:4}"

write_inventory() {   # $1: decode0's transport port
  cat >"$inventory" <<EOF
# 2 prefill + 2 decode agents and the orchestrator over four loopback "hosts".
model: $model
block_tokens: 16
hash_seed: "00112233445566778899aabbccddeeff"
log_level: info
defaults:
  ssh_user: $(id -un)
  transport: tcp
  threads: 1
orchestrator:
  host: 127.0.0.2
  ssh_port: ${ports[0]}
  install_dir: $root/h0/kvferry
  port: ${ports[4]}
agents:
  - name: prefill0
    host: 127.0.0.3
    ssh_port: ${ports[1]}
    install_dir: $root/h1/kvferry
    role: prefill
    control_port: ${ports[5]}
    transport_port: ${ports[6]}
  - name: prefill1
    host: 127.0.0.4
    ssh_port: ${ports[2]}
    install_dir: $root/h2/kvferry
    role: prefill
    control_port: ${ports[7]}
    transport_port: ${ports[8]}
    gpu: 0
  - name: decode1
    host: 127.0.0.4
    ssh_port: ${ports[2]}
    install_dir: $root/h2/kvferry
    role: decode
    control_port: ${ports[9]}
    transport_port: ${ports[10]}
  - name: decode0
    host: 127.0.0.5
    ssh_port: ${ports[3]}
    install_dir: $root/h3/kvferry
    role: decode
    control_port: ${ports[11]}
    transport_port: $1
EOF
}
write_inventory "${ports[12]}"
url="http://127.0.0.2:${ports[4]}"

step "bad inventories are refused with file:line"
expect_refused() {   # NAME PATTERN: the inventory (after sed) fails with PATTERN
  local out
  if out="$(bounded 30 "$scripts/smart_deploy.sh" --skip-deps --build-dir "$build" "$root/$1" 2>&1)"; then
    fail "$1 was accepted"
  fi
  grep -q -- "$2" <<<"$out" || fail "$1: expected '$2' in: $out"
  echo "refused as expected: $(grep -- "$2" <<<"$out")"
}
line_of() { grep -n -- "$1" "$2" | head -n 1 | cut -d: -f1; }
sed 's/^  threads: 1$/  threads: 1\n  colour: blue/' "$inventory" >"$root/bad-key.yaml"
expect_refused bad-key.yaml "bad-key.yaml:$(line_of colour "$root/bad-key.yaml"): unknown key 'colour' in defaults"
tac "$inventory" | sed '0,/role: decode/{/role: decode/d}' | tac >"$root/bad-role.yaml"
expect_refused bad-role.yaml \
  "bad-role.yaml:$(line_of "name: decode0" "$inventory"): agents\[3\] (decode0): role is missing"
sed "s/transport_port: ${ports[10]}/transport_port: ${ports[7]}/" "$inventory" >"$root/bad-port.yaml"
expect_refused bad-port.yaml "bad-port.yaml:$(line_of "transport_port: ${ports[7]}" "$root/bad-port.yaml"): agents\[2\].transport_port: port ${ports[7]} is already used on host 127.0.0.4 by agents\[1\].control_port (line $(line_of "control_port: ${ports[7]}" "$inventory"))"

step "smart_deploy.sh"
bounded 120 "$scripts/smart_deploy.sh" --skip-deps --build-dir "$build" "$inventory" | tee "$root/deploy1.out"
grep -q "deployed 4 hosts" "$root/deploy1.out" || fail "deploy did not report 4 hosts"
for f in h0/kvferry/bin/orchestrator h0/kvferry/config/orchestrator.yaml \
  h0/kvferry/models/stories260K.gguf h2/kvferry/bin/node_agent h2/kvferry/bin/kvferry-proc \
  h2/kvferry/config/node_agent-prefill1.yaml h2/kvferry/config/node_agent-decode1.yaml \
  h2/kvferry/config/prefill1.env h3/kvferry/config/node_agent-decode0.yaml \
  h2/kvferry/systemd/kvferry-agent@.service h0/kvferry/systemd/kvferry-orchestrator.service; do
  [ -f "$root/$f" ] || fail "$f was not deployed"
done
[ ! -e "$root/h0/kvferry/bin/node_agent" ] || fail "node_agent deployed to the orchestrator-only host"
# Secure by default: the secrets were made beside the inventory and copied mode 600, the API key
# only where the orchestrator runs; every config names its secret file.
secrets="${inventory%.yaml}.secrets"
grep -q "API key: in $secrets/api_keys" "$root/deploy1.out" || fail "deploy did not say where the API key is"
for f in h0/kvferry/secrets/api_keys h0/kvferry/secrets/cluster.secret h2/kvferry/secrets/cluster.secret; do
  [ "$(stat -c %a "$root/$f")" = 600 ] || fail "$f is missing or not mode 600"
done
[ ! -e "$root/h2/kvferry/secrets/api_keys" ] || fail "the API key was copied to an agent-only host"
cmp -s "$secrets/cluster.secret" "$root/h3/kvferry/secrets/cluster.secret" || fail "h3 has another cluster secret"
grep -q "cluster_secret_file: \"$root/h3/kvferry/secrets/cluster.secret\"" \
  "$root/h3/kvferry/config/node_agent-decode0.yaml" || fail "decode0's config names no cluster secret"
grep -q "api_keys_file: \"$root/h0/kvferry/secrets/api_keys\"" "$root/h0/kvferry/config/orchestrator.yaml" ||
  fail "the orchestrator's config names no API keys file"
key="$(head -n 1 "$secrets/api_keys")"
secret="$(cat "$secrets/cluster.secret")"
grep -qx "CUDA_VISIBLE_DEVICES=0" "$root/h2/kvferry/config/prefill1.env" || fail "gpu not in prefill1.env"
grep -q "control_address: \"127.0.0.5:${ports[11]}\"" "$root/h3/kvferry/config/node_agent-decode0.yaml" ||
  fail "decode0's control address not in its config"

step "the generated systemd units pass systemd-analyze verify"
# No systemd runs here, so --systemd cannot be exercised; verify parses the units as systemd
# would and checks that ExecStart's binary exists: any complaint fails the test.
units="$root/units"
mkdir -p "$units"
cp "$root/h0/kvferry/systemd/kvferry-orchestrator.service" "$units/"
cp "$root/h2/kvferry/systemd/kvferry-agent@.service" "$units/kvferry-agent@prefill1.service"
verify_out="$(cd "$units" &&
  systemd-analyze verify ./kvferry-orchestrator.service ./kvferry-agent@prefill1.service 2>&1)" ||
  fail "systemd-analyze verify failed: $verify_out"
[ -z "$verify_out" ] || fail "systemd-analyze verify complained: $verify_out"

step "smart_run.sh"
bounded 150 "$scripts/smart_run.sh" --timeout 120 "$inventory" | tee "$root/run1.out"
grep -q "cluster ready" "$root/run1.out" || fail "smart_run.sh did not report the cluster ready"
pids_now() { cat "$root"/h*/kvferry/run/*.pid | sort -n | tr '\n' ' '; }
pids1="$(pids_now)"
read -r -a cluster_pids <<<"$pids1"
[ "${#cluster_pids[@]}" = 5 ] || fail "expected 5 PID files, got: $pids1"
for pid in "${cluster_pids[@]}"; do
  alive "$pid" || fail "pid $pid is not running"
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^$root/h[0-3]/kvferry/bin/" || fail "pid $pid is not ours"
done
nodes="$(curl -sf -H "Authorization: Bearer $secret" "$url/v1/nodes")"
code="$(curl -s -o /dev/null -w '%{http_code}' -d '{"role":"both"}' "$url/v1/agents/register")"
[ "$code" = 401 ] || fail "an unsigned registration answered $code"
for pair in "prefill0 127.0.0.3:${ports[5]}" "prefill1 127.0.0.4:${ports[7]}" \
  "decode1 127.0.0.4:${ports[9]}" "decode0 127.0.0.5:${ports[11]}"; do
  read -r name addr <<<"$pair"
  [ "$(jq -r --arg n "$name" '.[] | select(.name == $n and .alive) | .control_address' <<<"$nodes")" = "$addr" ] ||
    fail "$name is not alive at $addr: $nodes"
done
for pair in "h1 prefill0 127.0.0.3:${ports[6]}" "h2 prefill1 127.0.0.4:${ports[8]}" \
  "h2 decode1 127.0.0.4:${ports[10]}" "h3 decode0 127.0.0.5:${ports[12]}"; do
  read -r h name addr <<<"$pair"
  grep -q "tcp transport: endpoint [0-9a-f]* listening on $addr" "$root/$h/kvferry/logs/$name.log" ||
    fail "$name's transport does not listen on $addr"
done

step "chat requests"
for prompt in "Once upon a time" "The little dog" "Lily and Ben went to the park" "A big red ball"; do
  body="$(jq -nc --arg p "$prompt" '{model: "stories260K", max_tokens: 24, temperature: 0,
    messages: [{role: "user", content: $p}]}')"
  response="$(curl -sS --max-time 60 -w '\n%{http_code}' "$url/v1/chat/completions" \
    -H 'content-type: application/json' -H "Authorization: Bearer $key" -d "$body")"
  code="$(tail -n 1 <<<"$response")"
  [ "$code" = 200 ] || fail "HTTP $code for '$prompt': $response"
  content="$(sed '$d' <<<"$response" | jq -r '.choices[0].message.content')"
  if [ -z "$content" ] || [ "$content" = null ]; then fail "empty answer for '$prompt': $response"; fi
  echo "$prompt -> $content"
done

step "smart_run.sh again: nothing restarted"
bounded 150 "$scripts/smart_run.sh" --timeout 60 "$inventory" | tee "$root/run2.out"
[ "$(grep -c "already running" "$root/run2.out")" = 5 ] || fail "second run did not find 5 running processes"
[ "$(pids_now)" = "$pids1" ] || fail "PIDs changed: $pids1 -> $(pids_now)"

step "smart_deploy.sh again: nothing copied"
snapshot() {
  find "$root"/h[0-3]/kvferry/bin "$root"/h[0-3]/kvferry/models "$root"/h[0-3]/kvferry/config \
    "$root"/h[0-3]/kvferry/systemd -type f -printf '%p %i %T@\n' | sort
}
before="$(snapshot)"
bounded 120 "$scripts/smart_deploy.sh" --skip-deps --build-dir "$build" "$inventory" | tee "$root/deploy2.out"
grep -q "deployed 4 hosts, 0 files updated" "$root/deploy2.out" || fail "second deploy copied files"
[ "$(grep -c "up to date (0 files updated)" "$root/deploy2.out")" = 4 ] || fail "a host was not up to date"
[ "$(snapshot)" = "$before" ] || fail "deployed files changed: $(diff <(echo "$before") <(snapshot))"

step "smart_stop.sh"
bounded 120 "$scripts/smart_stop.sh" "$inventory" | tee "$root/stop1.out"
[ "$(grep -c ": stopped (pid" "$root/stop1.out")" = 5 ] || fail "not 5 graceful stops"
for pid in "${cluster_pids[@]}"; do ! alive "$pid" || fail "pid $pid still runs after smart_stop.sh"; done
for n in prefill0 prefill1 decode1 decode0; do
  grep -q "($n, [a-z]*, [0-9.:]*) left" "$root/h0/kvferry/logs/orchestrator.log" ||
    fail "$n did not leave the orchestrator before it stopped"
done
left_files="$(find "$root"/h*/kvferry/run -type f)"
[ -z "$left_files" ] || fail "PID or port files left: $left_files"

step "smart_stop.sh again: safe, and a stale PID file signals nobody"
# prefill0's PID file now names a live process that is not prefill0: its host's sshd.
echo "${sshd_pids[1]}" >"$root/h1/kvferry/run/prefill0.pid"
bounded 60 "$scripts/smart_stop.sh" "$inventory" | tee "$root/stop2.out"
[ "$(grep -c ": not running$" "$root/stop2.out")" = 4 ] || fail "second stop did not find 4 stopped processes"
grep -q "prefill0@127.0.0.3: not running (removed a stale PID file: pid ${sshd_pids[1]} is gone or runs something else)" \
  "$root/stop2.out" || fail "the stale PID file was not reported"
alive "${sshd_pids[1]}" || fail "smart_stop.sh signalled the process of a stale PID file"
[ ! -e "$root/h1/kvferry/run/prefill0.pid" ] || fail "the stale PID file was not removed"

step "a process that cannot start is named, with its log"
# decode0's transport port becomes the port its host's sshd listens on.
write_inventory "${ports[3]}"
bounded 120 "$scripts/smart_deploy.sh" --skip-deps --build-dir "$build" "$inventory" | tee "$root/deploy3.out"
grep -q "deployed 4 hosts, 1 files updated" "$root/deploy3.out" || fail "changing one port did not update exactly one file"
grep -q "config/node_agent-decode0.yaml" "$root/deploy3.out" || fail "decode0's config was not the one updated"
if bounded 150 "$scripts/smart_run.sh" --timeout 60 "$inventory" >"$root/run3.out" 2>&1; then
  cat "$root/run3.out"
  fail "smart_run.sh succeeded with a port taken"
fi
cat "$root/run3.out"
grep -q "decode0@127.0.0.5: failed: decode0 exited during start-up" "$root/run3.out" || fail "decode0 not named"
grep -q "Address already in use" "$root/run3.out" || fail "decode0's log tail not shown"
grep -q "agents that did not start: decode0" "$root/run3.out" || fail "no summary of the failure"
read -r -a cluster_pids <<<"$(pids_now)"
[ "${#cluster_pids[@]}" = 4 ] || fail "expected the 4 other processes running, got PIDs ${cluster_pids[*]}"

step "a process that ignores SIGTERM is killed after the deadline, and the output says so"
# A stopped process cannot act on SIGTERM; SIGKILL still ends it.
stuck="$(cat "$root/h2/kvferry/run/prefill1.pid")"
kill -STOP "$stuck"
bounded 120 "$scripts/smart_stop.sh" --timeout 2 "$inventory" | tee "$root/stop3.out"
grep -q "^    pid $stuck still running 2 s after SIGTERM: sending SIGKILL$" "$root/stop3.out" ||
  fail "no SIGKILL notice for prefill1"
grep -q "prefill1@127.0.0.4: killed (pid $stuck, SIGKILL after the 2 s deadline)" "$root/stop3.out" ||
  fail "prefill1 not reported killed"
grep -q "WARNING: killed with SIGKILL after their deadline: prefill1 " "$root/stop3.out" ||
  fail "no summary warning"
[ "$(grep -c ": stopped (pid" "$root/stop3.out")" = 3 ] || fail "the other 3 processes did not stop gracefully"
for pid in "${cluster_pids[@]}"; do ! alive "$pid" || fail "pid $pid still runs after smart_stop.sh"; done

step "verify_gpudirect.sh"
rc=0
bounded 120 "$scripts/verify_gpudirect.sh" --peer 127.0.0.3 --ssh-port "${ports[1]}" >"$root/verify.out" 2>&1 || rc=$?
cat "$root/verify.out"
grep -Eq "^(PASS|FAIL|SKIP) +[a-z]" "$root/verify.out" || fail "no PASS/FAIL/SKIP lines"
grep -q "^summary: " "$root/verify.out" || fail "no summary line"
if [ -z "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
  # No RDMA device on this machine: the device check fails and the script exits 1.
  [ "$rc" = 1 ] || fail "verify_gpudirect.sh exited $rc without an RDMA device (expected 1)"
  grep -q "^FAIL  *rdma-devices" "$root/verify.out" || fail "rdma-devices is not FAIL"
  grep -q "^SKIP  *ib_write_bw" "$root/verify.out" || fail "ib_write_bw is not SKIP"
else
  [ "$rc" = 0 ] || [ "$rc" = 1 ] || fail "verify_gpudirect.sh exited $rc"
fi

step "nothing left"
for pid in "${sshd_pids[@]}"; do kill -TERM "$pid"; done
for pid in "${sshd_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
for pid in "${sshd_pids[@]}"; do ! alive "$pid" || fail "sshd $pid still runs"; done
sshd_pids=()
left=""
for pid in $pids1 "${cluster_pids[@]}"; do alive "$pid" && left+=" $pid"; done
[ -z "$left" ] || fail "cluster processes left:$left"
echo "PASS (${SECONDS}s)"
