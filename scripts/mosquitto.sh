#!/usr/bin/env bash
# Makes sure an MQTT broker answers on 127.0.0.1:1883: starts the installed Mosquitto when it is
# stopped, installs Debian's mosquitto when missing. Idempotent; says what it does. Tests call it
# before they connect.
set -euo pipefail
say() { printf '[mosquitto] %s\n' "$*" >&2; }
ready() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }
exec 9>/tmp/sluice-mosquitto.lock
flock 9
ready && exit 0
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  say "installing mosquitto from Debian (once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null
fi
say "starting Mosquitto on 127.0.0.1:1883"
bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
conf="$(mktemp /tmp/sluice-mosquitto-XXXX.conf)"
printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\n' > "$conf"
"$bin" -d -c "$conf"
for _ in $(seq 1 50); do ready && break; sleep 0.2; done
ready || { say "Mosquitto did not come up on 127.0.0.1:1883"; exit 1; }
