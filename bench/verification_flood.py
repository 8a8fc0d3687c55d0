#!/usr/bin/env python3
"""Memory and upstream connections of qproxy under a flood of distinct statement shapes.

Starts a throwaway PostgreSQL 15 (hypopg, log_connections) under /tmp, a qproxy in front of it,
and sends SHAPES distinct unindexed-filter shapes (`SELECT id AS cN FROM big WHERE col = 1
LIMIT 1`) over one psycopg connection. Reports the proxy's peak RSS (VmHWM) and RSS, the
hypopg verification connections the server logged during the load, and per 5-second window
for WATCH seconds after the load stopped. Everything is stopped and removed on exit.

    python3 bench/verification_flood.py [QPROXY_BIN] [SHAPES] [WATCH]
    python3 bench/verification_flood.py target/release/qproxy 50000 30
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import psycopg

BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
AS_POSTGRES = os.geteuid() == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server(*args):
    cmd = [os.path.join(BINDIR, args[0]), *args[1:]]
    if AS_POSTGRES:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def hypopg_connections(log_path):
    with open(log_path, errors="replace") as f:
        return sum(
            1
            for line in f
            if "connection authorized" in line and "application_name=qproxy-hypopg" in line
        )


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/qproxy"
    shapes = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
    watch = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    tmp = tempfile.mkdtemp(prefix="qproxy-flood-", dir="/tmp")
    os.chmod(tmp, 0o755)
    data, log = os.path.join(tmp, "data"), os.path.join(tmp, "pg.log")
    os.mkdir(data, 0o700)
    if AS_POSTGRES:
        shutil.chown(tmp, "postgres", "postgres")
        shutil.chown(data, "postgres", "postgres")
    pg_port, port, admin = free_port(), free_port(), free_port()
    proxy = None
    started = False
    try:
        server("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(
                f"port = {pg_port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{tmp}'\nfsync = off\n"
                "log_connections = on\nmax_connections = 200\n"
            )
        server("pg_ctl", "-D", data, "-l", log, "-w", "start")
        started = True
        dsn = f"host=127.0.0.1 port={pg_port} user=postgres"
        with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE flood")
        with psycopg.connect(dsn + " dbname=flood", autocommit=True) as c:
            c.execute(
                "CREATE EXTENSION hypopg;"
                "CREATE TABLE big (id int PRIMARY KEY, col int NOT NULL);"
                "INSERT INTO big SELECT g, g % 100 FROM generate_series(1, 20000) g;"
                "ANALYZE big;"
            )
        proxy = subprocess.Popen(
            [
                binary, "serve", "--listen", f"127.0.0.1:{port}",
                "--upstream", f"postgres://postgres@127.0.0.1:{pg_port}/postgres?sslmode=disable",
                "--admin-listen", f"127.0.0.1:{admin}",
                "--store", os.path.join(tmp, "findings.db"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(tmp, "qproxy.log"), "w"),
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        rss_start = status(proxy.pid, "VmRSS")
        t0 = time.monotonic()
        with psycopg.connect(
            f"host=127.0.0.1 port={port} user=postgres dbname=flood sslmode=disable",
            autocommit=True,
        ) as c:
            for i in range(shapes):
                c.execute(f"SELECT id AS c{i} FROM big WHERE col = 1 LIMIT 1").fetchall()
        load_s = time.monotonic() - t0
        during = hypopg_connections(log)
        print(f"binary {binary}: {shapes} shapes in {load_s:.1f} s")
        print(f"  RSS at start {rss_start} KiB; at end of load {status(proxy.pid, 'VmRSS')} KiB")
        print(f"  verification connections during the load: {during} ({during / load_s:.1f}/s)")
        last = during
        for window in range(watch // 5):
            time.sleep(5)
            now = hypopg_connections(log)
            print(
                f"  {5 * window:>3}-{5 * window + 5:<3} s after the load: {now - last} new "
                f"({(now - last) / 5:.1f}/s), RSS {status(proxy.pid, 'VmRSS')} KiB"
            )
            last = now
        print(f"  peak RSS (VmHWM) {status(proxy.pid, 'VmHWM')} KiB")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(("qproxy_background", "qproxy_verification", "qproxy_catalog_loads")):
                        print("  " + line)
        except OSError as e:
            print(f"  no /metrics: {e}")
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proxy.kill()
        if started:
            server("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        if os.environ.get("KEEP"):
            print(f"  kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
