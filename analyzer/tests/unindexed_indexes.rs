//! Which indexes serve which predicates: composite prefixes, partial and
//! expression indexes, access methods, validity.

mod unindexed_support;

use qproxy_analyzer::catalog::{Catalog, Index, IndexMethod, Table};
use unindexed_support::{clean, found, found_in};

/// One 100k-row table `t(a, b, c, d)` with the given indexes.
fn t(indexes: Vec<Index>) -> Catalog {
    let mut table = Table::new("t", 100_000).columns(&["a", "b", "c", "d"]);
    for i in indexes {
        table = table.index(i);
    }
    Catalog::new().with_table(table)
}

fn served(catalog: &Catalog, sql: &str) -> bool {
    found_in(catalog, sql).is_empty()
}

#[test]
fn composite_btree_needs_its_leading_column() {
    let c = t(vec![Index::btree("t_abc", &["a", "b", "c"])]);
    assert!(served(&c, "SELECT * FROM t WHERE a = $1"));
    assert!(served(
        &c,
        "SELECT * FROM t WHERE a = $1 AND b = $2 AND c > $3"
    ));
    assert!(served(&c, "SELECT * FROM t WHERE a > $1 AND c = $2"));
    assert!(served(&c, "SELECT * FROM t WHERE a IS NULL"));
    assert!(!served(&c, "SELECT * FROM t WHERE b = $1"));
    assert!(!served(&c, "SELECT * FROM t WHERE b = $1 AND c = $2"));
    assert_eq!(
        found_in(&c, "SELECT * FROM t WHERE c = $1 AND b = $2"),
        ["filter public.t (c, b)"]
    );
}

#[test]
fn hash_serves_single_column_equality_only() {
    let c = t(vec![Index::hash("t_a_hash", "a")]);
    assert!(served(&c, "SELECT * FROM t WHERE a = $1"));
    assert!(served(&c, "SELECT * FROM t WHERE a IN ($1, $2)"));
    assert!(!served(&c, "SELECT * FROM t WHERE a > $1"));
    assert!(!served(&c, "SELECT * FROM t WHERE a IS NULL"));
    assert!(!served(&c, "SELECT * FROM t WHERE a LIKE 'x%'"));
    let multi = t(vec![
        Index::btree("t_ab_hash", &["a", "b"]).using(IndexMethod::Hash)
    ]);
    assert!(!served(&multi, "SELECT * FROM t WHERE a = $1 AND b = $2"));
    // The shop's sessions table has a hash index on token.
    clean("SELECT * FROM sessions WHERE token = $1");
    assert_eq!(
        found("SELECT * FROM sessions WHERE token > $1"),
        ["filter public.sessions (token)"]
    );
}

#[test]
fn brin_serves_ranges_on_any_key() {
    let c = t(vec![
        Index::btree("t_brin", &["a", "b"]).using(IndexMethod::Brin)
    ]);
    assert!(served(&c, "SELECT * FROM t WHERE b BETWEEN $1 AND $2"));
    assert!(!served(&c, "SELECT * FROM t WHERE c = $1"));
    clean("SELECT * FROM audit.events WHERE created_at > now() - interval '1 hour'");
}

#[test]
fn gin_and_gist_serve_prefix_like_only_with_trigrams() {
    let trgm = t(vec![
        Index::btree("t_a_trgm", &["a gin_trgm_ops"]).using(IndexMethod::Gin)
    ]);
    assert!(served(&trgm, "SELECT * FROM t WHERE a LIKE 'abc%'"));
    assert!(!served(&trgm, "SELECT * FROM t WHERE a = $1"));
    let plain_gin = t(vec![Index::btree("t_a_gin", &["a"]).using(IndexMethod::Gin)]);
    assert!(!served(&plain_gin, "SELECT * FROM t WHERE a LIKE 'abc%'"));
    let spgist = t(vec![
        Index::btree("t_a_sp", &["a"]).using(IndexMethod::Other)
    ]);
    assert!(!served(&spgist, "SELECT * FROM t WHERE a = $1"));
}

