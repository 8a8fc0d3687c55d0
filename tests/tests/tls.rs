//! TLS toward the client (the proxy's own certificate) and toward the upstream (the upstream
//! URL's `sslmode`), and SCRAM across both: a TLS-terminating proxy must strip
//! SCRAM-SHA-256-PLUS, so a client that also talks TLS to it must not claim channel binding
//! support when the upstream leg is TLS too (`channel_binding=disable`).

use std::time::Duration;

use qproxy_tests::certs::TlsFiles;
use qproxy_tests::programs::{psql, run, run_ok};
use qproxy_tests::wire::{self, Batch, WireConn};
use qproxy_tests::{
    connect, connect_tls, mode, sqlstate, wait_until_running, within, Mode, ProxyOptions, TestEnv,
    SCRAM, SUPERUSER, TEST_DB, TLS_ONLY, TRUST,
};
use tokio_postgres::Client;

fn env() -> &'static TestEnv {
    TestEnv::shared()
}

/// Whether the session's *server-side* connection uses TLS.
async fn server_side_ssl(client: &Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_straight_to_postgres_uses_channel_binding() {
    // The baseline the proxy is compared with: rustls + SCRAM-SHA-256-PLUS directly.
    let env = env();
    let url = format!(
        "{}&channel_binding=require",
        env.direct_url(SCRAM, TEST_DB, "require")
    );
    let client = connect_tls(&url, env.cluster.ca_cert_path()).await.unwrap();
    assert!(server_side_ssl(&client).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_toward_the_client() {
    let env = env();
    let options = ProxyOptions {
        client_tls: true,
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "disable"))
    };
    // In direct mode the same client code runs against PostgreSQL's own TLS.
    let proxy = env.extra_proxy("tls_toward_the_client (proxy part)", &options);
    let ca = match &proxy {
        Some(proxy) => proxy.tls().unwrap().ca_cert.clone(),
        None => env.cluster.ca_cert_path().to_path_buf(),
    };
    let url = |login, sslmode| match &proxy {
        Some(proxy) => proxy.url(login, TEST_DB, sslmode),
        None => env.cluster.url(login, TEST_DB, sslmode),
    };
    let log = || proxy.as_ref().map(|p| p.log()).unwrap_or_default();

    // rustls verifies the proxy's certificate against the proxy's CA; the upstream leg is plain,
    // so the server offers only SCRAM-SHA-256 and the default channel_binding=prefer works.
    let client = connect_tls(&url(SCRAM, "require"), &ca)
        .await
        .unwrap_or_else(|e| panic!("TLS to the proxy: {e}\n{}", log()));
    assert_eq!(
        server_side_ssl(&client).await,
        proxy.is_none(),
        "upstream leg is plain"
    );
    let row = client
        .query_one("SELECT $1::text", &[&"over tls"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "over tls");

    // libpq with full verification, and TLS demanded by the client.
    let verify_full = format!("{}&sslrootcert={}", url(SCRAM, "verify-full"), ca.display());
    let out = run_ok(
        psql(&verify_full).args(["-A", "-t", "-c", "SELECT 'psql over tls'"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(out.stdout.trim(), "psql over tls");

    // A CancelRequest may come over TLS too (tokio-postgres negotiates TLS for it first).
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(10)").await });
    let observer = connect(&env.direct_url(SCRAM, TEST_DB, "disable"))
        .await
        .unwrap();
    wait_until_running(&observer, "SELECT pg_sleep(10)").await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        qproxy_tests::certs::client_config_trusting(&ca).unwrap(),
    );
    token.cancel_query(tls).await.unwrap();
    let err = within(8, "cancelled query", sleeper)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "57014", "{}", log());

    // A certificate from another CA is refused by the client.
    let dir = tempfile::tempdir().unwrap();
    let other = TlsFiles::generate(dir.path(), "unrelated CA").unwrap();
    assert!(connect_tls(&url(SCRAM, "require"), &other.ca_cert)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tls_toward_the_client_without_a_certificate() {
    let env = env();
    if mode() == Mode::Direct {
        eprintln!("skipped in direct mode (PostgreSQL itself has TLS on)");
        return;
    }
    // The shared proxy has no --tls-cert: it answers the SSLRequest with `N`.
    let out = run(
        psql(&env.url(SCRAM, TEST_DB, "require")).args(["-c", "SELECT 1"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!out.status.success(), "sslmode=require must fail: {out}");
    assert!(out.stderr.contains("SSL"), "{out}");
    // sslmode=prefer falls back to plain.
    let out = run_ok(
        psql(&env.url(SCRAM, TEST_DB, "prefer")).args(["-A", "-t", "-c", "SELECT 'plain'"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(out.stdout.trim(), "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_toward_the_upstream_require() {
    let env = env();
    let options = ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "require"));
    let Some(proxy) = env.extra_proxy("tls_toward_the_upstream_require", &options) else {
        return;
    };
    // The client leg is plain; the server sees TLS, so the hostssl-only role gets in.
    let client = connect(&proxy.url(TLS_ONLY, TEST_DB, "disable"))
        .await
        .unwrap_or_else(|e| panic!("tls_user through a TLS upstream: {e}\n{}", proxy.log()));
    assert!(server_side_ssl(&client).await);
    let client = connect(&proxy.url(SCRAM, TEST_DB, "disable"))
        .await
        .unwrap();
    assert!(server_side_ssl(&client).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_toward_the_upstream_verify_full() {
    let env = env();
    let upstream = format!(
        "{}&sslrootcert={}",
        env.cluster.url(SUPERUSER, "postgres", "verify-full"),
        env.cluster.ca_cert_path().display()
    );
    let Some(proxy) = env.extra_proxy(
        "tls_toward_the_upstream_verify_full",
        &ProxyOptions::new(upstream),
    ) else {
        return;
    };
    let client = connect(&proxy.url(TLS_ONLY, TEST_DB, "disable"))
        .await
        .unwrap_or_else(|e| panic!("verify-full upstream: {e}\n{}", proxy.log()));
    assert!(server_side_ssl(&client).await);
    drop(proxy);

    // The upstream's certificate does not chain to the given root: the client is told 08001.
    let dir = tempfile::tempdir().unwrap();
    let wrong = TlsFiles::generate(dir.path(), "not the server's CA").unwrap();
    let upstream = format!(
        "{}&sslrootcert={}",
        env.cluster.url(SUPERUSER, "postgres", "verify-full"),
        wrong.ca_cert.display()
    );
    let proxy = env
        .extra_proxy(
            "tls_toward_the_upstream_verify_full",
            &ProxyOptions::new(upstream),
        )
        .unwrap();
    let err = connect(&proxy.url(SCRAM, TEST_DB, "disable"))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "08001", "{err}\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_with_tls_on_both_legs_needs_channel_binding_disabled() {
    let env = env();
    let options = ProxyOptions {
        client_tls: true,
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "require"))
    };
    // In direct mode: plain SCRAM-SHA-256 over TLS straight to PostgreSQL.
    let proxy = env.extra_proxy("scram_with_tls_on_both_legs (proxy part)", &options);
    let ca = match &proxy {
        Some(proxy) => proxy.tls().unwrap().ca_cert.clone(),
        None => env.cluster.ca_cert_path().to_path_buf(),
    };
    let url = |login, sslmode| match &proxy {
        Some(proxy) => proxy.url(login, TEST_DB, sslmode),
        None => env.cluster.url(login, TEST_DB, sslmode),
    };
    for login in [SCRAM, TLS_ONLY] {
        let url = format!("{}&channel_binding=disable", url(login, "require"));
        let client = connect_tls(&url, &ca).await.unwrap_or_else(|e| {
            let log = proxy.as_ref().map(|p| p.log()).unwrap_or_default();
            panic!("{}: {e}\n{log}", login.user)
        });
        assert!(server_side_ssl(&client).await);
    }
    let url = format!(
        "{}&sslrootcert={}&channel_binding=disable",
        url(SCRAM, "verify-full"),
        ca.display()
    );
    let out = run_ok(
        psql(&url).args(["-A", "-t", "-c", "SELECT current_user"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(out.stdout.trim(), "scram_user");
}

/// The same setup with the clients' default `channel_binding=prefer`: they announce channel
/// binding support, which the server (whose `-PLUS` offer the proxy withheld) would reject as
/// "channel binding negotiation error". The proxy says what is wrong and how to fix it instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_channel_binding_across_two_tls_legs_gets_a_clear_error() {
    let env = env();
    let options = ProxyOptions {
        client_tls: true,
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "require"))
    };
    let Some(proxy) = env.extra_proxy("announced_channel_binding", &options) else {
        return;
    };
    let ca = proxy.tls().unwrap().ca_cert.clone();
    let url = format!(
        "{}&sslrootcert={}",
        proxy.url(SCRAM, TEST_DB, "verify-full"),
        ca.display()
    );
    let out = run(
        psql(&url).args(["-A", "-t", "-c", "SELECT 1"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!out.status.success(), "{out}");
    for part in [
        "FATAL:  qproxy: SCRAM channel binding cannot work through qproxy",
        "channel_binding=disable",
        "sslmode=disable in --upstream",
    ] {
        assert!(
            out.stderr.contains(part),
            "{part:?} missing: {out}
{}",
            proxy.log()
        );
    }
    // tokio-postgres announces it the same way; the SQLSTATE is the server's own for this.
    let err = connect_tls(&proxy.url(SCRAM, TEST_DB, "require"), &ca)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "08P01", "{err}");
    let message = err.as_db_error().unwrap().message();
    assert!(message.contains("channel_binding=disable"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_plus_is_never_offered_across_the_proxy() {
    let env = env();
    // Straight to PostgreSQL without TLS, only SCRAM-SHA-256 is offered.
    let direct = WireConn::sasl_mechanisms(env.cluster.port(), SCRAM.user, TEST_DB)
        .await
        .unwrap();
    assert_eq!(direct, ["SCRAM-SHA-256"]);
    // Through a proxy whose upstream leg is TLS, the server offers SCRAM-SHA-256-PLUS bound to
    // *its* TLS session, which the client does not share: the proxy must not pass it on.
    let options = ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "require"));
    let Some(proxy) = env.extra_proxy("scram_plus_is_never_offered_across_the_proxy", &options)
    else {
        return;
    };
    let proxied = WireConn::sasl_mechanisms(proxy.port(), SCRAM.user, TEST_DB)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.log()));
    assert_eq!(proxied, ["SCRAM-SHA-256"], "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_plus_is_not_offered_over_a_tls_terminating_proxy() {
    let env = env();
    // Baseline: PostgreSQL itself offers SCRAM-SHA-256-PLUS over TLS.
    let stream = wire::tls_after_ssl_request(env.cluster.port(), env.cluster.ca_cert_path())
        .await
        .unwrap();
    let direct = WireConn::sasl_mechanisms_over(stream, SCRAM.user, TEST_DB)
        .await
        .unwrap();
    assert_eq!(direct, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);

    let options = ProxyOptions {
        client_tls: true,
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "require"))
    };
    let Some(proxy) = env.extra_proxy("scram_plus_over_a_tls_terminating_proxy", &options) else {
        return;
    };
    let stream = wire::tls_after_ssl_request(proxy.port(), &proxy.tls().unwrap().ca_cert)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.log()));
    let proxied = WireConn::sasl_mechanisms_over(stream, SCRAM.user, TEST_DB)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.log()));
    assert_eq!(proxied, ["SCRAM-SHA-256"], "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_without_ssl_request() {
    let env = env();
    let options = ProxyOptions {
        client_tls: true,
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "disable"))
    };
    // PostgreSQL 15 has no direct TLS (it came with 17), so there is nothing to compare with.
    let Some(proxy) = env.extra_proxy("direct_tls_without_ssl_request", &options) else {
        return;
    };
    let stream = wire::direct_tls(proxy.port(), &proxy.tls().unwrap().ca_cert)
        .await
        .unwrap_or_else(|e| panic!("direct TLS handshake: {e:#}\n{}", proxy.log()));
    let (mut conn, replies) =
        WireConn::start(stream, &[("user", TRUST.user), ("database", TEST_DB)])
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", proxy.log()));
    assert_eq!(replies, ["AuthenticationOk", "ReadyForQuery(I)"]);
    conn.send(Batch::new().query("SELECT 'direct tls'"))
        .await
        .unwrap();
    assert!(conn
        .read_until_ready(1)
        .await
        .unwrap()
        .contains(&"DataRow(direct tls)".to_string()));
}
