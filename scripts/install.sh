#!/usr/bin/env bash
# Build vaultd from source, install the three binaries into ~/.local/bin (or
# $PREFIX/bin), their man pages and bash/fish completions, install the systemd
# user unit and start it. Idempotent. (A .deb: scripts/build-deb.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-$HOME/.local}"
# These paths go into the systemd unit (through sed): refuse, before anything
# is installed, characters the unit or sed would read as syntax.
for var in PREFIX XDG_DATA_HOME XDG_STATE_HOME XDG_CONFIG_HOME; do
  value="${!var:-}"
  case "$value" in
    *[[:space:]\&\|%\"\\]*)
      echo "install.sh: $var=$value holds a space or one of & | % \" \\, which the systemd unit cannot carry as written: use a path without them" >&2
      exit 1 ;;
  esac
done
cargo build --release --locked --workspace --bins
# Where cargo put them: CARGO_TARGET_DIR or a cargo config may move target/.
target_dir="$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
bin_dir="${target_dir:-target}/release"
install -d -m 0755 "$PREFIX/bin"
# vaultd and vaultctl execute-only (0111: not even you can read them): the
# kernel then starts them non-dumpable, so no process of yours can open their
# /proc/PID/mem in the moment before they make themselves so (an open
# descriptor outlives PR_SET_DUMPABLE=0). vault-mcp holds nothing the agent
# cannot read anyway.
install -m 0111 "$bin_dir/vaultd" "$PREFIX/bin/vaultd"
install -m 0111 "$bin_dir/vaultctl" "$PREFIX/bin/vaultctl"
install -m 0755 "$bin_dir/vault-mcp" "$PREFIX/bin/vault-mcp"
echo "installed vaultd, vaultctl, vault-mcp into $PREFIX/bin"
# Man pages and completions, generated from the binaries' own clap definitions.
docs="$(mktemp -d)"
"$bin_dir/xtask" gen-docs "$docs" >/dev/null
data_dir="${XDG_DATA_HOME:-$HOME/.local/share}"
install -d -m 0755 "$PREFIX/share/man/man1" "$data_dir/bash-completion/completions" "$data_dir/fish/vendor_completions.d"
install -m 0644 "$docs"/man/*.1 "$PREFIX/share/man/man1/"
for b in vaultd vaultctl vault-mcp; do
  install -m 0644 "$docs/completions/bash/$b.bash" "$data_dir/bash-completion/completions/$b"
  install -m 0644 "$docs/completions/fish/$b.fish" "$data_dir/fish/vendor_completions.d/$b.fish"
done
rm -rf "$docs"
echo "installed man pages into $PREFIX/share/man/man1, bash and fish completions into $data_dir"
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
install -d -m 0755 "$unit_dir"
# The unit names the default XDG directories; where this shell sets others
# (absolute, as the XDG spec requires), the unit gets them too, so that the
# service and vaultctl find the same vault, audit log and vaultd.toml.
edits=(-e "s|%h/.local/bin/vaultd|$PREFIX/bin/vaultd|")
environment=()
for var in XDG_DATA_HOME XDG_STATE_HOME XDG_CONFIG_HOME; do
  value="${!var:-}"
  case "$value" in
    /*) ;;
    *) continue ;;
  esac
  environment+=("Environment=\"$var=$value\"")
done
sed "${edits[@]}" systemd/vaultd.service > "$unit_dir/vaultd.service"
if [ "${#environment[@]}" -gt 0 ]; then
  printf '%s\n' "${environment[@]}" > "$unit_dir/vaultd.service.env"
  sed -i "/^\[Service\]/r $unit_dir/vaultd.service.env" "$unit_dir/vaultd.service"
  rm -f "$unit_dir/vaultd.service.env"
fi
install -d -m 0700 "${XDG_DATA_HOME:-$HOME/.local/share}/vaultd" "${XDG_STATE_HOME:-$HOME/.local/state}/vaultd"
if systemctl --user daemon-reload 2>/dev/null; then
  was_running=no
  systemctl --user is-active --quiet vaultd && was_running=yes
  systemctl --user enable --now vaultd
  echo "vaultd is running as a systemd user service: systemctl --user status vaultd"
  if [ "$was_running" = yes ]; then
    # Not restarted here: that would lock the vault and abort calls in flight.
    echo "note: vaultd was already running, as the version installed before: run this one with \`systemctl --user restart vaultd\` (it starts locked: then \`vaultctl unlock\`)"
  fi
else
  echo "no systemd user instance here: run \`$PREFIX/bin/vaultd\` in a terminal (it stays in the foreground)"
fi
echo "next: vaultctl init, then vaultctl unlock (see README.md)"
