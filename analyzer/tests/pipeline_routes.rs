//! Per-route figures, source locations and trace ids through the whole
//! pipeline (`Analyzer::process`): synthetic events as the proxy's tracker
//! emits them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, SessionEvent, TxStatus};
use qproxy_analyzer::finding::{Finding, FindingKind};
use qproxy_analyzer::pipeline::{Analyzer, AnalyzerConfig};
use qproxy_analyzer::routes::RouteStats;
use qproxy_analyzer::values::value_hash;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

struct World {
    analyzer: Analyzer,
    now: Instant,
    clock: SystemTime,
    tx: TxStatus,
}

impl World {
    fn new(config: AnalyzerConfig) -> World {
        World {
            analyzer: Analyzer::new(config),
            now: Instant::now(),
            clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            tx: TxStatus::Idle,
        }
    }

    /// Runs `sql` on connection 1 with one bound parameter, returning `rows`.
    fn run(&mut self, sql: &str, param: i64, rows: u64, tag: &str) {
        let ms = Duration::from_millis(1);
        let event = QueryEvent {
            connection_id: 1,
            sql: Arc::from(sql),
            statement_index: 0,
            statement_name: None,
            prepared_at: None,
            protocol: Protocol::Extended,
            params_hash: Some(param as u64),
            param_hashes: [Some(value_hash(param.to_string().as_bytes(), false))]
                .into_iter()
                .collect(),
            result_hashes: Vec::new(),
            started_at: self.clock + ms,
            duration: ms,
            rows,
            outcome: Outcome::Complete { tag: tag.into() },
            tx_status: self.tx,
            application_name: None,
            database: Some("shop".into()),
            user: Some("app".into()),
            offset: None,
            text_hold: None,
        };
        self.clock += 2 * ms;
        self.now += 2 * ms;
        self.tx = match tag {
            "BEGIN" => TxStatus::InTransaction,
            "COMMIT" => TxStatus::Idle,
            _ => self.tx,
        };
        self.analyzer.process(&SessionEvent::Query(event), self.now);
    }

    /// One request of `route` (named by a request id) in a transaction:
    /// an order lookup and `items` item lookups.
    fn orders_request(&mut self, id: &str, route: &str, items: i64) {
        let tag = format!("/*request_id='{id}',route='{route}'*/");
        self.run(&format!("BEGIN {tag}"), 0, 0, "BEGIN");
        self.run(
            &format!("SELECT * FROM orders WHERE id = $1 {tag}"),
            1,
            1,
            "SELECT 1",
        );
        for i in 0..items {
            self.run(
                &format!("SELECT * FROM items WHERE order_id = $1 AND n = $2 {tag}"),
                i,
                1,
                "SELECT 1",
            );
        }
        self.run(&format!("COMMIT {tag}"), 0, 0, "COMMIT");
    }

    fn findings(&mut self) -> Vec<Finding> {
        self.analyzer.finish();
        self.analyzer.take_findings()
    }
}

fn route<'a>(routes: &'a [RouteStats], name: &str) -> &'a RouteStats {
    routes
        .iter()
        .find(|r| r.route == name && !r.other)
        .unwrap_or_else(|| panic!("no route {name} in {routes:?}"))
}

