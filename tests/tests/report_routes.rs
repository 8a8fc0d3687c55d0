//! Query-count regressions per route, source locations and trace links, end to end: tagged
//! requests through the real `qproxy` binary in front of a real PostgreSQL, three runs into one
//! findings store, and `qproxy report` over it.
//!
//! - Run 1 (the baseline): `/orders` runs 3 statements per request (one order lookup, two item
//!   lookups), `users#show` runs 4. `qproxy report --write-baseline` records both routes.
//! - Run 2: `/orders` runs 23 per request (the item lookup now loops 22 times), `users#show` is
//!   unchanged. `--baseline ... --fail-on query_count_regression` exits 1 with one regression:
//!   `/orders`, 3 → 23, the item lookup named as the shape that grew (2 → 22 per request).
//!   One request's item lookups carry OpenTelemetry code attributes and a `traceparent`: the
//!   N+1 they make shows the source and trace id in JSON, a SARIF physical location, and a
//!   trace link in markdown (`--trace-url`) and html (`QPROXY_TRACE_URL`).
//! - Run 3: back to 3 per request: the same gate exits 0.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qproxy_tests::programs::{run, ProgramOutput};
use qproxy_tests::proxy::qproxy_bin;
use qproxy_tests::report::{describe_findings, findings_of, run_report};
use qproxy_tests::{connect, mode, Mode, PgCluster, Proxy, ProxyOptions, SUPERUSER};
use serde_json::Value;
use tokio_postgres::Client;

const DB: &str = "routes_app";

const SCHEMA: &str = "
CREATE TABLE orders (id int PRIMARY KEY, total numeric NOT NULL);
CREATE TABLE order_items (order_id int NOT NULL, position int NOT NULL, sku text NOT NULL,
    PRIMARY KEY (order_id, position));
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, 50) g;
INSERT INTO order_items SELECT o, p, 'sku-' || p FROM generate_series(1, 50) o,
    generate_series(0, 29) p;
INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 50) g;
ANALYZE;
";

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACE_URL: &str = "https://tempo.example/trace/{trace_id}";

/// One `/orders` request: an order lookup and `items` item lookups, tagged the way
/// sqlcommenter does (URL-encoded route). `origin` adds tags to the item lookups.
async fn orders_request(c: &Client, id: &str, order: i32, items: i32, origin: &str) {
    let tag = format!("/*request_id='{id}',route='%2Forders'*/");
    c.query(
        &format!("SELECT id, total FROM orders WHERE id = $1 {tag}"),
        &[&order],
    )
    .await
    .expect("order lookup");
    let item_tag = format!("/*request_id='{id}',route='%2Forders'{origin}*/");
    for position in 0..items {
        c.query(
            &format!(
                "SELECT sku FROM order_items WHERE order_id = $1 AND position = $2 {item_tag}"
            ),
            &[&order, &position],
        )
        .await
        .expect("item lookup");
    }
}

/// One `users#show` request: four lookups, tagged with controller and action.
async fn users_request(c: &Client, id: &str) {
    let tag = format!("/*action='show',controller='users',request_id='{id}'*/");
    for user in 1..=4i32 {
        c.query(
            &format!("SELECT name FROM users WHERE id = $1 {tag}"),
            &[&user],
        )
        .await
        .expect("user lookup");
    }
}

/// One proxy run into `store`: five `/orders` requests with `items` item lookups each (the
/// first one's carrying `first_origin`) and three `users#show` requests; then SIGTERM, which
/// ends every open request and flushes the run.
async fn proxy_run(cluster: &PgCluster, store: &Path, run: u32, items: i32, first_origin: &str) {
    let options = ProxyOptions {
        store: Some(store.to_path_buf()),
        shutdown_grace_secs: Some(5),
        ..ProxyOptions::new(cluster.url(SUPERUSER, "postgres", "disable"))
    };
    let mut proxy = Proxy::start(&options).unwrap_or_else(|e| panic!("starting qproxy: {e:#}"));
    let url = proxy.url(SUPERUSER, DB, "disable");
    let client = connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting through qproxy: {e}\n{}", proxy.log()));
    for i in 0..5 {
        let origin = if i == 0 { first_origin } else { "" };
        orders_request(
            &client,
            &format!("run{run}-order-{i}"),
            i + 1,
            items,
            origin,
        )
        .await;
    }
    for i in 0..3 {
        users_request(&client, &format!("run{run}-user-{i}")).await;
    }
    drop(client);
    tokio::task::spawn_blocking(move || {
        proxy.terminate().expect("SIGTERM");
        let status = proxy
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("qproxy did not stop: {e:#}"));
        assert!(
            status.success(),
            "qproxy exited with {status}\n{}",
            proxy.log()
        );
    })
    .await
    .expect("stopping qproxy");
}

fn report(store: &Path, args: &[&str]) -> ProgramOutput {
    run_report(store, args).unwrap_or_else(|e| panic!("qproxy report {args:?}: {e:#}"))
}

