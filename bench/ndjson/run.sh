#!/usr/bin/env bash
# NDJSON device events (about MB megabytes, default 1024) to a Parquet asset with `sluice run`
# (examples/files_device_events.toml: declared types, de-duplication by device and time, daily
# partitions, quarantine), on the embedded cluster; prints MB/s and MB/s per core per run.
#   bash bench/ndjson/run.sh [MB] [RUNS] [JOB]   (JOB: bench/ndjson/read_only.toml reads without
#   de-duplication or partitioning; SLUICE_BIN=.../release/sluice for a release build)
# Needs the sluice binary built (scripts/setup.sh + cargo build) and python3; the events are
# generated once into the cache.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
mb="${1:-1024}"
runs="${2:-3}"
job="${3:-$root/examples/files_device_events.toml}"
bin="${SLUICE_BIN:-$cache/target/debug/sluice}"
data="$cache/bench-ndjson-${mb}mb"
if [ ! -f "$data/.done" ]; then
  echo "generating ${mb} MB of NDJSON events in $data" >&2
  mkdir -p "$data"
  python3 - "$data" "$mb" <<'PY'
import sys, random
out, mb = sys.argv[1], int(sys.argv[2])
random.seed(7)
files, per_file = 8, mb * 1024 * 1024 // 8
i = 0
for f in range(files):
    with open(f"{out}/events-{f}.json", "w") as fh:
        written = 0
        while written < per_file:
            line = ('{"device_id": "d%d", "ts": "2026-11-%02dT%02d:%02d:%02d", "temperature": %.2f, "battery": %d, '
                    '"firmware": "v%d.%d", "location": {"lat": %.5f, "lon": %.5f}, "tags": ["iot", "line-%d"]}\n') % (
                i % 5000, 1 + i % 28, i // 3600 % 24, i // 60 % 60, i % 60, random.uniform(-10, 40), i % 100,
                i % 3, i % 7, random.uniform(50, 54), random.uniform(3, 7), i % 12)
            fh.write(line)
            written += len(line)
            i += 1
PY
  touch "$data/.done"
fi
bytes=$(du -cb "$data"/*.json | tail -1 | cut -f1)
cores=$(nproc)
for run in $(seq 1 "$runs"); do
  lake="$(mktemp -d)"
  start=$(date +%s.%N)
  EVENTS_DIR="$data/" SLUICE_LOG=warn "$bin" run --assets "$lake" "$job" > "$lake.out"
  end=$(date +%s.%N)
  grep -E "^(landed|records)" "$lake.out" | sed 's/^/  /'
  python3 -c "b=$bytes; s=$end-$start; c=$cores; print(f'run $run: {b/1e6:.0f} MB in {s:.1f} s = {b/1e6/s:.1f} MB/s, {b/1e6/s/c:.1f} MB/s per core ({c} cores)')"
  rm -rf "$lake" "$lake.out"
done
