#!/usr/bin/env bash
# verify_gpudirect.sh: checks that this host can move KV blocks GPU-to-GPU over RDMA
# (GPUDirect RDMA) and, with --peer, measures it with ib_write_bw against another host.
#
#   scripts/verify_gpudirect.sh [--peer HOST] [--device DEV] [--use-cuda | --no-cuda]
#                               [--peer-device DEV] [--peer-addr ADDR] [--gid-index N]
#                               [--ssh-user USER] [--ssh-port PORT] [--min-gbps X]
#
# Checks, each reported as PASS, FAIL or SKIP on one line (details indented below it):
#   gpu            an NVIDIA GPU (/proc/driver/nvidia/gpus, nvidia-smi); SKIP without one
#   gpu-mem-reg    RDMA can register GPU memory: nvidia-peermem loaded, or dma-buf (kernel
#                  CONFIG_DMA_SHARED_BUFFER, libibverbs ibv_reg_dmabuf_mr, NVIDIA open kernel
#                  module); SKIP without a GPU
#   gpu-reg-path   which registration path really works, from kvferry-gpudirect-probe (it
#                  allocates GPU memory and tries dma-buf and peermem on each RDMA device, as
#                  the verbs transport does): PASS naming the path(s), FAIL when none works,
#                  SKIP saying whether the GPU, the RDMA device or the probe binary is missing.
#                  The probe is $KVFERRY_GPUDIRECT_PROBE, else on PATH, else in build/*/rdma/.
#   rdma-devices   RDMA devices in /sys/class/infiniband (--device: that one); FAIL without one
#   ports          their ports ACTIVE and LinkUp
#   gids           the GID table, like show_gids (device, port, index, GID, IPv4, type, netdev)
#   ibv_devinfo    `ibv_devinfo -v` answers for the device
#   ib_write_bw    with --peer: a server on HOST over ssh, this host the client, --use_cuda when a
#                  GPU is present on both (or --use-cuda); SKIP without --peer or a device
# Exit status: 1 if any check FAILs, else 0 (SKIPs do not fail); 2 for bad arguments. On a host
# without an RDMA device (a laptop, a CI container) it therefore exits 1, with rdma-devices FAIL.
# ssh to the peer uses BatchMode and the KVFERRY_SSH_* settings of smart_deploy.sh.
set -euo pipefail

KVF_PROG=verify_gpudirect
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

peer=""
peer_addr=""
device=""
peer_device=""
gid_index=""
cuda=auto
ssh_user="$(id -un)"
ssh_port=22
min_gbps=""
while [ $# -gt 0 ]; do
  case "$1" in
    --peer) peer="${2:?--peer needs a host}"; shift ;;
    --peer-addr) peer_addr="${2:?--peer-addr needs an address}"; shift ;;
    --device) device="${2:?--device needs an RDMA device name}"; shift ;;
    --peer-device) peer_device="${2:?--peer-device needs an RDMA device name}"; shift ;;
    --gid-index) gid_index="${2:?--gid-index needs a number}"; shift ;;
    --use-cuda) cuda=yes ;;
    --no-cuda) cuda=no ;;
    --ssh-user) ssh_user="${2:?--ssh-user needs a user}"; shift ;;
    --ssh-port) ssh_port="${2:?--ssh-port needs a port}"; shift ;;
    --min-gbps) min_gbps="${2:?--min-gbps needs a number}"; shift ;;
    -h | --help) kvf_usage "$0"; exit 0 ;;
    *) echo "verify_gpudirect: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "$device" "$peer_device"; do
  [[ "$v" =~ ^[A-Za-z0-9_.:-]*$ ]] || { echo "verify_gpudirect: bad device name '$v'" >&2; exit 2; }
done
[[ "$gid_index" =~ ^[0-9]*$ ]] || { echo "verify_gpudirect: --gid-index wants a number" >&2; exit 2; }
[[ "$min_gbps" =~ ^([0-9]+(\.[0-9]+)?)?$ ]] || { echo "verify_gpudirect: --min-gbps wants a number" >&2; exit 2; }
[ -z "$peer_device" ] && peer_device="$device"
[ -z "$peer_addr" ] && peer_addr="$peer"

declare -A counts=([PASS]=0 [FAIL]=0 [SKIP]=0)
# result STATUS CHECK WHAT [DETAIL_LINES]
result() {
  printf '%-4s  %-13s %s\n' "$1" "$2" "$3"
  [ -z "${4:-}" ] || printf '%s\n' "$4" | sed 's/^/      /'
  counts[$1]=$((counts[$1] + 1))
}

