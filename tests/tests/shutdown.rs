//! SIGTERM drains: the proxy stops accepting, lets a running query finish, closes idle sessions
//! within the grace period, and exits 0.

use std::time::{Duration, Instant};

use qproxy_tests::{
    connect, mode, wait_until_running, within, Mode, ProxyOptions, TestEnv, SCRAM, SUPERUSER,
    TEST_DB,
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
