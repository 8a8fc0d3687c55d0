//! The short-lived introspection connection shared by the catalog loader
//! and hypopg verification.
//!
//! DESIGN non-negotiable 6: qproxy never holds an idle connection to a
//! client's database, because test runners `DROP DATABASE` between runs and
//! that fails while anyone is connected. So every use here connects, does
//! its work inside one transaction, and returns only after the connection
//! has been terminated and the socket closed; an error or timeout drops
//! the connection just the same.
//!
//! The connection is driven in the same task as the work (no
//! `tokio::spawn`), so callers need no `'static` or `Send` bounds on the
//! TLS connector and cancellation (dropping the future) closes the socket.

use std::time::Duration;

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};

/// Why the catalog (or a hypopg verification) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The server could not be reached or refused the login.
    #[error("cannot connect for catalog introspection: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// A catalog query failed (permissions, a server error).
    #[error("catalog query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// The server closed the connection while work was in flight.
    #[error("the introspection connection closed early")]
    Closed,
    /// The whole session took longer than allowed.
    #[error("catalog introspection timed out after {0:?}")]
    Timeout(Duration),
}

/// Connect timeout used when the caller's config sets none: introspection
/// is optional, so it should fail fast rather than stall the analyzer.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the server to acknowledge the close; the socket is
/// dropped either way.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs `work` on a fresh connection named `application_name` (so DBAs and
/// tests can see it in `pg_stat_activity`), bounded by `timeout`, and
/// closes the connection before returning whatever happened.
pub(crate) async fn with_connection<T, R>(
    config: &Config,
    tls: T,
    application_name: &str,
    timeout: Duration,
    work: impl AsyncFnOnce(&Client) -> Result<R, CatalogError>,
) -> Result<R, CatalogError>
where
    T: MakeTlsConnect<Socket>,
{
    let mut config = config.clone();
    config.application_name(application_name);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT.min(timeout));
    }
    let session = async {
        let (client, connection) = config.connect(tls).await.map_err(CatalogError::Connect)?;
        let mut connection = std::pin::pin!(connection);
        let work = async move {
            let result = work(&client).await;
            // Dropping the client makes the connection send Terminate and
            // finish; the select below then drives it to the end.
            drop(client);
            result
        };
        let result = tokio::select! {
            result = work => result,
            _ = &mut connection => return Err(CatalogError::Closed),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut connection).await;
        result
    };
    match tokio::time::timeout(timeout, session).await {
        Ok(result) => result,
        Err(_) => Err(CatalogError::Timeout(timeout)),
    }
}

/// Opens a read-only transaction with server-side limits, so a query stuck
/// behind a migration's lock gives up instead of queueing the analyzer.
/// `SET LOCAL` rather than `SET`: behind a transaction-mode pooler a
/// session setting would leak into someone else's connection.
pub(crate) async fn begin_read_only(
    client: &Client,
    statement_timeout: Duration,
) -> Result<(), CatalogError> {
    let ms = statement_timeout.as_millis().clamp(1, i32::MAX as u128);
    client
        .batch_execute(&format!(
            "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {lock}",
            lock = ms.min(2_000)
        ))
        .await?;
    Ok(())
}
