//! SIGTERM drains: the proxy stops accepting, lets a running query or transaction finish, closes
//! each session at its next boundary with 57P01 (idle sessions at once), and exits 0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qproxy_tests::{
    connect, mode, wait_until_running, within, Mode, ProxyOptions, TestEnv, SCRAM, SUPERUSER,
    TEST_DB, TRUST,
};
use tokio_postgres::NoTls;

const GRACE_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_sessions_open() {
    if mode() == Mode::Direct {
        eprintln!("sigterm_with_sessions_open: skipped in direct mode (needs its own qproxy)");
        return;
    }
    let env = TestEnv::shared();
    let options = ProxyOptions {
        shutdown_grace_secs: Some(GRACE_SECS),
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "disable"))
    };
    let Some(mut proxy) = env.extra_proxy("sigterm_with_sessions_open", &options) else {
        return;
    };
    let url = proxy.url(SCRAM, TEST_DB, "disable");
    let idle = connect(&url).await.unwrap();
    idle.batch_execute("SELECT 1").await.unwrap();
    let busy = connect(&url).await.unwrap();
    let observer = connect(&env.direct_url(SCRAM, TEST_DB, "disable"))
        .await
        .unwrap();

    let busy_query = tokio::spawn(async move {
        busy.query_one("SELECT pg_sleep(2)::text || 'done' /* drain me */", &[])
            .await
            .map(|row| row.get::<_, String>(0))
    });
    wait_until_running(&observer, "%/* drain me */").await;

    let signalled = Instant::now();
    proxy.terminate().unwrap();

    // No new session is established: the connection is refused, fails, or is never answered.
    within(15, "the proxy to stop accepting", async {
        loop {
            let attempt =
                tokio::time::timeout(Duration::from_secs(2), tokio_postgres::connect(&url, NoTls))
                    .await;
            if !matches!(attempt, Ok(Ok(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // The query that was running finishes within the grace period.
    let result = within(30, "running query", busy_query).await.unwrap();
    assert_eq!(
        result
            .unwrap_or_else(|e| panic!("running query failed during drain: {e}\n{}", proxy.log())),
        "done"
    );

    // The idle session is closed by the grace period's end (plus slack for a loaded machine).
    within(GRACE_SECS + 10, "idle session to be closed", async {
        while !idle.is_closed() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let status =
        tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(GRACE_SECS + 20)))
            .unwrap();
    assert!(
        status.success(),
        "qproxy exited with {status}\n{}",
        proxy.log()
    );
    assert!(signalled.elapsed() < Duration::from_secs(GRACE_SECS + 20));
}

/// Clients in the back-to-back test.
const BUSY_CLIENTS: usize = 50;
/// Grace period of the back-to-back test: far more than one transaction takes, so a session
/// cut at its end was never given its boundary.
const BUSY_GRACE_SECS: u64 = 10;

/// How one client of the back-to-back test ended.
#[derive(Debug)]
struct BusyClient {
    client: usize,
    /// Transactions whose COMMIT the client saw succeed.
    committed: u64,
    /// The statement that failed and its error; a transaction "cut" when that statement was
    /// not the BEGIN of a new transaction.
    failed_at: &'static str,
    error: String,
    /// SQLSTATE of the failed statement's error, if it had one.
    statement_sqlstate: Option<String>,
    /// SQLSTATE of the error the connection itself ended with (an ErrorResponse that came
    /// while no statement was waiting), if any.
    connection_sqlstate: Option<String>,
}

/// One client: `BEGIN; INSERT; pg_sleep; INSERT; COMMIT` in a loop until a statement fails.
/// Each transaction inserts two rows with the same txn id. The sleep keeps the session in
/// its transaction nearly all the time and the gap between transactions tiny, as with a busy
/// application: a drain that polls for an idle moment misses the boundary and cuts.
async fn busy_client(url: String, client: usize, running: Arc<AtomicUsize>) -> BusyClient {
    let (db, connection) = within(60, "connect", tokio_postgres::connect(&url, NoTls))
        .await
        .unwrap_or_else(|e| panic!("client {client} cannot connect: {e}"));
    let connection = tokio::spawn(connection);
    let mut committed = 0u64;
    let (failed_at, error) = 'run: loop {
        let txn = committed;
        let steps: [(&'static str, String); 5] = [
            ("BEGIN", "BEGIN".into()),
            (
                "first INSERT",
                format!("INSERT INTO drain_pairs VALUES ({client}, {txn}, 1)"),
            ),
            ("pg_sleep", "SELECT pg_sleep(0.1)".into()),
            (
                "second INSERT",
                format!("INSERT INTO drain_pairs VALUES ({client}, {txn}, 2)"),
            ),
            ("COMMIT", "COMMIT".into()),
        ];
        for (name, sql) in steps {
            if let Err(e) = db.batch_execute(&sql).await {
                break 'run (name, e);
            }
        }
        committed += 1;
        if committed == 1 {
            running.fetch_add(1, Ordering::SeqCst);
        }
    };
    let statement_sqlstate = error.code().map(|c| c.code().to_owned());
    drop(db);
    let connection_sqlstate = match within(30, "the connection to end", connection).await {
        Ok(Err(e)) => e.code().map(|c| c.code().to_owned()),
        _ => None,
    };
    BusyClient {
        client,
        committed,
        failed_at,
        error: format!("{error:?}"),
        statement_sqlstate,
        connection_sqlstate,
    }
}

/// SIGTERM while 50 sessions run back-to-back transactions: every session finishes the
/// transaction it is in, is told 57P01 at its end (or instead of its next BEGIN), and none is
/// cut mid-transaction; every transaction a client saw commit is in the database whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_back_to_back_transactions_at_their_boundaries() {
    let env = TestEnv::shared();
    let options = ProxyOptions {
        shutdown_grace_secs: Some(BUSY_GRACE_SECS),
        // Each session logs how it ended, in JSON (the log is a file).
        env: vec![("QPROXY_LOG".into(), "info,qproxy::session=debug".into())],
        ..ProxyOptions::new(env.cluster.url(SUPERUSER, "postgres", "disable"))
    };
    let Some(mut proxy) = env.extra_proxy(
        "sigterm_drains_back_to_back_transactions_at_their_boundaries",
        &options,
    ) else {
        return;
    };
    let direct = connect(&env.direct_url(SUPERUSER, TEST_DB, "disable"))
        .await
        .unwrap();
    direct
        .batch_execute(
            "DROP TABLE IF EXISTS drain_pairs; \
             CREATE TABLE drain_pairs (client int, txn bigint, part int); \
             GRANT ALL ON drain_pairs TO PUBLIC",
        )
        .await
        .unwrap();

    let url = proxy.url(TRUST, TEST_DB, "disable");
    let running = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..BUSY_CLIENTS)
        .map(|client| tokio::spawn(busy_client(url.clone(), client, running.clone())))
        .collect();
    // Every client is past its first transaction, so all 50 are in the loop.
    within(120, "every client to commit once", async {
        while running.load(Ordering::SeqCst) < BUSY_CLIENTS {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    proxy.terminate().unwrap();
    let mut ended = Vec::new();
    for client in clients {
        ended.push(
            within(BUSY_GRACE_SECS + 60, "a client to be drained", client)
                .await
                .unwrap(),
        );
    }
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(60))).unwrap();
    assert!(
        status.success(),
        "qproxy exited with {status}\n{}",
        proxy.log()
    );

    let cut: Vec<_> = ended
        .iter()
        .filter(|c| c.failed_at != "BEGIN")
        .map(|c| format!("client {} at its {}: {}", c.client, c.failed_at, c.error))
        .collect();
    assert!(
        cut.is_empty(),
        "{} of {BUSY_CLIENTS} sessions were cut mid-transaction:\n{}\n{}",
        cut.len(),
        cut.join("\n"),
        proxy.log()
    );
    let untold: Vec<_> = ended
        .iter()
        .filter(|c| {
            c.statement_sqlstate.as_deref() != Some("57P01")
                && c.connection_sqlstate.as_deref() != Some("57P01")
        })
        .collect();
    assert!(
        untold.is_empty(),
        "{} of {BUSY_CLIENTS} sessions closed without 57P01: {untold:#?}\n{}",
        untold.len(),
        proxy.log()
    );

    // In the database: both rows of every transaction or neither, and every transaction a
    // client saw commit is there.
    let halves: i64 = direct
        .query_one(
            "SELECT count(*) FROM (SELECT client, txn FROM drain_pairs GROUP BY 1, 2 \
             HAVING count(*) <> 2 OR count(DISTINCT part) <> 2) halves",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(halves, 0, "transactions committed in part");
    // Every session ended by the drain at a boundary, and says which it was: the connection
    // id comes with each of its log events, from its span.
    let log = proxy.log();
    let drained: std::collections::HashSet<u64> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "closing session for shutdown")
        .map(|event| {
            event["span"]["connection_id"]
                .as_u64()
                .unwrap_or_else(|| panic!("no connection id in {event}"))
        })
        .collect();
    assert_eq!(drained.len(), BUSY_CLIENTS, "sessions drained\n{log}");
    for c in &ended {
        let client = i32::try_from(c.client).unwrap();
        let pairs: i64 = direct
            .query_one(
                "SELECT count(DISTINCT txn) FROM drain_pairs WHERE client = $1",
                &[&client],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            u64::try_from(pairs).unwrap(),
            c.committed,
            "client {} saw {} commits, the database has {pairs}",
            c.client,
            c.committed
        );
    }
}
