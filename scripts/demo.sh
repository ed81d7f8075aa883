#!/usr/bin/env bash
# Runs `sluice demo` on embedded defaults on a fresh machine: installs libtorch
# (scripts/setup.sh), builds the binary and runs the whole batch path. Extra arguments go to
# `sluice demo`, e.g. scripts/demo.sh --rows 50000 --out /tmp/demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
echo "[demo] cargo build --locked --bin sluice" >&2
cargo build --locked --bin sluice
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target/debug/sluice" demo "$@"
