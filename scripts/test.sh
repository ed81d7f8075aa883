#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs libtorch (scripts/setup.sh) and
# then `cargo test`. Idempotent; a warm run only rebuilds what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
echo "[test] cargo test --workspace (target dir: ${SLUICE_CACHE:-$HOME/.cache/sluice}/target)" >&2
exec cargo test --workspace --locked "$@"
