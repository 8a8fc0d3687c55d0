//! Index advice that knows the data: column statistics (`pg_stats`) decide
//! whether a filter is selective enough for an index, which columns the
//! key leaves out, and when a partial index fits a rare value.

mod unindexed_support;

use qproxy_analyzer::catalog::{Catalog, ColumnStats, Index, Table};
use qproxy_analyzer::detect::unindexed::{number_placeholder, UnindexedIssue};
use serde_json::{json, Value};
use unindexed_support::{found_in, issues_in};

/// `orders` (2M) as ANALYZE left it:
/// - `status`: 97 % `shipped`, 2 % `cancelled`, 1 % `pending_review`;
/// - `kind` (integer, boolean-like): 0 and 1, half each;
/// - `channel`, `source`: three values, 30/30/40 % each;
/// - `customer_id`: 100 000 distinct values, indexed;
/// - `total` (numeric): uniform 0..1000; `created_at` (timestamptz):
///   uniform over 2024;
/// - `archived` (boolean): 97 % false; `state` (an enum type): skewed;
/// - `cancelled_at`: 90 % NULL; `shipped_at`: 1 % NULL; `note`: no
///   statistics.
fn analysed() -> Catalog {
    let months: Vec<String> = (1..=12)
        .map(|m| format!("2024-{m:02}-01 00:00:00+00"))
        .chain(["2024-12-31 23:59:59+00".to_owned()])
        .collect();
    let months: Vec<&str> = months.iter().map(String::as_str).collect();
    let hundreds: Vec<String> = (0..=10).map(|i| (i * 100).to_string()).collect();
    let hundreds: Vec<&str> = hundreds.iter().map(String::as_str).collect();
    Catalog::new().with_table(
        Table::new("orders", 2_000_000)
            .primary_key(&["id"])
            .typed_column("customer_id", "bigint")
            .typed_column("kind", "integer")
            .typed_column("total", "numeric(10,2)")
            .typed_column("created_at", "timestamp with time zone")
            .typed_column("archived", "boolean")
            .typed_column("state", "order_state")
            .columns(&[
                "status",
                "channel",
                "source",
                "cancelled_at",
                "shipped_at",
                "note",
            ])
            .index(Index::btree("orders_customer_id", &["customer_id"]))
            .stats(
                "status",
                ColumnStats::distinct(3.0).most_common(&[
                    ("shipped", 0.97),
                    ("cancelled", 0.02),
                    ("pending_review", 0.01),
                ]),
            )
            .stats(
                "kind",
                ColumnStats::distinct(2.0).most_common(&[("0", 0.5), ("1", 0.5)]),
            )
            .stats(
                "channel",
                ColumnStats::distinct(3.0).most_common(&[("web", 0.4), ("app", 0.3), ("pos", 0.3)]),
            )
            .stats(
                "source",
                ColumnStats::distinct(3.0).most_common(&[
                    ("ads", 0.4),
                    ("seo", 0.3),
                    ("mail", 0.3),
                ]),
            )
            .stats("customer_id", ColumnStats::distinct(-0.05))
            .stats("total", ColumnStats::distinct(-0.5).histogram(&hundreds))
            .stats("created_at", ColumnStats::distinct(-0.9).histogram(&months))
            .stats(
                "archived",
                ColumnStats::distinct(2.0).most_common(&[("f", 0.97), ("t", 0.03)]),
            )
            .stats(
                "state",
                ColumnStats::distinct(2.0).most_common(&[("open", 0.98), ("held", 0.02)]),
            )
            .stats("cancelled_at", ColumnStats::distinct(-0.1).nulls(0.9))
            .stats("shipped_at", ColumnStats::distinct(-0.9).nulls(0.01)),
    )
}

fn found(sql: &str) -> Vec<String> {
    found_in(&analysed(), sql)
}

fn one(sql: &str) -> UnindexedIssue {
    let issues = issues_in(&analysed(), sql);
    assert_eq!(issues.len(), 1, "{sql}: {issues:#?}");
    issues.into_iter().next().unwrap()
}

fn selectivity(issue: &UnindexedIssue) -> &Value {
    &issue.details["selectivity"]
}

