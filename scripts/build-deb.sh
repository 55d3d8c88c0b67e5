#!/usr/bin/env bash
# Builds the Debian package: target/debian/vaultd_VERSION-1_ARCH.deb, holding vaultd,
# vaultctl and vault-mcp (/usr/bin), the systemd user unit
# (/usr/lib/systemd/user/vaultd.service, ExecStart=/usr/bin/vaultd), man pages
# (vaultd(1), vaultctl(1) and one per vaultctl subcommand, vault-mcp(1)) and
# bash/zsh/fish completions, all generated from the binaries' own clap
# definitions by xtask. The package metadata is [package.metadata.deb] in
# vaultd/Cargo.toml. Prints the path of the .deb on its last line.
#
# Needs cargo-deb (installed here with `cargo install` when missing: a few
# minutes, once). scripts/test-deb.sh installs and checks the result.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-deb: installing cargo-deb (cargo install cargo-deb --locked)..." >&2
  cargo install cargo-deb --locked >&2
fi

# The three binaries and the generator, release profile, in one build (one
# feature resolution: building them apart would compile the vaultd library twice).
cargo build --release --locked -p vaultd -p vault-mcp -p xtask --bins >&2

target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
  grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
gen="$target_dir/release/gen-docs"
rm -rf "$gen"
"$target_dir/release/xtask" gen-docs "$gen" >/dev/null
gzip -9n "$gen"/man/*.1

# The user unit, pointing at the packaged binary.
mkdir -p "$gen/systemd"
sed 's|^ExecStart=%h/.local/bin/vaultd$|ExecStart=/usr/bin/vaultd|' systemd/vaultd.service \
  > "$gen/systemd/vaultd.service"
if ! grep -qx 'ExecStart=/usr/bin/vaultd' "$gen/systemd/vaultd.service"; then
  echo "build-deb: systemd/vaultd.service has no 'ExecStart=%h/.local/bin/vaultd' line to rewrite" >&2
  exit 1
fi

out="$(cargo deb -p vaultd --no-build --locked --output "$target_dir/debian/" 2>&1 | tee /dev/stderr | tail -n 1 | tr -d ' ')"
if [ ! -f "$out" ]; then
  echo "build-deb: cargo deb did not name a .deb (last line: $out)" >&2
  exit 1
fi
echo "$out"
