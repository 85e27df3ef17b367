#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the leaderboard's storage tests.
#
#   bash scripts/postgres.sh start   # install Debian's postgresql if missing (as root), start the server
#   bash scripts/postgres.sh url     # print its SQLAlchemy URL (for TILTENV_TEST_PG_URL)
#   bash scripts/postgres.sh status  # exit 0 when it is running
#   bash scripts/postgres.sh stop    # stop it and delete its data directory
#
# The cluster lives in its own data directory ($TILTENV_PG_DIR, default /tmp/tiltenv-pg-$PORT), created with
# initdb and run with pg_ctl as the `postgres` user (as root) or as yourself: the system's own clusters
# (/etc/postgresql, port 5432) are never touched. It listens on 127.0.0.1:$TILTENV_PG_PORT (default 54329)
# and on a Unix socket inside its data directory only. Role `tiltenv` (password `tiltenv`, CREATEDB: the
# tests create one database per test) owns database `tiltenv`; TCP logins need the password
# (scram-sha-256), the socket (owner-only directory) is for the bootstrap superuser.
# `start` on a running server only prints its URL; `stop` on a stopped one only cleans up.
set -euo pipefail

PORT="${TILTENV_PG_PORT:-54329}"
DIR="${TILTENV_PG_DIR:-/tmp/tiltenv-pg-$PORT}"
DATA="$DIR/data"
LOG="$DIR/server.log"
ROLE=tiltenv
PASSWORD=tiltenv
DB=tiltenv

die() { echo "[postgres] error: $*" >&2; exit 1; }

usage() {
  echo "usage: bash scripts/postgres.sh start|stop|status|url" >&2
  exit 2
}

url() { echo "postgresql+psycopg2://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"; }

# The newest installed server's bin directory (Debian keeps them in /usr/lib/postgresql/<major>/bin).
find_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir)"
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  fi
  return 1
}

ensure_installed() {
  if BIN="$(find_bindir)"; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    die "PostgreSQL is not installed and installing it needs root: run 'sudo apt-get install -y postgresql' (or set up any server and export TILTENV_TEST_PG_URL yourself)."
  fi
  echo "[postgres] installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends postgresql >&2
  BIN="$(find_bindir)" || die "apt-get installed postgresql but no initdb/pg_ctl was found under /usr/lib/postgresql/*/bin."
}

# Run a server command as the cluster's owner: `postgres` when we are root (the server refuses root).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "user 'postgres' does not exist (Debian's postgresql package creates it)."
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() { [ -n "${BIN:-}" ] && [ -d "$DATA" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

port_in_use() {
  # bash's /dev/tcp: a successful connect means something already listens there.
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") >/dev/null 2>&1
}

start() {
  ensure_installed
  if running; then url; return 0; fi
  if port_in_use; then
    die "port $PORT on 127.0.0.1 is already in use by another program: pick a free one with TILTENV_PG_PORT=<port>."
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DIR"; fi
  echo "[postgres] initdb $DATA ($("$BIN/postgres" --version))" >&2
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; die "initdb failed (log above)."; }
  # fsync off and friends: a throwaway test server, durability across power loss is irrelevant here.
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    >/dev/null || { cat "$LOG" >&2 || true; die "the server did not start (log above)."; }
  as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres -d postgres \
    -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" \
    -c "CREATE DATABASE $DB OWNER $ROLE" >/dev/null \
    || die "could not create role/database '$ROLE' (server log: $LOG)."
  echo "[postgres] running on 127.0.0.1:$PORT (data $DATA, log $LOG)" >&2
  url
}

stop() {
  BIN="$(find_bindir || true)"
  if running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    echo "[postgres] stopped the server on port $PORT" >&2
  fi
  case "$DIR" in
    /|"") die "refusing to remove '$DIR'." ;;
  esac
  rm -rf "$DIR"
}

status() {
  BIN="$(find_bindir || true)"
  if running; then echo "[postgres] running on 127.0.0.1:$PORT ($(url))"; else echo "[postgres] not running"; return 1; fi
}

[ $# -eq 1 ] || usage
case "$1" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  *) usage ;;
esac
