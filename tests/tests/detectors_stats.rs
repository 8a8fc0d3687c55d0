//! Index advice that knows the data, end to end: a psycopg 3 workload
//! (`tests/python/statistics_findings.py`) through the real `qproxy` binary in front of a real,
//! ANALYZEd PostgreSQL with hypopg, then `qproxy report` in every human format.
//!
//! Planted: a join filtering both tables (explicit with aliases, and implicit), each table's
//! filter unindexed while the join keys are indexed; a rare value of a skewed `status` column
//! (98 % `done`, 2 % `new`), which gets a partial index. Controls: the common `status` value and
//! a boolean-like `is_gift` column (half 0, half 1), literal and bound, which statistics call
//! unselective (held back, and hypopg confirms the planner would not use an index), and a join
//! driven by a primary key.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use qproxy_tests::programs::{psql, python, python_script, run, run_ok};
use qproxy_tests::report::{
    all_findings, describe_findings, report_json, run_report, wait_for_report,
};
use qproxy_tests::{mode, Mode, PgCluster, Proxy, ProxyOptions, SUPERUSER};
use serde_json::Value;

const DB: &str = "stats_findings";

/// `customers` (20k) and `orders` (50k): primary keys and an index on orders.customer_id only.
const SCHEMA: &str = "
CREATE EXTENSION hypopg;
CREATE TABLE customers (
    id int PRIMARY KEY,
    region text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE orders (
    id int PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    status text NOT NULL,
    is_gift int NOT NULL,
    total int NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);
INSERT INTO customers
    SELECT g, 'r' || g % 20, 'customer ' || g, now() - g * interval '1 minute'
    FROM generate_series(1, 20000) g;
INSERT INTO orders
    SELECT g, 1 + g % 20000, CASE WHEN g % 50 = 0 THEN 'new' ELSE 'done' END, g % 2, g % 1000,
           now() - g * interval '1 minute'
    FROM generate_series(1, 50000) g;
ANALYZE;
";

fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
        cluster.create_database(DB).expect("creating the database");
        cluster
            .psql_superuser(DB, SCHEMA)
            .expect("loading the schema");
        cluster
    })
}

fn has_psycopg() -> bool {
    let mut cmd = python(Path::new("-c"), &["import psycopg"]);
    run(&mut cmd, Duration::from_secs(30)).is_ok_and(|o| o.status.success())
}

/// The planted findings: kind, table, query fragment.
const PLANTED: [(&str, &str, &str); 5] = [
    (
        "unindexed_filter",
        "public.customers",
        "customers.created_at > $1",
    ),
    (
        "unindexed_filter",
        "public.orders",
        "customers.created_at > $1",
    ),
    (
        "unindexed_filter",
        "public.customers",
        "customers.region = $1",
    ),
    ("unindexed_filter", "public.orders", "customers.region = $1"),
    (
        "unindexed_filter",
        "public.orders",
        "created_at > $1 AND status = $2",
    ),
];

