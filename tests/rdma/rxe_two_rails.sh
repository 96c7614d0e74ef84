#!/usr/bin/env bash
# rxe_two_rails.sh: a "two rails" Soft-RoCE topology for the rxe-vm guest.
#
# Side A ("initiator") and side B ("target") each get two RDMA devices, one per
# rail, so a test can stripe RDMA traffic over two NICs per side and kill one
# rail's link in the middle of a run:
#
#   rail 0: rxe_a0 on veth rail0-a 192.168.77.1  <->  rxe_b0 on veth rail0-b 192.168.77.2
#   rail 1: rxe_a1 on veth rail1-a 192.168.78.1  <->  rxe_b1 on veth rail1-b 192.168.78.2
#
# All four ends live in the guest's initial netns (rxe on Linux 6.1 is not
# netns-aware). Each pair gets the same policy routing as the harness's `pair`
# topology (../shared/tools/rxe-vm/guest/rxe-setup.sh), generalised to two
# pairs: rp_filter=0 and accept_local=1; rules "iif lo to <peer> lookup <table>"
# send locally generated traffic for the peer out of its own veth end
# (rail 0: prefs 10/11, tables 101/102; rail 1: prefs 12/13, tables 111/112);
# the local table moves from priority 0 to 100; permanent neighbour entries
# with fixed MACs. So traffic between the two sides really crosses the veth
# of its rail, instead of being short-cut through lo (where rxe drops it).
#
# Run it as root inside the VM started with `--topology none`:
#
#   ../shared/tools/rxe-vm/run-in-vm.sh --topology none --timeout 400 -- \
#       bash tests/rdma/rxe_two_rails.sh selftest
#
# Subcommands (default: setup):
#   setup         build the topology (idempotent: does nothing if it is there),
#                 then print the variables like print-env
#   print-env     print KEY=VALUE lines (see below) for an existing topology
#   link-down N   take rail N's link down on both ends (ip link set ... down) and
#                 make the peer's rail address unreachable from this side (else
#                 the kernel would deliver it through lo: both are local addresses)
#   link-up N     bring it back up; re-adds the rail's routes and neighbour
#                 entries (the kernel flushes both on link down) and waits
#                 until both rxe ports are ACTIVE again
#   teardown      remove the rxe devices, veths, rules and tables
#   selftest      setup, then ib_write_bw over each rail alone (checking the
#                 veth byte counters of both rails), both rails at once, rail 1
#                 killed mid-run, rail 1 down (rail 0 must work, rail 1 must
#                 fail), rail 1 up again (must work). Each step is bounded by
#                 `timeout`. Exits non-zero on any failure.
#
# Variables (print-env output; also exported when the file is sourced):
#   RAILS_COUNT=2
#   RAILS_A_DEVS=rxe_a0,rxe_a1          RAILS_B_DEVS=rxe_b0,rxe_b1
#   RAILS_A_IPS=192.168.77.1,192.168.78.1   RAILS_B_IPS=192.168.77.2,192.168.78.2
#   RAILS_A_GIDS / RAILS_B_GIDS         GID index of each device's RoCE v2
#                                       ::ffff:<ip> entry, comma-separated
#                                       (only when the devices exist)
#   RAILS_A_IFS=rail0-a,rail1-a         RAILS_B_IFS=rail0-b,rail1-b
#   RAILS_LINK0_IFS=rail0-a,rail0-b     RAILS_LINK1_IFS=rail1-a,rail1-b
#                                       (`ip link set <if> down` on either one
#                                       takes the link down; link-down does both)
#
# Sourcing:
#   source tests/rdma/rxe_two_rails.sh          # exports the variables, defines
#                                               # rails_* functions; changes nothing
#   source tests/rdma/rxe_two_rails.sh setup    # also builds the topology first
# Sourcing does not change the caller's shell options; the work runs in
# subshells under `set -euo pipefail`.
#
# Knobs: RAILS_SUBNETS (default "192.168.77 192.168.78", /24 each),
#        RAILS_MTU (default 9000 -> IB MTU 4096, like the harness),
#        RAILS_STEP_TIMEOUT (seconds per selftest step, default 60),
#        RAILS_BW_SIZE / RAILS_BW_ITERS (ib_write_bw -s / -n, default 65536 / 320,
#        i.e. 20 MiB per run; TCG manages about 50 MB/s),
#        RAILS_MIDRUN_TIMEOUT (rail 1's killed run, default 60 s).
#
# Found on the guest's 6.1 rxe (mind it in tests): an RC QP whose link is
# killed mid-transfer does not reliably fail. Seen both ways: a
# "Completion with error" (IBV_WC_LOC_QP_OP_ERR) about 1 s after link-down,
# or no completion at all (no retries, no RETRY_EXC_ERR) until the process is
# killed. A test must bound its own waits. New perftest runs on a downed rail
# fail at once ("Port number 1 state is Down"). Sourcing without arguments
# leaves $1 as the caller's own $1: only "setup" is acted on.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
fi

