//! Accuracy rules through the whole pipeline (`Analyzer::process`), on
//! synthetic events as the proxy's tracker emits them:
//! - an untagged stream that never goes quiet is judged in bounded groups,
//!   whose findings say their confidence is low and are at most warnings;
//! - every finding names its table schema-qualified, whatever grouped its
//!   request and whenever the catalog arrived, under an id that does not
//!   depend on the catalog;
//! - a SQL cursor (DECLARE, FETCH in chunks, CLOSE) is one execution of its
//!   query, rated by all the rows fetched.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use qproxy_analyzer::catalog::{Catalog, Table};
use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, SessionEvent, TxStatus};
use qproxy_analyzer::finding::{finding_id, Finding, FindingKind, Severity, TABLE_UNRESOLVED};
use qproxy_analyzer::pipeline::{Analyzer, AnalyzerConfig};
use qproxy_analyzer::values::value_hash;

const MS: Duration = Duration::from_millis(1);
const LOOKUP: &str = "SELECT id, total FROM orders WHERE id = $1";

/// One connection, its clock and transaction status.
struct Conn {
    id: u64,
    clock: SystemTime,
    tx: TxStatus,
}

struct World {
    analyzer: Analyzer,
    now: Instant,
}

impl World {
    fn new() -> World {
        World {
            analyzer: Analyzer::new(AnalyzerConfig::default()),
            now: Instant::now(),
        }
    }

    fn conn(id: u64) -> Conn {
        Conn {
            id,
            clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            tx: TxStatus::Idle,
        }
    }

    /// Runs `sql` (1 ms, sent 1 ms after the previous reply) with one bound
    /// parameter, returning `rows` rows, ending with `tag`.
    fn run(&mut self, c: &mut Conn, sql: &str, param: Option<i64>, rows: u64, tag: &str) {
        let started_at = c.clock + MS;
        let event = QueryEvent {
            connection_id: c.id,
            sql: Arc::from(sql),
            statement_index: 0,
            statement_name: None,
            prepared_at: None,
            protocol: Protocol::Extended,
            params_hash: Some(param.map_or(0, |p| p as u64)),
            param_hashes: param
                .map(|p| Some(value_hash(p.to_string().as_bytes(), false)))
                .into_iter()
                .collect(),
            result_hashes: Vec::new(),
            offset: None,
            started_at,
            duration: MS,
            rows,
            outcome: Outcome::Complete { tag: tag.into() },
            tx_status: c.tx,
            application_name: None,
            database: Some("shop".into()),
            user: Some("app".into()),
            text_hold: None,
        };
        c.clock = started_at + MS;
        c.tx = match tag {
            "BEGIN" => TxStatus::InTransaction,
            "COMMIT" | "ROLLBACK" => TxStatus::Idle,
            _ => c.tx,
        };
        self.now += 2 * MS;
        self.analyzer.process(&SessionEvent::Query(event), self.now);
    }

    fn close(&mut self, c: &Conn) {
        self.analyzer.process(
            &SessionEvent::Closed {
                connection_id: c.id,
                at: c.clock,
                tx_status: Some(c.tx),
            },
            self.now,
        );
    }

    /// An untagged transaction: BEGIN, `n` lookups with distinct ids, COMMIT.
    fn transaction_n_plus_one(&mut self, c: &mut Conn, n: i64) {
        self.run(c, "BEGIN", None, 0, "BEGIN");
        for id in 1..=n {
            self.run(c, LOOKUP, Some(id), 1, "SELECT 1");
        }
        self.run(c, "COMMIT", None, 0, "COMMIT");
    }

    fn load_catalog(&mut self, catalog: Catalog) {
        let idx = self.analyzer.indexes();
        let _ = idx.take_catalog_loads(Instant::now(), 8);
        idx.install_catalog("shop", Some((Arc::new(catalog), false)));
    }
}

fn of_kind(findings: &[Finding], kind: FindingKind) -> Vec<&Finding> {
    findings.iter().filter(|f| f.kind == kind).collect()
}

/// `orders` lives in `app`, which comes first on the search path.
fn shop() -> Catalog {
    Catalog::new()
        .with_table(
            Table::new("app.orders", 100)
                .primary_key(&["id"])
                .columns(&["total"]),
        )
        .with_search_path(&["app", "public"])
}

