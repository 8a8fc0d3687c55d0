//! Accuracy with real drivers (`tests/python/accuracy_workloads.py`) through the real `qproxy`
//! binary in front of a real PostgreSQL, then `qproxy report --format json`:
//!
//! | scenario | driver shape | planted | must not appear |
//! | --- | --- | --- | --- |
//! | `asyncpg` | cursor iterated with `prefetch=1000`, `cursor.fetch(1000)`, a cursor abandoned after 2,500 rows, a plain `fetch` | one `unbounded_select` per query, with the rows of every chunk (50,000, 50,000, 3,000, 50,000); `slow_query` measures each export once | `repeated_query`, `n_plus_one`, `too_many_queries` from the chunks |
//! | `psycopg_named` | psycopg 3 named cursors (`DECLARE`/`FETCH FORWARD 1000`/`CLOSE`), iterated and `fetchmany` | one `unbounded_select` of 50,000 rows per query | the same |
//! | `sqlalchemy_stream` | SQLAlchemy 2 `yield_per=1000` on psycopg (a server-side cursor) | one `unbounded_select` of 50,000 rows | the same |
//! | `tight_loop` | 15,000 untagged distinct lookups back to back, no idle gap | `n_plus_one` in bounded groups (≤ 1,000), `confidence: low`, a warning | an error-level N+1 of thousands |
//! | `transaction_n_plus_one` | an untagged transaction with a parent and 8 lookups, the database's first traffic | `n_plus_one` on `public.customers`, `confidence: medium` | a table without its schema |
//!
//! Each test prints a `detector-score:` line (planted, reported, true positives, false
//! positives, missed) for the suite's precision and recall. `slow_query` depends on how fast
//! this machine is, so it is left out of the tallies; the `asyncpg` test turns its thresholds
//! down to 1 ms instead and checks that each export is measured as one execution.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use qproxy_tests::programs::{python, run};
use qproxy_tests::report::{self, all_findings, describe_findings, report_json};
use qproxy_tests::{mode, Mode, PgCluster, Proxy, ProxyOptions, SUPERUSER};
use serde_json::Value;

/// The database every test database is copied from.
const TEMPLATE: &str = "accuracy_template";

/// A table large enough to stream, two small ones for the N+1; every filter is on a key.
const SCHEMA: &str = "
CREATE TABLE export_rows (id int PRIMARY KEY, payload text NOT NULL);
INSERT INTO export_rows SELECT g, 'row ' || g FROM generate_series(1, 50000) g;
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 100) g;
INSERT INTO orders SELECT g, 101 - g FROM generate_series(1, 100) g;
ANALYZE;
";

/// `[analyzer.slow_query]` for the `asyncpg` test: every execution of a millisecond or more is
/// reported on its own, so each export's finding shows how many executions were measured.
const SLOW_EVERYTHING: &str =
    "[analyzer.slow_query]\nthreshold = \"1ms\"\nsingle_execution = \"1ms\"\n";

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

/// Whether python3 can import `modules` (the workloads need them; `scripts/install-deps.sh`
/// installs them).
fn has_python_modules(modules: &str) -> bool {
    let mut cmd = python(std::path::Path::new("-c"), &[&format!("import {modules}")]);
    run(&mut cmd, Duration::from_secs(60)).is_ok_and(|o| o.status.success())
}

