#!/usr/bin/env bash
# Creates tests/.venv with the packages pinned in tests/requirements.txt (the
# Python MCP SDK used by tests/mcp_client.py).
#
# Idempotent and quiet: does nothing when the venv exists and was built from the
# current requirements.txt (a sha256 stamp inside the venv). Safe to run from
# several processes at once (flock on requirements.txt). Fails loudly, leaving no
# half-built venv behind.
#
# Environment: PYTHON (default python3) picks the interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

die() { echo "setup-venv.sh: $*" >&2; exit 1; }

[[ -f "$req" ]] || die "missing $req"
want="$(sha256sum "$req" | cut -d' ' -f1)"

# One installer at a time; the others wait, then see the stamp and return.
exec 9<"$req"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi

command -v "$python" >/dev/null 2>&1 || die "no '$python' on PATH (set PYTHON=/path/to/python3)"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$("$python" --version 2>&1) is too old: the mcp SDK needs Python >= 3.10"

rm -rf "$venv"
trap 'rc=$?; if [[ $rc -ne 0 ]]; then rm -rf "$venv"; echo "setup-venv.sh: failed (exit $rc); removed $venv" >&2; fi' EXIT

"$python" -m venv "$venv" || die "'$python -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" \
    || die "pip install -r $req failed"
"$venv/bin/python" -c 'import mcp, mcp.client.stdio' || die "the mcp package does not import"
echo "$want" >"$stamp"