RAILS_N=2
read -r -a _rails_subnets <<<"${RAILS_SUBNETS:-192.168.77 192.168.78}"
_rails_mtu=${RAILS_MTU:-9000}

# Per-rail names; rail i (0 or 1).
_rails_if_a() { echo "rail$1-a"; }
_rails_if_b() { echo "rail$1-b"; }
_rails_dev_a() { echo "rxe_a$1"; }
_rails_dev_b() { echo "rxe_b$1"; }
_rails_ip_a() { echo "${_rails_subnets[$1]}.1"; }
_rails_ip_b() { echo "${_rails_subnets[$1]}.2"; }
_rails_mac_a() { printf '02:00:00:00:%02x:01' "$1"; }
_rails_mac_b() { printf '02:00:00:00:%02x:02' "$1"; }
_rails_table_a() { echo $((101 + 10 * $1)); }   # 101, 111
_rails_table_b() { echo $((102 + 10 * $1)); }   # 102, 112
_rails_pref_a() { echo $((10 + 2 * $1)); }      # 10, 12
_rails_pref_b() { echo $((11 + 2 * $1)); }      # 11, 13

# Same as rxevm_gid_index in rxe-setup.sh: DEV IPV4 -> index of the RoCE v2
# GID ::ffff:IPV4 (waits up to 5 s for the GID table to fill).
rails_gid_index() {
    local dev=$1 ip=$2 g idx want val typ try
    local d=/sys/class/infiniband/$dev/ports/1
    # shellcheck disable=SC2086
    printf -v want '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' ${ip//./ }
    for ((try = 0; try < 50; try++)); do
        for g in "$d"/gids/*; do
            idx=${g##*/}
            read -r val <"$g" 2>/dev/null || continue
            [ "$val" = "$want" ] || continue
            read -r typ <"$d/gid_attrs/types/$idx" 2>/dev/null || continue
            if [ "$typ" = "RoCE v2" ]; then echo "$idx"; return 0; fi
        done
        sleep 0.1
    done
    echo "rxe_two_rails: no RoCE v2 GID for $ip on $dev" >&2
    return 1
}

_rails_join() { local IFS=,; echo "$*"; }

