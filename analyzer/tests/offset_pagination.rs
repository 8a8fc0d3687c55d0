//! `offset_pagination`: the shape (an OFFSET paging a large table, with the
//! keyset suggestion) from the statement and the catalog, and the count
//! from executions whose OFFSET, bound or literal, reaches the threshold.

mod unindexed_support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use qproxy_analyzer::catalog::{Catalog, Index, Table};
use qproxy_analyzer::detect::unindexed::OffsetPaginationDetails;
use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, SessionEvent, TxStatus};
use qproxy_analyzer::finding::{Finding, FindingKind, Severity};
use qproxy_analyzer::pipeline::{Analyzer, AnalyzerConfig};
use smallvec::SmallVec;
use unindexed_support::{all_found_in, all_in, of_kind};

/// `posts` (500k): pk id, index on (created_at, id); `drafts` (900).
fn catalog() -> Catalog {
    Catalog::new()
        .with_table(
            Table::new("posts", 500_000)
                .primary_key(&["id"])
                .columns(&["author_id", "title", "status", "created_at"])
                .index(Index::btree("posts_created_id", &["created_at", "id"])),
        )
        .with_table(
            Table::new("drafts", 900)
                .primary_key(&["id"])
                .columns(&["title"]),
        )
}

fn template(sql: &str) -> (String, OffsetPaginationDetails) {
    let issues = of_kind(all_in(&catalog(), sql), FindingKind::OffsetPagination);
    assert_eq!(issues.len(), 1, "{sql}");
    let details =
        serde_json::from_value(serde_json::Value::Object(issues[0].details.clone())).unwrap();
    (issues[0].suggestion.clone(), details)
}

#[test]
fn the_shape_names_the_keyset() {
    let (suggestion, details) = template("SELECT * FROM posts ORDER BY id LIMIT 20 OFFSET $1");
    assert!(
        suggestion.contains("WHERE id > $last_id ORDER BY id LIMIT n"),
        "{suggestion}"
    );
    assert_eq!(details.order_by, ["id"]);
    assert_eq!(details.keyset, ["id"]);
    assert_eq!(details.rows_estimate, 500_000);
    assert_eq!(details.max_offset, None, "filled in from executions");

    // A non-unique sort key gets the primary key as tie-breaker, in its
    // direction, as one row comparison.
    let (suggestion, details) =
        template("SELECT id, title FROM posts p ORDER BY p.created_at DESC LIMIT 20 OFFSET 40");
    assert!(
        suggestion.contains(
            "WHERE (created_at, id) < ($last_created_at, $last_id) \
             ORDER BY created_at DESC, id DESC LIMIT n, which an index on (created_at, id)"
        ),
        "{suggestion}"
    );
    assert_eq!(details.order_by, ["created_at DESC"]);
    assert_eq!(details.keyset, ["created_at", "id"]);

    // Mixed directions: spelt out key by key.
    let (suggestion, _) =
        template("SELECT * FROM posts ORDER BY status, created_at DESC OFFSET $1 ROWS");
    assert!(
        suggestion.contains(
            "WHERE (status > $last_status OR (status = $last_status AND created_at < \
             $last_created_at) OR (status = $last_status AND created_at = $last_created_at AND \
             id < $last_id)) ORDER BY status, created_at DESC, id DESC"
        ),
        "{suggestion}"
    );

    // No ORDER BY: pages in no defined order, keyset on the primary key.
    let (suggestion, details) = template("SELECT * FROM posts LIMIT 50 OFFSET $1");
    assert!(suggestion.contains("no defined order"), "{suggestion}");
    assert!(
        suggestion.contains("WHERE id > $last_id ORDER BY id"),
        "{suggestion}"
    );
    assert!(details.order_by.is_empty());
}

