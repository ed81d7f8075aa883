#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's `chromium` when missing
# (browser tests of the console). Idempotent; quiet when it is there.
set -euo pipefail
for candidate in "${SLUICE_CHROMIUM:-}" chromium chromium-browser; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
    command -v "$candidate"
    exit 0
  fi
done
echo "[chromium] installing Debian's chromium (headless browser for the console tests)" >&2
export DEBIAN_FRONTEND=noninteractive
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
$sudo_cmd apt-get update -qq >&2
$sudo_cmd apt-get install -y -qq chromium >&2
command -v chromium