# Prints the KEY=VALUE lines (GIDs only when all devices exist).
rails_env() {
    local i a_devs=() b_devs=() a_ips=() b_ips=() a_ifs=() b_ifs=() a_gids=() b_gids=() have=1
    for ((i = 0; i < RAILS_N; i++)); do
        a_devs+=("$(_rails_dev_a $i)"); b_devs+=("$(_rails_dev_b $i)")
        a_ips+=("$(_rails_ip_a $i)"); b_ips+=("$(_rails_ip_b $i)")
        a_ifs+=("$(_rails_if_a $i)"); b_ifs+=("$(_rails_if_b $i)")
        [ -d "/sys/class/infiniband/${a_devs[i]}" ] && [ -d "/sys/class/infiniband/${b_devs[i]}" ] || have=0
    done
    echo "RAILS_COUNT=$RAILS_N"
    echo "RAILS_A_DEVS=$(_rails_join "${a_devs[@]}")"
    echo "RAILS_B_DEVS=$(_rails_join "${b_devs[@]}")"
    echo "RAILS_A_IPS=$(_rails_join "${a_ips[@]}")"
    echo "RAILS_B_IPS=$(_rails_join "${b_ips[@]}")"
    echo "RAILS_A_IFS=$(_rails_join "${a_ifs[@]}")"
    echo "RAILS_B_IFS=$(_rails_join "${b_ifs[@]}")"
    for ((i = 0; i < RAILS_N; i++)); do
        echo "RAILS_LINK${i}_IFS=${a_ifs[i]},${b_ifs[i]}"
    done
    if [ $have = 1 ]; then
        for ((i = 0; i < RAILS_N; i++)); do
            local ga gb
            ga=$(rails_gid_index "${a_devs[i]}" "${a_ips[i]}") || return 1
            gb=$(rails_gid_index "${b_devs[i]}" "${b_ips[i]}") || return 1
            a_gids+=("$ga"); b_gids+=("$gb")
        done
        echo "RAILS_A_GIDS=$(_rails_join "${a_gids[@]}")"
        echo "RAILS_B_GIDS=$(_rails_join "${b_gids[@]}")"
    fi
}

# Exports rails_env's variables into the current shell.
rails_export() {
    local line out
    out=$(rails_env) || return 1
    while IFS= read -r line; do
        # shellcheck disable=SC2163
        export "$line"
    done <<<"$out"
}

_rails_have_all() {
    local i
    for ((i = 0; i < RAILS_N; i++)); do
        [ -d "/sys/class/infiniband/$(_rails_dev_a $i)" ] && [ -d "/sys/class/infiniband/$(_rails_dev_b $i)" ] &&
            [ -d "/sys/class/net/$(_rails_if_a $i)" ] || return 1
    done
}

# ip -batch lines for rail i's routes and neighbour entries (re-added by link-up).
_rails_routes() {
    local i=$1 a b va vb
    a=$(_rails_ip_a "$i"); b=$(_rails_ip_b "$i"); va=$(_rails_if_a "$i"); vb=$(_rails_if_b "$i")
    echo "route replace $b dev $va src $a table $(_rails_table_a "$i")"
    echo "route replace $a dev $vb src $b table $(_rails_table_b "$i")"
    echo "neigh replace $b lladdr $(_rails_mac_b "$i") dev $va nud permanent"
    echo "neigh replace $a lladdr $(_rails_mac_a "$i") dev $vb nud permanent"
}

