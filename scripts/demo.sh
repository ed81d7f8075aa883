#!/usr/bin/env bash
# Runs `sluice demo` on embedded defaults on a fresh machine: installs libtorch
# (scripts/setup.sh), builds the binary and runs the whole batch path. Extra arguments go to
# `sluice demo`, e.g. scripts/demo.sh --rows 50000 --out /tmp/demo.
# --release first builds and runs the optimised binary (for scoring for real; a longer build):
#   scripts/demo.sh --release --rows 2000000
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile=debug
build=(cargo build --locked --bin sluice)
if [ "${1:-}" = "--release" ]; then
  shift
  profile=release
  build+=(--release)
fi
bash scripts/setup.sh
echo "[demo] ${build[*]}" >&2
"${build[@]}"
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target/$profile/sluice" demo "$@"
