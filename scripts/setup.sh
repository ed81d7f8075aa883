#!/usr/bin/env bash
# Installs what Sluice needs to build and run, idempotently, and says what it installs.
#  - libtorch 2.13.0 (the version tch 0.26 links against) from PyPI's torch wheel, into a venv
#    in a cache outside the clone;
#  - .cargo/config.toml pointing tch at it, giving binaries an rpath to it, and keeping the
#    target dir in the same cache so a warm build is quick.
# Usage: scripts/setup.sh            (quiet when everything is there already)
# Env:   SLUICE_CACHE (default $HOME/.cache/sluice)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
venv="$cache/torch-venv"
torch_version="2.13.0"
say() { printf '[setup] %s\n' "$*" >&2; }

mkdir -p "$cache"

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install Rust 1.94 or newer (rustup) and run this again"
  exit 1
fi

python="$(command -v python3 || true)"
if [ -z "$python" ]; then
  say "python3 not found: installing python3 and python3-venv from Debian"
  apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
  python="$(command -v python3)"
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating venv for libtorch at $venv"
  "$python" -m venv "$venv"
fi

torch_dir="$("$venv/bin/python" - <<'PY'
import sysconfig, pathlib
print(pathlib.Path(sysconfig.get_paths()["purelib"]) / "torch")
PY
)"
stamp="$venv/.sluice-torch-$torch_version"
if [ ! -f "$stamp" ] || [ ! -f "$torch_dir/lib/libtorch_cpu.so" ]; then
  say "installing torch==$torch_version (libtorch for tch 0.26) from PyPI into $venv (about 1.2 GB, once)"
  # --no-deps: the full CUDA set is 4.7 GB; libtorch needs only the CUDA runtime and CUPTI to load on CPU.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    "torch==$torch_version" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  touch "$stamp"
  say "installed libtorch at $torch_dir"
else
  say "libtorch $torch_version already installed at $torch_dir"
fi

# mold links the large test and CLI binaries in a fraction of GNU ld's time (bench/RESULTS.md).
linker_flags=""
if ! command -v mold >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  say "installing the mold linker from Debian (faster links)"
  if ! { apt-get install -y -qq mold >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq mold >/dev/null; }; }; then
    say "mold could not be installed; linking with the default linker"
  fi
fi
if command -v mold >/dev/null 2>&1; then
  linker_flags='"-C", "link-arg=-fuse-ld=mold", '
fi

target_dir="$cache/target"
mkdir -p "$root/.cargo"
config="$root/.cargo/config.toml"
want="$(cat <<TOML
# Written by scripts/setup.sh for this machine; not committed.
[env]
LIBTORCH = "$torch_dir"
LIBTORCH_LIB = "$torch_dir"
SLUICE_LIBTORCH_LIB = "$torch_dir/lib"

[build]
target-dir = "$target_dir"

[target.'cfg(target_os = "linux")']
# The binaries find libtorch without LD_LIBRARY_PATH.
rustflags = [${linker_flags}"-C", "link-arg=-Wl,-rpath,$torch_dir/lib"]
TOML
)"
if [ ! -f "$config" ] || [ "$(cat "$config")" != "$want" ]; then
  printf '%s\n' "$want" > "$config"
  say "wrote $config (LIBTORCH=$torch_dir, target dir $target_dir)"
else
  say "$config is up to date (target dir $target_dir)"
fi
