//! The admin server of a live proxy: `/metrics` scraped over HTTP after real traffic (the
//! `fingerprint="other"` bucket once more distinct fingerprints than K were seen), and
//! `/healthz` / `/readyz` following the upstream going away and coming back. This file has its
//! own cluster, since it stops it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use qproxy_tests::{
    connect, mode, Mode, PgCluster, Proxy, ProxyOptions, SCRAM, SUPERUSER, TEST_DB,
};

/// The exported families and their types.
const TYPES: &[(&str, &str)] = &[
    ("qproxy_queries_total", "counter"),
    ("qproxy_query_duration_seconds", "histogram"),
    ("qproxy_rows_returned", "histogram"),
    ("qproxy_query_errors_total", "counter"),
    ("qproxy_findings_total", "counter"),
    ("qproxy_request_findings_total", "counter"),
    ("qproxy_client_connections", "gauge"),
    ("qproxy_client_connections_accepted_total", "counter"),
    ("qproxy_upstream_errors_total", "counter"),
    ("qproxy_upstream_up", "gauge"),
    ("qproxy_events_dropped_total", "counter"),
    ("qproxy_parse_failures_total", "counter"),
    ("qproxy_requests_total", "counter"),
    ("qproxy_queries_correlated_total", "counter"),
    ("qproxy_catalog_available", "gauge"),
    ("qproxy_catalog_loads_total", "counter"),
    ("qproxy_verifications_skipped_total", "counter"),
    ("qproxy_verification_queue", "gauge"),
    ("qproxy_background_connections_total", "counter"),
    ("qproxy_background_task_panics_total", "counter"),
    ("qproxy_untracked_executions_total", "counter"),
    ("qproxy_desynced_connections_total", "counter"),
    ("qproxy_findings_lost_total", "counter"),
    ("qproxy_store_write_failures_total", "counter"),
    ("qproxy_store_pending_findings", "gauge"),
    ("qproxy_unread_messages_total", "counter"),
    ("qproxy_statements_not_analysed_total", "counter"),
    ("qproxy_held_bytes", "gauge"),
    ("qproxy_messages_not_held_total", "counter"),
    ("qproxy_startup_evictions_total", "counter"),
    ("qproxy_build_info", "gauge"),
];

/// Six statements with six different fingerprints.
const STATEMENTS: &[&str] = &[
    "SELECT 1",
    "SELECT now()",
    "SELECT current_user",
    "SELECT pg_backend_pid()",
    "SELECT current_database()",
    "SELECT version()",
];

const K: usize = 3;

fn get(proxy: &Proxy, path: &str) -> (u16, String) {
    proxy
        .admin_get(path)
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}\n--- qproxy log ---\n{}", proxy.log()))
}

