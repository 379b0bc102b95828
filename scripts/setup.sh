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

# Rust: the workspace's rust-version (Cargo.toml) or newer. Debian 12's own rustc (1.63) is far
# too old, so it is never installed; rustup's stable toolchain is, when nothing new enough is here.
need_rust="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml")"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
rust_ok() {
  local have
  have="$(rustc --version 2>/dev/null | awk '{print $2}')"
  [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need_rust" "$have" | sort -V | head -1)" = "$need_rust" ]
}
if ! rust_ok; then
  echo "rustc $need_rust or newer is needed (found: $(rustc --version 2>/dev/null || echo none)); installing rustup's stable toolchain"
  if ! command -v rustup >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    if command -v curl >/dev/null 2>&1 || apt-get install -y -qq curl ca-certificates >/dev/null; then
      curl -sSf -o "$tmp/rustup-init" https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
        && chmod +x "$tmp/rustup-init" && "$tmp/rustup-init" -y --profile minimal --default-toolchain none >/dev/null || true
    fi
    rm -rf "$tmp"
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v rustup >/dev/null 2>&1 && rustup toolchain install stable --profile minimal -c rustfmt -c clippy >/dev/null && rustup default stable >/dev/null || true
  if ! rust_ok; then
    echo "Gingham needs rustc $need_rust or newer and could not install it. Install rustup" >&2
    echo "(https://rustup.rs), then run: rustup toolchain install stable; rustup default stable" >&2
    exit 1
  fi
fi