#[test]
fn an_untagged_stream_without_gaps_is_judged_in_bounded_low_confidence_groups() {
    let mut w = World::new();
    let mut c = World::conn(1);
    // A batch worker: 3,500 distinct lookups back to back, no tag, no gap.
    for id in 1..=3_500 {
        w.run(&mut c, LOOKUP, Some(id), 1, "SELECT 1");
    }
    w.close(&c);
    w.analyzer.finish();
    let findings = w.analyzer.take_findings();
    let n1 = of_kind(&findings, FindingKind::NPlusOne);
    assert_eq!(n1.len(), 1, "one shape, merged: {findings:#?}");
    let f = n1[0];
    assert_eq!(f.count, Some(1_000), "the worst group is the statement cap");
    assert_eq!(f.occurrences, 4, "1,000 + 1,000 + 1,000 + 500");
    assert_eq!(f.severity, Severity::Warning, "a guess is never an error");
    assert_eq!(f.details["confidence"], "low");
    assert!(
        f.details["grouping"]
            .as_str()
            .is_some_and(|g| g.contains("cut at the fallback bounds")),
        "{:?}",
        f.details
    );
    let suggestion = f.suggestion.as_deref().unwrap_or_default();
    assert!(
        suggestion.contains("grouped by idle gaps") && suggestion.contains("not by a request tag"),
        "{suggestion}"
    );
    assert_eq!(
        f.request.as_ref().unwrap().correlation.as_deref(),
        Some("idle_gap")
    );
    let sentence = qproxy_analyzer::report::finding_sentence(f);
    assert!(
        sentence.contains("ran 1000 times in one group of untagged statements (grouped by idle gaps, not by a request tag"),
        "{sentence}"
    );
    assert!(of_kind(&findings, FindingKind::TooManyQueries).is_empty());
}

#[test]
fn a_tagged_n_plus_one_keeps_its_severity_and_says_high_confidence() {
    let mut w = World::new();
    let mut c = World::conn(1);
    let tagged = format!("{LOOKUP} /*request_id='r1',route='orders.index'*/");
    for id in 1..=30 {
        w.run(&mut c, &tagged, Some(id), 1, "SELECT 1");
    }
    w.close(&c);
    w.analyzer.finish();
    let findings = w.analyzer.take_findings();
    let f = of_kind(&findings, FindingKind::NPlusOne)[0];
    assert_eq!((f.count, f.severity), (Some(30), Severity::Error));
    assert_eq!(f.details["confidence"], "high");
    assert!(!f.suggestion.as_deref().unwrap().contains("Low confidence"));
}

#[test]
fn a_transaction_n_plus_one_waits_for_the_catalog_and_names_its_schema() {
    let mut w = World::new();
    let mut c = World::conn(1);
    w.transaction_n_plus_one(&mut c, 6);
    // The transaction ended at its COMMIT, before the catalog came back:
    // the finding waits rather than go out with half a name.
    assert!(w.analyzer.take_findings().is_empty());
    assert_eq!(w.analyzer.findings_awaiting_catalog(), 1);
    w.load_catalog(shop());
    let findings = w.analyzer.take_findings();
    let f = of_kind(&findings, FindingKind::NPlusOne)[0];
    assert_eq!(
        f.table.as_deref(),
        Some("app.orders"),
        "search_path applied"
    );
    assert_eq!(f.details["confidence"], "medium");
    assert!(!f.details.contains_key(TABLE_UNRESOLVED));
    assert_eq!(f.database.as_deref(), Some("shop"));
    // The id hashes the table as written, so it is the same whether or
    // not the catalog had arrived.
    let expected = finding_id(
        FindingKind::NPlusOne,
        &f.fingerprint,
        Some("orders"),
        &f.columns,
        None,
        None,
    );
    assert_eq!(f.id, expected);

    let mut early = World::new();
    early.load_catalog(shop());
    let mut c = World::conn(1);
    early.transaction_n_plus_one(&mut c, 6);
    let findings = early.analyzer.take_findings();
    let g = of_kind(&findings, FindingKind::NPlusOne)[0];
    assert_eq!(
        (g.id.as_str(), g.table.as_deref()),
        (f.id.as_str(), Some("app.orders"))
    );
}