#[test]
fn prefix_like_and_collation() {
    let plain = t(vec![Index::btree("t_a", &["a"])]);
    assert!(served(&plain, "SELECT * FROM t WHERE a LIKE 'abc%'"));
    let linguistic = t(vec![Index::btree("t_a", &["a"])]).with_collation("en_US.UTF-8");
    assert!(!served(&linguistic, "SELECT * FROM t WHERE a LIKE 'abc%'"));
    assert!(served(&linguistic, "SELECT * FROM t WHERE a > $1"));
    let pattern =
        t(vec![Index::btree("t_a_pat", &["a text_pattern_ops"])]).with_collation("en_US.UTF-8");
    assert!(served(&pattern, "SELECT * FROM t WHERE a LIKE 'abc%'"));
    assert!(served(&pattern, "SELECT * FROM t WHERE a = $1"));
    assert!(!served(&pattern, "SELECT * FROM t WHERE a > $1"));
}

#[test]
fn invalid_indexes_do_not_count() {
    let c = t(vec![Index::btree("t_a", &["a"]).invalid()]);
    assert!(!served(&c, "SELECT * FROM t WHERE a = $1"));
}

#[test]
fn partial_index_counts_only_when_implied() {
    // users_live_org: (org_id) WHERE deleted_at IS NULL
    clean("SELECT * FROM users WHERE org_id = $1 AND deleted_at IS NULL");
    clean(r#"SELECT * FROM "users" u WHERE u."deleted_at" IS NULL AND u.org_id = ANY($1)"#);
    assert_eq!(
        found("SELECT * FROM users WHERE org_id = $1"),
        ["filter public.users (org_id)"]
    );
    assert_eq!(
        found("SELECT * FROM users WHERE org_id = $1 AND deleted_at > $2"),
        ["filter public.users (org_id, deleted_at)"]
    );
}

#[test]
fn partial_index_implication_forms() {
    let c = t(vec![
        Index::btree("t_a_active", &["a"]).partial("((b)::text = 'active'::text)"),
        Index::btree("t_c_present", &["c"]).partial("(d IS NOT NULL)"),
    ]);
    assert!(served(&c, "SELECT * FROM t WHERE a = $1 AND b = 'active'"));
    assert!(!served(
        &c,
        "SELECT * FROM t WHERE a = $1 AND b = 'archived'"
    ));
    assert!(
        !served(&c, "SELECT * FROM t WHERE a = $1 AND b = $2"),
        "a parameter may be anything"
    );
    assert!(
        served(&c, "SELECT * FROM t WHERE c = $1 AND d = $2"),
        "equality implies NOT NULL"
    );
    assert!(served(&c, "SELECT * FROM t WHERE c = $1 AND d IS NOT NULL"));
    assert!(!served(&c, "SELECT * FROM t WHERE c = $1"));
    // NOT NULL columns satisfy IS NOT NULL predicates by themselves.
    let not_null = Catalog::new().with_table(
        Table::new("t", 100_000)
            .primary_key(&["d"])
            .columns(&["c"])
            .index(Index::btree("t_c_present", &["c"]).partial("d IS NOT NULL")),
    );
    assert!(served(&not_null, "SELECT * FROM t WHERE c = $1"));
}

#[test]
fn expression_indexes_serve_the_same_expression() {
    // users_lower_name: (lower((name)::text))
    clean("SELECT * FROM users WHERE lower(name) = $1");
    clean("SELECT * FROM users u WHERE LOWER(u.name) = lower($1)");
    // A different function of the column: not reported (non-sargable), not served.
    clean("SELECT * FROM users WHERE upper(name) = $1");
    // The plain column is not served by the expression index.
    assert_eq!(
        found("SELECT * FROM users WHERE name = $1"),
        ["filter public.users (name)"]
    );
}

#[test]
fn primary_keys_and_unique_constraints_are_indexes() {
    clean("SELECT * FROM orders WHERE id = $1");
    clean("SELECT * FROM users WHERE email = $1");
    clean("DELETE FROM line_items WHERE id = ANY($1)");
    clean("SELECT * FROM line_items WHERE order_id = $1");
    assert_eq!(
        found("SELECT * FROM line_items WHERE product_id = $1"),
        ["filter public.line_items (product_id)"]
    );
}
