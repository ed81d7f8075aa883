#!/usr/bin/env bash
# Drift monitoring in the scoring pass: the same 10M-row scoring job (id + 32 float32 features,
# the 32-64-32-1 MLP of bench/score) with and without monitoring, alternated, in one run.
#   bash bench/monitor/run.sh [ROWS] [REPEATS]
# Monitoring profiles the 32 features and the predictions on the executors while scoring and
# compares them with a reference profile (a 1M-row sample of the same distribution, profiled
# once before the timed runs, as a model's training split is). Needs a release build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
rows="${1:-10000000}"
repeats="${2:-3}"
target="${CARGO_TARGET_DIR:-$(sed -n 's/^target-dir *= *"\(.*\)"/\1/p' "$root/.cargo/config.toml" 2>/dev/null || echo "$root/target")}"
sluice="${SLUICE_BIN:-$target/release/sluice}"
bash "$root/bench/score/setup.sh"
py="$cache/bench-venv/bin/python"
work="$cache/bench-score"
mkdir -p "$work"
"$py" "$root/bench/score/data.py" "$work/small-$rows" "$rows" 16 >&2
"$py" "$root/bench/score/data.py" "$work/reference-1000000" 1000000 4 >&2
features=$(seq -s, -f 'f%g' 0 31)
lake="$work/lake-monitor-$rows"
if [ ! -d "$lake/input" ]; then
  SLUICE_LOG=warn "$sluice" asset import input "$work/small-$rows" --assets "$lake" >&2
  SLUICE_LOG=warn "$sluice" asset import reference "$work/reference-1000000" --assets "$lake" >&2
fi
score() {
  SLUICE_LOG=warn "$sluice" score input --model "$work/mlp_small.pt" --features "$features" --key id \
    --output "scores_$1" --chunks 4 --assets "$lake" "${@:2}"
}
# The reference profile is made once and kept with the reference asset.
score warmup --reference reference >/dev/null
seconds() { sed -n 's/.* in \([0-9.]*\) s (.*/\1/p'; }
echo "| run | without monitoring (s) | with monitoring (s) | overhead |"
echo "|---|---|---|---|"
for i in $(seq 1 "$repeats"); do
  off=$(score "off$i" --no-monitor | seconds)
  on=$(score "on$i" --reference reference | tee "$work/monitor-on-$i.txt" | seconds)
  "$py" -c "print(f'| $i | {$off:.2f} | {$on:.2f} | {($on - $off) / $off * 100:+.1f}% |')"
done
grep -E "^(drifted|reference) " "$work/monitor-on-$repeats.txt" >&2