rails_setup() (
    set -euo pipefail
    [ "$(id -u)" = 0 ] || { echo "rxe_two_rails: must run as root (inside the rxe-vm guest)" >&2; exit 1; }
    if _rails_have_all; then return 0; fi
    if [ -d /sys/class/net/rxevm-a ] || [ -d /sys/class/infiniband/rxe0 ]; then
        echo "rxe_two_rails: the harness's own topology is present; start the VM with --topology none" >&2
        exit 1
    fi
    for ((i = 0; i < RAILS_N; i++)); do
        if [ -d "/sys/class/net/$(_rails_if_a $i)" ] || [ -d "/sys/class/infiniband/$(_rails_dev_a $i)" ]; then
            echo "rxe_two_rails: a partial two-rails topology is present; run teardown first" >&2
            exit 1
        fi
    done
    [ "${#_rails_subnets[@]}" -ge "$RAILS_N" ] || { echo "rxe_two_rails: RAILS_SUBNETS needs $RAILS_N subnets" >&2; exit 1; }
    # Exactly as rxe-setup.sh's pair topology (see the header).
    local f
    for f in all default; do
        echo 0 >/proc/sys/net/ipv4/conf/$f/rp_filter
        echo 1 >/proc/sys/net/ipv4/conf/$f/accept_local
    done
    {
        echo "link set lo up"
        for ((i = 0; i < RAILS_N; i++)); do
            local a b va vb
            a=$(_rails_ip_a $i); b=$(_rails_ip_b $i); va=$(_rails_if_a $i); vb=$(_rails_if_b $i)
            echo "link add $va address $(_rails_mac_a $i) mtu $_rails_mtu type veth peer name $vb address $(_rails_mac_b $i) mtu $_rails_mtu"
            echo "addr add $a/24 dev $va"
            echo "addr add $b/24 dev $vb"
            echo "link set $va up"
            echo "link set $vb up"
            _rails_routes $i
            echo "rule add pref $(_rails_pref_a $i) iif lo to $b lookup $(_rails_table_a $i)"
            echo "rule add pref $(_rails_pref_b $i) iif lo to $a lookup $(_rails_table_b $i)"
        done
        # Move the local table behind the rules (only once: pref 0 may already be gone).
        if ip rule show | grep -qE '^0:.*lookup local'; then
            echo "rule add pref 100 lookup local"
            echo "rule del pref 0"
        fi
    } | ip -batch -
    {
        for ((i = 0; i < RAILS_N; i++)); do
            echo "link add $(_rails_dev_a $i) type rxe netdev $(_rails_if_a $i)"
            echo "link add $(_rails_dev_b $i) type rxe netdev $(_rails_if_b $i)"
        done
    } | rdma -b -
)

rails_teardown() (
    set -uo pipefail
    for ((i = 0; i < RAILS_N; i++)); do
        rdma link delete "$(_rails_dev_a $i)" 2>/dev/null
        rdma link delete "$(_rails_dev_b $i)" 2>/dev/null
        ip link delete "$(_rails_if_a $i)" 2>/dev/null     # removes its peer too
        ip rule del pref "$(_rails_pref_a $i)" 2>/dev/null
        ip rule del pref "$(_rails_pref_b $i)" 2>/dev/null
        ip route flush table "$(_rails_table_a $i)" 2>/dev/null
        ip route flush table "$(_rails_table_b $i)" 2>/dev/null
    done
    # Put the local table back in front (as before setup).
    if ! ip rule show | grep -qE '^0:.*lookup local'; then
        ip rule add pref 0 lookup local && ip rule del pref 100 2>/dev/null
    fi
    return 0
)

_rails_check_n() {
    [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -lt "$RAILS_N" ] ||
        { echo "rxe_two_rails: rail number must be 0..$((RAILS_N - 1)), got '${1:-}'" >&2; return 1; }
}

# rails_port_wait DEV STATE [TRIES of 0.1 s]: waits until the rxe port's state
# contains STATE (ACTIVE or DOWN).
rails_port_wait() {
    local dev=$1 want=$2 tries=${3:-100} s t
    for ((t = 0; t < tries; t++)); do
        read -r s <"/sys/class/infiniband/$dev/ports/1/state" || true
        case $s in *"$want"*) return 0 ;; esac
        sleep 0.1
    done
    echo "rxe_two_rails: $dev port state is '$s', not $want" >&2
    return 1
}

rails_link_down() (
    set -euo pipefail
    _rails_check_n "${1:-}"
    local i=$1
    ip link set "$(_rails_if_a "$i")" down
    ip link set "$(_rails_if_b "$i")" down
    # The kernel flushed the rail's routes in tables 1x1/1x2, but both
    # addresses stay local: without these, traffic to the peer would fall
    # through to the local table and silently cross lo instead. "unreachable"
    # makes it fail at once (ENETUNREACH), as on a host whose only route to the
    # peer went with its NIC's link.
    ip -batch - <<EOB
route replace unreachable $(_rails_ip_b "$i") table $(_rails_table_a "$i")
route replace unreachable $(_rails_ip_a "$i") table $(_rails_table_b "$i")
EOB
    rails_port_wait "$(_rails_dev_a "$1")" DOWN
    rails_port_wait "$(_rails_dev_b "$1")" DOWN
)