/// Runs `scenario` through a fresh proxy (with `config`, a TOML file's text, when given) in
/// front of a fresh copy of the template, stops the proxy (SIGTERM flushes every open request)
/// and returns the report. `None` when the test cannot run here (direct mode, a Python module
/// missing).
fn run_scenario(scenario: &'static str, modules: &str, config: Option<&str>) -> Option<Value> {
    if mode() == Mode::Direct {
        eprintln!("{scenario}: skipped in direct mode (the detectors live in the proxy)");
        return None;
    }
    if !has_python_modules(modules) {
        eprintln!("{scenario}: skipped (python3 cannot import {modules})");
        return None;
    }
    let cluster = cluster();
    let db = format!("acc_{scenario}");
    cluster
        .psql_superuser(
            "postgres",
            &format!("CREATE DATABASE \"{db}\" TEMPLATE \"{TEMPLATE}\";"),
        )
        .expect("creating the test database");
    let config_dir = tempfile::tempdir().expect("a temporary directory");
    let mut options = ProxyOptions {
        shutdown_grace_secs: Some(5),
        ..ProxyOptions::new(cluster.url(SUPERUSER, "postgres", "disable"))
    };
    if let Some(config) = config {
        let path = config_dir.path().join("qproxy.toml");
        std::fs::write(&path, config).expect("writing the config");
        options.extra_args = vec!["--config".into(), path.to_string_lossy().into_owned()];
    }
    let mut proxy = Proxy::start(&options).unwrap_or_else(|e| panic!("starting qproxy: {e:#}"));
    let url = proxy.url(SUPERUSER, &db, "disable");
    let script = qproxy_tests::programs::python_script("accuracy_workloads.py");
    let mut cmd = python(&script, &[&url, scenario]);
    let out = run(&mut cmd, Duration::from_secs(300)).expect("running python");
    assert!(
        out.status.success(),
        "{scenario} workload failed: {out}\n{}",
        proxy.log()
    );
    proxy
        .stop(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{scenario}: {e:#}"));
    let store: PathBuf = proxy.store_path();
    Some(report_json(&store, "latest").unwrap_or_else(|e| panic!("reading the report: {e:#}")))
}

/// A planted finding: its kind and the normalized query it is about, exactly.
type Planted<'a> = (&'a str, &'a str);

/// Checks that `report` holds exactly one finding per planted `(kind, query)` and nothing else
/// (timing kinds aside, see the module docs), prints the `detector-score:` line, and returns
/// the findings in `planted` order.
fn verify_exact<'a>(test: &str, report: &'a Value, planted: &[Planted<'_>]) -> Vec<&'a Value> {
    let findings: Vec<&Value> = all_findings(report)
        .into_iter()
        .filter(|f| f["kind"] != "slow_query")
        .collect();
    report::verify_exact(test, report, findings, planted, |(kind, query), f| {
        f["kind"] == *kind && f["query"] == *query
    })
}

fn rows_max(f: &Value) -> u64 {
    f["rows"]["max"].as_u64().unwrap_or_default()
}

/// asyncpg fetches through a portal in chunks (Execute with a row limit): one execution each,
/// with every chunk's rows, timed once; a cursor abandoned early is one execution of the rows
/// it fetched.
#[test]
fn asyncpg_cursors_are_one_execution_each() {
    let Some(report) = run_scenario("asyncpg", "asyncpg", Some(SLOW_EVERYTHING)) else {
        return;
    };
    let exports = [
        ("SELECT id, payload FROM export_rows", 50_000),
        ("SELECT id FROM export_rows", 50_000),
        ("SELECT payload FROM export_rows", 3_000),
        (
            "SELECT id, payload, id + $1 AS next_id FROM export_rows",
            50_000,
        ),
    ];
    let planted: Vec<Planted<'_>> = exports
        .iter()
        .map(|(q, _)| ("unbounded_select", *q))
        .collect();
    let found = verify_exact("accuracy_asyncpg", &report, &planted);
    for (f, (query, rows)) in found.iter().zip(exports) {
        assert_eq!(rows_max(f), rows, "{query}: every chunk's rows: {f:#}");
        assert_eq!(f["table"], "public.export_rows");
    }
    // Each export is one measured execution, not one per chunk.
    for (query, _) in exports {
        let slow: Vec<&Value> = all_findings(&report)
            .into_iter()
            .filter(|f| f["kind"] == "slow_query" && f["query"] == query)
            .collect();
        assert_eq!(slow.len(), 1, "{query}:\n{}", describe_findings(&report));
        assert_eq!(slow[0]["count"], 1, "executions measured: {:#}", slow[0]);
    }
}

/// psycopg 3's named cursors are SQL cursors: DECLARE, then FETCH FORWARD 1000 until the end,
/// then CLOSE. The FETCHes are neither repeated queries nor statements of the query budget,
/// and the declared query is rated by all the rows fetched.
#[test]
fn psycopg_named_cursors_are_one_execution_each() {
    let Some(report) = run_scenario("psycopg_named", "psycopg", None) else {
        return;
    };
    let found = verify_exact(
        "accuracy_psycopg_named",
        &report,
        &[
            (
                "unbounded_select",
                "SELECT id, payload, id * $1 AS twice FROM export_rows",
            ),
            ("unbounded_select", "SELECT payload, id FROM export_rows"),
        ],
    );
    for f in found {
        assert_eq!(rows_max(f), 50_000, "{f:#}");
        assert_eq!(f["occurrences"], 1, "one execution: {f:#}");
        assert!(f["details"]["fetched"].is_string(), "{f:#}");
    }
}

/// SQLAlchemy 2's `yield_per` on psycopg streams through a server-side cursor.
#[test]
fn sqlalchemy_yield_per_is_one_execution() {
    let Some(report) = run_scenario("sqlalchemy_stream", "sqlalchemy, psycopg", None) else {
        return;
    };
    let found = verify_exact(
        "accuracy_sqlalchemy_stream",
        &report,
        &[(
            "unbounded_select",
            "SELECT id, payload, id - $1 AS prev_id FROM export_rows",
        )],
    );
    assert_eq!(rows_max(found[0]), 50_000, "{:#}", found[0]);
}

/// An untagged connection that never goes quiet is judged in bounded groups, and a guess is
/// never rated as high as a tagged request.
#[test]
fn an_untagged_tight_loop_is_bounded_groups_of_low_confidence() {
    let Some(report) = run_scenario("tight_loop", "psycopg", None) else {
        return;
    };
    let found = verify_exact(
        "accuracy_tight_loop",
        &report,
        &[(
            "n_plus_one",
            "SELECT id, payload FROM export_rows WHERE id = $1",
        )],
    );
    let f = found[0];
    let count = f["count"].as_u64().unwrap_or_default();
    assert!(
        (5..=1_000).contains(&count),
        "at most the group cap (1,000 statements): {f:#}"
    );
    assert!(
        f["occurrences"].as_u64().unwrap_or_default() >= 15,
        "15,000 lookups are at least 15 groups: {f:#}"
    );
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert_eq!(f["details"]["confidence"], "low", "{f:#}");
    assert_eq!(f["request"]["correlation"], "idle_gap", "{f:#}");
    assert!(
        f["suggestion"]
            .as_str()
            .is_some_and(|s| s.contains("grouped by idle gaps")),
        "{f:#}"
    );
    assert_eq!(f["table"], "public.export_rows");
}

/// An untagged transaction's N+1 names its table with the schema, although the transaction
/// (and with it the request) ended before the proxy had loaded the database's catalog.
#[test]
fn a_transaction_grouped_n_plus_one_names_its_schema() {
    let Some(report) = run_scenario("transaction_n_plus_one", "psycopg", None) else {
        return;
    };
    let found = verify_exact(
        "accuracy_transaction_n_plus_one",
        &report,
        &[("n_plus_one", "SELECT id, name FROM customers WHERE id = $1")],
    );
    let f = found[0];
    assert_eq!(f["table"], "public.customers", "{f:#}");
    assert_eq!(f["request"]["correlation"], "transaction", "{f:#}");
    assert_eq!(f["details"]["confidence"], "medium", "{f:#}");
    assert_eq!(f["details"]["table_unresolved"], Value::Null, "{f:#}");
    assert_eq!(f["count"], 8);
    assert!(
        f["parent"]["query"]
            .as_str()
            .is_some_and(|q| q.contains("FROM orders")),
        "{f:#}"
    );
}
