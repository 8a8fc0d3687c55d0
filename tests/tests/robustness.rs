//! One client must not hurt the others. A simple Query of 100,000 statements does not stall
//! new connections or `/healthz`; many clients sending 20 MB messages at once stay within the
//! budget for held bytes, and every one of them is served; sockets that connect and stall in
//! startup do not lock real clients out; idle connections to the admin port do not silence
//! `/healthz`. Each test starts its own proxy with the limits it exercises.

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use qproxy_tests::report::report_json;
use qproxy_tests::{
    connect, within, Proxy, ProxyOptions, TestEnv, SCRAM, SUPERUSER, TEST_DB, TRUST,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::SimpleQueryMessage;

/// What a liveness probe or a new client may take while another client's traffic is heavy:
/// generous, for a loaded two-core machine; the stall this guards against lasted 15-29 s.
const PROBE_BOUND: Duration = Duration::from_secs(5);

fn start(test: &str, args: &[&str]) -> Option<Proxy> {
    tokio::task::block_in_place(|| {
        let env = TestEnv::shared();
        let options = ProxyOptions {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "disable"))
        };
        env.extra_proxy(test, &options)
    })
}

fn scrape(proxy: &Proxy) -> String {
    let (status, body) = tokio::task::block_in_place(|| proxy.admin_get("/metrics"))
        .unwrap_or_else(|e| panic!("GET /metrics: {e:#}\n{}", proxy.log()));
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of an unlabelled sample.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Statements analysed: the sum of every `qproxy_queries_total` series.
fn queries_total(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("qproxy_queries_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The value of the first row of a simple query's result.
fn first_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0),
        _ => None,
    })
}

