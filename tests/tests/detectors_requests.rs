//! The request and timing detectors end to end: psycopg 3 workloads
//! (`tests/python/request_workloads.py`) through the real `qproxy` binary in front of a real
//! PostgreSQL, then `qproxy report --format json` over the findings store.
//!
//! Each test plants one kind of problem next to its look-alike control and checks that the
//! report holds exactly the planted findings (a missing one is a recall failure, an extra one a
//! precision failure):
//!
//! | kind | planted | control |
//! | --- | --- | --- |
//! | `n_plus_one_write` | 8 single-row INSERTs (Django), 6 UPDATEs (Rails), one request each | one multi-row INSERT; 3 single INSERTs; `executemany` (pipelined); a loop of `WITH .. UPDATE .. SELECT` is no read N+1; a read N+1 stays `n_plus_one` |
//! | `too_many_queries` | 56 statements in one request | 30 statements, each in its own transaction (BEGIN/COMMIT not counted) |
//! | `idle_in_transaction` | 1.3 s between a `FOR UPDATE` and the UPDATE; a transaction left open until close | the same transaction without the pause; a pause outside any transaction |
//! | `slow_query` | `pg_sleep(0.15)` four times | 30 primary-key lookups |
//!
//! The tables are small (no unindexed or unbounded findings), and each test has its own
//! database, proxy and store. Default thresholds throughout: N+1 write 5, budget 50, idle 1 s,
//! slow 100 ms at p95.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use qproxy_tests::programs::{python, python_script, run};
use qproxy_tests::report::{self, all_findings, describe_findings, fail_on_exit_code, report_json};
use qproxy_tests::{mode, Mode, PgCluster, Proxy, ProxyOptions, SUPERUSER};
use serde_json::Value;

/// The database every test database is copied from.
const TEMPLATE: &str = "requests_template";

/// Small tables: no detector that needs a large table can fire.
const SCHEMA: &str = "
CREATE TABLE carts (id int PRIMARY KEY, owner text NOT NULL);
CREATE TABLE cart_items (id serial PRIMARY KEY, cart_id int NOT NULL, sku text NOT NULL,
    qty int NOT NULL DEFAULT 1);
CREATE TABLE orders (id int PRIMARY KEY, total numeric NOT NULL, paid boolean NOT NULL DEFAULT false);
CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO carts SELECT g, 'owner ' || g FROM generate_series(1, 100) g;
INSERT INTO orders SELECT g, g * 10, false FROM generate_series(1, 100) g;
INSERT INTO settings SELECT 'key' || g, 'value' || g FROM generate_series(1, 20) g;
ANALYZE;
";

fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
        cluster
            .create_database(TEMPLATE)
            .expect("creating the template database");
        cluster
            .psql_superuser(TEMPLATE, SCHEMA)
            .expect("loading the schema");
        cluster
    })
}

/// Whether python3 with psycopg 3 is there (the workloads need it).
fn has_psycopg() -> bool {
    let mut cmd = python(std::path::Path::new("-c"), &["import psycopg"]);
    run(&mut cmd, Duration::from_secs(30)).is_ok_and(|o| o.status.success())
}

