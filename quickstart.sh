#!/usr/bin/env bash
# tlswall quick start (Debian 12, as root).
#   ./quickstart.sh demo   install what is missing, build, run the sandbox demo
#   ./quickstart.sh test   install what is missing, build, run the whole test suite
# Both only ever attach to interfaces inside network namespaces they create.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

BUILD_DIR=${TLSWALL_BUILD_DIR:-$PWD/build}

# Build: compilers, BPF toolchain (clang, also for the fuzz targets: its
# libFuzzer and sanitizer runtimes are only "recommended" by clang-14, so
# named here), libraries. Run/test: the real peers.
# Kernel matrix (tests/kernel_matrix/): qemu, debootstrap, busybox, depmod, mke2fs.
PACKAGES=(
  cmake make g++ pkg-config clang llvm bpftool libclang-rt-14-dev
  libbpf-dev libelf-dev zlib1g-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
  libssl-dev libgtest-dev libgmock-dev libthrift-dev thrift-compiler libboost-dev
  iproute2 procps openssl curl socat nginx-light python3 python3-scapy
  iperf3 wrk stunnel4 haproxy rsyslog jq tcpdump gdb util-linux redis-server redis-tools
  qemu-system-x86 debootstrap busybox-static kmod e2fsprogs
)

die() { echo "quickstart: $*" >&2; exit 1; }

install_deps() {
  [ "$(id -u)" = 0 ] || die "run as root (the agent loads BPF programs; apt installs packages)"
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "quickstart: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      die "apt-get install ${missing[*]} failed"
  fi
  # The upgrade proxy's worker runs as this dedicated unprivileged user.
  if ! id -u tlswall-proxy >/dev/null 2>&1; then
    echo "quickstart: creating the system user tlswall-proxy (the upgrade proxy runs as it)"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      tlswall-proxy || die "useradd tlswall-proxy failed"
  fi
  # Debian starts nginx on install; the tests start their own inside namespaces.
  if command -v systemctl >/dev/null && systemctl is-active -q nginx 2>/dev/null; then
    systemctl stop nginx || true
  fi
}

build() {
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc)"
}

case "${1:-}" in
  demo)
    install_deps
    build
    exec /usr/bin/python3 tests/e2e/demo.py --build-dir "$BUILD_DIR"
    ;;
  test)
    install_deps
    build
    cd "$BUILD_DIR"
    exec ctest --output-on-failure --timeout 900
    ;;
  *)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac
