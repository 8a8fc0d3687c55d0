//! The edges of a session through the real proxy: a full proxy, startup packets it must refuse,
//! an upstream it cannot reach, server messages over the held-message cap, client messages that
//! are framed correctly but garbled, the upstream password, and log floods.

use std::path::Path;
use std::time::{Duration, Instant};

use qproxy_tests::programs::{psql, run};
use qproxy_tests::wire::{Batch, WireConn};
use qproxy_tests::{
    connect, connect_tls, mode, sqlstate, within, Mode, Proxy, ProxyOptions, TestEnv, SCRAM,
    SUPERUSER, TEST_DB, TRUST,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env() -> &'static TestEnv {
    TestEnv::shared()
}

/// A proxy in front of the shared cluster with more `qproxy serve` arguments, or `None` in
/// direct mode.
fn proxy_with(test: &str, args: &[&str]) -> Option<Proxy> {
    let options = ProxyOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..ProxyOptions::new(env().cluster.url(SUPERUSER, "postgres", "disable"))
    };
    env().extra_proxy(test, &options)
}

/// The proxy's log lines, parsed (it logs JSON lines when its stderr is a file).
fn log_lines(proxy: &Proxy) -> Vec<Value> {
    proxy
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// How many events of one kind reached the log: lines with `message`, plus what the summary
/// lines for `events` say they left out. Also returns the number of lines.
fn logged_events(proxy: &Proxy, message: &str, events: &str) -> (u64, u64) {
    let mut lines = 0;
    let mut total = 0;
    for line in log_lines(proxy) {
        if line["message"] == message {
            lines += 1;
            total += 1;
        } else if line["events"] == events {
            lines += 1;
            total += line["suppressed"].as_u64().expect("a count");
        }
    }
    (total, lines)
}

/// Writes `bytes` on a new connection to the port and reads until the other side closes.
async fn reply_to(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut reply = Vec::new();
    within(
        20,
        "the reply and the close",
        socket.read_to_end(&mut reply),
    )
    .await
    .unwrap();
    reply
}

/// The SQLSTATE (`C`) and message (`M`) of the ErrorResponse `reply` consists of.
fn error_response(reply: &[u8]) -> (String, String) {
    assert_eq!(
        reply.first(),
        Some(&b'E'),
        "not an ErrorResponse: {reply:?}"
    );
    let len = u32::from_be_bytes(reply[1..5].try_into().unwrap()) as usize;
    assert_eq!(
        reply.len(),
        len + 1,
        "one message, then the close: {reply:?}"
    );
    let (mut code, mut message) = (String::new(), String::new());
    let mut fields = &reply[5..reply.len() - 1];
    while let Some((&kind, rest)) = fields.split_first() {
        let end = rest.iter().position(|&b| b == 0).unwrap();
        let value = String::from_utf8_lossy(&rest[..end]).into_owned();
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        fields = &rest[end + 1..];
    }
    (code, message)
}

/// A startup-phase packet: length, then `code` and `rest`.
fn startup_packet(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    packet.extend_from_slice(&u32::try_from(8 + rest.len()).unwrap().to_be_bytes());
    packet.extend_from_slice(&code.to_be_bytes());
    packet.extend_from_slice(rest);
    packet
}

const PROTOCOL_3: u32 = 3 << 16;
const SSL_REQUEST: u32 = 80_877_103;
const CANCEL_REQUEST: u32 = 80_877_102;

/// Connects to a proxy whose only slot may still be held for a moment by a connection that
/// just ended (the harness's own readiness probe, an earlier session): retries until it is free.
async fn connect_when_free(url: &str) -> tokio_postgres::Client {
    within(30, "a free slot", async {
        loop {
            match connect(url).await {
                Ok(client) => return client,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_proxy_answers_like_postgresql_after_the_ssl_exchange() {
    let Some(proxy) = proxy_with("a_full_proxy", &["--max-connections", "1"]) else {
        return;
    };
    let started = Instant::now();
    let held = connect_when_free(&proxy.url(TRUST, TEST_DB, "disable")).await;
    // libpq's default sslmode=prefer sends an SSLRequest first: it must get its `N`, not an
    // ErrorResponse it would report as "server sent an error response during SSL exchange".
    let out = run(
        psql(&proxy.url(TRUST, TEST_DB, "prefer")).args(["-c", "SELECT 1"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("sorry, too many clients already"),
        "{out}\n{}",
        proxy.log()
    );
    assert!(!out.stderr.contains("SSL"), "{out}");
    // tokio-postgres with a TLS connector sends an SSLRequest too, and shows the SQLSTATE.
    let err = connect_tls(
        &proxy.url(TRUST, TEST_DB, "prefer"),
        env().cluster.ca_cert_path(),
    )
    .await
    .map(|_| ())
    .unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "53300", "{err}");
    // A client that never sends its StartupMessage is closed by the time box, not kept.
    let mut silent = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let mut rest = Vec::new();
    within(
        20,
        "the silent client's close",
        silent.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    // Once the session that held the only slot ends, there is room again.
    drop(held);
    connect_when_free(&proxy.url(TRUST, TEST_DB, "disable")).await;
    // One log line for the refusals of one window, with the client's address as an address.
    let log = proxy.log();
    let refusals = log_lines(&proxy)
        .into_iter()
        .filter(|l| l["message"] == "client refused: the proxy is at --max-connections")
        .collect::<Vec<_>>();
    // One line per 10 s window with refusals in it.
    let windows = started.elapsed().as_secs() / 10 + 1;
    assert!(
        (1..=windows).contains(&u64::try_from(refusals.len()).unwrap()),
        "{log}"
    );
    assert!(
        refusals[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{log}"
    );
    assert!(!log.contains("Some("), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_proxy_with_tls_answers_over_tls() {
    let options = ProxyOptions {
        client_tls: true,
        extra_args: vec!["--max-connections".into(), "1".into()],
        ..ProxyOptions::new(env().cluster.url(SUPERUSER, "postgres", "disable"))
    };
    let Some(proxy) = env().extra_proxy("a_full_proxy_with_tls", &options) else {
        return;
    };
    let _held = connect_when_free(&proxy.url(TRUST, TEST_DB, "disable")).await;
    // A client that demands verified TLS gets it, then the refusal inside it.
    let url = format!(
        "{}&sslrootcert={}",
        proxy.url(TRUST, TEST_DB, "verify-full"),
        proxy.tls().unwrap().ca_cert.display()
    );
    let out = run(psql(&url).args(["-c", "SELECT 1"]), Duration::from_secs(60)).unwrap();
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("sorry, too many clients already"),
        "{out}\n{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_startup_packets_get_an_error_response() {
    let env = env();
    let Some(proxy) = env.proxy() else {
        eprintln!("skipped in direct mode (PostgreSQL closes silently on some of these)");
        return;
    };
    // A protocol PostgreSQL 15 does not speak: 0A000, as PostgreSQL answers it.
    let reply = reply_to(
        proxy.port(),
        &startup_packet(2 << 16, b"user\0trust_user\0\0"),
    )
    .await;
    let (code, message) = error_response(&reply);
    assert_eq!(code, "0A000");
    assert!(
        message.contains("unsupported frontend protocol 2.0"),
        "{message}"
    );
    // An impossible length.
    let (code, message) = error_response(&reply_to(proxy.port(), &[0, 0, 0, 4]).await);
    assert_eq!(code, "08P01");
    assert!(message.contains("invalid startup packet"), "{message}");
    // Parameters without their terminator.
    let reply = reply_to(
        proxy.port(),
        &startup_packet(PROTOCOL_3, b"user\0trust_user"),
    )
    .await;
    let (code, message) = error_response(&reply);
    assert_eq!(code, "08P01");
    assert!(message.contains("truncated"), "{message}");
    // After the SSL exchange (`N`), garbage where the StartupMessage belongs.
    let mut bytes = startup_packet(SSL_REQUEST, b"");
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let reply = reply_to(proxy.port(), &bytes).await;
    assert_eq!(reply.first(), Some(&b'N'));
    let (code, _) = error_response(&reply[1..]);
    assert_eq!(code, "08P01");
    // A good StartupMessage still works.
    WireConn::connect(proxy.port(), TRUST.user, TEST_DB)
        .await
        .unwrap();
    let log = proxy.log();
    assert!(log.contains("\"peer\":\"127.0.0.1:"), "{log}");
    assert!(!log.contains("Some("), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_an_error_response_logged_once() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let options = ProxyOptions::new(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ));
    let Some(proxy) = env().extra_proxy("an_unreachable_upstream", &options) else {
        return;
    };
    let started = Instant::now();
    let out = run(
        psql(&proxy.url(TRUST, TEST_DB, "prefer")).args(["-c", "SELECT 1"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("qproxy: cannot connect to upstream"),
        "{out}"
    );
    for _ in 0..30 {
        let err = connect(&proxy.url(TRUST, TEST_DB, "disable"))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(sqlstate(&err).unwrap(), "08001", "{err}");
    }
    let lines = log_lines(&proxy)
        .into_iter()
        .filter(|l| l["message"] == "upstream unreachable")
        .count();
    // One line per 10 s window with failures in it.
    let windows = started.elapsed().as_secs() / 10 + 1;
    assert!(
        (1..=windows).contains(&u64::try_from(lines).unwrap()),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_larger_than_the_message_cap_reaches_the_client() {
    let env = env();
    let proxy = proxy_with(
        "a_server_error_larger_than_the_cap",
        &["--max-message-bytes", "1048576"],
    );
    let url = match &proxy {
        Some(proxy) => proxy.url(SCRAM, TEST_DB, "disable"),
        None => env.direct_url(SCRAM, TEST_DB, "disable"),
    };
    let log = || proxy.as_ref().map(|p| p.log()).unwrap_or_default();
    let client = connect(&url).await.unwrap();
    // A 2 MB error text, simple protocol.
    let err = client
        .batch_execute("DO $$ BEGIN RAISE EXCEPTION '%', repeat('x', 2000000); END $$")
        .await
        .unwrap_err();
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{err:?}\n{}", log()));
    assert_eq!(db.code().code(), "P0001");
    assert_eq!(db.message().len(), 2_000_000);
    // And in the extended protocol: the error quotes the 2 MB value.
    let err = client
        .query_one("SELECT repeat('y', $1)::int4", &[&2_000_000i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "22P02");
    assert!(err.as_db_error().unwrap().message().len() > 2_000_000);
    // The connection goes on.
    let row = client.query_one("SELECT 41::int4 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    if let Some(proxy) = &proxy {
        // What the analysis could not read is counted.
        let (_, metrics) = proxy.admin_get("/metrics").unwrap();
        let unread = metrics
            .lines()
            .find_map(|l| l.strip_prefix("qproxy_unread_messages_total "))
            .unwrap_or_else(|| panic!("{metrics}"));
        assert_eq!(unread, "2", "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_client_messages_get_the_servers_error_and_the_session_goes_on() {
    let env = env();
    let mut conn = WireConn::connect(env.port(), TRUST.user, TEST_DB)
        .await
        .unwrap();
    // A Parse cut inside its query text: no terminator, no parameter count.
    conn.send(Batch::new().raw(b'P', b"\0SELECT 1").sync())
        .await
        .unwrap();
    assert_eq!(
        conn.read_until_ready(1).await.unwrap(),
        ["Error(08P01)", "ReadyForQuery(I)"]
    );
    // A Bind that announces two parameter values and carries one.
    conn.send(
        Batch::new()
            .parse("two", "SELECT $1::int4 + $2::int4")
            .raw(b'B', b"\0two\0\0\0\0\x02\0\0\0\x011")
            .sync(),
    )
    .await
    .unwrap();
    assert_eq!(
        conn.read_until_ready(1).await.unwrap(),
        ["ParseComplete", "Error(08P01)", "ReadyForQuery(I)"]
    );
    // A well-formed Bind with the wrong number of values for its statement.
    conn.send(Batch::new().bind("", "two", &["1"]).execute("").sync())
        .await
        .unwrap();
    assert_eq!(
        conn.read_until_ready(1).await.unwrap(),
        ["Error(08P01)", "ReadyForQuery(I)"]
    );
    // A simple Query without its terminator.
    conn.send(Batch::new().raw(b'Q', b"SELECT 1"))
        .await
        .unwrap();
    assert_eq!(
        conn.read_until_ready(1).await.unwrap(),
        ["Error(08P01)", "ReadyForQuery(I)"]
    );
    // The session, and the statement prepared in it, still work.
    conn.send(
        Batch::new()
            .bind("", "two", &["40", "2"])
            .execute("")
            .sync()
            .query("SELECT 'still here'"),
    )
    .await
    .unwrap();
    let replies = conn.read_until_ready(2).await.unwrap();
    assert_eq!(
        replies,
        [
            "BindComplete",
            "DataRow(42)",
            "CommandComplete(SELECT 1)",
            "ReadyForQuery(I)",
            "RowDescription(?column?)",
            "DataRow(still here)",
            "CommandComplete(SELECT 1)",
            "ReadyForQuery(I)"
        ]
    );
    if let Some(proxy) = env.proxy() {
        let log = proxy.log();
        assert!(!log.contains("protocol violation by the client"), "{log}");
    }
}

/// Whether `path`'s bytes contain `needle`.
fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Runs a filtered query through `proxy` (so the catalog of [`TEST_DB`] is loaded with the
/// upstream credentials) and waits until the log says whether the catalog loaded.
async fn catalog_outcome(proxy: &Proxy) -> String {
    let client = connect(&proxy.url(TRUST, TEST_DB, "disable"))
        .await
        .unwrap();
    client
        .query(
            "SELECT relname FROM pg_class WHERE relname = $1",
            &[&"pg_class"],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for line in log_lines(proxy) {
            let message = line["message"].as_str().unwrap_or_default();
            if message == "catalog loaded" {
                return "loaded".into();
            }
            if message.starts_with("catalog unavailable") {
                return line["error"].as_str().unwrap_or_default().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no catalog outcome\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The password works, and shows in none of the argv, the log, `/metrics` and the store.
async fn assert_used_and_hidden(proxy: &Proxy, password: &str, in_argv: bool) {
    assert_eq!(catalog_outcome(proxy).await, "loaded", "{}", proxy.log());
    let argv = std::fs::read(format!("/proc/{}/cmdline", proxy.pid())).unwrap();
    let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
    assert_eq!(argv.contains(password), in_argv, "{argv}");
    let (_, metrics) = proxy.admin_get("/metrics").unwrap();
    assert!(!metrics.contains(password));
    let log = proxy.log();
    assert!(!log.contains(password), "{log}");
    let store = proxy.store_path();
    for suffix in ["", "-wal", "-journal"] {
        let path = format!("{}{suffix}", store.display());
        assert!(!file_contains(Path::new(&path), password), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_password_from_env_or_file_is_used_and_never_shown() {
    let env = env();
    if mode() == Mode::Direct {
        eprintln!("skipped in direct mode (needs its own qproxy)");
        return;
    }
    let password = SCRAM.password.unwrap();
    // The catalog connection logs in as scram_user, which needs its password.
    let upstream = format!(
        "postgres://{}@127.0.0.1:{}/postgres?sslmode=disable",
        SCRAM.user,
        env.cluster.port()
    );

    let options = ProxyOptions {
        env: vec![("QPROXY_UPSTREAM_PASSWORD".into(), password.into())],
        ..ProxyOptions::new(upstream.clone())
    };
    let proxy = Proxy::start(&options).unwrap();
    assert_used_and_hidden(&proxy, password, false).await;
    assert!(!proxy.log().contains("on the command line"));
    drop(proxy);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let options = ProxyOptions {
        extra_args: vec![
            "--upstream-password-file".into(),
            file.display().to_string(),
        ],
        ..ProxyOptions::new(upstream.clone())
    };
    let proxy = Proxy::start(&options).unwrap();
    assert_used_and_hidden(&proxy, password, false).await;
    drop(proxy);

    // In the URL on the command line it still works, is still kept out of the log, and the
    // log warns that `ps` shows it.
    let in_url = env.cluster.url(SCRAM, "postgres", "disable");
    let proxy = Proxy::start(&ProxyOptions::new(in_url)).unwrap();
    assert_used_and_hidden(&proxy, password, true).await;
    assert!(
        log_lines(&proxy).iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .unwrap_or_default()
                .contains("on the command line")),
        "{}",
        proxy.log()
    );
    drop(proxy);

    // The control: a wrong password fails the catalog login, and is not logged either.
    let options = ProxyOptions {
        env: vec![("QPROXY_UPSTREAM_PASSWORD".into(), "not-the-password".into())],
        ..ProxyOptions::new(upstream)
    };
    let proxy = Proxy::start(&options).unwrap();
    let outcome = catalog_outcome(&proxy).await;
    assert!(
        outcome.contains("cannot connect for catalog introspection"),
        "{outcome}"
    );
    assert!(!proxy.log().contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_bogus_cancels_and_hang_ups_cost_a_few_log_lines() {
    let Some(proxy) = proxy_with("floods_of_bogus_cancels", &[]) else {
        return;
    };
    let started = Instant::now();
    // 1,000 CancelRequests for sessions that do not exist, 50 at a time.
    for batch in 0..20u32 {
        let sends = (0..50u32).map(|i| {
            let mut key = Vec::new();
            key.extend_from_slice(&(batch * 50 + i).to_be_bytes());
            key.extend_from_slice(&[1, 2, 3, 4]);
            let packet = startup_packet(CANCEL_REQUEST, &key);
            let port = proxy.port();
            async move { reply_to(port, &packet).await }
        });
        for reply in futures_util::future::join_all(sends).await {
            assert!(reply.is_empty(), "a cancel gets no answer: {reply:?}");
        }
    }
    // 200 clients that connect and hang up at once (a port scan, a TCP health check).
    for _ in 0..200 {
        drop(
            TcpStream::connect(("127.0.0.1", proxy.port()))
                .await
                .unwrap(),
        );
    }
    let flood = started.elapsed();
    // Every event is accounted for, once the summaries are out (one per 10 s window).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (cancels, cancel_lines) = loop {
        let (total, lines) = logged_events(
            &proxy,
            "cancel request for a session this proxy does not relay; ignored",
            "bogus cancel requests",
        );
        if total >= 1000 || Instant::now() > deadline {
            break (total, lines);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(cancels, 1000, "{}", proxy.log());
    // One line per window for the events and one for the summary.
    let windows = flood.as_secs() / 10 + 1;
    assert!(
        cancel_lines <= 2 * windows,
        "{cancel_lines} lines over {flood:?}\n{}",
        proxy.log()
    );
    let (hang_ups, hang_up_lines) = loop {
        let (total, lines) = logged_events(
            &proxy,
            "connection closed during negotiation",
            "failed client negotiations",
        );
        if total >= 200 || Instant::now() > deadline {
            break (total, lines);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(hang_ups >= 200, "{}", proxy.log());
    assert!(hang_up_lines <= 2 * windows + 1, "{}", proxy.log());
}