#[test]
fn a_rare_value_of_a_skewed_column_gets_a_partial_index() {
    let issue = one("SELECT * FROM orders WHERE status = 'pending_review'");
    assert_eq!(issue.columns, ["status"]);
    assert_eq!(
        issue.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (status) WHERE status = $1;"
    );
    assert_eq!(issue.details["partial_index"]["column"], "status");
    assert_eq!(issue.details["partial_index"]["value_frequency"], 0.01);
    assert_eq!(
        issue.details["partial_index"]["most_common_frequency"],
        0.97
    );
    assert_eq!(
        selectivity(&issue)["columns"]["status"],
        json!({"estimated_fraction": 0.01, "source": "mcv"})
    );
    assert!(issue.withheld.is_none());
    // hypopg gets the value; nothing shown does.
    assert_eq!(
        issue.verify_ddl.as_ref().map(|d| d.as_str()),
        Some(
            "CREATE INDEX CONCURRENTLY ON public.orders (status) WHERE status = 'pending_review';"
        )
    );
    let shown = format!(
        "{} {} {:?}",
        issue.suggestion,
        Value::Object(issue.details.clone()),
        issue
    );
    assert!(!shown.contains("pending_review"), "{shown}");
}

#[test]
fn the_rest_of_the_predicate_leads_the_partial_index() {
    let issue = one("SELECT * FROM orders WHERE status = 'cancelled' AND total > $1");
    assert_eq!(
        issue.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (total) WHERE status = $1;"
    );
    let issue =
        one("SELECT * FROM orders WHERE status = 'cancelled' AND note = $1 AND created_at >= $2");
    assert_eq!(
        issue.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (note, created_at) WHERE status = $1;"
    );
    // A rare boolean value: the same, on a column that is never a key.
    assert_eq!(
        one("SELECT * FROM orders WHERE archived = true").suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (archived) WHERE archived = $1;"
    );
}

#[test]
fn a_sort_under_a_rare_value_gets_the_same_partial_index() {
    let issues = issues_in(
        &analysed(),
        "SELECT * FROM orders WHERE status = 'cancelled' ORDER BY created_at DESC LIMIT 20",
    );
    let suggestions: Vec<&str> = issues.iter().map(|i| i.suggestion.as_str()).collect();
    // The filter's and the sort's finding name one index (a backward scan
    // delivers DESC).
    assert_eq!(
        suggestions,
        ["CREATE INDEX CONCURRENTLY ON public.orders (created_at) WHERE status = $1;"; 2]
    );
    assert!(issues.iter().all(|i| i.verify_ddl.is_some()));
}

#[test]
fn the_placeholder_is_numbered_like_the_normalized_query() {
    let mut issue = one("SELECT * FROM orders WHERE total > $1 AND status = 'cancelled'");
    number_placeholder(
        &mut issue,
        "SELECT * FROM orders WHERE total > $1 AND status = $2",
    );
    assert_eq!(
        issue.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (total) WHERE status = $2;"
    );
}

#[test]
fn no_partial_index_where_the_value_cannot_be_written_back_safely() {
    // An enum's equality could be anyone's operator; a plain key instead.
    let issue = one("SELECT * FROM orders WHERE state = 'held'");
    assert_eq!(
        issue.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (state);"
    );
    assert!(issue.verify_ddl.is_none());
    // A parameter's value is unknown: no partial index, and 1/n_distinct of
    // a three-value column is no filter at all.
    assert_eq!(
        found("SELECT * FROM orders WHERE status = $1"),
        ["withheld filter public.orders (status)"]
    );
}

#[test]
fn unselective_filters_are_held_back() {
    for sql in [
        "SELECT * FROM orders WHERE status = 'shipped'",
        "SELECT * FROM orders WHERE status IN ('shipped', 'cancelled')",
        "SELECT * FROM orders WHERE kind = 1",
        "SELECT * FROM orders WHERE kind = $1",
        "SELECT * FROM orders WHERE kind = 1 AND status = 'shipped'",
        "SELECT * FROM orders WHERE total > 10",
        "SELECT * FROM orders WHERE created_at > '2024-01-15'",
        "SELECT * FROM orders WHERE cancelled_at IS NULL",
    ] {
        let issues = issues_in(&analysed(), sql);
        assert_eq!(issues.len(), 1, "{sql}: {issues:#?}");
        let reason = issues[0].withheld.as_deref().unwrap_or_else(|| {
            panic!(
                "{sql}: expected the issue to be held back: {:#?}",
                issues[0]
            )
        });
        assert!(reason.contains("% of the rows"), "{reason}");
    }
    let issue = &issues_in(&analysed(), "SELECT * FROM orders WHERE status = 'shipped'")[0];
    assert_eq!(selectivity(issue)["estimated_fraction"], 0.97, "{issue:#?}");
    assert_eq!(selectivity(issue)["source"], "mcv");
    assert!(issue.withheld.as_deref().unwrap().starts_with(
        "column statistics estimate that the filter matches 97.0 % of the rows (mcv)"
    ));
    // A common boolean value is no filter and no key: nothing at all.
    assert_eq!(
        found("SELECT * FROM orders WHERE archived = false"),
        Vec::<String>::new()
    );
}

