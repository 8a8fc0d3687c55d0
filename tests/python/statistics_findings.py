"""Index advice that knows the data: filters on both tables of a join, a rare value of a skewed
column, and unselective look-alikes, the way a Django/SQLAlchemy app sends them through psycopg 3.

Usage: statistics_findings.py CONNINFO.
Every statement is its own tagged request. Prints one line per statement and exits non-zero on
the first failure.
"""

import datetime
import itertools
import sys

import psycopg

conninfo = sys.argv[1]
requests = itertools.count(1)


def run(conn, sql, params=()):
    tag = f"/*request_id='stats-{next(requests)}',route='stats'*/"
    rows = conn.execute(f"{sql} {tag}", params).fetchall()
    print(f"ok {len(rows)} rows: {sql}")
    return rows


with psycopg.connect(conninfo, autocommit=True) as conn:
    week_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=7)
    # Planted: a join filtering both tables, neither filter indexed (the join keys are), as
    # an explicit JOIN with aliases and as an implicit join.
    run(
        conn,
        "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE c.created_at > %s AND o.total > %s LIMIT 200",
        (week_ago, 990),
    )
    run(
        conn,
        "SELECT orders.id FROM orders, customers "
        "WHERE orders.customer_id = customers.id AND customers.region = %s "
        "AND orders.created_at > %s LIMIT 200",
        ("r7", week_ago),
    )
    # Planted: a rare value of the skewed status column, written into the SQL: a partial index.
    run(conn, "SELECT id FROM orders WHERE created_at > %s AND status = 'new' LIMIT 200", (week_ago,))
    # Controls: the common status value, and the boolean-like is_gift column, literal and
    # bound; the join driven by a primary key.
    run(conn, "SELECT id FROM orders WHERE status = 'done' LIMIT 10")
    run(conn, "SELECT count(*) FROM orders WHERE is_gift = 1")
    run(conn, "SELECT id FROM orders WHERE is_gift = %s LIMIT 10", (0,))
    run(
        conn,
        "SELECT o.id FROM customers c JOIN orders o ON o.customer_id = c.id "
        "WHERE c.id = %s AND o.status = 'done'",
        (7,),
    )
