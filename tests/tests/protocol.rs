//! The extended and simple query protocols through the target with tokio-postgres and a bare
//! protocol client: prepared statements, pipelines and errors in them, transactions, COPY, large
//! values, asynchronous messages and cancellation.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt, StreamExt};
use qproxy_tests::wire::{Batch, WireConn};
use qproxy_tests::{
    connect_with_messages, sqlstate, wait_until_running, within, TestEnv, SCRAM, TEST_DB, TRUST,
};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

fn env() -> &'static TestEnv {
    TestEnv::shared()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_with_parameters() {
    let client = env().connect(SCRAM).await;
    let stmt = client
        .prepare("SELECT $1::int4 * 2, $2::text || '!', $3::bool, $4::float8")
        .await
        .unwrap();
    for i in 0..50i32 {
        let row = client
            .query_one(
                &stmt,
                &[&i, &format!("v{i}"), &(i % 2 == 0), &(f64::from(i) / 4.0)],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 2);
        assert_eq!(row.get::<_, String>(1), format!("v{i}!"));
        assert_eq!(row.get::<_, bool>(2), i % 2 == 0);
        assert_eq!(row.get::<_, f64>(3), f64::from(i) / 4.0);
    }
    // NULLs and a statement whose parameter types are given rather than inferred.
    let typed = client
        .prepare_typed("SELECT $1 IS NULL", &[tokio_postgres::types::Type::INT8])
        .await
        .unwrap();
    let row = client.query_one(&typed, &[&None::<i64>]).await.unwrap();
    assert!(row.get::<_, bool>(0));
    // A statement that fails to prepare leaves the session usable.
    let err = client
        .prepare("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "42P01");
    let row = client
        .query_one(&stmt, &[&1i32, &"a", &true, &0.5f64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_answer_in_order() {
    let client = env().connect(SCRAM).await;
    let stmt = client
        .prepare("SELECT $1::int4, repeat('x', $1::int4)")
        .await
        .unwrap();
    // tokio-postgres writes every request before reading replies when futures are polled
    // together: 200 Bind/Execute/Sync groups in flight at once.
    let queries = (0..200i32).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move { client.query_one(stmt, &[&i]).await }
    });
    let rows = within(60, "pipeline", futures_util::future::try_join_all(queries))
        .await
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        let i = i32::try_from(i).unwrap();
        assert_eq!(row.get::<_, i32>(0), i);
        assert_eq!(row.get::<_, String>(1).len(), usize::try_from(i).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_in_a_pipeline_of_synced_queries_fails_only_that_query() {
    let client = env().connect(SCRAM).await;
    let (a, b, c) = within(30, "pipeline with error", async {
        futures_util::join!(
            client.query_one("SELECT 1::int4", &[]),
            client.query_one("SELECT 1 / 0", &[]),
            client.query_one("SELECT 3::int4", &[]),
        )
    })
    .await;
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&b.unwrap_err()).unwrap(), "22012");
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_in_a_pipeline_skips_to_sync() {
    let env = env();
    let mut conn = WireConn::connect(env.port(), TRUST.user, TEST_DB)
        .await
        .unwrap();
    // Three statements before one Sync, the second failing; then a second batch. All written
    // before any reply is read.
    conn.send(
        Batch::new()
            .statement("SELECT 1")
            // Fails in Execute (a constant 1/0 would already fail in Bind, when it is planned).
            .statement("SELECT 1/(0 * random())::int")
            .statement("SELECT 2")
            .sync()
            .statement("SELECT 3")
            .sync(),
    )
    .await
    .unwrap();
    let replies = conn.read_until_ready(2).await.unwrap();
    assert_eq!(
        replies,
        [
            "ParseComplete",
            "BindComplete",
            "DataRow(1)",
            "CommandComplete(SELECT 1)",
            "ParseComplete",
            "BindComplete",
            "Error(22012)",
            "ReadyForQuery(I)",
            "ParseComplete",
            "BindComplete",
            "DataRow(3)",
            "CommandComplete(SELECT 1)",
            "ReadyForQuery(I)",
        ]
    );
    // A Parse that failed leaves no statement behind; a named one that worked stays.
    conn.send(
        Batch::new()
            .parse("bad", "SELEC 1")
            .sync()
            .parse("good", "SELECT $1::int + 1")
            .sync()
            .bind("", "bad", &[])
            .execute("")
            .sync()
            .bind("", "good", &["41"])
            .execute("")
            .sync(),
    )
    .await
    .unwrap();
    let replies = conn.read_until_ready(4).await.unwrap();
    assert_eq!(
        replies,
        [
            "Error(42601)",
            "ReadyForQuery(I)",
            "ParseComplete",
            "ReadyForQuery(I)",
            "Error(26000)",
            "ReadyForQuery(I)",
            "BindComplete",
            "DataRow(42)",
            "CommandComplete(SELECT 1)",
            "ReadyForQuery(I)",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_answers_without_sync() {
    let env = env();
    let mut conn = WireConn::connect(env.port(), TRUST.user, TEST_DB)
        .await
        .unwrap();
    conn.send(Batch::new().parse("s1", "SELECT $1::text AS v").flush())
        .await
        .unwrap();
    assert_eq!(conn.read_n(1).await.unwrap(), ["ParseComplete"]);
    conn.send(
        Batch::new()
            .bind("p1", "s1", &["hi"])
            .describe_portal("p1")
            .execute("p1")
            .flush(),
    )
    .await
    .unwrap();
    assert_eq!(
        conn.read_n(4).await.unwrap(),
        [
            "BindComplete",
            "RowDescription(v)",
            "DataRow(hi)",
            "CommandComplete(SELECT 1)"
        ]
    );
    // An error provoked by a Flush is answered at once, too (here in Bind, where the constant
    // 1/0 is folded); then the server ignores everything up to Sync.
    conn.send(Batch::new().statement("SELECT 1/0").flush())
        .await
        .unwrap();
    assert_eq!(
        conn.read_n(2).await.unwrap(),
        ["ParseComplete", "Error(22012)"]
    );
    conn.send(Batch::new().statement("SELECT 'skipped'").sync())
        .await
        .unwrap();
    assert_eq!(conn.read_n(1).await.unwrap(), ["ReadyForQuery(I)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_several_statements_and_notices() {
    let env = env();
    let mut conn = WireConn::connect(env.port(), TRUST.user, TEST_DB)
        .await
        .unwrap();
    // Two Query messages in one write; the first has several statements, a notice and an error.
    conn.send(
        Batch::new()
            .query(
                "SELECT 1 AS a; DO $$BEGIN RAISE NOTICE 'between'; END$$; SELECT 2 AS b; \
                 SELECT 1/0; SELECT 3",
            )
            .query("SELECT 4 AS d"),
    )
    .await
    .unwrap();
    assert_eq!(
        conn.read_until_ready(2).await.unwrap(),
        [
            "RowDescription(a)",
            "DataRow(1)",
            "CommandComplete(SELECT 1)",
            "Notice(between)",
            "CommandComplete(DO)",
            "RowDescription(b)",
            "DataRow(2)",
            "CommandComplete(SELECT 1)",
            "Error(22012)",
            "ReadyForQuery(I)",
            "RowDescription(d)",
            "DataRow(4)",
            "CommandComplete(SELECT 1)",
            "ReadyForQuery(I)",
        ]
    );
    conn.send(Batch::new().query("")).await.unwrap();
    assert_eq!(
        conn.read_until_ready(1).await.unwrap(),
        ["EmptyQueryResponse", "ReadyForQuery(I)"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_inside_a_transaction_then_rollback() {
    let client = env().connect(SCRAM).await;
    client
        .batch_execute("DROP TABLE IF EXISTS tx_t; CREATE TABLE tx_t (id int)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("INSERT INTO tx_t VALUES (1)", &[])
        .await
        .unwrap();
    let err = client.query("SELECT 1 / 0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "22012");
    let err = client.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "25P02", "failed transaction state");
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM tx_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the insert was rolled back");

    // A transaction that commits, with a savepoint rolled back in the middle.
    client
        .batch_execute(
            "BEGIN; INSERT INTO tx_t VALUES (2); SAVEPOINT s; INSERT INTO tx_t VALUES (3); \
             ROLLBACK TO SAVEPOINT s; COMMIT",
        )
        .await
        .unwrap();
    let ids: Vec<i32> = client
        .query("SELECT id FROM tx_t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_and_to_stdout() {
    let client = env().connect(SCRAM).await;
    client
        .batch_execute("DROP TABLE IF EXISTS copy_t; CREATE TABLE copy_t (id int, name text)")
        .await
        .unwrap();
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\tname {i} with\\ttab\n"));
    }
    let sink = client
        .copy_in("COPY copy_t (id, name) FROM STDIN")
        .await
        .unwrap();
    pin_mut!(sink);
    // Several CopyData messages of uneven sizes.
    for chunk in data.as_bytes().chunks(7_777) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let copied = within(60, "COPY FROM STDIN", sink.as_mut().finish())
        .await
        .unwrap();
    assert_eq!(copied, 20_000);

    let stream = client
        .copy_out("COPY (SELECT id, name FROM copy_t ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = within(60, "COPY TO STDOUT", stream.next()).await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(out).unwrap(), data);

    // Abandoning a COPY sends CopyFail; the session goes on and nothing was copied.
    {
        let sink = client
            .copy_in("COPY copy_t (id, name) FROM STDIN")
            .await
            .unwrap();
        pin_mut!(sink);
        sink.send(Bytes::from_static(b"99999\tnever\n"))
            .await
            .unwrap();
    }
    let n: i64 = client
        .query_one("SELECT count(*) FROM copy_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20_000);

    // Bad COPY data: the server's error ends the COPY.
    let sink = client
        .copy_in("COPY copy_t (id, name) FROM STDIN")
        .await
        .unwrap();
    pin_mut!(sink);
    let _ = sink.send(Bytes::from_static(b"not a number\tx\n")).await;
    let err = sink.as_mut().finish().await.unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "22P02");
    let n: i64 = client
        .query_one("SELECT count(*) FROM copy_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20_000);
}

/// Printable, position-dependent text, so a dropped or repeated chunk cannot go unnoticed.
fn big_text(len: usize) -> String {
    let mut state: u32 = 12345;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b'a' + u8::try_from((state >> 16) % 26).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_megabyte_values_round_trip() {
    const LEN: usize = 5 * 1024 * 1024;
    let client = env().connect(SCRAM).await;
    let text = big_text(LEN);
    let bytes: Vec<u8> = text.bytes().map(|b| b ^ 0x5a).collect();

    // Extended protocol, text and bytea, as parameters and results.
    let row = within(
        60,
        "5 MB text (extended)",
        client.query_one("SELECT $1::text, length($1::text)", &[&text]),
    )
    .await
    .unwrap();
    assert_eq!(row.get::<_, &str>(0), text);
    assert_eq!(row.get::<_, i32>(1), i32::try_from(LEN).unwrap());
    let row = within(
        60,
        "5 MB bytea (extended)",
        client.query_one("SELECT $1::bytea", &[&bytes]),
    )
    .await
    .unwrap();
    assert_eq!(row.get::<_, &[u8]>(0), bytes.as_slice());

    // Simple protocol: the value is in the SQL text, and comes back as text.
    let messages = within(
        60,
        "5 MB text (simple)",
        client.simple_query(&format!("SELECT '{text}'")),
    )
    .await
    .unwrap();
    let value = first_value(&messages);
    assert_eq!(value, text);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let messages = within(
        60,
        "5 MB bytea (simple)",
        client.simple_query(&format!("SELECT decode('{hex}', 'hex')")),
    )
    .await
    .unwrap();
    assert_eq!(first_value(&messages), format!("\\x{hex}"));

    // Stored and read back.
    client
        .batch_execute("DROP TABLE IF EXISTS big_t; CREATE TABLE big_t (t text, b bytea)")
        .await
        .unwrap();
    client
        .execute("INSERT INTO big_t VALUES ($1, $2)", &[&text, &bytes])
        .await
        .unwrap();
    let row = client
        .query_one("SELECT t, b FROM big_t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), text);
    assert_eq!(row.get::<_, &[u8]>(1), bytes.as_slice());
}

fn first_value(messages: &[SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).expect("non-null").to_string()),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_notices_reach_the_client() {
    let env = env();
    let url = env.url(SCRAM, TEST_DB, "disable");
    let (listener, mut messages) = connect_with_messages(&url).await.unwrap();
    listener
        .batch_execute("LISTEN qproxy_channel")
        .await
        .unwrap();
    let notifier = env.connect(TRUST).await;
    notifier
        .batch_execute(
            "NOTIFY qproxy_channel, 'first'; SELECT pg_notify('qproxy_channel', 'second')",
        )
        .await
        .unwrap();
    // The listener is idle: the notifications arrive on their own.
    let mut payloads = Vec::new();
    while payloads.len() < 2 {
        match within(20, "notification", messages.recv()).await {
            Some(AsyncMessage::Notification(n)) => {
                assert_eq!(n.channel(), "qproxy_channel");
                payloads.push(n.payload().to_string());
            }
            Some(_) => {}
            None => panic!("connection ended{}", env.proxy_log()),
        }
    }
    assert_eq!(payloads, ["first", "second"]);

    listener
        .batch_execute("DO $$BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END$$")
        .await
        .unwrap();
    let mut notices = Vec::new();
    while notices.len() < 2 {
        match within(20, "notice", messages.recv()).await {
            Some(AsyncMessage::Notice(n)) => {
                notices.push(format!("{}:{}", n.severity(), n.message()))
            }
            Some(_) => {}
            None => panic!("connection ended"),
        }
    }
    assert_eq!(notices, ["NOTICE:hello 42", "WARNING:careful"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_running_query() {
    let env = env();
    let client = env.connect(SCRAM).await;
    // The same role: other roles' query texts are hidden in pg_stat_activity.
    let observer = env.connect(SCRAM).await;
    let token = client.cancel_token();
    let started = Instant::now();
    let query = tokio::spawn(async move {
        let result = client
            .simple_query("SELECT pg_sleep(10) /* cancel me */")
            .await;
        (result, client)
    });
    // Cancel only once the query runs; a cancel that arrives earlier is a no-op.
    wait_until_running(&observer, "%/* cancel me */").await;
    token.cancel_query(NoTls).await.unwrap();
    let (result, client) = within(8, "cancelled query", query).await.unwrap();
    let err = result.unwrap_err();
    assert_eq!(sqlstate(&err).unwrap(), "57014", "query_canceled");
    assert!(started.elapsed() < Duration::from_secs(9));
    // The session goes on.
    let row = client.query_one("SELECT 7::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_passes_through() {
    let env = env();
    let mut conn = WireConn::connect(env.port(), TRUST.user, TEST_DB)
        .await
        .unwrap();
    // FunctionCall (`F`) is what libpq's large-object functions use.
    conn.send(Batch::new().query("SELECT 'int4pl'::regproc::oid, 'int4div'::regproc::oid"))
        .await
        .unwrap();
    let replies = conn.read_until_ready(1).await.unwrap();
    let oids: Vec<u32> = replies[1]
        .trim_start_matches("DataRow(")
        .trim_end_matches(')')
        .split(',')
        .map(|oid| oid.parse().unwrap())
        .collect();
    conn.send(
        Batch::new()
            .function_call(oids[0], &["40", "2"])
            .function_call(oids[1], &["1", "0"]),
    )
    .await
    .unwrap();
    assert_eq!(
        conn.read_until_ready(2).await.unwrap(),
        [
            "FunctionCallResponse(42)",
            "ReadyForQuery(I)",
            "Error(22012)",
            "ReadyForQuery(I)"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_protocol_version_is_relayed() {
    let env = env();
    // An unknown protocol option makes the server answer NegotiateProtocolVersion first.
    let (mut conn, replies) = WireConn::start(
        qproxy_tests::wire::plain(env.port()).await.unwrap(),
        &[
            ("user", TRUST.user),
            ("database", TEST_DB),
            ("_pq_.qproxy_unknown_option", "on"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        replies,
        [
            "NegotiateProtocolVersion(3.0;_pq_.qproxy_unknown_option)",
            "AuthenticationOk",
            "ReadyForQuery(I)"
        ]
    );
    conn.send(Batch::new().query("SELECT 1")).await.unwrap();
    assert_eq!(
        conn.read_until_ready(1).await.unwrap(),
        [
            "RowDescription(?column?)",
            "DataRow(1)",
            "CommandComplete(SELECT 1)",
            "ReadyForQuery(I)"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_declined_and_startup_goes_on() {
    let env = env();
    let (answer, stream) = qproxy_tests::wire::gssenc_request(env.port())
        .await
        .unwrap();
    if qproxy_tests::mode() == qproxy_tests::Mode::Direct && answer == b'G' {
        // PostgreSQL built with GSSAPI accepts; the proxy, which cannot, must decline.
        return;
    }
    assert_eq!(answer as char, 'N');
    let (mut conn, replies) = WireConn::start(
        Box::new(stream),
        &[("user", TRUST.user), ("database", TEST_DB)],
    )
    .await
    .unwrap();
    assert_eq!(replies, ["AuthenticationOk", "ReadyForQuery(I)"]);
    conn.send(Batch::new().query("SELECT 'after gss'"))
        .await
        .unwrap();
    assert!(conn
        .read_until_ready(1)
        .await
        .unwrap()
        .contains(&"DataRow(after gss)".to_string()));
}
