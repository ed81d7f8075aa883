#!/usr/bin/env bash
# Installs an independent Flight SQL client (PyPI `adbc-driver-flightsql`, the ADBC driver BI
# tools and notebooks use, with `pyarrow`) into a venv in the cache, once, and runs
# scripts/adbc-client.py with it. tests/flight.rs drives `sluice serve --flight` with it.
#   scripts/adbc-client.sh URI USER PASSWORD MODEL TOKEN   prints what it saw as JSON
# Env: SLUICE_CACHE (default $HOME/.cache/sluice)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
venv="$cache/adbc-client"
say() { printf '[adbc-client] %s\n' "$*" >&2; }
mkdir -p "$cache"
exec 9>"$cache/adbc-client.lock"
flock 9
if ! "$venv/bin/python" -c "import adbc_driver_flightsql.dbapi, pyarrow" 2>/dev/null; then
  say "installing adbc-driver-flightsql==1.13.0 and pyarrow==26.0.1 into $venv (PyPI, once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "adbc-driver-flightsql==1.13.0" "adbc-driver-manager==1.13.0" "pyarrow==26.0.1" >&2
fi
flock -u 9
exec "$venv/bin/python" "$root/scripts/adbc-client.py" "$@"
