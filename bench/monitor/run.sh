#!/usr/bin/env bash
# Drift monitoring in the scoring pass: the same 10M-row scoring job (id + 16 float32 features,
# a 16-32-1 MLP) with and without monitoring, alternated, in one run.
#   bash bench/monitor/run.sh [ROWS] [REPEATS]
# Monitoring sketches the 16 features and the predictions on the executors while scoring and
# compares them with a reference profile (a 1M-row sample of the same distribution, profiled
# once before the timed runs, as a model's training split is). Needs a release build
# (cargo build --release -p sluice).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
rows="${1:-10000000}"
repeats="${2:-3}"
target="${CARGO_TARGET_DIR:-$(sed -n 's/^target-dir *= *"\(.*\)"/\1/p' "$root/.cargo/config.toml" 2>/dev/null || echo "$root/target")}"
sluice="${SLUICE_BIN:-$target/release/sluice}"
work="$cache/bench-monitor"
lake="$work/lake-$rows"
# The committed 16 -> 32 -> 1 scorer of the predict tests: small, so the engine, not the
# model, sets the pace (the worst case for monitoring's share).
model="$root/udfs/tests/fixtures/scorer_16.pt"
mkdir -p "$work"
features=$(seq -s, -f 'f%g' 0 15)
# Bell-shaped features (sums of three uniforms), the same distribution in the input and the reference.
columns=$(for i in $(seq 0 15); do printf 'CAST(random() + random() + random() AS REAL) AS f%d, ' "$i"; done)
if [ ! -f "$lake/.ready" ]; then
  rm -rf "$lake"
  # Written a million rows at a time (one SQL array of ten million is too big a message).
  for start in $(seq 0 1000000 $((rows - 1))); do
    SLUICE_PROFILE_ON_WRITE=0 SLUICE_LOG=warn "$sluice" asset write input --assets "$lake" \
      --sql "SELECT ${columns}value AS id FROM (SELECT unnest(range($start, $((start + 1000000)))) AS value)" >/dev/null
  done
  SLUICE_PROFILE_ON_WRITE=0 SLUICE_LOG=warn "$sluice" asset write reference --assets "$lake" \
    --sql "SELECT ${columns}value AS id FROM (SELECT unnest(range(0, 1000000)) AS value)" >/dev/null
  touch "$lake/.ready"
fi
score() {
  SLUICE_LOG=warn "$sluice" score input --model "$model" --features "$features" --key id \
    --output "scores_$1" --chunks 4 --assets "$lake" "${@:2}"
}
# The reference profile is made once and kept with the reference asset.
score warmup --reference reference >/dev/null
seconds() { sed -n 's/.* in \([0-9.]*\) s (.*/\1/p'; }
# Each run: the job's own time (start to commit, from its summary) and the command's wall clock.
timed() {
  local t0 t1 out
  t0=$(date +%s.%N)
  out=$(score "$@" | seconds)
  t1=$(date +%s.%N)
  echo "$out $(python3 -c "print(f'{$t1 - $t0:.2f}')")"
}
echo "| run | without: job s | with: job s | job overhead | without: wall s | with: wall s | wall overhead |"
echo "|---|---|---|---|---|---|---|"
for i in $(seq 1 "$repeats"); do
  read -r off off_wall <<<"$(timed "off$i" --no-monitor)"
  read -r on on_wall <<<"$(timed "on$i" --reference reference)"
  python3 -c "print(f'| $i | {$off:.1f} | {$on:.1f} | {($on - $off) / $off * 100:+.0f}% | {$off_wall:.2f} | {$on_wall:.2f} | {($on_wall - $off_wall) / $off_wall * 100:+.1f}% |')"
done
score last --reference reference | grep -E "^(drifted|reference) " >&2
