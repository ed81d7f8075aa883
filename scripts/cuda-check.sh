#!/usr/bin/env bash
# Proves the CUDA path on a GPU node: installs the CUDA libraries (scripts/setup.sh --cuda),
# builds, then scores the same rows with the same TorchScript model on the CPU and on CUDA
# through the predict UDF's model code, fails when they differ by more than 1e-5 (relative),
# and prints rows/s of each. Also shows which device an executor would pick (`auto`).
#   scripts/cuda-check.sh [--model M.pt] [--rows N] [--batch B]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh --cuda
if ! [ -e /proc/driver/nvidia/version ] && ! [ -e /dev/nvidia0 ]; then
  echo "[cuda-check] no NVIDIA GPU or driver on this machine; run this on a GPU node" >&2
  exit 1
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2
# The whole workspace, as the tests build it (one feature set, no rebuild of dependencies).
cargo build --workspace --locked --bins 2>&1 | tail -1 >&2
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
SLUICE_DEVICE=auto "$target/debug/sluice" --help >/dev/null
"$target/debug/sluice-bench" cuda-check "$@"
