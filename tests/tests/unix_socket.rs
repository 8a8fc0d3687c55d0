//! Unix-domain socket upstreams through the real binary: the test cluster listens on a socket in
//! its own directory, and `--upstream` names that directory the way libpq does
//! (`postgres://user@/db?host=DIR&port=PORT`, or the directory percent-encoded as the host).
//! Client sessions, CancelRequests, `/readyz`'s reachability check and the catalog connection
//! all go over the socket.
//!
//! That a session really runs over the socket is read from the server itself:
//! `inet_server_addr()` is NULL on a Unix-domain connection and 127.0.0.1 over TCP.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use qproxy_tests::report::{findings_of, wait_for_report};
use qproxy_tests::{
    connect, mode, sqlstate, wait_until_running, within, Mode, PgCluster, Proxy, ProxyOptions,
    SCRAM, SUPERUSER,
};
use tokio_postgres::NoTls;

/// The database of these tests: `items` is large enough for the unindexed-filter detector
/// (10,000 estimated rows) and `tag` has no index.
const DB: &str = "socket_test";
const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, tag text NOT NULL);
INSERT INTO items SELECT g, 'tag' || (g % 100) FROM generate_series(1, 20000) g;
GRANT SELECT ON items TO PUBLIC;
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

/// A proxy whose upstream is `upstream`; `None` (test skipped) in direct mode.
async fn socket_proxy(test: &str, upstream: String) -> Option<Proxy> {
    if mode() == Mode::Direct {
        eprintln!("{test}: skipped in direct mode (the socket is the proxy's upstream)");
        return None;
    }
    tokio::task::spawn_blocking(move || {
        Proxy::start(&ProxyOptions::new(upstream)).unwrap_or_else(|e| panic!("{e:#}"))
    })
    .await
    .ok()
}

/// Whether the session behind `client` reached the server over a Unix-domain socket.
async fn over_socket(client: &tokio_postgres::Client) -> bool {
    client
        .query_one("SELECT inet_server_addr() IS NULL", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cancels_readiness_and_the_catalog_use_the_socket() {
    let cluster = cluster();
    let upstream = format!(
        "postgres://postgres@/{DB}?host={}&port={}",
        cluster.socket_dir().display(),
        cluster.port()
    );
    let Some(proxy) = socket_proxy("socket upstream", upstream).await else {
        return;
    };
    let url = proxy.url(SCRAM, DB, "disable");
    let client = connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting through the proxy: {e}\n{}", proxy.log()));
    // The control: the same server over TCP is not a socket session.
    let direct = connect(&cluster.url(SUPERUSER, DB, "disable"))
        .await
        .unwrap();
    assert!(!over_socket(&direct).await);
    assert!(
        over_socket(&client).await,
        "the proxy did not use the socket"
    );
    let row = client
        .query_one("SELECT count(*) FROM items WHERE id <= $1", &[&10i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10);

    // A cancel reaches the backend, which the proxy reached over the socket.
    let observer = connect(&url).await.unwrap();
    let token = client.cancel_token();
    let started = Instant::now();
    let query = tokio::spawn(async move {
        let result = client
            .simple_query("SELECT pg_sleep(30) /* cancel over the socket */")
            .await;
        (result, client)
    });
    wait_until_running(&observer, "%/* cancel over the socket */").await;
    token.cancel_query(NoTls).await.unwrap();
    let (result, client) = within(20, "cancelled query", query).await.unwrap();
    let err = result.unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "57014", "query_canceled: {err}");
    assert!(started.elapsed() < Duration::from_secs(25));
    assert_eq!(
        client
            .query_one("SELECT 7::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );

    // The catalog connection goes over the socket too: an unindexed filter is found (the
    // statement waits in the proxy for its database's catalog to load).
    client
        .query("SELECT id FROM items WHERE tag = $1", &[&"tag1"])
        .await
        .unwrap();
    let store = proxy.store_path();
    let report = tokio::task::spawn_blocking(move || {
        wait_for_report(&store, Duration::from_secs(60), |r| {
            r["summary"]["catalog"] == "available" && !findings_of(r, "unindexed_filter").is_empty()
        })
    })
    .await
    .unwrap();
    let report = report.unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.log()));
    let finding = findings_of(&report, "unindexed_filter")[0];
    assert_eq!(finding["table"], "public.items", "{finding:#}");
    assert!(proxy.log().contains("catalog loaded"), "{}", proxy.log());

    // /readyz checks the socket, not a TCP port.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = proxy.admin_get("/readyz").unwrap();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} {body}\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The directory percent-encoded as the URL's host, `postgresql://`, and an `sslmode` that
/// asks for TLS, which libpq (and so qproxy) ignores on a socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_encoded_socket_directory_in_the_authority() {
    let cluster = cluster();
    let dir = cluster
        .socket_dir()
        .display()
        .to_string()
        .replace('/', "%2F");
    let upstream = format!(
        "postgresql://postgres@{dir}:{}/{DB}?sslmode=require",
        cluster.port()
    );
    let Some(proxy) = socket_proxy("percent-encoded socket upstream", upstream).await else {
        return;
    };
    let client = connect(&proxy.url(SUPERUSER, DB, "disable"))
        .await
        .unwrap_or_else(|e| panic!("connecting through the proxy: {e}\n{}", proxy.log()));
    assert!(over_socket(&client).await);
    assert!(
        proxy.log().contains("sslmode is ignored"),
        "{}",
        proxy.log()
    );
}
