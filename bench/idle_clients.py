#!/usr/bin/env python3
"""Open N client connections to host:port one at a time and keep them open and idle.

Each connection logs in (trust auth) and runs one `SELECT 1` in autocommit mode, so it is a
fully established, idle session (not idle in transaction) on whichever proxy it went through.
Prints "ready N" on stdout once all are open, then holds them until SIGTERM.
"""
import signal
import sys

import psycopg


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conns = []
    for _ in range(count):
        conn = psycopg.connect(host=host, port=port, user="postgres", dbname="postgres",
                               sslmode="disable", autocommit=True, connect_timeout=30)
        conn.execute("SELECT 1").fetchall()
        conns.append(conn)
    print(f"ready {len(conns)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
