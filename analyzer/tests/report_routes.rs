//! Per-route figures from the store to every report format, baselines
//! that record them (and old ones that do not), query-count regressions,
//! and findings with a source location and a trace link. Each format is
//! pinned by an insta snapshot of one fixed report.

mod store_support;

use std::sync::Arc;

use qproxy_analyzer::detect::n_plus_one::ShapeCount;
use qproxy_analyzer::finding::{Finding, FindingKind};
use qproxy_analyzer::fingerprint::FingerprintId;
use qproxy_analyzer::report::baseline::{Baseline, BaselineUpdate};
use qproxy_analyzer::report::{self, Format, RenderOptions, Report, RunMeta, TraceUrl};
use qproxy_analyzer::routes::{RouteFigures, RouteStats, Tolerance, OTHER_ROUTE};
use qproxy_analyzer::source::SourceLocation;
use qproxy_analyzer::store::{RunSelection, Store};
use store_support::*;

const ORDER: u64 = 0x0000_0000_0000_0a01;
const ITEMS: u64 = 0x0000_0000_0000_0a02;
const USERS: u64 = 0x0000_0000_0000_0b01;
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn shape(fp: u64, count: u64) -> ShapeCount {
    let query = match fp {
        ORDER => "SELECT * FROM public.orders WHERE id = $1",
        ITEMS => "SELECT * FROM public.order_items WHERE order_id = $1 AND position = $2",
        _ => "SELECT * FROM public.users WHERE id = $1",
    };
    ShapeCount {
        fingerprint: FingerprintId(fp),
        normalized: Arc::from(query),
        count,
    }
}

/// `requests` requests of `route`, each running one order lookup and
/// `items` item lookups.
fn orders(route: &str, requests: u64, items: u64) -> RouteStats {
    let mut r = RouteStats::new(route, false);
    for _ in 0..requests {
        r.record(1 + items, &[shape(ORDER, 1), shape(ITEMS, items)]);
    }
    r
}

fn users(requests: u64) -> RouteStats {
    let mut r = RouteStats::new("users#show", false);
    for _ in 0..requests {
        r.record(4, &[shape(USERS, 4)]);
    }
    r
}

fn other(requests: u64) -> RouteStats {
    let mut r = RouteStats::new(OTHER_ROUTE, true);
    for _ in 0..requests {
        r.record(2, &[shape(USERS, 2)]);
    }
    r
}

fn report_of(routes: &[RouteStats], findings: Vec<Finding>) -> Report {
    let mut report = Report {
        runs: vec![RunMeta {
            id: 7,
            started_at: at(-60),
            ended_at: Some(at(600)),
            host: "ci-runner-1".into(),
            pid: 4242,
            version: "0.1.0".into(),
            summary: poor_summary(),
            instance: "ci-runner-1:6432".into(),
        }],
        summary: poor_summary(),
        findings,
        routes: routes.iter().map(RouteStats::figures).collect(),
    };
    report.sort_findings();
    report
}

/// What the baseline was written from: `/orders` ran 3 statements per
/// request.
fn before() -> Report {
    report_of(&[orders("/orders", 10, 2), users(5), other(3)], Vec::new())
}

/// A later run: `/orders` runs 23 per request, `users#show` is unchanged,
/// `/reports` is new, and the `other` bucket grew (never a regression).
fn after(findings: Vec<Finding>) -> Report {
    report_of(
        &[
            orders("/orders", 10, 22),
            users(5),
            orders("/reports", 2, 60),
            other(40),
        ],
        findings,
    )
}

/// An N+1 whose statement came from a known place in a traced request.
fn traced_n_plus_one() -> Finding {
    let mut f = n_plus_one();
    f.set_source(&SourceLocation {
        file: "app/models/order.rb".into(),
        line: Some(12),
        function: Some("Order#items".into()),
    });
    f.set_trace_id(TRACE);
    f
}

/// The report the snapshots pin: the later run checked against the
/// baseline.
fn regression_report() -> Report {
    let baseline = Baseline::from_report(&before());
    let mut report = after(vec![traced_n_plus_one()]);
    assert_eq!(
        baseline.report_regressions(&mut report, &Tolerance::default()),
        1
    );
    report
}

fn options() -> RenderOptions {
    RenderOptions {
        gating: vec![FindingKind::QueryCountRegression],
        trace_url: Some(
            "https://tempo.example/trace/{trace_id}"
                .parse()
                .expect("valid template"),
        ),
        ..RenderOptions::default()
    }
}

fn render(format: Format) -> String {
    report::render(&regression_report(), format, options())
}

#[test]
fn routes_text() {
    insta::assert_snapshot!(render(Format::Text));
}

#[test]
fn routes_markdown() {
    insta::assert_snapshot!(render(Format::Markdown));
}

