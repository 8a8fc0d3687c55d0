"""A psycopg 3 session through the target: server-side binding, prepared statements,
executemany, pipeline mode (with an error in the middle), COPY both ways, a failed transaction.

Usage: psycopg_session.py CONNINFO TABLE_NAME
Prints one line per check and exits non-zero on the first failure.
"""

import sys

import psycopg
from psycopg import sql

conninfo, table_name = sys.argv[1], sys.argv[2]
table = sql.Identifier(table_name)


def check(label, got, expected):
    if got != expected:
        sys.exit(f"FAIL {label}: got {got!r}, expected {expected!r}")
    print(f"ok {label}")


with psycopg.connect(conninfo, autocommit=True) as conn:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text, price numeric)").format(table)
    )

    # psycopg 3 binds parameters server-side (extended protocol).
    row = conn.execute("SELECT %s::int + %s::int, %s::text", (40, 2, "bound")).fetchone()
    check("server-side binding", row, (42, "bound"))

    # prepare=True makes psycopg use a named prepared statement.
    total = sum(conn.execute("SELECT %s::int * 2", (i,), prepare=True).fetchone()[0] for i in range(20))
    check("prepared statement", total, 380)

    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (id, name, price) VALUES (%s, %s, %s)").format(table),
            [(i, f"item {i}", i * 2) for i in range(200)],
        )
    count = conn.execute(sql.SQL("SELECT count(*), sum(price) FROM {}").format(table)).fetchone()
    check("executemany", count, (200, 39800))

    with conn.pipeline():
        first = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        conn.execute(sql.SQL("UPDATE {} SET name = upper(name) WHERE id < 10").format(table))
        second = conn.execute(sql.SQL("SELECT name FROM {} WHERE id = 3").format(table))
    check("pipeline results", (first.fetchone(), second.fetchone()), ((200,), ("ITEM 3",)))

    # An error in the middle of a pipeline: the statements after it up to the Sync are skipped,
    # and those before it, being in the same implicit transaction, roll back with it.
    try:
        with conn.pipeline():
            conn.execute(sql.SQL("UPDATE {} SET name = 'before' WHERE id = 1").format(table))
            conn.execute("SELECT 1 / 0")
            conn.execute(sql.SQL("UPDATE {} SET name = 'after' WHERE id = 2").format(table))
        sys.exit("FAIL pipeline error: no exception")
    except psycopg.errors.DivisionByZero:
        pass
    names = conn.execute(
        sql.SQL("SELECT name FROM {} WHERE id IN (1, 2) ORDER BY id").format(table)
    ).fetchall()
    check("pipeline error", names, [("ITEM 1",), ("ITEM 2",)])

    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY {} (id, name, price) FROM STDIN").format(table)) as copy:
            for i in range(1000, 6000):
                copy.write_row((i, f"copied {i}", i))
        with cur.copy(
            sql.SQL("COPY (SELECT id, name FROM {} WHERE id >= 1000 ORDER BY id) TO STDOUT").format(table)
        ) as copy:
            rows = list(copy.rows())
    check("copy rows", len(rows), 5000)
    check("copy last row", rows[-1], ("5999", "copied 5999"))

    conn.autocommit = False
    try:
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {}").format(table))
            conn.execute("SELECT 1 / 0")
    except psycopg.errors.DivisionByZero:
        pass
    conn.autocommit = True
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    check("rolled back transaction", count, (5200,))

    big = "x" * (5 * 1024 * 1024)
    got = conn.execute("SELECT length(%s::text), md5(%s::text) = md5(repeat('x', 5242880))", (big, big)).fetchone()
    check("5 MB parameter", got, (5242880, True))

print("psycopg session: all checks passed")
