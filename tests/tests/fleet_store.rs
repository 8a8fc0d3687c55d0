//! The findings store a fleet shares: real `qproxy serve` processes, each with its own
//! `--instance`, write one PostgreSQL store at once while clients produce the same N+1 through
//! each; `qproxy report --store postgres://...` then shows both runs and the finding merged,
//! `--instance` and `--since` narrow it, and `--store-retention` deletes what is too old. The
//! schema is migrated once when the proxies start together and found current afterwards. The
//! store connections use TLS as the URL's `sslmode` says, and no log shows the password. The
//! same filters and retention through the binary over a SQLite store close the file.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use qproxy_tests::report::{findings_of, run_report};
use qproxy_tests::{connect, PgCluster, Proxy, ProxyOptions, SUPERUSER, TEST_DB, TLS_ONLY};
use serde_json::Value;
use tokio_postgres::Client;

/// Lookups per N+1 request; the threshold is 5 distinct parameters per request.
const CHILDREN: i32 = 6;
/// N+1 requests each proxy sees.
const REQUESTS: u64 = 2;
/// The route every N+1 carries, so every proxy's finding has the same id.
const ROUTE: &str = "fleet.items";
/// Forty days in nanoseconds: how far back a run is moved to make it old.
const FORTY_DAYS_NS: i64 = 40 * 86_400 * 1_000_000_000;

/// One cluster per test binary, with the application's table in [`TEST_DB`].
fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
        cluster
            .psql_superuser(
                TEST_DB,
                "CREATE TABLE fleet_items (id int PRIMARY KEY, name text NOT NULL);
                 INSERT INTO fleet_items SELECT g, 'item ' || g FROM generate_series(1, 50) g;",
            )
            .expect("creating fleet_items");
        cluster
    })
}

