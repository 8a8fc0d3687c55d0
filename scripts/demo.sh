#!/usr/bin/env bash
# Demo: starts a throwaway PostgreSQL 15, puts qproxy in front of it, and runs queries through
# the proxy with psql, showing that a client cannot tell the difference. Everything it starts is
# stopped and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

./scripts/install-deps.sh
echo "==> building qproxy"
cargo build --quiet -p qproxy
QPROXY="${CARGO_TARGET_DIR:-$PWD/target}/debug/qproxy"

PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/postgres" ] || PGBIN="$(pg_config --bindir)"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The server refuses to run as root: as root, run its commands as the postgres OS user.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

WORK="$(mktemp -d /tmp/qproxy-demo.XXXXXX)"
chmod 755 "$WORK"
mkdir -m 700 "$WORK/data"
mkdir "$WORK/run"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/data" "$WORK/run"; fi
PROXY_PID=""

cleanup() {
    if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; fi
    if [ -f "$WORK/data/postmaster.pid" ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PG_PORT="$(free_port)"
PROXY_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"

echo "==> starting a throwaway PostgreSQL on 127.0.0.1:$PG_PORT"
as_postgres "$PGBIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >/dev/null
as_postgres tee -a "$WORK/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK/run'
fsync = off
CONF
as_postgres tee "$WORK/data/pg_hba.conf" >/dev/null <<HBA
local all all              trust
host  all postgres 127.0.0.1/32 trust
host  all all      127.0.0.1/32 scram-sha-256
HBA
as_postgres "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/run/postgres.log" -w start >/dev/null
"$PGBIN/psql" -X -q -h "$WORK/run" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
CREATE ROLE demo LOGIN PASSWORD 'demo-password';
CREATE DATABASE demo OWNER demo;
SQL

echo "==> starting qproxy on 127.0.0.1:$PROXY_PORT (admin on 127.0.0.1:$ADMIN_PORT)"
"$QPROXY" serve \
    --listen "127.0.0.1:$PROXY_PORT" \
    --upstream "postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --store "$WORK/findings.db" >"$WORK/qproxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null; then break; fi
    if ! kill -0 "$PROXY_PID" 2>/dev/null; then
        echo "qproxy exited early; its log:" >&2; cat "$WORK/qproxy.log" >&2; exit 1
    fi
    sleep 0.1
done

THROUGH_PROXY="postgres://demo:demo-password@127.0.0.1:$PROXY_PORT/demo?sslmode=disable"
echo "==> psql through qproxy: $THROUGH_PROXY"
"$PGBIN/psql" -X -v ON_ERROR_STOP=1 "$THROUGH_PROXY" <<'SQL'
\conninfo
CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE books (id serial PRIMARY KEY, author_id int NOT NULL REFERENCES authors, title text);
INSERT INTO authors SELECT i, 'author ' || i FROM generate_series(1, 5) AS i;
INSERT INTO books (author_id, title) SELECT 1 + i % 5, 'book ' || i FROM generate_series(1, 20) AS i;
SELECT a.name, count(*) AS books FROM authors a JOIN books b ON b.author_id = a.id GROUP BY a.name ORDER BY a.name;
-- The kind of traffic qproxy is for: one query per parent row (an N+1).
SELECT title FROM books WHERE author_id = 1 ORDER BY id;
SELECT title FROM books WHERE author_id = 2 ORDER BY id;
SELECT title FROM books WHERE author_id = 3 ORDER BY id;
DO $$ BEGIN RAISE NOTICE 'notices pass through too'; END $$;
SQL

echo "==> the same count straight from PostgreSQL and through qproxy"
"$PGBIN/psql" -X -A -t "postgres://demo:demo-password@127.0.0.1:$PG_PORT/demo?sslmode=disable" -c "SELECT 'direct: ' || count(*) FROM books"
"$PGBIN/psql" -X -A -t "$THROUGH_PROXY" -c "SELECT 'proxied: ' || count(*) FROM books"

echo "==> qproxy's log"
cat "$WORK/qproxy.log"
echo "==> demo done; stopping qproxy and PostgreSQL"
