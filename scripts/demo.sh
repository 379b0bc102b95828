#!/usr/bin/env bash
# The main job: builds Gingham and peers its BGP speaker with BIRD, FRR and GoBGP in network
# namespaces (iBGP/eBGP, IPv4/IPv6, 2- and 4-octet ASNs), prints the session table and the
# routes exchanged, then removes everything it created.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --workspace --bins
exec ./target/release/gingham-lab up --nodes 3 --pods-per-node 2 "$@"
