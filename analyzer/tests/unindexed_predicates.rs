//! Which predicate forms the unindexed-filter detector reads, and which it
//! deliberately ignores.

mod unindexed_support;

use qproxy_analyzer::catalog::Table;
use unindexed_support::{clean, describe, found, issues_in, shop};

#[test]
fn equality_on_an_unindexed_column() {
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id = 42"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id = $1"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE $1 = user_id"),
        ["filter public.orders (user_id)"]
    );
}

#[test]
fn in_lists_and_any() {
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id IN (1, 2, 3)"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id = ANY($1)"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id = ANY($1::int[])"),
        ["filter public.orders (user_id)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id IN (SELECT id FROM users WHERE email = $1)"),
        ["filter public.orders (user_id)"]
    );
}

#[test]
fn is_null_and_range_forms() {
    assert_eq!(
        found("SELECT * FROM orders WHERE note IS NULL"),
        ["filter public.orders (note)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE total > 100"),
        ["filter public.orders (total)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE total <= $1"),
        ["filter public.orders (total)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE total BETWEEN 10 AND 20"),
        ["filter public.orders (total)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE 100 < total"),
        ["filter public.orders (total)"]
    );
}

#[test]
fn prefix_like_is_a_range_but_leading_wildcards_are_not_reported() {
    assert_eq!(
        found("SELECT * FROM orders WHERE note LIKE 'abc%'"),
        ["filter public.orders (note)"]
    );
    clean("SELECT * FROM orders WHERE note LIKE '%abc%'");
    clean("SELECT * FROM orders WHERE note LIKE '_bc%'");
    // The pattern's value is unknown: not guessed.
    clean("SELECT * FROM orders WHERE note LIKE $1");
    clean("SELECT * FROM orders WHERE note ILIKE 'abc%'");
    clean("SELECT * FROM orders WHERE note NOT LIKE 'abc%'");
}

#[test]
fn prefix_like_under_a_linguistic_collation_suggests_pattern_ops() {
    let catalog = shop().with_collation("en_US.UTF-8");
    let issues = issues_in(&catalog, "SELECT * FROM orders WHERE note LIKE 'abc%'");
    assert_eq!(
        issues[0].suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (note text_pattern_ops);"
    );
}

#[test]
fn equality_then_range_in_the_suggestion() {
    let issues = issues_in(
        &shop(),
        "SELECT * FROM orders WHERE total > $1 AND status = $2 AND note = $3",
    );
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].columns, ["status", "note", "total"]);
    assert_eq!(
        issues[0].suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (status, note, total);"
    );
    // At most one range column: a second cannot narrow a btree scan.
    let issues = issues_in(
        &shop(),
        "SELECT * FROM orders WHERE total > $1 AND note > $2",
    );
    assert_eq!(issues[0].columns, ["total"]);
}

#[test]
fn in_lists_follow_single_values() {
    let issues = issues_in(
        &shop(),
        "SELECT * FROM orders WHERE status IN ($1, $2) AND note = $3",
    );
    assert_eq!(issues[0].columns, ["note", "status"]);
}

#[test]
fn or_is_ignored_unless_every_branch_is_the_same_column() {
    clean("SELECT * FROM orders WHERE user_id = $1 OR note = $2");
    assert_eq!(
        found("SELECT * FROM orders WHERE (user_id = $1 OR user_id = $2 OR user_id IS NULL)"),
        ["filter public.orders (user_id)"]
    );
    // One indexed conjunct is enough for an index scan; the OR is not needed.
    clean("SELECT * FROM orders WHERE created_at > $1 AND (user_id = $2 OR note = $3)");
}

#[test]
fn negations_and_inequalities_are_not_sargable() {
    clean("SELECT * FROM orders WHERE user_id <> $1");
    clean("SELECT * FROM orders WHERE NOT (user_id = $1)");
    clean("SELECT * FROM orders WHERE user_id NOT IN (1, 2)");
    clean("SELECT * FROM orders WHERE note IS NOT NULL");
}

#[test]
fn functions_of_columns_are_not_reported() {
    // Non-sargable predicates are another finding kind, not a btree suggestion.
    clean("SELECT * FROM orders WHERE lower(note) = $1");
    clean("SELECT * FROM orders WHERE date_trunc('day', created_at) = $1 AND total + 1 = $2");
}

