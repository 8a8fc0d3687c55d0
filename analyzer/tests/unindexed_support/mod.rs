//! A shop schema and one-line helpers, so each unindexed-detector test is
//! a statement and the findings it should produce.
#![allow(dead_code)]

use qproxy_analyzer::catalog::{Catalog, Index, Table};
use qproxy_analyzer::detect::unindexed::{analyze, UnindexedConfig, UnindexedIssue};
use qproxy_analyzer::finding::FindingKind;

/// The schema most tests run against:
/// - `users` (50k): pk id, unique email, partial index on org_id for live
///   rows, expression index on lower(name).
/// - `orders` (2M): pk id, index created_at, FK user_id → users without an
///   index (the classic).
/// - `line_items` (5M): pk id, composite (order_id, product_id).
/// - `products` (800): small.
/// - `audit.events` (300k): nothing but a brin on created_at; not on the
///   search path.
/// - `app_user` (20k, Django's naming), `sessions` (400k, hash on token).
pub fn shop() -> Catalog {
    Catalog::new()
        .with_table(
            Table::new("users", 50_000)
                .primary_key(&["id"])
                .columns(&[
                    "email",
                    "name",
                    "status",
                    "org_id",
                    "deleted_at",
                    "created_at",
                ])
                .index(Index::btree("users_email_key", &["email"]).unique())
                .index(Index::btree("users_live_org", &["org_id"]).partial("(deleted_at IS NULL)"))
                .index(Index::btree("users_lower_name", &["(lower((name)::text))"])),
        )
        .with_table(
            Table::new("orders", 2_000_000)
                .primary_key(&["id"])
                .columns(&["user_id", "status", "total", "created_at", "note"])
                .index(Index::btree("orders_created_at", &["created_at"]))
                .foreign_key(&["user_id"], "public.users", &["id"]),
        )
        .with_table(
            Table::new("line_items", 5_000_000)
                .primary_key(&["id"])
                .columns(&["order_id", "product_id", "qty", "sku"])
                .index(Index::btree(
                    "line_items_order_product",
                    &["order_id", "product_id"],
                )),
        )
        .with_table(
            Table::new("products", 800)
                .primary_key(&["id"])
                .columns(&["name", "sku", "price"]),
        )
        .with_table(
            Table::new("audit.events", 300_000)
                .columns(&["kind", "created_at", "payload", "actor_id"])
                .index(
                    Index::btree("events_created_brin", &["created_at"])
                        .using(qproxy_analyzer::catalog::IndexMethod::Brin),
                ),
        )
        .with_table(
            Table::new("app_user", 20_000)
                .primary_key(&["id"])
                .columns(&["username", "date_joined", "is_active"]),
        )
        .with_table(
            Table::new("sessions", 400_000)
                .primary_key(&["id"])
                .columns(&["token", "user_id", "expires_at"])
                .index(Index::hash("sessions_token_hash", "token")),
        )
}

/// `kind table (columns)` per issue, e.g.
/// `filter public.orders (user_id)` / `sort public.orders (created_at)`;
/// an issue held back as unselective reads `withheld filter ...`.
pub fn describe(issues: &[UnindexedIssue]) -> Vec<String> {
    issues
        .iter()
        .map(|i| {
            let kind = match i.kind {
                FindingKind::UnindexedFilter => "filter",
                FindingKind::UnindexedSort => "sort",
                other => other.as_str(),
            };
            let held = if i.withheld.is_some() {
                "withheld "
            } else {
                ""
            };
            format!("{held}{kind} {} ({})", i.table, i.columns.join(", "))
        })
        .collect()
}

/// Issues of `sql` against `catalog` with the default thresholds.
pub fn issues_in(catalog: &Catalog, sql: &str) -> Vec<UnindexedIssue> {
    analyze(sql, catalog, &UnindexedConfig::default())
}

/// [`describe`] of the issues of `sql` against [`shop`].
pub fn found(sql: &str) -> Vec<String> {
    describe(&issues_in(&shop(), sql))
}

/// [`describe`] of the issues of `sql` against `catalog`.
pub fn found_in(catalog: &Catalog, sql: &str) -> Vec<String> {
    describe(&issues_in(catalog, sql))
}

/// Asserts that `sql` yields nothing against [`shop`].
#[track_caller]
pub fn clean(sql: &str) {
    assert_eq!(
        found(sql),
        Vec::<String>::new(),
        "expected no issues for {sql}"
    );
}

/// Every issue [`analyze_statement`](qproxy_analyzer::detect::unindexed::analyze_statement)
/// finds in `sql` against `catalog` (all kinds), with the default thresholds.
pub fn all_in(catalog: &Catalog, sql: &str) -> Vec<UnindexedIssue> {
    qproxy_analyzer::detect::unindexed::analyze_statement(sql, catalog, &UnindexedConfig::default())
}

/// [`describe`] of [`all_in`].
pub fn all_found_in(catalog: &Catalog, sql: &str) -> Vec<String> {
    describe(&all_in(catalog, sql))
}

/// The issues of one kind.
pub fn of_kind(issues: Vec<UnindexedIssue>, kind: FindingKind) -> Vec<UnindexedIssue> {
    issues.into_iter().filter(|i| i.kind == kind).collect()
}
