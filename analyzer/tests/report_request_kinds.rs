//! The request and timing kinds (`n_plus_one_write`, `slow_query`,
//! `too_many_queries`, `idle_in_transaction`) in every report format,
//! pinned by insta snapshots: each format shows what their typed details
//! say (round trips, timings and the plan note, top shapes, idle time and
//! locks), and a merge keeps the details of the worst sighting.

mod store_support;

use qproxy_analyzer::detect::idle_in_transaction::{IdleInTransactionDetails, StatementRef};
use qproxy_analyzer::detect::n_plus_one_write::NPlusOneWriteDetails;
use qproxy_analyzer::detect::slow_query::{SlowQueryDetails, PLAN_NOT_FETCHED};
use qproxy_analyzer::detect::too_many_queries::{TooManyQueriesDetails, TopShape};
use qproxy_analyzer::finding::{details_map, Finding, FindingKind, RowStats, Severity};
use qproxy_analyzer::report::{self, Format, RenderOptions, Report, RunMeta};
use store_support::*;

fn finding(kind: FindingKind, severity: Severity, query: &str) -> Finding {
    Finding {
        id: String::new(),
        kind,
        severity,
        fingerprint: format!("{:016x}", 0xfeed_0000_u64 + kind as u64),
        query: query.into(),
        table: None,
        columns: Vec::new(),
        count: None,
        occurrences: 1,
        request: None,
        parent: None,
        rows: None,
        suggestion: None,
        database: None,
        details: Default::default(),
        first_seen: at(0),
        last_seen: at(0),
    }
}

fn n_plus_one_write() -> Finding {
    let mut f = finding(
        FindingKind::NPlusOneWrite,
        Severity::Warning,
        "INSERT INTO public.cart_items (cart_id, sku) VALUES ($1, $2)",
    );
    f.table = Some("public.cart_items".into());
    f.count = Some(12);
    f.occurrences = 4;
    f.request = request("req-cart-1", "cart.checkout");
    f.rows = Some(RowStats { max: 0 });
    f.suggestion = Some(
        "12 single-row INSERTs of one shape in a single request, 12 round trips: insert the rows \
         in one statement. Django: bulk_create(objs) instead of save() or create() per object."
            .into(),
    );
    f.details = details_map(&NPlusOneWriteDetails {
        statement: "insert".into(),
        distinct_parameters: 12,
        round_trips: 12,
        pipelined_executions: 0,
        set_based_executions: 0,
        total_duration_ms: 9.5,
        parent_evidence: "no earlier query in the request returned the parameter values these \
                          executions used"
            .into(),
        grouping: None,
    });
    f.id = f.compute_id();
    f
}

fn slow_query() -> Finding {
    let mut f = finding(
        FindingKind::SlowQuery,
        Severity::Warning,
        "SELECT sum(total) FROM public.orders WHERE created_at > $1",
    );
    f.table = Some("public.orders".into());
    f.database = Some("shop".into());
    f.count = Some(40);
    f.occurrences = 38;
    f.suggestion = Some("p95 412 ms over 40 executions: run EXPLAIN (ANALYZE, BUFFERS).".into());
    f.details = details_map(&SlowQueryDetails {
        count: 40,
        slow_count: 38,
        p50_ms: 305.5,
        p95_ms: 412.0,
        max_ms: 498.25,
        mean_ms: 311.0,
        threshold_ms: 100.0,
        reason: "p95".into(),
        measured: "at the proxy".into(),
        plan: None,
        plan_note: PLAN_NOT_FETCHED.into(),
    });
    f.id = f.compute_id();
    f
}

fn too_many_queries() -> Finding {
    let mut f = finding(
        FindingKind::TooManyQueries,
        Severity::Warning,
        "SELECT value FROM public.settings WHERE key = $1",
    );
    f.count = Some(73);
    f.occurrences = 6;
    f.request = request("req-dash-9", "dashboard.show");
    f.suggestion = Some("73 statements in one request, over the budget of 50.".into());
    f.details = details_map(&TooManyQueriesDetails {
        statements: 73,
        budget: 50,
        distinct_shapes: 9,
        untracked_statements: 0,
        top_shapes: vec![
            TopShape {
                fingerprint: f.fingerprint.clone(),
                query: f.query.clone(),
                count: 40,
            },
            TopShape {
                fingerprint: "00000000000000aa".into(),
                query: "SELECT id FROM public.widgets WHERE id = $1".into(),
                count: 20,
            },
        ],
        counted: "application statements only".into(),
    });
    f.id = f.compute_id();
    f
}