#[test]
fn named_requests_count_their_work_statements_per_route() {
    let mut w = World::new(AnalyzerConfig::default());
    assert_eq!(w.analyzer.take_routes(), None, "nothing recorded yet");
    for i in 0..4 {
        w.orders_request(&format!("req-{i}"), "/orders", 2);
    }
    w.orders_request("req-big", "/orders", 22);
    // A route label without a request id is grouped by a fallback (here
    // its transaction): not counted, so load cannot skew the figure.
    w.run("BEGIN /*route='/untagged'*/", 0, 0, "BEGIN");
    w.run("SELECT 1 /*route='/untagged'*/", 0, 1, "SELECT 1");
    w.run("COMMIT /*route='/untagged'*/", 0, 0, "COMMIT");
    // A named request without a route has no figure either.
    w.run("SELECT 2 /*request_id='no-route'*/", 0, 1, "SELECT 1");
    w.analyzer.finish();
    let routes = w.analyzer.take_routes().expect("routes changed");
    assert_eq!(routes.len(), 1, "{routes:?}");
    let orders = route(&routes, "/orders").figures();
    assert_eq!(orders.requests, 5);
    // BEGIN and COMMIT are bookkeeping: 1 + 2 statements per request.
    assert_eq!(orders.statements.median, 3);
    assert_eq!(orders.statements.max, 23);
    let items = &orders.shapes[0];
    assert!(items.query.contains("items"), "{items:?}");
    assert_eq!(items.per_request, 6.0, "(4 × 2 + 22) / 5");
    assert_eq!(items.max_per_request, 22);
    assert_eq!(orders.shapes[1].per_request, 1.0);
    assert_eq!(w.analyzer.take_routes(), None, "unchanged since");
}

#[test]
fn routes_past_the_cap_are_counted_as_other() {
    let mut w = World::new(AnalyzerConfig {
        max_routes: 1,
        ..AnalyzerConfig::default()
    });
    w.orders_request("a", "/a", 1);
    w.orders_request("b", "/b", 1);
    w.orders_request("c", "/c", 4);
    w.analyzer.finish();
    let routes = w.analyzer.take_routes().unwrap();
    let names: Vec<(&str, bool, u64)> = routes
        .iter()
        .map(|r| (r.route.as_str(), r.other, r.requests))
        .collect();
    assert_eq!(names, [("/a", false, 1), ("other", true, 2)]);
}

#[test]
fn findings_carry_the_source_location_and_trace_of_their_statement() {
    let mut w = World::new(AnalyzerConfig::default());
    let tag = format!(
        "/*code.filepath='shop%2Forders.py',code.lineno='42',code.function='list_items',\
         route='/orders',traceparent='00-{TRACE}-b7ad6b7169203331-01'*/"
    );
    w.run(
        &format!("SELECT * FROM orders WHERE id = $1 {tag}"),
        1,
        1,
        "SELECT 1",
    );
    for i in 0..6 {
        w.run(
            &format!("SELECT * FROM items WHERE order_id = $1 {tag}"),
            i,
            1,
            "SELECT 1",
        );
    }
    // After a pause (the connection's idle gap), an unbounded SELECT
    // tagged with a Rails source location and no trace: its own request.
    w.clock += Duration::from_secs(1);
    w.run(
        "SELECT * FROM events WHERE kind = $1 /*source_location='app%2Fmodels%2Fevent.rb%3A7%3Ain%20%27all%27'*/",
        1,
        5_000,
        "SELECT 5000",
    );
    let findings = w.findings();
    let n1 = findings
        .iter()
        .find(|f| f.kind == FindingKind::NPlusOne)
        .unwrap_or_else(|| panic!("no N+1 in {findings:#?}"));
    assert_eq!(n1.trace_id(), Some(TRACE));
    let source = n1.source().expect("a source location");
    assert_eq!(
        (
            source.file.as_str(),
            source.line,
            source.function.as_deref()
        ),
        ("shop/orders.py", Some(42), Some("list_items"))
    );
    let unbounded = findings
        .iter()
        .find(|f| f.kind == FindingKind::UnboundedSelect)
        .unwrap_or_else(|| panic!("no unbounded SELECT in {findings:#?}"));
    assert_eq!(unbounded.trace_id(), None);
    let source = unbounded.source().expect("a source location");
    assert_eq!(
        (
            source.file.as_str(),
            source.line,
            source.function.as_deref()
        ),
        ("app/models/event.rb", Some(7), Some("all"))
    );
    // Where and which trace never change what the finding is.
    assert_eq!(n1.id, n1.compute_id());
}