#[test]
fn values_may_be_expressions_casts_and_outer_columns() {
    assert_eq!(
        found("SELECT * FROM orders WHERE total > now() - interval '1 day' AND note = $1::text"),
        ["filter public.orders (note, total)"]
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE user_id = CAST($1 AS bigint)"),
        ["filter public.orders (user_id)"]
    );
}

#[test]
fn an_indexed_conjunct_serves_the_whole_filter() {
    clean("SELECT * FROM orders WHERE created_at > $1 AND note = $2");
    clean("SELECT * FROM orders WHERE id = $1");
    clean("SELECT * FROM orders WHERE id = ANY($1)");
    clean("SELECT * FROM users WHERE email = $1");
}

#[test]
fn small_tables_and_unfiltered_scans_are_not_reported() {
    clean("SELECT * FROM products WHERE name = $1");
    clean("SELECT * FROM orders");
    clean("SELECT count(*) FROM orders");
}

#[test]
fn severity_follows_table_size() {
    use qproxy_analyzer::finding::Severity;
    let big = issues_in(&shop(), "SELECT * FROM orders WHERE note = $1");
    assert_eq!(big[0].severity, Severity::Error);
    let medium = issues_in(&shop(), "SELECT * FROM users WHERE status = $1");
    assert_eq!(medium[0].severity, Severity::Warning);
}

#[test]
fn thresholds_are_configurable() {
    use qproxy_analyzer::detect::unindexed::{analyze, UnindexedConfig};
    let strict = UnindexedConfig {
        min_table_rows: 100,
        ..UnindexedConfig::default()
    };
    assert_eq!(
        analyze("SELECT * FROM products WHERE name = $1", &shop(), &strict).len(),
        1
    );
    let lax = UnindexedConfig {
        min_table_rows: 10_000_000,
        ..UnindexedConfig::default()
    };
    assert!(analyze("SELECT * FROM orders WHERE note = $1", &shop(), &lax).is_empty());
}

#[test]
fn details_carry_the_evidence() {
    let issue = &issues_in(
        &shop(),
        "SELECT * FROM orders WHERE user_id = $1 AND total > $2",
    )[0];
    assert_eq!(issue.details["rows_estimate"], 2_000_000);
    assert_eq!(issue.details["predicates"]["equality"][0], "user_id");
    assert_eq!(issue.details["predicates"]["range"][0], "total");
    assert_eq!(issue.details["foreign_key"], "orders_user_id_fkey");
    assert!(issue.details["existing_indexes"].as_array().unwrap().len() >= 2);
}

#[test]
fn garbage_and_other_statements_yield_nothing() {
    clean("SELEC * FORM orders");
    clean("INSERT INTO orders (user_id) VALUES ($1)");
    clean("CREATE INDEX ON orders (user_id)");
    clean("BEGIN");
    clean("");
    let deep = format!(
        "SELECT * FROM orders WHERE {}",
        vec!["note = 'x'"; 2_000].join(" AND ")
    );
    clean(&deep);
}

#[test]
fn boolean_columns_alone_are_not_worth_an_index() {
    let catalog = shop().with_table(
        Table::new("posts", 500_000)
            .primary_key(&["id"])
            .typed_column("published", "boolean")
            .columns(&["author_id", "created_at"]),
    );
    assert!(issues_in(
        &catalog,
        "SELECT count(*) FROM posts WHERE published = true"
    )
    .is_empty());
    assert!(issues_in(&catalog, "SELECT * FROM posts WHERE published").is_empty());
    let issues = issues_in(
        &catalog,
        "SELECT * FROM posts WHERE published AND author_id = $1",
    );
    assert_eq!(issues[0].columns, ["author_id"]);
    // The ORDER BY is still worth an index; the boolean filter is not.
    let issues = issues_in(
        &catalog,
        "SELECT * FROM posts WHERE published = $1 ORDER BY created_at DESC LIMIT 10",
    );
    assert_eq!(describe(&issues), ["sort public.posts (created_at)"]);
}
