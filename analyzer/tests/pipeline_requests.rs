//! The request and timing detectors through the whole pipeline
//! (`Analyzer::process`): synthetic events as the proxy's tracker emits
//! them, for each kind a planted case and its look-alike control.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, SessionEvent, TxStatus};
use qproxy_analyzer::finding::{Finding, FindingKind, Severity};
use qproxy_analyzer::pipeline::{Analyzer, AnalyzerConfig};
use qproxy_analyzer::values::value_hash;

/// One simulated client connection with its own clock: each statement
/// takes `cost` and the client sends the next one `think` after the reply.
struct Client {
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
        World::with(AnalyzerConfig::default())
    }

    fn with(config: AnalyzerConfig) -> World {
        World {
            analyzer: Analyzer::new(config),
            now: Instant::now(),
        }
    }

    fn client(&self, id: u64) -> Client {
        Client {
            id,
            clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            tx: TxStatus::Idle,
        }
    }

    /// Runs `sql` with one bound parameter `param` (extended protocol),
    /// `think` after the client's previous statement, taking `cost`.
    fn run(
        &mut self,
        c: &mut Client,
        sql: &str,
        param: Option<i64>,
        tag: &str,
        think: Duration,
        cost: Duration,
    ) {
        let started_at = c.clock + think;
        let param_hashes: smallvec::SmallVec<[Option<u64>; 4]> = param
            .map(|p| Some(value_hash(p.to_string().as_bytes(), false)))
            .into_iter()
            .collect();
        let event = QueryEvent {
            connection_id: c.id,
            sql: Arc::from(sql),
            statement_index: 0,
            statement_name: None,
            prepared_at: None,
            protocol: Protocol::Extended,
            params_hash: Some(param.map_or(0, |p| p as u64)),
            param_hashes,
            result_hashes: Vec::new(),
            started_at,
            duration: cost,
            rows: 0,
            outcome: Outcome::Complete { tag: tag.into() },
            tx_status: c.tx,
            application_name: None,
            database: Some("shop".into()),
            user: Some("app".into()),
            offset: None,
            text_hold: None,
        };
        c.clock = started_at + cost;
        c.tx = match tag {
            "BEGIN" => TxStatus::InTransaction,
            "COMMIT" | "ROLLBACK" => TxStatus::Idle,
            _ => c.tx,
        };
        self.now += think + cost;
        self.analyzer.process(&SessionEvent::Query(event), self.now);
    }

    /// A quick statement (1 ms, sent 1 ms after the previous reply).
    fn quick(&mut self, c: &mut Client, sql: &str, param: Option<i64>, tag: &str) {
        self.run(c, sql, param, tag, MS, MS);
    }

    fn close(&mut self, c: &Client, after: Duration) {
        self.analyzer.process(
            &SessionEvent::Closed {
                connection_id: c.id,
                at: c.clock + after,
                tx_status: Some(c.tx),
            },
            self.now,
        );
    }

    fn findings(&mut self) -> Vec<Finding> {
        self.analyzer.finish();
        self.analyzer.take_findings()
    }
}

const MS: Duration = Duration::from_millis(1);

fn tag(request: &str, route: &str) -> String {
    format!("/*framework='django%3A4.2',request_id='{request}',route='{route}'*/")
}

fn of_kind(findings: &[Finding], kind: FindingKind) -> Vec<&Finding> {
    findings.iter().filter(|f| f.kind == kind).collect()
}