rails_link_up() (
    set -euo pipefail
    _rails_check_n "${1:-}"
    { echo "link set $(_rails_if_a "$1") up"; echo "link set $(_rails_if_b "$1") up"; _rails_routes "$1"; } | ip -batch -
    rails_port_wait "$(_rails_dev_a "$1")" ACTIVE
    rails_port_wait "$(_rails_dev_b "$1")" ACTIVE
)

# ----------------------------------------------------------------- selftest ---
_rails_log=/tmp/rxe_two_rails
_rails_fail=0
_rails_counters() { # -> "a_tx0 b_rx0 a_tx1 b_rx1 ..." bytes
    local i out=()
    for ((i = 0; i < RAILS_N; i++)); do
        out+=("$(cat "/sys/class/net/$(_rails_if_a $i)/statistics/tx_bytes")")
        out+=("$(cat "/sys/class/net/$(_rails_if_b $i)/statistics/rx_bytes")")
    done
    echo "${out[*]}"
}

# _rails_bw NAME RAIL [PORT]: ib_write_bw server on rxe_bN (-d, -x GID), client
# on rxe_aN, out-of-band exchange over the rail's own addresses. Leaves the
# client's result line in _rails_result; returns the client's exit status if
# it failed (124: killed by timeout), else the server's, else 1 if no result.
_rails_bw() {
    local name=$1 i=$2 port=${3:-18515} t=${RAILS_STEP_TIMEOUT:-60}
    local sz=${RAILS_BW_SIZE:-65536} n=${RAILS_BW_ITERS:-320}
    local da db ga gb
    da=$(_rails_dev_a "$i"); db=$(_rails_dev_b "$i")
    # GID indexes found at setup (RAILS_*_GIDS), else looked up now.
    local -a gas gbs
    IFS=, read -r -a gas <<<"${RAILS_A_GIDS:-}"; IFS=, read -r -a gbs <<<"${RAILS_B_GIDS:-}"
    ga=${gas[i]:-}; gb=${gbs[i]:-}
    [ -n "$ga" ] || ga=$(rails_gid_index "$da" "$(_rails_ip_a "$i")") || return 1
    [ -n "$gb" ] || gb=$(rails_gid_index "$db" "$(_rails_ip_b "$i")") || return 1
    timeout "$t" ib_write_bw -F -p "$port" -d "$db" -x "$gb" -s "$sz" -n "$n" >"$_rails_log/$name.server" 2>&1 &
    # Wait (at most 5 s of guest uptime) until the server listens. Builtins
    # only: under TCG with both vCPUs busy each fork+exec (grep) takes ~0.5 s.
    local spid=$! start now line up=0
    read -r start _ </proc/uptime
    while [ $up = 0 ]; do
        while IFS= read -r line; do
            case $line in *aiting*) up=1 ;; esac
        done 2>/dev/null <"$_rails_log/$name.server" || true
        kill -0 "$spid" 2>/dev/null || break
        read -r now _ </proc/uptime
        (( ${now%.*} - ${start%.*} >= 5 )) && break
        sleep 0.1
    done
    sleep 0.3
    local crc=0 src=0
    timeout "$t" ib_write_bw -F -p "$port" -d "$da" -x "$ga" -s "$sz" -n "$n" "$(_rails_ip_b "$i")" \
        >"$_rails_log/$name.client" 2>&1 || crc=$?
    # A server whose client never came waits until its timeout: do not wait that out.
    if [ $crc != 0 ]; then kill "$spid" 2>/dev/null || true; fi
    wait "$spid" || src=$?
    _rails_result=$(grep -E "^ *$sz +[0-9]" "$_rails_log/$name.client" | tail -1 || true)
    _rails_rc="client rc=$crc server rc=$src"
    [ $crc = 0 ] || return $crc
    [ $src = 0 ] || return $src
    [ -n "$_rails_result" ]
}