#[test]
fn routes_json() {
    insta::assert_snapshot!(render(Format::Json));
}

#[test]
fn routes_sarif() {
    insta::assert_snapshot!(render(Format::Sarif));
}

#[test]
fn routes_junit() {
    insta::assert_snapshot!(render(Format::Junit));
}

#[test]
fn routes_html() {
    insta::assert_snapshot!(render(Format::Html));
}

#[test]
fn the_regression_names_the_route_the_figures_and_the_grown_shape() {
    let report = regression_report();
    let regressions: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::QueryCountRegression)
        .collect();
    assert_eq!(regressions.len(), 1, "only /orders: {:#?}", report.findings);
    let r = regressions[0];
    assert_eq!(
        r.request.as_ref().unwrap().route.as_deref(),
        Some("/orders")
    );
    assert_eq!(r.count, Some(23));
    assert_eq!(r.fingerprint, FingerprintId(ITEMS).to_string());
    assert_eq!(r.details["median_before"], 3);
    assert_eq!(r.details["median_after"], 23);
    let grown = r.details["grown_shapes"].as_array().unwrap();
    assert_eq!(grown.len(), 1, "the order lookup did not grow: {grown:?}");
    assert_eq!(
        (grown[0]["before"].as_f64(), grown[0]["after"].as_f64()),
        (Some(2.0), Some(22.0))
    );
    // Gated like any kind.
    assert_eq!(
        report.gating(&[FindingKind::QueryCountRegression]).count(),
        1
    );
    // The JSON report lists the routes and the finding's new fields.
    let json: serde_json::Value = serde_json::from_str(&render(Format::Json)).unwrap();
    let routes = json["routes"].as_array().unwrap();
    assert_eq!(routes[0]["route"], "/orders");
    assert_eq!(
        routes[0]["statements"],
        serde_json::json!({"median": 23, "max": 23})
    );
    assert_eq!(routes.last().unwrap()["other"], true);
    let n1 = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "n_plus_one")
        .unwrap();
    assert_eq!(n1["trace_id"], TRACE);
    assert_eq!(
        n1["source"],
        serde_json::json!({"file": "app/models/order.rb", "line": 12, "function": "Order#items"})
    );
    assert!(n1["details"].get("source").is_none() && n1["details"].get("trace_id").is_none());
    // SARIF: a physical location a code-scanning UI can annotate.
    let sarif: serde_json::Value = serde_json::from_str(&render(Format::Sarif)).unwrap();
    let located: Vec<&serde_json::Value> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["locations"][0].get("physicalLocation"))
        .collect();
    assert_eq!(
        located,
        [&serde_json::json!({
            "artifactLocation": {"uri": "app/models/order.rb", "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": 12},
        })]
    );
    // Markdown and HTML link the trace.
    let link = format!("https://tempo.example/trace/{TRACE}");
    assert!(render(Format::Markdown).contains(&format!("(<{link}>)")));
    assert!(render(Format::Html).contains(&format!("<a href=\"{link}\">")));
}

#[test]
fn unchanged_new_and_improved_routes_are_quiet() {
    let baseline = Baseline::from_report(&before());
    // The same figures: nothing to report.
    let mut same = before();
    assert_eq!(
        baseline.report_regressions(&mut same, &Tolerance::default()),
        0
    );
    // Within the tolerance (3 → 7 is +4) and fewer statements: quiet.
    let mut within = report_of(&[orders("/orders", 10, 6), users(2)], Vec::new());
    assert_eq!(
        baseline.report_regressions(&mut within, &Tolerance::default()),
        0
    );
    // A stricter tolerance catches it.
    let strict = Tolerance {
        ratio: 2.0,
        min_increase: 3,
    };
    assert_eq!(baseline.report_regressions(&mut within, &strict), 1);
}

#[test]
fn old_baselines_without_routes_load_and_report_no_regression() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    // A baseline as qproxy wrote it before routes existed.
    std::fs::write(
        &path,
        r#"{"version": 1, "findings": [{"id": "00000000000000aa", "kind": "n_plus_one",
            "fingerprint": "0000000000000001", "table": null, "query": "SELECT 1"}]}"#,
    )
    .unwrap();
    let old = Baseline::load(&path).unwrap();
    assert!(old.routes.is_empty());
    assert_eq!(old.findings.len(), 1);
    let mut report = after(Vec::new());
    assert_eq!(
        old.report_regressions(&mut report, &Tolerance::default()),
        0
    );
    // A baseline without routes writes no `routes` key, as before.
    let text = Baseline::from_findings(&[n_plus_one()]).to_json();
    assert!(!text.contains("routes"), "{text}");
}