/// Polls `/metrics` until `check` holds on the sample `name` (up to `secs`); returns the value.
async fn wait_metric(proxy: &Proxy, name: &str, secs: u64, check: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let value = sample(&scrape(proxy), name);
        if check(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {value} after {secs} s\n--- qproxy log ---\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/healthz` answers 200 within [`PROBE_BOUND`]; returns how long it took.
fn probe_healthz(proxy: &Proxy) -> Duration {
    let started = Instant::now();
    let (status, body) = tokio::task::block_in_place(|| proxy.admin_get("/healthz"))
        .unwrap_or_else(|e| panic!("GET /healthz: {e:#}\n{}", proxy.log()));
    let took = started.elapsed();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(took < PROBE_BOUND, "/healthz took {took:?}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_of_100k_statements_stalls_nobody() {
    const STATEMENTS: usize = 100_000;
    const CAP: usize = 1_000;
    let Some(mut proxy) = start(
        "a_query_of_100k_statements_stalls_nobody",
        &["--max-statements-per-message", &CAP.to_string()],
    ) else {
        return;
    };
    let url = proxy.url(TRUST, TEST_DB, "disable");
    let big = connect(&url).await.unwrap();
    let sql = "SELECT 1;".repeat(STATEMENTS);
    let query = tokio::spawn(async move { big.simple_query(&sql).await });

    // New clients and liveness probes, while the query runs and until its analysed
    // statements have all been through the analyzer.
    let (mut connects, mut healthz, mut during_query) = (Vec::new(), Vec::new(), 0);
    let started = Instant::now();
    loop {
        let in_flight = !query.is_finished();
        let t = Instant::now();
        let client = within(30, "a new client during the big query", connect(&url))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", proxy.log()));
        let rows = client.simple_query("SELECT 1").await.unwrap();
        assert_eq!(first_value(&rows), Some("1"));
        let took = t.elapsed();
        assert!(took < PROBE_BOUND, "connect and SELECT 1 took {took:?}");
        connects.push(took);
        healthz.push(probe_healthz(&proxy));
        during_query += usize::from(in_flight);
        let text = scrape(&proxy);
        let analysed_all = sample(&text, "qproxy_statements_not_analysed_total")
            >= (STATEMENTS - CAP) as f64
            && queries_total(&text) >= CAP as f64;
        if (connects.len() >= 20 && analysed_all && query.is_finished())
            || started.elapsed() > Duration::from_secs(300)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} probes ({during_query} while the query ran): /healthz max {:?}, connect + SELECT 1 \
         max {:?}",
        healthz.len(),
        healthz.iter().max().unwrap(),
        connects.iter().max().unwrap()
    );

    // The big query's result reached its client whole.
    let messages = within(120, "the big query", query).await.unwrap().unwrap();
    let (mut rows, mut completes) = (0, 0);
    for m in &messages {
        match m {
            SimpleQueryMessage::Row(r) => {
                assert_eq!(r.get(0), Some("1"));
                rows += 1;
            }
            SimpleQueryMessage::CommandComplete(1) => completes += 1,
            SimpleQueryMessage::CommandComplete(n) => panic!("CommandComplete({n})"),
            _ => {}
        }
    }
    assert_eq!((rows, completes), (STATEMENTS, STATEMENTS));

    // Exactly the statements past the cap were not analysed, and the report says so.
    let text = scrape(&proxy);
    assert_eq!(
        sample(&text, "qproxy_statements_not_analysed_total"),
        (STATEMENTS - CAP) as f64
    );
    proxy.terminate().unwrap();
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(60))).unwrap();
    assert!(status.success(), "{status}\n{}", proxy.log());
    let report =
        tokio::task::block_in_place(|| report_json(&proxy.store_path(), "latest")).unwrap();
    let summary = &report["summary"];
    assert_eq!(
        summary["statements_not_analysed"],
        (STATEMENTS - CAP) as u64
    );
    // The first CAP statements and the probes' SELECT 1s were analysed.
    assert!(
        summary["queries"].as_u64().unwrap() >= (CAP + connects.len()) as u64,
        "{summary}"
    );
}

/// The peak resident set size of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in\n{status}"));
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_messages_from_many_clients_stay_within_the_budget() {
    const BUDGET: u64 = 32 << 20;
    const SIZE: usize = 20_000_000;
    const CLIENTS: usize = 8;
    let Some(proxy) = start(
        "large_messages_from_many_clients_stay_within_the_budget",
        &["--max-held-bytes", &BUDGET.to_string()],
    ) else {
        return;
    };
    let url = proxy.url(TRUST, TEST_DB, "disable");
    // Warm up: a session has come and gone, the analyzer has run.
    connect(&url)
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    let baseline = peak_rss(proxy.pid());

    // Half send the 20 MB as query text, half as a bind parameter, all at once.
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = connect(&url).await?;
                let text = "x".repeat(SIZE);
                let length: i64 = if i % 2 == 0 {
                    let sql = format!("SELECT length('{text}')");
                    let rows = client.simple_query(&sql).await?;
                    first_value(&rows).unwrap().parse().unwrap()
                } else {
                    let row = client
                        .query_one("SELECT length($1::text)::int8", &[&text])
                        .await?;
                    row.get(0)
                };
                Ok::<_, tokio_postgres::Error>(length)
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        // Every client is served: none is refused or dropped.
        let length = within(300, "a client with a 20 MB message", task)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("client {i}: {e}\n{}", proxy.log()));
        assert_eq!(length, SIZE as i64, "client {i}");
    }

    let peak = peak_rss(proxy.pid());
    // The budget, plus room for the allocator and per-connection buffers; holding all eight
    // messages (and copies of the four query texts) would take well over 200 MB.
    let bound = baseline + BUDGET + (32 << 20);
    eprintln!(
        "peak RSS {} MiB (baseline {} MiB, bound {} MiB)",
        peak >> 20,
        baseline >> 20,
        bound >> 20
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} over {bound}\n{}",
        proxy.log()
    );
    // The budget did its work: some messages were streamed instead of held, and their
    // statements are counted as not analysed; every reservation was returned.
    let text = scrape(&proxy);
    assert!(
        sample(&text, "qproxy_messages_not_held_total") >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "qproxy_statements_not_analysed_total") >= 1.0,
        "{text}"
    );
    wait_metric(&proxy, "qproxy_held_bytes", 30, |held| held == 0.0).await;
}

/// A StartupMessage for `user` on [`TEST_DB`].
fn startup_message(user: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", user), ("database", TEST_DB)],
        &mut buf,
    )
    .unwrap();
    buf
}

/// Everything the proxy sends on `socket` until it closes it (up to 20 s).
async fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    within(
        20,
        "the proxy to close a stalled socket",
        socket.read_to_end(&mut out),
    )
    .await
    .unwrap();
    out
}

/// Whether `bytes` hold an ErrorResponse with SQLSTATE 53300 that names the setting.
fn too_many_starting(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.contains("C53300\0") && text.contains("--max-startup-connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_startups_do_not_lock_out_real_clients() {
    let Some(proxy) = start(
        "stalled_startups_do_not_lock_out_real_clients",
        &[
            "--max-connections",
            "8",
            "--max-startup-connections",
            "4",
            // Long, so that only the startup slots can get real clients in.
            "--startup-timeout",
            "120",
        ],
    ) else {
        return;
    };
    let port = proxy.port();
    // Two clients stall in authentication: the server asks for a SCRAM exchange that never
    // comes.
    let mut in_auth = Vec::new();
    for _ in 0..2 {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        socket
            .write_all(&startup_message(SCRAM.user))
            .await
            .unwrap();
        let mut tag = [0u8; 1];
        within(
            20,
            "the authentication request",
            socket.read_exact(&mut tag),
        )
        .await
        .unwrap();
        assert_eq!(tag[0], b'R');
        in_auth.push(socket);
    }
    // Once they have been at it for over a second, ten sockets connect and send nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    wait_metric(
        &proxy,
        "qproxy_client_connections_accepted_total",
        30,
        |n| n >= 12.0,
    )
    .await;

    // The clients stuck in authentication had been at it longest: the silent sockets that
    // found every slot taken took theirs, and they were told why.
    for socket in &mut in_auth {
        let rest = read_until_closed(socket).await;
        assert!(
            too_many_starting(&rest),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    // A second later a real client gets in (taking the slot of the oldest silent socket) and
    // queries.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let client = connect(&proxy.url(SCRAM, TEST_DB, "disable"))
        .await
        .unwrap_or_else(|e| panic!("a real client was locked out: {e}\n{}", proxy.log()));
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(first_value(&rows), Some("1"));

    // Four silent sockets held the four slots; the real client took one of theirs. So three
    // are still open, and every other one was closed: evicted without a word, or refused when
    // it arrived (every slot then being younger than a second) and told why.
    let (mut open, mut refused, mut evicted) = (0, 0, 0);
    for socket in &mut silent {
        // What the proxy sent or did to it arrived long ago; a socket with nothing to read
        // for half a second is open.
        let mut first = [0u8; 1];
        let answer =
            match tokio::time::timeout(Duration::from_millis(500), socket.read(&mut first)).await {
                Err(_) => {
                    open += 1;
                    continue;
                }
                Ok(Ok(0)) => Vec::new(),
                Ok(Ok(_)) => [&first[..], &read_until_closed(socket).await].concat(),
                Ok(Err(e)) => panic!("reading a silent socket: {e}"),
            };
        if answer.is_empty() {
            evicted += 1;
        } else {
            assert!(
                too_many_starting(&answer),
                "{:?}",
                String::from_utf8_lossy(&answer)
            );
            refused += 1;
        }
    }
    assert_eq!(open, 3, "silent sockets still holding a slot");
    assert!(
        evicted >= 1 && refused >= 1,
        "evicted {evicted}, refused {refused}"
    );
    // The two in authentication, and every silent socket that lost its slot: to the real
    // client, or to a later silent one had the machine paused for a second between accepts.
    assert_eq!(
        sample(&scrape(&proxy), "qproxy_startup_evictions_total"),
        f64::from(2 + evicted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_admin_connections_do_not_silence_healthz() {
    let Some(proxy) = start("idle_admin_connections_do_not_silence_healthz", &[]) else {
        return;
    };
    let admin = ("127.0.0.1", proxy.admin_port());
    let open_idle = |n: usize| -> Vec<std::net::TcpStream> {
        tokio::task::block_in_place(|| {
            (0..n)
                .map(|_| std::net::TcpStream::connect(admin).unwrap())
                .collect()
        })
    };
    let mut idle = open_idle(100);
    let mut took = Vec::new();
    for _ in 0..20 {
        took.push(probe_healthz(&proxy));
        // More idle sockets keep arriving between the probes.
        idle.extend(open_idle(10));
    }
    eprintln!(
        "/healthz with {} idle admin connections opened: max {:?}",
        idle.len(),
        took.iter().max().unwrap()
    );
    // The idle sockets made room: the oldest was closed by the proxy without a word.
    let first = &mut idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::task::block_in_place(|| first.read_to_end(&mut rest));
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
}
