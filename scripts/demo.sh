#!/usr/bin/env bash
# The main job: builds Gingham and peers its BGP speaker with BIRD, FRR and GoBGP in network
# namespaces (iBGP/eBGP, IPv4/IPv6, 2- and 4-octet ASNs), prints the session table and the
# routes exchanged, then removes everything it created.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release -p gingham-integration --bin gingham-lab
exec ./target/release/gingham-lab interop "$@"
