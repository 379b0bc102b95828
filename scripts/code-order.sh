#!/usr/bin/env bash
# Writes agent/code-order.txt: the agent's functions that run in a lab cluster (start, BGP mesh,
# pods made and removed through the CNI plugin, routes installed and removed) and on a node
# taking a table from its ToRs, hottest first,
# as the linker's symbol ordering file; and integration/code-order.txt, the same for
# gingham-lab's speaker as bench-rr runs it (the device it measures against BIRD's memory).
# Release builds lay them out together at the start of the binary's code (build/link_order.rs),
# so the code a running agent touches is a few contiguous megabytes instead of pages spread over
# all ten, each of which the kernel maps with its neighbours (fault-around): that code is most
# of an idle agent's resident memory.
#
# Run it again after a Rust or dependency update (the names carry hashes that change with them;
# names the binary no longer has are skipped, so a stale file costs memory, never correctness).
# Needs valgrind; run as root (the lab builds network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
command -v valgrind >/dev/null 2>&1 || apt-get install -y -qq valgrind >/dev/null

cargo build --release -p gingham-agent -p gingham-cni -p gingham-integration --bins
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export GINGHAM_LAB_WRAPPER="valgrind --tool=callgrind --demangle=no --callgrind-out-file=$out/run.%p"
./target/release/gingham-lab up --nodes 2 --pods-per-node 3 >/dev/null
# A node taking a table from its ToR, and one of two ToRs going and coming back (with nexthop
# objects and without): the FIB's bulk paths, which the lab above never reaches.
./target/release/gingham-lab bench-node --only table --routes 5000 >/dev/null
mkdir "$out/agent" && mv "$out"/run.* "$out/agent/"
./target/release/gingham-lab bench-rr --only gingham --scenarios fanout,fanin,churn --clients 1,10 --churn-seconds 3 >/dev/null
mkdir "$out/speaker" && mv "$out"/run.* "$out/speaker/"
unset GINGHAM_LAB_WRAPPER

# order BINARY DUMPS...: the functions of BINARY that ran, hottest first. Callgrind's format:
# "ob=", "fn=" and "cfn=" lines name (and number, for reuse) the object and function the cost
# lines after them belong to; the line after "calls=" is a call's inclusive cost, not the
# caller's own. Only names the binary defines are kept (callgrind also names what it found only
# in debug info).
order() {
  local binary=$1; shift
  awk -v object="/$(basename "$binary")" '
    FNR == 1 { delete names; delete objects; ob = ""; fn = ""; skip = 0 }
    function named(s, table,    id, rest) {
      if (match(s, /^\([0-9]+\)/)) {
        id = substr(s, 2, RLENGTH - 2); rest = substr(s, RLENGTH + 2)
        if (rest != "") table[id] = rest
        return table[id]
      }
      return s
    }
    /^ob=/ { ob = named(substr($0, 4), objects); next }
    /^cob=/ { named(substr($0, 5), objects); next }
    /^fn=/ { fn = named(substr($0, 4), names); skip = 0; next }
    /^cfn=/ { named(substr($0, 5), names); next }
    /^calls=/ { skip = 1; next }
    /^[0-9+*-]/ {
      if (skip) { skip = 0; next }
      if (substr(ob, length(ob) - length(object) + 1) == object) cost[fn] += $2
      next
    }
    END { for (f in cost) print cost[f], f }
  ' "$@" | sort -k1,1nr -k2 | awk '{ print $2 }' > "$out/order"
  nm --defined-only "$binary" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u > "$out/defined"
  awk 'NR == FNR { defined[$1] = 1; next } defined[$1]' "$out/defined" "$out/order"
}
order target/release/gingham-agent "$out"/agent/run.* > agent/code-order.txt
order target/release/gingham-lab "$out"/speaker/run.* > integration/code-order.txt
echo "agent/code-order.txt: $(wc -l < agent/code-order.txt) functions; integration/code-order.txt: $(wc -l < integration/code-order.txt)"