#[test]
fn statistics_and_joins_shape_index_advice() {
    if mode() == Mode::Direct {
        eprintln!("skipped in direct mode (the detectors live in the proxy)");
        return;
    }
    if !has_psycopg() {
        eprintln!("skipped (python3 with psycopg 3 not installed)");
        return;
    }
    let cluster = cluster();
    let mut proxy = Proxy::start(&ProxyOptions {
        shutdown_grace_secs: Some(5),
        ..ProxyOptions::new(cluster.url(SUPERUSER, "postgres", "disable"))
    })
    .unwrap_or_else(|e| panic!("starting qproxy: {e:#}"));
    let url = proxy.url(SUPERUSER, DB, "disable");
    let store = proxy.store_path();
    // Load the catalog first, so every statement is judged as it runs.
    run_ok(
        psql(&url).args([
            "-c",
            "SELECT id FROM orders WHERE id = 1 /*request_id='warm-up'*/",
        ]),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("warm-up: {e:#}\n{}", proxy.log()));
    wait_for_report(&store, Duration::from_secs(30), |r| {
        r["summary"]["catalog"] == "available"
    })
    .unwrap_or_else(|e| panic!("catalog never loaded: {e:#}"));
    let out = run(
        &mut python(&python_script("statistics_findings.py"), &[&url]),
        Duration::from_secs(120),
    )
    .expect("running python");
    assert!(
        out.status.success(),
        "workload failed: {out}\n{}",
        proxy.log()
    );
    // hypopg verdicts arrive in the background; wait until every index finding has one (the
    // held-back ones are checked too and stay out of the report).
    wait_for_report(&store, Duration::from_secs(60), |r| {
        let index: Vec<&Value> = all_findings(r)
            .into_iter()
            .filter(|f| f["kind"] == "unindexed_filter")
            .collect();
        index.len() >= PLANTED.len() && index.iter().all(|f| f["details"]["hypopg"].is_object())
    })
    .unwrap_or_else(|e| panic!("verdicts never arrived: {e:#}\n{}", proxy.log()));
    proxy.terminate().expect("SIGTERM");
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("qproxy exits after SIGTERM");
    assert!(status.success(), "qproxy exited with {status}");
    let report = report_json(&store, "latest").expect("report");

    let findings = all_findings(&report);
    let matches = |(kind, table, fragment): &(&str, &str, &str), f: &Value| {
        f["kind"] == *kind
            && f["table"] == *table
            && f["query"].as_str().unwrap_or("").contains(fragment)
    };
    let found: Vec<Vec<&Value>> = PLANTED
        .iter()
        .map(|p| findings.iter().copied().filter(|f| matches(p, f)).collect())
        .collect();
    let unplanted: Vec<&Value> = findings
        .iter()
        .copied()
        .filter(|f| !PLANTED.iter().any(|p| matches(p, f)))
        .collect();
    let true_positives = found.iter().filter(|m| !m.is_empty()).count();
    eprintln!(
        "detector-score: test=statistics planted={} reported={} true_positives={true_positives} \
         false_positives={} missed={}",
        PLANTED.len(),
        findings.len(),
        unplanted.len(),
        PLANTED.len() - true_positives,
    );
    let all = describe_findings(&report);
    for (p, m) in PLANTED.iter().zip(&found) {
        assert_eq!(m.len(), 1, "expected one finding for {p:?}:\n{all}");
    }
    assert!(unplanted.is_empty(), "findings nobody planted:\n{all}");
    let [created_at, total, region, orders_created_at, partial] =
        [0, 1, 2, 3, 4].map(|i| found[i][0]);

    // Each table of the joins gets its own filter, without the join key it already has.
    assert_eq!(created_at["columns"], serde_json::json!(["created_at"]));
    assert_eq!(total["columns"], serde_json::json!(["total"]));
    assert_eq!(region["columns"], serde_json::json!(["region"]));
    assert_eq!(
        orders_created_at["columns"],
        serde_json::json!(["created_at"])
    );
    // A parameter on a 20-value column: 1/n_distinct, from the statistics.
    assert_eq!(
        region["details"]["selectivity"]["columns"]["region"],
        serde_json::json!({"estimated_fraction": 0.05, "source": "n_distinct"}),
        "{region:#}"
    );

    // The rare status value: a partial index, its placeholder numbered like the query's, the
    // value nowhere.
    assert_eq!(
        partial["suggestion"],
        "CREATE INDEX CONCURRENTLY ON public.orders (created_at) WHERE status = $2;",
        "{partial:#}"
    );
    assert_eq!(partial["details"]["partial_index"]["column"], "status");
    let frequency = partial["details"]["partial_index"]["value_frequency"]
        .as_f64()
        .unwrap();
    assert!((0.01..=0.03).contains(&frequency), "{partial:#}");
    assert_eq!(
        partial["details"]["selectivity"]["columns"]["status"]["source"],
        "mcv"
    );
    let shown = partial.to_string();
    assert!(
        !shown.contains("'new'") && !shown.contains("\"new\""),
        "{shown}"
    );
    // hypopg checked the partial index with its value and the planner uses it.
    assert_eq!(
        partial["details"]["hypopg"]["verified"], true,
        "{partial:#}"
    );
    assert_eq!(
        partial["details"]["hypopg"]["uses_index"], true,
        "{partial:#}"
    );

    // Every human format shows each index finding's verdict on one line.
    for format in ["text", "markdown", "html"] {
        let out = run_report(&store, &["--format", format]).expect("report");
        let lines = out
            .stdout
            .lines()
            .filter(|l| l.contains("verified: cost ") || l.contains("not verified: "))
            .count();
        assert_eq!(lines, PLANTED.len(), "{format}:\n{}", out.stdout);
        assert!(
            out.stdout.contains("verified: cost ") && out.stdout.contains("(index used)"),
            "{format}:\n{}",
            out.stdout
        );
    }
}