fn psql(db: &str, sql: &str) -> String {
    cluster()
        .psql_superuser(db, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
        .trim()
        .to_string()
}

/// A proxy in front of the cluster writing to `store` as `instance`.
fn start_proxy(store: &str, instance: &str, extra: &[&str]) -> Proxy {
    let mut extra_args = vec!["--instance".to_string(), instance.to_string()];
    extra_args.extend(extra.iter().map(|a| a.to_string()));
    let options = ProxyOptions {
        shutdown_grace_secs: Some(5),
        store: Some(store.into()),
        extra_args,
        ..ProxyOptions::new(cluster().url(SUPERUSER, "postgres", "disable"))
    };
    Proxy::start(&options).unwrap_or_else(|e| panic!("starting qproxy {instance}: {e:#}"))
}

/// SIGTERM, then wait for the drain and the final flush.
fn stop(mut proxy: Proxy) -> String {
    proxy.terminate().unwrap();
    let status = proxy.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(
        status.success(),
        "qproxy exited with {status}\n{}",
        proxy.log()
    );
    proxy.log()
}

/// `REQUESTS` N+1 requests through `proxy`, each tagged with its own request id.
async fn n_plus_one_requests(proxy: &Proxy, name: &str) {
    let client: Client = connect(&proxy.url(SUPERUSER, TEST_DB, "disable"))
        .await
        .unwrap_or_else(|e| panic!("connecting through {name}: {e}\n{}", proxy.log()));
    for r in 0..REQUESTS {
        let tag = format!("/*request_id='{name}-{r}',route='{ROUTE}'*/");
        let parent = format!("SELECT id FROM fleet_items ORDER BY id LIMIT {CHILDREN} {tag}");
        let ids: Vec<i32> = client
            .query(&parent, &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let child = client
            .prepare(&format!("SELECT name FROM fleet_items WHERE id = $1 {tag}"))
            .await
            .unwrap();
        for id in ids {
            client.query_one(&child, &[&id]).await.unwrap();
        }
    }
}

/// `qproxy report --store STORE --format json ARGS..`, which must succeed.
fn report(store: &str, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = run_report(Path::new(store), &all).unwrap();
    assert!(out.status.success(), "qproxy report {args:?}: {out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn instances(report: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names
}

/// The N+1 on [`ROUTE`]: its occurrences, or 0 when the report does not have it.
fn fleet_n_plus_one(report: &Value) -> (u64, Option<u64>) {
    let found: Vec<&Value> = findings_of(report, "n_plus_one")
        .into_iter()
        .filter(|f| f["request"]["route"] == ROUTE)
        .collect();
    match found[..] {
        [] => (0, None),
        [f] => (f["occurrences"].as_u64().unwrap(), f["count"].as_u64()),
        _ => panic!("the N+1 is not merged into one finding: {report:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_one_postgres_store() {
    let cluster = cluster();
    cluster.create_database("fleet_store").unwrap();
    // The store's role may only connect over TLS, so a store connection without it fails.
    psql(
        "fleet_store",
        "GRANT CREATE ON DATABASE fleet_store TO tls_user",
    );
    let ca = cluster.ca_cert_path().display().to_string();
    let store_url = |sslmode: &str| {
        format!(
            "{}&sslrootcert={ca}",
            cluster.url(TLS_ONLY, "fleet_store", sslmode)
        )
    };
    let (store_a, store_b) = (store_url("require"), store_url("verify-full"));

    // Two proxies start at once on a fresh database: one migrates, the other finds it done.
    let (a, b) = {
        let (sa, sb) = (store_a.clone(), store_b.clone());
        let a = std::thread::spawn(move || start_proxy(&sa, "fleet-a", &[]));
        let b = std::thread::spawn(move || start_proxy(&sb, "fleet-b", &[]));
        (a.join().unwrap(), b.join().unwrap())
    };
    let versions = psql(
        "fleet_store",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM qproxy.qproxy_schema_version",
    );
    assert_eq!(versions, "1", "each migration once");
    let tls_sessions = psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity JOIN pg_stat_ssl USING (pid) \
         WHERE application_name = 'qproxy-store' AND datname = 'fleet_store' AND ssl",
    );
    assert_eq!(tls_sessions, "2", "both store connections use TLS");

    // The same N+1 through both proxies at once.
    tokio::join!(
        n_plus_one_requests(&a, "fleet-a"),
        n_plus_one_requests(&b, "fleet-b")
    );
    let logs = tokio::task::spawn_blocking(move || [stop(a), stop(b)])
        .await
        .unwrap();
    let migrated = logs
        .iter()
        .filter(|log| log.contains("findings store schema migrated"))
        .count();
    let current = logs
        .iter()
        .filter(|log| log.contains("findings store schema is current"))
        .count();
    assert_eq!((migrated, current), (1, 1), "{logs:#?}");
    for log in &logs {
        assert!(!log.contains("tls-secret"), "password in the log:\n{log}");
        assert!(log.contains("tls_user:***@"), "{log}");
        assert!(
            log.contains("findings store's password is on the command line"),
            "{log}"
        );
    }

    // One report over the fleet: both runs, the N+1 merged with occurrences added up.
    let fleet = report(&store_b, &[]);
    assert_eq!(instances(&fleet), ["fleet-a", "fleet-b"], "{fleet:#}");
    assert_eq!(
        fleet_n_plus_one(&fleet),
        (2 * REQUESTS, Some(CHILDREN as u64)),
        "{fleet:#}"
    );
    for (instance, other) in [("fleet-a", "fleet-b"), ("fleet-b", "fleet-a")] {
        let one = report(&store_b, &["--instance", instance]);
        assert_eq!(instances(&one), [instance]);
        assert!(!instances(&one).contains(&other));
        assert_eq!(fleet_n_plus_one(&one).0, REQUESTS, "{one:#}");
    }
    let latest = report(&store_b, &["--run", "latest"]);
    assert_eq!(instances(&latest).len(), 1);

    // --since: fleet-a's run moved 40 days back drops out of a week's report.
    psql(
        "fleet_store",
        &format!(
            "UPDATE qproxy.runs SET started_at = started_at - {FORTY_DAYS_NS}, \
             updated_at = updated_at - {FORTY_DAYS_NS}, ended_at = ended_at - {FORTY_DAYS_NS} \
             WHERE instance = 'fleet-a'"
        ),
    );
    let week = report(&store_b, &["--since", "7d"]);
    assert_eq!(instances(&week), ["fleet-b"]);
    assert_eq!(fleet_n_plus_one(&week).0, REQUESTS);
    let both = report(&store_b, &["--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(instances(&both), ["fleet-a", "fleet-b"]);

    // Retention: a proxy started with 30 days deletes fleet-a's run before it takes clients.
    let c = tokio::task::spawn_blocking({
        let store = store_a.clone();
        move || start_proxy(&store, "fleet-c", &["--store-retention", "30d"])
    })
    .await
    .unwrap();
    let after = report(&store_b, &[]);
    assert_eq!(instances(&after), ["fleet-b", "fleet-c"], "{}", c.log());
    assert_eq!(fleet_n_plus_one(&after).0, REQUESTS);
    let left = psql(
        "fleet_store",
        "SELECT count(*) FROM qproxy.runs WHERE instance = 'fleet-a'",
    );
    assert_eq!(left, "0");
    let log = tokio::task::spawn_blocking(move || stop(c)).await.unwrap();
    assert!(log.contains("findings store schema is current"), "{log}");
    assert!(!log.contains("findings store schema migrated"), "{log}");
    assert!(
        log.contains("findings store retention: deleted old runs"),
        "{log}"
    );

    // What the report prints never holds the password either, even when it fails.
    let out = run_report(Path::new(&store_b), &["--store-schema", "elsewhere"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out}");
    let text = out.combined();
    assert!(
        text.contains("no findings store in schema elsewhere") && !text.contains("tls-secret"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_instance_since_and_retention() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let path = dir.path().join("findings.db");
    let store = path.to_str().unwrap().to_string();

    let first = start_proxy(&store, "shard-1", &[]);
    n_plus_one_requests(&first, "shard-1").await;
    tokio::task::spawn_blocking(move || stop(first))
        .await
        .unwrap();
    let second = start_proxy(&store, "shard-2", &[]);
    n_plus_one_requests(&second, "shard-2").await;
    tokio::task::spawn_blocking(move || stop(second))
        .await
        .unwrap();

    // SQLite reports the latest run unless told otherwise.
    assert_eq!(instances(&report(&store, &[])), ["shard-2"]);
    let all = report(&store, &["--run", "all"]);
    assert_eq!(instances(&all), ["shard-1", "shard-2"]);
    assert_eq!(fleet_n_plus_one(&all).0, 2 * REQUESTS);
    let one = report(&store, &["--instance", "shard-1"]);
    assert_eq!(instances(&one), ["shard-1"]);
    assert_eq!(fleet_n_plus_one(&one).0, REQUESTS);

    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE runs SET started_at = started_at - ?1, updated_at = updated_at - ?1, \
             ended_at = ended_at - ?1 WHERE instance = 'shard-1'",
            [FORTY_DAYS_NS],
        )
        .unwrap();
    let week = report(&store, &["--run", "all", "--since", "7d"]);
    assert_eq!(instances(&week), ["shard-2"]);

    let third = start_proxy(&store, "shard-3", &["--store-retention", "30d"]);
    let kept = report(&store, &["--run", "all"]);
    assert_eq!(instances(&kept), ["shard-2", "shard-3"], "{}", third.log());
    assert_eq!(fleet_n_plus_one(&kept).0, REQUESTS);
    let log = tokio::task::spawn_blocking(move || stop(third))
        .await
        .unwrap();
    assert!(
        log.contains("findings store retention: deleted old runs"),
        "{log}"
    );
}

/// `--help` prints flags' environment values; never a URL with a password in it.
#[test]
fn help_never_shows_a_store_or_upstream_password() {
    let url = "postgres://fleet:hunter2@db.internal/findings";
    for command in ["serve", "report"] {
        let out = qproxy_tests::programs::run(
            std::process::Command::new(qproxy_tests::proxy::qproxy_bin().unwrap())
                .args([command, "--help"])
                .env("QPROXY_STORE", url)
                .env("QPROXY_UPSTREAM", url),
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(out.status.success(), "{out}");
        let text = out.combined();
        assert!(text.contains("QPROXY_STORE"), "{text}");
        assert!(
            !text.contains("hunter2"),
            "qproxy {command} --help:\n{text}"
        );
    }
}
