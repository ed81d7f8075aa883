#!/usr/bin/env bash
# Runs a Python script of scripts/ in its own venv in the cache, installing its pinned PyPI
# packages once (under a lock, so parallel tests install once). The independent checkers the
# tests use (a Delta reader, an ADBC client, SciPy's drift metrics) are thin wrappers of this.
#   scripts/python-tool.sh NAME "IMPORTS" "PKG==V ..." SCRIPT.py [ARGS...]
# Env: SLUICE_CACHE (default $HOME/.cache/sluice)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
name="$1" imports="$2" packages="$3" script="$4"
shift 4
venv="$cache/$name"
mkdir -p "$cache"
exec 9>"$cache/$name.lock"
flock 9
if ! "$venv/bin/python" -c "import $imports" 2>/dev/null; then
  printf '[%s] installing %s into %s (PyPI, once)\n' "$name" "$packages" "$venv" >&2
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # the packages are words
  "$venv/bin/pip" install --quiet --disable-pip-version-check $packages >&2
fi
flock -u 9
exec "$venv/bin/python" "$root/scripts/$script" "$@"