/// Runs `scenario` of the psycopg workload through a fresh proxy in front of a fresh copy of
/// the template, waits until the proxy's `/metrics` counts a finding of `kind` (the counter is
/// pre-seeded at 0 and grows as findings are flushed), stops the proxy (SIGTERM flushes every
/// open request) and returns the report and the gate exit code of `--fail-on kind`. `None`
/// when the test cannot run here (direct mode, no psycopg).
fn run_scenario(scenario: &'static str, kind: &str) -> Option<(Value, i32)> {
    if mode() == Mode::Direct {
        eprintln!("{scenario}: skipped in direct mode (the detectors live in the proxy)");
        return None;
    }
    if !has_psycopg() {
        eprintln!("{scenario}: skipped (python3 with psycopg 3 not installed)");
        return None;
    }
    let cluster = cluster();
    let db = format!("req_{scenario}");
    cluster
        .psql_superuser(
            "postgres",
            &format!("CREATE DATABASE \"{db}\" TEMPLATE \"{TEMPLATE}\";"),
        )
        .expect("creating the test database");
    let options = ProxyOptions {
        shutdown_grace_secs: Some(5),
        ..ProxyOptions::new(cluster.url(SUPERUSER, "postgres", "disable"))
    };
    let mut proxy = Proxy::start(&options).unwrap_or_else(|e| panic!("starting qproxy: {e:#}"));
    let url = proxy.url(SUPERUSER, &db, "disable");
    let script = python_script("request_workloads.py");
    let mut cmd = python(&script, &[&url, scenario]);
    let out = run(&mut cmd, Duration::from_secs(120)).expect("running python");
    assert!(
        out.status.success(),
        "{scenario} workload failed: {out}\n{}",
        proxy.log()
    );
    wait_for_metric(&proxy, kind);
    proxy
        .stop(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{scenario}: {e:#}"));
    let store: PathBuf = proxy.store_path();
    let report =
        report_json(&store, "latest").unwrap_or_else(|e| panic!("reading the report: {e:#}"));
    let gate = fail_on_exit_code(&store, kind).expect("qproxy report --fail-on");
    Some((report, gate))
}

/// Polls `/metrics` until `qproxy_findings_total{kind="KIND"}` is above zero.
fn wait_for_metric(proxy: &Proxy, kind: &str) {
    let series = format!("qproxy_findings_total{{kind=\"{kind}\"}} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok((200, body)) = proxy.admin_get("/metrics") {
            let count = body
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .and_then(|v| v.trim().parse::<f64>().ok());
            if count.is_some_and(|c| c > 0.0) {
                return;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no {series} > 0 within 30 s; last scrape:\n{last}");
}

/// Checks that `report` holds exactly one finding per `(kind, route)` in `planted` and nothing
/// else, prints the `detector-score:` line the suite's precision and recall are tallied from,
/// and returns the findings in `planted` order.
fn verify_exact<'a>(test: &str, report: &'a Value, planted: &[(&str, &str)]) -> Vec<&'a Value> {
    report::verify_exact(
        test,
        report,
        all_findings(report),
        planted,
        |(kind, route), f| f["kind"] == *kind && f["request"]["route"] == *route,
    )
}

fn text<'a>(f: &'a Value, key: &str) -> &'a str {
    f[key].as_str().unwrap_or_default()
}

#[test]
fn n_plus_one_write_loops_but_not_bulk_pipelined_or_few_writes() {
    let Some((report, gate)) = run_scenario("writes", "n_plus_one_write") else {
        return;
    };
    assert_eq!(gate, 1, "--fail-on n_plus_one_write gates");
    let found = verify_exact(
        "n_plus_one_write",
        &report,
        &[
            ("n_plus_one_write", "cart.save"),
            ("n_plus_one_write", "carts#update"),
            ("n_plus_one", "cart.show"),
        ],
    );
    let (insert, update, read) = (found[0], found[1], found[2]);
    assert_eq!(insert["count"], 8);
    assert_eq!(insert["severity"], "warning");
    assert!(text(insert, "query").starts_with("INSERT INTO cart_items"));
    assert_eq!(insert["details"]["statement"], "insert");
    assert_eq!(insert["details"]["round_trips"], 8);
    assert_eq!(insert["details"]["distinct_parameters"], 8);
    assert!(
        text(insert, "suggestion").contains("bulk_create"),
        "Django idiom: {insert:#}"
    );
    assert!(text(insert, "suggestion").contains("multi-row `INSERT"));

    assert_eq!(update["count"], 6);
    assert_eq!(update["details"]["statement"], "update");
    assert!(
        text(update, "suggestion").contains("update_all"),
        "{update:#}"
    );
    assert!(
        text(&update["parent"], "query").starts_with("SELECT id FROM cart_items"),
        "the ids came from the earlier SELECT: {update:#}"
    );
    assert_eq!(read["count"], 6);
}