_rails_ok() { echo "ok   $*"; }
_rails_bad() { echo "FAIL $*"; _rails_fail=1; }
_rails_dump() {
    echo "--- $1 client"; tail -n 15 "$_rails_log/$1.client" 2>&1 || true
    echo "--- $1 server"; tail -n 15 "$_rails_log/$1.server" 2>&1 || true
}
# Ends the selftest's background jobs (and the timeout/ib_write_bw they
# started): a job left behind would keep the VM's output port open.
_rails_reap() {
    local p
    for p in $(jobs -p); do
        pkill -P "$p" 2>/dev/null || true
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
_rails_mb() { echo $(( $1 / 1048576 )); }

# Runs one rail alone and checks the counters: the rail's A end sent and its
# B end received at least the payload, the other rail carried under 1 MiB.
_rails_one() {
    local name=$1 i=$2 before after b j payload
    payload=$(( ${RAILS_BW_SIZE:-65536} * ${RAILS_BW_ITERS:-320} ))
    read -r -a before <<<"$(_rails_counters)"
    if _rails_bw "$name" "$i"; then
        read -r -a after <<<"$(_rails_counters)"
        local msg="" okc=1
        for ((j = 0; j < RAILS_N; j++)); do
            local atx=$(( after[2*j] - before[2*j] )) brx=$(( after[2*j+1] - before[2*j+1] ))
            msg+=" rail$j: $(_rails_if_a $j) tx +$atx B, $(_rails_if_b $j) rx +$brx B;"
            if [ $j = "$i" ]; then
                [ $atx -ge $payload ] && [ $brx -ge $payload ] || okc=0
            else
                [ $atx -lt 1048576 ] && [ $brx -lt 1048576 ] || okc=0
            fi
        done
        read -r b _ peak avg rate <<<"$_rails_result"
        echo "     $name: $(_rails_dev_a "$i") -> $(_rails_dev_b "$i"): $b B x ${RAILS_BW_ITERS:-320}, BW peak $peak, avg $avg MB/s, $rate Mpps"
        echo "     counters:$msg"
        if [ $okc = 1 ]; then _rails_ok "$name: traffic crossed rail $i only"
        else _rails_bad "$name: counters do not show the traffic on rail $i alone"; fi
    else
        _rails_bad "$name: ib_write_bw over rail $i failed ($_rails_rc)"; _rails_dump "$name"
    fi
}

# _rails_wait_flow RAIL BASE BYTES: waits (30 s of uptime at most) until rail
# RAIL's A end has sent BYTES more than BASE. Builtins only.
_rails_wait_flow() {
    local f start now c
    f=/sys/class/net/$(_rails_if_a "$1")/statistics/tx_bytes
    read -r start _ </proc/uptime
    while :; do
        read -r c <"$f"; (( c - $2 > $3 )) && return 0
        read -r now _ </proc/uptime
        (( ${now%.*} - ${start%.*} >= 30 )) && return 1
        sleep 0.1
    done
}

rails_selftest() {
    local i t0 t1 g
    mkdir -p "$_rails_log"
    rails_setup || { echo "selftest: FAIL (setup)"; return 1; }
    rails_export || { echo "selftest: FAIL (env)"; return 1; }
    echo "== topology"
    rails_env | sed 's/^/     /'
    for ((i = 0; i < RAILS_N; i++)); do
        for g in "$(_rails_dev_a $i)" "$(_rails_dev_b $i)"; do
            echo "     $g: $(rdma link show "$g/1" | sed -n 's/.*state \([^ ]*\).*netdev \([^ ]*\).*/state \1 netdev \2/p'), $(ibv_devinfo -d "$g" | grep -E 'active_mtu' | tr -s ' \t' ' ')"
        done
    done
    echo "     rules: $(ip rule show | tr -s ' \t' ' ' | paste -sd';' -)"

    echo "== 1. each rail alone (ib_write_bw -s ${RAILS_BW_SIZE:-65536} -n ${RAILS_BW_ITERS:-320})"
    for ((i = 0; i < RAILS_N; i++)); do _rails_one "rail$i" $i; done

    echo "== 2. both rails at once (striping)"
    local before after
    read -r -a before <<<"$(_rails_counters)"
    _rails_bw both0 0 18515 & local p0=$!
    _rails_bw both1 1 18516 & local p1=$!
    local r0=0 r1=0
    wait $p0 || r0=$?; wait $p1 || r1=$?
    read -r -a after <<<"$(_rails_counters)"
    for i in 0 1; do
        local rr; [ $i = 0 ] && rr=$r0 || rr=$r1
        local line; line=$(grep -E "^ *${RAILS_BW_SIZE:-65536} +[0-9]" "$_rails_log/both$i.client" | tail -1 || true)
        local peak avg; peak=$(awk '{print $3}' <<<"$line"); avg=$(awk '{print $4}' <<<"$line")
        echo "     rail$i: BW peak ${peak:-?}, avg ${avg:-?} MB/s, $(_rails_if_a $i) tx +$(( after[2*i] - before[2*i] )) B, $(_rails_if_b $i) rx +$(( after[2*i+1] - before[2*i+1] )) B"
        if [ "$rr" = 0 ] && [ $(( after[2*i] - before[2*i] )) -ge $(( ${RAILS_BW_SIZE:-65536} * ${RAILS_BW_ITERS:-320} )) ]; then
            _rails_ok "both$i: rail $i carried its payload concurrently"
        else
            _rails_bad "both$i: concurrent run on rail $i failed (rc $rr)"; _rails_dump "both$i"
        fi
    done

    echo "== 3. rail 1 killed mid-run (link-down 1 while ib_write_bw runs on both rails)"
    # Rail 1's run is sized to finish well within its timeout if left alone
    # (12x the usual payload, 240 MiB: 12-24 s at 10-20 MB/s); rail 0 runs 4x
    # the usual payload and is started once rail 1's data flows; rail 1 is
    # killed once rail 0's data flows too.
    local big=$(( ${RAILS_BW_ITERS:-320} * 12 )) mt=${RAILS_MIDRUN_TIMEOUT:-60}
    local base base0; base=$(cat "/sys/class/net/$(_rails_if_a 1)/statistics/tx_bytes")
    base0=$(cat "/sys/class/net/$(_rails_if_a 0)/statistics/tx_bytes")
    RAILS_BW_ITERS=$big RAILS_STEP_TIMEOUT=$mt _rails_bw midrun1 1 18516 & local pm=$!
    _rails_wait_flow 1 "$base" 4194304 || true
    local txf cur; txf=/sys/class/net/$(_rails_if_a 1)/statistics/tx_bytes
    read -r cur <"$txf"
    local flowing; flowing=$(( cur - base ))
    RAILS_BW_ITERS=$(( ${RAILS_BW_ITERS:-320} * 4 )) _rails_bw midrun0 0 18515 & local p0=$!
    _rails_wait_flow 0 "$base0" 2097152 || _rails_bad "midrun0: rail 0 traffic did not start within 30 s"
    read -r t0 _ </proc/uptime
    rails_link_down 1 || _rails_bad "link-down 1"
    local sent; sent=$(( $(cat "$txf") - base ))
    if [ $flowing -le 4194304 ]; then
        _rails_bad "midrun1: rail 1 had sent only $flowing B after 30 s: no traffic to interrupt"
        _rails_dump midrun1
    fi
    local rm=0 r0=0; wait $pm || rm=$?
    read -r t1 _ </proc/uptime
    wait $p0 || r0=$?
    local tx0; tx0=$(( $(cat "/sys/class/net/$(_rails_if_a 0)/statistics/tx_bytes") - base0 ))
    if [ $r0 = 0 ] && [ $tx0 -ge $(( ${RAILS_BW_SIZE:-65536} * ${RAILS_BW_ITERS:-320} * 4 )) ]; then
        _rails_ok "midrun0: rail 0 finished its run while rail 1 was killed ($(_rails_if_a 0) tx +$tx0 B; $(awk '{print "BW peak " $3 ", avg " $4 " MB/s"}' <<<"$(grep -E "^ *${RAILS_BW_SIZE:-65536} +[0-9]" "$_rails_log/midrun0.client" | tail -1)"))"
    else
        _rails_bad "midrun0: rail 0 failed while rail 1 was killed (rc $r0)"; _rails_dump midrun0
    fi
    local how="ended with an error"; [ $rm = 124 ] || [ $rm = 143 ] && how="hung (no completion) until its ${mt}s timeout killed it"
    if [ $rm != 0 ]; then
        _rails_ok "midrun1: ib_write_bw on rail 1 ($(_rails_mb $sent) of $(_rails_mb $(( big * ${RAILS_BW_SIZE:-65536} ))) MiB sent when the link went down) $how, $(echo "$t1 - $t0" | bc) s after link-down"
        grep -iE 'error|fail|completion' "$_rails_log/midrun1.client" | head -3 | sed 's/^/     client: /' || true
    else
        _rails_bad "midrun1: ib_write_bw on rail 1 succeeded although its link went down"; _rails_dump midrun1
    fi

    echo "== 4. rail 1 down: rail 0 must still work, rail 1 must fail"
    echo "     route to the rail 1 peer: $(ip route get "$(_rails_ip_b 1)" from "$(_rails_ip_a 1)" 2>&1 | head -1)"
    echo "     rail1 link state: $(_rails_if_a 1) $(cat "/sys/class/net/$(_rails_if_a 1)/operstate"), $(_rails_if_b 1) $(cat "/sys/class/net/$(_rails_if_b 1)/operstate"); rxe ports: $(cat "/sys/class/infiniband/$(_rails_dev_a 1)/ports/1/state"), $(cat "/sys/class/infiniband/$(_rails_dev_b 1)/ports/1/state")"
    _rails_one "down_rail0" 0
    read -r t0 _ </proc/uptime
    if _rails_bw down_rail1 1; then
        _rails_bad "down_rail1: ib_write_bw over rail 1 worked although the link is down"
    else
        read -r t1 _ </proc/uptime
        _rails_ok "down_rail1: ib_write_bw over rail 1 failed in $(echo "$t1 - $t0" | bc) s ($_rails_rc): $(grep -v '^ *$' "$_rails_log/down_rail1.client" | head -3 | tr -s ' \n' ' ')"
    fi

    echo "== 5. link-up 1: rail 1 works again"
    rails_link_up 1 || _rails_bad "link-up 1"
    local old_a=$RAILS_A_GIDS old_b=$RAILS_B_GIDS
    rails_export || _rails_bad "env after link-up"
    echo "     rail1 after link-up: $(_rails_if_a 1) $(cat "/sys/class/net/$(_rails_if_a 1)/operstate"), GIDs A $old_a -> $RAILS_A_GIDS, B $old_b -> $RAILS_B_GIDS"
    for ((i = 0; i < RAILS_N; i++)); do _rails_one "up_rail$i" $i; done

    if [ $_rails_fail = 0 ]; then echo "selftest: PASS"; else echo "selftest: FAIL"; fi
    return $_rails_fail
}

_rails_usage() {
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

_rails_main() {
    local cmd=${1:-setup}
    case $cmd in
    setup) rails_setup && rails_env ;;
    print-env|env) rails_env ;;
    link-down) rails_link_down "${2:-}" ;;
    link-up) rails_link_up "${2:-}" ;;
    teardown) rails_teardown ;;
    selftest) trap _rails_reap EXIT; rails_selftest ;;
    -h|--help|help) _rails_usage ;;
    *) echo "rxe_two_rails: unknown subcommand '$cmd'" >&2; _rails_usage >&2; return 2 ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced: "source rxe_two_rails.sh setup" builds the topology first.
    # (Sourced without arguments, $1 is the caller's own $1: only "setup" counts.)
    if [ "${1:-}" = setup ]; then
        rails_setup || return $?
    fi
    rails_export
    return 0
fi
_rails_main "$@"
