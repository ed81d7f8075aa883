#!/usr/bin/env bash
# Batch scoring: Sluice against the raw floors (a Rust loop and a Python loop with no engine),
# Daft, Ray Data and Spark, on the same Parquet input and TorchScript models, in one run.
#   bash bench/score/run.sh [ROWS_SMALL] [ROWS_HEAVY] [ENGINES]
# Defaults: 10M rows through the 32-64-32-1 MLP, 1M through 32-1024-1024-1024-1, all engines
# ("sluice rust raw daft ray spark"). Needs a release build (cargo build --release) and the peers'
# venv (bench/score/setup.sh, run here). Prints a markdown table: rows/s, peak memory of the
# process tree, and each engine's ratio to the raw Python loop and to Sluice.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
small="${1:-10000000}"
heavy="${2:-1000000}"
engines="${3:-sluice rust raw daft ray spark}"
target="${CARGO_TARGET_DIR:-$(sed -n 's/^target-dir *= *"\(.*\)"/\1/p' "$root/.cargo/config.toml" 2>/dev/null || echo "$root/target")}"
sluice="${SLUICE_BIN:-$target/release/sluice}"
floor="${SLUICE_BENCH_BIN:-$target/release/sluice-bench}"
bash "$root/bench/score/setup.sh"
py="$cache/bench-venv/bin/python"
work="$cache/bench-score"
mkdir -p "$work"
"$py" "$root/bench/score/data.py" "$work/small-$small" "$small" 16 >&2
"$py" "$root/bench/score/data.py" "$work/heavy-$heavy" "$heavy" 16 >&2
features=$(seq -s, -f 'f%g' 0 31)

# Runs a command, sampling the RSS of its whole process tree; prints "rows seconds peak_mb".
measure() {
  "$py" "$root/bench/score/measure.py" "$@"
}

echo "| workload | engine | rows | seconds | rows/s | peak memory |"
echo "|---|---|---|---|---|---|"
for workload in small heavy; do
  rows_of=$([ "$workload" = small ] && echo "$small" || echo "$heavy")
  data="$work/$workload-$rows_of"
  model="$work/mlp_$workload.pt"
  for engine in $engines; do
    out="$work/out-$engine-$workload"
    rm -rf "$out"
    case "$engine" in
      sluice)
        lake="$work/lake-$workload-$rows_of"
        if [ ! -d "$lake/input" ]; then
          SLUICE_LOG=warn "$sluice" asset import input "$data" --assets "$lake" >&2
        fi
        rm -rf "$lake/scores"
        result=$(SLUICE_LOG=warn measure sluice "$sluice" score input --model "$model" --features "$features" \
          --key id --output scores --chunks 4 --assets "$lake") ;;
      # The floor uses every core for the forward pass (Sluice's executors use one thread each).
      rust) result=$(SLUICE_TORCH_THREADS="$(nproc)" measure line "$floor" score-floor --data "$data" --model "$model" --out "$out") ;;
      *) result=$(measure line "$py" "$root/bench/score/peers.py" "$engine" "$data" "$model" "$out") ;;
    esac
    read -r rows seconds peak <<<"$result"
    "$py" -c "print(f'| $workload | $engine | {int($rows):,} | {$seconds:.1f} | {int($rows)/$seconds:,.0f} | {$peak/1024:.2f} GB |')"
  done
done
