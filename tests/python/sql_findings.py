"""Planted non-sargable filters, offset pagination and unindexed foreign keys, each next to its
look-alike control, the way a Django/SQLAlchemy app sends them through psycopg 3.

Usage: sql_findings.py CONNINFO PART, PART being non_sargable, offset or foreign_key.
Every statement is its own tagged request, so request-level detectors see one statement each.
Prints one line per statement and exits non-zero on the first failure.
"""

import datetime
import itertools
import sys

import psycopg

conninfo, part = sys.argv[1], sys.argv[2]
requests = itertools.count(1)


def tag():
    return f"/*request_id='{part}-{next(requests)}',route='{part}'*/"


def run(conn, sql, params=(), **kwargs):
    rows = conn.execute(f"{sql} {tag()}", params, **kwargs).fetchall()
    print(f"ok {len(rows)} rows: {sql}")
    return rows


def non_sargable(conn):
    # Planted: a function, a cast, arithmetic and a leading wildcard on indexed columns.
    assert run(conn, "SELECT id FROM accounts WHERE lower(email) = lower(%s)", ("USER7@example.com",))
    day = datetime.date.today()
    run(conn, "SELECT count(*) FROM accounts WHERE created_at::date = %s", (day,))
    assert run(conn, "SELECT id FROM accounts WHERE score + 1 = %s", (101,))
    run(conn, "SELECT id FROM accounts WHERE email LIKE '%%' || %s", ("@nowhere.test",))
    # Controls: the expression index, the same rows as a range, the arithmetic on the value
    # side, a trigram index, and another index that already narrows the scan.
    assert run(conn, "SELECT id FROM accounts WHERE lower(handle) = lower(%s)", ("HANDLE7",))
    start = datetime.datetime.combine(day, datetime.time(), datetime.timezone.utc)
    run(
        conn,
        "SELECT count(*) FROM accounts WHERE created_at >= %s AND created_at < %s",
        (start, start + datetime.timedelta(days=1)),
    )
    assert run(conn, "SELECT id FROM accounts WHERE score = %s - 1", (101,))
    run(conn, "SELECT id FROM accounts WHERE bio LIKE '%%' || %s || '%%'", ("needle",))
    run(conn, "SELECT id FROM accounts WHERE id = %s AND lower(email) = %s", (7, "user7@example.com"))


def offset(conn):
    # Planted: deep pages, the OFFSET bound as text (unnamed statement), through a named
    # prepared statement, bound in binary, and inlined as a literal by a client-side cursor.
    run(conn, "SELECT id, email FROM accounts ORDER BY id LIMIT %s OFFSET %s", (20, 4321))
    run(
        conn,
        "SELECT id, handle FROM accounts ORDER BY created_at DESC LIMIT %s OFFSET %s",
        (20, 12345),
        prepare=True,
    )
    run(conn, "SELECT id FROM accounts ORDER BY score LIMIT 10 OFFSET %b", (2500,))
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(f"SELECT id, bio FROM accounts ORDER BY id LIMIT 10 OFFSET %s {tag()}", (7654,))
        print(f"ok {len(cur.fetchall())} rows: client-side literal OFFSET")
        # The OFFSET is read from the second statement of one simple Query: the text the
        # analyzer reads must be the statement the proxy numbered, not the first one.
        cur.execute(
            f"SELECT 1; SELECT email, handle FROM accounts ORDER BY id LIMIT 10 OFFSET %s {tag()}",
            (3333,),
        )
        assert cur.nextset(), "two result sets"
        print(f"ok {len(cur.fetchall())} rows: second statement's literal OFFSET")
    # Controls: the first pages of a large table, a deep page of a small one, keyset paging.
    for page in range(3):
        run(conn, "SELECT id, score FROM accounts ORDER BY id LIMIT %s OFFSET %s", (20, 20 * page))
    run(conn, "SELECT id FROM notes ORDER BY id LIMIT 10 OFFSET %s", (1500,))
    run(conn, "SELECT id FROM accounts WHERE id > %s ORDER BY id LIMIT 20", (4321,))


def foreign_key(conn):
    # Planted: deleting a team and re-keying one (members.team_id has no index), and a page
    # of a team's members joined on the key.
    conn.execute("INSERT INTO teams VALUES (9001, 'leaving'), (9002, 'renamed')")
    run(conn, "DELETE FROM teams WHERE id = %s RETURNING id", (9001,))
    run(conn, "UPDATE teams SET id = %s WHERE id = %s RETURNING id", (9003, 9002))
    run(
        conn,
        "SELECT m.name FROM teams t JOIN members m ON m.team_id = t.id WHERE t.id = %s LIMIT 50",
        (7,),
    )
    # Controls: the same on projects, whose tasks.project_id is indexed, and an UPDATE that
    # leaves the key alone.
    conn.execute("INSERT INTO projects VALUES (9001, 'leaving')")
    run(conn, "DELETE FROM projects WHERE id = %s RETURNING id", (9001,))
    run(conn, "UPDATE teams SET name = %s WHERE id = %s RETURNING id", ("new name", 8))
    run(
        conn,
        "SELECT k.title FROM projects p JOIN tasks k ON k.project_id = p.id WHERE p.id = %s LIMIT 50",
        (7,),
    )


with psycopg.connect(conninfo, autocommit=True) as conn:
    {"non_sargable": non_sargable, "offset": offset, "foreign_key": foreign_key}[part](conn)
