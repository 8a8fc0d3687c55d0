//! Joins whose WHERE filters several tables: every table occurrence's own
//! filter is judged, with the join-reachability rules (a large table the
//! planner reaches through an indexed join key from an indexed, small or
//! selective driver is not reported).

mod unindexed_support;

use qproxy_analyzer::catalog::{Catalog, Index, Table};
use unindexed_support::found_in;

/// `customers` (100k): pk id, nothing on created_at or region.
/// `orders` (2M): pk id, an index on its foreign key customer_id, nothing
/// on status or total. `regions` (50): small.
fn shop(with_fk_index: bool) -> Catalog {
    let mut orders = Table::new("orders", 2_000_000)
        .primary_key(&["id"])
        .columns(&["status", "total", "created_at"])
        .typed_column("customer_id", "bigint")
        .foreign_key(&["customer_id"], "public.customers", &["id"]);
    if with_fk_index {
        orders = orders.index(Index::btree("orders_customer_id", &["customer_id"]));
    }
    Catalog::new()
        .with_table(
            Table::new("customers", 100_000)
                .primary_key(&["id"])
                .columns(&["created_at", "region_code", "name"]),
        )
        .with_table(orders)
        .with_table(
            Table::new("regions", 50)
                .primary_key(&["id"])
                .columns(&["code", "label"]),
        )
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[track_caller]
fn both(sql: &str, expected: &[&str]) {
    assert_eq!(sorted(found_in(&shop(true), sql)), expected, "{sql}");
}

const BOTH: [&str; 2] = [
    "filter public.customers (created_at)",
    "filter public.orders (status)",
];

#[test]
fn each_table_of_a_join_gets_its_own_filter_judged() {
    // Both join keys are indexed (the primary key, the foreign key index),
    // so each table would be reached from the other, but neither filter
    // is indexed: one of them must drive, by a sequential scan today.
    both(
        "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE c.created_at > $1 AND o.status = $2",
        &BOTH,
    );
    // Predicates in ON count the same.
    both(
        "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id AND o.status = $2 \
         WHERE c.created_at > $1",
        &BOTH,
    );
}

#[test]
fn implicit_joins_aliases_and_bare_names() {
    both(
        "SELECT * FROM orders o, customers c \
         WHERE o.customer_id = c.id AND c.created_at > $1 AND o.status = $2",
        &BOTH,
    );
    both(
        "SELECT * FROM orders JOIN customers ON customers.id = orders.customer_id \
         WHERE customers.created_at > $1 AND orders.status = $2",
        &BOTH,
    );
    both(
        "SELECT * FROM public.orders AS ord INNER JOIN public.customers AS cust \
         ON cust.id = ord.customer_id WHERE cust.created_at > $1 AND ord.status = $2",
        &BOTH,
    );
    // Unqualified columns that only one table has.
    assert_eq!(
        sorted(found_in(
            &shop(true),
            "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id \
             WHERE region_code = $1 AND status = $2"
        )),
        [
            "filter public.customers (region_code)",
            "filter public.orders (status)"
        ]
    );
}

#[test]
fn a_missing_join_key_index_joins_the_filter() {
    // orders.customer_id has no index: orders needs it to be reached from
    // customers, and customers still needs its own filter to drive.
    assert_eq!(
        sorted(found_in(
            &shop(false),
            "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id \
             WHERE c.created_at > $1 AND o.status = $2"
        )),
        [
            "filter public.customers (created_at)",
            "filter public.orders (customer_id, status)"
        ]
    );
}

#[test]
fn self_joins_judge_each_occurrence() {
    assert_eq!(
        sorted(found_in(
            &shop(true),
            "SELECT * FROM orders a JOIN orders b ON b.customer_id = a.customer_id \
             WHERE a.status = $1 AND b.total > $2"
        )),
        [
            "filter public.orders (status)",
            "filter public.orders (total)"
        ]
    );
    // One occurrence driven by its primary key reaches the other through
    // the indexed key: nothing to add.
    assert_eq!(
        found_in(
            &shop(true),
            "SELECT * FROM orders a JOIN orders b ON b.customer_id = a.customer_id \
             WHERE a.id = $1 AND b.total > $2"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn an_indexed_or_small_driver_still_excuses_the_other_side() {
    let none = Vec::<String>::new();
    // The primary key drives; orders follows through its foreign key index
    // and filters status on the way.
    assert_eq!(
        found_in(
            &shop(true),
            "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id \
             WHERE c.id = $1 AND o.status = $2"
        ),
        none
    );
    // A small table drives; customers needs its join key towards it (with
    // its own filter), and orders then follows through its indexed key.
    assert_eq!(
        found_in(
            &shop(true),
            "SELECT * FROM regions r JOIN customers c ON c.region_code = r.code \
             JOIN orders o ON o.customer_id = c.id \
             WHERE r.label = $1 AND c.created_at > $2"
        ),
        ["filter public.customers (region_code, created_at)"]
    );
}

#[test]
fn a_table_without_a_filter_of_its_own_follows_its_partner() {
    // customers is reached through its primary key once orders is indexed.
    assert_eq!(
        found_in(
            &shop(true),
            "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = $1"
        ),
        ["filter public.orders (status)"]
    );
}
