#!/usr/bin/env bash
# Benchmark qproxy (full analysis on) against pgbouncer (session mode) and a direct connection.
#
# Starts a throwaway PostgreSQL 15, pgbouncer and qproxy in a temp dir, runs `pgbench -S -n` in
# alternating rounds (direct, pgbouncer, qproxy, repeated), prints medians of the paired ratios and
# of the added latency per query, each proxy's CPU time (user + system, all threads, from /proc)
# and context switches per query, then measures the resident memory each proxy needs to hold
# 1,000 idle client connections. Everything it starts is stopped and removed on exit, Ctrl-C too.
#
# Environment:
#   ROUNDS=3                 rounds per mode x clients (each round runs all three targets)
#   BENCH_SECONDS=10         duration of each pgbench run
#   BENCH_MODES="simple extended prepared"
#   BENCH_CLIENTS="1 8 64 512"
#   BENCH_IDLE=1000          idle connections for the memory test (0 skips it)
#   BENCH_IDLE_SETTLE=5      seconds the idle sessions are held before their memory is read
#   PG_BIN=/usr/lib/postgresql/15/bin
#   QPROXY_WORKERS=N         qproxy's forwarding threads (default: half the CPUs), e.g. 1 to
#                            compare one thread with pgbouncer's one process
set -euo pipefail

ROUNDS="${ROUNDS:-3}"
BENCH_SECONDS="${BENCH_SECONDS:-10}"
BENCH_MODES="${BENCH_MODES:-simple extended prepared}"
BENCH_CLIENTS="${BENCH_CLIENTS:-1 8 64 512}"
BENCH_IDLE="${BENCH_IDLE:-1000}"
BENCH_IDLE_SETTLE="${BENCH_IDLE_SETTLE:-5}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="$ROOT/bench"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in pgbench psql pgbouncer python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (scripts/install-deps.sh installs it)"
done
[ -x "$PG_BIN/initdb" ] || die "$PG_BIN/initdb not found (set PG_BIN)"

# 512 pgbench clients plus as many proxy-side and server-side sockets need far more than 1024
# descriptors; children (pgbouncer, qproxy, pgbench, python) inherit this limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 4096 ] ||
    log "warning: ulimit -n is $(ulimit -n); 512 clients and the memory test may run out of descriptors"

# PostgreSQL and pgbouncer refuse to run as root: run them as `postgres` when we are root.
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

TMP=""
QPROXY_PID=""
HOLDER_PID=""
PG_STARTED=0

stop_holder() {
    if [ -n "$HOLDER_PID" ]; then
        kill "$HOLDER_PID" 2>/dev/null || true
        wait "$HOLDER_PID" 2>/dev/null || true
        HOLDER_PID=""
    fi
}

stop_qproxy() {
    if [ -n "$QPROXY_PID" ]; then
        kill -INT "$QPROXY_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$QPROXY_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$QPROXY_PID" 2>/dev/null || true
        wait "$QPROXY_PID" 2>/dev/null || true
        QPROXY_PID=""
    fi
}

stop_pgbouncer() {
    local pid
    if [ -n "$TMP" ] && [ -f "$TMP/pgbouncer.pid" ]; then
        pid="$(cat "$TMP/pgbouncer.pid" 2>/dev/null || true)"
        if [ -n "$pid" ]; then
            kill -INT "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$TMP/pgbouncer.pid"
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_holder
    stop_qproxy
    stop_pgbouncer
    if [ "$PG_STARTED" = 1 ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$rc" -ne 0 ] && [ -z "${BENCH_KEEP_LOGS:-}" ]; then
            for f in postgres.log pgbouncer.log qproxy.log; do
                [ -f "$TMP/$f" ] && { log "last lines of $f:"; tail -n 15 "$TMP/$f" >&2; }
            done
        fi
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

log "building qproxy (release)"
(cd "$ROOT" && cargo build --release --quiet -p qproxy)
QPROXY_BIN="$ROOT/target/release/qproxy"

TMP="$(mktemp -d /tmp/qproxy-bench.XXXXXX)"
chmod 755 "$TMP"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$TMP"; fi
RESULTS="$TMP/results.tsv"
: >"$RESULTS"

PG_PORT="$(free_port)"
PGB_PORT="$(free_port)"
QP_PORT="$(free_port)"
export PGUSER=postgres PGDATABASE=postgres PGHOST=127.0.0.1 PGSSLMODE=disable PGCONNECT_TIMEOUT=30

start_postgres() { # $1: max_connections
    as_pg "$PG_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start -o \
        "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$TMP \
         -c max_connections=$1 -c shared_buffers=256MB -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off" >/dev/null
    PG_STARTED=1
}

stop_postgres() {
    as_pg "$PG_BIN/pg_ctl" -D "$TMP/data" -m fast -w stop >/dev/null
    PG_STARTED=0
}

start_pgbouncer() { # $1: default_pool_size
    cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $TMP/userlist.txt
pool_mode = session
max_client_conn = 2000
default_pool_size = $1
max_db_connections = 0
max_user_connections = 0
ignore_startup_parameters = extra_float_digits
logfile = $TMP/pgbouncer.log
pidfile = $TMP/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
    printf '"postgres" ""\n' >"$TMP/userlist.txt"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$TMP/pgbouncer.ini" "$TMP/userlist.txt"; fi
    # runuser's PAM session resets the soft descriptor limit to 1024; raise it again in the child.
    as_pg bash -c 'ulimit -n "$(ulimit -Hn)"; exec "$@"' pgbouncer pgbouncer -d -q "$TMP/pgbouncer.ini"
    wait_ready "$PGB_PORT" pgbouncer
}

start_qproxy() {
    # In a session of its own, as pgbouncer (-d) and PostgreSQL (pg_ctl) are: with the kernel's
    # autogroup scheduling on (Debian's default), a proxy left in this script's session would
    # share one CPU share with pgbench and be preempted by it far more often than pgbouncer is
    # (measured: 1.0 against 0.65 context switches per query at 8 clients). setsid does not fork
    # here (a background job is no process-group leader), so $! is qproxy's pid.
    setsid "$QPROXY_BIN" serve --listen "127.0.0.1:$QP_PORT" \
        --upstream "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable" \
        --admin-listen 127.0.0.1:0 --store "$TMP/findings.db" >>"$TMP/qproxy.log" 2>&1 &
    QPROXY_PID=$!
    wait_ready "$QP_PORT" qproxy
    [ "$(cat "/proc/$QPROXY_PID/comm" 2>/dev/null)" = qproxy ] || die "qproxy's pid is not $QPROXY_PID"
}

wait_ready() { # $1: port, $2: name
    for _ in $(seq 100); do
        if psql -X -q -p "$1" -c 'SELECT 1' >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "$2 did not accept connections on port $1"
}

target_port() {
    case "$1" in
        direct) echo "$PG_PORT" ;;
        pgbouncer) echo "$PGB_PORT" ;;
        qproxy) echo "$QP_PORT" ;;
    esac
}

