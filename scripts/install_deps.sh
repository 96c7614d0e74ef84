#!/usr/bin/env bash
# Installs everything kvferry needs to build and test, from the distribution's packages only:
# Debian 12, or Ubuntu 24.04 (what GPU hosts usually run). Idempotent: packages already present
# are left alone; safe to run again after an upgrade.
#
#   scripts/install_deps.sh            # install what is missing
#   scripts/install_deps.sh --check    # only report what is missing (exit 1 if anything is)
#
# CUDA is optional and never installed here: when /usr/local/cuda/bin/nvcc exists the build
# compiles the CUDA paths (they compile without a GPU); otherwise they are left out. A host that
# cannot install packages: scripts/offline_deps.sh.
set -euo pipefail

# Boost >= 1.81, headers only (Asio, Beast, System; Boost.JSON is compiled into the build):
# Debian 12's default libboost-dev is 1.74, so the versioned package is named; Ubuntu 24.04 has
# 1.83.
boost=libboost1.81-dev
clang_rt=libclang-rt-14-dev  # libFuzzer and the sanitizers' runtimes for clang (scripts/fuzz.sh)
if [ -r /etc/os-release ] && grep -q '^ID=ubuntu' /etc/os-release; then
  boost=libboost1.83-dev
  clang_rt=libclang-rt-18-dev
fi

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git
  "$boost"
  libyaml-cpp-dev
  prometheus-cpp-dev
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev
  # OpenSSL's libcrypto: the control plane's HMAC (common/control_auth.h).
  libssl-dev
  # RDMA: libibverbs headers for the verbs backend, tools for verify_gpudirect / rxe tests.
  rdma-core libibverbs-dev librdmacm-dev ibverbs-utils ibverbs-providers perftest
  # The Soft-RoCE VM that runs the verbs tests (../shared/tools/rxe-vm): QEMU and its tools.
  qemu-system-x86 rdmacm-utils iproute2 xz-utils
  # Benchmarks: the TCP ceiling for bench_transfer.sh; jq to read JSON results in scripts.
  iperf3 jq gnuplot-nox
  # The reverse proxy bench_orchestrator.sh measures the orchestrator against; it runs its own
  # nginx unprivileged from a generated config (note: where systemd runs, the package also
  # enables the system nginx on port 80).
  nginx
  # Metrics: prometheus and promtool for tests/integration/metrics_test.sh (dashboards/).
  prometheus
  # Cluster scripts: smart_deploy/run/stop.sh work over ssh + rsync and poll with curl;
  # openssh-server runs the loopback "hosts" of tests/integration/cluster_scripts_test.sh (note:
  # installing it enables the system sshd on port 22 where systemd runs).
  openssh-client openssh-server rsync curl
  # systemd-analyze checks the units smart_deploy.sh generates (cluster_scripts_test.sh).
  systemd
  # Tooling named in STYLE.md; clang and its runtimes build the libFuzzer targets (fuzz/).
  clang-format clang-tidy clang "$clang_rt"
  # The Unicode Character Database: source of model/unicode_data.cc (scripts/gen_unicode_tables.py)
  # and of the NFC conformance test (tests/model/unicode_test.cc). Data only, never read at run time.
  unicode-data bzip2
)

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  -h | --help)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "install_deps.sh: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps.sh: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install_deps.sh: missing: ${missing[*]}"
[ "$check_only" -eq 1 ] && exit 1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    echo "install_deps.sh: not root and no sudo; install the packages above by hand" >&2
    exit 1
  }
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# iperf3 asks whether to start a daemon; answer no without a prompt.
echo "iperf3 iperf3/start_daemon boolean false" | $SUDO debconf-set-selections
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install_deps.sh: installed ${#missing[@]} packages"
