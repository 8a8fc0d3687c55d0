//! No silent loss of findings: while another process holds the SQLite findings store locked
//! (`BEGIN EXCLUSIVE`, as a backup tool or a stray `sqlite3` shell would), the real proxy keeps
//! what it found in memory and writes all of it once the lock is gone; with a pending cap too
//! small for what it found, the loss is counted on `/metrics` and in the report's coverage.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use qproxy_tests::report::{findings_of, report_json, run_report, wait_for_report};
use qproxy_tests::{connect, Proxy, ProxyOptions, TestEnv, SUPERUSER, TEST_DB};
use serde_json::Value;
use tokio_postgres::Client;

/// How long the store stays locked: long enough for several failed writes and backoff steps
/// (100 ms doubling to 5 s), short enough for the suite.
const LOCK_FOR: Duration = Duration::from_secs(12);

/// Rows the N+1 children look up; the threshold is 5 distinct parameters per request.
const CHILDREN: i32 = 6;

/// The shared cluster with the `items` table in [`TEST_DB`], created once per test binary.
fn env() -> &'static TestEnv {
    static SCHEMA: OnceLock<()> = OnceLock::new();
    let env = TestEnv::shared();
    SCHEMA.get_or_init(|| {
        env.cluster
            .psql_superuser(
                TEST_DB,
                "CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text NOT NULL);
                 INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g
                 ON CONFLICT DO NOTHING;",
            )
            .expect("creating items");
    });
    env
}

fn start_proxy(test: &str, extra_args: &[&str]) -> Option<Proxy> {
    start_proxy_with_grace(test, extra_args, 5)
}

fn start_proxy_with_grace(test: &str, extra_args: &[&str], grace_secs: u64) -> Option<Proxy> {
    let env = tokio::task::block_in_place(env);
    let options = ProxyOptions {
        shutdown_grace_secs: Some(grace_secs),
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "disable"))
    };
    tokio::task::block_in_place(|| env.extra_proxy(test, &options))
}

async fn client(proxy: &Proxy) -> Client {
    let url = proxy.url(SUPERUSER, TEST_DB, "disable");
    connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}\n{}", proxy.log()))
}

/// One tagged request with an N+1: a parent page of items, then one lookup per item.
async fn n_plus_one(c: &Client, request: &str, route: &str) {
    let tag = format!("/*request_id='{request}',route='{route}'*/");
    let parent = format!("SELECT id FROM items ORDER BY id LIMIT {CHILDREN} {tag}");
    let rows = c.query(&parent, &[]).await.expect("parent query");
    let child = c
        .prepare(&format!("SELECT name FROM items WHERE id = $1 {tag}"))
        .await
        .expect("prepare child");
    for row in rows {
        let id: i32 = row.get(0);
        c.query_one(&child, &[&id]).await.expect("child query");
    }
}

/// Another process's exclusive lock on the store file; released when dropped.
fn lock(store: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store).expect("opening the store");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE")
        .expect("locking the store");
    conn
}