log "initdb + PostgreSQL on 127.0.0.1:$PG_PORT (data in $TMP)"
as_pg "$PG_BIN/initdb" -D "$TMP/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
# pgbouncer keeps the server connections of a session-mode pool open after its clients leave
# (server_idle_timeout, 10 min), so up to default_pool_size (600) idle backends stay while the next
# target opens its own 512: 700 is not enough, 1,200 is.
start_postgres 1200

log "pgbench -i -s 10"
pgbench -i -s 10 -q -p "$PG_PORT" >"$TMP/pgbench-init.log" 2>&1 ||
    { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
psql -X -q -p "$PG_PORT" -c 'VACUUM ANALYZE' >/dev/null

log "pgbouncer (session) on :$PGB_PORT, qproxy on :$QP_PORT"
start_pgbouncer 600
start_qproxy

# The proxy process a target runs through (empty for direct).
target_pid() {
    case "$1" in
        pgbouncer) cat "$TMP/pgbouncer.pid" 2>/dev/null || true ;;
        qproxy) echo "$QPROXY_PID" ;;
    esac
}

# CPU time (user + system, every thread, in clock ticks) and context switches (voluntary and not,
# summed over the threads) of process $1: "ticks switches", or "- -" without a process.
proc_usage() {
    if [ -z "$1" ] || [ ! -r "/proc/$1/stat" ]; then echo "- -"; return; fi
    local ticks switches
    # Fields 14 and 15 of /proc/PID/stat, counted after the command name's closing parenthesis.
    ticks="$(sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}')"
    switches="$(cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {n += $2} END {print n + 0}')"
    echo "$ticks $switches"
}
CLK_TCK="$(getconf CLK_TCK)"

run_pgbench() { # $1 target, $2 mode, $3 clients, $4 round
    local port jobs out rc=0 tps lat failed pid before after txns cpu_us csw
    port="$(target_port "$1")"
    jobs=$(($3 < 2 ? $3 : 2))
    pid="$(target_pid "$1")"
    before="$(proc_usage "$pid")"
    out="$(pgbench -S -n -M "$2" -c "$3" -j "$jobs" -T "$BENCH_SECONDS" -p "$port" 2>&1)" || rc=$?
    after="$(proc_usage "$pid")"
    txns="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | head -n1)"
    # Proxy CPU (µs) and context switches per query: -S runs one query per transaction.
    read -r cpu_us csw < <(python3 - "$before" "$after" "${txns:-0}" "$CLK_TCK" <<'PY'
import sys
b, a, n, hz = sys.argv[1].split(), sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4])
if "-" in b + a or n <= 0:
    print("- -")
else:
    print(f"{(int(a[0]) - int(b[0])) * 1e6 / hz / n:.2f} {(int(a[1]) - int(b[1])) / n:.3f}")
PY
)
    tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' <<<"$out" | head -n1)"
    lat="$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -n1)"
    failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out" | head -n1)"
    failed="${failed:-0}"
    if [ "$rc" -ne 0 ]; then
        failed="${failed}+aborted"
        printf '%s\n' "$out" >>"$TMP/pgbench-errors.log"
        log "  $1 -M $2 -c $3: pgbench exited $rc: $(grep -m1 -iE 'error|abort|fatal' <<<"$out" || true)"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$2" "$3" "$4" "$1" "$tps" "$lat" "$failed" \
        "$cpu_us" "$csw" >>"$RESULTS"
    log "  round $4 $2 c=$3 $1: tps=${tps:-?} lat=${lat:-?}ms failed=$failed proxy_cpu=${cpu_us}us/q csw=${csw}/q"
}

