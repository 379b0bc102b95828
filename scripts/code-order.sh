#!/usr/bin/env bash
# Writes agent/code-order.txt: the agent's functions that run in a lab cluster (start, BGP mesh,
# pods made and removed through the CNI plugin, routes installed and removed), hottest first,
# as the linker's symbol ordering file. The release build lays them out together at the start of
# the agent's code (agent/build.rs), so the code a running agent touches is a few contiguous
# megabytes instead of pages spread over all ten, each of which the kernel maps with its
# neighbours (fault-around): that code is most of an idle agent's resident memory.
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
GINGHAM_LAB_AGENT_WRAPPER="valgrind --tool=callgrind --demangle=no --callgrind-out-file=$out/agent.%p" \
  ./target/release/gingham-lab up --nodes 2 --pods-per-node 3 >/dev/null
ls "$out"/agent.* >/dev/null

# Callgrind's format: "ob=", "fn=" and "cfn=" lines name (and number, for reuse) the object and
# function the cost lines after them belong to; the line after "calls=" is a call's inclusive
# cost, not the caller's own. Sums each agent function's own instructions over all agents.
awk '
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
    if (ob ~ /\/gingham-agent$/) cost[fn] += $2
    next
  }
  END { for (f in cost) print cost[f], f }
' "$out"/agent.* | sort -k1,1nr -k2 | awk '{ print $2 }' > "$out/order"

# Only names the binary defines (callgrind also names what it found only in debug info).
nm --defined-only target/release/gingham-agent | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u > "$out/defined"
awk 'NR == FNR { defined[$1] = 1; next } defined[$1]' "$out/defined" "$out/order" > agent/code-order.txt
echo "agent/code-order.txt: $(wc -l < agent/code-order.txt) functions"
