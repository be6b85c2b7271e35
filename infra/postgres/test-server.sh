#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the test suite (never for data).
#   infra/postgres/test-server.sh start   installs PostgreSQL from Debian if missing (as root),
#                                         starts the server, prints its URL
#   infra/postgres/test-server.sh stop
# TRE_TEST_PG_DIR (default /tmp/tre-test-postgres) and TRE_TEST_PG_PORT (default 55432) move it.
set -euo pipefail
action=${1:-start}
dir=${TRE_TEST_PG_DIR:-/tmp/tre-test-postgres}
port=${TRE_TEST_PG_PORT:-55432}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
bin=$(pg_bin)
if [ -z "$bin" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL is not installed; run: sudo apt-get install -y postgresql" >&2
    exit 1
  fi
  echo "Installing PostgreSQL from Debian's packages…" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin=$(pg_bin)
fi

as_owner() {
  # initdb and the server refuse to run as root: use the postgres account then.
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$action" in
  start)
    if [ ! -f "$dir/PG_VERSION" ]; then
      mkdir -p "$dir"
      [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
      chmod 700 "$dir"
      as_owner "$bin/initdb" -D "$dir" -A trust -U tre --no-sync >/dev/null
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      as_owner "$bin/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" \
        -o "-h 127.0.0.1 -p $port -k $dir -F -c max_connections=200" start >/dev/null
    fi
    echo "postgresql://tre@127.0.0.1:$port/postgres"
    ;;
  stop)
    if [ -f "$dir/PG_VERSION" ]; then as_owner "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null || true; fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