total=$((ROUNDS * $(wc -w <<<"$BENCH_MODES") * $(wc -w <<<"$BENCH_CLIENTS") * 3))
log "running $total pgbench runs of ${BENCH_SECONDS}s (ROUNDS=$ROUNDS, modes: $BENCH_MODES; clients: $BENCH_CLIENTS)"
for round in $(seq "$ROUNDS"); do
    for mode in $BENCH_MODES; do
        for clients in $BENCH_CLIENTS; do
            for target in direct pgbouncer qproxy; do
                run_pgbench "$target" "$mode" "$clients" "$round"
            done
        done
    done
done

echo
echo "## pgbench -S -n, ${BENCH_SECONDS}s per run, $ROUNDS rounds, medians (paired = same round)"
echo
python3 "$BENCH_DIR/summarize.py" "$RESULTS"
echo

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

MEAS_BEFORE=""
MEAS_AFTER=""
MEAS_BACKENDS=""
measure_idle() { # $1 name, $2 port, $3 pid; sets MEAS_BEFORE / MEAS_AFTER (KiB)
    local out="$TMP/holder.out"
    sleep 1
    MEAS_BEFORE="$(rss_kb "$3")"
    : >"$out"
    python3 "$BENCH_DIR/idle_clients.py" 127.0.0.1 "$2" "$BENCH_IDLE" >"$out" 2>"$TMP/holder.err" &
    HOLDER_PID=$!
    for _ in $(seq 600); do
        grep -q '^ready' "$out" && break
        kill -0 "$HOLDER_PID" 2>/dev/null || { cat "$TMP/holder.err" >&2; die "idle client holder for $1 failed"; }
        sleep 0.5
    done
    grep -q '^ready' "$out" || die "idle client holder for $1 timed out"
    # Idle means idle past the analyzer's request grace (2 s after a 250 ms idle gap): by then
    # the requests the sessions' SELECT 1 opened have ended, as they would for any idle session.
    sleep "$BENCH_IDLE_SETTLE"
    MEAS_AFTER="$(rss_kb "$3")"
    # How many server backends the held sessions occupy (the proxy's catalog connection aside).
    MEAS_BACKENDS="$(psql -X -At -p "$PG_PORT" -c "SELECT count(*) - 1 FROM pg_stat_activity
        WHERE backend_type = 'client backend'")"
    stop_holder
}

if [ "$BENCH_IDLE" -gt 0 ]; then
    # Fresh processes so the benchmark's 512-client peak does not sit in either allocator, and a
    # PostgreSQL that admits one backend per idle session (session mode holds a server connection
    # for each client that has run a query).
    log "memory test: restarting PostgreSQL with max_connections=$((BENCH_IDLE + 100)), fresh proxies"
    stop_qproxy
    stop_pgbouncer
    stop_postgres
    start_postgres $((BENCH_IDLE + 100))
    start_pgbouncer $((BENCH_IDLE + 50))
    start_qproxy
    PGB_PID="$(cat "$TMP/pgbouncer.pid")"

    log "holding $BENCH_IDLE idle sessions through pgbouncer"
    measure_idle pgbouncer "$PGB_PORT" "$PGB_PID"
    pgb_before="$MEAS_BEFORE" pgb_after="$MEAS_AFTER" pgb_backends="$MEAS_BACKENDS"
    # pgbouncer keeps its now idle server connections pooled; close them before qproxy's turn.
    stop_pgbouncer
    log "holding $BENCH_IDLE idle sessions through qproxy"
    measure_idle qproxy "$QP_PORT" "$QPROXY_PID"
    qp_before="$MEAS_BEFORE" qp_after="$MEAS_AFTER" qp_backends="$MEAS_BACKENDS"

    echo "## Resident memory holding $BENCH_IDLE idle client sessions (VmRSS)"
    echo
    python3 - "$BENCH_IDLE" "$pgb_before" "$pgb_after" "$qp_before" "$qp_after" <<'EOF'
import sys
n = int(sys.argv[1])
pb, pa, qb, qa = (int(x) for x in sys.argv[2:])
per_p = (pa - pb) * 1024 / n
per_q = (qa - qb) * 1024 / n
print("| proxy | RSS before (KiB) | RSS with sessions (KiB) | bytes per connection |")
print("|---|---|---|---|")
print(f"| pgbouncer | {pb} | {pa} | {per_p:.0f} |")
print(f"| qproxy | {qb} | {qa} | {per_q:.0f} |")
print()
ratio = per_q / per_p if per_p > 0 else float("nan")
print(f"qproxy / pgbouncer bytes per idle connection: {ratio:.2f}")
EOF
    echo "server backends open while held (excluding the counting session): pgbouncer $pgb_backends, qproxy $qp_backends"
    echo
fi
log "done"
