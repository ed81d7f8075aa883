#!/usr/bin/env bash
# PostgreSQL table of ROWS rows (default 10M) to a Parquet asset with `sluice run`, against
# connectorx (PyPI) reading the same table into Arrow (4 partitions) and pyarrow writing zstd
# Parquet, in the same run. Prints seconds and rows/s per run; results go to bench/RESULTS.md.
#   bash bench/postgres/run.sh [ROWS] [RUNS]
# Needs: PostgreSQL on 127.0.0.1:5432 (scripts/postgres.sh), the sluice binary built
# (scripts/setup.sh + cargo build), python3. Installs connectorx + pyarrow into the cache once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
rows="${1:-10000000}"
runs="${2:-3}"
bin="${SLUICE_BIN:-$cache/target/debug/sluice}"
venv="$cache/bench-venv"
bash "$root/scripts/postgres.sh"
if ! "$venv/bin/python" -c "import connectorx, pyarrow" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet connectorx==0.4.6 pyarrow==26.0.1
fi
table="sluice_bench.orders_$rows"
if ! psql -h 127.0.0.1 -U postgres -d test -tAc "SELECT 1 FROM $table LIMIT 1" >/dev/null 2>&1; then
  echo "creating $table ($rows rows)" >&2
  psql -h 127.0.0.1 -U postgres -d test -q -v ON_ERROR_STOP=1 <<SQL
CREATE SCHEMA IF NOT EXISTS sluice_bench;
CREATE TABLE $table AS
SELECT g::bigint AS id, (g % 50000)::int AS account_id, round((g % 100000) * 0.37, 2)::numeric(12,2) AS amount,
       (ARRAY['open','paid','refunded','void'])[1 + g % 4] AS status,
       TIMESTAMPTZ '2026-01-01' + g * INTERVAL '1 second' AS created_at,
       (g % 9973) / 9973.0::float8 AS score, g % 3 = 0 AS flagged, DATE '2026-01-01' + (g % 365) AS day
FROM generate_series(1, $rows) g;
ALTER TABLE $table ADD PRIMARY KEY (id);
VACUUM ANALYZE $table;
SQL
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/job.toml" <<TOML
[job]
name = "bench_postgres"
[sources.pg]
kind = "postgres"
connection = { database = "test" }
read = { table = "$table", partition_column = "id", partitions = 4 }
[sink]
asset = "orders"
mode = "overwrite"
TOML
cat > "$work/cx.py" <<'PY'
import sys, time
import connectorx as cx
import pyarrow.parquet as pq
table, out = sys.argv[1], sys.argv[2]
t = time.time()
data = cx.read_sql("postgresql://postgres@127.0.0.1:5432/test", f"SELECT * FROM {table}",
                   return_type="arrow", partition_on="id", partition_num=4)
read = time.time() - t
pq.write_table(data, out, compression="zstd")
print(f"{data.num_rows} {read:.2f} {time.time() - t:.2f}")
PY
for run in $(seq 1 "$runs"); do
  t0=$(date +%s.%N)
  SLUICE_LOG=warn SLUICE_ASSETS="$work/lake" "$bin" run "$work/job.toml" >"$work/sluice.out"
  t1=$(date +%s.%N)
  s=$(echo "$t1 - $t0" | bc)
  read n r w < <("$venv/bin/python" "$work/cx.py" "$table" "$work/cx.parquet")
  echo "run $run: sluice run (read + write asset) ${s}s $(echo "$rows / $s" | bc) rows/s | connectorx read ${r}s $(echo "$rows / $r" | bc) rows/s, read + pyarrow write ${w}s $(echo "$rows / $w" | bc) rows/s"
done
grep landed "$work/sluice.out"
