"""psycopg 3 workloads for the request and timing detectors: each scenario runs a planted
problem next to its look-alike control, tagged the way sqlcommenter (Django) and Rails'
QueryLogs tag requests.

Usage: request_workloads.py CONNINFO SCENARIO
SCENARIO: writes | budget | idle | slow
Prints one line per step and exits non-zero on the first failure.
"""

import sys
import time

import psycopg

conninfo, scenario = sys.argv[1], sys.argv[2]


def django(request, route):
    # No URL-encoded version (`django%3A4.2`): psycopg would read `%3` as a placeholder.
    return f"/*framework='django',request_id='{request}',route='{route}'*/"


def rails(controller, action, request):
    return f"/*application:Shop,controller:{controller},action:{action},request_id:{request}*/"


def check(label, got, expected):
    if got != expected:
        sys.exit(f"FAIL {label}: got {got!r}, expected {expected!r}")
    print(f"ok {label}")


def writes():
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Planted: one INSERT per item, each its own round trip (Django save() in a loop).
        t = django("w-loop", "cart.save")
        for i in range(8):
            conn.execute(
                f"INSERT INTO cart_items (cart_id, sku) VALUES (%s, %s) {t}", (1, f"loop-{i}")
            )
        # Planted: one UPDATE per item (Rails update in a loop).
        t = rails("carts", "update", "w-update")
        ids = [r[0] for r in conn.execute(f"SELECT id FROM cart_items WHERE cart_id = 1 {t}")]
        for item in ids[:6]:
            conn.execute(f"UPDATE cart_items SET qty = qty + 1 WHERE id = %s {t}", (item,))
        # Control: the same rows in one set-based INSERT.
        t = django("w-bulk", "cart.save_bulk")
        rows = [(2, f"bulk-{i}") for i in range(8)]
        values = ", ".join(["(%s, %s)"] * len(rows))
        params = [v for row in rows for v in row]
        conn.execute(f"INSERT INTO cart_items (cart_id, sku) VALUES {values} {t}", params)
        # Control: three single inserts.
        t = django("w-three", "cart.save_three")
        for i in range(3):
            conn.execute(
                f"INSERT INTO cart_items (cart_id, sku) VALUES (%s, %s) {t}", (3, f"three-{i}")
            )
        # Control: executemany, which psycopg pipelines (one round trip for the batch).
        t = django("w-many", "cart.save_many")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO cart_items (cart_id, sku) VALUES (%s, %s) {t}",
                [(4, f"many-{i}") for i in range(40)],
            )
        # Control: a SELECT whose WITH clause writes, in a loop: a write, so never a read
        # N+1 child (and its command tag counts returned rows, so not judged as a write).
        t = django("w-cte", "cart.touch")
        for cart in range(1, 7):
            conn.execute(
                f"WITH touched AS (UPDATE carts SET owner = owner WHERE id = %s RETURNING id) "
                f"SELECT id FROM touched {t}",
                (cart,),
            ).fetchone()
        # Reads: a read N+1 stays an n_plus_one.
        t = django("w-reads", "cart.show")
        for cart in range(1, 7):
            conn.execute(f"SELECT id, owner FROM carts WHERE id = %s {t}", (cart,)).fetchone()
        count = conn.execute("SELECT count(*) FROM cart_items").fetchone()[0]
        check("rows written", count, 8 + 8 + 3 + 40)


def budget():
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Planted: a dashboard of 14 widgets, four settings each: 56 statements, no single
        # shape an N+1 (four distinct keys) or a repeated query.
        t = django("b-full", "dashboard.full")
        for widget in range(14):
            for key in range(1, 5):
                conn.execute(
                    f"SELECT value AS widget_{widget} FROM settings WHERE key = %s {t}",
                    (f"key{key}",),
                ).fetchone()
        # Control: 30 statements, each in its own transaction: the 30 BEGIN/COMMIT pairs
        # are not counted, so 30 is within the budget of 50.
        t = django("b-compact", "dashboard.compact")
        for widget in range(8):
            for key in range(1, 5):
                if widget * 4 + key > 30:
                    break
                with conn.transaction():
                    conn.execute(
                        f"SELECT value AS widget_{widget} FROM settings WHERE key = %s {t}",
                        (f"key{key}",),
                    ).fetchone()
    print("ok budget")


def idle():
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Planted: the order row is locked, then a 1.3 s call to a payment API.
        t = django("i-pay", "orders.pay")
        with conn.transaction():
            conn.execute(f"SELECT id, total FROM orders WHERE id = %s FOR UPDATE {t}", (7,))
            time.sleep(1.3)
            conn.execute(f"UPDATE orders SET paid = true WHERE id = %s {t}", (7,))
        # Control: the same transaction without the call.
        t = django("i-quick", "orders.pay_quick")
        with conn.transaction():
            conn.execute(f"SELECT id, total FROM orders WHERE id = %s FOR UPDATE {t}", (8,))
            conn.execute(f"UPDATE orders SET paid = true WHERE id = %s {t}", (8,))
        # Control: a long pause outside any transaction.
        t = django("i-pause", "orders.list")
        conn.execute(f"SELECT count(*) FROM orders {t}").fetchone()
        time.sleep(1.3)
        conn.execute(f"SELECT count(*) FROM orders WHERE paid {t}").fetchone()
    # Planted: a non-autocommit connection (psycopg's default) reads, then sits in its
    # transaction until it is closed.
    abandoned = psycopg.connect(conninfo)
    t = django("i-abandon", "cart.abandon")
    abandoned.execute(f"SELECT id, owner FROM carts WHERE id = %s {t}", (5,)).fetchone()
    time.sleep(1.5)
    abandoned.close()
    print("ok idle")


def slow():
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Planted: a report query that takes about 150 ms every time.
        for day in range(4):
            t = django(f"s-report-{day}", "reports.daily")
            conn.execute(
                f"SELECT pg_sleep(0.15)::text, count(*) FROM orders WHERE id > %s {t}", (day,)
            ).fetchone()
        # Control: fast primary-key lookups, one per request.
        for order in range(1, 31):
            t = django(f"s-show-{order}", "orders.show")
            conn.execute(f"SELECT id, total FROM orders WHERE id = %s {t}", (order,)).fetchone()
    print("ok slow")


{"writes": writes, "budget": budget, "idle": idle, "slow": slow}[scenario]()
