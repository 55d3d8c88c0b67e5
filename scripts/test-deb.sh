#!/usr/bin/env bash
# Proves the Debian package on this machine (root, Debian/Ubuntu):
#   the package holds exactly what it should (no vaultd-sandbox-probe),
#   `dpkg -i` installs it, the installed binaries run (`vaultctl --version`,
#   and vaultd serves vaultctl from a temporary VAULTD_HOME),
#   `man vaultctl` shows the page (man-db is installed with apt when missing),
#   bash loads the completions (`complete -p vaultctl`, and completes a subcommand),
#   the user unit is in /usr/lib/systemd/user with ExecStart=/usr/bin/vaultd,
#   `dpkg -r` removes it and leaves none of its files behind.
# Usage: scripts/test-deb.sh [PATH.deb]   (default: build it with scripts/build-deb.sh)
# Not part of `cargo test`: it needs a release build and changes the system's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i / dpkg -r)"
command -v dpkg >/dev/null || fail "not a dpkg system"

deb="${1:-}"
if [ -z "$deb" ]; then
  step "building the package (scripts/build-deb.sh)"
  deb="$(scripts/build-deb.sh 2>/tmp/build-deb.$$.log | tail -n 1)" || { tail -n 30 /tmp/build-deb.$$.log; fail "build-deb.sh failed"; }
  rm -f /tmp/build-deb.$$.log
fi
[ -f "$deb" ] || fail "no package at '$deb'"
if dpkg-query -W -f='${Status}' vaultd 2>/dev/null | grep -q "install ok installed"; then
  fail "a vaultd package is already installed: remove it first (dpkg -r vaultd)"
fi

step "package: $deb ($(du -h "$deb" | cut -f1), $(stat -c %s "$deb") bytes)"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
contents="$(dpkg-deb --contents "$deb")"
echo "$contents" | awk '{print $1, $3, $6}'
files="$(echo "$contents" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|')"
for want in /usr/bin/vaultd /usr/bin/vaultctl /usr/bin/vault-mcp \
  /usr/lib/systemd/user/vaultd.service \
  /usr/share/man/man1/vaultd.1.gz /usr/share/man/man1/vaultctl.1.gz /usr/share/man/man1/vault-mcp.1.gz \
  /usr/share/bash-completion/completions/vaultctl \
  /usr/share/zsh/vendor-completions/_vaultctl \
  /usr/share/fish/vendor_completions.d/vaultctl.fish; do
  echo "$files" | grep -qx "$want" || fail "$want is not in the package"
done
if echo "$files" | grep -q sandbox-probe; then fail "vaultd-sandbox-probe must not be packaged"; fi
echo "ok: every expected file, no vaultd-sandbox-probe"

step "dpkg -i"
dpkg -i "$deb"
dpkg-query -W -f='${Package} ${Version} ${Status}\n' vaultd

step "vaultctl --version (and the other two)"
for b in vaultctl vaultd vault-mcp; do
  [ "$(command -v $b)" = "/usr/bin/$b" ] || fail "$b resolves to '$(command -v $b)', not /usr/bin/$b"
  "/usr/bin/$b" --version
done

step "the installed vaultd serves the installed vaultctl (temporary VAULTD_HOME)"
home="$(mktemp -d)"
VAULTD_HOME="$home" /usr/bin/vaultd 2>"$home.log" &
vaultd_pid=$!
ok=""
for _ in $(seq 1 100); do
  if VAULTD_HOME="$home" /usr/bin/vaultctl status >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.1
done
VAULTD_HOME="$home" /usr/bin/vaultctl status --json || true
kill -TERM "$vaultd_pid"; wait "$vaultd_pid" || true
rm -rf "$home" "$home.log"
[ -n "$ok" ] || fail "vaultd did not answer"
echo "ok: vaultd answered and exited on SIGTERM"

step "man vaultctl"
if ! command -v man >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq man-db >/dev/null
fi
echo "man -w: $(man -w vaultctl)"
page="$(MANPAGER=cat MANWIDTH=80 man vaultctl 2>/dev/null)"
echo "$page" | head -n 12
echo "$page" | grep -q "^NAME" || fail "man vaultctl: no NAME section"
echo "$page" | grep -q "vaultctl-secret" || fail "man vaultctl: subcommands not listed"
MANPAGER=cat man vaultd >/dev/null 2>&1 || fail "man vaultd"
MANPAGER=cat man vault-mcp >/dev/null 2>&1 || fail "man vault-mcp"
MANPAGER=cat man vaultctl-secret-set >/dev/null 2>&1 || fail "man vaultctl-secret-set"
echo "ok: vaultd(1), vaultctl(1), vaultctl-secret-set(1), vault-mcp(1)"

step "bash completion"
bash --norc --noprofile -c '
  set -e
  source /usr/share/bash-completion/completions/vaultctl
  complete -p vaultctl
  COMP_WORDS=(vaultctl sec); COMP_CWORD=1; COMP_LINE="vaultctl sec"; COMP_POINT=${#COMP_LINE}
  _vaultctl vaultctl sec vaultctl
  echo "vaultctl sec<TAB> -> ${COMPREPLY[*]}"
  [[ " ${COMPREPLY[*]} " == *" secret "* ]]
' || fail "bash completion for vaultctl"
echo "ok: complete -p vaultctl, and 'sec' completes to 'secret'"

step "the user unit"
unit=/usr/lib/systemd/user/vaultd.service
grep -x 'ExecStart=/usr/bin/vaultd' "$unit" || fail "$unit does not start /usr/bin/vaultd"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze security --offline=true "$unit" | grep "Overall exposure"
fi

step "dpkg -r"
dpkg -r vaultd
status="$(dpkg-query -W -f='${Status}' vaultd 2>/dev/null || true)"
echo "status after removal: '${status:-unknown package}'"
case "$status" in
  "" | *not-installed*) ;;
  *) fail "vaultd is still known to dpkg as '$status'" ;;
esac
left=""
for f in $files; do
  if [ -e "$f" ] || [ -L "$f" ]; then left="$left $f"; fi
done
[ -z "$left" ] || fail "files left after dpkg -r:$left"
[ ! -e /usr/share/doc/vaultd ] || fail "/usr/share/doc/vaultd left after dpkg -r"
echo "ok: none of the $(echo "$files" | wc -l) packaged files is left"

printf '\nPASS: %s\n' "$deb"
