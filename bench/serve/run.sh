#!/usr/bin/env bash
# Online inference: `sluice serve --predict` against a FastAPI (uvicorn) + PyTorch server of the
# same TorchScript model (bench/serve/peer.py), one row per request, closed-loop clients at 1, 16
# and 64 connections (`sluice-bench http-load`, one client thread on the same machine), in one run.
#   bash bench/serve/run.sh [SECONDS] [CONNECTIONS]     (defaults 10, "1,16,64")
# Prints a markdown table: requests/s, p50 and p99 per side and connection count, and the ratio.
# Needs a release build (cargo build --release --bin sluice --bin sluice-bench). The peer's venv
# (torch 2.13.0, fastapi, uvicorn[standard] from PyPI) is made here once. The peer runs one
# uvicorn worker per core (`--workers`, SLUICE_BENCH_PEER_WORKERS), each with one torch thread.
# SLUICE_BENCH_CONFIGS lists Sluice's runs (default "delay0 log delay1"): --max-delay-ms 0, the
# same with the request log on (every request committed to an asset), and --max-delay-ms 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
seconds="${1:-10}"
connections="${2:-1,16,64}"
target="${CARGO_TARGET_DIR:-$(sed -n 's/^target-dir *= *"\(.*\)"/\1/p' "$root/.cargo/config.toml" 2>/dev/null || echo "$root/target")}"
sluice="${SLUICE_BIN:-$target/release/sluice}"
bench="${SLUICE_BENCH_BIN:-$target/release/sluice-bench}"
venv="$cache/bench-serve-venv"
if [ ! -f "$venv/.done-1" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet torch==2.13.0 numpy "fastapi==0.125.*" "uvicorn[standard]==0.38.*"
  touch "$venv/.done-1"
fi
work="$cache/bench-serve"
rm -rf "$work" && mkdir -p "$work"
"$venv/bin/python" "$root/bench/serve/peer.py" model "$work/mlp.pt"
export SLUICE_ASSETS="$work/lake" SLUICE_LOG=warn
features=$(seq -s, -f 'f%g' 0 31)
"$sluice" model register mlp "$work/mlp.pt" --inputs "$features" --alias production >/dev/null
printf 'anonymous = "reader"\n' > "$work/access.toml"
body="{\"rows\": [{$(seq 0 31 | awk '{printf "%s\"f%d\": %.3f", (NR>1?", ":""), $1, ($1 % 7) * 0.31 - 1}')}]}"
cores=$(nproc)
workers="${SLUICE_BENCH_PEER_WORKERS:-$cores}"
port=18181

wait_up() { # PORT PID
  for _ in $(seq 300); do
    if curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$1/v1/models/mlp/predict"; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "the server stopped" >&2; return 1; }
    sleep 0.1
  done
  return 1
}
load() { # PORT -> JSON lines, one per connection count
  "$bench" http-load --addr "127.0.0.1:$1" --path /v1/models/mlp/predict --body "$body" \
    --connections "$connections" --seconds "$seconds" --warmup 2
}
# Both sides must answer the same number for the same row.
check() { curl -s -X POST -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$1/v1/models/mlp/predict"; }

results="$work/results"
: > "$results"
for config in ${SLUICE_BENCH_CONFIGS:-delay0 log delay1}; do
  case "$config" in
    delay0) extra=(--max-delay-ms 0) ;;
    delay1) extra=(--max-delay-ms 1) ;;
    log) extra=(--max-delay-ms 0 --request-log mlp=mlp_requests) ;;
    *) echo "unknown configuration $config: delay0, delay1 or log" >&2; exit 2 ;;
  esac
  "$sluice" serve --predict "127.0.0.1:$port" --access "$work/access.toml" --model mlp@production \
    "${extra[@]}" > "$work/sluice-$config.log" 2>&1 &
  pid=$!
  wait_up "$port" "$pid"
  echo "sluice ($config): $(check $port)" >&2
  load "$port" | sed "s/^/sluice-$config /" | tee -a "$results" >&2
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ "$config" = log ]; then
    echo "request log: $("$sluice" sql "SELECT COUNT(*) AS logged_rows FROM mlp_requests" 2>/dev/null | tail -3 | tr -s ' \n' ' ')" >&2
  fi
done
( cd "$root/bench/serve" && MODEL="$work/mlp.pt" exec "$venv/bin/uvicorn" peer:app --host 127.0.0.1 --port "$port" \
    --workers "$workers" --no-access-log --log-level warning ) > "$work/peer.log" 2>&1 &
pid=$!
wait_up "$port" "$pid"
echo "peer (FastAPI + torch, $workers workers): $(check $port)" >&2
load "$port" | sed "s/^/peer /" | tee -a "$results" >&2
kill "$pid"; wait "$pid" 2>/dev/null || true

# The table: a row per side and connection count.
"$venv/bin/python" - "$results" <<'PY'
import json, sys
rows = [(l.split(" ", 1)[0], json.loads(l.split(" ", 1)[1])) for l in open(sys.argv[1]) if l.strip()]
peer = {r["connections"]: r for who, r in rows if who == "peer"}
print("| server | connections | requests/s | p50 ms | p99 ms | errors | req/s vs peer |")
print("|---|---|---|---|---|---|---|")
for who, r in rows:
    names = {"delay0": "--max-delay-ms 0", "delay1": "--max-delay-ms 1", "log": "--max-delay-ms 0, request log on"}
    name = "FastAPI + torch (uvicorn)" if who == "peer" else f"sluice serve --predict, {names[who.split('-', 1)[1]]}"
    p = peer.get(r["connections"])
    ratio = f"{r['rps'] / p['rps']:.2f}x" if p and p["rps"] else "-"
    print(f"| {name} | {r['connections']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {ratio} |")
PY