fn json(out: &ProgramOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The route entry of a JSON report.
fn route<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["route"] == name))
        .unwrap_or_else(|| panic!("no route {name} in {}", report["routes"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_runs_more_statements_than_its_baseline_gates_ci() {
    if mode() == Mode::Direct {
        eprintln!("skipped in direct mode (routes are recorded by the proxy)");
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| {
        let cluster = PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
        cluster.create_database(DB).expect("creating the database");
        cluster
            .psql_superuser(DB, SCHEMA)
            .expect("loading the schema");
        cluster
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: PathBuf = dir.path().join("findings.db");
    let baseline = dir.path().join("qproxy-baseline.json");
    let baseline_arg = baseline.to_str().unwrap();

    // Run 1: the baseline.
    proxy_run(&cluster, &store, 1, 2, "").await;
    let out = report(
        &store,
        &["--format", "json", "--write-baseline", baseline_arg],
    );
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr.contains("and 2 routes"),
        "the baseline records both routes: {out}"
    );
    let first = json(&out);
    let orders = route(&first, "/orders");
    assert_eq!(orders["requests"], 5, "{orders}");
    assert_eq!(
        orders["statements"],
        serde_json::json!({"median": 3, "max": 3})
    );
    assert_eq!(route(&first, "users#show")["statements"]["median"], 4);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap())
        .expect("the baseline is JSON");
    assert_eq!(written["routes"][0]["route"], "/orders");
    assert_eq!(written["routes"][0]["statements"]["median"], 3);

    // Run 2: /orders grew to 23 statements per request.
    let origin = format!(
        ",code.filepath='app%2Forders.py',code.lineno='42',code.function='list_items',\
         traceparent='00-{TRACE}-00f067aa0ba902b7-01'"
    );
    proxy_run(&cluster, &store, 2, 22, &origin).await;
    let gate = [
        "--baseline",
        baseline_arg,
        "--fail-on",
        "query_count_regression",
    ];
    let out = report(&store, &[&["--format", "json"], &gate[..]].concat());
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(
        out.stderr,
        "qproxy report: 1 gating finding (--fail-on): query_count_regression 1\n"
    );
    let second = json(&out);
    let regressions = findings_of(&second, "query_count_regression");
    assert_eq!(
        regressions.len(),
        1,
        "only /orders regressed:\n{}",
        describe_findings(&second)
    );
    let r = regressions[0];
    assert_eq!(r["request"]["route"], "/orders");
    assert_eq!(r["count"], 23);
    assert_eq!(r["details"]["median_before"], 3);
    assert_eq!(r["details"]["median_after"], 23);
    let grown = r["details"]["grown_shapes"].as_array().unwrap();
    assert_eq!(grown.len(), 1, "only the item lookup grew: {grown:?}");
    assert!(
        grown[0]["query"].as_str().unwrap().contains("order_items"),
        "{grown:?}"
    );
    assert_eq!(
        (grown[0]["before"].as_f64(), grown[0]["after"].as_f64()),
        (Some(2.0), Some(22.0))
    );
    assert_eq!(r["fingerprint"], grown[0]["fingerprint"]);
    assert_eq!(route(&second, "users#show")["statements"]["median"], 4);

    // The N+1 of the item lookups carries the tagged source location and trace id.
    let n1 = findings_of(&second, "n_plus_one");
    let n1 = n1
        .iter()
        .find(|f| f["query"].as_str().unwrap_or("").contains("order_items"))
        .unwrap_or_else(|| panic!("no N+1 on order_items:\n{}", describe_findings(&second)));
    assert_eq!(
        n1["source"],
        serde_json::json!({"file": "app/orders.py", "line": 42, "function": "list_items"})
    );
    assert_eq!(n1["trace_id"], TRACE);
    let sarif = json(&report(&store, &["--format", "sarif"]));
    let located: Vec<&Value> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["locations"][0].get("physicalLocation"))
        .collect();
    assert_eq!(
        located,
        [&serde_json::json!({
            "artifactLocation": {"uri": "app/orders.py", "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": 42},
        })],
        "{}",
        sarif["runs"][0]["results"]
    );
    let link = format!("https://tempo.example/trace/{TRACE}");
    let markdown = report(&store, &["--format", "markdown", "--trace-url", TRACE_URL]);
    assert!(markdown.status.success(), "{markdown}");
    assert!(
        markdown.stdout.contains(&format!("(<{link}>)")),
        "{}",
        markdown.stdout
    );
    let mut html = Command::new(qproxy_bin().unwrap());
    html.args(["report", "--format", "html", "--store"])
        .arg(&store)
        .env("QPROXY_TRACE_URL", TRACE_URL);
    let html = run(&mut html, Duration::from_secs(30)).unwrap();
    assert!(html.status.success(), "{html}");
    assert!(
        html.stdout.contains(&format!("<a href=\"{link}\">")),
        "{}",
        html.stdout
    );

    // Run 3: back to 3 statements per request: nothing grew, the gate passes.
    proxy_run(&cluster, &store, 3, 2, "").await;
    let out = report(&store, &[&["--format", "json"], &gate[..]].concat());
    assert_eq!(out.status.code(), Some(0), "{out}");
    let third = json(&out);
    assert!(findings_of(&third, "query_count_regression").is_empty());
    assert_eq!(route(&third, "/orders")["statements"]["median"], 3);
}