#[test]
fn a_written_baseline_records_routes_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    let written = Baseline::from_report(&before());
    written.save(&path).unwrap();
    let read = Baseline::load(&path).unwrap();
    assert_eq!(read, written);
    let routes: Vec<(&str, u64)> = read
        .routes
        .iter()
        .map(|r| (r.route.as_str(), r.statements.median))
        .collect();
    // Sorted by route; the `other` bucket is not recorded (it mixes routes).
    assert_eq!(routes, [("/orders", 3), ("users#show", 4)]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["routes"][0]["shapes"][0]["per_request"], 2.0);
}

#[test]
fn the_update_flow_keeps_a_regressed_routes_old_figures() {
    let old = Baseline::from_report(&before());
    let current = after(Vec::new());
    let update = BaselineUpdate::for_report(Some(&old), &current, &Tolerance::default());
    let medians: Vec<(&str, u64)> = update
        .baseline
        .routes
        .iter()
        .map(|r| (r.route.as_str(), r.statements.median))
        .collect();
    // /orders regressed: the update does not accept it. /reports is new:
    // recorded. users#show: as it is now.
    assert_eq!(
        medians,
        [("/orders", 3), ("/reports", 61), ("users#show", 4)]
    );
    assert!(update.to_string().ends_with("and 3 routes"), "{update}");
    // Without an old baseline, everything is recorded as it is now.
    let fresh = BaselineUpdate::for_report(None, &current, &Tolerance::default());
    let orders: &RouteFigures = &fresh.baseline.routes[0];
    assert_eq!(
        (orders.route.as_str(), orders.statements.median),
        ("/orders", 23)
    );
    // A route the current run did not exercise is pruned.
    let only_users = report_of(&[users(5)], Vec::new());
    let pruned = BaselineUpdate::for_report(Some(&old), &only_users, &Tolerance::default());
    assert_eq!(pruned.baseline.routes.len(), 1);
}

#[test]
fn the_store_keeps_each_runs_routes_and_reports_merge_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let mut store = Store::open(&path).unwrap();
    let first = store.begin_run(&run_info("a", 0)).unwrap();
    // Running totals: a later write replaces the run's rows.
    store
        .record_routes(first, &[orders("/orders", 1, 2)])
        .unwrap();
    store
        .record_routes(first, &[orders("/orders", 10, 2), other(3)])
        .unwrap();
    let second = store.begin_run(&run_info("a", 60)).unwrap();
    store
        .record_routes(second, &[orders("/orders", 10, 22), users(5)])
        .unwrap();
    drop(store);
    let store = Store::open_read_only(&path).unwrap();
    let latest = store.load_report(&RunSelection::Latest).unwrap();
    let figures: Vec<(&str, u64, u64)> = latest
        .routes
        .iter()
        .map(|r| (r.route.as_str(), r.requests, r.statements.median))
        .collect();
    assert_eq!(figures, [("/orders", 10, 23), ("users#show", 5, 4)]);
    let all = store.load_report(&RunSelection::All).unwrap();
    let figures: Vec<(&str, bool, u64, u64, u64)> = all
        .routes
        .iter()
        .map(|r| {
            (
                r.route.as_str(),
                r.other,
                r.requests,
                r.statements.median,
                r.statements.max,
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            ("/orders", false, 20, 3, 23),
            ("users#show", false, 5, 4, 4),
            (OTHER_ROUTE, true, 3, 2, 2)
        ]
    );
    let items = &all.routes[0].shapes[0];
    assert_eq!(
        (items.per_request, items.max_per_request),
        (12.0, 22),
        "(10 × 2 + 10 × 22) / 20"
    );
    let first_only = store.load_report(&RunSelection::Id(first.0)).unwrap();
    assert_eq!(first_only.routes[0].requests, 10);
}

#[test]
fn trace_url_templates_are_checked_and_ids_encoded() {
    let url: TraceUrl = "https://tempo.example/explore?trace={trace_id}&x={trace_id}"
        .parse()
        .unwrap();
    assert_eq!(
        url.link("ab12"),
        "https://tempo.example/explore?trace=ab12&x=ab12"
    );
    // A stored id is client data: it cannot break out of the URL.
    assert_eq!(
        url.link("a\"b <c>/d"),
        "https://tempo.example/explore?trace=a%22b%20%3Cc%3E%2Fd&x=a%22b%20%3Cc%3E%2Fd"
    );
    for bad in [
        "https://tempo.example/trace",
        "ftp://tempo.example/{trace_id}",
        "javascript:alert(1)//{trace_id}",
        "https://tempo.example/{trace_id} x",
        "https://tempo.example/{trace_id}\"",
    ] {
        assert!(bad.parse::<TraceUrl>().is_err(), "{bad}");
    }
}
