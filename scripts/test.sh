#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs libtorch and ONNX Runtime
# (scripts/setup.sh) and then `cargo test`. Idempotent; a warm run only rebuilds what changed. Ends with one line
# totalling every test binary's results.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
echo "[test] cargo test --workspace (target dir: ${SLUICE_CACHE:-$HOME/.cache/sluice}/target)" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
