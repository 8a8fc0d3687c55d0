//! Reaching the `--store` ([`StoreTarget`]): for a PostgreSQL store, the
//! connection settings and the TLS connector its `sslmode` asks for, set up
//! the way the upstream's are.

use std::time::Duration;

use qproxy_analyzer::store::{PgConnector, PgLocation, StoreError, StoreLocation};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::StoreTarget;
use crate::net::upstream::{Upstream, UpstreamError};

/// How long the store's TLS setup may wait for the server (the store sets
/// its own limits on connecting and on each operation).
const TLS_SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the store cannot be reached as configured.
#[derive(Debug, thiserror::Error)]
pub enum StoreLocationError {
    /// TLS toward a PostgreSQL store cannot be set up.
    #[error("--store")]
    Tls(#[source] UpstreamError),
    /// The schema name is not usable.
    #[error("--store-schema")]
    Schema(#[source] StoreError),
}

/// The store's location for the analyzer: for PostgreSQL, the connection
/// settings and the TLS connector its `sslmode` asks for.
pub fn location(target: &StoreTarget) -> Result<StoreLocation, StoreLocationError> {
    let (url, schema) = match target {
        StoreTarget::Sqlite(path) => return Ok(StoreLocation::Sqlite(path.clone())),
        StoreTarget::Postgres { url, schema } => (url, schema),
    };
    let tls = Upstream::new(url.clone(), TLS_SETUP_TIMEOUT).map_err(StoreLocationError::Tls)?;
    let connector = match tls.tls_config() {
        None => PgConnector::new(NoTls),
        Some(config) => PgConnector::new(MakeRustlsConnect::new((**config).clone())),
    };
    let config = url.client_config(None, "qproxy-store");
    PgLocation::new(config, schema, connector, url.to_string())
        .map(StoreLocation::from)
        .map_err(StoreLocationError::Schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreArg;

    #[test]
    fn locations_of_files_and_schemas() {
        let file = StoreArg::from(".qproxy/findings.db").target(None).unwrap();
        assert!(location(&file).is_ok());
        let pg =
            StoreArg::from("postgresql://fleet:s3cret@db.internal:6543/findings?sslmode=disable")
                .target(None)
                .unwrap();
        let found = location(&pg).unwrap();
        assert!(matches!(&found, StoreLocation::Postgres(l) if l.schema() == "qproxy"));
    }

    #[test]
    fn no_location_shows_the_password() {
        let target = StoreArg::from("postgres://fleet:s3cret@db/findings?sslmode=disable")
            .target(None)
            .unwrap();
        let found = location(&target).unwrap();
        let shown = format!("{found} {found:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
