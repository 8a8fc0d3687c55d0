//! What a test talks to: the proxy in front of the cluster, or (`QPROXY_TEST_TARGET=direct`) the
//! cluster itself, so the same test proves the client behaves identically either way.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::cluster::{Login, PgCluster, SUPERUSER, TEST_DB};
use crate::proxy::{Proxy, ProxyOptions};

/// Whether tests go through qproxy or straight to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through the `qproxy` binary (the default).
    Proxy,
    /// Straight to PostgreSQL: proves the tests themselves, and is what the proxy must match.
    Direct,
}

/// The mode from `QPROXY_TEST_TARGET` (`proxy`, the default, or `direct`).
pub fn mode() -> Mode {
    match std::env::var("QPROXY_TEST_TARGET").as_deref() {
        Err(_) | Ok("") | Ok("proxy") => Mode::Proxy,
        Ok("direct") => Mode::Direct,
        Ok(other) => panic!("QPROXY_TEST_TARGET must be `proxy` or `direct`, not {other:?}"),
    }
}

/// A cluster and, in proxy mode, a proxy in front of it.
#[derive(Debug)]
pub struct TestEnv {
    /// Declared first: the proxy goes away before its upstream.
    proxy: Option<Proxy>,
    /// The PostgreSQL server.
    pub cluster: PgCluster,
}

impl TestEnv {
    /// Starts a cluster and, in proxy mode, a plain proxy in front of it.
    pub fn start() -> Result<Self> {
        let cluster = PgCluster::start()?;
        let proxy = match mode() {
            Mode::Proxy => Some(Proxy::start(&ProxyOptions::new(
                cluster.url(SUPERUSER, "postgres", "disable"),
            ))?),
            Mode::Direct => None,
        };
        Ok(Self { proxy, cluster })
    }

    /// One environment per test binary, started by the first test that asks.
    /// Cleanup of the `static` happens in the watchdogs when the test process exits.
    pub fn shared() -> &'static TestEnv {
        static SHARED: OnceLock<TestEnv> = OnceLock::new();
        SHARED.get_or_init(|| {
            TestEnv::start().unwrap_or_else(|e| panic!("starting the test environment: {e:#}"))
        })
    }

    /// The proxy, in proxy mode.
    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    /// The port tests connect to: the proxy's, or the server's in direct mode.
    pub fn port(&self) -> u16 {
        match &self.proxy {
            Some(proxy) => proxy.port(),
            None => self.cluster.port(),
        }
    }

    /// A URL to the target (proxy or server).
    pub fn url(&self, login: Login, db: &str, sslmode: &str) -> String {
        match &self.proxy {
            Some(proxy) => proxy.url(login, db, sslmode),
            None => self.cluster.url(login, db, sslmode),
        }
    }

    /// A URL straight to the server, bypassing the proxy.
    pub fn direct_url(&self, login: Login, db: &str, sslmode: &str) -> String {
        self.cluster.url(login, db, sslmode)
    }

    /// Connects `login` to [`TEST_DB`] on the target without TLS.
    pub async fn connect(&self, login: Login) -> Client {
        let url = self.url(login, TEST_DB, "disable");
        connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}{}", self.proxy_log()))
    }

    /// Starts an extra proxy in front of this cluster, or `None` in direct mode (and says the
    /// test was skipped).
    pub fn extra_proxy(&self, test: &str, options: &ProxyOptions) -> Option<Proxy> {
        match mode() {
            Mode::Direct => {
                eprintln!("{test}: skipped in direct mode (needs its own qproxy)");
                None
            }
            Mode::Proxy => {
                Some(Proxy::start(options).unwrap_or_else(|e| panic!("starting qproxy: {e:#}")))
            }
        }
    }

    /// The proxy's log, prefixed for appending to a failure message; empty in direct mode.
    pub fn proxy_log(&self) -> String {
        match &self.proxy {
            Some(proxy) => format!("\n--- qproxy log ---\n{}", proxy.log()),
            None => String::new(),
        }
    }
}

/// Connects without TLS and drives the connection on a background task.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = within(30, "connect", tokio_postgres::connect(url, NoTls)).await?;
    tokio::spawn(async move {
        // The error, if any, surfaces through the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects with rustls, trusting only `ca_cert`; the URL's `sslmode` decides whether TLS is used.
pub async fn connect_tls(
    url: &str,
    ca_cert: &std::path::Path,
) -> Result<Client, tokio_postgres::Error> {
    let config = crate::certs::client_config_trusting(ca_cert).expect("client TLS config");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let (client, connection) =
        within(30, "connect (TLS)", tokio_postgres::connect(url, tls)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects without TLS and forwards notices and notifications to the returned receiver.
pub async fn connect_with_messages(
    url: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<AsyncMessage>), tokio_postgres::Error> {
    let (client, mut connection) =
        within(30, "connect", tokio_postgres::connect(url, NoTls)).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if tx.send(message).is_err() {
                break;
            }
        }
    });
    Ok((client, rx))
}

/// Awaits `fut`, panicking if it takes longer than `secs` seconds.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {secs} s"),
    }
}

/// Waits (up to 20 s) until `observer` sees an active statement whose text
/// matches the LIKE `pattern`: a cancel or a shutdown sent before the
/// statement runs would test nothing.
pub async fn wait_until_running(observer: &Client, pattern: &str) {
    within(20, "query to start", async {
        loop {
            let n: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1",
                    &[&pattern],
                )
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// The SQLSTATE of a tokio-postgres error, or a description of why there is none.
pub fn sqlstate(error: &tokio_postgres::Error) -> Result<&str> {
    match error.code() {
        Some(code) => Ok(code.code()),
        None => bail!("error without SQLSTATE: {error:?}"),
    }
}
