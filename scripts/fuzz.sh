#!/usr/bin/env bash
# The fuzz campaign: runs every cargo-fuzz target (or the ones named) for SECONDS each
# (default 60) and prints, per target, the executions, coverage and corpus size libFuzzer
# reports at the end. Seeds (real inputs: golden BGP vectors from BIRD, FRR and GoBGP, the
# manifests' resources, runtime-style CNI requests, the selector tests' selectors, BFD packets
# as FRR and BIRD send them) are checked
# in under fuzz/seeds/; what a campaign finds grows fuzz/corpus/ (not checked in). A crash
# stops the campaign with the input in fuzz/artifacts/TARGET/; turn it into a named
# regression test next to the code it broke.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# cargo-fuzz needs nightly features; the stable toolchain provides them through
# RUSTC_BOOTSTRAP=1. The targets are safe Rust, so the campaign runs without a sanitizer by
# default (several times the executions per second); FUZZ_SANITIZER=address turns ASan on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(message_decode cni_request resource_decode selector_parse bfd_session)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
printf '%-16s %14s %10s %10s %8s %8s\n' target executions exec/s coverage features corpus
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log="fuzz/last-$t.log"
  cargo fuzz run "$t" --fuzz-dir fuzz --sanitizer "${FUZZ_SANITIZER:-none}" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || {
    echo "$t: crashed or failed to build; see $log" >&2
    tail -30 "$log" >&2
    exit 1
  }
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
  cov=$(sed -E 's/.*cov: ([0-9]+).*/\1/' <<<"$done_line")
  ft=$(sed -E 's/.*ft: ([0-9]+).*/\1/' <<<"$done_line")
  corp=$(sed -E 's/.*corp: ([0-9]+).*/\1/' <<<"$done_line")
  printf '%-16s %14s %10s %10s %8s %8s\n' "$t" "$execs" "$rate" "$cov" "$ft" "$corp"
done
