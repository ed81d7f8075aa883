#!/usr/bin/env bash
# Installs what Sluice needs to build and run, idempotently, and says what it installs.
#  - libtorch 2.13.0 (the version tch 0.26 links against) from PyPI's torch wheel, into a venv
#    in a cache outside the clone;
#  - ONNX Runtime 1.31.1 (the version the ort crate's API level 31 needs) from PyPI's onnxruntime
#    wheel, into its own venv in the same cache (the library is loaded at run time);
#  - .cargo/config.toml pointing tch at it, giving binaries an rpath to it, and keeping the
#    target dir in the same cache so a warm build is quick.
# Usage: scripts/setup.sh            (quiet when everything is there already)
#        scripts/setup.sh --cuda     also the CUDA libraries libtorch_cuda.so needs on a GPU
#                                    node (cuBLAS, cuDNN, NCCL, cuSPARSE(Lt), cuFFT, cuRAND,
#                                    cuFile, NVRTC, ...: about 3.5 GB more, once)
# Env:   SLUICE_CACHE (default $HOME/.cache/sluice)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
venv="$cache/torch-venv"
torch_version="2.13.0"
ort_venv="$cache/onnxruntime-venv"
ort_version="1.31.1"
say() { printf '[setup] %s\n' "$*" >&2; }
cuda=false
for arg in "$@"; do
  case "$arg" in
    --cuda) cuda=true ;;
    *) say "unknown option $arg (use --cuda for a GPU node)"; exit 2 ;;
  esac
done
# What torch 2.13.0 requires on Linux (its METADATA: cuda-toolkit[...]==13.0.3, cudnn, cusparselt,
# nccl, nvshmem), resolved by pip and pinned here so every GPU node gets the same set.
cuda_wheels=(
  nvidia-cublas==13.1.1.3 nvidia-cuda-cupti==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cufft==12.0.0.61 nvidia-cufile==1.15.1.6
  nvidia-curand==10.4.0.35 nvidia-cusolver==12.0.4.66 nvidia-cusparse==12.6.3.3
  nvidia-nvtx==13.0.85 nvidia-nvjitlink==13.5.37 nvidia-cudnn-cu13==9.20.0.48
  nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.29.7 nvidia-nvshmem-cu13==3.4.5
)

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

if $cuda; then
  cuda_stamp="$venv/.sluice-cuda-$torch_version"
  if [ ! -f "$cuda_stamp" ]; then
    say "installing the CUDA libraries of torch $torch_version from PyPI into $venv (about 3.5 GB, once)"
    # Next to torch in the same site-packages: libtorch_cuda.so finds them through its RPATH
    # ($ORIGIN/../../nvidia/*/lib), with no LD_LIBRARY_PATH.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${cuda_wheels[@]}"
    touch "$cuda_stamp"
    say "installed the CUDA libraries; executors on a GPU use it with --device auto or cuda"
  else
    say "CUDA libraries for torch $torch_version already installed"
  fi
fi

# ONNX Runtime for .onnx models: only its shared library is used (loaded by the ort crate at run
# time), so the wheel goes in with --no-deps (23.8 MB). Its own venv: the GPU wheel
# (onnxruntime-gpu) installs the same package folder and must not meet the CPU one.
if [ ! -x "$ort_venv/bin/python" ]; then
  say "creating venv for ONNX Runtime at $ort_venv"
  "$python" -m venv "$ort_venv"
fi
ort_dir="$("$ort_venv/bin/python" - <<'PY'
import sysconfig, pathlib
print(pathlib.Path(sysconfig.get_paths()["purelib"]) / "onnxruntime" / "capi")
PY
)"
ort_package="onnxruntime"
# The GPU wheel, once installed, also serves CPU-only runs: a plain run keeps it.
if $cuda || [ -f "$ort_venv/.sluice-gpu" ]; then ort_package="onnxruntime-gpu"; fi
ort_stamp="$ort_venv/.sluice-$ort_package-$ort_version"
ort_lib="$ort_dir/libonnxruntime.so.$ort_version"
if [ ! -f "$ort_stamp" ] || [ ! -f "$ort_lib" ]; then
  # The other wheel installs the same folder: remove it first.
  if [ "$ort_package" = onnxruntime-gpu ]; then
    say "installing $ort_package==$ort_version from PyPI into $ort_venv (about 255 MB, once): CUDA execution provider"
    "$ort_venv/bin/pip" uninstall --quiet --yes onnxruntime >/dev/null 2>&1 || true
  else
    say "installing $ort_package==$ort_version (ONNX Runtime for .onnx models) from PyPI into $ort_venv (24 MB, once)"
    "$ort_venv/bin/pip" uninstall --quiet --yes onnxruntime-gpu >/dev/null 2>&1 || true
  fi
  "$ort_venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$ort_package==$ort_version"
  rm -f "$ort_venv"/.sluice-onnxruntime*
  touch "$ort_stamp"
  if [ "$ort_package" = onnxruntime-gpu ]; then touch "$ort_venv/.sluice-gpu"; fi
  say "installed ONNX Runtime at $ort_lib"
else
  say "ONNX Runtime $ort_version already installed at $ort_lib"
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
SLUICE_ONNXRUNTIME_LIB = "$ort_lib"

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
