//! `non_sargable_filter`: predicates that wrap an indexed column (function,
//! cast, arithmetic, leading-wildcard LIKE), against a synthetic catalog.

mod unindexed_support;

use qproxy_analyzer::catalog::{Catalog, Index, IndexMethod, Table};
use qproxy_analyzer::detect::unindexed::{analyze, NonSargableDetails};
use qproxy_analyzer::finding::{FindingKind, Severity};
use unindexed_support::{all_found_in, all_in, describe, of_kind};

/// `accounts` (100k): pk id; plain btrees on email, created_at, price and
/// code (varchar); an expression index on lower(handle) only; status and
/// name unindexed; a trigram GIN on bio. `ledger` (2M): pk id, account_id
/// unindexed. `tiny` (500): index on name.
fn catalog() -> Catalog {
    Catalog::new()
        .with_table(
            Table::new("accounts", 100_000)
                .typed_column("id", "integer")
                .primary_key(&["id"])
                .typed_column("created_at", "timestamp with time zone")
                .typed_column("price", "numeric(10,2)")
                .typed_column("code", "character varying(20)")
                .columns(&["email", "handle", "status", "name", "bio"])
                .index(Index::btree("accounts_email", &["email"]))
                .index(Index::btree("accounts_created_at", &["created_at"]))
                .index(Index::btree("accounts_price", &["price"]))
                .index(Index::btree("accounts_code", &["code"]))
                .index(Index::btree("accounts_lower_handle", &["(lower(handle))"]))
                .index(
                    Index::btree("accounts_bio_trgm", &["bio gin_trgm_ops"])
                        .using(IndexMethod::Gin),
                ),
        )
        .with_table(
            Table::new("ledger", 2_000_000)
                .typed_column("id", "bigint")
                .primary_key(&["id"])
                .typed_column("account_id", "integer")
                .typed_column("amount", "numeric")
                .index(Index::btree("ledger_amount", &["amount"])),
        )
        .with_table(
            Table::new("tiny", 500)
                .primary_key(&["id"])
                .columns(&["name"])
                .index(Index::btree("tiny_name", &["name"])),
        )
}

fn found(sql: &str) -> Vec<String> {
    all_found_in(&catalog(), sql)
}

#[track_caller]
fn clean(sql: &str) {
    assert_eq!(
        found(sql),
        Vec::<String>::new(),
        "expected nothing for {sql}"
    );
}

/// The one non-sargable issue of `sql`: its suggestion and typed details.
#[track_caller]
fn one(sql: &str) -> (String, NonSargableDetails) {
    let issues = of_kind(all_in(&catalog(), sql), FindingKind::NonSargableFilter);
    assert_eq!(issues.len(), 1, "{sql}: {:?}", describe(&issues));
    let details = serde_json::from_value(serde_json::Value::Object(issues[0].details.clone()))
        .expect("details deserialize into NonSargableDetails");
    (issues[0].suggestion.clone(), details)
}

#[test]
fn a_function_of_an_indexed_column_suggests_an_expression_index() {
    assert_eq!(
        found("SELECT * FROM accounts WHERE lower(email) = $1"),
        ["non_sargable_filter public.accounts (email)"]
    );
    let (suggestion, details) = one("SELECT * FROM accounts a WHERE lower(a.email) = lower($1)");
    assert_eq!(
        suggestion,
        "Index the expression the query filters on (its functions must be IMMUTABLE), or \
         compare email itself: CREATE INDEX CONCURRENTLY ON public.accounts ((lower(email)));"
    );
    assert_eq!(details.wrapper, "function");
    assert_eq!(details.function.as_deref(), Some("lower"));
    assert_eq!(details.predicate, "lower(email)");
    assert_eq!(details.rows_estimate, 100_000);
    assert_eq!(details.defeated_indexes, ["accounts_email btree (email)"]);
}

#[test]
fn a_matching_expression_index_serves_it() {
    clean("SELECT * FROM accounts WHERE lower(handle) = $1");
    clean("SELECT * FROM accounts WHERE lower(accounts.handle) = ANY($1)");
}

#[test]
fn a_cast_or_truncation_to_a_date_suggests_a_range() {
    let (suggestion, details) = one("SELECT * FROM accounts WHERE created_at::date = $1");
    assert_eq!(
        suggestion,
        "Compare created_at itself with a range, so its index serves the filter: \
         created_at >= $1 AND created_at < $1 + interval '1 day'."
    );
    assert_eq!(details.wrapper, "cast");
    assert_eq!(details.cast_to.as_deref(), Some("date"));
    assert_eq!(details.predicate, "created_at::DATE");
    let (suggestion, _) =
        one("SELECT count(*) FROM accounts WHERE date_trunc('month', created_at) = $2");
    assert!(
        suggestion.ends_with("created_at >= $2 AND created_at < $2 + interval '1 month'."),
        "{suggestion}"
    );
    let (suggestion, _) = one("SELECT * FROM accounts WHERE $1 < date(created_at)");
    assert!(
        suggestion.ends_with("created_at >= $1 + interval '1 day'."),
        "{suggestion}"
    );
    let (suggestion, _) = one("SELECT * FROM accounts WHERE CAST(created_at AS date) <= $1");
    assert!(
        suggestion.ends_with("created_at < $1 + interval '1 day'."),
        "{suggestion}"
    );
}

