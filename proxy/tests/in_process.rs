//! The proxy running in this test process on 127.0.0.1:0, in front of a
//! real PostgreSQL, driven by tokio-postgres: checks that the events the
//! tracker emits describe exactly what the client ran.

use std::time::Duration;

use qproxy::app::{self, Events, Running};
use qproxy::config::ServeArgs;
use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, SessionEvent};
use qproxy_tests::{PgCluster, SUPERUSER, TEST_DB};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

struct InProcess {
    _cluster: PgCluster,
    port: u16,
    events: mpsc::Receiver<SessionEvent>,
    proxy: Running,
}

async fn start() -> InProcess {
    let cluster = PgCluster::start().expect("start PostgreSQL");
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        upstream: Some(cluster.url(SUPERUSER, "postgres", "disable").into()),
        shutdown_grace: Some(2.0),
        ..Default::default()
    };
    let mut proxy = app::start(args.resolve().unwrap(), Events::Caller)
        .await
        .unwrap();
    let port = proxy.listen_addr().port();
    let events = proxy.take_events().unwrap();
    InProcess {
        _cluster: cluster,
        port,
        events,
        proxy,
    }
}

impl InProcess {
    async fn client(&self) -> tokio_postgres::Client {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/{TEST_DB}?sslmode=disable",
            self.port
        );
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// Query events received until `n` arrived (or a timeout).
    async fn queries(&mut self, n: usize) -> Vec<QueryEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), self.events.recv()).await {
                Ok(Some(SessionEvent::Query(q))) => out.push(q),
                Ok(Some(SessionEvent::Closed { .. })) => {}
                _ => break,
            }
        }
        out
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(10), self.proxy.shutdown())
            .await
            .expect("the proxy drains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_describe_what_the_client_ran() {
    let mut p = start().await;
    let client = p.client().await;

    // Simple protocol, several statements in one string.
    client
        .batch_execute(
            "create temp table t(id int primary key, v text); \
             insert into t select g, 'v' || g from generate_series(1, 5) g",
        )
        .await
        .unwrap();
    let ev = p.queries(2).await;
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| e.protocol == Protocol::Simple));
    assert_eq!((ev[0].statement_index, ev[1].statement_index), (0, 1));
    assert_eq!(
        ev[1].outcome,
        Outcome::Complete {
            tag: "INSERT 0 5".into()
        }
    );

    // Extended protocol: one prepared statement, executed with different
    // and with equal parameters.
    let stmt = client
        .prepare("select v from t where id = $1")
        .await
        .unwrap();
    for id in [1, 2, 2] {
        client.query(&stmt, &[&id]).await.unwrap();
    }
    let ev = p.queries(3).await;
    assert_eq!(ev.len(), 3);
    assert!(ev
        .iter()
        .all(|e| &*e.sql == "select v from t where id = $1"));
    assert!(ev.iter().all(|e| e.statement_name.is_some() && e.rows == 1));
    assert_ne!(ev[0].params_hash, ev[1].params_hash);
    assert_eq!(ev[1].params_hash, ev[2].params_hash);

    // A pipeline: tokio-postgres sends all three before reading replies.
    let (a, b, c) = futures_util::join!(
        client.query("select id from t where id <= $1", &[&3i32]),
        client.query("select 1/0", &[]),
        client.query("select count(*) from t", &[]),
    );
    assert_eq!(a.unwrap().len(), 3);
    assert!(b.is_err());
    assert_eq!(c.unwrap().len(), 1);
    let ev = p.queries(3).await;
    assert_eq!(ev.len(), 3);
    let by_sql = |s: &str| ev.iter().find(|e| &*e.sql == s).unwrap();
    assert_eq!(by_sql("select id from t where id <= $1").rows, 3);
    assert_eq!(
        by_sql("select 1/0").outcome,
        Outcome::Error {
            sqlstate: *b"22012"
        }
    );
    assert_eq!(by_sql("select count(*) from t").rows, 1);

    drop(client);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_idle_sessions_with_57p01() {
    let p = start().await;
    let client = p.client().await;
    client.simple_query("select 1").await.unwrap();
    let stop = tokio::spawn(p.stop());
    // The idle session is closed promptly, well inside the grace period.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if client.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "idle session was not closed on drain");
    stop.await.unwrap();
}
