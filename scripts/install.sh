#!/usr/bin/env bash
# Build vaultd from source, install the three binaries into ~/.local/bin (or
# $PREFIX/bin), install the systemd user unit and start it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-$HOME/.local}"
cargo build --release --locked --workspace --bins
install -d -m 0755 "$PREFIX/bin"
for b in vaultd vaultctl vault-mcp; do
  install -m 0755 "target/release/$b" "$PREFIX/bin/$b"
done
echo "installed vaultd, vaultctl, vault-mcp into $PREFIX/bin"
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
install -d -m 0755 "$unit_dir"
sed "s|%h/.local/bin/vaultd|$PREFIX/bin/vaultd|" systemd/vaultd.service > "$unit_dir/vaultd.service"
install -d -m 0700 "${XDG_DATA_HOME:-$HOME/.local/share}/vaultd" "${XDG_STATE_HOME:-$HOME/.local/state}/vaultd"
if systemctl --user daemon-reload 2>/dev/null; then
  systemctl --user enable --now vaultd
  echo "vaultd is running as a systemd user service: systemctl --user status vaultd"
else
  echo "no systemd user instance here: run \`$PREFIX/bin/vaultd\` in a terminal (it stays in the foreground)"
fi
echo "next: vaultctl init, then vaultctl unlock (see README.md)"
