#!/usr/bin/env bash
# Dependencies for a host that cannot install packages (no network, e.g. a lent GPU machine):
# fetch them here, where apt works, into .deps/ (git-ignored); copy the tree with .deps/ to the
# host; scripts/build_gpu.sh there unpacks and uses them. Today that is prometheus-cpp's core
# library and headers, and OpenSSL 3's headers and libcrypto (Ubuntu 24.04's GPU images carry
# everything else kvferry needs: Boost headers, yaml-cpp, spdlog, GoogleTest, libibverbs, CUDA;
# their own libcrypto.so.3, OpenSSL 3.0 as Debian's, is the one the binaries load).
#
#   scripts/offline_deps.sh fetch     # apt-get download the packages into .deps/ (needs apt)
#   scripts/offline_deps.sh unpack    # dpkg -x them into .deps/root (build_gpu.sh does this)
#   scripts/offline_deps.sh --help
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
deps="$root/.deps"
PACKAGES=(prometheus-cpp-dev libprometheus-cpp-core1.0 libssl-dev libssl3)

case "${1:-}" in
  fetch)
    mkdir -p "$deps"
    cd "$deps"
    rm -f ./*.deb
    apt-get download "${PACKAGES[@]}"
    echo "offline_deps.sh: fetched $(ls ./*.deb | wc -l) packages into $deps"
    ;;
  unpack)
    shopt -s nullglob
    debs=("$deps"/*.deb)
    if [ ${#debs[@]} -eq 0 ]; then
      echo "offline_deps.sh: no packages in $deps: run 'scripts/offline_deps.sh fetch' on a host with apt" >&2
      exit 1
    fi
    rm -rf "$deps/root"
    for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$deps/root"; done
    # The package's CMake config also demands civetweb, curl and zlib for parts kvferry does not
    # use; without it CMakeLists.txt finds the core library and headers directly.
    rm -rf "$deps/root/usr/lib/x86_64-linux-gnu/cmake/prometheus-cpp"
    # Debian keeps OpenSSL's configuration headers in the multiarch folder, which the compiler
    # searches only under /usr/include: put them beside the others.
    if [ -d "$deps/root/usr/include/x86_64-linux-gnu/openssl" ]; then
      cp "$deps/root/usr/include/x86_64-linux-gnu/openssl/"*.h "$deps/root/usr/include/openssl/"
    fi
    echo "offline_deps.sh: unpacked ${#debs[@]} packages into $deps/root"
    ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    echo "offline_deps.sh: say 'fetch' or 'unpack' (see --help)" >&2
    exit 2
    ;;
esac