echo "verify_gpudirect: host $(hostname), kernel $(uname -r)"

# --- gpu
gpus=()
if [ -d /proc/driver/nvidia/gpus ]; then
  for g in /proc/driver/nvidia/gpus/*; do [ -e "$g" ] && gpus+=("$(basename "$g")"); done
fi
gpu_names=""
if command -v nvidia-smi >/dev/null && gpu_names="$(nvidia-smi -L 2>/dev/null)" && [ -n "$gpu_names" ]; then
  [ "${#gpus[@]}" -gt 0 ] || mapfile -t gpus <<<"$gpu_names"
fi
have_gpu=0
if [ "${#gpus[@]}" -gt 0 ]; then
  have_gpu=1
  result PASS gpu "${#gpus[@]} NVIDIA GPU(s)" "${gpu_names:-${gpus[*]}}"
elif [ "$cuda" = yes ]; then
  result FAIL gpu "--use-cuda, but no NVIDIA GPU (no /proc/driver/nvidia/gpus, no nvidia-smi -L)"
else
  result SKIP gpu "no NVIDIA GPU (no /proc/driver/nvidia/gpus, no nvidia-smi -L): GPU checks skipped"
fi

# --- gpu-mem-reg: nvidia-peermem or dma-buf
peermem=no
[ -d /sys/module/nvidia_peermem ] && peermem=yes
kconfig=""
if [ -r /proc/config.gz ]; then kconfig="$(zcat /proc/config.gz 2>/dev/null || true)"
elif [ -r "/boot/config-$(uname -r)" ]; then kconfig="$(cat "/boot/config-$(uname -r)")"; fi
if [ -z "$kconfig" ]; then kernel_dmabuf=unknown
elif grep -q '^CONFIG_DMA_SHARED_BUFFER=y' <<<"$kconfig"; then kernel_dmabuf=yes
else kernel_dmabuf=no; fi
verbs_dmabuf=no
for lib in /usr/lib/*/libibverbs.so.1 /usr/lib64/libibverbs.so.1 /usr/lib/libibverbs.so.1; do
  if [ -e "$lib" ] && grep -qa ibv_reg_dmabuf_mr "$lib"; then verbs_dmabuf=yes; break; fi
done
open_module=no
grep -qi "open kernel module" /proc/driver/nvidia/version 2>/dev/null && open_module=yes
detail="nvidia-peermem loaded: $peermem; dma-buf: kernel $kernel_dmabuf, libibverbs ibv_reg_dmabuf_mr $verbs_dmabuf, NVIDIA open kernel module $open_module"
if [ "$have_gpu" = 0 ]; then
  result SKIP gpu-mem-reg "no GPU" "$detail"
elif [ "$peermem" = yes ]; then
  result PASS gpu-mem-reg "nvidia-peermem is loaded" "$detail"
elif [ "$kernel_dmabuf" != no ] && [ "$verbs_dmabuf" = yes ] && [ "$open_module" = yes ]; then
  result PASS gpu-mem-reg "dma-buf (ibv_reg_dmabuf_mr)" "$detail"
else
  result FAIL gpu-mem-reg "RDMA cannot register GPU memory: modprobe nvidia-peermem, or use the open kernel modules + dma-buf" "$detail"
fi

