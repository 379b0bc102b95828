#!/usr/bin/env bash
# The main job: builds Gingham and runs a three-node cluster in network namespaces: an agent per
# node, two pods per node made through the real CNI plugin, the BGP mesh between the nodes; it
# prints each node's status and routes and a ping matrix between all pods, then removes
# everything it created. (`gingham-lab interop` shows the speaker against BIRD, FRR and GoBGP.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --workspace --bins
exec ./target/release/gingham-lab up --nodes 3 --pods-per-node 2 "$@"
