#!/usr/bin/env bash
# The load run of issue 5: builds the release binaries, then 64 agents (one
# vault-mcp each by default; `--via grpc` for direct gRPC clients) make 100k
# calls against a local HTTPS upstream, then `vaultctl lock` runs with slow
# calls in flight. Prints the figures as JSON on stdout (progress on stderr);
# exit status 0 when both phases pass. Options go to the load run, e.g.
# `scripts/load.sh --calls 20000 --via grpc` (see tests/src/bin/vaultd-bench.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --bins >&2
export VAULTD_BIN_DIR="$PWD/target/release"
exec target/release/vaultd-bench load "$@"
