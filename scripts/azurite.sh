#!/usr/bin/env bash
# Installs (npm) and starts the Azure Storage emulator Azurite's blob service on 127.0.0.1:10000
# when it is not already listening. Idempotent; says what it does.
#   scripts/azurite.sh                    install if needed, start if not running
#   scripts/azurite.sh container NAME     also create container NAME (ignored if it exists)
# Env: SLUICE_CACHE (default $HOME/.cache/sluice), AZURITE_PORT (default 10000)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
dir="$cache/azurite"
port="${AZURITE_PORT:-10000}"
say() { printf '[azurite] %s\n' "$*" >&2; }

if ! command -v npm >/dev/null 2>&1; then
  say "npm not found: installing nodejs and npm from Debian"
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
# One starter at a time: tests run in parallel and may all find the port closed.
mkdir -p "$cache"
exec 9>"$cache/azurite.lock"
flock 9
if [ ! -x "$dir/node_modules/.bin/azurite-blob" ] || [ ! -d "$dir/node_modules/@azure/storage-blob" ]; then
  say "installing azurite@3 and @azure/storage-blob@12 into $dir (npm, once)"
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund azurite@3 @azure/storage-blob@12 >/dev/null)
fi

if ! listening; then
  say "starting azurite-blob on 127.0.0.1:$port (data in $cache/azurite-data, log $cache/azurite.log)"
  mkdir -p "$cache/azurite-data"
  # Detached: its own session, no inherited descriptors (a caller's pipe held open would keep the
  # caller's reader waiting for ever), started from a neutral directory.
  (
    cd "$cache"
    for fd in /proc/$BASHPID/fd/*; do
      fd="${fd##*/}"
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec setsid "$dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
      --location "$cache/azurite-data" --disableTelemetry --skipApiVersionCheck --loose
  ) </dev/null >"$cache/azurite.log" 2>&1 &
  for _ in $(seq 1 100); do listening && break; sleep 0.1; done
  listening || { say "azurite did not start; see $cache/azurite.log"; exit 1; }
fi
exec 9>&-

if [ "${1:-}" = "container" ]; then
  NODE_PATH="$dir/node_modules" node "$root/scripts/azurite-container.js" "$port" "${2:?container name}"
fi
