//! Join keys: a large table must be reachable through an index, either by
//! its own filter or through its join key from a table that is.

mod unindexed_support;

use unindexed_support::{clean, found};

#[test]
fn foreign_key_without_index_on_the_inner_side() {
    assert_eq!(
        found("SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1"),
        ["filter public.orders (user_id)"]
    );
    // Join key written in WHERE.
    assert_eq!(
        found("SELECT * FROM users u, orders o WHERE o.user_id = u.id AND u.email = $1"),
        ["filter public.orders (user_id)"]
    );
}

#[test]
fn driving_from_the_indexed_side_is_fine() {
    clean("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = $1");
    clean("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.created_at > $1");
    clean("SELECT * FROM orders o JOIN line_items li ON li.order_id = o.id WHERE o.id = $1");
}

#[test]
fn unfiltered_joins_read_everything_anyway() {
    clean("SELECT * FROM orders o JOIN users u ON u.id = o.user_id");
    clean("SELECT count(*) FROM orders o JOIN line_items li ON li.order_id = o.id");
}

#[test]
fn both_sides_unreachable() {
    assert_eq!(
        found("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE u.status = $1"),
        [
            "filter public.orders (user_id)",
            "filter public.users (status)"
        ]
    );
}

#[test]
fn filters_and_join_keys_combine() {
    assert_eq!(
        found("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE u.email = $1 AND o.status = $2"),
        ["filter public.orders (user_id, status)"]
    );
    assert_eq!(
        found("SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id AND o.status = 'paid' WHERE u.id = $1"),
        ["filter public.orders (user_id, status)"]
    );
}

#[test]
fn small_tables_drive_joins() {
    assert_eq!(
        found(
            "SELECT * FROM products p JOIN line_items li ON li.product_id = p.id WHERE p.sku = $1"
        ),
        ["filter public.line_items (product_id)"]
    );
}

#[test]
fn chains_report_the_first_missing_link_only() {
    // line_items.order_id is indexed: once orders is reachable, so is it.
    assert_eq!(
        found("SELECT * FROM users u JOIN orders o ON o.user_id = u.id JOIN line_items li ON li.order_id = o.id WHERE u.email = $1"),
        ["filter public.orders (user_id)"]
    );
    // orders.id is the primary key: orders follows once line_items is fixed.
    assert_eq!(
        found("SELECT * FROM line_items li JOIN orders o ON o.id = li.order_id WHERE li.sku = $1"),
        ["filter public.line_items (sku)"]
    );
}

#[test]
fn batched_lookups_through_unnest_or_values() {
    assert_eq!(
        found("SELECT o.* FROM unnest($1::bigint[]) AS k(id) JOIN orders o ON o.user_id = k.id"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT o.* FROM orders o JOIN (VALUES (1), (2)) AS v(id) ON o.user_id = v.id"),
        ["filter public.orders (user_id)"]
    );
    clean("SELECT o.* FROM orders o JOIN (VALUES (1), (2)) AS v(id) ON o.id = v.id");
}

#[test]
fn a_subquery_read_whole_drives_nothing() {
    assert_eq!(
        found("WITH everyone AS (SELECT id FROM users) SELECT * FROM everyone e JOIN orders o ON o.user_id = e.id WHERE o.note = $1"),
        ["filter public.orders (note)"]
    );
}

#[test]
fn self_joins() {
    assert_eq!(
        found("SELECT * FROM orders a JOIN orders b ON b.user_id = a.user_id WHERE a.id = $1"),
        ["filter public.orders (user_id)"]
    );
}