#[test]
fn unselective_columns_leave_the_key_when_another_narrows() {
    let issue = one("SELECT * FROM orders WHERE status = 'shipped' AND note = $1");
    assert_eq!(issue.columns, ["note"]);
    assert_eq!(selectivity(&issue)["left_out"], json!(["status"]));
    assert_eq!(
        selectivity(&issue)["columns"]["note"],
        json!({"estimated_fraction": 0.005, "source": "default"})
    );
    assert_eq!(
        found("SELECT * FROM orders WHERE kind = $1 AND created_at > $2"),
        ["filter public.orders (created_at)"]
    );
    // Two columns that only narrow together stay together.
    let issue = one("SELECT * FROM orders WHERE channel = 'app' AND source = 'seo'");
    assert_eq!(issue.columns, ["channel", "source"]);
    assert!(issue.withheld.is_none());
    assert_eq!(selectivity(&issue)["estimated_fraction"], 0.09);
}

#[test]
fn selective_values_by_n_distinct_histogram_and_null_frac() {
    let cases = [
        // Not a most common value: the rest spread over the other values.
        ("customer_id = 12345", "customer_id", 0.00001, "n_distinct"),
        ("customer_id = $1", "customer_id", 0.00001, "n_distinct"),
        ("total > 990", "total", 0.01, "histogram"),
        ("total BETWEEN 100 AND 120", "total", 0.02, "histogram"),
        ("total >= 100 AND total < 120", "total", 0.02, "histogram"),
        (
            "created_at >= '2024-12-01'",
            "created_at",
            0.0833,
            "histogram",
        ),
        ("shipped_at IS NULL", "shipped_at", 0.01, "null_frac"),
    ];
    // customer_id is indexed: put a large unindexed column next to it in a
    // block where it is the only filter, by asking for note too.
    for (predicate, column, fraction, source) in cases {
        let sql = format!("SELECT * FROM orders WHERE {predicate} AND note LIKE 'x%'");
        let issues = issues_in(&analysed(), &sql);
        let estimate = issues
            .iter()
            .find_map(|i| i.details.get("selectivity"))
            .map(|s| s["columns"][column].clone());
        if column == "customer_id" {
            // Served by its index: nothing reported, nothing estimated.
            assert!(issues.is_empty(), "{sql}: {issues:#?}");
            continue;
        }
        let estimate = estimate.unwrap_or_else(|| panic!("{sql}: {issues:#?}"));
        assert_eq!(
            estimate,
            json!({"estimated_fraction": fraction, "source": source}),
            "{sql}"
        );
        assert!(issues.iter().all(|i| i.withheld.is_none()), "{sql}");
    }
}

#[test]
fn values_outside_the_statistics_and_unknown_ranges_use_defaults() {
    // A parameter range: PostgreSQL's default, which never holds back.
    let issue = one("SELECT * FROM orders WHERE total > $1");
    assert_eq!(
        selectivity(&issue)["columns"]["total"],
        json!({"estimated_fraction": 0.3333, "source": "default"})
    );
    assert!(issue.withheld.is_none());
    // Text ranges depend on the collation: not estimated.
    let issue = one("SELECT * FROM orders WHERE status > 'a'");
    assert_eq!(
        selectivity(&issue)["columns"]["status"]["source"],
        "default"
    );
    // No statistics: no selectivity entry at all, and the suggestion as
    // before statistics existed.
    let issue = one("SELECT * FROM orders WHERE note = $1");
    assert!(issue.details.get("selectivity").is_none(), "{issue:#?}");
    assert_eq!(
        issue.suggestion,
        "CREATE INDEX CONCURRENTLY ON public.orders (note);"
    );
}

#[test]
fn statistics_decide_which_side_of_a_join_needs_an_index() {
    let catalog = analysed().with_table(
        Table::new("customers", 100_000)
            .primary_key(&["id"])
            .columns(&["created_at"]),
    );
    // orders' own filter is no filter: customers drives, orders follows
    // through its indexed customer_id; only customers needs an index.
    let mut got = found_in(
        &catalog,
        "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE c.created_at > $1 AND o.status = 'shipped'",
    );
    got.sort();
    assert_eq!(
        got,
        [
            "filter public.customers (created_at)",
            "withheld filter public.orders (status)"
        ]
    );
    // A rare status: both can drive, both get their index.
    let mut got = found_in(
        &catalog,
        "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE c.created_at > $1 AND o.status = 'pending_review'",
    );
    got.sort();
    assert_eq!(
        got,
        [
            "filter public.customers (created_at)",
            "filter public.orders (status)"
        ]
    );
}