#[test]
fn n_plus_one_write_loop_versus_one_set_based_insert_and_three_singles() {
    let mut w = World::new();
    let mut c = w.client(1);
    let t = tag("w-1", "cart.save");
    for item in 0..8 {
        w.quick(
            &mut c,
            &format!("INSERT INTO items (cart_id, sku) VALUES (1, $1) {t}"),
            Some(item),
            "INSERT 0 1",
        );
    }
    // Controls: one multi-row INSERT, three single inserts, a chunked bulk
    // load (500 rows a statement), and a loop of identical reads.
    let t = tag("w-2", "cart.bulk");
    w.quick(
        &mut c,
        &format!("INSERT INTO items (cart_id, sku) VALUES (1, $1), (1, $2), (1, $3) {t}"),
        Some(1),
        "INSERT 0 3",
    );
    let t = tag("w-3", "cart.three");
    for item in 0..3 {
        w.quick(
            &mut c,
            &format!("UPDATE items SET qty = qty + 1 WHERE id = $1 {t}"),
            Some(item),
            "UPDATE 1",
        );
    }
    let t = tag("w-4", "import.chunks");
    for chunk in 0..6 {
        w.quick(
            &mut c,
            &format!("INSERT INTO events (kind) SELECT unnest($1::text[]) {t}"),
            Some(chunk),
            "INSERT 0 500",
        );
    }
    let findings = w.findings();
    let writes = of_kind(&findings, FindingKind::NPlusOneWrite);
    assert_eq!(writes.len(), 1, "{findings:#?}");
    let f = writes[0];
    assert_eq!(f.count, Some(8));
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(
        f.request.as_ref().unwrap().route.as_deref(),
        Some("cart.save")
    );
    assert_eq!(f.table.as_deref(), Some("items"));
    assert_eq!(f.details["statement"], "insert");
    assert_eq!(f.details["round_trips"], 8);
    let suggestion = f.suggestion.as_deref().unwrap();
    assert!(suggestion.contains("bulk_create"), "{suggestion}");
    assert!(
        of_kind(&findings, FindingKind::NPlusOne).is_empty()
            && of_kind(&findings, FindingKind::RepeatedQuery).is_empty(),
        "writes are never read N+1 children: {findings:#?}"
    );
}

