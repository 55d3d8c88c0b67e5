#!/usr/bin/env bash
# The whole test suite, on a fresh machine: builds the binaries the
# end-to-end tests drive, prepares the Python MCP client, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
if [ -x tests/setup-venv.sh ]; then tests/setup-venv.sh; fi
cargo test --workspace --locked