#[test]
fn too_many_queries_over_the_budget_but_not_within_it() {
    let Some((report, gate)) = run_scenario("budget", "too_many_queries") else {
        return;
    };
    assert_eq!(gate, 1, "--fail-on too_many_queries gates");
    let f = verify_exact(
        "too_many_queries",
        &report,
        &[("too_many_queries", "dashboard.full")],
    )[0];
    assert_eq!(f["count"], 56);
    assert_eq!(f["severity"], "warning");
    let d = &f["details"];
    assert_eq!(
        (d["statements"].as_u64(), d["budget"].as_u64()),
        (Some(56), Some(50))
    );
    assert_eq!(d["distinct_shapes"], 14);
    let top = d["top_shapes"].as_array().expect("top_shapes");
    assert_eq!(top.len(), 5);
    for shape in top {
        assert_eq!(shape["count"], 4);
        assert!(text(shape, "query").contains("FROM settings"), "{shape}");
        assert_eq!(text(shape, "fingerprint").len(), 16);
    }
    assert_eq!(f["fingerprint"], top[0]["fingerprint"]);
}

#[test]
fn idle_in_transaction_during_a_call_and_until_close_but_not_quick_ones() {
    let Some((report, gate)) = run_scenario("idle", "idle_in_transaction") else {
        return;
    };
    assert_eq!(gate, 1, "--fail-on idle_in_transaction gates");
    let found = verify_exact(
        "idle_in_transaction",
        &report,
        &[
            ("idle_in_transaction", "orders.pay"),
            ("idle_in_transaction", "cart.abandon"),
        ],
    );
    let (pay, abandon) = (found[0], found[1]);
    let idle_ms = pay["details"]["idle_ms"].as_u64().unwrap();
    assert!((1300..10_000).contains(&idle_ms), "{pay:#}");
    assert_eq!(pay["count"].as_u64(), Some(idle_ms));
    assert!(text(pay, "query").contains("FOR UPDATE"), "{pay:#}");
    assert_eq!(pay["details"]["locks_taken"], true);
    assert_eq!(pay["severity"], "error", "locks were held during the gap");
    assert_eq!(pay["details"]["ended_by"], "next_statement");
    assert!(text(&pay["details"]["next_statement"], "query").starts_with("UPDATE orders"));
    assert!(text(pay, "suggestion").contains("transaction.atomic()"));

    assert!(abandon["details"]["idle_ms"].as_u64().unwrap() >= 1500);
    assert_eq!(abandon["details"]["ended_by"], "connection_closed");
    assert_eq!(abandon["details"]["locks_taken"], false);
    assert_eq!(abandon["severity"], "warning");
    assert!(text(abandon, "query").contains("FROM carts"));
}

#[test]
fn slow_query_with_timings_but_not_fast_lookups() {
    let Some((report, gate)) = run_scenario("slow", "slow_query") else {
        return;
    };
    assert_eq!(gate, 1, "--fail-on slow_query gates");
    let found: Vec<&Value> = all_findings(&report);
    let all = describe_findings(&report);
    assert_eq!(found.len(), 1, "only the slow report query:\n{all}");
    let f = found[0];
    assert_eq!(f["kind"], "slow_query", "{all}");
    assert!(text(f, "query").contains("pg_sleep"), "{f:#}");
    eprintln!(
        "detector-score: test=slow_query planted=1 reported=1 true_positives=1 \
         false_positives=0 missed=0"
    );
    assert_eq!(f["count"], 4);
    assert_eq!(f["occurrences"], 4);
    assert_eq!(f["severity"], "warning");
    assert!(f["request"].is_null());
    let d = &f["details"];
    assert_eq!(d["count"], 4);
    for key in ["p50_ms", "p95_ms", "max_ms"] {
        let ms = d[key].as_f64().unwrap();
        assert!((140.0..5_000.0).contains(&ms), "{key} {ms}: {f:#}");
    }
    assert!(d["p50_ms"].as_f64() <= d["p95_ms"].as_f64());
    assert!(d["p95_ms"].as_f64() <= d["max_ms"].as_f64());
    assert_eq!(d["threshold_ms"], 100.0);
    assert!(d["plan"].is_null());
    assert!(text(d, "plan_note").contains("not fetched"));
}