#[test]
fn a_select_whose_with_clause_writes_is_never_a_read_n_plus_one_child() {
    let mut w = World::new();
    let mut c = w.client(1);
    let t = tag("cte-1", "jobs.claim");
    for job in 0..8 {
        w.quick(
            &mut c,
            &format!(
                "WITH claimed AS (UPDATE jobs SET taken = true WHERE id = $1 RETURNING id) \
                 SELECT id FROM claimed {t}"
            ),
            Some(job),
            "SELECT 1",
        );
    }
    let findings = w.findings();
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn too_many_queries_over_the_budget_not_within_it_and_transaction_control_not_counted() {
    let mut w = World::new();
    let mut c = w.client(1);
    // 55 statements of work in a transaction, each a distinct lookup of
    // a different table, so no N+1 hides the budget finding.
    let t = tag("b-1", "dashboard.show");
    w.quick(&mut c, &format!("BEGIN {t}"), None, "BEGIN");
    for i in 0..55 {
        w.quick(
            &mut c,
            &format!("SELECT * FROM widget_{} WHERE id = 1 {t}", i % 11),
            None,
            "SELECT 1",
        );
    }
    w.quick(&mut c, &format!("COMMIT {t}"), None, "COMMIT");
    // 30 statements plus 30 BEGIN/COMMIT pairs: 30 counted.
    let t = tag("b-2", "settings.index");
    for i in 0..30 {
        w.quick(&mut c, &format!("BEGIN {t}"), None, "BEGIN");
        w.quick(
            &mut c,
            &format!("SELECT * FROM setting_{} WHERE id = 1 {t}", i % 10),
            None,
            "SELECT 1",
        );
        w.quick(&mut c, &format!("COMMIT {t}"), None, "COMMIT");
    }
    let findings = w.findings();
    let over = of_kind(&findings, FindingKind::TooManyQueries);
    assert_eq!(over.len(), 1, "{findings:#?}");
    let f = over[0];
    assert_eq!(f.count, Some(55));
    assert_eq!(f.details["statements"], 55);
    assert_eq!(f.details["budget"], 50);
    let top = f.details["top_shapes"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    assert_eq!(top[0]["count"], 5);
    assert!(top
        .iter()
        .all(|s| !s["query"].as_str().unwrap().starts_with("BEGIN")));
    assert_eq!(f.fingerprint, top[0]["fingerprint"].as_str().unwrap());
    assert_eq!(f.id, f.compute_id());
}

#[test]
fn idle_in_transaction_at_the_next_statement_and_at_close_but_not_quick_ones() {
    let mut w = World::new();
    let t = tag("i-1", "orders.pay");
    let mut c = w.client(1);
    w.quick(&mut c, &format!("BEGIN {t}"), None, "BEGIN");
    w.quick(
        &mut c,
        &format!("SELECT * FROM orders WHERE id = $1 FOR UPDATE {t}"),
        Some(7),
        "SELECT 1",
    );
    // The application calls a payment API for 1.5 s.
    w.run(
        &mut c,
        &format!("UPDATE orders SET paid = true WHERE id = $1 {t}"),
        Some(7),
        "UPDATE 1",
        Duration::from_millis(1500),
        MS,
    );
    w.quick(&mut c, &format!("COMMIT {t}"), None, "COMMIT");
    // A quick transaction, and a long pause outside any transaction.
    let t = tag("i-2", "orders.show");
    w.quick(&mut c, &format!("BEGIN {t}"), None, "BEGIN");
    w.run(
        &mut c,
        &format!("SELECT * FROM orders WHERE id = $1 {t}"),
        Some(8),
        "SELECT 1",
        Duration::from_millis(50),
        MS,
    );
    w.quick(&mut c, &format!("COMMIT {t}"), None, "COMMIT");
    w.run(
        &mut c,
        &format!("SELECT 1 {t}"),
        None,
        "SELECT 1",
        Duration::from_secs(5),
        MS,
    );
    // A transaction left open until the connection closes.
    let mut left_open = w.client(2);
    w.quick(&mut left_open, "BEGIN", None, "BEGIN");
    w.quick(
        &mut left_open,
        "SELECT * FROM carts WHERE id = $1",
        Some(1),
        "SELECT 1",
    );
    w.close(&left_open, Duration::from_secs(3));
    w.close(&c, Duration::from_secs(3));

    let findings = w.findings();
    let mut idle = of_kind(&findings, FindingKind::IdleInTransaction);
    idle.sort_by_key(|f| f.count);
    assert_eq!(idle.len(), 2, "{findings:#?}");
    let paid = idle[0];
    assert_eq!(paid.count, Some(1500));
    assert_eq!(paid.severity, Severity::Error, "locks were held");
    assert!(paid.query.contains("FOR UPDATE"), "{}", paid.query);
    assert_eq!(paid.details["locks_taken"], true);
    assert_eq!(
        paid.details["lock_statement"],
        "SELECT ... FOR UPDATE/SHARE"
    );
    assert_eq!(paid.details["ended_by"], "next_statement");
    assert!(paid.details["next_statement"]["query"]
        .as_str()
        .unwrap()
        .starts_with("UPDATE orders"));
    assert_eq!(
        paid.request.as_ref().unwrap().route.as_deref(),
        Some("orders.pay")
    );
    assert!(paid
        .suggestion
        .as_deref()
        .unwrap()
        .contains("transaction.atomic()"));
    let open = idle[1];
    assert_eq!(open.count, Some(3000));
    assert_eq!(open.severity, Severity::Warning);
    assert_eq!(open.details["ended_by"], "connection_closed");
    assert_eq!(open.details["locks_taken"], false);
}

#[test]
fn slow_query_sustained_versus_fast_lookups_with_timings_and_plan_seam() {
    let mut w = World::new();
    let mut c = w.client(1);
    for i in 0..4 {
        w.run(
            &mut c,
            "SELECT pg_sleep($1)",
            Some(i),
            "SELECT 1",
            MS,
            Duration::from_millis(150 + i as u64),
        );
    }
    for id in 0..100 {
        w.quick(
            &mut c,
            "SELECT * FROM users WHERE id = $1",
            Some(id),
            "SELECT 1",
        );
    }
    // Transaction control is never a slow query, however long it takes.
    for _ in 0..3 {
        w.quick(&mut c, "BEGIN", None, "BEGIN");
        w.run(
            &mut c,
            "COMMIT",
            None,
            "COMMIT",
            MS,
            Duration::from_millis(400),
        );
    }
    let findings = w.analyzer.take_findings();
    let slow = of_kind(&findings, FindingKind::SlowQuery);
    assert_eq!(slow.len(), 1, "{findings:#?}");
    let f = slow[0];
    assert!(f.query.contains("pg_sleep"));
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.occurrences, 4);
    assert_eq!(f.count, Some(4));
    assert_eq!(f.details["max_ms"], 153.0);
    let p95 = f.details["p95_ms"].as_f64().unwrap();
    assert!((145.0..=153.0).contains(&p95), "{p95}");
    assert!(f.details["plan"].is_null());
    assert!(f.details["plan_note"]
        .as_str()
        .unwrap()
        .contains("not fetched"));
    assert_eq!(f.id, f.compute_id());

    // A later flush with more slow executions counts only the new ones.
    w.run(
        &mut c,
        "SELECT pg_sleep($1)",
        Some(9),
        "SELECT 1",
        MS,
        Duration::from_millis(160),
    );
    let later = w.analyzer.take_findings();
    let f = of_kind(&later, FindingKind::SlowQuery)[0];
    assert_eq!((f.occurrences, f.count), (1, Some(5)));
}