/// The value of the unlabelled sample `name` in a `/metrics` scrape.
fn metric(proxy: &Proxy, name: &str) -> f64 {
    let (status, body) = proxy
        .admin_get("/metrics")
        .unwrap_or_else(|e| panic!("GET /metrics: {e:#}\n{}", proxy.log()));
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

/// Polls `/metrics` (up to 60 s) until `check` holds.
async fn until_metrics(proxy: &Proxy, what: &str, check: impl Fn(&Proxy) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tokio::task::block_in_place(|| check(proxy)) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 60 s\n--- qproxy log ---\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn n_plus_one_total(proxy: &Proxy) -> f64 {
    metric(proxy, "qproxy_findings_total{kind=\"n_plus_one\"}")
}

/// Waits (up to 60 s) until the store's latest run satisfies `done`, while the proxy runs.
fn wait_for_store(store: PathBuf, what: &str, done: impl FnMut(&Value) -> bool) -> Value {
    tokio::task::block_in_place(|| wait_for_report(&store, Duration::from_secs(60), done))
        .unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

/// SIGTERM, exit 0, and the latest run's JSON report.
fn stop(proxy: &mut Proxy) -> Value {
    proxy.terminate().expect("SIGTERM");
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "exit {status}\n{}", proxy.log());
    tokio::task::block_in_place(|| report_json(&proxy.store_path(), "latest"))
        .unwrap_or_else(|e| panic!("report: {e:#}"))
}

fn occurrences_of(report: &Value, route: &str) -> u64 {
    findings_of(report, "n_plus_one")
        .into_iter()
        .filter(|f| f["request"]["route"] == route)
        .map(|f| f["occurrences"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_loses_no_finding() {
    const REQUESTS: u64 = 12;
    let Some(mut proxy) = start_proxy("a_locked_store_loses_no_finding", &[]) else {
        return;
    };
    let store = proxy.store_path();
    let c = client(&proxy).await;
    c.simple_query("SELECT 1").await.unwrap();

    let locked = tokio::task::block_in_place(|| lock(&store));
    let locked_at = Instant::now();
    for i in 0..REQUESTS {
        n_plus_one(&c, &format!("locked-{i}"), "/items").await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // Requests end when their connection has moved on for a while; all but the last one have
    // been handed to the store's writer, which cannot write them.
    until_metrics(&proxy, "findings flushed while locked", |p| {
        n_plus_one_total(p) >= (REQUESTS - 1) as f64
    })
    .await;
    until_metrics(&proxy, "failed writes counted", |p| {
        metric(p, "qproxy_store_write_failures_total") >= 2.0
    })
    .await;
    assert!(tokio::task::block_in_place(|| metric(&proxy, "qproxy_store_pending_findings")) >= 1.0);
    let report = tokio::task::block_in_place(|| report_json(&store, "latest")).unwrap();
    assert_eq!(
        occurrences_of(&report, "/items"),
        0,
        "nothing could be written while the store was locked"
    );
    tokio::time::sleep(LOCK_FOR.saturating_sub(locked_at.elapsed())).await;
    drop(locked);

    // Written while the proxy runs, once its next retry finds the store free.
    wait_for_store(
        store.clone(),
        "pending findings written after the lock",
        |r| occurrences_of(r, "/items") >= REQUESTS - 1,
    );
    drop(c);
    let report = stop(&mut proxy);
    assert_eq!(
        occurrences_of(&report, "/items"),
        REQUESTS,
        "every N+1 occurrence is in the report\n{report:#}\n{}",
        proxy.log()
    );
    assert_eq!(report["summary"]["findings_lost"], 0);
    let n1 = findings_of(&report, "n_plus_one")[0];
    assert_eq!(n1["count"], CHILDREN);
    // The operator can tell from the log what happened, once each way.
    let log = proxy.log();
    for said in [
        "holding them in memory and retrying",
        "findings store writable again",
    ] {
        assert!(log.contains(said), "{said}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_pending_cap_the_loss_is_counted_and_reported() {
    let Some(mut proxy) = start_proxy(
        "past_the_pending_cap_the_loss_is_counted_and_reported",
        &["--store-pending-max", "1"],
    ) else {
        return;
    };
    let store = proxy.store_path();
    let c = client(&proxy).await;
    c.simple_query("SELECT 1").await.unwrap();

    let locked = tokio::task::block_in_place(|| lock(&store));
    // Two findings (the route is part of a finding's id) while only one fits in memory; a
    // third request ends the second.
    n_plus_one(&c, "capped-a", "/a").await;
    n_plus_one(&c, "capped-b", "/b").await;
    c.simple_query("SELECT 1 /*request_id='capped-c',route='/c'*/")
        .await
        .unwrap();
    until_metrics(&proxy, "both findings flushed while locked", |p| {
        n_plus_one_total(p) >= 2.0
    })
    .await;
    until_metrics(&proxy, "the loss counted", |p| {
        metric(p, "qproxy_findings_lost_total") >= 1.0
    })
    .await;
    let lost = tokio::task::block_in_place(|| metric(&proxy, "qproxy_findings_lost_total"));
    assert_eq!(lost, 1.0, "one N+1 occurrence did not fit");
    drop(locked);

    // The loss is written with the run's summary as soon as the store is writable again.
    wait_for_store(store.clone(), "the loss in the stored summary", |r| {
        r["summary"]["findings_lost"] == 1
    });
    drop(c);
    let report = stop(&mut proxy);
    assert_eq!(report["summary"]["findings_lost"], 1, "{report:#}");
    let kept = occurrences_of(&report, "/a") + occurrences_of(&report, "/b");
    assert_eq!(kept, 1, "one finding kept, one lost\n{report:#}");

    // The formats people read say so, as a warning.
    let text = tokio::task::block_in_place(|| run_report(&store, &["--format", "text"])).unwrap();
    assert!(
        text.stdout.contains("1 finding occurrence lost:"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("WARNING: coverage is poor"));
    let markdown =
        tokio::task::block_in_place(|| run_report(&store, &["--format", "markdown"])).unwrap();
    assert!(markdown.stdout.contains("| **1** |"), "{}", markdown.stdout);
    assert!(
        proxy.log().contains("pending cap is reached"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_locked_through_shutdown_gives_up_in_bounded_time_and_says_so() {
    // The final flush retries for the grace period (at most 10 s), here 2 s.
    let Some(mut proxy) = start_proxy_with_grace(
        "a_store_locked_through_shutdown_gives_up_in_bounded_time_and_says_so",
        &[],
        2,
    ) else {
        return;
    };
    let store = proxy.store_path();
    let c = client(&proxy).await;
    let locked = tokio::task::block_in_place(|| lock(&store));
    n_plus_one(&c, "at-shutdown", "/shutdown").await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let stopping = Instant::now();
    proxy.terminate().expect("SIGTERM");
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "exit {status}\n{}", proxy.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "the proxy waited {:?} for a locked store",
        stopping.elapsed()
    );
    let log = proxy.log();
    assert!(
        log.contains("findings store still unwritable at shutdown"),
        "the loss is said:\n{log}"
    );
    assert!(
        log.contains("\"findings_lost_total\":1"),
        "with its count:\n{log}"
    );
    drop(locked);

    // The store has what it had before the lock, and a run that did not end cleanly.
    let report = tokio::task::block_in_place(|| report_json(&store, "latest")).unwrap();
    assert_eq!(occurrences_of(&report, "/shutdown"), 0);
    let text = tokio::task::block_in_place(|| run_report(&store, &["--format", "text"])).unwrap();
    assert!(
        text.stdout.contains("did not shut down cleanly"),
        "{}",
        text.stdout
    );
}
