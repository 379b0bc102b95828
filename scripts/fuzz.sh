#!/usr/bin/env bash
# Runs the BGP message decoder fuzz target for a bounded time (default 60 s).
# Usage: scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly features; the one stable toolchain here provides them through
# RUSTC_BOOTSTRAP=1. Crashes land in fuzz/artifacts/message_decode/ and should become named
# unit tests in bgp/tests/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/message_decode
# Seed the corpus with the golden vectors from BIRD, FRR and GoBGP (codec byte 0x01 = 4-octet).
grep -o 'hex=[0-9a-f]*' bgp/tests/golden/daemons.txt | cut -d= -f2 | while read -r hex; do
  f="fuzz/corpus/message_decode/golden-$(printf '%s' "$hex" | sha1sum | cut -c1-12)"
  [ -f "$f" ] || { printf '\x01'; printf '%s' "$hex" | xxd -r -p; } > "$f"
done
RUSTC_BOOTSTRAP=1 cargo fuzz run message_decode --fuzz-dir fuzz -- -max_total_time="$secs" -rss_limit_mb=2048