#[test]
fn only_the_outermost_select_of_a_large_table_pages() {
    assert_eq!(
        all_found_in(
            &catalog(),
            "SELECT * FROM posts ORDER BY id LIMIT 20 OFFSET 9000"
        ),
        ["offset_pagination public.posts (id)"]
    );
    for sql in [
        "SELECT * FROM drafts ORDER BY id LIMIT 20 OFFSET 9000",
        "SELECT * FROM posts ORDER BY id LIMIT 20",
        "SELECT * FROM (SELECT * FROM posts ORDER BY id OFFSET 9000) p WHERE p.id = $1",
        "SELECT id FROM posts WHERE id = 1 UNION SELECT id FROM posts WHERE id = 2 OFFSET 5",
    ] {
        assert!(
            of_kind(all_in(&catalog(), sql), FindingKind::OffsetPagination).is_empty(),
            "{sql}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Executions through the pipeline
// ---------------------------------------------------------------------------------------------

const PAGE: &str = "SELECT id, title FROM posts ORDER BY id LIMIT $1 OFFSET $2";

fn event(sql: &str, protocol: Protocol, offset: Option<u64>) -> SessionEvent {
    SessionEvent::Query(QueryEvent {
        connection_id: 1,
        sql: sql.into(),
        statement_index: 0,
        statement_name: None,
        prepared_at: None,
        protocol,
        params_hash: (protocol == Protocol::Extended).then_some(offset.unwrap_or(0)),
        param_hashes: SmallVec::new(),
        result_hashes: Vec::new(),
        offset,
        started_at: SystemTime::now(),
        duration: Duration::from_millis(2),
        rows: 20,
        outcome: Outcome::Complete {
            tag: "SELECT 20".into(),
        },
        tx_status: TxStatus::Idle,
        application_name: None,
        database: Some("blog".into()),
        user: None,
        text_hold: None,
    })
}

fn pipeline(config: AnalyzerConfig) -> Analyzer {
    let mut a = Analyzer::new(config);
    // A first page makes the advisor ask for the database's catalog; a
    // catalog nobody asked for is not installed.
    a.process(&event(PAGE, Protocol::Extended, Some(0)), Instant::now());
    assert_eq!(a.indexes().take_catalog_loads(Instant::now(), 8), ["blog"]);
    a.indexes()
        .install_catalog("blog", Some((Arc::new(catalog()), false)));
    a
}

fn offset_findings(a: &mut Analyzer) -> Vec<Finding> {
    a.take_findings()
        .into_iter()
        .filter(|f| f.kind == FindingKind::OffsetPagination)
        .collect()
}

#[test]
fn bound_offsets_count_from_the_threshold_and_keep_only_their_magnitude() {
    let mut a = pipeline(AnalyzerConfig::default());
    for offset in [0, 20, 980, 999] {
        a.process(
            &event(PAGE, Protocol::Extended, Some(offset)),
            Instant::now(),
        );
    }
    assert!(offset_findings(&mut a).is_empty(), "small offsets only");
    for offset in [1_000, 12_345] {
        a.process(
            &event(PAGE, Protocol::Extended, Some(offset)),
            Instant::now(),
        );
    }
    let found = offset_findings(&mut a);
    assert_eq!(found.len(), 1);
    let f = &found[0];
    assert_eq!(f.occurrences, 2);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.table.as_deref(), Some("public.posts"));
    assert_eq!(f.columns, ["id"]);
    assert_eq!(f.details["max_offset"], 10_000);
    let stored = serde_json::to_string(f).unwrap();
    assert!(
        !stored.contains("12345"),
        "the value itself is never kept: {stored}"
    );
    // From error_offset on, an error; the magnitude only grows.
    a.process(
        &event(PAGE, Protocol::Extended, Some(250_000)),
        Instant::now(),
    );
    a.process(
        &event(PAGE, Protocol::Extended, Some(3_000)),
        Instant::now(),
    );
    let f = &offset_findings(&mut a)[0];
    assert_eq!((f.occurrences, f.severity), (2, Severity::Error));
    assert_eq!(f.details["max_offset"], 100_000);
}

#[test]
fn literal_offsets_are_read_per_execution() {
    let mut a = pipeline(AnalyzerConfig::default());
    // One fingerprint for every page; only the deep ones count.
    for offset in [0, 40, 2_000, 40_000] {
        let sql = format!("SELECT id, title FROM posts ORDER BY id LIMIT 20 OFFSET {offset}");
        a.process(&event(&sql, Protocol::Simple, None), Instant::now());
    }
    let found = offset_findings(&mut a);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].occurrences, 2);
    assert_eq!(found[0].details["max_offset"], 10_000);
    assert!(!found[0].query.contains("40000"), "{}", found[0].query);
}

#[test]
fn offsets_seen_before_the_catalog_count_once_it_arrives() {
    let mut a = Analyzer::new(AnalyzerConfig::default());
    a.process(
        &event(PAGE, Protocol::Extended, Some(5_000)),
        Instant::now(),
    );
    a.process(&event(PAGE, Protocol::Extended, Some(10)), Instant::now());
    assert_eq!(a.indexes().take_catalog_loads(Instant::now(), 8), ["blog"]);
    a.indexes()
        .install_catalog("blog", Some((Arc::new(catalog()), false)));
    let found = offset_findings(&mut a);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].occurrences, 1);
}

#[test]
fn thresholds_and_table_size_decide() {
    let mut config = AnalyzerConfig::default();
    config.offset_pagination.min_offset = 50;
    let mut a = pipeline(config);
    a.process(&event(PAGE, Protocol::Extended, Some(60)), Instant::now());
    assert_eq!(offset_findings(&mut a).len(), 1);

    let mut a = pipeline(AnalyzerConfig::default());
    let small = "SELECT id FROM drafts ORDER BY id LIMIT $1 OFFSET $2";
    a.process(
        &event(small, Protocol::Extended, Some(500_000)),
        Instant::now(),
    );
    assert!(offset_findings(&mut a).is_empty(), "a small table");
}

#[test]
fn an_order_by_over_several_tables_gets_prose_not_a_wrong_keyset() {
    let catalog = catalog().with_table(
        Table::new("authors", 20_000)
            .primary_key(&["id"])
            .columns(&["name"]),
    );
    let sql = "SELECT p.id FROM posts p JOIN authors a ON a.id = p.author_id \
               ORDER BY a.name, p.id LIMIT 20 OFFSET $1";
    let issues = of_kind(all_in(&catalog, sql), FindingKind::OffsetPagination);
    assert_eq!(issues.len(), 1);
    let s = &issues[0].suggestion;
    assert!(s.contains("remember the last row's ORDER BY values"), "{s}");
    assert!(!s.contains("no defined order"), "{s}");
}
