#!/usr/bin/env bash
# The Kafka hot path: `sluice stream` scoring each event with the 32-64-32-1 MLP (registered,
# `predict('mlp@production', f0..f31)`) against the floor, a plain consume -> produce loop with no
# decoding or scoring (`sluice-bench kafka-passthrough`), on the same broker in one run:
#  1. throughput from a backlog of EVENTS events (rate over first event -> last acknowledgement);
#  2. end-to-end latency p50/p99 (event timestamp -> result acknowledged) with events offered at
#     1k and 10k events/s for SECONDS each.
#   bash bench/stream/run.sh [EVENTS] [SECONDS]      (defaults 300000, 20)
# SLUICE_BENCH_BROKER=mock runs it on librdkafka's own mock broker (`sluice-bench kafka-mock`)
# instead of the development broker, to see the hot path's latency apart from the broker's.
# The mock broker answers no CreateTopics: the topics are made by `sluice-bench kafka-mock` itself.
# It answers a fetch that finds no data only after the fetch's full wait (a real broker answers
# as soon as data arrives), so on it both consumers wait at most SLUICE_BENCH_FETCH_WAIT_MS
# (default 5 there; librdkafka's 500 on the development broker, where short waits stall it).
# It keeps only the last 5 MB of a partition, so the throughput part (a backlog) is skipped there.
# SLUICE_BENCH_FORMAT=avro sends the same events as Avro records (Confluent wire format) and the
# stream decodes them with `format = "avro"`; the floor passes the bytes on either way.
# Needs a release build (cargo build --release -p sluice -p sluice-bench); starts the development
# broker (scripts/kafka.sh) and makes the model with the batch-scoring bench's venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
events="${1:-300000}"
seconds="${2:-20}"
target="${CARGO_TARGET_DIR:-$(sed -n 's/^target-dir *= *"\(.*\)"/\1/p' "$root/.cargo/config.toml" 2>/dev/null || echo "$root/target")}"
sluice="${SLUICE_BIN:-$target/release/sluice}"
bench="${SLUICE_BENCH_BIN:-$target/release/sluice-bench}"
bash "$root/bench/score/setup.sh"
work="$cache/bench-stream"
rm -rf "$work" && mkdir -p "$work"
run="$(date +%s)"
create=1 # partitions of the topics kafka-produce creates
fetch_wait="${SLUICE_BENCH_FETCH_WAIT_MS:-}"
if [ "${SLUICE_BENCH_BROKER:-}" = mock ]; then
  topics="backlog-$run,backlog-$run-copy,backlog-$run-scores"
  for rate in 1000 10000; do for who in ours floor; do
    topics="$topics,rate-$rate-$who-$run,rate-$rate-$who-$run-copy,rate-$rate-$who-$run-scores"
  done; done
  create=0
  fetch_wait="${SLUICE_BENCH_FETCH_WAIT_MS:-5}"
  "$bench" kafka-mock --topics "$topics" > "$work/mock.addr" &
  mock=$!
  trap 'kill $mock 2>/dev/null' EXIT
  for _ in $(seq 50); do [ -s "$work/mock.addr" ] && break; sleep 0.1; done
  brokers="$(head -1 "$work/mock.addr")"
else
  bash "$root/scripts/kafka.sh"
  brokers="127.0.0.1:9092"
fi
echo "broker: ${SLUICE_BENCH_BROKER:-development} at $brokers, fetch wait ${fetch_wait:-500 (default)} ms, ${SLUICE_BENCH_FORMAT:-json} events" >&2
passthrough() { "$bench" kafka-passthrough --brokers "$brokers" ${fetch_wait:+--fetch-wait-ms "$fetch_wait"} "$@"; }
"$cache/bench-venv/bin/python" "$root/bench/score/data.py" "$cache/bench-score/tiny-16" 16 1 >&2
export SLUICE_ASSETS="$work/lake" SLUICE_LOG=warn
features=$(seq -s, -f 'f%g' 0 31)
"$sluice" model register mlp "$cache/bench-score/mlp_small.pt" --inputs "$features" --alias production >/dev/null
schema="id bigint, $(seq -s, -f 'f%g float' 0 31 | sed 's/,/, /g')"
format="${SLUICE_BENCH_FORMAT:-json}"
"$bench" avro-schema --features 32 > "$work/event.avsc"
if [ "$format" = avro ]; then
  input="format = \"avro\"
[input.avro]
schema = \"$work/event.avsc\"
writer_schemas = { 1 = \"$work/event.avsc\" }"
else
  input="schema = \"$schema\""
fi
produce() { "$bench" kafka-produce --brokers "$brokers" --format "$format" --partitions "$create" "$@"; }

job() { # NAME TOPIC IDLE_S
  cat > "$work/$1.toml" <<TOML
[job]
name = "$1-$run"
[kafka]
brokers = "$brokers"
${fetch_wait:+[kafka.properties]
\"fetch.wait.max.ms\" = \"$fetch_wait\"}
[input]
topics = ["$2"]
$input
[batch]
max_rows = 5000
max_latency_ms = 10
stop_when_idle_s = $3
status_every_s = 60
[output]
sql = "SELECT id, predict('mlp@production', $features) AS score FROM events"
topic = "$2-scores"
TOML
  echo "$work/$1.toml"
}

echo "| measure | Sluice stream (MLP) | passthrough floor | Sluice / floor |"
echo "|---|---|---|---|"
# 1. Throughput from a backlog (not on the mock broker, which keeps 5 MB a partition).
[ "${SLUICE_BENCH_BROKER:-}" = mock ] || {
produce --topic "backlog-$run" --count "$events" >&2
floor=$(passthrough --from "backlog-$run" --to "backlog-$run-copy" --group "floor-$run" --idle-s 12)
echo "$floor" >&2
ours=$("$sluice" stream "$(job backlog "backlog-$run" 12)" 2>/dev/null | grep '^stopped')
echo "$ours" >&2
floor_rate=$(echo "$floor" | sed -n 's/.*: \([0-9]*\) events\/s.*/\1/p')
ours_rate=$(echo "$ours" | sed -n 's/.*events (\([0-9]*\)\/s).*/\1/p')
echo "| events/s from a backlog of $events | $ours_rate | $floor_rate | $(awk "BEGIN{printf \"%.2f\", $ours_rate/$floor_rate}") |"
}

# 2. Latency at a steady rate: the consumer joins first, then events are offered.
for rate in 1000 10000; do
  count=$((rate * seconds))
  for who in ours floor; do
    topic="rate-$rate-$who-$run"
    produce --topic "$topic" --count 0 # created before the consumer subscribes
    if [ "$who" = ours ]; then
      "$sluice" stream "$(job "rate$rate" "$topic" 12)" 2>/dev/null > "$work/$who-$rate.out" &
    else
      passthrough --from "$topic" --to "$topic-copy" --group "floor-$topic" --idle-s 12 > "$work/$who-$rate.out" &
    fi
    consumer=$!
    sleep 8 # the group join (about 5 s on the development broker)
    produce --topic "$topic" --count "$count" --rate "$rate" >&2
    wait "$consumer"
    cat "$work/$who-$rate.out" >&2
  done
  lat() { sed -n 's/.*p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms.*/\1 \/ \2/p' "$work/$1-$rate.out" | tail -1; }
  echo "| latency p50 / p99 ms at $rate events/s | $(lat ours) | $(lat floor) | |"
done