#[test]
fn a_plain_range_on_the_indexed_column_is_fine() {
    clean("SELECT * FROM accounts WHERE created_at >= $1 AND created_at < $1 + interval '1 day'");
    clean("SELECT * FROM accounts WHERE created_at BETWEEN $1 AND $2");
    clean("SELECT * FROM accounts WHERE price > $1 / 2");
}

#[test]
fn a_cast_within_the_type_family_is_a_relabel() {
    clean("SELECT * FROM accounts WHERE code::text = $1");
    clean("SELECT * FROM accounts WHERE CAST(email AS varchar(50)) = $1");
    // Another family is a conversion: the index on code cannot serve it.
    let (suggestion, details) = one("SELECT * FROM accounts WHERE code::int = $1");
    assert_eq!(details.cast_to.as_deref(), Some("int"));
    assert!(
        suggestion.contains("code = $1::character varying(20)"),
        "{suggestion}"
    );
}

#[test]
fn arithmetic_moves_to_the_value_side() {
    let (suggestion, details) = one("SELECT * FROM accounts WHERE id + 1 = $1");
    assert_eq!(details.wrapper, "arithmetic");
    assert_eq!(details.predicate, "id + ?");
    assert!(
        suggestion.contains("id + k = $1 → id = $1 - k."),
        "{suggestion}"
    );
    let (suggestion, _) = one("SELECT * FROM accounts WHERE $1 < price * 2");
    assert!(
        suggestion.contains("price * k > $1 → price > $1 / k (for a positive k"),
        "{suggestion}"
    );
}

#[test]
fn a_leading_wildcard_suggests_a_trigram_index() {
    let (suggestion, details) = one("SELECT * FROM accounts WHERE email LIKE '%@example.com'");
    assert_eq!(details.wrapper, "leading_wildcard");
    assert_eq!(details.predicate, "email LIKE '%…'");
    assert!(
        suggestion.ends_with(
            "CREATE EXTENSION IF NOT EXISTS pg_trgm; \
             CREATE INDEX CONCURRENTLY ON public.accounts USING gin (email gin_trgm_ops);"
        ),
        "{suggestion}"
    );
    let (_, details) = one("SELECT * FROM accounts WHERE email ILIKE '%' || $1 || '%'");
    assert_eq!(details.predicate, "email ILIKE '%…'");
    one("SELECT * FROM accounts WHERE email::text LIKE concat('_', $1)");
    // Controls: a trigram index serves any pattern; an anchored pattern is
    // a btree range; a parameter pattern is unknown.
    clean("SELECT * FROM accounts WHERE bio LIKE '%needle%'");
    clean("SELECT * FROM accounts WHERE email LIKE 'bob%'");
    clean("SELECT * FROM accounts WHERE email LIKE $1");
    clean("SELECT * FROM accounts WHERE email NOT LIKE '%x'");
}

#[test]
fn literals_are_never_printed() {
    let (suggestion, details) =
        one("SELECT * FROM accounts WHERE lower(email) = 'bob@example.com'");
    assert!(!suggestion.contains("bob"), "{suggestion}");
    assert_eq!(details.predicate, "lower(email)");
    let (suggestion, details) =
        one("SELECT * FROM accounts WHERE date_trunc('day', created_at) = '2024-05-01'");
    assert_eq!(details.predicate, "date_trunc(?, created_at)");
    assert!(!suggestion.contains("2024"), "{suggestion}");
    assert!(suggestion.contains("created_at >= v AND"), "{suggestion}");
    // An expression with literals gets no expression-index DDL (it would
    // have to print them).
    let (suggestion, details) = one("SELECT * FROM accounts WHERE substr(email, 1, 3) = $1");
    assert_eq!(details.predicate, "SUBSTR(email, ?, ?)");
    assert!(!suggestion.contains("CREATE INDEX"), "{suggestion}");
}

#[test]
fn unindexed_columns_small_tables_and_served_scans_are_left_alone() {
    // Nothing to defeat: no index on status.
    clean("SELECT * FROM accounts WHERE lower(status) = $1");
    clean("SELECT * FROM tiny WHERE lower(name) = $1");
    // Another predicate's index already narrows the scan.
    clean("SELECT * FROM accounts WHERE id = $1 AND lower(email) = $2");
    // Reached through an indexed join key from a table that drives.
    clean(
        "SELECT * FROM ledger l JOIN accounts a ON a.id = l.account_id \
         WHERE l.id = $1 AND lower(a.email) = $2",
    );
    // Expressions over two columns, or no column at all, are not a wrap.
    clean("SELECT * FROM accounts WHERE price * id > $1");
    clean("SELECT * FROM accounts WHERE lower($1) = 'x'");
}

#[test]
fn it_replaces_the_unindexed_filter_on_the_same_table() {
    let sql = "SELECT * FROM accounts WHERE lower(email) = $1 AND status = $2";
    assert_eq!(found(sql), ["non_sargable_filter public.accounts (email)"]);
    // The first-wave view says nothing rather than advise an index on
    // status that the rewritten predicate makes unnecessary.
    assert!(analyze(sql, &catalog(), &Default::default()).is_empty());
    // Without the wrapped predicate the filter finding is back.
    assert_eq!(
        found("SELECT * FROM accounts WHERE status = $1"),
        ["filter public.accounts (status)"]
    );
}

#[test]
fn severity_follows_table_size() {
    let issues = all_in(&catalog(), "SELECT * FROM ledger WHERE amount::int = $1");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].severity, Severity::Error);
    let issues = all_in(&catalog(), "SELECT * FROM accounts WHERE price::int = $1");
    assert_eq!(issues[0].severity, Severity::Warning);
}