# --- gpu-reg-path: the probe registers real GPU memory each way
probe="${KVFERRY_GPUDIRECT_PROBE:-}"
if [ -z "$probe" ]; then
  probe="$(command -v kvferry-gpudirect-probe || true)"
  if [ -z "$probe" ]; then
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    for p in "$here"/build/*/rdma/kvferry-gpudirect-probe; do [ -x "$p" ] && { probe="$p"; break; }; done
  fi
fi
if [ -z "$probe" ] || [ ! -x "$probe" ]; then
  result SKIP gpu-reg-path "kvferry-gpudirect-probe not found (build it: cmake --build BUILD --target kvferry-gpudirect-probe; or set KVFERRY_GPUDIRECT_PROBE)"
else
  probe_args=()
  [ -z "$device" ] || probe_args+=(--device "$device")
  probe_rc=0
  probe_out="$(timeout 120 "$probe" "${probe_args[@]}" 2>&1)" || probe_rc=$?
  works="$(sed -n 's/^summary: works: //p' <<<"$probe_out")"
  case "$probe_rc" in
    0) result PASS gpu-reg-path "GPU memory registers through: $works" "$probe_out" ;;
    1) result FAIL gpu-reg-path "no registration path works (neither dma-buf nor peermem): see the causes below" "$probe_out" ;;
    3) result SKIP gpu-reg-path "no GPU: $(sed -n 's/^no GPU: //p' <<<"$probe_out" | head -n 1)" ;;
    4) result SKIP gpu-reg-path "no RDMA device: $(sed -n 's/^no RDMA device: //p' <<<"$probe_out" | head -n 1)" ;;
    *) result FAIL gpu-reg-path "$probe exited $probe_rc" "$probe_out" ;;
  esac
fi

# --- rdma-devices
devices=()
if [ -d /sys/class/infiniband ]; then
  for d in /sys/class/infiniband/*; do [ -e "$d" ] && devices+=("$(basename "$d")"); done
fi
if [ -n "$device" ]; then
  if [ -e "/sys/class/infiniband/$device" ]; then devices=("$device"); else
    result FAIL rdma-devices "device $device not found (present: ${devices[*]:-none})"
    devices=()
    device_missing=1
  fi
fi
if [ "${#devices[@]}" -gt 0 ]; then
  lines=""
  for d in "${devices[@]}"; do
    netdevs=""
    for n in "/sys/class/infiniband/$d"/device/net/*; do [ -e "$n" ] && netdevs+=" $(basename "$n")"; done
    lines+="$d: $(cat "/sys/class/infiniband/$d/node_type" 2>/dev/null || echo '?'), fw $(cat "/sys/class/infiniband/$d/fw_ver" 2>/dev/null || echo '?'), netdevs:${netdevs:- none}"$'\n'
  done
  result PASS rdma-devices "${#devices[@]} device(s): ${devices[*]}" "${lines%$'\n'}"
elif [ -z "${device_missing:-}" ]; then
  result FAIL rdma-devices "no RDMA device (/sys/class/infiniband is empty or missing): no HCA, its driver is not loaded, or (Soft-RoCE) no 'rdma link add rxe0 type rxe netdev IFACE'"
fi

# --- ports and gids
if [ "${#devices[@]}" -eq 0 ]; then
  result SKIP ports "no RDMA device"
  result SKIP gids "no RDMA device"
else
  bad_ports=""
  port_lines=""
  gid_lines="$(printf '%-10s %-4s %-5s %-39s %-15s %-8s %s' DEV PORT INDEX GID IPv4 TYPE NETDEV)"
  usable_gids=0
  for d in "${devices[@]}"; do
    for p in "/sys/class/infiniband/$d"/ports/*; do
      [ -d "$p" ] || continue
      port="$(basename "$p")"
      state="$(sed 's/^[0-9]*: *//' "$p/state" 2>/dev/null || echo '?')"
      phys="$(sed 's/^[0-9]*: *//' "$p/phys_state" 2>/dev/null || echo '?')"
      layer="$(cat "$p/link_layer" 2>/dev/null || echo '?')"
      rate="$(cat "$p/rate" 2>/dev/null || echo '?')"
      port_lines+="$d port $port: $state, $phys, $layer, $rate"$'\n'
      [ "$state" = ACTIVE ] && [ "$phys" = LinkUp ] || bad_ports+=" $d/$port($state,$phys)"
      for g in "$p"/gids/*; do
        [ -r "$g" ] || continue
        idx="$(basename "$g")"
        gid="$(cat "$g" 2>/dev/null || true)"
        case "$gid" in "" | 0000:0000:0000:0000:0000:0000:0000:0000 | fe80:0000:0000:0000:0000:0000:0000:0000) continue ;; esac
        type="$(cat "$p/gid_attrs/types/$idx" 2>/dev/null || echo '?')"
        ndev="$(cat "$p/gid_attrs/ndevs/$idx" 2>/dev/null || true)"
        ipv4=""
        if [[ "$gid" == 0000:0000:0000:0000:0000:ffff:* ]]; then
          hex="${gid:30:4}${gid:35:4}"
          ipv4="$((16#${hex:0:2})).$((16#${hex:2:2})).$((16#${hex:4:2})).$((16#${hex:6:2}))"
        fi
        gid_lines+=$'\n'"$(printf '%-10s %-4s %-5s %-39s %-15s %-8s %s' "$d" "$port" "$idx" "$gid" "$ipv4" "$type" "$ndev")"
        [ "$state" = ACTIVE ] && usable_gids=$((usable_gids + 1))
      done
    done
  done
  if [ -z "$bad_ports" ]; then result PASS ports "every port ACTIVE and LinkUp" "${port_lines%$'\n'}"
  else result FAIL ports "ports not ACTIVE/LinkUp:$bad_ports" "${port_lines%$'\n'}"; fi
  if [ "$usable_gids" -gt 0 ]; then result PASS gids "$usable_gids GID(s) on active ports" "$gid_lines"
  else result FAIL gids "no GID on an active port (no IP address on the RoCE netdev?)" "$gid_lines"; fi
fi

# --- ibv_devinfo
if [ "${#devices[@]}" -eq 0 ]; then
  result SKIP ibv_devinfo "no RDMA device"
elif ! command -v ibv_devinfo >/dev/null; then
  result FAIL ibv_devinfo "ibv_devinfo is missing (apt install ibverbs-utils)"
elif info="$(ibv_devinfo -v -d "${devices[0]}" 2>&1)"; then
  result PASS ibv_devinfo "ibv_devinfo -v -d ${devices[0]} answers" \
    "$(grep -E '^\s*(hca_id|transport|fw_ver|max_qp:|max_mr_size|max_qp_wr|state|active_mtu|link_layer)' <<<"$info" | sed 's/^[[:space:]]*//' | head -n 20)"
