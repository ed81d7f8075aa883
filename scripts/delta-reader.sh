#!/usr/bin/env bash
# Installs an independent Delta Lake reader (PyPI `deltalake` + `pyarrow`) into a venv in the
# cache, once, and runs scripts/delta-read.py with it. Tests use it to check that assets written
# by Sluice read the same in another engine.
#   scripts/delta-reader.sh TABLE_URI [VERSION]   prints {"version", "rows", "columns", "sums"} as JSON
# Env: SLUICE_CACHE (default $HOME/.cache/sluice)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
venv="$cache/delta-reader"
say() { printf '[delta-reader] %s\n' "$*" >&2; }
mkdir -p "$cache"
exec 9>"$cache/delta-reader.lock"
flock 9
if ! "$venv/bin/python" -c "import deltalake, pyarrow" 2>/dev/null; then
  say "installing deltalake==1.6.6 and pyarrow==26.0.1 into $venv (PyPI, once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "deltalake==1.6.6" "pyarrow==26.0.1" >&2
fi
flock -u 9
exec "$venv/bin/python" "$root/scripts/delta-read.py" "$@"
