"""Driver shapes that once fooled the detectors, run through the proxy: results streamed in
chunks (asyncpg cursors, psycopg and SQLAlchemy server-side cursors), an untagged loop that never
goes quiet, and an untagged transaction with an N+1.

Usage: accuracy_workloads.py CONNINFO SCENARIO
SCENARIO: asyncpg | psycopg_named | sqlalchemy_stream | tight_loop | transaction_n_plus_one
Prints one line per step and exits non-zero on the first failure.
"""

import asyncio
import sys

conninfo, scenario = sys.argv[1], sys.argv[2]
EXPORT_ROWS = 50_000


def check(label, got, expected):
    if got != expected:
        sys.exit(f"FAIL {label}: got {got!r}, expected {expected!r}")
    print(f"ok {label}")


async def asyncpg_shapes():
    import asyncpg

    conn = await asyncpg.connect(conninfo)
    try:
        # Iterating a cursor with prefetch: Execute(portal, 1000) until the end.
        async with conn.transaction():
            n = 0
            async for _ in conn.cursor("SELECT id, payload FROM export_rows", prefetch=1000):
                n += 1
        check("asyncpg cursor iteration", n, EXPORT_ROWS)
        # A cursor object fetched by hand in chunks of 1,000.
        async with conn.transaction():
            cur = await conn.cursor("SELECT id FROM export_rows")
            n = 0
            while True:
                rows = await cur.fetch(1000)
                if not rows:
                    break
                n += len(rows)
        check("asyncpg cursor.fetch", n, EXPORT_ROWS)
        # A cursor abandoned after 2,500 rows: the COMMIT ends its portal (3 chunks fetched).
        async with conn.transaction():
            n = 0
            async for _ in conn.cursor("SELECT payload FROM export_rows", prefetch=1000):
                n += 1
                if n == 2_500:
                    break
        check("asyncpg cursor stopped early", n, 2_500)
        # A plain fetch: one Execute without a limit.
        rows = await conn.fetch("SELECT id, payload, id + 1 AS next_id FROM export_rows")
        check("asyncpg fetch", len(rows), EXPORT_ROWS)
    finally:
        await conn.close()


def psycopg_named():
    import psycopg

    with psycopg.connect(conninfo) as conn:
        # A named (server-side) cursor iterated: DECLARE, FETCH FORWARD itersize, ..., CLOSE.
        with conn.cursor(name="export_iter") as cur:
            cur.itersize = 1000
            cur.execute("SELECT id, payload, id * 2 AS twice FROM export_rows")
            n = sum(1 for _ in cur)
        conn.commit()
        check("psycopg named cursor iteration", n, EXPORT_ROWS)
        with conn.cursor(name="export_many") as cur:
            cur.execute("SELECT payload, id FROM export_rows")
            n = 0
            while rows := cur.fetchmany(1000):
                n += len(rows)
        conn.commit()
        check("psycopg named cursor fetchmany", n, EXPORT_ROWS)


def sqlalchemy_stream():
    from sqlalchemy import create_engine, text

    url = conninfo.replace("postgres://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    with engine.connect() as c:
        result = c.execution_options(yield_per=1000).execute(
            text("SELECT id, payload, id - 1 AS prev_id FROM export_rows")
        )
        n = sum(1 for _ in result)
    engine.dispose()
    check("sqlalchemy yield_per", n, EXPORT_ROWS)


def tight_loop():
    import psycopg

    # A batch worker: untagged lookups back to back, no transaction, no pause.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = 0
        for i in range(1, 15_001):
            row = conn.execute("SELECT id, payload FROM export_rows WHERE id = %s", (i,)).fetchone()
            found += row is not None
    check("tight loop lookups", found, 15_000)


def transaction_n_plus_one():
    import psycopg

    # The first traffic to this database: the transaction ends long before the proxy's
    # catalog load for it does.
    with psycopg.connect(conninfo) as conn:
        orders = conn.execute("SELECT id, customer_id FROM orders WHERE id <= 8").fetchall()
        names = [
            conn.execute("SELECT id, name FROM customers WHERE id = %s", (c,)).fetchone()
            for _, c in orders
        ]
        conn.commit()
    check("customers loaded one by one", len(names), 8)


SCENARIOS = {
    "asyncpg": lambda: asyncio.run(asyncpg_shapes()),
    "psycopg_named": psycopg_named,
    "sqlalchemy_stream": sqlalchemy_stream,
    "tight_loop": tight_loop,
    "transaction_n_plus_one": transaction_n_plus_one,
}

SCENARIOS[scenario]()
