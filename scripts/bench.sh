#!/usr/bin/env bash
# The benchmark of issue 3: builds the release binaries, runs vaultd-bench
# against a local HTTPS upstream and prints the figures as JSON on stdout
# (progress on stderr). Exit status 0 when every call succeeded; the JSON's
# "all_targets_pass" says whether every performance target was met.
# Options go to the benchmark, e.g. `scripts/bench.sh --latency-calls 5000`
# (see tests/src/bin/vaultd-bench.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --bins >&2
export VAULTD_BIN_DIR="$PWD/target/release"
exec target/release/vaultd-bench bench "$@"
