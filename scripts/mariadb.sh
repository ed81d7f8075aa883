#!/usr/bin/env bash
# Makes sure MariaDB answers on 127.0.0.1:3306 (root, no password, database `test`): starts the
# installed server when it is stopped, installs Debian's mariadb-server when missing.
# Idempotent; says what it does. Tests call it before they connect.
set -euo pipefail
say() { printf '[mariadb] %s\n' "$*" >&2; }
ready() { mysqladmin -h 127.0.0.1 -u root --connect-timeout=2 ping >/dev/null 2>&1; }
exec 9>/tmp/sluice-mariadb.lock
flock 9
ready && exit 0
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  say "installing mariadb-server from Debian (once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq mariadb-server >/dev/null
fi
say "starting MariaDB"
start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
for _ in $(seq 1 100); do ready && break; sleep 0.2; done
ready || { say "MariaDB did not come up on 127.0.0.1:3306"; exit 1; }
mysql -h 127.0.0.1 -u root -e "CREATE DATABASE IF NOT EXISTS test"