fn scrape(proxy: &Proxy) -> String {
    let (status, body) = get(proxy, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample written exactly as `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Polls until `check` holds (up to `secs`), then returns the scrape it held on.
fn until(proxy: &Proxy, secs: u64, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = scrape(proxy);
        if check(&text) {
            return text;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {secs}s\n--- last scrape ---\n{text}\n--- qproxy log ---\n{}",
                proxy.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_status(proxy: &Proxy, path: &str, want: u16, secs: u64) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = get(proxy, path);
        if status == want {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!(
                "{path} answered {status} ({body:?}), not {want}, for {secs}s\n--- qproxy log ---\n{}",
                proxy.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `fingerprint` label values of `qproxy_queries_total` series with `statement="select"`.
fn select_fingerprints(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("qproxy_queries_total{") && l.contains("statement=\"select\""))
        .filter_map(|l| {
            let rest = l.split("fingerprint=\"").nth(1)?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect()
}

fn start(cluster: &PgCluster) -> Proxy {
    Proxy::start(&ProxyOptions {
        extra_args: vec!["--metrics-top-k".into(), K.to_string()],
        ..ProxyOptions::new(cluster.url(SUPERUSER, "postgres", "disable"))
    })
    .unwrap_or_else(|e| panic!("starting qproxy: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_proxy_is_scraped_and_follows_the_upstream() {
    if mode() == Mode::Direct {
        eprintln!("skipped in direct mode (needs its own qproxy)");
        return;
    }
    let cluster = tokio::task::block_in_place(PgCluster::start).unwrap();
    let proxy = tokio::task::block_in_place(|| start(&cluster));
    let url = proxy.url(SCRAM, TEST_DB, "disable");

    // Ready once the first upstream check has run; alive throughout.
    tokio::task::block_in_place(|| wait_status(&proxy, "/readyz", 200, 10));
    assert_eq!(get(&proxy, "/healthz").0, 200);
    assert_eq!(get(&proxy, "/nowhere").0, 404);

    let first = connect(&url).await.unwrap();
    let second = connect(&url).await.unwrap();
    for _ in 0..2 {
        for sql in STATEMENTS {
            first.simple_query(sql).await.unwrap();
        }
    }
    assert!(first
        .simple_query("SELECT * FROM no_such_table")
        .await
        .is_err());
    let executed = (STATEMENTS.len() * 2 + 1) as f64;

    let text = tokio::task::block_in_place(|| {
        until(&proxy, 15, "every statement counted", |t| {
            let fps = select_fingerprints(t);
            let total: f64 = t
                .lines()
                .filter(|l| l.starts_with("qproxy_queries_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            total >= executed && fps.iter().any(|f| f == "other")
        })
    });

    // Every family the dashboard and alert rules may use is exported, with its type.
    assert_eq!(qproxy::metrics::METRIC_NAMES.len(), TYPES.len());
    for name in qproxy::metrics::METRIC_NAMES {
        assert!(TYPES.iter().any(|(n, _)| n == name), "{name} untested");
    }
    for (name, kind) in TYPES {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind}:\n{text}"
        );
    }
    // At most K fingerprints have their own series; the rest are under "other", with their
    // statement kind kept.
    let fps = select_fingerprints(&text);
    let own: BTreeSet<&String> = fps.iter().filter(|f| *f != "other").collect();
    assert!(!own.is_empty() && own.len() <= K, "{own:?}\n{text}");
    assert!(
        own.iter().all(|f| f.len() == 16),
        "fingerprint ids: {own:?}"
    );
    let other = sample(
        &text,
        "qproxy_queries_total{fingerprint=\"other\",statement=\"select\"}",
    )
    .unwrap_or_else(|| panic!("no other/select series:\n{text}"));
    assert!(other >= 2.0 * (STATEMENTS.len() - K) as f64, "{text}");
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("qproxy_query_errors_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 1.0, "{text}");
    assert!(text.contains("qproxy_query_duration_seconds_bucket{fingerprint=\"other\",statement=\"select\",le=\"10\"}"));
    assert!(text.contains(
        "qproxy_rows_returned_bucket{fingerprint=\"other\",statement=\"select\",le=\"1000000\"}"
    ));
    assert_eq!(
        sample(&text, "qproxy_build_info{version=\"0.1.0\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "qproxy_upstream_up"), Some(1.0));
    assert_eq!(sample(&text, "qproxy_client_connections"), Some(2.0));
    assert!(sample(&text, "qproxy_client_connections_accepted_total").unwrap() >= 2.0);
    assert_eq!(sample(&text, "qproxy_events_dropped_total"), Some(0.0));

    // A closed session leaves the gauge.
    drop(second);
    tokio::task::block_in_place(|| {
        until(&proxy, 10, "one session left", |t| {
            sample(t, "qproxy_client_connections") == Some(1.0)
        })
    });
    drop(first);

    // The upstream goes away: not ready within the check interval (2 s) plus slack; still
    // alive; the gauge follows.
    tokio::task::block_in_place(|| cluster.stop()).unwrap();
    let took = tokio::task::block_in_place(|| wait_status(&proxy, "/readyz", 503, 10));
    eprintln!("/readyz went 503 {took:?} after the upstream stopped");
    assert_eq!(get(&proxy, "/healthz").0, 200);
    let text = scrape(&proxy);
    assert_eq!(sample(&text, "qproxy_upstream_up"), Some(0.0), "{text}");

    // And comes back.
    tokio::task::block_in_place(|| cluster.start_again()).unwrap();
    tokio::task::block_in_place(|| wait_status(&proxy, "/readyz", 200, 10));
    let text = scrape(&proxy);
    assert_eq!(sample(&text, "qproxy_upstream_up"), Some(1.0), "{text}");
}
