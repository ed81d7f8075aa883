#!/usr/bin/env bash
# Batch scoring of a tree model: a LightGBM regressor of TREES trees as ONNX, on the bench input
# (id + 32 float32 features, 16 Parquet files), through Sluice (`sluice score`, ONNX Runtime on
# the executors) against Python onnxruntime in one process (pyarrow + numpy, no engine), Daft and
# Spark (a pandas UDF), each with one onnxruntime session per worker, in one run.
#   bash bench/score/trees.sh [ROWS] [TREES] [ENGINES]
# Defaults: 2M rows, 300 trees, "sluice raw daft spark". SLUICE_BIN picks the sluice binary
# (default: the release build, else the debug one). The peers get their own venv
# ($SLUICE_CACHE/bench-onnx-venv, from PyPI, once). Prints a markdown table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
rows="${1:-2000000}"
trees="${2:-300}"
engines="${3:-sluice raw daft spark}"
target="${CARGO_TARGET_DIR:-$(sed -n 's/^target-dir *= *"\(.*\)"/\1/p' "$root/.cargo/config.toml" 2>/dev/null || echo "$root/target")}"
sluice="${SLUICE_BIN:-$target/release/sluice}"
[ -x "$sluice" ] || sluice="$target/debug/sluice"
venv="$cache/bench-onnx-venv"
if [ ! -f "$venv/.done-1" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow numpy "pandas<3" onnxruntime==1.31.1 \
    lightgbm==4.7.0 onnxmltools==1.16.0 onnx==1.23.2 scikit-learn==1.9.1 daft==0.7.26 pyspark==4.3.0
  touch "$venv/.done-1"
fi
py="$venv/bin/python"
work="$cache/bench-score"
data="$work/small-$rows"
model="$work/gbm_$trees.onnx"
mkdir -p "$work"
"$py" "$root/bench/score/data.py" "$data" "$rows" 16 --no-models >&2
"$py" "$root/bench/score/trees.py" model "$model" "$trees"
features=$(seq -s, -f 'f%g' 0 31)
echo "sluice: $sluice" >&2

echo "| model | engine | rows | seconds | rows/s | peak memory |"
echo "|---|---|---|---|---|---|"
for engine in $engines; do
  out="$work/out-trees-$engine"
  rm -rf "$out"
  case "$engine" in
    sluice)
      lake="$work/lake-trees-$rows"
      if [ ! -d "$lake/input" ]; then
        SLUICE_LOG=warn "$sluice" asset import input "$data" --assets "$lake" >&2
      fi
      rm -rf "$lake/scores"
      result=$(SLUICE_LOG=warn "$py" "$root/bench/score/measure.py" sluice "$sluice" score input --model "$model" \
        --features "$features" --key id --output scores --chunks 4 --no-monitor --assets "$lake") ;;
    *) result=$("$py" "$root/bench/score/measure.py" line "$py" "$root/bench/score/trees.py" "$engine" "$data" "$model" "$out") ;;
  esac
  read -r n seconds peak <<<"$result"
  "$py" -c "print(f'| LightGBM {$trees} trees | $engine | {int($n):,} | {$seconds:.1f} | {int($n)/$seconds:,.0f} | {$peak/1024:.2f} GB |')"
done
