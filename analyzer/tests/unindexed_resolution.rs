//! Aliases, CTEs, subqueries, schema qualification and the SQL ORMs write:
//! every column must land on the right table.

mod unindexed_support;

use qproxy_analyzer::catalog::{Catalog, Index, Table};
use unindexed_support::{clean, found, found_in, shop};

#[test]
fn hibernate_aliases() {
    assert_eq!(
        found("select u1_0.id,u1_0.email,u1_0.name from users u1_0 where u1_0.status=?"),
        Vec::<String>::new(),
        "JDBC `?` placeholders do not parse as PostgreSQL; nothing is guessed"
    );
    assert_eq!(
        found("select o1_0.id,o1_0.total from orders o1_0 where o1_0.user_id=$1"),
        ["filter public.orders (user_id)"]
    );
    clean("select o1_0.id from orders o1_0 where o1_0.id=$1");
}

#[test]
fn django_quoting() {
    assert_eq!(
        found(
            r#"SELECT "app_user"."id", "app_user"."username" FROM "app_user" WHERE "app_user"."username" = 'bob' LIMIT 21"#
        ),
        ["filter public.app_user (username)"]
    );
    clean(r#"SELECT "app_user"."id" FROM "app_user" WHERE "app_user"."id" = 7 LIMIT 21"#);
}

#[test]
fn rails_style() {
    assert_eq!(
        found(
            r#"SELECT "orders".* FROM "orders" WHERE "orders"."user_id" = $1 /*action='index',controller='orders'*/"#
        ),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found(r#"SELECT "orders".* FROM "orders" WHERE "orders"."user_id" IN ($1, $2, $3)"#),
        ["filter public.orders (user_id)"]
    );
}

#[test]
fn quoted_names_keep_their_case() {
    let catalog = Catalog::new().with_table(
        Table::new("Accounts", 90_000)
            .primary_key(&["Id"])
            .columns(&["Email"]),
    );
    assert_eq!(
        found_in(
            &catalog,
            r#"SELECT * FROM "Accounts" a WHERE a."Email" = $1"#
        ),
        [r#"filter public.Accounts (Email)"#]
    );
    let issue =
        &unindexed_support::issues_in(&catalog, r#"SELECT * FROM "Accounts" WHERE "Email" = $1"#)
            [0];
    assert_eq!(
        issue.suggestion,
        r#"CREATE INDEX CONCURRENTLY ON public."Accounts" ("Email");"#
    );
    // Unquoted names fold to lower case and do not match.
    clean("SELECT * FROM Accounts WHERE Email = $1");
}

#[test]
fn schema_qualified_names_and_search_path() {
    assert_eq!(
        found("SELECT * FROM audit.events e WHERE e.actor_id = $1"),
        ["filter audit.events (actor_id)"]
    );
    assert_eq!(
        found("SELECT * FROM audit.events WHERE audit.events.actor_id = $1"),
        ["filter audit.events (actor_id)"]
    );
    // Not on the search path: an unqualified `events` is some other table.
    clean("SELECT * FROM events WHERE actor_id = $1");
    let with_audit = shop().with_search_path(&["app", "audit", "public"]);
    assert_eq!(
        found_in(&with_audit, "SELECT * FROM events WHERE actor_id = $1"),
        ["filter audit.events (actor_id)"]
    );
    // The first schema on the path that has the name wins.
    let shadowed = with_audit.with_table(Table::new("app.orders", 50).columns(&["user_id"]));
    clean_in(&shadowed, "SELECT * FROM orders WHERE user_id = $1");
    assert_eq!(
        found_in(&shadowed, "SELECT * FROM public.orders WHERE user_id = $1"),
        ["filter public.orders (user_id)"]
    );
}

fn clean_in(catalog: &Catalog, sql: &str) {
    assert_eq!(found_in(catalog, sql), Vec::<String>::new(), "{sql}");
}

#[test]
fn system_tables_are_never_reported() {
    let catalog =
        shop().with_table(Table::new("pg_catalog.pg_class", 1_000_000).columns(&["relname"]));
    clean_in(
        &catalog,
        "SELECT * FROM pg_catalog.pg_class WHERE relname = $1",
    );
    clean_in(
        &catalog,
        "SELECT * FROM information_schema.tables WHERE table_name = $1",
    );
}

#[test]
fn unknown_tables_and_columns_are_ignored() {
    clean("SELECT * FROM no_such_table WHERE x = $1");
    clean("SELECT * FROM orders WHERE no_such_column = $1");
    // Ambiguous unqualified column: PostgreSQL would reject it; nothing guessed.
    clean("SELECT * FROM orders o JOIN users u ON u.id = o.id WHERE status = $1");
}

#[test]
fn unqualified_columns_resolve_to_the_table_that_has_them() {
    assert_eq!(
        found("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE email = $1 AND note = $2"),
        ["filter public.orders (user_id, note)"]
    );
    // `products` is small, so it drives a primary-key lookup into orders.
    clean("SELECT * FROM orders o JOIN products p ON p.id = o.id WHERE name = $1");
}

#[test]
fn cte_names_are_not_tables() {
    let catalog = shop().with_table(Table::new("recent", 1_000_000).columns(&["user_id"]));
    // `recent` is the CTE here, not the big table of the same name.
    clean_in(
        &catalog,
        "WITH recent AS (SELECT * FROM orders WHERE created_at > $1) SELECT * FROM recent WHERE user_id = $2",
    );
    assert_eq!(
        found(
            "WITH mine AS (SELECT * FROM orders WHERE user_id = $1) SELECT * FROM mine ORDER BY id"
        ),
        ["filter public.orders (user_id)"]
    );
}

#[test]
fn joins_to_ctes_and_derived_tables_drive_the_join() {
    assert_eq!(
        found("WITH u AS (SELECT id FROM users WHERE email = $1) SELECT * FROM orders o JOIN u ON o.user_id = u.id"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT * FROM (SELECT id FROM users WHERE email = $1) u JOIN orders o ON o.user_id = u.id"),
        ["filter public.orders (user_id)"]
    );
    clean("SELECT * FROM (SELECT user_id FROM orders WHERE id = $1) x JOIN users u ON u.id = x.user_id");
}

#[test]
fn subqueries_are_their_own_blocks() {
    // Correlated: the outer column is a value for the inner block.
    assert_eq!(
        found("SELECT u.id, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) FROM users u WHERE u.email = $1"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.status = 'paid')"),
        ["filter public.orders (user_id, status)"]
    );
    assert_eq!(
        found("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE note = $1)"),
        ["filter public.orders (note)"]
    );
    // An unqualified name inside the subquery is the inner table's column.
    clean("SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders WHERE id = u.id)");
}

#[test]
fn dml_statements() {
    assert_eq!(
        found("UPDATE orders SET status = 'x' WHERE user_id = $1"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("DELETE FROM orders WHERE user_id = $1"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("DELETE FROM orders o USING users u WHERE o.user_id = u.id AND u.email = $1"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found(
            "UPDATE orders o SET note = u.name FROM users u WHERE u.id = o.user_id AND u.id = $1"
        ),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("INSERT INTO archive SELECT * FROM orders WHERE note = $1"),
        ["filter public.orders (note)"]
    );
    clean("UPDATE orders SET note = $1 WHERE id = $2");
    assert_eq!(
        found("WITH gone AS (DELETE FROM orders WHERE user_id = $1 RETURNING id) SELECT count(*) FROM gone"),
        ["filter public.orders (user_id)"]
    );
}

#[test]
fn union_branches_and_nested_joins() {
    assert_eq!(
        found("SELECT id FROM orders WHERE user_id = $1 UNION ALL SELECT id FROM orders WHERE user_id = $2"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT * FROM users u LEFT JOIN (orders o JOIN line_items li ON li.order_id = o.id) ON o.user_id = u.id WHERE u.id = $1"),
        ["filter public.orders (user_id)"]
    );
}

#[test]
fn join_using_columns() {
    let catalog = Catalog::new()
        .with_table(
            Table::new("a", 100_000)
                .primary_key(&["id"])
                .columns(&["k"]),
        )
        .with_table(
            Table::new("b", 100_000)
                .primary_key(&["id"])
                .columns(&["k", "v"])
                .index(Index::btree("b_v", &["v"])),
        );
    assert_eq!(
        found_in(&catalog, "SELECT * FROM a JOIN b USING (k) WHERE b.v = $1"),
        ["filter public.a (k)"]
    );
}
