#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432: starts the installed cluster when it is
# stopped, installs Debian's postgresql (trust auth on loopback, database `test`) when missing.
# Idempotent; says what it does. Tests call it before they connect.
set -euo pipefail
say() { printf '[postgres] %s\n' "$*" >&2; }
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
exec 9>/tmp/sluice-postgres.lock
flock 9
ready && exit 0
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  say "installing postgresql from Debian (once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  v="$(ls /etc/postgresql | head -1)"
  # Loopback trust, as on the development machines.
  sed -i 's/^\(host.*127.0.0.1\/32\s*\)\S*$/\1trust/; s/^\(local\s*all\s*all\s*\)\S*$/\1trust/' "/etc/postgresql/$v/main/pg_hba.conf"
fi
v="$(ls /etc/postgresql | head -1)"
say "starting PostgreSQL $v"
pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
for _ in $(seq 1 50); do ready && break; sleep 0.2; done
ready || { say "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null
