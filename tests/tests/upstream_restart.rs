//! The upstream goes away and comes back under the proxy. This file has its own cluster, since
//! stopping the shared one would break the other tests of its binary.

use std::time::Duration;

use qproxy_tests::{connect, mode, sqlstate, within, Mode, TestEnv, SCRAM, TEST_DB};
use tokio_postgres::Client;

async fn wait_closed(client: &Client) {
    within(30, "existing session to be closed", async {
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_under_the_proxy() {
    let env = tokio::task::block_in_place(TestEnv::start).unwrap();
    let url = env.url(SCRAM, TEST_DB, "disable");
    let session = env.connect(SCRAM).await;
    session.batch_execute("SELECT 1").await.unwrap();

    tokio::task::block_in_place(|| env.cluster.stop()).unwrap();

    // The server terminated the session (57P01); the client sees an error or a closed
    // connection, never a hang.
    let result = within(
        30,
        "query on a session whose server stopped",
        session.simple_query("SELECT 1"),
    )
    .await;
    assert!(result.is_err(), "a query succeeded with the server down");
    wait_closed(&session).await;

    // While the server is down, a new client is told why.
    let err = connect(&url).await.map(|_| ()).unwrap_err();
    if mode() == Mode::Proxy {
        assert_eq!(
            sqlstate(&err).unwrap(),
            "08001",
            "connecting while the upstream is down: {err}{}",
            env.proxy_log()
        );
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(!message.is_empty(), "08001 without a reason");
    }

    tokio::task::block_in_place(|| env.cluster.start_again()).unwrap();

    // New sessions work again, several of them.
    for i in 0..3i32 {
        let client = connect(&url)
            .await
            .unwrap_or_else(|e| panic!("after the restart: {e}{}", env.proxy_log()));
        let row = client.query_one("SELECT $1::int4", &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i);
    }

    // A restart in one go, with a session open across it.
    let session = env.connect(SCRAM).await;
    tokio::task::block_in_place(|| env.cluster.restart()).unwrap();
    assert!(
        within(30, "query after restart", session.simple_query("SELECT 1"))
            .await
            .is_err()
    );
    wait_closed(&session).await;
    let client = env.connect(SCRAM).await;
    client.batch_execute("SELECT 1").await.unwrap();
}
