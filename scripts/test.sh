#!/usr/bin/env bash
# Every check CI runs: formatting, lints, the sans-IO build without the tokio driver, docs with
# broken links denied, and all tests, including the root-only namespace tests that run BIRD,
# FRR and GoBGP.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
set -x
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# wire and fsm must never need a socket or a clock.
cargo build -p gingham-bgp -p gingham-bfd --no-default-features
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The lab tests run the real gingham-agent and gingham-cni binaries.
cargo build --workspace --bins
cargo test --workspace
# Every fuzz target builds and runs a few seconds on its checked-in seeds (the campaign itself,
# scripts/fuzz.sh with minutes per target, is run by hand; see README).
scripts/fuzz.sh 5