fn idle_in_transaction() -> Finding {
    let mut f = finding(
        FindingKind::IdleInTransaction,
        Severity::Error,
        "SELECT id, total FROM public.orders WHERE id = $1 FOR UPDATE",
    );
    f.count = Some(1830);
    f.occurrences = 2;
    f.request = request("req-pay-3", "orders.pay");
    f.suggestion =
        Some("The transaction stayed open 1.8 s while the application sent nothing.".into());
    f.details = details_map(&IdleInTransactionDetails {
        idle_ms: 1830,
        threshold_ms: 1000,
        locks_taken: true,
        lock_statement: Some("SELECT ... FOR UPDATE/SHARE".into()),
        transaction_failed: false,
        ended_by: "next_statement".into(),
        next_statement: Some(StatementRef {
            fingerprint: "00000000000000bb".into(),
            query: "UPDATE public.orders SET paid = $1 WHERE id = $2".into(),
        }),
        measured: "as seen by the proxy".into(),
    });
    f.id = f.compute_id();
    f
}

fn request_kinds_report() -> Report {
    let mut report = Report {
        runs: vec![RunMeta {
            id: 4,
            started_at: at(-60),
            ended_at: Some(at(600)),
            instance: "ci-runner-1:6432".into(),
            host: "ci-runner-1".into(),
            pid: 4242,
            version: "0.1.0".into(),
            summary: poor_summary(),
        }],
        summary: poor_summary(),
        findings: vec![
            n_plus_one_write(),
            slow_query(),
            too_many_queries(),
            idle_in_transaction(),
        ],
    };
    report.sort_findings();
    report
}

fn options() -> RenderOptions {
    RenderOptions {
        gating: vec![FindingKind::SlowQuery, FindingKind::IdleInTransaction],
        ..RenderOptions::default()
    }
}

#[test]
fn request_kinds_text() {
    insta::assert_snapshot!(report::render_text(&request_kinds_report(), false));
}

#[test]
fn request_kinds_markdown() {
    insta::assert_snapshot!(report::render(
        &request_kinds_report(),
        Format::Markdown,
        options()
    ));
}

#[test]
fn request_kinds_json() {
    insta::assert_snapshot!(report::render_json(&request_kinds_report()));
}

#[test]
fn request_kinds_sarif() {
    insta::assert_snapshot!(report::render(
        &request_kinds_report(),
        Format::Sarif,
        options()
    ));
}

#[test]
fn request_kinds_junit() {
    insta::assert_snapshot!(report::render(
        &request_kinds_report(),
        Format::Junit,
        options()
    ));
}

#[test]
fn request_kinds_html() {
    insta::assert_snapshot!(report::render(
        &request_kinds_report(),
        Format::Html,
        options()
    ));
}

#[test]
fn every_format_shows_the_evidence_of_each_kind() {
    let r = request_kinds_report();
    for format in Format::ALL {
        let out = report::render(&r, format, options());
        for needle in [
            "n_plus_one_write",
            "slow_query",
            "too_many_queries",
            "idle_in_transaction",
        ] {
            assert!(out.contains(needle), "{format}: no {needle}");
        }
        if format == Format::Json {
            continue;
        }
        // The SARIF rules carry help text; the prose formats the facts.
        for needle in ["412", "73 statements", "1830"] {
            assert!(out.contains(needle), "{format}: no {needle}");
        }
        if format != Format::Sarif {
            assert!(out.contains("12 one-row round trips"), "{format}");
            assert!(out.contains("plans are not fetched"), "{format}");
        }
    }
}

#[test]
fn a_merge_keeps_the_details_of_the_worst_sighting() {
    let worst = too_many_queries();
    let mut smaller = too_many_queries();
    smaller.count = Some(55);
    smaller.details["statements"] = 55.into();
    smaller.suggestion = Some("55 statements in one request".into());
    // Smaller after worse: the worse one's details stay.
    let mut merged = worst.clone();
    merged.merge(&smaller);
    assert_eq!(merged.count, Some(73));
    assert_eq!(merged.details["statements"], 73);
    assert_eq!(merged.occurrences, 12);
    assert_eq!(merged.suggestion, worst.suggestion);
    // Worse after smaller: its details replace the smaller one's.
    let mut merged = smaller.clone();
    merged.merge(&worst);
    assert_eq!(merged.details["statements"], 73);
    assert_eq!(merged.suggestion, worst.suggestion);
    // The first-wave kinds still merge details key by key from the latest.
    let mut n1 = n_plus_one();
    let mut later = n_plus_one();
    later.count = Some(1);
    later.details.insert("distinct_parameters".into(), 1.into());
    n1.merge(&later);
    assert_eq!(n1.details["distinct_parameters"], 1);
}
