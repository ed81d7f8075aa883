#!/usr/bin/env bash
# Installs SciPy and NumPy (PyPI) into a venv in the cache, once, and runs
# scripts/drift-reference.py with it: the independent implementation the drift metrics are
# checked against (jobs/tests/drift.rs).
#   scripts/drift-reference.sh INPUT.json    prints the metrics as JSON
# Env: SLUICE_CACHE (default $HOME/.cache/sluice)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
venv="$cache/drift-reference"
mkdir -p "$cache"
exec 9>"$cache/drift-reference.lock"
flock 9
if ! "$venv/bin/python" -c "import scipy, numpy" 2>/dev/null; then
  printf '[drift-reference] installing scipy==1.16.3 and numpy==2.3.5 into %s (PyPI, once)\n' "$venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "scipy==1.16.3" "numpy==2.3.5" >&2
fi
flock -u 9
exec "$venv/bin/python" "$root/scripts/drift-reference.py" "$@"
