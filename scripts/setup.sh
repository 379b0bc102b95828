#!/usr/bin/env bash
# Installs what Gingham's demo and tests need on Debian 12, skipping what is already there:
# BGP daemons to peer with (BIRD 2, FRR, GoBGP, ExaBGP), iproute2, ping, tshark, and the
# reference CNI plugins (bridge, host-local) the CNI benchmark compares with, and podman + runc
# + busybox for the real-runtime test.
# Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "Gingham's lab and tests build network namespaces: run as root (e.g. with sudo)." >&2
  exit 1
fi

need=()
for pair in nft:nftables bird:bird2 /usr/lib/frr/bgpd:frr gobgpd:gobgpd exabgp:exabgp ip:iproute2 ping:iputils-ping tshark:tshark ss:iproute2 xxd:xxd /usr/lib/cni/bridge:containernetworking-plugins podman:podman runc:runc /bin/busybox:busybox-static nsenter:util-linux; do
  cmd="${pair%%:*}"; pkg="${pair#*:}"
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "$cmd" ]; then need+=("$pkg"); fi
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; the answer does not matter here.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# promtool (the metrics lint the metrics test runs) from Debian's prometheus package, unpacked
# rather than installed: installing it would also start a Prometheus server.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool to /usr/local/bin"
  tmp="$(mktemp -d)"
  (cd "$tmp" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; } && dpkg-deb -x prometheus_*.deb x && install -m 755 x/usr/bin/promtool /usr/local/bin/promtool)
  rm -rf "$tmp"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "installing Debian's Rust toolchain (Gingham needs rustc 1.80 or newer)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo rustc >/dev/null
fi
