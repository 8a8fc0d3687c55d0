//! Authentication passthrough: each method PostgreSQL offers reaches the client unchanged, and so
//! do the server's refusals.

use qproxy_tests::{
    connect, sqlstate, Login, TestEnv, CLEARTEXT, MD5, SCRAM, TEST_DB, TLS_ONLY, TRUST,
};

fn env() -> &'static TestEnv {
    TestEnv::shared()
}

async fn current_user(login: Login) -> String {
    let client = env().connect(login).await;
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_login() {
    assert_eq!(current_user(TRUST).await, "trust_user");
}

/// The server log (`log_connections = on`) names the method that authenticated the role, which
/// proves the login took the intended path and not, say, `trust`.
fn assert_server_used(login: Login, method: &str) {
    let needle = format!("identity=\"{}\" method={method}", login.user);
    let log = env().cluster.log();
    assert!(
        log.contains(&needle),
        "{needle:?} not in the server log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_login() {
    assert_eq!(current_user(MD5).await, "md5_user");
    assert_server_used(MD5, "md5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_login() {
    assert_eq!(current_user(SCRAM).await, "scram_user");
    assert_server_used(SCRAM, "scram-sha-256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_password_login() {
    assert_eq!(current_user(CLEARTEXT).await, "password_user");
    assert_server_used(CLEARTEXT, "password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_28p01() {
    for login in [MD5, SCRAM, CLEARTEXT] {
        let wrong = Login {
            password: Some("wrong-password"),
            ..login
        };
        let url = env().url(wrong, TEST_DB, "disable");
        let err = connect(&url).await.map(|_| ()).unwrap_err();
        assert_eq!(
            sqlstate(&err).unwrap(),
            "28P01",
            "{} with a wrong password: {err}",
            login.user
        );
    }
    // Failed logins leave the target serving others.
    assert_eq!(current_user(SCRAM).await, "scram_user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_password_is_an_error() {
    let url = env().url(
        Login {
            password: None,
            ..SCRAM
        },
        TEST_DB,
        "disable",
    );
    assert!(connect(&url).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusals_reach_the_client() {
    // tls_user has only a `hostssl` line (and `hostnossl ... reject`): without TLS to the
    // server the refusal is 28000.
    let url = env().url(TLS_ONLY, TEST_DB, "disable");
    let err = connect(&url).await.map(|_| ()).unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "28000", "{err}");

    let url = env().url(SCRAM, "no_such_database", "disable");
    let err = connect(&url).await.map(|_| ()).unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "3D000", "{err}");

    let url = env().url(
        Login {
            user: "no_such_role",
            password: Some("x"),
        },
        TEST_DB,
        "disable",
    );
    let err = connect(&url).await.map(|_| ()).unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "28P01", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_reach_the_server() {
    let url = format!(
        "{}&application_name=qproxy_app&options=-c%20work_mem%3D1234kB%20-c%20search_path%3Dpg_catalog",
        env().url(SCRAM, TEST_DB, "disable")
    );
    let client = connect(&url).await.unwrap();
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('work_mem'), \
             current_setting('search_path')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "qproxy_app");
    assert_eq!(row.get::<_, &str>(1), "1234kB");
    assert_eq!(row.get::<_, &str>(2), "pg_catalog");
    // ParameterStatus follows SET at any time.
    client
        .batch_execute("SET application_name = 'renamed'")
        .await
        .unwrap();
    let row = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "renamed");
}

/// A client that starts authenticating and then goes quiet is disconnected by the proxy's
/// `--startup-timeout` (PostgreSQL's own `authentication_timeout` is a minute), with 08P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_authentication_is_closed_at_the_startup_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options = qproxy_tests::ProxyOptions {
        extra_args: vec!["--startup-timeout".into(), "1".into()],
        ..qproxy_tests::ProxyOptions::new(env().cluster.url(
            qproxy_tests::SUPERUSER,
            "postgres",
            "disable",
        ))
    };
    let Some(proxy) = env().extra_proxy("stalled_authentication", &options) else {
        return;
    };
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let mut startup = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", SCRAM.user), ("database", TEST_DB)],
        &mut startup,
    )
    .unwrap();
    socket.write_all(&startup).await.unwrap();
    let started = std::time::Instant::now();
    // AuthenticationSASL arrives, the client never answers, and the proxy ends the session.
    let mut received = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        socket.read_to_end(&mut received),
    )
    .await
    .expect("the proxy closed the stalled session")
    .unwrap();
    let waited = started.elapsed();
    assert_eq!(received.first(), Some(&b'R'), "{received:?}");
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("08P01"), "{text}");
    assert!(text.contains("did not complete in time"), "{text}");
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(10),
        "closed after {waited:?}"
    );
}
