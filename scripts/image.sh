#!/usr/bin/env bash
# Builds the Gingham image with podman, offline: FROM scratch plus the four binaries, nft and
# the exact shared libraries they need (from ldd). Usage: scripts/image.sh [--debug] [TAG]
#   --debug  use the debug binaries already built (what the tests do); default: a release build.
#   TAG      default localhost/gingham:<workspace version>.
# Prints the tag and the image size.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--debug" ]; then profile=debug; shift; fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
tag="${1:-localhost/gingham:$version}"
target="${CARGO_TARGET_DIR:-target}"
if [ "$profile" = release ]; then
  cargo build --release -p gingham-agent -p gingham-cni -p gingham-controllers -p gingham-cli --bins
fi
ctx="$target/image-$profile"
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/usr/sbin" "$ctx/rootfs/tmp" "$ctx/rootfs/run/gingham" "$ctx/rootfs/run/netns" "$ctx/rootfs/var"
chmod 1777 "$ctx/rootfs/tmp"
# As on the host: pod namespaces are named /var/run/netns/... by runtimes and live in /run.
ln -s ../run "$ctx/rootfs/var/run"
for bin in gingham-agent gingham-cni gingham-controllers ginghamctl; do
  # Symbols stay in the build tree; the image carries code only.
  strip -o "$ctx/rootfs/usr/local/bin/$bin" "$target/$profile/$bin"
done
cp "$(command -v nft)" "$ctx/rootfs/usr/sbin/nft"
# Every library the binaries and nft load, at the path the loader looks for it.
for exe in "$ctx"/rootfs/usr/local/bin/* "$ctx/rootfs/usr/sbin/nft"; do
  ldd "$exe" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp Containerfile "$ctx/Containerfile"
podman build --runtime runc --quiet -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
size="$(podman image inspect --format '{{.Size}}' "$tag")"
echo "$tag $(( size / 1024 / 1024 )) MB"