#[test]
fn without_a_catalog_the_written_name_says_it_is_unresolved_until_a_sighting_resolves_it() {
    let mut w = World::new();
    let mut c = World::conn(1);
    w.transaction_n_plus_one(&mut c, 6);
    let idx = w.analyzer.indexes();
    let _ = idx.take_catalog_loads(Instant::now(), 8);
    idx.install_catalog("shop", None);
    let findings = w.analyzer.take_findings();
    let unresolved = of_kind(&findings, FindingKind::NPlusOne)[0].clone();
    assert_eq!(unresolved.table.as_deref(), Some("orders"));
    assert!(
        unresolved.details[TABLE_UNRESOLVED]
            .as_str()
            .is_some_and(|why| why.contains("could not be loaded")),
        "{:?}",
        unresolved.details
    );

    // The catalog loads on a retry; the next sighting is qualified, and
    // merging it (as the store does) fixes the name under the same id.
    w.load_catalog(shop());
    w.transaction_n_plus_one(&mut c, 6);
    let findings = w.analyzer.take_findings();
    let resolved = of_kind(&findings, FindingKind::NPlusOne)[0].clone();
    assert_eq!(resolved.id, unresolved.id);
    let mut stored = unresolved.clone();
    stored.merge(&resolved);
    assert_eq!(stored.table.as_deref(), Some("app.orders"));
    assert!(!stored.details.contains_key(TABLE_UNRESOLVED));
    // ... and an unresolved sighting after that does not undo it.
    stored.merge(&unresolved);
    assert_eq!(stored.table.as_deref(), Some("app.orders"));
    assert!(!stored.details.contains_key(TABLE_UNRESOLVED));
}

#[test]
fn at_shutdown_a_finding_still_waiting_goes_out_with_the_written_name() {
    let mut w = World::new();
    let mut c = World::conn(1);
    w.transaction_n_plus_one(&mut c, 6);
    w.analyzer.finish();
    let findings = w.analyzer.take_findings();
    let f = of_kind(&findings, FindingKind::NPlusOne)[0];
    assert_eq!(f.table.as_deref(), Some("orders"));
    assert!(f.details.contains_key(TABLE_UNRESOLVED));
    assert_eq!(w.analyzer.findings_awaiting_catalog(), 0);
}

#[test]
fn a_sql_cursor_fetched_in_chunks_is_one_execution_of_its_query() {
    let mut w = World::new();
    w.load_catalog(shop());
    let mut c = World::conn(1);
    w.run(&mut c, "BEGIN", None, 0, "BEGIN");
    w.run(
        &mut c,
        r#"DECLARE "export_1" CURSOR WITHOUT HOLD FOR SELECT id, total FROM orders"#,
        None,
        0,
        "DECLARE CURSOR",
    );
    for _ in 0..50 {
        w.run(
            &mut c,
            r#"FETCH FORWARD 1000 FROM "export_1""#,
            None,
            1_000,
            "FETCH 1000",
        );
    }
    w.run(
        &mut c,
        r#"FETCH FORWARD 1000 FROM "export_1""#,
        None,
        0,
        "FETCH 0",
    );
    w.run(&mut c, r#"CLOSE "export_1""#, None, 0, "CLOSE CURSOR");
    w.run(&mut c, "COMMIT", None, 0, "COMMIT");
    w.close(&c);
    w.analyzer.finish();
    let findings = w.analyzer.take_findings();
    let kinds: Vec<FindingKind> = findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::UnboundedSelect], "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.rows.map(|r| r.max), Some(50_000));
    assert_eq!(f.query, "SELECT id, total FROM orders");
    assert_eq!(f.table.as_deref(), Some("app.orders"));
    assert!(f.details.contains_key("fetched"));
}

#[test]
fn a_cursor_left_open_ends_with_its_transaction_unless_held() {
    let mut w = World::new();
    let mut c = World::conn(1);
    w.run(&mut c, "BEGIN", None, 0, "BEGIN");
    w.run(
        &mut c,
        "DECLARE a CURSOR FOR SELECT id FROM orders",
        None,
        0,
        "DECLARE CURSOR",
    );
    w.run(
        &mut c,
        "DECLARE b CURSOR WITH HOLD FOR SELECT total FROM orders",
        None,
        0,
        "DECLARE CURSOR",
    );
    for cursor in ["a", "b"] {
        for _ in 0..3 {
            w.run(
                &mut c,
                &format!("FETCH 5000 FROM {cursor}"),
                None,
                5_000,
                "FETCH 5000",
            );
        }
    }
    w.run(&mut c, "COMMIT", None, 0, "COMMIT");
    let findings = w.analyzer.take_findings();
    // Held back for the catalog, so finish to see them.
    assert!(findings.is_empty());
    // `b` outlives the COMMIT and fetches more before the connection ends.
    w.run(&mut c, "FETCH 5000 FROM b", None, 5_000, "FETCH 5000");
    w.close(&c);
    w.analyzer.finish();
    let findings = w.analyzer.take_findings();
    let mut rows: Vec<(String, u64)> = of_kind(&findings, FindingKind::UnboundedSelect)
        .iter()
        .map(|f| (f.query.clone(), f.rows.unwrap().max))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("SELECT id FROM orders".to_string(), 15_000),
            ("SELECT total FROM orders".to_string(), 20_000)
        ]
    );
}
