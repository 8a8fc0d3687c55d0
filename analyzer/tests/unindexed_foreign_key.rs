//! `unindexed_foreign_key`: foreign keys without an index on the
//! referencing columns, reported when a statement exercises them.

mod unindexed_support;

use qproxy_analyzer::catalog::{Catalog, Index, Table};
use qproxy_analyzer::detect::unindexed::UnindexedForeignKeyDetails;
use qproxy_analyzer::finding::{FindingKind, Severity};
use unindexed_support::{all_found_in, all_in, of_kind, shop};

fn found(sql: &str) -> Vec<String> {
    all_found_in(&shop(), sql)
}

fn details(catalog: &Catalog, sql: &str) -> UnindexedForeignKeyDetails {
    let issues = of_kind(all_in(catalog, sql), FindingKind::UnindexedForeignKey);
    assert_eq!(issues.len(), 1, "{sql}");
    serde_json::from_value(serde_json::Value::Object(issues[0].details.clone())).unwrap()
}

/// The shop with `orders.user_id` indexed by `index`.
fn shop_with(index: Index) -> Catalog {
    let mut catalog = shop();
    let orders = catalog
        .tables()
        .find(|t| t.name == "orders")
        .cloned()
        .unwrap();
    catalog.insert(orders.index(index));
    catalog
}

#[test]
fn deleting_referenced_rows_exercises_the_key() {
    let sql = "DELETE FROM users WHERE id = $1";
    assert_eq!(
        found(sql),
        ["unindexed_foreign_key public.orders (user_id)"]
    );
    let issue = &all_in(&shop(), sql)[0];
    assert_eq!(
        issue.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (user_id);"
    );
    assert_eq!(issue.severity, Severity::Error, "2M referencing rows");
    let d = details(&shop(), sql);
    assert_eq!(d.constraint, "orders_user_id_fkey");
    assert_eq!(d.referenced_table, "public.users");
    assert_eq!(d.referenced_columns, ["id"]);
    assert_eq!(d.exercised_by, "delete");
    assert_eq!(d.rows_estimate, 2_000_000);
    // Qualified, aliased, with USING: the target is still users.
    assert_eq!(
        found("DELETE FROM public.users u USING products p WHERE u.id = p.id"),
        ["unindexed_foreign_key public.orders (user_id)"]
    );
}

#[test]
fn updating_the_referenced_key_exercises_it_other_columns_do_not() {
    assert_eq!(
        details(&shop(), "UPDATE users SET id = $1 WHERE id = $2").exercised_by,
        "update_key"
    );
    assert!(found("UPDATE users SET email = $1 WHERE id = $2").is_empty());
}

#[test]
fn a_join_on_the_key_exercises_it_beside_the_filter_finding() {
    let sql = "SELECT o.* FROM users u JOIN orders o ON o.user_id = u.id WHERE u.email = $1";
    assert_eq!(
        found(sql),
        [
            "filter public.orders (user_id)",
            "unindexed_foreign_key public.orders (user_id)"
        ]
    );
    assert_eq!(details(&shop(), sql).exercised_by, "join");
    // A filter by the key column alone is not the constraint at work.
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id = $1"),
        ["filter public.orders (user_id)"]
    );
    // A join the orders side drives does not need the key's index.
    assert!(
        found("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = $1").is_empty()
    );
}

#[test]
fn an_index_leading_with_the_key_serves_it() {
    let delete = "DELETE FROM users WHERE id = $1";
    for index in [
        Index::btree("orders_user", &["user_id"]),
        Index::btree("orders_user_created", &["user_id", "created_at"]),
        Index::btree("orders_live_user", &["user_id"]).partial("(user_id IS NOT NULL)"),
        Index::hash("orders_user_hash", "user_id"),
    ] {
        let name = index.name.clone();
        assert!(
            all_found_in(&shop_with(index), delete).is_empty(),
            "{name} serves the lookup"
        );
    }
    for index in [
        Index::btree("orders_created_user", &["created_at", "user_id"]),
        Index::btree("orders_user", &["user_id"]).invalid(),
        Index::btree("orders_paid_user", &["user_id"]).partial("(status = 'paid'::text)"),
    ] {
        let name = index.name.clone();
        assert_eq!(
            all_found_in(&shop_with(index), delete),
            ["unindexed_foreign_key public.orders (user_id)"],
            "{name} does not serve the lookup"
        );
    }
}

#[test]
fn small_referencing_tables_and_unreferenced_tables_are_left_alone() {
    let catalog = shop().with_table(Table::new("reviews", 900).primary_key(&["id"]).foreign_key(
        &["product_id"],
        "public.products",
        &["id"],
    ));
    assert!(all_found_in(&catalog, "DELETE FROM products WHERE id = $1").is_empty());
    assert!(found("DELETE FROM orders WHERE id = $1").is_empty());
    assert!(found("DELETE FROM sessions WHERE id = $1").is_empty());
}

#[test]
fn composite_keys_need_every_column() {
    let catalog = Catalog::new()
        .with_table(Table::new("regions", 100).primary_key(&["country", "code"]))
        .with_table(
            Table::new("stores", 200_000)
                .primary_key(&["id"])
                .foreign_key(
                    &["country", "region"],
                    "public.regions",
                    &["country", "code"],
                ),
        );
    assert_eq!(
        all_found_in(&catalog, "DELETE FROM regions WHERE country = $1"),
        ["unindexed_foreign_key public.stores (country, region)"]
    );
    assert_eq!(
        all_in(&catalog, "UPDATE regions SET code = $1 WHERE code = $2")[0].suggestion,
        "CREATE INDEX CONCURRENTLY ON public.stores (country, region);"
    );
}