else
  result FAIL ibv_devinfo "ibv_devinfo -v -d ${devices[0]} failed" "$info"
fi

# --- ib_write_bw against --peer
if [ -z "$peer" ]; then
  result SKIP ib_write_bw "no --peer HOST given"
elif [ "${#devices[@]}" -eq 0 ]; then
  result SKIP ib_write_bw "no RDMA device here"
elif ! command -v ib_write_bw >/dev/null; then
  result FAIL ib_write_bw "ib_write_bw is missing (apt install perftest)"
else
  kvf_ssh_init
  declare -A KVF_T=([peer.user]="$ssh_user" [peer.host]="$peer" [peer.ssh_port]="$ssh_port")
  use_cuda=0
  if [ "$cuda" = yes ]; then use_cuda=1
  elif [ "$cuda" = auto ] && [ "$have_gpu" = 1 ] &&
    kvf_ssh peer sh -c 'ls /proc/driver/nvidia/gpus/* >/dev/null 2>&1' 2>/dev/null; then use_cuda=1; fi
  common=(--report_gbits -D 5 -s 1048576 -p 18515)
  [ -z "$gid_index" ] || common+=(-x "$gid_index")
  cuda_args=()
  if [ "$use_cuda" = 1 ]; then
    help=""
    help="$(ib_write_bw --help 2>&1 || true)"  # not piped into grep -q (pipefail + SIGPIPE)
    if [[ "$help" != *use_cuda* ]]; then
      result FAIL ib_write_bw "this perftest is built without CUDA (no --use_cuda): build perftest with CUDA"
      use_cuda=skip
    fi
    cuda_args=(--use_cuda=0)
  fi
  if [ "$use_cuda" != skip ]; then
    server_args=("${common[@]}" "${cuda_args[@]}")
    [ -z "$peer_device" ] || server_args+=(-d "$peer_device")
    server_log="$(mktemp)"
    trap 'rm -f "$server_log"' EXIT
    kvf_ssh peer timeout 60 ib_write_bw "${server_args[@]}" >"$server_log" 2>&1 &
    server=$!
    client_out=""
    ok=0
    for _ in $(seq 20); do
      if client_out="$(timeout 60 ib_write_bw -d "${devices[0]}" "${common[@]}" "${cuda_args[@]}" "$peer_addr" 2>&1)"; then
        ok=1
        break
      fi
      kill -0 "$server" 2>/dev/null || break
      sleep 0.5
    done
    wait "$server" 2>/dev/null || true
    gbps="$(awk '/^ *[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+/ { bw = $4 } END { print bw }' <<<"$client_out")"
    mode="host memory"; [ "$use_cuda" = 1 ] && mode="GPU memory (--use_cuda)"
    if [ "$ok" = 1 ] && [ -n "$gbps" ]; then
      if [ -n "$min_gbps" ] && awk -v a="$gbps" -v b="$min_gbps" 'BEGIN { exit !(a < b) }'; then
        result FAIL ib_write_bw "$gbps Gb/s average to $peer, $mode: below --min-gbps $min_gbps" "$client_out"
      else
        result PASS ib_write_bw "$gbps Gb/s average to $peer, $mode" "$(tail -n 4 <<<"$client_out")"
      fi
    else
      result FAIL ib_write_bw "no result against $peer ($mode)" \
        "client:"$'\n'"$(tail -n 15 <<<"$client_out")"$'\n'"server (over ssh):"$'\n'"$(tail -n 15 "$server_log")"
    fi
  fi
fi

echo "summary: ${counts[PASS]} PASS, ${counts[FAIL]} FAIL, ${counts[SKIP]} SKIP"
[ "${counts[FAIL]}" -eq 0 ]
